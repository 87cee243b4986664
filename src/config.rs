//! Configuration.
//!
//! Layering, lowest to highest precedence — written down once, here and in
//! the README:
//!
//! 1. built-in defaults (the `Default` impls below);
//! 2. the TOML config file (`--config` / `BUS_DOCKER_CONFIG`);
//! 3. environment: any key as `BUS_DOCKER__<SECTION>__<KEY>` (e.g.
//!    `BUS_DOCKER__POLICY__MAX_TIMEOUT=10m`), plus the contract's own env
//!    vars (`BUS_EVENTS_API_URL`, `BUS_DOCKER_CODEX_*`, ...) which clap reads;
//! 4. command-line flags.
//!
//! Unknown keys are rejected with the key named. `config.example.toml`
//! documents every key and a test parses it. Env values are text, so every
//! field accepts its text form: booleans `1/true/yes/on`/`0/false/no/off`,
//! durations `250ms`, `5s`, `30m` or bare seconds, strings that look like
//! numbers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::mount::{
    AccessMode, ContainerPath, HostPaths, Mount, MountPolicy, ProtectedPath, RealHostPaths,
};
use bus_docker_domain::profile::{CodexOptions, Hardening, Profile, Profiles, PullPolicy};
use bus_docker_domain::spec::{ImagePolicy, Policy};
use bus_docker_domain::{EventPrefix, FieldError, ImageRef, NetworkName, ProfileName};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::de;
use crate::worker::WorkerSettings;

/// Env prefix for any config key: `BUS_DOCKER__POLICY__MAX_TIMEOUT`.
pub const ENV_PREFIX: &str = "BUS_DOCKER__";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Docker,
    Static,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The whole configuration as the file spells it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub provider: Provider,
    /// Unset: standalone mode on `bus.containers`.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub event_prefix: Option<String>,
    /// Default `docker@<hostname>`.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub runner_name: Option<String>,
    pub log_format: LogFormat,
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub shutdown_grace: Duration,
    /// Delete and timeout: SIGTERM, then SIGKILL after this long (capped
    /// by `policy.max_stop_grace`).
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub stop_grace: Duration,
    /// Finished runs stay in `status` (and their containers stay as
    /// tombstones that stop redelivered duplicates) this long.
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub run_retention: Duration,
    pub max_concurrent_runs: usize,
    pub max_queued_runs: usize,
    pub response_cache: usize,
    pub response_cache_bytes: usize,
    /// `HOST:PORT` of the `/metrics`, `/healthz`, `/readyz` listener;
    /// unset: no listener.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub metrics_addr: Option<String>,
    /// The longest an image pull may take (then `image_unavailable`).
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub pull_timeout: Duration,
    pub events: EventsConfig,
    pub docker: DockerConfig,
    pub policy: PolicyConfig,
    pub codex: CodexConfig,
    pub profiles: BTreeMap<String, ProfileConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            provider: Provider::Docker,
            event_prefix: None,
            runner_name: None,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
            run_retention: Duration::from_secs(15 * 60),
            max_concurrent_runs: 4,
            max_queued_runs: 64,
            response_cache: 1024,
            response_cache_bytes: 64 * 1024 * 1024,
            metrics_addr: None,
            pull_timeout: Duration::from_secs(10 * 60),
            events: EventsConfig::default(),
            docker: DockerConfig::default(),
            policy: PolicyConfig::default(),
            codex: CodexConfig::default(),
            profiles: BTreeMap::new(),
        }
    }
}

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
    /// Default: `DOCKER_HOST`, else `unix:///var/run/docker.sock`.
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub host: Option<String>,
    /// Where request mounts are pinned; default
    /// `/run/bus-integration-docker/mounts/<runner name>`.
    pub mount_staging_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub allowed_mount_roots: Vec<PathBuf>,
    pub allowed_networks: Vec<String>,
    #[serde(deserialize_with = "de::text::deserialize")]
    pub default_network: String,
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
            allowed_networks: vec!["none".into()],
            default_network: "none".into(),
            allowed_images: vec!["*".into()],
            default_timeout: Duration::from_secs(300),
            max_timeout: Duration::from_secs(1800),
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

/// The codex profile (contract §6); flags and their env vars override these.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CodexConfig {
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub image: Option<String>,
    pub home_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::boolean::deserialize")]
    pub home_writable: bool,
    pub workspace_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub workspace_container_path: Option<String>,
    pub ssh_host_path: Option<PathBuf>,
    pub ssh_agent_host_path: Option<PathBuf>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub git_ssh_command: Option<String>,
    #[serde(deserialize_with = "de::opt_text::deserialize")]
    pub pull_policy: Option<String>,
    #[serde(deserialize_with = "de::opt_duration::deserialize")]
    pub default_timeout: Option<Duration>,
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
}

/// A configuration that cannot be used, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(Box<figment::Error>),
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        Self::Load(Box::new(e))
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn field(key: &str) -> impl Fn(FieldError) -> ConfigError + '_ {
    move |e| invalid(key, e.to_string())
}

