//! Images: making a run's image present under its pull policy, reading
//! an image's id and labels, and which image a container was created from.
//!
//! What was checked is what runs (docs/protocol.md §9, "What operators see"): the
//! worker ensures the image and hands the id down to `create`. The
//! container is created from the reference the run asked for (so
//! `docker ps` shows it, not `sha256:…`), then [`created_from`] reads the
//! image id the engine resolved; when the tag was moved in between, that
//! container is removed and created again from the checked id.
//!
//! `ensure` answers from a cache of images seen present (reference → id)
//! under `if-not-present`/`never`, so a run of a known image costs no
//! inspect; `always` pulls each time. An entry is dropped when a create
//! finds the image gone.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bollard::Docker;
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::{ImageId, ImageRef};

use crate::bodies::ImageSeen;
use crate::error::{classify, Class, DockerError};
use crate::pull::{self, PullLimits};
use crate::registry::ClientConfig;

/// Why an image could not be made present.
#[derive(Debug)]
pub(crate) enum Unready {
    /// Absent, and the pull policy is `never`.
    Missing,
    /// A pull finished but the image is not there.
    NotAfterPull,
    /// An engine call failed.
    Engine(DockerError),
}

/// The images of one engine connection.
pub(crate) struct Images {
    /// Images seen present: reference → id.
    seen: Mutex<HashMap<String, String>>,
    /// Where registry credentials are looked up at each pull.
    registry_config: ClientConfig,
    pull_timeout: Duration,
}

impl Images {
    pub(crate) fn new(registry_config: ClientConfig, pull_timeout: Duration) -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
            registry_config,
            pull_timeout,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The image is gone (a create did not find it): ask the engine next
    /// time.
    pub(crate) fn forget(&self, image: &ImageRef) {
        self.seen().remove(image.as_str());
    }

    /// Make `image` present under `policy`; its id. `idle` is how long a
    /// pull may go without progress.
    pub(crate) async fn ensure(
        &self,
        docker: &Docker,
        image: &ImageRef,
        policy: PullPolicy,
        idle: Duration,
    ) -> Result<ImageId, Unready> {
        if policy != PullPolicy::Always {
            if let Some(id) = self.seen().get(image.as_str()).cloned() {
                return Ok(ImageId::new(id));
            }
        }
        let id = self.ensure_uncached(docker, image, policy, idle).await?;
        self.seen().insert(image.as_str().to_owned(), id.clone());
        Ok(ImageId::new(id))
    }

    async fn ensure_uncached(
        &self,
        docker: &Docker,
        image: &ImageRef,
        policy: PullPolicy,
        idle: Duration,
    ) -> Result<String, Unready> {
        if policy != PullPolicy::Always {
            if let Some(id) = image_id(docker, image).await.map_err(Unready::Engine)? {
                return Ok(id);
            }
            if policy == PullPolicy::Never {
                return Err(Unready::Missing);
            }
        }
        let limits = PullLimits {
            idle,
            deadline: self.pull_timeout,
        };
        pull::pull(docker, image, &self.registry_config, limits)
            .await
            .map_err(Unready::Engine)?;
        image_id(docker, image)
            .await
            .map_err(Unready::Engine)?
            .ok_or(Unready::NotAfterPull)
    }
}

/// The image's id, `None` when it is not present.
pub(crate) async fn image_id(
    docker: &Docker,
    image: &ImageRef,
) -> Result<Option<String>, DockerError> {
    Ok(image_seen(docker, image.as_str())
        .await?
        .map(|seen| seen.id))
}

/// The image's id and labels (`image` is a reference or an id), `None`
/// when it is not present.
pub(crate) async fn image_seen(
    docker: &Docker,
    image: &str,
) -> Result<Option<ImageSeen>, DockerError> {
    match docker.inspect_image(image).await {
        Ok(info) => Ok(Some(ImageSeen {
            id: info.id.unwrap_or_default(),
            labels: info.config.and_then(|c| c.labels).unwrap_or_default(),
        })),
        Err(source) if classify(&source) == Class::NotFound => Ok(None),
        Err(source) => Err(DockerError::InspectImage {
            image: image.to_string(),
            source,
        }),
    }
}

/// The id of the image the container `id` was created from, as the
/// engine resolved it.
pub(crate) async fn created_from(docker: &Docker, id: &str) -> Result<String, DockerError> {
    let info = crate::control::inspect_raw(docker, id).await?;
    Ok(info.image.unwrap_or_default())
}
