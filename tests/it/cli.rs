//! The binary's one-shot commands: `--events`, `--self-test`, `client`,
//! and configuration errors.

use crate::common;

use std::process::Command;

use bus_integration_docker::local::LocalBus;
use common::{settings, spawn_worker};
use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"));
    for var in [
        "BUS_DOCKER_EVENT_PREFIX",
        "BUS_DOCKER_CONFIG",
        "BUS_API_TOKEN",
        "BUS_EVENTS_API_URL",
        "BUS_DOCKER_PROVIDER",
        "BUS_DOCKER__EVENT_PREFIX",
    ] {
        c.env_remove(var);
    }
    c
}

#[test]
fn events_lists_the_names_of_the_prefix() {
    let out = bin()
        .args([
            "--events",
            "--event-prefix",
            "bus.docker",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prefix"], "bus.docker");
    assert_eq!(v["operations"].as_array().unwrap().len(), 7);
    assert_eq!(v["operations"][1]["request"], "bus.docker.run.request");
    let text = bin().args(["--events"]).output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(
            "bus.containers.runner.delete.request -> bus.containers.runner.delete.response"
        ),
        "{text}"
    );
}

#[test]
fn self_test_with_the_static_provider_passes() {
    let out = bin()
        .args(["--provider", "static", "--self-test"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "bus-integration-docker self-test OK"
    );
}

#[test]
fn a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[events]\ngroupp = \"x\"\n").unwrap();
    let out = bin()
        .arg("--config")
        .arg(&path)
        .arg("--events")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("groupp"));
    let out = bin()
        .env("BUS_DOCKER_CODEX_HOME_WRITABLE", "maybe")
        .arg("--events")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a boolean env var must be a boolean");
}

#[test]
fn the_worker_refuses_to_start_without_a_token() {
    let out = bin()
        .args(["--provider", "static", "--events-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BUS_API_TOKEN"));
}

#[test]
fn a_bad_docker_host_is_reported_with_its_reason() {
    let out = bin()
        .args(["--events-url", "http://127.0.0.1:9"])
        .env("BUS_API_TOKEN", "x.y.z")
        .env("DOCKER_HOST", "ftp://nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ftp://nowhere") && stderr.contains("not supported"),
        "the cause is printed, not only the context: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_publishes_and_prints_the_correlated_response() {
    let bus = LocalBus::start().await.unwrap();
    let s =
        settings("provider = \"static\"\nevent_prefix = \"bus.cli\"\nshutdown_grace = \"2s\"\n");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let (url, token) = (bus.url(), bus.token().to_owned());
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .env("BUS_EVENTS_API_URL", url)
            .env("BUS_API_TOKEN", token)
            .args([
                "client",
                "--event-prefix",
                "bus.cli",
                "run",
                "--image",
                "any:1",
                "--timeout",
                "30s",
                "--",
                "printf",
                "OK",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["stdout"], "printf OK\n");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(bus.token()),
        "the token is never printed"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_a_second_signal_exits_at_once() {
    use bus_docker_domain::Operation;
    use serde_json::json;
    use std::time::Duration;

    let bus = LocalBus::start().await.unwrap();
    let s = settings("provider = \"static\"\nevent_prefix = \"bus.sig\"\n");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"))
        .env("BUS_EVENTS_API_URL", bus.url())
        .env("BUS_API_TOKEN", bus.token())
        .env("BUS_DOCKER__SHUTDOWN_GRACE", "60s")
        .args(["--provider", "static", "--event-prefix", "bus.sig"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    common::wait_connected(&bus, &s, 1).await;
    let caller = common::Caller::new(&bus, &s.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;
    let long = caller
        .publish(
            Operation::Run,
            json!({"image": "a:1", "command": ["sleep", "60"]}),
        )
        .await;
    common::wait_active_runs(&caller, 1).await;
    let pid = child.id().unwrap().to_string();
    let term = |pid: &str| {
        std::process::Command::new("kill")
            .args(["-TERM", pid])
            .status()
            .unwrap()
    };
    term(&pid);
    // Draining: the running run has 60 s of grace, so the worker stays.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), child.wait())
            .await
            .is_err(),
        "exits only after the grace"
    );
    term(&pid);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("second signal exits at once")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    // The static runtime lived in that process, so no response comes; with
    // docker the container would be recovered by the next start.
    assert!(runs.wait(&long, Duration::from_millis(300)).await.is_err());
}

#[test]
fn layering_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "event_prefix = \"bus.file\"\n").unwrap();
    let prefix = |cmd: &mut Command| -> String {
        let out = cmd.args(["--events", "--format", "json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["prefix"].as_str().unwrap().to_owned()
    };
    assert_eq!(prefix(&mut bin()), "bus.containers", "default: standalone");
    assert_eq!(prefix(bin().arg("--config").arg(&path)), "bus.file");
    assert_eq!(prefix(bin().env("BUS_DOCKER_CONFIG", &path)), "bus.file");
    assert_eq!(
        prefix(
            bin()
                .env("BUS_DOCKER_CONFIG", &path)
                .env("BUS_DOCKER__EVENT_PREFIX", "bus.generic")
        ),
        "bus.generic",
        "BUS_DOCKER__<KEY> env beats the file"
    );
    assert_eq!(
        prefix(
            bin()
                .env("BUS_DOCKER_CONFIG", &path)
                .env("BUS_DOCKER_EVENT_PREFIX", "bus.env")
        ),
        "bus.env",
        "the contract's env var beats the file"
    );
    assert_eq!(
        prefix(
            bin()
                .env("BUS_DOCKER_CONFIG", &path)
                .env("BUS_DOCKER_EVENT_PREFIX", "bus.env")
                .args(["--event-prefix", "bus.flag"])
        ),
        "bus.flag",
        "flags beat env"
    );
}
