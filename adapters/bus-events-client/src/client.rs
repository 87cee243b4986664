//! [`EventsClient`]: one HTTP client shared by publishes and subscriptions.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

use crate::config::BackoffState;
use crate::error::{Chain, ClientError, PublishError, RequestFailure};
use crate::subscription::{self, Subscription};
use crate::token::{Bearer, Tokens};
use crate::{Backoff, ClientConfig, EventsUrl, OutboundEvent};

/// How much of an error response body is kept for the error message.
const ERROR_BODY_BYTES: usize = 1024;

/// Dead peers on an idle stream are found by TCP keep-alive, since the body
/// of a stream has no read timeout.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// A client of the Bus Events API. Cloning is cheap and shares the
/// connection pool and the cached token.
#[derive(Clone)]
pub struct EventsClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) http: reqwest::Client,
    pub(crate) tokens: Tokens,
    pub(crate) url: EventsUrl,
    pub(crate) publish_backoff: Backoff,
    pub(crate) stream_backoff: Backoff,
    pub(crate) max_line_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) refused_retry: Duration,
}

impl std::fmt::Debug for EventsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsClient")
            .field("url", &self.inner.url)
            .finish_non_exhaustive()
    }
}

impl EventsClient {
    /// Builds the client and reads the token (a token file is read here,
    /// synchronously, once).
    ///
    /// # Errors
    ///
    /// [`ClientError::Token`] when the token is missing, empty or not usable
    /// in a header; [`ClientError::Http`] when the HTTP client cannot be built.
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let tokens = Tokens::load(&config.token)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_keepalive(TCP_KEEPALIVE)
            // A redirect would silently turn a POST into a GET; report it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("bus-events-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ClientError::Http(Box::new(error)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                tokens,
                url: config.url,
                publish_backoff: config.publish_backoff,
                stream_backoff: config.stream_backoff,
                max_line_bytes: config.max_line_bytes,
                request_timeout: config.request_timeout,
                refused_retry: config.refused_retry,
            }),
        })
    }

    /// The Events API this client talks to.
    #[must_use]
    pub fn url(&self) -> &EventsUrl {
        &self.inner.url
    }

    /// One publish attempt: `POST {base}/api/v1/events`. On 401 a token file
    /// is re-read and, if it changed, the request is sent once more.
    ///
    /// # Errors
    ///
    /// [`PublishError::Retryable`] for 5xx, 429, network errors and
    /// timeouts; [`PublishError::Permanent`] for any other non-2xx answer
    /// (408 included: the contract retries only 5xx, 429 and network errors)
    /// (401 included once the token is known not to have changed);
    /// [`PublishError::Encode`] if the event cannot be serialised.
    pub async fn publish_once(&self, event: &OutboundEvent) -> Result<(), PublishError> {
        let body = Bytes::from(serde_json::to_vec(event).map_err(PublishError::Encode)?);
        let bearer = self.inner.tokens.current();
        let first = self.post(body.clone(), &bearer).await;
        let unauthorized = matches!(&first, Err(error) if error.status() == Some(401));
        if unauthorized && self.inner.tokens.token_changed(&bearer).await {
            return self.post(body, &self.inner.tokens.current()).await;
        }
        first
    }

    /// Publishes `event`, retrying retryable failures with capped
    /// exponential backoff and jitter, each retry logged at `warn`.
    ///
    /// A response must survive an Events API restart, so there is no retry
    /// limit: only success, a permanent error or `cancel` ends the loop.
    ///
    /// # Errors
    ///
    /// [`PublishError::Permanent`] or [`PublishError::Encode`] as from
    /// [`Self::publish_once`]; [`PublishError::Canceled`] once `cancel` fires
    /// (also when it had fired before the call).
    pub async fn publish(
        &self,
        event: &OutboundEvent,
        cancel: &CancellationToken,
    ) -> Result<(), PublishError> {
        let mut backoff = BackoffState::new(self.inner.publish_backoff);
        let mut attempt: u32 = 1;
        loop {
            let result = tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(PublishError::Canceled),
                result = self.publish_once(event) => result,
            };
            let failure = match result {
                Err(PublishError::Retryable(failure)) => failure,
                done => return done,
            };
            let delay = backoff.next_delay();
            tracing::warn!(
                event = %event.name,
                correlation_id = %event.correlation_id,
                attempt,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %Chain(&failure),
                "publishing an event failed; retrying",
            );
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(PublishError::Canceled),
                () = tokio::time::sleep(delay) => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// Opens a long-lived subscription to the event `name` as `consumer` in
    /// `group`. See [`Subscription`] for reconnects, the delivery-mode
    /// fallback and how it ends.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (the subscription runs as a task).
    #[must_use]
    pub fn subscribe(
        &self,
        name: &str,
        group: &str,
        consumer: &str,
        cancel: CancellationToken,
    ) -> Subscription {
        subscription::spawn(self.clone(), name, group, consumer, &cancel)
    }

    async fn post(&self, body: Bytes, bearer: &Bearer) -> Result<(), PublishError> {
        let response = self
            .inner
            .http
            .post(self.inner.url.publish_endpoint().clone())
            .header(AUTHORIZATION, bearer.header())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.inner.request_timeout)
            .body(body)
            .send()
            .await
            .map_err(|error| PublishError::Retryable(transport_failure(error)))?;
        let status = response.status();
        if status.is_success() {
            // Drain the (small) body so the connection can be reused.
            let _ = response.bytes().await;
            return Ok(());
        }
        let failure = RequestFailure::Status {
            status: status.as_u16(),
            message: error_message(response).await,
        };
        if is_retryable_publish(status) {
            Err(PublishError::Retryable(failure))
        } else {
            Err(PublishError::Permanent(failure))
        }
    }
}

/// A publish is retried on 5xx and 429 only (docs/protocol.md §1): 408, like any
/// other 4xx, is final.
pub(crate) fn is_retryable_publish(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// A stream reconnects on 5xx, 408 and 429: the server's trouble, not the
/// request's (a reconnect cannot duplicate anything).
pub(crate) fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

pub(crate) fn transport_failure(error: reqwest::Error) -> RequestFailure {
    if error.is_timeout() {
        RequestFailure::Timeout
    } else {
        RequestFailure::Transport(Box::new(error))
    }
}

/// The first [`ERROR_BODY_BYTES`] of an error response, as text.
pub(crate) async fn error_message(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(ERROR_BODY_BYTES);
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        response
            .status()
            .canonical_reason()
            .unwrap_or("no message")
            .to_owned()
    } else {
        text.to_owned()
    }
}
