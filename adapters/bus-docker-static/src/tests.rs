//! Unit tests of the static runtime.

use bus_docker_domain::ports::Stdin;

use super::*;

/// The id `ensure_image` gives for the image of [`spec`].
fn checked() -> ImageId {
    ImageId::new(image_id(&spec("x", &[]).image))
}

fn spec(run_id: &str, command: &[&str]) -> RunSpec {
    RunSpec::builder(run_id, "img:1")
        .correlation("c-1")
        .command(command)
        .max_output_bytes(1024)
        .build()
}

fn io() -> RunIo {
    RunIo {
        stdin: Stdin::Closed,
        timeout: Duration::from_secs(60),
        cancel: Box::pin(std::future::pending()),
        max_output_bytes: 1024,
        stop_grace: Duration::from_secs(10),
        output: None,
    }
}

#[tokio::test]
async fn a_parked_container_is_claimed_once_and_runs_from_the_claim() {
    let rt = StaticRuntime::new();
    let parked = rt.park(&spec("t", &["true"]), "docker@a").await.unwrap();
    let parked2 = rt.park(&spec("t", &["true"]), "docker@a").await.unwrap();
    assert_eq!(rt.list_parked("docker@a").await.unwrap().len(), 2);
    assert!(rt.list_parked("docker@b").await.unwrap().is_empty());
    assert!(
        rt.list_managed(&ManagedFilter::all())
            .await
            .unwrap()
            .is_empty(),
        "parked is no run"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = SystemTime::now();
    let claimed = rt
        .claim(&parked, &spec("r1", &["echo", "hi"]))
        .await
        .unwrap();
    assert_eq!(claimed.name, "bus-run-r1");
    let run = rt.inspect_managed(&claimed).await.unwrap();
    assert!(
        run.started_at.unwrap() >= before,
        "times count from the claim"
    );
    assert_eq!(run.correlation.unwrap().as_str(), "c-1");
    // Single use, and a duplicate never claims a second container.
    assert!(matches!(
        rt.claim(&parked, &spec("r2", &["true"])).await,
        Err(RuntimeError::ContainerGone(_))
    ));
    assert!(matches!(
        rt.claim(&parked2, &spec("r1", &["true"])).await,
        Err(RuntimeError::NameConflict(_))
    ));
    assert!(rt.list_parked("docker@a").await.unwrap().is_empty());
    let exit = rt.drive(&claimed, io()).await.unwrap();
    assert_eq!(exit.exit_code, Some(0));
}

#[tokio::test]
async fn listings_follow_the_filter_and_leave_the_start_to_inspect() {
    let rt = StaticRuntime::new();
    let a = rt
        .create(&spec("a", &["echo", "a"]), "docker@a", &checked())
        .await
        .unwrap();
    rt.create(&spec("b", &["echo", "b"]), "docker@b", &checked())
        .await
        .unwrap();
    rt.drive(&a, io()).await.unwrap();
    let names = |list: Vec<ManagedContainer>| {
        list.into_iter()
            .map(|m| m.container.name)
            .collect::<Vec<_>>()
    };
    let all = rt.list_managed(&ManagedFilter::all()).await.unwrap();
    assert!(all
        .iter()
        .all(|m| m.started_at.is_none() && m.created_at.is_some()));
    assert_eq!(names(all), ["bus-run-a", "bus-run-b"]);
    let of_b = rt
        .list_managed(&ManagedFilter::runner("docker@b"))
        .await
        .unwrap();
    assert_eq!(names(of_b), ["bus-run-b"]);
    let run_a = ManagedFilter::run(bus_docker_domain::RunId::parse("a").unwrap());
    assert_eq!(names(rt.list_managed(&run_a).await.unwrap()), ["bus-run-a"]);
    assert!(rt.inspect_managed(&a).await.unwrap().started_at.is_some());
}

#[tokio::test]
async fn a_delete_through_another_handle_cancels_the_drive() {
    let rt = StaticRuntime::new();
    let other = rt.clone();
    let c = rt
        .create(&spec("d", &["sleep", "30"]), "r", &checked())
        .await
        .unwrap();
    let deleting = async {
        while other.inspect_managed(&c).await.unwrap().state != ContainerState::Running {
            tokio::task::yield_now().await;
        }
        other.delete_run(&c, Duration::from_secs(5)).await.unwrap();
    };
    let (exit, ()) = tokio::join!(rt.drive(&c, io()), deleting);
    let exit = exit.unwrap();
    assert_eq!(exit.ending, Ending::Canceled);
    assert!(!exit.oom_killed);
    let record = rt.inspect_managed(&c).await.unwrap();
    assert_eq!(
        (record.mark, record.container.name.as_str()),
        (RunMark::Deleted, "bus-run-d.deleted")
    );
    rt.mark_answered(&c).await.unwrap();
    rt.delete_run(&c, Duration::ZERO).await.unwrap();
    assert_eq!(
        rt.inspect_managed(&c).await.unwrap().mark,
        RunMark::Answered
    );
    rt.remove(&c).await.unwrap();
    rt.mark_answered(&c).await.unwrap();
    rt.delete_run(&c, Duration::ZERO).await.unwrap();
}

#[tokio::test]
async fn a_kill_ends_the_drive_as_killed() {
    let rt = StaticRuntime::new();
    let c = rt
        .create(&spec("k", &["sleep", "30"]), "r", &checked())
        .await
        .unwrap();
    let killing = async {
        while rt.inspect_managed(&c).await.unwrap().state != ContainerState::Running {
            tokio::task::yield_now().await;
        }
        rt.kill(&c).await.unwrap();
    };
    let (exit, ()) = tokio::join!(rt.drive(&c, io()), killing);
    let exit = exit.unwrap();
    assert_eq!(
        (exit.ending, exit.exit_code),
        (Ending::Exited(137), Some(137))
    );
}

#[tokio::test]
async fn a_taken_tombstone_name_is_a_conflict() {
    let rt = StaticRuntime::new();
    let first = rt
        .create(&spec("t", &["exit", "0"]), "r", &checked())
        .await
        .unwrap();
    rt.drive(&first, io()).await.unwrap();
    rt.mark_answered(&first).await.unwrap();
    let second = rt
        .create(&spec("t", &["exit", "0"]), "r", &checked())
        .await
        .unwrap();
    assert_eq!(
        rt.mark_answered(&second).await,
        Err(RuntimeError::NameConflict("bus-run-t.answered".into()))
    );
}

#[test]
fn image_ids_are_deterministic() {
    let i = ImageRef::parse("alpine:3.20").unwrap();
    assert_eq!(image_id(&i), image_id(&i));
    assert_eq!(image_id(&i).len(), "sha256:".len() + 64);
}
