//! Retention: answered runs stay listed in `status` for `run_retention`
//! (from the run table's cache), and their containers stay as `.answered`
//! tombstones for as long. A background sweep removes this worker's
//! tombstones once their time is over; tombstones found at start-up (left
//! by an earlier process) are kept one more retention period.

use std::time::Duration;

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use tracing::{debug, warn};

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
        while sleep_or_stop(every, self.inner.lifecycle.stopping_token()).await {
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

    /// Start the background work of a worker: recovery of left-behind runs
    /// the tombstone sweep, and the probe of engines that are down. All end
    /// when the worker stops.
    pub fn start_background(&self) {
        self.spawn_recovery();
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.sweep_tombstones().await });
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.watch_engines().await });
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.warm_loop().await });
    }
}
