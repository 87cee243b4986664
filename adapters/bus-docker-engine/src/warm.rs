//! Warm start (docs/protocol.md §10): parked containers, the launcher inside
//! them, the claim, and the claim record the engine keeps.
//!
//! # The launcher
//!
//! A parked container runs [`LAUNCHER`], a fixed POSIX `sh` script, as its
//! entrypoint (`/bin/sh -c LAUNCHER bus-launch`); the worker holds the
//! container's stdin and output from the moment it parks it (created with
//! `OpenStdin` and `StdinOnce`, attached before start). The script reads
//! only builtins' worth of data from stdin, and nothing a request sends is
//! ever interpolated into code: every value arrives as counted lines
//! (`n`, then `n` lines joined with newlines), is kept in shell variables
//! and positional parameters, and reaches `cd --`, `export "$1"` and
//! `exec "$@"` as single words. In order:
//!
//! 1. one line, the claim record, which the script copies to its stdout at
//!    once (so the engine's log of the container starts with it);
//! 2. after the worker renamed the container (the claim): the workdir
//!    (empty: the image's or the profile's), the env count and each
//!    `KEY=value`, the argument count and each argument (the image's
//!    entrypoint first, as the engine would run it);
//! 3. the run's own stdin, which the command inherits: `read` takes one
//!    byte at a time from a pipe, so nothing of it is consumed.
//!
//! The script changes to the workdir (creating it with `mkdir -p` when the
//! image has one, as the engine would), exports the env and `exec`s the
//! command, which so becomes the container's main process: its exit code,
//! signals, OOM kill and output are the container's, as in a cold run. A
//! parked container whose worker went away sees its stdin close and exits
//! without running anything; one claimed by a worker that went away before
//! handing it the command exits [`NEVER_RAN_STATUS`] saying [`NEVER_RAN`],
//! and its run is answered `error` (the command never ran). An image without `/bin/sh` cannot be parked:
//! [`park`] refuses it, naming why.
//!
//! # The claim and its record
//!
//! Labels are fixed at create, so a parked container carries only the
//! profile's (`bus.warm`, `bus.runner`, `bus.profile`, `bus.image`) and no
//! run. A claim (1) writes the record line and waits for the launcher's
//! copy to come back on the container's stdout: from then on the engine's
//! log holds the run's facts, stamped with the engine's time; (2) renames
//! the container `bus-run-<run_id>`: the durable claim, unique per engine.
//! A reader (another worker, a restarted one) takes the run id and mark
//! from the name as for any run, and owner, correlation, reply event,
//! command, timeout and the claim time from the first line of the log
//! ([`read_record`]). The run cannot forge it: the launcher wrote it
//! before the command existed, and only the first line counts. The record
//! line is held back from the run's output ([`skip_stdout`]).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, LogsOptions,
    StartContainerOptions,
};
use bollard::Docker;
use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::container::ManagedContainer;
use bus_docker_domain::ports::Stdin;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::warm::ParkedContainer;
use bus_docker_domain::{CorrelationId, OwnerId};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::bodies::{container_body, engine_time, ImageSeen};
use crate::error::DockerError;
use crate::labels;
use crate::output::Output;

/// The launcher (see the module docs). Variables carry a `__bl_` prefix so
/// that they do not clobber the image's environment; the export loop keeps
/// its count in a positional parameter, which no `export` can change.
pub const LAUNCHER: &str = r#"IFS= read -r __bl_rec || exit 0
printf '%s\n' "$__bl_rec"
__bl_gone() {
  printf '%s\n' "$__bl_gone_msg" >&2
  exit 125
}
__bl_gone_msg='bus-launch: stdin ended before the command was handed over; nothing ran'
__bl_v() {
  IFS= read -r __bl_n || __bl_gone
  __bl_val=
  __bl_i=0
  while [ "$__bl_i" -lt "$__bl_n" ]; do
    IFS= read -r __bl_l || __bl_gone
    if [ "$__bl_i" -eq 0 ]; then __bl_val=$__bl_l; else __bl_val="$__bl_val
$__bl_l"; fi
    __bl_i=$((__bl_i + 1))
  done
}
__bl_v
__bl_wd=$__bl_val
__bl_v
__bl_ne=$__bl_val
set --
__bl_k=0
while [ "$__bl_k" -lt "$__bl_ne" ]; do __bl_v; set -- "$@" "$__bl_val"; __bl_k=$((__bl_k + 1)); done
__bl_v
__bl_na=$__bl_val
__bl_k=0
while [ "$__bl_k" -lt "$__bl_na" ]; do __bl_v; set -- "$@" "$__bl_val"; __bl_k=$((__bl_k + 1)); done
if [ -n "$__bl_wd" ]; then
  cd -- "$__bl_wd" 2>/dev/null || { mkdir -p -- "$__bl_wd" 2>/dev/null && cd -- "$__bl_wd"; } || {
    printf 'bus-launch: cannot change to the workdir %s\n' "$__bl_wd" >&2
    exit 126
  }
