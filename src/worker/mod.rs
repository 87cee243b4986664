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

mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus_docker_domain::mount::RealHostPaths;
use bus_docker_domain::ports::{
    ContainerRuntime, ContainerState, EventPublisher, InputChunk, ManagedContainer, ManagedFilter,
    RunIo, Stdin,
};
use bus_docker_domain::profile::Profiles;
use bus_docker_domain::request::{
    DeleteRequest, Inbound, InputRequest, Request, RunRequest, StatusQuery,
};
use bus_docker_domain::response::{Reply, Response};
use bus_docker_domain::run::{
    ContainerRef, Ending, Exit, ProfileImage, RunReport, RunState, RunStatus, RunSummary,
    RunnerReport, RunnerState, RuntimeDetails,
};
use bus_docker_domain::spec::{resolve, Origin, Policy, RunSpec};
use bus_docker_domain::{
    CorrelationId, EventPrefix, ImageRef, Operation, OperationError, OwnerId, ProfileName,
    PublishError, RunId, RuntimeError,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use table::{LiveRun, RunTable};

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
}

/// The two stop signals of a worker: `stopping` ends intake and cancels
/// queued runs; `abandon` (after the grace period) drops in-flight work and
/// leaves containers for the next start-up.
#[derive(Clone, Debug, Default)]
pub struct Lifecycle {
    pub stopping: CancellationToken,
    pub abandon: CancellationToken,
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
    runtime: R,
    publisher: P,
    settings: WorkerSettings,
    lifecycle: Lifecycle,
    slots: Arc<Semaphore>,
    table: Mutex<RunTable>,
    tasks: TaskTracker,
    ids: AtomicU64,
    /// The engine version for run reports, fetched once (an engine upgrade
    /// restarts the daemon, and `runner.status` refreshes it).
    engine_version: Mutex<Option<String>>,
}

/// Facts about a run needed to write its response, from a spec or from a
/// container's labels.
struct RunFacts {
    run_id: RunId,
    owner: Option<OwnerId>,
    correlation: CorrelationId,
    reply_event: String,
    profile: Option<ProfileName>,
    image: ImageRef,
    args: Vec<String>,
}

impl RunFacts {
    fn of_spec(spec: &RunSpec) -> Self {
        Self {
            run_id: spec.run_id.clone(),
            owner: spec.owner.clone(),
            correlation: spec.correlation.clone(),
            reply_event: spec.reply_event.clone(),
            profile: spec.profile.clone(),
            image: spec.image.clone(),
            args: spec.command.clone(),
        }
    }
}

