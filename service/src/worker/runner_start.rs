//! `runner.start.request`: make the runner ready — check the engine and
//! make every profile image present on every reachable engine of the
//! pool where the pull policy allows.

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::response::Reply;
use bus_docker_domain::runner::RunnerState;
use bus_docker_domain::OperationError;
use tracing::warn;

use super::{Answer, Refusal, Worker};

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn runner_start(&self) -> Answer {
        let report = self.runner_status().await;
        if report.state == RunnerState::Unavailable {
            let why = report.problem.clone().unwrap_or_default();
            return Err(Refusal::with_partial(
                OperationError::RuntimeUnavailable(why),
                Reply::RunnerStart(Box::new(report)),
            ));
        }
        self.resume_warm();
        let mut failure = None;
        for p in self.inner.settings.profiles.iter() {
            if let Err(err) = self
                .inner
                .pool
                .ensure_image_everywhere(&p.image, p.pull_policy)
                .await
            {
                warn!(profile = %p.name, image = %p.image, error = %err, "runner start: profile image unavailable");
                failure.get_or_insert(OperationError::from(err));
            }
        }
        let report = Reply::RunnerStart(Box::new(self.runner_status().await));
        match failure {
            None => Ok(report),
            Some(err) => Err(Refusal::with_partial(err, report)),
        }
    }
}
