//! Publishing against the in-process fake Events API.

mod common;

use std::time::Duration;

use bus_events_client::{OutboundEvent, PublishError, RequestFailure, TokenSource};
use common::{client, static_token, within, FakeEvents};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn response_event() -> OutboundEvent {
    OutboundEvent {
        name: "bus.docker.run.response".to_owned(),
        correlation_id: "c-1".to_owned(),
        payload: json!({"run_id": "r-1", "status": "succeeded"}),
        error: None,
    }
}

#[tokio::test]
async fn publish_sends_both_spellings_and_the_bearer_token() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("t0k3n"));
    let mut event = response_event();
    event.error = Some(json!({"code": "timeout", "message": "run timed out"}));

    within(client.publish_once(&event)).await.unwrap();

    let seen = fake.next_publish().await;
    assert_eq!(seen.auth.as_deref(), Some("Bearer t0k3n"));
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen.body,
        json!({
            "name": "bus.docker.run.response",
            "correlationId": "c-1",
            "correlation_id": "c-1",
            "payload": {"run_id": "r-1", "status": "succeeded"},
            "error": {"code": "timeout", "message": "run timed out"},
        })
    );
}

#[tokio::test]
async fn publish_retries_a_503_until_it_succeeds() {
    let mut fake = FakeEvents::start().await;
    fake.script_publish(&[503, 503]);
    let client = client(fake.url(), static_token("t"));

    let first = within(client.publish_once(&response_event())).await;
    assert!(
        matches!(
            &first,
            Err(PublishError::Retryable(RequestFailure::Status {
                status: 503,
                ..
            }))
        ),
        "{first:?}"
    );

    within(client.publish(&response_event(), &CancellationToken::new()))
        .await
        .unwrap();
    let statuses: Vec<u16> = [
        fake.next_publish().await,
        fake.next_publish().await,
        fake.next_publish().await,
    ]
    .iter()
    .map(|p| p.status)
    .collect();
    assert_eq!(statuses, [503, 503, 200]);
    assert_eq!(fake.pending_publishes(), 0);
}

#[tokio::test]
async fn publish_retries_429() {
    let mut fake = FakeEvents::start().await;
    fake.script_publish(&[429, 429]);
    let client = client(fake.url(), static_token("t"));

    within(client.publish(&response_event(), &CancellationToken::new()))
        .await
        .unwrap();
    for expected in [429, 429, 200] {
        assert_eq!(fake.next_publish().await.status, expected);
    }
}

#[tokio::test]
async fn publish_does_not_retry_a_400() {
    let mut fake = FakeEvents::start().await;
    fake.script_publish(&[400]);
    let client = client(fake.url(), static_token("t"));

    let result = within(client.publish(&response_event(), &CancellationToken::new())).await;
    assert!(
        matches!(&result, Err(PublishError::Permanent(RequestFailure::Status { status: 400, message })) if message.contains("400")),
        "{result:?}"
    );
    assert_eq!(fake.next_publish().await.status, 400);
    assert_eq!(fake.pending_publishes(), 0);
}

#[tokio::test]
async fn publish_does_not_retry_a_408() {
    let mut fake = FakeEvents::start().await;
    fake.script_publish(&[408]);
    let client = client(fake.url(), static_token("t"));

    let result = within(client.publish(&response_event(), &CancellationToken::new())).await;
    assert!(
        matches!(
            &result,
            Err(PublishError::Permanent(RequestFailure::Status {
                status: 408,
                ..
            }))
        ),
        "{result:?}"
    );
    assert!(!result.unwrap_err().is_retryable());
    assert_eq!(fake.next_publish().await.status, 408);
    assert_eq!(fake.pending_publishes(), 0);
}

