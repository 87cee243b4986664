//! `[events]` and `[docker]`: where the worker reads and publishes
//! events, and the Docker Engines it runs on (the engine list itself is
//! checked in [`super::super::hosts`]).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::hosts::HostEntry;
use crate::de;

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
    /// files (see [`crate::config::hosts`]). Empty: the one `host`.
    #[serde(deserialize_with = "crate::config::hosts::deserialize")]
    pub hosts: Vec<HostEntry>,
    /// At most this many runs at once on any one engine (unset: only
    /// `max_concurrent_runs` limits).
    pub max_runs_per_engine: Option<usize>,
    /// Where request mounts are pinned; default
    /// `/run/bus-integration-docker/mounts/<runner name>`.
    pub mount_staging_dir: Option<PathBuf>,
}
