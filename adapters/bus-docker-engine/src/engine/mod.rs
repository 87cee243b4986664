//! [`DockerEngine`]: the [`ContainerRuntime`] port over the Docker Engine
//! API.
//!
//! The port's calls are answered where their concern lives:
//! * `create.rs`: images (present, ensured under a pull policy) and
//!   creating a run's container from the checked image.
//! * `runs.rs`: a run's container after its create: drive, kill, remove,
//!   the deleted and answered marks, stdin.
//! * `listing.rs`: the record: managed listings (from the event-fed view
//!   while it is synced) and reading one container.
//! * `sessions.rs`: per-run Codex homes and session volumes.
//! * `warm.rs`: warm start: parking, listing and settling parked
//!   containers, the claim, and a claimed run's facts read back.

mod create;
mod listing;
mod runs;
mod sessions;
mod warm;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::time::Duration;

use bollard::Docker;
use bus_docker_domain::container::{
    ContainerRef, EngineInfo, RequestMounts, SessionUsage, SessionsSwept,
};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::{RunSpec, SessionKey};
use bus_docker_domain::warm::{ParkedContainer, SettledParked};
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};

use crate::client::{Connection, EngineOptions};
use crate::error::DockerError;
use crate::images::Images;
use crate::input::InputSessions;
use crate::pinning::Pinning;
use crate::registry::ClientConfig;
use crate::view::{self, View};

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
    /// that home's volume: removed after the container (`codex_home/`).
    homes: std::sync::Mutex<HashMap<String, String>>,
    /// Parked and claimed warm containers this process holds (`crate::warm`).
    warm: crate::warm::WarmState,
}

impl std::fmt::Debug for DockerEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerEngine")
            .field("host", &self.inner.conn.host())
            .finish_non_exhaustive()
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
                warm: crate::warm::WarmState::default(),
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

    // Images and the create: `create.rs`.

    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        self.find_image(image).await
    }

    async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        self.ensure(image, policy).await
    }

    async fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        self.create_run(spec, runner, image).await
    }

    // A run's container: `runs.rs`.

    async fn drive(&self, container: &ContainerRef, io: RunIo) -> Result<Exit, RuntimeError> {
        self.drive_run(container, io).await
    }

    async fn kill(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        self.kill_run(container).await
    }

    async fn remove(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        self.remove_container(container).await
    }

    async fn delete_run(
        &self,
        container: &ContainerRef,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        self.delete_and_stop(container, grace).await
    }

    async fn mark_answered(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        self.mark_run_answered(container).await
    }

    async fn write_input(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> Result<(), RuntimeError> {
        self.write_stdin(container, chunk).await
    }

    // The record: `listing.rs`.

    async fn list_managed(
        &self,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        self.list_runs(filter).await
    }

    async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        self.inspect_run(container).await
    }

    // Codex sessions: `sessions.rs`.

    async fn has_session(&self, key: &SessionKey) -> Result<bool, RuntimeError> {
        self.session_exists(key).await
    }

    async fn session_usage(&self) -> Result<SessionUsage, RuntimeError> {
        self.usage_of_sessions().await
    }

    async fn sweep_sessions(&self, retention: Duration) -> Result<SessionsSwept, RuntimeError> {
        self.sweep_unused_sessions(retention).await
    }

    // Warm start: `warm.rs`.

    async fn park(&self, template: &RunSpec, runner: &str) -> Result<ContainerRef, RuntimeError> {
        self.park_warm(template, runner).await
    }

    async fn list_parked(&self, runner: &str) -> Result<Vec<ParkedContainer>, RuntimeError> {
        self.parked(runner).await
    }

    async fn settle_parked(&self, runner: &str) -> Result<SettledParked, RuntimeError> {
        self.settle_left_behind(runner).await
    }

    async fn claim(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ContainerRef, RuntimeError> {
        self.claim_parked(parked, spec).await
    }
}
