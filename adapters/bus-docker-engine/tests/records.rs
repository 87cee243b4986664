//! Live tests of the engine as the record of runs: only the worker's labels
//! count, listings are filtered by the engine, and run marks (deleted,
//! answered) travel in the container name between workers.

mod support;

use std::time::{Duration, Instant};

use bollard::query_parameters::{BuildImageOptions, BuilderVersion, RemoveImageOptions};
use bus_docker_domain::container::{ContainerRef, RunMark};
use bus_docker_domain::container::{ContainerState, ManagedFilter};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::run::Ending;
use bus_docker_domain::{ImageRef, RunId, RuntimeError};
use bus_docker_engine::DockerEngine;
use futures_util::StreamExt;
use support::{engine, image, io, raw_docker, run_id_prefix, spec, Cleanup};

/// A one-file tar archive (the build context of `docker build`).
fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..107].copy_from_slice(b"0000644");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    tar
}

/// An image built here (legacy builder, no registry) that tries to speak
/// for the runs made from it; removed when dropped.
struct HostileImage(String);

impl HostileImage {
    async fn build() -> Self {
        let tag = format!("bus-test-labels:{}", run_id_prefix().trim_end_matches('-'));
        let dockerfile = format!(
            "FROM {}\nLABEL bus.profile=admin bus.owner-identity-id=intruder \
             bus.runner=docker@elsewhere bus.correlation-id=stolen \
             bus.reply-event=evil.response bus.user.task=forged bus.interactive=true\n",
            image()
        );
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(tag.clone()),
            rm: true,
            version: BuilderVersion::BuilderV1,
            ..BuildImageOptions::default()
        };
        let context = tar_with("Dockerfile", dockerfile.as_bytes());
        let docker = raw_docker().await;
        let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
        while let Some(step) = build.next().await {
            let step = step.expect("the test image builds");
            assert!(step.error_detail.is_none(), "build failed: {step:?}");
        }
        Self(tag)
    }
}