fn input_channel() -> (mpsc::Sender<InputChunk>, mpsc::Receiver<InputChunk>) {
    mpsc::channel(16)
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub fn new(runtime: R, publisher: P, settings: WorkerSettings, lifecycle: Lifecycle) -> Self {
        let slots = Arc::new(Semaphore::new(settings.max_concurrent_runs.max(1)));
        let table = Mutex::new(RunTable::new(
            settings.response_cache,
            settings.response_cache_bytes,
        ));
        Self {
            inner: Arc::new(Inner {
                runtime,
                publisher,
                settings,
                lifecycle,
                slots,
                table,
                tasks: TaskTracker::new(),
                ids: AtomicU64::new(0),
                engine_version: Mutex::new(None),
            }),
        }
    }

    pub fn runtime(&self) -> &R {
        &self.inner.runtime
    }

    pub fn settings(&self) -> &WorkerSettings {
        &self.inner.settings
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
    /// engine call never blocks the intake loop.
    pub fn dispatch(&self, inbound: Inbound) {
        let received = Instant::now();
        let this = self.clone();
        self.inner
            .tasks
            .spawn(async move { this.handle(inbound, received).await });
    }

    /// Handle one request to its single response.
    pub async fn handle(&self, inbound: Inbound, received: Instant) {
        let Inbound {
            operation,
            correlation,
            stamped_owner,
            request,
        } = inbound;
        let event = self.reply_event(operation);
        let request = match request {
            Ok(r) => r,
            Err(field) => {
                let err = OperationError::InvalidSpec(field);
                info!(%correlation, op = %operation, error = %err, "rejected request");
                self.publish(&Response::failure(operation, event, correlation, &err))
                    .await;
                return;
            }
        };
        let result = match request {
            Request::Run(req) => {
                return self
                    .handle_run(*req, correlation, stamped_owner, received)
                    .await
            }
            Request::Status(q) => self.status(q, stamped_owner).await.map(Reply::Status),
            Request::Input(req) => self.input(req, stamped_owner).await,
            Request::Delete(req) => self.delete(req, stamped_owner).await,
            Request::RunnerStatus => Ok(Reply::RunnerStatus(Box::new(self.runner_status().await))),
            Request::RunnerStart => self.runner_start().await,
            Request::RunnerDelete => self.runner_delete().await,
        };
        let response = match result {
            Ok(reply) => Response::success(operation, event, correlation, reply),
            Err((err, partial)) => {
                info!(%correlation, op = %operation, error = %err, "operation failed");
                let mut r = Response::failure(operation, event, correlation, &err);
                r.reply = partial;
                r
            }
        };
        self.publish(&response).await;
    }

    async fn publish(&self, response: &Response) -> bool {
        match self.inner.publisher.publish(response).await {
            Ok(()) => true,
            Err(PublishError::Abandoned(m)) => {
                warn!(correlation = %response.correlation, event = %response.event, "response not published before shutdown: {m}");
                false
            }
            Err(err @ PublishError::Rejected(_)) => {
                error!(correlation = %response.correlation, event = %response.event, error = %err, "response rejected by the events api");
                false
            }
        }
    }

    fn next_run_id(&self) -> RunId {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let n = u128::from(self.inner.ids.fetch_add(1, Ordering::Relaxed) & 0xf_ffff);
        let pid = u128::from(std::process::id() & 0xf_ffff);
        RunId::generated((nanos << 40) | (pid << 20) | n)
    }

    // ---- run -------------------------------------------------------------

    async fn handle_run(
        &self,
        req: RunRequest,
        correlation: CorrelationId,
        stamped_owner: Option<OwnerId>,
        received: Instant,
    ) {
        let event = self.reply_event(Operation::Run);
        // Redelivery of a request we answered already or are working on.
        let (previous, in_progress) = {
            let table = self.table();
            (
                table.done.by_correlation(&correlation).cloned(),
                table.by_correlation.contains_key(&correlation),
            )
        };
        if let Some(previous) = previous {
            info!(%correlation, "redelivered run request: publishing the recorded response again");
            self.publish(&previous).await;
            return;
        }
        if in_progress {
            info!(%correlation, "redelivered run request: already in progress, not starting another container");
            return;
        }
        let origin = Origin {
            correlation: correlation.clone(),
            stamped_owner,
            reply_event: event.clone(),
        };
        let s = &self.inner.settings;
        let spec = match resolve(
            &req,
            &origin,
            &s.profiles,
            &s.policy,
            &RealHostPaths,
            self.next_run_id(),
        ) {
            Ok(spec) => spec,
            Err(err) => {
                info!(%correlation, error = %err, "run request refused");
                self.publish(&Response::failure(Operation::Run, event, correlation, &err))
                    .await;
                return;
            }
        };
        let cancel = CancellationToken::new();
        let input = spec.interactive.then(input_channel);
        let registered = {
            let mut table = self.table();
            let used_by = table
                .live
                .get(&spec.run_id)
                .map(|r| r.correlation.clone())
                .or_else(|| table.done.correlation_of(&spec.run_id).cloned());
            if let Some(other) = used_by {
                Err(OperationError::Conflict(format!(
                    "run_id {} is already used by request {other}",
                    spec.run_id
                )))
            } else if table.by_correlation.contains_key(&correlation) {
                // A concurrent delivery of the same request registered first.
                return;
            } else if self.inner.slots.available_permits() == 0
                && table.queued() >= s.max_queued_runs
            {
                Err(OperationError::Capacity(format!(
                    "{} runs active and {} queued (max_queued_runs {})",
                    table.active(),
                    table.queued(),
                    s.max_queued_runs
                )))
            } else if self.inner.lifecycle.stopping.is_cancelled() {
                Err(OperationError::Canceled(
                    "the worker is shutting down".into(),
                ))
            } else {
                table.insert(
                    spec.run_id.clone(),
                    LiveRun {
                        owner: spec.owner.clone(),
                        correlation: correlation.clone(),
                        image: spec.image.to_string(),
                        profile: spec.profile.as_ref().map(ToString::to_string),
                        state: RunState::Queued,
                        container: None,
                        started_at: None,
                        cancel: cancel.clone(),
                        input: input.as_ref().map(|(tx, _)| tx.clone()),
                        interactive: spec.interactive,
                    },
                );
                Ok(())
            }
        };
        if let Err(err) = registered {
            info!(%correlation, run_id = %spec.run_id, error = %err, "run request refused");
            self.publish(&Response::failure(Operation::Run, event, correlation, &err))
                .await;
            return;
        }
        let rx = input.map(|(_, rx)| rx);
        self.execute(spec, cancel, rx, received).await;
    }

    fn set_state(&self, run_id: &RunId, state: RunState, container: Option<&ContainerRef>) {
        if let Some(run) = self.table().live.get_mut(run_id) {
            run.state = state;
            if let Some(c) = container {
                run.container = Some(c.clone());
            }
            if state == RunState::Running && run.started_at.is_none() {
                run.started_at = Some(SystemTime::now());
            }
        }
    }

    async fn execute(
        &self,
        spec: RunSpec,
        cancel: CancellationToken,
        input: Option<mpsc::Receiver<InputChunk>>,
        received: Instant,
    ) {
        let facts = RunFacts::of_spec(&spec);
        let lifecycle = &self.inner.lifecycle;
        let _permit = tokio::select! {
            permit = Arc::clone(&self.inner.slots).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return self.fail_run(&facts, OperationError::Unexpected("run slots closed".into())).await,
            },
            () = cancel.cancelled() => {
                return self.fail_run(&facts, OperationError::Canceled("deleted while queued".into())).await;
            }
            () = lifecycle.stopping.cancelled() => {
                return self.fail_run(&facts, OperationError::Canceled("the worker shut down before the run started".into())).await;
            }
        };
        self.set_state(&spec.run_id, RunState::Creating, None);
        let image_id = match self
            .inner
            .runtime
            .ensure_image(&spec.image, spec.pull_policy)
            .await
        {
            Ok(id) => Some(id),
            Err(err) => return self.fail_run(&facts, err.into()).await,
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
        debug!(target: "bus_integration_docker::dispatch", run_id = %spec.run_id, dispatch_us = u64::try_from(dispatch.as_micros()).unwrap_or(u64::MAX), "creating container");
        let container = match self
            .inner
            .runtime
            .create(&spec, &self.inner.settings.runner_name)
            .await
        {
            Ok(c) => c,
            Err(RuntimeError::NameConflict(name)) => return self.name_conflict(&facts, name).await,
            Err(err) => return self.fail_run(&facts, err.into()).await,
        };
        self.set_state(&spec.run_id, RunState::Running, Some(&container));
        let stdin = match (spec.interactive, input) {
            (true, Some(rx)) => Stdin::Interactive(
                spec.stdin.as_ref().map(|s| s.clone().into_bytes()),
                Box::pin(ReceiverStream::new(rx)),
            ),
            _ => spec
                .stdin
                .as_ref()
                .map_or(Stdin::Closed, |s| Stdin::Text(s.clone().into_bytes())),
        };
        self.drive_and_answer(
            facts,
            container,
            stdin,
            spec.timeout,
            spec.max_output_bytes,
            cancel,
            image_id,
        )
        .await;
    }

    /// A create refused with 409: the name `bus-run-<run_id>` exists. When
    /// it carries our correlation id another delivery of this very request
    /// owns it, and that one answers; otherwise the run id is taken.
    async fn name_conflict(&self, facts: &RunFacts, name: String) {
        let owner = match self.inner.runtime.list_managed(&ManagedFilter::all()).await {
            Ok(list) => list
                .into_iter()
                .find(|c| c.container.name == name)
                .and_then(|c| c.correlation),
            Err(err) => {
                warn!(error = %err, "cannot inspect the conflicting container");
                None
            }
        };
        if owner.as_ref() == Some(&facts.correlation) {
            info!(run_id = %facts.run_id, correlation = %facts.correlation, "duplicate delivery: another worker runs this request");
            self.table().remove(&facts.run_id);
            return;
        }
        let err = OperationError::Conflict(format!(
            "run_id {} is already used by another request",
            facts.run_id
        ));
        self.fail_run(facts, err).await;
    }

    /// Answer a run that never got a container.
    async fn fail_run(&self, facts: &RunFacts, err: OperationError) {
        info!(run_id = %facts.run_id, correlation = %facts.correlation, error = %err, "run failed before start");
        let status = match err {
            OperationError::Canceled(_) => RunStatus::Canceled,
            _ => RunStatus::Error,
        };
        let report = self.report(
            facts,
            status,
            None,
            None,
            RuntimeDetails {
                provider: self.inner.runtime.provider().into(),
                ..RuntimeDetails::default()
            },
        );
        let mut response = Response::failure(
            Operation::Run,
            facts.reply_event.clone(),
            facts.correlation.clone(),
            &err,
        );
        response.reply = Some(Reply::Run(Box::new(report)));
        self.publish(&response).await;
        let mut table = self.table();
        table.remove(&facts.run_id);
        table.done.insert(facts.run_id.clone(), response);
    }

    fn report(
        &self,
        facts: &RunFacts,
        status: RunStatus,
        exit: Option<Exit>,
        image_id: Option<String>,
        runtime: RuntimeDetails,
    ) -> RunReport {
        let duration = exit.as_ref().and_then(Exit::duration);
        let exit = exit.unwrap_or(Exit {
            ending: Ending::Canceled,
            exit_code: None,
            stdout: Default::default(),
            stderr: Default::default(),
            started_at: None,
            finished_at: None,
            oom_killed: false,
        });
        RunReport {
            run_id: facts.run_id.clone(),
            owner: facts.owner.clone(),
            runner_name: self.inner.settings.runner_name.clone(),
            profile: facts.profile.clone(),
            image: facts.image.clone(),
            image_id,
            args: facts.args.clone(),
            status,
            exit_code: exit.exit_code,
            stdout: exit.stdout,
            stderr: exit.stderr,
            started_at: exit.started_at,
            finished_at: exit.finished_at,
            duration,
            runtime,
        }
    }

    /// Drive a container to its end, answer, and remove it once the answer
    /// is published. Used for fresh and recovered runs alike.
    #[allow(clippy::too_many_arguments)]
    async fn drive_and_answer(
        &self,
        facts: RunFacts,
        container: ContainerRef,
        stdin: Stdin,
        timeout: Duration,
        max_output_bytes: usize,
        cancel: CancellationToken,
        image_id: Option<String>,
    ) {
        let abandon = &self.inner.lifecycle.abandon;
        let mut stdin = Some(stdin);
        let mut backoff = Duration::from_millis(500);
        let result = loop {
            let io = RunIo {
                stdin: stdin.take().unwrap_or(Stdin::Closed),
                timeout,
                cancel: Box::pin(cancel.clone().cancelled_owned()),
                max_output_bytes,
                // Not configurable yet: stop at once, as before.
                stop_grace: Duration::ZERO,
            };
            let attempt = tokio::select! {
                r = self.inner.runtime.drive(&container, io) => r,
                () = abandon.cancelled() => {
                    info!(run_id = %facts.run_id, container = %container.name, "shutdown grace over: leaving the run to the next start-up");
                    self.table().remove(&facts.run_id);
                    return;
                }
            };
            match attempt {
                Err(RuntimeError::Unavailable(m)) => {
                    // The engine went away mid-run. The container is the
                    // record: re-attach when the engine is back.
                    warn!(run_id = %facts.run_id, "engine unreachable while driving the run, re-attaching in {backoff:?}: {m}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = abandon.cancelled() => {
                            self.table().remove(&facts.run_id);
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => break other,
            }
        };
        let details = RuntimeDetails {
            provider: self.inner.runtime.provider().into(),
            engine_version: self.engine_version().await,
            container_id: Some(container.id.clone()),
            container_name: Some(container.name.clone()),
        };
        let response = match result {
            Ok(exit) => {
                let (status, code) = RunStatus::of(exit.ending);
                let timed_out_after = timeout.as_secs();
                let report = self.report(&facts, status, Some(exit), image_id, details);
                let mut r = Response::success(
                    Operation::Run,
                    facts.reply_event.clone(),
                    facts.correlation.clone(),
                    Reply::Run(Box::new(report)),
                );
                r.error = code.map(|_| {
                    let err = match status {
                        RunStatus::TimedOut => OperationError::Timeout(timed_out_after),
                        _ => OperationError::Canceled("the run was deleted".into()),
                    };
                    (&err).into()
                });
                r
            }
            Err(err) => {
                let err = OperationError::from(err);
                let report = self.report(&facts, RunStatus::Error, None, image_id, details);
                let mut r = Response::failure(
                    Operation::Run,
                    facts.reply_event.clone(),
                    facts.correlation.clone(),
                    &err,
                );
                r.reply = Some(Reply::Run(Box::new(report)));
                r
            }
        };
        let published = self.publish(&response).await;
        if published {
            if let Err(err) = self.inner.runtime.remove(&container).await {
                warn!(container = %container.name, error = %err, "could not remove the container after answering; it will be collected at the next start-up");
            }
        }
        let mut table = self.table();
        table.remove(&facts.run_id);
        if published {
            table.done.insert(facts.run_id.clone(), response);
        }
    }

    async fn engine_version(&self) -> Option<String> {
        let cached = self
            .inner
            .engine_version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if cached.is_some() {
            return cached;
        }
        let version = self
            .inner
            .runtime
            .engine_info()
            .await
            .ok()
            .map(|i| i.engine_version);
        self.remember_engine_version(version.clone());
        version
    }

    fn remember_engine_version(&self, version: Option<String>) {
        if version.is_some() {
            *self
                .inner
                .engine_version
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = version;
        }
    }

    // ---- recovery --------------------------------------------------------

    /// Re-attach to the containers this runner left behind: running ones
    /// are driven to their end, exited ones collected; each is answered and
    /// then removed. Retries until the engine answers or the worker stops.
    pub async fn recover(&self) -> usize {
        let mut backoff = Duration::from_millis(250);
        let list = loop {
            match self.inner.runtime.list_managed(&ManagedFilter::all()).await {
                Ok(list) => break list,
                Err(err) => {
                    warn!(error = %err, "recovery: cannot list managed containers, retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.inner.lifecycle.stopping.cancelled() => return 0,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        let mine = list
            .into_iter()
            .filter(|c| c.runner.as_deref() == Some(self.inner.settings.runner_name.as_str()));
        let mut recovered = 0;
        for managed in mine {
            if self.adopt(managed).await {
                recovered += 1;
            }
        }
        if recovered > 0 {
            info!(recovered, "recovered runs left by an earlier worker");
        }
        recovered
    }

    async fn adopt(&self, managed: ManagedContainer) -> bool {
        let (Some(correlation), Some(reply_event)) =
            (managed.correlation.clone(), managed.reply_event.clone())
        else {
            warn!(container = %managed.container.name, "managed container without correlation labels cannot be answered; removing it");
            if let Err(err) = self.inner.runtime.remove(&managed.container).await {
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
        };
        let cancel = CancellationToken::new();
        let (tx, rx) = input_channel();
        {
            let mut table = self.table();
            if table.live.contains_key(&facts.run_id) {
                return false;
            }
            table.insert(
                facts.run_id.clone(),
                LiveRun {
                    owner: facts.owner.clone(),
                    correlation,
                    image: managed.image.clone(),
                    profile: managed.profile.as_ref().map(ToString::to_string),
                    state: match managed.state {
                        ContainerState::Exited => RunState::Exited,
                        ContainerState::Created => RunState::Creating,
                        _ => RunState::Running,
                    },
                    container: Some(managed.container.clone()),
                    started_at: managed.started_at,
                    cancel: cancel.clone(),
                    input: managed.interactive.then(|| tx.clone()),
                    interactive: managed.interactive,
                },
            );
        }
        info!(run_id = %facts.run_id, container = %managed.container.name, state = ?managed.state, "recovering run");
        let stdin = if managed.interactive {
            Stdin::Interactive(None, Box::pin(ReceiverStream::new(rx)))
        } else {
            Stdin::Closed
        };
        let timeout = managed
            .timeout
            .unwrap_or(self.inner.settings.policy.default_timeout);
        let max_output = self.inner.settings.policy.max_output_bytes;
        let this = self.clone();
        let container = managed.container.clone();
        let image_id = managed.image_id.clone();
        self.inner.tasks.spawn(async move {
            this.drive_and_answer(
                facts, container, stdin, timeout, max_output, cancel, image_id,
            )
            .await;
        });
        true
    }

    /// Run [`Worker::recover`] on a tracked task.
    pub fn spawn_recovery(&self) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            this.recover().await;
        });
    }

    // ---- status, delete, input --------------------------------------------

    fn visible(owner: Option<&OwnerId>, run_owner: Option<&OwnerId>) -> bool {
        owner.is_none_or(|o| run_owner == Some(o))
    }

    async fn status(
        &self,
        q: StatusQuery,
        stamped: Option<OwnerId>,
    ) -> Result<Vec<RunSummary>, (OperationError, Option<Reply>)> {
        let owner = q.owner.or(stamped);
        let mut items: Vec<RunSummary> = self
            .table()
            .live
            .iter()
            .map(|(id, run)| run.summary(id))
            .collect();
        let engine = self
            .inner
            .runtime
            .list_managed(&ManagedFilter::all())
            .await
            .map_err(|e| (e.into(), None))?;
        for c in engine {
            if items.iter().any(|i| i.run_id == c.run_id) {
                continue;
            }
            items.push(RunSummary {
                run_id: c.run_id,
                state: match c.state {
                    ContainerState::Created => RunState::Creating,
                    ContainerState::Running | ContainerState::Other(_) => RunState::Running,
                    ContainerState::Exited => RunState::Exited,
                },
                owner: c.owner,
                image: Some(c.image),
                profile: c.profile.map(|p| p.to_string()),
                container_id: Some(c.container.id),
                started_at: c.started_at,
            });
        }
        items.retain(|i| {
            Self::visible(owner.as_ref(), i.owner.as_ref())
                && q.run_id.as_ref().is_none_or(|r| *r == i.run_id)
        });
        items.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(items)
    }

    async fn find_in_engine(
        &self,
        run_id: &RunId,
        owner: Option<&OwnerId>,
    ) -> Result<ManagedContainer, OperationError> {
        let list = self
            .inner
            .runtime
            .list_managed(&ManagedFilter::all())
            .await?;
        list.into_iter()
            .find(|c| c.run_id == *run_id && Self::visible(owner, c.owner.as_ref()))
            .ok_or_else(|| OperationError::NotFound(run_id.to_string()))
    }

    async fn delete(
        &self,
        req: DeleteRequest,
        stamped: Option<OwnerId>,
    ) -> Result<Reply, (OperationError, Option<Reply>)> {
        let owner = req.owner.or(stamped);
        let local = {
            let table = self.table();
            table.live.get(&req.run_id).map(|run| {
                (
                    Self::visible(owner.as_ref(), run.owner.as_ref()),
                    run.cancel.clone(),
                    run.owner.clone(),
                )
            })
        };
        let run_owner = match local {
            Some((true, cancel, run_owner)) => {
                cancel.cancel();
                run_owner
            }
            Some((false, ..)) => {
                return Err((OperationError::NotFound(req.run_id.to_string()), None))
            }
            None => {
                let c = self
                    .find_in_engine(&req.run_id, owner.as_ref())
                    .await
                    .map_err(|e| (e, None))?;
                // Driven by another worker: killing it ends that worker's
                // drive, which then answers and removes it.
                self.inner
                    .runtime
                    .kill(&c.container)
                    .await
                    .map_err(|e| (e.into(), None))?;
                c.owner
            }
        };
        Ok(Reply::Delete {
            run_id: req.run_id,
            owner: owner.or(run_owner),
        })
    }

    async fn input(
        &self,
        req: InputRequest,
        stamped: Option<OwnerId>,
    ) -> Result<Reply, (OperationError, Option<Reply>)> {
        let owner = req.owner.or(stamped);
        let bytes = req.data.len();
        let chunk = InputChunk {
            data: req.data.into_bytes(),
            eof: req.eof,
        };
        let local = {
            let table = self.table();
            table.live.get(&req.run_id).map(|run| {
                (
                    Self::visible(owner.as_ref(), run.owner.as_ref()),
                    run.interactive,
                    run.state,
                    run.input.clone(),
                )
            })
        };
        let not_accepting =
            || OperationError::Conflict(format!("run {} is not accepting input", req.run_id));
        match local {
            Some((false, ..)) => Err((OperationError::NotFound(req.run_id.to_string()), None)),
            Some((true, false, ..)) => Err((
                OperationError::Conflict(format!("run {} is not interactive", req.run_id)),
                None,
            )),
            Some((
                true,
                true,
                RunState::Running | RunState::Creating | RunState::Queued,
                Some(tx),
            )) => {
                let eof = chunk.eof;
                match tokio::time::timeout(Duration::from_secs(10), tx.send(chunk)).await {
                    Ok(Ok(())) => {
                        if eof {
                            if let Some(run) = self.table().live.get_mut(&req.run_id) {
                                run.input = None;
                            }
                        }
                        Ok(Reply::Input {
                            run_id: req.run_id,
                            bytes,
                        })
                    }
                    _ => Err((not_accepting(), None)),
                }
            }
            Some(_) => Err((not_accepting(), None)),
            None => {
                let c = self
                    .find_in_engine(&req.run_id, owner.as_ref())
                    .await
                    .map_err(|e| (e, None))?;
                if !c.interactive || c.state != ContainerState::Running {
                    return Err((not_accepting(), None));
                }
                self.inner
                    .runtime
                    .write_input(&c.container, chunk)
                    .await
                    .map_err(|e| (e.into(), None))?;
                Ok(Reply::Input {
                    run_id: req.run_id,
                    bytes,
                })
            }
        }
    }

    // ---- runner ------------------------------------------------------------

    async fn runner_status(&self) -> RunnerReport {
        let (active, queued) = {
            let t = self.table();
            (t.active(), t.queued())
        };
        let s = &self.inner.settings;
        let mut report = RunnerReport {
            state: RunnerState::Ready,
            provider: self.inner.runtime.provider().into(),
            engine: None,
            problem: None,
            active_runs: active,
            queued_runs: queued,
            max_concurrent_runs: s.max_concurrent_runs,
            max_queued_runs: s.max_queued_runs,
            profiles: Default::default(),
        };
        match self.inner.runtime.engine_info().await {
            Ok(info) => {
                self.remember_engine_version(Some(info.engine_version.clone()));
                report.engine = Some(info);
            }
            Err(err) => {
                report.state = RunnerState::Unavailable;
                report.problem = Some(err.to_string());
                return report;
            }
        }
        let mut missing = Vec::new();
        for p in s.profiles.iter() {
            let present = self
                .inner
                .runtime
                .image_present(&p.image)
                .await
                .unwrap_or(false);
            if !present {
                missing.push(p.image.to_string());
            }
            report.profiles.insert(
                p.name.to_string(),
                ProfileImage {
                    image: p.image.to_string(),
                    present,
                },
            );
        }
        if !missing.is_empty() {
            report.state = RunnerState::Degraded;
            report.problem = Some(format!(
                "profile images not present: {}",
                missing.join(", ")
            ));
        }
        report
    }

    async fn runner_start(&self) -> Result<Reply, (OperationError, Option<Reply>)> {
        if let Err(err) = self.inner.runtime.engine_info().await {
            let report = self.runner_status().await;
            return Err((err.into(), Some(Reply::RunnerStart(Box::new(report)))));
        }
        let mut failure = None;
        for p in self.inner.settings.profiles.iter() {
            if let Err(err) = self
                .inner
                .runtime
                .ensure_image(&p.image, p.pull_policy)
                .await
            {
                warn!(profile = %p.name, image = %p.image, error = %err, "runner start: profile image unavailable");
                failure.get_or_insert(OperationError::from(err));
            }
        }
        let report = Reply::RunnerStart(Box::new(self.runner_status().await));
        match failure {
            None => Ok(report),
            Some(err) => Err((err, Some(report))),
        }
    }

    async fn runner_delete(&self) -> Result<Reply, (OperationError, Option<Reply>)> {
        let local: Vec<(RunId, CancellationToken, bool)> = {
            let table = self.table();
            table
                .live
                .iter()
                .map(|(id, r)| (id.clone(), r.cancel.clone(), r.container.is_some()))
                .collect()
        };
        let mut removed = 0;
        for (_, cancel, has_container) in &local {
            cancel.cancel();
            if *has_container {
                removed += 1;
            }
        }
        let others = self
            .inner
            .runtime
            .list_managed(&ManagedFilter::all())
            .await
            .map_err(|e| (e.into(), None))?;
        for c in others {
            if local.iter().any(|(id, ..)| *id == c.run_id) {
                continue;
            }
            match self.inner.runtime.remove(&c.container).await {
                Ok(()) => removed += 1,
                Err(err) => {
                    warn!(container = %c.container.name, error = %err, "runner delete: cannot remove container")
                }
            }
        }
        debug!(removed, "runner delete");
        Ok(Reply::RunnerDelete {
            removed_containers: removed,
        })
    }

    // ---- shutdown ----------------------------------------------------------

    /// Number of runs this process holds (any state).
    pub fn live_runs(&self) -> usize {
        self.table().live.len()
    }

    /// Stop: queued runs are answered `canceled`, running ones get `grace`
    /// to finish; then the rest is abandoned to the next start-up.
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
