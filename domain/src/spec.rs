//! Resolving a [`RunRequest`] against profiles and policy into a
//! [`RunSpec`]: the complete, validated description of one container run.
//! Pure: no async, no Docker; filesystem lookups go through [`HostPaths`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{FieldError, OperationError};
use crate::ids::{CorrelationId, ImageRef, NetworkName, OwnerId, ProfileName, RunId, SessionName};
use crate::mount::{ContainerPath, HostPaths, Mount, MountPolicy};
use crate::network::NetworkPolicy;
use crate::profile::{Hardening, Profile, Profiles, PullPolicy};
use crate::request::RunRequest;

/// Upper bounds on request sizes; a request beyond them is `bad_request`.
pub mod limits {
    pub const MAX_ARGS: usize = 1024;
    pub const MAX_ARG_BYTES: usize = 128 * 1024;
    pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;
    pub const MAX_ENV: usize = 256;
    pub const MAX_ENV_VALUE_BYTES: usize = 32 * 1024;
    pub const MAX_MOUNTS: usize = 32;
    pub const MAX_STDIN_BYTES: usize = 1024 * 1024;
    pub const MAX_LABELS: usize = 64;
    pub const MAX_LABEL_KEY_BYTES: usize = 128;
    pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
}

/// Env keys no request may set whatever the profile says.
pub const ALWAYS_RESERVED_ENV: [&str; 2] = ["SSH_AUTH_SOCK", "GIT_SSH_COMMAND"];

/// Which images requests may name directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagePolicy {
    /// Patterns: an exact reference, or a prefix ending in `*`. `*` alone
    /// allows any image.
    patterns: Vec<String>,
}

impl ImagePolicy {
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    pub fn allows(&self, image: &ImageRef) -> bool {
        self.patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => image.as_str().starts_with(prefix),
            None => p == image.as_str(),
        })
    }
}

/// The timeout of a run that names none (and whose profile names none):
/// 30 minutes, what the Bus router and task bridge wait (docs/protocol.md §4, v3).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The longest run by default: the default timeout fits.
pub const DEFAULT_MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The operator's rules for requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub mounts: MountPolicy,
    pub images: ImagePolicy,
    pub networks: NetworkPolicy,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub max_output_bytes: usize,
    pub default_pull_policy: PullPolicy,
    pub hardening: Hardening,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            mounts: MountPolicy::default(),
            images: ImagePolicy::new(vec!["*".to_owned()]),
            networks: NetworkPolicy::default(),
            default_timeout: DEFAULT_TIMEOUT,
            max_timeout: DEFAULT_MAX_TIMEOUT,
            max_output_bytes: 1024 * 1024,
            default_pull_policy: PullPolicy::IfNotPresent,
            hardening: Hardening::default(),
        }
    }
}

/// Who asked, as the transport knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub correlation: CorrelationId,
    pub stamped_owner: Option<OwnerId>,
    /// The event name the response goes to.
    pub reply_event: String,
}

/// Everything needed to create, run and answer one container run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub correlation: CorrelationId,
    pub reply_event: String,
    pub profile: Option<ProfileName>,
    pub image: ImageRef,
    pub pull_policy: PullPolicy,
    pub command: Vec<String>,
    pub workdir: Option<ContainerPath>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub network: NetworkName,
    pub stdin: Option<String>,
    pub interactive: bool,
    pub timeout: Duration,
    pub labels: BTreeMap<String, String>,
    pub hardening: Hardening,
    pub max_output_bytes: usize,
    /// Publish `run.output` events while the run goes.
    pub stream_output: bool,
    /// The run's own Codex home (docs/protocol.md §6, `--codex-home-per-run`).
    pub codex_home: Option<RunHome>,
}

/// A run's own writable `/root/.codex`: made fresh for the run, seeded
/// from the configured home's configuration on the engine's side, gone
/// with the run; `sessions/` kept per owner and session when one is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHome {
    /// The configured home on the Docker host (the engine reads it).
    pub seed_from: std::path::PathBuf,
    pub session: Option<SessionKey>,
}

/// Whose session a run resumes: the owner and the session name together
/// (another owner naming the same session gets another one).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub owner: OwnerId,
    pub name: SessionName,
}

impl RunSpec {
    /// The session the run resumes, as the response echoes it.
    pub fn session(&self) -> Option<&SessionName> {
        Some(&self.codex_home.as_ref()?.session.as_ref()?.name)
    }

