//! [`DockerEngine`]: the [`ContainerRuntime`] port over the Docker Engine
//! API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use bus_docker_domain::container::{
    ContainerRef, EngineInfo, RequestMounts, RunMark, SessionUsage, SessionsSwept,
};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::warm::{ParkedContainer, SettledParked};
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};

use crate::bodies::{container_body, ImageSeen};
use crate::client::{Connection, EngineOptions};
use crate::control::{self, Killed};
use crate::drive;
use crate::error::{classify, Class, DockerError};
use crate::images::{self, Images, Unready};
use crate::input::{InputError, InputSessions};
use crate::labels::{self, Listed};
use crate::pinning::Pinning;
use crate::records::{self, Marked};
use crate::registry::ClientConfig;
use crate::view::{self, View};
use crate::warm::{self, ClaimOutcome};

/// The Docker Engine as a [`ContainerRuntime`].
///
/// Connecting builds nothing that needs the engine: every call negotiates
/// on demand and answers `Unavailable` while the engine is away. Clones
/// share the connection and the held stdin attaches; those are released
/// when the last clone is dropped.
#[derive(Clone)]
pub struct DockerEngine {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Connection,
    inputs: InputSessions,
    /// Images seen present (`images.rs`). (`create` still reads the
    /// image once, fresh: its labels and id must be the ones that run.)
    images: Images,
    /// Containers this process created and has not driven yet, with
    /// whether their stdin is open: their first drive skips an inspect.
    created: std::sync::Mutex<HashMap<String, bool>>,
    pins: Pinning,
    /// Managed containers kept from the engine's events (`view.rs`):
    /// listings are answered from it while its stream is connected.
    view: View,
    /// Listings that asked the engine (`GET /containers/json`).
    list_calls: AtomicU64,
    /// Containers this process created with a per-run Codex home, and
    /// that home's volume: removed after the container (`codex_home.rs`).
    homes: std::sync::Mutex<HashMap<String, String>>,
    /// Parked and claimed warm containers this process holds (`warm.rs`).
    warm: warm::WarmState,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("host", &self.inner.conn.host())
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "testing")]
impl DockerEngine {
    /// Cut a claim of `parked` for `spec` off where a worker killed between
    /// the claim record and the rename would leave it (docs/protocol.md
    /// §10): the record is in the engine's log, the name is still the
    /// parked one, and the launcher's stdin is closed. Tests only.
    ///
    /// # Errors
    /// `ContainerGone` when this process does not hold `parked`; what
    /// writing the record met.
    pub async fn interrupt_claim(
        &self,
        parked: &ContainerRef,
        spec: &bus_docker_domain::spec::RunSpec,
    ) -> Result<(), RuntimeError> {
        match warm::interrupt_claim(&self.inner.warm, parked, spec).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }
}

