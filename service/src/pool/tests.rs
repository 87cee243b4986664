//! Unit tests of the engine pool over switchable fake engines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bus_docker_domain::container::{ContainerRef, EngineInfo, RequestMounts, RunMark};
use bus_docker_domain::ports::{InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::{RunSpec, SessionKey};
use bus_docker_domain::{ImageId, ImageRef};
use bus_docker_static::StaticRuntime;

use super::*;

/// A runtime that can be switched off: every call then fails
/// `Unavailable`, as an engine whose socket went away.
#[derive(Clone, Default)]
struct Switchable {
    inner: StaticRuntime,
    down: Arc<AtomicBool>,
    /// Listings never answer (an engine that accepts and hangs).
    hung: Arc<AtomicBool>,
    /// It pins request mounts (a local engine).
    pins: Arc<AtomicBool>,
    /// `engine_info` never answers either.
    mute: Arc<AtomicBool>,
    /// The codex sessions it holds.
    sessions: Arc<std::sync::Mutex<Vec<SessionKey>>>,
}

impl Switchable {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), RuntimeError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(RuntimeError::Unavailable("switched off".into()));
        }
        Ok(())
    }
}

impl ContainerRuntime for Switchable {
    fn provider(&self) -> &'static str {
        "docker"
    }
    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        self.check()?;
        if self.mute.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let mut info = self.inner.engine_info().await?;
        if self.pins.load(Ordering::SeqCst) {
            info.request_mounts = RequestMounts::Pinned;
        }
        Ok(info)
    }
    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        self.check()?;
        self.inner.image_present(image).await
    }
    async fn ensure_image(&self, i: &ImageRef, p: PullPolicy) -> Result<ImageId, RuntimeError> {
        self.check()?;
        self.inner.ensure_image(i, p).await
    }
    async fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        self.check()?;
        self.inner.create(spec, runner, image).await
    }
    async fn drive(&self, c: &ContainerRef, io: RunIo) -> Result<Exit, RuntimeError> {
        self.check()?;
        self.inner.drive(c, io).await
    }
    async fn kill(&self, c: &ContainerRef) -> Result<(), RuntimeError> {
        self.check()?;
        self.inner.kill(c).await
    }
    async fn remove(&self, c: &ContainerRef) -> Result<(), RuntimeError> {
        self.check()?;
        self.inner.remove(c).await
    }
    async fn list_managed(&self, f: &ManagedFilter) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.check()?;
        if self.hung.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.list_managed(f).await
    }
    async fn inspect_managed(&self, c: &ContainerRef) -> Result<ManagedContainer, RuntimeError> {
        self.check()?;
        self.inner.inspect_managed(c).await
    }
    async fn delete_run(&self, c: &ContainerRef, grace: Duration) -> Result<(), RuntimeError> {
        self.check()?;
        self.inner.delete_run(c, grace).await
    }
    async fn mark_answered(&self, c: &ContainerRef) -> Result<(), RuntimeError> {
        self.check()?;
        self.inner.mark_answered(c).await
    }
    async fn write_input(&self, c: &ContainerRef, chunk: InputChunk) -> Result<(), RuntimeError> {
        self.check()?;
        self.inner.write_input(c, chunk).await
    }
    async fn has_session(&self, key: &SessionKey) -> Result<bool, RuntimeError> {
        self.check()?;
        Ok(self.sessions.lock().unwrap().contains(key))
    }
}

fn spec(run: &str) -> RunSpec {
    RunSpec::builder(run, "static/test")
        .max_output_bytes(1024)
        .build()
}

fn pool(n: usize, cap: Option<usize>) -> (EnginePool<Switchable>, Vec<Switchable>) {
    let engines: Vec<Switchable> = (0..n).map(|_| Switchable::default()).collect();
    let members = engines
        .iter()
        .enumerate()
        .map(|(i, e)| (EngineId::new(format!("unix:///engine-{i}.sock")), e.clone()))
        .collect();
    (
        EnginePool::new(members, cap.and_then(NonZeroUsize::new)),
        engines,
    )
}

