//! The engine pool (docs/protocol.md §5): the engines a worker runs containers
//! on, each a [`ContainerRuntime`], and what spans them — placement of new
//! runs ([`bus_docker_domain::placement`]), listings that look on every
//! engine, routing a call on a container to the engine holding it, and
//! each engine's health.
//!
//! Health: the pool is its one owner. An engine that answers a call
//! `Unavailable`, or does not answer within [`ENGINE_TIMEOUT`], is *down*;
//! a down engine is skipped for placement and listings (no call waits for
//! its connect timeout) until a call or the background probe
//! ([`EnginePool::probe`], every [`PROBE_INTERVAL`], started by the
//! worker's background work) reaches it again. `/readyz`, the
//! `bus_docker_engine_up` gauge and `runner.status` read that one state
//! ([`EnginePool::health`]), and an engine's label is decided once
//! ([`EnginePool::label`]). When every engine is down, each call tries
//! them all: a pool of one behaves as a single engine always did.
//!
//! An engine that comes back needs no recovery of its own: a run being
//! driven there re-attaches by itself (the drive retries with backoff),
//! and start-up recovery retries each engine until it answers.
//!
//! The pool stamps [`ContainerRef::engine`] on every container it hands
//! out; runtimes never see engine ids.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bus_docker_domain::container::{
    ContainerRef, EngineId, EngineInfo, RequestMounts, SessionUsage, SessionsSwept,
};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::placement::{choose, EngineLoad, NoRoom};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::spec::SessionKey;
use bus_docker_domain::{ImageId, ImageRef, OperationError, RuntimeError};
use futures_util::future::join_all;
use tracing::{info, warn};

/// How often every engine is probed in the background.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long one engine may take to answer a probe or a listing before it
/// counts as down: a hung engine (it accepts connections, never answers)
/// must not hold every placement and every status behind the engine
/// client's request timeout.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pool knows about one engine's reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Health {
    /// Not called yet.
    #[default]
    Unknown,
    Up,
    Down(String),
}

struct Member<R> {
    id: EngineId,
    runtime: R,
    health: Mutex<Health>,
    /// The engine's version, once read.
    version: Mutex<Option<String>>,
    /// Whether it pins request mounts (a local engine), once read.
    pins: Mutex<Option<bool>>,
    /// Runs placed here and not created yet.
    reserved: Arc<AtomicUsize>,
}

impl<R> Member<R> {
    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record what a call says about reachability; logs transitions.
    fn note<T>(&self, result: &Result<T, RuntimeError>) {
        let next = match result {
            Err(RuntimeError::Unavailable(why)) => Health::Down(why.clone()),
            // Any answer, even a refusal, proves the engine is there.
            _ => Health::Up,
        };
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*health, &next) {
            (Health::Down(_), Health::Up) => {
                info!(docker_host = %self.id, "engine reachable again");
            }
            (Health::Up | Health::Unknown, Health::Down(why)) => {
                warn!(docker_host = %self.id, error = %why, "engine unreachable: skipped for new runs until it answers again");
            }
            _ => {}
        }
        *health = next;
    }
}

/// One engine's health as the pool last noted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineHealth {
    /// [`EnginePool::label`] of the engine.
    pub label: String,
    /// `Err` with why while it is down or was never reached.
    pub state: Result<(), String>,
}

/// What a listing across the pool found, and which engines it could not
/// ask.
#[derive(Debug, Default)]
pub struct Listing {
    pub containers: Vec<ManagedContainer>,
    /// Engines skipped or failing, with why.
    pub unreachable: Vec<(EngineId, String)>,
}

impl Listing {
    /// `not_found` for a run missing from the listing, or
    /// `runtime_unavailable` when an engine that may hold it was not asked.
    pub fn missing(&self, what: &str) -> OperationError {
        if self.unreachable.is_empty() {
            return OperationError::NotFound(what.to_owned());
        }
        OperationError::RuntimeUnavailable(format!(
            "run {what} is not on any reachable engine, and these engines cannot be reached: {}",
            describe(&self.unreachable)
        ))
    }
}

