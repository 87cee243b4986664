//! The figures of one benchmark run, the targets they are judged
//! against, the text table and the JSON document.

use serde_json::{json, Value};

use crate::stats::{round3, Samples};
use crate::status::StatusFigures;

/// The status targets (issue 11): p50 at the largest point of the status
/// scenario over the baseline (no other owners' containers).
pub const STATUS_OWNER: &str = "status {owner} p50, most containers / none";
pub const STATUS_RUN: &str = "status {owner, run_id} p50, most containers / none";

/// Runs per second of one scenario at one concurrency.
#[derive(Clone, Debug)]
pub struct Throughput {
    /// `worker`, `docker_cli`, `raw_engine` or `raw_engine_network_setup`.
    pub who: &'static str,
    pub concurrency: usize,
    pub runs: usize,
    pub seconds: f64,
    /// The whole machine's CPU while it ran (other load included).
    pub host_cpu: Option<HostCpu>,
}

/// How busy the machine's CPUs were during a scenario.
#[derive(Clone, Copy, Debug)]
pub struct HostCpu {
    /// Busy share of all CPUs, percent.
    pub busy_pct: f64,
    /// Busy CPU time per run, ms, all processes (engine, shims, runc,
    /// worker or CLI, this bench).
    pub ms_per_run: f64,
}

impl Throughput {
    pub fn rate(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let runs = self.runs as f64;
        runs / self.seconds
    }
}

/// Worker memory, MiB.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    /// `VmRSS` 2 s after the streams connected.
    pub idle: Option<f64>,
    /// Runs printing 1 MiB each, 8 at a time (`--output-runs`).
    pub one_mib_runs: usize,
    /// `VmHWM` of a fresh worker after those runs were answered.
    pub peak_1mib_runs: Option<f64>,
    /// `VmRSS` after those runs were answered.
    pub after_1mib_runs: Option<f64>,
    /// `VmHWM` of a fresh worker after one run printing 100 MiB.
    pub peak_100mib: Option<f64>,
    pub after_100mib: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Figures {
    pub raw: Samples,
    /// The raw sequence with libnetwork setup (`NetworkMode: none` alone, as the docker CLI does; informational).
    pub raw_network_setup: Samples,
    /// `None` when the docker CLI is not installed.
    pub cli: Option<Samples>,
    pub worker: Samples,
    pub dispatch: Samples,
    /// From spawning the worker to its run stream being connected, ms.
    pub worker_startup_ms: Option<f64>,
    /// The worker process's own CPU time per sequential run, ms.
    pub worker_cpu_ms_per_run: Option<f64>,
    pub throughput: Vec<Throughput>,
    pub memory: Memory,
    /// The live output scenario, when it ran.
    pub live: Option<crate::live::LiveFigures>,
    /// The status scaling scenario, when it ran.
    pub status: Option<crate::status::StatusFigures>,
    pub notes: Vec<String>,
}

/// One target of the issue, judged on this run's figures.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub value: Option<f64>,
    pub at_most: bool,
    pub limit: f64,
    pub unit: &'static str,
}

impl Target {
    pub fn met(&self) -> Option<bool> {
        self.value.map(|v| {
            if self.at_most {
                v <= self.limit
            } else {
                v >= self.limit
            }
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} {}{}",
            if self.at_most { "≤" } else { "≥" },
            trim(self.limit),
            self.unit
        )
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Figures {
    pub fn rate(&self, who: &str, concurrency: usize) -> Option<f64> {
        self.throughput
            .iter()
            .find(|t| t.who == who && t.concurrency == concurrency)
            .map(Throughput::rate)
    }

    fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
        match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        }
    }

    pub fn worker_over_raw(&self) -> Option<f64> {
        Self::ratio(self.worker.p50(), self.raw.p50())
    }

    pub fn worker_over_cli(&self) -> Option<f64> {
        Self::ratio(self.worker.p50(), self.cli.as_ref().and_then(Samples::p50))
    }

    /// The worker's throughput at concurrency 4 over the raw engine's
    /// (informational: how much of the engine's parallel capacity the
    /// worker delivers).
    pub fn worker_over_raw_c4(&self) -> Option<f64> {
        Self::ratio(self.rate("worker", 4), self.rate("raw_engine", 4))
    }

