//! Payload codec: every operation decodes from a realistic payload, wrong
//! types name their field, and every response encodes to the shape of
//! contract §3/§4.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus_docker_domain::error::{ErrorCode, FieldError, OperationError};
use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ids::{CorrelationId, ImageRef, OwnerId, ProfileName, RunId};
use bus_docker_domain::mount::RequestedMount;
use bus_docker_domain::request::{Inbound, Request, RunRequest};
use bus_docker_domain::response::{Failure, Reply, Response};
use bus_docker_domain::run::{
    CapturedOutput, EngineInfo, ProfileImage, RunReport, RunState, RunStatus, RunSummary,
    RunnerReport, RunnerState, RuntimeDetails,
};
use bus_docker_events::codec::{
    decode, encode, Decoded, Encoded, RawInbound, STREAM_HEADROOM_BYTES,
};
use serde_json::{json, Value};

const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

fn prefix() -> EventPrefix {
    EventPrefix::parse("bus.docker").unwrap()
}

fn decode_with(
    name: &str,
    correlation: Option<&str>,
    owner: Option<&str>,
    payload: &Value,
) -> Decoded {
    decode(
        &prefix(),
        RawInbound {
            name,
            correlation_id: correlation,
            stamped_owner: owner,
            payload,
        },
    )
}

fn inbound(op: &str, payload: Value) -> Inbound {
    match decode_with(
        &format!("bus.docker.{op}.request"),
        Some("c-1"),
        None,
        &payload,
    ) {
        Decoded::Request(inbound) => inbound,
        Decoded::Skip(reason) => panic!("skipped: {reason}"),
    }
}

fn request(op: &str, payload: Value) -> Request {
    inbound(op, payload).request.expect("payload should decode")
}

fn run_request(payload: Value) -> RunRequest {
    match request("run", payload) {
        Request::Run(run) => *run,
        other => panic!("expected a run request, got {other:?}"),
    }
}

fn field_error(op: &str, payload: Value) -> FieldError {
    inbound(op, payload)
        .request
        .expect_err("payload should be refused")
}

fn refused_field(op: &str, payload: Value) -> String {
    field_error(op, payload).field().to_owned()
}

fn skip_reason(decoded: Decoded) -> String {
    match decoded {
        Decoded::Skip(reason) => reason,
        Decoded::Request(inbound) => panic!("expected a skip, got {inbound:?}"),
    }
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

#[test]
fn run_request_decodes_every_field() {
    let run = run_request(json!({
        "run_id": "build-42",
        "owner_identity_id": "user-7",
        "profile": "codex",
        "image": "docker.io/library/alpine:3.20",
        "command": ["sh", "-c", "printf OK"],
        "workdir": "/workspace/bus-dev",
        "env": {"KEY": "value", "OTHER": ""},
        "mounts": [
            {"source": "/host/path", "target": "/workspace", "read_only": true},
            {"source": "/host/cache", "target": "/cache"}
        ],
        "network": "none",
        "stdin": "hello\n",
        "interactive": true,
        "timeout_seconds": 300,
        "labels": {"bus.task.ref": "T-1"},
        "some_future_field": {"ignored": [1, 2, 3]}
    }));
    assert_eq!(run.run_id, Some(RunId::parse("build-42").unwrap()));
    assert_eq!(run.owner, Some(OwnerId::parse("user-7").unwrap()));
    assert_eq!(run.profile, Some(ProfileName::parse("codex").unwrap()));
    assert_eq!(
        run.image,
        Some(ImageRef::parse("docker.io/library/alpine:3.20").unwrap())
    );
    assert_eq!(
        run.command,
        Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "printf OK".to_owned()
        ])
    );
    assert_eq!(run.workdir.as_deref(), Some("/workspace/bus-dev"));
    assert_eq!(
        run.env,
        BTreeMap::from([
            ("KEY".to_owned(), "value".to_owned()),
            ("OTHER".to_owned(), String::new())
        ])
    );
    assert_eq!(
        run.mounts,
        vec![
            RequestedMount {
                source: "/host/path".into(),
                target: "/workspace".into(),
                read_only: true
            },
            RequestedMount {
                source: "/host/cache".into(),
                target: "/cache".into(),
                read_only: false
            },
        ]
    );
    assert_eq!(run.network.as_ref().map(|n| n.as_str()), Some("none"));
    assert_eq!(run.stdin.as_deref(), Some("hello\n"));
    assert!(run.interactive);
    assert_eq!(run.timeout_seconds, Some(300));
    assert_eq!(
        run.labels,
        BTreeMap::from([("bus.task.ref".to_owned(), "T-1".to_owned())])
    );
}

