//! Subscriptions against the in-process fake Events API.

mod common;

use std::time::Duration;

use bus_events_client::{
    ClientConfig, DeliveryMode, EventsClient, StreamError, StreamItem, Subscription, TokenSource,
};
use common::{client, static_token, within, FakeEvents};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const NAME: &str = "bus.docker.run.request";

async fn next_item(subscription: &mut Subscription) -> StreamItem {
    within(subscription.next())
        .await
        .expect("subscription ended")
        .expect("subscription failed")
}

async fn next_event_id(subscription: &mut Subscription) -> String {
    match next_item(subscription).await {
        StreamItem::Event(envelope) => envelope.correlation_id.unwrap(),
        other => panic!("expected an event, got {other:?}"),
    }
}

fn request_line(correlation_id: &str) -> String {
    json!({"id": "e", "name": NAME, "correlationId": correlation_id, "identity_id": "owner-1",
           "payload": {"image": "alpine"}})
    .to_string()
}

#[tokio::test]
async fn a_subscription_receives_events() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(
        NAME,
        "bus-integration-docker",
        "host-1",
        CancellationToken::new(),
    );

    let conn = fake.next_stream().await;
    assert_eq!(conn.query.get("name").map(String::as_str), Some(NAME));
    assert_eq!(conn.delivery(), "unicast");
    assert_eq!(
        conn.query.get("group").map(String::as_str),
        Some("bus-integration-docker")
    );
    assert_eq!(
        conn.query.get("consumer").map(String::as_str),
        Some("host-1")
    );
    assert!(!conn.query.contains_key("replay"));
    assert_eq!(conn.auth.as_deref(), Some("Bearer tok"));

    // One line split across chunks, a blank keep-alive, a CRLF line.
    let line = request_line("c-1");
    let (head, tail) = line.split_at(10);
    conn.send(head.to_owned()).await;
    conn.send(format!("{tail}\n\n")).await;
    conn.send(format!("{}\r\n", request_line("c-2"))).await;

    match next_item(&mut subscription).await {
        StreamItem::Event(envelope) => {
            assert_eq!(envelope.name, NAME);
            assert_eq!(envelope.correlation_id.as_deref(), Some("c-1"));
            assert_eq!(envelope.owner.as_deref(), Some("owner-1"));
            assert_eq!(envelope.payload, json!({"image": "alpine"}));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(next_event_id(&mut subscription).await, "c-2");
    assert_eq!(subscription.connections(), 1);
    assert_eq!(subscription.delivery_mode(), DeliveryMode::Unicast);
}

#[tokio::test]
async fn a_400_to_unicast_falls_back_to_work_for_good() {
    let mut fake = FakeEvents::start().await;
    fake.reject_unicast();
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    let refused = fake.next_stream().await;
    assert_eq!((refused.status, refused.delivery()), (400, "unicast"));
    let conn = fake.next_stream().await;
    assert_eq!((conn.status, conn.delivery()), (200, "work"));

    conn.send_line(&request_line("c-1")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    assert_eq!(subscription.delivery_mode(), DeliveryMode::Work);

    // After a reconnect it stays on `work`.
    conn.close();
    let again = fake.next_stream().await;
    assert_eq!((again.status, again.delivery()), (200, "work"));
    again.send_line(&request_line("c-2")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-2");
}

#[tokio::test]
async fn a_400_to_work_ends_the_subscription() {
    let fake = FakeEvents::start().await;
    fake.reject_unicast();
    fake.script_stream(&[400]);
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    let error = within(subscription.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, StreamError::Rejected { status: 400, .. }),
        "{error:?}"
    );
    assert!(within(subscription.next()).await.is_none());
}

#[tokio::test]
async fn a_dropped_stream_is_reconnected() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    let first = fake.next_stream().await;
    first.send_line(&request_line("c-1")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    first.close();

    let second = fake.next_stream().await;
    second.send_line(&request_line("c-2")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-2");
    assert!(subscription.connections() >= 2);
}

#[tokio::test]
async fn a_stream_cut_mid_line_drops_the_partial_line_and_reconnects() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    let first = fake.next_stream().await;
    let partial = request_line("c-partial");
    first.send(partial[..20].to_owned()).await;
    first.close();

    let second = fake.next_stream().await;
    second.send_line(&request_line("c-2")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-2");
    assert_eq!(subscription.connections(), 2);
}

#[tokio::test]
async fn server_errors_on_connect_are_retried() {
    let mut fake = FakeEvents::start().await;
    fake.script_stream(&[503, 502]);
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    assert_eq!(fake.next_stream().await.status, 503);
    assert_eq!(fake.next_stream().await.status, 502);
    let conn = fake.next_stream().await;
    conn.send_line(&request_line("c-1")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    assert_eq!(subscription.connections(), 1);
}

#[tokio::test]
async fn a_401_on_the_stream_is_fatal() {
    let mut fake = FakeEvents::start().await;
    fake.require_token("right");
    let client = client(fake.url(), static_token("wrong"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());

    let error = within(subscription.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, StreamError::Unauthorized { status: 401, .. }),
        "{error:?}"
    );
    assert_eq!(error.status(), 401);
    assert!(within(subscription.next()).await.is_none());
    assert_eq!(fake.next_stream().await.status, 401);
    assert_eq!(subscription.connections(), 0);
}

/// docs/protocol.md §9: a 403 (the token lacks this stream's scope) is reported
/// once and the stream is asked for again about once a minute (here
/// `refused_retry`), so that a token re-granted the scope is picked up.
#[tokio::test]
async fn a_403_is_yielded_once_and_the_stream_is_asked_for_again_slowly() {
    const RETRY: Duration = Duration::from_millis(150);
    let mut fake = FakeEvents::start().await;
    fake.script_stream(&[403, 403, 403]);
    let mut config = ClientConfig::new(fake.url(), static_token("tok"));
    config.stream_backoff.min = Duration::from_millis(1);
    config.stream_backoff.max = Duration::from_millis(1);
    config.refused_retry = RETRY;
    let client = EventsClient::new(config).unwrap();
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());
    let status = subscription.status();

    let error = within(subscription.next()).await.unwrap().unwrap_err();
    assert!(
        matches!(&error, StreamError::Forbidden { status: 403, .. }),
        "{error:?}"
    );
    assert_eq!(status.refused(), Some(error));
    let mut asked = vec![];
    for _ in 0..3 {
        let conn = fake.next_stream().await;
        asked.push((conn.status, std::time::Instant::now()));
        assert!(status.refused().is_some(), "still refused");
    }
    let accepted = fake.next_stream().await;
    assert_eq!(accepted.status, 200);
    assert_eq!(
        asked.iter().map(|a| a.0).collect::<Vec<_>>(),
        [403, 403, 403]
    );
    for pair in asked.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= RETRY,
            "asked again only after refused_retry, not at the reconnect backoff"
        );
    }
    accepted.send_line(&request_line("c-1")).await;
    // The only item after the one error: a refusal is reported once.
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    assert_eq!(status.refused(), None, "accepted: no longer refused");
    assert!(status.is_open());
}

/// A line read is a line handed on: stopping a stream hands on the rest
/// of a line it has begun, then closes the connection.
#[tokio::test]
async fn stopping_finishes_a_begun_line_before_closing() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let stop = CancellationToken::new();
    let mut subscription = client.subscribe(NAME, "g", "c", stop.clone());
    let conn = fake.next_stream().await;
    let third = request_line("c-3");
    let (head, tail) = third.split_at(20);
    conn.send(format!(
        "{}\n{}\n{head}",
        request_line("c-1"),
        request_line("c-2")
    ))
    .await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    assert_eq!(next_event_id(&mut subscription).await, "c-2");

    stop.cancel();
    conn.send(format!("{tail}\n")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-3");
    assert!(within(subscription.next()).await.is_none(), "then it ends");
    within(conn.client_gone()).await;
}

#[tokio::test]
async fn a_401_on_the_stream_with_a_rotated_token_file_reconnects() {
    let mut fake = FakeEvents::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "old").unwrap();
    let client = client(fake.url(), TokenSource::File(path.clone()));
    std::fs::write(&path, "new").unwrap();
    fake.require_token("new");

    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());
    let refused = fake.next_stream().await;
    assert_eq!(
        (refused.status, refused.auth.as_deref()),
        (401, Some("Bearer old"))
    );
    let conn = fake.next_stream().await;
    assert_eq!(
        (conn.status, conn.auth.as_deref()),
        (200, Some("Bearer new"))
    );
    conn.send_line(&request_line("c-1")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
}

