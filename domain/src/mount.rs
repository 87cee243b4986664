//! Bind mounts and the mount policy that keeps requests inside what the
//! operator allowed.
//!
//! The policy is a pure function over a [`HostPaths`] port: the real
//! filesystem resolves symlinks in production, a fake one in unit tests.

use std::path::{Component, Path, PathBuf};

use crate::error::{FieldError, OperationError};

/// Whether a mount may be written through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessMode {
    ReadOnly,
    ReadWrite,
}

/// An absolute, normalised path inside the container.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerPath(String);

impl ContainerPath {
    /// # Errors
    /// `FieldError` (field `field`) unless absolute, without `.`/`..`
    /// segments or control characters, at most 4096 bytes.
    pub fn parse(field: &str, value: &str) -> Result<Self, FieldError> {
        if !value.starts_with('/') {
            return Err(FieldError::new(field, "must be an absolute path"));
        }
        if value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must be at most 4096 bytes without control characters",
            ));
        }
        if value.split('/').any(|s| s == ".." || s == ".") {
            return Err(FieldError::new(field, "must not contain . or .. segments"));
        }
        let trimmed = value.trim_end_matches('/');
        Ok(Self(
            if trimmed.is_empty() { "/" } else { trimmed }.to_owned(),
        ))
    }

    /// A mount target: absolute, then normalised lexically the way the
    /// kernel and Docker read it (`//sys` → `/sys`, `/dev/../proc` →
    /// `/proc`, `/m/` → `/m`), so that every rule compares what takes
    /// effect, not a spelling.
    ///
    /// # Errors
    /// `FieldError` (field `field`) unless absolute, at most 4096 bytes and
    /// without control characters.
    pub fn normalised(field: &str, value: &str) -> Result<Self, FieldError> {
        if !value.starts_with('/') {
            return Err(FieldError::new(field, "must be an absolute path"));
        }
        if value.len() > 4096 || value.chars().any(char::is_control) {
            return Err(FieldError::new(
                field,
                "must be at most 4096 bytes without control characters",
            ));
        }
        let mut parts: Vec<&str> = Vec::new();
        for segment in value.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        Ok(Self(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this path is `base` or lies beneath it (by whole segments:
    /// `/proc2` is not beneath `/proc`).
    pub fn is_within(&self, base: &str) -> bool {
        base == "/"
            || self.0 == base
            || self
                .0
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Who chose a mount's source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MountOrigin {
    /// The operator (profiles): taken as configured.
    Operator,
    /// A request, admitted by [`MountPolicy::admit`] because its canonical
    /// source is inside `root`. The runtime must mount exactly what was
    /// checked (pinning), re-checking against this root.
    Request { root: PathBuf },
}

/// A bind mount of a host path into the container.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Mount {
    source: PathBuf,
    target: ContainerPath,
    mode: AccessMode,
    origin: MountOrigin,
}

impl Mount {
    /// An operator-configured mount (profiles): trusted, not subject to the
    /// allowed roots, but still never the Docker socket.
    pub fn operator(source: PathBuf, target: ContainerPath, mode: AccessMode) -> Self {
        Self {
            source,
            target,
            mode,
            origin: MountOrigin::Operator,
        }
    }

    /// A request's mount whose canonical `source` was admitted inside the
    /// allowed `root`.
    pub fn requested(
        source: PathBuf,
        root: PathBuf,
        target: ContainerPath,
        mode: AccessMode,
    ) -> Self {
        Self {
            source,
            target,
            mode,
            origin: MountOrigin::Request { root },
        }
    }

    pub fn origin(&self) -> &MountOrigin {
        &self.origin
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn target(&self) -> &ContainerPath {
        &self.target
    }

    pub fn mode(&self) -> AccessMode {
        self.mode
    }
}

/// A mount as a request asks for it, before the policy looked at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
}

/// What kind of file a host path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Directory,
    File,
    Socket,
    /// Devices, fifos, anything else.
    Other,
}

/// The identity of a file, as the filesystem knows it: the same device and
/// inode is the same file under any name (hard links included).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    pub device: u64,
    pub inode: u64,
    pub kind: FileKind,
}

impl FileIdentity {
    /// Whether `other` is the same file (device and inode).
    pub fn same_file(&self, other: &FileIdentity) -> bool {
        self.device == other.device && self.inode == other.inode
    }
}

/// A host path resolved on the filesystem: its canonical spelling and the
/// identity of the file it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedPath {
    pub canonical: PathBuf,
    pub identity: FileIdentity,
}

/// Resolves host paths. Production asks the real filesystem
/// ([`RealHostPaths`]); unit tests use a fake.
pub trait HostPaths: Send + Sync {
    /// The canonical form of `path` (absolute, symlinks resolved) and the
    /// identity of the file it names.
    ///
    /// # Errors
    /// The I/O error of the lookup, e.g. `NotFound` for a missing path.
    fn resolve(&self, path: &Path) -> std::io::Result<ResolvedPath>;
}

/// [`HostPaths`] on the real filesystem (`realpath`, then `stat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHostPaths;

impl HostPaths for RealHostPaths {
    fn resolve(&self, path: &Path) -> std::io::Result<ResolvedPath> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let canonical = std::fs::canonicalize(path)?;
        let meta = std::fs::metadata(&canonical)?;
        let file_type = meta.file_type();
        let kind = if file_type.is_dir() {
            FileKind::Directory
        } else if file_type.is_file() {
            FileKind::File
        } else if file_type.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        };
        Ok(ResolvedPath {
            canonical,
            identity: FileIdentity {
                device: meta.dev(),
                inode: meta.ino(),
                kind,
            },
        })
    }
}

