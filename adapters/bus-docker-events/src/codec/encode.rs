//! Encoding: the payload builders of every reply; a run report is first
//! fitted under the event size limit (`fit.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use bus_docker_domain::ids::{OwnerId, ProfileName};
use bus_docker_domain::network::NetworkPolicy;
use bus_docker_domain::output::CapturedOutput;
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::response::{Failure, Reply, Response};
use bus_docker_domain::run::{RunReport, RunStatus, RunSummary};
use bus_docker_domain::runner::{RunnerReport, StreamReport, StreamState};
use serde_json::{json, Map, Value};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

use super::fit::fit_run;
use super::{Encoded, STREAM_HEADROOM_BYTES};

/// An error message is cut to this many bytes: it may quote request input
/// (a path, a key), and it appears twice in the event (`error` and
/// `payload.error`).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

pub(super) fn response(response: &Response, max_event_bytes: usize) -> Encoded {
    let error = response.error.as_ref().map(failure_json);
    let encoded = |payload: Value| Encoded {
        name: response.event.clone(),
        correlation_id: response.correlation.as_str().to_owned(),
        payload: with_error(payload, error.as_ref()),
        error: error.clone(),
    };
    let budget = max_event_bytes.saturating_sub(STREAM_HEADROOM_BYTES);
    let result = match &response.reply {
        Some(Reply::Run(report)) => {
            let fitted = fit_run(report, budget, |args, cut, out, err| {
                encoded(run_json(report, args, cut, out, err)).wire_len()
            });
            encoded(run_json(
                report,
                &fitted.args,
                fitted.args_truncated,
                &fitted.stdout,
                &fitted.stderr,
            ))
        }
        Some(reply) => encoded(reply_json(reply)),
        None => encoded(json!({})),
    };
    let len = result.wire_len();
    if len > budget {
        tracing::warn!(
            event = %response.event,
            correlation_id = %response.correlation,
            bytes = len,
            budget,
            "response exceeds the event size budget; only args and captured output can be cut"
        );
    }
    result
}

pub(super) fn output(output: &OutputEvent) -> Encoded {
    let mut payload = json!({
        "run_id": output.run_id.as_str(),
        "seq": output.seq,
        "stream": output.stream.as_str(),
        "data": output.data,
    });
    if let Some(note) = &output.note {
        payload["note"] = json!(note);
        payload["truncated"] = json!(true);
    }
    Encoded {
        name: output.event.clone(),
        correlation_id: output.correlation.as_str().to_owned(),
        payload,
        error: None,
    }
}

pub(super) fn minimal(response: &Response, why: &str) -> Encoded {
    let (code, message) = match &response.error {
        Some(failure) => (failure.code.as_str(), format!("{}; {why}", failure.message)),
        None => ("internal", why.to_owned()),
    };
    let error = json!({"code": code, "message": bounded_message(&message)});
    let mut payload = json!({"error": error});
    if let Some(Reply::Run(report)) = &response.reply {
        let owner = owner_json(report.owner.as_ref());
        payload["run_id"] = json!(report.run_id.as_str());
        payload["owner_identity_id"] = owner.clone();
        payload["owner_account_id"] = owner;
        payload["status"] = json!(report.status.as_str());
        payload["exit_code"] = json!(report.exit_code);
        payload["duration_ms"] = json!(duration_ms(report));
    }
    Encoded {
        name: response.event.clone(),
        correlation_id: response.correlation.as_str().to_owned(),
        payload,
        error: Some(error),
    }
}

fn failure_json(failure: &Failure) -> Value {
    json!({"code": failure.code.as_str(), "message": bounded_message(&failure.message)})
}

