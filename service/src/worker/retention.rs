//! Retention: answered runs stay listed in `status` for `run_retention`
//! (from the run table's cache), and their containers stay as `.answered`
//! tombstones for as long. A background sweep removes this worker's
//! tombstones once their time is over; tombstones found at start-up (left
//! by an earlier process) are kept one more retention period.
//!
//! The same sweep removes the expired tombstones of **every** runner on
//! the engines (docs/protocol.md §5, v3): a runner may never come back, and its
//! tombstones would otherwise stay for good. A tombstone's age counts from
//! its container's finish time on the engine; one listing per sweep (label
//! filters), and an inspect only for tombstones created longer ago than
//! the retention (a younger one cannot have expired), once each: the
//! finish time is remembered. Nothing live or deleted-but-unanswered is
//! touched, and nothing still within retention.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bus_docker_domain::container::ManagedFilter;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use tracing::{debug, info, warn};

use super::{sleep_or_stop, Worker};

/// The sweep looks this often at most (and at least every quarter of the
/// retention, so a tombstone outlives its time by a quarter at worst).
const SWEEP_EVERY_MAX: Duration = Duration::from_secs(60);
const SWEEP_EVERY_MIN: Duration = Duration::from_secs(1);

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Remove expired tombstones until the worker stops.
    pub(super) async fn sweep_tombstones(&self) {
        let retention = self.inner.settings.run_retention;
        if retention.is_zero() {
            return;
        }
        let every = (retention / 4).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX);
        let mut finished = HashMap::new();
        while sleep_or_stop(every, self.inner.lifecycle.stopping_token()).await {
            self.sweep_engine_tombstones(retention, &mut finished).await;
            let expired = self.table().expired_tombstones(std::time::Instant::now());
            for container in expired {
                match self.inner.pool.remove(&container).await {
                    Ok(()) => {
                        debug!(container = %container.name, "retention over: tombstone removed")
                    }
                    Err(err) => {
                        warn!(container = %container.name, error = %err, "cannot remove an expired tombstone; trying again later");
                        let until = std::time::Instant::now() + every;
                        self.table().tombstones.push((container, until));
                    }
                }
            }
        }
    }

    /// Remove codex sessions unused for `session_retention` (docs/protocol.md §6)
    /// on every engine, until the worker stops. Only a worker with per-run
    /// Codex homes sweeps (the setting is `None` otherwise); any worker of
    /// the engine may remove an expired session, as with tombstones.
    pub(super) async fn sweep_sessions(&self) {
        let Some(retention) = self.inner.settings.session_retention else {
            return;
        };
        let every = (retention / 4).clamp(SWEEP_EVERY_MIN, SWEEP_EVERY_MAX);
        while sleep_or_stop(every, self.inner.lifecycle.stopping_token()).await {
            for (engine, swept) in self.inner.pool.sweep_sessions(retention).await {
                match swept {
                    Ok(swept) if swept.removed > 0 => {
                        debug!(%engine, removed = swept.removed, kept = swept.kept, "expired codex sessions removed")
                    }
                    Ok(_) => {}
                    Err(err) => {
                        warn!(%engine, error = %err, "cannot sweep codex sessions; trying again later")
                    }
                }
            }
        }
    }

    /// Remove the `.answered` containers of any runner whose retention
    /// (from their finish time on the engine) is over. `finished` keeps
    /// the finish times read so far (container id → time), pruned to what
    /// is still listed.
    async fn sweep_engine_tombstones(
        &self,
        retention: Duration,
        finished: &mut HashMap<String, SystemTime>,
    ) {
        let listing = match self.inner.pool.list_managed(&ManagedFilter::all()).await {
            Ok(listing) => listing,
            Err(err) => {
                debug!(error = %err, "tombstone sweep: engines not listed; trying again later");
                return;
            }
        };
        let tombstones: Vec<_> = listing
            .containers
            .into_iter()
            .filter(|m| m.mark == RunMark::Answered)
            .collect();
        finished.retain(|id, _| tombstones.iter().any(|m| &m.container.id == id));
        let now = SystemTime::now();
        let over = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age >= retention);
        for tombstone in tombstones {
            // Finished after it was created: a young container is no candidate.
            if tombstone.created_at.is_some_and(|created| !over(created)) {
                continue;
            }
            let at = match finished.get(&tombstone.container.id) {
                Some(at) => *at,
                None => match self.inner.pool.inspect_managed(&tombstone.container).await {
                    Ok(full) => match full.finished_at {
                        Some(at) => {
                            finished.insert(tombstone.container.id.clone(), at);
                            at
                        }
                        // Not exited (a rename by hand?): not a tombstone to remove.
                        None => continue,
                    },
                    Err(err) => {
                        debug!(container = %tombstone.container.name, error = %err, "tombstone sweep: cannot read it; trying again later");
                        continue;
                    }
                },
            };
            if !over(at) {
                continue;
            }
            match self.inner.pool.remove(&tombstone.container).await {
                Ok(()) => {
                    finished.remove(&tombstone.container.id);
                    info!(container = %tombstone.container.name, runner = tombstone.runner.as_deref().unwrap_or(""), "retention over: tombstone removed");
                }
                Err(err) => {
                    warn!(container = %tombstone.container.name, error = %err, "cannot remove an expired tombstone; trying again later");
                }
            }
        }
    }
}
