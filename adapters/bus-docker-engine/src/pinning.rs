//! Request mounts pinned to what the mount policy checked.
//!
//! The domain admits a request mount by its canonical path; the engine
//! would resolve that path again when the container starts, and a run
//! with write access to the allowed root could swap a directory for a
//! symlink in between. So each request mount is pinned first
//! (`bus-host-mounts`: fd opened without following symlinks, bound onto a
//! private staging path, `nosuid,nodev`, `ro` when asked) and the create
//! body names the staging path. Operator/profile mounts are taken as
//! configured.
//!
//! A container's pins are recorded under its id when it is created, and
//! released when that container is removed: never found by parsing a
//! container name (`x.answered` and `x.deleted` are legal run ids, and a
//! name a run mark changed would point at another run's pins). Pins of
//! containers this process did not create (a worker that stopped before
//! removing them) are swept by the run ids the containers' labels record.
//!
//! Where pinning cannot work (an engine not on a local unix socket, no
//! mount privilege, a worker in another mount namespace than dockerd),
//! request mounts are refused with `forbidden` (`mount_pinning`) and
//! `runner.status` says why.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bus_docker_domain::container::RequestMounts;
use bus_docker_domain::mount::{AccessMode, Mount, MountOrigin};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::RuntimeError;
use bus_host_mounts::{HostMounts, Pin, PinError};

pub use bus_host_mounts::default_staging_dir;

/// The staging root when none is configured.
pub const DEFAULT_STAGING_NAME: &str = "default";

/// Pinning for one engine connection.
pub(crate) struct Pinning {
    state: Result<Arc<HostMounts>, String>,
    /// The pins of each container this process created: container id →
    /// its pins.
    held: Mutex<HashMap<String, Vec<Pin>>>,
}

/// A run's spec with its request mounts replaced by their pins.
pub(crate) struct Pinned<'a> {
    pub(crate) spec: Cow<'a, RunSpec>,
    pins: Vec<Pin>,
}

impl Pinning {
    /// Decide once, at connect, whether request mounts can be pinned.
    ///
    /// # Errors
    /// A staging directory that is unsafe or reachable from an allowed
    /// mount root: a configuration error, the worker must not start.
    pub(crate) fn new(
        host: &str,
        staging: Option<&Path>,
        allowed_roots: &[PathBuf],
        protected: &[PathBuf],
    ) -> Result<Self, PinError> {
        let Some(socket) = host.strip_prefix("unix://").map(PathBuf::from) else {
            return Ok(Self::refused(format!(
                "the engine at {host} is not on a local unix socket, so this worker cannot pin mounts for it"
            )));
        };
        if bus_host_mounts::is_mount_point(&socket).unwrap_or(false) {
            return Ok(Self::refused(format!(
                "the engine socket {} is mounted into this worker's mount namespace (a container?): dockerd would not see the pins",
                socket.display()
            )));
        }
        let staging = staging.map_or_else(
            || default_staging_dir(DEFAULT_STAGING_NAME),
            Path::to_path_buf,
        );
        let mut guarded = vec![
            socket,
            PathBuf::from("/var/run/docker.sock"),
            PathBuf::from("/run/docker.sock"),
        ];
        guarded.extend(protected.iter().cloned());
        let pins = match HostMounts::new(&staging, allowed_roots, guarded) {
            Ok(pins) => pins,
            Err(err @ (PinError::StagingReachable { .. } | PinError::StagingUnsafe { .. })) => {
                return Err(err)
            }
            Err(err) => {
                return Ok(Self::refused(format!(
                    "cannot prepare {}: {err}",
                    staging.display()
                )))
            }
        };
        Ok(match pins.probe() {
            Ok(()) => Self {
                state: Ok(Arc::new(pins)),
                held: Mutex::new(HashMap::new()),
            },
            Err(err) => Self::refused(format!("this process cannot create bind mounts ({err})")),
        })
    }

    fn refused(reason: String) -> Self {
        tracing::warn!(%reason, "request mounts are refused on this engine (in a pool, runs with request mounts go to an engine that pins them); operator and profile mounts still work");
        Self {
            state: Err(reason),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// What `runner.status` reports.
    pub(crate) fn describe(&self) -> RequestMounts {
        match &self.state {
            Ok(_) => RequestMounts::Pinned,
            Err(reason) => RequestMounts::Refused(reason.clone()),
        }
    }

    /// Pin every request mount of `spec` (none: the spec as is).
    ///
    /// # Errors
    /// `Forbidden`: `mount_pinning` when pinning is unavailable or broke,
    /// `mount_root` when the source changed since admission, `docker_socket`
    /// when it is the engine socket.
    pub(crate) async fn pin<'a>(&self, spec: &'a RunSpec) -> Result<Pinned<'a>, RuntimeError> {
        if !spec.mounts.iter().any(is_requested) {
            return Ok(Pinned {
                spec: Cow::Borrowed(spec),
                pins: Vec::new(),
            });
        }
        let pins = match &self.state {
            Ok(pins) => Arc::clone(pins),
            Err(reason) => {
                return Err(RuntimeError::Forbidden {
                    rule: "mount_pinning",
                    detail: format!(
                    "request mounts are refused: {reason}; operator and profile mounts still work"
                ),
                })
            }
        };
        let run_id = spec.run_id.as_str().to_owned();
        let mounts = spec.mounts.clone();
        let (mounts, pinned) = blocking(move || pin_all(&pins, &run_id, mounts))
            .await
            .and_then(|r| r)?;
        let mut owned = spec.clone();
        owned.mounts = mounts;
        Ok(Pinned {
            spec: Cow::Owned(owned),
            pins: pinned,
        })
    }

