//! `runner.status.request`: the runner's state, its engine, its load and
//! whether each profile's image is present.

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::run::{ProfileImage, RunnerReport, RunnerState};

use super::Worker;

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn runner_status(&self) -> RunnerReport {
        let (active, queued, intake_open) = {
            let t = self.table();
            (t.active(), t.queued(), t.intake.is_open())
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
            intake_open,
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
}
