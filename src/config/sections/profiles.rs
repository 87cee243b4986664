//! `[profiles.<name>]` and their `mounts`: named run templates, each built
//! into a domain [`Profile`] on top of the policy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::mount::{
    AccessMode, ContainerPath, HostPaths, Mount, MountPolicy, RealHostPaths,
};
use bus_docker_domain::profile::{Profile, PullPolicy};
use bus_docker_domain::spec::Policy;
use bus_docker_domain::{ImageRef, NetworkName, ProfileName};
use serde::Deserialize;

use super::HardeningConfig;
use crate::config::{field, invalid, unresolved, ConfigError};
use crate::de;

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

/// An operator-configured host path (profile mount source, codex path):
/// canonicalised, and never the Docker socket or a directory holding it
/// (compared by device and inode, like request mounts).
fn operator_path(key: &str, path: &Path, mounts: &MountPolicy) -> Result<PathBuf, ConfigError> {
    let resolved = RealHostPaths.resolve(path).map_err(unresolved(key, path))?;
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
        let target_key = format!("{key}.target");
        let target =
            ContainerPath::normalised(&target_key, &self.target).map_err(field(&target_key))?;
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
        let image = ImageRef::parse(&self.image).map_err(field(&key("image")))?;
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
