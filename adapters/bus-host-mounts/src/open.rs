//! Opening a checked path without following anything, and identities.
//!
//! The canonical path of an admitted mount has no symlinks, so the open
//! follows none: if a component was swapped for a symlink since the
//! check, the open fails (or yields the symlink itself, which is refused)
//! instead of landing somewhere else.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self, FileType, Mode, OFlags, ResolveFlags, CWD};
use rustix::io::Errno;

use crate::error::PinError;

/// What a file is, independent of the names it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub device: u64,
    pub inode: u64,
    pub kind: Kind,
}

impl Identity {
    /// Same file: device and inode (the kind follows from them).
    pub fn same_file(&self, other: &Identity) -> bool {
        self.device == other.device && self.inode == other.inode
    }
}

/// The file types pinning distinguishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Directory,
    File,
    Symlink,
    Socket,
    /// FIFOs and device nodes.
    Other,
}

impl Kind {
    fn of(mode: u32) -> Self {
        match FileType::from_raw_mode(mode) {
            FileType::Directory => Self::Directory,
            FileType::RegularFile => Self::File,
            FileType::Symlink => Self::Symlink,
            FileType::Socket => Self::Socket,
            _ => Self::Other,
        }
    }
}

/// The identity of `path`, following symlinks (use it for the files to
/// protect, e.g. the engine socket).
///
/// # Errors
/// The `stat` error, e.g. `NotFound`.
pub fn identity(path: &Path) -> std::io::Result<Identity> {
    let st = fs::stat(path)?;
    Ok(of_stat(&st))
}

pub(crate) fn identity_of(fd: impl AsFd) -> std::io::Result<Identity> {
    Ok(of_stat(&fs::fstat(fd)?))
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn of_stat(st: &fs::Stat) -> Identity {
    Identity {
        device: st.st_dev as u64,
        inode: st.st_ino as u64,
        kind: Kind::of(st.st_mode as u32),
    }
}

const PATH_FLAGS: OFlags = OFlags::PATH.union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Open `path` (absolute, canonical) as an `O_PATH` fd, following no
/// symlink anywhere on it.
///
/// # Errors
/// `Symlink` when a component is a symlink or the path is not canonical,
/// `Open` for any other failure (missing, permission).
pub(crate) fn open_exact(path: &Path) -> Result<OwnedFd, PinError> {
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(PinError::Symlink { path: path.into() });
    }
    let resolve = ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let fd = loop {
        match fs::openat2(CWD, path, PATH_FLAGS, Mode::empty(), resolve) {
            Ok(fd) => break fd,
            // A concurrent rename elsewhere on the system: try again.
            Err(Errno::AGAIN) => continue,
            Err(Errno::NOSYS) => break walk(path)?,
            Err(Errno::LOOP) => return Err(PinError::Symlink { path: path.into() }),
            Err(errno) => return Err(open_error(path, errno)),
        }
    };
    // O_PATH|O_NOFOLLOW opens a trailing symlink itself.
    match identity_of(&fd) {
        Ok(id) if id.kind == Kind::Symlink => Err(PinError::Symlink { path: path.into() }),
        Ok(_) => Ok(fd),
        Err(source) => Err(PinError::Open {
            path: path.into(),
            source,
        }),
    }
}

fn open_error(path: &Path, errno: Errno) -> PinError {
    PinError::Open {
        path: path.into(),
        source: errno.into(),
    }
}

/// The same open for kernels without `openat2` (before 5.6): one
/// `openat(O_PATH|O_NOFOLLOW)` per component, each checked to be a
/// directory before the next step.
fn walk(path: &Path) -> Result<OwnedFd, PinError> {
    let mut fd = fs::openat(CWD, "/", PATH_FLAGS | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| open_error(path, e))?;
    for component in path.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let kind = identity_of(&fd)
            .map_err(|source| PinError::Open {
                path: path.into(),
                source,
            })?
            .kind;
        match kind {
            Kind::Directory => {}
            Kind::Symlink => return Err(PinError::Symlink { path: path.into() }),
            _ => return Err(open_error(path, Errno::NOTDIR)),
        }
        fd = fs::openat(&fd, name, PATH_FLAGS, Mode::empty()).map_err(|e| open_error(path, e))?;
    }
    Ok(fd)
}

/// Where an fd's file is now, as the kernel names it.
pub(crate) fn fd_path(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(proc_fd(fd))
}

/// `/proc/self/fd/N`: the magic link the kernel resolves to the fd's file.
pub(crate) fn proc_fd(fd: &impl std::os::fd::AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_refuses_a_symlink_on_the_way() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("link")).unwrap();
        std::fs::create_dir(real.join("a/b")).unwrap();
        assert!(walk(&real.join("a/b")).is_ok());
        assert!(matches!(
            walk(&real.join("link/b")),
            Err(PinError::Symlink { .. })
        ));
        assert!(matches!(
            open_exact(&real.join("link/b")),
            Err(PinError::Symlink { .. })
        ));
        assert!(matches!(
            open_exact(&real.join("link")),
            Err(PinError::Symlink { .. })
        ));
        assert!(matches!(
            open_exact(&real.join("a/../a")),
            Err(PinError::Symlink { .. })
        ));
        assert!(matches!(
            open_exact(&real.join("missing")),
            Err(PinError::Open { .. })
        ));
    }

    #[test]
    fn identities_see_through_hard_links() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        std::fs::hard_link(dir.path().join("f"), dir.path().join("g")).unwrap();
        let f = identity(&dir.path().join("f")).unwrap();
        assert!(f.same_file(&identity(&dir.path().join("g")).unwrap()));
        assert_eq!(f.kind, Kind::File);
        assert!(!f.same_file(&identity(dir.path()).unwrap()));
    }
}
