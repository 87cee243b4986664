//! The worker under test: the real `bus-integration-docker` binary as a
//! subprocess, configured by environment like an operator would, talking
//! to the bench's in-process Events API.
//!
//! A subprocess (not an in-process `App`) so that its memory is its own:
//! `/proc/<pid>/status` gives `VmRSS` (now) and `VmHWM` (the peak since
//! the process started, kept by the kernel, so nothing is missed between
//! samples). Each peak scenario therefore gets a fresh worker.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bus_docker_domain::{EventPrefix, Operation};
use bus_events_client::{CancellationToken, EventsClient, OutboundEvent};
use bus_integration_docker::caller::ResponseWaiter;
use bus_integration_docker::local::LocalBus;
use serde_json::{json, Value};

use crate::BenchError;

/// How long one run may take before the benchmark gives up.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The worker's log filter: quiet, except the one dispatch line per run.
pub const DEFAULT_RUST_LOG: &str = "warn,bus_integration_docker::dispatch=debug";

/// The group the worker listens in (its default).
const GROUP: &str = "bus-integration-docker";

/// A running worker process.
pub struct WorkerProcess {
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
    /// From spawn to its run stream being connected.
    pub startup: Duration,
}

impl WorkerProcess {
    /// Start `bin` against `bus` with its own runner name and at most
    /// `max_concurrent` runs; stderr, filtered by `rust_log` (which keeps
    /// the dispatch debug lines), goes to `log`. Returns once its run
    /// stream is connected.
    pub async fn start(
        bin: &Path,
        bus: &LocalBus,
        prefix: &EventPrefix,
        runner: &str,
        max_concurrent: usize,
        log: &Path,
        rust_log: &str,
    ) -> Result<Self, BenchError> {
        Self::start_with_env(bin, bus, prefix, runner, max_concurrent, log, rust_log, &[]).await
    }

    /// [`WorkerProcess::start`] with extra environment (warm profiles).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with_env(
        bin: &Path,
        bus: &LocalBus,
        prefix: &EventPrefix,
        runner: &str,
        max_concurrent: usize,
        log: &Path,
        rust_log: &str,
        env: &[(String, String)],
    ) -> Result<Self, BenchError> {
        let spawned = Instant::now();
        let file = std::fs::File::create(log)
            .map_err(|e| BenchError::new(format!("creating {}: {e}", log.display())))?;
        let child = bus
            .worker_command(bin, runner, prefix.as_str())
            .env("BUS_DOCKER_MAX_CONCURRENT_RUNS", max_concurrent.to_string())
            .env("RUST_LOG", rust_log)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| BenchError::new(format!("starting the worker {}: {e}", bin.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::new("the worker exited at once"))?;
        let mut worker = Self {
            child,
            pid,
            log: log.to_owned(),
            startup: Duration::ZERO,
        };
        worker.wait_connected(bus, prefix).await?;
        worker.startup = spawned.elapsed();
        Ok(worker)
    }

    async fn wait_connected(
        &mut self,
        bus: &LocalBus,
        prefix: &EventPrefix,
    ) -> Result<(), BenchError> {
        self.wait_stream(bus, prefix, Operation::Run).await
    }

    /// Until the worker's request stream of `op` is connected (each
    /// operation has its own stream; the run stream connects first).
    pub async fn wait_stream(
        &mut self,
        bus: &LocalBus,
        prefix: &EventPrefix,
        op: Operation,
    ) -> Result<(), BenchError> {
        let name = prefix.request_name(op);
        let deadline = Instant::now() + Duration::from_secs(30);
        while bus.server().connected_consumers(&name, GROUP) == 0 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::new(format!(
                    "the worker exited ({status}) before connecting:\n{}",
                    self.log_tail()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "the worker's {name} stream did not connect within 30s:\n{}",
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A line of `/proc/<pid>/status` in MiB (`VmRSS`, `VmHWM`).
    pub fn memory_mib(&self, key: &str) -> Result<f64, BenchError> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| BenchError::new(format!("reading /proc/{}/status: {e}", self.pid)))?;
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .ok_or_else(|| BenchError::new(format!("no {key} in /proc/{}/status", self.pid)))?;
        #[allow(clippy::cast_precision_loss)]
        Ok(kib as f64 / 1024.0)
    }

    /// Dispatch overheads (ms) the worker logged for `run_ids`.
    pub fn dispatch_ms(&self, run_ids: &HashSet<String>) -> Result<Vec<f64>, BenchError> {
        let log = std::fs::read_to_string(&self.log)
            .map_err(|e| BenchError::new(format!("reading {}: {e}", self.log.display())))?;
        Ok(parse_dispatch(&log, run_ids))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait for the graceful shutdown (SIGKILL after 20 s).
    pub async fn stop(mut self) -> Result<(), BenchError> {
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(BenchError::new(format!("waiting for the worker: {e}"))),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Err(BenchError::new(
                    "the worker did not stop within 20s of SIGTERM; killed",
                ))
            }
        }
    }
}

