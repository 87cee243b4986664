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
//! Output goes into two [`TailBuffer`]s, so memory stays bounded by
//! `max_output_bytes` whatever the container prints.

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use bollard::query_parameters::{
    AttachContainerOptions, InspectContainerOptions, KillContainerOptions, LogsOptions,
    StartContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use bus_docker_domain::ports::{CancelSignal, RunIo, Stdin};
use bus_docker_domain::run::{Ending, Exit, TailBuffer};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::engine_time;
use crate::error::{classify, Class, DockerError};

/// After the exit, how long the output may pause before the reader stops
/// waiting for its end.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// After the exit, the longest the reader keeps draining in total.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// SIGKILL's exit status.
const KILLED: i64 = 137;

type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>;

/// What inspect says about a container.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    pub status: Option<ContainerStateStatusEnum>,
    pub open_stdin: bool,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
}

impl From<&ContainerInspectResponse> for Observed {
    fn from(info: &ContainerInspectResponse) -> Self {
        let state = info.state.as_ref();
        Self {
            status: state.and_then(|s| s.status),
            open_stdin: info
                .config
                .as_ref()
                .and_then(|c| c.open_stdin)
                .unwrap_or(false),
            started_at: engine_time(state.and_then(|s| s.started_at.as_deref())),
            finished_at: engine_time(state.and_then(|s| s.finished_at.as_deref())),
            exit_code: state.and_then(|s| s.exit_code),
            oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
        }
    }
}

impl Observed {
    pub(crate) fn is_running(&self) -> bool {
        self.status == Some(ContainerStateStatusEnum::RUNNING)
    }
}

pub(crate) async fn inspect(docker: &Docker, id: &str) -> Result<Observed, DockerError> {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map(|info| Observed::from(&info))
        .map_err(|source| DockerError::Inspect {
            id: id.to_owned(),
            source,
        })
}

/// How a kill went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Killed {
    Yes,
    /// 409: it had already stopped.
    NotRunning,
    /// 404: it was removed.
    Gone,
}

pub(crate) async fn kill(docker: &Docker, id: &str) -> Result<Killed, DockerError> {
    let options = KillContainerOptions {
        signal: "KILL".to_owned(),
    };
    match docker.kill_container(id, Some(options)).await {
        Ok(()) => Ok(Killed::Yes),
        Err(source) => match classify(&source) {
            Class::NotFound => Ok(Killed::Gone),
            Class::Conflict => Ok(Killed::NotRunning),
            _ => Err(DockerError::Kill {
                id: id.to_owned(),
                source,
            }),
        },
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

/// Reads a multiplexed output stream into two tail buffers.
struct OutputPump {
    stream: Output,
    stdout: TailBuffer,
    stderr: TailBuffer,
    done: bool,
    error: Option<BollardError>,
}

impl OutputPump {
    fn new(stream: Output, cap: usize) -> Self {
        Self {
            stream,
            stdout: TailBuffer::new(cap),
            stderr: TailBuffer::new(cap),
            done: false,
            error: None,
        }
    }

    fn accept(&mut self, item: Option<Result<LogOutput, BollardError>>) {
        match item {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                self.stdout.push(&message);
            }
            Some(Ok(LogOutput::StdErr { message })) => self.stderr.push(&message),
            Some(Ok(LogOutput::StdIn { .. })) => {}
            Some(Err(err)) => {
                self.error = Some(err);
                self.done = true;
            }
            None => self.done = true,
        }
    }

    /// Read until the stream ends. Cancel-safe: every chunk is stored as
    /// soon as it arrives.
    async fn run(&mut self) {
        while !self.done {
            let item = self.stream.next().await;
            self.accept(item);
        }
    }

    /// Read what is left after the exit, giving up when the stream pauses
    /// for [`DRAIN_IDLE`] or after [`DRAIN_MAX`]; `false` when it gave up.
    async fn drain(&mut self) -> bool {
        let hard = Instant::now() + DRAIN_MAX;
        while !self.done {
            let until = (Instant::now() + DRAIN_IDLE).min(hard);
            match tokio::time::timeout_at(until, self.stream.next()).await {
                Ok(item) => self.accept(item),
                Err(_) => return false,
            }
        }
        true
    }
}

/// Write the run's stdin, then close it. Errors end the feeding quietly:
/// a container that stops reading its stdin is its own business.
async fn feed_stdin(mut input: Pin<Box<dyn AsyncWrite + Send>>, stdin: Stdin, id: &str) {
    let fed: std::io::Result<()> = async {
        match stdin {
            Stdin::Closed => return Ok(()),
            Stdin::Text(text) => input.write_all(&text).await?,
            Stdin::Interactive(initial, mut chunks) => {
                if let Some(text) = initial {
                    input.write_all(&text).await?;
                    input.flush().await?;
                }
                while let Some(chunk) = chunks.next().await {
                    input.write_all(&chunk.data).await?;
                    input.flush().await?;
                    if chunk.eof {
                        break;
                    }
                }
            }
        }
        // The half-close reaches dockerd, which closes the container's
        // stdin because it was created with `StdinOnce`.
        input.shutdown().await
    }
    .await;
    match fed {
        Ok(()) => tracing::debug!(container = id, "stdin fed"),
        Err(err) => {
            tracing::debug!(container = id, error = %err, "stdin ended early: the container stopped reading");
        }
    }
}

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
    /// `TimedOut` or `Canceled` when the worker killed it.
    stopped: Option<Ending>,
    code: Option<i64>,
}

