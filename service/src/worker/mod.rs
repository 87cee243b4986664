//! The application service: what the worker does with each request.
//!
//! `Worker` is generic over the driven ports (`ContainerRuntime`,
//! `EventPublisher`) and is driven by the app loop, which feeds it every
//! [`Inbound`] request. It answers each request exactly once:
//!
//! * run requests are deduplicated by correlation id and `run_id` (in
//!   memory, and through the engine's unique container names), queued on a
//!   bounded semaphore, executed, answered, and only then removed;
//! * at start-up, [`Worker::recover`] re-attaches to the containers this
//!   runner left behind (the container is the durable record of a run);
//! * [`Worker::shutdown`] stops new work, cancels queued runs, lets running
//!   ones finish for the grace period, then abandons the rest to the next
//!   start-up.
//!
//! # Layout
//!
//! One file per operation of the contract, around this shared core:
//!
//! | operation | file |
//! |---|---|
//! | `run` (intake, admission, container creation) | `run.rs` |
//! | finishing a run: drive, answer, remove | `answer.rs` |
//! | live output: coalescing, pacing, publishing `run.output` | `live.rs` |
//! | start-up recovery | `recover.rs` |
//! | `status` | `status.rs` |
//! | `input` | `input.rs` |
//! | `delete` | `delete.rs` |
//! | `runner.status` / `runner.start` / `runner.delete` | `runner_status.rs`, `runner_start.rs`, `runner_delete.rs` |
//! | stop: `Lifecycle` and `shutdown` | `shutdown.rs` |
//! | the in-memory run table | `table.rs` |
//! | intake follows capacity: the "room for a run" signal | `intake.rs` |
//! | warm start: parked containers, claims, refill | `warm.rs` |

mod answer;
mod background;
mod delete;
mod input;
mod intake;
mod live;
mod recover;
mod retention;
mod run;
mod runner_delete;
mod runner_start;
mod runner_status;
mod shutdown;
mod status;
mod table;
mod warm;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bus_docker_domain::container::{EngineId, RunMark};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, InputChunk};
use bus_docker_domain::profile::Profiles;
use bus_docker_domain::request::{Inbound, Request};
use bus_docker_domain::response::{Reply, Response};
use bus_docker_domain::runner::StreamReport;
use bus_docker_domain::spec::Policy;
use bus_docker_domain::{EventPrefix, Operation, OperationError, OwnerId, PublishError, RunId};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn, Instrument};

use crate::metrics::{Metrics, Sample};
use crate::pool::EnginePool;
use run::RunTurn;
pub use shutdown::Lifecycle;
use table::RunTable;
pub use warm::{WarmSettings, DEFAULT_WARM_MAX_AGE, WARM_TICK};

/// Input chunks buffered per interactive run between `input.request`s and
/// the container's stdin: enough for a burst of small writes, small enough
/// that a stalled container pushes back on the sender.
const INPUT_QUEUE: usize = 16;

/// How long an `input.request` waits for room in a stalled run's stdin
/// queue before it is answered `conflict` (the container is not reading).
const INPUT_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Backoff between re-attach attempts when the engine goes away mid-run.
const REATTACH_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(500),
    max: Duration::from_secs(5),
};

/// Backoff between attempts to list containers for start-up recovery.
const RECOVERY_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(250),
    max: Duration::from_secs(5),
};

/// What the worker needs to know besides its ports.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    pub prefix: EventPrefix,
    /// `bus.runner` label and `runner_name` in responses; a restarted worker
    /// recovers the containers carrying its own runner name.
    pub runner_name: String,
    pub profiles: Profiles,
    pub policy: Policy,
    pub max_concurrent_runs: usize,
    pub max_queued_runs: usize,
    /// Finished runs remembered for redelivery.
    pub response_cache: usize,
    /// Bytes of output the redelivery cache may hold.
    pub response_cache_bytes: usize,
    /// Delete and timeout send SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
    /// How long finished runs stay listed in `status` and their containers
    /// stay as `.answered` tombstones (0: removed once answered).
    pub run_retention: Duration,
    /// Codex sessions unused this long are removed (docs/protocol.md §6); `None`
    /// when no profile has per-run homes (nothing keeps sessions).
    pub session_retention: Option<Duration>,
    /// Warm profiles (docs/protocol.md §10); none by default.
    pub warm: WarmSettings,
}

