//! Engine API bodies built from domain types: the container a run gets,
//! image references as the pull endpoint wants them, engine timestamps.
//! Pure functions, unit-tested without an engine.

use std::collections::HashMap;
use std::time::SystemTime;

use bollard::models::{
    ContainerCreateBody, HostConfig, HostConfigLogConfig, Mount as EngineMount, MountType,
};
use bus_docker_domain::mount::AccessMode;
use bus_docker_domain::spec::RunSpec;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::labels;

/// Options of each tmpfs mount. dockerd adds `noexec` (checked on 20.10):
/// scratch space holds data, not programs.
pub const TMPFS_OPTIONS: &str = "rw,nosuid,nodev,size=64m";

/// Log files the engine keeps per container (the one written and the one
/// before it).
pub const LOG_FILES: usize = 2;

/// The smallest log file: below it the engine would rotate on every few
/// lines, and a small tail would gain nothing.
pub const LOG_FILE_MIN_BYTES: usize = 1024 * 1024;

/// The engine's log of a run's container, bounded (issue 16.3: a run
/// printing 200 MB left a 375 MiB log for as long as its tombstone).
///
/// The worker reads the engine's log only to recover a run it did not see
/// end (a re-attach or a collect after a restart): the response needs the
/// last `max_output_bytes` of each stream. So each `json-file` log file
/// holds `2 × max_output_bytes` of log records (at least
/// [`LOG_FILE_MIN_BYTES`]) and the engine keeps [`LOG_FILES`] of them: at
/// most `4 × max_output_bytes` on disk (4 MiB at the default 1 MiB), and
/// at least one full file of the latest records, room for both streams'
/// tails written in chunks (a record adds about 60 bytes of JSON around
/// up to 16 KiB of output). Output made of many very short lines costs
/// more per byte: a recovered run may then get a shorter tail, and its
/// byte counts count what the log still holds. A run the worker drives
/// from its start is read from the attach stream and is not affected.
///
/// `json-file` is named, not left to the daemon's default driver: the
/// bound must hold, and recovery reads the log back through the engine.
pub fn log_config(max_output_bytes: usize) -> HostConfigLogConfig {
    let file = max_output_bytes.saturating_mul(2).max(LOG_FILE_MIN_BYTES);
    HostConfigLogConfig {
        typ: Some("json-file".to_owned()),
        config: Some(HashMap::from([
            ("max-size".to_owned(), file.to_string()),
            ("max-file".to_owned(), LOG_FILES.to_string()),
        ])),
    }
}

/// Whether the container gets an open stdin: text to feed or an
/// interactive run.
pub fn wants_stdin(spec: &RunSpec) -> bool {
    spec.stdin.is_some() || spec.interactive
}

