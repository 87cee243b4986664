//! `[policy]` and its `[policy.hardening]`: what any request may ask for,
//! built into the domain's [`Policy`].

use std::path::PathBuf;
use std::time::Duration;

use bus_docker_domain::mount::{ContainerPath, MountPolicy, ProtectedPath};
use bus_docker_domain::network::NetworkPolicy;
use bus_docker_domain::profile::{Hardening, PullPolicy};
use bus_docker_domain::spec::{ImagePolicy, Policy};
use bus_docker_domain::{FieldError, NetworkName};
use serde::Deserialize;

use crate::config::{field, invalid, unresolved, ConfigError};
use crate::de;

/// The largest per-stream output cap: two streams and the envelope must fit
/// the 4 MiB event limit.
pub(super) const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

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
    pub(super) fn apply(&self, base: &Hardening) -> Result<Hardening, FieldError> {
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
                std::fs::canonicalize(root).map_err(unresolved("policy.allowed_mount_roots", root))
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
        let networks = NetworkPolicy::new(allowed_networks, default_network).map_err(|source| {
            ConfigError::Field {
                key: format!("policy.{}", source.field()),
                source,
            }
        })?;
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
