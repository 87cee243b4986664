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

mod launcher;
mod record;
mod settle;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{ContainerCreateBody, ContainerSummary};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, ListContainersOptions, StartContainerOptions,
};
use bollard::Docker;
use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::container::ManagedContainer;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::warm::ParkedContainer;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::bodies::{container_body, ImageSeen};
use crate::error::DockerError;
use crate::labels;
use crate::output::Output;

pub(crate) use launcher::{behind_frame, frame, never_ran};
pub use launcher::{LAUNCHER, LAUNCHER_SHELL, NEVER_RAN, NEVER_RAN_STATUS};
pub(crate) use record::{read_record, skip_stdout, ReadRecord, Record};
pub(crate) use settle::settle_left_behind;

/// Name prefix of parked containers.
pub const PARKED_PREFIX: &str = "bus-warm-";

/// How long a claim waits for the launcher to copy the record back.
const ECHO_WAIT: Duration = Duration::from_secs(5);

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
    /// Containers between leaving `parked` and their claim's end.
    claiming: Mutex<HashSet<String>>,
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

    /// Take a parked container for a claim; it counts as busy until the
    /// claim ends (the caller removes it from `claiming`).
    fn take_for_claim(&self, id: &str) -> Option<Held> {
        locked(&self.claiming).insert(id.to_owned());
        let held = locked(&self.parked).remove(id);
        if held.is_none() {
            locked(&self.claiming).remove(id);
        }
        held
    }

    /// Whether this process holds the container or is claiming it.
    pub fn is_busy(&self, id: &str) -> bool {
        self.is_parked_here(id)
            || locked(&self.claiming).contains(id)
            || locked(&self.claimed).contains_key(id)
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
    let Some(held) = state.take_for_claim(&parked.id) else {
        return ClaimOutcome::NotHeld;
    };
    let outcome = claim_held(docker, state, parked, spec, held).await;
    locked(&state.claiming).remove(&parked.id);
    outcome
}

async fn claim_held(
    docker: &Docker,
    state: &WarmState,
    parked: &ContainerRef,
    spec: &RunSpec,
    mut held: Held,
) -> ClaimOutcome {
    let id = parked.id.as_str();
    let record = Record::of(spec);
    let line = record.line();
    if let Err(err) = write_record(&mut held, id, &line).await {
        remove_quietly(docker, id).await;
        return ClaimOutcome::Spoiled(err);
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

/// Step 1 of a claim: write the record line and wait for the launcher's
/// copy, so that the engine's log holds it.
async fn write_record(held: &mut Held, id: &str, line: &str) -> Result<(), DockerError> {
    let written = async {
        held.input.write_all(line.as_bytes()).await?;
        held.input.flush().await?;
        echoed(&mut held.output, line.len()).await
    }
    .await;
    written.map_err(|source| DockerError::Stdin {
        id: id.to_owned(),
        source,
    })
}

/// A claim cut off where a killed worker's would be: the record is
/// written and copied to the log, then the attach closes (as the killed
/// process's did) before the rename. For the tests of
/// [`settle_left_behind`].
#[cfg(feature = "testing")]
pub(crate) async fn interrupt_claim(
    state: &WarmState,
    parked: &ContainerRef,
    spec: &RunSpec,
) -> Result<(), DockerError> {
    let Some(mut held) = state.take_for_claim(&parked.id) else {
        return Err(DockerError::Vanished {
            id: parked.id.clone(),
        });
    };
    let written = write_record(&mut held, &parked.id, &Record::of(spec).line()).await;
    drop(held);
    locked(&state.claiming).remove(&parked.id);
    written
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
    Ok(list_filtered(docker, filters)
        .await?
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
    Ok(list_filtered(docker, run_name_filters(run_id, runner))
        .await?
        .iter()
        .filter_map(crate::records::from_summary)
        .filter(|m| m.run_id.as_str() == run_id)
        .collect())
}

/// Every container (running or not) passing `filters`, in one listing.
pub(crate) async fn list_filtered(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..ListContainersOptions::default()
    };
    docker
        .list_containers(Some(options))
        .await
        .map_err(|source| DockerError::List { source })
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