fi
set -- "$__bl_ne" "$@"
while [ "$1" -gt 0 ]; do export "$2"; __bl_c=$(($1 - 1)); shift 2; set -- "$__bl_c" "$@"; done
shift
exec "$@"
"#;

/// What the launcher writes to stderr (with exit status
/// [`NEVER_RAN_STATUS`]) when its stdin ends after the claim record and
/// before the command: the worker that claimed it went away in between.
pub const NEVER_RAN: &str =
    "bus-launch: stdin ended before the command was handed over; nothing ran";
/// The launcher's exit status then.
pub const NEVER_RAN_STATUS: i64 = 125;

/// Whether a warm run's exit is the launcher's "nothing ran".
pub(crate) fn never_ran(exit: &bus_docker_domain::run::Exit) -> bool {
    exit.exit_code == Some(NEVER_RAN_STATUS) && exit.stderr.text.trim_end() == NEVER_RAN
}

/// The shell the launcher needs in the image.
pub const LAUNCHER_SHELL: &str = "/bin/sh";

/// What starts a claim record line in the log.
const RECORD_TAG: &str = "bus-warm-claim ";

/// Name prefix of parked containers.
pub const PARKED_PREFIX: &str = "bus-warm-";

/// How long a claim waits for the launcher to copy the record back.
const ECHO_WAIT: Duration = Duration::from_secs(5);

/// The facts of a claimed run, as its record line holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub correlation: String,
    pub reply_event: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub stream_output: bool,
    pub timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A record read back: the facts, when the engine logged it (the claim),
/// and its length in the container's stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadRecord {
    pub record: Record,
    pub claimed_at: SystemTime,
    pub len: u64,
}

impl ReadRecord {
    /// Put the run's facts into a container read back from its name and
    /// the profile's labels; `false` when the record is of another run.
    pub fn fill(&self, m: &mut ManagedContainer) -> bool {
        if self.record.run_id != m.run_id.as_str() {
            return false;
        }
        let r = &self.record;
        m.owner = r.owner.as_deref().and_then(|o| OwnerId::parse(o).ok());
        m.correlation = CorrelationId::parse(&r.correlation).ok();
        m.reply_event = Some(r.reply_event.clone());
        m.args.clone_from(&r.args);
        m.interactive = r.interactive;
        m.stream_output = r.stream_output;
        m.timeout = Some(Duration::from_secs(r.timeout_seconds));
        if m.state != bus_docker_domain::container::ContainerState::Created {
            m.started_at = Some(self.claimed_at);
        }
        true
    }
}

impl Record {
    pub fn of(spec: &RunSpec) -> Self {
        Self {
            run_id: spec.run_id.as_str().to_owned(),
            owner: spec.owner.as_ref().map(|o| o.as_str().to_owned()),
            correlation: spec.correlation.as_str().to_owned(),
            reply_event: spec.reply_event.clone(),
            args: labels::capped_args(&spec.command),
            interactive: spec.interactive,
            stream_output: spec.stream_output,
            timeout_seconds: spec.timeout.as_secs(),
            labels: spec.labels.clone(),
        }
    }

    /// The line the launcher copies to the log (JSON escapes newlines).
    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).expect("a record always serialises");
        format!("{RECORD_TAG}{json}\n")
    }
}

/// Parse the first stdout entry of a log read with timestamps:
/// `<RFC 3339 time> bus-warm-claim {json}\n`.
pub(crate) fn parse_logged(entry: &[u8]) -> Option<ReadRecord> {
    let text = std::str::from_utf8(entry).ok()?;
    let (stamp, line) = text.split_once(' ')?;
    let json = line.strip_prefix(RECORD_TAG)?.strip_suffix('\n')?;
    let record: Record = serde_json::from_str(json).ok()?;
    Some(ReadRecord {
        record,
        claimed_at: engine_time(Some(stamp))?,
        len: line.len() as u64,
    })
}

