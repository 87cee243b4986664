//! Driving one container to its end: attach, start, feed stdin, capture
//! the tail of its output, enforce the deadline and the cancel signal,
//! and read the exit back from the engine.
//!
//! Everything runs inside the caller's future, with no spawned task:
//! dropping a `drive` future (a worker crash, a shutdown) drops the attach
//! connection and leaves the container running for the next `drive`.
//!
//! Three starting points, decided by the container's state:
//! * **created**: attach first (`logs=false`), then start, so no output
//!   is lost however fast the process exits;
//! * **running** (re-attach after a restart): attach with `logs=true,
//!   stream=true`; the engine replays the log so far and then streams.
//!   Output written between the end of the replay and the start of the
//!   stream can be missed (a window of milliseconds inside dockerd);
//! * **exited**: read the logs (not followed) and inspect.
//!
//! How it ends, read from the final inspect ([`read_exit`]):
//! * at the deadline or on cancel the container is **stopped**: SIGTERM,
//!   SIGKILL after `stop_grace`; the output keeps being read meanwhile, so
//!   what the process prints on SIGTERM is in the run's output;
//! * a name carrying the **deleted** mark (`bus-run-<id>.deleted`, set by
//!   whichever worker deleted the run before it stopped it) ends
//!   `Canceled`, whoever drives it;
//! * `oom_killed` is the engine's `State.OOMKilled`;
//! * a command the engine **cannot start** (missing or non-executable
//!   file) is a result, not an engine error: dockerd records exit status
//!   127 (126) as a shell would, and its message becomes the stderr.
//!
//! Output goes into two [`TailBuffer`]s, so memory stays bounded by
//! `max_output_bytes` whatever the container prints. With a live output
//! sink (`RunIo::output`) every chunk is also handed to the sink as it
//! arrives; a re-attached container's log is counted first (one read of
//! the log) and that many bytes of the replay are held back from the sink,
//! so the sink gets only what the container writes from the re-attach on.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bollard::container::AttachContainerResults;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{AttachContainerOptions, LogsOptions, StartContainerOptions};
use bollard::Docker;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::output::TailBuffer;
use bus_docker_domain::ports::{CancelSignal, RunIo, Stdin};
use bus_docker_domain::run::{Ending, Exit};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::control::{inspect, stop, wait_exit, Killed, Observed};
use crate::error::{Class, DockerError};
use crate::exits::Died;
use crate::output::{count_log, feed_stdin, LiveSink, LogBytes, Output, OutputPump};

