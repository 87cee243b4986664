//! The background work of a worker, started once by
//! [`Worker::start_background`] and ended when the worker stops: recovery
//! of runs left behind ([`super::recover`]), the tombstone sweep
//! ([`super::retention`]), the engine probe (the pool's health,
//! [`crate::pool`]) and the warm refill ([`super::warm`]).

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};

use super::{sleep_or_stop, Worker};
use crate::pool::PROBE_INTERVAL;

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Start the background work: recovery of left-behind runs, the
    /// tombstone and codex session sweeps, the engine probe, and the refill
    /// of warm profiles' parked containers (`warm.rs`). All end when the worker
    /// stops.
    pub fn start_background(&self) {
        self.spawn_recovery();
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.sweep_tombstones().await });
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.sweep_sessions().await });
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.probe_engines().await });
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.warm_loop().await });
    }

    /// Probe every engine of the pool now and every [`PROBE_INTERVAL`]
    /// until the worker stops: an engine that comes back takes new runs
    /// again, and `/readyz` and `bus_docker_engine_up` read what it found.
    async fn probe_engines(&self) {
        loop {
            self.inner.pool.probe().await;
            if !sleep_or_stop(PROBE_INTERVAL, self.inner.lifecycle.stopping_token()).await {
                return;
            }
        }
    }
}
