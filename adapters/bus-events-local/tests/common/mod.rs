//! Shared harness: a server on `127.0.0.1:0`, an HTTP client, token helpers
//! and an NDJSON line reader whose every wait is bounded.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bus_events_local::{mint_token, serve, MintClaims, RunningServer, Secret, ServerConfig};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::Value;

/// Upper bound for any single wait in a test, so a failure cannot hang.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SECRET: &str = "integration-test-secret";

pub struct TestServer {
    pub server: RunningServer,
    pub secret: Secret,
    pub client: reqwest::Client,
}

pub async fn spawn_server() -> TestServer {
    spawn_server_with(|_| {}).await
}

pub async fn spawn_server_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
    let secret = Secret::parse(SECRET).expect("valid secret");
    let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), secret.clone());
    adjust(&mut config);
    let server = serve(config).await.expect("server binds");
    TestServer {
        server,
        secret,
        client: reqwest::Client::new(),
    }
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    pub fn token(&self, scope: &str) -> String {
        mint_token(&self.secret, &MintClaims::new("test-identity", scope)).expect("mint")
    }

    /// Publishes with a read-write token and returns the raw response.
    pub async fn publish_raw(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/events"))
            .bearer_auth(self.token("events:send"))
            .json(body)
            .send()
            .await
            .expect("publish request")
    }

    /// Publishes and returns the new event's id.
    pub async fn publish(&self, body: Value) -> String {
        let response = self.publish_raw(&body).await;
        let status = response.status();
        let answer: Value = response.json().await.expect("json answer");
        assert!(status.is_success(), "publish failed: {status} {answer}");
        assert_eq!(answer["accepted"], true);
        answer["id"].as_str().expect("id is a string").to_owned()
    }

    /// `GET /api/v1/events/stream?<query>` with a read token, unchecked.
    pub async fn stream_raw(&self, query: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .get(self.url(&format!("/api/v1/events/stream?{query}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        tokio::time::timeout(WAIT, request.send())
            .await
            .expect("stream head in time")
            .expect("stream request")
    }

    /// Opens a stream and checks its head. When this returns, the server has
    /// registered the subscription.
    pub async fn open_stream(&self, query: &str) -> Lines {
        let response = self
            .stream_raw(query, Some(&self.token("events:listen")))
            .await;
        assert_eq!(response.status(), 200, "stream {query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/x-ndjson",
            "content type"
        );
        Lines::new(response)
    }
}

/// Reads an NDJSON body line by line.
pub struct Lines {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: Vec<u8>,
}

impl Lines {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: Vec::new(),
        }
    }

    /// The next line without its `\n`, blank lines included; `None` at a
    /// clean end of the body. Panics after [`WAIT`] or on a cut mid-line.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(WAIT, self.read_line())
            .await
            .expect("a line (or the end) within the wait")
    }

    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return Some(String::from_utf8(line[..end].to_vec()).expect("utf-8 line"));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(err)) => {
                    assert!(self.buffer.is_empty(), "stream cut mid-line: {err}");
                    return None;
                }
                None => {
                    assert!(self.buffer.is_empty(), "stream ended mid-line");
                    return None;
                }
            }
        }
    }

    /// The next event, skipping keep-alive lines. Panics at the end.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let line = self.next_line().await.expect("an event, not the end");
            if !line.trim().is_empty() {
                return serde_json::from_str(&line).expect("event line is JSON");
            }
        }
    }

    /// Asserts the stream ends with no further event.
    pub async fn expect_end(&mut self) {
        while let Some(line) = self.next_line().await {
            assert!(
                line.trim().is_empty(),
                "unexpected event before the end: {line}"
            );
        }
    }
}

/// A publish body whose payload carries `seq`.
pub fn numbered(name: &str, seq: u64) -> Value {
    serde_json::json!({"name": name, "payload": {"seq": seq}})
}

pub fn seq_of(event: &Value) -> u64 {
    event["payload"]["seq"].as_u64().expect("payload.seq")
}
