//! Warm start (docs/protocol.md §10) on a real engine: parked containers, claims
//! that start the command at once, fresh single use, billing times from
//! the claim, delete, OOM, runner.delete and shutdown, misses that take
//! the cold path, kill -9 between claim and response, two engines, and
//! duplicates that never claim two containers.

use crate::common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bus_docker_domain::Operation;
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::LocalBus;
use common::{
    collect, containers_of, docker_settings, each_answered_once, eventually, no_containers_left,
    require_engine, spawn_worker, test_image, unique, Caller, WAIT,
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
    common::listed_of(docker, runner, &[])
        .await
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
    let listed: Vec<&Value> = st["items"].as_array().unwrap().iter().collect();
    assert!(
        !listed
            .iter()
            .any(|i| parked.values().any(|p| i["details"]["container_id"] == *p)),
        "{st}"
    );
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

/// The response of a run, and whether it claimed one of `parked`.
async fn run_hit(
    caller: &Caller,
    parked: &HashMap<String, String>,
    payload: Value,
) -> (Value, bool) {
    let r = caller.call(Operation::Run, payload).await;
    let id = r["runtime"]["container_id"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    let hit = parked.values().any(|p| *p == id);
    (r, hit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_container_serves_one_run_and_nothing_of_it_is_seen_by_the_next() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-fresh");
    let s = warm_settings(&runner, 2, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 2).await;
    let parked = parked_on(&docker, &runner).await;
    let (first, hit) = run_hit(
        &caller,
        &parked,
        quick(&[
            "sh",
            "-c",
            "echo secret > /tmp/leak; (sleep 300 &); echo left",
        ]),
    )
    .await;
    assert!(hit, "{first}");
    assert_eq!(first["stdout"], "left\n", "{first}");
    let (second, hit) = run_hit(
        &caller,
        &parked,
        quick(&[
            "sh",
            "-c",
            "test -e /tmp/leak && echo FILE; ps | grep -v grep | grep -q 'sleep 300' && echo PROC; echo clean",
        ]),
    )
    .await;
    assert!(hit, "{second}");
    assert_ne!(
        first["runtime"]["container_id"], second["runtime"]["container_id"],
        "single use"
    );
    assert_eq!(second["stdout"], "clean\n", "{second}");
    // The first container is gone with its background process.
    let first_id = first["runtime"]["container_id"].as_str().unwrap();
    assert!(docker.inspect_container(first_id, None).await.is_err());
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_count_from_the_claim_not_from_parking() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-bill");
    let s = warm_settings(&runner, 1, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 1).await;
    let parked = parked_on(&docker, &runner).await;
    // The scenario itself: the container waits parked for 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = SystemTime::now();
    let (r, hit) = run_hit(&caller, &parked, quick(&["sleep", "1"])).await;
    assert!(hit, "{r}");
    let ms = r["duration_ms"].as_u64().unwrap();
    assert!((950..1800).contains(&ms), "duration from the claim: {r}");
    let started = humantime::parse_rfc3339(r["started_at"].as_str().unwrap()).unwrap();
    assert!(
        started + Duration::from_millis(5) >= before,
        "started_at is the claim, not the park: {r}"
    );
    // The timeout counts from the claim too: 1 s, after 2 s parked.
    let (t, hit) = run_hit(
        &caller,
        &parked_on(&docker, &runner).await,
        json!({"profile": "quick", "command": ["sleep", "5"], "timeout_seconds": 1}),
    )
    .await;
    if hit {
        assert_eq!(t["status"], "timed_out", "{t}");
        let ms = t["duration_ms"].as_u64().unwrap();
        assert!(ms >= 900, "{t}");
    }
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_run_reads_back_takes_input_and_deletes_like_a_cold_one() {
    use bus_docker_domain::container::ManagedFilter;
    use bus_docker_domain::ports::ContainerRuntime;
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-del");
    let s = warm_settings(&runner, 2, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 2).await;
    let parked = parked_on(&docker, &runner).await;

    let run_id = unique("warmdel").replace('-', "_");
    let mut waiter = caller.waiter(Operation::Run).await;
    let correlation = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "owner_identity_id": "alice", "profile": "quick",
                   "command": ["sh", "-c", "read line; echo got:$line; sleep 30"],
                   "interactive": true, "labels": {"k": "v"}}),
        )
        .await;
    let st = eventually("running", Duration::from_secs(30), || async {
        let st = caller
            .call(
                Operation::Status,
                json!({"run_id": run_id, "owner_identity_id": "alice"}),
            )
            .await;
        (st["items"][0]["state"] == "running").then_some(st)
    })
    .await;
    let item = &st["items"][0];
    assert_eq!(item["owner_identity_id"], "alice", "{st}");
    assert_eq!(item["details"]["profile"], "quick", "{st}");
    let container_id = item["details"]["container_id"].as_str().unwrap().to_owned();
    assert!(parked.values().any(|p| *p == container_id), "{st}");

    // Another worker (a fresh adapter: nothing cached) reads it back.
    let other =
        bus_docker_engine::DockerEngine::connect(bus_docker_engine::EngineOptions::default())
            .unwrap();
    let rid = bus_docker_domain::RunId::parse(&run_id).unwrap();
    let listed = other
        .list_managed(&ManagedFilter::run(rid.clone()).fresh())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let m = &listed[0];
    assert_eq!(m.owner.as_ref().map(|o| o.as_str()), Some("alice"));
    assert_eq!(
        m.correlation.as_ref().map(|c| c.as_str()),
        Some(correlation.as_str())
    );
    assert!(m.interactive);
    let full = other.inspect_managed(&m.container).await.unwrap();
    let age = SystemTime::now()
        .duration_since(full.started_at.unwrap())
        .unwrap();
    assert!(
        age < Duration::from_secs(20),
        "started_at is the claim: {age:?}"
    );
    // Bob sees nothing of alice's run.
    let bobs = caller
        .call(Operation::Status, json!({"owner_identity_id": "bob"}))
        .await;
    assert_eq!(bobs["items"], json!([]), "{bobs}");

    let input = caller
        .call(
            Operation::Input,
            json!({"run_id": run_id, "owner_identity_id": "alice", "data": "hello\n"}),
        )
        .await;
    assert_eq!(input["accepted"], true, "{input}");
    let deleted = caller
        .call(
            Operation::Delete,
            json!({"run_id": run_id, "owner_identity_id": "alice"}),
        )
        .await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let r = waiter.wait(&correlation, WAIT).await.expect("run response");
    assert_eq!(r["status"], "canceled", "{r}");
    assert_eq!(r["stdout"], "got:hello\n", "{r}");
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_kill_in_a_warm_container_is_oom_killed() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-oom");
    // The profile with an 8 MiB limit, parked with it.
    let toml = format!(
        "[profiles.quick]\nimage = \"{}\"\nnetwork = \"none\"\nwarm = 1\n[profiles.quick.hardening]\nmemory_bytes = 8388608\n",
        test_image()
    );
    let s = docker_settings(&runner, &toml);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 1).await;
    let parked = parked_on(&docker, &runner).await;
    let (r, hit) = run_hit(
        &caller,
        &parked,
        quick(&["sh", "-c", "head -c 64m /dev/zero | tail; echo tail=$?"]),
    )
    .await;
    assert!(hit, "{r}");
    assert_eq!(r["oom_killed"], true, "{r}");
    assert_eq!(r["stdout"], "tail=137\n", "{r}");
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_delete_removes_parked_containers_until_runner_start() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-rdel");
    let s = warm_settings(&runner, 2, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 2).await;
    let deleted = caller.call(Operation::RunnerDelete, json!({})).await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(deleted["removed_containers"], 2, "{deleted}");
    assert!(parked_on(&docker, &runner).await.is_empty());
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    let engines = &st["status"]["details"]["warm"]["quick"]["engines"];
    assert!(
        engines
            .as_object()
            .unwrap()
            .values()
            .all(|e| e["parked"] == 0),
        "{st}"
    );
    let started = caller.call(Operation::RunnerStart, json!({})).await;
    assert_eq!(started["accepted"], true, "{started}");
    wait_parked(&caller, 2).await;
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_parked_container_cannot_take_go_the_cold_path() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-miss");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), "mounted").unwrap();
    let root = dir.path().canonicalize().unwrap();
    let s = warm_settings(
        &runner,
        1,
        &format!("[policy]\nallowed_mount_roots = [\"{}\"]\n", root.display()),
    );
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 1).await;
    let parked = parked_on(&docker, &runner).await;
    let (mounted, hit) = run_hit(
        &caller,
        &parked,
        json!({"profile": "quick", "command": ["cat", "/m/f"],
               "mounts": [{"source": root, "target": "/m", "read_only": true}]}),
    )
    .await;
    assert!(!hit, "request mounts take the cold path: {mounted}");
    assert_eq!(mounted["stdout"], "mounted", "{mounted}");
    let (image, hit) = run_hit(
        &caller,
        &parked,
        json!({"image": test_image(), "command": ["echo", "cold"], "network": "none"}),
    )
    .await;
    assert!(!hit, "{image}");
    assert_eq!(image["stdout"], "cold\n");
    // The parked container is still there, untouched.
    assert_eq!(parked_on(&docker, &runner).await, parked);
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_claim_and_response_answers_once_after_restart() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-crash");
    let s = warm_settings(&runner, 1, "");
    let prefix = s.worker.prefix.as_str().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let spawn = || {
        let mut cmd = common::worker_process(&bus, &runner, &prefix, &log);
        cmd.env("BUS_DOCKER__PROFILES__QUICK__IMAGE", test_image())
            .env("BUS_DOCKER__PROFILES__QUICK__NETWORK", "none")
            .env("BUS_DOCKER__PROFILES__QUICK__WARM", "1");
        cmd.spawn().expect("worker starts")
    };
    let mut first = spawn();
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 1).await;
    let parked = parked_on(&docker, &runner).await;
    let mut waiter = caller.waiter(Operation::Run).await;
    let correlation = caller
        .publish(
            Operation::Run,
            quick(&["sh", "-c", "echo started >&2; sleep 2; echo done"]),
        )
        .await;
    // Claimed and running: the command wrote its first line.
    eventually("claimed and running", Duration::from_secs(30), || async {
        use bollard::query_parameters::LogsOptionsBuilder;
        use futures_util::StreamExt;
        let names = containers_of(&docker, &runner).await;
        let name = names.iter().find(|n| n.starts_with("/bus-run-"))?;
        let opts = LogsOptionsBuilder::default().stderr(true).build();
        let logs: Vec<_> = docker
            .logs(name.trim_start_matches('/'), Some(opts))
            .collect()
            .await;
        logs.iter()
            .filter_map(|l| l.as_ref().ok())
            .any(|l| l.to_string().contains("started"))
            .then_some(())
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let mut second = spawn();
    let seen = collect(
        &mut waiter,
        1,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let r = each_answered_once(&seen, std::slice::from_ref(&correlation))[0];
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout"], "done\n", "the claim record is not output: {r}");
    assert_eq!(r["stderr"], "started\n", "{r}");
    assert!(
        parked.values().any(|p| r["runtime"]["container_id"] == *p),
        "{r} {parked:?} {logs}"
    );
    let ms = r["duration_ms"].as_u64().unwrap();
    assert!((1900..4000).contains(&ms), "from the claim: {r}");
    // The unclaimed containers of the killed worker are never answered;
    // the second worker removed them and parked its own.
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    let left: Vec<String> = containers_of(&docker, &runner)
        .await
        .into_iter()
        .filter(|n| n.starts_with("/bus-run-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // Clean up the second worker's parked container (killed, not stopped).
    for id in parked_on(&docker, &runner).await.values() {
        let _ = docker
            .remove_container(
                id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(logs.matches("panicked").count(), 0, "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_containers_are_kept_on_every_engine_of_a_pool() {
    let var = |n: &str| {
        std::env::var(n).unwrap_or_else(|_| {
            panic!("{n} is not set: run with scripts/test.sh (or source the dev env) for the pool engines")
        })
    };
    let (three, two) = (var("BUS_TEST_DOCKER_HOST_3"), var("BUS_TEST_DOCKER_HOST_2"));
    let connect =
        |h: &str| bollard::Docker::connect_with_unix(h, 30, bollard::API_DEFAULT_VERSION).unwrap();
    let clients = [connect(&three), connect(&two)];
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-pool");
    let s = warm_settings(
        &runner,
        2,
        &format!("[docker]\nhosts = [\"{three}\", \"{two}\"]\n"),
    );
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let st = wait_parked(&caller, 2).await;
    let engines = st["status"]["details"]["warm"]["quick"]["engines"]
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(engines.len(), 2, "{st}");
    let mut parked = HashMap::new();
    for c in &clients {
        let on = parked_on(c, &runner).await;
        assert_eq!(on.len(), 2, "two parked on each engine");
        parked.extend(on);
    }
    let (r, hit) = run_hit(&caller, &parked, quick(&["echo", "pooled"])).await;
    assert!(hit, "{r}");
    assert_eq!(r["stdout"], "pooled\n");
    let host = r["runtime"]["docker_host"].as_str().unwrap();
    assert!(host == three || host == two, "{r}");
    worker.stop().await.unwrap();
    for c in &clients {
        assert!(no_containers_left(c, &runner).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_request_never_claims_two_containers() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner_a = unique("warm-dup-a");
    let runner_b = unique("warm-dup-b");
    // Tombstones stop a late duplicate (as for cold runs): keep them.
    let keep = "run_retention = \"60s\"\n";
    let sa = warm_settings(&runner_a, 2, keep);
    let mut sb = warm_settings(&runner_b, 2, keep);
    // One group on one prefix: either worker may take either delivery.
    sb.worker.prefix = sa.worker.prefix.clone();
    let wa = spawn_worker(&bus, &sa, "wa").await;
    let wb = spawn_worker(&bus, &sb, "wb").await;
    let caller = Caller::new(&bus, &sa.worker.prefix);
    eventually("parked on both", Duration::from_secs(30), || async {
        (parked_on(&docker, &runner_a).await.len() == 2
            && parked_on(&docker, &runner_b).await.len() == 2)
            .then_some(())
    })
    .await;
    let since = common::unix_now() - 1;
    let mut waiter = caller.waiter(Operation::Run).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let run_id = format!("{}_{i}", unique("dup").replace('-', "_"));
        let correlation = format!("dup-{run_id}");
        let payload =
            json!({"run_id": run_id, "profile": "quick", "command": ["echo", i.to_string()]});
        caller
            .publish_as(Operation::Run, &correlation, payload.clone())
            .await;
        caller
            .publish_as(Operation::Run, &correlation, payload)
            .await;
        ids.push((run_id, correlation));
    }
    let seen = collect(
        &mut waiter,
        ids.len(),
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let sent: Vec<String> = ids.iter().map(|(_, c)| c.clone()).collect();
    for r in each_answered_once(&seen, &sent) {
        assert_eq!(r["status"], "succeeded", "{r}");
    }
    // One claim per run id: exactly one rename to each run's name.
    let events = common::engine_events(&docker, "rename", &[], since).await;
    for (run_id, _) in &ids {
        let name = format!("bus-run-{run_id}");
        let renames = events
            .iter()
            .filter(|e| {
                e.actor
                    .as_ref()
                    .and_then(|a| a.attributes.as_ref())
                    .and_then(|a| a.get("name"))
                    == Some(&name)
            })
            .count();
        assert!(renames <= 1, "{run_id} claimed {renames} containers");
    }
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    // What is left are the answered tombstones (retention), no live run
    // and no parked container.
    for runner in [&runner_a, &runner_b] {
        for name in containers_of(&docker, runner).await {
            assert!(name.ends_with(".answered"), "{name}");
            let _ = docker
                .remove_container(
                    name.trim_start_matches('/'),
                    Some(bollard::query_parameters::RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

#[test]
fn warm_profiles_are_configured_by_file_flag_and_env_and_default_to_none() {
    use bus_integration_docker::cli::Cli;
    use bus_integration_docker::config::load;
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let image = test_image();
    std::fs::write(
        &path,
        format!(
            "warm_max_age = \"90s\"\n[codex]\nimage = \"{image}\"\n[profiles.quick]\nimage = \"{image}\"\nwarm = 2\n[profiles.cold]\nimage = \"{image}\"\n"
        ),
    )
    .unwrap();
    let cli = Cli::try_parse_from(["bus-integration-docker", "--codex-warm", "3"]).unwrap();
    let s = load(Some(&path), &cli.worker.overrides())
        .unwrap()
        .settings()
        .unwrap();
    let warm: Vec<(String, usize)> = s
        .worker
        .warm
        .profiles
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    assert_eq!(warm, [("codex".to_owned(), 3), ("quick".to_owned(), 2)]);
    assert_eq!(s.worker.warm.max_age, Duration::from_secs(90));
    let plain = load(None, &[]).unwrap().settings().unwrap();
    assert!(
        plain.worker.warm.profiles.is_empty(),
        "default 0: no parked containers"
    );
    assert_eq!(plain.worker.warm.max_age, Duration::from_secs(600));
    // codex.warm without a codex image names the key.
    let cli = Cli::try_parse_from(["bus-integration-docker", "--codex-warm", "1"]).unwrap();
    let err = load(None, &cli.worker.overrides())
        .unwrap()
        .settings()
        .unwrap_err();
    assert!(err.to_string().contains("codex.warm"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_without_a_shell_is_refused_as_a_warm_profile_with_the_reason() {
    use bus_docker_domain::ports::ContainerRuntime;
    let docker = require_engine().await;
    // An image with no /bin/sh: a scratch image holding one empty file.
    let tag = format!("bus-test-noshell:{}", std::process::id());
    let mut tar = Vec::new();
    {
        let mut add = |name: &str, data: &[u8]| {
            let mut header = [0u8; 512];
            header[..name.len()].copy_from_slice(name.as_bytes());
            header[100..107].copy_from_slice(b"0000644");
            header[108..115].copy_from_slice(b"0000000");
            header[116..123].copy_from_slice(b"0000000");
            let size = format!("{:011o}", data.len());
            header[124..135].copy_from_slice(size.as_bytes());
            header[136..147].copy_from_slice(b"00000000000");
            header[156] = b'0';
            header[257..262].copy_from_slice(b"ustar");
            header[148..156].copy_from_slice(b"        ");
            let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
            header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            tar.extend_from_slice(&header);
            tar.extend_from_slice(data);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        };
        add("Dockerfile", b"FROM scratch\nCOPY f /f\n");
        add("f", b"x");
    }
    tar.resize(tar.len() + 1024, 0);
    let opts = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .t(&tag)
        .rm(true)
        .build();
    use futures_util::StreamExt;
    let mut build = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(step) = build.next().await {
        step.expect("the no-shell image builds");
    }
    let engine =
        bus_docker_engine::DockerEngine::connect(bus_docker_engine::EngineOptions::default())
            .unwrap();
    let runner = unique("warm-noshell");
    let s = docker_settings(
        &runner,
        &format!("[profiles.bare]\nimage = \"{tag}\"\nnetwork = \"none\"\npull_policy = \"never\"\nwarm = 1\n"),
    );
    let profile = s
        .worker
        .profiles
        .iter()
        .find(|p| p.name.as_str() == "bare")
        .unwrap()
        .clone();
    let template = bus_docker_domain::spec::resolve(
        &bus_docker_domain::request::RunRequest {
            profile: Some(profile.name.clone()),
            command: Some(vec!["true".into()]),
            ..Default::default()
        },
        &bus_docker_domain::spec::Origin {
            correlation: bus_docker_domain::CorrelationId::parse("c").unwrap(),
            stamped_owner: None,
            reply_event: "r".into(),
        },
        &s.worker.profiles,
        &s.worker.policy,
        &bus_docker_domain::mount::RealHostPaths,
        bus_docker_domain::RunId::parse("t").unwrap(),
    )
    .unwrap();
    let refused = engine.park(&template, &runner).await.unwrap_err();
    assert!(
        refused.to_string().contains("/bin/sh"),
        "the reason names the missing shell: {refused}"
    );
    assert!(
        containers_of(&docker, &runner).await.is_empty(),
        "nothing left"
    );
    let _ = docker
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_containers_are_replaced_after_warm_max_age_and_show_in_metrics() {
    use bus_integration_docker::app::{self, App};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-age");
    let s = warm_settings(
        &runner,
        1,
        "warm_max_age = \"1s\"\nmetrics_addr = \"127.0.0.1:0\"\n",
    );
    common::init_tracing();
    let client = bus.client().unwrap();
    let mut app = App::over_http(&s, app::runtime(&s).unwrap(), &client, "w1".into());
    let addr = app.bind_metrics().unwrap().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    wait_parked(&caller, 1).await;
    let first = parked_on(&docker, &runner).await;
    // Past warm_max_age the parked container is replaced by a new one.
    eventually("replaced", Duration::from_secs(20), || async {
        let now = parked_on(&docker, &runner).await;
        (now.len() == 1 && now.values().all(|id| !first.values().any(|f| f == id))).then_some(())
    })
    .await;
    wait_parked(&caller, 1).await;
    let parked = parked_on(&docker, &runner).await;
    let (r, hit) = run_hit(&caller, &parked, quick(&["true"])).await;
    assert!(hit, "{r}");
    let scrape = || async move {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        conn.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let text = eventually("metrics", Duration::from_secs(20), || async {
        let text = scrape().await;
        (text.contains(r#"bus_docker_warm_claims_total{profile="quick",result="hit"} 1"#)
            && text.contains(r#"bus_docker_warm_parked{profile="quick"} 1"#))
        .then_some(text)
    })
    .await;
    assert!(!text.contains("run_id"), "no run ids as labels");
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}

/// A profile spec resolved from `s` (what the worker parks from), as run
/// `run_id` with correlation `c-<run_id>`.
fn profile_spec(
    s: &Settings,
    profile: &str,
    run_id: &str,
    command: &[&str],
) -> bus_docker_domain::spec::RunSpec {
    let reply = s.worker.prefix.response_name(Operation::Run);
    profile_spec_replying(s, profile, run_id, command, &reply)
}

fn profile_spec_replying(
    s: &Settings,
    profile: &str,
    run_id: &str,
    command: &[&str],
    reply_event: &str,
) -> bus_docker_domain::spec::RunSpec {
    bus_docker_domain::spec::resolve(
        &bus_docker_domain::request::RunRequest {
            profile: Some(bus_docker_domain::ProfileName::parse(profile).unwrap()),
            command: Some(command.iter().map(|c| (*c).to_owned()).collect()),
            ..Default::default()
        },
        &bus_docker_domain::spec::Origin {
            correlation: bus_docker_domain::CorrelationId::parse(&format!("c-{run_id}")).unwrap(),
            stamped_owner: None,
            reply_event: reply_event.into(),
        },
        &s.worker.profiles,
        &s.worker.policy,
        &bus_docker_domain::mount::RealHostPaths,
        bus_docker_domain::RunId::parse(run_id).unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_worker_went_away_before_the_command_is_answered_as_never_run() {
    use bus_docker_domain::ports::{ContainerRuntime, RunIo, Stdin};
    use bus_docker_engine::{DockerEngine, EngineOptions};
    let docker = require_engine().await;
    let runner = unique("warm-gone");
    let s = warm_settings(&runner, 1, "");
    let run_id = unique("gone").replace('-', "_");
    let claimed = {
        // The worker that parks and claims, then goes away before its
        // drive hands the command over (its attach closes with it).
        let first = DockerEngine::connect(EngineOptions::default()).unwrap();
        let parked = first
            .park(&profile_spec(&s, "quick", "template", &["true"]), &runner)
            .await
            .unwrap();
        first
            .claim(
                &parked,
                &profile_spec(&s, "quick", &run_id, &["echo", "ran"]),
            )
            .await
            .unwrap()
    };
    assert_eq!(claimed.name, format!("bus-run-{run_id}"));
    // Another worker reads the run back from the engine and drives it.
    let second = DockerEngine::connect(EngineOptions::default()).unwrap();
    let m = second.inspect_managed(&claimed).await.unwrap();
    assert_eq!(
        m.correlation.as_ref().map(|c| c.as_str().to_owned()),
        Some(format!("c-{run_id}"))
    );
    let io = RunIo {
        stdin: Stdin::Closed,
        timeout: Duration::from_secs(30),
        cancel: Box::pin(std::future::pending()),
        max_output_bytes: 1024,
        stop_grace: Duration::from_secs(1),
        output: None,
    };
    let ended = second.drive(&claimed, io).await;
    let err = ended.expect_err("nothing ran: not a result");
    assert!(err.to_string().contains("never ran"), "{err}");
    second.remove(&claimed).await.unwrap();
    assert!(containers_of(&docker, &runner).await.is_empty());
}

/// A worker killed between a claim's record and its rename (docs/protocol.md
/// §10): the restarted worker completes the claim and answers the run
/// once (`error`, nothing ran), even with no warm profile left in its
/// configuration; a cut-off claim whose run already has a container is
/// removed unanswered; a parked container never claimed is removed
/// unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_cut_off_before_its_rename_is_answered_once_after_restart() {
    use bus_docker_domain::ports::ContainerRuntime;
    use bus_docker_engine::{DockerEngine, EngineOptions};
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("warm-cut");
    let s = warm_settings(&runner, 0, "");
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let cut = unique("cut").replace('-', "_");
    let twin = unique("twin").replace('-', "_");
    {
        // The process that is killed: four parked containers.
        let first = DockerEngine::connect(EngineOptions::default()).unwrap();
        let template = profile_spec(&s, "quick", "template", &["true"]);
        let mut parked = Vec::new();
        for _ in 0..4 {
            parked.push(first.park(&template, &runner).await.unwrap());
        }
        // 1: cut off after the record.
        first
            .interrupt_claim(&parked[0], &profile_spec(&s, "quick", &cut, &["echo", "a"]))
            .await
            .unwrap();
        // 2: never claimed (parked[1]).
        // 3: claimed in full for `twin`, and 4: a second, cut-off claim
        // of the same run (a redelivery): the run has a container already.
        let claimed = first
            .claim(
                &parked[2],
                &profile_spec(&s, "quick", &twin, &["echo", "b"]),
            )
            .await
            .unwrap();
        assert_eq!(claimed.name, format!("bus-run-{twin}"));
        first
            .interrupt_claim(
                &parked[3],
                &profile_spec(&s, "quick", &twin, &["echo", "b"]),
            )
            .await
            .unwrap();
        let names = containers_of(&docker, &runner).await;
        assert_eq!(names.len(), 4, "{names:?}");
        assert_eq!(
            names.iter().filter(|n| n.starts_with("/bus-warm-")).count(),
            3,
            "the cut-off claims keep their parked names: {names:?}"
        );
    }
    let worker = spawn_worker(&bus, &s, &runner).await;
    let seen = collect(
        &mut waiter,
        2,
        Duration::from_secs(3),
        Duration::from_secs(60),
    )
    .await;
    let sent = [format!("c-{cut}"), format!("c-{twin}")];
    for r in each_answered_once(&seen, &sent) {
        assert_eq!(r["status"], "error", "{r}");
        assert!(r.to_string().contains("never ran"), "{r}");
    }
    assert!(parked_on(&docker, &runner).await.is_empty());
    worker.stop().await.unwrap();
    assert!(no_containers_left(&docker, &runner).await.is_empty());
}
