//! The two references the worker is measured against: the Engine API
//! sequence done directly through bollard (the physical limit of this
//! design) and `docker run --rm` through the docker CLI (what an operator
//! would do by hand).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, RemoveContainerOptions, StartContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use tokio_stream::StreamExt;

use crate::BenchError;

/// Label on every container the raw scenario creates, so leftovers of an
/// interrupted benchmark can be found.
pub const BENCH_LABEL: &str = "bus.bench";

/// A negotiated client for the engine at `DOCKER_HOST` (or the local
/// socket). dockerd 20.10 speaks API 1.41; bollard defaults to a newer one.
pub async fn connect() -> Result<Docker, BenchError> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| BenchError::new(format!("docker client: {e}")))?;
    let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| {
            BenchError::new(
                "the Docker Engine did not answer within 10s (scripts/docker-engine.sh ensure)",
            )
        })?
        .map_err(|e| {
            BenchError::new(format!(
                "no Docker Engine reachable ({e}); run scripts/docker-engine.sh ensure"
            ))
        })?;
    Ok(docker)
}

/// How a raw container is kept off the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawNetwork {
    /// `NetworkMode: none` alone, as `docker run --network none` does.
    /// dockerd builds a libnetwork sandbox and adds a prestart hook that
    /// re-executes the dockerd binary (`libnetwork-setkey`) at every
    /// container start. Informational.
    Setup,
    /// `NetworkMode: none` plus `NetworkDisabled: true`, the body the
    /// worker sends for network `none`: its own loopback-only network
    /// namespace, no sandbox, no hook. The baseline.
    Disabled,
}

/// One raw run: create → start → wait → remove, the same Engine calls a
/// worker cannot avoid. Returns the wall time.
pub async fn raw_run(
    docker: &Docker,
    image: &str,
    cmd: &[&str],
    name: &str,
    network: RawNetwork,
) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(cmd.iter().map(|s| (*s).to_owned()).collect()),
        labels: Some(HashMap::from([(BENCH_LABEL.to_owned(), "raw".to_owned())])),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        network_disabled: (network == RawNetwork::Disabled).then_some(true),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_owned()),
        ..CreateContainerOptions::default()
    };
    let id = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| engine("create", e))?
        .id;
    let outcome = async {
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine("start", e))?;
        let waiting = docker.wait_container(
            &id,
            Some(WaitContainerOptions {
                condition: "not-running".to_owned(),
            }),
        );
        tokio::pin!(waiting);
        match waiting.next().await {
            Some(Ok(r)) if r.status_code == 0 => Ok(()),
            Some(Ok(r)) => Err(BenchError::new(format!(
                "raw run {name} exited {}",
                r.status_code
            ))),
            // bollard reports a non-zero exit as this error variant.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => {
                Err(BenchError::new(format!("raw run {name} exited {code}")))
            }
            Some(Err(e)) => Err(engine("wait", e)),
            None => Err(BenchError::new(format!(
                "raw run {name}: wait ended without a status"
            ))),
        }
    }
    .await;
    let removed = docker
        .remove_container(
            &id,
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                link: false,
            }),
        )
        .await
        .map_err(|e| engine("remove", e));
    outcome?;
    removed?;
    Ok(started.elapsed())
}

fn engine(call: &str, e: BollardError) -> BenchError {
    BenchError::new(format!("engine {call}: {e}"))
}

/// Remove containers an interrupted earlier benchmark left behind: raw
/// ones (label `bus.bench`) and the worker's and the status scenario's
/// (runner `<runner_prefix>…`), a few at a time (the status scenario can
/// leave hundreds). Returns how many were removed and how many of those
/// were tombstones (`bus-run-<id>.answered`: the worker keeps an answered
/// run's container for `run_retention`, so every run leaves one).
pub async fn remove_leftovers(
    docker: &Docker,
    runner_prefix: &str,
) -> Result<(usize, usize), BenchError> {
    let (mut ids, mut tombstones) = (Vec::new(), 0);
    let filters = [
        HashMap::from([("label".to_owned(), vec![BENCH_LABEL.to_owned()])]),
        HashMap::from([(
            "label".to_owned(),
            vec!["bus.managed-by=bus-integration-docker".to_owned()],
        )]),
    ];
    for (i, filters) in filters.into_iter().enumerate() {
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..ListContainersOptions::default()
        };
        for c in docker
            .list_containers(Some(options))
            .await
            .map_err(|e| engine("list", e))?
        {
            let runner = c
                .labels
                .as_ref()
                .and_then(|l| l.get("bus.runner"))
                .map(String::as_str);
            if i == 1 && !runner.is_some_and(|r| r.starts_with(runner_prefix)) {
                continue;
            }
            let names = c.names.as_deref().unwrap_or_default();
            if names.iter().any(|n| n.ends_with(".answered")) {
                tombstones += 1;
            }
            ids.extend(c.id);
        }
    }
    Ok((crate::others::remove(docker, ids).await?, tombstones))
}

/// Remove a container, running or not (no error when it is gone, or
/// already being removed: 409 with `force`).
pub async fn force_remove(docker: &Docker, id: &str) -> Result<(), BenchError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    match docker.remove_container(id, Some(options)).await {
        Ok(())
        | Err(BollardError::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(engine("remove", e)),
    }
}

/// The docker CLI on `PATH`, if installed.
pub fn docker_cli() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| p.is_file())
}

/// One `docker run --rm --network none IMAGE CMD…`, timed from spawn to
/// exit of the CLI process.
pub async fn cli_run(cli: &PathBuf, image: &str, cmd: &[&str]) -> Result<Duration, BenchError> {
    let started = Instant::now();
    let out = tokio::process::Command::new(cli)
        .args(["run", "--rm", "--network", "none", image])
        .args(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| BenchError::new(format!("spawning {}: {e}", cli.display())))?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return Err(BenchError::new(format!(
            "docker run --rm failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(elapsed)
}
