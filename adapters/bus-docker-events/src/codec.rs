//! The payload codec of contract §3 and §4: inbound request payloads become
//! domain [`Request`]s, domain [`Response`]s become outbound envelope parts.
//!
//! Wire types live here, not in the domain: each request payload has a serde
//! DTO that is read with `serde_path_to_error` (so a wrong type names its
//! field, e.g. `command[1]` or `env.FOO`) and then turned into domain types
//! with an explicit `try_into_domain()` that applies the validated newtype
//! constructors. Rules that need configuration (profiles, mount roots,
//! allowed images) are not checked here; `spec::resolve` does that.
//!
//! Input is read the way older Bus providers write it:
//! * unknown fields are ignored (forward compatibility);
//! * `null` counts as absent, and so does a blank string for optional ids
//!   and names (Go clients send `""` for an unset string);
//! * compat spellings are accepted: `args` for `command`, `owner_account_id`,
//!   `identity_id` and `account_id` for `owner_identity_id`, `readonly` and
//!   `readOnly` for `read_only`.
//!
//! Output always carries both owner spellings (`null` when the owner is
//! unknown) and stays under the event size limit by shrinking the captured
//! output tails of a run report, never by dropping fields.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bus_docker_domain::error::FieldError;
use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ids::{CorrelationId, ImageRef, NetworkName, OwnerId, ProfileName, RunId};
use bus_docker_domain::mount::RequestedMount;
use bus_docker_domain::request::{
    DeleteRequest, Inbound, InputRequest, Request, RunRequest, StatusQuery,
};
use bus_docker_domain::response::{Failure, Reply, Response};
use bus_docker_domain::run::{CapturedOutput, RunReport, RunSummary, RunnerReport};
use bus_docker_domain::spec::limits::MAX_STDIN_BYTES;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

/// Bytes of the event limit kept free for the fields the Events API adds
/// when it streams a published envelope on (`id`, `identity_id`,
/// `account_id`, `created_at`, `metadata`, …): a response that only just
/// fits when published would otherwise be skipped as an oversized line by
/// the reader at the other end.
pub const STREAM_HEADROOM_BYTES: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// The parts of an inbound envelope the transport extracted.
#[derive(Clone, Copy, Debug)]
pub struct RawInbound<'a> {
    /// The event name.
    pub name: &'a str,
    /// `correlationId`, else `correlation_id`.
    pub correlation_id: Option<&'a str>,
    /// The owner the Events API stamped (`identity_id`, else `account_id`).
    pub stamped_owner: Option<&'a str>,
    /// The payload; `Null` when the envelope had none.
    pub payload: &'a Value,
}

/// What to do with an inbound envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A request of ours with an answerable correlation id. Its `request`
    /// is `Err` when the payload failed validation: answer `bad_request`.
    Request(Inbound),
    /// Not for us, or cannot be answered (no or invalid correlation id):
    /// skip it with this log reason.
    Skip(String),
}

/// Decode one inbound envelope.
///
/// The name must be one of `prefix`'s request names and the correlation id
/// must be present, non-blank and valid, else the envelope is skipped. A
/// stamped owner that is blank or invalid is ignored. The payload decides
/// `Inbound::request`: `null` counts as `{}`, any other non-object is a
/// [`FieldError`] on `payload`.
///
/// The payload's owner is not merged with the stamped owner here: both are
/// handed on (`RunRequest::owner`, `Inbound::stamped_owner`) and the caller
/// applies the fallback of contract §4, as `spec::resolve` does for runs.
pub fn decode(prefix: &EventPrefix, raw: RawInbound<'_>) -> Decoded {
    let Some(operation) = prefix.operation_of(raw.name) else {
        return Decoded::Skip(format!(
            "event {:?} is not a request event of prefix {prefix}",
            raw.name
        ));
    };
    let correlation = match raw.correlation_id.filter(|c| !c.trim().is_empty()) {
        None => {
            return Decoded::Skip(format!(
                "{} has no correlation id and cannot be answered",
                raw.name
            ))
        }
        Some(text) => match CorrelationId::parse(text) {
            Ok(id) => id,
            Err(err) => {
                return Decoded::Skip(format!(
                    "{} has an invalid correlation id ({}) and cannot be answered",
                    raw.name,
                    err.message()
                ))
            }
        },
    };
    let stamped_owner = raw
        .stamped_owner
        .filter(|o| !o.trim().is_empty())
        .and_then(|o| OwnerId::parse(o).ok());
    Decoded::Request(Inbound {
        operation,
        correlation,
        stamped_owner,
        request: decode_request(operation, raw.payload),
    })
}

