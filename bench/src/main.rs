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
//! Layout (`bus-docker-bench/`): `engine` (raw bollard and CLI runs),
//! `worker` (the worker process and the request side), `live` (live
//! output), `status` and `others` (status latency against the number of managed
//! containers), `stats` (nearest-rank percentiles), `report` (targets,
//! table, JSON), `machine` (what it ran on).
//!
//! Every container it creates carries the label `bus.bench` or a runner
//! name `bus-bench-<pid>-…`; they are removed at the end, also after a
//! failure or SIGINT/SIGTERM.

mod engine;
mod live;
mod machine;
mod others;
mod report;
mod stats;
mod status;
mod warm;
mod worker;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bus_docker_domain::EventPrefix;
use bus_integration_docker::local::LocalBus;
use clap::Parser;
use serde_json::json;

use engine::RawNetwork;
use machine::CpuSnapshot;
use report::{Figures, HostCpu, Memory, Throughput};
use stats::Samples;
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
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| BenchError::new(format!("writing {}: {e}", json_path.display())))?;
    println!("results: {}", json_path.display());
    bench.bus.shutdown().await;
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
        sequential(bench, figures).await?;
        for &c in &args.concurrency {
            throughput(bench, figures, c).await?;
        }
        memory(bench, &mut figures.memory).await?;
    }
    if !args.live_only && args.status_samples > 0 {
        status::scenario(bench, figures).await?;
    }
    if !args.status_only {
        live::scenario(bench, figures).await?;
    }
    Ok(())
}

/// Raw engine, CLI and worker, N runs each, interleaved run by run so a
/// burst of load from elsewhere on a shared machine hits all three alike.
/// Also the worker's idle memory and its dispatch overhead.
async fn sequential(bench: &Bench, figures: &mut Figures) -> Result<(), BenchError> {
    let (worker, mut caller) = bench.worker("seq", 4).await?;
    figures.worker_startup_ms = Some(worker.startup.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    figures.memory.idle = Some(worker.memory_mib("VmRSS")?);
    let image = bench.args.image.as_str();
    if bench.cli.is_none() {
        figures
            .notes
            .push("docker CLI not on PATH: the CLI scenarios were skipped".into());
    }
    progress(format!(
        "sequential: {} warm-up + {} runs each of raw engine, docker run --rm, worker",
        bench.args.warmup, bench.args.runs
    ));
    for i in 0..bench.args.warmup {
        bench.raw("warm-raw", i, RawNetwork::Disabled).await?;
        bench.raw("warm-rawns", i, RawNetwork::Setup).await?;
        if let Some(cli) = &bench.cli {
            engine::cli_run(cli, image, &["true"]).await?;
        }
        caller
            .run(&bench.run_id("warm-seq", i), image, &["true"])
            .await?;
    }
    let mut cli_samples = Samples::default();
    let mut timed = HashSet::new();
    let mut worker_cpu_ns = 0;
    for i in 0..bench.args.runs {
        figures
            .raw
            .push(bench.raw("raw", i, RawNetwork::Disabled).await?);
        figures
            .raw_network_setup
            .push(bench.raw("rawns", i, RawNetwork::Setup).await?);
        if let Some(cli) = &bench.cli {
            cli_samples.push(engine::cli_run(cli, image, &["true"]).await?);
        }
        let run_id = bench.run_id("seq", i);
        let cpu_before = machine::process_cpu_ns(worker.pid());
        let (elapsed, _) = caller.run(&run_id, image, &["true"]).await?;
        // The response is published before the container is removed: let
        // the worker finish the run before reading its CPU time.
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let (Some(before), Some(after)) = (cpu_before, machine::process_cpu_ns(worker.pid())) {
            worker_cpu_ns += after.saturating_sub(before);
        }
        figures.worker.push(elapsed);
        timed.insert(run_id);
    }
    #[allow(clippy::cast_precision_loss)]
    let per_run = worker_cpu_ns as f64 / 1e6 / bench.args.runs as f64;
    figures.worker_cpu_ms_per_run = Some(per_run);
    figures.cli = bench.cli.is_some().then_some(cli_samples);
    let dispatch = worker.dispatch_ms(&timed)?;
    if dispatch.len() < timed.len() {
        figures.notes.push(format!(
            "only {} of {} dispatch lines found in the worker log (is RUST_LOG honoured?)",
            dispatch.len(),
            timed.len()
        ));
    }
    for ms in dispatch {
        figures.dispatch.push_ms(ms);
    }
    worker.stop().await
}

/// Run `m` jobs with at most `c` at a time; the wall time of all.
async fn pool<F, Fut>(c: usize, m: usize, job: F) -> Result<Duration, BenchError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Duration, BenchError>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..c.max(1) {
        let (next, job) = (Arc::clone(&next), job.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= m {
                    return Ok::<(), BenchError>(());
                }
                job(i).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| BenchError::new(format!("pool task: {e}")))??;
    }
    Ok(started.elapsed())
}

