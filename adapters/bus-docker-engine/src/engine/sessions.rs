//! [`DockerEngine`]'s Codex homes and sessions: a per-run home prepared
//! before the create, seeded after it and dropped with the container;
//! session volumes, their use and sweep (the engine work is in
//! `codex_home/`).

use std::time::Duration;

use bollard::Docker;
use bus_docker_domain::container::{ContainerRef, SessionUsage, SessionsSwept};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::spec::{RunSpec, SessionKey};
use bus_docker_domain::{ImageId, RuntimeError};

use super::DockerEngine;

impl DockerEngine {
    /// A per-run Codex home, before the container exists
    /// (`codex_home/`): no leftover home of this run id, and the
    /// session's use recorded.
    pub(super) async fn prepare_home(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let Some(home) = &spec.codex_home else {
            return Ok(());
        };
        let docker = self.docker().await?;
        let prepared = async {
            crate::codex_home::clear_home(&docker, spec).await?;
            match &home.session {
                Some(key) => crate::codex_home::touch(&docker, key).await,
                None => Ok(()),
            }
        };
        match prepared.await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// The container is gone: so is its per-run Codex home, if this
    /// process made one (else the session sweep finds it unused).
    pub(super) async fn drop_home(&self, docker: &Docker, container: &ContainerRef) {
        let volume = self
            .inner
            .homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        if let Some(volume) = volume {
            if let Err(err) = crate::codex_home::drop_home(docker, &volume).await {
                tracing::warn!(%volume, error = %crate::error::cause_chain(&err), "cannot remove a run's Codex home; the sweep will");
            }
        }
    }

    /// A per-run Codex home: seed the created container's home on the
    /// engine's side; a failed seed removes the container.
    pub(super) async fn seed_home(
        &self,
        spec: &RunSpec,
        container: &ContainerRef,
        image: &ImageId,
    ) -> Result<(), RuntimeError> {
        let Some(home) = &spec.codex_home else {
            return Ok(());
        };
        self.inner
            .homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                container.id.clone(),
                crate::codex_home::home_volume(&spec.run_id),
            );
        let docker = self.docker().await?;
        // The helper runs the image the run was checked against.
        let seeded =
            crate::codex_home::seed(&docker, spec, home, &container.id, image.as_str()).await;
        match seeded {
            Ok(()) => Ok(()),
            Err(err) => {
                let err = self.fail(err).await;
                if let Err(removal) = self.remove(container).await {
                    tracing::warn!(container = %container.name, error = %removal, "cannot remove the container of a run whose home could not be seeded");
                }
                Err(err)
            }
        }
    }

    /// `ContainerRuntime::has_session`.
    pub(super) async fn session_exists(&self, key: &SessionKey) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        match crate::codex_home::has_session(&docker, key).await {
            Ok(found) => Ok(found),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::session_usage`.
    pub(super) async fn usage_of_sessions(&self) -> Result<SessionUsage, RuntimeError> {
        let docker = self.docker().await?;
        match crate::codex_home::usage(&docker).await {
            Ok(usage) => Ok(usage),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::sweep_sessions`.
    pub(super) async fn sweep_unused_sessions(
        &self,
        retention: Duration,
    ) -> Result<SessionsSwept, RuntimeError> {
        let docker = self.docker().await?;
        let now = std::time::SystemTime::now();
        match crate::codex_home::sweep(&docker, retention, now).await {
            Ok(swept) => Ok(swept),
            Err(err) => Err(self.fail(err).await),
        }
    }
}