/// One value as the launcher reads it: its line count, then its lines.
fn counted(out: &mut Vec<u8>, value: &str) {
    let lines: Vec<&str> = value.split('\n').collect();
    out.extend_from_slice(format!("{}\n", lines.len()).as_bytes());
    for line in lines {
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
}

/// The command frame for the launcher (step 2 of the module docs).
pub(crate) fn frame(spec: &RunSpec, entrypoint: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    counted(&mut out, spec.workdir.as_ref().map_or("", |w| w.as_str()));
    counted(&mut out, &spec.env.len().to_string());
    for (k, v) in &spec.env {
        counted(&mut out, &format!("{k}={v}"));
    }
    let argc = entrypoint.len() + spec.command.len();
    counted(&mut out, &argc.to_string());
    for arg in entrypoint.iter().chain(&spec.command) {
        counted(&mut out, arg);
    }
    out
}

/// The run's stdin behind the launcher's frame. Stdin is always closed
/// after it (a cold run without stdin reads `/dev/null`; here the
/// launcher's pipe must end).
pub(crate) fn behind_frame(frame: Vec<u8>, stdin: Stdin) -> Stdin {
    match stdin {
        Stdin::Closed => Stdin::Text(frame),
        Stdin::Text(text) => {
            let mut all = frame;
            all.extend_from_slice(&text);
            Stdin::Text(all)
        }
        Stdin::Interactive(initial, rest) => {
            let mut all = frame;
            all.extend_from_slice(&initial.unwrap_or_default());
            Stdin::Interactive(Some(all), rest)
        }
    }
}

/// The container's output without its first `n` stdout bytes (the claim
/// record, in a replayed log).
pub(crate) fn skip_stdout(output: Output, n: u64) -> Output {
    if n == 0 {
        return output;
    }
    Box::pin(SkipStdout {
        inner: output,
        left: n,
    })
}

struct SkipStdout {
    inner: Output,
    left: u64,
}

impl Stream for SkipStdout {
    type Item = <Output as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            };
            let left = self.left;
            match item {
                Some(Ok(LogOutput::StdOut { message })) if left > 0 => {
                    let cut = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(message.len());
                    self.left -= cut as u64;
                    if cut < message.len() {
                        return Poll::Ready(Some(Ok(LogOutput::StdOut {
                            message: message.slice(cut..),
                        })));
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

type Input = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// A parked container this process holds: its attach, and the image's
/// entrypoint (the launcher runs it before the command, as the engine
/// would).
struct Held {
    output: Output,
    input: Input,
    entrypoint: Vec<String>,
    runner: String,
}

/// A claimed container, handed to its first drive.
pub(crate) struct Claimed {
    pub output: Output,
    pub input: Input,
    pub frame: Vec<u8>,
    pub claimed_at: SystemTime,
}

/// What this process holds of warm containers.
#[derive(Default)]
pub(crate) struct WarmState {
    parked: Mutex<HashMap<String, Held>>,
    claimed: Mutex<HashMap<String, Claimed>>,
    /// Records read back (or written) by container id; `None`: the
    /// container has none (its log does not start with one).
    records: Mutex<HashMap<String, Option<ReadRecord>>>,
    names: AtomicU64,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WarmState {
    pub fn take_claimed(&self, id: &str) -> Option<Claimed> {
        locked(&self.claimed).remove(id)
    }

    pub fn is_parked_here(&self, id: &str) -> bool {
        locked(&self.parked).contains_key(id)
    }

    pub fn record(&self, id: &str) -> Option<Option<ReadRecord>> {
        locked(&self.records).get(id).cloned()
    }

    pub fn remember(&self, id: &str, record: Option<ReadRecord>) {
        locked(&self.records).insert(id.to_owned(), record);
    }

    /// The container is gone: drop what is held of it.
    pub fn forget(&self, id: &str) {
        locked(&self.parked).remove(id);
        locked(&self.claimed).remove(id);
        locked(&self.records).remove(id);
    }

    fn next_name(&self, profile: &str) -> String {
        let n = self.names.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{PARKED_PREFIX}{profile}-{:x}{:05x}-{n}",
            now.as_secs(),
            now.subsec_micros()
        )
    }
}

/// The create body of a parked container: the run body of the profile's
/// template, with the launcher as entrypoint, stdin open, and no run in
/// its labels (the run-specific ones blanked: empty reads as absent).
pub(crate) fn park_body(
    template: &RunSpec,
    runner: &str,
    image: &ImageSeen,
) -> ContainerCreateBody {
    let mut body = container_body(template, runner, image, template.image.as_str());
    body.entrypoint = Some(vec![
        LAUNCHER_SHELL.to_owned(),
        "-c".to_owned(),
        LAUNCHER.to_owned(),
        "bus-launch".to_owned(),
    ]);
    body.cmd = Some(Vec::new());
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    let mut labels = body.labels.take().unwrap_or_default();
    for key in [
        labels::RUN_ID,
        labels::OWNER,
        labels::CORRELATION,
        labels::REPLY_EVENT,
        labels::ARGS,
        labels::INTERACTIVE,
        labels::STREAM_OUTPUT,
        labels::TIMEOUT_SECONDS,
    ] {
        labels.insert(key.to_owned(), String::new());
    }
    labels.retain(|k, _| !k.starts_with(labels::USER_PREFIX));
    let profile = template.profile.as_ref().map_or("", |p| p.as_str());
    labels.insert(labels::WARM.to_owned(), profile.to_owned());
    body.labels = Some(labels);
    body
}

/// Park one container from `template`: create, attach, start. Returns its
/// id and name. A start the engine refuses (no `/bin/sh`) removes the
/// container and is reported as such.
pub(crate) async fn park(
    docker: &Docker,
    state: &WarmState,
    template: &RunSpec,
    runner: &str,
) -> Result<Result<ContainerRef, String>, DockerError> {
    let image = match docker.inspect_image(template.image.as_str()).await {
        Ok(info) => info,
        Err(source) => {
            return Err(DockerError::InspectImage {
                image: template.image.to_string(),
                source,
            })
        }
    };
    let config = image.config.unwrap_or_default();
    let seen = ImageSeen {
        id: image.id.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
    };
    let entrypoint = config.entrypoint.unwrap_or_default();
    let profile = template.profile.as_ref().map_or("x", |p| p.as_str());
    let name = state.next_name(profile);
    let options = CreateContainerOptions {
        name: Some(name.clone()),
        ..CreateContainerOptions::default()
    };
    let created = docker
        .create_container(Some(options), park_body(template, runner, &seen))
        .await
        .map_err(|source| DockerError::Create {
            name: name.clone(),
            image: template.image.to_string(),
            source,
        })?;
    let id = created.id;
    let attach = AttachContainerOptions {
        stream: true,
        logs: false,
        stdin: true,
        stdout: true,
        stderr: true,
        detach_keys: None,
    };
    let attached = docker
        .attach_container(&id, Some(attach))
        .await
        .map_err(|source| DockerError::Attach {
            id: id.clone(),
            source,
        });
    let AttachContainerResults { output, input } = match attached {
        Ok(a) => a,
        Err(err) => {
            remove_quietly(docker, &id).await;
            return Err(err);
        }
    };
    if let Err(source) = docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
    {
        remove_quietly(docker, &id).await;
        let err = DockerError::Start {
            id: id.clone(),
            source,
        };
        if err.class() == crate::error::Class::Other {
            return Ok(Err(format!(
                "image {} cannot be parked: the launcher needs {LAUNCHER_SHELL} ({})",
                template.image,
                crate::error::cause_chain(&err)
            )));
        }
        return Err(err);
    }
    locked(&state.parked).insert(
        id.clone(),
        Held {
            output,
            input,
            entrypoint,
            runner: runner.to_owned(),
        },
    );
    tracing::debug!(container = %name, "parked a warm container");
    Ok(Ok(ContainerRef::new(id, name)))
}

async fn remove_quietly(docker: &Docker, id: &str) {
    let options = bollard::query_parameters::RemoveContainerOptions {
        force: true,
        v: true,
        link: false,
    };
    if let Err(err) = docker.remove_container(id, Some(options)).await {
        tracing::warn!(container = id, error = %err, "could not remove a warm container");
    }
}

/// What a claim came to.
pub(crate) enum ClaimOutcome {
    /// Claimed: renamed `bus-run-<id>`; its first drive starts the command.
    /// With the runner that parked it (for the view).
    Claimed(ContainerRef, String),
    /// Not held by this process (or already claimed): untouched.
    NotHeld,
    /// The record is written but the claim failed (the name is taken, the
    /// launcher did not answer): the container was removed.
    Spoiled(DockerError),
}

/// Claim `parked` for `spec` (the module docs, "The claim").
pub(crate) async fn claim(
    docker: &Docker,
    state: &WarmState,
    parked: &ContainerRef,
    spec: &RunSpec,
) -> ClaimOutcome {
    let Some(mut held) = locked(&state.parked).remove(&parked.id) else {
        return ClaimOutcome::NotHeld;
    };
    let id = parked.id.as_str();
    let record = Record::of(spec);
    let line = record.line();
    let written = async {
        held.input.write_all(line.as_bytes()).await?;
        held.input.flush().await
    }
    .await;
    if let Err(source) = written {
        remove_quietly(docker, id).await;
        return ClaimOutcome::Spoiled(DockerError::Stdin {
            id: id.to_owned(),
            source,
        });
    }
    if let Err(source) = echoed(&mut held.output, line.len()).await {
        remove_quietly(docker, id).await;
        return ClaimOutcome::Spoiled(DockerError::Stdin {
            id: id.to_owned(),
            source,
        });
    }
    let claimed_at = SystemTime::now();
    let name = spec.container_name();
    match crate::control::rename(docker, id, &name).await {
        Ok(true) => {}
        Ok(false) => {
            return ClaimOutcome::Spoiled(DockerError::Vanished { id: id.to_owned() });
        }
        Err(err) => {
            remove_quietly(docker, id).await;
            return ClaimOutcome::Spoiled(err);
        }
    }
    state.remember(
        id,
        Some(ReadRecord {
            record,
            claimed_at,
            len: line.len() as u64,
        }),
    );
    locked(&state.claimed).insert(
        id.to_owned(),
        Claimed {
            output: held.output,
            input: held.input,
            frame: frame(spec, &held.entrypoint),
            claimed_at,
        },
    );
    ClaimOutcome::Claimed(ContainerRef::new(id, name), held.runner)
}

/// Wait until `len` bytes came back on stdout: the launcher copied the
/// record, so the engine's log holds it.
async fn echoed(output: &mut Output, len: usize) -> std::io::Result<()> {
    let mut seen = 0;
    let reading = async {
        while seen < len {
            match output.next().await {
                Some(Ok(LogOutput::StdOut { message })) => seen += message.len(),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(std::io::Error::other(err)),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the launcher ended before copying the claim record",
                    ))
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(ECHO_WAIT, reading).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the launcher did not copy the claim record",
        )),
    }
}

/// The claim record at the head of a container's log; `None` when its log
/// does not start with one (never claimed, or not a warm container).
pub(crate) async fn read_record(
    docker: &Docker,
    id: &str,
) -> Result<Option<ReadRecord>, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: false,
        follow: false,
        timestamps: true,
        ..LogsOptions::default()
    };
    let mut logs = docker.logs(id, Some(options));
    match logs.next().await {
        Some(Ok(LogOutput::StdOut { message })) => Ok(parse_logged(&message)),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(source)) => Err(DockerError::Logs {
            id: id.to_owned(),
            source,
        }),
    }
}

