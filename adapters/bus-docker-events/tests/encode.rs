//! Payload encoding: every response encodes to the shape of docs/protocol.md §3/§4
//! and the whole event stays under the size limit.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus_docker_domain::container::{EngineInfo, RequestMounts, SessionUsage};
use bus_docker_domain::error::{ErrorCode, FieldError, OperationError};
use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ids::{CorrelationId, ImageRef, OwnerId, ProfileName, RunId, SessionName};
use bus_docker_domain::network::NetworkPolicy;
use bus_docker_domain::output::CapturedOutput;
use bus_docker_domain::output::{OutputEvent, OutputStream};
use bus_docker_domain::response::{Failure, Reply, Response};
use bus_docker_domain::run::{
    Finished, RunReport, RunState, RunStatus, RunSummary, RuntimeDetails,
};
use bus_docker_domain::runner::{
    EngineReport, ProfileImage, RunnerReport, RunnerState, StreamReport, StreamState,
};
use bus_docker_events::codec::{
    encode, encode_minimal, encode_output, Encoded, STREAM_HEADROOM_BYTES,
};
use serde_json::{json, Value};

const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

fn prefix() -> EventPrefix {
    EventPrefix::parse("bus.docker").unwrap()
}

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
        oom_killed: false,
        runtime: RuntimeDetails {
            provider: "docker".into(),
            docker_host: Some("tcp://10.0.0.2:2376".into()),
            engine_version: Some("27.0.3".into()),
            container_id: Some("0123abcd".into()),
            container_name: Some("bus-run-run_1".into()),
        },
        session: None,
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
            request_mounts: RequestMounts::Pinned,
        }),
        problem: problem.map(str::to_owned),
        active_runs: 1,
        queued_runs: 2,
        max_concurrent_runs: 4,
        max_queued_runs: 16,
        intake_open: true,
        warm: Vec::new(),
        profiles: BTreeMap::from([(
            "codex".to_owned(),
            ProfileImage {
                image: "codex:latest".into(),
                present: true,
            },
        )]),
        engines: vec![
            EngineReport {
                docker_host: "unix:///var/run/docker.sock".into(),
                reachable: true,
                engine_version: Some("27.0.3".into()),
                active_runs: Some(1),
                sessions: Some(SessionUsage {
                    volumes: 3,
                    bytes: None,
                }),
                error: None,
            },
            EngineReport {
                docker_host: "tcp://10.0.0.2:2376".into(),
                reachable: false,
                engine_version: None,
                active_runs: None,
                sessions: None,
                error: Some("engine unreachable: connection refused".into()),
            },
        ],
        networks: NetworkPolicy::default(),
        streams: Vec::new(),
    }
}

