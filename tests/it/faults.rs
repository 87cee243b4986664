//! Fault tests (loopback only, bounded in time): kill -9 with runs in
//! flight, cut streams, an Events API restart, and an unreachable engine.
//! Each checks that every request got exactly one response and that no
//! managed container remains. Figures are printed (`--nocapture`).

use crate::common;

use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{
    answered_once, collect, collect_more, docker_settings, each_answered_once, no_containers_left,
    require_engine, shell, spawn_worker, test_image, unique, Answers, Caller, SocketProxy,
};
use serde_json::json;

fn report(test: &str, sent: usize, seen: &Answers, orphans: usize, panics: usize) {
    let received: usize = seen.values().map(Vec::len).sum();
    let duplicates = received - seen.len();
    println!("FAULT {test}: requests sent {sent}, responses received {received}, duplicates {duplicates}, orphans {orphans}, panics {panics}");
}

/// No managed container of `runner` is left; prints the figures of `test`.
async fn assert_no_orphans(
    test: &str,
    docker: &bollard::Docker,
    runner: &str,
    sent: usize,
    seen: &Answers,
) {
    let left = no_containers_left(docker, runner).await;
    report(test, sent, seen, left.len(), 0);
    assert!(left.is_empty(), "orphans: {left:?}");
}

fn spawn_worker_process(
    bus: &LocalBus,
    runner: &str,
    prefix: &str,
    log: &std::path::Path,
) -> tokio::process::Child {
    common::worker_process(bus, runner, prefix, log)
        .spawn()
        .expect("worker binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_runs_in_flight_loses_no_response() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("crash");
    let s = docker_settings(&runner, "");
    let prefix = s.worker.prefix.as_str().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");

    let mut first = spawn_worker_process(&bus, &runner, &prefix, &log);
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let mut sent = caller
        .publish_batch(Operation::Run, 0..6, |i| {
            shell(&format!("sleep 2; echo done-{i}"))
        })
        .await;
    // Every run has its container, started: the worker is mid-run for all
    // of them.
    common::wait_runs_started(&docker, &runner, 6).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    // Requests published while no worker listens wait in the group queue.
    sent.extend(
        caller
            .publish_batch(Operation::Run, 6..8, |i| shell(&format!("echo late-{i}")))
            .await,
    );
    let mut second = spawn_worker_process(&bus, &runner, &prefix, &log);
    let seen = collect(
        &mut waiter,
        sent.len(),
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        assert_eq!(r["status"], "succeeded", "{r}");
        let expected = if i < 6 {
            format!("done-{i}\n")
        } else {
            format!("late-{i}\n")
        };
        assert_eq!(r["stdout"], expected.as_str());
        if i < 6 {
            assert!(
                r["duration_ms"].as_u64().unwrap() >= 1900,
                "recovered runs keep their real start: {r}"
            );
        }
    }
    let left = no_containers_left(&docker, &runner).await;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let panics = logs.matches("panicked").count();
    report("kill -9", sent.len(), &seen, left.len(), panics);
    assert!(left.is_empty(), "orphans: {left:?}");
    assert_eq!(panics, 0, "{logs}");
    assert!(
        logs.contains("recovering run"),
        "the second worker recovered the runs"
    );

    // SIGTERM: a graceful stop exits 0.
    let pid = second.id().unwrap();
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), second.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_streams_during_a_batch_lose_nothing() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("cuts");
    let s = docker_settings(&runner, "max_concurrent_runs = 4\n");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let image = test_image();
    let mut sent = Vec::new();
    for i in 0..12 {
        let cmd = format!("sleep 0.5; echo {i}");
        sent.push(caller.publish_shell(&image, &cmd).await);
        if i % 3 == 0 {
            bus.server().drop_streams();
        }
    }
    // Cut again as each of the first five answers comes back: the answers
    // are the signal, so the cuts fall while the rest of the batch is still
    // running and being answered (12 runs on 4 slots), not at clock times.
    let mut seen = Answers::new();
    for cut in 0..5 {
        let (correlation, answer) = waiter
            .next_any(Duration::from_secs(30))
            .await
            .expect("response stream")
            .unwrap_or_else(|| panic!("no answer before cut {cut}"));
        seen.entry(correlation).or_default().push(answer);
        bus.server().drop_streams();
    }
    let rest = sent.len() - seen.len();
    collect_more(
        &mut seen,
        &mut waiter,
        rest,
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        assert_eq!(r["stdout"], format!("{i}\n").as_str(), "{r}");
    }
    assert_no_orphans("stream cuts", &docker, &runner, sent.len(), &seen).await;
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_api_restart_mid_batch_loses_nothing() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("restart");
    let s = docker_settings(&runner, "max_concurrent_runs = 8\n");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let sent = Caller::new(&bus, &s.worker.prefix)
        .publish_batch(Operation::Run, 0..6, |i| {
            shell(&format!("sleep 4; echo {i}"))
        })
        .await;
    common::wait_containers(&docker, &runner, 6).await;
    // The runs are in flight: restart the Events API under them. Its memory
    // backend starts empty; the worker's streams reconnect, and responses
    // wait and retry until the API takes them.
    let bus = bus.restart(Duration::from_millis(500)).await.unwrap();
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    common::wait_connected(&bus, &s, 1).await;
    let seen = collect(
        &mut waiter,
        sent.len(),
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        assert_eq!(r["stdout"], format!("{i}\n").as_str(), "{r}");
    }
    // And the worker still serves new requests.
    let r = caller
        .call(
            Operation::Run,
            json!({"image": test_image(), "command": ["echo", "after"]}),
        )
        .await;
    assert_eq!(r["stdout"], "after\n");
    assert_no_orphans("events api restart", &docker, &runner, sent.len(), &seen).await;
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_reported_and_the_run_recovers() {
    let docker = require_engine().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let real = common::docker_socket();
    let proxy = SocketProxy::start(&sock, &real).await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("engine");
    let s = docker_settings(
        &runner,
        &format!("[docker]\nhost = \"unix://{}\"\n", sock.display()),
    );
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;
    let image = test_image();
    let run_id = format!("{runner}-long");
    let long = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": image,
                   "command": ["sh", "-c", "sleep 4; echo survived"]}),
        )
        .await;
    // The run is under way (its status says `running`) before the engine
    // goes away: the state is the signal, not a pause.
    common::wait_running(&caller, &run_id).await;
    proxy.stop().await;

    // While the engine is away: runner.status says so, new runs are refused
    // with runtime_unavailable, within seconds.
    let started = tokio::time::Instant::now();
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["state"], "unavailable", "{st}");
    let refused = caller
        .call(Operation::Run, json!({"image": image, "command": ["true"]}))
        .await;
    assert_eq!(refused["error"]["code"], "runtime_unavailable", "{refused}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "reported within seconds: {:?}",
        started.elapsed()
    );

    // The engine comes back: the in-flight run is re-attached and answered once.
    let proxy = SocketProxy::start(&sock, &real).await;
    let seen = collect(
        &mut runs,
        2,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    let r = answered_once(&seen, &long);
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout"], "survived\n");
    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["state"], "ready", "{st}");
    assert_no_orphans("engine unreachable", &docker, &runner, 2, &seen).await;
    worker.stop().await.unwrap();
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_the_events_api_connects_when_it_comes() {
    let bus = LocalBus::start().await.unwrap();
    let s = common::settings(
        "provider = \"static\"\nevent_prefix = \"bus.early\"\nshutdown_grace = \"2s\"\n",
    );
    let client = bus.client().unwrap();
    // Take the Events API down, start the worker while it is down, bring
    // the API back: the worker's streams keep retrying and connect. The
    // 2 s the API stays down is the scenario, not a wait for a signal.
    let addr = bus.server().local_addr();
    let restarting = tokio::spawn(bus.restart(Duration::from_secs(2)));
    // The API is down once its address refuses connections.
    common::eventually(
        "the Events API is down",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let runtime = bus_integration_docker::app::runtime(&s).unwrap();
    let app = bus_integration_docker::app::App::over_http(&s, runtime, &client, "early".into());
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    assert!(
        !restarting.is_finished(),
        "the worker started while the Events API was down"
    );
    let bus = restarting.await.unwrap().unwrap();
    assert!(
        !handle.is_finished(),
        "the worker kept retrying while the Events API was down"
    );
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let r = caller
        .call(
            Operation::Run,
            json!({"image": "a:1", "command": ["echo", "late"]}),
        )
        .await;
    assert_eq!(r["stdout"], "echo late\n");
    stop.cancel();
    handle.await.unwrap().unwrap();
}
