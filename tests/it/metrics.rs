//! Metrics and health (docs/protocol.md §8): the opt-in listener, counters that
//! move with requests and runs, and `/readyz` following the Events API
//! and the engine.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::app::{self, App, AppError};
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::LocalBus;
use common::{eventually, Caller, SocketProxy, TestWorker};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// `GET path` on `addr`: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// A sample's value in the exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A worker with its metrics listener on a free port.
async fn spawn_observed(bus: &LocalBus, settings: &Settings) -> (TestWorker, SocketAddr) {
    common::init_tracing();
    let client = bus.client().unwrap();
    let runtime = app::runtime(settings).unwrap();
    let mut app = App::over_http(settings, runtime, &client, "observed".into());
    let addr = app
        .bind_metrics()
        .expect("metrics listener")
        .expect("metrics_addr is set");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    common::wait_connected(bus, settings, 1).await;
    (TestWorker { stop, handle }, addr)
}

async fn wait_ready(addr: SocketAddr, want: u16) -> String {
    eventually(
        &format!("/readyz answers {want}"),
        Duration::from_secs(30),
        || async move {
            get(addr, "/readyz")
                .await
                .filter(|(status, _)| *status == want)
                .map(|(_, body)| body)
        },
    )
    .await
}

#[tokio::test]
async fn without_metrics_addr_there_is_no_listener() {
    let bus = LocalBus::start().await.unwrap();
    let s = common::settings("provider = \"static\"\n");
    assert_eq!(s.metrics_addr, None);
    let client = bus.client().unwrap();
    let mut app = App::over_http(&s, app::runtime(&s).unwrap(), &client, "quiet".into());
    assert_eq!(app.bind_metrics().unwrap(), None, "no socket is opened");
}

#[tokio::test]
async fn a_taken_metrics_address_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let bus = LocalBus::start().await.unwrap();
    let s = common::settings(&format!(
        "provider = \"static\"\nmetrics_addr = \"{addr}\"\n"
    ));
    let client = bus.client().unwrap();
    let mut app = App::over_http(&s, app::runtime(&s).unwrap(), &client, "taken".into());
    let err = app.bind_metrics().unwrap_err();
    assert!(matches!(err, AppError::Metrics { .. }), "{err}");
    assert!(app::report(&err).contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn counters_move_and_readyz_follows_the_events_api() {
    let bus = LocalBus::start().await.unwrap();
    let s = common::settings(
        "provider = \"static\"\nevent_prefix = \"bus.metrics\"\nmetrics_addr = \"127.0.0.1:0\"\n\
         [events]\nlistener_retry_min = \"100ms\"\nlistener_retry_max = \"500ms\"\n",
    );
    let (worker, addr) = spawn_observed(&bus, &s).await;
    assert_eq!(get(addr, "/healthz").await.unwrap().0, 200);
    assert_eq!(wait_ready(addr, 200).await, "ready\n");

    let caller = Caller::new(&bus, &s.worker.prefix);
    let ok = caller
        .call(
            Operation::Run,
            json!({"image": "img:1", "command": ["echo", "hi"]}),
        )
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    let failed = caller
        .call(
            Operation::Run,
            json!({"image": "img:1", "command": ["exit", "3"]}),
        )
        .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let missing = caller
        .call(Operation::Delete, json!({"run_id": "nope"}))
        .await;
    assert_eq!(common::code(&missing), "not_found", "{missing}");

    let (status, text) = get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    for (series, want) in [
        (r#"bus_docker_runs_total{status="succeeded"}"#, 1.0),
        (r#"bus_docker_runs_total{status="failed"}"#, 1.0),
        (r#"bus_docker_requests_total{op="run",result="ok"}"#, 2.0),
        (
            r#"bus_docker_requests_total{op="delete",result="not_found"}"#,
            1.0,
        ),
        ("bus_docker_run_duration_seconds_count", 2.0),
        ("bus_docker_runs_active", 0.0),
        ("bus_docker_runs_queued", 0.0),
        (r#"bus_docker_engine_up{host="static"}"#, 1.0),
        ("bus_docker_stream_reconnects_total", 0.0),
        ("bus_docker_publish_failures_total", 0.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        !text.contains("run_id") && !text.contains("owner"),
        "{text}"
    );

    // The Events API goes away: not ready, naming the streams; back: ready,
    // and every request stream counted one reconnect.
    let (bus, down) = tokio::join!(bus.restart(Duration::from_secs(3)), wait_ready(addr, 503));
    let bus = bus.unwrap();
    assert!(down.contains("request streams not connected"), "{down}");
    assert!(down.contains("bus.metrics.run.request"), "{down}");
    wait_ready(addr, 200).await;
    let text = get(addr, "/metrics").await.unwrap().1;
    assert_eq!(
        value(&text, "bus_docker_stream_reconnects_total"),
        Some(Operation::ALL.len() as f64),
        "{text}"
    );

    worker.stop().await.unwrap();
    assert!(
        get(addr, "/healthz").await.is_none(),
        "the listener stops with the worker"
    );
    drop(bus);
}

#[tokio::test]
async fn run_metrics_and_readyz_follow_the_engine() {
    let docker = common::require_engine().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let real = common::docker_socket();
    let proxy = SocketProxy::start(&sock, &real).await;
    let bus = LocalBus::start().await.unwrap();
    let runner = common::unique("metrics");
    let host = format!("unix://{}", sock.display());
    let s = common::docker_settings(
        &runner,
        &format!("metrics_addr = \"127.0.0.1:0\"\n[docker]\nhost = \"{host}\"\n"),
    );
    let (worker, addr) = spawn_observed(&bus, &s).await;
    wait_ready(addr, 200).await;

    let caller = Caller::new(&bus, &s.worker.prefix);
    let image = common::test_image();
    let run = caller
        .call(
            Operation::Run,
            json!({"image": image, "command": ["sh", "-c", "sleep 1; echo done"]}),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let text = get(addr, "/metrics").await.unwrap().1;
    assert_eq!(
        value(&text, r#"bus_docker_runs_total{status="succeeded"}"#),
        Some(1.0),
        "{text}"
    );
    let sum = value(&text, "bus_docker_run_duration_seconds_sum").unwrap();
    // The engine stamps `StartedAt` once the process already runs, so a
    // `sleep 1` can measure a few milliseconds under a second.
    assert!((0.9..30.0).contains(&sum), "duration of a 1 s run: {sum}");
    let up = format!("bus_docker_engine_up{{host=\"{host}\"}}");
    assert_eq!(value(&text, &up), Some(1.0), "{text}");

    // The engine goes away: not ready within a probe or two; back: ready.
    proxy.stop().await;
    let down = wait_ready(addr, 503).await;
    assert!(down.starts_with("not ready: engine unreachable"), "{down}");
    let text = get(addr, "/metrics").await.unwrap().1;
    assert_eq!(value(&text, &up), Some(0.0), "{text}");
    let proxy = SocketProxy::start(&sock, &real).await;
    wait_ready(addr, 200).await;

    worker.stop().await.unwrap();
    proxy.stop().await;
    assert!(common::no_containers_left(&docker, &runner)
        .await
        .is_empty());
}
