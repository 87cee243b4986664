//! Containers and engines as the domain sees them: which engine
//! ([`EngineId`], [`EngineInfo`]), which container ([`ContainerRef`]), its
//! state and mark, and what a listing of managed containers returns
//! ([`ManagedFilter`], [`ManagedContainer`]). Models only: the ports that
//! produce them are in [`crate::ports`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::ids::{CorrelationId, OwnerId, ProfileName, RunId, SessionName};

/// Which engine of the worker's pool holds a container: the engine's URL
/// as configured, without credentials (what `runtime.docker_host` shows).
/// Runtimes leave it empty ([`EngineId::default`]); the pool stamps it on
/// every reference it hands out, and routes calls on a reference by it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EngineId(Arc<str>);

impl EngineId {
    pub fn new(url: impl AsRef<str>) -> Self {
        Self(Arc::from(url.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether no engine was named (a runtime outside a pool).
    pub fn is_unnamed(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for EngineId {
    fn default() -> Self {
        Self(Arc::from(""))
    }
}

impl fmt::Display for EngineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a run lives: the engine, and the container there. Runtimes
/// address containers by `id`; `name` is the name when the reference was
/// made (a mark renames it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    pub id: String,
    pub name: String,
    pub engine: EngineId,
}

impl ContainerRef {
    /// A reference on an engine not named yet (runtimes create these; the
    /// pool names the engine).
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            engine: EngineId::default(),
        }
    }
}

/// What a run's container name says (docs/protocol.md §4/§5: the engine is the
/// record). `bus-run-<id>` is live; a worker that deletes a run another
/// worker drives renames it `bus-run-<id>.deleted` before stopping it; a
/// run whose response was published is renamed `bus-run-<id>.answered`
/// and kept as a tombstone for the retention period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMark {
    Live,
    Deleted,
    Answered,
}

impl RunMark {
    /// What the mark appends to `bus-run-<id>`.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Live => "",
            Self::Deleted => ".deleted",
            Self::Answered => ".answered",
        }
    }

    /// The container name of run `run_id` under this mark.
    pub fn container_name(self, run_id: &RunId) -> String {
        format!("bus-run-{}{}", run_id.as_str(), self.suffix())
    }

    /// The mark of a container named `name` that holds run `run_id`;
    /// `None` when the name is not one of that run's names. Exact even for
    /// run ids that themselves end in `.deleted`.
    pub fn of(name: &str, run_id: &RunId) -> Option<Self> {
        let rest = name
            .strip_prefix("bus-run-")?
            .strip_prefix(run_id.as_str())?;
        [Self::Live, Self::Deleted, Self::Answered]
            .into_iter()
            .find(|m| m.suffix() == rest)
    }

    /// Split a container name into its run id part and mark by suffix
    /// alone, for containers whose run id label is missing.
    pub fn split(name: &str) -> Option<(&str, Self)> {
        let base = name.strip_prefix("bus-run-")?;
        for mark in [Self::Deleted, Self::Answered] {
            if let Some(id) = base.strip_suffix(mark.suffix()) {
                return Some((id, mark));
            }
        }
        Some((base, Self::Live))
    }
}

/// The engine as the runtime sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineInfo {
    pub engine_version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    /// Whether request mounts can be honoured (pinned) or are refused.
    pub request_mounts: RequestMounts,
}

/// What the runtime does with request mounts (docs/protocol.md §4: what Docker
/// mounts is what was checked, else request mounts are refused).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestMounts {
    /// Each request mount is pinned to the checked file before the engine
    /// sees it.
    Pinned,
    /// Request mounts are answered `forbidden` (rule `mount_pinning`), for
    /// this reason; operator/profile mounts still work.
    Refused(String),
}

impl RequestMounts {
    /// `pinned` or `refused: <reason>` (the runner.status wording).
    pub fn describe(&self) -> String {
        match self {
            Self::Pinned => "pinned".to_owned(),
            Self::Refused(reason) => format!("refused: {reason}"),
        }
    }
}

impl Default for RequestMounts {
    fn default() -> Self {
        Self::Refused("the runtime does not pin mounts".to_owned())
    }
}

/// The codex session volumes an engine keeps (`runner.status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionUsage {
    /// How many session volumes exist.
    pub volumes: usize,
    /// Their size in bytes, when the engine says (`docker system df`).
    pub bytes: Option<u64>,
}

/// What a sweep of expired codex sessions did on one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionsSwept {
    /// Session volumes removed: unused for longer than the retention.
    pub removed: usize,
    /// Session volumes kept.
    pub kept: usize,
}

/// The engine's view of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// Paused, restarting, dead, removing: anything else.
    Other(String),
}

