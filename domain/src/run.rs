//! What a run produces: captured output, the outcome, and what status
//! reports about runs and the runner.

use std::time::{Duration, SystemTime};

use crate::error::ErrorCode;
use crate::ids::{ImageRef, OwnerId, ProfileName, RunId, SessionName};
use crate::output::CapturedOutput;

/// How a container's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The process exited by itself with this code.
    Exited(i64),
    /// The deadline passed and the worker killed it.
    TimedOut,
    /// A delete request or runner delete killed it.
    Canceled,
}

/// What the runtime observed of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub ending: Ending,
    /// The exit code the engine reported, also after a kill.
    pub exit_code: Option<i64>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The engine killed the container (or a process in it) for memory.
    pub oom_killed: bool,
}

impl Exit {
    /// Wall time from container start to exit.
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at?.duration_since(self.started_at?).ok()
    }
}

/// The status of a finished run (`run.response.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Canceled => "canceled",
            Self::Error => "error",
        }
    }

    /// The status of an ending, and the error code it carries (a non-zero
    /// exit is a result, not an error).
    pub fn of(ending: Ending) -> (Self, Option<ErrorCode>) {
        match ending {
            Ending::Exited(0) => (Self::Succeeded, None),
            Ending::Exited(_) => (Self::Failed, None),
            Ending::TimedOut => (Self::TimedOut, Some(ErrorCode::Timeout)),
            Ending::Canceled => (Self::Canceled, Some(ErrorCode::Canceled)),
        }
    }
}

/// The `runtime` object of a run response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeDetails {
    pub provider: String,
    /// The engine of the pool the run was placed on (its URL without
    /// credentials); `None` for the `static` provider.
    pub docker_host: Option<String>,
    pub engine_version: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
}

/// A full `run.response` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub runner_name: String,
    pub profile: Option<ProfileName>,
    pub image: ImageRef,
    pub image_id: Option<String>,
    pub args: Vec<String>,
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub duration: Option<Duration>,
    /// The engine killed the container for memory.
    pub oom_killed: bool,
    pub runtime: RuntimeDetails,
    /// The codex session the run resumed (docs/protocol.md §6), echoed.
    pub session: Option<SessionName>,
}

/// Where a run is in its life (`status.response.items[].state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Creating,
    Running,
    Exited,
}

impl From<&crate::container::ContainerState> for RunState {
    /// The engine's container state as a run state: created is still
    /// `creating`, anything not yet exited counts as `running`.
    fn from(state: &crate::container::ContainerState) -> Self {
        use crate::container::ContainerState;
        match state {
            ContainerState::Created => Self::Creating,
            ContainerState::Running | ContainerState::Other(_) => Self::Running,
            ContainerState::Exited => Self::Exited,
        }
    }
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// One item of a status response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: RunId,
    pub state: RunState,
    pub owner: Option<OwnerId>,
    pub image: Option<String>,
    pub profile: Option<String>,
    pub container_id: Option<String>,
    pub started_at: Option<SystemTime>,
    /// How a finished run ended (`state: exited`), while it is retained.
    pub finished: Option<Finished>,
}

/// The outcome of a finished run as `status` lists it during
/// `run_retention`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// `None` when only the engine's record is left and it cannot tell
    /// (another worker answered the run).
    pub status: Option<RunStatus>,
    pub exit_code: Option<i64>,
    pub finished_at: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_zero_exit_is_a_result_not_an_error() {
        assert_eq!(RunStatus::of(Ending::Exited(3)), (RunStatus::Failed, None));
        assert_eq!(RunStatus::of(Ending::TimedOut).1, Some(ErrorCode::Timeout));
    }
}
