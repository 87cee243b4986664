//! A long-lived subscription: one background task per event name that keeps
//! a stream open, reconnecting as needed, and feeds a bounded channel.
//!
//! The channel is what carries backpressure: when the consumer stops pulling
//! items the task stops reading the body, and TCP flow control slows the
//! server down.
//!
//! **A line read is a line handed on.** The Events API counts an event as
//! delivered once it is written to the stream, and it has no
//! acknowledgement: an event read off the socket and then dropped is lost
//! for good. So nothing here drops a parsed line: stopping never interrupts
//! handing a line to the consumer (only the consumer going away does),
//! and a stream asked to stop first hands on what has already arrived — the
//! rest of a line it has begun included, for up to [`STOP_DRAIN`] — before
//! it closes the connection. Only the bytes still on the wire when the
//! connection closes are beyond its reach (docs/protocol.md §5: closing a stream
//! with unread events in it loses them; the worker closes its streams only
//! at shutdown).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use url::Url;

use crate::client::{error_message, is_retryable, transport_failure, EventsClient};
use crate::config::BackoffState;
use crate::error::{Chain, StreamError};
use crate::ndjson::{End, LineFramer};
use crate::token::Bearer;
use crate::StreamItem;

/// Items buffered between the stream task and the consumer.
const CHANNEL_CAPACITY: usize = 64;

/// A connection that lasted this long counts as healthy: the next reconnect
/// starts again from the smallest delay.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(30);

/// How long a stream asked to stop waits for the rest of a line it has
/// begun before it closes the connection.
pub const STOP_DRAIN: Duration = Duration::from_secs(2);

/// How long a stream asked to stop keeps taking what has already arrived
/// (a server that never stops writing cannot hold up a shutdown).
const STOP_DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// How a stream asks the server to hand out events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    /// `delivery=unicast`: each event goes to one consumer of the group.
    Unicast,
    /// `delivery=work`: the older name of the same mode.
    Work,
}

impl DeliveryMode {
    /// The query-string value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unicast => "unicast",
            Self::Work => "work",
        }
    }
}

/// The items of one event name, as a [`futures_core::Stream`] of
/// `Result<StreamItem, StreamError>`.
///
/// * Opens `GET {base}/api/v1/events/stream?name=..&delivery=unicast&group=..&consumer=..`
///   (never with replay).
/// * A 400 to `delivery=unicast` switches this subscription to
///   `delivery=work` for good.
/// * On EOF (clean or cut mid-line), a network error, 408, 429 or 5xx it
///   reconnects after the stream backoff, logged at `info`. The backoff
///   restarts after a connection that delivered data or lasted 30 s.
/// * On 401/403 a token file is re-read; if the token changed it reconnects.
///   Otherwise a 403 (the token lacks this stream's scope) is yielded as
///   [`StreamError::Forbidden`] once, and the stream is asked for again
///   every `refused_retry` (about once a minute), silently, until the
///   server accepts it: a token re-granted the scope is picked up
///   ([`StreamStatus::refused`] says why it is refused meanwhile). A 401,
///   and other statuses that retrying cannot fix, are yielded once and end
///   the subscription.
/// * It ends when the cancellation token fires, after handing on what had
///   already arrived (see the module docs); dropping the subscription stops
///   the task too.
///
/// Malformed lines are logged at `warn` and yielded as
/// [`StreamItem::Malformed`]; the subscription keeps going.
#[derive(Debug)]
pub struct Subscription {
    items: mpsc::Receiver<Result<StreamItem, StreamError>>,
    shared: Arc<Shared>,
    _stop_on_drop: DropGuard,
}

#[derive(Debug, Default)]
struct Shared {
    connections: AtomicU64,
    work_mode: AtomicBool,
    /// A stream is open right now (accepted, body being read).
    open: AtomicBool,
    /// The server's last 403 while it refuses the stream; cleared when it
    /// accepts it.
    refused: Mutex<Option<StreamError>>,
}

/// A watch on one subscription's connection, for readiness probes and
/// metrics; it outlives nothing (a dropped subscription reads as closed).
#[derive(Clone, Debug)]
pub struct StreamStatus {
    shared: Arc<Shared>,
}

impl StreamStatus {
    /// Whether the server has accepted the stream and it has not ended.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// How many times the server accepted the stream (2xx) so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The server's refusal (403) while it refuses the stream: the
    /// subscription asks again every `refused_retry`.
    #[must_use]
    pub fn refused(&self) -> Option<StreamError> {
        self.shared.refused().clone()
    }
}

impl Shared {
    fn refused(&self) -> std::sync::MutexGuard<'_, Option<StreamError>> {
        self.refused.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mode(&self) -> DeliveryMode {
        if self.work_mode.load(Ordering::Relaxed) {
            DeliveryMode::Work
        } else {
            DeliveryMode::Unicast
        }
    }
}

