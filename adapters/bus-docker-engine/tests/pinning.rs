//! Live tests of pinned request mounts: what a run mounts is what the
//! policy checked, even when a run with write access to the allowed root
//! swaps the path for a symlink to somewhere else.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bus_docker_domain::container::RequestMounts;
use bus_docker_domain::mount::{
    AccessMode, ContainerPath, Mount, MountPolicy, RealHostPaths, RequestedMount,
};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{OperationError, RuntimeError};
use bus_docker_engine::{DockerEngine, EngineOptions};
use support::{engine_with, io, spec, Cleanup};

/// An allowed root with `work/marker` = "inside", an outside dir with
/// `marker` = "outside", and an engine pinning under a private staging
/// directory.
struct Setup {
    _dirs: Vec<tempfile::TempDir>,
    root: PathBuf,
    outside: PathBuf,
    staging: PathBuf,
    engine: DockerEngine,
}

async fn setup() -> Setup {
    let dir = || {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().canonicalize().unwrap();
        (d, p)
    };
    let (a, root) = dir();
    let (b, outside) = dir();
    let (c, staging) = dir();
    std::fs::create_dir(root.join("work")).unwrap();
    std::fs::write(root.join("work/marker"), "inside").unwrap();
    std::fs::write(outside.join("marker"), "outside").unwrap();
    let engine = engine_with(EngineOptions {
        mount_staging_dir: Some(staging.join("pins")),
        allowed_mount_roots: vec![root.clone()],
        ..EngineOptions::default()
    })
    .await;
    Setup {
        _dirs: vec![a, b, c],
        root,
        outside,
        staging: staging.join("pins"),
        engine,
    }
}

