//! The mount policy asks the filesystem port about each requested mount
//! exactly once and never about operator (profile) mounts, which are
//! trusted as configured. Checked with a mockall double of `HostPaths`.

use std::path::{Path, PathBuf};

use bus_docker_domain::ids::{CorrelationId, ImageRef, ProfileName, RunId};
use bus_docker_domain::mount::{
    AccessMode, ContainerPath, FileIdentity, FileKind, HostPaths, Mount, MountPolicy,
    RequestedMount, ResolvedPath,
};
use bus_docker_domain::profile::{Profile, Profiles};
use bus_docker_domain::request::RunRequest;
use bus_docker_domain::spec::{resolve, Origin, Policy};
use mockall::predicate::eq;

mockall::mock! {
    Paths {}
    impl HostPaths for Paths {
        fn resolve(&self, path: &Path) -> std::io::Result<ResolvedPath>;
    }
}

fn dir(path: &str, inode: u64) -> ResolvedPath {
    ResolvedPath {
        canonical: PathBuf::from(path),
        identity: FileIdentity {
            device: 7,
            inode,
            kind: FileKind::Directory,
        },
    }
}

#[test]
fn each_requested_mount_is_resolved_once_and_profile_mounts_never() {
    let mut paths = MockPaths::new();
    paths
        .expect_resolve()
        .with(eq(Path::new("/srv/data/link")))
        .times(1)
        .returning(|_| Ok(dir("/srv/data/real", 1)));
    paths
        .expect_resolve()
        .with(eq(Path::new("/srv/data/other")))
        .times(1)
        .returning(|_| Ok(dir("/srv/data/other", 2)));

    let mut profile = Profile::new(
        ProfileName::parse("p").unwrap(),
        ImageRef::parse("img:1").unwrap(),
    );
    profile.command = Some(vec!["true".into()]);
    profile.mounts.push(Mount::operator(
        PathBuf::from("/opt/operator"),
        ContainerPath::parse("t", "/operator").unwrap(),
        AccessMode::ReadOnly,
    ));
    let policy = Policy {
        mounts: MountPolicy::new(vec![PathBuf::from("/srv/data")], vec![]),
        ..Policy::default()
    };
    let request = RunRequest {
        profile: Some(ProfileName::parse("p").unwrap()),
        mounts: vec![
            RequestedMount {
                source: "/srv/data/link".into(),
                target: "/a".into(),
                read_only: true,
            },
            RequestedMount {
                source: "/srv/data/other".into(),
                target: "/b".into(),
                read_only: false,
            },
        ],
        ..RunRequest::default()
    };
    let origin = Origin {
        correlation: CorrelationId::parse("c").unwrap(),
        stamped_owner: None,
        reply_event: "bus.docker.run.response".into(),
    };
    let spec = resolve(
        &request,
        &origin,
        &Profiles::new([profile]),
        &policy,
        &paths,
        RunId::parse("r").unwrap(),
    )
    .unwrap();
    let sources: Vec<&Path> = spec.mounts.iter().map(Mount::source).collect();
    assert_eq!(
        sources,
        [
            Path::new("/opt/operator"),
            Path::new("/srv/data/real"),
            Path::new("/srv/data/other")
        ]
    );
    assert_eq!(spec.mounts[1].mode(), AccessMode::ReadOnly);
    assert_eq!(spec.mounts[2].mode(), AccessMode::ReadWrite);
}
