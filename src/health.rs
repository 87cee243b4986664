//! The opt-in operations listener (`--metrics-addr`, contract §8):
//!
//! * `GET /metrics`: the worker's [`Metrics`] as Prometheus text;
//! * `GET /healthz`: 200 while the process runs;
//! * `GET /readyz`: 200 when every request stream is connected and the
//!   engine (any engine of the pool) answered its last probe; 503 with a
//!   one-line reason otherwise. A stream the Events API refuses (403: the
//!   token lacks its scope, contract §9) is not connected: 503 naming the
//!   stream and the missing scope, for as long as it is refused. The worker
//!   meanwhile serves the operations whose streams it has, so a probe that
//!   only restarts on `/healthz` leaves it running.
//!
//! Without `--metrics-addr` none of this exists: no socket is opened. The
//! engine is probed (`engine_info`, the cheapest call the runtime port
//! has) every [`ENGINE_PROBE_INTERVAL`], each engine of the pool at once,
//! and the result feeds both `/readyz` and `bus_docker_engine_up` (one
//! series per engine). The listener and the probe stop
//! when the worker starts stopping: a draining worker takes no requests.

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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
use bus_docker_service::worker::Worker;

/// How often the engine is probed.
pub const ENGINE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long one probe may take before the engine counts as unreachable.
const ENGINE_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The last probe: `Ok`, or why the engine is not usable.
    engine: Arc<Mutex<Result<(), String>>>,
}

/// The listener's inputs besides the worker.
pub struct Watch {
    /// The request streams to report on, if the source has any.
    pub streams: Option<StreamsHealth>,
    /// The `host` label of `bus_docker_engine_up`.
    pub engine_host: String,
    /// Fires when the worker starts stopping.
    pub stop: CancellationToken,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` and probe the
/// engine, both until `watch.stop` fires.
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
    let shared = Shared {
        metrics: worker.metrics().clone(),
        sample: Arc::new(move || {
            let mut sample = sampled.sample();
            sample.stream_reconnects = streams.as_ref().map_or(0, StreamsHealth::reconnects);
            sample
        }),
        streams: watch.streams,
        engine: Arc::new(Mutex::new(Err("the engine has not been probed yet".into()))),
    };
    tokio::spawn(probe_engine(
        worker.clone(),
        shared.clone(),
        watch.engine_host,
        watch.stop.clone(),
    ));
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

async fn probe_engine<R: ContainerRuntime, P: EventPublisher>(
    worker: Worker<R, P>,
    shared: Shared,
    host: String,
    stop: CancellationToken,
) {
    loop {
        let probes = tokio::select! {
            () = stop.cancelled() => return,
            probes = worker.pool().ping_all(ENGINE_PROBE_TIMEOUT) => probes,
        };
        let mut down = Vec::new();
        for (engine, result) in &probes {
            let label = if engine.is_unnamed() {
                host.clone()
            } else {
                engine.to_string()
            };
            shared.metrics.engine_up(&label, result.is_ok());
            if let Err(why) = result {
                down.push(format!("{label}: {why}"));
            }
        }
        // Ready while any engine of the pool can take runs.
        let verdict = if down.len() < probes.len() {
            Ok(())
        } else {
            Err(down.join("; "))
        };
        *shared.engine.lock().unwrap_or_else(PoisonError::into_inner) = verdict;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(ENGINE_PROBE_INTERVAL) => {}
        }
    }
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
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
    let engine = shared.engine.lock().unwrap_or_else(PoisonError::into_inner);
    match &*engine {
        Ok(()) => None,
        Err(why) => Some(format!("engine unreachable: {}", one_line(why))),
    }
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
