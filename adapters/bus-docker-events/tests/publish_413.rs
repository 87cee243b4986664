//! A 413 from the Events API does not lose the response: the publisher
//! re-encodes it within a smaller budget and retries, and finally falls back
//! to a minimal error response that still carries the correlation id.
//! Checked against an in-process server that refuses bodies over a limit.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bus_docker_domain::events::{EventPrefix, Operation};
use bus_docker_domain::ids::{CorrelationId, ImageRef, RunId};
use bus_docker_domain::output::CapturedOutput;
use bus_docker_domain::ports::EventPublisher;
use bus_docker_domain::response::{Reply, Response};
use bus_docker_domain::run::{RunReport, RunStatus};
use bus_docker_events::http::HttpPublisher;
use bus_events_client::{
    CancellationToken, ClientConfig, EventsClient, EventsUrl, Secret, TokenSource,
};
use serde_json::Value;

/// Bodies seen (size, parsed), and the size over which the server says 413.
#[derive(Clone)]
struct Server {
    limit: usize,
    seen: Arc<Mutex<Vec<(usize, Value)>>>,
}

async fn publish(State(server): State<Server>, body: Bytes) -> StatusCode {
    let value: Value = serde_json::from_slice(&body).expect("the publisher sends JSON");
    server.seen.lock().unwrap().push((body.len(), value));
    if body.len() > server.limit {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::OK
    }
}

async fn start(limit: usize) -> (EventsClient, Server) {
    let server = Server {
        limit,
        seen: Arc::default(),
    };
    let app = Router::new()
        .route("/api/v1/events", post(publish))
        .with_state(server.clone())
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = EventsUrl::parse(&format!("http://{addr}")).unwrap();
    let client = EventsClient::new(ClientConfig::new(
        url,
        TokenSource::Static(Secret::new("t")),
    ))
    .unwrap();
    (client, server)
}

fn big_run_response() -> Response {
    let report = RunReport {
        run_id: RunId::parse("run-413").unwrap(),
        owner: None,
        runner_name: "docker@test".into(),
        profile: None,
        image: ImageRef::parse("alpine:3.20").unwrap(),
        image_id: None,
        args: vec!["x".repeat(100_000); 10],
        status: RunStatus::Succeeded,
        exit_code: Some(0),
        stdout: CapturedOutput {
            text: "o".repeat(1024 * 1024),
            total_bytes: 1024 * 1024,
            truncated: false,
        },
        stderr: CapturedOutput::default(),
        started_at: None,
        finished_at: None,
        duration: Some(Duration::from_millis(1234)),
        oom_killed: false,
        runtime: Default::default(),
        session: None,
    };
    Response::success(
        Operation::Run,
        EventPrefix::parse("bus.docker")
            .unwrap()
            .response_name(Operation::Run),
        CorrelationId::parse("c-413").unwrap(),
        Reply::Run(Box::new(report)),
    )
}

fn publisher(client: &EventsClient) -> HttpPublisher {
    HttpPublisher::new(
        client,
        &CancellationToken::new(),
        bus_events_client::DEFAULT_MAX_LINE_BYTES,
    )
}

#[tokio::test]
async fn a_413_makes_the_publisher_cut_the_response_until_it_fits() {
    let (client, server) = start(512 * 1024).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        publisher(&client).publish(&big_run_response()),
    )
    .await
    .expect("publish ends")
    .expect("the cut response is accepted");

    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 2,
        "at least one 413 then a retry: {}",
        seen.len()
    );
    let sizes: Vec<usize> = seen.iter().map(|(n, _)| *n).collect();
    assert!(
        sizes.windows(2).all(|w| w[1] < w[0]),
        "each retry is smaller: {sizes:?}"
    );
    let (last_len, last) = seen.last().unwrap();
    assert!(*last_len <= 512 * 1024);
    assert_eq!(last["correlationId"], "c-413");
    assert_eq!(last["payload"]["run_id"], "run-413");
    assert_eq!(last["payload"]["status"], "succeeded");
    assert_eq!(last["payload"]["args_truncated"], true);
    assert_eq!(last["payload"]["stdout_truncated"], true);
    assert!(
        last.get("error").is_none(),
        "still a full, successful response"
    );
}

#[tokio::test]
async fn a_server_refusing_everything_large_still_gets_the_minimal_response() {
    let (client, server) = start(4 * 1024).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        publisher(&client).publish(&big_run_response()),
    )
    .await
    .expect("publish ends")
    .expect("the minimal response is accepted");

    let seen = server.seen.lock().unwrap().clone();
    let (len, last) = seen.last().unwrap();
    assert!(*len <= 4 * 1024, "{len}");
    assert_eq!(last["correlationId"], "c-413");
    assert_eq!(last["correlation_id"], "c-413");
    assert_eq!(last["error"]["code"], "internal");
    assert!(last["error"]["message"].as_str().unwrap().contains("413"));
    assert_eq!(last["payload"]["run_id"], "run-413");
    assert_eq!(last["payload"]["duration_ms"], 1234);
    // Every attempt before the last was refused as too large.
    assert!(seen[..seen.len() - 1].iter().all(|(n, _)| *n > 4 * 1024));
}

#[tokio::test]
async fn a_response_that_fits_is_published_once() {
    let (client, server) = start(8 * 1024 * 1024).await;
    publisher(&client)
        .publish(&big_run_response())
        .await
        .unwrap();
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].1["payload"].get("args_truncated").is_none());
}
