//! Stopping the worker: the two stop signals and the drain.
//!
//! `Lifecycle` is created once by the composition root and handed to the
//! worker and to the event adapters. Its tokens are private: adapters get
//! child tokens (they can watch, not trigger), and [`Worker::begin_shutdown`]
//! and [`Worker::shutdown`] are the only code that cancels them.

use std::time::Duration;

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::Worker;

/// The two stop signals of a worker: *stopping* ends intake and cancels
/// queued runs; *abandon* (after the grace period) drops in-flight work and
/// leaves containers for the next start-up.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    stopping: CancellationToken,
    abandon: CancellationToken,
}

impl Lifecycle {
    /// Fires when the worker stops taking requests (streams must end).
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.child_token()
    }

    /// Fires when the shutdown grace is over (publishers give up).
    pub fn abandoned(&self) -> CancellationToken {
        self.abandon.child_token()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.is_cancelled()
    }

    pub(super) async fn stopping_signal(&self) {
        self.stopping.cancelled().await;
    }

    pub(super) async fn abandon_signal(&self) {
        self.abandon.cancelled().await;
    }

    pub(super) fn stopping_token(&self) -> &CancellationToken {
        &self.stopping
    }
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Number of runs this process holds (any state).
    pub fn live_runs(&self) -> usize {
        self.table().live.len()
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.lifecycle.is_stopping()
    }

    /// Begin stopping: the event source's streams end (handing on what they
    /// had read, which the app loop still dispatches: a run among it is
    /// answered `canceled`), and queued runs are answered `canceled`.
    /// [`Worker::shutdown`] does this too; the app loop calls it first so
    /// that it can drain the source before waiting for the runs.
    pub fn begin_shutdown(&self) {
        self.inner.lifecycle.stopping.cancel();
    }

    /// Stop: intake ends, queued runs are answered `canceled`, running ones
    /// get `grace` to finish; then the rest is abandoned to the next
    /// start-up. The only place that cancels the lifecycle.
    pub async fn shutdown(&self, grace: Duration) {
        let lifecycle = &self.inner.lifecycle;
        lifecycle.stopping.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(grace, self.inner.tasks.wait())
            .await
            .is_err()
        {
            info!(
                live = self.live_runs(),
                "shutdown grace of {grace:?} over; leaving running containers to the next start-up"
            );
            lifecycle.abandon.cancel();
            self.inner.tasks.wait().await;
        }
    }
}
