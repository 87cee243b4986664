//! The everyday scenarios: sequential latency (raw engine, `docker run`,
//! the worker, interleaved), throughput at each concurrency, and the
//! worker's peak memory under output.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::{self, RawNetwork};
use crate::machine::{self, CpuSnapshot};
use crate::report::{Figures, HostCpu, Memory, Throughput};
use crate::stats::Samples;
use crate::{expect_bytes, progress, Bench, BenchError, HUNDRED_MIB, ONE_MIB};

/// Raw engine, CLI and worker, N runs each, interleaved run by run so a
/// burst of load from elsewhere on a shared machine hits all three alike.
/// Also the worker's idle memory and its dispatch overhead.
pub(crate) async fn sequential(bench: &Bench, figures: &mut Figures) -> Result<(), BenchError> {
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
pub(crate) async fn pool<F, Fut>(c: usize, m: usize, job: F) -> Result<Duration, BenchError>
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
pub(crate) async fn throughput(
    bench: &Bench,
    figures: &mut Figures,
    c: usize,
) -> Result<(), BenchError> {
    let m = bench.args.throughput_runs;
    let image = bench.args.image.clone();
    progress(format!("throughput at concurrency {c}: {m} runs each"));

    worker_throughput(bench, figures, c, m, &image).await?;

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

/// The worker's part of [`throughput`]: a fresh worker with
/// `max_concurrent_runs` = c, warmed up, then all `m` requests published at
/// once.
async fn worker_throughput(
    bench: &Bench,
    figures: &mut Figures,
    c: usize,
    m: usize,
    image: &str,
) -> Result<(), BenchError> {
    let scenario = format!("thr{c}");
    let (worker, mut caller) = bench.worker(&scenario, c).await?;
    let warm: HashSet<String> = (0..bench.args.warmup.max(c))
        .map(|i| bench.run_id(&format!("warm-{scenario}"), i))
        .collect();
    for id in &warm {
        caller.publish(id, image, &["true"]).await?;
    }
    caller.wait_all(&warm).await?;
    let ids: Vec<String> = (0..m).map(|i| bench.run_id(&scenario, i)).collect();
    let cpu = CpuSnapshot::now();
    let started = Instant::now();
    for id in &ids {
        caller.publish(id, image, &["true"]).await?;
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
pub(crate) async fn memory(bench: &Bench, memory: &mut Memory) -> Result<(), BenchError> {
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
