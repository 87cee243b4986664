//! The in-process run table: live runs by id and correlation, and a
//! bounded cache of finished runs' responses for redelivery.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::container::ManagedContainer;
use bus_docker_domain::ports::InputChunk;
use bus_docker_domain::response::Response;
use bus_docker_domain::run::{RunState, RunSummary};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{CorrelationId, Operation, OperationError, OwnerId, RunId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::intake::Intake;

/// A run this process is responsible for right now.
pub(crate) struct LiveRun {
    /// Who may see, feed and delete it.
    pub owner: Option<OwnerId>,
    /// The request that started it (redeliveries carry the same id).
    pub correlation: CorrelationId,
    pub image: String,
    pub profile: Option<String>,
    pub state: RunState,
    /// Set once the engine created the container.
    pub container: Option<ContainerRef>,
    /// When the container started (the engine's time for adopted runs).
    pub started_at: Option<SystemTime>,
    /// Cancelled by `delete` and `runner.delete`: the driver stops the run.
    pub cancel: CancellationToken,
    /// Feeds stdin of an interactive run until `eof`.
    pub input: Option<mpsc::Sender<InputChunk>>,
    pub interactive: bool,
}

impl LiveRun {
    /// A run admitted from a request, waiting for a slot.
    pub fn queued(
        spec: &RunSpec,
        cancel: CancellationToken,
        input: Option<mpsc::Sender<InputChunk>>,
    ) -> Self {
        Self {
            owner: spec.owner.clone(),
            correlation: spec.correlation.clone(),
            image: spec.image.to_string(),
            profile: spec.profile.as_ref().map(ToString::to_string),
            state: RunState::Queued,
            container: None,
            started_at: None,
            cancel,
            input,
            interactive: spec.interactive,
        }
    }

    /// A run found in the engine at start-up (recovery).
    pub fn adopted(
        managed: &ManagedContainer,
        correlation: CorrelationId,
        cancel: CancellationToken,
        input: Option<mpsc::Sender<InputChunk>>,
    ) -> Self {
        Self {
            owner: managed.owner.clone(),
            correlation,
            image: managed.image.clone(),
            profile: managed.profile.as_ref().map(ToString::to_string),
            state: RunState::from(&managed.state),
            container: Some(managed.container.clone()),
            started_at: managed.started_at,
            cancel,
            input: if managed.interactive { input } else { None },
            interactive: managed.interactive,
        }
    }

    pub fn summary(&self, run_id: &RunId) -> RunSummary {
        RunSummary {
            run_id: run_id.clone(),
            state: self.state,
            owner: self.owner.clone(),
            image: Some(self.image.clone()),
            profile: self.profile.clone(),
            container_id: self.container.as_ref().map(|c| c.id.clone()),
            started_at: self.started_at,
            finished: None,
        }
    }

    /// Whether `input.request`s can be written now: an interactive run
    /// whose container runs and whose stdin is still open. A queued or
    /// creating run has no stdin yet (`conflict`).
    pub fn accepts_input(&self) -> bool {
        self.interactive && self.state == RunState::Running && self.input.is_some()
    }
}

/// What admission needs to know about capacity, read from the worker.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Capacity {
    /// A run slot is free right now.
    pub slot_free: bool,
    pub max_queued: usize,
    /// The worker is shutting down.
    pub stopping: bool,
}

/// What admission decided for a request that passed it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Registered: the caller executes it.
    Admitted,
    /// This very request (same correlation id) is already live or was
    /// answered: nothing to do, and no second response.
    Duplicate,
}

/// Responses of finished runs, so a redelivered request gets the same
/// answer again instead of a second container. Bounded by entries and by
/// bytes (a run response carries up to 2 × `max_output_bytes` of output):
/// oldest first out.
pub(crate) struct ResponseCache {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<CorrelationId>,
    by_correlation: HashMap<CorrelationId, (RunId, Response, usize, Instant)>,
    by_run: HashMap<RunId, CorrelationId>,
}

/// Fixed cost of a cached entry beyond its text: the maps, ids and
/// timestamps. An estimate; it keeps many tiny entries from looking free.
const CACHE_ENTRY_OVERHEAD: usize = 1024;