fn decode_request(operation: Operation, payload: &Value) -> Result<Request, FieldError> {
    let empty = Value::Object(Map::new());
    let payload = match payload {
        Value::Null => &empty,
        Value::Object(_) => payload,
        other => {
            return Err(FieldError::new(
                "payload",
                format!("must be a JSON object, found {}", kind_of(other)),
            ))
        }
    };
    Ok(match operation {
        Operation::Run => {
            let mut run = parse::<RunDto>(payload)?.try_into_domain()?;
            run.owner = parse::<OwnerDto>(payload)?.try_into_domain()?;
            Request::Run(Box::new(run))
        }
        Operation::Status => {
            let dto = parse::<StatusDto>(payload)?;
            Request::Status(StatusQuery {
                owner: parse::<OwnerDto>(payload)?.try_into_domain()?,
                run_id: optional(dto.run_id)
                    .map(|id| RunId::parse(&id))
                    .transpose()?,
            })
        }
        Operation::Input => {
            let mut input = parse::<InputDto>(payload)?.try_into_domain()?;
            input.owner = parse::<OwnerDto>(payload)?.try_into_domain()?;
            Request::Input(input)
        }
        Operation::Delete => Request::Delete(DeleteRequest {
            run_id: required_run_id(parse::<DeleteDto>(payload)?.run_id)?,
            owner: parse::<OwnerDto>(payload)?.try_into_domain()?,
        }),
        // The runner operations take no arguments; any object is fine.
        Operation::RunnerStatus => Request::RunnerStatus,
        Operation::RunnerStart => Request::RunnerStart,
        Operation::RunnerDelete => Request::RunnerDelete,
    })
}

/// `run.request`. The owner is read by [`OwnerDto`] from the same payload.
#[derive(Deserialize)]
struct RunDto {
    run_id: Option<String>,
    profile: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    /// [compat] older spelling of `command`.
    args: Option<Vec<String>>,
    workdir: Option<String>,
    env: Option<BTreeMap<String, String>>,
    mounts: Option<Vec<MountDto>>,
    network: Option<String>,
    stdin: Option<String>,
    interactive: Option<bool>,
    timeout_seconds: Option<u64>,
    labels: Option<BTreeMap<String, String>>,
}

impl RunDto {
    /// The request without its owner.
    fn try_into_domain(self) -> Result<RunRequest, FieldError> {
        let command = match (self.command, self.args) {
            (Some(command), Some(args)) if command != args => {
                return Err(FieldError::new(
                    "command",
                    "command and its older spelling args differ; send only one",
                ))
            }
            (command, args) => command.or(args),
        };
        let mounts = self
            .mounts
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, mount)| mount.try_into_domain(index))
            .collect::<Result<_, _>>()?;
        Ok(RunRequest {
            run_id: optional(self.run_id)
                .map(|id| RunId::parse(&id))
                .transpose()?,
            owner: None,
            profile: optional(self.profile)
                .map(|p| ProfileName::parse(&p))
                .transpose()?,
            image: optional(self.image)
                .map(|i| ImageRef::parse(&i))
                .transpose()?,
            command,
            workdir: optional(self.workdir),
            env: self.env.unwrap_or_default(),
            mounts,
            network: optional(self.network)
                .map(|n| NetworkName::parse(&n))
                .transpose()?,
            stdin: self.stdin,
            interactive: self.interactive.unwrap_or(false),
            timeout_seconds: self.timeout_seconds,
            labels: self.labels.unwrap_or_default(),
        })
    }
}

