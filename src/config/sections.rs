//! The sections of the configuration file, each able to build its own
//! domain value: `[policy]` a [`Policy`], `[codex]` and `[profiles.*]` a
//! [`Profile`], each key checked and named when it is wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::mount::OperatorHostPath;
use bus_docker_domain::mount::{
    AccessMode, ContainerPath, HostPaths, Mount, MountPolicy, ProtectedPath, RealHostPaths,
};
use bus_docker_domain::network::NetworkPolicy;
use bus_docker_domain::profile::{CodexOptions, Hardening, Profile, PullPolicy};
use bus_docker_domain::spec::{ImagePolicy, Policy};
use bus_docker_domain::{FieldError, ImageRef, NetworkName, ProfileName};
use serde::Deserialize;

use super::hosts::HostEntry;
use super::{field, invalid, ConfigError};
use crate::de;

/// The largest per-stream output cap: two streams and the envelope must fit
/// the 4 MiB event limit.
const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub url: Option<String>,
    /// Looked up before `BUS_API_TOKEN` and the Bus config directory's
    /// `auth/api-token`; the token itself is never a config value.
    pub token_file: Option<PathBuf>,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub group: String,
    /// Default `<hostname>-<pid>`.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub consumer: Option<String>,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub listener_retry_min: Duration,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub listener_retry_max: Duration,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub publish_retry_max: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            url: None,
            token_file: None,
            group: "bus-integration-docker".into(),
            consumer: None,
            listener_retry_min: Duration::from_millis(250),
            listener_retry_max: Duration::from_secs(5),
            publish_retry_max: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// The one engine when `hosts` is empty. Default: `DOCKER_HOST`, else
    /// `unix:///var/run/docker.sock`.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub host: Option<String>,
    /// The engines of the pool: URLs, or tables with the engine's own TLS
    /// files (see [`super::hosts`]). Empty: the one `host`.
    #[serde(deserialize_with = "super::hosts::deserialize")]
    pub hosts: Vec<HostEntry>,
    /// At most this many runs at once on any one engine (unset: only
    /// `max_concurrent_runs` limits).
    pub max_runs_per_engine: Option<usize>,
    /// Where request mounts are pinned; default
    /// `/run/bus-integration-docker/mounts/<runner name>`.
    pub mount_staging_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub allowed_mount_roots: Vec<PathBuf>,
    /// Unset: any network that shares no namespace (`none`, `default`,
    /// `bridge`, user-defined networks); set: the complete list.
    pub allowed_networks: Option<Vec<String>>,
    /// Unset: the first of `allowed_networks`, else the engine's default
    /// network (`default`).
    #[serde(deserialize_with = "de::set_text::deserialize")]
    pub default_network: Option<String>,
    pub allowed_images: Vec<String>,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub default_timeout: Duration,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub max_timeout: Duration,
    /// The longest `stop_grace` the operator allows.
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub max_stop_grace: Duration,
    pub max_output_bytes: usize,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub pull_policy: String,
    pub hardening: HardeningConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            allowed_mount_roots: Vec::new(),
            allowed_networks: None,
            default_network: None,
            allowed_images: vec!["*".into()],
            default_timeout: bus_docker_domain::spec::DEFAULT_TIMEOUT,
            max_timeout: bus_docker_domain::spec::DEFAULT_MAX_TIMEOUT,
            max_stop_grace: Duration::from_secs(60),
            max_output_bytes: 1024 * 1024,
            pull_policy: "if-not-present".into(),
            hardening: HardeningConfig::default(),
        }
    }
}

/// Hardening; in a profile every key is optional and falls back to
/// `[policy.hardening]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HardeningConfig {
    pub no_new_privileges: Option<bool>,
    pub cap_drop: Option<Vec<String>>,
    pub cap_add: Option<Vec<String>>,
    pub pids_limit: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub cpus: Option<f64>,
    pub read_only_rootfs: Option<bool>,
    pub tmpfs: Option<Vec<String>>,
}