impl ContainerState {
    /// Created, running, paused or restarting: the container holds (or
    /// is about to hold) a place on its engine.
    pub fn is_active(&self) -> bool {
        match self {
            Self::Created | Self::Running => true,
            Self::Exited => false,
            Self::Other(s) => s == "paused" || s == "restarting",
        }
    }
}

/// Which managed containers a listing returns; the runtime turns it into
/// the engine's own filters, so a listing costs one call however many
/// containers the engine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManagedFilter {
    /// Only containers labelled with this runner name (`bus.runner`).
    pub runner: Option<String>,
    /// Only the containers of this run (`bus.run-id`), whatever their mark.
    pub run_id: Option<RunId>,
    /// Only containers that are active: created, running, paused or
    /// restarting (what placement counts).
    pub active_only: bool,
    /// Ask the engine itself, not a view kept from its events: for checks
    /// that must see every container created before the call. Never
    /// narrows the result ([`ManagedFilter::matches`] ignores it).
    pub fresh: bool,
}

impl ManagedFilter {
    /// Every managed container.
    pub fn all() -> Self {
        Self::default()
    }

    /// The containers of one runner.
    pub fn runner(runner: impl Into<String>) -> Self {
        Self {
            runner: Some(runner.into()),
            ..Self::default()
        }
    }

    /// The containers of one run.
    pub fn run(run_id: RunId) -> Self {
        Self {
            run_id: Some(run_id),
            ..Self::default()
        }
    }

    /// The active containers of every runner (placement counts them).
    pub fn active() -> Self {
        Self {
            active_only: true,
            ..Self::default()
        }
    }

    /// The same filter, answered by the engine itself (the `fresh` field).
    #[must_use]
    pub fn fresh(self) -> Self {
        Self {
            fresh: true,
            ..self
        }
    }

    /// Whether a container read back passes the filter (for runtimes that
    /// filter in memory, and for tests).
    pub fn matches(&self, managed: &ManagedContainer) -> bool {
        self.runner
            .as_deref()
            .is_none_or(|r| managed.runner.as_deref() == Some(r))
            && self.run_id.as_ref().is_none_or(|id| *id == managed.run_id)
            && (!self.active_only || managed.state.is_active())
    }
}

/// A container this worker manages, read back from its name and labels
/// (docs/protocol.md §5): the durable record of a run. Only labels the worker
/// wrote count: a `bus.*` label the image brings is blanked at create and
/// an empty label reads back as absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    pub container: ContainerRef,
    pub run_id: RunId,
    /// What the container's name says about the run (live, deleted,
    /// answered).
    pub mark: RunMark,
    pub owner: Option<OwnerId>,
    pub correlation: Option<CorrelationId>,
    pub reply_event: Option<String>,
    pub runner: Option<String>,
    pub profile: Option<ProfileName>,
    pub image: String,
    pub image_id: Option<String>,
    pub args: Vec<String>,
    pub interactive: bool,
    /// The request asked for live output (`bus.stream-output`).
    pub stream_output: bool,
    pub timeout: Option<Duration>,
    pub state: ContainerState,
    /// Only an inspect gives the start time: `None` from
    /// [`ContainerRuntime::list_managed`], exact from
    /// [`ContainerRuntime::inspect_managed`] once the container started.
    pub started_at: Option<SystemTime>,
    /// When the container was created (whole seconds from a listing).
    pub created_at: Option<SystemTime>,
    /// The codex session the run resumes (`bus.session`).
    pub session: Option<SessionName>,
    /// When the container exited, by the engine's clock: only from an
    /// inspect (`None` from a listing, or while it has not exited). A
    /// tombstone's retention counts from it.
    pub finished_at: Option<SystemTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_read_back_from_names() {
        let id = RunId::parse("r1").unwrap();
        for mark in [RunMark::Live, RunMark::Deleted, RunMark::Answered] {
            let name = mark.container_name(&id);
            assert_eq!(RunMark::of(&name, &id), Some(mark), "{name}");
            assert_eq!(RunMark::split(&name), Some(("r1", mark)));
        }
        assert_eq!(RunMark::of("bus-run-r1.other", &id), None);
        assert_eq!(RunMark::of("bus-run-r2", &id), None);
        assert_eq!(RunMark::split("someone-else"), None);
        // A run id ending in a mark's suffix is still live under its own name.
        let odd = RunId::parse("x.deleted").unwrap();
        assert_eq!(RunMark::of("bus-run-x.deleted", &odd), Some(RunMark::Live));
        assert_eq!(
            RunMark::of("bus-run-x.deleted.deleted", &odd),
            Some(RunMark::Deleted)
        );
    }
}
