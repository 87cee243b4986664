//! `StaticRuntime`: a deterministic, in-memory [`ContainerRuntime`] used by
//! `--provider static`, the self-test and the tests of everything above the
//! runtime port. It starts no processes; containers are entries in a map.
//!
//! What a run does is fixed by its command (docs/operating.md, "The static provider"):
//! * `exit N` exits with code N and no output;
//! * `sleep S` waits S seconds (honouring timeout and cancel), exit 0;
//! * `cat` copies stdin (text, or interactive input until `eof`) to stdout,
//!   each chunk as it arrives (live output gets it at once);
//! * anything else prints its arguments joined by spaces plus `\n`, exit 0.
//!
//! Images whose reference starts with `missing/` are absent and cannot be
//! pulled; every other image is present with id `sha256:<64 hex>` derived
//! from the reference.
//!
//! Like the Docker adapter: listings honour the filter and leave
//! `started_at` to `inspect_managed`; `kill` ends a running drive with
//! exit 137; `delete_run` renames the container `bus-run-<id>.deleted`
//! before it ends the drive, which then reports `Canceled`;
//! `mark_answered` renames it `.answered`. There is no process to signal,
//! so `stop_grace` does not delay anything and nothing is ever OOM-killed.
//!
//! Must not depend on any engine client.
//!
//! Layout: this file holds the runtime, its containers and the port;
//! `program.rs` what a run does by its command; `tests.rs` its unit tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bus_docker_domain::container::{ContainerRef, EngineInfo, RequestMounts, RunMark};
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};
use bus_docker_domain::output::TailBuffer;
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::{Ending, Exit};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::warm::ParkedContainer;
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};
use tokio::sync::{mpsc, oneshot};

use program::Stdout;

mod program;

/// The deterministic runtime. Cheap to clone; clones share state.
#[derive(Clone, Default)]
pub struct StaticRuntime {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Entry>,
    /// Parked containers of warm profiles (docs/protocol.md §10): no run yet, so
    /// never listed as one.
    parked: HashMap<String, ParkedContainer>,
    next_id: u64,
}

struct Entry {
    managed: ManagedContainer,
    stdin_open: bool,
    /// Input written by `write_input` for a running `cat`.
    input: Option<mpsc::UnboundedSender<InputChunk>>,
    /// Ends the running drive (a kill or a delete).
    halt: Option<oneshot::Sender<()>>,
    exit: Option<Exit>,
}

/// A deterministic image id: FNV-1a of the reference, repeated to 64 hex.
fn image_id(image: &ImageRef) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sha256:{h:016x}{h:016x}{h:016x}{h:016x}")
}

impl StaticRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stop a container: end its drive, or mark it exited when nothing
    /// drives it.
    fn halt(&self, id: &str) {
        if let Some(e) = self.lock().containers.get_mut(id) {
            match e.halt.take() {
                Some(halt) => {
                    let _ = halt.send(());
                }
                None if e.managed.state == ContainerState::Running => {
                    e.managed.state = ContainerState::Exited;
                }
                None => {}
            }
        }
    }

    /// Rename a container to carry `mark`; its old mark, `None` when gone.
    fn mark(&self, id: &str, mark: RunMark) -> Result<Option<RunMark>, RuntimeError> {
        let mut state = self.lock();
        let Some(before) = state.containers.get(id).map(|e| e.managed.mark) else {
            return Ok(None);
        };
        if before == mark || (mark == RunMark::Deleted && before == RunMark::Answered) {
            return Ok(Some(before));
        }
        let entry = &state.containers[id];
        let name = mark.container_name(&entry.managed.run_id);
        if state
            .containers
            .values()
            .any(|e| e.managed.container.name == name)
        {
            return Err(RuntimeError::NameConflict(name));
        }
        let entry = state.containers.get_mut(id).expect("checked above");
        entry.managed.container.name = name;
        entry.managed.mark = mark;
        Ok(Some(before))
    }
}

impl ContainerRuntime for StaticRuntime {
    fn provider(&self) -> &'static str {
        "static"
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        Ok(EngineInfo {
            engine_version: "static".into(),
            api_version: "static".into(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            // Nothing is mounted: request mounts are validated, not used.
            request_mounts: RequestMounts::Pinned,
        })
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        Ok(!image.as_str().starts_with("missing/"))
    }