/// `dispatch_us=<n>` of the debug lines (target
/// `bus_integration_docker::dispatch`) whose `run_id` is in `run_ids`, in
/// milliseconds. ANSI colour codes are ignored in case the log has them.
pub fn parse_dispatch(log: &str, run_ids: &HashSet<String>) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("bus_integration_docker::dispatch"))
        .map(strip_ansi)
        .filter_map(|l| {
            let run_id = field(&l, "run_id")?;
            let us = field(&l, "dispatch_us")?.parse::<u64>().ok()?;
            #[allow(clippy::cast_precision_loss)]
            run_ids.contains(run_id).then_some(us as f64 / 1000.0)
        })
        .collect()
}

pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line
        .match_indices(&format!("{name}="))
        .map(|(i, _)| i)
        .find(|&i| {
            i == 0
                || !line.as_bytes()[i - 1].is_ascii_alphanumeric() && line.as_bytes()[i - 1] != b'_'
        })?
        + name.len()
        + 1;
    let rest = &line[start..];
    Some(
        rest.split(|c: char| c.is_whitespace() || c == ',' || c == '}')
            .next()
            .unwrap_or(rest)
            .trim_matches('"'),
    )
}

pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Publishes run requests and waits for their responses.
pub struct Caller {
    client: EventsClient,
    prefix: EventPrefix,
    waiter: ResponseWaiter,
    cancel: CancellationToken,
}

impl Caller {
    /// Open the response stream first, so no response can be missed.
    pub async fn open(bus: &LocalBus, prefix: &EventPrefix) -> Result<Self, BenchError> {
        let client = bus.client().map_err(|e| BenchError::new(e.to_string()))?;
        let waiter = ResponseWaiter::open(&client, prefix, Operation::Run, Duration::from_secs(30))
            .await
            .map_err(|e| BenchError::new(e.to_string()))?;
        Ok(Self {
            client,
            prefix: prefix.clone(),
            waiter,
            cancel: CancellationToken::new(),
        })
    }

    /// The event prefix requests are published under.
    pub fn prefix(&self) -> &EventPrefix {
        &self.prefix
    }

    /// Publish a run request with this payload; `run_id` is the
    /// correlation id.
    pub async fn publish_payload(&self, run_id: &str, payload: Value) -> Result<(), BenchError> {
        let event = OutboundEvent {
            name: self.prefix.request_name(Operation::Run),
            correlation_id: run_id.to_owned(),
            payload,
            error: None,
        };
        self.client
            .publish(&event, &self.cancel)
            .await
            .map_err(|e| BenchError::new(format!("publish: {e}")))
    }

    /// Publish one run request with a caller-chosen `run_id` (also the
    /// correlation id).
    pub async fn publish(
        &self,
        run_id: &str,
        image: &str,
        command: &[&str],
    ) -> Result<(), BenchError> {
        self.publish_with(run_id, image, command, false).await
    }

    /// [`Caller::publish`], asking for live output when `stream_output`.
    pub async fn publish_with(
        &self,
        run_id: &str,
        image: &str,
        command: &[&str],
        stream_output: bool,
    ) -> Result<(), BenchError> {
        let payload = json!({"run_id": run_id, "image": image, "command": command,
                             "network": "none", "stream_output": stream_output});
        self.publish_payload(run_id, payload).await
    }

    /// Wait for the response to `run_id`.
    pub async fn wait(&mut self, run_id: &str) -> Result<Value, BenchError> {
        self.waiter
            .wait(run_id, RUN_TIMEOUT)
            .await
            .map_err(|e| BenchError::new(format!("run {run_id}: {e}")))
    }

