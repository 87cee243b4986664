//! `runner.delete.request`: cancel every active and queued run of *this
//! runner* — each is answered `canceled` by its driver, then its container
//! is removed — and report how many containers were actually removed.
//! Containers of other runner names are never touched.

use std::collections::HashSet;
use std::time::Duration;

use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::response::Reply;
use bus_docker_domain::{RunId, RuntimeError};
use tracing::{debug, warn};

use super::{Answer, Worker};

/// How long `runner.delete` waits for cancelled runs to be answered and
/// removed before it counts what is gone.
const RUNNER_DELETE_WAIT: Duration = Duration::from_secs(30);

/// How often it looks whether they are.
const RUNNER_DELETE_POLL: Duration = Duration::from_millis(50);

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn runner_delete(&self) -> Answer {
        let before = self.runner_containers().await?;
        let local: Vec<RunId> = {
            let table = self.table();
            for run in table.live.values() {
                run.cancel.cancel();
            }
            table.live.keys().cloned().collect()
        };
        // Runs of this runner that no task here drives (a peer with the
        // same runner name, or left for recovery) are marked deleted and
        // stopped; their driver answers them `canceled`. Tombstones of
        // answered runs go at once.
        let grace = self.inner.settings.stop_grace;
        for c in before.iter().filter(|c| !local.contains(&c.run_id)) {
            let done = match c.mark {
                RunMark::Answered => self.inner.pool.remove(&c.container).await,
                _ => self.inner.pool.delete_run(&c.container, grace).await,
            };
            if let Err(err) = done {
                warn!(container = %c.container.name, error = %err, "runner delete: cannot stop or remove container");
            }
        }
        self.table().tombstones.clear();
        self.wait_until_gone(&local).await;
        // The cancelled runs were answered and left as tombstones: a
        // deleted runner keeps none.
        let mut after = HashSet::new();
        for c in self.runner_containers().await? {
            let removed =
                c.mark == RunMark::Answered && self.inner.pool.remove(&c.container).await.is_ok();
            if !removed {
                after.insert(c.container.id);
            }
        }
        // Parked warm containers of this runner go too (no refill until
        // `runner.start`).
        let parked = self.pause_warm().await;
        let removed = before
            .iter()
            .filter(|c| !after.contains(&c.container.id))
            .count()
            + parked;
        debug!(removed, "runner delete");
        Ok(Reply::RunnerDelete {
            removed_containers: removed,
        })
    }

    /// The managed containers carrying this worker's runner name.
    async fn runner_containers(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        // Fresh: a runner delete must reach every container of this runner.
        let mine = ManagedFilter::runner(self.inner.settings.runner_name.clone()).fresh();
        let listing = self.inner.pool.list_managed(&mine).await?;
        for (engine, why) in &listing.unreachable {
            warn!(docker_host = %engine, error = %why, "runner delete: engine unreachable; its containers of this runner stay until it is back");
        }
        Ok(listing.containers)
    }

    /// Wait (bounded) until none of `runs` is live any more: each driver
    /// answered and removed its container.
    async fn wait_until_gone(&self, runs: &[RunId]) {
        let deadline = tokio::time::Instant::now() + RUNNER_DELETE_WAIT;
        while runs.iter().any(|id| self.table().live.contains_key(id)) {
            if tokio::time::Instant::now() >= deadline {
                warn!("runner delete: some cancelled runs are still finishing");
                return;
            }
            tokio::time::sleep(RUNNER_DELETE_POLL).await;
        }
    }
}
