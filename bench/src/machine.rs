//! What the figures were measured on: CPUs, memory, kernel, the engine,
//! the docker CLI and the commit.

use std::path::Path;
use std::process::Command;

use bollard::Docker;
use serde_json::{json, Value};

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn first_line_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_once(':').or_else(|| l.split_once('=')))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A JSON description of this machine and the engine.
pub async fn describe(docker: &Docker, cli: Option<&Path>) -> Value {
    let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpuinfo = read("/proc/cpuinfo").unwrap_or_default();
    let memory_mib = read("/proc/meminfo")
        .and_then(|m| first_line_value(&m, "MemTotal"))
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024);
    let (engine_version, api_version) = match docker.version().await {
        Ok(v) => (v.version, v.api_version),
        Err(_) => (None, None),
    };
    let (storage_driver, cgroup_version, cgroup_driver, runtime) = match docker.info().await {
        Ok(i) => (
            i.driver,
            i.cgroup_version.map(|v| v.to_string()),
            i.cgroup_driver.map(|v| v.to_string()),
            i.default_runtime,
        ),
        Err(_) => (None, None, None, None),
    };
    let cli_version = cli.and_then(|c| {
        output(
            &c.to_string_lossy(),
            &["version", "--format", "{{.Client.Version}}"],
        )
    });
    json!({
        "loadavg_at_start": loadavg(),
        "nproc": nproc,
        "cpu_model": first_line_value(&cpuinfo, "model name"),
        "memory_mib": memory_mib,
        "kernel": read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
        "os": read("/etc/os-release").and_then(|s| first_line_value(&s, "PRETTY_NAME")),
        "docker_engine_version": engine_version,
        "docker_api_version": api_version,
        "docker_storage_driver": storage_driver,
        "docker_cgroup_version": cgroup_version,
        "docker_cgroup_driver": cgroup_driver,
        "docker_runtime": runtime,
        "docker_cli_version": cli_version,
    })
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages and the rest.
pub fn loadavg() -> Option<String> {
    read("/proc/loadavg").map(|s| s.trim().to_owned())
}

/// `{commit, dirty}` of the checkout in the current directory, or `null`.
pub fn git() -> Value {
    let Some(commit) = output("git", &["rev-parse", "HEAD"]) else {
        return Value::Null;
    };
    let dirty =
        output("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({"commit": commit, "dirty": dirty})
}

/// A reading of the machine's CPU counters (`/proc/stat`, all CPUs).
#[derive(Clone, Copy, Debug)]
pub struct CpuSnapshot {
    busy: u64,
    total: u64,
}

impl CpuSnapshot {
    /// Now; `None` where `/proc/stat` is unreadable.
    pub fn now() -> Option<Self> {
        let stat = read("/proc/stat")?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is inside user)
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    /// Busy share (percent) and busy CPU milliseconds since `earlier`.
    pub fn since(&self, earlier: &Self) -> (f64, f64) {
        let busy = self.busy.saturating_sub(earlier.busy);
        let total = self.total.saturating_sub(earlier.total).max(1);
        #[allow(clippy::cast_precision_loss)]
        let (busy, total) = (busy as f64, total as f64);
        (100.0 * busy / total, busy * 1000.0 / clock_ticks())
    }
}

/// `USER_HZ`, the unit of `/proc/stat` (100 nearly everywhere).
fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        output("getconf", &["CLK_TCK"])
            .and_then(|v| v.parse().ok())
            .filter(|v: &f64| *v > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU time a process's live threads have used, in ns
/// (`/proc/<pid>/task/*/schedstat`).
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0;
    for task in tasks.flatten() {
        if let Some(v) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        {
            ns += v;
        }
    }
    Some(ns)
}
