//! The wire shape of events: what a publisher sends and the envelope the
//! server stores and streams.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Why a publish body was refused; the message goes back to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum InvalidEvent {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("`name` is required and must be a non-empty string")]
    Name,
    #[error(transparent)]
    BadName(#[from] crate::name::InvalidName),
    #[error("`{0}` must be a string")]
    CorrelationType(&'static str),
    #[error("`correlationId` and `correlation_id` disagree")]
    CorrelationMismatch,
    #[error("`error` must be a JSON object")]
    ErrorType,
}

/// A validated publish request.
#[derive(Debug, PartialEq)]
pub(crate) struct NewEvent {
    pub(crate) name: String,
    correlation_id: Option<String>,
    payload: Value,
    error: Option<Value>,
}

impl NewEvent {
    /// Parses a publish body. Fields other than `name`, `correlationId`,
    /// `correlation_id`, `payload` and `error` are ignored.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, InvalidEvent> {
        let value: Value =
            serde_json::from_slice(body).map_err(|err| InvalidEvent::Json(err.to_string()))?;
        let Value::Object(mut fields) = value else {
            return Err(InvalidEvent::NotAnObject);
        };

        let name = match fields.remove("name") {
            Some(Value::String(name)) if !name.trim().is_empty() => name,
            _ => return Err(InvalidEvent::Name),
        };
        crate::name::validate_name(&name)?;
        let camel = take_string(&mut fields, "correlationId")?;
        let snake = take_string(&mut fields, "correlation_id")?;
        let correlation_id = match (camel, snake) {
            (Some(camel), Some(snake)) if camel != snake => {
                return Err(InvalidEvent::CorrelationMismatch)
            }
            (camel, snake) => camel.or(snake),
        };
        let payload = fields.remove("payload").unwrap_or(Value::Null);
        let error = match fields.remove("error") {
            None | Some(Value::Null) => None,
            Some(error @ Value::Object(_)) => Some(error),
            Some(_) => return Err(InvalidEvent::ErrorType),
        };

        Ok(Self {
            name,
            correlation_id,
            payload,
            error,
        })
    }

    /// The stored envelope as one NDJSON line.
    pub(crate) fn into_line(
        self,
        id: &str,
        identity: &str,
        created_at: OffsetDateTime,
    ) -> Result<Bytes, EnvelopeError> {
        let created_at = created_at.format(&Rfc3339)?;
        let envelope = Envelope {
            id,
            name: &self.name,
            correlation_id_camel: self.correlation_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            payload: &self.payload,
            error: self.error.as_ref(),
            identity_id: identity,
            account_id: identity,
            created_at,
        };
        let mut line = serde_json::to_vec(&envelope)?;
        line.push(b'\n');
        Ok(Bytes::from(line))
    }
}

/// Why an envelope could not be written (should not happen in practice).
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnvelopeError {
    #[error("failed to format the timestamp")]
    Time(#[from] time::error::Format),
    #[error("failed to serialize the envelope")]
    Json(#[from] serde_json::Error),
}

/// `null` counts as absent.
fn take_string(
    fields: &mut Map<String, Value>,
    key: &'static str,
) -> Result<Option<String>, InvalidEvent> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(InvalidEvent::CorrelationType(key)),
    }
}

/// The stored form of an event. Both correlation spellings are written
/// because clients of the real API read either.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    name: &'a str,
    #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
    correlation_id_camel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    payload: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a Value>,
    identity_id: &'a str,
    /// Older spelling of `identity_id`.
    account_id: &'a str,
    created_at: String,
}

/// Event ids: UUID-shaped, increasing within one server run, and unlikely to
/// repeat across runs (the upper half is taken from the start time).
pub(crate) struct EventIds {
    instance: u64,
    next: AtomicU64,
}

impl EventIds {
    pub(crate) fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        // Truncation is fine: only uniqueness across runs matters.
        let instance = (nanos as u64) ^ (u64::from(std::process::id()) << 32);
        Self {
            instance,
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn next_id(&self) -> String {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let high = self.instance;
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            seq >> 48,
            seq & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<NewEvent, InvalidEvent> {
        NewEvent::parse(value.to_string().as_bytes())
    }

    #[test]
    fn envelope_carries_both_spellings() {
        let event = parse(json!({
            "name": "run.requested",
            "correlation_id": "c-1",
            "payload": {"image": "alpine"},
            "extra": true
        }))
        .expect("valid");
        let line = event
            .into_line("id-1", "worker", OffsetDateTime::UNIX_EPOCH)
            .expect("serializable");
        assert_eq!(line.last(), Some(&b'\n'));
        let envelope: Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(
            envelope,
            json!({
                "id": "id-1",
                "name": "run.requested",
                "correlationId": "c-1",
                "correlation_id": "c-1",
                "payload": {"image": "alpine"},
                "identity_id": "worker",
                "account_id": "worker",
                "created_at": "1970-01-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn optional_fields_are_left_out() {
        let line = parse(json!({"name": "n", "error": {"code": "x"}}))
            .expect("valid")
            .into_line("id", "w", OffsetDateTime::UNIX_EPOCH)
            .expect("serializable");
        let envelope: Value = serde_json::from_slice(&line).expect("json");
        assert!(envelope.get("correlationId").is_none());
        assert!(envelope.get("correlation_id").is_none());
        assert_eq!(envelope["payload"], Value::Null);
        assert_eq!(envelope["error"], json!({"code": "x"}));
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(matches!(NewEvent::parse(b"{"), Err(InvalidEvent::Json(_))));
        assert_eq!(parse(json!([1])), Err(InvalidEvent::NotAnObject));
        assert_eq!(parse(json!({})), Err(InvalidEvent::Name));
        assert_eq!(parse(json!({"name": " "})), Err(InvalidEvent::Name));
        assert_eq!(parse(json!({"name": 3})), Err(InvalidEvent::Name));
        assert!(matches!(
            parse(json!({"name": "bus.docker.*"})),
            Err(InvalidEvent::BadName(_))
        ));
        assert_eq!(
            parse(json!({"name": "n", "correlationId": 1})),
            Err(InvalidEvent::CorrelationType("correlationId"))
        );
        assert_eq!(
            parse(json!({"name": "n", "correlationId": "a", "correlation_id": "b"})),
            Err(InvalidEvent::CorrelationMismatch)
        );
        assert_eq!(
            parse(json!({"name": "n", "error": "boom"})),
            Err(InvalidEvent::ErrorType)
        );
    }

    #[test]
    fn ids_are_unique_and_increasing() {
        let ids = EventIds::new();
        let first = ids.next_id();
        let second = ids.next_id();
        assert_eq!(first.len(), 36);
        assert!(second > first, "{second} > {first}");
    }
}
