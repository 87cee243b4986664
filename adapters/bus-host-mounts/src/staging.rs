//! The staging tree and the mounts in it.
//!
//! `<staging root>/<run_id>/<index>-<pid>-<seq>`: one entry per pinned
//! mount, a directory or an empty file that the held source is bound
//! onto. Entry names are unique per pin, so two deliveries of one run
//! never share an entry and a loser's clean-up cannot unmount the
//! winner's pins. Nothing here is ever removed recursively: entries are
//! unmounted, then removed one by one (`rmdir` of a still-mounted entry
//! fails with `EBUSY` instead of reaching into the source).

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::fs::StatVfsMountFlags;
use rustix::io::Errno;
use rustix::mount::{self, MountFlags, MountPropagationFlags, UnmountFlags};

use crate::error::PinError;
use crate::open::{self, Identity, Kind};

/// Staging entries younger than this are left alone by [`HostMounts::sweep`]:
/// another worker sharing the staging root may be between its pin and its
/// container create (which can include an image pull).
pub const SWEEP_GRACE: Duration = Duration::from_secs(600);

const PROBE_PREFIX: &str = "probe@";

/// The default staging root of a runner:
/// `/run/bus-integration-docker/mounts/<runner name, sanitised>`.
pub fn default_staging_dir(runner: &str) -> PathBuf {
    let name: String = runner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let name = if name.is_empty() || name.chars().all(|c| c == '.') {
        "default".to_owned()
    } else {
        name
    };
    Path::new("/run/bus-integration-docker/mounts").join(name)
}

/// One pinned mount source, bound onto [`Pin::path`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    run_id: String,
    path: PathBuf,
    identity: Identity,
}

impl Pin {
    /// The staging path to hand to the engine.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The identity of the pinned source.
    pub fn identity(&self) -> Identity {
        self.identity
    }
}

/// Pins mount sources under one private staging root.
#[derive(Debug)]
pub struct HostMounts {
    root: PathBuf,
    protected: Vec<PathBuf>,
    /// Pins this process holds per run: never swept.
    live: Mutex<HashMap<String, usize>>,
    seq: AtomicU64,
}