/// The create body of a run's container.
///
/// The command replaces the image's `Cmd` and keeps its entrypoint. No TTY,
/// so stdout and stderr arrive multiplexed and stay apart. `StdinOnce`
/// makes the end of an attached stdin close the container's stdin: that
/// is how `cat` sees EOF. Never a restart policy, never auto-remove: the
/// container is the durable record and only `remove` deletes it.
///
/// `image` is the checked image (its id and labels): its labels are
/// overridden where they would speak for the run. `from` is what the
/// engine creates the container from: the run's reference (what `docker
/// ps` then shows), or the checked id when the reference has moved since
/// the check (`images.rs`).
pub fn container_body(
    spec: &RunSpec,
    runner: &str,
    image: &ImageSeen,
    from: &str,
) -> ContainerCreateBody {
    let stdin = wants_stdin(spec);
    let hardening = &spec.hardening;
    let mounts = spec
        .mounts
        .iter()
        .map(|m| EngineMount {
            typ: Some(MountType::BIND),
            // The domain canonicalised request mounts against the
            // filesystem the engine sees; operator mounts are taken as
            // configured (the engine may be remote).
            source: Some(m.source().to_string_lossy().into_owned()),
            target: Some(m.target().as_str().to_owned()),
            read_only: Some(m.mode() == AccessMode::ReadOnly),
            ..EngineMount::default()
        })
        .chain(crate::codex_home::mounts(spec))
        .collect::<Vec<_>>();
    let host_config = HostConfig {
        mounts: (!mounts.is_empty()).then_some(mounts),
        network_mode: Some(spec.network.as_str().to_owned()),
        log_config: Some(log_config(spec.max_output_bytes)),
        ..hardened(hardening)
    };
    ContainerCreateBody {
        image: Some(from.to_owned()),
        cmd: Some(spec.command.clone()),
        working_dir: spec.workdir.as_ref().map(|w| w.as_str().to_owned()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(labels::for_run(spec, runner, &image.id, &image.labels)),
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(stdin),
        stdin_once: Some(stdin),
        tty: Some(false),
        // With network `none` there is nothing to set up: telling the
        // engine so skips libnetwork's sandbox setup (a re-exec of dockerd
        // per start, about half the engine's cost of a short run). The
        // container still gets its own loopback-only namespace; /etc/hosts
        // and /etc/resolv.conf come from the image.
        network_disabled: (spec.network.as_str() == "none").then_some(true),
        host_config: Some(host_config),
        ..ContainerCreateBody::default()
    }
}

/// An image as inspected: its id and its labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSeen {
    pub id: String,
    pub labels: HashMap<String, String>,
}

/// `fromImage` and `tag` for a pull. A reference without tag or digest
/// gets `latest`: the Engine would otherwise pull every tag.
pub fn pull_parts(image: &str) -> (String, Option<String>) {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains('@') || last.contains(':') {
        (image.to_owned(), None)
    } else {
        (image.to_owned(), Some("latest".to_owned()))
    }
}

/// An engine timestamp (RFC 3339, nanoseconds); the zero time
/// `0001-01-01T00:00:00Z` means "never".
pub fn engine_time(value: Option<&str>) -> Option<SystemTime> {
    let parsed = OffsetDateTime::parse(value?, &Rfc3339).ok()?;
    (parsed.year() >= 1970).then(|| parsed.into())
}

