//! Payload decoding: every operation decodes from a realistic payload,
//! wrong types name their field, privilege fields and non-object shapes
//! are caught.

use std::collections::BTreeMap;

use bus_docker_domain::error::FieldError;
use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ids::{CorrelationId, ImageRef, OwnerId, ProfileName, RunId};
use bus_docker_domain::mount::RequestedMount;
use bus_docker_domain::request::{Inbound, Request, RunRequest};
use bus_docker_events::codec::{decode, Decoded, RawInbound};
use serde_json::{json, Value};

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
        "stream_output": true,
        "some_future_field": {"ignored": [1, 2, 3]}
    }));
    assert!(run.stream_output);
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
    assert!(!run.stream_output, "no live output unless asked");
    assert_eq!(run.timeout_seconds, None);
    assert!(run.env.is_empty() && run.mounts.is_empty() && run.labels.is_empty());

    // null payload counts as {}; null fields and blank ids count as absent.
    assert_eq!(run_request(Value::Null), RunRequest::default());
    let run = run_request(json!({
        "run_id": "", "owner_identity_id": "", "profile": null, "image": "alpine",
        "command": null, "env": null, "mounts": null, "interactive": null,
        "timeout_seconds": null, "labels": null, "stream_output": null
    }));
    assert!(!run.stream_output);
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

#[test]
fn privilege_fields_are_handed_on_in_every_spelling_whatever_the_value() {
    for (key, value) in [
        ("privileged", json!(false)),
        ("privileged", Value::Null),
        ("cap_add", json!(["SYS_ADMIN"])),
        ("capAdd", json!([])),
        ("CapAdd", json!(null)),
        ("HostConfig", json!({"Privileged": true})),
        ("pid_mode", json!("host")),
        ("security_opt", json!(["seccomp=unconfined"])),
        ("devices", json!(["/dev/sda"])),
        ("user", json!("0:0")),
        ("network_mode", json!("host")),
    ] {
        let run = run_request(json!({"image": "alpine", "command": ["true"], key: value}));
        assert_eq!(run.privilege_fields, vec![key.to_owned()], "{key}");
    }
    let run = run_request(json!({"image": "alpine", "command": ["true"]}));
    assert!(run.privilege_fields.is_empty());
}

#[test]
fn mount_privilege_fields_are_named_with_their_index() {
    let run = run_request(json!({
        "image": "alpine",
        "mounts": [
            {"source": "/a", "target": "/a"},
            {"source": "/b", "target": "/b", "propagation": "rshared", "Type": "volume"}
        ]
    }));
    assert_eq!(
        run.privilege_fields,
        vec![
            "mounts[1].Type".to_owned(),
            "mounts[1].propagation".to_owned()
        ]
    );
}

#[test]
fn a_mount_given_as_an_array_is_not_read_positionally() {
    let err = field_error(
        "run",
        json!({"image": "alpine", "mounts": [["/srv/a", "/x", false]]}),
    );
    assert_eq!(err.field(), "mounts[0]");
    assert!(err.message().contains("array"), "{}", err.message());
}

#[test]
fn images_follow_dockers_grammar_at_the_boundary() {
    for bad in [
        "Alpine".to_owned(),
        "alpine@sha256:abc".to_owned(),
        "alpine:-bad".to_owned(),
        "a".repeat(300),
    ] {
        assert_eq!(
            refused_field("run", json!({"image": bad})),
            "image",
            "{bad}"
        );
    }
}

#[test]
fn stream_output_must_be_a_boolean() {
    let err = field_error(
        "run",
        json!({"image": "alpine", "command": ["true"], "stream_output": "yes"}),
    );
    assert_eq!(err.field(), "stream_output");
}

/// v3 §4: every network form decodes (whether it is allowed is policy's
/// answer, `forbidden` for namespace-sharing forms, never `bad_request`);
/// an empty one is unset.
#[test]
fn network_forms_decode_and_empty_is_unset() {
    for name in [
        "none",
        "default",
        "bridge",
        "bus_stack-net",
        "host",
        "container:4f2a9c",
    ] {
        let run =
            run_request(json!({"image": "alpine:3.20", "command": ["true"], "network": name}));
        assert_eq!(run.network.as_ref().map(|n| n.as_str()), Some(name));
    }
    let run = run_request(json!({"image": "alpine:3.20", "command": ["true"], "network": ""}));
    assert_eq!(run.network, None);
    assert_eq!(
        refused_field("run", json!({"network": "container:"})),
        "network"
    );
}