impl HostMounts {
    /// Prepare the staging root: created `0700` if missing, it must be a
    /// directory owned by this user and overlap no allowed mount root.
    /// `protected` files (the engine socket) are looked up again at each
    /// pin: a restarted engine has a new socket inode.
    ///
    /// # Errors
    /// `StagingUnsafe` for a relative path, a foreign owner or a
    /// non-directory; `StagingReachable` when it overlaps a root;
    /// `Staging` when it cannot be created.
    pub fn new(
        staging_root: impl Into<PathBuf>,
        allowed_roots: &[PathBuf],
        protected: Vec<PathBuf>,
    ) -> Result<Self, PinError> {
        let wanted: PathBuf = staging_root.into();
        let unsafe_ = |reason: &str| PinError::StagingUnsafe {
            path: wanted.clone(),
            reason: reason.to_owned(),
        };
        if !wanted.is_absolute() {
            return Err(unsafe_("must be an absolute path"));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&wanted)
            .map_err(PinError::staging("create", &wanted))?;
        let root = wanted
            .canonicalize()
            .map_err(PinError::staging("resolve", &wanted))?;
        let meta = std::fs::symlink_metadata(&root).map_err(PinError::staging("stat", &root))?;
        if !meta.is_dir() {
            return Err(unsafe_("is not a directory"));
        }
        if meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(unsafe_("is owned by another user"));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))
                .map_err(PinError::staging("chmod", &root))?;
        }
        let pins = Self {
            root,
            protected,
            live: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
        };
        for allowed in allowed_roots {
            pins.unreachable_from(allowed)?;
        }
        Ok(pins)
    }

    /// The canonical staging root.
    pub fn staging_root(&self) -> &Path {
        &self.root
    }

    /// Check this process can pin: bind a scratch directory under the
    /// staging root onto itself, remount it `ro,nosuid,nodev`, undo.
    ///
    /// # Errors
    /// `Mount` (`EPERM`: no mount privilege), `Staging`.
    pub fn probe(&self) -> Result<(), PinError> {
        let dir = self.root.join(format!("{PROBE_PREFIX}{}", self.token()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(PinError::staging("create", &dir))?;
        let tried = mount::mount_bind(&dir, &dir)
            .map_err(PinError::mount("bind", &dir))
            .and_then(|()| {
                let flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV;
                mount::mount_remount(&dir, flags | MountFlags::RDONLY, "")
                    .map_err(PinError::mount("remount", &dir))
            });
        let undone = detach(&dir).and_then(|()| remove_entry(&dir));
        tried.and(undone)
    }

    /// Pin `source` (canonical, admitted inside `root`) for mount `index`
    /// of run `run_id`; returns the staging path to mount instead.
    ///
    /// # Errors
    /// `Symlink` when the path changed since it was checked, `Open`,
    /// `Protected`, `OutsideRoot`, `StagingReachable`; `Staging`/`Mount`
    /// when the staging side fails.
    pub fn pin(
        &self,
        run_id: &str,
        index: usize,
        source: &Path,
        root: &Path,
        read_only: bool,
    ) -> Result<Pin, PinError> {
        let run_dir = self.run_dir(run_id)?;
        self.unreachable_from(root)?;
        let fd = open::open_exact(source)?;
        let identity = open::identity_of(&fd).map_err(|source_err| PinError::Open {
            path: source.into(),
            source: source_err,
        })?;
        self.check_unprotected(source, &identity)?;
        let actual = open::fd_path(&fd).map_err(|e| PinError::Open {
            path: source.into(),
            source: e,
        })?;
        if !actual.starts_with(root) {
            return Err(PinError::OutsideRoot {
                path: source.into(),
                actual,
                root: root.into(),
            });
        }
        let kept = rustix::fs::fstatvfs(&fd)
            .map(|v| kept_flags(v.f_flag))
            .map_err(|e| PinError::Open {
                path: source.into(),
                source: e.into(),
            })?;
        let entry = run_dir.join(format!("{index}-{}", self.token()));
        self.track(run_id, 1);
        let pinned = make_entry(&run_dir, &entry, identity.kind)
            .and_then(|()| bind(&fd, &entry, kept, read_only))
            .and_then(|()| verify(&entry, &identity));
        match pinned {
            Ok(()) => Ok(Pin {
                run_id: run_id.to_owned(),
                path: entry,
                identity,
            }),
            Err(err) => {
                let _ = detach(&entry).and_then(|()| remove_entry(&entry));
                let _ = std::fs::remove_dir(&run_dir);
                self.track(run_id, -1);
                Err(err)
            }
        }
    }

    /// Undo one pin (a create that failed: only this attempt's pins).
    ///
    /// # Errors
    /// `Mount`/`Staging` when the entry cannot be unmounted or removed.
    pub fn unpin(&self, pin: &Pin) -> Result<(), PinError> {
        let result = detach(&pin.path).and_then(|()| remove_entry(&pin.path));
        if let Some(run_dir) = pin.path.parent() {
            let _ = std::fs::remove_dir(run_dir);
        }
        self.track(&pin.run_id, -1);
        result
    }

    /// Unmount and remove every pin of `run_id` (its container is gone).
    /// Idempotent.
    ///
    /// # Errors
    /// `RunId`; `Mount`/`Staging` when an entry cannot be undone.
    pub fn release(&self, run_id: &str) -> Result<(), PinError> {
        let run_dir = self.run_dir(run_id)?;
        let result = release_dir(&run_dir);
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(run_id);
        result
    }

    /// Release the staging entries of runs for which `keep` is false
    /// (their containers are gone), except runs this process holds pins
    /// for and entries younger than [`SWEEP_GRACE`]. Returns how many run
    /// directories were released.
    ///
    /// # Errors
    /// `Staging` when the staging root cannot be listed; failures of single
    /// entries are logged and skipped.
    pub fn sweep(&self, keep: impl Fn(&str) -> bool) -> Result<usize, PinError> {
        self.sweep_older_than(keep, SWEEP_GRACE)
    }

    /// [`HostMounts::sweep`] with an explicit grace period.
    ///
    /// # Errors
    /// As [`HostMounts::sweep`].
    pub fn sweep_older_than(
        &self,
        keep: impl Fn(&str) -> bool,
        grace: Duration,
    ) -> Result<usize, PinError> {
        let listing =
            std::fs::read_dir(&self.root).map_err(PinError::staging("list", &self.root))?;
        let now = SystemTime::now();
        let mut swept = 0;
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let probe = name.starts_with(PROBE_PREFIX);
            if !probe && (self.is_live(&name) || keep(&name)) {
                continue;
            }
            let young = item
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() < grace)
                .unwrap_or(true);
            if young {
                continue;
            }
            let path = item.path();
            let result = if probe {
                detach(&path).and_then(|()| remove_entry(&path))
            } else {
                release_dir(&path)
            };
            match result {
                Ok(()) => swept += 1,
                Err(err) => tracing::warn!(error = %err, "sweeping a staging entry failed"),
            }
        }
        Ok(swept)
    }

    fn run_dir(&self, run_id: &str) -> Result<PathBuf, PinError> {
        let ok = !run_id.is_empty()
            && run_id.len() <= 128
            && run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !run_id.chars().all(|c| c == '.');
        if ok {
            Ok(self.root.join(run_id))
        } else {
            Err(PinError::RunId(run_id.to_owned()))
        }
    }

    fn unreachable_from(&self, allowed: &Path) -> Result<(), PinError> {
        if self.root.starts_with(allowed) || allowed.starts_with(&self.root) {
            return Err(PinError::StagingReachable {
                staging: self.root.clone(),
                root: allowed.into(),
            });
        }
        Ok(())
    }

    fn check_unprotected(&self, source: &Path, identity: &Identity) -> Result<(), PinError> {
        for protected in &self.protected {
            if let Ok(id) = open::identity(protected) {
                if id.same_file(identity) {
                    return Err(PinError::Protected {
                        path: source.into(),
                        protected: protected.display().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    fn token(&self) -> String {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("{}-{seq}", std::process::id())
    }

    fn is_live(&self, run_id: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains_key(run_id)
    }

    fn track(&self, run_id: &str, delta: isize) {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = live.entry(run_id.to_owned()).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            live.remove(run_id);
        }
    }
}

/// Flags of the source's mount that the pin keeps (a remount sets all
/// per-mount flags at once: not keeping `noexec` or `ro` would widen).
fn kept_flags(source: StatVfsMountFlags) -> MountFlags {
    let pairs = [
        (StatVfsMountFlags::RDONLY, MountFlags::RDONLY),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ];
    pairs
        .iter()
        .filter(|(have, _)| source.contains(*have))
        .fold(MountFlags::empty(), |acc, (_, flag)| acc | *flag)
}

fn make_entry(run_dir: &Path, entry: &Path, kind: Kind) -> Result<(), PinError> {
    match std::fs::DirBuilder::new().mode(0o700).create(run_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta =
                std::fs::symlink_metadata(run_dir).map_err(PinError::staging("stat", run_dir))?;
            if !meta.is_dir() {
                return Err(PinError::StagingUnsafe {
                    path: run_dir.into(),
                    reason: "is not a directory".into(),
                });
            }
        }
        Err(e) => return Err(PinError::staging("create", run_dir)(e)),
    }
    if kind == Kind::Directory {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(entry)
            .map_err(PinError::staging("create", entry))
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(entry)
            .map(drop)
            .map_err(PinError::staging("create", entry))
    }
}

/// Bind the held fd onto `entry`, private, then `nosuid,nodev` (+`ro`).
fn bind(
    fd: &std::os::fd::OwnedFd,
    entry: &Path,
    kept: MountFlags,
    read_only: bool,
) -> Result<(), PinError> {
    mount::mount_bind(open::proc_fd(fd), entry).map_err(PinError::mount("bind", entry))?;
    mount::mount_change(entry, MountPropagationFlags::PRIVATE)
        .map_err(PinError::mount("make private", entry))?;
    let mut flags = MountFlags::BIND | MountFlags::NOSUID | MountFlags::NODEV | kept;
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    mount::mount_remount(entry, flags, "").map_err(PinError::mount("remount", entry))
}

/// The staging path shows the pinned file, nothing else.
fn verify(entry: &Path, identity: &Identity) -> Result<(), PinError> {
    let seen = open::identity(entry).map_err(PinError::staging("stat", entry))?;
    if seen.same_file(identity) {
        Ok(())
    } else {
        Err(PinError::Mount {
            op: "verify",
            path: entry.into(),
            source: std::io::Error::other("the staging path does not show the pinned source"),
        })
    }
}

/// Unmount whatever is mounted on `path` (nothing is fine).
fn detach(path: &Path) -> Result<(), PinError> {
    for _ in 0..8 {
        match mount::unmount(path, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
            Ok(()) => continue,
            Err(Errno::INVAL | Errno::NOENT) => return Ok(()),
            Err(errno) => return Err(PinError::mount("unmount", path)(errno)),
        }
    }
    Ok(())
}

/// Remove one entry without following or recursing.
fn remove_entry(path: &Path) -> Result<(), PinError> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PinError::staging("remove", path)(e))
        }
        _ => Ok(()),
    }
}