/// One entry of `run.request.mounts`.
#[derive(Deserialize)]
struct MountDto {
    source: String,
    target: String,
    read_only: Option<bool>,
    /// [compat]
    readonly: Option<bool>,
    /// [compat]
    #[serde(rename = "readOnly")]
    read_only_camel: Option<bool>,
}

impl MountDto {
    fn try_into_domain(self, index: usize) -> Result<RequestedMount, FieldError> {
        let given: Vec<bool> = [self.read_only, self.readonly, self.read_only_camel]
            .into_iter()
            .flatten()
            .collect();
        if given.windows(2).any(|pair| pair[0] != pair[1]) {
            return Err(FieldError::new(
                format!("mounts[{index}].read_only"),
                "read_only, readonly and readOnly disagree",
            ));
        }
        Ok(RequestedMount {
            source: self.source,
            target: self.target,
            read_only: given.first().copied().unwrap_or(false),
        })
    }
}

/// The owner of any request: the first non-blank of the four spellings.
#[derive(Deserialize)]
struct OwnerDto {
    owner_identity_id: Option<String>,
    /// [compat]
    owner_account_id: Option<String>,
    /// [compat]
    identity_id: Option<String>,
    /// [compat]
    account_id: Option<String>,
}

impl OwnerDto {
    fn try_into_domain(self) -> Result<Option<OwnerId>, FieldError> {
        let spellings = [
            ("owner_identity_id", self.owner_identity_id),
            ("owner_account_id", self.owner_account_id),
            ("identity_id", self.identity_id),
            ("account_id", self.account_id),
        ];
        for (field, value) in spellings {
            if let Some(value) = optional(value) {
                return OwnerId::parse(&value)
                    .map(Some)
                    .map_err(|err| FieldError::new(field, err.message()));
            }
        }
        Ok(None)
    }
}

/// `status.request`.
#[derive(Deserialize)]
struct StatusDto {
    run_id: Option<String>,
}

/// `input.request`.
#[derive(Deserialize)]
struct InputDto {
    run_id: Option<String>,
    data: Option<String>,
    eof: Option<bool>,
}

impl InputDto {
    /// The request without its owner.
    fn try_into_domain(self) -> Result<InputRequest, FieldError> {
        let run_id = required_run_id(self.run_id)?;
        let data = self.data.unwrap_or_default();
        if data.len() > MAX_STDIN_BYTES {
            return Err(FieldError::new(
                "data",
                format!("must be at most {MAX_STDIN_BYTES} bytes"),
            ));
        }
        Ok(InputRequest {
            run_id,
            owner: None,
            data,
            eof: self.eof.unwrap_or(false),
        })
    }
}

/// `delete.request`.
#[derive(Deserialize)]
struct DeleteDto {
    run_id: Option<String>,
}

/// A string that counts as given: absent, `null` and blank are not.
fn optional(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn required_run_id(value: Option<String>) -> Result<RunId, FieldError> {
    match optional(value) {
        Some(id) => RunId::parse(&id),
        None => Err(FieldError::new("run_id", "is required")),
    }
}

/// Deserialize a DTO, naming the field of the first type error.
fn parse<'de, T: Deserialize<'de>>(payload: &'de Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(payload).map_err(|err| {
        let path = err.path().to_string();
        field_error(&path, &err.into_inner())
    })
}

/// Turn serde's error at `path` (`.` for the root) into a [`FieldError`].
fn field_error(path: &str, error: &serde_json::Error) -> FieldError {
    let parent = (path != ".").then_some(path);
    let message = error.to_string();
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let field = match parent {
            Some(parent) => format!("{parent}.{missing}"),
            None => missing.to_owned(),
        };
        return FieldError::new(field, "is required");
    }
    FieldError::new(parent.unwrap_or("payload"), short_message(&message))
}

/// `invalid type: integer `1`, expected a string` → `expected a string,
/// found integer 1`. String values are not repeated: they may be long.
fn short_message(message: &str) -> String {
    let body = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "));
    match body.and_then(|body| body.rsplit_once(", expected ")) {
        Some((found, expected)) => format!(
            "expected {}, found {}",
            expected_words(expected),
            found_words(found)
        ),
        None => message.to_owned(),
    }
}