#[tokio::test]
async fn publish_waits_for_a_server_that_comes_up_later() {
    // Reserve a port, then free it so connecting is refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = bus_events_client::EventsUrl::parse(&format!("http://{addr}")).unwrap();
    let client = client(url, static_token("t"));

    let refused = within(client.publish_once(&response_event())).await;
    assert!(
        matches!(
            &refused,
            Err(PublishError::Retryable(RequestFailure::Transport(_)))
        ),
        "{refused:?}"
    );

    let publishing = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .publish(&response_event(), &CancellationToken::new())
                .await
        }
    });
    // Let a few attempts (10..50 ms apart) fail before the server exists;
    // nothing can signal a refused connection, so this one wait is a sleep.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!publishing.is_finished());

    let mut fake = FakeEvents::start_on(addr).await;
    within(publishing).await.unwrap().unwrap();
    assert_eq!(fake.next_publish().await.status, 200);
}

#[tokio::test]
async fn publish_stops_retrying_when_canceled() {
    let mut fake = FakeEvents::start().await;
    fake.script_publish(&[503; 1000]);
    let client = client(fake.url(), static_token("t"));
    let cancel = CancellationToken::new();

    let publishing = tokio::spawn({
        let client = client.clone();
        let cancel = cancel.clone();
        async move { client.publish(&response_event(), &cancel).await }
    });
    fake.next_publish().await;
    fake.next_publish().await;
    cancel.cancel();
    let result = within(publishing).await.unwrap();
    assert!(matches!(result, Err(PublishError::Canceled)), "{result:?}");
}

#[tokio::test]
async fn a_401_with_a_rotated_token_file_is_retried_with_the_new_token() {
    let mut fake = FakeEvents::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "old-token\n").unwrap();
    let client = client(fake.url(), TokenSource::File(path.clone()));

    // Rotated after the client cached the old one.
    std::fs::write(&path, "new-token\n").unwrap();
    fake.require_token("new-token");

    within(client.publish_once(&response_event()))
        .await
        .unwrap();
    let first = fake.next_publish().await;
    assert_eq!(
        (first.auth.as_deref(), first.status),
        (Some("Bearer old-token"), 401)
    );
    let second = fake.next_publish().await;
    assert_eq!(
        (second.auth.as_deref(), second.status),
        (Some("Bearer new-token"), 200)
    );

    // The new token is cached: the next publish goes straight through.
    within(client.publish_once(&response_event()))
        .await
        .unwrap();
    assert_eq!(
        fake.next_publish().await.auth.as_deref(),
        Some("Bearer new-token")
    );
}

#[tokio::test]
async fn a_401_with_an_unchanged_token_file_is_permanent() {
    let mut fake = FakeEvents::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "stale-token").unwrap();
    let client = client(fake.url(), TokenSource::File(path));
    fake.require_token("other-token");

    let result = within(client.publish(&response_event(), &CancellationToken::new())).await;
    assert!(
        matches!(
            &result,
            Err(PublishError::Permanent(RequestFailure::Status {
                status: 401,
                ..
            }))
        ),
        "{result:?}"
    );
    assert_eq!(fake.next_publish().await.status, 401);
    assert_eq!(
        fake.pending_publishes(),
        0,
        "an unchanged token is not retried"
    );
}

#[tokio::test]
async fn a_401_with_a_static_token_is_permanent() {
    let mut fake = FakeEvents::start().await;
    fake.require_token("other-token");
    let client = client(fake.url(), static_token("wrong"));

    let result = within(client.publish_once(&response_event())).await;
    assert_eq!(result.unwrap_err().status(), Some(401));
    fake.next_publish().await;
    assert_eq!(fake.pending_publishes(), 0);
}

#[tokio::test]
async fn a_missing_or_empty_token_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let url = bus_events_client::EventsUrl::parse("http://127.0.0.1:9").unwrap();
    let missing = TokenSource::File(dir.path().join("absent"));
    let config = bus_events_client::ClientConfig::new(url.clone(), missing);
    assert!(bus_events_client::EventsClient::new(config).is_err());

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let config = bus_events_client::ClientConfig::new(url, TokenSource::File(empty));
    assert!(bus_events_client::EventsClient::new(config).is_err());
}