#[test]
fn minimal_and_empty_run_requests_use_defaults() {
    let run = run_request(json!({"image": "alpine", "command": ["true"]}));
    assert_eq!(run.run_id, None);
    assert_eq!(run.owner, None);
    assert!(!run.interactive);
    assert_eq!(run.timeout_seconds, None);
    assert!(run.env.is_empty() && run.mounts.is_empty() && run.labels.is_empty());

    // null payload counts as {}; null fields and blank ids count as absent.
    assert_eq!(run_request(Value::Null), RunRequest::default());
    let run = run_request(json!({
        "run_id": "", "owner_identity_id": "", "profile": null, "image": "alpine",
        "command": null, "env": null, "mounts": null, "interactive": null,
        "timeout_seconds": null, "labels": null
    }));
    assert_eq!(run.run_id, None);
    assert_eq!(run.owner, None);
    assert_eq!(run.command, None);
    assert_eq!(run.timeout_seconds, None);
}

#[test]
fn run_request_accepts_compat_spellings() {
    let run = run_request(json!({"image": "alpine", "args": ["echo", "hi"]}));
    assert_eq!(run.command, Some(vec!["echo".to_owned(), "hi".to_owned()]));
    let same = run_request(json!({"image": "alpine", "command": ["a"], "args": ["a"]}));
    assert_eq!(same.command, Some(vec!["a".to_owned()]));

    let run = run_request(json!({"mounts": [
        {"source": "/a", "target": "/a", "readonly": true},
        {"source": "/b", "target": "/b", "readOnly": true},
        {"source": "/c", "target": "/c", "read_only": true, "readOnly": true},
        {"source": "/d", "target": "/d", "readOnly": false}
    ]}));
    let modes: Vec<bool> = run.mounts.iter().map(|m| m.read_only).collect();
    assert_eq!(modes, [true, true, true, false]);
}

#[test]
fn owner_spellings_are_accepted_in_order() {
    for (field, value) in [
        ("owner_identity_id", "id-1"),
        ("owner_account_id", "acct-1"),
        ("identity_id", "id-2"),
        ("account_id", "acct-2"),
    ] {
        let run = run_request(json!({ field: value }));
        assert_eq!(run.owner.unwrap().as_str(), value, "{field}");
    }
    let run = run_request(json!({
        "account_id": "last", "identity_id": "third",
        "owner_account_id": "second", "owner_identity_id": "first"
    }));
    assert_eq!(run.owner.unwrap().as_str(), "first");
    let run = run_request(json!({"owner_identity_id": "  ", "account_id": "fallback"}));
    assert_eq!(run.owner.unwrap().as_str(), "fallback");

    let err = field_error("run", json!({"owner_account_id": "bad\u{1}owner"}));
    assert_eq!(err.field(), "owner_account_id");
}

#[test]
fn stamped_owner_is_handed_on_for_the_fallback() {
    let payload = json!({"run_id": "r1"});
    let Decoded::Request(inbound) = decode_with(
        "bus.docker.delete.request",
        Some("c-9"),
        Some("stamped-1"),
        &payload,
    ) else {
        panic!("expected a request");
    };
    assert_eq!(
        inbound.stamped_owner,
        Some(OwnerId::parse("stamped-1").unwrap())
    );
    assert_eq!(inbound.correlation, CorrelationId::parse("c-9").unwrap());
    match inbound.request.unwrap() {
        Request::Delete(d) => assert_eq!(d.owner, None),
        other => panic!("{other:?}"),
    }

    // The payload's owner is kept apart from the stamped one.
    let payload = json!({"owner_identity_id": "payload-owner"});
    let Decoded::Request(inbound) = decode_with(
        "bus.docker.status.request",
        Some("c"),
        Some("stamped"),
        &payload,
    ) else {
        panic!("expected a request");
    };
    assert_eq!(inbound.stamped_owner.unwrap().as_str(), "stamped");
    match inbound.request.unwrap() {
        Request::Status(q) => assert_eq!(q.owner.unwrap().as_str(), "payload-owner"),
        other => panic!("{other:?}"),
    }

    // An invalid or blank stamped owner is ignored, not fatal.
    for bad in ["bad\nowner", " ", ""] {
        let Decoded::Request(inbound) = decode_with(
            "bus.docker.runner.status.request",
            Some("c"),
            Some(bad),
            &Value::Null,
        ) else {
            panic!("expected a request");
        };
        assert_eq!(inbound.stamped_owner, None, "{bad:?}");
        assert_eq!(inbound.request, Ok(Request::RunnerStatus));
    }
}