impl Setup {
    /// Run directories left in the staging root.
    fn staged(&self) -> Vec<String> {
        std::fs::read_dir(&self.staging)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    fn policy(&self) -> MountPolicy {
        MountPolicy::new(vec![self.root.clone()], Vec::new())
    }

    /// A request mount of `source` on `/data`, through the policy.
    fn admit(&self, source: &Path) -> Result<Mount, OperationError> {
        let requested = RequestedMount {
            source: source.to_string_lossy().into_owned(),
            target: "/data".into(),
            read_only: true,
        };
        self.policy().admit(0, &requested, &RealHostPaths)
    }
}

fn swap_for_symlink(path: &Path, to: &Path) {
    let aside = path.with_extension("real");
    std::fs::rename(path, &aside).unwrap();
    std::os::unix::fs::symlink(to, path).unwrap();
}

/// Create, drive and remove (through the same engine, which releases the
/// pins) a run; its stdout.
async fn run(
    engine: &DockerEngine,
    cleanup: &Cleanup,
    spec: &RunSpec,
) -> Result<String, RuntimeError> {
    cleanup.track(&spec.container_name());
    let container = support::create_run(engine, spec, "docker@test").await?;
    let exit = engine.drive(&container, io(Duration::from_secs(30))).await;
    engine.remove(&container).await?;
    Ok(exit?.stdout.text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_mounts_are_reported_pinned_on_a_local_engine() {
    let s = setup().await;
    let info = s.engine.engine_info().await.unwrap();
    assert_eq!(info.request_mounts, RequestMounts::Pinned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_swapped_after_create_still_mounts_the_checked_dir() {
    let s = setup().await;
    let cleanup = Cleanup::new(&s.engine);
    let work = s.root.join("work");
    let mut spec = spec(
        "pin-swap",
        &[
            "sh",
            "-c",
            "cat /data/marker; echo; grep ' /data ' /proc/self/mountinfo",
        ],
    );
    spec.mounts = vec![s.admit(&work).unwrap()];
    cleanup.track(&spec.container_name());
    let container = support::create_run(&s.engine, &spec, "docker@test")
        .await
        .unwrap();
    // The engine resolves bind sources at start: swap before it.
    swap_for_symlink(&work, &s.outside);
    let exit = s
        .engine
        .drive(&container, io(Duration::from_secs(30)))
        .await;
    let staged = s.staged();
    s.engine.remove(&container).await.unwrap();
    assert_eq!(staged, vec![spec.run_id.as_str().to_owned()]);
    assert!(s.staged().is_empty(), "remove releases the pins");
    let exit = exit.unwrap();
    let mut lines = exit.stdout.text.lines();
    assert_eq!(lines.next(), Some("inside"), "{}", exit.stdout.text);
    let mountinfo = lines.next().unwrap_or_default();
    let options = mountinfo.split(' ').nth(5).unwrap_or_default();
    for flag in ["ro", "nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == flag),
            "{flag} missing: {mountinfo}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_swapped_between_admission_and_create_is_refused() {
    let s = setup().await;
    let cleanup = Cleanup::new(&s.engine);
    let work = s.root.join("work");
    let mut spec = spec("pin-refused", &["cat", "/data/marker"]);
    spec.mounts = vec![s.admit(&work).unwrap()];
    swap_for_symlink(&work, &s.outside);
    let err = run(&s.engine, &cleanup, &spec).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::Forbidden {
                rule: "mount_root",
                ..
            }
        ),
        "{err}"
    );
    assert!(s.staged().is_empty(), "a failed create leaves no pins");
    let op: OperationError = err.into();
    assert_eq!(op.code().as_str(), "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mounts_are_not_pinned() {
    let s = setup().await;
    let cleanup = Cleanup::new(&s.engine);
    let mut spec = spec("operator", &["cat", "/data/marker"]);
    spec.mounts = vec![Mount::operator(
        s.outside.clone(),
        ContainerPath::parse("t", "/data").unwrap(),
        AccessMode::ReadOnly,
    )];
    assert_eq!(run(&s.engine, &cleanup, &spec).await.unwrap(), "outside");
}

/// The policy's mount of `source`, retried until the policy admits it.
async fn admitted(s: &Setup, source: &Path) -> Mount {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match s.admit(source) {
            Ok(mount) => return mount,
            Err(err) if Instant::now() > deadline => panic!("never admitted: {err}"),
            Err(_) => tokio::task::yield_now().await,
        }
    }
}

/// A run with write access to the allowed root swaps `work` for a
/// symlink to the outside dir in a tight loop while runs mount `work`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_swaps_never_mount_the_outside_dir() {
    let s = setup().await;
    let cleanup = Cleanup::new(&s.engine);
    // Every step is a rename: `work` is the real dir, then a symlink to
    // the outside dir, then the real dir again.
    std::os::unix::fs::symlink(&s.outside, s.root.join("link")).unwrap();
    let script = "while :; do mv /r/work /r/real; mv /r/link /r/work; \
                  mv /r/work /r/link; mv /r/real /r/work; done";
    let mut attacker = spec("attacker", &["sh", "-c", script]);
    attacker.mounts = vec![Mount::operator(
        s.root.clone(),
        ContainerPath::parse("t", "/r").unwrap(),
        AccessMode::ReadWrite,
    )];
    cleanup.track(&attacker.container_name());
    let attacker_ref = support::create_run(&s.engine, &attacker, "docker@test")
        .await
        .unwrap();
    let racer = {
        let engine = s.engine.clone();
        let container = attacker_ref.clone();
        tokio::spawn(async move { engine.drive(&container, io(Duration::from_secs(12))).await })
    };
    // Let the loop get going.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let work = s.root.join("work");
    let started = Instant::now();
    let (mut inside, mut outside, mut refused) = (0, 0, 0);
    let mut broken = Vec::new();
    // Each victim is admitted while `work` is the real dir (retrying the
    // policy until it is), then races the swap through create and start.
    for round in 0..5 {
        let mut batch = Vec::new();
        for i in 0..4 {
            let mut victim = spec(&format!("victim-{round}-{i}"), &["cat", "/data/marker"]);
            victim.mounts = vec![admitted(&s, &work).await];
            let (engine, cleanup) = (s.engine.clone(), &cleanup);
            batch.push(async move { run(&engine, cleanup, &victim).await });
        }
        for result in futures_util::future::join_all(batch).await {
            match result {
                Ok(text) if text == "inside" => inside += 1,
                Ok(text) if text == "outside" => outside += 1,
                Ok(text) => broken.push(format!("unexpected output {text:?}")),
                Err(RuntimeError::Forbidden { .. }) => refused += 1,
                // Unpinned, the engine finds the path missing mid-swap.
                Err(other) => broken.push(other.to_string()),
            }
        }
    }
    s.engine.kill(&attacker_ref).await.unwrap();
    let attack = racer.await.unwrap().unwrap();
    s.engine.remove(&attacker_ref).await.unwrap();
    assert!(
        s.staged().is_empty(),
        "pins left after the runs were removed"
    );
    assert_eq!(attack.stderr.text, "", "the swap loop failed");
    eprintln!(
        "racing: {inside} runs saw the checked dir, {outside} the outside dir, \
         {refused} were refused, {} failed, in {:?}",
        broken.len(),
        started.elapsed()
    );
    assert_eq!(outside, 0, "runs mounted the outside dir");
    assert!(broken.is_empty(), "runs failed: {broken:?}");
    assert!(inside > 0, "no run got through: the race was not exercised");
}

#[tokio::test]
async fn request_mounts_are_refused_where_the_worker_cannot_pin() {
    let engine = DockerEngine::connect(EngineOptions {
        docker_host: Some("tcp://127.0.0.1:9".into()),
        ..EngineOptions::default()
    })
    .unwrap();
    let RequestMounts::Refused(reason) = engine.request_mounts() else {
        panic!("a remote engine cannot have pinned mounts");
    };
    assert!(reason.contains("not on a local unix socket"), "{reason}");
    let (_d, root) = {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().canonicalize().unwrap();
        (d, p)
    };
    let mut spec = spec("remote", &["true"]);
    spec.mounts = vec![Mount::requested(
        root.clone(),
        root,
        ContainerPath::parse("t", "/data").unwrap(),
        AccessMode::ReadOnly,
    )];
    // Pins come first: nothing is asked of the (absent) engine.
    let image = bus_docker_domain::ImageId::new("sha256:any");
    match engine.create(&spec, "docker@test", &image).await {
        Err(RuntimeError::Forbidden {
            rule: "mount_pinning",
            detail,
        }) => assert!(
            detail.contains("operator and profile mounts still work"),
            "{detail}"
        ),
        other => panic!("expected forbidden mount_pinning, got {other:?}"),
    }
}

#[test]
fn a_staging_dir_inside_an_allowed_root_stops_the_worker() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let err = DockerEngine::connect(EngineOptions {
        docker_host: Some("unix:///var/run/docker.sock".into()),
        mount_staging_dir: Some(root.join("pins")),
        allowed_mount_roots: vec![root],
        ..EngineOptions::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, bus_docker_engine::DockerError::Staging { .. }),
        "{err}"
    );
}

/// Mount points under `root` in this process's mount namespace (the one
/// dockerd shares: the pins are made here).
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(str::to_owned))
        .filter(|point| point.starts_with(&format!("{root}/")))
        .collect()
}

