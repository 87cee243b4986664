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
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::mount::{HostPaths, ProtectedPath, RealHostPaths};
use bus_docker_domain::profile::{Profile, Profiles};
use bus_docker_domain::{EventPrefix, FieldError};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::de;
use bus_docker_service::worker::{WarmSettings, WorkerSettings};

mod hosts;
mod sections;

pub use hosts::{DockerHostSettings, HostEntry, HostTable};
pub use sections::{
    CodexConfig, DockerConfig, EventsConfig, HardeningConfig, InvisibleHostPath, MountConfig,
    PolicyConfig, ProfileConfig,
};

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
    /// A parked container of a warm profile older than this is replaced
    /// (docs/protocol.md §10).
    #[serde(deserialize_with = "de::duration::deserialize")]
    pub warm_max_age: Duration,
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
            warm_max_age: bus_docker_service::worker::DEFAULT_WARM_MAX_AGE,
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

/// A configuration that cannot be used, naming the key. Printed with its
/// cause chain ([`crate::app::report`]): `config key <key>: <cause>`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read or parsed, a key is unknown or a value has
    /// the wrong form (figment's error names the key and the source).
    #[error("{0}")]
    Load(Box<figment::Error>),
    /// A value this worker's own rules refuse. `message` says what the key
    /// must be, written for the operator: it is data, not a lost cause
    /// (nothing failed underneath).
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
    /// A value the domain refuses; its [`FieldError`] says what it must be.
    #[error("config key {key}")]
    Field {
        key: String,
        #[source]
        source: FieldError,
    },
    /// A host path that cannot be resolved on this machine.
    #[error("config key {key}: {}", path.display())]
    Path {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A `HOST:PORT` whose host name does not resolve.
    #[error("config key {key}: {text:?} is not HOST:PORT")]
    Address {
        key: String,
        text: String,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The config key at fault; `None` for a file that cannot be loaded.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Load(_) => None,
            Self::Invalid { key, .. }
            | Self::Field { key, .. }
            | Self::Path { key, .. }
            | Self::Address { key, .. } => Some(key),
        }
    }
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

/// The domain's refusal of the value of `key`, kept as the cause.
fn field(key: &str) -> impl Fn(FieldError) -> ConfigError + '_ {
    move |source| ConfigError::Field {
        key: key.to_owned(),
        source,
    }
}

/// A host path of `key` that cannot be resolved, with the IO error.
fn unresolved(key: &str, path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError {
    let (key, path) = (key.to_owned(), path.to_owned());
    move |source| ConfigError::Path { key, path, source }
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

/// A value given on the command line (or its env var), as given: data for
/// figment to check like a file's value, not an error.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum OverrideValue {
    Text(String),
    Bool(bool),
    Number(u64),
    List(Vec<String>),
}

/// Everything the composition root needs, validated.
#[derive(Clone, Debug)]
pub struct Settings {
    pub worker: WorkerSettings,
    pub provider: Provider,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    pub events: EventsConfig,
    /// The engines of the pool, never empty (`docker.hosts`, else the one
    /// `docker.host` / `DOCKER_HOST` / local socket).
    pub docker_hosts: Vec<DockerHostSettings>,
    /// At most this many runs at once on one engine
    /// (`docker.max_runs_per_engine`); `None`: no per-engine cap.
    pub max_runs_per_engine: Option<NonZeroUsize>,
    /// Where request mounts are pinned (`docker.mount_staging_dir`).
    pub mount_staging_dir: PathBuf,
    /// The metrics and health listener's address (`metrics_addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The deadline of one image pull (`pull_timeout`).
    pub pull_timeout: Duration,
    /// Configured host paths the worker cannot see (docs/protocol.md §6, v3): the
    /// engine resolves them; `main` warns once for each.
    pub invisible_host_paths: Vec<InvisibleHostPath>,
}

/// `HOST:PORT`: an IP address, or a name resolved once at start-up.
fn socket_addr(key: &str, text: &str) -> Result<std::net::SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|source| ConfigError::Address {
            key: key.to_owned(),
            text: text.to_owned(),
            source,
        })?
        .next()
        .ok_or_else(|| invalid(key, format!("{text:?} resolves to no address")))
}

/// Host paths that no mount may expose: the socket of every unix engine
/// of the pool (and Docker's default sockets), resolved once so that its
/// identity (device and inode) is known and any hard link to it is
/// recognised. A spelling that does not resolve is still guarded by path.
fn protected_paths(hosts: &[DockerHostSettings]) -> Vec<ProtectedPath> {
    let mut spelled: Vec<PathBuf> = ["/var/run/docker.sock", "/run/docker.sock"]
        .iter()
        .map(PathBuf::from)
        .collect();
    spelled.extend(hosts.iter().filter_map(DockerHostSettings::socket));
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
    /// The warm profiles (docs/protocol.md §10): `codex.warm` and
    /// `profiles.<name>.warm`, each naming a configured profile.
    fn warm(&self, profiles: &[Profile]) -> Result<WarmSettings, ConfigError> {
        let mut warm = WarmSettings {
            max_age: self.warm_max_age,
            ..WarmSettings::default()
        };
        if self.warm_max_age.is_zero() {
            return Err(invalid("warm_max_age", "must be more than 0"));
        }
        let mut wants = vec![("codex", "codex.warm".to_owned(), self.codex.warm)];
        for (name, pc) in &self.profiles {
            wants.push((name.as_str(), format!("profiles.{name}.warm"), pc.warm));
        }
        for (name, key, n) in wants {
            if n == 0 {
                continue;
            }
            let Some(profile) = profiles.iter().find(|p| p.name.as_str() == name) else {
                return Err(invalid(
                    key,
                    "the profile has no image (for codex: --container-codex-image)",
                ));
            };
            warm.profiles.insert(profile.name.clone(), n);
        }
        Ok(warm)
    }

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
        let docker_hosts = hosts::docker_hosts(
            self.docker.host.as_deref(),
            &self.docker.hosts,
            self.provider == Provider::Docker,
        )?;
        let max_runs_per_engine = hosts::per_engine_cap(self.docker.max_runs_per_engine)?;
        // Every engine socket by identity: never mountable, by requests or
        // by the operator's own profiles.
        let protected = protected_paths(&docker_hosts);
        let policy = self.policy.policy(protected)?;
        let mut profiles = Vec::new();
        let (codex, invisible_host_paths) = self.codex.profile(&policy)?;
        profiles.extend(codex);
        for (name, pc) in &self.profiles {
            let profile = pc.profile(name, &policy)?;
            if profiles.iter().any(|p: &Profile| p.name == profile.name) {
                return Err(invalid(
                    format!("profiles.{name}.name"),
                    "the codex profile is configured by [codex]; remove one",
                ));
            }
            profiles.push(profile);
        }
        let warm = self.warm(&profiles)?;
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
                session_retention: self.codex.session_retention(),
                warm,
            },
            provider: self.provider,
            log_format: self.log_format,
            shutdown_grace: self.shutdown_grace,
            events: self.events.clone(),
            docker_hosts,
            max_runs_per_engine,
            mount_staging_dir,
            metrics_addr,
            pull_timeout: self.pull_timeout,
            invisible_host_paths,
        })
    }
}