impl Drop for HostileImage {
    fn drop(&mut self) {
        let tag = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let _ = raw_docker()
                    .await
                    .remove_image(&tag, None::<RemoveImageOptions>, None)
                    .await;
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_labels_cannot_speak_for_the_run() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let hostile = HostileImage::build().await;
    let mut spec = spec("hostile", &["sh", "-c", "echo ran"]);
    spec.image = ImageRef::parse(&hostile.0).unwrap();
    spec.owner = None;
    spec.profile = None;
    let container = cleanup.create(&engine, &spec).await;

    let listed = engine
        .list_managed(&ManagedFilter::run(spec.run_id.clone()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let full = engine.inspect_managed(&container).await.unwrap();
    for record in [&listed[0], &full] {
        assert_eq!(record.owner, None, "the image named an owner");
        assert_eq!(record.profile, None, "the image named a profile");
        assert_eq!(record.runner.as_deref(), Some("docker@test"));
        assert_eq!(record.correlation.as_ref(), Some(&spec.correlation));
        assert_eq!(
            record.reply_event.as_deref(),
            Some("bus.docker.run.response")
        );
        assert!(!record.interactive);
        assert_eq!(record.image, hostile.0);
    }
    // The engine's filters see the worker's runner, not the image's.
    let elsewhere = engine
        .list_managed(&ManagedFilter::runner("docker@elsewhere"))
        .await
        .unwrap();
    assert!(!elsewhere.iter().any(|m| m.run_id == spec.run_id));
    let exit = engine
        .drive(&container, io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        (exit.ending, exit.stdout.text.as_str()),
        (Ending::Exited(0), "ran\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_are_filtered_by_runner_and_run() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let a = spec("filter-a", &["true"]);
    let b = spec("filter-b", &["true"]);
    let runner_a = format!("docker@{}a", run_id_prefix());
    let runner_b = format!("docker@{}b", run_id_prefix());
    for (spec, runner) in [(&a, &runner_a), (&b, &runner_b)] {
        cleanup.track(&spec.container_name());
        support::create_run(&engine, spec, runner).await.unwrap();
    }
    let ids = |list: Vec<bus_docker_domain::container::ManagedContainer>| {
        list.into_iter().map(|m| m.run_id).collect::<Vec<RunId>>()
    };
    let of_a = ids(engine
        .list_managed(&ManagedFilter::runner(runner_a.as_str()))
        .await
        .unwrap());
    assert_eq!(of_a, vec![a.run_id.clone()]);
    let of_b = ids(engine
        .list_managed(&ManagedFilter::run(b.run_id.clone()))
        .await
        .unwrap());
    assert_eq!(of_b, vec![b.run_id.clone()]);
    let both = ManagedFilter {
        runner: Some(runner_a.clone()),
        run_id: Some(b.run_id.clone()),
        active_only: false,
        // The engine's own label filters, not the view.
        fresh: true,
    };
    assert!(engine.list_managed(&both).await.unwrap().is_empty());
    let all = ids(engine.list_managed(&ManagedFilter::all()).await.unwrap());
    assert!(all.contains(&a.run_id) && all.contains(&b.run_id));

    // Placement counts active containers: a created one is, an exited one
    // is not.
    let of_b_active = |active_only| ManagedFilter {
        run_id: Some(b.run_id.clone()),
        active_only,
        ..ManagedFilter::all()
    };
    assert_eq!(
        ids(engine.list_managed(&of_b_active(true)).await.unwrap()),
        vec![b.run_id.clone()]
    );
    let b_ref = engine.list_managed(&of_b_active(false)).await.unwrap()[0]
        .container
        .clone();
    engine
        .drive(&b_ref, io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(engine
        .list_managed(&of_b_active(true))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(engine.list_managed(&of_b_active(false)).await.unwrap()),
        vec![b.run_id.clone()]
    );
}

/// Wait until the container runs (another worker's `delete_run` must
/// find a process to stop).
async fn until_running(engine: &DockerEngine, container: &ContainerRef) {
    let started = Instant::now();
    while engine.inspect_managed(container).await.unwrap().state != ContainerState::Running {
        assert!(started.elapsed() < Duration::from_secs(20), "never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_deleted_through_another_worker_ends_canceled() {
    let driver = engine().await;
    let other = engine().await; // its own connection: another worker
    let cleanup = Cleanup::new(&driver);
    let trap = "trap 'echo bye; exit 3' TERM; echo started; sleep 30 & wait";
    let spec = spec("deleted", &["sh", "-c", trap]);
    let container = cleanup.create(&driver, &spec).await;
    let deleting = async {
        until_running(&other, &container).await;
        tokio::time::sleep(Duration::from_millis(300)).await; // the trap is set
        other
            .delete_run(&container, Duration::from_secs(20))
            .await
            .unwrap();
    };
    let (exit, ()) = tokio::join!(
        driver.drive(&container, io(Duration::from_secs(60))),
        deleting
    );
    let exit = exit.unwrap();
    assert_eq!(exit.ending, Ending::Canceled, "{exit:?}");
    assert_eq!(exit.exit_code, Some(3));
    assert_eq!(exit.stdout.text, "started\nbye\n");

    let record = driver.inspect_managed(&container).await.unwrap();
    assert_eq!(record.mark, RunMark::Deleted);
    assert_eq!(
        record.container.name,
        format!("bus-run-{}.deleted", spec.run_id)
    );
    // Collected again (recovery), it is still a cancel.
    let again = driver
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(again.ending, Ending::Canceled);

    // Answered: a tombstone, which a later delete leaves alone.
    driver.mark_answered(&container).await.unwrap();
    other.delete_run(&container, Duration::ZERO).await.unwrap();
    let listed = driver
        .list_managed(&ManagedFilter::run(spec.run_id.clone()))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].mark, RunMark::Answered);
    assert_eq!(
        listed[0].container.name,
        format!("bus-run-{}.answered", spec.run_id)
    );
    // The stale reference still reaches it (by id), and gone is no error.
    driver.remove(&container).await.unwrap();
    driver.mark_answered(&container).await.unwrap();
    other.delete_run(&container, Duration::ZERO).await.unwrap();
    assert!(matches!(
        driver.inspect_managed(&container).await,
        Err(RuntimeError::ContainerGone(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_run_keeps_its_ending() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("answered", &["sh", "-c", "exit 4"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(4));
    engine.mark_answered(&container).await.unwrap();
    engine.mark_answered(&container).await.unwrap(); // already marked
    let record = engine.inspect_managed(&container).await.unwrap();
    assert_eq!(
        (record.mark, record.run_id.clone()),
        (RunMark::Answered, spec.run_id.clone())
    );
    // A tombstone collected again reports what happened, not a cancel.
    let again = engine
        .drive(&container, io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(again.ending, Ending::Exited(4));
}