    /// Undo the pins of one create attempt that failed.
    pub(crate) async fn unpin(&self, pinned: Pinned<'_>) {
        let (Ok(pins), false) = (&self.state, pinned.pins.is_empty()) else {
            return;
        };
        let pins = Arc::clone(pins);
        let list = pinned.pins;
        let _ = blocking(move || {
            for pin in &list {
                if let Err(err) = pins.unpin(pin) {
                    tracing::warn!(error = %err, "undoing a mount pin failed");
                }
            }
        })
        .await;
    }

    /// The create succeeded: `container` (its id) now holds the pins.
    pub(crate) fn created(&self, container: &str, pinned: Pinned<'_>) {
        if pinned.pins.is_empty() {
            return;
        }
        self.held().insert(container.to_owned(), pinned.pins);
    }

    /// The container is gone: release the pins it was created with (none
    /// when this process did not create it, or released them already).
    pub(crate) async fn release(&self, container: &str) {
        let Ok(pins) = &self.state else { return };
        let Some(list) = self.held().remove(container) else {
            return;
        };
        let pins = Arc::clone(pins);
        let _ = blocking(move || {
            for pin in &list {
                if let Err(err) = pins.unpin(pin) {
                    tracing::warn!(run_id = pin.run_id(), error = %err, "releasing a mount pin failed");
                }
            }
        })
        .await;
    }

    /// Pins held by containers of this process (for tests).
    pub(crate) fn held_pins(&self) -> usize {
        self.held().values().map(Vec::len).sum()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Pin>>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Release pins of runs whose containers no longer exist.
    pub(crate) async fn sweep(&self, existing: HashSet<String>) {
        let Ok(pins) = &self.state else { return };
        let pins = Arc::clone(pins);
        let _ = blocking(move || match pins.sweep(|run| existing.contains(run)) {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "released mount pins of removed containers"),
            Err(err) => tracing::warn!(error = %err, "sweeping mount pins failed"),
        })
        .await;
    }
}

fn is_requested(mount: &Mount) -> bool {
    matches!(mount.origin(), MountOrigin::Request { .. })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|join| RuntimeError::Engine(format!("mount pinning task failed: {join}")))
}

fn pin_all(
    pins: &HostMounts,
    run_id: &str,
    mounts: Vec<Mount>,
) -> Result<(Vec<Mount>, Vec<Pin>), RuntimeError> {
    let mut out = Vec::with_capacity(mounts.len());
    let mut held = Vec::new();
    for (index, mount) in mounts.into_iter().enumerate() {
        let MountOrigin::Request { root } = mount.origin() else {
            out.push(mount);
            continue;
        };
        let read_only = mount.mode() == AccessMode::ReadOnly;
        match pins.pin(run_id, index, mount.source(), root, read_only) {
            Ok(pin) => {
                // The staging path is what the engine may resolve: nothing
                // under the staging root is reachable from a container.
                // The pin itself is `ro` when asked; the engine is told
                // read-write because its own `ro` remount (runc on Docker
                // 20.10) resets the per-mount flags and drops `nosuid` and
                // `nodev`. Without a remount the container's bind copies
                // the pin's flags: `ro,nosuid,nodev` (tests/pinning.rs).
                out.push(Mount::operator(
                    pin.path().to_owned(),
                    mount.target().clone(),
                    AccessMode::ReadWrite,
                ));
                held.push(pin);
            }
            Err(err) => {
                for pin in &held {
                    let _ = pins.unpin(pin);
                }
                return Err(refusal(mount.target().as_str(), &err));
            }
        }
    }
    Ok((out, held))
}

fn refusal(target: &str, err: &PinError) -> RuntimeError {
    let rule = match err {
        PinError::Protected { .. } => "docker_socket",
        e if e.is_refusal() => "mount_root",
        _ => "mount_pinning",
    };
    tracing::warn!(target, error = %err, rule, "request mount not pinned");
    RuntimeError::Forbidden {
        rule,
        detail: format!("the mount on {target}: {err}"),
    }
}