/// The worker. Cheap to clone.
pub struct Worker<R, P> {
    inner: Arc<Inner<R, P>>,
}

impl<R, P> Clone for Worker<R, P> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<R, P> {
    /// The engines that run containers (the driven port, once per engine).
    pool: EnginePool<R>,
    /// The driven port that publishes responses.
    publisher: P,
    settings: WorkerSettings,
    /// Stop signals; only `shutdown.rs` cancels them.
    lifecycle: Lifecycle,
    /// One permit per concurrently running container (`max_concurrent_runs`);
    /// recovered runs hold one too.
    slots: Arc<Semaphore>,
    /// Live runs and the cache of answered ones; held only for short,
    /// non-async sections.
    table: Mutex<RunTable>,
    /// Every request handler and run driver, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Cancelled when the Events API refuses the worker's token on publish:
    /// the app loop stops intake (nothing taken now could be answered).
    refused: CancellationToken,
    /// The newest run request's turn ([`run::RunTurn`]): the next one waits
    /// for it, so runs are admitted in arrival order.
    run_order: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// What the worker counts (exposed only with `--metrics-addr`).
    metrics: Metrics,
    /// The request streams' states for `runner.status`, when the event
    /// source has streams ([`Worker::watch_streams`]).
    streams: std::sync::OnceLock<StreamsProbe>,
    /// Input taken and not yet written, per run and in all (`input.rs`).
    held_input: input::HeldInput,
    /// Parked containers of warm profiles (`warm.rs`).
    warm: warm::WarmPool,
}

/// Reads the request streams' states (the event adapter's to provide).
pub type StreamsProbe = Arc<dyn Fn() -> Vec<StreamReport> + Send + Sync>;

/// Why an operation other than `run` failed: the error code, and whatever
/// partial reply the response still carries (docs/protocol.md §3).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub error: OperationError,
    pub partial: Option<Reply>,
}

impl Refusal {
    /// A refusal with a partial result (e.g. `runner.start` reports the
    /// runner's state even when a profile image is unavailable).
    fn with_partial(error: OperationError, partial: Reply) -> Self {
        Self {
            error,
            partial: Some(partial),
        }
    }
}

impl<E: Into<OperationError>> From<E> for Refusal {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            partial: None,
        }
    }
}

/// The outcome of a non-run operation.
pub(crate) type Answer = Result<Reply, Refusal>;

/// Capped exponential backoff.
#[derive(Clone, Copy, Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    fn next(self, current: Duration) -> Duration {
        (current * 2).min(self.max)
    }
}

/// Sleep `delay`, or return `false` at once when `stop` fires first.
async fn sleep_or_stop(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = stop.cancelled() => false,
    }
}

fn input_channel() -> (mpsc::Sender<InputChunk>, mpsc::Receiver<InputChunk>) {
    mpsc::channel(INPUT_QUEUE)
}

