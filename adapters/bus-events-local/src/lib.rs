//! `bus-events-local`: a local, in-memory implementation of the Bus Events
//! API for development, tests, the self-test and the quick start.
//!
//! It speaks the same HTTP contract as the real service:
//!
//! * `POST /api/v1/events` stores an event and fans it out, answering
//!   `{"accepted": true, "id", "name"}`;
//! * `GET /api/v1/events/stream` answers with NDJSON, one envelope per line,
//!   with `broadcast` delivery (every subscriber gets every event, with
//!   optional replay) or `unicast`/`work` delivery (each event goes to one
//!   connected consumer of each group, and waits for one while none is;
//!   a stream without `group` joins `default`);
//! * `GET /api/v1/events/capabilities` (no token needed) describes the
//!   server: backend, delivery modes, limits;
//! * event names are dot-separated segments of lowercase `[a-z0-9_-]`
//!   ([`validate_name`]);
//! * with [`ServerConfig::base_path`] (`bus api serve --token local`) all of
//!   it also answers under that prefix, e.g. `/local/v1/api/v1/events`;
//! * HS256 bearer tokens with audience [`AUDIENCE`] guard both, with the Bus
//!   scope rules of [`acl`]: `events:send` / `events:listen` for ordinary
//!   names, `container:read|run|delete|admin` for `bus.containers.*` and
//!   `bus.docker.*`; [`mint_token`] issues them;
//! * every stream is filtered by identity: it carries only events published
//!   with a token of the listener's own `sub` (stamped as `identity_id`).
//!
//! Nothing is persisted (the only backend is `memory`, bounded by bytes): a
//! restart forgets every event and group. Every queue is bounded, a
//! subscriber that stops reading is cut off, and names and groups nobody
//! uses any more are forgotten (see the `broker` module). It depends
//! on no other crate of the workspace, and nothing in the worker's domain
//! depends on it; tests and the binaries start it with [`serve`].
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use bus_events_local::{mint_token, serve, MintClaims, Secret, ServerConfig};
//!
//! let secret = Secret::parse("dev-secret").expect("non-empty");
//! let bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
//! let server = serve(ServerConfig::new(bind, secret.clone())).await?;
//! let token = mint_token(&secret, &MintClaims::new("me", "events:send events:listen"))
//!     .expect("signable");
//! println!("{} with {token}", server.base_url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout:
//!
//! * `secret` — [`Secret`], never printed;
//! * [`acl`] — which scope each event name needs;
//! * `auth` — token minting and verification;
//! * [`issue`] — `token issue`: claims from the command line, output formats;
//! * `name` — which event names are valid;
//! * `envelope` — the publish body and the stored envelope;
//! * `broker` — history, broadcast fan-out and unicast groups;
//! * `http` — axum routes, error bodies and the NDJSON stream;
//! * this file — configuration and the server's lifecycle.

pub mod acl;
mod auth;
mod broker;
mod envelope;
mod http;
pub mod issue;
mod name;
mod secret;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use auth::{mint_token, MintClaims, TokenError, AUDIENCE};
pub use broker::{Tracked, BROADCAST_BUFFER, UNICAST_QUEUE_CAPACITY};
pub use name::{validate_name, InvalidName};
pub use secret::{Secret, SecretError};

/// Default largest accepted publish body: 4 MiB.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Default number of events kept per name for replay and new groups.
pub const DEFAULT_RETENTION: usize = 10_000;
/// Default bytes of history kept across all names: 256 MiB.
pub const DEFAULT_HISTORY_BYTES: usize = 256 * 1024 * 1024;
/// Default bytes one unicast group may hold for absent consumers: 64 MiB.
pub const DEFAULT_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Default bytes one broadcast subscriber may have queued and unread: 64 MiB.
pub const DEFAULT_SUBSCRIBER_BYTES: usize = 64 * 1024 * 1024;
/// Default idle time after which a stream sends a blank keep-alive line.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// A path prefix the API also answers under: `--base-path` (default
/// `/{token}/v1`) with `{token}` replaced by `--token`, as `bus api serve`
/// lays it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePath(String);

/// Why a `--base-path` / `--token` pair was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBasePath {
    /// The template lacks the `{token}` placeholder.
    #[error("--base-path must contain `{{token}}`, got `{0}`")]
    NoPlaceholder(String),
    /// The token is empty or not URL-safe (`[A-Za-z0-9_.~-]`).
    #[error("--token must be a non-empty URL path segment of [A-Za-z0-9_.~-]")]
    Token,
    /// The path does not start with `/`, or has an empty, `.` or `..` segment.
    #[error("--base-path must be an absolute path without empty, `.` or `..` segments, got `{0}`")]
    Path(String),
}

impl BasePath {
    /// The default template of `bus api serve`.
    pub const DEFAULT_TEMPLATE: &'static str = "/{token}/v1";

    /// `template` with `{token}` replaced by `token`.
    ///
    /// # Errors
    ///
    /// [`InvalidBasePath`] naming what is wrong.
    pub fn new(template: &str, token: &str) -> Result<Self, InvalidBasePath> {
        if !template.contains("{token}") {
            return Err(InvalidBasePath::NoPlaceholder(template.to_owned()));
        }
        let token_ok = !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.~-".contains(&b));
        if !token_ok || token == "." || token == ".." {
            return Err(InvalidBasePath::Token);
        }
        let path = template.replace("{token}", token);
        let path = path.trim_end_matches('/');
        let segments_ok = path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
        if !segments_ok {
            return Err(InvalidBasePath::Path(template.to_owned()));
        }
        Ok(Self(path.to_owned()))
    }