#[test]
fn status_input_delete_and_runner_requests_decode() {
    match request("status", json!({"owner_identity_id": "u1", "run_id": "r1"})) {
        Request::Status(q) => {
            assert_eq!(q.owner.unwrap().as_str(), "u1");
            assert_eq!(q.run_id.unwrap().as_str(), "r1");
        }
        other => panic!("{other:?}"),
    }
    match request("status", json!({})) {
        Request::Status(q) => assert!(q.owner.is_none() && q.run_id.is_none()),
        other => panic!("{other:?}"),
    }

    match request(
        "input",
        json!({"run_id": "r1", "identity_id": "u1", "data": "text", "eof": true}),
    ) {
        Request::Input(i) => {
            assert_eq!(i.run_id.as_str(), "r1");
            assert_eq!(i.owner.unwrap().as_str(), "u1");
            assert_eq!(i.data, "text");
            assert!(i.eof);
        }
        other => panic!("{other:?}"),
    }
    match request("input", json!({"run_id": "r1"})) {
        Request::Input(i) => assert!(i.data.is_empty() && !i.eof),
        other => panic!("{other:?}"),
    }

    match request("delete", json!({"run_id": "r1", "owner_identity_id": "u1"})) {
        Request::Delete(d) => {
            assert_eq!(d.run_id.as_str(), "r1");
            assert_eq!(d.owner.unwrap().as_str(), "u1");
        }
        other => panic!("{other:?}"),
    }

    let any = json!({"whatever": [1, {"x": null}]});
    assert_eq!(request("runner.status", any.clone()), Request::RunnerStatus);
    assert_eq!(request("runner.start", Value::Null), Request::RunnerStart);
    assert_eq!(request("runner.delete", any), Request::RunnerDelete);
}

#[test]
fn every_operation_is_recognised_under_its_name() {
    for op in Operation::ALL {
        let name = prefix().request_name(op);
        let payload = json!({"run_id": "r1"});
        match decode_with(&name, Some("c"), None, &payload) {
            Decoded::Request(inbound) => {
                assert_eq!(inbound.operation, op);
                assert_eq!(inbound.request.unwrap().operation(), op);
            }
            Decoded::Skip(reason) => panic!("{name}: {reason}"),
        }
    }
}

#[test]
fn wrong_types_name_the_field() {
    let cases = [
        (json!({"command": "sh -c true"}), "command"),
        (json!({"command": ["sh", 1]}), "command[1]"),
        (json!({"args": ["sh", null]}), "args[1]"),
        (json!({"env": {"X": 1}}), "env.X"),
        (json!({"env": ["X=1"]}), "env"),
        (json!({"labels": {"a.b": true}}), "labels.a.b"),
        (json!({"timeout_seconds": -1}), "timeout_seconds"),
        (json!({"timeout_seconds": 1.5}), "timeout_seconds"),
        (json!({"timeout_seconds": "10"}), "timeout_seconds"),
        (json!({"timeout_seconds": 1e30}), "timeout_seconds"),
        (json!({"interactive": "yes"}), "interactive"),
        (json!({"mounts": [{"target": "/w"}]}), "mounts[0].source"),
        (
            json!({"mounts": [{"source": "/a", "target": "/a"}, {"source": "/b"}]}),
            "mounts[1].target",
        ),
        (
            json!({"mounts": [{"source": "/a", "target": "/a", "read_only": "yes"}]}),
            "mounts[0].read_only",
        ),
        (json!({"mounts": {"source": "/a"}}), "mounts"),
        (json!({"image": 5}), "image"),
        (json!({"stdin": ["a"]}), "stdin"),
        (json!({"owner_identity_id": 7}), "owner_identity_id"),
    ];
    for (payload, field) in cases {
        assert_eq!(refused_field("run", payload.clone()), field, "{payload}");
    }
}

