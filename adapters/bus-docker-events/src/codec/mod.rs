//! The payload codec of docs/protocol.md §3 and §4: inbound request payloads become
//! domain [`Request`](bus_docker_domain::request::Request)s, domain [`Response`]s become outbound envelope parts.
//!
//! Wire types live here, not in the domain: each request payload has a serde
//! DTO that is read with `serde_path_to_error` (so a wrong type names its
//! field, e.g. `command[1]` or `env.FOO`) and then turned into domain types
//! with an explicit `try_into_domain()` that applies the validated newtype
//! constructors (image references follow Docker's grammar there). Rules
//! that need configuration (profiles, mount roots, allowed images) are not
//! checked here; `spec::resolve` does that.
//!
//! Input is read the way older Bus providers write it:
//! * unknown fields are ignored (forward compatibility), except the
//!   privilege fields of [`bus_docker_domain::request::PRIVILEGE_FIELDS`]
//!   in any spelling: those are handed to the domain, which refuses them;
//! * only JSON objects are objects: a payload or a `mounts[]` entry that is
//!   an array is refused, never read positionally;
//! * `null` counts as absent, and so does a blank string for optional ids
//!   and names (Go clients send `""` for an unset string);
//! * compat spellings are accepted: `args` for `command`, `owner_account_id`,
//!   `identity_id` and `account_id` for `owner_identity_id`, `readonly` and
//!   `readOnly` for `read_only`.
//!
//! Live output events ([`encode_output`]) carry the run request's
//! correlation id and `{"run_id", "seq", "stream", "data"}`.
//!
//! Output always carries both owner spellings (`null` when the owner is
//! unknown) and the whole encoded event stays under the event size limit:
//! a run report's echoed `args` are cut first (`args_truncated: true`),
//! then its stdout/stderr tails (`*_truncated`).
//!
//! Layout: [`decode`](mod@decode) holds the DTOs and the wording of field
//! errors; [`encode`](mod@encode) the payload builders; [`fit`](mod@fit) the
//! size fitting.

mod decode;
mod encode;
mod fit;

use bus_docker_domain::events::EventPrefix;
use bus_docker_domain::ids::{CorrelationId, OwnerId};
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::request::Inbound;
use bus_docker_domain::response::Response;
use serde_json::Value;

/// An encoded response is the transport's outbound event: the transport
/// sends the correlation id under both `correlationId` and
/// `correlation_id`, and [`Encoded::wire_len`] counts its exact size.
pub use bus_events_client::OutboundEvent as Encoded;

/// Bytes of the event limit kept free for the fields the Events API adds
/// when it streams a published envelope on (`id`, `identity_id`,
/// `account_id`, `created_at`, `metadata`, …): a response that only just
/// fits when published would otherwise be skipped as an oversized line by
/// the reader at the other end.
pub const STREAM_HEADROOM_BYTES: usize = 16 * 1024;

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
/// `FieldError` on `payload`.
///
/// The payload's owner is not merged with the stamped owner here: both are
/// handed on (`RunRequest::owner`, `Inbound::stamped_owner`) and the caller
/// applies the fallback of docs/protocol.md §4, as `spec::resolve` does for runs.
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
        request: decode::request(operation, raw.payload),
    })
}

/// Encode one response (docs/protocol.md §3, §4).
///
/// On failure the `{code, message}` object is both the envelope's `error`
/// and `payload.error`, next to the partial reply's fields when there is
/// one. The envelope is kept within `max_event_bytes` minus
/// [`STREAM_HEADROOM_BYTES`]: a run report's echoed `args` are cut first
/// (`args_truncated: true`), then its stdout/stderr tails (marked
/// truncated). No other field is dropped, so a response whose other fields
/// alone exceed the limit is returned as is and logged; see
/// [`encode_minimal`] for the last resort.
pub fn encode(response: &Response, max_event_bytes: usize) -> Encoded {
    encode::response(response, max_event_bytes)
}

/// Encode one live output event (`<prefix>.run.output`, docs/protocol.md §2/§4):
/// payload `{"run_id", "seq", "stream", "data"}`, plus `"note"` and
/// `"truncated": true` on the event that says live output stopped early.
/// `data` is at most 64 KiB of text, so the event is always far below the
/// size limit.
pub fn encode_output(output: &OutputEvent) -> Encoded {
    encode::output(output)
}

/// The smallest answer to `response`: its correlation id, the run id when
/// there is one, and an error saying why the full response could not be
/// delivered (the response's own error code when it had one, else
/// `internal`). For an Events API that refuses even a cut response (413).
pub fn encode_minimal(response: &Response, why: &str) -> Encoded {
    encode::minimal(response, why)
}
