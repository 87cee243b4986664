//! The whole event path with the deterministic `static` provider: local
//! Events API → HttpSource → worker → StaticRuntime → HttpPublisher →
//! caller. Every operation's response shape, errors, groups, reconnects.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{code, settings, spawn_worker, spawn_worker_with_token, Caller, WAIT};
use serde_json::{json, Value};

const STATIC: &str =
    "provider = \"static\"\nevent_prefix = \"bus.docker\"\nshutdown_grace = \"2s\"\n";

#[tokio::test]
async fn run_response_has_the_contract_shape() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(STATIC);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    let r = caller.call(Operation::Run, json!({"image": "alpine:3.20", "command": ["printf", "OK"], "labels": {"bus.task.ref": "t-1"}})).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["stdout"], "printf OK\n");
    assert_eq!(r["stdout_bytes"], 10);
    assert_eq!(r["stdout_truncated"], false);
    assert_eq!(r["stderr"], "");
    assert_eq!(
        r["owner_identity_id"], "local-operator",
        "owner falls back to the stamped identity"
    );
    assert_eq!(r["owner_account_id"], "local-operator");
    assert_eq!(r["image"], "alpine:3.20");
    assert!(r["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(r["args"], json!(["printf", "OK"]));
    assert_eq!(r["runtime"]["provider"], "static");
    assert!(r["runtime"]["container_name"]
        .as_str()
        .unwrap()
        .starts_with("bus-run-run_"));
    assert!(r["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(r["duration_ms"].is_u64());
    assert!(r.get("error").is_none_or(Value::is_null), "{r}");

    let failed = caller
        .call(
            Operation::Run,
            json!({"image": "alpine:3.20", "args": ["exit", "3"], "owner_identity_id": "alice"}),
        )
        .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["owner_identity_id"], "alice");
    assert!(
        failed.get("error").is_none_or(Value::is_null),
        "non-zero exit is not an error: {failed}"
    );

    let timed_out = caller
        .call(
            Operation::Run,
            json!({"image": "a:1", "command": ["sleep", "30"], "timeout_seconds": 1}),
        )
        .await;
    assert_eq!(timed_out["status"], "timed_out");
    assert_eq!(code(&timed_out), "timeout");

    worker.stop().await.unwrap();
}

#[tokio::test]
async fn status_delete_and_input_work_on_live_runs() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(STATIC);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    // A long run, seen by status, then deleted: its own response says canceled.
    let mut runs = caller.waiter(Operation::Run).await;
    let long = caller
        .publish(
            Operation::Run,
            json!({"run_id": "long-1", "image": "a:1", "command": ["sleep", "60"]}),
        )
        .await;
    let status = common::wait_running(&caller, "long-1").await;
    assert_eq!(status["items"][0]["id"], "long-1");
    assert_eq!(status["items"][0]["owner_identity_id"], "local-operator");
    assert_eq!(status["items"][0]["details"]["image"], "a:1");

    let other = caller
        .call(
            Operation::Status,
            json!({"owner_identity_id": "somebody-else"}),
        )
        .await;
    assert_eq!(other["items"], json!([]), "status filters by owner");

    let not_yours = caller
        .call(
            Operation::Delete,
            json!({"run_id": "long-1", "owner_identity_id": "mallory"}),
        )
        .await;
    assert_eq!(
        code(&not_yours),
        "not_found",
        "another owner's run does not exist for them"
    );

    let deleted = caller
        .call(Operation::Delete, json!({"run_id": "long-1"}))
        .await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(deleted["run_id"], "long-1");
    let run = runs.wait(&long, WAIT).await.unwrap();
    assert_eq!(run["status"], "canceled");
    assert_eq!(code(&run), "canceled");

    // Interactive input.
    let cat = caller.publish(Operation::Run, json!({"run_id": "cat-1", "image": "a:1", "command": ["cat"], "interactive": true, "stdin": "a "})).await;
    // Input is refused (`conflict`) until the run's container runs.
    let accepted = common::eventually("input accepted", WAIT, || async {
        let r = caller
            .call(
                Operation::Input,
                json!({"run_id": "cat-1", "data": "hello "}),
            )
            .await;
        (r["accepted"] == true).then_some(r)
    })
    .await;
    assert_eq!(accepted["bytes"], 6);
    let last = caller
        .call(
            Operation::Input,
            json!({"run_id": "cat-1", "data": "world", "eof": true}),
        )
        .await;
    assert_eq!(last["accepted"], true, "{last}");
    let run = runs.wait(&cat, WAIT).await.unwrap();
    assert_eq!(run["stdout"], "a hello world");

    let conflict = caller
        .call(Operation::Input, json!({"run_id": "nope", "data": "x"}))
        .await;
    assert_eq!(code(&conflict), "not_found");

    worker.stop().await.unwrap();
}

#[tokio::test]
async fn runner_operations_answer() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(&format!("{STATIC}[codex]\nimage = \"codex:1\"\n"));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["state"], "ready", "{st}");
    assert_eq!(st["status"]["provider"], "static");
    assert_eq!(st["status"]["details"]["max_concurrent_runs"], 4);
    assert_eq!(st["status"]["details"]["active_runs"], 0);
    assert_eq!(
        st["status"]["details"]["profiles"]["codex"]["present"],
        true
    );

    let start = caller.call(Operation::RunnerStart, json!({})).await;
    assert_eq!(start["accepted"], true, "{start}");
    assert_eq!(start["action"], "start");

    let mut runs = caller.waiter(Operation::Run).await;
    let c = caller
        .publish(
            Operation::Run,
            json!({"image": "a:1", "command": ["sleep", "60"]}),
        )
        .await;
    common::wait_active_runs(&caller, 1).await;
    let del = caller.call(Operation::RunnerDelete, json!({})).await;
    assert_eq!(del["deleted"], true);
    assert_eq!(del["removed_containers"], 1);
    assert_eq!(runs.wait(&c, WAIT).await.unwrap()["status"], "canceled");

    worker.stop().await.unwrap();
}

