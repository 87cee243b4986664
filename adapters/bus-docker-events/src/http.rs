//! `HttpEvents`: the event ports over the Bus Events API, on top of the
//! transport client `bus-events-client`.
//!
//! The source opens one unicast subscription per request name and merges
//! them; each line is decoded by [`crate::codec`]. The run request stream
//! follows the worker's intake ([`crate::intake`]): it is connected only
//! while the worker has room for a run. A line that cannot be
//! used but still names one of our requests and a correlation id becomes
//! an `Inbound` with a `bad_request` error so the caller gets an answer.

use bus_docker_domain::error::{FieldError, PublishError, SourceError};
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::ports::{EventPublisher, EventSource};
use bus_docker_domain::request::Inbound;
use bus_docker_domain::response::Response;
use bus_docker_domain::{CorrelationId, EventPrefix, Operation};
use std::sync::Arc;

use bus_events_client::{EventsClient, StreamError, StreamItem, StreamStatus};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::codec::{self, Decoded, RawInbound};
use crate::intake::FollowsIntake;
use crate::run_stream::{forward_intake, GatedStatus, RunStream};

/// Where a worker listens.
#[derive(Clone, Debug)]
pub struct Listen {
    pub prefix: EventPrefix,
    pub group: String,
    pub consumer: String,
}

/// The inbound side: every request name of the prefix, merged.
pub struct HttpSource {
    prefix: EventPrefix,
    rx: mpsc::Receiver<Result<StreamItem, StreamError>>,
    streams: StreamsHealth,
    /// Open while the run stream may be connected; starts open and follows
    /// the worker's intake once [`FollowsIntake::follow_intake`] is called.
    run_gate: Arc<watch::Sender<bool>>,
}

/// One request stream's connection.
#[derive(Debug)]
enum Watched {
    Always(StreamStatus),
    /// The run stream: closed on purpose while intake is paused.
    Gated(Arc<GatedStatus>),
}

impl Watched {
    fn is_disconnected(&self) -> bool {
        match self {
            Self::Always(s) => !s.is_open(),
            Self::Gated(g) => g.is_disconnected(),
        }
    }

    fn reconnects(&self) -> u64 {
        match self {
            Self::Always(s) => s.connections().saturating_sub(1),
            Self::Gated(g) => g.reconnects(),
        }
    }
}

/// The request streams' connections, read by readiness probes and
/// metrics. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct StreamsHealth {
    streams: Arc<[(String, Watched)]>,
}

impl StreamsHealth {
    /// The request names whose stream is not connected right now. A run
    /// stream closed because intake is paused (the worker is full) is not
    /// counted: that is the worker working as intended.
    pub fn disconnected(&self) -> Vec<&str> {
        self.streams
            .iter()
            .filter(|(_, s)| s.is_disconnected())
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// How many times a request stream was connected again after its
    /// first connection (resuming after a paused intake is not counted).
    pub fn reconnects(&self) -> u64 {
        self.streams.iter().map(|(_, s)| s.reconnects()).sum()
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

/// Open the subscriptions (they stop when `stop` fires) and build the
/// publisher (whose retries stop when `abandon` fires).
pub fn connect(
    client: &EventsClient,
    listen: &Listen,
    stop: &CancellationToken,
    abandon: &CancellationToken,
) -> (HttpSource, HttpPublisher) {
    let (tx, rx) = mpsc::channel(64);
    let mut streams = Vec::new();
    let run_gate = Arc::new(watch::Sender::new(true));
    for op in Operation::ALL {
        let name = listen.prefix.request_name(op);
        if op == Operation::Run {
            let status = Arc::new(GatedStatus::default());
            streams.push((name.clone(), Watched::Gated(Arc::clone(&status))));
            let task = RunStream {
                client: client.clone(),
                name,
                listen: listen.clone(),
                stop: stop.clone(),
                gate: run_gate.subscribe(),
                tx: tx.clone(),
                status,
            };
            tokio::spawn(task.run());
            continue;
        }
        let mut sub = client.subscribe(&name, &listen.group, &listen.consumer, stop.clone());
        streams.push((name.clone(), Watched::Always(sub.status())));
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(item) = sub.recv().await {
                if tx.send(item).await.is_err() {
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
            run_gate,
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
}

impl FollowsIntake for HttpSource {
    fn follow_intake(&mut self, intake: watch::Receiver<bool>) {
        forward_intake(intake, Arc::clone(&self.run_gate));
    }
}

impl EventSource for HttpSource {
    async fn next_inbound(&mut self) -> Option<Result<Inbound, SourceError>> {
        loop {
            match self.rx.recv().await? {
                Ok(item) => {
                    if let Some(inbound) = self.inbound_of(item) {
                        return Some(Ok(inbound));
                    }
                }
                Err(err) => return Some(Err(SourceError::Fatal(err.to_string()))),
            }
        }
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
            run_gate: Arc::new(watch::Sender::new(true)),
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
