//! `bus-docker-bench`: what the worker costs next to the Docker Engine.
//!
//! In one run, on one machine, it measures the physical limit of this
//! design (the Engine API create/start/wait/remove sequence through
//! bollard), the everyday alternative (`docker run --rm`), and the worker
//! end to end (publish `run.request` to a local Events API, receive
//! `run.response`); then throughput at several concurrencies, the
//! worker's memory, and its dispatch overhead. It prints a table, writes
//! every figure to a JSON file, and judges the targets of BENCHMARKS.md.
//!
//! Everything stays on loopback: the Events API runs in this process
//! (`LocalBus`), the worker is the real release binary as a subprocess
//! (so its memory can be read from `/proc`), containers get network
//! `none`. This is a benchmark, not a test: nothing here asserts on time.
//!
//! Layout (`bench/src/`): this file holds the arguments, the set-up and
//! the order of the scenarios; `runs` (sequential latency, throughput,
//! memory), `engine` (raw bollard and CLI runs), `worker` (the worker
//! process and the request side), `live` (live output), `status` and
//! `others` (status latency against the number of managed containers),
//! `warm` (warm start), `stats` (nearest-rank percentiles), `report`
//! (targets, table, JSON), `machine` (what it ran on).
//!
//! Every container it creates carries the label `bus.bench` or a runner
//! name `bus-bench-<pid>-…`; they are removed at the end, also after a
//! failure or SIGINT/SIGTERM.

mod engine;
mod live;
mod machine;
mod others;
mod report;
mod runs;
mod stats;
mod status;
mod warm;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bollard::Docker;
use bus_docker_domain::EventPrefix;
use bus_integration_docker::local::LocalBus;
use clap::Parser;
use serde_json::{json, Value};

use engine::RawNetwork;
use report::Figures;
use worker::{Caller, WorkerProcess};

/// The benchmark's failure: printed, exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

impl BenchError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Measure the raw engine, `docker run --rm` and the worker in one run.
#[derive(Debug, Parser)]
#[command(name = "bus-docker-bench", version)]
struct Args {
    /// Sequential runs per latency scenario.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Runs per throughput measurement.
    #[arg(long, default_value_t = 24)]
    throughput_runs: usize,
    /// Concurrencies for the throughput scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    concurrency: Vec<usize>,
    /// Runs printing 1 MiB each in the memory scenario (8 at a time);
    /// raise it to see what finished runs' output keeps in memory.
    #[arg(long, default_value_t = 8)]
    output_runs: usize,
    /// Pairs of 100 MiB runs (one with `stream_output`, one without) in
    /// the live output scenario; 0 skips it.
    #[arg(long, default_value_t = 2)]
    live_pairs: usize,
    /// Only the live output scenario (a short run for its figure).
    #[arg(long, conflicts_with = "status_only")]
    live_only: bool,
    /// Managed containers of other owners on the engine at each point of
    /// the status scenario; the first point is the baseline.
    #[arg(long, value_delimiter = ',', default_value = "0,64,256")]
    status_containers: Vec<usize>,
    /// Timed status requests per point (after the warm-up); 0 skips the
    /// status scenario.
    #[arg(long, default_value_t = 30)]
    status_samples: usize,
    /// Only the status scenario.
    #[arg(long)]
    status_only: bool,
    /// Only the warm start scenarios (`warm.rs`; figures also in
    /// `<json dir>/warm.json`).
    #[arg(long, conflicts_with_all = ["status_only", "live_only"])]
    warm_only: bool,
    /// Untimed runs before each scenario.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The image of the trivial container (`true`, `sh`, `head`, `tr`, `yes`).
    #[arg(long, env = "BUS_TEST_IMAGE", default_value = "bus-test-busybox:local")]
    image: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// The worker binary (default: `bus-integration-docker` next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// `RUST_LOG` of the worker processes (logs in `<json dir>/logs/`). It
    /// must keep `bus_integration_docker::dispatch=debug`: the dispatch
    /// figures are read from those lines. Widen it to profile a run.
    #[arg(long, default_value = worker::DEFAULT_RUST_LOG)]
    worker_rust_log: String,
}