/// A host path no mount may expose (the Docker socket): recognised by its
/// identity wherever it is linked, and by its canonical path when a mounted
/// directory contains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPath {
    path: PathBuf,
    identity: Option<FileIdentity>,
}

impl ProtectedPath {
    /// A protected path as resolved at start-up.
    pub fn resolved(resolved: ResolvedPath) -> Self {
        Self {
            path: resolved.canonical,
            identity: Some(resolved.identity),
        }
    }

    /// A protected path that does not exist (yet): guarded by spelling only.
    pub fn spelled(path: PathBuf) -> Self {
        Self {
            path,
            identity: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn identity(&self) -> Option<&FileIdentity> {
        self.identity.as_ref()
    }

    /// Whether mounting `source` would expose this path: it is the same
    /// file (any hard link), or a directory on the way to it.
    pub fn exposed_by(&self, source: &ResolvedPath) -> bool {
        self.identity
            .is_some_and(|id| id.same_file(&source.identity))
            || self.path == source.canonical
            || self.path.starts_with(&source.canonical)
    }
}

/// Whether a request may mount over this container path: never `/`, nor
/// anything at or beneath `/proc`, `/sys` or `/dev` (the kernel's views
/// that a container's isolation depends on).
pub fn target_is_reserved(target: &ContainerPath) -> bool {
    target.as_str() == "/" || RESERVED_TARGET_TREES.iter().any(|t| target.is_within(t))
}

/// Container trees a request may never mount into.
const RESERVED_TARGET_TREES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Which host paths requests may mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPolicy {
    allowed_roots: Vec<PathBuf>,
    protected: Vec<ProtectedPath>,
}

impl MountPolicy {
    /// `allowed_roots` must already be canonical (the composition root
    /// canonicalises them at start-up); `protected` lists host paths that
    /// must never be reachable through a mount, such as the Docker socket
    /// (resolved at start-up, so that its identity is known).
    pub fn new(allowed_roots: Vec<PathBuf>, protected: Vec<ProtectedPath>) -> Self {
        Self {
            allowed_roots,
            protected,
        }
    }

    pub fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed_roots
    }

    /// The host paths no mount may expose.
    pub fn protected(&self) -> &[ProtectedPath] {
        &self.protected
    }

    /// The protected path that mounting `source` would expose, if any.
    pub fn exposed_by(&self, source: &ResolvedPath) -> Option<&ProtectedPath> {
        self.protected.iter().find(|p| p.exposed_by(source))
    }

    /// Admit one requested mount, or say which rule refuses it.
    ///
    /// # Errors
    /// * `InvalidSpec` for a relative source or a relative target.
    /// * `Forbidden` (`mount_root`) for `..` in the source, or when the
    ///   canonical source is outside every allowed root or does not exist;
    ///   (`docker_socket`) when it is a protected file (same device and
    ///   inode, whatever its name) or a directory containing one;
    ///   (`mount_target`) when the normalised target is `/` or at or beneath
    ///   `/proc`, `/sys`, `/dev`.
    pub fn admit(
        &self,
        index: usize,
        requested: &RequestedMount,
        paths: &impl HostPaths,
    ) -> Result<Mount, OperationError> {
        let field = |name: &str| format!("mounts[{index}].{name}");
        let source = Path::new(&requested.source);
        if requested.source.len() > 4096 {
            return Err(FieldError::new(field("source"), "must be at most 4096 bytes").into());
        }
        if requested.source.is_empty()
            || !source.is_absolute()
            || requested.source.chars().any(char::is_control)
        {
            return Err(FieldError::new(field("source"), "must be an absolute host path").into());
        }
        if source
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(OperationError::forbidden(
                "mount_root",
                format!("{}: `..` segments are not allowed", field("source")),
            ));
        }
        let target = ContainerPath::normalised(&field("target"), &requested.target)?;
        if target_is_reserved(&target) {
            return Err(OperationError::forbidden(
                "mount_target",
                format!(
                    "{}: {} may not be mounted over",
                    field("target"),
                    target.as_str()
                ),
            ));
        }
        let resolved = paths.resolve(source).map_err(|err| {
            OperationError::forbidden(
                "mount_root",
                format!(
                    "{}: cannot resolve {}: {err}",
                    field("source"),
                    source.display()
                ),
            )
        })?;
        if let Some(p) = self.exposed_by(&resolved) {
            return Err(OperationError::forbidden(
                "docker_socket",
                format!(
                    "{}: {} is or contains the protected path {}",
                    field("source"),
                    resolved.canonical.display(),
                    p.path().display()
                ),
            ));
        }
        let canonical = resolved.canonical;
        let Some(root) = self
            .allowed_roots
            .iter()
            .find(|root| canonical.starts_with(root))
        else {
            return Err(OperationError::forbidden(
                "mount_root",
                format!(
                    "{}: {} resolves outside the allowed mount roots",
                    field("source"),
                    canonical.display()
                ),
            ));
        };
        let mode = if requested.read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        Ok(Mount::requested(canonical, root.clone(), target, mode))
    }
}

mod host_path;
pub use host_path::OperatorHostPath;

#[cfg(test)]
pub(crate) mod tests;
