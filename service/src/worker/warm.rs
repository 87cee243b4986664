//! Warm start (docs/protocol.md §10): containers parked ahead for warm profiles,
//! claimed by runs that fit them, refilled off the request path.
//!
//! * A warm profile (`profiles.<name>.warm = N`) keeps `N` parked
//!   containers on every engine of the pool, created and started from the
//!   profile's template spec (the profile resolved with no request in it)
//!   by the runtime's `park`: they run the launcher and nothing else.
//! * A run whose spec fits the template ([`misfit`]: same profile, image,
//!   mounts, network, hardening, output cap) claims one on the engine it
//!   was placed on (`claim`: the record, then the rename to
//!   `bus-run-<run_id>`) and its command starts at once. Anything else,
//!   and a fitting run that finds no parked container, takes the cold path
//!   unchanged (a miss costs one lookup in memory).
//! * Refilling runs on its own task ([`Worker::warm_loop`]): woken after
//!   a run's response is published, and every [`WARM_TICK`] to replace
//!   containers older than `warm_max_age` and to top up; it never runs in
//!   front of a request. Parked containers hold no run slot.
//! * Only containers this process parked are claimed (it holds their
//!   stdin). Parked containers of an earlier process of this runner are
//!   removed at start-up (their launcher exited when its stdin closed);
//!   `runner.delete` and shutdown remove this runner's parked containers
//!   (`runner.delete` pauses refilling until `runner.start`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bus_docker_domain::container::{ContainerRef, EngineId};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::request::RunRequest;
use bus_docker_domain::spec::{resolve, Origin, RunSpec};
use bus_docker_domain::warm::{misfit, WarmReport};
use bus_docker_domain::{CorrelationId, ProfileName, RunId, RuntimeError};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::answer::RunFacts;
use super::Worker;
use crate::pool::Placement;

/// How often the refill task looks at the parked containers on its own.
pub const WARM_TICK: Duration = Duration::from_secs(2);

/// The default `warm_max_age`.
pub const DEFAULT_WARM_MAX_AGE: Duration = Duration::from_secs(10 * 60);

/// Warm profiles and how long a parked container may wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmSettings {
    /// Parked containers wanted per engine, by profile (0 is not listed).
    pub profiles: BTreeMap<ProfileName, usize>,
    /// A parked container older than this is replaced.
    pub max_age: Duration,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self {
            profiles: BTreeMap::new(),
            max_age: DEFAULT_WARM_MAX_AGE,
        }
    }
}

/// One warm profile: its template, how many it wants per engine, and why
/// it is refused (an image that cannot be parked).
struct Template {
    spec: RunSpec,
    wanted: usize,
}

#[derive(Default)]
struct Slot {
    parked: VecDeque<(ContainerRef, Instant)>,
}

