//! A transport-level client for the Bus Events API.
//!
//! It publishes JSON envelopes (`POST /api/v1/events`) and subscribes to
//! NDJSON event streams (`GET /api/v1/events/stream`), handling the parts of
//! the contract that are about transport: URL normalisation, the bearer
//! token and its rotation, retries with capped exponential backoff and
//! jitter, reconnects, the `unicast` → `work` delivery fallback, framing with
//! a line-length limit, and both spellings of the correlation id.
//!
//! It knows nothing about Docker or the worker's payloads: those stay
//! `serde_json::Value` here and are converted by the events adapter. It must
//! not depend on the domain crate or on any Docker library.
//!
//! Logging: what the client handles itself (publish retries, reconnects, the
//! delivery fallback, skipped lines) it logs; errors it returns or yields are
//! the caller's to log. The token is never logged.
//!
//! ```no_run
//! use bus_events_client::{
//!     CancellationToken, ClientConfig, EventsClient, EventsUrl, OutboundEvent, StreamItem,
//!     TokenSource,
//! };
//! use futures_util::StreamExt as _;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let url = EventsUrl::parse("http://127.0.0.1:8081")?;
//! let token = TokenSource::File("/run/secrets/bus-token".into());
//! let client = EventsClient::new(ClientConfig::new(url, token))?;
//! let shutdown = CancellationToken::new();
//!
//! let mut requests = client.subscribe(
//!     "bus.docker.run.request",
//!     "bus-integration-docker",
//!     "host-1234",
//!     shutdown.clone(),
//! );
//! while let Some(item) = requests.next().await {
//!     match item? {
//!         StreamItem::Event(envelope) => {
//!             let reply = OutboundEvent {
//!                 name: "bus.docker.run.response".to_owned(),
//!                 correlation_id: envelope.correlation_id.unwrap_or_default(),
//!                 payload: serde_json::json!({"status": "succeeded"}),
//!                 error: None,
//!             };
//!             client.publish(&reply, &shutdown).await?;
//!         }
//!         StreamItem::Malformed { .. } => { /* answer bad_request if ids are known */ }
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//!
//! | module | role |
//! |---|---|
//! | [`ndjson`] | [`LineFramer`]: bytes → lines, with a maximum length |
//! | `endpoint` | [`EventsUrl`]: base URL normalisation |
//! | `token` | [`TokenLookup`], [`TokenSource`], [`Secret`]; cached token, re-read on 401 |
//! | `config` | [`ClientConfig`], [`Backoff`] |
//! | `envelope` | [`OutboundEvent`], [`Envelope`], [`StreamItem`] decoding |
//! | `client` | [`EventsClient`]: publish |
//! | `subscription` | [`Subscription`]: the reconnecting stream task |
//! | `error` | one error enum per operation |

mod client;
mod config;
mod endpoint;
mod envelope;
mod error;
pub mod ndjson;
mod subscription;
mod token;

pub use client::EventsClient;
pub use config::{Backoff, ClientConfig, DEFAULT_MAX_LINE_BYTES, REFUSED_STREAM_RETRY};
pub use endpoint::{redact_url, EventsUrl, UrlError};
pub use envelope::{Envelope, OutboundEvent, StreamItem};
pub use error::{BoxError, ClientError, PublishError, RequestFailure, StreamError};
pub use ndjson::{End, Frame, LineFramer};
pub use subscription::{DeliveryMode, StreamStatus, Subscription};
pub use token::{Secret, TokenError, TokenLookup, TokenOrigin, TokenSource};
pub use tokio_util::sync::CancellationToken;
