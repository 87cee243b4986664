//! `HttpSource` and `HttpPublisher`: the event ports over the Bus Events API, on top of the
//! transport client `bus-events-client`.
//!
//! The source opens one unicast subscription per request name and merges
//! them; each line is decoded by [`crate::codec`]. A line that cannot be
//! used but still names one of our requests and a correlation id becomes
//! an `Inbound` with a `bad_request` error so the caller gets an answer.
//!
//! # Every line read is handed on (docs/protocol.md §5)
//!
//! The Events API counts an event as delivered once it is written to a
//! stream; it has no acknowledgement and sends it to nobody else. So the
//! source reads every stream all the time and hands every request it reads
//! to the worker, whatever the worker's load: there is no pause, and no
//! path closes a stream because the worker is busy. A run the worker has
//! no room for is answered `capacity` at once; "intake open" is only an
//! observable (`runner.status`, metrics). Streams close only at shutdown
//! ([`EventSource::close`]), and then hand on what they had already read
//! (`bus-events-client`'s subscription finishes a begun line, too).
//!
//! # Refused streams (docs/protocol.md §9)
//!
//! A stream the Events API refuses with 403 (the token lacks its scope) is
//! logged once at error level naming the scope, asked for again about once
//! a minute (`ClientConfig::refused_retry`), and reported by
//! [`StreamsHealth`] (`/readyz`) and in `runner.status`. The other streams
//! go on; only when every stream is refused does the source end with a
//! fatal error: the worker could serve nothing.

use bus_docker_domain::error::{FieldError, PublishError, SourceError};
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::ports::{EventPublisher, EventSource};
use bus_docker_domain::request::Inbound;
use bus_docker_domain::response::Response;
use bus_docker_domain::runner::{StreamReport, StreamState};
use bus_docker_domain::{CorrelationId, EventPrefix, Operation};
use std::sync::Arc;

use bus_events_client::{EventsClient, StreamError, StreamItem, StreamStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::codec::{self, Decoded, RawInbound};

/// Where a worker listens.
#[derive(Clone, Debug)]
pub struct Listen {
    pub prefix: EventPrefix,
    pub group: String,
    pub consumer: String,
}

/// Names under these prefixes need a `container:*` scope (docs/protocol.md §1).
const PROTECTED_PREFIXES: [&str; 2] = ["bus.containers.", "bus.docker."];

/// The scope the Events API asks of a listener on `name` (docs/protocol.md §1):
/// `container:read` for status, `container:run` for run and input,
/// `container:delete` for delete, `container:admin` for `runner.*`, and
/// `events:listen` for names outside the protected prefixes.
#[must_use]
pub fn listen_scope(name: &str) -> &'static str {
    let Some(rest) = PROTECTED_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
    else {
        return "events:listen";
    };
    match rest.split('.').next().unwrap_or_default() {
        "status" => "container:read",
        "run" | "input" => "container:run",
        "delete" => "container:delete",
        _ => "container:admin",
    }
}

/// One line (or error) read off request stream number `stream`.
struct Arrival {
    stream: usize,
    item: Result<StreamItem, StreamError>,
}

/// The inbound side: every request name of the prefix, merged.
pub struct HttpSource {
    prefix: EventPrefix,
    rx: mpsc::Receiver<Arrival>,
    streams: StreamsHealth,
    /// Ends the subscriptions: fired by [`EventSource::close`] (and with
    /// the worker's stop signal, its parent).
    close: CancellationToken,
    /// A fatal error was returned: it is returned once.
    gave_up: bool,
}

/// One request stream's connection.
#[derive(Debug)]
struct Watched {
    name: String,
    scope: &'static str,
    status: StreamStatus,
}

impl Watched {
    fn refused(&self) -> Option<String> {
        self.status.refused().map(|e| e.to_string())
    }
}

/// The request streams' connections, read by readiness probes, metrics and
/// `runner.status`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct StreamsHealth {
    streams: Arc<[Watched]>,
}

