//! A small in-process fake of the Bus Events API, bound to `127.0.0.1:0`.
//!
//! Every request is reported to the test through a channel, so tests wait
//! on signals rather than sleeps. Streams are driven by the test: each
//! accepted stream hands the test a sender for its body.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bus_events_client::{Backoff, ClientConfig, EventsClient, EventsUrl, TokenSource};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test instead of hanging.
pub async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("timed out waiting")
}

/// A publish request as the fake saw it.
#[derive(Debug)]
pub struct Published {
    pub auth: Option<String>,
    pub content_type: Option<String>,
    pub body: Value,
    pub status: u16,
}

/// A stream request as the fake saw it. For an accepted stream (`status`
/// 200) `body` feeds the response; dropping it ends the response.
#[derive(Debug)]
pub struct StreamConn {
    pub query: HashMap<String, String>,
    pub auth: Option<String>,
    pub status: u16,
    body: Option<mpsc::Sender<Bytes>>,
}

impl StreamConn {
    /// Sends raw bytes on the stream body.
    pub async fn send(&self, bytes: impl Into<Bytes>) {
        let sender = self.body.as_ref().expect("stream was not accepted");
        within(sender.send(bytes.into()))
            .await
            .expect("the client went away");
    }

    /// Sends one NDJSON line (a newline is appended).
    pub async fn send_line(&self, line: &str) {
        self.send(format!("{line}\n")).await;
    }

    /// Ends the response body (a clean EOF for the client).
    pub fn close(self) {}

    /// Resolves when the client has dropped the connection.
    pub async fn client_gone(&self) {
        self.body
            .as_ref()
            .expect("stream was not accepted")
            .closed()
            .await;
    }

    pub fn delivery(&self) -> &str {
        self.query.get("delivery").map_or("", String::as_str)
    }
}

struct Shared {
    required_token: Mutex<Option<String>>,
    publish_statuses: Mutex<VecDeque<u16>>,
    stream_statuses: Mutex<VecDeque<u16>>,
    reject_unicast: AtomicBool,
    published: mpsc::UnboundedSender<Published>,
    streams: mpsc::UnboundedSender<StreamConn>,
}

impl Shared {
    fn authorized(&self, auth: Option<&str>) -> bool {
        match &*self.required_token.lock().unwrap() {
            None => true,
            Some(token) => auth == Some(format!("Bearer {token}").as_str()),
        }
    }
}

pub struct FakeEvents {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    published: mpsc::UnboundedReceiver<Published>,
    streams: mpsc::UnboundedReceiver<StreamConn>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEvents {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeEvents {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    /// Starts on a given address (used to bring a server up late).
    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener)
    }

    fn serve(listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (published_tx, published) = mpsc::unbounded_channel();
        let (streams_tx, streams) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            required_token: Mutex::new(None),
            publish_statuses: Mutex::new(VecDeque::new()),
            stream_statuses: Mutex::new(VecDeque::new()),
            reject_unicast: AtomicBool::new(false),
            published: published_tx,
            streams: streams_tx,
        });
        let app = Router::new()
            .route("/api/v1/events", post(publish))
            .route("/api/v1/events/stream", get(stream))
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            addr,
            shared,
            published,
            streams,
            server,
        }
    }

    /// The base URL in its bare-origin form.
    pub fn url(&self) -> EventsUrl {
        EventsUrl::parse(&format!("http://{}", self.addr)).unwrap()
    }

    /// Only this token is accepted; anything else gets 401.
    pub fn require_token(&self, token: &str) {
        *self.shared.required_token.lock().unwrap() = Some(token.to_owned());
    }

    /// Statuses for the next publishes, in order; 200 afterwards.
    pub fn script_publish(&self, statuses: &[u16]) {
        self.shared
            .publish_statuses
            .lock()
            .unwrap()
            .extend(statuses);
    }

    /// Statuses for the next streams, in order; 200 (open) afterwards.
    pub fn script_stream(&self, statuses: &[u16]) {
        self.shared.stream_statuses.lock().unwrap().extend(statuses);
    }

    /// Answer 400 to `delivery=unicast`, like an older server.
    pub fn reject_unicast(&self) {
        self.shared.reject_unicast.store(true, Ordering::SeqCst);
    }

    pub async fn next_publish(&mut self) -> Published {
        within(self.published.recv()).await.expect("server gone")
    }

    /// Publishes seen so far that the test has not taken yet.
    pub fn pending_publishes(&mut self) -> usize {
        let mut count = 0;
        while self.published.try_recv().is_ok() {
            count += 1;
        }
        count
    }

    pub async fn next_stream(&mut self) -> StreamConn {
        within(self.streams.recv()).await.expect("server gone")
    }
}

async fn publish(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let auth = header(&headers, AUTHORIZATION.as_str());
    let status = if shared.authorized(auth.as_deref()) {
        shared
            .publish_statuses
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(200)
    } else {
        401
    };
    let _ = shared.published.send(Published {
        auth,
        content_type: header(&headers, CONTENT_TYPE.as_str()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    });
    reply(status)
}

async fn stream(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let auth = header(&headers, AUTHORIZATION.as_str());
    let status = if !shared.authorized(auth.as_deref()) {
        401
    } else if shared.reject_unicast.load(Ordering::SeqCst)
        && query.get("delivery").map(String::as_str) == Some("unicast")
    {
        400
    } else {
        shared
            .stream_statuses
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(200)
    };
    if status != 200 {
        let _ = shared.streams.send(StreamConn {
            query,
            auth,
            status,
            body: None,
        });
        return reply(status);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let _ = shared.streams.send(StreamConn {
        query,
        auth,
        status,
        body: Some(tx),
    });
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

fn reply(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (status, format!("fake events api says {status}")).into_response()
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A client with small backoffs, suitable for tests.
pub fn client(url: EventsUrl, token: TokenSource) -> EventsClient {
    let mut config = ClientConfig::new(url, token);
    config.publish_backoff = Backoff {
        min: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    config.stream_backoff = config.publish_backoff;
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    EventsClient::new(config).expect("client builds")
}

pub fn static_token(token: &str) -> TokenSource {
    TokenSource::Static(bus_events_client::Secret::new(token))
}