/// What a cached response costs: every text it holds (output, echoed
/// arguments, image, error message) plus a fixed overhead.
fn weight(response: &Response) -> usize {
    let run = match &response.reply {
        Some(bus_docker_domain::response::Reply::Run(r)) => {
            r.stdout.text.len()
                + r.stderr.text.len()
                + r.args.iter().map(String::len).sum::<usize>()
                + r.image.as_str().len()
                + r.image_id.as_ref().map_or(0, String::len)
        }
        _ => 0,
    };
    let error = response.error.as_ref().map_or(0, |e| e.message.len());
    run + error + response.event.len() + CACHE_ENTRY_OVERHEAD
}

impl ResponseCache {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            by_correlation: HashMap::new(),
            by_run: HashMap::new(),
        }
    }

    pub fn insert(&mut self, run_id: RunId, response: Response) {
        let correlation = response.correlation.clone();
        if self.by_correlation.contains_key(&correlation) {
            return;
        }
        let cost = weight(&response);
        while !self.order.is_empty()
            && (self.order.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            if let Some(old) = self.order.pop_front() {
                if let Some((old_run, _, old_cost, _)) = self.by_correlation.remove(&old) {
                    self.by_run.remove(&old_run);
                    self.bytes -= old_cost;
                }
            }
        }
        self.bytes += cost;
        self.order.push_back(correlation.clone());
        self.by_run.insert(run_id.clone(), correlation.clone());
        self.by_correlation
            .insert(correlation, (run_id, response, cost, Instant::now()));
    }

    pub fn by_correlation(&self, correlation: &CorrelationId) -> Option<&Response> {
        self.by_correlation.get(correlation).map(|(_, r, _, _)| r)
    }

    /// Bytes held (output text plus overhead).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Answered responses newer than `age`, with their run ids.
    pub fn answered_within(&self, age: Duration) -> impl Iterator<Item = (&RunId, &Response)> {
        self.by_correlation
            .values()
            .filter(move |(_, _, _, at)| at.elapsed() <= age)
            .map(|(id, r, _, _)| (id, r))
    }

    /// The correlation id that already used this run id.
    pub fn correlation_of(&self, run_id: &RunId) -> Option<&CorrelationId> {
        self.by_run.get(run_id)
    }
}

/// Correlation ids of recently handled requests of every operation (run
/// requests included: the first of the three redelivery moments in
/// `run.rs`), so a redelivered request gets no second response (and a
/// second `input.request` writes nothing). Bounded, oldest first out: for
/// run requests the run table's own records back it up.
pub(crate) struct SeenRequests {
    capacity: usize,
    order: VecDeque<(Operation, CorrelationId)>,
    set: HashSet<(Operation, CorrelationId)>,
}

impl SeenRequests {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Record a request; `false` when it was seen already.
    pub fn first_time(&mut self, op: Operation, correlation: &CorrelationId) -> bool {
        let key = (op, correlation.clone());
        if self.set.contains(&key) {
            return false;
        }
        if self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(key.clone());
        self.set.insert(key);
        true
    }
}

/// Whether this worker holds a run, and whether a caller may act on it.
pub(crate) enum Local<'a> {
    /// Not held here: another worker's run, or none (ask the engines).
    Elsewhere,
    /// Held here, but another owner's: answered as if absent (`not_found`).
    Hidden,
    Here(&'a LiveRun),
}

/// What the run table knows of a run request's correlation id: the second
/// redelivery moment of `run.rs`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Redelivered {
    /// Answered already (its response is cached).
    Answered,
    /// Admitted and not answered yet.
    InProgress,
}

/// Everything the worker knows in memory. The engine stays the durable
/// record; this table only makes decisions fast and consistent in-process.
pub(crate) struct RunTable {
    pub live: HashMap<RunId, LiveRun>,
    pub by_correlation: HashMap<CorrelationId, RunId>,
    pub done: ResponseCache,
    pub seen: SeenRequests,
    /// `.answered` containers this worker keeps for `run_retention`, with
    /// the instant each expires.
    pub tombstones: Vec<(ContainerRef, Instant)>,
    /// Open while `live` has room; follows every insert and remove.
    pub intake: Intake,
}

