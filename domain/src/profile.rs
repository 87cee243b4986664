//! Profiles: operator-defined templates for runs, including the `codex`
//! profile of docs/protocol.md §6, and the hardening every container gets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::FieldError;
use crate::ids::{ImageRef, NetworkName, ProfileName};
use crate::mount::{AccessMode, ContainerPath, Mount};

/// When the worker pulls an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PullPolicy {
    /// Pull only when the image is absent (default).
    #[default]
    IfNotPresent,
    /// Pull before every run.
    Always,
    /// Never pull: an absent image is `image_unavailable`.
    Never,
}

impl PullPolicy {
    /// # Errors
    /// `FieldError` for anything but `if-not-present`, `always`, `never`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        match value {
            "if-not-present" | "if_not_present" | "missing" => Ok(Self::IfNotPresent),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => Err(FieldError::new(
                "pull_policy",
                "must be if-not-present, always or never",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IfNotPresent => "if-not-present",
            Self::Always => "always",
            Self::Never => "never",
        }
    }
}

/// Capabilities a container keeps after `cap_drop = ["ALL"]`: enough for a
/// root process to own and write its files, nothing that reaches the host.
pub const DEFAULT_CAP_ADD: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
];

/// Security settings and limits for a container. Only the operator sets
/// these (config file); no request field reaches them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hardening {
    pub no_new_privileges: bool,
    pub cap_drop: Vec<String>,
    pub cap_add: Vec<String>,
    pub pids_limit: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub read_only_rootfs: bool,
    /// tmpfs mounts (container paths), e.g. `/tmp` and the workdir when the
    /// root filesystem is read-only.
    pub tmpfs: Vec<ContainerPath>,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            no_new_privileges: true,
            cap_drop: vec!["ALL".to_owned()],
            cap_add: DEFAULT_CAP_ADD.iter().map(|c| (*c).to_owned()).collect(),
            pids_limit: Some(512),
            memory_bytes: None,
            nano_cpus: None,
            read_only_rootfs: false,
            tmpfs: Vec::new(),
        }
    }
}

/// A named run template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: ProfileName,
    pub image: ImageRef,
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Env keys this profile sets itself and requests may not override
    /// (`SSH_AUTH_SOCK`, `GIT_SSH_COMMAND`).
    pub reserved_env: Vec<String>,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkName>,
    pub workdir: Option<ContainerPath>,
    pub hardening: Hardening,
    pub default_timeout: Option<Duration>,
    pub pull_policy: PullPolicy,
    pub allow_image_override: bool,
    /// A per-run Codex home (docs/protocol.md §6, `--codex-home-per-run`): the
    /// configured home on the Docker host whose configuration seeds each
    /// run's own `/root/.codex`. `None`: the home, if any, is a mount.
    pub per_run_home: Option<PathBuf>,
}

impl Profile {
    /// A profile with only an image; everything else defaulted.
    pub fn new(name: ProfileName, image: ImageRef) -> Self {
        Self {
            name,
            image,
            command: None,
            env: BTreeMap::new(),
            reserved_env: Vec::new(),
            mounts: Vec::new(),
            network: None,
            workdir: None,
            hardening: Hardening::default(),
            default_timeout: None,
            pull_policy: PullPolicy::default(),
            allow_image_override: false,
            per_run_home: None,
        }
    }
}

/// Where the SSH agent socket appears inside codex containers.
pub const CODEX_SSH_AGENT_SOCKET: &str = "/run/ssh-agent.sock";

/// Where a codex container's home is.
pub const CODEX_HOME: &str = "/root/.codex";
/// The login file of a Codex home: with a per-run home, the configured
/// home's own file is mounted here read-write (one token lineage).
pub const CODEX_AUTH_FILE: &str = "/root/.codex/auth.json";
/// What a `session` keeps across runs.
pub const CODEX_SESSIONS: &str = "/root/.codex/sessions";
/// What of the configured home seeds a per-run home: configuration only,
/// never state, logs or sessions (docs/protocol.md §6). Names relative to the
/// home; directories are copied whole.
pub const CODEX_HOME_SEED: [&str; 6] = [
    "config.toml",
    "AGENTS.md",
    "AGENTS.override.md",
    "instructions.md",
    "prompts",
    "rules",
];

