//! What a run produces: captured output, the outcome, and what status
//! reports about runs and the runner.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::ErrorCode;
use crate::ids::{ImageRef, OwnerId, ProfileName, RunId, SessionName};

/// Keeps the last `cap` bytes of a stream and counts all of them, so a
/// container printing gigabytes costs at most `cap` bytes of memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailBuffer {
    cap: usize,
    tail: VecDeque<u8>,
    total: u64,
}

impl TailBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            tail: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(self.cap);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }

    /// The captured tail as UTF-8, invalid bytes replaced.
    pub fn finish(self) -> CapturedOutput {
        let bytes: Vec<u8> = self.tail.into_iter().collect();
        let truncated = self.total > bytes.len() as u64;
        // Valid UTF-8 (the common case) moves without a copy.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        CapturedOutput {
            truncated,
            text,
            total_bytes: self.total,
        }
    }
}

/// One output stream of a finished run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The tail, UTF-8 with invalid bytes replaced.
    pub text: String,
    /// Every byte the container wrote to this stream.
    pub total_bytes: u64,
    /// Whether bytes were dropped from the front.
    pub truncated: bool,
}

impl CapturedOutput {
    /// Keep only the last `max` bytes of text (on a char boundary), for
    /// when a response would exceed the event size limit.
    pub fn shrink_to(&mut self, max: usize) {
        if self.text.len() <= max {
            return;
        }
        let mut start = self.text.len() - max;
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        self.text.drain(..start);
        self.truncated = true;
    }
}

/// How a container's run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The process exited by itself with this code.
    Exited(i64),
    /// The deadline passed and the worker killed it.
    TimedOut,
    /// A delete request or runner delete killed it.
    Canceled,
}

/// What the runtime observed of one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub ending: Ending,
    /// The exit code the engine reported, also after a kill.
    pub exit_code: Option<i64>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// The engine killed the container (or a process in it) for memory.
    pub oom_killed: bool,
}

impl Exit {
    /// Wall time from container start to exit.
    pub fn duration(&self) -> Option<Duration> {
        self.finished_at?.duration_since(self.started_at?).ok()
    }
}

/// The status of a finished run (`run.response.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Succeeded,
    Failed,
    TimedOut,
    Canceled,
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Canceled => "canceled",
            Self::Error => "error",
        }
    }

    /// The status of an ending, and the error code it carries (a non-zero
    /// exit is a result, not an error).
    pub fn of(ending: Ending) -> (Self, Option<ErrorCode>) {
        match ending {
            Ending::Exited(0) => (Self::Succeeded, None),
            Ending::Exited(_) => (Self::Failed, None),
            Ending::TimedOut => (Self::TimedOut, Some(ErrorCode::Timeout)),
            Ending::Canceled => (Self::Canceled, Some(ErrorCode::Canceled)),
        }
    }
}

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

/// The `runtime` object of a run response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeDetails {
    pub provider: String,
    /// The engine of the pool the run was placed on (its URL without
    /// credentials); `None` for the `static` provider.
    pub docker_host: Option<String>,
    pub engine_version: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
}

/// A full `run.response` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunReport {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub runner_name: String,
    pub profile: Option<ProfileName>,
    pub image: ImageRef,
    pub image_id: Option<String>,
    pub args: Vec<String>,
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub duration: Option<Duration>,
    /// The engine killed the container for memory.
    pub oom_killed: bool,
    pub runtime: RuntimeDetails,
    /// The codex session the run resumed (docs/protocol.md §6), echoed.
    pub session: Option<SessionName>,
}

/// Where a run is in its life (`status.response.items[].state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Queued,
    Creating,
    Running,
    Exited,
}

impl From<&crate::ports::ContainerState> for RunState {
    /// The engine's container state as a run state: created is still
    /// `creating`, anything not yet exited counts as `running`.
    fn from(state: &crate::ports::ContainerState) -> Self {
        use crate::ports::ContainerState;
        match state {
            ContainerState::Created => Self::Creating,
            ContainerState::Running | ContainerState::Other(_) => Self::Running,
            ContainerState::Exited => Self::Exited,
        }
    }
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Creating => "creating",
            Self::Running => "running",
            Self::Exited => "exited",
        }
    }
}

/// One item of a status response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    pub run_id: RunId,
    pub state: RunState,
    pub owner: Option<OwnerId>,
    pub image: Option<String>,
    pub profile: Option<String>,
    pub container_id: Option<String>,
    pub started_at: Option<SystemTime>,
    /// How a finished run ended (`state: exited`), while it is retained.
    pub finished: Option<Finished>,
}

/// The outcome of a finished run as `status` lists it during
/// `run_retention`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// `None` when only the engine's record is left and it cannot tell
    /// (another worker answered the run).
    pub status: Option<RunStatus>,
    pub exit_code: Option<i64>,
    pub finished_at: Option<SystemTime>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_buffer_keeps_the_tail_and_counts_everything() {
        let mut b = TailBuffer::new(4);
        b.push(b"ab");
        b.push(b"cdef");
        b.push(b"");
        b.push(b"g");
        let out = b.finish();
        assert_eq!(out.text, "defg");
        assert_eq!(out.total_bytes, 7);
        assert!(out.truncated);
    }

    #[test]
    fn tail_buffer_handles_chunks_larger_than_the_cap() {
        let mut b = TailBuffer::new(3);
        b.push(b"0123456789");
        let out = b.finish();
        assert_eq!(out.text, "789");
        assert_eq!(out.total_bytes, 10);
        let mut small = TailBuffer::new(10);
        small.push(b"ok");
        let out = small.finish();
        assert!(!out.truncated);
        assert_eq!(out.text, "ok");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut b = TailBuffer::new(10);
        b.push(&[b'a', 0xff, b'b']);
        assert_eq!(b.finish().text, "a\u{fffd}b");
    }

    #[test]
    fn shrink_keeps_a_char_boundary() {
        let mut o = CapturedOutput {
            text: "aéb".into(),
            total_bytes: 4,
            truncated: false,
        };
        o.shrink_to(2);
        assert_eq!(o.text, "b");
        assert!(o.truncated);
    }

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

    #[test]
    fn non_zero_exit_is_a_result_not_an_error() {
        assert_eq!(RunStatus::of(Ending::Exited(3)), (RunStatus::Failed, None));
        assert_eq!(RunStatus::of(Ending::TimedOut).1, Some(ErrorCode::Timeout));
    }
}