fn describe(engines: &[(EngineId, String)]) -> String {
    engines
        .iter()
        .map(|(id, why)| format!("{id} ({why})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An engine chosen for a run. It counts as an active run there until it
/// is dropped (after the container was created, or the run gave up).
pub struct Placement {
    pub engine: EngineId,
    index: usize,
    reserved: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.reserved.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One engine's answer to a `runner.status` probe.
pub struct EngineProbe {
    pub engine: EngineId,
    pub info: Result<EngineInfo, RuntimeError>,
    /// Active managed containers, from every worker.
    pub active_runs: Option<usize>,
    /// The codex session volumes it keeps, when it answered.
    pub sessions: Option<SessionUsage>,
}

/// The engines of one worker, in configured order.
pub struct EnginePool<R> {
    members: Vec<Member<R>>,
    /// At most this many active runs per engine (`max_runs_per_engine`).
    cap: Option<NonZeroUsize>,
    /// One placement at a time: counting and reserving must not interleave,
    /// or a burst would see the same counts and pile onto one engine.
    placing: tokio::sync::Mutex<()>,
}

impl<R: ContainerRuntime> From<R> for EnginePool<R> {
    /// A pool of one unnamed engine (tests, the `static` provider).
    fn from(runtime: R) -> Self {
        Self::new(vec![(EngineId::default(), runtime)], None)
    }
}

impl<R: ContainerRuntime> EnginePool<R> {
    /// A pool of these engines, in this order (ties in placement go to the
    /// first). `engines` must not be empty.
    ///
    /// # Panics
    /// When `engines` is empty (configuration always yields one).
    pub fn new(engines: Vec<(EngineId, R)>, cap: Option<NonZeroUsize>) -> Self {
        assert!(!engines.is_empty(), "an engine pool needs an engine");
        let members = engines
            .into_iter()
            .map(|(id, runtime)| Member {
                id,
                runtime,
                health: Mutex::new(Health::Unknown),
                version: Mutex::new(None),
                pins: Mutex::new(None),
                reserved: Arc::new(AtomicUsize::new(0)),
            })
            .collect();
        Self {
            members,
            cap,
            placing: tokio::sync::Mutex::new(()),
        }
    }

    /// `docker` or `static`.
    pub fn provider(&self) -> &'static str {
        self.members[0].runtime.provider()
    }

    /// How many engines the pool has.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never: a pool has at least one engine.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The engines, in configured order.
    pub fn engines(&self) -> impl Iterator<Item = &EngineId> {
        self.members.iter().map(|m| &m.id)
    }

    /// The first engine's runtime (tests and tools that drive it directly).
    pub fn first(&self) -> &R {
        &self.members[0].runtime
    }

    /// The engine holding `container`. A pool of one holds everything.
    fn member(&self, engine: &EngineId) -> Result<&Member<R>, RuntimeError> {
        if let [only] = self.members.as_slice() {
            return Ok(only);
        }
        self.members
            .iter()
            .find(|m| m.id == *engine)
            .ok_or_else(|| {
                RuntimeError::Engine(format!("engine {engine:?} is not in this worker's pool"))
            })
    }

    /// The members a fan-out asks: the ones not known to be down, or all
    /// of them when every one is down.
    fn askable(&self) -> (Vec<&Member<R>>, Vec<(EngineId, String)>) {
        let (mut ask, mut skipped) = (Vec::new(), Vec::new());
        for m in &self.members {
            match m.health() {
                Health::Down(why) => skipped.push((m, why)),
                _ => ask.push(m),
            }
        }
        if ask.is_empty() {
            // Every engine is down: try them all (one may be back).
            return (skipped.into_iter().map(|(m, _)| m).collect(), Vec::new());
        }
        let skipped = skipped.into_iter().map(|(m, why)| (m.id.clone(), why));
        (ask, skipped.collect())
    }

    /// The managed containers passing `filter` on every reachable engine,
    /// each stamped with its engine.
    ///
    /// # Errors
    /// The first engine's error when no engine could be listed.
    pub async fn list_managed(&self, filter: &ManagedFilter) -> Result<Listing, RuntimeError> {
        let (ask, mut unreachable) = self.askable();
        let results = join_all(ask.iter().map(|m| self.list_on_member(m, filter))).await;
        let mut containers = Vec::new();
        let mut first_error = None;
        let mut answered = false;
        for (m, result) in ask.iter().zip(results) {
            match result {
                Ok(list) => {
                    answered = true;
                    containers.extend(list);
                }
                Err(err) => {
                    unreachable.push((m.id.clone(), err.to_string()));
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) if !answered => Err(err),
            _ => Ok(Listing {
                containers,
                unreachable,
            }),
        }
    }

    /// One engine's managed containers passing `filter`.
    ///
    /// # Errors
    /// The engine's error; `Engine` for an engine not in the pool.
    pub async fn list_on(
        &self,
        engine: &EngineId,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.list_on_member(self.member(engine)?, filter).await
    }

    async fn list_on_member(
        &self,
        m: &Member<R>,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let result = tokio::time::timeout(ENGINE_TIMEOUT, m.runtime.list_managed(filter))
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Unavailable(format!(
                    "no answer to a container listing within {ENGINE_TIMEOUT:?}"
                )))
            });
        m.note(&result);
        let mut list = result?;
        for c in &mut list {
            c.container.engine = m.id.clone();
        }
        Ok(list)
    }

    /// Choose the engine for a new run: the reachable one with the fewest
    /// active runs (one filtered list call per engine; none for a pool of
    /// one), ties to the first configured. A run with request mounts
    /// (`needs_pinning`) goes to an engine that pins them (a local one)
    /// when the pool has one that answers; otherwise it is placed as any
    /// run and that engine refuses the mounts (`forbidden`).
    ///
    /// # Errors
    /// `Unavailable` when no engine can be reached; `Capacity` (as an
    /// operation error) when every reachable engine is at the cap.
    pub async fn place(&self, needs_pinning: bool) -> Result<Placement, OperationError> {
        self.place_for(needs_pinning, None).await
    }

    /// As [`EnginePool::place`], for a run that resumes a codex session
    /// (docs/protocol.md §6): its volume lives on one engine, so the run goes
    /// there while that engine is reachable (at the cap it is answered
    /// `capacity` rather than moved: moved, it would lose its session); a
    /// session no reachable engine holds starts anew wherever placement
    /// puts it.
    ///
    /// # Errors
    /// As [`EnginePool::place`].
    pub async fn place_for(
        &self,
        needs_pinning: bool,
        session: Option<&SessionKey>,
    ) -> Result<Placement, OperationError> {
        let _one_at_a_time = self.placing.lock().await;
        let mut loads = self.loads().await;
        if let (Some(key), true) = (session, self.members.len() > 1) {
            let holds = join_all(self.members.iter().zip(&loads).map(|(m, l)| async move {
                l.reachable && m.runtime.has_session(key).await.unwrap_or(false)
            }))
            .await;
            if holds.iter().any(|h| *h) {
                for (load, holds) in loads.iter_mut().zip(holds) {
                    load.reachable &= holds;
                }
            }
        }
        if needs_pinning && self.members.len() > 1 {
            let pins = join_all(self.members.iter().map(|m| self.pins(m))).await;
            let reachable_pinning = loads.iter().zip(&pins).any(|(l, p)| l.reachable && *p);
            if reachable_pinning {
                for (load, pins) in loads.iter_mut().zip(pins) {
                    load.reachable &= pins;
                }
            }
        }
        self.reserve(&loads)
    }

    /// Whether `m` pins request mounts (asked once, then remembered).
    async fn pins(&self, m: &Member<R>) -> bool {
        if let Some(known) = *m.pins.lock().unwrap_or_else(PoisonError::into_inner) {
            return known;
        }
        self.info(m)
            .await
            .is_ok_and(|i| matches!(i.request_mounts, RequestMounts::Pinned))
    }

    /// Each engine's load for placement.
    async fn loads(&self) -> Vec<EngineLoad> {
        if self.members.len() == 1 && self.cap.is_none() {
            vec![EngineLoad {
                reachable: true,
                active: 0,
            }]
        } else {
            let (ask, _) = self.askable();
            let counts = join_all(self.members.iter().map(|m| async {
                if !ask.iter().any(|a| a.id == m.id) {
                    return None;
                }
                let listed = self.list_on_member(m, &ManagedFilter::active()).await;
                listed.ok().map(|l| l.len())
            }))
            .await;
            self.members
                .iter()
                .zip(counts)
                .map(|(m, count)| EngineLoad {
                    reachable: count.is_some(),
                    active: count.unwrap_or(0) + m.reserved.load(Ordering::Relaxed),
                })
                .collect()
        }
    }

    /// Choose among `loads` and reserve a place on the chosen engine.
    fn reserve(&self, loads: &[EngineLoad]) -> Result<Placement, OperationError> {
        match choose(loads, self.cap) {
            Ok(index) => {
                let m = &self.members[index];
                m.reserved.fetch_add(1, Ordering::Relaxed);
                Ok(Placement {
                    engine: m.id.clone(),
                    index,
                    reserved: Arc::clone(&m.reserved),
                })
            }
            Err(NoRoom::Full { cap }) => Err(OperationError::Capacity(format!(
                "every reachable engine of the pool holds max_runs_per_engine ({cap}) active runs"
            ))),
            Err(NoRoom::Unreachable) => {
                let why = self
                    .members
                    .iter()
                    .map(|m| match m.health() {
                        Health::Down(why) => (m.id.clone(), why),
                        _ => (m.id.clone(), "did not answer".to_owned()),
                    })
                    .collect::<Vec<_>>();
                Err(OperationError::RuntimeUnavailable(format!(
                    "no engine of the pool can be reached: {}",
                    describe(&why)
                )))
            }
        }
    }

    /// Make the image present on the placed engine; returns its id there.
    ///
    /// # Errors
    /// As [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image(
        &self,
        on: &Placement,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        let m = &self.members[on.index];
        let result = m.runtime.ensure_image(image, policy).await;
        m.note(&result);
        result
    }

    /// The runtime of `engine` (warm start parks and claims through it;
    /// the caller stamps the engine on what it returns).
    ///
    /// # Errors
    /// `Engine` for an engine outside the pool.
    pub fn runtime_on(&self, engine: &EngineId) -> Result<&R, RuntimeError> {
        self.member(engine).map(|m| &m.runtime)
    }

    /// Make the image present on `engine` under `policy`.
    ///
    /// # Errors
    /// As [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image_on(
        &self,
        engine: &EngineId,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        let m = self.member(engine)?;
        let result = m.runtime.ensure_image(image, policy).await;
        m.note(&result);
        result
    }

    /// Create the run's container on the placed engine.
    ///
    /// # Errors
    /// As [`ContainerRuntime::create`].
    pub async fn create(
        &self,
        on: &Placement,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        let m = &self.members[on.index];
        let result = m.runtime.create(spec, runner, image).await;
        m.note(&result);
        let mut container = result?;
        container.engine = m.id.clone();
        Ok(container)
    }

    /// Make `image` present on every reachable engine (`runner.start`).
    ///
    /// # Errors
    /// The first engine's failure, as [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image_everywhere(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<(), RuntimeError> {
        let (ask, _) = self.askable();
        let results = join_all(ask.iter().map(|m| async {
            let result = m.runtime.ensure_image(image, policy).await;
            m.note(&result);
            result
        }))
        .await;
        results.into_iter().try_for_each(|r| r.map(drop))
    }

    /// Whether `image` is present on every reachable engine.
    pub async fn image_present_everywhere(&self, image: &ImageRef) -> bool {
        let (ask, _) = self.askable();
        let present = join_all(ask.iter().map(|m| async {
            let result = m.runtime.image_present(image).await;
            m.note(&result);
            result.unwrap_or(false)
        }))
        .await;
        present.into_iter().all(|p| p)
    }

    /// Ask every engine for its version and load (for `runner.status`):
    /// also a probe, so it revives engines that came back.
    pub async fn probe_all(&self) -> Vec<EngineProbe> {
        join_all(self.members.iter().map(|m| async {
            let info = self.info(m).await;
            let (active_runs, sessions) = match &info {
                Ok(_) => (
                    self.list_on_member(m, &ManagedFilter::active())
                        .await
                        .ok()
                        .map(|l| l.len()),
                    m.runtime.session_usage().await.ok(),
                ),
                Err(_) => (None, None),
            };
            EngineProbe {
                engine: m.id.clone(),
                info,
                active_runs,
                sessions,
            }
        }))
        .await
    }

    /// Remove the codex sessions unused for `retention` on every engine
    /// not known to be down (docs/protocol.md §6); each engine's outcome.
    pub async fn sweep_sessions(
        &self,
        retention: Duration,
    ) -> Vec<(EngineId, Result<SessionsSwept, RuntimeError>)> {
        let (ask, _) = self.askable();
        join_all(
            ask.into_iter()
                .map(|m| async move { (m.id.clone(), m.runtime.sweep_sessions(retention).await) }),
        )
        .await
    }

    /// Ask every engine whether it answers, each within [`ENGINE_TIMEOUT`],
    /// and note the answer as its health (the background probe; also what
    /// one-shot commands call before they use an engine).
    pub async fn probe(&self) {
        join_all(self.members.iter().map(|m| async move {
            if tokio::time::timeout(ENGINE_TIMEOUT, self.info(m))
                .await
                .is_err()
            {
                m.note::<()>(&Err(RuntimeError::Unavailable(format!(
                    "no answer within {ENGINE_TIMEOUT:?}"
                ))));
            }
        }))
        .await;
    }

    /// Each engine's label and health as last noted: `Err` with why for
    /// an engine that is down or was never reached yet.
    pub fn health(&self) -> Vec<EngineHealth> {
        self.members
            .iter()
            .map(|m| EngineHealth {
                label: self.label(&m.id),
                state: match m.health() {
                    Health::Up => Ok(()),
                    Health::Down(why) => Err(why),
                    Health::Unknown => Err("not reached yet".into()),
                },
            })
            .collect()
    }

    /// How logs, metrics and responses name `engine`: its URL without
    /// credentials, or the provider's name for a runtime outside a pool.
    pub fn label(&self, engine: &EngineId) -> String {
        if engine.is_unnamed() {
            self.provider().to_owned()
        } else {
            engine.to_string()
        }
    }

    /// Ask an engine about itself: the one place that notes its health
    /// from the answer and keeps its version and pinning.
    async fn info(&self, m: &Member<R>) -> Result<EngineInfo, RuntimeError> {
        let info = m.runtime.engine_info().await;
        m.note(&info);
        if let Ok(i) = &info {
            *m.version.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(i.engine_version.clone());
            *m.pins.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(matches!(i.request_mounts, RequestMounts::Pinned));
        }
        info
    }

    /// The version of the engine holding `container` (read once).
    pub async fn engine_version(&self, engine: &EngineId) -> Option<String> {
        let m = self.member(engine).ok()?;
        let cached = m
            .version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if cached.is_some() {
            return cached;
        }
        self.info(m).await.ok().map(|i| i.engine_version)
    }
}

