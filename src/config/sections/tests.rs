//! The sections' own checks, without a file or the environment.

use std::path::PathBuf;
use std::time::Duration;

use bus_docker_domain::mount::{AccessMode, HostPaths, ProtectedPath, RealHostPaths};
use bus_docker_domain::spec::Policy;

use super::policy::MAX_OUTPUT_BYTES;
use super::*;
use crate::config::ConfigError;

/// A policy protecting a real unix socket in `dir` (standing in for
/// the engine's), with `dir/root` as the allowed mount root.
fn policy_with_socket(dir: &std::path::Path) -> (Policy, PathBuf) {
    let socket = dir.join("engine.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::create_dir_all(dir.join("root")).unwrap();
    let protected = vec![ProtectedPath::resolved(
        RealHostPaths.resolve(&socket).unwrap(),
    )];
    let config = PolicyConfig {
        allowed_mount_roots: vec![dir.join("root")],
        ..PolicyConfig::default()
    };
    (config.policy(protected).unwrap(), socket)
}

fn key_of(err: ConfigError) -> String {
    err.key()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no key named: {err}"))
}

#[test]
fn policy_canonicalises_roots_and_checks_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, _) = policy_with_socket(dir.path());
    let canonical = std::fs::canonicalize(dir.path().join("root")).unwrap();
    assert_eq!(policy.mounts.allowed_roots(), &[canonical]);
    let too_big = PolicyConfig {
        max_output_bytes: MAX_OUTPUT_BYTES + 1,
        ..PolicyConfig::default()
    };
    assert_eq!(
        key_of(too_big.policy(Vec::new()).unwrap_err()),
        "policy.max_output_bytes"
    );
    let missing_root = PolicyConfig {
        allowed_mount_roots: vec![dir.path().join("absent")],
        ..PolicyConfig::default()
    };
    assert_eq!(
        key_of(missing_root.policy(Vec::new()).unwrap_err()),
        "policy.allowed_mount_roots"
    );
    let bad_pull = PolicyConfig {
        pull_policy: "sometimes".into(),
        ..PolicyConfig::default()
    };
    assert_eq!(
        key_of(bad_pull.policy(Vec::new()).unwrap_err()),
        "policy.pull_policy"
    );
}

#[test]
fn profile_mounts_are_canonical_normalised_and_never_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, socket) = policy_with_socket(dir.path());
    let mount = |source: PathBuf| MountConfig {
        source,
        target: "//data/".into(),
        read_only: true,
    };
    let ok = ProfileConfig {
        image: "alpine:3.20".into(),
        mounts: vec![mount(dir.path().join("root"))],
        ..ProfileConfig::default()
    };
    let profile = ok.profile("tools", &policy).unwrap();
    assert_eq!(profile.mounts[0].target().as_str(), "/data");
    assert_eq!(profile.mounts[0].mode(), AccessMode::ReadOnly);
    assert_eq!(profile.pull_policy, policy.default_pull_policy);
    // A hard link to the socket is the socket.
    let link = dir.path().join("root/innocent");
    std::fs::hard_link(&socket, &link).unwrap();
    let sneaky = ProfileConfig {
        mounts: vec![mount(link)],
        ..ok.clone()
    };
    assert_eq!(
        key_of(sneaky.profile("tools", &policy).unwrap_err()),
        "profiles.tools.mounts[0].source"
    );
    let bad_image = ProfileConfig {
        image: "Not/Valid".into(),
        ..ProfileConfig::default()
    };
    assert_eq!(
        key_of(bad_image.profile("x", &policy).unwrap_err()),
        "profiles.x.image"
    );
}

#[test]
fn codex_paths_are_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, socket) = policy_with_socket(dir.path());
    assert!(
        CodexConfig::default().profile(&policy).unwrap().0.is_none(),
        "no image, no profile"
    );
    let codex = CodexConfig {
        image: Some("codex:1".into()),
        workspace_host_path: Some(dir.path().join("root")),
        ..CodexConfig::default()
    };
    let profile = codex.profile(&policy).unwrap().0.expect("a codex profile");
    assert_eq!(profile.name.as_str(), "codex");
    let agent_is_the_engine = CodexConfig {
        ssh_agent_host_path: Some(socket),
        ..codex.clone()
    };
    assert_eq!(
        key_of(agent_is_the_engine.profile(&policy).unwrap_err()),
        "codex.ssh_agent_host_path"
    );
    // v3 §6: a path the worker cannot see is the engine's to resolve.
    let absent = dir.path().join("absent");
    let missing = CodexConfig {
        home_host_path: Some(absent.clone()),
        ..codex.clone()
    };
    let (profile, invisible) = missing.profile(&policy).unwrap();
    let home = profile
        .unwrap()
        .mounts
        .into_iter()
        .find(|m| m.target().as_str() == "/root/.codex")
        .unwrap();
    assert_eq!(home.source(), absent.as_path());
    assert_eq!(invisible.len(), 1);
    assert_eq!(invisible[0].key, "codex.home_host_path");
    assert_eq!(invisible[0].path, absent);
    // ...unless it names an engine socket by path.
    let unseen_socket = dir.path().join("absent/engine.sock");
    let socket_by_path = CodexConfig {
        ssh_agent_host_path: Some(unseen_socket.clone()),
        ..codex
    };
    let guarded = PolicyConfig::default()
        .policy(vec![ProtectedPath::spelled(unseen_socket)])
        .unwrap();
    assert_eq!(
        key_of(socket_by_path.profile(&guarded).unwrap_err()),
        "codex.ssh_agent_host_path"
    );
}

#[test]
fn network_policy_keys_narrow_the_permissive_default() {
    let open = PolicyConfig::default().policy(Vec::new()).unwrap();
    assert_eq!(open.networks.default_network().as_str(), "default");
    assert!(open.networks.allowed().is_none());
    assert_eq!(open.default_timeout, Duration::from_secs(30 * 60));
    assert!(open.max_timeout >= open.default_timeout);
    let narrow = PolicyConfig {
        allowed_networks: Some(vec!["none".into(), "jobs".into()]),
        default_network: Some("none".into()),
        ..PolicyConfig::default()
    }
    .policy(Vec::new())
    .unwrap();
    assert_eq!(narrow.networks.default_network().as_str(), "none");
    let outside = PolicyConfig {
        allowed_networks: Some(vec!["none".into()]),
        default_network: Some("jobs".into()),
        ..PolicyConfig::default()
    };
    assert_eq!(
        key_of(outside.policy(Vec::new()).unwrap_err()),
        "policy.default_network"
    );
    let empty = PolicyConfig {
        allowed_networks: Some(vec![]),
        ..PolicyConfig::default()
    };
    assert_eq!(
        key_of(empty.policy(Vec::new()).unwrap_err()),
        "policy.allowed_networks"
    );
}