/// The warm state of one worker.
pub(crate) struct WarmPool {
    templates: BTreeMap<ProfileName, Template>,
    /// Profiles refused at start-up, with the reason.
    refused: Mutex<BTreeMap<ProfileName, String>>,
    slots: Mutex<HashMap<(EngineId, ProfileName), Slot>>,
    /// Parks under way per engine and profile: a refill pass counts them
    /// as parked, so a wake while they run starts only what is still
    /// missing (parks overlap instead of queueing behind each other).
    in_flight: Mutex<HashMap<(EngineId, ProfileName), usize>>,
    wake: Notify,
    paused: AtomicBool,
    max_age: Duration,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WarmPool {
    /// The warm profiles of `settings`, each resolved into its template
    /// (the profile with no request in it). A profile that does not
    /// resolve is refused with the reason.
    pub fn new(settings: &super::WorkerSettings) -> Self {
        let mut templates = BTreeMap::new();
        let mut refused = BTreeMap::new();
        for (name, &wanted) in &settings.warm.profiles {
            if wanted == 0 {
                continue;
            }
            match template(settings, name) {
                Ok(spec) => {
                    templates.insert(name.clone(), Template { spec, wanted });
                }
                Err(why) => {
                    warn!(profile = %name, reason = %why, "warm profile refused");
                    refused.insert(name.clone(), why);
                }
            }
        }
        Self {
            templates,
            refused: Mutex::new(refused),
            slots: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            paused: AtomicBool::new(false),
            max_age: settings.warm.max_age,
        }
    }

    fn active(&self) -> impl Iterator<Item = (&ProfileName, &Template)> {
        let refused = locked(&self.refused).clone();
        self.templates
            .iter()
            .filter(move |(name, _)| !refused.contains_key(*name))
    }

    /// Take the oldest parked container of `profile` on `engine`.
    fn take(&self, engine: &EngineId, profile: &ProfileName) -> Option<ContainerRef> {
        let mut slots = locked(&self.slots);
        let slot = slots.get_mut(&(engine.clone(), profile.clone()))?;
        slot.parked.pop_front().map(|(c, _)| c)
    }

    fn in_flight(&self, engine: &EngineId, profile: &ProfileName) -> usize {
        locked(&self.in_flight)
            .get(&(engine.clone(), profile.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// `n` more parks under way.
    fn parks_started(&self, engine: &EngineId, profile: &ProfileName, n: usize) {
        let mut all = locked(&self.in_flight);
        *all.entry((engine.clone(), profile.clone())).or_default() += n;
    }

    /// One park ended (parked or not).
    fn park_ended(&self, engine: &EngineId, profile: &ProfileName) {
        if let Some(count) = locked(&self.in_flight).get_mut(&(engine.clone(), profile.clone())) {
            *count = count.saturating_sub(1);
        }
    }

    fn parked(&self, engine: &EngineId, profile: &ProfileName) -> usize {
        locked(&self.slots)
            .get(&(engine.clone(), profile.clone()))
            .map_or(0, |s| s.parked.len())
    }

    /// Wake the refill task (after a run's response).
    pub fn wake(&self) {
        if !self.templates.is_empty() {
            self.wake.notify_one();
        }
    }
}

/// A profile resolved with nothing of a request in it.
fn template(settings: &super::WorkerSettings, name: &ProfileName) -> Result<RunSpec, String> {
    let req = RunRequest {
        profile: Some(name.clone()),
        command: Some(vec!["true".to_owned()]),
        ..RunRequest::default()
    };
    let origin = Origin {
        correlation: CorrelationId::parse("warm-template").expect("a valid correlation id"),
        stamped_owner: None,
        reply_event: String::new(),
    };
    let id = RunId::parse("warm-template").expect("a valid run id");
    let spec = resolve(
        &req,
        &origin,
        &settings.profiles,
        &settings.policy,
        &bus_docker_domain::mount::RealHostPaths,
        id,
    )
    .map_err(|e| e.to_string())?;
    if spec.profile.as_ref() != Some(name) {
        return Err(format!("{name} is not a configured profile"));
    }
    Ok(spec)
}

/// What a warm claim came to.
pub(super) enum WarmClaim {
    /// The run's command starts in this container.
    Hit(ContainerRef),
    /// Take the cold path.
    Miss,
    /// `bus-run-<run_id>` exists on the engine: another delivery holds it.
    NameTaken(String),
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Claim a parked container for `spec` on the placed engine, or say
    /// why not (a miss takes the cold path).
    pub(super) async fn claim_warm(
        &self,
        facts: &RunFacts,
        spec: &RunSpec,
        placement: &Placement,
        received: Instant,
    ) -> WarmClaim {
        let warm = &self.inner.warm;
        let Some(profile) = spec.profile.as_ref() else {
            return WarmClaim::Miss;
        };
        let Some(template) = warm.templates.get(profile) else {
            return WarmClaim::Miss;
        };
        let metrics = &self.inner.metrics;
        if let Some(field) = misfit(&template.spec, spec) {
            debug!(run_id = %facts.run_id, field, "run does not fit a parked container: cold path");
            metrics.warm_claim(profile.as_str(), false);
            return WarmClaim::Miss;
        }
        let engine = &placement.engine;
        while let Some(parked) = warm.take(engine, profile) {
            let claimed = match self.inner.pool.runtime_on(engine) {
                Ok(runtime) => runtime.claim(&parked, spec).await,
                Err(err) => Err(err),
            };
            metrics.warm_parked(profile.as_str(), self.parked_total(profile));
            match claimed {
                Ok(mut container) => {
                    container.engine = engine.clone();
                    let since_read = received.elapsed();
                    let claim_us = u64::try_from(since_read.as_micros()).unwrap_or(u64::MAX);
                    // The wall-clock moment the request was read, for the
                    // benchmark's "request read → first instruction".
                    let read_at_us = SystemTime::now()
                        .checked_sub(since_read)
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                    debug!(target: "bus_integration_docker::warm", run_id = %facts.run_id, docker_host = %engine, claim_us, read_at_us, "warm claim");
                    metrics.warm_claim(profile.as_str(), true);
                    return WarmClaim::Hit(container);
                }
                Err(RuntimeError::NameConflict(name)) => return WarmClaim::NameTaken(name),
                Err(err) => {
                    warn!(container = %parked.name, error = %err, "a parked container could not be claimed; trying the next");
                }
            }
        }
        metrics.warm_claim(profile.as_str(), false);
        WarmClaim::Miss
    }

    fn parked_total(&self, profile: &ProfileName) -> usize {
        self.inner
            .pool
            .engines()
            .map(|e| self.inner.warm.parked(e, profile))
            .sum()
    }

    /// The refill task: keeps every warm profile at its count on every
    /// engine until the worker stops, when it removes what it parked.
    /// (What an earlier process parked is settled by start-up recovery,
    /// [`Worker::recover`], warm profiles or not.)
    pub(super) async fn warm_loop(&self) {
        let warm = &self.inner.warm;
        if warm.templates.is_empty() {
            return;
        }
        let stopping = self.inner.lifecycle.stopping_token().clone();
        loop {
            if !warm.paused.load(Ordering::Acquire) {
                self.refill().await;
            }
            tokio::select! {
                () = stopping.cancelled() => break,
                () = warm.wake.notified() => {}
                () = tokio::time::sleep(WARM_TICK) => {}
            }
        }
        let removed = self.remove_parked().await;
        info!(removed, "shutdown: parked warm containers removed");
    }

    /// Replace parked containers past `warm_max_age`, then start parking
    /// what is missing (each park on its own task: the pass does not wait
    /// for them).
    async fn refill(&self) {
        let warm = &self.inner.warm;
        let engines: Vec<EngineId> = self.inner.pool.engines().cloned().collect();
        let stopping = self.inner.lifecycle.stopping_token().clone();
        for (profile, template) in warm.active() {
            for engine in &engines {
                let expired: Vec<ContainerRef> = {
                    let mut slots = locked(&warm.slots);
                    let slot = slots.entry((engine.clone(), profile.clone())).or_default();
                    let (old, young): (Vec<_>, Vec<_>) = slot
                        .parked
                        .drain(..)
                        .partition(|(_, at)| at.elapsed() >= warm.max_age);
                    slot.parked = young.into();
                    old.into_iter().map(|(c, _)| c).collect()
                };
                for c in expired {
                    debug!(container = %c.name, "parked container past warm_max_age: replaced");
                    let _ = self.inner.pool.remove(&c).await;
                }
                let missing = template
                    .wanted
                    .saturating_sub(warm.parked(engine, profile) + warm.in_flight(engine, profile));
                if missing == 0 || stopping.is_cancelled() || warm.paused.load(Ordering::Acquire) {
                    continue;
                }
                if self.inner.pool.runtime_on(engine).is_err() {
                    continue;
                }
                let image = self
                    .inner
                    .pool
                    .ensure_image_on(engine, &template.spec.image, template.spec.pull_policy)
                    .await;
                if let Err(err) = image {
                    debug!(profile = %profile, docker_host = %engine, error = %err, "cannot park a container now (image); trying again later");
                    continue;
                }
                // The missing ones at once: the engine's create and start
                // are latency, not work, and a burst of claims leaves
                // several slots empty.
                warm.parks_started(engine, profile, missing);
                for _ in 0..missing {
                    let this = self.clone();
                    let (engine, profile) = (engine.clone(), profile.clone());
                    self.inner
                        .tasks
                        .spawn(async move { this.park_one(engine, profile).await });
                }
            }
        }
    }

    /// Park one container of `profile` on `engine` (a task of
    /// [`Worker::refill`]).
    async fn park_one(&self, engine: EngineId, profile: ProfileName) {
        let warm = &self.inner.warm;
        let Some(template) = warm.templates.get(&profile) else {
            return;
        };
        let stopping = self.inner.lifecycle.stopping_token();
        let parked = match self.inner.pool.runtime_on(&engine) {
            Ok(runtime) => {
                runtime
                    .park(&template.spec, &self.inner.settings.runner_name)
                    .await
            }
            Err(err) => Err(err),
        };
        warm.park_ended(&engine, &profile);
        match parked {
            Ok(mut c) if stopping.is_cancelled() || warm.paused.load(Ordering::Acquire) => {
                // Parked while `runner.delete` or shutdown removed the
                // others: it goes too.
                c.engine = engine.clone();
                let _ = self.inner.pool.remove(&c).await;
            }
            Ok(mut c) => {
                c.engine = engine.clone();
                locked(&warm.slots)
                    .entry((engine.clone(), profile.clone()))
                    .or_default()
                    .parked
                    .push_back((c, Instant::now()));
            }
            Err(RuntimeError::Forbidden { detail, .. }) => {
                warn!(profile = %profile, reason = %detail, "warm profile refused: its runs take the cold path");
                locked(&warm.refused).insert(profile.clone(), detail);
            }
            Err(err) => {
                debug!(profile = %profile, docker_host = %engine, error = %err, "cannot park a container now; trying again later");
            }
        }
        self.inner
            .metrics
            .warm_parked(profile.as_str(), self.parked_total(&profile));
    }

    /// Remove this runner's parked containers on every engine (those this
    /// process holds and any left behind); how many were removed.
    pub(super) async fn remove_parked(&self) -> usize {
        let warm = &self.inner.warm;
        locked(&warm.slots).clear();
        let runner = &self.inner.settings.runner_name;
        let mut removed = 0;
        let engines: Vec<EngineId> = self.inner.pool.engines().cloned().collect();
        for engine in engines {
            let Ok(runtime) = self.inner.pool.runtime_on(&engine) else {
                continue;
            };
            let parked = match runtime.list_parked(runner).await {
                Ok(p) => p,
                Err(err) => {
                    warn!(docker_host = %engine, error = %err, "cannot list parked containers");
                    continue;
                }
            };
            for p in parked {
                let mut c = p.container;
                c.engine = engine.clone();
                if self.inner.pool.remove(&c).await.is_ok() {
                    removed += 1;
                }
            }
        }
        for profile in warm.templates.keys() {
            self.inner.metrics.warm_parked(profile.as_str(), 0);
        }
        removed
    }

    /// `runner.delete`: no parked containers until `runner.start`.
    pub(super) async fn pause_warm(&self) -> usize {
        self.inner.warm.paused.store(true, Ordering::Release);
        self.remove_parked().await
    }

    /// `runner.start`: refill again.
    pub(super) fn resume_warm(&self) {
        self.inner.warm.paused.store(false, Ordering::Release);
        self.inner.warm.wake();
    }

    /// Parked and wanted per warm profile and engine (`runner.status`).
    pub fn warm_counts(&self) -> Vec<WarmReport> {
        let warm = &self.inner.warm;
        let refused = locked(&warm.refused).clone();
        let mut counts = Vec::new();
        for (profile, template) in &warm.templates {
            for engine in self.inner.pool.engines() {
                counts.push(WarmReport {
                    profile: profile.to_string(),
                    docker_host: self.docker_host(engine).unwrap_or_default(),
                    parked: warm.parked(engine, profile),
                    wanted: template.wanted,
                    refused: refused.get(profile).cloned(),
                });
            }
        }
        for (profile, why) in &refused {
            if !warm.templates.contains_key(profile) {
                counts.push(WarmReport {
                    profile: profile.to_string(),
                    docker_host: String::new(),
                    parked: 0,
                    wanted: 0,
                    refused: Some(why.clone()),
                });
            }
        }
        counts
    }
}
