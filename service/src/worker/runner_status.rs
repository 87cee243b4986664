//! `runner.status.request`: the runner's state, its engines, its load and
//! whether each profile's image is present.
//!
//! Every engine of the pool is asked (this is also a probe: an engine that
//! came back counts again at once). All engines unreachable: `unavailable`;
//! some: `degraded`, naming them; a profile image missing on a reachable
//! engine: `degraded` too (the rule is the domain's `RunnerReport::judge`).
//! The top-level engine facts are the first reachable engine's; `engines`
//! lists each one.

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::runner::{EngineReport, ProfileImage, RunnerReport, RunnerState};

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
            provider: self.inner.pool.provider().into(),
            engine: None,
            problem: None,
            active_runs: active,
            queued_runs: queued,
            max_concurrent_runs: s.max_concurrent_runs,
            max_queued_runs: s.max_queued_runs,
            intake_open,
            profiles: Default::default(),
            engines: Vec::new(),
            networks: s.policy.networks.clone(),
            streams: self
                .inner
                .streams
                .get()
                .map(|probe| probe())
                .unwrap_or_default(),
            warm: self.warm_counts(),
        };
        for probe in self.inner.pool.probe_all().await {
            let mut engine = EngineReport {
                docker_host: probe.engine.to_string(),
                reachable: probe.info.is_ok(),
                engine_version: None,
                active_runs: probe.active_runs,
                sessions: probe.sessions,
                error: None,
            };
            match probe.info {
                Ok(info) => {
                    engine.engine_version = Some(info.engine_version.clone());
                    report.engine.get_or_insert(info);
                }
                Err(err) => engine.error = Some(err.to_string()),
            }
            report.engines.push(engine);
        }
        // Profile images are looked for only while an engine answers.
        if report.engine.is_some() {
            for p in s.profiles.iter() {
                let present = self.inner.pool.image_present_everywhere(&p.image).await;
                report.profiles.insert(
                    p.name.to_string(),
                    ProfileImage {
                        image: p.image.to_string(),
                        present,
                    },
                );
            }
        }
        report.judge();
        report
    }
}
