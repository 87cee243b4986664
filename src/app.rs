//! The composition root: builds the adapters from settings and runs the
//! intake loop until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bus_docker_domain::container::EngineId;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, EventSource};
use bus_docker_domain::SourceError;
use bus_docker_engine::{DockerEngine, EngineOptions};
use bus_docker_events::http::{self, HttpPublisher, HttpSource, Listen, StreamsHealth};
use bus_docker_static::StaticRuntime;
use bus_events_client::{Backoff, ClientConfig, EventsClient, EventsUrl, TokenLookup, TokenSource};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{Provider, Settings};
use crate::runtime::AnyRuntime;
use bus_docker_service::pool::EnginePool;
use bus_docker_service::worker::{Lifecycle, Worker};

/// Why the app could not start or had to stop. Each variant keeps its
/// cause as `source()`; [`report`] prints the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no Events API token")]
    Token(#[source] bus_events_client::TokenError),
    #[error("no Events API URL: set --events-url or BUS_EVENTS_API_URL")]
    NoEventsUrl,
    #[error("events url {url:?} cannot be used")]
    EventsUrl {
        url: String,
        #[source]
        source: bus_events_client::UrlError,
    },
    #[error("docker engine client")]
    Docker(#[source] Box<bus_docker_engine::DockerError>),
    #[error("events api client")]
    Events(#[source] bus_events_client::ClientError),
    #[error("the events api refused this worker (check the token and its scopes): {0}")]
    Unauthorized(String),
    #[error("metrics_addr {addr}: cannot listen")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Some errors repeat their source's text in their own message.
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

/// The token source, first hit wins (docs/protocol.md §1): `--token-file` /
/// `BUS_API_TOKEN_FILE`, `BUS_API_TOKEN`, then
/// `$BUS_CONFIG_DIR/auth/api-token` or `~/.config/bus/auth/api-token`.
/// Logs which source was used, never the token.
///
/// # Errors
/// `Token` when none holds a token.
pub fn token_source(settings: &Settings) -> Result<TokenSource, AppError> {
    let lookup = TokenLookup::from_env(settings.events.token_file.clone());
    let (source, origin) = lookup.resolve().map_err(AppError::Token)?;
    info!(source = %origin, "events api token");
    Ok(source)
}

/// The Events API client from settings.
///
/// # Errors
/// `NoEventsUrl`, `EventsUrl` for a bad URL, `Token` for a missing token,
/// `Events` when the client cannot be built.
pub fn events_client(settings: &Settings) -> Result<EventsClient, AppError> {
    let url = settings
        .events
        .url
        .as_deref()
        .ok_or(AppError::NoEventsUrl)?;
    let url = EventsUrl::parse(url).map_err(|source| AppError::EventsUrl {
        // Never the text as given: it may carry a password (issue 16, 8a).
        url: bus_events_client::redact_url(url),
        source,
    })?;
    let mut config = ClientConfig::new(url, token_source(settings)?);
    config.stream_backoff = Backoff {
        min: settings.events.listener_retry_min,
        max: settings
            .events
            .listener_retry_max
            .max(settings.events.listener_retry_min),
    };
    config.publish_backoff.max = settings
        .events
        .publish_retry_max
        .max(config.publish_backoff.min);
    EventsClient::new(config).map_err(AppError::Events)
}

/// The engines chosen by `provider`: for `docker`, one [`DockerEngine`] per
/// configured host, in order (the engine pool, docs/protocol.md §5); for
/// `static`, the deterministic runtime alone.
///
/// # Errors
/// `Docker` when an engine client cannot be built (not when an engine is
/// merely down: that is reported per request and in `runner.status`).
pub fn runtime(settings: &Settings) -> Result<EnginePool<AnyRuntime>, AppError> {
    let mounts = &settings.worker.policy.mounts;
    if settings.provider == Provider::Static {
        return Ok(EnginePool::from(AnyRuntime::Static(StaticRuntime::new())));
    }
    let mut engines = Vec::with_capacity(settings.docker_hosts.len());
    for host in &settings.docker_hosts {
        let engine = DockerEngine::connect(EngineOptions {
            docker_host: Some(host.url.clone()),
            tls: host.tls.clone(),
            mount_staging_dir: Some(settings.mount_staging_dir.clone()),
            allowed_mount_roots: mounts.allowed_roots().to_vec(),
            protected_paths: mounts
                .protected()
                .iter()
                .map(|p| p.path().to_owned())
                .collect(),
            pull_timeout: settings.pull_timeout,
            ..EngineOptions::default()
        })
        .map_err(|e| AppError::Docker(Box::new(e)))?;
        let id = EngineId::new(bus_docker_engine::display_host(&host.url));
        engines.push((id, AnyRuntime::Docker(engine)));
    }
    Ok(EnginePool::new(engines, settings.max_runs_per_engine))
}

fn default_consumer() -> String {
    let host: String = crate::config::host_name()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(64)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// A wired worker and its event source.
pub struct App<R, S, P> {
    worker: Worker<R, P>,
    source: S,
    shutdown_grace: Duration,
    ops: Ops,
}

/// The opt-in metrics and health listener, and what it watches.
struct Ops {
    addr: Option<SocketAddr>,
    listener: Option<std::net::TcpListener>,
    streams: Option<StreamsHealth>,
    stop: CancellationToken,
}

impl App<AnyRuntime, HttpSource, HttpPublisher> {
    /// Wire the production adapters.
    ///
    /// # Errors
    /// See [`events_client`] and [`runtime`].
    pub fn build(settings: &Settings) -> Result<Self, AppError> {
        let runtime = runtime(settings)?;
        let client = events_client(settings)?;
        let consumer = settings
            .events
            .consumer
            .clone()
            .unwrap_or_else(default_consumer);
        Ok(Self::over_http(settings, runtime, &client, consumer))
    }
}

impl<R: ContainerRuntime> App<R, HttpSource, HttpPublisher> {
    /// Wire `runtime` to the Events API behind `client`, listening as
    /// `consumer` of the configured group: the one listen → connect →
    /// build sequence for the service, the one-shot commands and tests.
    pub fn over_http(
        settings: &Settings,
        runtime: impl Into<EnginePool<R>>,
        client: &EventsClient,
        consumer: String,
    ) -> Self {
        let lifecycle = Lifecycle::default();
        let listen = Listen {
            prefix: settings.worker.prefix.clone(),
            group: settings.events.group.clone(),
            consumer,
        };
        let (source, publisher) = http::connect(
            client,
            &listen,
            &lifecycle.stopping(),
            &lifecycle.abandoned(),
        );
        let runtime = runtime.into();
        let engines: Vec<String> = runtime.engines().map(ToString::to_string).collect();
        info!(prefix = %listen.prefix, group = %listen.group, consumer = %listen.consumer, provider = runtime.provider(), engines = ?engines, "worker listening");
        let streams = source.health();
        let mut app = Self::build_with(settings, runtime, source, publisher, lifecycle);
        let probe = streams.clone();
        app.worker
            .watch_streams(std::sync::Arc::new(move || probe.reports()));
        app.ops.streams = Some(streams);
        app
    }
}

impl<R: ContainerRuntime, S: EventSource, P: EventPublisher> App<R, S, P> {
    /// Wire given adapters (tests inject fakes here). The source must stop
    /// when `lifecycle.stopping` fires or when it is closed, handing on what
    /// it had taken; the publisher must give up when `lifecycle.abandon`
    /// fires. The source hands on every request whatever the worker's load:
    /// a run it has no room for is answered `capacity` (docs/protocol.md §5).
    pub fn build_with(
        settings: &Settings,
        runtime: impl Into<EnginePool<R>>,
        source: S,
        publisher: P,
        lifecycle: Lifecycle,
    ) -> Self {
        let ops = Ops {
            addr: settings.metrics_addr,
            listener: None,
            streams: None,
            stop: lifecycle.stopping(),
        };
        let worker = Worker::new(runtime, publisher, settings.worker.clone(), lifecycle);
        Self {
            worker,
            source,
            shutdown_grace: settings.shutdown_grace,
            ops,
        }
    }

    /// Open the metrics listener when `metrics_addr` is set (once; `run_until`
    /// does it too) and return its address: with port 0 the bound one.
    ///
    /// # Errors
    /// `Metrics` when the address cannot be bound.
    pub fn bind_metrics(&mut self) -> Result<Option<SocketAddr>, AppError> {
        if self.ops.listener.is_none() {
            if let Some(addr) = self.ops.addr {
                let listener = crate::health::bind(addr)
                    .map_err(|source| AppError::Metrics { addr, source })?;
                self.ops.listener = Some(listener);
            }
        }
        self.ops
            .listener
            .as_ref()
            .map(std::net::TcpListener::local_addr)
            .transpose()
            .map_err(|source| AppError::Metrics {
                addr: self.ops.addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into()),
                source,
            })
    }

    /// Start the metrics and health listener, if configured.
    fn serve_metrics(&mut self) -> Result<(), AppError> {
        self.bind_metrics()?;
        let Some(listener) = self.ops.listener.take() else {
            return Ok(());
        };
        let addr = self.ops.addr.unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let watch = crate::health::Watch {
            streams: self.ops.streams.clone(),
            stop: self.ops.stop.clone(),
        };
        crate::health::spawn(listener, &self.worker, watch)
            .map_err(|source| AppError::Metrics { addr, source })
    }

    pub fn worker(&self) -> &Worker<R, P> {
        &self.worker
    }

    /// Recover left-behind runs, then feed requests to the worker until
    /// `shutdown` resolves or the source fails for good; then shut down
    /// gracefully: stop the streams, dispatch every request they had
    /// already read (a run among them is answered `canceled`), and give
    /// running runs the grace.
    ///
    /// # Errors
    /// `Unauthorized` when the Events API refused the worker;
    /// `Metrics` when the metrics listener cannot be opened.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
        self.serve_metrics()?;
        self.worker.start_background();
        tokio::pin!(shutdown);
        let mut fatal = None;
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    info!("shutdown requested: no new requests, running runs get {:?}", self.shutdown_grace);
                    break;
                }
                () = self.worker.refused() => {
                    let message = "publishing responses was refused (401/403): stopped taking requests".to_owned();
                    error!("{message}");
                    fatal = Some(message);
                    break;
                }
                item = self.source.next_inbound() => match item {
                    Some(Ok(inbound)) => self.worker.dispatch(inbound),
                    Some(Err(SourceError::Fatal(message))) => {
                        error!("{message}");
                        fatal = Some(message);
                        break;
                    }
                    None => break,
                },
            }
        }
        // A request read is a request answered (docs/protocol.md §5): close the
        // source and hand on whatever it had taken off its streams.
        self.worker.begin_shutdown();
        self.source.close();
        let mut drained = 0_usize;
        while let Some(item) = self.source.next_inbound().await {
            match item {
                Ok(inbound) => {
                    drained += 1;
                    self.worker.dispatch(inbound);
                }
                Err(SourceError::Fatal(message)) => error!("{message}"),
            }
        }
        if drained > 0 {
            info!(
                drained,
                "requests read before the streams closed were dispatched"
            );
        }
        self.worker.shutdown(self.shutdown_grace).await;
        info!("worker stopped");
        fatal.map_or(Ok(()), |m| Err(AppError::Unauthorized(m)))
    }
}