    /// Publish, wait, and check the run succeeded: the end-to-end latency.
    pub async fn run(
        &mut self,
        run_id: &str,
        image: &str,
        command: &[&str],
    ) -> Result<(Duration, Value), BenchError> {
        let started = Instant::now();
        self.publish(run_id, image, command).await?;
        let response = self.wait(run_id).await?;
        let elapsed = started.elapsed();
        check_succeeded(run_id, &response)?;
        Ok((elapsed, response))
    }

    /// Publish with live output, read its `run.output` events while
    /// waiting for the response: the end-to-end latency, the response,
    /// and how many events and bytes of data arrived for it.
    pub async fn run_streaming(
        &mut self,
        run_id: &str,
        image: &str,
        command: &[&str],
    ) -> Result<(Duration, Value, usize, usize), BenchError> {
        let name = self.prefix.output_name();
        let mut outputs = ResponseWaiter::open_name(&self.client, &name, Duration::from_secs(30))
            .await
            .map_err(|e| BenchError::new(e.to_string()))?;
        let started = Instant::now();
        self.publish_with(run_id, image, command, true).await?;
        let (mut events, mut bytes) = (0, 0);
        let mut count = |c: &str, payload: &Value| {
            if c == run_id {
                events += 1;
                bytes += payload["data"].as_str().map_or(0, str::len);
            }
        };
        let response = loop {
            tokio::select! {
                out = outputs.next_any(RUN_TIMEOUT) => {
                    let out = out.map_err(|e| BenchError::new(format!("output stream: {e}")))?;
                    if let Some((c, payload)) = out {
                        count(&c, &payload);
                    }
                }
                r = self.waiter.wait(run_id, RUN_TIMEOUT) => {
                    break r.map_err(|e| BenchError::new(format!("run {run_id}: {e}")))?;
                }
            }
        };
        let elapsed = started.elapsed();
        // Output events were published before the response; take the ones
        // still on their way.
        while let Ok(Some((c, payload))) = outputs.next_any(Duration::from_millis(300)).await {
            count(&c, &payload);
        }
        check_succeeded(run_id, &response)?;
        Ok((elapsed, response, events, bytes))
    }

    /// Wait for responses to all of `run_ids` (any order); each must
    /// have succeeded. Returns them by run id.
    pub async fn wait_all(&mut self, run_ids: &HashSet<String>) -> Result<Vec<Value>, BenchError> {
        let mut pending = run_ids.clone();
        let mut got = Vec::with_capacity(run_ids.len());
        let deadline = Instant::now() + RUN_TIMEOUT;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .waiter
                .next_any(left)
                .await
                .map_err(|e| BenchError::new(e.to_string()))?
            {
                Some((correlation, payload)) => {
                    if pending.remove(&correlation) {
                        check_succeeded(&correlation, &payload)?;
                        got.push(payload);
                    }
                }
                None => {
                    return Err(BenchError::new(format!(
                        "{} runs got no response within {RUN_TIMEOUT:?}",
                        pending.len()
                    )))
                }
            }
        }
        Ok(got)
    }
}

fn check_succeeded(run_id: &str, response: &Value) -> Result<(), BenchError> {
    if response["status"] == "succeeded" && response["exit_code"] == 0 {
        Ok(())
    } else {
        Err(BenchError::new(format!(
            "run {run_id} did not succeed: {response}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_lines_are_parsed_by_run_id() {
        let log = "\
2025-01-01T00:00:00.000001Z DEBUG bus_integration_docker::dispatch: creating container run_id=b-1 dispatch_us=1234
2025-01-01T00:00:00.000002Z DEBUG bus_integration_docker::dispatch: creating container run_id=warm-1 dispatch_us=99999
2025-01-01T00:00:00.000003Z  WARN bus_integration_docker::worker: something run_id=b-2
\x1b[2m2025\x1b[0m \x1b[34mDEBUG\x1b[0m \x1b[2mbus_integration_docker::dispatch\x1b[0m\x1b[2m:\x1b[0m creating container \x1b[3mrun_id\x1b[0m\x1b[2m=\x1b[0mb-2 \x1b[3mdispatch_us\x1b[0m\x1b[2m=\x1b[0m500
";
        let ids: HashSet<String> = ["b-1", "b-2"].into_iter().map(String::from).collect();
        assert_eq!(parse_dispatch(log, &ids), vec![1.234, 0.5]);
    }
}