fn release_dir(run_dir: &Path) -> Result<(), PinError> {
    let listing = match std::fs::read_dir(run_dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PinError::staging("list", run_dir)(e)),
    };
    let mut first_error = None;
    for item in listing.flatten() {
        let path = item.path();
        if let Err(err) = detach(&path).and_then(|()| remove_entry(&path)) {
            first_error.get_or_insert(err);
        }
    }
    if let Some(err) = first_error {
        return Err(err);
    }
    remove_entry(run_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_staging_dirs_are_one_safe_component() {
        assert_eq!(
            default_staging_dir("docker@host-1"),
            PathBuf::from("/run/bus-integration-docker/mounts/docker_host-1")
        );
        assert_eq!(
            default_staging_dir("../.."),
            PathBuf::from("/run/bus-integration-docker/mounts/.._..")
        );
        assert_eq!(
            default_staging_dir(".."),
            PathBuf::from("/run/bus-integration-docker/mounts/default")
        );
        assert_eq!(
            default_staging_dir("a/b"),
            PathBuf::from("/run/bus-integration-docker/mounts/a_b")
        );
    }

    #[test]
    fn kept_flags_carry_what_would_widen() {
        let kept = kept_flags(StatVfsMountFlags::NOEXEC | StatVfsMountFlags::RDONLY);
        assert!(kept.contains(MountFlags::NOEXEC | MountFlags::RDONLY));
        assert!(kept_flags(StatVfsMountFlags::NOSUID).is_empty());
    }
}