impl StreamsHealth {
    /// The request names whose stream is not connected right now, refused
    /// ones excepted (see [`StreamsHealth::refused`]).
    pub fn disconnected(&self) -> Vec<&str> {
        self.streams
            .iter()
            .filter(|s| !s.status.is_open() && s.refused().is_none())
            .map(|s| s.name.as_str())
            .collect()
    }

    /// The request streams the Events API refuses (403), each with the
    /// scope it needs.
    pub fn refused(&self) -> Vec<(&str, &str)> {
        self.streams
            .iter()
            .filter(|s| s.refused().is_some())
            .map(|s| (s.name.as_str(), s.scope))
            .collect()
    }

    /// How many times a request stream was connected again after its
    /// first connection.
    pub fn reconnects(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.status.connections().saturating_sub(1))
            .sum()
    }

    /// Every stream's state, for `runner.status`.
    pub fn reports(&self) -> Vec<StreamReport> {
        self.streams
            .iter()
            .map(|s| StreamReport {
                name: s.name.clone(),
                state: match s.refused() {
                    Some(message) => StreamState::Refused {
                        scope: s.scope.to_owned(),
                        message,
                    },
                    None if s.status.is_open() => StreamState::Connected,
                    None => StreamState::Connecting,
                },
            })
            .collect()
    }

    /// Whether the Events API refuses every request stream.
    fn all_refused(&self) -> bool {
        !self.streams.is_empty() && self.streams.iter().all(|s| s.refused().is_some())
    }
}

/// The outbound side: publishes responses, retrying until accepted or
/// until `abandon` fires.
///
/// A response is never lost to its size: an Events API that answers 413
/// (payload too large) gets the response again, re-encoded within half the
/// size, down to [`MIN_EVENT_BUDGET`]; then a minimal error response that
/// still carries the correlation id (and, for a run, its id, status and
/// duration).
#[derive(Clone)]
pub struct HttpPublisher {
    client: EventsClient,
    abandon: CancellationToken,
    max_event_bytes: usize,
}

/// The smallest budget a 413 makes the publisher try before it falls back
/// to the minimal response.
pub const MIN_EVENT_BUDGET: usize = 64 * 1024;

/// HTTP 413 Payload Too Large.
const PAYLOAD_TOO_LARGE: u16 = 413;

impl HttpPublisher {
    /// A publisher on `client` whose retries stop when `abandon` fires,
    /// encoding events within `max_event_bytes`.
    pub fn new(client: &EventsClient, abandon: &CancellationToken, max_event_bytes: usize) -> Self {
        Self {
            client: client.clone(),
            abandon: abandon.clone(),
            max_event_bytes,
        }
    }

    fn publish_error(&self, err: &bus_events_client::PublishError) -> PublishError {
        if self.abandon.is_cancelled() {
            PublishError::Abandoned(err.to_string())
        } else if matches!(err.status(), Some(401 | 403)) {
            PublishError::Unauthorized(err.to_string())
        } else {
            PublishError::Rejected(err.to_string())
        }
    }
}