#[tokio::test]
async fn refusals_carry_the_documented_codes() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(&format!(
        "{STATIC}max_concurrent_runs = 1\nmax_queued_runs = 0\n"
    ));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    let cases = [
        (
            json!({"image": "a:1", "command": "not-a-list"}),
            "bad_request",
            "command",
        ),
        (json!({"command": ["x"]}), "bad_request", "profile"),
        (
            json!({"image": "a:1", "command": ["x"], "run_id": "a/b"}),
            "bad_request",
            "run_id",
        ),
        (
            json!({"image": "a:1", "command": ["x"], "timeout_seconds": -1}),
            "bad_request",
            "timeout_seconds",
        ),
        (
            json!({"image": "a:1", "command": ["x"], "env": {"GIT_SSH_COMMAND": "evil"}}),
            "forbidden",
            "reserved_env",
        ),
        (
            json!({"image": "a:1", "command": ["x"], "network": "host"}),
            "forbidden",
            "network_not_allowed",
        ),
        (
            json!({"image": "a:1", "command": ["x"], "mounts": [{"source": "/etc", "target": "/x"}]}),
            "forbidden",
            "mount_root",
        ),
        (
            json!({"image": "missing/a:1", "command": ["x"]}),
            "image_unavailable",
            "missing/a:1",
        ),
        (json!({"profile": "nope"}), "bad_request", "profile"),
    ];
    for (payload, expected, mention) in cases {
        let r = caller.call(Operation::Run, payload.clone()).await;
        assert_eq!(code(&r), expected, "{payload} -> {r}");
        let error = r["error"].as_object().expect("payload.error is an object");
        assert_eq!(
            error.keys().collect::<Vec<_>>(),
            vec!["code", "message"],
            "payload.error carries code and message: {r}"
        );
        assert!(
            r["error"]["message"].as_str().unwrap().contains(mention),
            "{payload} -> {r}"
        );
    }

    // One slot, no queue: while it is taken, a run request is read and
    // answered `capacity` at once (docs/protocol.md §5: nothing is left unread
    // in the stream), and runner.status says intake is full. (Before v3 the
    // run waited in the group while the worker closed its run stream; that
    // lost requests written in the instant before the close.)
    let mut runs = caller.waiter(Operation::Run).await;
    let first = caller
        .publish(
            Operation::Run,
            json!({"run_id": "cap-1", "image": "a:1", "command": ["sleep", "60"]}),
        )
        .await;
    common::wait_running(&caller, "cap-1").await;
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["details"]["intake"], "full", "{st}");
    let second = caller
        .publish(Operation::Run, json!({"image": "a:1", "command": ["true"]}))
        .await;
    let second = runs.wait(&second, WAIT).await.unwrap();
    assert_eq!(
        code(&second),
        "capacity",
        "full: answered at once: {second}"
    );
    let not_interactive = caller
        .call(Operation::Input, json!({"run_id": "cap-1", "data": "x"}))
        .await;
    assert_eq!(code(&not_interactive), "conflict");
    caller
        .call(Operation::Delete, json!({"run_id": "cap-1"}))
        .await;
    assert_eq!(runs.wait(&first, WAIT).await.unwrap()["status"], "canceled");
    let third = caller
        .publish(Operation::Run, json!({"image": "a:1", "command": ["true"]}))
        .await;
    let third = runs.wait(&third, WAIT).await.unwrap();
    assert_eq!(
        third["status"], "succeeded",
        "taken once the slot freed: {third}"
    );
    let dup = caller
        .call(
            Operation::Run,
            json!({"run_id": "cap-1", "image": "a:1", "command": ["true"]}),
        )
        .await;
    assert_eq!(code(&dup), "conflict", "{dup}");

    worker.stop().await.unwrap();
}

