//! Publishing and broadcast streams: the envelope, replay and fan-out.

mod common;

use common::{numbered, seq_of, spawn_server, spawn_server_with};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[tokio::test]
async fn a_subscriber_receives_the_full_envelope() {
    let app = spawn_server().await;
    let mut stream = app.open_stream("name=run.requested").await;

    let id = app
        .publish(json!({
            "name": "run.requested",
            "correlationId": "corr-42",
            "payload": {"image": "alpine:3", "args": [1, 2]},
            "error": {"code": "none"},
            "ignored": "field"
        }))
        .await;

    let event = stream.next_event().await;
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["name"], "run.requested");
    assert_eq!(event["correlationId"], "corr-42");
    assert_eq!(event["correlation_id"], "corr-42");
    assert_eq!(
        event["payload"],
        json!({"image": "alpine:3", "args": [1, 2]})
    );
    assert_eq!(event["error"], json!({"code": "none"}));
    assert_eq!(event["identity_id"], "test-identity");
    assert_eq!(event["account_id"], "test-identity");
    assert!(event.get("ignored").is_none());
    let created_at = event["created_at"].as_str().expect("created_at string");
    OffsetDateTime::parse(created_at, &Rfc3339).expect("created_at is RFC 3339");
}

#[tokio::test]
async fn snake_case_correlation_is_mirrored_and_absent_fields_are_left_out() {
    let app = spawn_server().await;
    let mut stream = app.open_stream("name=n").await;

    app.publish(json!({"name": "n", "correlation_id": "c-1"}))
        .await;
    app.publish(json!({"name": "n"})).await;

    let first = stream.next_event().await;
    assert_eq!(first["correlationId"], "c-1");
    assert_eq!(first["correlation_id"], "c-1");
    assert!(first["payload"].is_null());

    let second = stream.next_event().await;
    assert!(second.get("correlationId").is_none());
    assert!(second.get("correlation_id").is_none());
    assert!(second.get("error").is_none());
}

#[tokio::test]
async fn a_subscriber_only_gets_its_own_name() {
    let app = spawn_server().await;
    let mut stream = app.open_stream("name=wanted").await;
    app.publish(numbered("other", 1)).await;
    app.publish(numbered("wanted", 2)).await;
    let event = stream.next_event().await;
    assert_eq!(event["name"], "wanted");
    assert_eq!(seq_of(&event), 2);
}

#[tokio::test]
async fn every_subscriber_gets_every_event_in_order() {
    let app = spawn_server().await;
    let mut first = app.open_stream("name=fan").await;
    let mut second = app.open_stream("name=fan&delivery=broadcast").await;
    for seq in 0..10 {
        app.publish(numbered("fan", seq)).await;
    }
    for seq in 0..10 {
        assert_eq!(seq_of(&first.next_event().await), seq);
        assert_eq!(seq_of(&second.next_event().await), seq);
    }
}

#[tokio::test]
async fn replay_without_follow_sends_history_then_ends() {
    let app = spawn_server().await;
    for seq in 0..3 {
        app.publish(numbered("history", seq)).await;
    }
    let mut stream = app
        .open_stream("name=history&replay=true&follow=false")
        .await;
    for seq in 0..3 {
        assert_eq!(seq_of(&stream.next_event().await), seq);
    }
    stream.expect_end().await;
}

#[tokio::test]
async fn replay_then_follow_continues_with_live_events() {
    let app = spawn_server().await;
    app.publish(numbered("mixed", 0)).await;
    let mut stream = app.open_stream("name=mixed&replay=true").await;
    app.publish(numbered("mixed", 1)).await;
    assert_eq!(seq_of(&stream.next_event().await), 0);
    assert_eq!(seq_of(&stream.next_event().await), 1);
}

#[tokio::test]
async fn without_replay_history_is_not_sent() {
    let app = spawn_server().await;
    app.publish(numbered("fresh", 0)).await;
    let mut stream = app.open_stream("name=fresh").await;
    app.publish(numbered("fresh", 1)).await;
    assert_eq!(seq_of(&stream.next_event().await), 1);

    let mut finished = app.open_stream("name=fresh&follow=false").await;
    finished.expect_end().await;
}

#[tokio::test]
async fn retention_bounds_the_replay() {
    let app = spawn_server_with(|config| config.retention = 2).await;
    for seq in 0..5 {
        app.publish(numbered("kept", seq)).await;
    }
    let mut stream = app.open_stream("name=kept&replay=true&follow=false").await;
    assert_eq!(seq_of(&stream.next_event().await), 3);
    assert_eq!(seq_of(&stream.next_event().await), 4);
    stream.expect_end().await;
}