    /// The path, e.g. `/local/v1` (no trailing `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BasePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to run a server. Build it with [`ServerConfig::new`] and adjust the
/// public fields.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
    /// HS256 secret that tokens must be signed with.
    pub secret: Secret,
    /// Largest accepted publish body; larger ones get 413.
    pub max_event_bytes: usize,
    /// Events kept per name for `replay=true` and for unicast groups that
    /// have no consumer yet; 0 keeps none.
    pub retention: usize,
    /// Bytes of history kept across all names (oldest evicted first).
    pub history_bytes: usize,
    /// Bytes one unicast group keeps for absent consumers (oldest dropped).
    pub group_bytes: usize,
    /// Bytes one broadcast subscriber may have queued and unread; past it
    /// the subscriber's stream is cut (one event is always accepted).
    pub subscriber_bytes: usize,
    /// Idle time after which a stream sends a blank line (`\n`); zero
    /// disables keep-alives.
    pub keepalive: Duration,
    /// A second path prefix the API also answers under (e.g. `/local/v1`
    /// for `bus api serve --token local`); `None` serves at the root only.
    pub base_path: Option<BasePath>,
}

impl ServerConfig {
    /// A configuration with the default limits.
    pub fn new(bind: SocketAddr, secret: Secret) -> Self {
        Self {
            bind,
            secret,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            retention: DEFAULT_RETENTION,
            history_bytes: DEFAULT_HISTORY_BYTES,
            group_bytes: DEFAULT_GROUP_BYTES,
            subscriber_bytes: DEFAULT_SUBSCRIBER_BYTES,
            keepalive: DEFAULT_KEEPALIVE,
            base_path: None,
        }
    }
}

/// A server running in the background. Dropping it stops the server without
/// waiting; [`RunningServer::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    shared: Arc<http::Shared>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://IP:PORT`, with a wildcard bind address replaced by loopback
    /// so the URL can be dialled.
    pub fn base_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Stops accepting, ends every open stream and waits until all
    /// connections are closed.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "server task failed");
            }
        }
    }

    /// Test hook: ends every stream that is open now, as if the connections
    /// had dropped, while the server keeps running. Unicast events handed to
    /// a cut stream but not yet written stay queued for the group.
    pub fn drop_streams(&self) {
        self.shared.drop_streams();
    }

    /// Diagnostic and test hook: the names, groups, subscribers and
    /// retained events the server holds right now.
    pub fn tracked(&self) -> Tracked {
        self.shared.broker.tracked()
    }

    /// Diagnostic and test hook: how many consumers of unicast `group` on
    /// event `name` have a stream open right now.
    pub fn connected_consumers(&self, name: &str, group: &str) -> usize {
        self.shared.broker.connected(name, group)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds `config.bind` and serves in a background task until the returned
/// handle is shut down or dropped.
///
/// # Errors
///
/// The I/O error of binding the listener.
pub async fn serve(config: ServerConfig) -> std::io::Result<RunningServer> {
    serve_with_shutdown(config, CancellationToken::new()).await
}

/// Like [`serve`], and also stops gracefully when `shutdown` is cancelled.
///
/// # Errors
///
/// The I/O error of binding the listener.
pub async fn serve_with_shutdown(
    config: ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.bind).await?;
    let local_addr = listener.local_addr()?;
    // Our own child, so that stopping this server never cancels the caller's
    // token, while cancelling the caller's token stops this server.
    let stop = shutdown.child_token();
    let shared = Arc::new(http::Shared {
        broker: broker::Broker::new(broker::Limits {
            retention: config.retention,
            history_bytes: config.history_bytes,
            group_events: UNICAST_QUEUE_CAPACITY,
            group_bytes: config.group_bytes,
            subscriber_bytes: config.subscriber_bytes,
        }),
        verifier: auth::Verifier::new(&config.secret),
        ids: envelope::EventIds::new(),
        keepalive: config.keepalive,
        max_event_bytes: config.max_event_bytes,
        limits: http::Advertised {
            max_event_bytes: config.max_event_bytes,
            retention: config.retention,
            history_bytes: config.history_bytes,
            group_bytes: config.group_bytes,
            subscriber_bytes: config.subscriber_bytes,
        },
        streams: Mutex::new(stop.child_token()),
        shutdown: stop.clone(),
    });

    let app = http::router(Arc::clone(&shared), config.base_path.as_ref());
    let stopped = stop.clone().cancelled_owned();
    let base_path = config.base_path.clone();
    let task = tokio::spawn(async move {
        tracing::info!(%local_addr, "bus events server listening");
        if let Some(base) = &base_path {
            tracing::info!(%local_addr, base_path = %base, "the API also answers under the base path");
        }
        // Open streams watch children of `stop`, so they end as soon as the
        // graceful shutdown starts and the connections can drain.
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::error!(error = %err, "bus events server failed");
        }
        tracing::info!(%local_addr, "bus events server stopped");
    });

    Ok(RunningServer {
        local_addr,
        shared,
        stop,
        task: Some(task),
    })
}