#[tokio::test]
async fn malformed_lines_are_reported_and_the_subscription_keeps_going() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());
    let conn = fake.next_stream().await;

    conn.send_line("this is not json").await;
    conn.send_line("[1,2,3]").await;
    // 5 MiB, over the default 4 MiB limit, with its ids up front.
    let mut huge =
        br#"{"name":"bus.docker.run.request","correlationId":"c-huge","payload":{"blob":""#
            .to_vec();
    huge.resize(5 * 1024 * 1024, b'a');
    huge.extend_from_slice(b"\"}}\n");
    let huge_len = huge.len() - 1;
    conn.send(huge).await;
    conn.send_line(&request_line("c-after")).await;

    let mut malformed = Vec::new();
    for _ in 0..3 {
        match next_item(&mut subscription).await {
            StreamItem::Malformed {
                name,
                correlation_id,
                reason,
            } => malformed.push((name, correlation_id, reason)),
            other => panic!("expected malformed, got {other:?}"),
        }
    }
    assert_eq!((&malformed[0].0, &malformed[0].1), (&None, &None));
    assert!(
        malformed[0].2.contains("not valid JSON"),
        "{}",
        malformed[0].2
    );
    assert_eq!((&malformed[1].0, &malformed[1].1), (&None, &None));
    assert!(
        malformed[1].2.contains("not a JSON object"),
        "{}",
        malformed[1].2
    );
    assert_eq!(malformed[2].0.as_deref(), Some(NAME));
    assert_eq!(malformed[2].1.as_deref(), Some("c-huge"));
    assert!(
        malformed[2].2.contains(&huge_len.to_string()),
        "{}",
        malformed[2].2
    );

    assert_eq!(next_event_id(&mut subscription).await, "c-after");
    assert_eq!(subscription.connections(), 1);
}

