//! What the worker counts, in the names of docs/protocol.md §8, on the
//! `prometheus-client` crate.
//!
//! [`Metrics`] is the recorder the worker holds: it is always there (a
//! few atomics), so tests and one-shot commands need nothing; only
//! `--metrics-addr` exposes it (the composition root's `health` listener). Labels are closed sets
//! (statuses, operations, error codes, the engine host): never a run or an
//! owner id. Values that have an owner elsewhere (runs in flight, stream
//! reconnects) are read from that owner at scrape time ([`Sample`]), so
//! they cannot drift from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bus_docker_domain::response::{Reply, Response};
use bus_docker_domain::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Run durations, seconds: from a blink to the longest timeouts.
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0,
];

/// The media type of the exposition (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabel {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabels {
    profile: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// Values owned elsewhere, read when metrics are scraped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Runs holding a slot (creating or running).
    pub active: usize,
    /// Runs admitted and waiting for a slot.
    pub queued: usize,
    /// Whether the worker reads the run request stream (docs/protocol.md §5).
    pub intake_open: bool,
    /// Request streams connected again after their first connection.
    pub stream_reconnects: u64,
}

/// The worker's metrics. Cheap to clone; clones record into the same
/// registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    runs: Family<StatusLabel, Counter>,
    run_duration: Histogram,
    active: Gauge,
    queued: Gauge,
    intake_open: Gauge,
    requests: Family<RequestLabels, Counter>,
    engine_up: Family<HostLabel, Gauge>,
    reconnects: Counter,
    /// The reconnect total last mirrored into `reconnects`.
    reconnects_seen: AtomicU64,
    publish_failures: Counter,
    warm_parked: Family<ProfileLabel, Gauge>,
    warm_claims: Family<ClaimLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every family of docs/protocol.md §8. (Counters are
    /// registered without `_total`: the encoder appends it.)
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let runs = Family::<StatusLabel, Counter>::default();
        let run_duration = Histogram::new(DURATION_BUCKETS);
        let active = Gauge::default();
        let queued = Gauge::default();
        let intake_open = Gauge::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let engine_up = Family::<HostLabel, Gauge>::default();
        let reconnects = Counter::default();
        let publish_failures = Counter::default();
        let warm_parked = Family::<ProfileLabel, Gauge>::default();
        let warm_claims = Family::<ClaimLabels, Counter>::default();
        registry.register(
            "bus_docker_warm_parked",
            "Parked containers of a warm profile, on every engine (docs/protocol.md §10)",
            warm_parked.clone(),
        );
        registry.register(
            "bus_docker_warm_claims",
            "Runs of a warm profile that claimed a parked container (hit) or took the cold path (miss)",
            warm_claims.clone(),
        );
        registry.register(
            "bus_docker_runs",
            "Runs answered, by final status",
            runs.clone(),
        );
        registry.register(
            "bus_docker_run_duration_seconds",
            "Run time from container start to exit (image pulls excluded)",
            run_duration.clone(),
        );
        registry.register(
            "bus_docker_runs_active",
            "Runs holding a slot (creating or running)",
            active.clone(),
        );
        registry.register(
            "bus_docker_runs_queued",
            "Runs waiting for a slot",
            queued.clone(),
        );
        registry.register(
            "bus_docker_run_intake_open",
            "Whether the worker has room for another run (1) or answers run requests capacity because its queue is full (0)",
            intake_open.clone(),
        );
        registry.register(
            "bus_docker_requests",
            "Requests answered, by operation and result (ok or the error code)",
            requests.clone(),
        );
        registry.register(
            "bus_docker_engine_up",
            "Whether the container engine answered its last probe (1) or not (0)",
            engine_up.clone(),
        );
        registry.register(
            "bus_docker_stream_reconnects",
            "Request streams connected again after a drop",
            reconnects.clone(),
        );
        registry.register(
            "bus_docker_publish_failures",
            "Responses that could not be published",
            publish_failures.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                runs,
                run_duration,
                active,
                queued,
                intake_open,
                requests,
                engine_up,
                reconnects,
                reconnects_seen: AtomicU64::new(0),
                publish_failures,
                warm_parked,
                warm_claims,
            }),
        }
    }

    /// A response went out: one request answered, and for a run its
    /// status and duration.
    pub fn answered(&self, response: &Response) {
        self.request(
            response.operation,
            response.error.as_ref().map(|f| f.code.as_str()),
        );
        if let Some(Reply::Run(report)) = &response.reply {
            self.inner
                .runs
                .get_or_create(&StatusLabel {
                    status: report.status.as_str(),
                })
                .inc();
            if let Some(duration) = report.duration {
                self.inner.run_duration.observe(duration.as_secs_f64());
            }
        }
    }

    /// A request answered with `error` (`None`: `ok`).
    fn request(&self, op: Operation, error: Option<&'static str>) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                op: op.as_str(),
                result: error.unwrap_or("ok"),
            })
            .inc();
    }

    /// A response could not be published.
    pub fn publish_failed(&self) {
        self.inner.publish_failures.inc();
    }

    /// Parked containers of a warm profile now, on every engine.
    pub fn warm_parked(&self, profile: &str, parked: usize) {
        self.inner
            .warm_parked
            .get_or_create(&ProfileLabel {
                profile: profile.to_owned(),
            })
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
    }

    /// A run of a warm profile claimed a parked container, or missed.
    pub fn warm_claim(&self, profile: &str, hit: bool) {
        self.inner
            .warm_claims
            .get_or_create(&ClaimLabels {
                profile: profile.to_owned(),
                result: if hit { "hit" } else { "miss" },
            })
            .inc();
    }

    /// The outcome of an engine probe.
    pub fn engine_up(&self, host: &str, up: bool) {
        self.inner
            .engine_up
            .get_or_create(&HostLabel {
                host: host.to_owned(),
            })
            .set(i64::from(up));
    }

    /// The exposition, with `sample` taken just before.
    pub fn encode(&self, sample: Sample) -> String {
        let inner = &self.inner;
        inner
            .active
            .set(i64::try_from(sample.active).unwrap_or(i64::MAX));
        inner
            .queued
            .set(i64::try_from(sample.queued).unwrap_or(i64::MAX));
        inner.intake_open.set(i64::from(sample.intake_open));
        let seen = inner
            .reconnects_seen
            .fetch_max(sample.stream_reconnects, Ordering::Relaxed);
        if sample.stream_reconnects > seen {
            inner.reconnects.inc_by(sample.stream_reconnects - seen);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use bus_docker_domain::response::Response;
    use bus_docker_domain::{CorrelationId, OperationError};

    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn answers_count_by_operation_and_result() {
        let m = Metrics::new();
        let c = CorrelationId::parse("c-1").unwrap();
        let err = OperationError::NotFound("r".into());
        m.answered(&Response::failure(Operation::Status, "e".into(), c, &err));
        m.publish_failed();
        let text = m.encode(Sample {
            active: 2,
            queued: 1,
            intake_open: true,
            stream_reconnects: 3,
        });
        assert_eq!(
            value(
                &text,
                r#"bus_docker_requests_total{op="status",result="not_found"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(value(&text, "bus_docker_publish_failures_total"), Some(1.0));
        assert_eq!(value(&text, "bus_docker_runs_active"), Some(2.0));
        assert_eq!(value(&text, "bus_docker_runs_queued"), Some(1.0));
        assert_eq!(value(&text, "bus_docker_run_intake_open"), Some(1.0));
        assert_eq!(
            value(&text, "bus_docker_stream_reconnects_total"),
            Some(3.0)
        );
        // A counter mirrored from its owner never goes back.
        let text = m.encode(Sample::default());
        assert_eq!(value(&text, "bus_docker_run_intake_open"), Some(0.0));
        assert_eq!(
            value(&text, "bus_docker_stream_reconnects_total"),
            Some(3.0)
        );
        assert!(text.contains("# TYPE bus_docker_run_duration_seconds histogram"));
        assert!(text.trim_end().ends_with("# EOF"));
    }

    #[test]
    fn engine_up_is_labelled_by_host() {
        let m = Metrics::new();
        m.engine_up("unix:///var/run/docker.sock", true);
        let text = m.encode(Sample::default());
        assert_eq!(
            value(
                &text,
                r#"bus_docker_engine_up{host="unix:///var/run/docker.sock"}"#
            ),
            Some(1.0)
        );
        m.engine_up("unix:///var/run/docker.sock", false);
        let text = m.encode(Sample::default());
        assert_eq!(
            value(
                &text,
                r#"bus_docker_engine_up{host="unix:///var/run/docker.sock"}"#
            ),
            Some(0.0)
        );
    }
}
