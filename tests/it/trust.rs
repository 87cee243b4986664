//! "Exactly one response, executed at most once" across workers that share
//! one Docker Engine (docs/protocol.md §2, §5), on the real engine:
//!
//! * a request without `run_id` delivered to two workers (two groups on one
//!   prefix: each group gets every event) runs once and is answered once;
//! * delivered again later to a third, fresh worker (the first answered and
//!   left an `.answered` tombstone), it is neither run nor answered again;
//! * a delete sent through another worker ends the run `canceled`, with what
//!   the process printed on SIGTERM.

use crate::common;

use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::LocalBus;
use common::{
    answered_once, each_answered_once, require_engine, settings, spawn_worker, starts_since,
    test_image, unique, Caller, WAIT,
};
use serde_json::json;

/// A docker worker on `prefix` with its own runner name and group.
fn worker_settings(runner: &str, prefix: &str, group: &str, extra: &str) -> Settings {
    settings(&format!(
        "provider = \"docker\"\nrunner_name = \"{runner}\"\nevent_prefix = \"{prefix}\"\nshutdown_grace = \"5s\"\nstop_grace = \"5s\"\n{extra}\n[events]\ngroup = \"{group}\"\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivered_to_two_workers_runs_once_and_a_late_redelivery_not_again() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("trust");
    let prefix = format!("bus.t.{}", tag.replace('_', "-"));
    let (ra, rb, rc) = (format!("{tag}-a"), format!("{tag}-b"), format!("{tag}-c"));
    let a = worker_settings(&ra, &prefix, &format!("{tag}-ga"), "");
    let b = worker_settings(&rb, &prefix, &format!("{tag}-gb"), "");
    let since = common::unix_now() - 1;
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    let caller = Caller::new(&bus, &a.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;

    // No run_id: each worker derives the same one from the correlation id.
    let payload = json!({"image": test_image(), "command": ["sh", "-c", "sleep 1; echo once"]});
    let dup = format!("{tag}-dup");
    caller
        .publish_as(Operation::Run, &dup, payload.clone())
        .await;
    let got = common::collect(&mut runs, 1, Duration::from_millis(1500), WAIT).await;
    let answer = answered_once(&got, &dup);
    assert_eq!(answer["stdout"], "once\n", "{answer}");
    assert_eq!(
        starts_since(&docker, &ra, since).await + starts_since(&docker, &rb, since).await,
        1,
        "the container ran once"
    );

    // Redelivered after the answer to a worker that never saw it: the
    // tombstone of the first run stops it before it starts.
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    let c = worker_settings(&rc, &prefix, &format!("{tag}-gc"), "");
    let wc = spawn_worker(&bus, &c, "wc").await;
    caller.publish_as(Operation::Run, &dup, payload).await;
    let marker = format!("{tag}-marker");
    caller
        .publish_as(
            Operation::Run,
            &marker,
            json!({"image": test_image(), "command": ["true"]}),
        )
        .await;
    // The marker, published after the redelivery, is answered: the
    // redelivery was handled, and got no second response.
    let late = common::collect(&mut runs, 1, Duration::from_millis(1500), WAIT).await;
    each_answered_once(&late, &[marker]);
    assert_eq!(
        starts_since(&docker, &rc, since).await,
        1,
        "only the marker ran on the third worker"
    );
    wc.stop().await.unwrap();
    cleanup(&docker, &[&ra, &rb, &rc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_through_another_worker_ends_the_run_canceled() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("trustdel");
    let (ra, rb) = (format!("{tag}-a"), format!("{tag}-b"));
    // Two workers on one engine, each on its own prefix: B never sees the
    // run request, only the delete.
    let a = worker_settings(&ra, &format!("bus.t.{tag}-a"), "g", "");
    let b = worker_settings(&rb, &format!("bus.t.{tag}-b"), "g", "");
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    let via_a = Caller::new(&bus, &a.worker.prefix);
    let via_b = Caller::new(&bus, &b.worker.prefix);
    let mut runs = via_a.waiter(Operation::Run).await;
    let mut output = via_a.output_waiter().await;
    let run_id = format!("{tag}-run");
    let c = via_a
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": test_image(),
                   "stream_output": true,
                   "command": ["sh", "-c", "trap 'echo saved; exit 3' TERM; echo up; while :; do sleep 0.1; done"]}),
        )
        .await;
    // The run says `up` once its trap is installed: its first live output.
    let first = output.wait(&c, WAIT).await.unwrap();
    assert_eq!(first["data"], "up\n", "{first}");
    let deleted = via_b
        .call(Operation::Delete, json!({"run_id": run_id}))
        .await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let r = runs.wait(&c, WAIT).await.unwrap();
    assert_eq!(r["status"], "canceled", "{r}");
    assert_eq!(common::code(&r), "canceled");
    assert_eq!(r["stdout"], "up\nsaved\n", "SIGTERM first: the trap ran");
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    cleanup(&docker, &[&ra, &rb]).await;
}

/// Remove what the workers left (tombstones of answered runs).
async fn cleanup(docker: &bollard::Docker, runners: &[&str]) {
    for runner in runners {
        for name in common::containers_of(docker, runner).await {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = docker
                .remove_container(name.trim_start_matches('/'), Some(options))
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_delete_cancels_only_its_own_runs_and_counts_what_it_removed() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("trustrd");
    let (ra, rb) = (format!("{tag}-a"), format!("{tag}-b"));
    let a = worker_settings(
        &ra,
        &format!("bus.t.{tag}-a"),
        "g",
        "run_retention = \"0s\"",
    );
    let b = worker_settings(
        &rb,
        &format!("bus.t.{tag}-b"),
        "g",
        "run_retention = \"0s\"",
    );
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    let via_a = Caller::new(&bus, &a.worker.prefix);
    let via_b = Caller::new(&bus, &b.worker.prefix);
    let mut runs_a = via_a.waiter(Operation::Run).await;
    let mut runs_b = via_b.waiter(Operation::Run).await;
    let sleeper = json!({"image": test_image(), "command": ["sleep", "60"]});
    let (ida, idb) = (format!("{tag}-ra"), format!("{tag}-rb"));
    let mut mine = sleeper.clone();
    mine["run_id"] = json!(ida);
    let mut theirs = sleeper;
    theirs["run_id"] = json!(idb);
    let ca = via_a.publish(Operation::Run, mine).await;
    let cb = via_b.publish(Operation::Run, theirs).await;
    common::wait_running(&via_a, &ida).await;
    common::wait_running(&via_b, &idb).await;

    let deleted = via_a.call(Operation::RunnerDelete, json!({})).await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(deleted["removed_containers"], 1, "{deleted}");
    let r = runs_a.wait(&ca, WAIT).await.unwrap();
    assert_eq!(r["status"], "canceled", "{r}");
    // The other runner's run is untouched: still running, on the engine.
    let st = via_b.call(Operation::Status, json!({"run_id": idb})).await;
    assert_eq!(st["items"][0]["state"], "running", "{st}");
    assert_eq!(common::containers_of(&docker, &rb).await.len(), 1);
    assert!(common::containers_of(&docker, &ra).await.is_empty());

    via_b.call(Operation::Delete, json!({"run_id": idb})).await;
    assert_eq!(runs_b.wait(&cb, WAIT).await.unwrap()["status"], "canceled");
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    cleanup(&docker, &[&ra, &rb]).await;
}