#[tokio::test]
async fn a_redelivered_request_gets_no_second_response_and_runs_once() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(STATIC);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut w = caller.waiter(Operation::Run).await;
    let payload = json!({"image": "a:1", "command": ["echo", "once"]});
    caller
        .publish_as(Operation::Run, "dup-1", payload.clone())
        .await;
    let first = w.wait("dup-1", WAIT).await.unwrap();
    assert_eq!(first["stdout"], "echo once\n");
    // Redelivered after the answer, and once more from another owner that
    // reuses the correlation id: neither is run or answered again, and the
    // other owner never sees the first owner's response.
    caller.publish_as(Operation::Run, "dup-1", payload).await;
    caller
        .publish_as(
            Operation::Run,
            "dup-1",
            json!({"image": "a:1", "command": ["echo", "thief"], "owner_identity_id": "mallory"}),
        )
        .await;
    // A marker published after the duplicates: once it is answered, the
    // duplicates were delivered and handled.
    caller
        .publish_as(
            Operation::Run,
            "marker-1",
            json!({"image": "a:1", "command": ["true"]}),
        )
        .await;
    // Only the marker is answered: no second response for a redelivered
    // request.
    let seen = common::collect(&mut w, 1, Duration::from_millis(500), WAIT).await;
    common::each_answered_once(&seen, &["marker-1".to_owned()]);
    // The same holds for the other operations.
    let mut st = caller.waiter(Operation::Status).await;
    caller
        .publish_as(Operation::Status, "st-1", json!({}))
        .await;
    st.wait("st-1", WAIT).await.unwrap();
    caller
        .publish_as(Operation::Status, "st-1", json!({}))
        .await;
    caller
        .publish_as(Operation::Status, "st-2", json!({}))
        .await;
    let seen = common::collect(&mut st, 1, Duration::from_millis(500), WAIT).await;
    common::each_answered_once(&seen, &["st-2".to_owned()]);
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn two_workers_in_one_group_handle_each_request_once() {
    let bus = LocalBus::start().await.unwrap();
    let a = settings(&format!("{STATIC}runner_name = \"static@a\"\n"));
    let b = settings(&format!("{STATIC}runner_name = \"static@b\"\n"));
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    common::wait_connected(&bus, &a, 2).await;
    let caller = Caller::new(&bus, &a.worker.prefix);
    let mut w = caller.waiter(Operation::Run).await;
    let sent = caller
        .publish_batch(
            Operation::Run,
            0..30,
            |i| json!({"image": "a:1", "command": ["echo", i.to_string()]}),
        )
        .await;
    // Every response of the window, duplicates included.
    let got = common::collect(&mut w, sent.len(), Duration::from_millis(500), WAIT).await;
    let mut by_runner: HashMap<String, usize> = HashMap::new();
    for r in common::each_answered_once(&got, &sent) {
        *by_runner
            .entry(r["runner_name"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(by_runner.values().sum::<usize>(), 30);
    assert!(
        by_runner.len() == 2,
        "both workers took a share: {by_runner:?}"
    );
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
}

#[tokio::test]
async fn the_worker_reconnects_after_the_server_drops_its_streams() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(STATIC);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    for round in 0..3 {
        bus.server().drop_streams();
        common::wait_connected(&bus, &s, 1).await;
        let r = caller
            .call(
                Operation::Run,
                json!({"image": "a:1", "command": ["echo", round.to_string()]}),
            )
            .await;
        assert_eq!(r["stdout"], format!("echo {round}\n"));
    }
    worker.stop().await.unwrap();
}

#[tokio::test]
async fn an_unauthorized_worker_fails_fast() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(STATIC);
    let client = bus.client_with("not-a-jwt").unwrap();
    let app = bus_integration_docker::app::App::over_http(
        &s,
        bus_integration_docker::app::runtime(&s).unwrap(),
        &client,
        "bad".into(),
    );
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        app.run_until(std::future::pending()),
    )
    .await;
    let err = result.expect("fails fast, not hanging").unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    let _ = spawn_worker_with_token;
}

#[tokio::test]
async fn finished_runs_stay_in_status_for_the_retention_then_go() {
    let bus = LocalBus::start().await.unwrap();
    let s = settings(&format!("{STATIC}run_retention = \"2s\"\n"));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let r = caller
        .call(
            Operation::Run,
            json!({"run_id": "ret-1", "image": "a:1", "command": ["exit", "3"], "owner_identity_id": "alice"}),
        )
        .await;
    assert_eq!(r["status"], "failed", "{r}");
    let st = caller
        .call(
            Operation::Status,
            json!({"run_id": "ret-1", "owner_identity_id": "alice"}),
        )
        .await;
    let item = &st["items"][0];
    assert_eq!(item["state"], "exited", "{st}");
    assert_eq!(item["details"]["status"], "failed", "{st}");
    assert_eq!(item["details"]["exit_code"], 3, "{st}");
    assert!(item["details"]["finished_at"].is_string(), "{st}");
    let bob = caller
        .call(Operation::Status, json!({"owner_identity_id": "bob"}))
        .await;
    assert_eq!(bob["items"], json!([]), "owner-filtered like the rest");
    // Past the retention the run and its tombstone are gone.
    common::eventually(
        "the retained run expires",
        Duration::from_secs(15),
        || async {
            let st = caller
                .call(
                    Operation::Status,
                    json!({"run_id": "ret-1", "owner_identity_id": "alice"}),
                )
                .await;
            (st["items"] == json!([])).then_some(())
        },
    )
    .await;
    worker.stop().await.unwrap();
}