/// Place and create one run; returns the engine it went to.
async fn run_one(pool: &EnginePool<Switchable>, run: &str) -> Result<ContainerRef, OperationError> {
    let placement = pool.place(false).await?;
    let spec = spec(run);
    let image = pool
        .ensure_image(&placement, &spec.image, spec.pull_policy)
        .await?;
    Ok(pool.create(&placement, &spec, "r", &image).await?)
}

fn index(c: &ContainerRef) -> char {
    c.engine
        .as_str()
        .chars()
        .nth("unix:///engine-".len())
        .unwrap()
}

#[tokio::test]
async fn a_burst_spreads_over_the_engines_by_active_runs() {
    let (pool, _) = pool(3, None);
    let mut picks = String::new();
    for i in 0..6 {
        picks.push(index(&run_one(&pool, &format!("r{i}")).await.unwrap()));
    }
    assert_eq!(picks, "012012");
}

#[tokio::test]
async fn placements_not_created_yet_count_as_active() {
    let (pool, _) = pool(2, None);
    let first = pool.place(false).await.unwrap();
    let second = pool.place(false).await.unwrap();
    assert_ne!(first.engine, second.engine);
    drop(first);
    // Engine 0 is free again (nothing was created there).
    assert_eq!(
        pool.place(false).await.unwrap().engine,
        EngineId::new("unix:///engine-0.sock")
    );
}

#[tokio::test]
async fn the_per_engine_cap_answers_capacity_when_every_engine_is_full() {
    let (pool, _) = pool(2, Some(1));
    run_one(&pool, "a").await.unwrap();
    run_one(&pool, "b").await.unwrap();
    let full = run_one(&pool, "c").await.unwrap_err();
    assert!(matches!(full, OperationError::Capacity(_)), "{full:?}");
}

#[tokio::test]
async fn a_down_engine_is_skipped_listed_as_unreachable_and_revived_by_a_probe() {
    let (pool, engines) = pool(2, None);
    let on_0 = run_one(&pool, "before").await.unwrap();
    assert_eq!(index(&on_0), '0');
    engines[0].set_down(true);
    // The first call finds out; placement goes to engine 1 from then on.
    for i in 0..3 {
        let c = run_one(&pool, &format!("during{i}")).await.unwrap();
        assert_eq!(index(&c), '1');
    }
    let listing = pool.list_managed(&ManagedFilter::all()).await.unwrap();
    assert_eq!(listing.containers.len(), 3);
    assert_eq!(listing.unreachable.len(), 1);
    assert_eq!(listing.unreachable[0].0, on_0.engine);
    assert!(matches!(
        listing.missing("before"),
        OperationError::RuntimeUnavailable(_)
    ));
    pool.probe().await;
    assert!(pool.health()[0].state.is_err(), "still down");
    engines[0].set_down(false);
    pool.probe().await;
    assert_eq!(pool.health()[0].state, Ok(()), "came back");
    let listing = pool.list_managed(&ManagedFilter::all()).await.unwrap();
    assert_eq!(
        (listing.containers.len(), listing.unreachable.len()),
        (4, 0)
    );
    assert!(matches!(listing.missing("x"), OperationError::NotFound(_)));
}

#[tokio::test]
async fn runs_with_request_mounts_go_to_an_engine_that_pins_them() {
    let (pool, engines) = pool(2, None);
    // Only engine 1 pins; give it more runs than engine 0.
    engines[1].pins.store(true, Ordering::SeqCst);
    let first = run_one(&pool, "a").await.unwrap();
    let second = run_one(&pool, "b").await.unwrap();
    assert_eq!((index(&first), index(&second)), ('0', '1'));
    run_one(&pool, "c").await.unwrap(); // engine 0: 2, engine 1: 1
    let pinned = pool.place(true).await.unwrap();
    assert_eq!(pinned.engine, second.engine);
    drop(pinned);
    let plain = pool.place(false).await.unwrap();
    assert_eq!(plain.engine, second.engine, "fewest active: engine 1");
    drop(plain);
    // No engine that pins answers: placed as any run (the engine then
    // refuses the mounts with its reason).
    engines[1].set_down(true);
    let fallback = pool.place(true).await.unwrap();
    assert_eq!(fallback.engine, first.engine);
}

