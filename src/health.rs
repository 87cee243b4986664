//! The opt-in operations listener (`--metrics-addr`, docs/protocol.md §8):
//!
//! * `GET /metrics`: the worker's [`Metrics`] as Prometheus text;
//! * `GET /healthz`: 200 while the process runs;
//! * `GET /readyz`: 200 when every request stream is connected and the
//!   engine (any engine of the pool) answered its last probe; 503 with a
//!   one-line reason otherwise. A stream the Events API refuses (403: the
//!   token lacks its scope, docs/protocol.md §9) is not connected: 503 naming the
//!   stream and the missing scope, for as long as it is refused. The worker
//!   meanwhile serves the operations whose streams it has, so a probe that
//!   only restarts on `/healthz` leaves it running.
//!
//! Without `--metrics-addr` none of this exists: no socket is opened.
//! Engine health is the pool's (`bus_docker_service::pool`: one probe
//! loop, one timeout, one state): `/readyz` and `bus_docker_engine_up`
//! (one series per engine) read it when they are asked. The listener
//! stops when the worker starts stopping: a draining worker takes no
//! requests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_events::http::StreamsHealth;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use bus_docker_service::metrics::{Metrics, CONTENT_TYPE};
use bus_docker_service::pool::EngineHealth;
use bus_docker_service::worker::Worker;

/// Open the listener (at start-up, so a bad address fails the start).
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What the handlers read.
#[derive(Clone)]
struct Shared {
    metrics: Metrics,
    sample: Arc<dyn Fn() -> bus_docker_service::metrics::Sample + Send + Sync>,
    /// `None`: a source without streams (tests' in-memory events).
    streams: Option<StreamsHealth>,
    /// Each engine's health as the pool last noted it.
    engines: Arc<dyn Fn() -> Vec<EngineHealth> + Send + Sync>,
}

/// The listener's inputs besides the worker.
pub struct Watch {
    /// The request streams to report on, if the source has any.
    pub streams: Option<StreamsHealth>,
    /// Fires when the worker starts stopping.
    pub stop: CancellationToken,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `watch.stop` fires.
///
/// # Errors
/// The listener cannot be handed to the async runtime.
pub fn spawn<R: ContainerRuntime, P: EventPublisher>(
    listener: TcpListener,
    worker: &Worker<R, P>,
    watch: Watch,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let sampled = worker.clone();
    let streams = watch.streams.clone();
    let pooled = worker.clone();
    let shared = Shared {
        metrics: worker.metrics().clone(),
        sample: Arc::new(move || {
            let mut sample = sampled.sample();
            sample.stream_reconnects = streams.as_ref().map_or(0, StreamsHealth::reconnects);
            sample
        }),
        streams: watch.streams,
        engines: Arc::new(move || pooled.pool().health()),
    };
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let stop = watch.stop;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(err) = served {
            warn!(error = %err, "metrics listener failed");
        }
    });
    info!(%addr, "metrics and health listener on http://{addr}/metrics");
    Ok(())
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    for engine in (shared.engines)() {
        shared
            .metrics
            .engine_up(&engine.label, engine.state.is_ok());
    }
    let text = shared.metrics.encode((shared.sample)());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    match not_ready(&shared) {
        None => (StatusCode::OK, "ready\n".into()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

/// Why the worker cannot take requests now, if it cannot.
fn not_ready(shared: &Shared) -> Option<String> {
    if let Some(streams) = &shared.streams {
        let refused = streams.refused();
        if !refused.is_empty() {
            let each: Vec<String> = refused
                .iter()
                .map(|(name, scope)| format!("{name} (missing scope {scope})"))
                .collect();
            return Some(format!(
                "request streams refused by the Events API (HTTP 403): {}",
                each.join(", ")
            ));
        }
        let down = streams.disconnected();
        if !down.is_empty() {
            return Some(format!(
                "request streams not connected: {}",
                down.join(", ")
            ));
        }
    }
    // Ready while any engine of the pool can take runs.
    let engines = (shared.engines)();
    if engines.iter().any(|e| e.state.is_ok()) {
        return None;
    }
    let down: Vec<String> = engines
        .iter()
        .filter_map(|e| {
            e.state
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", e.label))
        })
        .collect();
    Some(format!(
        "engine unreachable: {}",
        one_line(&down.join("; "))
    ))
}

/// A reason on one short line.
fn one_line(text: &str) -> String {
    const MAX: usize = 300;
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_stay_on_one_short_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        let long = "x".repeat(1000);
        assert_eq!(one_line(&long).chars().count(), 301);
    }
}
