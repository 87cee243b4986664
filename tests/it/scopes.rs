//! Scopes (docs/protocol.md §9, issue 17 item 4): a worker token that lacks a
//! container scope serves the operations it has. Each stream the Events
//! API refuses (403) is reported naming the missing scope, in `/readyz`
//! (503) and in `runner.status` (`details.streams`, when the runner
//! streams are open), and asked for again slowly so that a re-granted token
//! is picked up; only a token that opens no request stream at all stops
//! the worker, with a non-zero exit and a message naming the scopes.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bus_docker_domain::Operation;
use bus_events_client::{ClientConfig, EventsClient, EventsUrl, TokenSource};
use bus_integration_docker::app::{self, App};
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::{LocalBus, WORKER_SCOPES};
use common::{code, eventually, Caller, TestWorker};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// How often a refused stream is asked for again here (a minute in
/// production: `bus_events_client::REFUSED_STREAM_RETRY`).
const REFUSED_RETRY: Duration = Duration::from_millis(200);

fn protected_settings() -> Settings {
    common::settings(
        "provider = \"static\"\nevent_prefix = \"bus.docker\"\nmetrics_addr = \"127.0.0.1:0\"\n\
         shutdown_grace = \"2s\"\n",
    )
}

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

/// A worker on `bus` whose token is read from `token_file`, with its
/// metrics listener; waits until the streams of `served` are connected.
async fn spawn_scoped(
    bus: &LocalBus,
    s: &Settings,
    token_file: &Path,
    served: &[Operation],
) -> (TestWorker, SocketAddr) {
    common::init_tracing();
    let mut config = ClientConfig::new(
        EventsUrl::parse(&bus.url()).unwrap(),
        TokenSource::File(token_file.to_owned()),
    );
    config.stream_backoff.min = Duration::from_millis(50);
    config.stream_backoff.max = Duration::from_millis(500);
    config.refused_retry = REFUSED_RETRY;
    let client = EventsClient::new(config).unwrap();
    let mut app = App::over_http(s, app::runtime(s).unwrap(), &client, "scoped".into());
    let addr = app.bind_metrics().unwrap().expect("metrics_addr is set");
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    for op in served {
        let name = s.worker.prefix.request_name(*op);
        assert!(
            bus.wait_consumers(&name, &s.events.group, 1, Duration::from_secs(20))
                .await,
            "{name} did not connect"
        );
    }
    (TestWorker { stop, handle }, addr)
}

/// `/readyz` once it answers 503 naming every one of `streams`.
async fn readyz_naming(addr: SocketAddr, streams: &[String], scope: &str) -> String {
    let body = eventually(
        &format!("/readyz 503 naming {streams:?}"),
        Duration::from_secs(20),
        || async move {
            let (status, body) = get(addr, "/readyz").await?;
            (status == 503 && streams.iter().all(|s| body.contains(s.as_str()))).then_some(body)
        },
    )
    .await;
    assert!(body.contains(scope), "{body}");
    body
}

async fn a_run_succeeds(caller: &Caller) {
    let r = caller
        .call(Operation::Run, json!({"image": "a:1", "command": ["true"]}))
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let run_id = r["run_id"].as_str().unwrap().to_owned();
    let st = caller
        .call(Operation::Status, json!({"run_id": run_id}))
        .await;
    assert_eq!(st["items"][0]["state"], "exited", "{st}");
}