    /// `bus-run-<run_id>`: unique per engine, so a duplicate delivery cannot
    /// create a second container.
    pub fn container_name(&self) -> String {
        container_name(&self.run_id)
    }
}

/// The container name of a run.
pub fn container_name(run_id: &RunId) -> String {
    format!("bus-run-{}", run_id.as_str())
}

fn env_key_ok(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && key.len() <= 256
}

fn label_key_ok(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= limits::MAX_LABEL_KEY_BYTES
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.contains('\0') {
        return Err(FieldError::new(field, "must not contain NUL"));
    }
    Ok(())
}

/// Resolve a run request into a spec.
///
/// The rules apply in contract order; the first that refuses names its
/// field or rule. `generated_id` is used when the request names no `run_id`.
///
/// # Errors
/// * `InvalidSpec` naming the field for malformed or oversized input, an
///   unknown profile, a missing image/command, an empty executable, or two
///   mounts on one (normalised) target.
/// * `Forbidden` naming the rule: `privilege`, `image_override`,
///   `image_not_allowed`, `reserved_env`, `network_not_allowed`,
///   `mount_root`, `docker_socket`, `mount_target`.
pub fn resolve(
    req: &RunRequest,
    origin: &Origin,
    profiles: &Profiles,
    policy: &Policy,
    paths: &impl HostPaths,
    generated_id: RunId,
) -> Result<RunSpec, OperationError> {
    check_privileges(req)?;
    let profile = profile_of(req, profiles)?;
    let image = image_of(req, profile, policy)?;
    let command = command_of(req, profile)?;
    let workdir = match &req.workdir {
        Some(w) => Some(ContainerPath::parse("workdir", w)?),
        None => profile.and_then(|p| p.workdir.clone()),
    };
    let env = merged_env(req, profile)?;
    let mounts = admitted_mounts(req, profile, policy, paths)?;
    let network = network_of(req, profile, policy)?;
    let timeout = timeout_of(req, profile, policy);
    check_stdin(req)?;
    check_labels(req)?;
    let owner = req.owner.clone().or_else(|| origin.stamped_owner.clone());
    let codex_home = run_home_of(req, profile, owner.as_ref(), &mounts)?;
    Ok(RunSpec {
        run_id: req.run_id.clone().unwrap_or(generated_id),
        owner,
        correlation: origin.correlation.clone(),
        reply_event: origin.reply_event.clone(),
        profile: req.profile.clone(),
        image,
        pull_policy: profile.map_or(policy.default_pull_policy, |p| p.pull_policy),
        command,
        workdir,
        env,
        mounts,
        network,
        stdin: req.stdin.clone(),
        interactive: req.interactive,
        timeout,
        labels: req.labels.clone(),
        hardening: profile.map_or_else(|| policy.hardening.clone(), |p| p.hardening.clone()),
        max_output_bytes: policy.max_output_bytes,
        stream_output: req.stream_output,
        codex_home,
    })
}

/// The run's own Codex home when its profile gives one, with the session
/// it resumes. A `session` anywhere else is refused, not ignored: the
/// caller would lose its conversation without knowing.
fn run_home_of(
    req: &RunRequest,
    profile: Option<&Profile>,
    owner: Option<&OwnerId>,
    mounts: &[Mount],
) -> Result<Option<RunHome>, OperationError> {
    let Some(seed_from) = profile.and_then(|p| p.per_run_home.clone()) else {
        return match (&req.session, profile) {
            (None, _) => Ok(None),
            (Some(_), Some(p)) => Err(FieldError::new(
                "session",
                format!(
                    "profile {} keeps no sessions: sessions need a per-run Codex home \
                     (the codex profile with --codex-home-per-run)",
                    p.name
                ),
            )
            .into()),
            (Some(_), None) => Err(FieldError::new(
                "session",
                "image runs keep no sessions: sessions need a per-run Codex home \
                 (the codex profile with --codex-home-per-run)",
            )
            .into()),
        };
    };
    for (i, m) in mounts.iter().enumerate() {
        let target = m.target();
        // The home is a volume of the run's own: a mount on it or in it
        // (the login file aside) would shadow or leak into it.
        if target.as_str() != crate::profile::CODEX_AUTH_FILE
            && target.is_within(crate::profile::CODEX_HOME)
        {
            return Err(FieldError::new(
                format!(
                    "mounts[{}].target",
                    i.saturating_sub(profile_mounts(profile))
                ),
                format!(
                    "{} overlaps the run's own Codex home {}",
                    target.as_str(),
                    crate::profile::CODEX_HOME
                ),
            )
            .into());
        }
    }
    let session = match (&req.session, owner) {
        (None, _) => None,
        (Some(name), Some(owner)) => Some(SessionKey {
            owner: owner.clone(),
            name: name.clone(),
        }),
        (Some(_), None) => {
            return Err(FieldError::new(
                "session",
                "needs an owner (owner_identity_id): a session is kept per owner",
            )
            .into())
        }
    };
    Ok(Some(RunHome { seed_from, session }))
}