impl HardeningConfig {
    fn apply(&self, base: &Hardening) -> Result<Hardening, FieldError> {
        let tmpfs = match &self.tmpfs {
            Some(list) => list
                .iter()
                .map(|p| ContainerPath::parse("hardening.tmpfs", p))
                .collect::<Result<_, _>>()?,
            None => base.tmpfs.clone(),
        };
        if self.cpus.is_some_and(|c| !(c > 0.0 && c <= 1024.0)) {
            return Err(FieldError::new("hardening.cpus", "must be > 0"));
        }
        Ok(Hardening {
            no_new_privileges: self.no_new_privileges.unwrap_or(base.no_new_privileges),
            cap_drop: self
                .cap_drop
                .clone()
                .unwrap_or_else(|| base.cap_drop.clone()),
            cap_add: self.cap_add.clone().unwrap_or_else(|| base.cap_add.clone()),
            pids_limit: self.pids_limit.or(base.pids_limit),
            memory_bytes: self.memory_bytes.or(base.memory_bytes),
            #[allow(clippy::cast_possible_truncation)]
            nano_cpus: self.cpus.map(|c| (c * 1e9) as i64).or(base.nano_cpus),
            read_only_rootfs: self.read_only_rootfs.unwrap_or(base.read_only_rootfs),
            tmpfs,
        })
    }
}

/// The codex profile (docs/protocol.md §6); flags and their env vars override these.
/// An empty value is unset (v3).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodexConfig {
    #[serde(deserialize_with = "de::set_text::deserialize")]
    pub image: Option<String>,
    #[serde(deserialize_with = "de::set_path::deserialize")]
    pub home_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::set_boolean::deserialize")]
    pub home_writable: bool,
    /// Each run gets its own home seeded from `home_host_path`, whose
    /// `auth.json` is shared read-write (docs/protocol.md §6).
    #[serde(deserialize_with = "de::set_boolean::deserialize")]
    pub home_per_run: bool,
    /// A session unused this long is removed (default 7 days).
    #[serde(deserialize_with = "de::opt_duration::deserialize")]
    pub session_retention: Option<Duration>,
    #[serde(deserialize_with = "de::set_path::deserialize")]
    pub workspace_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::set_text::deserialize")]
    pub workspace_container_path: Option<String>,
    #[serde(deserialize_with = "de::set_path::deserialize")]
    pub ssh_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::set_path::deserialize")]
    pub ssh_agent_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::set_text::deserialize")]
    pub git_ssh_command: Option<String>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub pull_policy: Option<String>,
    #[serde(deserialize_with = "de::opt_duration::deserialize")]
    pub default_timeout: Option<Duration>,
    /// Parked containers kept per engine (docs/protocol.md §10); 0: none.
    pub warm: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    pub source: PathBuf,
    pub target: String,
    #[serde(default, deserialize_with = "de::boolean::deserialize")]
    pub read_only: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileConfig {
    #[serde(deserialize_with = "de::text::deserialize")]
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<MountConfig>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub network: Option<String>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub workdir: Option<String>,
    #[serde(deserialize_with = "de::opt_duration::deserialize")]
    pub default_timeout: Option<Duration>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub pull_policy: Option<String>,
    #[serde(deserialize_with = "de::boolean::deserialize")]
    pub allow_image_override: bool,
    pub hardening: HardeningConfig,
    /// Parked containers kept per engine (docs/protocol.md §10); 0: none.
    pub warm: usize,
}