fn expected_words(expected: &str) -> &str {
    match expected {
        "u64" => "a non-negative integer",
        "a boolean" => "a boolean (true or false)",
        "a sequence" => "an array",
        "a map" => "an object",
        e if e.starts_with("struct ") => "an object",
        e => e,
    }
}

fn found_words(found: &str) -> String {
    if found.starts_with("string ") {
        return "a string".to_owned();
    }
    match found {
        "unit value" | "null" => "null".to_owned(),
        "sequence" => "an array".to_owned(),
        "map" => "an object".to_owned(),
        other => other.replace('`', ""),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// An encoded response is the transport's outbound event: the transport
/// sends the correlation id under both `correlationId` and
/// `correlation_id`, and [`Encoded::wire_len`] counts its exact size.
pub use bus_events_client::OutboundEvent as Encoded;

/// Encode one response (contract §3, §4).
///
/// On failure the `{code, message}` object is both the envelope's `error`
/// and `payload.error`, next to the partial reply's fields when there is
/// one. The envelope is kept within `max_event_bytes` minus
/// [`STREAM_HEADROOM_BYTES`] by shrinking a run report's stdout/stderr tails
/// (which marks them truncated); no other field is ever dropped, so a
/// response whose other fields alone exceed the limit is returned as is and
/// logged.
pub fn encode(response: &Response, max_event_bytes: usize) -> Encoded {
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
            let (stdout, stderr) = fit_outputs(report, budget, |out, err| {
                encoded(run_json(report, out, err)).wire_len()
            });
            encoded(run_json(report, &stdout, &stderr))
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
            "response exceeds the event size budget; only captured output can be shrunk"
        );
    }
    result
}

/// The run's stdout and stderr, their tails shrunk so that the envelope
/// `measure` returns the size of fits `budget`.
fn fit_outputs(
    report: &RunReport,
    budget: usize,
    measure: impl Fn(&CapturedOutput, &CapturedOutput) -> usize,
) -> (CapturedOutput, CapturedOutput) {
    let emptied = |o: &CapturedOutput| CapturedOutput {
        text: String::new(),
        total_bytes: o.total_bytes,
        truncated: o.truncated,
    };
    let mut stdout = report.stdout.clone();
    let mut stderr = report.stderr.clone();
    let base = measure(&emptied(&stdout), &emptied(&stderr));
    let needed = escaped_len(&stdout.text) + escaped_len(&stderr.text);
    if base.saturating_add(needed) <= budget {
        return (stdout, stderr);
    }
    share_room(&mut stdout, &mut stderr, budget.saturating_sub(base));
    // `escaped_len` mirrors serde_json's escaping, so this loop should not
    // run; it guards the limit should the two ever disagree.
    while measure(&stdout, &stderr) > budget && !(stdout.text.is_empty() && stderr.text.is_empty())
    {
        let larger = if stdout.text.len() >= stderr.text.len() {
            &mut stdout
        } else {
            &mut stderr
        };
        larger.shrink_to(larger.text.len() / 2);
    }
    tracing::debug!(
        run_id = %report.run_id,
        stdout_kept = stdout.text.len(),
        stderr_kept = stderr.text.len(),
        "shrank captured output to fit the event size limit"
    );
    (stdout, stderr)
}

/// Split `room` escaped bytes between the two tails: each gets half, and
/// one that needs less than half leaves the rest to the other.
fn share_room(stdout: &mut CapturedOutput, stderr: &mut CapturedOutput, room: usize) {
    let (a, b) = (escaped_len(&stdout.text), escaped_len(&stderr.text));
    let half = room / 2;
    let (room_a, room_b) = if a <= half {
        (a, room - a)
    } else if b <= room - half {
        (room - b, b)
    } else {
        (half, room - half)
    };
    keep_tail(stdout, room_a);
    keep_tail(stderr, room_b);
}

