//! Test harness: a local Events API, workers wired like production
//! (`App` + `HttpEvents`), and a client that publishes requests and waits
//! for their correlated responses.
#![allow(dead_code)]

use std::time::Duration;

use bus_docker_domain::{EventPrefix, Operation};
use bus_docker_events::http::{self, Listen};
use bus_events_client::{EventsClient, OutboundEvent};
use bus_integration_docker::app::{self, App, AppError};
use bus_integration_docker::config::{load, Settings};
use bus_integration_docker::local::LocalBus;
use bus_integration_docker::request::{correlation_id, ResponseWaiter};
use bus_integration_docker::worker::Lifecycle;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

/// Settings from a TOML snippet (on top of the defaults).
pub fn settings(toml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.toml");
    std::fs::write(&path, toml).unwrap();
    load(Some(&path), &[]).expect("test config loads").settings().expect("test config validates")
}

/// A worker running against `bus`.
pub struct TestWorker {
    pub stop: CancellationToken,
    pub handle: JoinHandle<Result<(), AppError>>,
}

impl TestWorker {
    pub async fn stop(self) -> Result<(), AppError> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle).await.expect("worker stops in time").expect("worker task")
    }
}

/// Start a worker with `settings` against `bus` as `consumer` of `group`,
/// and wait until its streams are connected.
pub async fn spawn_worker(bus: &LocalBus, settings: &Settings, consumer: &str) -> TestWorker {
    spawn_worker_with_token(bus, settings, consumer, bus.token()).await
}

pub async fn spawn_worker_with_token(bus: &LocalBus, settings: &Settings, consumer: &str, token: &str) -> TestWorker {
    let client = bus.client_with(token).unwrap();
    let runtime = app::runtime(settings).unwrap();
    let lifecycle = Lifecycle::default();
    let listen = Listen {
        prefix: settings.worker.prefix.clone(),
        group: settings.events.group.clone(),
        consumer: consumer.to_owned(),
    };
    let (source, publisher) = http::connect(&client, &listen, &lifecycle.stopping, &lifecycle.abandon);
    let app = App::build_with(settings, runtime, source, publisher, lifecycle);
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    wait_connected(bus, settings, 1).await;
    TestWorker { stop, handle }
}

/// Wait until at least `n` consumers listen on every request name.
pub async fn wait_connected(bus: &LocalBus, settings: &Settings, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for op in Operation::ALL {
        let name = settings.worker.prefix.request_name(op);
        while bus.server().connected_consumers(&name, &settings.events.group) < n {
            assert!(tokio::time::Instant::now() < deadline, "worker streams did not connect");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// A caller: publishes requests and collects responses.
pub struct Caller {
    pub client: EventsClient,
    pub prefix: EventPrefix,
}

impl Caller {
    pub fn new(bus: &LocalBus, prefix: &EventPrefix) -> Self {
        Self { client: bus.client().unwrap(), prefix: prefix.clone() }
    }

    pub fn with_token(bus: &LocalBus, prefix: &EventPrefix, token: &str) -> Self {
        Self { client: bus.client_with(token).unwrap(), prefix: prefix.clone() }
    }

    /// Subscribe to responses of `op` before publishing anything.
    pub async fn waiter(&self, op: Operation) -> ResponseWaiter {
        ResponseWaiter::open(&self.client, &self.prefix, op, WAIT).await.unwrap()
    }

    /// Publish a request; returns its correlation id.
    pub async fn publish(&self, op: Operation, payload: Value) -> String {
        let correlation = correlation_id();
        self.publish_as(op, &correlation, payload).await;
        correlation
    }

    pub async fn publish_as(&self, op: Operation, correlation: &str, payload: Value) {
        let event = OutboundEvent {
            name: self.prefix.request_name(op),
            correlation_id: correlation.to_owned(),
            payload,
            error: None,
        };
        self.client.publish(&event, &CancellationToken::new()).await.expect("publish");
    }

    /// Publish and wait for the response payload.
    pub async fn call(&self, op: Operation, payload: Value) -> Value {
        let mut w = self.waiter(op).await;
        let c = self.publish(op, payload).await;
        w.wait(&c, WAIT).await.expect("response")
    }
}