/// At most [`MAX_ERROR_MESSAGE_BYTES`] of `message` (cut at a character
/// boundary, marked with `…`).
fn bounded_message(message: &str) -> String {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES - '…'.len_utf8();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn with_error(mut payload: Value, error: Option<&Value>) -> Value {
    if let (Some(error), Some(fields)) = (error, payload.as_object_mut()) {
        fields.insert("error".to_owned(), error.clone());
    }
    payload
}

/// Both owner spellings carry the same value; `null` when unknown.
fn owner_json(owner: Option<&OwnerId>) -> Value {
    owner.map_or(Value::Null, |o| Value::String(o.as_str().to_owned()))
}

fn reply_json(reply: &Reply) -> Value {
    match reply {
        Reply::Run(report) => run_json(report, &report.args, false, &report.stdout, &report.stderr),
        Reply::Status(items) => json!({
            "items": items.iter().map(summary_json).collect::<Vec<_>>(),
        }),
        Reply::Input { run_id, bytes } => json!({
            "accepted": true,
            "run_id": run_id.as_str(),
            "bytes": bytes,
        }),
        Reply::Delete { run_id, owner } => {
            let owner = owner_json(owner.as_ref());
            json!({
                "deleted": true,
                "run_id": run_id.as_str(),
                "owner_identity_id": owner,
                "owner_account_id": owner,
            })
        }
        Reply::RunnerStatus(report) => json!({
            "status": {
                "state": report.state.as_str(),
                "provider": report.provider,
                "details": runner_details(report),
            },
        }),
        Reply::RunnerStart(report) => json!({
            "accepted": true,
            "action": "start",
            "details": runner_details(report),
        }),
        Reply::RunnerDelete { removed_containers } => json!({
            "deleted": true,
            "removed_containers": removed_containers,
        }),
    }
}

fn duration_ms(report: &RunReport) -> Option<u64> {
    report
        .duration
        .or_else(|| report.finished_at?.duration_since(report.started_at?).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A run report's payload; `args_truncated: true` appears only when the
/// echoed args were cut.
fn run_json(
    report: &RunReport,
    args: &[String],
    args_truncated: bool,
    stdout: &CapturedOutput,
    stderr: &CapturedOutput,
) -> Value {
    let owner = owner_json(report.owner.as_ref());
    let duration_ms = duration_ms(report);
    let mut payload = json!({
        "run_id": report.run_id.as_str(),
        "owner_identity_id": owner,
        "owner_account_id": owner,
        "runner_name": report.runner_name,
        "profile": report.profile.as_ref().map(ProfileName::as_str),
        "image": report.image.as_str(),
        "image_id": report.image_id,
        "args": args,
        "status": report.status.as_str(),
        "exit_code": report.exit_code,
        "stdout": stdout.text,
        "stderr": stderr.text,
        "stdout_truncated": stdout.truncated,
        "stderr_truncated": stderr.truncated,
        "stdout_bytes": stdout.total_bytes,
        "stderr_bytes": stderr.total_bytes,
        "started_at": report.started_at.and_then(rfc3339_millis),
        "finished_at": report.finished_at.and_then(rfc3339_millis),
        "duration_ms": duration_ms,
        "oom_killed": report.oom_killed,
        "runtime": {
            "provider": report.runtime.provider,
            "docker_host": report.runtime.docker_host,
            "engine_version": report.runtime.engine_version,
            "container_id": report.runtime.container_id,
            "container_name": report.runtime.container_name,
        },
    });
    if args_truncated {
        payload["args_truncated"] = json!(true);
    }
    if let Some(session) = &report.session {
        payload["session"] = json!(session.as_str());
    }
    payload
}

fn summary_json(summary: &RunSummary) -> Value {
    let owner = owner_json(summary.owner.as_ref());
    let mut item = json!({
        "id": summary.run_id.as_str(),
        "state": summary.state.as_str(),
        "owner_identity_id": owner,
        "owner_account_id": owner,
        "details": {
            "image": summary.image,
            "profile": summary.profile,
            "container_id": summary.container_id,
            "started_at": summary.started_at.and_then(rfc3339_millis),
        },
    });
    if let Some(f) = &summary.finished {
        let details = &mut item["details"];
        details["status"] = json!(f.status.map(RunStatus::as_str));
        details["exit_code"] = json!(f.exit_code);
        details["finished_at"] = json!(f.finished_at.and_then(rfc3339_millis));
    }
    item
}

fn runner_details(report: &RunnerReport) -> Value {
    let engine = report.engine.as_ref();
    let profiles: Map<String, Value> = report
        .profiles
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                json!({"image": p.image, "present": p.present}),
            )
        })
        .collect();
    let mut details = json!({
        "engine_version": engine.map(|e| &e.engine_version),
        "api_version": engine.map(|e| &e.api_version),
        "os": engine.map(|e| &e.os),
        "arch": engine.map(|e| &e.arch),
        "active_runs": report.active_runs,
        "queued_runs": report.queued_runs,
        "max_concurrent_runs": report.max_concurrent_runs,
        "max_queued_runs": report.max_queued_runs,
        "intake": if report.intake_open { "open" } else { "full" },
        "profiles": profiles,
        "request_mounts": engine.map(|e| e.request_mounts.describe()),
        "engines": report.engines.iter().map(|e| json!({
            "docker_host": e.docker_host,
            "state": if e.reachable { "up" } else { "down" },
            "engine_version": e.engine_version,
            "active_runs": e.active_runs,
            "codex_sessions": e.sessions.map(|s| json!({"volumes": s.volumes, "bytes": s.bytes})),
            "error": e.error,
        })).collect::<Vec<_>>(),
    });
    details["network_policy"] = network_policy(&report.networks);
    if !report.streams.is_empty() {
        details["streams"] = report.streams.iter().map(stream_details).collect();
    }
    if let Some(problem) = &report.problem {
        details["problem"] = json!(problem);
    }
    if !report.warm.is_empty() {
        details["warm"] = warm_details(&report.warm);
    }
    details
}

