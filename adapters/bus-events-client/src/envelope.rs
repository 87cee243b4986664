//! The JSON envelopes that travel over the Events API.
//!
//! Payloads stay `serde_json::Value`: turning them into domain types is the
//! job of the crate that knows what the events mean.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::ndjson::Frame;

/// An event to publish.
///
/// Serialised as `{"name", "correlationId", "correlation_id", "payload",
/// "error"?}`: both correlation spellings always (older servers read the
/// snake-case one), `error` only when present.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    /// Event name, e.g. `bus.docker.run.response`.
    pub name: String,
    /// The correlation id of the request being answered.
    pub correlation_id: String,
    /// The event payload.
    pub payload: Value,
    /// `{code, message}` on failures, absent on success.
    pub error: Option<Value>,
}

impl Serialize for OutboundEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            name: &'a str,
            #[serde(rename = "correlationId")]
            correlation_id_camel: &'a str,
            correlation_id: &'a str,
            payload: &'a Value,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a Value>,
        }
        Wire {
            name: &self.name,
            correlation_id_camel: &self.correlation_id,
            correlation_id: &self.correlation_id,
            payload: &self.payload,
            error: self.error.as_ref(),
        }
        .serialize(serializer)
    }
}

impl OutboundEvent {
    /// The size in bytes of the envelope as [`crate::EventsClient::publish`]
    /// sends it, counted without building the body.
    #[must_use]
    pub fn wire_len(&self) -> usize {
        struct ByteCounter(usize);
        impl std::io::Write for ByteCounter {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut counter = ByteCounter(0);
        match serde_json::to_writer(&mut counter, self) {
            Ok(()) => counter.0,
            // Serialising a `Value` cannot fail; if it ever did, the event
            // would not fit anything.
            Err(_) => usize::MAX,
        }
    }
}

/// An event received on a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Event name.
    pub name: String,
    /// From `correlationId`, else `correlation_id`.
    pub correlation_id: Option<String>,
    /// The owner the server stamped: `identity_id`, else `account_id`.
    pub owner: Option<String>,
    /// The payload; `Null` when absent.
    pub payload: Value,
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A usable envelope.
    Event(Envelope),
    /// A line that could not be used: not JSON, not an object, over
    /// `max_line_bytes`, or with a wrong-typed field. `name` and
    /// `correlation_id` are filled when they could still be read, so the
    /// caller can answer the request with an error.
    Malformed {
        /// The event name, if readable.
        name: Option<String>,
        /// The correlation id (either spelling), if readable.
        correlation_id: Option<String>,
        /// Why the line was rejected.
        reason: String,
    },
}

impl StreamItem {
    /// Decodes one NDJSON line (without its newline).
    #[must_use]
    ///
    /// Only a JSON object is an envelope: serde would read the envelope
    /// struct from an array too (positionally), so a line whose value is not
    /// an object is refused before it is decoded.
    pub fn from_line(line: &[u8]) -> Self {
        let starts_as_object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if !starts_as_object {
            let reason = match serde_json::from_slice::<IgnoredAny>(line) {
                Ok(_) => "line is not a JSON object".to_owned(),
                Err(error) => format!("line is not valid JSON: {error}"),
            };
            return Ids::default().into_malformed(reason);
        }
        match serde_json::from_slice::<RawEnvelope>(line) {
            Ok(raw) => Self::Event(raw.into_envelope()),
            Err(error) => {
                let reason = if error.is_data() {
                    format!("unusable envelope: {error}")
                } else {
                    format!("line is not valid JSON: {error}")
                };
                scan_ids(line).into_malformed(reason)
            }
        }
    }

    /// Decodes a frame from [`crate::ndjson::LineFramer`]; an oversized line
    /// becomes [`StreamItem::Malformed`] with whatever ids its prefix shows.
    #[must_use]
    pub fn from_frame(frame: &Frame, max_line_bytes: usize) -> Self {
        match frame {
            Frame::Line(line) => Self::from_line(line),
            Frame::Oversized { prefix, len } => scan_ids(prefix).into_malformed(format!(
                "line of {len} bytes exceeds the {max_line_bytes}-byte limit"
            )),
        }
    }
}

#[derive(Deserialize)]
struct RawEnvelope {
    name: String,
    #[serde(rename = "correlationId", default)]
    correlation_id_camel: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    identity_id: Option<String>,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    payload: Value,
}

impl RawEnvelope {
    fn into_envelope(self) -> Envelope {
        Envelope {
            name: self.name,
            correlation_id: first_non_empty(self.correlation_id_camel, self.correlation_id),
            owner: first_non_empty(self.identity_id, self.account_id),
            payload: self.payload,
        }
    }
}

fn first_non_empty(preferred: Option<String>, fallback: Option<String>) -> Option<String> {
    preferred
        .filter(|s| !s.is_empty())
        .or(fallback.filter(|s| !s.is_empty()))
}

/// The ids found in a (possibly broken or truncated) JSON document.
#[derive(Debug, Default)]
struct Ids {
    name: Option<String>,
    correlation_id_camel: Option<String>,
    correlation_id: Option<String>,
}

impl Ids {
    fn into_malformed(self, reason: String) -> StreamItem {
        StreamItem::Malformed {
            name: self.name.filter(|s| !s.is_empty()),
            correlation_id: first_non_empty(self.correlation_id_camel, self.correlation_id),
            reason,
        }
    }
}

/// Reads top-level `name`, `correlationId` and `correlation_id` string values
/// from `json`, keeping those seen before the document fails (a truncated
/// prefix of an oversized line, a wrong-typed field later on, …).
fn scan_ids(json: &[u8]) -> Ids {
    let mut ids = Ids::default();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    // The error is expected (that is why we are scanning); what was recorded
    // before it is the result.
    let _ = IdScanner(&mut ids).deserialize(&mut deserializer);
    ids
}

struct IdScanner<'a>(&'a mut Ids);

impl<'de> DeserializeSeed<'de> for IdScanner<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for IdScanner<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<KeyOfInterest>()? {
            let slot = match key {
                KeyOfInterest::Name => &mut self.0.name,
                KeyOfInterest::CorrelationIdCamel => &mut self.0.correlation_id_camel,
                KeyOfInterest::CorrelationId => &mut self.0.correlation_id,
                KeyOfInterest::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value = map.next_value::<MaybeString>()?;
            if slot.is_none() {
                *slot = value.0;
            }
        }
        Ok(())
    }
}

enum KeyOfInterest {
    Name,
    CorrelationIdCamel,
    CorrelationId,
    Other,
}

impl<'de> Deserialize<'de> for KeyOfInterest {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyOfInterest;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<KeyOfInterest, E> {
                Ok(match key {
                    "name" => KeyOfInterest::Name,
                    "correlationId" => KeyOfInterest::CorrelationIdCamel,
                    "correlation_id" => KeyOfInterest::CorrelationId,
                    _ => KeyOfInterest::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// A value kept only if it is a string; anything else is skipped.
struct MaybeString(Option<String>);

impl<'de> Deserialize<'de> for MaybeString {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MaybeStringVisitor;
        impl<'de> Visitor<'de> for MaybeStringVisitor {
            type Value = MaybeString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MaybeString, E> {
                Ok(MaybeString(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<MaybeString, E> {
                Ok(MaybeString(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<MaybeString, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MaybeString, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeString(None))
            }
        }
        deserializer.deserialize_any(MaybeStringVisitor)
    }
}
