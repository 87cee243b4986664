//! Live tests of the container record and the engine around runs:
//! create (names, labels, hardening, mounts), listing next to containers
//! the worker does not manage (started with testcontainers), kill/remove,
//! images and pull policies, and an engine that goes away and comes back.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bollard::query_parameters::InspectContainerOptions;
use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};
use bus_docker_domain::mount::{AccessMode, ContainerPath, Mount};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Ending;
use bus_docker_domain::{ImageRef, ProfileName, RuntimeError};
use bus_docker_engine::{labels, DockerEngine, EngineOptions};
use support::{
    engine, engine_socket, image, io, raw_docker, run_id_prefix, spec, Cleanup, EngineProxy,
};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

/// A scratch directory under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("bus-docker-engine-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path(p: &str) -> ContainerPath {
    ContainerPath::parse("test", p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_info_names_the_engine() {
    let engine = engine().await;
    let info = engine.engine_info().await.unwrap();
    assert!(!info.engine_version.is_empty());
    assert!(info.api_version.starts_with("1."), "{info:?}");
    assert_eq!(info.os, "linux");
    assert!(!info.arch.is_empty());
    assert_eq!(engine.provider(), "docker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_names_and_labels_the_container_once() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let mut spec = spec("labels", &["sh", "-c", "echo \"quoted\""]);
    spec.profile = Some(ProfileName::parse("codex").unwrap());
    spec.labels = BTreeMap::from([("bus.task.ref".to_owned(), "task-7".to_owned())]);
    spec.env = BTreeMap::from([("GREETING".to_owned(), "hi there".to_owned())]);
    spec.workdir = Some(path("/tmp"));
    let container = cleanup.create(&engine, &spec).await;
    assert_eq!(container.name, format!("bus-run-{}", spec.run_id));

    let info = raw_docker()
        .await
        .inspect_container(&container.id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(
        info.name.as_deref(),
        Some(format!("/{}", container.name).as_str())
    );
    let config = info.config.unwrap();
    let got = config.labels.unwrap();
    let image = image();
    let expect = [
        (labels::MANAGED_BY, "bus-integration-docker"),
        (labels::RUN_ID, spec.run_id.as_str()),
        (labels::OWNER, "owner-1"),
        (labels::CORRELATION, "corr-labels"),
        (labels::REPLY_EVENT, "bus.docker.run.response"),
        (labels::RUNNER, "docker@test"),
        (labels::PROFILE, "codex"),
        (labels::IMAGE, image.as_str()),
        (labels::ARGS, r#"["sh","-c","echo \"quoted\""]"#),
        (labels::INTERACTIVE, "false"),
        (labels::TIMEOUT_SECONDS, "60"),
        ("bus.user.bus.task.ref", "task-7"),
    ];
    for (key, value) in expect {
        assert_eq!(got.get(key).map(String::as_str), Some(value), "label {key}");
    }
    assert_eq!(config.cmd.unwrap(), spec.command);
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert!(config
        .env
        .unwrap()
        .contains(&"GREETING=hi there".to_owned()));
    assert_eq!(config.tty, Some(false));
    assert_eq!(config.open_stdin, Some(false));

    // A second delivery of the same run loses the name race.
    match support::create_run(&engine, &spec, "docker@test").await {
        Err(RuntimeError::NameConflict(name)) => assert_eq!(name, container.name),
        other => panic!("expected a name conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_managed_reads_the_run_back_from_its_labels() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let mut spec = spec("listed", &["sh", "-c", "exit 0"]);
    spec.profile = Some(ProfileName::parse("codex").unwrap());
    spec.interactive = true;
    spec.timeout = Duration::from_secs(42);
    let container = cleanup.create(&engine, &spec).await;

    let find = |all: Vec<bus_docker_domain::container::ManagedContainer>| {
        all.into_iter()
            .find(|m| m.run_id == spec.run_id)
            .expect("the run is listed")
    };
    let record = find(engine.list_managed(&ManagedFilter::all()).await.unwrap());
    assert_eq!(record.container, container);
    assert_eq!(record.owner, spec.owner);
    assert_eq!(record.correlation.as_ref(), Some(&spec.correlation));
    assert_eq!(
        record.reply_event.as_deref(),
        Some("bus.docker.run.response")
    );
    assert_eq!(record.runner.as_deref(), Some("docker@test"));
    assert_eq!(record.profile, spec.profile);
    assert_eq!(record.image, image());
    assert!(record
        .image_id
        .as_deref()
        .is_some_and(|i| i.starts_with("sha256:")));
    assert_eq!(record.args, spec.command);
    assert!(record.interactive);
    assert_eq!(record.timeout, Some(Duration::from_secs(42)));
    assert_eq!(record.state, ContainerState::Created);
    assert_eq!(record.started_at, None);

    let mut run = io(Duration::from_secs(30));
    run.stdin = bus_docker_domain::ports::Stdin::Text(Vec::new());
    let exit = engine.drive(&container, run).await.unwrap();
    let record = find(engine.list_managed(&ManagedFilter::all()).await.unwrap());
    assert_eq!(record.state, ContainerState::Exited);
    assert_eq!(record.started_at, None, "a listing has no start time");
    assert!(record.created_at.is_some());
    // The full read has the exact start, as recovery needs.
    let full = engine.inspect_managed(&container).await.unwrap();
    assert_eq!(full.started_at, exit.started_at);
    assert!(full.started_at.is_some());
    // The engine's finish time (the drive's may come from the wait
    // answer, a moment apart).
    let (a, b) = (full.finished_at.unwrap(), exit.finished_at.unwrap());
    let apart = a
        .duration_since(b)
        .or_else(|_| b.duration_since(a))
        .unwrap();
    assert!(apart < Duration::from_secs(1), "{a:?} vs {b:?}");
    assert_eq!(
        full,
        ManagedContainer {
            started_at: full.started_at,
            created_at: full.created_at,
            finished_at: full.finished_at,
            ..record
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hardening_is_applied_and_mounts_keep_their_mode() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let ro = TempDir::new("ro");
    let rw = TempDir::new("rw");
    std::fs::write(ro.0.join("seed"), "seed\n").unwrap();
    let script = "\
        cat /ro/seed; \
        (echo no > /ro/f) 2>/dev/null && echo RO-WRITABLE || echo RO-REFUSED; \
        echo yes > /rw/f && echo RW-OK; \
        (echo no > /etc/f) 2>/dev/null && echo ROOT-WRITABLE || echo ROOT-REFUSED; \
        echo t > /tmp/f && echo TMP-OK; \
        grep NoNewPrivs /proc/self/status; \
        grep CapEff /proc/self/status";
    let mut spec = spec("hardening", &["sh", "-c", script]);
    spec.hardening.read_only_rootfs = true;
    spec.hardening.tmpfs = vec![path("/tmp")];
    spec.hardening.pids_limit = Some(64);
    spec.hardening.memory_bytes = Some(128 * 1024 * 1024);
    spec.hardening.nano_cpus = Some(500_000_000);
    spec.hardening.cap_add = vec!["CHOWN".to_owned()];
    spec.mounts = vec![
        Mount::operator(ro.0.clone(), path("/ro"), AccessMode::ReadOnly),
        Mount::operator(rw.0.clone(), path("/rw"), AccessMode::ReadWrite),
    ];
    let container = cleanup.create(&engine, &spec).await;

    let host = raw_docker()
        .await
        .inspect_container(&container.id, None::<InspectContainerOptions>)
        .await
        .unwrap()
        .host_config
        .unwrap();
    assert_eq!(host.cap_drop.unwrap(), vec!["ALL".to_owned()]);
    assert_eq!(host.cap_add.unwrap(), vec!["CHOWN".to_owned()]);
    assert_eq!(
        host.security_opt.unwrap(),
        vec!["no-new-privileges:true".to_owned()]
    );
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.memory, Some(128 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.auto_remove, Some(false));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert!(host.tmpfs.unwrap().contains_key("/tmp"));
    let restart = host.restart_policy.and_then(|p| p.name);
    assert!(
        restart.is_none_or(|n| n == bollard::models::RestartPolicyNameEnum::NO
            || n == bollard::models::RestartPolicyNameEnum::EMPTY),
        "no restart policy"
    );

    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    let out = exit.stdout.text;
    assert_eq!(exit.ending, Ending::Exited(0), "{out}{}", exit.stderr.text);
    assert!(out.contains("seed\n"), "{out}");
    assert!(out.contains("RO-REFUSED"), "{out}");
    assert!(out.contains("RW-OK"), "{out}");
    assert!(out.contains("ROOT-REFUSED"), "{out}");
    assert!(out.contains("TMP-OK"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // Only CAP_CHOWN (bit 0) is left.
    assert!(out.contains("CapEff:\t0000000000000001"), "{out}");
    assert_eq!(std::fs::read_to_string(rw.0.join("f")).unwrap(), "yes\n");
    assert!(!ro.0.join("f").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_remove_tolerate_stopped_and_gone_containers() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("idempotent", &["true"]);
    let container = cleanup.create(&engine, &spec).await;
    engine.kill(&container).await.unwrap(); // created, not running
    engine
        .drive(&container, io(Duration::from_secs(30)))
        .await
        .unwrap();
    engine.kill(&container).await.unwrap(); // exited
    engine.remove(&container).await.unwrap();
    engine.remove(&container).await.unwrap(); // gone
    engine.kill(&container).await.unwrap(); // gone
    assert!(!engine
        .list_managed(&ManagedFilter::all())
        .await
        .unwrap()
        .iter()
        .any(|m| m.run_id == spec.run_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_forces_a_running_container() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("force", &["sleep", "30"]);
    let container = cleanup.create(&engine, &spec).await;
    let driving = engine.drive(&container, io(Duration::from_secs(60)));
    let removing = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        engine.remove(&container).await.unwrap();
    };
    let (exit, ()) = tokio::join!(driving, removing);
    // Removed under the run: either the kill's exit or "gone", never a hang.
    match exit {
        Ok(exit) => assert_eq!(exit.exit_code, Some(137)),
        Err(err) => assert!(matches!(err, RuntimeError::ContainerGone(_)), "{err:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_at_create_is_image_missing() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let mut spec = spec("noimage", &["true"]);
    spec.image = ImageRef::parse("bus-test-missing:none").unwrap();
    cleanup.track(&spec.container_name());
    match support::create_run(&engine, &spec, "docker@test").await {
        Err(RuntimeError::ImageMissing(image)) => assert_eq!(image, "bus-test-missing:none"),
        other => panic!("expected image missing, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_policies_decide_what_happens_to_images() {
    let engine = engine().await;
    let present = ImageRef::parse(&image()).unwrap();
    let missing = ImageRef::parse("bus-test-missing:none").unwrap();

    assert!(engine.image_present(&present).await.unwrap());
    assert!(!engine.image_present(&missing).await.unwrap());
    for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
        let id = engine.ensure_image(&present, policy).await.unwrap();
        assert!(id.as_str().starts_with("sha256:"), "{id}");
    }
    assert_eq!(
        engine.ensure_image(&missing, PullPolicy::Never).await,
        Err(RuntimeError::ImageMissing(
            "bus-test-missing:none".to_owned()
        ))
    );
    // No registry is reachable here: pulls fail, and fail fast.
    for (image, policy) in [
        (&missing, PullPolicy::IfNotPresent),
        (&present, PullPolicy::Always),
    ] {
        let started = Instant::now();
        let result = engine.ensure_image(image, policy).await;
        let took = started.elapsed();
        eprintln!(
            "pull of {image} ({}) failed after {took:?}",
            policy.as_str()
        );
        match result {
            Err(RuntimeError::PullFailed {
                image: named,
                reason,
            }) => {
                assert_eq!(&named, image.as_str());
                assert!(!reason.is_empty());
            }
            other => panic!("expected a failed pull of {image}, got {other:?}"),
        }
        assert!(took < Duration::from_secs(35), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_is_unavailable_quickly() {
    // An "engine" that accepts connections and never answers: only the
    // connect timeout ends a call to it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_host = format!("tcp://{}", silent.local_addr().unwrap());
    let holding = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    for host in [
        "unix:///tmp/nonexistent.sock",
        "tcp://127.0.0.1:1",
        silent_host.as_str(),
    ] {
        let engine = DockerEngine::connect(EngineOptions {
            docker_host: Some(host.to_owned()),
            ..EngineOptions::default()
        })
        .expect("connecting does not need the engine");
        let started = Instant::now();
        let result = engine.engine_info().await;
        let took = started.elapsed();
        eprintln!("{host}: {result:?} after {took:?}");
        assert!(
            matches!(result, Err(RuntimeError::Unavailable(_))),
            "{host}: {result:?}"
        );
        assert!(took < Duration::from_secs(5), "{host} took {took:?}");
        let container = ContainerRef::new("x", "bus-run-x");
        assert!(matches!(
            engine.list_managed(&ManagedFilter::all()).await,
            Err(RuntimeError::Unavailable(_))
        ));
        assert!(matches!(
            engine.kill(&container).await,
            Err(RuntimeError::Unavailable(_))
        ));
        assert!(matches!(
            support::create_run(&engine, &spec("unreachable", &["true"]), "r").await,
            Err(RuntimeError::Unavailable(_))
        ));
    }
    holding.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_is_found_again_when_it_returns() {
    let path = std::env::temp_dir().join(format!(
        "bus-docker-engine-{}-late.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let engine = DockerEngine::connect(EngineOptions {
        docker_host: Some(format!("unix://{}", path.display())),
        ..EngineOptions::default()
    })
    .expect("connecting does not need the engine");
    assert!(matches!(
        engine.engine_info().await,
        Err(RuntimeError::Unavailable(_))
    ));

    let proxy = EngineProxy::start(&path, &engine_socket());
    // Past the probe back-off, the next call finds the engine.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let info = engine.engine_info().await.expect("engine back");
    assert!(info.api_version.starts_with("1."));

    drop(proxy);
    assert!(matches!(
        engine.engine_info().await,
        Err(RuntimeError::Unavailable(_))
    ));
    let _proxy = EngineProxy::start(&path, &engine_socket());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    engine.engine_info().await.expect("engine back again");
}

/// testcontainers 0.28 never negotiates the API version, yet works with
/// dockerd 20.10 (API 1.41): bollard 0.21 builds request paths with
/// `Url::join("/containers/…")`, which drops its `/v1.53` prefix, so
/// every request is unversioned and served at the engine's own version
/// (seen through `EngineProxy`). `DockerEngine` negotiates anyway, so it
/// keeps working if bollard starts sending the prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_the_worker_does_not_manage_are_left_alone() {
    let engine = engine().await;
    let reference = image();
    let (name, tag) = reference
        .rsplit_once(':')
        .unwrap_or((reference.as_str(), "latest"));
    let helper = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["sleep", "300"])
        .with_network("none")
        .start()
        .await
        .expect("testcontainers starts a helper container");
    let helper_id = helper.id().to_owned();
    assert!(helper.is_running().await.unwrap());

    let cleanup = Cleanup::new(&engine);
    let spec = spec("tc", &["sh", "-c", "echo managed"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(0));

    let listed = engine.list_managed(&ManagedFilter::all()).await.unwrap();
    assert!(listed.iter().any(|m| m.run_id == spec.run_id));
    assert!(
        !listed.iter().any(|m| m.container.id == helper_id),
        "an unmanaged container was listed"
    );
    // What `runner.delete` does: remove every managed container (only this
    // test's here: other tests and suites share the engine).
    for managed in listed.iter().filter(|m| {
        let id = m.run_id.as_str();
        id.starts_with(&run_id_prefix()) && id.ends_with("-tc")
    }) {
        engine.remove(&managed.container).await.unwrap();
    }
    assert!(
        helper.is_running().await.unwrap(),
        "the helper survived the sweep"
    );
    assert!(!engine
        .list_managed(&ManagedFilter::all())
        .await
        .unwrap()
        .iter()
        .any(|m| m.run_id == spec.run_id));
    helper
        .rm()
        .await
        .expect("testcontainers removes its container");
}

#[tokio::test]
async fn an_image_removed_after_it_was_seen_is_not_trusted_from_the_cache() {
    let engine = engine().await;
    let raw = raw_docker().await;
    let tag = format!("bus-test-cache:{}", run_id_prefix().to_lowercase());
    let (repo, version) = tag.split_once(':').unwrap();
    raw.tag_image(
        &image(),
        Some(
            bollard::query_parameters::TagImageOptionsBuilder::default()
                .repo(repo)
                .tag(version)
                .build(),
        ),
    )
    .await
    .unwrap();
    let cached = ImageRef::parse(&tag).unwrap();
    let checked = engine
        .ensure_image(&cached, PullPolicy::IfNotPresent)
        .await
        .expect("present, and now remembered");
    // The tag goes; the image it named stays (the test image keeps its
    // own tag).
    raw.remove_image(
        &tag,
        None::<bollard::query_parameters::RemoveImageOptions>,
        None,
    )
    .await
    .unwrap();

    // The create is handed the checked id: the reference no longer
    // resolves, so the container is created from that id.
    let cleanup = Cleanup::new(&engine);
    let mut never = spec("cache-never", &["true"]);
    never.image = cached.clone();
    let container = cleanup.track_created(engine.create(&never, "test", &checked).await.unwrap());
    let info = raw.inspect_container(&container.id, None).await.unwrap();
    assert_eq!(info.image.as_deref(), Some(checked.as_str()));
    assert_eq!(
        info.config.unwrap().image.as_deref(),
        Some(checked.as_str())
    );
    // The cache forgot it: ensuring asks the engine again (and the pull
    // fails here, no registry is reachable).
    match engine.ensure_image(&cached, PullPolicy::IfNotPresent).await {
        Err(RuntimeError::PullFailed { image, .. }) => assert_eq!(image, tag),
        other => panic!("if-not-present re-ensures the image (and the pull fails here): {other:?}"),
    }
    assert!(!engine.image_present(&cached).await.unwrap());
}

/// docs/protocol.md §9 "What operators see" and issue 18.4: a run's container
/// shows the reference the run asked for (`Config.Image`, what `docker ps`
/// prints) and is created from the image id that was checked, also when
/// the tag is moved to another image between the check and the create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_shows_its_reference_and_runs_the_checked_image() {
    let engine = engine().await;
    let raw = raw_docker().await;
    let cleanup = Cleanup::new(&engine);
    let tag = format!("bus-test-ref:{}", run_id_prefix().to_lowercase());
    let (repo, version) = tag.split_once(':').unwrap();
    let retag = |source: String| {
        let raw = raw.clone();
        async move {
            raw.tag_image(
                &source,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::default()
                        .repo(repo)
                        .tag(version)
                        .build(),
                ),
            )
            .await
            .unwrap();
        }
    };
    retag(image()).await;
    let reference = ImageRef::parse(&tag).unwrap();
    let checked = engine
        .ensure_image(&reference, PullPolicy::Never)
        .await
        .unwrap();

    let mut plain = spec("ref-shown", &["true"]);
    plain.image = reference.clone();
    let container = cleanup.track_created(engine.create(&plain, "test", &checked).await.unwrap());
    let info = raw.inspect_container(&container.id, None).await.unwrap();
    assert_eq!(info.config.unwrap().image.as_deref(), Some(tag.as_str()));
    assert_eq!(info.image.as_deref(), Some(checked.as_str()));

    // The tag moves to another image after the check.
    let other =
        std::env::var("BUS_TEST_CODEX_IMAGE").unwrap_or_else(|_| "bus-test-codex:local".to_owned());
    retag(other).await;
    let moved = raw.inspect_image(&tag).await.unwrap().id.unwrap();
    assert_ne!(moved, checked.as_str(), "the tag now names another image");
    let mut late = spec("ref-moved", &["true"]);
    late.image = reference.clone();
    let container = cleanup.track_created(engine.create(&late, "test", &checked).await.unwrap());
    let info = raw.inspect_container(&container.id, None).await.unwrap();
    assert_eq!(
        info.image.as_deref(),
        Some(checked.as_str()),
        "what was checked is what runs"
    );
    let managed = engine.inspect_managed(&container).await.unwrap();
    assert_eq!(managed.image_id.as_deref(), Some(checked.as_str()));
    assert_eq!(managed.image, tag, "the record keeps the reference");
    drop(cleanup);
    let _ = raw
        .remove_image(
            &tag,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}
