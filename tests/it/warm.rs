//! Warm start (contract §10) on a real engine: parked containers, claims
//! that start the command at once, fresh single use, billing times from
//! the claim, delete, OOM, runner.delete and shutdown, misses that take
//! the cold path, kill -9 between claim and response, two engines, and
//! duplicates that never claim two containers.

#[allow(unused_imports)]
use crate::common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bus_docker_domain::Operation;
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::LocalBus;
use common::{
    collect, containers_of, docker_settings, eventually, no_containers_left, require_engine,
    spawn_worker, test_image, unique, Caller, WAIT,
};
use serde_json::{json, Value};

/// A worker whose profile `quick` keeps `warm` parked containers.
fn warm_settings(runner: &str, warm: usize, extra: &str) -> Settings {
    docker_settings(
        runner,
        &format!(
            "{extra}\n[profiles.quick]\nimage = \"{}\"\nnetwork = \"none\"\nwarm = {warm}\n",
            test_image()
        ),
    )
}

/// The parked containers of `runner` on the engine: name → id.
async fn parked_on(docker: &bollard::Docker, runner: &str) -> HashMap<String, String> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("bus.runner={runner}"), "bus.warm".to_owned()],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| {
            let name = c.names?.first()?.trim_start_matches('/').to_owned();
            name.starts_with("bus-warm-").then_some((name, c.id?))
        })
        .collect()
}

/// Wait until `runner.status` reports `n` parked `quick` containers on
/// every engine; returns the status.
async fn wait_parked(caller: &Caller, n: u64) -> Value {
    eventually(&format!("{n} parked"), Duration::from_secs(30), || async {
        let st = caller.call(Operation::RunnerStatus, json!({})).await;
        let engines = st["status"]["details"]["warm"]["quick"]["engines"].as_object()?;
        (!engines.is_empty() && engines.values().all(|e| e["parked"] == n)).then_some(st)
    })
    .await
}

fn quick(command: &[&str]) -> Value {
    json!({"profile": "quick", "command": command})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_runs_the_request_command_with_its_env_workdir_and_stdin() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-hit");
    let s = warm_settings(&runner, 2, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let status = wait_parked(&caller, 2).await;
    assert_eq!(
        status["status"]["details"]["warm"]["quick"]["wanted"], 2,
        "{status}"
    );
    let parked = parked_on(&docker, &runner).await;
    assert_eq!(parked.len(), 2, "{parked:?}");
    // Parked containers are no runs: not in a caller's status, no slot.
    let st = caller.call(Operation::Status, json!({})).await;
    assert_eq!(st["items"], json!([]), "{st}");
    assert_eq!(status["status"]["details"]["active_runs"], 0);

    let r = caller
        .call(
            Operation::Run,
            json!({
                "profile": "quick",
                "command": ["sh", "-c", "printf '%s|%s|' \"$K\" \"$(pwd)\"; cat; echo err >&2; exit 3"],
                "env": {"K": "a b\n$(c) 'd'"},
                "workdir": "/tmp/w",
                "stdin": "IN\n",
            }),
        )
        .await;
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "a b\n$(c) 'd'|/tmp/w|IN\n", "{r}");
    assert_eq!(r["stderr"], "err\n");
    let id = r["runtime"]["container_id"].as_str().unwrap();
    assert!(
        parked.values().any(|p| p == id),
        "the run claimed a parked container: {r}"
    );
    assert!(r["runtime"]["container_name"]
        .as_str()
        .unwrap()
        .starts_with("bus-run-"));
    assert!(r["image_id"].as_str().unwrap().starts_with("sha256:"));

    // The image's own entrypoint-less `sh` finds commands on PATH; a
    // missing one is 127 as in a cold run.
    let missing = caller.call(Operation::Run, quick(&["no-such-cmd"])).await;
    assert_eq!(missing["exit_code"], 127, "{missing}");

    // Refilled after the responses.
    wait_parked(&caller, 2).await;
    worker.stop().await.unwrap();
    let left = no_containers_left(&docker, &runner).await;
    assert!(
        left.is_empty(),
        "shutdown removes parked containers: {left:?}"
    );
}