/// Wait for the exit, killing the container at the deadline or on cancel.
async fn wait_for_end(
    docker: &Docker,
    id: &str,
    deadline: Instant,
    mut cancel: CancelSignal,
    settle: Duration,
) -> Result<Outcome, DockerError> {
    let waiting = wait_exit(docker, id);
    tokio::pin!(waiting);
    let reason = tokio::select! {
        biased;
        () = &mut cancel => Ending::Canceled,
        () = tokio::time::sleep_until(deadline) => Ending::TimedOut,
        code = &mut waiting => return Ok(Outcome { stopped: None, code: code? }),
    };
    tracing::info!(container = id, reason = ?reason, "killing container");
    let killed = kill(docker, id).await?;
    let code = match killed {
        Killed::Gone => None,
        _ => match tokio::time::timeout(settle, &mut waiting).await {
            Ok(code) => code?,
            Err(_) => None,
        },
    };
    // A deadline the process beat by a hair is a normal exit; a cancel
    // stays a cancel (the run was deleted, whoever stopped it).
    let stopped = match (reason, killed) {
        (Ending::TimedOut, Killed::NotRunning) => None,
        (reason, _) => Some(reason),
    };
    Ok(Outcome { stopped, code })
}

/// Drive the container to its end (see the module docs). `created` is
/// what this process knows of a container it has just created (its open
/// stdin), which saves the engine an inspect; otherwise the engine is asked.
pub(crate) async fn drive(
    docker: &Docker,
    id: &str,
    io: RunIo,
    settle: Duration,
    created: Option<bool>,
) -> Result<Exit, DockerError> {
    use ContainerStateStatusEnum as S;
    let seen = match created {
        Some(open_stdin) => Observed {
            status: Some(S::CREATED),
            open_stdin,
            ..Observed::default()
        },
        None => inspect(docker, id).await?,
    };
    match seen.status {
        Some(S::CREATED) => live(docker, id, io, seen, true, settle).await,
        Some(S::RUNNING | S::PAUSED | S::RESTARTING) => {
            live(docker, id, io, seen, false, settle).await
        }
        _ => collect(docker, id, io, seen).await,
    }
}