/// Load: defaults → file → `BUS_DOCKER__*` env → `overrides` (flags and
/// the contract's env vars, as dotted keys).
///
/// # Errors
/// The file cannot be read or parsed, a key is unknown, a value has the
/// wrong form.
pub fn load(
    file: Option<&Path>,
    overrides: &[(String, OverrideValue)],
) -> Result<Config, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(invalid(
                "config",
                format!("config file {} does not exist", path.display()),
            ));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    for (key, value) in overrides {
        figment = figment.merge(Serialized::global(key, value));
    }
    Ok(figment.extract()?)
}

/// A value given on the command line (or its env var).
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum OverrideValue {
    Text(String),
    Bool(bool),
    Number(u64),
}

/// Everything the composition root needs, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub worker: WorkerSettings,
    pub provider: Provider,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub events: EventsConfig,
    pub docker_host: Option<String>,
    /// Where request mounts are pinned (`docker.mount_staging_dir`).
    pub mount_staging_dir: PathBuf,
    /// The metrics and health listener's address (`metrics_addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The deadline of one image pull (`pull_timeout`).
    pub pull_timeout: Duration,
}

/// `HOST:PORT`: an IP address, or a name resolved once at start-up.
fn socket_addr(key: &str, text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| invalid(key, format!("{text:?} is not HOST:PORT: {e}")))?
        .next()
        .ok_or_else(|| invalid(key, format!("{text:?} resolves to no address")))
}

fn docker_socket(host: Option<&str>) -> Option<PathBuf> {
    let env = std::env::var("DOCKER_HOST").ok();
    let host = host.map(ToOwned::to_owned).or(env)?;
    host.strip_prefix("unix://").map(PathBuf::from)
}

