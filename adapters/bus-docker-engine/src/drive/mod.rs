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

mod end;

use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bollard::container::AttachContainerResults;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{AttachContainerOptions, LogsOptions, StartContainerOptions};
use bollard::Docker;
use bus_docker_domain::ports::{RunIo, Stdin};
use bus_docker_domain::run::Exit;
use tokio::io::AsyncWrite;

use crate::control::{inspect, Observed};
use crate::error::DockerError;
use crate::output::{count_log, feed_stdin, LiveSink, LogBytes, Output, OutputPump};
pub(crate) use end::DieWatch;
use end::{collect, deadline, not_started, read_exit, wait_for_end, Stopping};

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
