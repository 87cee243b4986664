//! `runner.delete.request`: cancel every active and queued run of *this
//! runner* — each is answered `canceled` by its driver, then its container
//! is removed — and report how many containers were actually removed.
//! Containers of other runner names are never touched.

use std::collections::HashSet;
use std::time::Duration;

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, ManagedContainer};
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
        // same runner name, or left for recovery): stop them through the
        // engine; their driver answers them.
        for c in before.iter().filter(|c| !local.contains(&c.run_id)) {
            if let Err(err) = self.inner.runtime.kill(&c.container).await {
                warn!(container = %c.container.name, error = %err, "runner delete: cannot stop container");
            }
        }
        self.wait_until_gone(&local).await;
        let after: HashSet<String> = self
            .runner_containers()
            .await?
            .into_iter()
            .map(|c| c.container.id)
            .collect();
        let removed = before
            .iter()
            .filter(|c| !after.contains(&c.container.id))
            .count();
        debug!(removed, "runner delete");
        Ok(Reply::RunnerDelete {
            removed_containers: removed,
        })
    }

    /// The managed containers carrying this worker's runner name.
    async fn runner_containers(&self) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let runner = self.inner.settings.runner_name.as_str();
        let list = self.inner.runtime.list_managed().await?;
        Ok(list
            .into_iter()
            .filter(|c| c.runner.as_deref() == Some(runner))
            .collect())
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
