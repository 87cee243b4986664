//! `--warm-only`: warm start (docs/protocol.md §10) next to the cold path and the
//! raw Engine API sequence, measured in one run.
//!
//! * raw: create → start → wait → remove of `true` (bollard), the floor
//!   of the cold path;
//! * cold: `true` through a worker whose profile keeps nothing parked;
//! * hit: `true` through a worker whose profile keeps 2 parked per engine,
//!   each request sent once the pool is full again (paced), so every one
//!   can hit; the worker's own line (target `bus_integration_docker::warm`,
//!   `claim_us`) gives request read → claim done, after which the launcher
//!   gets the command (one write) and `exec`s it;
//! * miss: a run the parked containers cannot take (a plain image run) on
//!   the warm worker, next to the same run on the cold worker: a pair per
//!   round in alternating order, each started on a quiet engine (no run
//!   container left, the pool full);
//! * hit rate at 1, 2, 4, 8 and 16 arrivals per second, sequential requests at
//!   that rate (not waiting for responses), `warm = 2`;
//! * idle RSS of both workers.
//!
//! Figures go to stdout and to `<json dir>/warm.json`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::RawNetwork;
use crate::stats::Samples;
use crate::worker::{field, strip_ansi, Caller, WorkerProcess};
use crate::{progress, Bench, BenchError};

const RUST_LOG: &str = "warn,bus_integration_docker::dispatch=debug,bus_integration_docker::warm=debug,bus_docker_engine::warm=debug,bus_docker_engine::drive=debug,bus_docker_service::worker::warm=debug";

/// What the worker logs when a claimed run's exit came from the engine's
/// `die` event (`bus_docker_engine::exits`), not from the teardown.
const DIE_EXIT: &str = "exit taken from the engine's die event";

/// The env of a worker whose profile `quick` keeps `warm` parked.
fn profile_env(image: &str, warm: usize) -> Vec<(String, String)> {
    vec![
        ("BUS_DOCKER__PROFILES__QUICK__IMAGE".into(), image.into()),
        ("BUS_DOCKER__PROFILES__QUICK__NETWORK".into(), "none".into()),
        ("BUS_DOCKER__PROFILES__QUICK__WARM".into(), warm.to_string()),
        ("BUS_DOCKER__RUN_RETENTION".into(), "0s".into()),
    ]
}

async fn worker(
    bench: &Bench,
    scenario: &str,
    warm: usize,
) -> Result<(WorkerProcess, Caller, std::path::PathBuf), BenchError> {
    let prefix = bench.prefix(scenario)?;
    let runner = format!("{}-{scenario}", bench.tag);
    let log = bench.logs.join(format!("worker-{scenario}.log"));
    let caller = Caller::open(&bench.bus, &prefix).await?;
    let w = WorkerProcess::start_with_env(
        &bench.worker_bin,
        &bench.bus,
        &prefix,
        &runner,
        4,
        &log,
        RUST_LOG,
        &profile_env(&bench.args.image, warm),
    )
    .await?;
    Ok((w, caller, log))
}

/// A warm claim line of the worker's log.
struct Claim {
    /// Request read → claim done (`claim_us`).
    ms: f64,
    /// When the request was read, µs since the epoch (`read_at_us`).
    read_at_us: Option<u64>,
}

/// The warm claim lines, by run id.
fn claims(log: &std::path::Path) -> std::collections::HashMap<String, Claim> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("bus_integration_docker::warm"))
        .map(strip_ansi)
        .filter_map(|l| {
            let run_id = field(&l, "run_id")?.to_owned();
            let us = field(&l, "claim_us")?.parse::<u64>().ok()?;
            let read_at_us = field(&l, "read_at_us").and_then(|v| v.parse().ok());
            #[allow(clippy::cast_precision_loss)]
            Some((
                run_id,
                Claim {
                    ms: us as f64 / 1000.0,
                    read_at_us,
                },
            ))
        })
        .collect()
}

/// The wall-clock time busybox `adjtimex` printed (its first instruction
/// in the container), µs since the epoch.
fn adjtimex_us(stdout: &str) -> Option<u64> {
    let value = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(value("time.tv_sec:")? * 1_000_000 + value("time.tv_usec:")?)
}

/// The names of `runner`'s containers (`all`: stopped ones too).
async fn names_of(bench: &Bench, runner: &str, all: bool) -> Result<Vec<String>, BenchError> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("bus.runner={runner}")],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(all)
        .filters(&filters)
        .build();
    let list = bench
        .docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| BenchError::new(e.to_string()))?;
    Ok(list
        .into_iter()
        .filter_map(|c| c.names?.into_iter().next())
        .collect())
}

/// Parked (running) containers of `runner` now.
async fn parked(bench: &Bench, runner: &str) -> Result<usize, BenchError> {
    let names = names_of(bench, runner, false).await?;
    Ok(names.iter().filter(|n| n.starts_with("/bus-warm-")).count())
}

