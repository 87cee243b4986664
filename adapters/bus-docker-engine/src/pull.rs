//! Pulling an image: with the registry's credentials (`X-Registry-Auth`),
//! an idle limit (no progress for a request timeout) and a deadline for
//! the whole pull (`pull_timeout`).
//!
//! Pull time is never run time: a run's `duration_ms` is read from the
//! container's own start and finish times, after the pull.

use std::time::Duration;

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use bus_docker_domain::ImageRef;
use futures_util::StreamExt;

use crate::bodies::pull_parts;
use crate::error::DockerError;
use crate::registry::{ClientConfig, Registry};

/// How long a pull may go without progress, and in all.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PullLimits {
    pub idle: Duration,
    pub deadline: Duration,
}

/// Pull `image`, authenticating from `config`.
pub(crate) async fn pull(
    docker: &Docker,
    image: &ImageRef,
    config: &ClientConfig,
    limits: PullLimits,
) -> Result<(), DockerError> {
    let registry = Registry::of_image(image.as_str());
    let credentials =
        config
            .credentials(&registry)
            .await
            .map_err(|source| DockerError::Credentials {
                image: image.to_string(),
                registry: registry.to_string(),
                source,
            })?;
    let auth = match &credentials {
        Some(c) => format!("credentials from {}", c.origin),
        None => match config.path() {
            Some(path) => format!("anonymously: no credentials in {}", path.display()),
            None => "anonymously: no docker client config".to_owned(),
        },
    };
    tracing::info!(image = %image, %registry, auth = %auth, "pulling image");
    let from = format!("registry {registry} ({auth})");
    let fail = |source| DockerError::Pull {
        image: image.to_string(),
        from: from.clone(),
        source,
    };
    let (from_image, tag) = pull_parts(image.as_str());
    let options = CreateImageOptions {
        from_image: Some(from_image),
        tag,
        ..CreateImageOptions::default()
    };
    let engine_auth = credentials
        .as_ref()
        .map(crate::registry::RegistryAuth::to_engine);
    let mut progress = docker.create_image(Some(options), None, engine_auth);
    let drain = async {
        loop {
            // A registry that stops answering must not hold a run until
            // the deadline when nothing moves: a request timeout of silence
            // fails the pull too.
            match tokio::time::timeout(limits.idle, progress.next()).await {
                Ok(None) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(source))) => return Err(fail(source)),
                Err(_) => return Err(fail(bollard::errors::Error::RequestTimeoutError)),
            }
        }
    };
    match tokio::time::timeout(limits.deadline, drain).await {
        Ok(result) => result,
        Err(_) => Err(DockerError::PullDeadline {
            image: image.to_string(),
            registry: registry.to_string(),
            after: limits.deadline,
        }),
    }
}