/// The codex options of docs/protocol.md §6, as flags/env/config give them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodexOptions {
    pub image: Option<ImageRef>,
    pub home_host_path: Option<PathBuf>,
    pub home_writable: bool,
    /// Each run gets its own home seeded from `home_host_path`, with the
    /// home's `auth.json` mounted read-write (`--codex-home-per-run`).
    /// Beats `home_writable`; the configuration layer refuses both.
    pub home_per_run: bool,
    pub workspace_host_path: Option<PathBuf>,
    pub workspace_container_path: Option<ContainerPath>,
    pub ssh_host_path: Option<PathBuf>,
    pub ssh_agent_host_path: Option<PathBuf>,
    pub git_ssh_command: Option<String>,
}

impl CodexOptions {
    /// The `codex` profile, or `None` when no codex image is configured.
    /// An unset option mounts nothing; every env key it sets is reserved.
    pub fn profile(&self, base: Hardening) -> Option<Profile> {
        let image = self.image.clone()?;
        let name = ProfileName::parse("codex").expect("static profile name is valid");
        let mut profile = Profile::new(name, image);
        profile.hardening = base;
        let path = |p: &str| ContainerPath::parse("codex", p).expect("static path is valid");
        if let (Some(home), true) = (&self.home_host_path, self.home_per_run) {
            profile.per_run_home = Some(home.clone());
            profile.mounts.push(Mount::operator(
                home.join("auth.json"),
                path(CODEX_AUTH_FILE),
                AccessMode::ReadWrite,
            ));
        } else if let Some(home) = &self.home_host_path {
            let mode = if self.home_writable {
                AccessMode::ReadWrite
            } else {
                AccessMode::ReadOnly
            };
            profile
                .mounts
                .push(Mount::operator(home.clone(), path("/root/.codex"), mode));
        }
        if let Some(ws) = &self.workspace_host_path {
            let target = self
                .workspace_container_path
                .clone()
                .unwrap_or_else(|| path("/workspace"));
            profile.workdir = Some(target.clone());
            profile
                .mounts
                .push(Mount::operator(ws.clone(), target, AccessMode::ReadWrite));
        }
        if let Some(ssh) = &self.ssh_host_path {
            profile.mounts.push(Mount::operator(
                ssh.clone(),
                path("/root/.ssh"),
                AccessMode::ReadOnly,
            ));
        }
        profile.reserved_env.push("SSH_AUTH_SOCK".to_owned());
        if let Some(agent) = &self.ssh_agent_host_path {
            profile.mounts.push(Mount::operator(
                agent.clone(),
                path(CODEX_SSH_AGENT_SOCKET),
                AccessMode::ReadWrite,
            ));
            profile.env.insert(
                "SSH_AUTH_SOCK".to_owned(),
                CODEX_SSH_AGENT_SOCKET.to_owned(),
            );
        }
        profile.reserved_env.push("GIT_SSH_COMMAND".to_owned());
        if let Some(cmd) = &self.git_ssh_command {
            profile
                .env
                .insert("GIT_SSH_COMMAND".to_owned(), cmd.clone());
        }
        Some(profile)
    }
}

/// The profiles a worker knows, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profiles(BTreeMap<ProfileName, Profile>);

impl Profiles {
    pub fn new(profiles: impl IntoIterator<Item = Profile>) -> Self {
        Self(profiles.into_iter().map(|p| (p.name.clone(), p)).collect())
    }