impl Subscription {
    /// The next item; `None` once the subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<StreamItem, StreamError>> {
        self.items.recv().await
    }

    /// How many times the server accepted the stream (2xx) so far.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// The delivery mode in use: [`DeliveryMode::Work`] after the fallback.
    #[must_use]
    pub fn delivery_mode(&self) -> DeliveryMode {
        self.shared.mode()
    }

    /// A watch on this subscription's connection that can be kept after
    /// the subscription moves into a task.
    #[must_use]
    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Result<StreamItem, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_recv(cx)
    }
}

pub(crate) fn spawn(
    client: EventsClient,
    name: &str,
    group: &str,
    consumer: &str,
    cancel: &CancellationToken,
) -> Subscription {
    let (tx, items) = mpsc::channel(CHANNEL_CAPACITY);
    let shared = Arc::new(Shared::default());
    // A child token: dropping the subscription stops the task without
    // touching the caller's token.
    let stop = cancel.child_token();
    let url_for = |mode: DeliveryMode| {
        let mut url = client.inner.url.stream_endpoint().clone();
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("delivery", mode.as_str())
            .append_pair("group", group)
            .append_pair("consumer", consumer);
        url
    };
    let task = StreamTask {
        unicast_url: url_for(DeliveryMode::Unicast),
        work_url: url_for(DeliveryMode::Work),
        name: name.to_owned(),
        client,
        shared: Arc::clone(&shared),
        tx,
        stop: stop.clone(),
    };
    let ended = Arc::clone(&shared);
    tokio::spawn(async move {
        task.run().await;
        // Stopped mid-read: the stream is closed with the task.
        ended.open.store(false, Ordering::Relaxed);
    });
    Subscription {
        items,
        shared,
        _stop_on_drop: stop.drop_guard(),
    }
}

struct StreamTask {
    client: EventsClient,
    name: String,
    unicast_url: Url,
    work_url: Url,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<StreamItem, StreamError>>,
    stop: CancellationToken,
}

/// What to do after one connection attempt.
enum Next {
    /// The consumer went away.
    Stop,
    /// Connect again at once: the delivery mode or the token changed.
    RetryNow,
    /// Connect again after the backoff.
    Reconnect { reason: String, delivered: bool },
    /// The token lacks the scope (403): yield it once, ask again slowly.
    Refused(StreamError),
    /// Yield the error and end.
    Fatal(StreamError),
}