#[tokio::test]
async fn canceling_ends_the_subscription_and_releases_the_connection() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let cancel = CancellationToken::new();
    let mut subscription = client.subscribe(NAME, "g", "c", cancel.clone());
    let conn = fake.next_stream().await;

    cancel.cancel();
    assert!(within(subscription.next()).await.is_none());
    within(conn.client_gone()).await;
}

#[tokio::test]
async fn dropping_the_subscription_stops_its_task() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let cancel = CancellationToken::new();
    let subscription = client.subscribe(NAME, "g", "c", cancel.clone());
    let conn = fake.next_stream().await;

    drop(subscription);
    within(conn.client_gone()).await;
    assert!(!cancel.is_cancelled(), "the caller's token is left alone");
}

#[tokio::test]
async fn many_events_arrive_in_order_through_the_bounded_channel() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());
    let conn = fake.next_stream().await;

    // Far more than the channel holds; every event must arrive, in order.
    let total = 2_000;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            conn.send_line(&request_line(&format!("c-{i}"))).await;
        }
        conn
    });
    for i in 0..total {
        assert_eq!(next_event_id(&mut subscription).await, format!("c-{i}"));
    }
    within(sender).await.unwrap();
}

#[tokio::test]
async fn an_array_holding_a_valid_looking_run_envelope_is_skipped_not_delivered() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let mut subscription = client.subscribe(NAME, "g", "c", CancellationToken::new());
    let conn = fake.next_stream().await;

    // Positionally this is name, correlationId, correlation_id, identity_id,
    // account_id, payload: a struct reader would take it for a run request.
    let array = json!([NAME, "c-array", "c-array", "owner-1", null,
                       {"image": "alpine", "command": ["sh", "-c", "id"]}]);
    conn.send_line(&array.to_string()).await;
    conn.send_line(&format!("[{}]", request_line("c-wrapped")))
        .await;
    conn.send_line(&request_line("c-after")).await;

    for _ in 0..2 {
        match next_item(&mut subscription).await {
            StreamItem::Malformed {
                name,
                correlation_id,
                reason,
            } => {
                assert_eq!((name, correlation_id), (None, None));
                assert!(reason.contains("not a JSON object"), "{reason}");
            }
            other => panic!("an array was delivered as an event: {other:?}"),
        }
    }
    assert_eq!(next_event_id(&mut subscription).await, "c-after");
}

#[tokio::test]
async fn the_status_says_whether_the_stream_is_open() {
    let mut fake = FakeEvents::start().await;
    let client = client(fake.url(), static_token("tok"));
    let cancel = CancellationToken::new();
    let mut subscription = client.subscribe(NAME, "g", "c", cancel.clone());
    let status = subscription.status();
    assert!(!status.is_open(), "not before the server accepted it");

    let first = fake.next_stream().await;
    first.send_line(&request_line("c-1")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-1");
    assert!(status.is_open());
    first.close();
    // Closed until the next connection is accepted: read it before that.
    let second = fake.next_stream().await;
    second.send_line(&request_line("c-2")).await;
    assert_eq!(next_event_id(&mut subscription).await, "c-2");
    assert!(status.is_open());
    assert_eq!(status.connections(), 2);

    cancel.cancel();
    assert!(within(subscription.next()).await.is_none());
    within(async {
        while status.is_open() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