impl RunTable {
    /// The run `run_id` as `caller` may see it (no caller: every run).
    /// The one lookup of input, delete and status.
    pub fn lookup(&self, run_id: &RunId, caller: Option<&OwnerId>) -> Local<'_> {
        match self.live.get(run_id) {
            None => Local::Elsewhere,
            Some(run) if !super::visible(caller, run.owner.as_ref()) => Local::Hidden,
            Some(run) => Local::Here(run),
        }
    }

    /// Whether a run request with `correlation` was answered or admitted
    /// here already.
    pub fn redelivered(&self, correlation: &CorrelationId) -> Option<Redelivered> {
        if self.done.by_correlation(correlation).is_some() {
            return Some(Redelivered::Answered);
        }
        self.by_correlation
            .contains_key(correlation)
            .then_some(Redelivered::InProgress)
    }

    pub fn new(cache: usize, cache_bytes: usize) -> Self {
        Self {
            live: HashMap::new(),
            by_correlation: HashMap::new(),
            done: ResponseCache::new(cache, cache_bytes),
            seen: SeenRequests::new(cache),
            tombstones: Vec::new(),
            intake: Intake::new(usize::MAX),
        }
    }

    /// Close run intake at `limit` live runs (see [`Intake`]).
    pub fn with_intake_limit(mut self, limit: usize) -> Self {
        self.intake = Intake::new(limit);
        self.intake.update(self.live.len());
        self
    }

    /// Admit a run: refuse a `run_id` another request uses (`conflict`),
    /// a full queue (`capacity`) and a stopping worker (`canceled`); a
    /// second delivery of a request already live or answered is a
    /// `Duplicate`. Pure: the caller reads `capacity` from the worker.
    ///
    /// # Errors
    /// `Conflict`, `Capacity` or `Canceled` as above.
    pub fn admit(
        &mut self,
        run_id: &RunId,
        run: LiveRun,
        capacity: Capacity,
    ) -> Result<Admission, OperationError> {
        if self.by_correlation.contains_key(&run.correlation)
            || self.done.by_correlation(&run.correlation).is_some()
        {
            return Ok(Admission::Duplicate);
        }
        let used_by = self
            .live
            .get(run_id)
            .map(|r| r.correlation.clone())
            .or_else(|| self.done.correlation_of(run_id).cloned());
        if let Some(other) = used_by {
            return Err(OperationError::Conflict(format!(
                "run_id {run_id} is already used by request {other}"
            )));
        }
        if !capacity.slot_free && self.queued() >= capacity.max_queued {
            return Err(OperationError::Capacity(format!(
                "{} runs active and {} queued (max_queued_runs {})",
                self.active(),
                self.queued(),
                capacity.max_queued
            )));
        }
        if capacity.stopping {
            return Err(OperationError::Canceled(
                "the worker is shutting down".into(),
            ));
        }
        self.insert(run_id.clone(), run);
        Ok(Admission::Admitted)
    }

    /// Move a live run to `state`, recording its container and, on the
    /// first move to `Running`, its start time.
    pub fn set_state(&mut self, run_id: &RunId, state: RunState, container: Option<&ContainerRef>) {
        if let Some(run) = self.live.get_mut(run_id) {
            run.state = state;
            if let Some(c) = container {
                run.container = Some(c.clone());
            }
            if state == RunState::Running && run.started_at.is_none() {
                run.started_at = Some(SystemTime::now());
            }
        }
    }

    /// Take the tombstones whose retention is over.
    pub fn expired_tombstones(&mut self, now: Instant) -> Vec<ContainerRef> {
        let (expired, kept) = std::mem::take(&mut self.tombstones)
            .into_iter()
            .partition(|(_, until)| *until <= now);
        self.tombstones = kept;
        expired.into_iter().map(|(c, _)| c).collect()
    }

    pub fn insert(&mut self, run_id: RunId, run: LiveRun) {
        self.by_correlation
            .insert(run.correlation.clone(), run_id.clone());
        self.live.insert(run_id, run);
        self.intake.update(self.live.len());
    }

    pub fn remove(&mut self, run_id: &RunId) -> Option<LiveRun> {
        let run = self.live.remove(run_id)?;
        if self.by_correlation.get(&run.correlation) == Some(run_id) {
            self.by_correlation.remove(&run.correlation);
        }
        self.intake.update(self.live.len());
        Some(run)
    }

    pub fn queued(&self) -> usize {
        self.live
            .values()
            .filter(|r| r.state == RunState::Queued)
            .count()
    }

    pub fn active(&self) -> usize {
        self.live
            .values()
            .filter(|r| matches!(r.state, RunState::Creating | RunState::Running))
            .count()
    }
}

#[cfg(test)]
mod tests;
