//! Start-up recovery: the container is the durable record of a run, so a
//! restarted worker re-attaches to the containers its runner name left
//! behind. Running ones are driven to their end, exited ones collected;
//! each is answered once and then removed (docs/protocol.md §5).
//!
//! A recovered run that asked for live output (`bus.stream-output`) keeps
//! streaming what the container prints from the re-attach on, with `seq`
//! starting above anything the earlier worker can have published
//! ([`recovered_first_seq`]).

use std::sync::Arc;

use bus_docker_domain::container::{EngineId, RunMark};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, Stdin};
use bus_docker_domain::ImageRef;
use bus_docker_domain::RuntimeError;
use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::answer::{DriveJob, RunFacts};
use super::live::recovered_first_seq;
use super::table::LiveRun;
use super::{input_channel, sleep_or_stop, Worker, RECOVERY_BACKOFF};

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Re-attach to the containers this runner left behind, on every
    /// engine of the pool at once. Each engine is retried until it answers
    /// or the worker stops (an engine down at start-up is recovered when
    /// it comes back); returns how many runs were adopted.
    pub async fn recover(&self) -> usize {
        let engines: Vec<EngineId> = self.inner.pool.engines().cloned().collect();
        join_all(engines.iter().map(|e| self.recover_engine(e)))
            .await
            .into_iter()
            .sum()
    }

    async fn recover_engine(&self, engine: &EngineId) -> usize {
        let mut backoff = RECOVERY_BACKOFF.first;
        // Fresh: start-up must see every container of this runner.
        let mine = ManagedFilter::runner(self.inner.settings.runner_name.clone()).fresh();
        let list = loop {
            match self.left_behind_on(engine, &mine).await {
                Ok(list) => break list,
                Err(err) => {
                    warn!(docker_host = %engine, error = %err, "recovery: cannot list managed containers, retrying in {backoff:?}");
                    if !sleep_or_stop(backoff, self.inner.lifecycle.stopping_token()).await {
                        return 0;
                    }
                    backoff = RECOVERY_BACKOFF.next(backoff);
                }
            }
        };
        let mut recovered = 0;
        for listed in list {
            if listed.mark == RunMark::Answered {
                // Answered by an earlier process: kept as a tombstone for
                // one more retention period, then swept.
                let until = std::time::Instant::now() + self.inner.settings.run_retention;
                self.table().tombstones.push((listed.container, until));
                continue;
            }
            // The list has no start time; deadlines count from the start.
            let managed = match self.inner.pool.inspect_managed(&listed.container).await {
                Ok(m) => m,
                Err(err) => {
                    warn!(container = %listed.container.name, error = %err, "recovery: cannot read the container; skipped");
                    continue;
                }
            };
            if self.adopt(managed).await {
                recovered += 1;
            }
        }
        if recovered > 0 {
            info!(recovered, docker_host = %engine, "recovered runs left by an earlier worker");
        }
        recovered
    }

    /// What an earlier process of this runner left on `engine`: its parked
    /// containers are settled first (a claim cut off before its rename is
    /// completed into a run, the others removed; docs/protocol.md §10),
    /// then its runs are listed.
    async fn left_behind_on(
        &self,
        engine: &EngineId,
        mine: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let runner = &self.inner.settings.runner_name;
        let settled = self
            .inner
            .pool
            .runtime_on(engine)?
            .settle_parked(runner)
            .await?;
        if settled.removed > 0 || !settled.completed.is_empty() {
            info!(
                docker_host = %engine,
                removed = settled.removed,
                completed = settled.completed.len(),
                "parked containers left by an earlier worker settled"
            );
        }
        self.inner.pool.list_on(engine, mine).await
    }

    /// Take one left-behind container into the run table and drive it on a
    /// tracked task. It takes a concurrency slot when one is free (the
    /// container runs anyway: a recovered run is never held back).
    async fn adopt(&self, managed: ManagedContainer) -> bool {
        let (Some(correlation), Some(reply_event)) =
            (managed.correlation.clone(), managed.reply_event.clone())
        else {
            warn!(container = %managed.container.name, "managed container without correlation labels cannot be answered; removing it");
            if let Err(err) = self.inner.pool.remove(&managed.container).await {
                warn!(error = %err, "removing unanswerable container failed");
            }
            return false;
        };
        let facts = RunFacts {
            run_id: managed.run_id.clone(),
            owner: managed.owner.clone(),
            correlation: correlation.clone(),
            reply_event,
            profile: managed.profile.clone(),
            image: ImageRef::parse(&managed.image)
                .unwrap_or_else(|_| ImageRef::parse("unknown").expect("valid literal")),
            args: managed.args.clone(),
            session: managed.session.clone(),
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = input_channel();
        {
            let mut table = self.table();
            if table.live.contains_key(&facts.run_id) {
                return false;
            }
            let run = LiveRun::adopted(&managed, correlation, cancel.clone(), Some(tx));
            table.insert(facts.run_id.clone(), run);
        }
        info!(run_id = %facts.run_id, container = %managed.container.name, state = ?managed.state, "recovering run");
        let slot = Arc::clone(&self.inner.slots).try_acquire_owned().ok();
        if slot.is_none() {
            warn!(run_id = %facts.run_id, "more runs recovered than max_concurrent_runs: this one runs without a slot");
        }
        let stdin = if managed.interactive {
            Stdin::Interactive(
                None,
                self.inner.held_input.metered(facts.run_id.clone(), rx),
            )
        } else {
            Stdin::Closed
        };
        let job = DriveJob {
            facts,
            container: managed.container.clone(),
            timeout: managed
                .timeout
                .unwrap_or(self.inner.settings.policy.default_timeout),
            max_output_bytes: self.inner.settings.policy.max_output_bytes,
            cancel,
            image_id: managed.image_id.clone(),
            live_from_seq: managed
                .stream_output
                .then(|| recovered_first_seq(managed.started_at, std::time::SystemTime::now())),
            _slot: slot,
        };
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.drive_and_answer(job, stdin).await });
        true
    }

    /// Run [`Worker::recover`] on a tracked task.
    pub fn spawn_recovery(&self) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            this.recover().await;
        });
    }
}