const ONE_MIB: u64 = 1 << 20;
const HUNDRED_MIB: u64 = 100 << 20;

fn main() -> ExitCode {
    let args = Args::parse();
    // Two worker threads, like the machine: the bench must not take more
    // of it than a client would.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bus-docker-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bus-docker-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn progress(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

/// Everything the scenarios share.
struct Bench {
    args: Args,
    docker: Docker,
    cli: Option<PathBuf>,
    worker_bin: PathBuf,
    logs: PathBuf,
    bus: LocalBus,
    /// `bus-bench-<pid>`: runner names, run ids, container names.
    tag: String,
    prefixes: AtomicUsize,
}

impl Bench {
    fn prefix(&self, scenario: &str) -> Result<EventPrefix, BenchError> {
        let n = self.prefixes.fetch_add(1, Ordering::Relaxed);
        EventPrefix::parse(&format!("bus.bench.p{}.{scenario}{n}", std::process::id()))
            .map_err(|e| BenchError::new(e.to_string()))
    }

    /// A fresh worker for `scenario` with its own prefix, and a caller.
    async fn worker(
        &self,
        scenario: &str,
        max_concurrent: usize,
    ) -> Result<(WorkerProcess, Caller), BenchError> {
        let prefix = self.prefix(scenario)?;
        let runner = format!("{}-{scenario}", self.tag);
        let log = self.logs.join(format!("worker-{scenario}.log"));
        let caller = Caller::open(&self.bus, &prefix).await?;
        let worker = WorkerProcess::start(
            &self.worker_bin,
            &self.bus,
            &prefix,
            &runner,
            max_concurrent,
            &log,
            &self.args.worker_rust_log,
        )
        .await?;
        Ok((worker, caller))
    }

    fn run_id(&self, scenario: &str, i: usize) -> String {
        format!("{}-{scenario}-{i}", self.tag)
    }

    async fn raw(
        &self,
        scenario: &str,
        i: usize,
        network: RawNetwork,
    ) -> Result<Duration, BenchError> {
        engine::raw_run(
            &self.docker,
            &self.args.image,
            &["true"],
            &self.run_id(scenario, i),
            network,
        )
        .await
    }
}

async fn run(args: Args) -> Result<(), BenchError> {
    let (bench, machine, config) = setup(args).await?;
    let mut figures = Figures::default();
    let outcome = tokio::select! {
        outcome = scenarios(&bench, &mut figures) => outcome,
        signal = interrupted() => {
            progress(format!("{signal}: stopping, removing this run's containers"));
            Err(BenchError::new(format!("interrupted by {signal}")))
        }
    };
    if outcome.is_err() {
        // A worker killed mid-scenario may have a create call in flight.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (cleaned, tombstones) = engine::remove_leftovers(&bench.docker, &bench.tag)
        .await
        .unwrap_or((0, 0));
    if cleaned > tombstones {
        figures.notes.push(format!(
            "{} containers were left behind and removed",
            cleaned - tombstones
        ));
    }
    outcome?;
    if let Some(load) = machine::loadavg() {
        figures
            .notes
            .push(format!("load average at the end (1/5/15 min): {load}"));
    }

    write_results(&figures, machine, config, &bench.args.json)?;
    bench.bus.shutdown().await;
    Ok(())
}

/// Check what the benchmark needs (the image, the worker binary), remove
/// what an earlier benchmark left, describe the machine and start the
/// local Events API: the shared state, the machine, and the configuration
/// the JSON records.
async fn setup(args: Args) -> Result<(Bench, Value, Value), BenchError> {
    if args.runs == 0 || args.throughput_runs == 0 {
        return Err(BenchError::new(
            "--runs and --throughput-runs must be at least 1",
        ));
    }
    let docker = engine::connect().await?;
    if docker.inspect_image(&args.image).await.is_err() {
        return Err(BenchError::new(format!(
            "image {} not found: run scripts/build-test-images.sh",
            args.image
        )));
    }
    let worker_bin = match &args.worker_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| BenchError::new(format!("locating this executable: {e}")))?
            .with_file_name("bus-integration-docker"),
    };
    if !worker_bin.is_file() {
        return Err(BenchError::new(format!(
            "worker binary {} not found: cargo build --release --bin bus-integration-docker, or pass --worker-bin",
            worker_bin.display()
        )));
    }
    let json_path = args.json.clone();
    let logs = json_path.parent().unwrap_or(Path::new(".")).join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| BenchError::new(format!("creating {}: {e}", logs.display())))?;
    let cli = engine::docker_cli();
    let tag = format!("bus-bench-{}", std::process::id());
    let (leftovers, _) = engine::remove_leftovers(&docker, "bus-bench-").await?;
    if leftovers > 0 {
        progress(format!(
            "removed {leftovers} containers left by an earlier benchmark"
        ));
    }
    let machine = machine::describe(&docker, cli.as_deref()).await;
    if let Some(load) = machine::loadavg() {
        progress(format!("load average at the start (1/5/15 min): {load}"));
    }
    let bus = LocalBus::start()
        .await
        .map_err(|e| BenchError::new(e.to_string()))?;
    let config = json!({
        "runs": args.runs,
        "throughput_runs": args.throughput_runs,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "output_runs": args.output_runs,
        "live_pairs": args.live_pairs,
        "status_containers": args.status_containers,
        "status_samples": args.status_samples,
        "image": args.image,
        "worker_bin": worker_bin.display().to_string(),
        "worker_rust_log": args.worker_rust_log,
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "started_at_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let bench = Bench {
        args,
        docker,
        cli,
        worker_bin,
        logs,
        bus,
        tag,
        prefixes: AtomicUsize::new(0),
    };
    Ok((bench, machine, config))
}

