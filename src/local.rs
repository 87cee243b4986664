//! An in-process local Events API (`bus-events-local`) with a fresh secret
//! and a minted token: what `--self-test`, `demo` and the tests run the
//! real event path against.
//!
//! The server enforces the Bus scope rules and filters streams by identity,
//! so the token is exactly what a worker is given in production
//! ([`WORKER_SCOPES`]) and callers share the worker's identity
//! ([`LOCAL_IDENTITY`]), as in a compose stack.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bus_events_client::{
    ClientConfig, EventsClient, EventsUrl, Secret as ClientSecret, TokenSource,
};
use bus_events_local::{mint_token, serve, MintClaims, RunningServer, Secret, ServerConfig};

/// The scopes a worker needs for the default prefixes (`bus.containers`,
/// `bus.docker`) and for a custom unprotected prefix: no more.
pub const WORKER_SCOPES: &str =
    "events:send events:listen container:read container:run container:delete container:admin";

/// The identity the local bus's token is minted for: the worker and its
/// callers share it, as every service shares `BUS_LOCAL_ACCOUNT_ID` in the
/// compose stack.
pub const LOCAL_IDENTITY: &str = "local-operator";

/// A running local Events API and a token for it.
pub struct LocalBus {
    server: RunningServer,
    secret: Secret,
    token: String,
}

impl std::fmt::Debug for LocalBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBus")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

/// Why the local bus could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalBusError {
    #[error("binding the local events server: {0}")]
    Bind(#[from] std::io::Error),
    #[error("the local events server's secret")]
    Secret(#[from] bus_events_local::SecretError),
    #[error("minting a token for the local events server")]
    Mint(#[from] bus_events_local::TokenError),
    #[error("the local events server's URL")]
    Url(#[from] bus_events_client::UrlError),
    #[error("a client of the local events server")]
    Client(#[from] bus_events_client::ClientError),
}

fn random_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "local-{nanos:x}-{:x}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

impl LocalBus {
    /// The worker binary `bin` as a child process on this bus: a docker
    /// worker with runner name `runner` on event prefix `prefix`, with no
    /// colour in its logs and no configuration file but what the caller
    /// adds. Callers add their own settings and stdio, then spawn it; the
    /// integration tests and the benchmark both start workers this way.
    pub fn worker_command(
        &self,
        bin: &std::path::Path,
        runner: &str,
        prefix: &str,
    ) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(bin);
        command
            .env("BUS_EVENTS_API_URL", self.url())
            .env("BUS_API_TOKEN", self.token())
            .env("BUS_DOCKER_PROVIDER", "docker")
            .env("BUS_DOCKER_EVENT_PREFIX", prefix)
            .env("BUS_DOCKER_RUNNER_NAME", runner)
            .env("NO_COLOR", "1")
            .env_remove("BUS_DOCKER_CONFIG")
            .kill_on_drop(true);
        command
    }

    /// Start on 127.0.0.1 with a random port and secret.
    ///
    /// # Errors
    /// The server cannot bind, or the token cannot be minted.
    pub async fn start() -> Result<Self, LocalBusError> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Start on `addr` with a random secret.
    ///
    /// # Errors
    /// See [`LocalBus::start`].
    pub async fn start_on(addr: SocketAddr) -> Result<Self, LocalBusError> {
        let secret = Secret::parse(&random_secret())?;
        let server = serve(ServerConfig::new(addr, secret.clone())).await?;
        let token = mint_token(&secret, &MintClaims::new(LOCAL_IDENTITY, WORKER_SCOPES))?;
        Ok(Self {
            server,
            secret,
            token,
        })
    }

    pub fn url(&self) -> String {
        self.server.base_url()
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// A token with [`WORKER_SCOPES`] for another identity: its streams
    /// only see events published with tokens of that identity.
    ///
    /// # Errors
    /// Minting failed.
    pub fn token_for(&self, sub: &str, ttl: Duration) -> Result<String, LocalBusError> {
        let mut claims = MintClaims::new(sub, WORKER_SCOPES);
        claims.ttl = ttl;
        Ok(mint_token(&self.secret, &claims)?)
    }

    /// A token of this bus's identity with exactly `scopes` (space
    /// separated), e.g. a worker token that lacks a container scope.
    ///
    /// # Errors
    /// Minting failed.
    pub fn token_with_scopes(&self, scopes: &str) -> Result<String, LocalBusError> {
        Ok(mint_token(
            &self.secret,
            &MintClaims::new(LOCAL_IDENTITY, scopes),
        )?)
    }

    /// A client of this bus with the given token and fast retries.
    ///
    /// # Errors
    /// The client cannot be built.
    pub fn client_with(&self, token: &str) -> Result<EventsClient, LocalBusError> {
        let url = EventsUrl::parse(&self.url())?;
        let mut config = ClientConfig::new(
            url,
            TokenSource::Static(ClientSecret::new(token.to_owned())),
        );
        config.stream_backoff.min = Duration::from_millis(50);
        config.stream_backoff.max = Duration::from_millis(500);
        config.publish_backoff.min = Duration::from_millis(50);
        config.publish_backoff.max = Duration::from_millis(500);
        Ok(EventsClient::new(config)?)
    }

    /// A client with the operator token.
    ///
    /// # Errors
    /// The client cannot be built.
    pub fn client(&self) -> Result<EventsClient, LocalBusError> {
        self.client_with(&self.token)
    }

    /// Wait until at least `n` consumers of `group` listen on `name`, up
    /// to `timeout`; returns whether they do. A unicast group exists once
    /// its first consumer connected, so callers wait before publishing.
    pub async fn wait_consumers(
        &self,
        name: &str,
        group: &str,
        n: usize,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.server().connected_consumers(name, group) >= n {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }

    /// Stop the server and start a fresh one (empty memory backend) on the
    /// same address with the same secret, so tokens stay valid: an Events
    /// API restart, for fault tests.
    ///
    /// # Errors
    /// The address cannot be bound again.
    pub async fn restart(self, down_for: Duration) -> Result<Self, LocalBusError> {
        let addr = self.server.local_addr();
        let Self {
            server,
            secret,
            token,
        } = self;
        server.shutdown().await;
        tokio::time::sleep(down_for).await;
        let server = serve(ServerConfig::new(addr, secret.clone())).await?;
        Ok(Self {
            server,
            secret,
            token,
        })
    }
}