/// The unclaimed parked containers of `runner`, from one listing.
pub(crate) async fn list_parked(
    docker: &Docker,
    state: &WarmState,
    runner: &str,
) -> Result<Vec<ParkedContainer>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
            format!("{}={runner}", labels::RUNNER),
            labels::WARM.to_owned(),
        ],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..ListContainersOptions::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|source| DockerError::List { source })?;
    Ok(listed
        .into_iter()
        .filter_map(|c| {
            let name = c
                .names
                .as_ref()?
                .first()?
                .trim_start_matches('/')
                .to_owned();
            if !name.starts_with(PARKED_PREFIX) {
                return None;
            }
            let id = c.id?;
            let labels = c.labels.unwrap_or_default();
            let get = |k: &str| labels.get(k).filter(|v| !v.is_empty()).cloned();
            Some(ParkedContainer {
                claimable: state.is_parked_here(&id),
                container: ContainerRef::new(id, name),
                profile: get(labels::WARM)
                    .and_then(|p| bus_docker_domain::ProfileName::parse(&p).ok()),
                runner: get(labels::RUNNER),
                state: crate::records::listed_state(c.state),
                created_at: c
                    .created
                    .and_then(|s| u64::try_from(s).ok())
                    .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
            })
        })
        .collect())
}

/// The claimed warm containers named like run `run_id` (a fresh listing
/// by run id cannot filter on a `bus.run-id` label they do not carry);
/// their facts still need their records.
pub(crate) async fn list_by_run_name(
    docker: &Docker,
    run_id: &str,
    runner: Option<&str>,
) -> Result<Vec<ManagedContainer>, DockerError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(run_name_filters(run_id, runner)),
        ..ListContainersOptions::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|source| DockerError::List { source })?;
    Ok(listed
        .iter()
        .filter_map(crate::records::from_summary)
        .filter(|m| m.run_id.as_str() == run_id)
        .collect())
}

