//! `run.request`: intake, admission, and creating the container.
//!
//! A run is answered by its own driver (`answer.rs`) when the container
//! ends, not here. What happens here, in order:
//!
//! 1. a redelivered request (same correlation id, live or answered) is
//!    dropped with a log line: never a second container, never a second
//!    response. Redelivery is checked at three moments, each for a reason:
//!    * at dispatch (`mod.rs`, `SeenRequests`), for every operation: cheap,
//!      but bounded and shared with status traffic, so it forgets first;
//!    * here, before resolving (`RunTable::redelivered`): the run table's
//!      own records of admitted and answered runs, which the seen set may
//!      have forgotten;
//!    * at admission (`RunTable::admit` → `Admission::Duplicate`): resolving
//!      runs on a blocking thread, so a twin delivered meanwhile is caught
//!      under the table's lock;
//!
//!    and across workers the engine decides: the unique container name
//!    (`name_conflict`) and the twin check on every engine (`twins`);
//! 2. the request is resolved into a [`RunSpec`] under the profiles and the
//!    policy (mount sources are looked up on the filesystem: off the async
//!    workers); without a caller-chosen `run_id` the id is derived from the
//!    correlation id, so that the engine's unique container names stop a
//!    duplicate delivered to another worker;
//! 3. admission into the run table (`conflict`, `capacity`, `canceled`);
//! 4. a slot, an engine of the pool (`pool/place.rs`: the fewest active runs),
//!    the image there, the container — alone of its run id on every
//!    engine; then `answer.rs` drives it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_docker_domain::container::{ContainerRef, EngineId, RunMark};
use bus_docker_domain::container::{ContainerState, ManagedFilter};
use bus_docker_domain::mount::{MountOrigin, RealHostPaths};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, InputChunk, Stdin};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::request::RunRequest;
use bus_docker_domain::response::Response;
use bus_docker_domain::run::RunState;
use bus_docker_domain::spec::{resolve, Origin, RunSpec};
use bus_docker_domain::{
    CorrelationId, ImageId, Operation, OperationError, OwnerId, RunId, RuntimeError,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::answer::{DriveJob, RunFacts};
use super::table::{Admission, Capacity, LiveRun, Redelivered};
use super::warm::WarmClaim;
use super::{input_channel, Worker};
use crate::pool::Placement;

/// How long a refused create looks for the container holding its name
/// (one being created by another worker is not listed yet), and how often.
const NAME_HOLDER_WAIT: Duration = Duration::from_secs(5);
const NAME_HOLDER_POLL: Duration = Duration::from_millis(50);

/// How often a delivery that meets an unstarted twin on another engine
/// backs off and tries again, and the unit of its random pause.
const TWIN_ATTEMPTS: u32 = 8;
const TWIN_BACKOFF: Duration = Duration::from_millis(25);

/// The run id of a request that did not choose one: `run_` and the first
/// 24 hex digits of the SHA-256 of its correlation id (docs/protocol.md §5). Every
/// delivery of one request gets the same id, on every worker.
pub(crate) fn derived_run_id(correlation: &CorrelationId) -> RunId {
    let digest = Sha256::digest(correlation.as_str().as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    RunId::parse(&format!("run_{hex}")).expect("run_ and hex digits form a valid run id")
}

/// A run request's place in arrival order. Requests are resolved on
/// blocking threads, which finish in any order; each waits for the one that
/// arrived before it to be admitted (or dropped) before its own admission,
/// so a later request never takes the slot an earlier one was queued for.
/// Dropping the turn lets the next request go.
pub(crate) struct RunTurn {
    after: Option<oneshot::Receiver<()>>,
    _done: oneshot::Sender<()>,
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// The next run request's turn (called in arrival order).
    pub(super) fn next_run_turn(&self) -> RunTurn {
        let (done, next) = oneshot::channel();
        let after = self
            .inner
            .run_order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(next);
        RunTurn { after, _done: done }
    }

    pub(super) async fn handle_run(
        &self,
        req: RunRequest,
        correlation: CorrelationId,
        stamped_owner: Option<OwnerId>,
        received: Instant,
        mut turn: Option<RunTurn>,
    ) {
        if let Some(after) = turn.as_mut().and_then(|t| t.after.take()) {
            // An error only says the earlier request is done.
            let _ = after.await;
        }
        if self.is_redelivery(&correlation) {
            return;
        }
        let event = self.reply_event(Operation::Run);
        let origin = Origin {
            correlation: correlation.clone(),
            stamped_owner,
            reply_event: event.clone(),
        };
        let spec = match self.resolve_off_thread(req, origin).await {
            Ok(spec) => spec,
            Err(err) => {
                info!(error = %err, "run request refused");
                self.publish(&Response::failure(Operation::Run, event, correlation, &err))
                    .await;
                return;
            }
        };
        let cancel = CancellationToken::new();
        let input = spec.interactive.then(input_channel);
        let capacity = Capacity {
            slot_free: self.inner.slots.available_permits() > 0,
            max_queued: self.inner.settings.max_queued_runs,
            stopping: self.inner.lifecycle.is_stopping(),
        };
        let run = LiveRun::queued(
            &spec,
            cancel.clone(),
            input.as_ref().map(|(tx, _)| tx.clone()),
        );
        let admission = self.table().admit(&spec.run_id, run, capacity);
        match admission {
            Ok(Admission::Admitted) => {}
            Ok(Admission::Duplicate) => {
                info!(run_id = %spec.run_id, "redelivered run request: already in progress, not starting another container");
                return;
            }
            Err(err) => {
                info!(run_id = %spec.run_id, error = %err, "run request refused");
                self.publish(&Response::failure(Operation::Run, event, correlation, &err))
                    .await;
                return;
            }
        }
        drop(turn);
        self.execute(spec, cancel, input.map(|(_, rx)| rx), received)
            .await;
    }

    /// A request this worker is running or has answered: logged, dropped.
    fn is_redelivery(&self, correlation: &CorrelationId) -> bool {
        match self.table().redelivered(correlation) {
            Some(Redelivered::Answered) => {
                info!("redelivered run request already answered: dropped (no second response)");
                true
            }
            Some(Redelivered::InProgress) => {
                info!("redelivered run request still running: attached to the running one, not re-run");
                true
            }
            None => false,
        }
    }

    /// Resolve on a blocking thread: mount sources are canonicalised on the
    /// real filesystem, which may block.
    async fn resolve_off_thread(
        &self,
        req: RunRequest,
        origin: Origin,
    ) -> Result<RunSpec, OperationError> {
        let derived = derived_run_id(&origin.correlation);
        let this = self.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            let s = &this.inner.settings;
            resolve(
                &req,
                &origin,
                &s.profiles,
                &s.policy,
                &RealHostPaths,
                derived,
            )
        })
        .await;
        resolved.unwrap_or_else(|e| {
            Err(OperationError::Unexpected(format!(
                "resolving the request failed: {e}"
            )))
        })
    }

    /// Wait for a slot, place the run on an engine, make the image present
    /// there, create the container and hand it to the driver. Each wait
    /// gives way to a delete and to shutdown.
    async fn execute(
        &self,
        spec: RunSpec,
        cancel: CancellationToken,
        input: Option<mpsc::Receiver<InputChunk>>,
        received: Instant,
    ) {
        let facts = RunFacts::of_spec(&spec);
        let Some((permit, placement, mut image)) =
            self.slot_and_image(&facts, &spec, &cancel).await
        else {
            return;
        };
        if cancel.is_cancelled() {
            return self
                .fail_run(
                    &facts,
                    OperationError::Canceled("deleted before the container was created".into()),
                )
                .await;
        }
        // From the request reaching the worker to the create call: the
        // benchmark reads this line (target `bus_integration_docker::dispatch`).
        let dispatch = received.elapsed();
        debug!(target: "bus_integration_docker::dispatch", run_id = %spec.run_id, docker_host = %placement.engine, dispatch_us = u64::try_from(dispatch.as_micros()).unwrap_or(u64::MAX), "creating container");
        let warm = self.claim_warm(&facts, &spec, &placement, received).await;
        let container = match warm {
            WarmClaim::Hit(claimed) => match self.twins(&facts, &claimed).await {
                Twin::None => claimed,
                twin => {
                    // Another delivery made a container too: the cold
                    // path settles it (it backs off, drops or conflicts).
                    debug!(run_id = %facts.run_id, ?twin, "warm claim met a twin: leaving it to the cold path");
                    let _ = self.inner.pool.remove(&claimed).await;
                    let Some(c) = self
                        .create_alone(&facts, &spec, &placement, &mut image)
                        .await
                    else {
                        return;
                    };
                    c
                }
            },
            WarmClaim::NameTaken(name) => {
                return self.name_conflict(&facts, &placement.engine, name).await;
            }
            WarmClaim::Miss => {
                let Some(c) = self
                    .create_alone(&facts, &spec, &placement, &mut image)
                    .await
                else {
                    return;
                };
                c
            }
        };
        drop(placement);
        self.table()
            .set_state(&spec.run_id, RunState::Running, Some(&container));
        let stdin = match (spec.interactive, input) {
            (true, Some(rx)) => Stdin::Interactive(
                spec.stdin.as_ref().map(|s| s.clone().into_bytes()),
                self.inner.held_input.metered(spec.run_id.clone(), rx),
            ),
            _ => spec
                .stdin
                .as_ref()
                .map_or(Stdin::Closed, |s| Stdin::Text(s.clone().into_bytes())),
        };
        let job = DriveJob {
            facts,
            container,
            timeout: spec.timeout,
            max_output_bytes: spec.max_output_bytes,
            cancel,
            image_id: Some(image.to_string()),
            live_from_seq: spec.stream_output.then_some(0),
            _slot: Some(permit),
        };
        self.drive_and_answer(job, stdin).await;
    }

    /// Wait for a run slot, then choose the engine and make the image
    /// present there; each step gives way to a delete and to shutdown.
    /// `None` when the run was answered already (canceled, no engine, or
    /// the image is unavailable).
    async fn slot_and_image(
        &self,
        facts: &RunFacts,
        spec: &RunSpec,
        cancel: &CancellationToken,
    ) -> Option<(OwnedSemaphorePermit, Placement, ImageId)> {
        let lifecycle = &self.inner.lifecycle;
        let permit = tokio::select! {
            permit = Arc::clone(&self.inner.slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => {
                    self.fail_run(facts, OperationError::Unexpected("run slots closed".into())).await;
                    return None;
                }
            },
            () = cancel.cancelled() => {
                self.fail_run(facts, OperationError::Canceled("deleted while queued".into())).await;
                return None;
            }
            () = lifecycle.stopping_signal() => {
                self.fail_run(facts, OperationError::Canceled("the worker shut down before the run started".into())).await;
                return None;
            }
        };
        self.table()
            .set_state(&spec.run_id, RunState::Creating, None);
        let pins = spec
            .mounts
            .iter()
            .any(|m| matches!(m.origin(), MountOrigin::Request { .. }));
        let session = spec.codex_home.as_ref().and_then(|h| h.session.as_ref());
        let placement = match self.inner.pool.place_for(pins, session).await {
            Ok(p) => p,
            Err(err) => {
                self.fail_run(facts, err).await;
                return None;
            }
        };
        let refusal = tokio::select! {
            pulled = self.inner.pool.ensure_image(&placement, &spec.image, spec.pull_policy) => match pulled {
                Ok(id) => return Some((permit, placement, id)),
                Err(err) => err.into(),
            },
            () = cancel.cancelled() => OperationError::Canceled("deleted while its image was being pulled".into()),
            () = lifecycle.stopping_signal() => OperationError::Canceled("the worker shut down while the run's image was being pulled".into()),
        };
        self.fail_run(facts, refusal).await;
        None
    }

    /// Create the run's container on the placed engine, making sure it is
    /// the only one of this run (docs/protocol.md §5: a duplicate must not run
    /// twice, across engines too). The engine's unique names settle
    /// duplicates on one engine (a 409, [`Self::name_conflict`]); across
    /// engines, each delivery looks on every engine after its create and
    /// before its start ([`Self::twins`]). A delivery that sees an
    /// unstarted twin backs off (removes its container, waits a random
    /// moment, creates again): two deliveries never both start, since each
    /// created before it looked. `None` when this delivery must not run
    /// (answered or dropped already).
    ///
    /// The container is created from `image`, the id the image was
    /// checked as; when it vanished since (`ImageMissing`), the image is
    /// made present again once under the run's pull policy and `image`
    /// becomes the new id.
    async fn create_alone(
        &self,
        facts: &RunFacts,
        spec: &RunSpec,
        placement: &Placement,
        image: &mut ImageId,
    ) -> Option<ContainerRef> {
        let runner = &self.inner.settings.runner_name;
        let mut ensured_again = false;
        for attempt in 1..=TWIN_ATTEMPTS {
            let created = match self.inner.pool.create(placement, spec, runner, image).await {
                Err(RuntimeError::ImageMissing(_))
                    if !ensured_again && spec.pull_policy != PullPolicy::Never =>
                {
                    ensured_again = true;
                    match (self.inner.pool)
                        .ensure_image(placement, &spec.image, spec.pull_policy)
                        .await
                    {
                        Ok(id) => {
                            *image = id;
                            self.inner.pool.create(placement, spec, runner, image).await
                        }
                        Err(err) => Err(err),
                    }
                }
                other => other,
            };
            let container = match created {
                Ok(c) => c,
                Err(RuntimeError::NameConflict(name)) => {
                    self.name_conflict(facts, &placement.engine, name).await;
                    return None;
                }
                Err(err) => {
                    self.fail_run(facts, err.into()).await;
                    return None;
                }
            };
            let twin = self.twins(facts, &container).await;
            if twin == Twin::None {
                return Some(container);
            }
            if let Err(err) = self.inner.pool.remove(&container).await {
                warn!(container = %container.name, error = %err, "cannot remove the unstarted duplicate container");
            }
            match twin {
                Twin::None => unreachable!("handled above"),
                Twin::Ran => {
                    info!(run_id = %facts.run_id, "duplicate delivery of a request another delivery runs or ran: dropped (no second run, no second response)");
                    self.table().remove(&facts.run_id);
                    return None;
                }
                Twin::OtherRequest => {
                    let err = OperationError::Conflict(format!(
                        "run_id {} is already used by another request",
                        facts.run_id
                    ));
                    self.fail_run(facts, err).await;
                    return None;
                }
                Twin::Unstarted if attempt == TWIN_ATTEMPTS => {
                    info!(run_id = %facts.run_id, "another delivery of this request holds an unstarted container after {TWIN_ATTEMPTS} tries: left to it");
                    self.table().remove(&facts.run_id);
                    return None;
                }
                Twin::Unstarted => {
                    let pause =
                        TWIN_BACKOFF * attempt + TWIN_BACKOFF.mul_f64(rand::random::<f64>() * 4.0);
                    debug!(run_id = %facts.run_id, attempt, ?pause, "another delivery of this request created a container too: backing off");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        None
    }

    /// Another container of this run id, anywhere in the pool, besides
    /// `ours`. Looked up only where one can exist: with more than one
    /// engine, or with tombstones (`run_retention`), whose `.answered` /
    /// `.deleted` names free `bus-run-<id>` on one engine.
    async fn twins(&self, facts: &RunFacts, ours: &ContainerRef) -> Twin {
        if self.inner.settings.run_retention.is_zero() && self.inner.pool.len() < 2 {
            return Twin::None;
        }
        // Fresh: a twin created a moment ago must be seen.
        let filter = ManagedFilter::run(facts.run_id.clone()).fresh();
        let listing = match self.inner.pool.list_managed(&filter).await {
            Ok(listing) => listing,
            Err(err) => {
                warn!(error = %err, "cannot look for other deliveries of this run; running it");
                return Twin::None;
            }
        };
        let others = listing
            .containers
            .into_iter()
            .filter(|c| !(c.container.engine == ours.engine && c.container.id == ours.id));
        let mut found = Twin::None;
        for other in others {
            debug!(other = %other.container.name, docker_host = %other.container.engine, mark = ?other.mark, state = ?other.state, "another container of this run id exists");
            let twin = if other.correlation.as_ref() != Some(&facts.correlation) {
                Twin::OtherRequest
            } else if other.mark == RunMark::Live && other.state == ContainerState::Created {
                Twin::Unstarted
            } else {
                Twin::Ran
            };
            found = found.max(twin);
        }
        found
    }

    /// A create refused with 409: the name `bus-run-<run_id>` exists on
    /// `engine`. When it carries our correlation id another delivery of
    /// this very request owns it (on another worker), and that one answers:
    /// drop this one silently, so no error races the winner's result.
    /// Otherwise the run id is taken by another request.
    async fn name_conflict(&self, facts: &RunFacts, engine: &EngineId, name: String) {
        let holder = self.name_holder(engine, &facts.run_id, &name).await;
        debug!(container = %name, holder = ?holder, "create refused: the name exists");
        if holder.as_ref() == Some(&facts.correlation) {
            info!(run_id = %facts.run_id, "duplicate delivery: another worker runs this request");
            self.table().remove(&facts.run_id);
            return;
        }
        let err = OperationError::Conflict(format!(
            "run_id {} is already used by another request",
            facts.run_id
        ));
        self.fail_run(facts, err).await;
    }

    /// The correlation id of the container holding `name` on `engine`. The
    /// engine reserves a name before the container shows in its lists, so
    /// a create that raced another delivery looks again for a short while.
    async fn name_holder(
        &self,
        engine: &EngineId,
        run_id: &RunId,
        name: &str,
    ) -> Option<CorrelationId> {
        // Fresh: the holder was created just before this worker's create.
        let filter = ManagedFilter::run(run_id.clone()).fresh();
        let deadline = tokio::time::Instant::now() + NAME_HOLDER_WAIT;
        loop {
            match self.inner.pool.list_on(engine, &filter).await {
                Ok(list) => {
                    // A claimed warm container's correlation comes from its
                    // claim record, which the engine's log may show a
                    // moment after the claim: look again until it does.
                    if let Some(c) = list.into_iter().find(|c| c.container.name == name) {
                        if c.correlation.is_some() {
                            return c.correlation;
                        }
                    }
                }
                Err(err) => warn!(error = %err, "cannot look up the conflicting container"),
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(NAME_HOLDER_POLL).await;
        }
    }
}

/// What another container of the same run id means for a fresh one,
/// weakest first (the strongest found decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Twin {
    /// None: run it.
    None,
    /// Another delivery of this request created a container and has not
    /// started it: back off and look again.
    Unstarted,
    /// Another delivery of this request runs it, or ran it (a tombstone):
    /// drop this one without an answer.
    Ran,
    /// Another request uses this run id: `conflict`.
    OtherRequest,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_run_ids_are_stable_valid_and_distinct() {
        let a = CorrelationId::parse("c-1").unwrap();
        let b = CorrelationId::parse("c-2").unwrap();
        assert_eq!(derived_run_id(&a), derived_run_id(&a));
        assert_ne!(derived_run_id(&a), derived_run_id(&b));
        let id = derived_run_id(&a);
        assert_eq!(id.as_str().len(), 4 + 24);
        assert!(id.as_str().starts_with("run_"));
        // sha256("c-1") = a6f7ef47ee8dc84af9056a3051ddc302f19581a96eb7e12f510fdf550326a399
        assert_eq!(id.as_str(), "run_a6f7ef47ee8dc84af9056a30");
    }
}
