//! Single Engine calls on one container, each with its answers sorted into
//! what they mean for a run: inspect, kill, stop, wait, rename.

use std::time::{Duration, SystemTime};

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, RenameContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use bus_docker_domain::container::RunMark;
use futures_util::StreamExt;

use crate::bodies::engine_time;
use crate::error::{classify, Class, DockerError};
use crate::labels;

/// What inspect says about a container.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pub status: Option<ContainerStateStatusEnum>,
    pub open_stdin: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// What the name says (another worker may have deleted the run).
    pub mark: RunMark,
    /// The engine's message when the container could not be started.
    pub error: Option<String>,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            status: None,
            open_stdin: false,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            mark: RunMark::Live,
            error: None,
        }
    }
}

impl From<&ContainerInspectResponse> for Observed {
    fn from(info: &ContainerInspectResponse) -> Self {
        let state = info.state.as_ref();
        let config = info.config.as_ref();
        let name = info.name.as_deref().unwrap_or("").trim_start_matches('/');
        let run_id = config
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::RUN_ID))
            .map(String::as_str);
        Self {
            status: state.and_then(|s| s.status),
            open_stdin: config.and_then(|c| c.open_stdin).unwrap_or(false),
            started_at: engine_time(state.and_then(|s| s.started_at.as_deref())),
            finished_at: engine_time(state.and_then(|s| s.finished_at.as_deref())),
            exit_code: state.and_then(|s| s.exit_code),
            oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
            mark: labels::identity(run_id, name).map_or(RunMark::Live, |(_, mark)| mark),
            error: state
                .and_then(|s| s.error.clone())
                .filter(|e| !e.is_empty()),
        }
    }
}

impl Observed {
    pub(crate) fn is_running(&self) -> bool {
        self.status == Some(ContainerStateStatusEnum::RUNNING)
    }
}

pub(crate) async fn inspect_raw(
    docker: &Docker,
    id: &str,
) -> Result<ContainerInspectResponse, DockerError> {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|source| DockerError::Inspect {
            id: id.to_owned(),
            source,
        })
}

pub(crate) async fn inspect(docker: &Docker, id: &str) -> Result<Observed, DockerError> {
    inspect_raw(docker, id)
        .await
        .map(|info| Observed::from(&info))
}

/// How a kill or a stop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Killed {
    /// Signalled (a stop also answers this when it had already stopped:
    /// the engine's 304 says nothing more).
    Yes,
    /// 409: it had already stopped.
    NotRunning,
    /// 404: it was removed.
    Gone,
}

fn killed(result: Result<(), BollardError>) -> Result<Killed, BollardError> {
    match result {
        Ok(()) => Ok(Killed::Yes),
        Err(source) => match classify(&source) {
            Class::NotFound => Ok(Killed::Gone),
            Class::Conflict => Ok(Killed::NotRunning),
            _ => Err(source),
        },
    }
}

pub(crate) async fn kill(docker: &Docker, id: &str) -> Result<Killed, DockerError> {
    let options = KillContainerOptions {
        signal: "KILL".to_owned(),
    };
    killed(docker.kill_container(id, Some(options)).await).map_err(|source| DockerError::Kill {
        id: id.to_owned(),
        source,
    })
}

/// SIGTERM, then SIGKILL after `grace` (`POST /containers/{id}/stop?t=`,
/// whole seconds, rounded up). The call returns once the container has
/// stopped, so it gets the grace on top of the client's request timeout.
pub(crate) async fn stop(
    docker: &Docker,
    id: &str,
    grace: Duration,
) -> Result<Killed, DockerError> {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let options = StopContainerOptions {
        signal: None,
        t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
    };
    let patient = docker
        .clone()
        .with_timeout(docker.timeout().saturating_add(Duration::from_secs(secs)));
    killed(patient.stop_container(id, Some(options)).await).map_err(|source| DockerError::Stop {
        id: id.to_owned(),
        source,
    })
}

/// Rename a container (a run mark); `false` when it is gone.
pub(crate) async fn rename(docker: &Docker, id: &str, name: &str) -> Result<bool, DockerError> {
    let options = RenameContainerOptions {
        name: name.to_owned(),
    };
    match docker.rename_container(id, options).await {
        Ok(()) => Ok(true),
        Err(source) if classify(&source) == Class::NotFound => Ok(false),
        Err(source) => Err(DockerError::Rename {
            id: id.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Wait until the container is not running; its exit code when the engine
/// says. bollard reports a non-zero exit as an error: it is a result here.
pub(crate) async fn wait_exit(docker: &Docker, id: &str) -> Result<Option<i64>, DockerError> {
    let options = WaitContainerOptions {
        condition: "not-running".to_owned(),
    };
    let mut waiting = docker.wait_container(id, Some(options));
    match waiting.next().await {
        Some(Ok(response)) => Ok(Some(response.status_code)),
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(Some(code)),
        Some(Err(source)) => Err(DockerError::Wait {
            id: id.to_owned(),
            source,
        }),
        None => Ok(None),
    }
}