/// Issue 16.2: run ids that end in `.answered` and `.deleted` beside
/// their plain twin, of two owners. Each run's pins are released when its
/// own container goes (found by what was recorded at create, not by the
/// name: `bus-run-vic.answered` is not a mark of `vic`), and no host mount
/// is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pin_is_released_when_its_own_run_ends_whatever_its_id_ends_in() {
    let s = setup().await;
    let cleanup = Cleanup::new(&s.engine);
    let work = s.root.join("work");
    let base = support::run_id("vic");
    let run = |id: String, owner: &str| {
        let mut spec = spec("vic", &["cat", "/data/marker"]);
        spec.run_id = bus_docker_domain::RunId::parse(&id).unwrap();
        spec.owner = Some(bus_docker_domain::OwnerId::parse(owner).unwrap());
        spec.mounts = vec![s.admit(&work).unwrap()];
        spec
    };
    let plain = run(base.to_string(), "owner-a");
    let answered = run(format!("{base}.answered"), "owner-b");
    let deleted = run(format!("{base}.deleted"), "owner-b");
    let mut refs = Vec::new();
    for spec in [&plain, &answered, &deleted] {
        refs.push(cleanup.create(&s.engine, spec).await);
    }
    assert_eq!(s.engine.held_pins(), 3);
    assert_eq!(mounts_under(&s.staging).len(), 3, "one pin per run");

    // Owner B's runs end as the worker ends them: driven, marked answered
    // (renamed `bus-run-<id>.answered`), then removed through the
    // reference made at create (the name before the mark).
    for container in &refs[1..] {
        let exit = s
            .engine
            .drive(container, io(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(exit.stdout.text, "inside");
        s.engine.mark_answered(container).await.unwrap();
        s.engine.remove(container).await.unwrap();
    }
    let left = mounts_under(&s.staging);
    assert_eq!(left.len(), 1, "only the plain run's pin is left: {left:?}");
    let plain_dir = s.staging.join(plain.run_id.as_str());
    assert!(
        left[0].starts_with(&format!("{}/", plain_dir.display())),
        "the plain run keeps its own pin: {left:?}"
    );
    assert_eq!(s.staged(), vec![plain.run_id.as_str().to_owned()]);
    assert_eq!(s.engine.held_pins(), 1);

    // Owner A's run still mounts what was checked.
    let exit = s
        .engine
        .drive(&refs[0], io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(exit.stdout.text, "inside", "{exit:?}");
    s.engine.mark_answered(&refs[0]).await.unwrap();
    s.engine.remove(&refs[0]).await.unwrap();
    assert_eq!(mounts_under(&s.staging), Vec::<String>::new());
    assert!(s.staged().is_empty(), "{:?}", s.staged());
    assert_eq!(s.engine.held_pins(), 0);
}
