//! Graceful shutdown (docs/protocol.md §5) on the in-memory event ports with the
//! static runtime and a paused clock: queued runs are answered `canceled`,
//! running runs get the grace period, then are left to the next start-up.

use crate::common;

use std::time::Duration;

use bus_docker_domain::request::{Inbound, Request, RunRequest};
use bus_docker_domain::response::Reply;
use bus_docker_domain::run::RunStatus;
use bus_docker_domain::{CorrelationId, ErrorCode, ImageRef, Operation, RunId};
use bus_docker_static::StaticRuntime;

fn run(correlation: &str, run_id: &str, command: &[&str]) -> Inbound {
    Inbound {
        operation: Operation::Run,
        correlation: CorrelationId::parse(correlation).unwrap(),
        stamped_owner: None,
        request: Ok(Request::Run(Box::new(RunRequest {
            run_id: Some(RunId::parse(run_id).unwrap()),
            image: Some(ImageRef::parse("img:1").unwrap()),
            command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
            ..RunRequest::default()
        }))),
    }
}

fn status_of(r: &bus_docker_domain::response::Response) -> RunStatus {
    match &r.reply {
        Some(Reply::Run(report)) => report.status,
        other => panic!("not a run reply: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn queued_runs_are_canceled_and_running_ones_get_the_grace() {
    let s = common::settings(
        "provider = \"static\"\nmax_concurrent_runs = 1\nshutdown_grace = \"10s\"\n",
    );
    let runtime = StaticRuntime::new();
    let (bus, stop, handle) = common::spawn_memory_worker(&s, &runtime);

    bus.send(run("short", "short-1", &["sleep", "5"]));
    bus.send(run("queued", "queued-1", &["echo", "never"]));
    // Stop once the short run runs and the queued one waits behind it.
    common::wait_started(&bus, &runtime, 1).await;
    stop.cancel();
    let published = bus.wait_for(|r| r.len() == 2).await;
    let queued = published
        .iter()
        .find(|r| r.correlation.as_str() == "queued")
        .expect("queued run answered");
    assert_eq!(queued.error.as_ref().unwrap().code, ErrorCode::Canceled);
    assert_eq!(status_of(queued), RunStatus::Canceled);
    let short = published
        .iter()
        .find(|r| r.correlation.as_str() == "short")
        .expect("running run finished within the grace");
    assert_eq!(status_of(short), RunStatus::Succeeded);
    handle.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn runs_longer_than_the_grace_are_left_for_the_next_start() {
    let s = common::settings(
        "provider = \"static\"\nrunner_name = \"static@grace\"\nshutdown_grace = \"2s\"\n",
    );
    let runtime = StaticRuntime::new();
    let (bus, stop, handle) = common::spawn_memory_worker(&s, &runtime);
    bus.send(run("long", "long-1", &["sleep", "3600"]));
    common::wait_started(&bus, &runtime, 1).await;
    let started = tokio::time::Instant::now();
    stop.cancel();
    handle.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2) && started.elapsed() < Duration::from_secs(3)
    );
    assert!(
        bus.published().is_empty(),
        "no response: the run is not finished"
    );
    use bus_docker_domain::ports::ContainerRuntime;
    let left = runtime
        .list_managed(&bus_docker_domain::container::ManagedFilter::all())
        .await
        .unwrap();
    assert_eq!(
        left.len(),
        1,
        "the container stays as the record of the run"
    );

    // The next start-up (same runner name, same engine) recovers and answers it.
    let (bus2, stop2, handle2) = common::spawn_memory_worker(&s, &runtime);
    let answered = bus2.wait_for(|r| !r.is_empty()).await;
    assert_eq!(answered[0].correlation.as_str(), "long");
    assert_eq!(
        answered[0].event,
        s.worker.prefix.response_name(Operation::Run)
    );
    stop2.cancel();
    handle2.await.unwrap().unwrap();
    let _ = bus;
}

#[tokio::test(start_paused = true)]
async fn a_refused_publish_stops_intake_with_a_clear_error() {
    let s = common::settings("provider = \"static\"\nshutdown_grace = \"2s\"\n");
    let runtime = StaticRuntime::new();
    let (bus, _stop, handle) = common::spawn_memory_worker(&s, &runtime);
    bus.send(run("before", "before-1", &["echo", "ok"]));
    bus.wait_for(|r| r.len() == 1).await;
    bus.refuse_publishing();
    bus.send(run("refused", "refused-1", &["echo", "lost"]));
    let stopped = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the worker stops taking requests instead of running on")
        .unwrap();
    let err = stopped.expect_err("a refused token is fatal");
    assert!(err.to_string().contains("401/403"), "{err}");
    // Nothing more is taken: the worker has stopped, and a request sent
    // now stays on the bus, unread and unanswered.
    bus.send(run("after", "after-1", &["echo", "never"]));
    let untaken: Vec<String> = bus
        .untaken()
        .iter()
        .map(|r| r.correlation.as_str().to_owned())
        .collect();
    assert!(untaken.contains(&"after".to_owned()), "{untaken:?}");
    assert_eq!(bus.published().len(), 1);
}