/// Wait until no run container of `runners` is left (each run's container
/// is removed after its response).
async fn wait_quiet(bench: &Bench, runners: &[String]) -> Result<(), BenchError> {
    let start = Instant::now();
    loop {
        let mut busy = false;
        for runner in runners {
            let names = names_of(bench, runner, true).await?;
            busy |= names.iter().any(|n| n.starts_with("/bus-run-"));
        }
        if !busy {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::new(
                "run containers were not removed within 60s",
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_parked(bench: &Bench, runner: &str, n: usize) -> Result<Duration, BenchError> {
    let start = Instant::now();
    while parked(bench, runner).await? < n {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::new("parked containers did not come within 60s"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(start.elapsed())
}

fn quick(run_id: &str) -> Value {
    json!({"run_id": run_id, "profile": "quick", "command": ["true"]})
}

/// A hit whose command's first instruction prints the time.
fn stamped(run_id: &str) -> Value {
    json!({"run_id": run_id, "profile": "quick", "command": ["adjtimex"]})
}

fn plain(run_id: &str, image: &str) -> Value {
    json!({"run_id": run_id, "image": image, "command": ["true"], "network": "none"})
}

async fn timed(caller: &mut Caller, run_id: &str, payload: Value) -> Result<Duration, BenchError> {
    Ok(answered(caller, run_id, payload).await?.0)
}

/// Publish, wait for the response; its time and payload.
async fn answered(
    caller: &mut Caller,
    run_id: &str,
    payload: Value,
) -> Result<(Duration, Value), BenchError> {
    let t = Instant::now();
    caller.publish_payload(run_id, payload).await?;
    let r = caller.wait(run_id).await?;
    if r["status"] != "succeeded" {
        return Err(BenchError::new(format!("run {run_id}: {r}")));
    }
    Ok((t.elapsed(), r))
}

fn row(name: &str, s: &Samples) -> Value {
    json!({"scenario": name, "n": s.len(), "p50_ms": s.p50(), "p95_ms": s.p95(), "p99_ms": s.p99()})
}

/// The warm scenarios (module docs).
pub async fn run(bench: &Bench) -> Result<Value, BenchError> {
    let runs = bench.args.runs;
    let image = bench.args.image.clone();
    let (cold_w, mut cold, _) = worker(bench, "cold", 0).await?;
    let (warm_w, mut warm, warm_log) = worker(bench, "warm", 2).await?;
    let warm_runner = format!("{}-warm", bench.tag);
    let runners = [format!("{}-cold", bench.tag), warm_runner.clone()];
    wait_parked(bench, &warm_runner, 2).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cold = cold_w.memory_mib("VmRSS")?;
    let idle_warm = warm_w.memory_mib("VmRSS")?;

    for i in 0..bench.args.warmup {
        bench.raw("wraw-warmup", i, RawNetwork::Disabled).await?;
        timed(
            &mut cold,
            &bench.run_id("wcoldw", i),
            quick(&bench.run_id("wcoldw", i)),
        )
        .await?;
    }
    let (mut raw, mut cold_s, mut hit, mut miss, mut cold_plain) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut hit_ids = HashSet::new();
    let mut first_at = Vec::new();
    let mut refill = Samples::default();
    progress(format!("warm: {runs} rounds of raw / cold / hit / miss"));
    for i in 0..runs {
        raw.push(bench.raw("wraw", i, RawNetwork::Disabled).await?);
        let id = bench.run_id("wcold", i);
        cold_s.push(timed(&mut cold, &id, quick(&id)).await?);
        wait_parked(bench, &warm_runner, 2).await?;
        let id = bench.run_id("whit", i);
        hit.push(timed(&mut warm, &id, quick(&id)).await?);
        hit_ids.insert(id);
        // The pool full again first (timed from the hit's response): the
        // miss itself, not a refill running beside it on the same two
        // cores (that case is the hit-rate scenario's).
        refill.push(wait_parked(bench, &warm_runner, 2).await?);
        // The miss and the same run on the cold worker as a pair, in
        // alternating order, each on a quiet engine (the runs before
        // removed, the pool full), so neither pays for the other's
        // removal or a refill.
        let (miss_id, cold_id) = (bench.run_id("wmiss", i), bench.run_id("wcoldplain", i));
        for warm_first in [i % 2 == 0, i % 2 == 1] {
            wait_quiet(bench, &runners).await?;
            wait_parked(bench, &warm_runner, 2).await?;
            if warm_first {
                miss.push(timed(&mut warm, &miss_id, plain(&miss_id, &image)).await?);
            } else {
                cold_plain.push(timed(&mut cold, &cold_id, plain(&cold_id, &image)).await?);
            }
        }
        wait_parked(bench, &warm_runner, 2).await?;
        let id = bench.run_id("wfirst", i);
        let (_, r) = answered(&mut warm, &id, stamped(&id)).await?;
        first_at.push((id, r["stdout"].as_str().and_then(adjtimex_us)));
    }
    let claimed = claims(&warm_log);
    let die_exits = std::fs::read_to_string(&warm_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(DIE_EXIT))
        .count();
    let mut claim = Samples::default();
    let mut hits = 0;
    for id in &hit_ids {
        if let Some(c) = claimed.get(id) {
            claim.push_ms(c.ms);
            hits += 1;
        }
    }
    // Request read (the worker's clock) → the command's first instruction
    // (the container's clock: the same host clock).
    let mut first = Samples::default();
    for (id, at) in &first_at {
        if let (Some(at), Some(read)) = (at, claimed.get(id).and_then(|c| c.read_at_us)) {
            #[allow(clippy::cast_precision_loss)]
            first.push_ms(at.saturating_sub(read) as f64 / 1000.0);
        }
    }

    // Hit rate at fixed arrival rates: publish at the rate, collect after.
    let mut rates = Vec::new();
    for rate in [1u32, 2, 4, 8, 16] {
        wait_parked(bench, &warm_runner, 2).await?;
        let n = (runs.max(10)) as u32;
        let every = Duration::from_secs(1) / rate;
        let mut ids = HashSet::new();
        let start = tokio::time::Instant::now();
        for k in 0..n {
            tokio::time::sleep_until(start + every * k).await;
            let id = bench.run_id(&format!("wrate{rate}"), k as usize);
            warm.publish_payload(&id, quick(&id)).await?;
            ids.insert(id);
        }
        warm.wait_all(&ids).await?;
        let claimed = claims(&warm_log);
        let h = ids.iter().filter(|id| claimed.contains_key(*id)).count();
        #[allow(clippy::cast_precision_loss)]
        let pct = 100.0 * h as f64 / ids.len() as f64;
        progress(format!(
            "warm: {rate}/s: {h}/{} hits ({pct:.0} %)",
            ids.len()
        ));
        rates.push(
            json!({"arrivals_per_s": rate, "requests": ids.len(), "hits": h, "hit_rate_pct": pct}),
        );
    }
    cold_w.stop().await?;
    warm_w.stop().await?;

    let ratio = |a: &Samples, b: &Samples| match (a.p50(), b.p50()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let out = json!({
        "rows": [row("raw create/start/wait/remove", &raw), row("cold through the worker (profile)", &cold_s),
                 row("warm hit through the worker", &hit), row("cold path on the warm worker (plain image run)", &miss),
                 row("same plain image run on the cold worker", &cold_plain),
                 row("request read -> claim (hit)", &claim),
                 row("request read -> first instruction (hit)", &first), row("refill: hit's response -> parked back to 2", &refill)],
        "hits_in_paced_rounds": hits,
        "die_event_exits_in_paced_rounds": die_exits,
        "paced_rounds": runs,
        "hit_p50_over_raw_p50": ratio(&hit, &raw),
        "hit_p50_over_cold_p50": ratio(&hit, &cold_s),
        "miss_p50_over_cold_p50": ratio(&miss, &cold_plain),
        "hit_rate": rates,
        "idle_rss_mib": {"cold_worker": idle_cold, "warm_worker": idle_warm},
    });
    Ok(out)
}

/// Print the warm figures.
pub fn print(out: &Value) {
    println!("warm start (docs/protocol.md §10), one run:");
    println!(
        "{:<50} {:>4} {:>9} {:>9} {:>9}",
        "scenario", "n", "p50 ms", "p95 ms", "p99 ms"
    );
    for r in out["rows"].as_array().into_iter().flatten() {
        let f = |k: &str| r[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.1}"));
        println!(
            "{:<50} {:>4} {:>9} {:>9} {:>9}",
            r["scenario"].as_str().unwrap_or(""),
            r["n"],
            f("p50_ms"),
            f("p95_ms"),
            f("p99_ms")
        );
    }
    let f = |k: &str| {
        out[k]
            .as_f64()
            .map_or("-".to_owned(), |v| format!("{v:.2}"))
    };
    println!(
        "hits in paced rounds: {}/{}",
        out["hits_in_paced_rounds"], out["paced_rounds"]
    );
    println!(
        "hit p50 / raw p50: {}  (target <= 0.25)",
        f("hit_p50_over_raw_p50")
    );
    println!("hit p50 / cold p50: {}", f("hit_p50_over_cold_p50"));
    println!(
        "claimed runs whose exit came from the die event: {} (hits and first-instruction runs of the paced rounds)",
        out["die_event_exits_in_paced_rounds"]
    );
    println!(
        "miss p50 / cold p50 (same run): {}  (target <= 1.05)",
        f("miss_p50_over_cold_p50")
    );
    for r in out["hit_rate"].as_array().into_iter().flatten() {
        println!(
            "hit rate at {}/s: {}/{} ({:.0} %)",
            r["arrivals_per_s"],
            r["hits"],
            r["requests"],
            r["hit_rate_pct"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "idle RSS: cold worker {:.1} MiB, warm worker {:.1} MiB",
        out["idle_rss_mib"]["cold_worker"].as_f64().unwrap_or(0.0),
        out["idle_rss_mib"]["warm_worker"].as_f64().unwrap_or(0.0)
    );
}
