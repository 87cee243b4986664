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

    pub fn as_str(&self) -> &str {
        &self.0
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

/// Resolves host paths. Production canonicalises on the real filesystem.
pub trait HostPaths: Send + Sync {
    /// The canonical form of `path`: absolute, symlinks resolved.
    ///
    /// # Errors
    /// The I/O error of the lookup, e.g. `NotFound` for a missing path.
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf>;
}

/// [`HostPaths`] on the real filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHostPaths;

impl HostPaths for RealHostPaths {
    fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }
}

/// Container paths a request may never mount over.
const RESERVED_TARGETS: [&str; 4] = ["/", "/proc", "/sys", "/dev"];

/// Which host paths requests may mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountPolicy {
    allowed_roots: Vec<PathBuf>,
    protected: Vec<PathBuf>,
}

impl MountPolicy {
    /// `allowed_roots` must already be canonical (the composition root
    /// canonicalises them at start-up); `protected` lists host paths that
    /// must never be reachable through a mount, such as the Docker socket.
    pub fn new(allowed_roots: Vec<PathBuf>, protected: Vec<PathBuf>) -> Self {
        Self {
            allowed_roots,
            protected,
        }
    }

    pub fn allowed_roots(&self) -> &[PathBuf] {
        &self.allowed_roots
    }

    /// Admit one requested mount, or say which rule refuses it.
    ///
    /// # Errors
    /// * `InvalidSpec` for a relative source, a bad target, `..` segments.
    /// * `Forbidden` (`mount_root`) when the canonical source is outside
    ///   every allowed root or does not exist, (`docker_socket`) when it is
    ///   or contains a protected path, (`mount_target`) for reserved targets.
    pub fn admit(
        &self,
        index: usize,
        requested: &RequestedMount,
        paths: &impl HostPaths,
    ) -> Result<Mount, OperationError> {
        let field = |name: &str| format!("mounts[{index}].{name}");
        let source = Path::new(&requested.source);
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
        let target = ContainerPath::parse(&field("target"), &requested.target)?;
        if RESERVED_TARGETS.contains(&target.as_str()) {
            return Err(OperationError::forbidden(
                "mount_target",
                format!(
                    "{}: {} may not be mounted over",
                    field("target"),
                    target.as_str()
                ),
            ));
        }
        let canonical = paths.canonicalize(source).map_err(|err| {
            OperationError::forbidden(
                "mount_root",
                format!(
                    "{}: cannot resolve {}: {err}",
                    field("source"),
                    source.display()
                ),
            )
        })?;
        if let Some(p) = self
            .protected
            .iter()
            .find(|p| **p == canonical || p.starts_with(&canonical))
        {
            return Err(OperationError::forbidden(
                "docker_socket",
                format!(
                    "{}: {} is or contains the protected path {}",
                    field("source"),
                    canonical.display(),
                    p.display()
                ),
            ));
        }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fake filesystem: a map of path → canonical path (symlinks).
    #[derive(Default)]
    pub struct FakePaths(pub HashMap<PathBuf, PathBuf>);

    impl FakePaths {
        pub fn with(entries: &[(&str, &str)]) -> Self {
            Self(
                entries
                    .iter()
                    .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
                    .collect(),
            )
        }
    }

    impl HostPaths for FakePaths {
        fn canonicalize(&self, path: &Path) -> std::io::Result<PathBuf> {
            self.0
                .get(path)
                .cloned()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }

    fn policy() -> MountPolicy {
        MountPolicy::new(
            vec![PathBuf::from("/srv/work"), PathBuf::from("/var")],
            vec![PathBuf::from("/var/run/docker.sock")],
        )
    }

    fn req(source: &str, target: &str) -> RequestedMount {
        RequestedMount {
            source: source.into(),
            target: target.into(),
            read_only: true,
        }
    }

    fn rule(err: OperationError) -> &'static str {
        match err {
            OperationError::Forbidden { rule, .. } => rule,
            other => panic!("expected forbidden, got {other:?}"),
        }
    }

    #[test]
    fn admits_paths_inside_an_allowed_root() {
        let paths = FakePaths::with(&[("/srv/work/a", "/srv/work/a")]);
        let m = policy()
            .admit(0, &req("/srv/work/a", "/w/"), &paths)
            .unwrap();
        assert_eq!(m.source(), Path::new("/srv/work/a"));
        assert_eq!(m.target().as_str(), "/w");
        assert_eq!(m.mode(), AccessMode::ReadOnly);
        assert_eq!(
            m.origin(),
            &MountOrigin::Request {
                root: PathBuf::from("/srv/work")
            }
        );
    }

    #[test]
    fn refuses_symlink_escapes() {
        let paths = FakePaths::with(&[("/srv/work/link", "/etc")]);
        let err = policy()
            .admit(0, &req("/srv/work/link", "/w"), &paths)
            .unwrap_err();
        assert_eq!(rule(err), "mount_root");
    }

    #[test]
    fn refuses_dotdot_even_when_it_would_resolve_inside() {
        let paths = FakePaths::with(&[("/srv/work/a/../b", "/srv/work/b")]);
        let err = policy()
            .admit(0, &req("/srv/work/a/../b", "/w"), &paths)
            .unwrap_err();
        assert_eq!(rule(err), "mount_root");
    }

    #[test]
    fn never_mounts_the_docker_socket_or_a_parent_of_it() {
        let paths = FakePaths::with(&[
            ("/var/run/docker.sock", "/var/run/docker.sock"),
            ("/var/run", "/var/run"),
            ("/var", "/var"),
        ]);
        for source in ["/var/run/docker.sock", "/var/run", "/var"] {
            let err = policy().admit(0, &req(source, "/w"), &paths).unwrap_err();
            assert_eq!(rule(err), "docker_socket", "{source}");
        }
    }

    #[test]
    fn refuses_missing_relative_and_reserved() {
        let paths = FakePaths::default();
        assert_eq!(
            rule(
                policy()
                    .admit(0, &req("/srv/work/nope", "/w"), &paths)
                    .unwrap_err()
            ),
            "mount_root"
        );
        assert!(matches!(
            policy().admit(0, &req("rel/path", "/w"), &paths),
            Err(OperationError::InvalidSpec(e)) if e.field() == "mounts[0].source"
        ));
        let ok = FakePaths::with(&[("/srv/work", "/srv/work")]);
        assert_eq!(
            rule(
                policy()
                    .admit(0, &req("/srv/work", "/proc"), &ok)
                    .unwrap_err()
            ),
            "mount_target"
        );
        assert!(matches!(
            policy().admit(3, &req("/srv/work", "relative"), &ok),
            Err(OperationError::InvalidSpec(e)) if e.field() == "mounts[3].target"
        ));
    }
}