/// One request stream of `details.streams` (docs/protocol.md §9):
/// `{"name", "state": "connected" | "connecting" | "refused"}`, and for a
/// refused one `missing_scope` and the server's `error`.
fn stream_details(stream: &StreamReport) -> Value {
    match &stream.state {
        StreamState::Connected => json!({"name": stream.name, "state": "connected"}),
        StreamState::Connecting => json!({"name": stream.name, "state": "connecting"}),
        StreamState::Refused { scope, message } => json!({
            "name": stream.name,
            "state": "refused",
            "missing_scope": scope,
            "error": message,
        }),
    }
}

/// The network policy in force: `permissive` (any network that shares no
/// namespace) or `allow_list` (exactly `allowed_networks`).
fn network_policy(networks: &NetworkPolicy) -> Value {
    match networks.allowed() {
        None => json!({
            "mode": "permissive",
            "default_network": networks.default_network().as_str(),
            "allowed_networks": null,
            "refused": ["host", "container:<id>", "<mode>:<target>"],
        }),
        Some(list) => json!({
            "mode": "allow_list",
            "default_network": networks.default_network().as_str(),
            "allowed_networks": list.iter().map(|n| n.as_str()).collect::<Vec<_>>(),
        }),
    }
}

/// `details.warm`: per warm profile, what it wants per engine, why it is
/// refused (if it is), and per engine what is parked.
fn warm_details(warm: &[bus_docker_domain::warm::WarmReport]) -> Value {
    let mut out = Map::new();
    for w in warm {
        let entry = out
            .entry(w.profile.clone())
            .or_insert_with(|| json!({"wanted": w.wanted, "refused": w.refused, "engines": {}}));
        if !w.docker_host.is_empty() || w.wanted > 0 {
            let host = if w.docker_host.is_empty() {
                "default"
            } else {
                &w.docker_host
            };
            entry["engines"][host] = json!({"parked": w.parked, "wanted": w.wanted});
        }
    }
    Value::Object(out)
}

const RFC3339_MILLIS: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// RFC 3339 in UTC with exactly three fraction digits (truncated), e.g.
/// `2024-05-01T12:00:00.120Z`; `None` for instants outside years 0–9999.
fn rfc3339_millis(at: SystemTime) -> Option<String> {
    let nanos = match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).ok()?,
        Err(before) => -i128::try_from(before.duration().as_nanos()).ok()?,
    };
    let millis = nanos - nanos.rem_euclid(1_000_000);
    let utc = OffsetDateTime::from_unix_timestamp_nanos(millis).ok()?;
    if !(0..=9999).contains(&utc.year()) {
        return None;
    }
    utc.format(RFC3339_MILLIS).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let at = UNIX_EPOCH + Duration::new(1_714_564_800, 120_999_999);
        assert_eq!(
            rfc3339_millis(at).as_deref(),
            Some("2024-05-01T12:00:00.120Z")
        );
        assert_eq!(
            rfc3339_millis(UNIX_EPOCH).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        let before = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(
            rfc3339_millis(before).as_deref(),
            Some("1969-12-31T23:59:59.999Z")
        );
        let far = UNIX_EPOCH + Duration::from_secs(400_000_000_000);
        assert_eq!(rfc3339_millis(far), None);
    }
}
