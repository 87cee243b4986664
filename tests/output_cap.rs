//! A container printing 50 MiB: the response keeps the 1 MiB tail with the
//! full byte count, and the worker's memory stays bounded. Its own test
//! binary so the process's peak RSS is this test's alone.

mod common;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{docker_settings, require_engine, spawn_worker, test_image, unique, Caller};
use serde_json::json;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mebibytes_of_output_stay_capped() {
    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("big");
    let s = docker_settings(&runner, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let before = vm_hwm_kib();
    let r = caller
        .call(Operation::Run, json!({"image": test_image(), "command": ["sh", "-c", "yes 0123456789abcdef | head -c 52428800; echo END >&2"]}))
        .await;
    let growth_mib = (vm_hwm_kib().saturating_sub(before)) / 1024;
    assert_eq!(r["status"], "succeeded", "{}", r["error"]);
    assert_eq!(r["stdout_bytes"], 52_428_800u64);
    assert_eq!(r["stdout_truncated"], true);
    let tail = r["stdout"].as_str().unwrap();
    assert_eq!(
        tail.len(),
        1024 * 1024,
        "the tail is exactly max_output_bytes"
    );
    // 52428800 = 17 * 3084047 + 1: the last line is a lone "0".
    assert!(tail.ends_with("0123456789abcdef\n0"), "keeps the tail");
    assert_eq!(r["stderr"], "END\n");
    println!("peak RSS growth while streaming 50 MiB: {growth_mib} MiB");
    assert!(growth_mib < 64, "worker memory grew by {growth_mib} MiB");
    worker.stop().await.unwrap();
}
