//! Host paths the operator configures (the codex options of docs/protocol.md §6).
//!
//! They are paths on the Docker host, not necessarily in the worker's
//! filesystem: in the Bus compose stack the worker runs in a container that
//! mounts only the workspace and the Docker socket, and the engine resolves
//! `$HOME/.codex`, `$HOME/.ssh` and the agent socket itself. So the worker
//! checks what it can see and takes the rest as given: a path it can see is
//! canonicalised and compared with the engine sockets by identity; a path it
//! cannot see is compared by spelling, and the caller warns once.

use std::path::{Component, Path, PathBuf};

use super::{HostPaths, MountPolicy};
use crate::error::FieldError;

/// An operator-configured host path as the worker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperatorHostPath {
    /// The worker can see it: its canonical spelling.
    Visible(PathBuf),
    /// The worker cannot see it: the path as configured (normalised), and
    /// why (the lookup's error). The engine may still see it.
    Invisible { path: PathBuf, reason: String },
}

impl OperatorHostPath {
    /// The path to hand to the engine.
    pub fn path(&self) -> &Path {
        match self {
            Self::Visible(p) | Self::Invisible { path: p, .. } => p,
        }
    }
}

impl MountPolicy {
    /// Check an operator-configured host path.
    ///
    /// # Errors
    /// `FieldError` naming `field` when the path names an engine socket of
    /// the pool or a directory holding one (by identity where the worker
    /// sees it, by path where not), or when a path the worker cannot see is
    /// relative or holds `..` (it cannot be compared by spelling).
    pub fn check_operator_path(
        &self,
        field: &str,
        path: &Path,
        paths: &impl HostPaths,
    ) -> Result<OperatorHostPath, FieldError> {
        let socket = |p: &Path, q: &Path| {
            FieldError::new(
                field,
                format!(
                    "{} is or contains the Docker socket {}: it is never mounted",
                    p.display(),
                    q.display()
                ),
            )
        };
        // By spelling too: a socket guarded only by its configured spelling
        // (it did not resolve at start-up) under a name that resolves now.
        let by_spelling = |normal: &Path| {
            self.protected()
                .iter()
                .find(|p| p.identity().is_none() && p.path().starts_with(normal))
        };
        match paths.resolve(path) {
            Ok(resolved) => {
                let spelled = lexical(path).and_then(|n| by_spelling(&n).cloned());
                match self.exposed_by(&resolved).or(spelled.as_ref()) {
                    Some(p) => Err(socket(path, p.path())),
                    None => Ok(OperatorHostPath::Visible(resolved.canonical)),
                }
            }
            Err(err) => {
                let normal = lexical(path).ok_or_else(|| {
                    FieldError::new(
                        field,
                        format!(
                            "{}: {err}; a path the worker cannot see must be absolute and \
                             without `..` (it is a path on the Docker host)",
                            path.display()
                        ),
                    )
                })?;
                let exposed = self
                    .protected()
                    .iter()
                    .find(|p| p.path().starts_with(&normal));
                match exposed {
                    Some(p) => Err(socket(path, p.path())),
                    None => Ok(OperatorHostPath::Invisible {
                        path: normal,
                        reason: err.to_string(),
                    }),
                }
            }
        }
    }
}

/// `path` without `.` and repeated or trailing slashes; `None` when it is
/// relative or holds `..`.
fn lexical(path: &Path) -> Option<PathBuf> {
    if !path.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake_identity, FakePaths};
    use super::super::ProtectedPath;
    use super::*;
    use crate::mount::ResolvedPath;

    fn policy() -> MountPolicy {
        MountPolicy::new(
            vec![],
            vec![
                ProtectedPath::resolved(ResolvedPath {
                    canonical: "/run/docker.sock".into(),
                    identity: fake_identity("/run/docker.sock"),
                }),
                ProtectedPath::spelled("/var/run/docker.sock".into()),
            ],
        )
    }

    #[test]
    fn a_visible_path_is_canonical_and_never_the_socket() {
        let paths = FakePaths::with(&[("/home/u/.codex", "/home/u/.codex")])
            .link("/home/u/agent", fake_identity("/run/docker.sock"));
        assert_eq!(
            policy()
                .check_operator_path("codex.home_host_path", "/home/u/.codex".as_ref(), &paths)
                .unwrap(),
            OperatorHostPath::Visible("/home/u/.codex".into())
        );
        let err = policy()
            .check_operator_path(
                "codex.ssh_agent_host_path",
                "/home/u/agent".as_ref(),
                &paths,
            )
            .unwrap_err();
        assert_eq!(err.field(), "codex.ssh_agent_host_path");
        // A spelled-only protection holds for a path that resolves now.
        let spelled_only = MountPolicy::new(
            vec![],
            vec![ProtectedPath::spelled("/srv/engine/docker.sock".into())],
        );
        let paths = FakePaths::with(&[("/srv/engine", "/data/engine")]);
        assert!(spelled_only
            .check_operator_path("codex.home_host_path", "/srv/engine".as_ref(), &paths)
            .is_err());
    }

    #[test]
    fn an_invisible_path_is_taken_as_given_unless_it_names_a_socket() {
        let none = FakePaths::with(&[]);
        let p = policy();
        let check =
            |path: &str| p.check_operator_path("codex.home_host_path", path.as_ref(), &none);
        match check("/home/u//.codex/").unwrap() {
            OperatorHostPath::Invisible { path, reason } => {
                assert_eq!(path, PathBuf::from("/home/u/.codex"));
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        for socket in [
            "/var/run/docker.sock",
            "/var/run",
            "/run/./docker.sock",
            "/",
        ] {
            assert_eq!(
                check(socket).unwrap_err().field(),
                "codex.home_host_path",
                "{socket}"
            );
        }
        assert!(check("relative/.codex").is_err());
        assert!(check("/home/u/../../var/run").is_err());
    }
}