    async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        if image.as_str().starts_with("missing/") {
            return Err(match policy {
                PullPolicy::Never => RuntimeError::ImageMissing(image.to_string()),
                _ => RuntimeError::PullFailed {
                    image: image.to_string(),
                    reason: "the static provider has no registry".into(),
                },
            });
        }
        Ok(ImageId::new(image_id(image)))
    }

    async fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        if image.as_str() != image_id(&spec.image) {
            return Err(RuntimeError::ImageMissing(image.to_string()));
        }
        let mut state = self.lock();
        let name = spec.container_name();
        if state
            .containers
            .values()
            .any(|e| e.managed.container.name == name)
        {
            return Err(RuntimeError::NameConflict(name));
        }
        state.next_id += 1;
        let container = ContainerRef::new(format!("static-{:012}", state.next_id), name);
        let managed = ManagedContainer {
            container: container.clone(),
            run_id: spec.run_id.clone(),
            mark: RunMark::Live,
            owner: spec.owner.clone(),
            correlation: Some(spec.correlation.clone()),
            reply_event: Some(spec.reply_event.clone()),
            runner: Some(runner.to_owned()),
            profile: spec.profile.clone(),
            image: spec.image.to_string(),
            image_id: Some(image_id(&spec.image)),
            args: spec.command.clone(),
            interactive: spec.interactive,
            stream_output: spec.stream_output,
            timeout: Some(spec.timeout),
            state: ContainerState::Created,
            started_at: None,
            created_at: Some(SystemTime::now()),
            session: spec.session().cloned(),
            finished_at: None,
        };
        state.containers.insert(
            container.id.clone(),
            Entry {
                managed,
                stdin_open: spec.interactive,
                input: None,
                halt: None,
                exit: None,
            },
        );
        Ok(container)
    }

    async fn drive(&self, container: &ContainerRef, io: RunIo) -> Result<Exit, RuntimeError> {
        let (halted_tx, halted) = oneshot::channel();
        let (args, started_at) = {
            let mut state = self.lock();
            let entry = state
                .containers
                .get_mut(&container.id)
                .ok_or_else(|| RuntimeError::ContainerGone(container.id.clone()))?;
            if let Some(exit) = &entry.exit {
                return Ok(exit.clone());
            }
            let started = *entry.managed.started_at.get_or_insert_with(SystemTime::now);
            entry.managed.state = ContainerState::Running;
            entry.halt = Some(halted_tx);
            (entry.managed.args.clone(), started)
        };
        let mut stdout = Stdout {
            tail: TailBuffer::new(io.max_output_bytes),
            sink: io.output,
        };
        let stderr = TailBuffer::new(io.max_output_bytes);
        let elapsed = SystemTime::now()
            .duration_since(started_at)
            .unwrap_or_default();
        let deadline = tokio::time::sleep(io.timeout.saturating_sub(elapsed));
        let mut cancel = io.cancel;
        let work = self.run(&container.id, &args, io.stdin, &mut stdout);
        let mut ending = tokio::select! {
            code = work => Ending::Exited(code),
            () = deadline => Ending::TimedOut,
            () = &mut cancel => Ending::Canceled,
            Ok(()) = halted => Ending::Exited(137),
        };
        let exit_code = match ending {
            Ending::Exited(c) => c,
            Ending::TimedOut | Ending::Canceled => 137,
        };
        let mut state = self.lock();
        let entry = state.containers.get_mut(&container.id);
        // Deleted by some worker: canceled, whoever drives it.
        if entry
            .as_ref()
            .is_some_and(|e| e.managed.mark == RunMark::Deleted)
        {
            ending = Ending::Canceled;
        }
        let exit = Exit {
            ending,
            exit_code: Some(exit_code),
            stdout: stdout.tail.finish(),
            stderr: stderr.finish(),
            started_at: Some(started_at),
            finished_at: Some(SystemTime::now()),
            oom_killed: false,
        };
        if let Some(e) = entry {
            e.managed.state = ContainerState::Exited;
            e.managed.finished_at = exit.finished_at;
            e.stdin_open = false;
            e.input = None;
            e.halt = None;
            e.exit = Some(exit.clone());
        }
        Ok(exit)
    }

    async fn kill(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        self.halt(&container.id);
        Ok(())
    }

    async fn remove(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        let mut state = self.lock();
        state.containers.remove(&container.id);
        state.parked.remove(&container.id);
        Ok(())
    }

    /// A parked container: held in memory, running nothing.
    async fn park(&self, template: &RunSpec, runner: &str) -> Result<ContainerRef, RuntimeError> {
        let mut state = self.lock();
        state.next_id += 1;
        let container = ContainerRef::new(
            format!("static-{:012}", state.next_id),
            format!("bus-warm-static-{}", state.next_id),
        );
        state.parked.insert(
            container.id.clone(),
            ParkedContainer {
                container: container.clone(),
                profile: template.profile.clone(),
                runner: Some(runner.to_owned()),
                state: ContainerState::Running,
                created_at: Some(SystemTime::now()),
                claimable: true,
            },
        );
        Ok(container)
    }

    async fn list_parked(&self, runner: &str) -> Result<Vec<ParkedContainer>, RuntimeError> {
        let mut list: Vec<_> = self
            .lock()
            .parked
            .values()
            .filter(|p| p.runner.as_deref() == Some(runner))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.container.id.cmp(&b.container.id));
        Ok(list)
    }

    /// The parked container becomes the run's (renamed, with its facts);
    /// its start, for times and the deadline, is now.
    async fn claim(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ContainerRef, RuntimeError> {
        let runner = {
            let mut state = self.lock();
            let Some(p) = state.parked.remove(&parked.id) else {
                return Err(RuntimeError::ContainerGone(parked.id.clone()));
            };
            p.runner.unwrap_or_default()
        };
        let image = self.ensure_image(&spec.image, spec.pull_policy).await?;
        let created = self.create(spec, &runner, &image).await?;
        let mut state = self.lock();
        let mut entry = state
            .containers
            .remove(&created.id)
            .ok_or_else(|| RuntimeError::ContainerGone(created.id.clone()))?;
        entry.managed.container.id.clone_from(&parked.id);
        entry.managed.started_at = Some(SystemTime::now());
        let claimed = ContainerRef::new(parked.id.clone(), created.name);
        state.containers.insert(parked.id.clone(), entry);
        Ok(claimed)
    }

    async fn list_managed(
        &self,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let mut list: Vec<_> = self
            .lock()
            .containers
            .values()
            .filter(|e| filter.matches(&e.managed))
            // As from the engine's list: the start time needs an inspect.
            .map(|e| ManagedContainer {
                started_at: None,
                finished_at: None,
                ..e.managed.clone()
            })
            .collect();
        list.sort_by(|a, b| a.container.id.cmp(&b.container.id));
        Ok(list)
    }

    async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        self.lock()
            .containers
            .get(&container.id)
            .map(|e| e.managed.clone())
            .ok_or_else(|| RuntimeError::ContainerGone(container.id.clone()))
    }

    async fn delete_run(
        &self,
        container: &ContainerRef,
        _grace: Duration,
    ) -> Result<(), RuntimeError> {
        match self.mark(&container.id, RunMark::Deleted) {
            Ok(Some(RunMark::Answered) | None) => return Ok(()),
            Ok(Some(_)) | Err(RuntimeError::NameConflict(_)) => {}
            Err(err) => return Err(err),
        }
        self.halt(&container.id);
        Ok(())
    }

    async fn mark_answered(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        self.mark(&container.id, RunMark::Answered).map(|_| ())
    }

    async fn write_input(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> Result<(), RuntimeError> {
        let state = self.lock();
        let entry = state
            .containers
            .get(&container.id)
            .ok_or_else(|| RuntimeError::ContainerGone(container.id.clone()))?;
        match (&entry.input, entry.stdin_open) {
            (Some(tx), true) => tx
                .send(chunk)
                .map_err(|_| RuntimeError::NotAcceptingInput(container.id.clone())),
            _ => Err(RuntimeError::NotAcceptingInput(container.id.clone())),
        }
    }
}

#[cfg(test)]
mod tests;
