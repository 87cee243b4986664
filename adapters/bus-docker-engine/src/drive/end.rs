//! How a drive ends: the deadline, waiting for the exit (stopping the
//! container at the deadline or on cancel), and reading the exit back
//! from the engine (the module docs of [`super`]).

use std::time::{Duration, SystemTime};

use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::output::TailBuffer;
use bus_docker_domain::ports::{CancelSignal, RunIo};
use bus_docker_domain::run::{Ending, Exit};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::WarmRun;
use crate::control::{inspect, stop, wait_exit, Killed, Observed};
use crate::error::{Class, DockerError};
use crate::exits::Died;
use crate::output::OutputPump;

/// The instant `timeout` after the container started (now when unknown),
/// so a re-attached run keeps its original deadline.
pub(super) fn deadline(started_at: Option<SystemTime>, timeout: Duration) -> Instant {
    let elapsed = started_at
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .unwrap_or_default();
    let left = timeout.saturating_sub(elapsed);
    let now = Instant::now();
    now.checked_add(left)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Start and finish as reported, with the finish never before the start:
/// dockerd stamps `StartedAt` after the process is already running, and
/// for a process that exits at once `FinishedAt` can come out earlier by a
/// millisecond, which would leave the run without a duration.
fn ordered(
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
) -> (Option<SystemTime>, Option<SystemTime>) {
    match (started_at, finished_at) {
        (Some(start), Some(end)) if end < start => (Some(start), Some(start)),
        other => other,
    }
}

/// How the waiting ended.
pub(super) struct Outcome {
    /// `TimedOut` or `Canceled` when the worker stopped it.
    stopped: Option<Ending>,
    code: Option<i64>,
    /// The engine's `die` event decided the exit (`exits.rs`): no wait
    /// for the teardown, no final inspect.
    died: Option<Died>,
}

/// A claimed warm run's watch on its `die` event, when it has one.
pub(crate) type DieWatch = Option<oneshot::Receiver<Died>>;

/// How the worker stops a run, and how long it waits for the exit after.
pub(super) struct Stopping {
    pub(super) deadline: Instant,
    pub(super) cancel: CancelSignal,
    pub(super) grace: Duration,
    pub(super) settle: Duration,
    /// A watch on the container's `die` event (claimed warm runs).
    pub(super) died: Option<oneshot::Receiver<Died>>,
}

/// Wait for the exit, stopping the container at the deadline or on cancel.
pub(super) async fn wait_for_end(
    docker: &Docker,
    id: &str,
    s: Stopping,
) -> Result<Outcome, DockerError> {
    let Stopping {
        deadline,
        mut cancel,
        grace,
        settle,
        died,
    } = s;
    let waiting = wait_exit(docker, id);
    tokio::pin!(waiting);
    let mut died = died;
    // A cancel wins over everything (the run was deleted); an exit already
    // in wins over a deadline passing at the same moment.
    let reason = loop {
        tokio::select! {
            biased;
            () = &mut cancel => break Ending::Canceled,
            code = &mut waiting => {
                return Ok(Outcome { stopped: None, code: code?, died: None });
            }
            seen = async { died.as_mut().expect("guarded").await }, if died.is_some() => {
                died = None;
                match seen {
                    Ok(d) if d.decides() => {
                        return Ok(Outcome { stopped: None, code: Some(d.exit_code), died: Some(d) });
                    }
                    // Not decided by the event (or no event): wait.
                    _ => {}
                }
            }
            () = tokio::time::sleep_until(deadline) => break Ending::TimedOut,
        }
    };
    tracing::info!(container = id, reason = ?reason, grace = ?grace, "stopping container");
    let stopped = stop(docker, id, grace).await?;
    let code = match stopped {
        Killed::Gone => None,
        _ => match tokio::time::timeout(settle, &mut waiting).await {
            Ok(code) => code?,
            Err(_) => None,
        },
    };
    // A deadline the process beat by a hair is a normal exit; a cancel
    // stays a cancel (the run was deleted, whoever stopped it).
    let stopped = match (reason, stopped) {
        (Ending::TimedOut, Killed::NotRunning) => None,
        (reason, _) => Some(reason),
    };
    Ok(Outcome {
        stopped,
        code,
        died: None,
    })
}

/// A start the engine refused. When dockerd recorded the status a shell
/// gives a command it cannot run (127: not found, 126: not executable),
/// that is the run's result, with the engine's message as its stderr;
/// anything else stays an engine error.
pub(super) async fn not_started(
    docker: &Docker,
    id: &str,
    err: DockerError,
    cap: usize,
) -> Result<Exit, DockerError> {
    if err.class() != Class::Other {
        return Err(err);
    }
    let Ok(seen) = inspect(docker, id).await else {
        return Err(err);
    };
    let code = match seen.exit_code {
        Some(code @ (126 | 127)) if !seen.is_running() => code,
        _ => return Err(err),
    };
    let message = seen
        .error
        .unwrap_or_else(|| crate::error::cause_chain(&err));
    tracing::info!(container = id, exit_code = code, error = %message, "the engine could not start the command");
    let mut stderr = TailBuffer::new(cap);
    stderr.push(message.as_bytes());
    stderr.push(b"\n");
    let now = Some(SystemTime::now());
    Ok(Exit {
        ending: match seen.mark {
            RunMark::Deleted => Ending::Canceled,
            RunMark::Live | RunMark::Answered => Ending::Exited(code),
        },
        exit_code: Some(code),
        stdout: TailBuffer::new(cap).finish(),
        stderr: stderr.finish(),
        started_at: now,
        finished_at: now,
        oom_killed: false,
    })
}

/// After the wait: the final inspect says how the run ended (see the
/// module docs). A wait that ended while the container still runs is
/// `StillRunning` (the driver re-attaches); a container gone before it
/// reported an exit is `Vanished`.
pub(super) async fn read_exit(
    docker: &Docker,
    id: &str,
    outcome: Outcome,
    started_at: Option<SystemTime>,
    claimed: bool,
    pump: OutputPump,
) -> Result<Exit, DockerError> {
    if let Some(died) = outcome.died {
        // The engine's `die` event decided it (`exits.rs`): an exit of
        // its own, not OOM-killed, under the run's live name.
        tracing::debug!(
            container = id,
            exit_code = died.exit_code,
            "exit taken from the engine's die event"
        );
        let (started_at, finished_at) =
            ordered(started_at, died.at.or_else(|| Some(SystemTime::now())));
        return Ok(Exit {
            ending: Ending::Exited(died.exit_code),
            exit_code: Some(died.exit_code),
            stdout: pump.stdout.finish(),
            stderr: pump.stderr.finish(),
            started_at,
            finished_at,
            oom_killed: false,
        });
    }
    let last = match inspect(docker, id).await {
        Ok(last) => Some(last),
        Err(err) if err.is_not_found() && (outcome.stopped.is_some() || outcome.code.is_some()) => {
            None
        }
        Err(err) => return Err(err),
    };
    if last.as_ref().is_some_and(Observed::is_running) {
        return Err(DockerError::StillRunning { id: id.to_owned() });
    }
    let last = last.unwrap_or_default();
    let exit_code = last.exit_code.or(outcome.code);
    let ending = match (last.mark, outcome.stopped) {
        // Another worker deleted the run: whoever stopped it, it is canceled.
        (RunMark::Deleted, _) => Ending::Canceled,
        (_, Some(reason)) => reason,
        (_, None) => {
            Ending::Exited(exit_code.ok_or_else(|| DockerError::Vanished { id: id.to_owned() })?)
        }
    };
    // A claimed warm run started at its claim, not with its container.
    let start = if claimed {
        started_at
    } else {
        last.started_at.or(started_at)
    };
    let (started_at, finished_at) =
        ordered(start, last.finished_at.or_else(|| Some(SystemTime::now())));
    Ok(Exit {
        ending,
        exit_code,
        stdout: pump.stdout.finish(),
        stderr: pump.stderr.finish(),
        started_at,
        finished_at,
        oom_killed: last.oom_killed,
    })
}

/// An exited container: its logs and its recorded exit.
pub(super) async fn collect(
    docker: &Docker,
    id: &str,
    io: RunIo,
    seen: Observed,
    warm: Option<WarmRun>,
) -> Result<Exit, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        ..LogsOptions::default()
    };
    let logs = crate::warm::skip_stdout(
        Box::pin(docker.logs(id, Some(options))),
        warm.map_or(0, |w| w.record_len),
    );
    let mut pump = OutputPump::new(logs, io.max_output_bytes);
    pump.run().await;
    if let Some(source) = pump.error.take() {
        let err = DockerError::Logs {
            id: id.to_owned(),
            source,
        };
        if err.is_not_found() || err.is_unreachable() {
            return Err(err);
        }
        tracing::warn!(container = id, error = %crate::error::cause_chain(&err), "logs unreadable; reporting the exit without output");
    }
    let code = seen.exit_code.unwrap_or(-1);
    let (started_at, finished_at) = ordered(seen.started_at, seen.finished_at);
    let ran = match (started_at, finished_at) {
        (Some(start), Some(end)) => end.duration_since(start).ok(),
        _ => None,
    };
    // A worker that stopped the run at its deadline and died before
    // answering left a container that ran its full timeout (whatever its
    // code after SIGTERM).
    let timed_out = !seen.oom_killed && ran.is_some_and(|r| r >= io.timeout);
    tracing::info!(
        container = id,
        exit_code = code,
        "collected an exited container"
    );
    let ending = match seen.mark {
        RunMark::Deleted => Ending::Canceled,
        _ if timed_out => Ending::TimedOut,
        _ => Ending::Exited(code),
    };
    Ok(Exit {
        ending,
        exit_code: seen.exit_code,
        stdout: pump.stdout.finish(),
        stderr: pump.stderr.finish(),
        started_at,
        finished_at,
        oom_killed: seen.oom_killed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_counts_from_the_start() {
        let now = Instant::now();
        let fresh = deadline(Some(SystemTime::now()), Duration::from_secs(10));
        assert!(fresh >= now + Duration::from_secs(9));
        let late = deadline(
            Some(SystemTime::now() - Duration::from_secs(8)),
            Duration::from_secs(10),
        );
        assert!(late <= Instant::now() + Duration::from_secs(2));
        let past = deadline(
            Some(SystemTime::now() - Duration::from_secs(60)),
            Duration::from_secs(10),
        );
        assert!(past <= Instant::now());
        // Absurd timeouts do not overflow.
        let _ = deadline(None, Duration::MAX);
    }

    #[test]
    fn a_finish_before_the_start_is_moved_to_the_start() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let early = start - Duration::from_millis(1);
        assert_eq!(
            ordered(Some(start), Some(early)),
            (Some(start), Some(start))
        );
        let late = start + Duration::from_secs(1);
        assert_eq!(ordered(Some(start), Some(late)), (Some(start), Some(late)));
        assert_eq!(ordered(None, Some(late)), (None, Some(late)));
    }
}
