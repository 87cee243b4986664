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
//!
//! [`ContainerRef::engine`]: bus_docker_domain::container::ContainerRef::engine
//!
//! Layout: this file holds the pool, its members and the listings that
//! look on every engine; `health.rs` each engine's health, the probes and
//! labels; `place.rs` placement of new runs; `calls.rs` the calls that go
//! to one engine (images, the create, calls routed by container).

mod calls;
mod health;
mod place;

pub use health::{EngineHealth, EngineProbe, ENGINE_TIMEOUT, PROBE_INTERVAL};
pub use place::Placement;

use std::num::NonZeroUsize;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use bus_docker_domain::container::EngineId;
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::{OperationError, RuntimeError};
use futures_util::future::join_all;

use health::Health;

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
}

#[cfg(test)]
mod tests;