/// The instant `timeout` after the container started (now when unknown),
/// so a re-attached run keeps its original deadline.
fn deadline(started_at: Option<SystemTime>, timeout: Duration) -> Instant {
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
struct Outcome {
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
struct Stopping {
    deadline: Instant,
    cancel: CancelSignal,
    grace: Duration,
    settle: Duration,
    /// A watch on the container's `die` event (claimed warm runs).
    died: Option<oneshot::Receiver<Died>>,
}

/// Wait for the exit, stopping the container at the deadline or on cancel.
async fn wait_for_end(docker: &Docker, id: &str, s: Stopping) -> Result<Outcome, DockerError> {
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

/// A warm run's claim (`warm.rs`): when it was claimed (its start, for
/// `started_at`, the duration and the deadline) and how many bytes of its
/// stdout the launcher's claim record takes (held back from the output).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WarmRun {
    pub claimed_at: SystemTime,
    pub record_len: u64,
}

/// Drive the container to its end (see the module docs). `created` is
/// what this process knows of a container it has just created (its open
/// stdin), which saves the engine an inspect; otherwise the engine is asked.
/// `warm`: the container is a claimed warm run; its times count from the
/// claim, not from the container's start.
pub(crate) async fn drive(
    docker: &Docker,
    id: &str,
    io: RunIo,
    settle: Duration,
    created: Option<bool>,
    warm: Option<WarmRun>,
) -> Result<Exit, DockerError> {
    use ContainerStateStatusEnum as S;
    let mut seen = match created {
        Some(open_stdin) => Observed {
            status: Some(S::CREATED),
            open_stdin,
            ..Observed::default()
        },
        None => inspect(docker, id).await?,
    };
    if let Some(warm) = warm {
        seen.started_at = Some(warm.claimed_at);
    }
    match seen.status {
        Some(S::CREATED) if warm.is_none() => live(docker, id, io, seen, true, settle, None).await,
        Some(S::CREATED | S::RUNNING | S::PAUSED | S::RESTARTING) => {
            live(docker, id, io, seen, false, settle, warm).await
        }
        _ => collect(docker, id, io, seen, warm).await,
    }
}

/// Drive a warm container this process has just claimed: it is running
/// and attached since it was parked; `frame` (the command for the
/// launcher) goes to its stdin ahead of the run's own input.
pub(crate) async fn drive_claimed(
    docker: &Docker,
    id: &str,
    io: RunIo,
    settle: Duration,
    claimed: crate::warm::Claimed,
    died: DieWatch,
) -> Result<Exit, DockerError> {
    let crate::warm::Claimed {
        output,
        input,
        frame,
        claimed_at,
    } = claimed;
    let mut io = io;
    let stdin = std::mem::replace(&mut io.stdin, Stdin::Closed);
    io.stdin = crate::warm::behind_frame(frame, stdin);
    let live_sink = io
        .output
        .take()
        .map(|sink| LiveSink::new(sink, LogBytes::default()));
    attached(
        docker,
        id,
        (output, input),
        io,
        live_sink,
        Some(claimed_at),
        Some(died),
        settle,
    )
    .await
}

/// The stdin to feed: none when the container was created without one.
fn usable_stdin(stdin: Stdin, open: bool, id: &str) -> Stdin {
    if open {
        return stdin;
    }
    if !matches!(stdin, Stdin::Closed) {
        tracing::warn!(
            container = id,
            "container was created without an open stdin; input ignored"
        );
    }
    Stdin::Closed
}

pub(crate) type Input = Pin<Box<dyn AsyncWrite + Send>>;

async fn attach(
    docker: &Docker,
    id: &str,
    fresh: bool,
    stdin: bool,
) -> Result<(Output, Input), DockerError> {
    let options = AttachContainerOptions {
        stream: true,
        logs: !fresh,
        stdin,
        stdout: true,
        stderr: true,
        detach_keys: None,
    };
    let AttachContainerResults { output, input } = docker
        .attach_container(id, Some(options))
        .await
        .map_err(|source| DockerError::Attach {
            id: id.to_owned(),
            source,
        })?;
    Ok((output, input))
}

async fn live(
    docker: &Docker,
    id: &str,
    mut io: RunIo,
    seen: Observed,
    fresh: bool,
    settle: Duration,
    warm: Option<WarmRun>,
) -> Result<Exit, DockerError> {
    let record = warm.map_or(0, |w| w.record_len);
    let live_sink = match io.output.take() {
        Some(sink) if fresh => Some(LiveSink::new(sink, LogBytes::default())),
        Some(sink) => {
            let mut logged = logged_so_far(docker, id).await?;
            logged.stdout = logged.stdout.saturating_sub(record);
            Some(LiveSink::new(sink, logged))
        }
        None => None,
    };
    let stdin = std::mem::replace(&mut io.stdin, Stdin::Closed);
    io.stdin = usable_stdin(stdin, seen.open_stdin && warm.is_none(), id);
    let wants_stdin = !matches!(io.stdin, Stdin::Closed);
    let (output, input) = attach(docker, id, fresh, wants_stdin).await?;
    let output = crate::warm::skip_stdout(output, record);
    let started_at = if fresh {
        if let Err(source) = docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            let err = DockerError::Start {
                id: id.to_owned(),
                source,
            };
            return not_started(docker, id, err, io.max_output_bytes).await;
        }
        // The deadline counts from here; the exact `State.StartedAt` comes
        // with the final inspect. (An inspect right after start would wait
        // on the engine's container lock and cost every run a round trip.)
        Some(SystemTime::now())
    } else {
        tracing::info!(container = id, "re-attached to a running container");
        seen.started_at
    };
    attached(
        docker,
        id,
        (output, input),
        io,
        live_sink,
        started_at,
        warm.map(|_| None),
        settle,
    )
    .await
}

/// The attached part of a drive: pump the output, feed stdin, wait for
/// the end (stopping the container at the deadline or on cancel) and read
/// the exit. `claimed`: a warm run, whose start is `started_at` (the
/// claim), never the container's own; its `die` watch, when it has one.
#[allow(clippy::too_many_arguments)]
async fn attached(
    docker: &Docker,
    id: &str,
    (output, input): (Output, Input),
    io: RunIo,
    live_sink: Option<LiveSink>,
    started_at: Option<SystemTime>,
    mut claimed: Option<DieWatch>,
    settle: Duration,
) -> Result<Exit, DockerError> {
    let RunIo {
        stdin,
        timeout,
        cancel,
        max_output_bytes,
        stop_grace,
        output: _,
    } = io;
    let mut pump = OutputPump::new(output, max_output_bytes).with_live(live_sink);
    let feeder = feed_stdin(input, stdin, id);
    let stopping = Stopping {
        deadline: deadline(started_at, timeout),
        cancel,
        grace: stop_grace,
        settle,
        died: claimed.as_mut().and_then(Option::take),
    };
    let claimed = claimed.is_some();
    let waiter = wait_for_end(docker, id, stopping);
    tokio::pin!(feeder, waiter);
    let mut feeding = true;
    let outcome = loop {
        tokio::select! {
            biased;
            outcome = &mut waiter => break outcome,
            () = pump.run(), if !pump.done => {}
            () = &mut feeder, if feeding => feeding = false,
        }
    };
    if !pump.drain().await {
        tracing::warn!(
            container = id,
            "output did not end after the exit; the captured tail may miss its last bytes"
        );
    }
    if let Some(err) = &pump.error {
        tracing::warn!(container = id, error = %err, "output stream broke; the captured tail may be incomplete");
    }
    read_exit(docker, id, outcome?, started_at, claimed, pump).await
}

/// How many bytes of each stream a re-attached container has logged so
/// far: the replay the attach is about to give, held back from the sink.
async fn logged_so_far(docker: &Docker, id: &str) -> Result<LogBytes, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        ..LogsOptions::default()
    };
    count_log(Box::pin(docker.logs(id, Some(options))))
        .await
        .map_err(|source| DockerError::Logs {
            id: id.to_owned(),
            source,
        })
}

/// A start the engine refused. When dockerd recorded the status a shell
/// gives a command it cannot run (127: not found, 126: not executable),
/// that is the run's result, with the engine's message as its stderr;
/// anything else stays an engine error.
async fn not_started(
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
async fn read_exit(
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
async fn collect(
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
