//! Requests in domain words, as the events adapter decodes them. Fields
//! are syntactically typed; the rules that need configuration (profiles,
//! policy) are applied by [`crate::spec::resolve`].

use std::collections::BTreeMap;

use crate::events::Operation;
use crate::ids::{CorrelationId, ImageRef, NetworkName, OwnerId, ProfileName, RunId, SessionName};
use crate::mount::RequestedMount;

/// A `run.request` payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRequest {
    pub run_id: Option<RunId>,
    pub owner: Option<OwnerId>,
    pub profile: Option<ProfileName>,
    pub image: Option<ImageRef>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<RequestedMount>,
    pub network: Option<NetworkName>,
    pub stdin: Option<String>,
    pub interactive: bool,
    pub timeout_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
    /// Publish `run.output` events while the run goes.
    pub stream_output: bool,
    /// The codex session whose `sessions/` this run resumes (docs/protocol.md §6,
    /// per-run homes only).
    pub session: Option<SessionName>,
    /// Fields the request named that would change the container's
    /// privileges, namespaces, devices or limits (as spelled on the wire,
    /// e.g. `capAdd` or `mounts[0].propagation`). Only the operator decides
    /// those, so [`crate::spec::resolve`] refuses a request naming any,
    /// whatever the value: see [`privilege_field`].
    pub privilege_fields: Vec<String>,
}

/// Request fields that would reach the container's privileges, namespaces,
/// devices, host resources or lifecycle if a worker honoured them (Docker's
/// `HostConfig` and `Config` names, the Docker CLI's and compose's
/// spellings). The worker honours none of them; a request naming one is
/// refused rather than silently run without it.
pub const PRIVILEGE_FIELDS: &[&str] = &[
    // Privilege and security.
    "privileged",
    "cap_add",
    "cap_drop",
    "capabilities",
    "security_opt",
    "no_new_privileges",
    "seccomp",
    "seccomp_profile",
    "apparmor",
    "apparmor_profile",
    "selinux",
    "selinux_label",
    "masked_paths",
    "readonly_paths",
    "read_only_rootfs",
    "readonly_rootfs",
    "hardening",
    "user",
    "group_add",
    "runtime",
    "isolation",
    "init",
    // Namespaces and cgroups.
    "pid",
    "pid_mode",
    "ipc",
    "ipc_mode",
    "uts",
    "uts_mode",
    "userns",
    "userns_mode",
    "cgroupns",
    "cgroupns_mode",
    "cgroup",
    "cgroup_parent",
    "network_mode",
    "network_disabled",
    "sysctls",
    // Devices.
    "devices",
    "device_requests",
    "device_cgroup_rules",
    "gpus",
    // Host filesystem and other containers.
    "binds",
    "volumes",
    "volumes_from",
    "volume_driver",
    "tmpfs",
    "storage_opt",
    "host_config",
    // Host network exposure.
    "port_bindings",
    "ports",
    "publish_all_ports",
    "exposed_ports",
    "extra_hosts",
    "links",
    "dns",
    "dns_options",
    "dns_search",
    // Resources.
    "oom_kill_disable",
    "oom_score_adj",
    "pids_limit",
    "ulimits",
    "memory",
    "memory_swap",
    "memory_swappiness",
    "memory_reservation",
    "kernel_memory",
    "shm_size",
    "cpus",
    "nano_cpus",
    "cpu_shares",
    "cpu_quota",
    "cpu_period",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpuset_cpus",
    "cpuset_mems",
    "blkio_weight",
    "blkio_weight_device",
    // The worker owns the container's lifecycle (docs/protocol.md §5).
    "restart_policy",
    "auto_remove",
];

/// Fields of a `mounts[]` entry that would change what or how the host path
/// is mounted (Docker's `Mount` object): the worker bind-mounts the checked
/// source, nothing else.
pub const MOUNT_PRIVILEGE_FIELDS: &[&str] = &[
    "type",
    "propagation",
    "bind_propagation",
    "bind_options",
    "volume_options",
    "tmpfs_options",
    "driver",
    "driver_config",
    "consistency",
    "create_mountpoint",
    "non_recursive",
    "read_only_non_recursive",
    "read_only_force_recursive",
    "selinux_relabel",
];

/// Whether `key` names a field of `list` in any spelling: snake_case,
/// camelCase, PascalCase, SCREAMING_CASE or kebab-case all compare equal
/// (`cap_add`, `capAdd`, `CapAdd`, `CAP_ADD`, `cap-add`).
pub fn names_field_of(list: &[&str], key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    list.iter()
        .any(|field| field.chars().filter(|c| *c != '_').eq(folded.chars()))
}