/// Print the table, the targets met and the notes; write every figure to
/// `json_path`.
fn write_results(
    figures: &Figures,
    machine: Value,
    config: Value,
    json_path: &Path,
) -> Result<(), BenchError> {
    let table = figures.table();
    println!("{table}");
    let targets = figures.targets();
    let met = targets.iter().filter(|t| t.met() == Some(true)).count();
    if !targets.is_empty() {
        println!("targets met: {met}/{}", targets.len());
    }
    for note in &figures.notes {
        println!("note: {note}");
    }
    let doc = figures.to_json(machine, machine::git(), config);
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| BenchError::new(format!("creating {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| BenchError::new(e.to_string()))?;
    std::fs::write(json_path, text + "\n")
        .map_err(|e| BenchError::new(format!("writing {}: {e}", json_path.display())))?;
    println!("results: {}", json_path.display());
    Ok(())
}

/// SIGINT or SIGTERM, whichever comes first (never, when neither can be
/// watched).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

async fn scenarios(bench: &Bench, figures: &mut Figures) -> Result<(), BenchError> {
    let args = &bench.args;
    if args.warm_only {
        let out = warm::run(bench).await?;
        warm::print(&out);
        let path = args.json.with_file_name("warm.json");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let text =
            serde_json::to_string_pretty(&out).map_err(|e| BenchError::new(e.to_string()))?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| BenchError::new(format!("writing {}: {e}", path.display())))?;
        return Ok(());
    }
    if !args.live_only && !args.status_only {
        runs::sequential(bench, figures).await?;
        for &c in &args.concurrency {
            runs::throughput(bench, figures, c).await?;
        }
        runs::memory(bench, &mut figures.memory).await?;
    }
    if !args.live_only && args.status_samples > 0 {
        status::scenario(bench, figures).await?;
    }
    if !args.status_only {
        live::scenario(bench, figures).await?;
    }
    Ok(())
}

/// The run printed `bytes` in all (so the figure measured what it claims).
fn expect_bytes(response: &serde_json::Value, bytes: u64) -> Result<(), BenchError> {
    if response["stdout_bytes"].as_u64() == Some(bytes) {
        Ok(())
    } else {
        Err(BenchError::new(format!(
            "expected stdout_bytes {bytes}, got {} (stdout_truncated {})",
            response["stdout_bytes"], response["stdout_truncated"]
        )))
    }
}