async fn live(
    docker: &Docker,
    id: &str,
    io: RunIo,
    seen: Observed,
    fresh: bool,
    settle: Duration,
) -> Result<Exit, DockerError> {
    let RunIo {
        stdin,
        timeout,
        cancel,
        max_output_bytes,
    } = io;
    let stdin = if seen.open_stdin {
        stdin
    } else {
        if !matches!(stdin, Stdin::Closed) {
            tracing::warn!(
                container = id,
                "container was created without an open stdin; input ignored"
            );
        }
        Stdin::Closed
    };
    let options = AttachContainerOptions {
        stream: true,
        logs: !fresh,
        stdin: !matches!(stdin, Stdin::Closed),
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
    let started_at = if fresh {
        docker
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(|source| DockerError::Start {
                id: id.to_owned(),
                source,
            })?;
        // The deadline counts from here; the exact `State.StartedAt` comes
        // with the final inspect. (An inspect right after start would wait
        // on the engine's container lock and cost every run a round trip.)
        Some(SystemTime::now())
    } else {
        tracing::info!(container = id, "re-attached to a running container");
        seen.started_at
    };

    let mut pump = OutputPump::new(output, max_output_bytes);
    let feeder = feed_stdin(input, stdin, id);
    let waiter = wait_for_end(docker, id, deadline(started_at, timeout), cancel, settle);
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
    let outcome = outcome?;

    let last = match inspect(docker, id).await {
        Ok(last) => Some(last),
        Err(err) if err.is_not_found() && (outcome.stopped.is_some() || outcome.code.is_some()) => {
            None
        }
        Err(err) => return Err(err),
    };
    if last.as_ref().is_some_and(Observed::is_running) {
        // The wait ended without the container stopping: the connection
        // broke. Do not report an exit that did not happen.
        return Err(DockerError::Wait {
            id: id.to_owned(),
            source: BollardError::IOError {
                err: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "wait ended while the container is still running",
                ),
            },
        });
    }
    let last = last.unwrap_or_default();
    let exit_code = last.exit_code.or(outcome.code);
    let ending = match outcome.stopped {
        Some(reason) => reason,
        None => Ending::Exited(exit_code.ok_or_else(|| DockerError::Wait {
            id: id.to_owned(),
            source: BollardError::DockerResponseServerError {
                status_code: 404,
                message: "container vanished before reporting its exit".to_owned(),
            },
        })?),
    };
    let (started_at, finished_at) = ordered(
        last.started_at.or(started_at),
        last.finished_at.or_else(|| Some(SystemTime::now())),
    );
    Ok(Exit {
        ending,
        exit_code,
        stdout: pump.stdout.finish(),
        stderr: pump.stderr.finish(),
        started_at,
        finished_at,
    })
}

/// An exited container: its logs and its recorded exit.
async fn collect(
    docker: &Docker,
    id: &str,
    io: RunIo,
    seen: Observed,
) -> Result<Exit, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        follow: false,
        ..LogsOptions::default()
    };
    let mut pump = OutputPump::new(
        Box::pin(docker.logs(id, Some(options))),
        io.max_output_bytes,
    );
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
    // A worker that killed the run at its deadline and died before
    // answering left a SIGKILLed container that ran its full timeout.
    let timed_out = code == KILLED && !seen.oom_killed && ran.is_some_and(|r| r >= io.timeout);
    tracing::info!(
        container = id,
        exit_code = code,
        "collected an exited container"
    );
    Ok(Exit {
        ending: if timed_out {
            Ending::TimedOut
        } else {
            Ending::Exited(code)
        },
        exit_code: seen.exit_code,
        stdout: pump.stdout.finish(),
        stderr: pump.stderr.finish(),
        started_at,
        finished_at,
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

    #[tokio::test]
    async fn the_pump_keeps_streams_apart_and_bounded() {
        let items: Vec<Result<LogOutput, BollardError>> = vec![
            Ok(LogOutput::StdOut {
                message: "abc".into(),
            }),
            Ok(LogOutput::StdErr {
                message: "err".into(),
            }),
            Ok(LogOutput::StdOut {
                message: "def".into(),
            }),
        ];
        let mut pump = OutputPump::new(Box::pin(futures_util::stream::iter(items)), 4);
        pump.run().await;
        assert!(pump.done);
        let out = pump.stdout.finish();
        assert_eq!(
            (out.text.as_str(), out.total_bytes, out.truncated),
            ("cdef", 6, true)
        );
        assert_eq!(pump.stderr.finish().text, "err");
    }

    #[tokio::test(start_paused = true)]
    async fn draining_gives_up_on_a_stuck_stream() {
        let stuck = futures_util::stream::pending();
        let mut pump = OutputPump::new(Box::pin(stuck), 4);
        let started = Instant::now();
        assert!(!pump.drain().await);
        assert_eq!(started.elapsed(), DRAIN_IDLE);
    }
}