fn details_json(problem: Option<&str>) -> Value {
    let mut details = json!({
        "engine_version": "27.0.3", "api_version": "1.46", "os": "linux", "arch": "x86_64",
        "active_runs": 1, "queued_runs": 2, "max_concurrent_runs": 4, "max_queued_runs": 16,
        "intake": "open",
        "profiles": {"codex": {"image": "codex:latest", "present": true}},
        "request_mounts": "pinned",
        "network_policy": {
            "mode": "permissive", "default_network": "default", "allowed_networks": null,
            "refused": ["host", "container:<id>", "<mode>:<target>"],
        },
        "engines": [
            {"docker_host": "unix:///var/run/docker.sock", "state": "up", "engine_version": "27.0.3",
             "active_runs": 1, "codex_sessions": {"volumes": 3, "bytes": null}, "error": null},
            {"docker_host": "tcp://10.0.0.2:2376", "state": "down", "engine_version": null,
             "active_runs": null, "codex_sessions": null, "error": "engine unreachable: connection refused"}
        ]
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
        "oom_killed": false,
        "runtime": {
            "provider": "docker",
            "docker_host": "tcp://10.0.0.2:2376",
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
fn a_run_response_echoes_its_session() {
    let mut r = report();
    r.session = Some(SessionName::parse("task-1").unwrap());
    let e = encoded(Operation::Run, Reply::Run(Box::new(r)));
    let mut want = run_report_json();
    want["session"] = json!("task-1");
    assert_eq!(e.payload, want);
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
        json!({"provider": "docker", "docker_host": null, "engine_version": null, "container_id": null, "container_name": null})
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
            finished: None,
        },
        RunSummary {
            run_id: RunId::parse("run_2").unwrap(),
            state: RunState::Queued,
            owner: None,
            image: None,
            profile: None,
            container_id: None,
            started_at: None,
            finished: None,
        },
        RunSummary {
            run_id: RunId::parse("run_3").unwrap(),
            state: RunState::Exited,
            owner: None,
            image: Some("alpine:3.20".into()),
            profile: None,
            container_id: Some("4567cdef".into()),
            started_at: Some(at(1_714_564_800, 120)),
            finished: Some(Finished {
                status: Some(RunStatus::Failed),
                exit_code: Some(3),
                finished_at: Some(at(1_714_564_801, 0)),
            }),
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
             "details": {"image": null, "profile": null, "container_id": null, "started_at": null}},
            {"id": "run_3", "state": "exited",
             "owner_identity_id": null, "owner_account_id": null,
             "details": {"image": "alpine:3.20", "profile": null, "container_id": "4567cdef",
                         "started_at": "2024-05-01T12:00:00.120Z", "status": "failed", "exit_code": 3,
                         "finished_at": "2024-05-01T12:00:01.000Z"}}
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

    let mut full = runner_report(RunnerState::Ready, None);
    full.intake_open = false;
    let e = encoded(Operation::RunnerStatus, Reply::RunnerStatus(Box::new(full)));
    assert_eq!(e.payload["status"]["details"]["intake"], "full");

    // docs/protocol.md §9: the request streams, a refused one with its scope.
    let mut streams = runner_report(RunnerState::Degraded, Some("streams refused"));
    streams.streams = vec![
        StreamReport {
            name: "bus.docker.status.request".into(),
            state: StreamState::Connected,
        },
        StreamReport {
            name: "bus.docker.run.request".into(),
            state: StreamState::Connecting,
        },
        StreamReport {
            name: "bus.docker.runner.status.request".into(),
            state: StreamState::Refused {
                scope: "container:admin".into(),
                message: "HTTP 403: the token lacks `container:admin`".into(),
            },
        },
    ];
    let e = encoded(
        Operation::RunnerStatus,
        Reply::RunnerStatus(Box::new(streams)),
    );
    assert_eq!(
        e.payload["status"]["details"]["streams"],
        json!([
            {"name": "bus.docker.status.request", "state": "connected"},
            {"name": "bus.docker.run.request", "state": "connecting"},
            {"name": "bus.docker.runner.status.request", "state": "refused",
             "missing_scope": "container:admin",
             "error": "HTTP 403: the token lacks `container:admin`"},
        ])
    );

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

/// A command line just under 4 MiB once escaped (1 MiB of control bytes
/// over 8 args, the most a request may carry) echoes back cut, flagged, and
/// the whole event stays under the limit.
#[test]
fn a_huge_command_line_is_cut_first_and_flagged() {
    let mut r = report();
    let arg = "\u{1}".repeat(100 * 1024);
    r.args = std::iter::once("sh".to_owned())
        .chain(std::iter::repeat_n(arg, 9))
        .collect();
    r.stdout = CapturedOutput {
        text: "tail of the output\n".into(),
        total_bytes: 19,
        truncated: false,
    };
    let e = encoded(Operation::Run, Reply::Run(Box::new(r.clone())));
    let len = e.wire_len();
    assert!(len <= MAX_EVENT_BYTES - STREAM_HEADROOM_BYTES, "{len}");
    assert_eq!(e.payload["args_truncated"], true);
    let args = e.payload["args"].as_array().unwrap();
    assert!(
        !args.is_empty() && args.len() < r.args.len(),
        "{}",
        args.len()
    );
    assert_eq!(args[0], "sh");
    // The output is left whole: the args paid for the room.
    assert_eq!(e.payload["stdout"], "tail of the output\n");
    assert_eq!(e.payload["stdout_truncated"], false);

    // Args and output both huge: args are cut to their floor, the output
    // takes what is left, and every flag says so.
    r.stdout = CapturedOutput {
        text: "\u{1}".repeat(1024 * 1024),
        total_bytes: 1024 * 1024,
        truncated: false,
    };
    r.stderr = r.stdout.clone();
    let e = encoded(Operation::Run, Reply::Run(Box::new(r)));
    assert!(e.wire_len() <= MAX_EVENT_BYTES - STREAM_HEADROOM_BYTES);
    assert_eq!(e.payload["args_truncated"], true);
    assert_eq!(e.payload["stdout_truncated"], true);
    assert_eq!(e.payload["stderr_truncated"], true);
    assert!(!e.payload["stdout"].as_str().unwrap().is_empty());
}

#[test]
fn args_that_fit_carry_no_flag() {
    let e = encoded(Operation::Run, Reply::Run(Box::new(report())));
    assert!(e.payload.get("args_truncated").is_none());
    let e = encode(
        &response(Operation::Run, Some(Reply::Run(Box::new(report()))), None),
        64 * 1024 + STREAM_HEADROOM_BYTES,
    );
    assert!(e.payload.get("args_truncated").is_none());
}

#[test]
fn a_small_budget_still_yields_a_bounded_run_response() {
    let mut r = report();
    r.args = vec!["x".repeat(100_000); 5];
    r.stdout = CapturedOutput {
        text: "o".repeat(300_000),
        total_bytes: 300_000,
        truncated: false,
    };
    let max = 256 * 1024;
    let e = encode(
        &response(Operation::Run, Some(Reply::Run(Box::new(r))), None),
        max,
    );
    assert!(
        e.wire_len() <= max - STREAM_HEADROOM_BYTES,
        "{}",
        e.wire_len()
    );
    assert_eq!(e.payload["args_truncated"], true);
    assert_eq!(e.payload["stdout_truncated"], true);
}

#[test]
fn error_messages_are_bounded() {
    let failure = Failure {
        code: ErrorCode::Forbidden,
        message: format!(
            "mounts[0].source: cannot resolve /{}",
            "é".repeat(3_000_000)
        ),
    };
    let e = encode(
        &response(Operation::Run, None, Some(failure)),
        MAX_EVENT_BYTES,
    );
    let message = e.error.as_ref().unwrap()["message"].as_str().unwrap();
    assert!(message.len() <= 4096, "{}", message.len());
    assert!(message.starts_with("mounts[0].source: cannot resolve /é"));
    assert!(message.ends_with('…'));
    assert!(e.wire_len() < 16 * 1024);
}

#[test]
fn the_minimal_response_keeps_the_correlation_and_the_run_facts() {
    let mut r = report();
    r.args = vec!["x".repeat(3_000_000)];
    let resp = response(Operation::Run, Some(Reply::Run(Box::new(r))), None);
    let e = encode_minimal(&resp, "too large (413)");
    assert_eq!(e.correlation_id, resp.correlation.as_str());
    assert_eq!(e.name, "bus.docker.run.response");
    assert_eq!(e.error.as_ref().unwrap()["code"], "internal");
    assert_eq!(e.payload["error"]["message"], "too large (413)");
    assert_eq!(e.payload["run_id"], "run_1");
    assert_eq!(e.payload["status"], "succeeded");
    assert_eq!(e.payload["duration_ms"], 412);
    assert_eq!(e.payload["owner_identity_id"], "user-7");
    assert!(e.payload.get("args").is_none());
    assert!(e.wire_len() < 2048);

    let timed_out = response(
        Operation::Run,
        None,
        Some(Failure::from(&OperationError::Timeout(10))),
    );
    let e = encode_minimal(&timed_out, "too large");
    assert_eq!(e.error.as_ref().unwrap()["code"], "timeout");
    assert!(e.payload["error"]["message"]
        .as_str()
        .unwrap()
        .ends_with("; too large"));
}

#[test]
fn live_output_events_carry_the_run_request_correlation_and_their_chunk() {
    let mut output = OutputEvent {
        event: prefix().output_name(),
        correlation: CorrelationId::parse("c-run").unwrap(),
        run_id: RunId::parse("run_1").unwrap(),
        seq: 7,
        stream: OutputStream::Stderr,
        data: "☃\n".into(),
        note: None,
    };
    let e = encode_output(&output);
    assert_eq!(e.name, "bus.docker.run.output");
    assert_eq!(e.correlation_id, "c-run");
    assert_eq!(e.error, None);
    assert_eq!(
        e.payload,
        json!({"run_id": "run_1", "seq": 7, "stream": "stderr", "data": "☃\n"})
    );
    output.data.clear();
    output.note = Some("live output stopped".into());
    let e = encode_output(&output);
    assert_eq!(e.payload["truncated"], true);
    assert_eq!(e.payload["note"], "live output stopped");
    assert_eq!(e.payload["data"], "");
}