fn profile_mounts(profile: Option<&Profile>) -> usize {
    profile.map_or(0, |p| p.mounts.len())
}

/// A request naming a privilege field is refused whatever the value
/// (`null` and `false` included): refuse loudly, never run without it.
fn check_privileges(req: &RunRequest) -> Result<(), OperationError> {
    match req.privilege_fields.first() {
        Some(field) => Err(OperationError::forbidden(
            "privilege",
            format!(
                "{field}: requests may not set container privileges, namespaces, devices or \
                 limits; the operator configures them"
            ),
        )),
        None => Ok(()),
    }
}

/// The configured profile the request names. A profile this worker does
/// not configure, sent with an `image`, is an image run recorded under that
/// name (the Bus smoke scripts send `{"profile":"local-model","image":…}`);
/// without an image it says how to configure it.
fn profile_of<'p>(
    req: &RunRequest,
    profiles: &'p Profiles,
) -> Result<Option<&'p Profile>, OperationError> {
    let Some(name) = &req.profile else {
        return Ok(None);
    };
    match profiles.get(name) {
        Some(profile) => Ok(Some(profile)),
        None if req.image.is_some() => Ok(None),
        None => Err(FieldError::new("profile", unconfigured_profile(name)).into()),
    }
}

/// Why a profile cannot run here, and how the operator configures it.
pub fn unconfigured_profile(name: &ProfileName) -> String {
    let how = if name.as_str() == "codex" {
        "start the worker with --container-codex-image IMAGE (env DOCKER_CONTAINER_CODEX_IMAGE)"
            .to_owned()
    } else {
        format!("add [profiles.{name}] with an image to the worker's config file")
    };
    format!(
        "unknown profile {:?}: this worker does not configure it; {how}, or send an image \
         with the request",
        name.as_str()
    )
}

fn image_allowed(policy: &Policy, image: &ImageRef) -> Result<(), OperationError> {
    if policy.images.allows(image) {
        Ok(())
    } else {
        Err(OperationError::forbidden(
            "image_not_allowed",
            format!("image {image} is not in the allowed images"),
        ))
    }
}

/// The request's image where it may name one, else the profile's.
fn image_of(
    req: &RunRequest,
    profile: Option<&Profile>,
    policy: &Policy,
) -> Result<ImageRef, OperationError> {
    match (profile, &req.image) {
        (Some(p), Some(image)) if *image != p.image => {
            if !p.allow_image_override {
                return Err(OperationError::forbidden(
                    "image_override",
                    format!("profile {} does not allow overriding its image", p.name),
                ));
            }
            image_allowed(policy, image)?;
            Ok(image.clone())
        }
        (Some(p), _) => Ok(p.image.clone()),
        (None, Some(image)) => {
            image_allowed(policy, image)?;
            Ok(image.clone())
        }
        (None, None) => Err(FieldError::new("profile", "profile or image is required").into()),
    }
}

/// The command (or the profile's default), bounded, with a named
/// executable.
fn command_of(req: &RunRequest, profile: Option<&Profile>) -> Result<Vec<String>, OperationError> {
    let command = req
        .command
        .clone()
        .or_else(|| profile.and_then(|p| p.command.clone()))
        .ok_or_else(|| FieldError::new("command", "is required for an image run"))?;
    match command.first() {
        None => return Err(FieldError::new("command", "must not be empty").into()),
        Some(exe) if exe.trim().is_empty() => {
            return Err(FieldError::new("command", "must name an executable first").into())
        }
        Some(_) => {}
    }
    if command.len() > limits::MAX_ARGS {
        return Err(
            FieldError::new("command", format!("at most {} arguments", limits::MAX_ARGS)).into(),
        );
    }
    let mut total = 0;
    for (i, arg) in command.iter().enumerate() {
        check_text(&format!("command[{i}]"), arg, limits::MAX_ARG_BYTES)?;
        total += arg.len();
    }
    if total > limits::MAX_COMMAND_BYTES {
        return Err(FieldError::new("command", "arguments exceed 1 MiB in total").into());
    }
    Ok(command)
}

