//! Each engine's health, as the pool is its one owner: what a call says
//! about reachability, the background probe, the `runner.status` probe,
//! what `/readyz` reads, and how an engine is named.

use std::sync::PoisonError;
use std::time::Duration;

use bus_docker_domain::container::ManagedFilter;
use bus_docker_domain::container::{EngineId, EngineInfo, RequestMounts, SessionUsage};
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::RuntimeError;
use futures_util::future::join_all;
use tracing::{info, warn};

use super::{EnginePool, Member};

/// How often every engine is probed in the background.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// How long one engine may take to answer a probe or a listing before it
/// counts as down: a hung engine (it accepts connections, never answers)
/// must not hold every placement and every status behind the engine
/// client's request timeout.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the pool knows about one engine's reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Health {
    /// Not called yet.
    #[default]
    Unknown,
    Up,
    Down(String),
}

impl<R> Member<R> {
    pub(super) fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Record what a call says about reachability; logs transitions.
    pub(super) fn note<T>(&self, result: &Result<T, RuntimeError>) {
        let next = match result {
            Err(RuntimeError::Unavailable(why)) => Health::Down(why.clone()),
            // Any answer, even a refusal, proves the engine is there.
            _ => Health::Up,
        };
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match (&*health, &next) {
            (Health::Down(_), Health::Up) => {
                info!(docker_host = %self.id, "engine reachable again");
            }
            (Health::Up | Health::Unknown, Health::Down(why)) => {
                warn!(docker_host = %self.id, error = %why, "engine unreachable: skipped for new runs until it answers again");
            }
            _ => {}
        }
        *health = next;
    }
}

/// One engine's health as the pool last noted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineHealth {
    /// [`EnginePool::label`] of the engine.
    pub label: String,
    /// `Err` with why while it is down or was never reached.
    pub state: Result<(), String>,
}

/// One engine's answer to a `runner.status` probe.
pub struct EngineProbe {
    pub engine: EngineId,
    pub info: Result<EngineInfo, RuntimeError>,
    /// Active managed containers, from every worker.
    pub active_runs: Option<usize>,
    /// The codex session volumes it keeps, when it answered.
    pub sessions: Option<SessionUsage>,
}

impl<R: ContainerRuntime> EnginePool<R> {
    /// Ask every engine for its version and load (for `runner.status`):
    /// also a probe, so it revives engines that came back.
    pub async fn probe_all(&self) -> Vec<EngineProbe> {
        join_all(self.members.iter().map(|m| async {
            let info = self.info(m).await;
            let (active_runs, sessions) = match &info {
                Ok(_) => (
                    self.list_on_member(m, &ManagedFilter::active())
                        .await
                        .ok()
                        .map(|l| l.len()),
                    m.runtime.session_usage().await.ok(),
                ),
                Err(_) => (None, None),
            };
            EngineProbe {
                engine: m.id.clone(),
                info,
                active_runs,
                sessions,
            }
        }))
        .await
    }

    /// Ask every engine whether it answers, each within [`ENGINE_TIMEOUT`],
    /// and note the answer as its health (the background probe; also what
    /// one-shot commands call before they use an engine).
    pub async fn probe(&self) {
        join_all(self.members.iter().map(|m| async move {
            if tokio::time::timeout(ENGINE_TIMEOUT, self.info(m))
                .await
                .is_err()
            {
                m.note::<()>(&Err(RuntimeError::Unavailable(format!(
                    "no answer within {ENGINE_TIMEOUT:?}"
                ))));
            }
        }))
        .await;
    }

    /// Each engine's label and health as last noted: `Err` with why for
    /// an engine that is down or was never reached yet.
    pub fn health(&self) -> Vec<EngineHealth> {
        self.members
            .iter()
            .map(|m| EngineHealth {
                label: self.label(&m.id),
                state: match m.health() {
                    Health::Up => Ok(()),
                    Health::Down(why) => Err(why),
                    Health::Unknown => Err("not reached yet".into()),
                },
            })
            .collect()
    }

    /// How logs, metrics and responses name `engine`: its URL without
    /// credentials, or the provider's name for a runtime outside a pool.
    pub fn label(&self, engine: &EngineId) -> String {
        if engine.is_unnamed() {
            self.provider().to_owned()
        } else {
            engine.to_string()
        }
    }

    /// Ask an engine about itself: the one place that notes its health
    /// from the answer and keeps its version and pinning.
    pub(super) async fn info(&self, m: &Member<R>) -> Result<EngineInfo, RuntimeError> {
        let info = m.runtime.engine_info().await;
        m.note(&info);
        if let Ok(i) = &info {
            *m.version.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(i.engine_version.clone());
            *m.pins.lock().unwrap_or_else(PoisonError::into_inner) =
                Some(matches!(i.request_mounts, RequestMounts::Pinned));
        }
        info
    }

    /// The version of the engine holding `container` (read once).
    pub async fn engine_version(&self, engine: &EngineId) -> Option<String> {
        let m = self.member(engine).ok()?;
        let cached = m
            .version
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if cached.is_some() {
            return cached;
        }
        self.info(m).await.ok().map(|i| i.engine_version)
    }
}
