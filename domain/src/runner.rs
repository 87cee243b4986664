//! The runner's own report (`runner.status`): its state, its profiles'
//! images, each engine and each request stream.

use crate::container::EngineInfo;
use std::collections::BTreeMap;

use crate::container::SessionUsage;

/// Runner readiness (`runner.status.response.status.state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerState {
    Ready,
    Degraded,
    Unavailable,
}

impl RunnerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Degraded => "degraded",
            Self::Unavailable => "unavailable",
        }
    }
}

/// One profile's image as `runner.status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileImage {
    pub image: String,
    pub present: bool,
}

/// The `runner.status` / `runner.start` details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerReport {
    pub state: RunnerState,
    pub provider: String,
    pub engine: Option<EngineInfo>,
    /// Why the runner is not ready, when it is not.
    pub problem: Option<String>,
    pub active_runs: usize,
    pub queued_runs: usize,
    pub max_concurrent_runs: usize,
    pub max_queued_runs: usize,
    /// Whether the worker has room for another run now; `false` while
    /// its queue is full and a run request is answered `capacity` (intake
    /// follows capacity, docs/protocol.md §5). Run requests are read either way.
    pub intake_open: bool,
    pub profiles: BTreeMap<String, ProfileImage>,
    /// Every engine of the pool, in configured order.
    pub engines: Vec<EngineReport>,
    /// The network policy in force (docs/protocol.md §4, v3).
    pub networks: crate::network::NetworkPolicy,
    /// Every request stream, in operation order (docs/protocol.md §9); empty for a
    /// source without streams.
    pub streams: Vec<StreamReport>,
    /// Warm profiles: parked and wanted per profile and engine (§10).
    pub warm: Vec<crate::warm::WarmReport>,
}

/// One request stream in `runner.status` (docs/protocol.md §9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamReport {
    /// The request event name the stream listens to.
    pub name: String,
    pub state: StreamState,
}

/// Whether a request stream is being read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamState {
    /// Accepted by the Events API and being read.
    Connected,
    /// Being (re)connected.
    Connecting,
    /// The Events API refuses it (403): the token lacks `scope`. Asked for
    /// again about once a minute.
    Refused { scope: String, message: String },
}

/// One engine of the pool in `runner.status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineReport {
    /// The engine's URL without credentials.
    pub docker_host: String,
    /// Whether it answered this time.
    pub reachable: bool,
    pub engine_version: Option<String>,
    /// Active (created or running) managed containers on it, from every
    /// worker; `None` when it could not be listed.
    pub active_runs: Option<usize>,
    /// The codex session volumes kept on it (docs/protocol.md §6); `None` when
    /// it could not be asked or keeps none.
    pub sessions: Option<SessionUsage>,
    /// Why it is unreachable.
    pub error: Option<String>,
}

impl RunnerReport {
    /// Judge the runner from the facts gathered into this report (a pure
    /// rule, beside [`crate::placement::choose`]): no engine reachable
    /// (`engine` is `None`) is `Unavailable`; an engine of the pool down, a
    /// request stream refused or a profile image missing on a reachable
    /// engine is `Degraded`; otherwise `Ready`. `problem` names each cause.
    pub fn judge(&mut self) {
        let refused = refused_streams(&self.streams);
        let down: Vec<String> = self
            .engines
            .iter()
            .filter(|e| !e.reachable)
            .map(|e| {
                let why = e.error.clone().unwrap_or_else(|| "unreachable".into());
                if e.docker_host.is_empty() {
                    why
                } else {
                    format!("{} ({why})", e.docker_host)
                }
            })
            .collect();
        if self.engine.is_none() {
            self.state = RunnerState::Unavailable;
            let problems: Vec<String> = std::iter::once(down.join("; ")).chain(refused).collect();
            self.problem = Some(problems.join("; "));
            return;
        }
        let mut problems: Vec<String> = refused.into_iter().collect();
        if !down.is_empty() {
            problems.push(format!("engines unreachable: {}", down.join(", ")));
        }
        let missing: Vec<&str> = self
            .profiles
            .values()
            .filter(|p| !p.present)
            .map(|p| p.image.as_str())
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "profile images not present: {}",
                missing.join(", ")
            ));
        }
        if problems.is_empty() {
            self.state = RunnerState::Ready;
            self.problem = None;
        } else {
            self.state = RunnerState::Degraded;
            self.problem = Some(problems.join("; "));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::RequestMounts;
    use crate::network::NetworkPolicy;

    fn info() -> EngineInfo {
        EngineInfo {
            engine_version: "27.0".into(),
            api_version: "1.47".into(),
            os: "linux".into(),
            arch: "amd64".into(),
            request_mounts: RequestMounts::default(),
        }
    }

    fn engine(host: &str, error: Option<&str>) -> EngineReport {
        EngineReport {
            docker_host: host.into(),
            reachable: error.is_none(),
            engine_version: None,
            active_runs: None,
            sessions: None,
            error: error.map(Into::into),
        }
    }

    fn report(engines: Vec<EngineReport>) -> RunnerReport {
        RunnerReport {
            state: RunnerState::Ready,
            provider: "docker".into(),
            engine: engines.iter().any(|e| e.reachable).then(info),
            problem: None,
            active_runs: 0,
            queued_runs: 0,
            max_concurrent_runs: 4,
            max_queued_runs: 64,
            intake_open: true,
            profiles: BTreeMap::new(),
            engines,
            networks: NetworkPolicy::default(),
            streams: Vec::new(),
            warm: Vec::new(),
        }
    }

    #[test]
    fn every_engine_up_and_nothing_missing_is_ready() {
        let mut r = report(vec![engine("unix:///a", None)]);
        r.judge();
        assert_eq!((r.state, r.problem), (RunnerState::Ready, None));
    }

    #[test]
    fn each_cause_of_degraded_is_named() {
        let mut r = report(vec![
            engine("unix:///a", None),
            engine("tcp://b", Some("refused")),
        ]);
        r.profiles.insert(
            "codex".into(),
            ProfileImage {
                image: "codex:1".into(),
                present: false,
            },
        );
        r.streams.push(StreamReport {
            name: "bus.docker.runner.status.request".into(),
            state: StreamState::Refused {
                scope: "container:admin".into(),
                message: "forbidden".into(),
            },
        });
        r.judge();
        assert_eq!(r.state, RunnerState::Degraded);
        let problem = r.problem.unwrap();
        for part in [
            "tcp://b (refused)",
            "profile images not present: codex:1",
            "missing scope container:admin",
        ] {
            assert!(problem.contains(part), "{problem}");
        }
    }

    #[test]
    fn no_engine_reachable_is_unavailable() {
        let mut r = report(vec![engine("unix:///a", Some("gone"))]);
        r.judge();
        assert_eq!(r.state, RunnerState::Unavailable);
        assert_eq!(r.problem.as_deref(), Some("unix:///a (gone)"));
    }
}