#[tokio::test(start_paused = true)]
async fn a_hung_engine_is_given_up_after_the_list_timeout() {
    let (pool, engines) = pool(2, None);
    engines[0].hung.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let c = run_one(&pool, "a").await.unwrap();
    assert_eq!(index(&c), '1');
    assert_eq!(started.elapsed(), ENGINE_TIMEOUT);
    // Marked down: the next placement does not wait for it again.
    let again = tokio::time::Instant::now();
    run_one(&pool, "b").await.unwrap();
    assert_eq!(again.elapsed(), Duration::ZERO);
}

#[tokio::test]
async fn every_engine_down_is_unavailable_and_each_is_tried_again() {
    let (pool, engines) = pool(2, None);
    engines[0].set_down(true);
    engines[1].set_down(true);
    let err = run_one(&pool, "a").await.unwrap_err();
    assert!(
        matches!(err, OperationError::RuntimeUnavailable(_)),
        "{err:?}"
    );
    assert!(pool.list_managed(&ManagedFilter::all()).await.is_err());
    // With every engine down, calls still try them: one that is back
    // serves at once, without waiting for the background probe.
    engines[1].set_down(false);
    let c = run_one(&pool, "b").await.unwrap();
    assert_eq!(index(&c), '1');
}

#[tokio::test]
async fn calls_on_a_container_go_to_the_engine_holding_it() {
    let (pool, engines) = pool(2, None);
    run_one(&pool, "a").await.unwrap();
    let on_1 = run_one(&pool, "b").await.unwrap();
    assert_eq!(index(&on_1), '1');
    pool.mark_answered(&on_1).await.unwrap();
    let seen = engines[1]
        .inner
        .list_managed(&ManagedFilter::all())
        .await
        .unwrap();
    assert_eq!(seen[0].mark, RunMark::Answered);
    let managed = pool.inspect_managed(&on_1).await.unwrap();
    assert_eq!(managed.container.engine, on_1.engine);
    let stranger = ContainerRef {
        engine: EngineId::new("tcp://elsewhere:2376"),
        ..on_1
    };
    assert!(matches!(
        pool.remove(&stranger).await,
        Err(RuntimeError::Engine(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn the_probe_marks_a_hung_engine_down_after_the_engine_timeout() {
    let (pool, engines) = pool(2, None);
    assert!(
        pool.health().iter().all(|e| e.state.is_err()),
        "not reached yet"
    );
    engines[0].mute.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    pool.probe().await;
    assert_eq!(started.elapsed(), ENGINE_TIMEOUT, "one timeout for all");
    let health = pool.health();
    assert!(health[0].state.is_err(), "{health:?}");
    assert_eq!(health[1].state, Ok(()));
    assert_ne!(health[0].label, health[1].label);
}

#[tokio::test]
async fn a_session_run_goes_to_the_engine_that_holds_the_session() {
    let (pool, engines) = pool(2, None);
    let key = SessionKey {
        owner: bus_docker_domain::OwnerId::parse("alice").unwrap(),
        name: bus_docker_domain::SessionName::parse("task-1").unwrap(),
    };
    // Nobody holds it: placement as usual (the emptier engine 0).
    assert_eq!(index(&run_one(&pool, "a").await.unwrap()), '0');
    // Engine 1 holds it: the run goes there although engine 0 has room
    // too, and keeps going there while engine 1 is busier.
    engines[1].sessions.lock().unwrap().push(key.clone());
    for run in ["b", "c", "d"] {
        let placed = pool.place_for(false, Some(&key)).await.unwrap();
        assert_eq!(
            placed.engine,
            EngineId::new("unix:///engine-1.sock"),
            "{run}"
        );
        let spec = spec(run);
        let image = pool
            .ensure_image(&placed, &spec.image, spec.pull_policy)
            .await
            .unwrap();
        pool.create(&placed, &spec, "r", &image).await.unwrap();
    }
    // The engine holding it is down: the run starts anew elsewhere rather
    // than not at all.
    engines[1].set_down(true);
    let placed = pool.place_for(false, Some(&key)).await.unwrap();
    assert_eq!(placed.engine, EngineId::new("unix:///engine-0.sock"));
}