    pub fn get(&self, name: &ProfileName) -> Option<&Profile> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.0.values()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_profile_mounts_only_what_is_configured() {
        let none = CodexOptions::default();
        assert!(none.profile(Hardening::default()).is_none());

        let image_only = CodexOptions {
            image: Some(ImageRef::parse("codex:latest").unwrap()),
            ..CodexOptions::default()
        };
        let p = image_only.profile(Hardening::default()).unwrap();
        assert!(p.mounts.is_empty());
        assert!(p.env.is_empty());
        assert!(p.reserved_env.contains(&"SSH_AUTH_SOCK".to_owned()));
    }

    #[test]
    fn codex_profile_follows_the_contract_table() {
        let opts = CodexOptions {
            image: Some(ImageRef::parse("codex:latest").unwrap()),
            home_host_path: Some("/h/codex".into()),
            home_writable: false,
            workspace_host_path: Some("/h/ws".into()),
            workspace_container_path: Some(
                ContainerPath::parse("x", "/workspace/bus-dev").unwrap(),
            ),
            ssh_host_path: Some("/h/ssh".into()),
            ssh_agent_host_path: Some("/h/agent.sock".into()),
            git_ssh_command: Some("ssh -o StrictHostKeyChecking=no".into()),
            home_per_run: false,
        };
        let p = opts.profile(Hardening::default()).unwrap();
        let find = |t: &str| p.mounts.iter().find(|m| m.target().as_str() == t).unwrap();
        assert_eq!(find("/root/.codex").mode(), AccessMode::ReadOnly);
        assert_eq!(find("/workspace/bus-dev").mode(), AccessMode::ReadWrite);
        assert_eq!(find("/root/.ssh").mode(), AccessMode::ReadOnly);
        assert_eq!(
            find(CODEX_SSH_AGENT_SOCKET).source(),
            std::path::Path::new("/h/agent.sock")
        );
        assert_eq!(p.env["SSH_AUTH_SOCK"], CODEX_SSH_AGENT_SOCKET);
        assert_eq!(p.env["GIT_SSH_COMMAND"], "ssh -o StrictHostKeyChecking=no");
        assert_eq!(p.workdir.as_ref().unwrap().as_str(), "/workspace/bus-dev");

        let writable = CodexOptions {
            home_writable: true,
            ..opts
        };
        let p = writable.profile(Hardening::default()).unwrap();
        let home = p
            .mounts
            .iter()
            .find(|m| m.target().as_str() == "/root/.codex")
            .unwrap();
        assert_eq!(home.mode(), AccessMode::ReadWrite);
    }

    #[test]
    fn a_per_run_home_mounts_only_the_login_file() {
        let opts = CodexOptions {
            image: Some(ImageRef::parse("codex:latest").unwrap()),
            home_host_path: Some("/h/codex".into()),
            home_writable: true,
            home_per_run: true,
            ..CodexOptions::default()
        };
        let p = opts.profile(Hardening::default()).unwrap();
        assert_eq!(
            p.per_run_home.as_deref(),
            Some(std::path::Path::new("/h/codex"))
        );
        assert!(
            !p.mounts.iter().any(|m| m.target().as_str() == CODEX_HOME),
            "the home itself is the run's own, not a mount of the host's"
        );
        let auth = p
            .mounts
            .iter()
            .find(|m| m.target().as_str() == CODEX_AUTH_FILE)
            .unwrap();
        assert_eq!(auth.source(), std::path::Path::new("/h/codex/auth.json"));
        assert_eq!(auth.mode(), AccessMode::ReadWrite);
        assert!(!CODEX_HOME_SEED.iter().any(|f| matches!(
            *f,
            "auth.json" | "sessions" | "log" | "state_5.sqlite" | "history.jsonl"
        )));
    }

    #[test]
    fn pull_policies_parse() {
        assert_eq!(PullPolicy::parse("always").unwrap(), PullPolicy::Always);
        assert_eq!(
            PullPolicy::parse("if-not-present").unwrap(),
            PullPolicy::IfNotPresent
        );
        assert!(PullPolicy::parse("sometimes").is_err());
    }
}
