//! Finishing a run: drive its container to the end, publish the one
//! response, and only then remove the container (the container is the
//! durable record until the answer is out). Shared by fresh runs
//! (`run.rs`) and recovered ones (`recover.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::output::OutputSink;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, RunIo, Stdin};
use bus_docker_domain::response::{Reply, Response};
use bus_docker_domain::run::{Ending, Exit, RunReport, RunStatus, RuntimeDetails};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{
    CorrelationId, ImageRef, Operation, OperationError, OwnerId, ProfileName, RunId, RuntimeError,
    SessionName,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::live::LiveOutput;
use super::{sleep_or_stop, Worker, REATTACH_BACKOFF};

/// Facts about a run needed to write its response, from a spec or from a
/// container's labels.
pub(crate) struct RunFacts {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub correlation: CorrelationId,
    pub reply_event: String,
    pub profile: Option<ProfileName>,
    pub image: ImageRef,
    pub args: Vec<String>,
    /// The codex session the run resumes, echoed in its response.
    pub session: Option<SessionName>,
}

impl RunFacts {
    pub fn of_spec(spec: &RunSpec) -> Self {
        Self {
            run_id: spec.run_id.clone(),
            owner: spec.owner.clone(),
            correlation: spec.correlation.clone(),
            reply_event: spec.reply_event.clone(),
            profile: spec.profile.clone(),
            image: spec.image.clone(),
            args: spec.command.clone(),
            session: spec.session().cloned(),
        }
    }
}

/// One container to drive to its end and answer for (its stdin travels
/// beside it: a stream is not `Sync`).
pub(crate) struct DriveJob {
    pub facts: RunFacts,
    pub container: ContainerRef,
    /// Measured from the container's start.
    pub timeout: Duration,
    pub max_output_bytes: usize,
    /// Fires on `delete`/`runner.delete`.
    pub cancel: CancellationToken,
    pub image_id: Option<String>,
    /// Live output: publish `run.output` events starting at this `seq`
    /// (0 for a fresh run); `None` when the request did not ask.
    pub live_from_seq: Option<u64>,
    /// The concurrency slot the run holds until it is answered.
    pub _slot: Option<OwnedSemaphorePermit>,
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Drive a container to its end, answer, and remove it once the answer
    /// is published. When the engine goes away mid-run the container stays
    /// the record: re-attach with backoff until it is back, unless the
    /// shutdown grace ends first (then the next start-up recovers it).
    pub(super) async fn drive_and_answer(&self, job: DriveJob, stdin: Stdin) {
        let live = job
            .live_from_seq
            .map(|seq| Arc::new(LiveOutput::new(job.max_output_bytes, seq)));
        let driving = async {
            let sink = live.clone().map(|l| l as Arc<dyn OutputSink>);
            let result = self.drive_until_done(&job, stdin, sink).await;
            if let Some(live) = &live {
                live.finish();
            }
            result
        };
        // Every output event is out before the response is published.
        let streaming = async {
            if let Some(live) = &live {
                self.stream_live(live, &job.facts).await;
            }
        };
        let (result, ()) = tokio::join!(driving, streaming);
        let Some(result) = result else {
            info!(run_id = %job.facts.run_id, container = %job.container.name, "shutdown grace over: leaving the run to the next start-up");
            self.table().remove(&job.facts.run_id);
            return;
        };
        let response = self.run_response(&job, result).await;
        let published = self.publish(&response).await;
        // Refill parked containers after the response, never before it.
        self.inner.warm.wake();
        if published {
            self.retire(&job.container).await;
        }
        let mut table = self.table();
        table.remove(&job.facts.run_id);
        if published {
            table.done.insert(job.facts.run_id.clone(), response);
        }
    }

    /// After the answer is out: keep the container as an `.answered`
    /// tombstone for `run_retention` (it stops a late redelivery of the same
    /// request on any worker from running it again, and lets every worker
    /// list the finished run), or remove it when retention is 0.
    pub(super) async fn retire(&self, container: &ContainerRef) {
        let retention = self.inner.settings.run_retention;
        if !retention.is_zero() {
            match self.inner.pool.mark_answered(container).await {
                Ok(()) => {
                    let until = Instant::now() + retention;
                    self.table().tombstones.push((container.clone(), until));
                    return;
                }
                Err(err) => {
                    warn!(container = %container.name, error = %err, "could not mark the answered run; removing it now");
                }
            }
        }
        if let Err(err) = self.inner.pool.remove(container).await {
            warn!(container = %container.name, error = %err, "could not remove the container after answering; it will be collected at the next start-up");
        }
    }

    /// The drive's result, or `None` when the run was abandoned at shutdown.
    /// The first attempt takes the job's stdin; a re-attach after the
    /// engine came back has none left to give.
    async fn drive_until_done(
        &self,
        job: &DriveJob,
        stdin: Stdin,
        output: Option<Arc<dyn OutputSink>>,
    ) -> Option<Result<Exit, RuntimeError>> {
        let lifecycle = &self.inner.lifecycle;
        let mut stdin = Some(stdin);
        let mut backoff = REATTACH_BACKOFF.first;
        loop {
            let io = RunIo {
                stdin: stdin.take().unwrap_or(Stdin::Closed),
                timeout: job.timeout,
                cancel: Box::pin(job.cancel.clone().cancelled_owned()),
                max_output_bytes: job.max_output_bytes,
                stop_grace: self.inner.settings.stop_grace,
                output: output.clone(),
            };
            let attempt = tokio::select! {
                r = self.inner.pool.drive(&job.container, io) => r,
                () = lifecycle.abandon_signal() => return None,
            };
            match attempt {
                Err(RuntimeError::Unavailable(m)) => {
                    warn!(run_id = %job.facts.run_id, "engine unreachable while driving the run, re-attaching in {backoff:?}: {m}");
                    if !sleep_or_stop(backoff, &lifecycle.abandoned()).await {
                        return None;
                    }
                    backoff = REATTACH_BACKOFF.next(backoff);
                }
                other => return Some(other),
            }
        }
    }

    /// The run response for a drive's result.
    async fn run_response(&self, job: &DriveJob, result: Result<Exit, RuntimeError>) -> Response {
        let facts = &job.facts;
        let engine = &job.container.engine;
        let details = RuntimeDetails {
            provider: self.inner.pool.provider().into(),
            docker_host: self.docker_host(engine),
            engine_version: self.inner.pool.engine_version(engine).await,
            container_id: Some(job.container.id.clone()),
            container_name: Some(job.container.name.clone()),
        };
        let image_id = job.image_id.clone();
        match result {
            Ok(exit) => {
                let (status, code) = RunStatus::of(exit.ending);
                let report = self.report(facts, status, Some(exit), image_id, details);
                let mut r = Response::success(
                    Operation::Run,
                    facts.reply_event.clone(),
                    facts.correlation.clone(),
                    Reply::Run(Box::new(report)),
                );
                r.error = code.map(|_| {
                    let err = match status {
                        RunStatus::TimedOut => OperationError::Timeout(job.timeout.as_secs()),
                        _ => OperationError::Canceled("the run was deleted".into()),
                    };
                    (&err).into()
                });
                r
            }
            Err(err) => {
                let err = OperationError::from(err);
                let report = self.report(facts, RunStatus::Error, None, image_id, details);
                let mut r = Response::failure(
                    Operation::Run,
                    facts.reply_event.clone(),
                    facts.correlation.clone(),
                    &err,
                );
                r.reply = Some(Reply::Run(Box::new(report)));
                r
            }
        }
    }

    /// Answer a run that never got a container.
    pub(super) async fn fail_run(&self, facts: &RunFacts, err: OperationError) {
        info!(run_id = %facts.run_id, error = %err, "run failed before start");
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
                provider: self.inner.pool.provider().into(),
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
            oom_killed: exit.oom_killed,
            runtime,
            session: facts.session.clone(),
        }
    }
}