impl DockerEngine {
    /// A runtime for the engine at `opts.docker_host` (else `DOCKER_HOST`,
    /// else the local socket). Succeeds while the engine is down.
    ///
    /// # Errors
    /// `DockerError::Connect` when the host cannot be used at all: an
    /// unsupported scheme, or TLS material that cannot be read;
    /// `DockerError::Staging` when the mount staging directory is unsafe.
    pub fn connect(opts: EngineOptions) -> Result<Self, DockerError> {
        let conn = Connection::new(&opts)?;
        let pins = Pinning::new(
            conn.host(),
            opts.mount_staging_dir.as_deref(),
            &opts.allowed_mount_roots,
            &opts.protected_paths,
        )
        .map_err(|source| DockerError::Staging { source })?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                pins,
                inputs: InputSessions::new(),
                images: Images::new(
                    ClientConfig::locate(opts.docker_config_dir.as_deref()),
                    opts.pull_timeout,
                ),
                created: std::sync::Mutex::new(HashMap::new()),
                view: View::new(),
                list_calls: AtomicU64::new(0),
                homes: std::sync::Mutex::new(HashMap::new()),
                warm: warm::WarmState::default(),
            }),
        })
    }

    /// The Docker host this engine talks to.
    pub fn host(&self) -> &str {
        self.inner.conn.host()
    }

    /// Whether request mounts are pinned or refused (and why); also in
    /// `engine_info`.
    pub fn request_mounts(&self) -> RequestMounts {
        self.inner.pins.describe()
    }

    /// Request-mount pins held by containers this process created (for
    /// tests: each is released when its own container is removed).
    #[doc(hidden)]
    pub fn held_pins(&self) -> usize {
        self.inner.pins.held_pins()
    }

    /// Stdin connections held for runs other workers drive.
    pub fn held_inputs(&self) -> usize {
        self.inner.inputs.held()
    }

    /// How many listings asked the engine itself rather than the view kept
    /// from its events (for tests and benchmarks).
    #[doc(hidden)]
    pub fn list_calls(&self) -> u64 {
        self.inner.list_calls.load(Ordering::Relaxed)
    }

    /// Whether listings are answered from the view kept from the engine's
    /// events right now (for tests).
    #[doc(hidden)]
    pub fn view_synced(&self) -> bool {
        self.inner.view.is_synced()
    }

    /// One listing asked of the engine.
    async fn list_engine(
        &self,
        docker: &Docker,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, DockerError> {
        self.inner.list_calls.fetch_add(1, Ordering::Relaxed);
        records::list(docker, filter).await
    }

    /// The container now carries `name` (a mark this worker set).
    fn view_renamed(&self, id: &str, name: &str) {
        self.inner.view.write(id, |entries| {
            if let Some(known) = entries.get_mut(id) {
                view::renamed(known, name);
            }
        });
    }

    fn view_removed(&self, id: &str) {
        self.inner.view.write(id, |entries| {
            entries.remove(id);
        });
    }

    async fn docker(&self) -> Result<Docker, RuntimeError> {
        match self.inner.conn.client().await {
            Ok(docker) => Ok(docker),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// Translate an error; an unreachable engine is probed again next time.
    async fn fail(&self, err: DockerError) -> RuntimeError {
        if err.is_unreachable() {
            self.inner.conn.forget().await;
        }
        err.into_runtime()
    }

    /// Create the run's container from `checked` (the id `ensure_image`
    /// gave): from the run's reference, so that `docker ps` shows it, and
    /// when the engine resolved the reference to another image (a tag
    /// moved since the check) or could not resolve it (the reference was
    /// removed), created again from the id.
    async fn create_checked(
        &self,
        spec: &RunSpec,
        runner: &str,
        checked: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        // The checked image's labels decide which `bus.*` keys the worker
        // must blank: read them by id, fresh.
        let image = match images::image_seen(&docker, checked.as_str()).await {
            Ok(Some(image)) => image,
            Ok(None) => {
                self.inner.images.forget(&spec.image);
                return Err(RuntimeError::ImageMissing(spec.image.to_string()));
            }
            Err(err) => return Err(self.fail(err).await),
        };
        let container = match self
            .create_once(&docker, spec, runner, &image, spec.image.as_str())
            .await
        {
            Ok(container) => container,
            Err(RuntimeError::ImageMissing(_)) => {
                // The reference went away since the check; the checked
                // image is still there (read above).
                tracing::warn!(image = %spec.image, %checked, "the image reference is gone since its check: creating from the checked id");
                self.inner.images.forget(&spec.image);
                return self
                    .create_once(&docker, spec, runner, &image, checked.as_str())
                    .await;
            }
            Err(err) => return Err(err),
        };
        let resolved = match images::created_from(&docker, &container.id).await {
            Ok(resolved) if resolved == checked.as_str() => return Ok(container),
            Ok(resolved) => resolved,
            Err(err) => {
                let err = self.fail(err).await;
                let _ = self.remove(&container).await;
                return Err(err);
            }
        };
        tracing::warn!(
            container = %container.name,
            image = %spec.image,
            %checked,
            %resolved,
            "the image reference moved between its check and the create: creating from the checked id"
        );
        self.inner.images.forget(&spec.image);
        self.remove(&container).await?;
        self.create_once(&docker, spec, runner, &image, checked.as_str())
            .await
    }

    async fn create_once(
        &self,
        docker: &Docker,
        spec: &RunSpec,
        runner: &str,
        image: &ImageSeen,
        from: &str,
    ) -> Result<ContainerRef, RuntimeError> {
        let name = spec.container_name();
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..CreateContainerOptions::default()
        };
        match docker
            .create_container(Some(options), container_body(spec, runner, image, from))
            .await
        {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container = %name, warning, "engine warning on create");
                }
                tracing::debug!(container = %name, id = %created.id, "container created");
                self.inner
                    .created
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(created.id.clone(), crate::bodies::wants_stdin(spec));
                let record = labels::managed(Listed {
                    id: &created.id,
                    name: &name,
                    labels: &labels::for_run(spec, runner, &image.id, &image.labels),
                    image_id: Some(&image.id),
                    state: bus_docker_domain::container::ContainerState::Created,
                    started_at: None,
                    finished_at: None,
                    // The create event brings the engine's time.
                    created_at: None,
                });
                if let Some(record) = record {
                    self.inner.view.write(&created.id, |entries| {
                        entries.insert(created.id.clone(), record);
                    });
                }
                Ok(ContainerRef::new(created.id, name))
            }
            Err(source) => Err(self
                .fail(DockerError::Create {
                    name,
                    image: spec.image.to_string(),
                    source,
                })
                .await),
        }
    }

    async fn ensure(&self, image: &ImageRef, policy: PullPolicy) -> Result<ImageId, RuntimeError> {
        let docker = self.docker().await?;
        let idle = self.inner.conn.request_timeout();
        match self.inner.images.ensure(&docker, image, policy, idle).await {
            Ok(id) => Ok(id),
            Err(Unready::Missing) => Err(RuntimeError::ImageMissing(image.to_string())),
            Err(Unready::NotAfterPull) => Err(RuntimeError::PullFailed {
                image: image.to_string(),
                reason: "the pull finished but the image is not present".to_owned(),
            }),
            Err(Unready::Engine(err)) => Err(self.fail(err).await),
        }
    }

    /// A per-run Codex home, before the container exists
    /// (`codex_home.rs`): no leftover home of this run id, and the
    /// session's use recorded.
    async fn prepare_home(&self, spec: &RunSpec) -> Result<(), RuntimeError> {
        let Some(home) = &spec.codex_home else {
            return Ok(());
        };
        let docker = self.docker().await?;
        let prepared = async {
            crate::codex_home::clear_home(&docker, spec).await?;
            match &home.session {
                Some(key) => crate::codex_home::touch(&docker, key).await,
                None => Ok(()),
            }
        };
        match prepared.await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// The container is gone: so is its per-run Codex home, if this
    /// process made one (else the session sweep finds it unused).
    async fn drop_home(&self, docker: &Docker, container: &ContainerRef) {
        let volume = self
            .inner
            .homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        if let Some(volume) = volume {
            if let Err(err) = crate::codex_home::drop_home(docker, &volume).await {
                tracing::warn!(%volume, error = %crate::error::cause_chain(&err), "cannot remove a run's Codex home; the sweep will");
            }
        }
    }

    /// A per-run Codex home: seed the created container's home on the
    /// engine's side; a failed seed removes the container.
    async fn seed_home(
        &self,
        spec: &RunSpec,
        container: &ContainerRef,
        image: &ImageId,
    ) -> Result<(), RuntimeError> {
        let Some(home) = &spec.codex_home else {
            return Ok(());
        };
        self.inner
            .homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                container.id.clone(),
                crate::codex_home::home_volume(&spec.run_id),
            );
        let docker = self.docker().await?;
        // The helper runs the image the run was checked against.
        let seeded =
            crate::codex_home::seed(&docker, spec, home, &container.id, image.as_str()).await;
        match seeded {
            Ok(()) => Ok(()),
            Err(err) => {
                let err = self.fail(err).await;
                if let Err(removal) = self.remove(container).await {
                    tracing::warn!(container = %container.name, error = %removal, "cannot remove the container of a run whose home could not be seeded");
                }
                Err(err)
            }
        }
    }

    /// A claimed warm run read back without its run's facts (its labels are
    /// the profile's): fill them from its claim record, read once from the
    /// engine's log and then remembered (it never changes).
    async fn fill_warm(&self, docker: &Docker, m: &mut ManagedContainer) {
        if m.correlation.is_some() {
            return;
        }
        let id = m.container.id.clone();
        let record = match self.inner.warm.record(&id) {
            Some(known) => known,
            None => match warm::read_record(docker, &id).await {
                // Only a record found is remembered: the engine's log can
                // trail the claim by a moment.
                Ok(Some(read)) => {
                    self.inner.warm.remember(&id, Some(read.clone()));
                    Some(read)
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::debug!(container = %id, error = %err, "cannot read the claim record");
                    None
                }
            },
        };
        if let Some(record) = record {
            record.fill(m);
        }
    }

    /// The claim of a warm container, for a drive that re-attaches to it
    /// or collects it (its times count from the claim).
    async fn warm_run(&self, docker: &Docker, id: &str) -> Option<drive::WarmRun> {
        let record = match self.inner.warm.record(id) {
            Some(known) => known,
            None => {
                let info = control::inspect_raw(docker, id).await.ok()?;
                let labels = info.config.as_ref()?.labels.as_ref()?;
                if labels.get(labels::WARM).is_none_or(String::is_empty) {
                    return None;
                }
                let read = warm::read_record(docker, id).await.ok()??;
                self.inner.warm.remember(id, Some(read.clone()));
                Some(read)
            }
        }?;
        Some(drive::WarmRun {
            claimed_at: record.claimed_at,
            record_len: record.len,
        })
    }
}

