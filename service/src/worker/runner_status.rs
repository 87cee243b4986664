//! `runner.status.request`: the runner's state, its engines, its load and
//! whether each profile's image is present.
//!
//! Every engine of the pool is asked (this is also a probe: an engine that
//! came back counts again at once). All engines unreachable: `unavailable`;
//! some: `degraded`, naming them; a profile image missing on a reachable
//! engine: `degraded` too. The top-level engine facts are the first
//! reachable engine's; `engines` lists each one.

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::run::{
    EngineReport, ProfileImage, RunnerReport, RunnerState, StreamReport, StreamState,
};

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
        let refused = refused_streams(&report.streams);
        let mut down = Vec::new();
        for probe in self.inner.pool.probe_all().await {
            let docker_host = probe.engine.to_string();
            let mut engine = EngineReport {
                docker_host,
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
                Err(err) => {
                    down.push(if engine.docker_host.is_empty() {
                        err.to_string()
                    } else {
                        format!("{} ({err})", engine.docker_host)
                    });
                    engine.error = Some(err.to_string());
                }
            }
            report.engines.push(engine);
        }
        if report.engine.is_none() {
            report.state = RunnerState::Unavailable;
            let problems: Vec<String> = std::iter::once(down.join("; ")).chain(refused).collect();
            report.problem = Some(problems.join("; "));
            return report;
        }
        let mut problems = Vec::new();
        problems.extend(refused);
        if !down.is_empty() {
            problems.push(format!("engines unreachable: {}", down.join(", ")));
        }
        let mut missing = Vec::new();
        for p in s.profiles.iter() {
            let present = self.inner.pool.image_present_everywhere(&p.image).await;
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
            problems.push(format!(
                "profile images not present: {}",
                missing.join(", ")
            ));
        }
        if !problems.is_empty() {
            report.state = RunnerState::Degraded;
            report.problem = Some(problems.join("; "));
        }
        report
    }
}

/// "request streams refused …" naming each refused stream and its scope,
/// when any is refused.
fn refused_streams(streams: &[StreamReport]) -> Option<String> {
    let refused: Vec<String> = streams
        .iter()
        .filter_map(|s| match &s.state {
            StreamState::Refused { scope, .. } => {
                Some(format!("{} (missing scope {scope})", s.name))
            }
            _ => None,
        })
        .collect();
    (!refused.is_empty()).then(|| {
        format!(
            "request streams refused by the Events API (HTTP 403): {}",
            refused.join(", ")
        )
    })
}