/// The hardening of every container the worker creates (a run's, a parked
/// one's, a per-run home's seed helper): one place, so no container the
/// worker makes can miss a limit the policy sets.
pub(crate) fn hardened(hardening: &bus_docker_domain::profile::Hardening) -> HostConfig {
    let tmpfs = hardening
        .tmpfs
        .iter()
        .map(|p| (p.as_str().to_owned(), TMPFS_OPTIONS.to_owned()))
        .collect::<HashMap<_, _>>();
    HostConfig {
        security_opt: hardening
            .no_new_privileges
            .then(|| vec!["no-new-privileges:true".to_owned()]),
        cap_drop: (!hardening.cap_drop.is_empty()).then(|| hardening.cap_drop.clone()),
        cap_add: (!hardening.cap_add.is_empty()).then(|| hardening.cap_add.clone()),
        pids_limit: hardening.pids_limit,
        memory: hardening.memory_bytes,
        // Swap must not hide a memory limit: with swap the process slows
        // down instead of being killed, and `oom_killed` never shows.
        memory_swap: hardening.memory_bytes,
        nano_cpus: hardening.nano_cpus,
        readonly_rootfs: Some(hardening.read_only_rootfs),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        privileged: Some(false),
        auto_remove: Some(false),
        ..HostConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    use bus_docker_domain::mount::{ContainerPath, Mount};

    use super::*;
    use crate::test_spec;

    #[test]
    fn the_body_hardens_and_labels_the_container() {
        let mut spec = test_spec();
        spec.hardening.read_only_rootfs = true;
        spec.hardening.tmpfs = vec![ContainerPath::parse("t", "/tmp").unwrap()];
        spec.hardening.memory_bytes = Some(1 << 28);
        spec.mounts = vec![
            Mount::operator(
                PathBuf::from("/srv/ro"),
                ContainerPath::parse("t", "/ro").unwrap(),
                AccessMode::ReadOnly,
            ),
            Mount::operator(
                PathBuf::from("/srv/rw"),
                ContainerPath::parse("t", "/rw").unwrap(),
                AccessMode::ReadWrite,
            ),
        ];
        let seen = ImageSeen {
            id: "sha256:1".into(),
            labels: HashMap::from([("bus.profile".to_owned(), "admin".to_owned())]),
        };
        let body = container_body(&spec, "docker@h", &seen, "img:1");
        assert_eq!(body.image.as_deref(), Some("img:1"));
        assert_eq!(body.cmd.as_ref().unwrap(), &spec.command);
        assert!(body.entrypoint.is_none());
        assert_eq!(body.env.as_ref().unwrap(), &vec!["A=1".to_owned()]);
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.open_stdin, Some(false));
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[labels::RUNNER], "docker@h");
        assert_eq!(labels[labels::PROFILE], "codex", "the worker's value wins");
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(
            host.security_opt.unwrap(),
            vec!["no-new-privileges:true".to_owned()]
        );
        assert_eq!(host.cap_drop.unwrap(), vec!["ALL".to_owned()]);
        assert_eq!(host.pids_limit, Some(512));
        assert_eq!(host.memory, Some(1 << 28));
        assert_eq!(host.memory_swap, Some(1 << 28), "no swap on top");
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.tmpfs.unwrap()["/tmp"], TMPFS_OPTIONS);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.auto_remove, Some(false));
        assert!(host.restart_policy.is_none());
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log = log.config.unwrap();
        assert_eq!(log["max-file"], "2");
        assert_eq!(
            log["max-size"],
            LOG_FILE_MIN_BYTES.to_string(),
            "a 1 KiB tail still gets a 1 MiB file"
        );
        assert!(host.pid_mode.is_none() && host.ipc_mode.is_none());
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts[0].read_only, Some(true));
        assert_eq!(mounts[0].source.as_deref(), Some("/srv/ro"));
        assert_eq!(mounts[1].read_only, Some(false));
        assert_eq!(mounts[1].typ, Some(MountType::BIND));
    }

    #[test]
    fn the_engine_log_is_bounded_by_the_output_cap() {
        let log = log_config(8 << 20).config.unwrap();
        assert_eq!(log["max-size"], (16 << 20).to_string());
        assert_eq!(log["max-file"], "2");
    }

    #[test]
    fn stdin_is_opened_for_text_and_interactive_runs() {
        let mut spec = test_spec();
        spec.stdin = Some("x".into());
        let body = container_body(&spec, "r", &ImageSeen::default(), "img:1");
        assert_eq!(
            (body.open_stdin, body.stdin_once, body.attach_stdin),
            (Some(true), Some(true), Some(true))
        );
        spec.stdin = None;
        spec.interactive = true;
        assert_eq!(
            container_body(&spec, "r", &ImageSeen::default(), "img:1").open_stdin,
            Some(true)
        );
    }

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(pull_parts("alpine").1.as_deref(), Some("latest"));
        assert_eq!(
            pull_parts("localhost:5000/team/app").1.as_deref(),
            Some("latest")
        );
        assert_eq!(pull_parts("alpine:3.20"), ("alpine:3.20".into(), None));
        assert_eq!(pull_parts("alpine@sha256:ab").1, None);
    }

    #[test]
    fn engine_times_parse_and_zero_means_never() {
        let t = engine_time(Some("2024-05-01T10:00:00.123456789Z")).unwrap();
        let secs = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs.as_secs(), 1_714_557_600);
        assert_eq!(secs.subsec_nanos(), 123_456_789);
        assert_eq!(engine_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(engine_time(Some("garbage")), None);
        assert_eq!(engine_time(None), None);
    }
}
