//! Unit tests of the mount policy, and the fake filesystem other
//! modules' tests use.

use super::*;
use std::collections::HashMap;

/// A fake filesystem: a map of path → what it resolves to (symlinks,
/// hard links).
#[derive(Default)]
pub struct FakePaths(pub HashMap<PathBuf, ResolvedPath>);

/// The identity the fake gives a canonical path: one inode per
/// spelling, a socket for `*.sock`, a directory otherwise.
pub fn fake_identity(canonical: &str) -> FileIdentity {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canonical.hash(&mut h);
    FileIdentity {
        device: 1,
        inode: h.finish(),
        kind: if canonical.ends_with(".sock") {
            FileKind::Socket
        } else {
            FileKind::Directory
        },
    }
}

impl FakePaths {
    pub fn with(entries: &[(&str, &str)]) -> Self {
        Self(
            entries
                .iter()
                .map(|(a, b)| {
                    let resolved = ResolvedPath {
                        canonical: PathBuf::from(b),
                        identity: fake_identity(b),
                    };
                    (PathBuf::from(a), resolved)
                })
                .collect(),
        )
    }

    /// `path` is another name (a hard link) for the file `identity`.
    #[must_use]
    pub fn link(mut self, path: &str, identity: FileIdentity) -> Self {
        let resolved = ResolvedPath {
            canonical: PathBuf::from(path),
            identity,
        };
        self.0.insert(PathBuf::from(path), resolved);
        self
    }
}

impl HostPaths for FakePaths {
    fn resolve(&self, path: &Path) -> std::io::Result<ResolvedPath> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
}

fn socket() -> ProtectedPath {
    ProtectedPath::resolved(ResolvedPath {
        canonical: PathBuf::from("/var/run/docker.sock"),
        identity: fake_identity("/var/run/docker.sock"),
    })
}

fn policy() -> MountPolicy {
    MountPolicy::new(
        vec![PathBuf::from("/srv/work"), PathBuf::from("/var")],
        vec![socket()],
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

#[cfg(test)]
mod identity_and_target {
    use super::super::*;
    use super::{fake_identity, FakePaths};

    fn policy() -> MountPolicy {
        let socket = ProtectedPath::resolved(ResolvedPath {
            canonical: PathBuf::from("/run/docker.sock"),
            identity: fake_identity("/run/docker.sock"),
        });
        MountPolicy::new(vec![PathBuf::from("/srv/work")], vec![socket])
    }

    fn admit(source: &str, target: &str, paths: &FakePaths) -> Result<Mount, OperationError> {
        let req = RequestedMount {
            source: source.into(),
            target: target.into(),
            read_only: true,
        };
        policy().admit(0, &req, paths)
    }

    fn rule(r: Result<Mount, OperationError>) -> &'static str {
        match r {
            Err(OperationError::Forbidden { rule, .. }) => rule,
            other => panic!("expected forbidden, got {other:?}"),
        }
    }

    #[test]
    fn targets_are_normalised_lexically() {
        for (given, want) in [
            ("//sys", "/sys"),
            ("///proc//", "/proc"),
            ("/dev/../proc", "/proc"),
            ("/m/", "/m"),
            ("/./a/./b/", "/a/b"),
            ("/..", "/"),
            ("/a/b/../../..", "/"),
            ("/a//b", "/a/b"),
        ] {
            let p = ContainerPath::normalised("t", given).unwrap();
            assert_eq!(p.as_str(), want, "{given}");
        }
        assert!(ContainerPath::normalised("t", "rel/../x").is_err());
        assert!(ContainerPath::normalised("t", "/a\u{7}b").is_err());
    }

    #[test]
    fn reserved_trees_cover_every_spelling_and_only_whole_segments() {
        let paths = FakePaths::with(&[("/srv/work/a", "/srv/work/a")]);
        let long = format!("/srv/work/{}", "a".repeat(5000));
        assert!(matches!(
            admit(&long, "/x", &paths),
            Err(OperationError::InvalidSpec(e)) if e.field() == "mounts[0].source"
        ));
        for target in [
            "/",
            "//",
            "/.",
            "/..",
            "//sys",
            "/sys/",
            "/./proc",
            "/dev/../proc",
            "/proc/sys/kernel",
            "/sys/fs/cgroup",
            "/dev/shm",
            "///proc//",
            "/x/../dev",
        ] {
            assert_eq!(
                rule(admit("/srv/work/a", target, &paths)),
                "mount_target",
                "{target}"
            );
        }
        for target in ["/proc2", "/system", "/devices", "/srv/proc", "/w/sys"] {
            assert!(admit("/srv/work/a", target, &paths).is_ok(), "{target}");
        }
    }

    #[test]
    fn the_socket_is_recognised_by_identity_under_any_name() {
        let paths =
            FakePaths::default().link("/srv/work/innocent", fake_identity("/run/docker.sock"));
        assert_eq!(
            rule(admit("/srv/work/innocent", "/x", &paths)),
            "docker_socket"
        );
        // A different file with the same spelling pattern is fine.
        let other = FakePaths::with(&[("/srv/work/other.sock", "/srv/work/other.sock")]);
        assert!(admit("/srv/work/other.sock", "/x", &other).is_ok());
    }

    #[test]
    fn a_directory_containing_the_socket_is_refused_by_path() {
        let paths = FakePaths::with(&[("/run", "/run"), ("/", "/")]);
        let protected = policy();
        for dir in ["/run", "/"] {
            let resolved = paths.resolve(Path::new(dir)).unwrap();
            assert!(protected.exposed_by(&resolved).is_some(), "{dir}");
        }
        let sibling = FakePaths::with(&[("/srv/work", "/srv/work")]);
        let resolved = sibling.resolve(Path::new("/srv/work")).unwrap();
        assert!(protected.exposed_by(&resolved).is_none());
    }

    #[test]
    fn a_spelled_protected_path_still_guards_by_path() {
        let spelled = ProtectedPath::spelled(PathBuf::from("/var/run/docker.sock"));
        let resolved = ResolvedPath {
            canonical: PathBuf::from("/var/run"),
            identity: fake_identity("/var/run"),
        };
        assert!(spelled.exposed_by(&resolved));
        assert!(spelled.identity().is_none());
    }

    #[test]
    fn real_host_paths_report_identity() {
        let dir = std::env::temp_dir();
        let resolved = RealHostPaths.resolve(&dir).unwrap();
        assert_eq!(resolved.identity.kind, FileKind::Directory);
        let again = RealHostPaths.resolve(&resolved.canonical).unwrap();
        assert!(again.identity.same_file(&resolved.identity));
        assert!(RealHostPaths
            .resolve(Path::new("/no/such/path/here"))
            .is_err());
    }

    #[test]
    fn a_real_hard_link_to_a_socket_has_the_socket_identity() {
        let dir = std::env::temp_dir().join(format!("bus-domain-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("engine.sock");
        let _ = std::fs::remove_file(&sock);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let link = dir.join("innocent-name");
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(&sock, &link).unwrap();
        let protected = ProtectedPath::resolved(RealHostPaths.resolve(&sock).unwrap());
        let linked = RealHostPaths.resolve(&link).unwrap();
        assert_eq!(linked.identity.kind, FileKind::Socket);
        assert_ne!(linked.canonical, protected.path());
        assert!(protected.exposed_by(&linked));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