    /// Against the raw sequence with network setup (informational).
    pub fn worker_over_raw_network_setup(&self) -> Option<f64> {
        Self::ratio(self.worker.p50(), self.raw_network_setup.p50())
    }

    /// Throughput at concurrency 4 over the worker's own sequential rate
    /// (its throughput at `max_concurrent_runs` 1, measured the same way).
    pub fn scaling_c4(&self) -> Option<f64> {
        Self::ratio(self.rate("worker", 4), self.rate("worker", 1))
    }

    /// The targets of the scenarios that ran.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = if self.core_ran() {
            self.core_targets()
        } else {
            Vec::new()
        };
        if let Some(status) = &self.status {
            targets.extend([
                Target {
                    name: STATUS_OWNER,
                    value: status.owner_growth(),
                    at_most: true,
                    limit: crate::status::TARGET_RATIO,
                    unit: "×",
                },
                Target {
                    name: STATUS_RUN,
                    value: status.run_growth(),
                    at_most: true,
                    limit: crate::status::TARGET_RATIO,
                    unit: "×",
                },
            ]);
        }
        targets
    }

    /// The targets of the sequential, throughput and memory scenarios.
    fn core_targets(&self) -> Vec<Target> {
        vec![
            Target {
                name: "sequential p50 worker/raw",
                value: self.worker_over_raw(),
                at_most: true,
                limit: 1.05,
                unit: "",
            },
            Target {
                name: "sequential p50 worker/CLI",
                value: self.worker_over_cli(),
                at_most: true,
                limit: 0.9,
                unit: "",
            },
            Target {
                name: "throughput c=4 / worker sequential",
                value: self.scaling_c4(),
                at_most: false,
                limit: 2.5,
                unit: "×",
            },
            Target {
                name: "worker RSS idle",
                value: self.memory.idle,
                at_most: true,
                limit: 20.0,
                unit: " MiB",
            },
            Target {
                name: "worker RSS peak, one 100 MiB run",
                value: self.memory.peak_100mib,
                at_most: true,
                limit: 64.0,
                unit: " MiB",
            },
            Target {
                name: "dispatch overhead p99",
                value: self.dispatch.p99(),
                at_most: true,
                limit: 5.0,
                unit: " ms",
            },
        ]
    }

    /// Whether the sequential, throughput and memory scenarios ran (not
    /// with `--live-only` or `--status-only`).
    pub fn core_ran(&self) -> bool {
        !self.worker.is_empty()
    }

    /// The aligned text table: the rows of the scenarios that ran.
    pub fn table(&self) -> String {
        let targets = self.targets();
        let mut rows: Vec<[String; 9]> = vec![header()];
        if self.core_ran() {
            rows.extend(self.core_rows(&targets));
        }
        rows.extend(self.status.iter().flat_map(|s| s.table_rows(&targets)));
        for (label, n, value, unit, note) in self.live.iter().flat_map(|l| l.rows()) {
            rows.push(single(&label, &n, value, unit, None, &note));
        }
        align(&rows)
    }

    /// Sequential latency, throughput and memory rows.
    fn core_rows(&self, targets: &[Target]) -> Vec<[String; 9]> {
        let mut rows = Vec::new();
        let find = |name: &str| targets.iter().find(|t| t.name == name);
        let latency = |label: &str, s: &Samples, target: Option<&Target>| -> [String; 9] {
            [
                label.to_owned(),
                s.len().to_string(),
                fmt(s.p50()),
                fmt(s.p95()),
                fmt(s.p99()),
                "ms".to_owned(),
                target.map(Target::describe).unwrap_or_default(),
                target.map(verdict).unwrap_or_default(),
                String::new(),
            ]
        };
        rows.push(latency(
            "raw engine create/start/wait/remove",
            &self.raw,
            None,
        ));
        if !self.raw_network_setup.is_empty() {
            let mut row = latency(
                "raw engine, network setup (CLI body)",
                &self.raw_network_setup,
                None,
            );
            row[8] = "informational: NetworkMode none without NetworkDisabled".to_owned();
            rows.push(row);
        }
        match &self.cli {
            Some(cli) => rows.push(latency("docker run --rm (CLI)", cli, None)),
            None => rows.push(single(
                "docker run --rm (CLI)",
                "-",
                None,
                "",
                None,
                "skipped: no docker CLI on PATH",
            )),
        }
        rows.push(latency("worker end to end", &self.worker, None));
        let dispatch = find("dispatch overhead p99");
        rows.push(latency(
            "worker dispatch overhead",
            &self.dispatch,
            dispatch,
        ));
        rows.push(single(
            "worker CPU per sequential run (own process)",
            "",
            self.worker_cpu_ms_per_run,
            "ms",
            None,
            "",
        ));
        rows.push(single(
            "worker start to streams connected",
            "1",
            self.worker_startup_ms,
            "ms",
            None,
            "",
        ));
        rows.push(single(
            "ratio worker/raw (p50)",
            "",
            self.worker_over_raw(),
            "",
            find("sequential p50 worker/raw"),
            "",
        ));
        rows.push(single(
            "ratio worker/CLI (p50)",
            "",
            self.worker_over_cli(),
            "",
            find("sequential p50 worker/CLI"),
            "",
        ));
        if !self.raw_network_setup.is_empty() {
            rows.push(single(
                "ratio worker/raw with network setup (p50)",
                "",
                self.worker_over_raw_network_setup(),
                "",
                None,
                "informational",
            ));
        }
        for t in &self.throughput {
            let label = match t.who {
                "worker" => format!("throughput worker, max_concurrent_runs {}", t.concurrency),
                "docker_cli" => format!("throughput docker run --rm, {} parallel", t.concurrency),
                "raw_engine_network_setup" => format!(
                    "throughput raw engine with network setup, {} parallel",
                    t.concurrency
                ),
                _ => format!("throughput raw engine, {} parallel", t.concurrency),
            };
            let note = t
                .host_cpu
                .map(|h| {
                    format!(
                        "host CPU {:.0} % busy, {:.0} ms CPU/run",
                        h.busy_pct, h.ms_per_run
                    )
                })
                .unwrap_or_default();
            rows.push(single(
                &label,
                &t.runs.to_string(),
                Some(t.rate()),
                "runs/s",
                None,
                &note,
            ));
        }
        rows.push(single(
            "worker scaling c=4 / c=1",
            "",
            self.scaling_c4(),
            "×",
            find("throughput c=4 / worker sequential"),
            "",
        ));
        rows.push(single(
            "raw engine scaling c=4 / c=1",
            "",
            Self::ratio(self.rate("raw_engine", 4), self.rate("raw_engine", 1)),
            "×",
            None,
            "informational: the engine's own ceiling",
        ));
        rows.push(single(
            "worker/raw throughput at c=4",
            "",
            self.worker_over_raw_c4(),
            "",
            None,
            "informational",
        ));
        let m = &self.memory;
        rows.push(single(
            "worker RSS idle (VmRSS)",
            "",
            m.idle,
            "MiB",
            find("worker RSS idle"),
            "",
        ));
        rows.push(single(
            "worker RSS peak, runs × 1 MiB, 8 at a time (VmHWM)",
            &m.one_mib_runs.to_string(),
            m.peak_1mib_runs,
            "MiB",
            None,
            &m.after_1mib_runs
                .map(|a| format!("VmRSS {a:.1} MiB once all were answered"))
                .unwrap_or_default(),
        ));
        rows.push(single(
            "worker RSS peak, 1 run × 100 MiB (VmHWM)",
            "1",
            m.peak_100mib,
            "MiB",
            find("worker RSS peak, one 100 MiB run"),
            &m.after_100mib
                .map(|a| format!("VmRSS {a:.1} MiB once answered"))
                .unwrap_or_default(),
        ));
        rows
    }

    /// The JSON document: every figure, the targets, the machine.
    pub fn to_json(&self, machine: Value, git: Value, config: Value) -> Value {
        let throughput: Vec<Value> = self
            .throughput
            .iter()
            .map(|t| {
                json!({"who": t.who, "concurrency": t.concurrency, "runs": t.runs,
                       "seconds": round3(Some(t.seconds)), "runs_per_s": round3(Some(t.rate())),
                       "host_cpu_busy_pct": round3(t.host_cpu.map(|h| h.busy_pct)),
                       "host_cpu_ms_per_run": round3(t.host_cpu.map(|h| h.ms_per_run))})
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .iter()
            .map(|t| {
                json!({"name": t.name, "value": round3(t.value), "limit": t.limit,
                       "comparison": if t.at_most { "<=" } else { ">=" }, "met": t.met()})
            })
            .collect();
        let m = &self.memory;
        json!({
            "tool": "bus-docker-bench",
            "machine": machine,
            "git": git,
            "config": config,
            "latency_ms": {
                "raw_engine": self.raw.to_json(),
                "raw_engine_network_setup": self.raw_network_setup.to_json(),
                "docker_cli": self.cli.as_ref().map_or(Value::Null, Samples::to_json),
                "worker": self.worker.to_json(),
                "dispatch_overhead": self.dispatch.to_json(),
            },
            "worker_cpu_ms_per_sequential_run": round3(self.worker_cpu_ms_per_run),
            "worker_startup_ms": round3(self.worker_startup_ms),
            "ratios": {
                "worker_over_raw_p50": round3(self.worker_over_raw()),
                "worker_over_cli_p50": round3(self.worker_over_cli()),
                "worker_over_raw_network_setup_p50": round3(self.worker_over_raw_network_setup()),
                "worker_over_raw_p95": round3(Self::ratio(self.worker.p95(), self.raw.p95())),
                "worker_over_cli_p95": round3(Self::ratio(self.worker.p95(), self.cli.as_ref().and_then(Samples::p95))),
                "worker_throughput_c4_over_c1": round3(self.scaling_c4()),
                "raw_engine_throughput_c4_over_c1": round3(Self::ratio(self.rate("raw_engine", 4), self.rate("raw_engine", 1))),
                "worker_over_raw_throughput_c4": round3(self.worker_over_raw_c4()),
            },
            "throughput": throughput,
            "rss_mib": {
                "idle": round3(m.idle),
                "one_mib_runs": m.one_mib_runs,
                "peak_one_mib_runs": round3(m.peak_1mib_runs),
                "after_one_mib_runs": round3(m.after_1mib_runs),
                "peak_1_run_100mib": round3(m.peak_100mib),
                "after_1_run_100mib": round3(m.after_100mib),
            },
            "live_output_100mib": self.live.as_ref().map_or(Value::Null, crate::live::LiveFigures::to_json),
            "status_scaling": self.status.as_ref().map_or(Value::Null, StatusFigures::to_json),
            "targets": targets,
            "notes": self.notes,
        })
    }
}

fn header() -> [String; 9] {
    [
        "scenario",
        "n",
        "p50|value",
        "p95",
        "p99",
        "unit",
        "target",
        "met",
        "note",
    ]
    .map(str::to_owned)
}

pub fn fmt(v: Option<f64>) -> String {
    v.map_or_else(
        || "-".to_owned(),
        |v| {
            if v >= 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.2}")
            }
        },
    )
}

fn verdict(t: &Target) -> String {
    match t.met() {
        Some(true) => "yes".to_owned(),
        Some(false) => "NO".to_owned(),
        None => "n/a".to_owned(),
    }
}

pub fn single(
    label: &str,
    n: &str,
    value: Option<f64>,
    unit: &str,
    target: Option<&Target>,
    note: &str,
) -> [String; 9] {
    [
        label.to_owned(),
        n.to_owned(),
        fmt(value),
        String::new(),
        String::new(),
        unit.to_owned(),
        target.map(Target::describe).unwrap_or_default(),
        target.map(verdict).unwrap_or_default(),
        note.to_owned(),
    ]
}

fn align(rows: &[[String; 9]]) -> String {
    let mut widths = [0usize; 9];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, (cell, w)) in row.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            // Text left, numbers right.
            if c == 0 || c >= 5 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * 8;
            out.push_str(&"-".repeat(total));
            out.push('\n');
        }
    }
    out
}