impl StreamTask {
    async fn run(self) {
        let mut backoff = BackoffState::new(self.client.inner.stream_backoff);
        while !self.stop.is_cancelled() {
            let started = Instant::now();
            match self.connect_and_read().await {
                Next::Stop => return,
                Next::RetryNow => {}
                Next::Fatal(error) => {
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => {}
                        _ = self.tx.send(Err(error)) => {}
                    }
                    return;
                }
                Next::Refused(error) => {
                    // Yielded once per refusal: the caller logs it once.
                    let first = self.shared.refused().replace(error.clone()).is_none();
                    if first {
                        tokio::select! {
                            biased;
                            () = self.stop.cancelled() => return,
                            sent = self.tx.send(Err(error)) => if sent.is_err() { return },
                        }
                    }
                    let delay = self.client.inner.refused_retry;
                    tracing::debug!(event = %self.name, delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "stream refused (403); asking again later");
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Next::Reconnect { reason, delivered } => {
                    if delivered || started.elapsed() >= HEALTHY_CONNECTION {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay();
                    tracing::info!(
                        event = %self.name,
                        reason = %reason,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "event stream ended; reconnecting",
                    );
                    tokio::select! {
                        biased;
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection: request, check the status, read the body to its end.
    async fn connect_and_read(&self) -> Next {
        let inner = &self.client.inner;
        let bearer = inner.tokens.current();
        let mode = self.shared.mode();
        let url = match mode {
            DeliveryMode::Unicast => &self.unicast_url,
            DeliveryMode::Work => &self.work_url,
        };
        let request = inner
            .http
            .get(url.clone())
            .header(AUTHORIZATION, bearer.header())
            .header(ACCEPT, "application/x-ndjson")
            .send();
        // Stopping before the server answered: nothing was read yet.
        let answered = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Next::Stop,
            answered = tokio::time::timeout(inner.request_timeout, request) => answered,
        };
        let response = match answered {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                return Next::Reconnect {
                    reason: Chain(&transport_failure(error)).to_string(),
                    delivered: false,
                }
            }
            Err(_) => {
                return Next::Reconnect {
                    reason: "no response headers within the request timeout".to_owned(),
                    delivered: false,
                }
            }
        };

        let status = response.status();
        if status.is_success() {
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            self.shared.open.store(true, Ordering::Relaxed);
            if self.shared.refused().take().is_some() {
                tracing::info!(event = %self.name, "event stream accepted: the token now has its scope");
            }
            tracing::debug!(event = %self.name, delivery = mode.as_str(), "event stream open");
            let next = self.read_body(response).await;
            self.shared.open.store(false, Ordering::Relaxed);
            return next;
        }
        let message = tokio::select! {
            biased;
            () = self.stop.cancelled() => return Next::Stop,
            message = tokio::time::timeout(inner.request_timeout, error_message(response)) => message.unwrap_or_default(),
        };
        self.on_error_status(status, message, mode, &bearer).await
    }

    async fn on_error_status(
        &self,
        status: StatusCode,
        message: String,
        mode: DeliveryMode,
        bearer: &Bearer,
    ) -> Next {
        let code = status.as_u16();
        match status {
            StatusCode::BAD_REQUEST if mode == DeliveryMode::Unicast => {
                // Runs at most once per subscription: the mode stays `work`.
                self.shared.work_mode.store(true, Ordering::Relaxed);
                tracing::warn!(
                    event = %self.name,
                    message = %message,
                    "the Events API refused delivery=unicast; using the older delivery=work",
                );
                Next::RetryNow
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                if self.client.inner.tokens.token_changed(bearer).await {
                    Next::RetryNow
                } else if status == StatusCode::UNAUTHORIZED {
                    Next::Fatal(StreamError::Unauthorized {
                        status: code,
                        message,
                    })
                } else {
                    Next::Refused(StreamError::Forbidden {
                        status: code,
                        message,
                    })
                }
            }
            _ if is_retryable(status) => Next::Reconnect {
                reason: format!("HTTP {code}: {message}"),
                delivered: false,
            },
            _ => Next::Fatal(StreamError::Rejected {
                status: code,
                message,
            }),
        }
    }

    /// Read the body to its end, handing on every line. When `stop` fires,
    /// take no more from the server than what has already arrived — what
    /// the body yields without waiting — and the rest of a begun line (for
    /// at most [`STOP_DRAIN`]), then close.
    async fn read_body(&self, response: reqwest::Response) -> Next {
        let max_line_bytes = self.client.inner.max_line_bytes;
        let mut framer = LineFramer::new(max_line_bytes);
        let mut body = response.bytes_stream();
        let mut delivered = false;
        let mut draining: Option<tokio::time::Instant> = None;
        loop {
            let next = match draining {
                None => tokio::select! {
                    biased;
                    () = self.stop.cancelled() => {
                        draining = Some(tokio::time::Instant::now());
                        continue;
                    }
                    next = body.next() => next,
                },
                Some(stopped) => {
                    let begun = framer.buffered_bytes() > 0;
                    let waited = if stopped.elapsed() >= STOP_DRAIN_LIMIT {
                        None
                    } else if begun {
                        // The rest of this line is on its way: wait for it.
                        tokio::time::timeout_at(stopped + STOP_DRAIN, body.next())
                            .await
                            .ok()
                    } else {
                        // Only what is there already.
                        futures_util::FutureExt::now_or_never(body.next())
                    };
                    match waited {
                        Some(next) => next,
                        None => {
                            if begun {
                                tracing::warn!(
                                    event = %self.name,
                                    partial_len = framer.buffered_bytes(),
                                    "stopping: the rest of a line did not arrive in time; its bytes are dropped",
                                );
                            }
                            return Next::Stop;
                        }
                    }
                }
            };
            let chunk = match next {
                Some(Ok(chunk)) => chunk,
                Some(Err(error)) => {
                    return Next::Reconnect {
                        reason: format!("reading the stream failed: {}", Chain(&error)),
                        delivered,
                    }
                }
                None => {
                    let reason = match framer.finish() {
                        End::Clean => "the server closed the stream".to_owned(),
                        End::CutMidLine { partial_len } => format!(
                            "the stream was cut mid-line; {partial_len} bytes of an unfinished line dropped"
                        ),
                    };
                    return Next::Reconnect { reason, delivered };
                }
            };
            delivered |= !chunk.is_empty();
            for frame in framer.push(&chunk) {
                let item = StreamItem::from_frame(&frame, max_line_bytes);
                if let StreamItem::Malformed {
                    name,
                    correlation_id,
                    reason,
                } = &item
                {
                    tracing::warn!(
                        event = %self.name,
                        line_name = name.as_deref().unwrap_or("-"),
                        correlation_id = correlation_id.as_deref().unwrap_or("-"),
                        reason = %reason,
                        "skipping an unusable stream line",
                    );
                }
                // Never given up for `stop`: a line read is a line handed on.
                if self.tx.send(Ok(item)).await.is_err() {
                    return Next::Stop;
                }
            }
        }
    }
}