/// `m` runs at concurrency `c`: the worker (fresh, `max_concurrent_runs`
/// = c, all requests published at once), the CLI and the raw engine (a
/// pool of c tasks).
async fn throughput(bench: &Bench, figures: &mut Figures, c: usize) -> Result<(), BenchError> {
    let m = bench.args.throughput_runs;
    let image = bench.args.image.clone();
    progress(format!("throughput at concurrency {c}: {m} runs each"));

    let scenario = format!("thr{c}");
    let (worker, mut caller) = bench.worker(&scenario, c).await?;
    let warm: HashSet<String> = (0..bench.args.warmup.max(c))
        .map(|i| bench.run_id(&format!("warm-{scenario}"), i))
        .collect();
    for id in &warm {
        caller.publish(id, &image, &["true"]).await?;
    }
    caller.wait_all(&warm).await?;
    let ids: Vec<String> = (0..m).map(|i| bench.run_id(&scenario, i)).collect();
    let cpu = CpuSnapshot::now();
    let started = Instant::now();
    for id in &ids {
        caller.publish(id, &image, &["true"]).await?;
    }
    caller.wait_all(&ids.iter().cloned().collect()).await?;
    let seconds = started.elapsed().as_secs_f64();
    let host_cpu = cpu_since(cpu, m);
    figures.throughput.push(Throughput {
        who: "worker",
        concurrency: c,
        runs: m,
        seconds,
        host_cpu,
    });
    worker.stop().await?;

    if let Some(cli) = bench.cli.clone() {
        let job = {
            let (cli, image) = (cli.clone(), image.clone());
            move |_| {
                let (cli, image) = (cli.clone(), image.clone());
                async move { engine::cli_run(&cli, &image, &["true"]).await }
            }
        };
        pool(c, c, job.clone()).await?;
        let cpu = CpuSnapshot::now();
        let elapsed = pool(c, m, job).await?;
        let host_cpu = cpu_since(cpu, m);
        figures.throughput.push(Throughput {
            who: "docker_cli",
            concurrency: c,
            runs: m,
            seconds: elapsed.as_secs_f64(),
            host_cpu,
        });
    }

    for (who, network, label) in [
        ("raw_engine", RawNetwork::Disabled, "rawthr"),
        ("raw_engine_network_setup", RawNetwork::Setup, "rawnsthr"),
    ] {
        let raw_job = |label: String| {
            let (docker, image, tag) = (bench.docker.clone(), image.clone(), bench.tag.clone());
            move |i: usize| {
                let (docker, image, name) =
                    (docker.clone(), image.clone(), format!("{tag}-{label}-{i}"));
                async move { engine::raw_run(&docker, &image, &["true"], &name, network).await }
            }
        };
        pool(c, c, raw_job(format!("warm-{label}{c}"))).await?;
        let cpu = CpuSnapshot::now();
        let elapsed = pool(c, m, raw_job(format!("{label}{c}"))).await?;
        let host_cpu = cpu_since(cpu, m);
        figures.throughput.push(Throughput {
            who,
            concurrency: c,
            runs: m,
            seconds: elapsed.as_secs_f64(),
            host_cpu,
        });
    }
    Ok(())
}

/// The machine's CPU use since `before`, for `runs` runs.
fn cpu_since(before: Option<CpuSnapshot>, runs: usize) -> Option<HostCpu> {
    let (busy_pct, busy_ms) = CpuSnapshot::now()?.since(&before?);
    #[allow(clippy::cast_precision_loss)]
    Some(HostCpu {
        busy_pct,
        ms_per_run: busy_ms / runs as f64,
    })
}

/// Peak memory: a fresh worker per scenario, read from the kernel's
/// high-water mark (`VmHWM`) once every response arrived.
async fn memory(bench: &Bench, memory: &mut Memory) -> Result<(), BenchError> {
    let image = bench.args.image.as_str();

    let n = bench.args.output_runs;
    progress(format!("memory: {n} runs printing 1 MiB each, 8 at a time"));
    let (worker, mut caller) = bench.worker("rss8", 8).await?;
    let one_mib = format!("head -c {ONE_MIB} /dev/zero | tr '\\000' x");
    // Waves of 8, so any --output-runs fits the worker's queue.
    let ids: Vec<String> = (0..n).map(|i| bench.run_id("rss8", i)).collect();
    for wave in ids.chunks(8) {
        for id in wave {
            caller.publish(id, image, &["sh", "-c", &one_mib]).await?;
        }
        for response in caller.wait_all(&wave.iter().cloned().collect()).await? {
            expect_bytes(&response, ONE_MIB)?;
        }
    }
    memory.one_mib_runs = n;
    memory.peak_1mib_runs = Some(worker.memory_mib("VmHWM")?);
    memory.after_1mib_runs = Some(worker.memory_mib("VmRSS")?);
    worker.stop().await?;

    progress("memory: one run printing 100 MiB");
    let (worker, mut caller) = bench.worker("rss100", 1).await?;
    let hundred = format!("yes 0123456789abcdef | head -c {HUNDRED_MIB}");
    let (_, response) = caller
        .run(&bench.run_id("rss100", 0), image, &["sh", "-c", &hundred])
        .await?;
    expect_bytes(&response, HUNDRED_MIB)?;
    memory.peak_100mib = Some(worker.memory_mib("VmHWM")?);
    memory.after_100mib = Some(worker.memory_mib("VmRSS")?);
    worker.stop().await
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