fn run_name_filters(run_id: &str, runner: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![
        format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        labels::WARM.to_owned(),
    ];
    if let Some(runner) = runner {
        labels.push(format!("{}={runner}", labels::RUNNER));
    }
    // `name` is a pattern: the listing is narrowed again by the run id
    // read back from each name.
    HashMap::from([
        ("label".to_owned(), labels),
        ("name".to_owned(), vec![format!("bus-run-{run_id}")]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;
    use tokio_util::bytes::Bytes;

    #[test]
    fn the_frame_counts_lines_so_any_value_survives() {
        let mut spec = test_spec();
        spec.command = vec![
            "printf".into(),
            "a\nb\\n $(x) `y` '\"".into(),
            String::new(),
        ];
        spec.env = BTreeMap::from([("K".to_owned(), "v\nw".to_owned())]);
        let frame = String::from_utf8(frame(&spec, &["/ep".to_owned()])).unwrap();
        assert_eq!(
            frame,
            "1\n\n1\n1\n2\nK=v\nw\n1\n4\n1\n/ep\n1\nprintf\n2\na\nb\\n $(x) `y` '\"\n1\n\n"
        );
    }

    #[test]
    fn a_record_round_trips_through_the_log() {
        let spec = test_spec();
        let line = Record::of(&spec).line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let logged = format!("2026-12-02T05:00:01.250000000Z {line}");
        let read = parse_logged(logged.as_bytes()).unwrap();
        assert_eq!(read.record, Record::of(&spec));
        assert_eq!(read.len, line.len() as u64);
        assert_eq!(
            Some(read.claimed_at),
            engine_time(Some("2026-12-02T05:00:01.250000000Z"))
        );
        assert!(parse_logged(b"2026-12-02T05:00:01Z hello\n").is_none());
    }

    #[tokio::test]
    async fn the_record_is_held_back_from_the_output() {
        let items: Vec<Result<LogOutput, bollard::errors::Error>> = vec![
            Ok(LogOutput::StdErr {
                message: Bytes::from("e"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from("rec"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from("ord\nout"),
            }),
        ];
        let out = skip_stdout(Box::pin(futures_util::stream::iter(items)), 7);
        let got: Vec<String> = out
            .map(|i| match i.unwrap() {
                LogOutput::StdOut { message } => format!("o:{}", String::from_utf8_lossy(&message)),
                LogOutput::StdErr { message } => format!("e:{}", String::from_utf8_lossy(&message)),
                _ => String::new(),
            })
            .collect()
            .await;
        assert_eq!(got, ["e:e", "o:out"]);
    }

    #[test]
    fn a_parked_body_runs_the_launcher_and_carries_no_run() {
        let spec = test_spec();
        let body = park_body(&spec, "docker@h", &ImageSeen::default());
        let ep = body.entrypoint.unwrap();
        assert_eq!(ep[0], "/bin/sh");
        assert_eq!(ep[2], LAUNCHER);
        assert_eq!(body.cmd, Some(Vec::new()));
        assert_eq!((body.open_stdin, body.stdin_once), (Some(true), Some(true)));
        let labels = body.labels.unwrap();
        assert_eq!(labels[labels::WARM], "codex");
        assert_eq!(labels[labels::RUN_ID], "");
        assert_eq!(labels[labels::CORRELATION], "");
        assert_eq!(labels[labels::RUNNER], "docker@h");
        assert!(!labels.keys().any(|k| k.starts_with(labels::USER_PREFIX)));
    }
}