impl ContainerRuntime for DockerEngine {
    fn provider(&self) -> &'static str {
        "docker"
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let docker = self.docker().await?;
        match docker.version().await {
            Ok(v) => Ok(EngineInfo {
                engine_version: v.version.unwrap_or_default(),
                api_version: v.api_version.unwrap_or_default(),
                os: v.os.unwrap_or_default(),
                arch: v.arch.unwrap_or_default(),
                request_mounts: self.inner.pins.describe(),
            }),
            Err(source) => Err(self.fail(DockerError::Version { source }).await),
        }
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        match images::image_id(&docker, image).await {
            Ok(id) => Ok(id.is_some()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        self.ensure(image, policy).await
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id))]
    async fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        // Request mounts become their pins (pinning.rs); a failed create
        // undoes this attempt's pins only.
        let pinned = self.inner.pins.pin(spec).await?;
        let spec = pinned.spec.as_ref();
        if let Err(err) = self.prepare_home(spec).await {
            self.inner.pins.unpin(pinned).await;
            return Err(err);
        }
        let created = match self.create_checked(spec, runner, image).await {
            Ok(container) => self
                .seed_home(spec, &container, image)
                .await
                .map(|()| container),
            Err(err) => Err(err),
        };
        match &created {
            Ok(container) => self.inner.pins.created(&container.id, pinned),
            Err(_) => self.inner.pins.unpin(pinned).await,
        }
        created
    }

    #[tracing::instrument(skip_all, fields(container = %container.name))]
    async fn drive(&self, container: &ContainerRef, io: RunIo) -> Result<Exit, RuntimeError> {
        let docker = self.docker().await?;
        let settle = self.inner.conn.request_timeout();
        if let Some(claimed) = self.inner.warm.take_claimed(&container.id) {
            let died = self.inner.view.watch_exit(&container.id);
            let driven = drive::drive_claimed(&docker, &container.id, io, settle, claimed, died);
            let driven = driven.await;
            self.inner.view.unwatch_exit(&container.id);
            return match driven {
                Ok(exit) => Ok(exit),
                Err(err) => Err(self.fail(err).await),
            };
        }
        let created = self
            .inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        let warm = match created {
            Some(_) => None,
            None => self.warm_run(&docker, &container.id).await,
        };
        let claimed = warm.is_some();
        match drive::drive(&docker, &container.id, io, settle, created, warm).await {
            Ok(exit) if claimed && warm::never_ran(&exit) => Err(RuntimeError::Engine(
                "the worker that claimed this warm container stopped before handing it the \
                 command: the command never ran"
                    .to_owned(),
            )),
            Ok(exit) => Ok(exit),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn kill(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match control::kill(&docker, &container.id).await {
            Ok(Killed::Yes) => {
                tracing::info!(container = %container.name, "container killed");
                Ok(())
            }
            Ok(Killed::NotRunning | Killed::Gone) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn remove(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        self.inner.inputs.forget(&container.id);
        self.inner.warm.forget(&container.id);
        self.inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match docker.remove_container(&container.id, Some(options)).await {
            Ok(()) => {
                tracing::debug!(container = %container.name, "container removed");
                self.view_removed(&container.id);
                self.inner.pins.release(&container.id).await;
                self.drop_home(&docker, container).await;
                Ok(())
            }
            // Gone, or another worker is removing it right now.
            Err(source) if matches!(classify(&source), Class::NotFound | Class::Conflict) => {
                if classify(&source) == Class::NotFound {
                    self.view_removed(&container.id);
                    self.drop_home(&docker, container).await;
                }
                self.inner.pins.release(&container.id).await;
                Ok(())
            }
            Err(source) => Err(self
                .fail(DockerError::Remove {
                    id: container.id.clone(),
                    source,
                })
                .await),
        }
    }

    async fn list_managed(
        &self,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let docker = self.docker().await?;
        let viewed = if filter.fresh {
            None
        } else {
            let every = ManagedFilter::all();
            let all = self.list_engine(&docker, &every);
            self.inner.view.serve(&docker, filter, all).await
        };
        let found = match viewed {
            Some(found) => Ok(found),
            None => match (self.list_engine(&docker, filter).await, &filter.run_id) {
                // Claimed warm runs carry no `bus.run-id` label: by name.
                (Ok(mut found), Some(run_id)) => {
                    match warm::list_by_run_name(&docker, run_id.as_str(), filter.runner.as_deref())
                        .await
                    {
                        Ok(named) => {
                            for m in named {
                                if !found.iter().any(|f| f.container.id == m.container.id) {
                                    found.push(m);
                                }
                            }
                            Ok(found)
                        }
                        Err(err) => Err(err),
                    }
                }
                (other, _) => other,
            },
        };
        let found = match found {
            Ok(mut found) => {
                for m in &mut found {
                    self.fill_warm(&docker, m).await;
                }
                found.retain(|m| filter.matches(m));
                Ok(found)
            }
            Err(err) => Err(err),
        };
        match found {
            Ok(found) => {
                if filter.runner.is_none() && filter.run_id.is_none() {
                    // A full listing: pins of runs with no container left
                    // (a worker that stopped before removing them) go.
                    let existing = found.iter().map(|c| c.run_id.to_string()).collect();
                    self.inner.pins.sweep(existing).await;
                }
                Ok(found)
            }
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        let docker = self.docker().await?;
        match records::read(&docker, &container.id).await {
            Ok(Some(mut found)) => {
                self.fill_warm(&docker, &mut found).await;
                Ok(found)
            }
            Ok(None) => Err(RuntimeError::ContainerGone(container.id.clone())),
            Err(err) => Err(self.fail(err).await),
        }
    }

    #[tracing::instrument(skip_all, fields(container = %container.name))]
    async fn delete_run(
        &self,
        container: &ContainerRef,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let deleted = async {
            match records::mark(&docker, &container.id, RunMark::Deleted).await {
                Ok(Marked::Gone) => {
                    self.view_removed(&container.id);
                    return Ok(());
                }
                Ok(Marked::Answered) => return Ok(()),
                Ok(Marked::Now { name, .. }) => {
                    self.view_renamed(&container.id, &name);
                    tracing::info!(%name, "run marked deleted");
                }
                // The mark's name is taken (a leftover of an earlier run of
                // this id): stop the run all the same; its driver then
                // reports the kill, not a cancel.
                Err(err @ DockerError::Rename { .. }) if err.class() == Class::Conflict => {
                    tracing::warn!(error = %crate::error::cause_chain(&err), "cannot mark the run deleted; stopping it unmarked");
                }
                Err(err) => return Err(err),
            }
            control::stop(&docker, &container.id, grace)
                .await
                .map(|_| ())
        };
        match deleted.await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn mark_answered(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match records::mark(&docker, &container.id, RunMark::Answered).await {
            Ok(Marked::Now { name, .. }) => {
                self.view_renamed(&container.id, &name);
                Ok(())
            }
            Ok(Marked::Gone) => {
                self.view_removed(&container.id);
                Ok(())
            }
            Ok(Marked::Answered) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    #[tracing::instrument(skip_all, fields(container = %container.name, bytes = chunk.data.len(), eof = chunk.eof))]
    async fn write_input(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let limit = self.inner.conn.request_timeout();
        match self
            .inner
            .inputs
            .write(&docker, &container.id, chunk, limit)
            .await
        {
            Ok(()) => Ok(()),
            Err(InputError::NotAccepting) => {
                Err(RuntimeError::NotAcceptingInput(container.id.clone()))
            }
            Err(InputError::Engine(err)) => Err(self.fail(err).await),
        }
    }

    async fn has_session(
        &self,
        key: &bus_docker_domain::spec::SessionKey,
    ) -> Result<bool, RuntimeError> {
        let docker = self.docker().await?;
        match crate::codex_home::has_session(&docker, key).await {
            Ok(found) => Ok(found),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn session_usage(&self) -> Result<SessionUsage, RuntimeError> {
        let docker = self.docker().await?;
        match crate::codex_home::usage(&docker).await {
            Ok(usage) => Ok(usage),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn sweep_sessions(&self, retention: Duration) -> Result<SessionsSwept, RuntimeError> {
        let docker = self.docker().await?;
        let now = std::time::SystemTime::now();
        match crate::codex_home::sweep(&docker, retention, now).await {
            Ok(swept) => Ok(swept),
            Err(err) => Err(self.fail(err).await),
        }
    }

    #[tracing::instrument(skip_all, fields(profile = ?template.profile))]
    async fn park(&self, template: &RunSpec, runner: &str) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        match warm::park(&docker, &self.inner.warm, template, runner).await {
            Ok(Ok(parked)) => Ok(parked),
            Ok(Err(reason)) => Err(RuntimeError::Forbidden {
                rule: "warm",
                detail: reason,
            }),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn list_parked(&self, runner: &str) -> Result<Vec<ParkedContainer>, RuntimeError> {
        let docker = self.docker().await?;
        self.inner.list_calls.fetch_add(1, Ordering::Relaxed);
        match warm::list_parked(&docker, &self.inner.warm, runner).await {
            Ok(parked) => Ok(parked),
            Err(err) => Err(self.fail(err).await),
        }
    }

    async fn settle_parked(&self, runner: &str) -> Result<SettledParked, RuntimeError> {
        let docker = self.docker().await?;
        match warm::settle_left_behind(&docker, &self.inner.warm, runner).await {
            Ok(settled) => Ok(settled),
            Err(err) => Err(self.fail(err).await),
        }
    }

    #[tracing::instrument(skip_all, fields(run_id = %spec.run_id, parked = %parked.name))]
    async fn claim(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        match warm::claim(&docker, &self.inner.warm, parked, spec).await {
            ClaimOutcome::Claimed(claimed, runner) => {
                let mut record = labels::managed(Listed {
                    id: &claimed.id,
                    name: &claimed.name,
                    labels: &labels::for_run(spec, &runner, "", &HashMap::new()),
                    image_id: None,
                    state: bus_docker_domain::container::ContainerState::Running,
                    started_at: None,
                    created_at: None,
                    finished_at: None,
                });
                if let Some(record) = record.take() {
                    self.inner.view.write(&claimed.id, |entries| {
                        entries.insert(claimed.id.clone(), record);
                    });
                }
                Ok(claimed)
            }
            ClaimOutcome::NotHeld => Err(RuntimeError::ContainerGone(parked.id.clone())),
            ClaimOutcome::Spoiled(err) => {
                self.view_removed(&parked.id);
                Err(self.fail(err).await)
            }
        }
    }
}