/// Keep the longest tail whose JSON-escaped form takes at most `room` bytes.
fn keep_tail(output: &mut CapturedOutput, room: usize) {
    let mut used = 0;
    let mut keep = 0;
    for c in output.text.chars().rev() {
        let cost = escaped_char_len(c);
        if used + cost > room {
            break;
        }
        used += cost;
        keep += c.len_utf8();
    }
    output.shrink_to(keep);
}

/// The bytes `s` takes inside a JSON string as serde_json writes it,
/// without the quotes.
fn escaped_len(s: &str) -> usize {
    s.chars().map(escaped_char_len).sum()
}

fn escaped_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\t' | '\n' | '\u{c}' | '\r' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

fn failure_json(failure: &Failure) -> Value {
    json!({"code": failure.code.as_str(), "message": failure.message})
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
        Reply::Run(report) => run_json(report, &report.stdout, &report.stderr),
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

fn run_json(report: &RunReport, stdout: &CapturedOutput, stderr: &CapturedOutput) -> Value {
    let owner = owner_json(report.owner.as_ref());
    let duration_ms = report
        .duration
        .or_else(|| report.finished_at?.duration_since(report.started_at?).ok())
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    json!({
        "run_id": report.run_id.as_str(),
        "owner_identity_id": owner,
        "owner_account_id": owner,
        "runner_name": report.runner_name,
        "profile": report.profile.as_ref().map(ProfileName::as_str),
        "image": report.image.as_str(),
        "image_id": report.image_id,
        "args": report.args,
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
        "runtime": {
            "provider": report.runtime.provider,
            "engine_version": report.runtime.engine_version,
            "container_id": report.runtime.container_id,
            "container_name": report.runtime.container_name,
        },
    })
}

fn summary_json(summary: &RunSummary) -> Value {
    let owner = owner_json(summary.owner.as_ref());
    json!({
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
    })
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
        "profiles": profiles,
    });
    if let Some(problem) = &report.problem {
        details["problem"] = json!(problem);
    }
    details
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
    fn escaped_len_matches_serde_json() {
        let samples = [
            String::new(),
            "plain ascii".to_owned(),
            "quote \" backslash \\ slash /".to_owned(),
            "\u{8}\t\n\u{c}\r".to_owned(),
            (0u8..0x20).map(char::from).collect(),
            "\u{7f} é 漢 🦀 \u{2028}".to_owned(),
        ];
        for s in samples {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(escaped_len(&s) + 2, json.len(), "{s:?}");
        }
    }

    #[test]
    fn keep_tail_respects_the_escaped_budget() {
        let mut out = CapturedOutput {
            text: "ab\u{1}\u{1}c".into(),
            total_bytes: 5,
            truncated: false,
        };
        keep_tail(&mut out, 7);
        assert_eq!(out.text, "\u{1}c");
        assert!(out.truncated);
        keep_tail(&mut out, 100);
        assert_eq!(out.text, "\u{1}c");
    }

    #[test]
    fn share_room_gives_the_unused_half_to_the_other() {
        let mut a = CapturedOutput {
            text: "x".repeat(10),
            ..CapturedOutput::default()
        };
        let mut b = CapturedOutput {
            text: "y".repeat(100),
            ..CapturedOutput::default()
        };
        share_room(&mut a, &mut b, 50);
        assert_eq!((a.text.len(), b.text.len()), (10, 40));
        assert!(!a.truncated && b.truncated);
        let mut a = CapturedOutput {
            text: "x".repeat(100),
            ..CapturedOutput::default()
        };
        let mut b = CapturedOutput {
            text: "y".repeat(100),
            ..CapturedOutput::default()
        };
        share_room(&mut a, &mut b, 51);
        assert_eq!((a.text.len(), b.text.len()), (25, 26));
    }

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

    #[test]
    fn serde_messages_are_shortened() {
        assert_eq!(
            short_message("invalid type: integer `1`, expected a string"),
            "expected a string, found integer 1"
        );
        assert_eq!(
            short_message("invalid value: integer `-1`, expected u64"),
            "expected a non-negative integer, found integer -1"
        );
        assert_eq!(
            short_message("invalid type: string \"a, expected b\", expected a sequence"),
            "expected an array, found a string"
        );
        assert_eq!(short_message("something else"), "something else");
    }
}