/// Host paths that no mount may expose: the Docker socket, resolved once so
/// that its identity (device and inode) is known and any hard link to it
/// is recognised. A spelling that does not resolve is still guarded by
/// path.
fn protected_paths(docker_host: Option<&str>) -> Vec<ProtectedPath> {
    let mut spelled: Vec<PathBuf> = ["/var/run/docker.sock", "/run/docker.sock"]
        .iter()
        .map(PathBuf::from)
        .collect();
    spelled.extend(docker_socket(docker_host));
    let mut protected: Vec<ProtectedPath> = Vec::new();
    for path in spelled {
        let entry = match RealHostPaths.resolve(&path) {
            Ok(resolved) => ProtectedPath::resolved(resolved),
            Err(_) => ProtectedPath::spelled(path.clone()),
        };
        if !protected.contains(&entry) {
            protected.push(entry);
        }
        // The spelling too: a directory on the way to it is refused by path.
        let spelled = ProtectedPath::spelled(path);
        if !protected.iter().any(|p| p.path() == spelled.path()) {
            protected.push(spelled);
        }
    }
    protected
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn host_name() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn default_runner_name() -> String {
    format!("docker@{}", host_name())
}

impl Config {
    /// Validate and turn into domain settings.
    ///
    /// # Errors
    /// `Invalid` naming the key for any value the domain refuses.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let prefix = match &self.event_prefix {
            Some(p) => EventPrefix::parse(p).map_err(field("event_prefix"))?,
            None => EventPrefix::standalone(),
        };
        if self.max_concurrent_runs == 0 {
            return Err(invalid("max_concurrent_runs", "must be at least 1"));
        }
        if self.pull_timeout.is_zero() {
            return Err(invalid("pull_timeout", "must be more than 0"));
        }
        let metrics_addr = self
            .metrics_addr
            .as_deref()
            .map(|a| socket_addr("metrics_addr", a))
            .transpose()?;
        let p = &self.policy;
        if p.max_output_bytes == 0 || p.max_output_bytes > 1024 * 1024 {
            return Err(invalid(
                "policy.max_output_bytes",
                "must be between 1 and 1048576 (the event limit is 4 MiB)",
            ));
        }
        let mut roots = Vec::new();
        for root in &p.allowed_mount_roots {
            let canonical = std::fs::canonicalize(root).map_err(|e| {
                invalid(
                    "policy.allowed_mount_roots",
                    format!("{}: {e}", root.display()),
                )
            })?;
            roots.push(canonical);
        }
        let networks = p
            .allowed_networks
            .iter()
            .map(|n| NetworkName::parse(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(field("policy.allowed_networks"))?;
        let default_network =
            NetworkName::parse(&p.default_network).map_err(field("policy.default_network"))?;
        let base = p
            .hardening
            .apply(&Hardening::default())
            .map_err(field("policy.hardening"))?;
        let default_pull =
            PullPolicy::parse(&p.pull_policy).map_err(field("policy.pull_policy"))?;
        // Canonicalised once: checked for request mounts (policy) and for
        // every profile mount below.
        let protected = protected_paths(self.docker.host.as_deref());
        let policy = Policy {
            mounts: MountPolicy::new(roots, protected),
            images: ImagePolicy::new(p.allowed_images.clone()),
            allowed_networks: networks,
            default_network,
            default_timeout: p.default_timeout,
            max_timeout: p.max_timeout,
            max_output_bytes: p.max_output_bytes,
            default_pull_policy: default_pull,
            hardening: base.clone(),
        };

        let mut profiles = Vec::new();
        if let Some(codex) = self.codex_profile(&base, default_pull)? {
            profiles.push(codex);
        }
        for (name, pc) in &self.profiles {
            let key = |k: &str| format!("profiles.{name}.{k}");
            let pname = ProfileName::parse(name).map_err(field(&key("name")))?;
            if pname.as_str() == "codex" && profiles.iter().any(|p: &Profile| p.name == pname) {
                return Err(invalid(
                    key("name"),
                    "the codex profile is configured by [codex]; remove one",
                ));
            }
            let image =
                ImageRef::parse(&pc.image).map_err(|e| invalid(key("image"), e.to_string()))?;
            let mut profile = Profile::new(pname, image);
            profile.command = pc.command.clone();
            profile.env = pc.env.clone();
            for (i, m) in pc.mounts.iter().enumerate() {
                let target =
                    ContainerPath::normalised(&key(&format!("mounts[{i}].target")), &m.target)
                        .map_err(|e| invalid(key("mounts"), e.to_string()))?;
                let mode = if m.read_only {
                    AccessMode::ReadOnly
                } else {
                    AccessMode::ReadWrite
                };
                let source = RealHostPaths.resolve(&m.source).map_err(|e| {
                    invalid(
                        key(&format!("mounts[{i}].source")),
                        format!("{}: {e}", m.source.display()),
                    )
                })?;
                if policy.mounts.exposed_by(&source).is_some() {
                    return Err(invalid(
                        key(&format!("mounts[{i}].source")),
                        "the Docker socket is never mounted",
                    ));
                }
                let source = source.canonical;
                profile.mounts.push(Mount::operator(source, target, mode));
            }
            profile.network = pc
                .network
                .as_deref()
                .map(NetworkName::parse)
                .transpose()
                .map_err(field(&key("network")))?;
            profile.workdir = pc
                .workdir
                .as_deref()
                .map(|w| ContainerPath::parse("workdir", w))
                .transpose()
                .map_err(field(&key("workdir")))?;
            profile.default_timeout = pc.default_timeout;
            profile.pull_policy = match &pc.pull_policy {
                Some(pp) => PullPolicy::parse(pp).map_err(field(&key("pull_policy")))?,
                None => default_pull,
            };
            profile.allow_image_override = pc.allow_image_override;
            profile.hardening = pc
                .hardening
                .apply(&base)
                .map_err(field(&key("hardening")))?;
            profiles.push(profile);
        }

        let runner_name = self.runner_name.clone().unwrap_or_else(default_runner_name);
        let mount_staging_dir = self
            .docker
            .mount_staging_dir
            .clone()
            .unwrap_or_else(|| bus_docker_engine::pinning::default_staging_dir(&runner_name));
        Ok(Settings {
            worker: WorkerSettings {
                prefix,
                runner_name,
                profiles: Profiles::new(profiles),
                policy,
                max_concurrent_runs: self.max_concurrent_runs,
                max_queued_runs: self.max_queued_runs,
                response_cache: self.response_cache.max(1),
                response_cache_bytes: self.response_cache_bytes,
                stop_grace: self.stop_grace.min(self.policy.max_stop_grace),
                run_retention: self.run_retention,
            },
            provider: self.provider,
            log_format: self.log_format,
            shutdown_grace: self.shutdown_grace,
            events: self.events.clone(),
            docker_host: self.docker.host.clone(),
            mount_staging_dir,
            metrics_addr,
            pull_timeout: self.pull_timeout,
        })
    }

    fn codex_profile(
        &self,
        base: &Hardening,
        default_pull: PullPolicy,
    ) -> Result<Option<Profile>, ConfigError> {
        let c = &self.codex;
        let path = |key: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            p.as_ref()
                .map(|p| {
                    std::fs::canonicalize(p).map_err(|e| {
                        invalid(format!("codex.{key}"), format!("{}: {e}", p.display()))
                    })
                })
                .transpose()
        };
        let options = CodexOptions {
            image: c
                .image
                .as_deref()
                .map(ImageRef::parse)
                .transpose()
                .map_err(field("codex.image"))?,
            home_host_path: path("home_host_path", &c.home_host_path)?,
            home_writable: c.home_writable,
            workspace_host_path: path("workspace_host_path", &c.workspace_host_path)?,
            workspace_container_path: c
                .workspace_container_path
                .as_deref()
                .map(|p| ContainerPath::parse("workspace_container_path", p))
                .transpose()
                .map_err(field("codex.workspace_container_path"))?,
            ssh_host_path: path("ssh_host_path", &c.ssh_host_path)?,
            ssh_agent_host_path: path("ssh_agent_host_path", &c.ssh_agent_host_path)?,
            git_ssh_command: c.git_ssh_command.clone(),
        };
        let Some(mut profile) = options.profile(base.clone()) else {
            return Ok(None);
        };
        profile.pull_policy = match &c.pull_policy {
            Some(p) => PullPolicy::parse(p).map_err(field("codex.pull_policy"))?,
            None => default_pull,
        };
        profile.default_timeout = c.default_timeout;
        Ok(Some(profile))
    }
}