#[test]
fn type_errors_have_short_messages() {
    let err = field_error("run", json!({"command": ["sh", 1]}));
    assert_eq!(err.message(), "expected a string, found integer 1");
    let err = field_error("run", json!({"command": "sh"}));
    assert_eq!(err.message(), "expected an array, found a string");
    let err = field_error("run", json!({"timeout_seconds": -1}));
    assert_eq!(
        err.message(),
        "expected a non-negative integer, found integer -1"
    );
    let err = field_error("run", json!({"timeout_seconds": 1.5}));
    assert_eq!(
        err.message(),
        "expected a non-negative integer, found floating point 1.5"
    );
    let err = field_error("run", json!({"mounts": [{"target": "/w"}]}));
    assert_eq!(err.message(), "is required");
    let err = field_error("run", json!({"mounts": [{"source": null, "target": "/w"}]}));
    assert_eq!(
        err.to_string(),
        "mounts[0].source: expected a string, found null"
    );
    let err = field_error("run", json!({"mounts": [3]}));
    assert_eq!(
        err.to_string(),
        "mounts[0]: expected an object, found integer 3"
    );
    let err = field_error("run", json!({"interactive": "yes"}));
    assert!(err.message().starts_with("expected a boolean"), "{err}");
    // A long string value is not echoed back.
    let err = field_error("run", json!({"interactive": "x".repeat(10_000)}));
    assert!(err.message().len() < 100, "{err}");
}

