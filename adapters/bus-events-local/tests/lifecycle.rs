//! Keep-alives, cutting streams, and stopping the server.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bus_events_local::{serve_with_shutdown, Secret, ServerConfig};
use common::{numbered, seq_of, spawn_server, spawn_server_with, WAIT};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn idle_streams_get_blank_keepalive_lines() {
    let app = spawn_server_with(|config| config.keepalive = Duration::from_millis(50)).await;
    let mut broadcast = app.open_stream("name=quiet").await;
    let mut unicast = app.open_stream("name=quiet&delivery=work&group=g").await;

    assert_eq!(broadcast.next_line().await.as_deref(), Some(""));
    assert_eq!(unicast.next_line().await.as_deref(), Some(""));

    // Events still flow between keep-alives.
    app.publish(numbered("quiet", 7)).await;
    assert_eq!(seq_of(&broadcast.next_event().await), 7);
    assert_eq!(seq_of(&unicast.next_event().await), 7);
}

#[tokio::test]
async fn the_default_keepalive_is_not_sent_early() {
    let app = spawn_server().await;
    let mut stream = app.open_stream("name=calm").await;
    app.publish(numbered("calm", 1)).await;
    // The first line is the event, not a keep-alive.
    assert_eq!(
        stream.next_line().await.map(|line| line.is_empty()),
        Some(false)
    );
}

#[tokio::test]
async fn a_zero_keepalive_sends_none() {
    let app = spawn_server_with(|config| config.keepalive = Duration::ZERO).await;
    let mut stream = app.open_stream("name=silent").await;
    app.publish(numbered("silent", 3)).await;
    let first = stream.next_line().await.expect("a line");
    assert!(!first.is_empty(), "got a keep-alive before the event");
}

#[tokio::test]
async fn drop_streams_ends_open_streams_and_the_server_keeps_serving() {
    let app = spawn_server().await;
    let mut broadcast = app.open_stream("name=cut").await;
    let mut unicast = app.open_stream("name=cut&delivery=unicast&group=g").await;

    app.server.drop_streams();
    broadcast.expect_end().await;
    unicast.expect_end().await;

    let mut fresh = app.open_stream("name=cut").await;
    app.publish(numbered("cut", 1)).await;
    assert_eq!(seq_of(&fresh.next_event().await), 1);
}

#[tokio::test]
async fn shutdown_ends_streams_and_stops_listening() {
    let app = spawn_server().await;
    let mut stream = app.open_stream("name=bye").await;
    let health = app.url("/healthz");

    let common::TestServer { server, client, .. } = app;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown completes while a stream is open");
    stream.expect_end().await;

    let refused = client.get(&health).send().await;
    assert!(refused.is_err(), "server still answering after shutdown");
}

#[tokio::test]
async fn cancelling_the_callers_token_stops_the_server() {
    let token = CancellationToken::new();
    let secret = Secret::parse(common::SECRET).expect("secret");
    let config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), secret);
    let server = serve_with_shutdown(config, token.clone())
        .await
        .expect("binds");
    let health = format!("{}/healthz", server.base_url());
    let client = reqwest::Client::new();
    assert_eq!(client.get(&health).send().await.expect("up").status(), 200);

    token.cancel();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("stopped");
    assert!(client.get(&health).send().await.is_err());
}

#[tokio::test]
async fn base_url_dials_loopback_for_a_wildcard_bind() {
    let secret = Secret::parse(common::SECRET).expect("secret");
    let config = ServerConfig::new(SocketAddr::from(([0, 0, 0, 0], 0)), secret);
    let server = bus_events_local::serve(config).await.expect("binds");
    let port = server.local_addr().port();
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
    server.shutdown().await;
}