fn runner_names(s: &Settings) -> Vec<String> {
    [
        Operation::RunnerStatus,
        Operation::RunnerStart,
        Operation::RunnerDelete,
    ]
    .map(|op| s.worker.prefix.request_name(op))
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_container_admin_serves_runs_and_status_and_picks_up_a_regrant() {
    let bus = LocalBus::start().await.unwrap();
    let s = protected_settings();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    let without_admin = WORKER_SCOPES.replace(" container:admin", "");
    std::fs::write(&token_file, bus.token_with_scopes(&without_admin).unwrap()).unwrap();
    let served = [
        Operation::Run,
        Operation::Status,
        Operation::Input,
        Operation::Delete,
    ];
    let (worker, addr) = spawn_scoped(&bus, &s, &token_file, &served).await;

    let caller = Caller::new(&bus, &s.worker.prefix);
    a_run_succeeds(&caller).await;
    let body = readyz_naming(addr, &runner_names(&s), "missing scope container:admin").await;
    assert!(body.contains("HTTP 403"), "{body}");
    assert!(
        !worker.handle.is_finished(),
        "a missing scope does not stop the worker"
    );

    // The token is re-granted the scope: the refused streams are asked for
    // again (every REFUSED_RETRY here, about a minute in production), the
    // token file is read again, and runner.* is served.
    std::fs::write(&token_file, bus.token_with_scopes(WORKER_SCOPES).unwrap()).unwrap();
    common::wait_connected(&bus, &s, 1).await;
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    let streams = st["status"]["details"]["streams"].as_array().unwrap();
    assert_eq!(streams.len(), Operation::ALL.len(), "{st}");
    assert!(streams.iter().all(|s| s["state"] == "connected"), "{st}");
    assert_eq!(st["status"]["state"], "ready", "{st}");
    let (status, body) = get(addr, "/readyz").await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_container_delete_serves_the_rest_and_names_the_stream() {
    let bus = LocalBus::start().await.unwrap();
    let s = protected_settings();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("api-token");
    let without_delete = WORKER_SCOPES.replace(" container:delete", "");
    std::fs::write(&token_file, bus.token_with_scopes(&without_delete).unwrap()).unwrap();
    let served = [
        Operation::Run,
        Operation::Status,
        Operation::Input,
        Operation::RunnerStatus,
        Operation::RunnerStart,
        Operation::RunnerDelete,
    ];
    let (worker, addr) = spawn_scoped(&bus, &s, &token_file, &served).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    a_run_succeeds(&caller).await;

    let delete = s.worker.prefix.request_name(Operation::Delete);
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    let status = &st["status"];
    assert_eq!(status["state"], "degraded", "{st}");
    let problem = status["details"]["problem"].as_str().unwrap();
    assert!(
        problem.contains(&delete) && problem.contains("container:delete"),
        "{problem}"
    );
    let streams = status["details"]["streams"].as_array().unwrap();
    let refused: Vec<&Value> = streams.iter().filter(|s| s["state"] == "refused").collect();
    assert_eq!(refused.len(), 1, "{st}");
    assert_eq!(refused[0]["name"], delete.as_str());
    assert_eq!(refused[0]["missing_scope"], "container:delete");
    assert!(
        refused[0]["error"].as_str().unwrap().contains("403"),
        "{st}"
    );
    assert_eq!(
        streams.iter().filter(|s| s["state"] == "connected").count(),
        Operation::ALL.len() - 1,
        "{st}"
    );
    readyz_naming(
        addr,
        std::slice::from_ref(&delete),
        "missing scope container:delete",
    )
    .await;

    // A delete request is never read by this worker (its stream is
    // refused), but a run request still is, and is answered.
    let r = caller
        .call(Operation::Run, json!({"image": "a:1", "command": ["true"]}))
        .await;
    assert!(code(&r).is_empty(), "{r}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_no_container_scope_exits_non_zero_naming_the_scopes() {
    let bus = LocalBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let token = bus.token_with_scopes("events:send events:listen").unwrap();
    let mut child = common::worker_process(&bus, "scopes-none", "bus.docker", &log)
        .env("BUS_API_TOKEN", token)
        .env("BUS_DOCKER_PROVIDER", "static")
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the worker gives up")
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "non-zero exit: {status:?}\n{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("no request stream can be opened"),
        "the last line says why: {last}\n{text}"
    );
    for scope in [
        "container:read",
        "container:run",
        "container:delete",
        "container:admin",
    ] {
        assert!(last.contains(scope), "{scope} named: {last}");
    }
}
