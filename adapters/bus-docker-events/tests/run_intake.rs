//! Intake follows capacity on the real event path (contract §5): an
//! `HttpSource` whose run intake is closed takes no run requests, so the
//! unicast group gives them to another consumer or keeps them until the
//! intake opens; its other request streams keep flowing. Checked against
//! the in-process local Events API (`bus-events-local`).

use std::net::SocketAddr;
use std::time::Duration;

use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ports::EventSource;
use bus_docker_events::http::{self, HttpSource, Listen};
use bus_docker_events::intake::FollowsIntake;
use bus_events_client::{
    CancellationToken, ClientConfig, EventsClient, EventsUrl, OutboundEvent, TokenSource,
};
use bus_events_local::{mint_token, serve, MintClaims, RunningServer, ServerConfig};
use serde_json::json;
use tokio::sync::watch;

const GROUP: &str = "workers";

struct Bus {
    server: RunningServer,
    client: EventsClient,
    prefix: EventPrefix,
    stop: CancellationToken,
}

impl Bus {
    async fn start() -> Self {
        let secret = bus_events_local::Secret::parse("run-intake-test-secret").unwrap();
        let server = serve(ServerConfig::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            secret.clone(),
        ))
        .await
        .unwrap();
        let token = mint_token(
            &secret,
            &MintClaims::new("tester", "events:send events:listen"),
        )
        .unwrap();
        let mut config = ClientConfig::new(
            EventsUrl::parse(&server.base_url()).unwrap(),
            TokenSource::Static(bus_events_client::Secret::new(token)),
        );
        config.stream_backoff.min = Duration::from_millis(20);
        config.stream_backoff.max = Duration::from_millis(200);
        Self {
            server,
            client: EventsClient::new(config).unwrap(),
            prefix: EventPrefix::parse("bus.intaketest").unwrap(),
            stop: CancellationToken::new(),
        }
    }

    fn source(&self, consumer: &str) -> HttpSource {
        let listen = Listen {
            prefix: self.prefix.clone(),
            group: GROUP.into(),
            consumer: consumer.into(),
        };
        http::connect(&self.client, &listen, &self.stop, &self.stop).0
    }

    fn consumers(&self, op: Operation) -> usize {
        self.server
            .connected_consumers(&self.prefix.request_name(op), GROUP)
    }

    /// Wait until `op`'s stream has `n` consumers in the group.
    async fn wait_consumers(&self, op: Operation, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.consumers(op) != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{op:?}: {} consumers, not {n}",
                self.consumers(op)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn publish(&self, op: Operation, correlation: &str) {
        let payload = match op {
            Operation::Run => json!({"image": "a:1", "command": ["true"]}),
            _ => json!({}),
        };
        let event = OutboundEvent {
            name: self.prefix.request_name(op),
            correlation_id: correlation.into(),
            payload,
            error: None,
        };
        self.client
            .publish(&event, &CancellationToken::new())
            .await
            .unwrap();
    }
}

/// The next request the source takes within `wait`: its operation and
/// correlation id.
async fn taken(source: &mut HttpSource, wait: Duration) -> Option<(Operation, String)> {
    let inbound = tokio::time::timeout(wait, source.next_inbound())
        .await
        .ok()??
        .unwrap();
    Some((inbound.operation, inbound.correlation.as_str().to_owned()))
}

const SOON: Duration = Duration::from_secs(10);
const NOT_WITHIN: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_closed_run_intake_takes_no_run_requests_and_opening_delivers_them() {
    let bus = Bus::start().await;
    let mut a = bus.source("a");
    let (intake, watch) = watch::channel(false);
    a.follow_intake(watch);
    bus.wait_consumers(Operation::Status, 1).await;
    assert_eq!(bus.consumers(Operation::Run), 0, "closed: no run stream");

    bus.publish(Operation::Run, "r-1").await;
    bus.publish(Operation::Status, "s-1").await;
    assert_eq!(
        taken(&mut a, SOON).await,
        Some((Operation::Status, "s-1".into())),
        "other requests flow while intake is closed"
    );
    assert_eq!(
        taken(&mut a, NOT_WITHIN).await,
        None,
        "the run waits in the group"
    );

    intake.send_replace(true);
    assert_eq!(
        taken(&mut a, SOON).await,
        Some((Operation::Run, "r-1".into()))
    );
    let health = a.health();
    assert!(
        health.disconnected().is_empty(),
        "{:?}",
        health.disconnected()
    );

    // Closed again: a run published now goes to another consumer of the
    // group, and this one never sees it.
    intake.send_replace(false);
    bus.wait_consumers(Operation::Run, 0).await;
    assert!(
        health.disconnected().is_empty(),
        "a paused run stream is not a fault: {:?}",
        health.disconnected()
    );
    bus.publish(Operation::Run, "r-2").await;
    let mut b = bus.source("b");
    assert_eq!(
        taken(&mut b, SOON).await,
        Some((Operation::Run, "r-2".into()))
    );
    assert_eq!(taken(&mut a, NOT_WITHIN).await, None);
    assert_eq!(health.reconnects(), 0, "pausing is not reconnecting");
    bus.stop.cancel();
}
