//! Live tests of the view of managed containers kept from the engine's
//! events: what another worker does shows up without listing the engine,
//! a worker reads its own writes at once, the view agrees with a fresh
//! listing, and its stream task ends with the engine.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::RunId;
use bus_docker_engine::DockerEngine;
use support::{engine, io, spec, Cleanup};

/// Poll `engine`'s (viewed) listing of `run_id` until `done` holds.
async fn until_viewed(
    engine: &DockerEngine,
    run_id: &RunId,
    what: &str,
    done: impl Fn(&[ManagedContainer]) -> bool,
) -> Vec<ManagedContainer> {
    let started = Instant::now();
    loop {
        let listed = engine
            .list_managed(&ManagedFilter::run(run_id.clone()))
            .await
            .unwrap();
        if done(&listed) {
            return listed;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the view never showed {what}: {listed:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_workers_container_shows_up_without_listing_the_engine() {
    let watcher = engine().await;
    let writer = engine().await; // its own connection: another worker
    let cleanup = Cleanup::new(&writer);
    let spec = spec("view-other", &["true"]);
    assert!(watcher
        .list_managed(&ManagedFilter::run(spec.run_id.clone()))
        .await
        .unwrap()
        .is_empty());
    assert!(watcher.view_synced(), "the first listing builds the view");
    let calls = watcher.list_calls();

    let container = cleanup.create(&writer, &spec).await;
    let seen = until_viewed(&watcher, &spec.run_id, "the create", |l| l.len() == 1).await;
    assert_eq!(seen[0].container.id, container.id);
    assert_eq!(seen[0].mark, RunMark::Live);
    assert_eq!(seen[0].runner.as_deref(), Some("docker@test"));
    assert_eq!(seen[0].state, ContainerState::Created);

    writer.delete_run(&container, Duration::ZERO).await.unwrap();
    let seen = until_viewed(&watcher, &spec.run_id, "the .deleted mark", |l| {
        l.first().is_some_and(|c| c.mark == RunMark::Deleted)
    })
    .await;
    assert_eq!(
        seen[0].container.name,
        format!("bus-run-{}.deleted", spec.run_id)
    );

    writer.remove(&container).await.unwrap();
    until_viewed(&watcher, &spec.run_id, "the removal", <[_]>::is_empty).await;
    assert_eq!(
        watcher.list_calls(),
        calls,
        "a synced view answers without asking the engine"
    );
    let fresh = ManagedFilter::run(spec.run_id.clone()).fresh();
    assert!(watcher.list_managed(&fresh).await.unwrap().is_empty());
    assert_eq!(
        watcher.list_calls(),
        calls + 1,
        "a fresh listing asks the engine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reads_its_own_writes_at_once() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("view-own", &["true"]);
    let run = ManagedFilter::run(spec.run_id.clone());
    assert!(engine.list_managed(&run).await.unwrap().is_empty());
    assert!(engine.view_synced());
    let calls = engine.list_calls();

    let container = cleanup.create(&engine, &spec).await;
    let listed = engine.list_managed(&run).await.unwrap();
    assert_eq!(listed.len(), 1, "created: {listed:?}");
    assert_eq!(listed[0].container.id, container.id);
    engine.mark_answered(&container).await.unwrap();
    let listed = engine.list_managed(&run).await.unwrap();
    assert_eq!(listed[0].mark, RunMark::Answered, "marked: {listed:?}");
    engine.remove(&container).await.unwrap();
    assert!(
        engine.list_managed(&run).await.unwrap().is_empty(),
        "removed"
    );
    assert_eq!(engine.list_calls(), calls);
}

/// The records of `runs`, in id order, with the creation time checked
/// within a second (an event's time and a listing's are taken apart) and
/// then left out.
fn comparable(list: Vec<ManagedContainer>, runs: &HashSet<RunId>) -> Vec<ManagedContainer> {
    let mut list: Vec<_> = list
        .into_iter()
        .filter(|c| runs.contains(&c.run_id))
        .collect();
    list.sort_by(|a, b| a.container.id.cmp(&b.container.id));
    for c in &mut list {
        c.created_at = None;
    }
    list
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_view_agrees_with_a_fresh_listing_after_a_batch() {
    let watcher = engine().await;
    let writer = engine().await;
    let cleanup = Cleanup::new(&writer);
    let specs: Vec<_> = (0..5)
        .map(|i| spec(&format!("view-batch{i}"), &["sh", "-c", "exit 3"]))
        .collect();
    let runs: HashSet<RunId> = specs.iter().map(|s| s.run_id.clone()).collect();
    watcher.list_managed(&ManagedFilter::all()).await.unwrap();
    assert!(watcher.view_synced());

    let mut containers = Vec::new();
    for spec in &specs {
        containers.push(cleanup.create(&writer, spec).await);
    }
    // Two run to their end, one of them answered; one is deleted before
    // it ran; one is removed; one stays created.
    for c in &containers[..2] {
        writer.drive(c, io(Duration::from_secs(30))).await.unwrap();
    }
    writer.mark_answered(&containers[1]).await.unwrap();
    writer
        .delete_run(&containers[2], Duration::ZERO)
        .await
        .unwrap();
    writer.remove(&containers[3]).await.unwrap();

    let started = Instant::now();
    loop {
        let viewed = watcher.list_managed(&ManagedFilter::all()).await.unwrap();
        let fresh = watcher
            .list_managed(&ManagedFilter::all().fresh())
            .await
            .unwrap();
        let both_times = |list: &[ManagedContainer]| {
            list.iter()
                .filter(|c| runs.contains(&c.run_id))
                .map(|c| (c.container.id.clone(), c.created_at))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let (view_times, fresh_times) = (both_times(&viewed), both_times(&fresh));
        let (viewed, fresh) = (comparable(viewed, &runs), comparable(fresh, &runs));
        if viewed == fresh {
            assert_eq!(fresh.len(), 4, "{fresh:?}");
            for (id, at) in &fresh_times {
                let (a, b) = (at.unwrap(), view_times[id].unwrap());
                let apart = a
                    .duration_since(b)
                    .or_else(|_| b.duration_since(a))
                    .unwrap();
                assert!(apart <= Duration::from_secs(1), "{id}: {a:?} vs {b:?}");
            }
            let states: Vec<_> = fresh.iter().map(|c| (c.mark, c.state.clone())).collect();
            assert!(states.contains(&(RunMark::Answered, ContainerState::Exited)));
            assert!(states.contains(&(RunMark::Live, ContainerState::Exited)));
            assert!(states.contains(&(RunMark::Deleted, ContainerState::Created)));
            assert!(states.contains(&(RunMark::Live, ContainerState::Created)));
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the view never agreed:\nview:  {viewed:?}\nfresh: {fresh:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_event_stream_ends_with_the_engine() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let engine = engine().await;
        engine.list_managed(&ManagedFilter::all()).await.unwrap();
        assert!(engine.view_synced());
        let following = metrics.num_alive_tasks();
        assert!(following > before, "the view follows the events in a task");
        for _ in 0..5 {
            engine.list_managed(&ManagedFilter::all()).await.unwrap();
        }
        assert_eq!(metrics.num_alive_tasks(), following, "no task per call");
        drop(engine);
        let started = Instant::now();
        while metrics.num_alive_tasks() > before {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the stream task outlived its engine"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}
