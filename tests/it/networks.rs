//! Run networks (docs/protocol.md §4, v3) on the real engine: the engine's default
//! network unless the request, its profile or the operator says otherwise;
//! user-defined networks by name; namespace-sharing forms refused; the
//! operator's list and default narrow it; `runner.status` shows the policy.
//! No traffic is sent across any network: only `HostConfig.NetworkMode` is
//! inspected while the run sleeps.

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use serde_json::{json, Value};

use crate::common::{
    code, docker_settings, require_engine, spawn_worker, test_image, unique, wait_running, Caller,
    WAIT,
};

/// A user-defined internal network on the test engine, removed when dropped
/// (also when the test fails).
struct TestNetwork(String);

impl TestNetwork {
    fn create() -> Self {
        let name = unique("bus-net");
        let out = std::process::Command::new("docker")
            .args(["network", "create", "--internal", &name])
            .output()
            .expect("the docker CLI runs (scripts/test.sh installs docker.io)");
        assert!(
            out.status.success(),
            "docker network create --internal {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(name)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// Start a run that sleeps, read its container's `NetworkMode` while it
/// runs, and wait for its success.
async fn network_mode_of(
    docker: &bollard::Docker,
    caller: &Caller,
    mut payload: Value,
) -> Option<String> {
    let run_id = unique("net");
    payload["run_id"] = json!(run_id);
    let mut runs = caller.waiter(Operation::Run).await;
    let c = caller.publish(Operation::Run, payload).await;
    wait_running(caller, &run_id).await;
    let info = docker
        .inspect_container(&format!("bus-run-{run_id}"), None)
        .await
        .unwrap();
    let r = runs.wait(&c, WAIT).await.unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    info.host_config.unwrap().network_mode
}

fn sleeper() -> Value {
    json!({"image": test_image(), "command": ["sleep", "1"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_get_the_engine_default_network_or_the_one_they_name() {
    let docker = require_engine().await;
    let net = TestNetwork::create();
    let codex_image =
        std::env::var("BUS_TEST_CODEX_IMAGE").unwrap_or_else(|_| "bus-test-codex:local".into());
    let runner = unique("nets");
    let s = docker_settings(
        &runner,
        &format!("[codex]\nimage = \"{codex_image}\"\npull_policy = \"never\"\n"),
    );
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    let image_run = network_mode_of(&docker, &caller, sleeper()).await;
    assert_eq!(image_run.as_deref(), Some("default"), "an image run");
    let codex_run = network_mode_of(
        &docker,
        &caller,
        json!({"profile": "codex", "command": ["sleep", "1"]}),
    )
    .await;
    assert_eq!(codex_run.as_deref(), Some("default"), "a codex run");

    let mut on_net = sleeper();
    on_net["network"] = json!(net.0);
    assert_eq!(
        network_mode_of(&docker, &caller, on_net).await.as_deref(),
        Some(net.0.as_str()),
        "a user-defined network by name"
    );
    let mut none = sleeper();
    none["network"] = json!("none");
    assert_eq!(
        network_mode_of(&docker, &caller, none).await.as_deref(),
        Some("none")
    );

    // Refused before anything is created: the id need not exist.
    for shared in ["host", "container:0123456789ab"] {
        let refused = caller
            .call(
                Operation::Run,
                json!({"image": test_image(), "command": ["true"], "network": shared}),
            )
            .await;
        assert_eq!(code(&refused), "forbidden", "{shared}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains("network_not_allowed"),
            "{refused}"
        );
    }

    // A network the engine does not have: bad_request naming it, not an
    // image problem.
    let absent = unique("bus-net-absent");
    let r = caller
        .call(
            Operation::Run,
            json!({"image": test_image(), "command": ["true"], "network": absent}),
        )
        .await;
    assert_eq!(code(&r), "bad_request", "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("network") && message.contains(&absent),
        "{r}"
    );

    let status = caller.call(Operation::RunnerStatus, json!({})).await;
    let policy = &status["status"]["details"]["network_policy"];
    assert_eq!(policy["mode"], "permissive", "{status}");
    assert_eq!(policy["default_network"], "default", "{status}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_narrows_networks_with_a_list_and_a_default() {
    let docker = require_engine().await;
    let net = TestNetwork::create();
    let runner = unique("narrow");
    let s = docker_settings(
        &runner,
        &format!(
            "[policy]\nallowed_networks = [\"none\", \"{}\"]\ndefault_network = \"{}\"\n",
            net.0, net.0
        ),
    );
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    assert_eq!(
        network_mode_of(&docker, &caller, sleeper())
            .await
            .as_deref(),
        Some(net.0.as_str()),
        "policy.default_network"
    );
    let mut none = sleeper();
    none["network"] = json!("none");
    assert_eq!(
        network_mode_of(&docker, &caller, none).await.as_deref(),
        Some("none")
    );
    for outside in ["default", "bridge", "host"] {
        let refused = caller
            .call(
                Operation::Run,
                json!({"image": test_image(), "command": ["true"], "network": outside}),
            )
            .await;
        assert_eq!(code(&refused), "forbidden", "{outside}: {refused}");
    }
    let status = caller.call(Operation::RunnerStatus, json!({})).await;
    let policy = &status["status"]["details"]["network_policy"];
    assert_eq!(policy["mode"], "allow_list", "{status}");
    assert_eq!(policy["default_network"], net.0.as_str());
    assert_eq!(policy["allowed_networks"], json!(["none", net.0]));
    worker.stop().await.unwrap();
}