/// Calls on one container, routed to the engine holding it.
macro_rules! routed {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// As the [`ContainerRuntime`] method of the same name; `Engine`
        /// for a container on an engine outside the pool.
        pub async fn $name(&self, container: &ContainerRef $(, $arg: $ty)*) -> Result<$out, RuntimeError> {
            let m = self.member(&container.engine)?;
            let result = m.runtime.$name(container $(, $arg)*).await;
            m.note(&result);
            result
        }
    };
}

impl<R: ContainerRuntime> EnginePool<R> {
    routed!(
        /// Drive the container to its end on its engine.
        drive(io: RunIo) -> Exit
    );
    routed!(
        /// Kill the container.
        kill() -> ()
    );
    routed!(
        /// Remove the container.
        remove() -> ()
    );
    routed!(
        /// Mark the run deleted and stop it.
        delete_run(grace: Duration) -> ()
    );
    routed!(
        /// Mark the run answered.
        mark_answered() -> ()
    );
    routed!(
        /// Write to the stdin of a run another worker drives.
        write_input(chunk: InputChunk) -> ()
    );

    /// One container read in full, stamped with its engine.
    ///
    /// # Errors
    /// As [`ContainerRuntime::inspect_managed`].
    pub async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        let m = self.member(&container.engine)?;
        let result = m.runtime.inspect_managed(container).await;
        m.note(&result);
        let mut managed = result?;
        managed.container.engine = m.id.clone();
        Ok(managed)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
