//! Intake follows capacity (contract §5, issue 11 item 6): two workers of
//! different capacity share one unicast group; the small one pauses its run
//! intake while it is full, so the group hands the runs to the one with
//! room instead of the small one answering `capacity`.

use crate::common;

use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{code, settings, spawn_worker, unique, Caller};
use serde_json::json;

/// How many runs, how far apart, and how long each sleeps: about three
/// runs in flight at a time, within the five slots of the two workers, so
/// every run has room somewhere when it is published.
const RUNS: usize = 15;
const GAP: Duration = Duration::from_millis(100);
const SLEEP: &str = "0.3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_worker_leaves_runs_to_the_one_with_room() {
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("intake");
    let worker = |runner: &str, limits: &str| {
        settings(&format!(
            "provider = \"static\"\nrunner_name = \"{runner}\"\nevent_prefix = \"bus.t.{tag}\"\nshutdown_grace = \"2s\"\n{limits}[events]\ngroup = \"{tag}\"\n"
        ))
    };
    let small = worker("small", "max_concurrent_runs = 1\nmax_queued_runs = 0\n");
    let large = worker("large", "max_concurrent_runs = 4\nmax_queued_runs = 0\n");
    let wa = spawn_worker(&bus, &small, "small").await;
    let wb = spawn_worker(&bus, &large, "large").await;
    let run_name = small.worker.prefix.request_name(Operation::Run);
    assert!(
        bus.wait_consumers(&run_name, &tag, 2, Duration::from_secs(20))
            .await
    );

    let caller = Caller::new(&bus, &small.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;
    for _ in 0..RUNS {
        caller
            .publish(
                Operation::Run,
                json!({"image": "a:1", "command": ["sleep", SLEEP]}),
            )
            .await;
        tokio::time::sleep(GAP).await;
    }
    let got = common::collect(&mut runs, RUNS, Duration::from_millis(500), common::WAIT).await;

    let answers: Vec<_> = got.values().flatten().collect();
    assert_eq!(answers.len(), RUNS, "one answer per run: {got:?}");
    let refused: Vec<_> = answers.iter().filter(|a| !code(a).is_empty()).collect();
    assert!(refused.is_empty(), "no run refused (capacity): {refused:?}");
    let ran_on = |runner: &str| {
        answers
            .iter()
            .filter(|a| a["runner_name"] == runner)
            .count()
    };
    let (on_small, on_large) = (ran_on("small"), ran_on("large"));
    assert_eq!(on_small + on_large, RUNS, "{answers:?}");
    assert!(
        on_large > on_small,
        "the worker with room took more: large {on_large}, small {on_small}"
    );
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
}
