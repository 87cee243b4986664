//! [`DockerEngine`]'s images and creates: whether an image is present,
//! making it present under a pull policy, and creating a run's container
//! (its pins, its per-run home, the image that was checked).

use bollard::query_parameters::CreateContainerOptions;
use bollard::Docker;
use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};

use super::DockerEngine;
use crate::bodies::{container_body, ImageSeen};
use crate::error::DockerError;
use crate::images::{self, Unready};
use crate::labels::{self, Listed};

impl DockerEngine {
    /// `ContainerRuntime::image_present`: whether the engine has `image`
    /// now.
    pub(super) async fn find_image(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        match images::image_id(&docker, image).await {
            Ok(id) => Ok(id.is_some()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::ensure_image`: `image` made present under
    /// `policy` (`images.rs`), its id.
    pub(super) async fn ensure(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        let docker = self.docker().await?;
        let idle = self.inner.conn.request_timeout();
        match self.inner.images.ensure(&docker, image, policy, idle).await {
            Ok(id) => Ok(id),
            Err(Unready::Missing) => Err(RuntimeError::ImageMissing(image.to_string())),
            Err(Unready::NotAfterPull) => Err(RuntimeError::PullFailed {
                image: image.to_string(),
                reason: "the pull finished but the image is not present".to_owned(),
            }),
            Err(Unready::Engine(err)) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::create`: request mounts pinned, the per-run home
    /// prepared, the container created from the checked image, its home
    /// seeded.
    #[tracing::instrument(name = "create", skip_all, fields(run_id = %spec.run_id))]
    pub(super) async fn create_run(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        // Request mounts become their pins (pinning.rs); a failed create
        // undoes this attempt's pins only.
        let pinned = self.inner.pins.pin(spec).await?;
        let spec = pinned.spec.as_ref();
        if let Err(err) = self.prepare_home(spec).await {
            self.inner.pins.unpin(pinned).await;
            return Err(err);
        }
        let created = match self.create_checked(spec, runner, image).await {
            Ok(container) => self
                .seed_home(spec, &container, image)
                .await
                .map(|()| container),
            Err(err) => Err(err),
        };
        match &created {
            Ok(container) => self.inner.pins.created(&container.id, pinned),
            Err(_) => self.inner.pins.unpin(pinned).await,
        }
        created
    }

    /// Create the run's container from `checked` (the id `ensure_image`
    /// gave): from the run's reference, so that `docker ps` shows it, and
    /// when the engine resolved the reference to another image (a tag
    /// moved since the check) or could not resolve it (the reference was
    /// removed), created again from the id.
    pub(super) async fn create_checked(
        &self,
        spec: &RunSpec,
        runner: &str,
        checked: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        // The checked image's labels decide which `bus.*` keys the worker
        // must blank: read them by id, fresh.
        let image = match images::image_seen(&docker, checked.as_str()).await {
            Ok(Some(image)) => image,
            Ok(None) => {
                self.inner.images.forget(&spec.image);
                return Err(RuntimeError::ImageMissing(spec.image.to_string()));
            }
            Err(err) => return Err(self.fail(err).await),
        };
        let container = match self
            .create_once(&docker, spec, runner, &image, spec.image.as_str())
            .await
        {
            Ok(container) => container,
            Err(RuntimeError::ImageMissing(_)) => {
                // The reference went away since the check; the checked
                // image is still there (read above).
                tracing::warn!(image = %spec.image, %checked, "the image reference is gone since its check: creating from the checked id");
                self.inner.images.forget(&spec.image);
                return self
                    .create_once(&docker, spec, runner, &image, checked.as_str())
                    .await;
            }
            Err(err) => return Err(err),
        };
        let resolved = match images::created_from(&docker, &container.id).await {
            Ok(resolved) if resolved == checked.as_str() => return Ok(container),
            Ok(resolved) => resolved,
            Err(err) => {
                let err = self.fail(err).await;
                let _ = self.remove(&container).await;
                return Err(err);
            }
        };
        tracing::warn!(
            container = %container.name,
            image = %spec.image,
            %checked,
            %resolved,
            "the image reference moved between its check and the create: creating from the checked id"
        );
        self.inner.images.forget(&spec.image);
        self.remove(&container).await?;
        self.create_once(&docker, spec, runner, &image, checked.as_str())
            .await
    }

    pub(super) async fn create_once(
        &self,
        docker: &Docker,
        spec: &RunSpec,
        runner: &str,
        image: &ImageSeen,
        from: &str,
    ) -> Result<ContainerRef, RuntimeError> {
        let name = spec.container_name();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        match docker
            .create_container(Some(options), container_body(spec, runner, image, from))
            .await
        {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container = %name, warning, "engine warning on create");
                }
                tracing::debug!(container = %name, id = %created.id, "container created");
                self.inner
                    .created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(created.id.clone(), crate::bodies::wants_stdin(spec));
                let record = labels::managed(Listed {
                    id: &created.id,
                    name: &name,
                    labels: &labels::for_run(spec, runner, &image.id, &image.labels),
                    image_id: Some(&image.id),
                    state: bus_docker_domain::container::ContainerState::Created,
                    started_at: None,
                    finished_at: None,
                    // The create event brings the engine's time.
                    created_at: None,
                });
                if let Some(record) = record {
                    self.inner.view.write(&created.id, |entries| {
                        entries.insert(created.id.clone(), record);
                    });
                }
                Ok(ContainerRef::new(created.id, name))
            }
            Err(source) => Err(self
                .fail(DockerError::Create {
                    name,
                    image: spec.image.to_string(),
                    source,
                })
                .await),
        }
    }
}