/// Whether a top-level `run.request` key names a privilege field.
pub fn privilege_field(key: &str) -> bool {
    names_field_of(PRIVILEGE_FIELDS, key)
}

/// Whether a `mounts[]` entry key names a mount privilege field.
pub fn mount_privilege_field(key: &str) -> bool {
    names_field_of(MOUNT_PRIVILEGE_FIELDS, key)
}

/// A `status.request` payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    pub owner: Option<OwnerId>,
    pub run_id: Option<RunId>,
}

/// An `input.request` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRequest {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub data: String,
    pub eof: bool,
}

/// A `delete.request` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
}

/// One decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status(StatusQuery),
    Run(Box<RunRequest>),
    Input(InputRequest),
    Delete(DeleteRequest),
    RunnerStatus,
    RunnerStart,
    RunnerDelete,
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Self::Status(_) => Operation::Status,
            Self::Run(_) => Operation::Run,
            Self::Input(_) => Operation::Input,
            Self::Delete(_) => Operation::Delete,
            Self::RunnerStatus => Operation::RunnerStatus,
            Self::RunnerStart => Operation::RunnerStart,
            Self::RunnerDelete => Operation::RunnerDelete,
        }
    }
}

/// A request as it arrived: who to answer, and what was asked (or why it
/// could not be understood).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub operation: Operation,
    pub correlation: CorrelationId,
    /// The owner the Events API stamped on the envelope.
    pub stamped_owner: Option<OwnerId>,
    pub request: Result<Request, crate::error::FieldError>,
}

/// The owner a request acts for (docs/protocol.md §4): the payload's owner
/// field, else the owner the Events API stamped on the envelope. Input,
/// delete and status see and touch only that owner's runs.
pub fn acting_owner(asked: Option<OwnerId>, stamped: Option<OwnerId>) -> Option<OwnerId> {
    asked.or(stamped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_fields_match_in_every_spelling() {
        for key in [
            "privileged",
            "Privileged",
            "PRIVILEGED",
            "cap_add",
            "capAdd",
            "CapAdd",
            "CAP_ADD",
            "cap-add",
            "HostConfig",
            "host_config",
            "hostConfig",
            "PidMode",
            "pid",
            "SecurityOpt",
            "security-opt",
            "OomKillDisable",
            "DeviceCgroupRules",
            "UsernsMode",
            "CgroupnsMode",
            "VolumesFrom",
            "Binds",
            "NetworkMode",
            "GroupAdd",
            "Sysctls",
            "Runtime",
            "Ulimits",
            "Isolation",
            "PidsLimit",
            "device_requests",
            "User",
        ] {
            assert!(privilege_field(key), "{key}");
        }
        for key in [
            "image",
            "command",
            "args",
            "env",
            "mounts",
            "network",
            "labels",
            "workdir",
            "stdin",
            "interactive",
            "timeout_seconds",
            "run_id",
            "profile",
            "owner_identity_id",
            "stream_output",
            "session",
            "users",
            "capadd_x",
            "",
        ] {
            assert!(!privilege_field(key), "{key}");
        }
    }

    #[test]
    fn mount_privilege_fields_match_in_every_spelling() {
        for key in [
            "propagation",
            "Propagation",
            "BindOptions",
            "bind-options",
            "type",
            "Type",
        ] {
            assert!(mount_privilege_field(key), "{key}");
        }
        for key in ["source", "target", "read_only", "readonly", "readOnly"] {
            assert!(!mount_privilege_field(key), "{key}");
        }
    }

    #[test]
    fn the_contract_examples_are_in_the_list() {
        for field in [
            "privileged",
            "cap_add",
            "cap_drop",
            "pid_mode",
            "ipc_mode",
            "uts_mode",
            "userns_mode",
            "cgroupns_mode",
            "cgroup_parent",
            "network_mode",
            "security_opt",
            "devices",
            "device_requests",
            "device_cgroup_rules",
            "user",
            "group_add",
            "host_config",
            "sysctls",
            "runtime",
            "volumes_from",
            "binds",
            "oom_kill_disable",
            "pids_limit",
            "ulimits",
            "isolation",
        ] {
            assert!(PRIVILEGE_FIELDS.contains(&field), "{field}");
        }
    }
}
