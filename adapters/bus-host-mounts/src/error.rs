//! [`PinError`]: why a source was not pinned, or pinning is unavailable.

use std::path::PathBuf;

/// Why a mount source was not pinned, or why this process cannot pin.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// A component of the path is a symlink (or the path is not
    /// canonical): the path changed since it was checked.
    #[error(
        "{path}: a component is a symlink or not canonical; the path changed since it was checked"
    )]
    Symlink { path: PathBuf },
    /// The source could not be opened (missing, permission).
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The opened file is a protected file (the engine socket), whatever
    /// name it was reached by.
    #[error("{path} is the protected file {protected} (same device and inode)")]
    Protected { path: PathBuf, protected: String },
    /// What was opened is no longer inside the root that admitted it.
    #[error("{path}: the opened file is at {actual}, outside the allowed root {root}")]
    OutsideRoot {
        path: PathBuf,
        actual: PathBuf,
        root: PathBuf,
    },
    /// The staging root overlaps an allowed mount root: a container could
    /// reach the pins.
    #[error("staging directory {staging} overlaps the allowed mount root {root}")]
    StagingReachable { staging: PathBuf, root: PathBuf },
    /// The staging directory is not a private, root-owned directory.
    #[error("staging directory {path}: {reason}")]
    StagingUnsafe { path: PathBuf, reason: String },
    /// A run id that cannot name a staging directory.
    #[error("run id {0:?} cannot name a staging directory")]
    RunId(String),
    /// A file-system call on the staging directory failed.
    #[error("{op} {path}: {source}")]
    Staging {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A mount call failed (`EPERM`: this process may not mount).
    #[error("{op} {path}: {source}")]
    Mount {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PinError {
    /// Whether the source itself is refused (changed, protected, outside
    /// its root, unreadable), as opposed to pinning being broken.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Symlink { .. }
                | Self::Open { .. }
                | Self::Protected { .. }
                | Self::OutsideRoot { .. }
                | Self::StagingReachable { .. }
        )
    }

    pub(crate) fn staging(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Staging { op, path, source }
    }

    pub(crate) fn mount(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(rustix::io::Errno) -> Self {
        let path = path.into();
        move |errno| Self::Mount {
            op,
            path,
            source: errno.into(),
        }
    }
}