/// The profile's env with the request's on top; reserved keys refused.
fn merged_env(
    req: &RunRequest,
    profile: Option<&Profile>,
) -> Result<BTreeMap<String, String>, OperationError> {
    if req.env.len() > limits::MAX_ENV {
        return Err(FieldError::new("env", format!("at most {} entries", limits::MAX_ENV)).into());
    }
    let mut env = profile.map(|p| p.env.clone()).unwrap_or_default();
    for (key, value) in &req.env {
        if !env_key_ok(key) {
            return Err(FieldError::new(
                format!("env.{}", key.escape_debug()),
                "key must match [A-Za-z_][A-Za-z0-9_]*",
            )
            .into());
        }
        check_text(&format!("env.{key}"), value, limits::MAX_ENV_VALUE_BYTES)?;
        let reserved = ALWAYS_RESERVED_ENV.contains(&key.as_str())
            || profile.is_some_and(|p| p.reserved_env.iter().any(|r| r == key));
        if reserved {
            return Err(OperationError::forbidden(
                "reserved_env",
                format!("env.{key} is set by the worker and cannot be overridden"),
            ));
        }
        env.insert(key.clone(), value.clone());
    }
    Ok(env)
}

/// The profile's mounts, then each requested mount the policy admits; no
/// two on one normalised target.
fn admitted_mounts(
    req: &RunRequest,
    profile: Option<&Profile>,
    policy: &Policy,
    paths: &impl HostPaths,
) -> Result<Vec<Mount>, OperationError> {
    if req.mounts.len() > limits::MAX_MOUNTS {
        return Err(
            FieldError::new("mounts", format!("at most {} mounts", limits::MAX_MOUNTS)).into(),
        );
    }
    let mut mounts: Vec<Mount> = Vec::new();
    for mount in profile.map(|p| p.mounts.as_slice()).unwrap_or_default() {
        if mounts.iter().any(|x| x.target() == mount.target()) {
            let name = profile.map(|p| p.name.as_str()).unwrap_or_default();
            return Err(FieldError::new(
                "profile",
                format!("profile {name} mounts {} twice", mount.target().as_str()),
            )
            .into());
        }
        mounts.push(mount.clone());
    }
    for (i, m) in req.mounts.iter().enumerate() {
        let mount = policy.mounts.admit(i, m, paths)?;
        if mounts.iter().any(|x| x.target() == mount.target()) {
            return Err(FieldError::new(
                format!("mounts[{i}].target"),
                format!("{} is already mounted", mount.target().as_str()),
            )
            .into());
        }
        mounts.push(mount);
    }
    Ok(mounts)
}

/// The requested network if the policy allows it (or it is the profile's
/// own), else the profile's, else the policy default.
fn network_of(
    req: &RunRequest,
    profile: Option<&Profile>,
    policy: &Policy,
) -> Result<NetworkName, OperationError> {
    match (&req.network, profile.and_then(|p| p.network.clone())) {
        (Some(n), Some(own)) if *n == own => Ok(own),
        (Some(n), _) => {
            policy.networks.check(n)?;
            Ok(n.clone())
        }
        (None, Some(n)) => Ok(n),
        (None, None) => Ok(policy.networks.default_network().clone()),
    }
}

/// 0 or absent means the profile's (else the policy's) default; capped.
fn timeout_of(req: &RunRequest, profile: Option<&Profile>, policy: &Policy) -> Duration {
    let default_timeout = profile
        .and_then(|p| p.default_timeout)
        .unwrap_or(policy.default_timeout);
    match req.timeout_seconds {
        None | Some(0) => default_timeout,
        Some(s) => Duration::from_secs(s),
    }
    .min(policy.max_timeout)
}

fn check_stdin(req: &RunRequest) -> Result<(), OperationError> {
    match &req.stdin {
        Some(stdin) if stdin.len() > limits::MAX_STDIN_BYTES => {
            Err(FieldError::new("stdin", "must be at most 1 MiB").into())
        }
        _ => Ok(()),
    }
}

fn check_labels(req: &RunRequest) -> Result<(), OperationError> {
    if req.labels.len() > limits::MAX_LABELS {
        return Err(
            FieldError::new("labels", format!("at most {} labels", limits::MAX_LABELS)).into(),
        );
    }
    for (key, value) in &req.labels {
        if !label_key_ok(key) {
            return Err(FieldError::new(
                format!("labels.{}", key.escape_debug()),
                "key must match [A-Za-z0-9_.-]{1,128}",
            )
            .into());
        }
        check_text(
            &format!("labels.{key}"),
            value,
            limits::MAX_LABEL_VALUE_BYTES,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