/// Open the subscriptions (they stop when `stop` fires, or when the source
/// is closed) and build the publisher (whose retries stop when `abandon`
/// fires).
pub fn connect(
    client: &EventsClient,
    listen: &Listen,
    stop: &CancellationToken,
    abandon: &CancellationToken,
) -> (HttpSource, HttpPublisher) {
    let (tx, rx) = mpsc::channel(64);
    let close = stop.child_token();
    let mut streams = Vec::new();
    for (index, op) in Operation::ALL.into_iter().enumerate() {
        let name = listen.prefix.request_name(op);
        let mut sub = client.subscribe(&name, &listen.group, &listen.consumer, close.clone());
        streams.push(Watched {
            scope: listen_scope(&name),
            status: sub.status(),
            name: name.clone(),
        });
        let tx = tx.clone();
        // No cancellation here: the subscription ends on `close` after
        // handing on what it read, and every item it hands on goes on.
        tokio::spawn(async move {
            while let Some(item) = sub.recv().await {
                if tx
                    .send(Arrival {
                        stream: index,
                        item,
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            debug!(name, "subscription ended");
        });
    }
    (
        HttpSource {
            prefix: listen.prefix.clone(),
            rx,
            streams: StreamsHealth {
                streams: streams.into(),
            },
            close,
            gave_up: false,
        },
        HttpPublisher::new(client, abandon, bus_events_client::DEFAULT_MAX_LINE_BYTES),
    )
}

impl HttpSource {
    /// A watch on the request streams' connections.
    pub fn health(&self) -> StreamsHealth {
        self.streams.clone()
    }

    fn inbound_of(&self, item: StreamItem) -> Option<Inbound> {
        match item {
            StreamItem::Event(env) => {
                let raw = RawInbound {
                    name: &env.name,
                    correlation_id: env.correlation_id.as_deref(),
                    stamped_owner: env.owner.as_deref(),
                    payload: &env.payload,
                };
                match codec::decode(&self.prefix, raw) {
                    Decoded::Request(inbound) => Some(inbound),
                    Decoded::Skip(reason) => {
                        warn!(name = %env.name, "skipping event: {reason}");
                        None
                    }
                }
            }
            StreamItem::Malformed {
                name,
                correlation_id,
                reason,
            } => {
                let answerable = name
                    .as_deref()
                    .and_then(|n| self.prefix.operation_of(n))
                    .zip(
                        correlation_id
                            .as_deref()
                            .and_then(|c| CorrelationId::parse(c).ok()),
                    );
                match answerable {
                    Some((operation, correlation)) => {
                        warn!(%correlation, "malformed request line, answering bad_request: {reason}");
                        Some(Inbound {
                            operation,
                            correlation,
                            stamped_owner: None,
                            request: Err(FieldError::new("payload", reason)),
                        })
                    }
                    None => {
                        warn!(?name, "skipping malformed line: {reason}");
                        None
                    }
                }
            }
        }
    }

    /// A stream's error: a refusal (403) is logged once here (the
    /// subscription reports it once and asks again slowly) and is fatal
    /// only when every stream is refused; anything else ends the worker.
    fn on_stream_error(&mut self, stream: usize, err: &StreamError) -> Option<SourceError> {
        let watched = &self.streams.streams[stream];
        if !matches!(err, StreamError::Forbidden { .. }) {
            let fatal = format!("{}: {err}", watched.name);
            return self.give_up(fatal);
        }
        error!(
            stream = %watched.name,
            missing_scope = watched.scope,
            "the Events API refuses the request stream {} (HTTP 403): the token lacks the scope `{}`; \
             its requests are not served, and it is asked for again about once a minute: {err}",
            watched.name,
            watched.scope,
        );
        if !self.streams.all_refused() {
            return None;
        }
        let each: Vec<String> = self
            .streams
            .refused()
            .iter()
            .map(|(name, scope)| format!("{name} (missing scope {scope})"))
            .collect();
        self.give_up(format!(
            "no request stream can be opened: the Events API refuses every one (HTTP 403); \
             the token lacks the scopes: {}",
            each.join(", ")
        ))
    }

    /// `Fatal(message)` the first time; nothing after that (the app loop
    /// is already stopping).
    fn give_up(&mut self, message: String) -> Option<SourceError> {
        if std::mem::replace(&mut self.gave_up, true) {
            debug!("{message}");
            return None;
        }
        Some(SourceError::Fatal(message))
    }
}

impl EventSource for HttpSource {
    async fn next_inbound(&mut self) -> Option<Result<Inbound, SourceError>> {
        loop {
            let Arrival { stream, item } = self.rx.recv().await?;
            match item {
                Ok(item) => {
                    if let Some(inbound) = self.inbound_of(item) {
                        return Some(Ok(inbound));
                    }
                }
                Err(err) => {
                    if let Some(fatal) = self.on_stream_error(stream, &err) {
                        return Some(Err(fatal));
                    }
                }
            }
        }
    }

    fn close(&mut self) {
        self.close.cancel();
    }
}

impl EventPublisher for HttpPublisher {
    async fn publish(&self, response: &Response) -> Result<(), PublishError> {
        let mut budget = self.max_event_bytes;
        loop {
            let event = codec::encode(response, budget);
            let err = match self.client.publish(&event, &self.abandon).await {
                Ok(()) => return Ok(()),
                Err(err) if err.status() == Some(PAYLOAD_TOO_LARGE) => err,
                Err(err) => return Err(self.publish_error(&err)),
            };
            let sent = event.wire_len();
            budget = budget.min(sent) / 2;
            if budget < MIN_EVENT_BUDGET {
                break;
            }
            warn!(
                correlation_id = %response.correlation,
                bytes = sent,
                retry_within = budget,
                "the Events API refused the response as too large (413); cutting it further: {err}"
            );
        }
        let why = "the full response was refused by the Events API as too large (HTTP 413)";
        warn!(
            correlation_id = %response.correlation,
            "{why}; publishing a minimal error response instead"
        );
        let minimal = codec::encode_minimal(response, why);
        self.client
            .publish(&minimal, &self.abandon)
            .await
            .map_err(|err| self.publish_error(&err))
    }

    async fn publish_output(&self, output: &OutputEvent) -> Result<(), PublishError> {
        let event = codec::encode_output(output);
        self.client
            .publish(&event, &self.abandon)
            .await
            .map_err(|err| self.publish_error(&err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_docker_domain::ErrorCode;

    fn source() -> HttpSource {
        let (_tx, rx) = mpsc::channel(1);
        HttpSource {
            prefix: EventPrefix::parse("bus.docker").unwrap(),
            rx,
            streams: StreamsHealth::default(),
            close: CancellationToken::new(),
            gave_up: false,
        }
    }

    #[test]
    fn each_stream_needs_the_scope_of_its_operation() {
        for (name, scope) in [
            ("bus.docker.status.request", "container:read"),
            ("bus.docker.run.request", "container:run"),
            ("bus.containers.input.request", "container:run"),
            ("bus.docker.delete.request", "container:delete"),
            ("bus.docker.runner.status.request", "container:admin"),
            ("bus.containers.runner.delete.request", "container:admin"),
            ("bus.t.x.run.request", "events:listen"),
            ("bus.dockerx.run.request", "events:listen"),
        ] {
            assert_eq!(listen_scope(name), scope, "{name}");
        }
    }

    #[test]
    fn a_malformed_line_naming_our_request_is_answered_bad_request() {
        let item = StreamItem::Malformed {
            name: Some("bus.docker.run.request".into()),
            correlation_id: Some("c-9".into()),
            reason: "line exceeds 4194304 bytes".into(),
        };
        let inbound = source().inbound_of(item).expect("answerable");
        assert_eq!(inbound.operation, Operation::Run);
        assert_eq!(inbound.correlation.as_str(), "c-9");
        let err = inbound.request.unwrap_err();
        assert_eq!(err.field(), "payload");
        assert_eq!(
            bus_docker_domain::OperationError::InvalidSpec(err).code(),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn unanswerable_lines_are_skipped() {
        for (name, correlation) in [
            (None, Some("c-1")),
            (Some("bus.docker.run.request"), None),
            (Some("bus.other.run.request"), Some("c-1")),
            (Some("bus.docker.run.request"), Some("bad\ncorrelation")),
        ] {
            let item = StreamItem::Malformed {
                name: name.map(Into::into),
                correlation_id: correlation.map(Into::into),
                reason: "not JSON".into(),
            };
            assert!(
                source().inbound_of(item).is_none(),
                "{name:?} {correlation:?}"
            );
        }
    }
}
