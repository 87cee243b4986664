//! The seed step of a per-run Codex home: a helper container of the run's
//! own image copies the configured home's configuration into the run's
//! home, and is removed whatever happened.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount as EngineMount, MountType};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, RemoveContainerOptions};
use bollard::Docker;
use bus_docker_domain::profile::CODEX_HOME_SEED;
use bus_docker_domain::spec::{RunHome, RunSpec};
use futures_util::StreamExt;

use crate::control;
use crate::error::{classify, Class, DockerError};

use super::{SEED_FROM, SEED_OF, SEED_TIMEOUT};

/// The seed script: copy the configuration the configured home has, and
/// nothing else. `$0` is a name for messages; each entry is an argument.
const SEED_SCRIPT: &str = r#"set -u
from="$1"; shift
for entry in "$@"; do
    if [ -e "$from/$entry" ] || [ -L "$from/$entry" ]; then
        cp -R "$from/$entry" "/root/.codex/$entry" || { echo "cannot copy $entry" >&2; exit 1; }
    fi
done
"#;

/// The seed step of a per-run home: a helper container of the run's own
/// image with the run's mounts and the configured home read-only, copying
/// the configuration in; removed whatever happened.
///
/// # Errors
/// `Seed` with the helper's stderr when it fails or overstays
/// [`SEED_TIMEOUT`]; the Engine call that failed otherwise.
pub(crate) async fn seed(
    docker: &Docker,
    spec: &RunSpec,
    home: &RunHome,
    run_container: &str,
    image_id: &str,
) -> Result<(), DockerError> {
    let from = home.seed_from.to_string_lossy().into_owned();
    let name = format!("bus-seed-{}", spec.run_id.as_str());
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..CreateContainerOptions::default()
            }),
            seed_body(spec, home, run_container, image_id),
        )
        .await;
    let helper = match created {
        Ok(created) => created.id,
        // A helper left by a worker that died mid-seed: remove it, retry.
        Err(source) if classify(&source) == Class::Conflict => {
            remove_helper(docker, &name).await;
            docker
                .create_container(
                    Some(CreateContainerOptions {
                        name: Some(name.clone()),
                        ..CreateContainerOptions::default()
                    }),
                    seed_body(spec, home, run_container, image_id),
                )
                .await
                .map_err(|source| DockerError::Create {
                    name: name.clone(),
                    image: image_id.to_owned(),
                    source,
                })?
                .id
        }
        Err(source) => {
            return Err(DockerError::Create {
                name,
                image: image_id.to_owned(),
                source,
            })
        }
    };
    let outcome = run_helper(docker, &helper).await;
    let outcome = match outcome {
        Ok(Some(0)) => Ok(()),
        Ok(code) => {
            let stderr = helper_stderr(docker, &helper).await;
            Err(DockerError::Seed {
                run: spec.run_id.to_string(),
                from,
                reason: match code {
                    Some(127) => format!(
                        "the image has no /bin/sh or cp, which a per-run Codex home needs (exit 127): {stderr}"
                    ),
                    Some(code) => format!("the seed step exited {code}: {stderr}"),
                    None => format!("the seed step did not report its exit: {stderr}"),
                },
            })
        }
        Err(err) => Err(err),
    };
    remove_helper(docker, &helper).await;
    outcome
}

/// The seed helper's create body: the run's hardening, no network, the
/// run's mounts and the configured home read-only.
fn seed_body(
    spec: &RunSpec,
    home: &RunHome,
    run_container: &str,
    image_id: &str,
) -> ContainerCreateBody {
    let from = home.seed_from.to_string_lossy().into_owned();
    let hardening = &spec.hardening;
    let mut entrypoint = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        SEED_SCRIPT.to_owned(),
        "bus-codex-seed".to_owned(),
        SEED_FROM.to_owned(),
    ];
    entrypoint.extend(CODEX_HOME_SEED.iter().map(|e| (*e).to_owned()));
    ContainerCreateBody {
        image: Some(image_id.to_owned()),
        entrypoint: Some(entrypoint),
        cmd: Some(Vec::new()),
        labels: Some(HashMap::from([(
            SEED_OF.to_owned(),
            spec.run_id.as_str().to_owned(),
        )])),
        network_disabled: Some(true),
        host_config: Some(HostConfig {
            mounts: Some(vec![EngineMount {
                typ: Some(MountType::BIND),
                source: Some(from.clone()),
                target: Some(SEED_FROM.to_owned()),
                read_only: Some(true),
                ..EngineMount::default()
            }]),
            volumes_from: Some(vec![format!("{run_container}:rw")]),
            network_mode: Some("none".to_owned()),
            ..crate::bodies::hardened(hardening)
        }),
        ..ContainerCreateBody::default()
    }
}

/// Start the helper and wait for its exit within [`SEED_TIMEOUT`].
async fn run_helper(docker: &Docker, id: &str) -> Result<Option<i64>, DockerError> {
    docker
        .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
        .await
        .map_err(|source| DockerError::Start {
            id: id.to_owned(),
            source,
        })?;
    match tokio::time::timeout(SEED_TIMEOUT, control::wait_exit(docker, id)).await {
        Ok(exit) => exit,
        Err(_) => Ok(None),
    }
}

/// The last lines the helper wrote to stderr (for the run's error).
async fn helper_stderr(docker: &Docker, id: &str) -> String {
    let options = LogsOptions {
        stdout: false,
        stderr: true,
        tail: "20".to_owned(),
        ..LogsOptions::default()
    };
    let mut logs = docker.logs(id, Some(options));
    let mut text = String::new();
    while let Some(Ok(chunk)) = logs.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
    }
    text.trim().to_owned()
}

/// Remove a helper (forced; its own anonymous volumes too; the run's,
/// which it only borrowed, stay: the engine keeps a volume in use).
pub(super) async fn remove_helper(docker: &Docker, id: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    if let Err(source) = docker.remove_container(id, Some(options)).await {
        if classify(&source) != Class::NotFound {
            tracing::warn!(helper = id, error = %source, "cannot remove a Codex home seed helper; the sweep will");
        }
    }
}