/// Whether a run of `run_owner` is visible to a caller acting as `owner`
/// (no owner: an operator request that sees everything).
fn visible(owner: Option<&OwnerId>, run_owner: Option<&OwnerId>) -> bool {
    owner.is_none_or(|o| run_owner == Some(o))
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// A worker on `engines`: an [`EnginePool`], or one runtime.
    pub fn new(
        engines: impl Into<EnginePool<R>>,
        publisher: P,
        settings: WorkerSettings,
        lifecycle: Lifecycle,
    ) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent_runs.max(1)));
        let intake_limit = settings
            .max_concurrent_runs
            .max(1)
            .saturating_add(settings.max_queued_runs);
        let table = Mutex::new(
            RunTable::new(settings.response_cache, settings.response_cache_bytes)
                .with_intake_limit(intake_limit),
        );
        let warm = warm::WarmPool::new(&settings);
        Self {
            inner: Arc::new(Inner {
                warm,
                pool: engines.into(),
                publisher,
                settings,
                lifecycle,
                slots,
                table,
                tasks: TaskTracker::new(),
                refused: CancellationToken::new(),
                run_order: Mutex::new(None),
                metrics: Metrics::new(),
                streams: std::sync::OnceLock::new(),
                held_input: input::HeldInput::default(),
            }),
        }
    }

    /// The engines this worker runs containers on.
    pub fn pool(&self) -> &EnginePool<R> {
        &self.inner.pool
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
    }

    /// The worker's metrics recorder.
    /// Input held for runs (bytes, requests): taken and not yet written
    /// (bounded, `input.rs`).
    pub fn held_input(&self) -> (usize, usize) {
        let held = self.inner.held_input.total();
        (held.bytes, held.chunks)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Runs in flight now, for metrics scraped elsewhere (stream
    /// reconnects are the event adapter's to fill in).
    pub fn sample(&self) -> Sample {
        let table = self.table();
        Sample {
            active: table.active(),
            queued: table.queued(),
            intake_open: table.intake.is_open(),
            stream_reconnects: 0,
        }
    }

    /// "Run intake open" (docs/protocol.md §5): `true` while fewer runs are
    /// admitted than `max_concurrent_runs` + `max_queued_runs`. An
    /// observable only (`runner.status`, metrics): run requests are read
    /// whatever it says, and one that finds no room is answered `capacity`.
    pub fn intake(&self) -> tokio::sync::watch::Receiver<bool> {
        self.table().intake.watch()
    }

    /// Report the request streams `probe` describes in `runner.status`
    /// (docs/protocol.md §9). Set once, by the composition root; later calls are
    /// ignored.
    pub fn watch_streams(&self, probe: StreamsProbe) {
        let _ = self.inner.streams.set(probe);
    }

    fn table(&self) -> MutexGuard<'_, RunTable> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn reply_event(&self, op: Operation) -> String {
        self.inner.settings.prefix.response_name(op)
    }

    /// Accept one inbound request: handled on a tracked task so a slow
    /// engine call never blocks the intake loop. The task runs in a span
    /// carrying the operation and correlation id, so adapter logs carry
    /// them too.
    pub fn dispatch(&self, inbound: Inbound) {
        let received = Instant::now();
        let span = tracing::info_span!("request", op = %inbound.operation, correlation = %inbound.correlation);
        // Taken here, in arrival order: the tasks below may run in any.
        let turn = (inbound.operation == Operation::Run).then(|| self.next_run_turn());
        let this = self.clone();
        self.inner.tasks.spawn(
            async move { this.handle_in_turn(inbound, received, turn).await }.instrument(span),
        );
    }

    /// Handle one request to its single response (a run request outside
    /// the arrival order of [`Worker::dispatch`]).
    pub async fn handle(&self, inbound: Inbound, received: Instant) {
        self.handle_in_turn(inbound, received, None).await;
    }

    /// The one `match` over the operations, each arm naming the file that
    /// implements it.
    async fn handle_in_turn(&self, inbound: Inbound, received: Instant, turn: Option<RunTurn>) {
        let Inbound {
            operation,
            correlation,
            stamped_owner,
            request,
        } = inbound;
        if !self.table().seen.first_time(operation, &correlation) {
            info!("redelivered request: already handled here, dropped (no second response)");
            return;
        }
        let event = self.reply_event(operation);
        let request = match request {
            Ok(r) => r,
            Err(field) => {
                let err = OperationError::InvalidSpec(field);
                info!(error = %err, "rejected request");
                self.publish(&Response::failure(operation, event, correlation, &err))
                    .await;
                return;
            }
        };
        let answer = match request {
            // run.rs: answered by the run itself (answer.rs), later.
            Request::Run(req) => {
                return self
                    .handle_run(*req, correlation, stamped_owner, received, turn)
                    .await
            }
            Request::Status(q) => self.status(q, stamped_owner).await, // status.rs
            Request::Input(req) => self.input(req, stamped_owner).await, // input.rs
            Request::Delete(req) => self.delete(req, stamped_owner).await, // delete.rs
            Request::RunnerStatus => Ok(Reply::RunnerStatus(Box::new(self.runner_status().await))), // runner_status.rs
            Request::RunnerStart => self.runner_start().await, // runner_start.rs
            Request::RunnerDelete => self.runner_delete().await, // runner_delete.rs
        };
        let response = match answer {
            Ok(reply) => Response::success(operation, event, correlation, reply),
            Err(Refusal { error, partial }) => {
                info!(%error, "operation failed");
                let mut r = Response::failure(operation, event, correlation, &error);
                r.reply = partial;
                r
            }
        };
        self.publish(&response).await;
    }

    /// Publish a response; every response passes here, so this is where
    /// requests and runs are counted.
    async fn publish(&self, response: &Response) -> bool {
        let published = self.inner.publisher.publish(response).await;
        let metrics = &self.inner.metrics;
        metrics.answered(response);
        if published.is_err() {
            metrics.publish_failed();
        }
        match published {
            Ok(()) => true,
            Err(PublishError::Abandoned(m)) => {
                warn!(correlation = %response.correlation, event = %response.event, "response not published before shutdown: {m}");
                false
            }
            Err(err @ PublishError::Rejected(_)) => {
                error!(correlation = %response.correlation, event = %response.event, error = %err, "response rejected by the events api");
                false
            }
            Err(err @ PublishError::Unauthorized(_)) => {
                error!(correlation = %response.correlation, event = %response.event, error = %err, "the events api refuses this worker's token: no more requests are taken (check the token and its scopes)");
                self.inner.refused.cancel();
                false
            }
        }
    }

    /// Resolves when the Events API refused the worker's token on publish;
    /// the app loop then stops taking requests it could not answer.
    pub async fn refused(&self) {
        self.inner.refused.cancelled().await;
    }

    /// The container of `run_id` on whichever engine holds it, when
    /// `owner` may see it; used by input and delete for runs another worker
    /// drives. One list call per engine, filtered by run id, asked of the
    /// engines themselves (`fresh`): input and delete act on the run's
    /// current state, and the event-fed view may not have caught up with
    /// another worker's create or start. A live container wins over a
    /// deleted one, and that over an answered tombstone. A run missing
    /// while an engine cannot be asked is `runtime_unavailable`, not
    /// `not_found`.
    async fn find_in_engine(
        &self,
        run_id: &RunId,
        owner: Option<&OwnerId>,
    ) -> Result<ManagedContainer, OperationError> {
        let filter = ManagedFilter::run(run_id.clone()).fresh();
        let listing = self.inner.pool.list_managed(&filter).await?;
        let missing = listing.missing(run_id.as_str());
        listing
            .containers
            .into_iter()
            .filter(|c| c.run_id == *run_id && visible(owner, c.owner.as_ref()))
            .min_by_key(|c| match c.mark {
                RunMark::Live => 0,
                RunMark::Deleted => 1,
                RunMark::Answered => 2,
            })
            .ok_or(missing)
    }

    /// What a response shows as `runtime.docker_host` for a run on
    /// `engine`: its URL without credentials (none for `static`).
    fn docker_host(&self, engine: &EngineId) -> Option<String> {
        (self.inner.pool.provider() == "docker" && !engine.is_unnamed()).then(|| engine.to_string())
    }
}
