//! The HTTP source on the real event path (docs/protocol.md §5): it hands on
//! every request it reads, whatever the worker's load — there is no
//! intake switch any more — and once closed it hands on what it had read,
//! then ends. Checked against the in-process local Events API
//! (`bus-events-local`). (Before v3 this file checked that a closed intake
//! closed the run stream: the mechanism that lost requests.)

use std::net::SocketAddr;
use std::time::Duration;

use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ports::EventSource;
use bus_docker_events::http::{self, HttpSource, Listen};
use bus_events_client::{
    CancellationToken, ClientConfig, EventsClient, EventsUrl, OutboundEvent, TokenSource,
};
use bus_events_local::{mint_token, serve, MintClaims, RunningServer, ServerConfig};
use serde_json::json;

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

#[tokio::test]
async fn every_request_read_is_handed_on_and_a_closed_source_ends_after_what_it_read() {
    let bus = Bus::start().await;
    let mut source = bus.source("a");
    for op in Operation::ALL {
        bus.wait_consumers(op, 1).await;
    }
    // A burst published before anything is taken from the source: every
    // request is handed on, once, run stream or not.
    for i in 0..100 {
        bus.publish(Operation::Run, &format!("r-{i}")).await;
    }
    bus.publish(Operation::Status, "s-1").await;
    let mut runs = Vec::new();
    let mut status = None;
    while runs.len() < 100 || status.is_none() {
        match taken(&mut source, SOON)
            .await
            .expect("every request is handed on")
        {
            (Operation::Run, c) => runs.push(c),
            (Operation::Status, c) => status = Some(c),
            other => panic!("{other:?}"),
        }
    }
    let expected: Vec<String> = (0..100).map(|i| format!("r-{i}")).collect();
    assert_eq!(runs, expected, "every run, once, in order");
    assert_eq!(status.as_deref(), Some("s-1"));
    assert!(source.health().disconnected().is_empty());
    assert_eq!(
        source.health().reconnects(),
        0,
        "never closed or reconnected"
    );

    // Closed: the source ends (after handing on anything it had read) and
    // its streams leave the group.
    source.close();
    let ended = tokio::time::timeout(SOON, source.next_inbound()).await;
    assert!(matches!(ended, Ok(None)), "the closed source ends");
    for op in Operation::ALL {
        bus.wait_consumers(op, 0).await;
    }
    bus.stop.cancel();
}