#[test]
fn huge_numbers_are_field_errors_not_panics() {
    let parsed: Value = serde_json::from_str(
        r#"{"timeout_seconds": 123456789012345678901234567890, "command": ["a"]}"#,
    )
    .unwrap();
    assert_eq!(refused_field("run", parsed), "timeout_seconds");
    let parsed: Value =
        serde_json::from_str(r#"{"timeout_seconds": 18446744073709551615}"#).unwrap();
    assert_eq!(run_request(parsed).timeout_seconds, Some(u64::MAX));
    assert_eq!(
        run_request(json!({"timeout_seconds": 0})).timeout_seconds,
        Some(0)
    );
}

#[test]
fn command_and_args_must_agree() {
    let err = field_error("run", json!({"command": ["a"], "args": ["b"]}));
    assert_eq!(err.field(), "command");
    let err = field_error(
        "run",
        json!({"mounts": [{"source": "/a", "target": "/a", "read_only": true, "readonly": false}]}),
    );
    assert_eq!(err.field(), "mounts[0].read_only");
}

#[test]
fn ids_are_checked_by_the_domain_constructors() {
    assert_eq!(refused_field("run", json!({"run_id": "a/b"})), "run_id");
    assert_eq!(refused_field("run", json!({"run_id": "x\u{7}"})), "run_id");
    assert_eq!(
        refused_field("run", json!({"profile": "../etc"})),
        "profile"
    );
    assert_eq!(
        refused_field("run", json!({"image": "alpine latest"})),
        "image"
    );
    assert_eq!(refused_field("run", json!({"network": "a b"})), "network");
    assert_eq!(refused_field("status", json!({"run_id": "a/b"})), "run_id");
    assert_eq!(refused_field("input", json!({"run_id": "a/b"})), "run_id");
    assert_eq!(refused_field("delete", json!({"run_id": "../x"})), "run_id");
}

#[test]
fn input_and_delete_need_a_run_id() {
    for op in ["input", "delete"] {
        for payload in [
            json!({}),
            json!({"run_id": ""}),
            json!({"run_id": null}),
            Value::Null,
        ] {
            let err = field_error(op, payload.clone());
            assert_eq!(err.field(), "run_id", "{op} {payload}");
            assert_eq!(err.message(), "is required");
        }
    }
}

#[test]
fn input_data_is_limited_to_one_mebibyte() {
    let ok = "a".repeat(1024 * 1024);
    assert!(matches!(
        request("input", json!({"run_id": "r", "data": ok})),
        Request::Input(_)
    ));
    let big = "a".repeat(1024 * 1024 + 1);
    assert_eq!(
        refused_field("input", json!({"run_id": "r", "data": big})),
        "data"
    );
    assert_eq!(
        refused_field("input", json!({"run_id": "r", "data": 5})),
        "data"
    );
    assert_eq!(
        refused_field("input", json!({"run_id": "r", "eof": "true"})),
        "eof"
    );
}

#[test]
fn non_object_payloads_are_refused_as_payload() {
    for op in ["run", "status", "input", "delete", "runner.status"] {
        for payload in [json!([1, 2]), json!("text"), json!(3), json!(true)] {
            let err = field_error(op, payload.clone());
            assert_eq!(err.field(), "payload", "{op} {payload}");
        }
    }
    let err = field_error("run", json!([]));
    assert_eq!(err.message(), "must be a JSON object, found an array");
}

#[test]
fn names_that_are_not_ours_are_skipped() {
    let payload = json!({});
    for name in [
        "bus.containers.run.request",
        "bus.docker.run.response",
        "bus.docker.run",
        "bus.docker.unknown.request",
        "",
        "bus.docker.runner.request",
    ] {
        let reason = skip_reason(decode_with(name, Some("c"), None, &payload));
        assert!(reason.contains("not a request event"), "{name}: {reason}");
    }
}

#[test]
fn unanswerable_correlation_ids_are_skipped() {
    let payload = json!({"image": "alpine"});
    for correlation in [None, Some(""), Some("   "), Some("c\u{1}1"), Some("c\n1")] {
        let reason = skip_reason(decode_with(
            "bus.docker.run.request",
            correlation,
            None,
            &payload,
        ));
        assert!(
            reason.contains("cannot be answered"),
            "{correlation:?}: {reason}"
        );
    }
    let long = "c".repeat(257);
    skip_reason(decode_with(
        "bus.docker.run.request",
        Some(&long),
        None,
        &payload,
    ));
}

#[test]
fn a_bad_payload_is_still_answerable() {
    let payload = json!({"command": 5});
    let Decoded::Request(inbound) =
        decode_with("bus.docker.run.request", Some("c-7"), None, &payload)
    else {
        panic!("a bad payload must still be answered");
    };
    assert_eq!(inbound.operation, Operation::Run);
    assert_eq!(inbound.correlation.as_str(), "c-7");
    assert_eq!(inbound.request.unwrap_err().field(), "command");
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

fn report() -> RunReport {
    RunReport {
        run_id: RunId::parse("run_1").unwrap(),
        owner: Some(OwnerId::parse("user-7").unwrap()),
        runner_name: "docker@host-a".into(),
        profile: Some(ProfileName::parse("codex").unwrap()),
        image: ImageRef::parse("docker.io/library/alpine:3.20").unwrap(),
        image_id: Some("sha256:abc".into()),
        args: vec!["sh".into(), "-c".into(), "printf OK".into()],
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        stdout: CapturedOutput {
            text: "OK".into(),
            total_bytes: 2,
            truncated: false,
        },
        stderr: CapturedOutput::default(),
        started_at: Some(at(1_714_564_800, 5)),
        finished_at: Some(at(1_714_564_800, 417)),
        duration: Some(Duration::from_millis(412)),
        runtime: RuntimeDetails {
            provider: "docker".into(),
            engine_version: Some("27.0.3".into()),
            container_id: Some("0123abcd".into()),
            container_name: Some("bus-run-run_1".into()),
        },
    }
}

fn response(op: Operation, reply: Option<Reply>, error: Option<Failure>) -> Response {
    Response {
        operation: op,
        event: prefix().response_name(op),
        correlation: CorrelationId::parse("c-1").unwrap(),
        reply,
        error,
    }
}

fn encoded(op: Operation, reply: Reply) -> Encoded {
    let e = encode(&response(op, Some(reply), None), MAX_EVENT_BYTES);
    assert_eq!(e.name, prefix().response_name(op));
    assert_eq!(e.correlation_id, "c-1");
    assert_eq!(e.error, None);
    e
}

fn runner_report(state: RunnerState, problem: Option<&str>) -> RunnerReport {
    RunnerReport {
        state,
        provider: "docker".into(),
        engine: Some(EngineInfo {
            engine_version: "27.0.3".into(),
            api_version: "1.46".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            ..EngineInfo::default()
        }),
        problem: problem.map(str::to_owned),
        active_runs: 1,
        queued_runs: 2,
        max_concurrent_runs: 4,
        max_queued_runs: 16,
        profiles: BTreeMap::from([(
            "codex".to_owned(),
            ProfileImage {
                image: "codex:latest".into(),
                present: true,
            },
        )]),
    }
}

fn details_json(problem: Option<&str>) -> Value {
    let mut details = json!({
        "engine_version": "27.0.3", "api_version": "1.46", "os": "linux", "arch": "x86_64",
        "active_runs": 1, "queued_runs": 2, "max_concurrent_runs": 4, "max_queued_runs": 16,
        "profiles": {"codex": {"image": "codex:latest", "present": true}}
    });
    if let Some(problem) = problem {
        details["problem"] = json!(problem);
    }
    details
}

fn run_report_json() -> Value {
    json!({
        "run_id": "run_1",
        "owner_identity_id": "user-7",
        "owner_account_id": "user-7",
        "runner_name": "docker@host-a",
        "profile": "codex",
        "image": "docker.io/library/alpine:3.20",
        "image_id": "sha256:abc",
        "args": ["sh", "-c", "printf OK"],
        "status": "succeeded",
        "exit_code": 0,
        "stdout": "OK",
        "stderr": "",
        "stdout_truncated": false,
        "stderr_truncated": false,
        "stdout_bytes": 2,
        "stderr_bytes": 0,
        "started_at": "2024-05-01T12:00:00.005Z",
        "finished_at": "2024-05-01T12:00:00.417Z",
        "duration_ms": 412,
        "runtime": {
            "provider": "docker",
            "engine_version": "27.0.3",
            "container_id": "0123abcd",
            "container_name": "bus-run-run_1"
        }
    })
}

#[test]
fn run_response_has_the_documented_shape() {
    let e = encoded(Operation::Run, Reply::Run(Box::new(report())));
    assert_eq!(e.name, "bus.docker.run.response");
    assert_eq!(e.payload, run_report_json());
}

#[test]
fn run_response_without_optional_parts_uses_nulls() {
    let mut r = report();
    r.owner = None;
    r.profile = None;
    r.image_id = None;
    r.exit_code = None;
    r.started_at = None;
    r.finished_at = None;
    r.duration = None;
    r.status = RunStatus::Error;
    r.runtime = RuntimeDetails {
        provider: "docker".into(),
        ..RuntimeDetails::default()
    };
    let p = encoded(Operation::Run, Reply::Run(Box::new(r))).payload;
    for key in [
        "owner_identity_id",
        "owner_account_id",
        "profile",
        "image_id",
        "exit_code",
        "started_at",
        "finished_at",
        "duration_ms",
    ] {
        assert_eq!(p[key], Value::Null, "{key}");
    }
    assert_eq!(p["status"], "error");
    assert_eq!(
        p["runtime"],
        json!({"provider": "docker", "engine_version": null, "container_id": null, "container_name": null})
    );

    // duration_ms falls back to the timestamps when no duration was given.
    let mut r = report();
    r.duration = None;
    r.status = RunStatus::Failed;
    r.exit_code = Some(3);
    let p = encoded(Operation::Run, Reply::Run(Box::new(r))).payload;
    assert_eq!(p["duration_ms"], 412);
    assert_eq!(p["status"], "failed");
    assert_eq!(p["exit_code"], 3);
}

#[test]
fn status_response_lists_items() {
    let items = vec![
        RunSummary {
            run_id: RunId::parse("run_1").unwrap(),
            state: RunState::Running,
            owner: Some(OwnerId::parse("user-7").unwrap()),
            image: Some("alpine:3.20".into()),
            profile: Some("codex".into()),
            container_id: Some("0123abcd".into()),
            started_at: Some(at(1_714_564_800, 120)),
        },
        RunSummary {
            run_id: RunId::parse("run_2").unwrap(),
            state: RunState::Queued,
            owner: None,
            image: None,
            profile: None,
            container_id: None,
            started_at: None,
        },
    ];
    let e = encoded(Operation::Status, Reply::Status(items));
    assert_eq!(
        e.payload,
        json!({"items": [
            {"id": "run_1", "state": "running",
             "owner_identity_id": "user-7", "owner_account_id": "user-7",
             "details": {"image": "alpine:3.20", "profile": "codex",
                         "container_id": "0123abcd", "started_at": "2024-05-01T12:00:00.120Z"}},
            {"id": "run_2", "state": "queued",
             "owner_identity_id": null, "owner_account_id": null,
             "details": {"image": null, "profile": null, "container_id": null, "started_at": null}}
        ]})
    );
    let empty = encoded(Operation::Status, Reply::Status(Vec::new()));
    assert_eq!(empty.payload, json!({"items": []}));
}

#[test]
fn input_and_delete_responses() {
    let e = encoded(
        Operation::Input,
        Reply::Input {
            run_id: RunId::parse("run_1").unwrap(),
            bytes: 5,
        },
    );
    assert_eq!(
        e.payload,
        json!({"accepted": true, "run_id": "run_1", "bytes": 5})
    );

    let e = encoded(
        Operation::Delete,
        Reply::Delete {
            run_id: RunId::parse("run_1").unwrap(),
            owner: Some(OwnerId::parse("user-7").unwrap()),
        },
    );
    assert_eq!(
        e.payload,
        json!({"deleted": true, "run_id": "run_1",
               "owner_identity_id": "user-7", "owner_account_id": "user-7"})
    );
}

#[test]
fn runner_responses() {
    let e = encoded(
        Operation::RunnerStatus,
        Reply::RunnerStatus(Box::new(runner_report(RunnerState::Ready, None))),
    );
    assert_eq!(
        e.payload,
        json!({"status": {"state": "ready", "provider": "docker", "details": details_json(None)}})
    );

    let e = encoded(
        Operation::RunnerStatus,
        Reply::RunnerStatus(Box::new(runner_report(
            RunnerState::Degraded,
            Some("image codex:latest is missing"),
        ))),
    );
    assert_eq!(e.payload["status"]["state"], "degraded");
    assert_eq!(
        e.payload["status"]["details"],
        details_json(Some("image codex:latest is missing"))
    );

    let mut no_engine = runner_report(RunnerState::Unavailable, Some("engine unreachable"));
    no_engine.engine = None;
    let e = encoded(
        Operation::RunnerStart,
        Reply::RunnerStart(Box::new(no_engine)),
    );
    assert_eq!(e.payload["accepted"], true);
    assert_eq!(e.payload["action"], "start");
    let details = &e.payload["details"];
    for key in ["engine_version", "api_version", "os", "arch"] {
        assert_eq!(details[key], Value::Null, "{key}");
    }
    assert_eq!(details["problem"], "engine unreachable");

    let e = encoded(
        Operation::RunnerStart,
        Reply::RunnerStart(Box::new(runner_report(RunnerState::Ready, None))),
    );
    assert_eq!(
        e.payload,
        json!({"accepted": true, "action": "start", "details": details_json(None)})
    );

    let e = encoded(
        Operation::RunnerDelete,
        Reply::RunnerDelete {
            removed_containers: 3,
        },
    );
    assert_eq!(e.payload, json!({"deleted": true, "removed_containers": 3}));
}

#[test]
fn a_timed_out_run_reports_its_output_and_the_error() {
    let mut r = report();
    r.status = RunStatus::TimedOut;
    r.exit_code = Some(137);
    let failure = Failure::from(&OperationError::Timeout(300));
    let e = encode(
        &response(Operation::Run, Some(Reply::Run(Box::new(r))), Some(failure)),
        MAX_EVENT_BYTES,
    );
    let error = json!({"code": "timeout", "message": "run timed out after 300 s and was killed"});
    assert_eq!(e.error, Some(error.clone()));
    assert_eq!(e.payload["error"], error);
    assert_eq!(e.payload["status"], "timed_out");
    assert_eq!(e.payload["exit_code"], 137);
    assert_eq!(e.payload["stdout"], "OK");
    assert_eq!(e.payload["owner_account_id"], "user-7");
    let mut expected = run_report_json();
    expected["status"] = json!("timed_out");
    expected["exit_code"] = json!(137);
    expected["error"] = error;
    assert_eq!(e.payload, expected);
}

#[test]
fn a_failure_without_a_reply_carries_only_the_error() {
    let err = OperationError::NotFound("run_9".into());
    let r = Response::failure(
        Operation::Delete,
        prefix().response_name(Operation::Delete),
        CorrelationId::parse("c-2").unwrap(),
        &err,
    );
    let e = encode(&r, MAX_EVENT_BYTES);
    assert_eq!(e.name, "bus.docker.delete.response");
    assert_eq!(e.correlation_id, "c-2");
    let error = json!({"code": "not_found", "message": "run not found: run_9"});
    assert_eq!(e.error, Some(error.clone()));
    assert_eq!(e.payload, json!({"error": error}));

    let bad = Response::failure(
        Operation::Run,
        prefix().response_name(Operation::Run),
        CorrelationId::parse("c-3").unwrap(),
        &OperationError::InvalidSpec(FieldError::new("command[1]", "expected a string")),
    );
    let e = encode(&bad, MAX_EVENT_BYTES);
    assert_eq!(e.payload["error"]["code"], "bad_request");
    assert_eq!(
        e.error.as_ref().unwrap()["code"],
        ErrorCode::BadRequest.as_str()
    );
    assert!(e.payload["error"]["message"]
        .as_str()
        .unwrap()
        .contains("command[1]"));
}

#[test]
fn a_failure_next_to_a_non_run_reply_keeps_the_reply() {
    let r = response(
        Operation::RunnerStart,
        Some(Reply::RunnerStart(Box::new(runner_report(
            RunnerState::Unavailable,
            Some("engine unreachable"),
        )))),
        Some(Failure {
            code: ErrorCode::RuntimeUnavailable,
            message: "docker engine unavailable".into(),
        }),
    );
    let e = encode(&r, MAX_EVENT_BYTES);
    assert_eq!(e.payload["action"], "start");
    assert_eq!(e.payload["error"]["code"], "runtime_unavailable");
    assert_eq!(e.error, Some(e.payload["error"].clone()));
}

#[test]
fn wire_len_is_the_serialised_envelope() {
    let e = encoded(Operation::Run, Reply::Run(Box::new(report())));
    let wire = json!({
        "name": e.name, "correlationId": e.correlation_id,
        "correlation_id": e.correlation_id, "payload": e.payload,
    });
    assert_eq!(e.wire_len(), serde_json::to_vec(&wire).unwrap().len());
}

#[test]
fn control_byte_output_is_shrunk_to_fit_the_event_limit() {
    let mut r = report();
    let mib = 1024 * 1024;
    r.stdout = CapturedOutput {
        text: "\u{1}".repeat(mib),
        total_bytes: 5 * mib as u64,
        truncated: true,
    };
    r.stderr = CapturedOutput {
        text: "\u{1}".repeat(mib),
        total_bytes: mib as u64,
        truncated: false,
    };
    let failure = Failure::from(&OperationError::Timeout(10));
    let e = encode(
        &response(Operation::Run, Some(Reply::Run(Box::new(r))), Some(failure)),
        MAX_EVENT_BYTES,
    );
    let wire_len = e.wire_len();
    assert!(
        wire_len <= MAX_EVENT_BYTES - STREAM_HEADROOM_BYTES,
        "{wire_len} bytes"
    );
    // It is not shrunk further than needed: the escaped tails fill the budget.
    assert!(
        wire_len > MAX_EVENT_BYTES - STREAM_HEADROOM_BYTES - 64,
        "{wire_len}"
    );

    let p = &e.payload;
    let stdout = p["stdout"].as_str().unwrap();
    let stderr = p["stderr"].as_str().unwrap();
    assert!(!stdout.is_empty() && stdout.len() < mib);
    assert!(!stderr.is_empty() && stderr.len() < mib);
    assert!(stdout.chars().all(|c| c == '\u{1}'));
    // Both streams get a fair share.
    assert!(stdout.len().abs_diff(stderr.len()) <= 1);
    assert_eq!(p["stdout_truncated"], true);
    assert_eq!(p["stderr_truncated"], true);
    // Counts stay the full counts, every other field stays.
    assert_eq!(p["stdout_bytes"], 5 * mib as u64);
    assert_eq!(p["stderr_bytes"], mib as u64);
    assert_eq!(p["args"], json!(["sh", "-c", "printf OK"]));
    assert_eq!(p["runtime"]["container_name"], "bus-run-run_1");
    assert_eq!(p["duration_ms"], 412);
    assert_eq!(p["error"]["code"], "timeout");
    assert_eq!(e.error.as_ref().unwrap()["code"], "timeout");
}

#[test]
fn a_small_stream_keeps_its_output_when_the_other_is_shrunk() {
    let mut r = report();
    r.stdout = CapturedOutput {
        text: "\"quoted\"\n".repeat(300_000),
        total_bytes: 2_700_000,
        truncated: false,
    };
    r.stderr = CapturedOutput {
        text: "warning: x\n".into(),
        total_bytes: 11,
        truncated: false,
    };
    let max = 1024 * 1024;
    let e = encode(
        &response(Operation::Run, Some(Reply::Run(Box::new(r))), None),
        max,
    );
    assert!(e.wire_len() <= max - STREAM_HEADROOM_BYTES);
    assert_eq!(e.payload["stderr"], "warning: x\n");
    assert_eq!(e.payload["stderr_truncated"], false);
    assert_eq!(e.payload["stdout_truncated"], true);
    assert!(e.payload["stdout"]
        .as_str()
        .unwrap()
        .ends_with("\"quoted\"\n"));
}

#[test]
fn output_that_fits_is_left_alone() {
    let mut r = report();
    r.stdout = CapturedOutput {
        text: "x".repeat(1024 * 1024),
        total_bytes: 1024 * 1024,
        truncated: false,
    };
    r.stderr = r.stdout.clone();
    let e = encoded(Operation::Run, Reply::Run(Box::new(r)));
    assert_eq!(e.payload["stdout"].as_str().unwrap().len(), 1024 * 1024);
    assert_eq!(e.payload["stderr_truncated"], false);
}
