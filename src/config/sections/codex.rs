//! `[codex]`: the built-in `codex` profile (docs/protocol.md §6), its host
//! paths checked at start-up.

use std::path::PathBuf;
use std::time::Duration;

use bus_docker_domain::mount::{ContainerPath, OperatorHostPath, RealHostPaths};
use bus_docker_domain::profile::{CodexOptions, Profile, PullPolicy};
use bus_docker_domain::spec::Policy;
use bus_docker_domain::ImageRef;
use serde::Deserialize;

use crate::config::{field, invalid, ConfigError};
use crate::de;

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
        let mut path = |name: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
            let Some(p) = p else { return Ok(None) };
            let key = format!("codex.{name}");
            let checked = policy
                .mounts
                .check_operator_path(name, p, &RealHostPaths)
                .map_err(field(&key))?;
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