impl PolicyConfig {
    /// The request policy: allowed roots canonicalised now (start-up),
    /// networks, images, limits and the base hardening.
    ///
    /// # Errors
    /// `Invalid` naming the `policy.*` key that is wrong.
    pub fn policy(&self, protected: Vec<ProtectedPath>) -> Result<Policy, ConfigError> {
        if self.max_output_bytes == 0 || self.max_output_bytes > MAX_OUTPUT_BYTES {
            return Err(invalid(
                "policy.max_output_bytes",
                "must be between 1 and 1048576 (the event limit is 4 MiB)",
            ));
        }
        let roots = self
            .allowed_mount_roots
            .iter()
            .map(|root| {
                std::fs::canonicalize(root).map_err(|e| {
                    invalid(
                        "policy.allowed_mount_roots",
                        format!("{}: {e}", root.display()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let allowed_networks = self
            .allowed_networks
            .as_ref()
            .map(|list| list.iter().map(|n| NetworkName::parse(n)).collect())
            .transpose()
            .map_err(field("policy.allowed_networks"))?;
        let default_network = self
            .default_network
            .as_deref()
            .map(NetworkName::parse)
            .transpose()
            .map_err(field("policy.default_network"))?;
        let networks = NetworkPolicy::new(allowed_networks, default_network)
            .map_err(|e| invalid(format!("policy.{}", e.field()), e.message()))?;
        Ok(Policy {
            mounts: MountPolicy::new(roots, protected),
            images: ImagePolicy::new(self.allowed_images.clone()),
            networks,
            default_timeout: self.default_timeout,
            max_timeout: self.max_timeout,
            max_output_bytes: self.max_output_bytes,
            default_pull_policy: PullPolicy::parse(&self.pull_policy)
                .map_err(field("policy.pull_policy"))?,
            hardening: self
                .hardening
                .apply(&Hardening::default())
                .map_err(field("policy.hardening"))?,
        })
    }
}

/// An operator-configured host path (profile mount source, codex path):
/// canonicalised, and never the Docker socket or a directory holding it
/// (compared by device and inode, like request mounts).
fn operator_path(key: &str, path: &Path, mounts: &MountPolicy) -> Result<PathBuf, ConfigError> {
    let resolved = RealHostPaths
        .resolve(path)
        .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
    if let Some(p) = mounts.exposed_by(&resolved) {
        return Err(invalid(
            key,
            format!(
                "{} is or contains the Docker socket {}: it is never mounted",
                path.display(),
                p.path().display()
            ),
        ));
    }
    Ok(resolved.canonical)
}

impl MountConfig {
    fn mount(&self, key: &str, mounts: &MountPolicy) -> Result<Mount, ConfigError> {
        let target = ContainerPath::normalised(&format!("{key}.target"), &self.target)
            .map_err(|e| invalid(format!("{key}.target"), e.to_string()))?;
        let mode = if self.read_only {
            AccessMode::ReadOnly
        } else {
            AccessMode::ReadWrite
        };
        let source = operator_path(&format!("{key}.source"), &self.source, mounts)?;
        Ok(Mount::operator(source, target, mode))
    }
}

impl ProfileConfig {
    /// The profile `[profiles.<name>]` describes, on top of the policy's
    /// pull policy and hardening.
    ///
    /// # Errors
    /// `Invalid` naming the `profiles.<name>.*` key that is wrong.
    pub fn profile(&self, name: &str, policy: &Policy) -> Result<Profile, ConfigError> {
        let key = |k: &str| format!("profiles.{name}.{k}");
        let pname = ProfileName::parse(name).map_err(field(&key("name")))?;
        let image =
            ImageRef::parse(&self.image).map_err(|e| invalid(key("image"), e.to_string()))?;
        let mut profile = Profile::new(pname, image);
        profile.command = self.command.clone();
        profile.env = self.env.clone();
        for (i, m) in self.mounts.iter().enumerate() {
            profile
                .mounts
                .push(m.mount(&key(&format!("mounts[{i}]")), &policy.mounts)?);
        }
        profile.network = self
            .network
            .as_deref()
            .map(NetworkName::parse)
            .transpose()
            .map_err(field(&key("network")))?;
        profile.workdir = self
            .workdir
            .as_deref()
            .map(|w| ContainerPath::parse("workdir", w))
            .transpose()
            .map_err(field(&key("workdir")))?;
        profile.default_timeout = self.default_timeout;
        profile.pull_policy = match &self.pull_policy {
            Some(pp) => PullPolicy::parse(pp).map_err(field(&key("pull_policy")))?,
            None => policy.default_pull_policy,
        };
        profile.allow_image_override = self.allow_image_override;
        profile.hardening = self
            .hardening
            .apply(&policy.hardening)
            .map_err(field(&key("hardening")))?;
        Ok(profile)
    }
}

/// A codex host path the worker cannot see (docs/protocol.md §6, v3): taken as
/// configured, for the engine to resolve; the worker warns once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvisibleHostPath {
    /// The config key, e.g. `codex.home_host_path`.
    pub key: String,
    pub path: PathBuf,
    /// Why the worker cannot see it (the lookup's error).
    pub reason: String,
}

/// How long an unused codex session is kept when none is configured.
pub const DEFAULT_SESSION_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl CodexConfig {
    /// How long an unused session is kept: `None` unless runs get their
    /// own homes (nothing else keeps sessions).
    pub fn session_retention(&self) -> Option<Duration> {
        self.home_per_run
            .then(|| self.session_retention.unwrap_or(DEFAULT_SESSION_RETENTION))
    }

    /// The `codex` profile (docs/protocol.md §6), or `None` without an image, and
    /// the configured host paths the worker cannot see. These are paths on
    /// the Docker host: one the worker sees is canonicalised and never the
    /// Docker socket (by identity); one it cannot see is taken as given
    /// (never an engine socket by path) and listed for a warning.
    ///
    /// # Errors
    /// `Invalid` naming the `codex.*` key that is wrong.
    pub fn profile(
        &self,
        policy: &Policy,
    ) -> Result<(Option<Profile>, Vec<InvisibleHostPath>), ConfigError> {
        let mut invisible = Vec::new();
        let mut path = |key: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            let Some(p) = p else { return Ok(None) };
            let key = format!("codex.{key}");
            let checked = policy
                .mounts
                .check_operator_path(&key, p, &RealHostPaths)
                .map_err(|e| invalid(&key, e.message()))?;
            if let OperatorHostPath::Invisible { path, reason } = &checked {
                invisible.push(InvisibleHostPath {
                    key,
                    path: path.clone(),
                    reason: reason.clone(),
                });
            }
            Ok(Some(checked.path().to_owned()))
        };
        if self.home_per_run && self.home_host_path.is_none() {
            return Err(invalid(
                "codex.home_per_run",
                "needs codex.home_host_path (--codex-home-host-path): the home whose \
                 configuration seeds each run and whose auth.json every run shares",
            ));
        }
        if self.home_per_run && self.home_writable {
            return Err(invalid(
                "codex.home_per_run",
                "and codex.home_writable are two modes of the home; choose one \
                 (per run: each run its own home, one shared auth.json)",
            ));
        }
        if self.session_retention.is_some_and(|r| r.is_zero()) {
            return Err(invalid(
                "codex.session_retention",
                "must be more than 0s (a session would be removed before it is resumed)",
            ));
        }
        let options = CodexOptions {
            image: self
                .image
                .as_deref()
                .map(ImageRef::parse)
                .transpose()
                .map_err(field("codex.image"))?,
            home_host_path: path("home_host_path", &self.home_host_path)?,
            home_writable: self.home_writable,
            home_per_run: self.home_per_run,
            workspace_host_path: path("workspace_host_path", &self.workspace_host_path)?,
            workspace_container_path: self
                .workspace_container_path
                .as_deref()
                .map(|p| ContainerPath::parse("workspace_container_path", p))
                .transpose()
                .map_err(field("codex.workspace_container_path"))?,
            ssh_host_path: path("ssh_host_path", &self.ssh_host_path)?,
            ssh_agent_host_path: path("ssh_agent_host_path", &self.ssh_agent_host_path)?,
            git_ssh_command: self.git_ssh_command.clone(),
        };
        let Some(mut profile) = options.profile(policy.hardening.clone()) else {
            return Ok((None, invisible));
        };
        profile.pull_policy = match &self.pull_policy {
            Some(p) => PullPolicy::parse(p).map_err(field("codex.pull_policy"))?,
            None => policy.default_pull_policy,
        };
        profile.default_timeout = self.default_timeout;
        Ok((Some(profile), invisible))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        match err {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not an invalid key: {other}"),
        }
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
}
