//! A corpus of malformed and hostile requests against a docker worker:
//! each gets its documented error (or is skipped with a log line), the
//! worker never panics, and no container starts for any of them.

mod common;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{docker_settings, require_engine, spawn_worker, test_image, unique, Caller};
use serde_json::{json, Value};

fn big_map(n: usize, value: &str) -> Value {
    Value::Object((0..n).map(|i| (format!("K{i}"), json!(value))).collect())
}

#[tokio::test]
async fn hostile_requests_get_documented_errors_and_start_nothing() {
    let docker = require_engine().await;
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
    let allowed_s = allowed.display().to_string();

    let since = common::unix_now() - 1;
    let runner = unique("hostile");
    let s = docker_settings(
        &runner,
        &format!("[policy]\nallowed_mount_roots = [\"{allowed_s}\"]\n"),
    );
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let image = test_image();
    let run = |extra: Value| {
        let mut base = json!({"image": image, "command": ["true"]});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    use Operation::{Delete, Input, Run, Status};
    let cases: Vec<(Operation, Value, &str)> = vec![
        (Run, json!([1, 2]), "bad_request"),
        (Run, json!("run please"), "bad_request"),
        (Run, json!(42), "bad_request"),
        (Run, run(json!({"command": "true"})), "bad_request"),
        (Run, run(json!({"command": [1, 2]})), "bad_request"),
        (Run, run(json!({"command": []})), "bad_request"),
        (Run, run(json!({"command": ["a\u{0}b"]})), "bad_request"),
        (Run, run(json!({"command": vec!["x"; 2000]})), "bad_request"),
        (
            Run,
            run(json!({"command": ["x".repeat(200 * 1024)]})),
            "bad_request",
        ),
        (Run, run(json!({"env": ["A=1"]})), "bad_request"),
        (Run, run(json!({"env": {"A": 1}})), "bad_request"),
        (Run, run(json!({"env": {"1X": "v"}})), "bad_request"),
        (Run, run(json!({"env": {"A-B": "v"}})), "bad_request"),
        (Run, run(json!({"env": {"": "v"}})), "bad_request"),
        (
            Run,
            run(json!({"env": {"SSH_AUTH_SOCK": "/tmp/x"}})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"env": {"GIT_SSH_COMMAND": "sh -c evil"}})),
            "forbidden",
        ),
        (Run, run(json!({"env": big_map(300, "v")})), "bad_request"),
        (
            Run,
            run(json!({"env": {"BIG": "v".repeat(40 * 1024)}})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "/etc", "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": format!("{allowed_s}/../../etc"), "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": format!("{allowed_s}/escape"), "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "/var/run/docker.sock", "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(
                json!({"mounts": [{"source": "/run/docker.sock", "target": "/var/run/docker.sock"}]}),
            ),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "relative/dir", "target": "/x"}]})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s, "target": "relative"}]})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s, "target": "/proc"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s}]})),
            "bad_request",
        ),
        (
            Run,
            run(
                json!({"mounts": [{"source": format!("{allowed_s}/nonexistent"), "target": "/x"}]}),
            ),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": vec![json!({"source": allowed_s, "target": "/x"}); 40]})),
            "bad_request",
        ),
        (Run, run(json!({"mounts": "all"})), "bad_request"),
        (Run, run(json!({"network": "host"})), "forbidden"),
        (Run, run(json!({"network": "bad name!"})), "bad_request"),
        (Run, run(json!({"image": "evil image"})), "bad_request"),
        (Run, run(json!({"image": "--privileged"})), "bad_request"),
        (Run, run(json!({"image": "a".repeat(600)})), "bad_request"),
        (Run, run(json!({"image": 7})), "bad_request"),
        (
            Run,
            json!({"profile": "unknown", "command": ["true"]}),
            "bad_request",
        ),
        (
            Run,
            json!({"profile": "../codex", "command": ["true"]}),
            "bad_request",
        ),
        (Run, json!({"command": ["true"]}), "bad_request"),
        (Run, run(json!({"run_id": "a/b"})), "bad_request"),
        (Run, run(json!({"run_id": "line\nbreak"})), "bad_request"),
        (Run, run(json!({"run_id": "r".repeat(200)})), "bad_request"),
        (Run, run(json!({"timeout_seconds": -5})), "bad_request"),
        (Run, run(json!({"timeout_seconds": "10"})), "bad_request"),
        (Run, run(json!({"timeout_seconds": 1.5})), "bad_request"),
        (Run, run(json!({"timeout_seconds": 1e300})), "bad_request"),
        (Run, run(json!({"interactive": "yes"})), "bad_request"),
        (
            Run,
            run(json!({"stdin": "x".repeat(2 * 1024 * 1024)})),
            "bad_request",
        ),
        (Run, run(json!({"stdin": 5})), "bad_request"),
        (Run, run(json!({"labels": {"bad key": "v"}})), "bad_request"),
        (
            Run,
            run(json!({"labels": {"k": "v".repeat(2048)}})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"labels": big_map(100, "v")})),
            "bad_request",
        ),
        (Run, run(json!({"workdir": "relative"})), "bad_request"),
        (Run, run(json!({"workdir": "/a/../b"})), "bad_request"),
        (
            Run,
            run(json!({"owner_identity_id": "evil\u{7}owner"})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"command": "x", "args": ["y"]})),
            "bad_request",
        ),
        (Input, json!({"data": "x"}), "bad_request"),
        (Input, json!({"run_id": "r1", "data": 5}), "bad_request"),
        (Input, json!({"run_id": "r1", "eof": "true"}), "bad_request"),
        (
            Input,
            json!({"run_id": "no-such-run", "data": "x"}),
            "not_found",
        ),
        (Delete, json!({}), "bad_request"),
        (Delete, json!({"run_id": "../../x"}), "bad_request"),
        (Delete, json!({"run_id": "no-such-run"}), "not_found"),
        (Status, json!({"run_id": 1}), "bad_request"),
        (Status, json!({"owner_identity_id": ["a"]}), "bad_request"),
    ];
    assert!(cases.len() >= 50, "corpus has {} cases", cases.len());
    let mut by_code = std::collections::BTreeMap::new();
    for (_, _, code) in &cases {
        *by_code.entry(*code).or_insert(0) += 1;
    }
    println!(
        "HOSTILE: {} requests, expected codes {by_code:?}",
        cases.len()
    );
    for (op, payload, expected) in &cases {
        let r = caller.call(*op, payload.clone()).await;
        let shown: String = payload.to_string().chars().take(120).collect();
        assert_eq!(r["error"]["code"], *expected, "{op} {shown} -> {r}");
        assert!(!r["error"]["message"].as_str().unwrap_or("").is_empty());
    }

    assert_eq!(
        common::creates_since(&docker, &s.worker.runner_name, since).await,
        0,
        "no container was created for an invalid request"
    );

    // Envelopes that cannot be answered are skipped with a log line; the
    // worker goes on answering.
    caller
        .publish_as(Run, "bad\u{1}correlation", run(json!({})))
        .await;
    caller
        .publish_as(Run, &"c".repeat(300), run(json!({})))
        .await;
    let ok = caller
        .call(Run, run(json!({"command": ["sh", "-c", "echo alive"]})))
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["stdout"], "alive\n");

    assert!(!worker.handle.is_finished(), "the worker is still running");
    let left = common::no_containers_left(&docker, &s.worker.runner_name).await;
    assert!(left.is_empty(), "no container may remain: {left:?}");
    assert_eq!(
        common::creates_since(&docker, &s.worker.runner_name, since).await,
        1,
        "only the valid run created one"
    );
    worker.stop().await.unwrap();
}
