//! Placement of new runs: each engine's load, the choice
//! ([`bus_docker_domain::placement::choose`]), runs resuming a session and
//! runs with request mounts, and the reservation a [`Placement`] holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use bus_docker_domain::container::ManagedFilter;
use bus_docker_domain::container::{EngineId, RequestMounts};
use bus_docker_domain::placement::{choose, EngineLoad, NoRoom};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::spec::SessionKey;
use bus_docker_domain::OperationError;
use futures_util::future::join_all;

use super::{describe, EnginePool, Health, Member};

/// An engine chosen for a run. It counts as an active run there until it
/// is dropped (after the container was created, or the run gave up).
pub struct Placement {
    pub engine: EngineId,
    pub(super) index: usize,
    reserved: Arc<AtomicUsize>,
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.reserved.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<R: ContainerRuntime> EnginePool<R> {
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
}
