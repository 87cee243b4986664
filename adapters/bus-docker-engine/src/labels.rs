//! The labels that make a container the durable record of a run
//! (docs/protocol.md §5), and reading a [`ManagedContainer`] back from them.
//!
//! Besides the contract's labels the adapter stores what recovery needs to
//! answer a run after a worker restart without any local state: the
//! profile, the requested image, the command, whether stdin is interactive,
//! whether the request asked for live output, and the timeout.
//!
//! Only labels the worker wrote count. Docker merges the image's labels
//! into the container's, so an image carrying `LABEL bus.profile=…` would
//! otherwise speak for the run: [`for_run`] sets every `bus.*` key the
//! image brings and the worker does not set to the empty string, and
//! reading back treats an empty label as absent.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bus_docker_domain::container::{ContainerRef, RunMark};
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{CorrelationId, OwnerId, ProfileName, RunId};

/// `bus.managed-by`: set on every container this worker creates.
pub const MANAGED_BY: &str = "bus.managed-by";
/// The value of [`MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "bus-integration-docker";
pub const RUN_ID: &str = "bus.run-id";
pub const OWNER: &str = "bus.owner-identity-id";
pub const CORRELATION: &str = "bus.correlation-id";
pub const REPLY_EVENT: &str = "bus.reply-event";
pub const RUNNER: &str = "bus.runner";
pub const PROFILE: &str = "bus.profile";
/// The image as requested (the reference, not the id).
pub const IMAGE: &str = "bus.image";
/// The id of the image the worker checked and created the container from
/// (the engine's events name only the reference the container shows).
pub const IMAGE_ID: &str = "bus.image-id";
/// The command as a JSON array of strings.
pub const ARGS: &str = "bus.args";
/// `true` or `false`.
pub const INTERACTIVE: &str = "bus.interactive";
/// `true` when the request asked for live output (absent otherwise).
pub const STREAM_OUTPUT: &str = "bus.stream-output";
/// The codex session a run resumes (docs/protocol.md §6), echoed after recovery.
pub const SESSION: &str = "bus.session";
/// Whole seconds.
pub const TIMEOUT_SECONDS: &str = "bus.timeout-seconds";
/// On a warm container (docs/protocol.md §10): the profile it was parked for. A
/// parked one has no run yet; a claimed one is named `bus-run-<id>` and
/// its run's facts are in its claim record (`warm.rs`), not in labels.
pub const WARM: &str = "bus.warm";
/// Prefix of the request's own labels.
pub const USER_PREFIX: &str = "bus.user.";
/// Prefix of every label this worker reads.
pub const PREFIX: &str = "bus.";

/// The Engine's `filters` for a listing: managed containers, narrowed to
/// a runner and a run. Every key is one the worker always writes, so an
/// image label cannot widen or narrow the result.
pub fn filters(filter: &ManagedFilter) -> HashMap<String, Vec<String>> {
    let mut labels = vec![format!("{MANAGED_BY}={MANAGED_BY_VALUE}")];
    if let Some(runner) = &filter.runner {
        labels.push(format!("{RUNNER}={runner}"));
    }
    if let Some(run_id) = &filter.run_id {
        labels.push(format!("{RUN_ID}={run_id}"));
    }
    let mut filters = HashMap::from([("label".to_owned(), labels)]);
    if filter.active_only {
        // Values of one filter key are alternatives (OR).
        let active = ["created", "running", "paused", "restarting"];
        filters.insert("status".to_owned(), active.map(str::to_owned).to_vec());
    }
    filters
}

/// Every label of the run's container. `image` holds the labels of the
/// image it is created from: each `bus.*` key there that the worker does
/// not set is set to the empty string, so the image cannot add run facts.
pub fn for_run(
    spec: &RunSpec,
    runner: &str,
    image_id: &str,
    image: &HashMap<String, String>,
) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = image
        .keys()
        .filter(|k| k.starts_with(PREFIX))
        .map(|k| (k.clone(), String::new()))
        .collect();
    let mut put = |k: &str, v: String| {
        labels.insert(k.to_owned(), v);
    };
    put(MANAGED_BY, MANAGED_BY_VALUE.to_owned());
    put(RUN_ID, spec.run_id.as_str().to_owned());
    if let Some(owner) = &spec.owner {
        put(OWNER, owner.as_str().to_owned());
    }
    put(CORRELATION, spec.correlation.as_str().to_owned());
    put(REPLY_EVENT, spec.reply_event.clone());
    put(RUNNER, runner.to_owned());
    if let Some(profile) = &spec.profile {
        put(PROFILE, profile.as_str().to_owned());
    }
    put(IMAGE, spec.image.as_str().to_owned());
    put(IMAGE_ID, image_id.to_owned());
    put(ARGS, args_label(&spec.command));
    put(INTERACTIVE, spec.interactive.to_string());
    if spec.stream_output {
        put(STREAM_OUTPUT, "true".to_owned());
    }
    put(TIMEOUT_SECONDS, spec.timeout.as_secs().to_string());
    if let Some(session) = spec.session() {
        put(SESSION, session.as_str().to_owned());
    }
    for (key, value) in &spec.labels {
        labels.insert(format!("{USER_PREFIX}{key}"), value.clone());
    }
    labels
}

/// Largest `bus.args` label: every `list_managed` carries every label, and
/// a command may be up to 1 MiB.
pub const MAX_ARGS_LABEL_BYTES: usize = 16 * 1024;

/// The command as a JSON array, cut to whole arguments within
/// [`MAX_ARGS_LABEL_BYTES`]; a cut list ends with `"…"`. Only a recovered
/// run's response reads it back (`args`).
fn args_label(command: &[String]) -> String {
    serde_json::Value::from(capped_args(command)).to_string()
}

/// The command cut to whole arguments within [`MAX_ARGS_LABEL_BYTES`] of
/// JSON; a cut list ends with `"…"`.
pub(crate) fn capped_args(command: &[String]) -> Vec<String> {
    let full = serde_json::Value::from(command.to_vec()).to_string();
    if full.len() <= MAX_ARGS_LABEL_BYTES {
        return command.to_vec();
    }
    let mut kept: Vec<String> = Vec::new();
    for arg in command {
        kept.push(arg.clone());
        if serde_json::Value::from(kept.clone()).to_string().len() + 8 > MAX_ARGS_LABEL_BYTES {
            kept.pop();
            break;
        }
    }
    kept.push("…".to_owned());
    kept
}

/// What the engine lists about one container, beyond its labels.
pub(crate) struct Listed<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub labels: &'a HashMap<String, String>,
    pub image_id: Option<&'a str>,
    pub state: ContainerState,
    pub started_at: Option<SystemTime>,
    pub created_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

/// The run id and mark: the id from the worker's label and the mark from
/// what the name adds to `bus-run-<id>`; without the label, both from the
/// name alone.
pub(crate) fn identity(label: Option<&str>, name: &str) -> Option<(RunId, RunMark)> {
    if let Some(run_id) = label.and_then(|v| RunId::parse(v).ok()) {
        let mark = RunMark::of(name, &run_id).unwrap_or_else(|| {
            // Renamed by hand: the suffix alone decides.
            RunMark::split(name).map_or(RunMark::Live, |(_, mark)| mark)
        });
        return Some((run_id, mark));
    }
    let (id, mark) = RunMark::split(name)?;
    Some((RunId::parse(id).ok()?, mark))
}

/// Rebuild the run record; `None` (with a warning) when the container has
/// no usable run id.
pub(crate) fn managed(listed: Listed<'_>) -> Option<ManagedContainer> {
    let labels = listed.labels;
    // Empty means absent: the worker blanks the image's `bus.*` labels.
    let get = |k: &str| labels.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if get(WARM).is_some() && RunMark::split(listed.name).is_none() {
        // Parked: no run yet (never listed as one).
        return None;
    }
    let Some((run_id, mark)) = identity(get(RUN_ID), listed.name) else {
        tracing::warn!(
            container = listed.id,
            name = listed.name,
            "managed container without a valid run id; ignored"
        );
        return None;
    };
    let args = get(ARGS)
        .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
        .unwrap_or_default();
    Some(ManagedContainer {
        container: ContainerRef::new(listed.id, listed.name),
        run_id,
        mark,
        owner: get(OWNER).and_then(|v| OwnerId::parse(v).ok()),
        correlation: get(CORRELATION).and_then(|v| CorrelationId::parse(v).ok()),
        reply_event: get(REPLY_EVENT).map(str::to_owned),
        runner: get(RUNNER).map(str::to_owned),
        profile: get(PROFILE).and_then(|v| ProfileName::parse(v).ok()),
        image: get(IMAGE).unwrap_or_default().to_owned(),
        // What the worker recorded; else what the engine lists.
        image_id: get(IMAGE_ID).or(listed.image_id).map(str::to_owned),
        args,
        interactive: get(INTERACTIVE) == Some("true"),
        stream_output: get(STREAM_OUTPUT) == Some("true"),
        timeout: get(TIMEOUT_SECONDS)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs),
        state: listed.state,
        started_at: listed.started_at,
        created_at: listed.created_at,
        session: get(SESSION).and_then(|v| bus_docker_domain::SessionName::parse(v).ok()),
        finished_at: listed.finished_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;

    #[test]
    fn labels_carry_the_contract_and_what_recovery_needs() {
        let spec = test_spec();
        let labels = for_run(&spec, "docker@host", "sha256:1", &HashMap::new());
        assert_eq!(labels[MANAGED_BY], "bus-integration-docker");
        assert_eq!(labels[RUN_ID], "r1");
        assert_eq!(labels[OWNER], "owner-1");
        assert_eq!(labels[CORRELATION], "c-1");
        assert_eq!(labels[REPLY_EVENT], "bus.docker.run.response");
        assert_eq!(labels[RUNNER], "docker@host");
        assert_eq!(labels[PROFILE], "codex");
        assert_eq!(labels[IMAGE], "img:1");
        assert_eq!(labels[ARGS], r#"["sh","-c","echo \"hi\""]"#);
        assert_eq!(labels[INTERACTIVE], "false");
        assert_eq!(labels[TIMEOUT_SECONDS], "60");
        assert_eq!(labels["bus.user.bus.task.ref"], "t-9");
        assert!(!labels.contains_key(STREAM_OUTPUT));
    }

    #[test]
    fn the_live_output_choice_survives_in_a_label() {
        let mut spec = test_spec();
        spec.stream_output = true;
        let labels = for_run(&spec, "docker@host", "sha256:1", &HashMap::new());
        assert_eq!(labels[STREAM_OUTPUT], "true");
        let listed = |labels| Listed {
            id: "abc",
            name: "bus-run-r1",
            labels,
            image_id: None,
            state: ContainerState::Running,
            started_at: None,
            finished_at: None,
            created_at: None,
        };
        assert!(managed(listed(&labels)).unwrap().stream_output);
        let plain = for_run(&test_spec(), "docker@host", "sha256:1", &HashMap::new());
        assert!(!managed(listed(&plain)).unwrap().stream_output);
    }

    #[test]
    fn the_session_survives_in_a_label_for_a_recovered_answer() {
        let mut spec = test_spec();
        spec.codex_home = Some(bus_docker_domain::spec::RunHome {
            seed_from: "/h/codex".into(),
            session: Some(bus_docker_domain::spec::SessionKey {
                owner: spec.owner.clone().unwrap(),
                name: bus_docker_domain::SessionName::parse("task-1").unwrap(),
            }),
        });
        let labels = for_run(&spec, "docker@host", "sha256:1", &HashMap::new());
        assert_eq!(labels[SESSION], "task-1");
        let listed = |labels| Listed {
            id: "abc",
            name: "bus-run-r1",
            labels,
            image_id: None,
            state: ContainerState::Exited,
            started_at: None,
            created_at: None,
            finished_at: None,
        };
        let m = managed(listed(&labels)).unwrap();
        assert_eq!(m.session.unwrap().as_str(), "task-1");
        let plain = for_run(&test_spec(), "docker@host", "sha256:1", &HashMap::new());
        assert!(!plain.contains_key(SESSION));
        assert!(managed(listed(&plain)).unwrap().session.is_none());
    }

    #[test]
    fn owner_and_profile_are_omitted_when_absent() {
        let mut spec = test_spec();
        spec.owner = None;
        spec.profile = None;
        let labels = for_run(&spec, "r", "sha256:1", &HashMap::new());
        assert!(!labels.contains_key(OWNER));
        assert!(!labels.contains_key(PROFILE));
    }

    #[test]
    fn a_managed_container_round_trips_through_its_labels() {
        let spec = test_spec();
        let labels = for_run(&spec, "docker@host", "sha256:1", &HashMap::new());
        let m = managed(Listed {
            id: "abc",
            name: "bus-run-r1",
            labels: &labels,
            image_id: Some("sha256:1"),
            state: ContainerState::Running,
            started_at: None,
            finished_at: None,
            created_at: None,
        })
        .unwrap();
        assert_eq!(m.mark, RunMark::Live);
        assert_eq!(m.run_id, spec.run_id);
        assert_eq!(m.owner, spec.owner);
        assert_eq!(m.correlation.as_ref(), Some(&spec.correlation));
        assert_eq!(m.reply_event.as_deref(), Some("bus.docker.run.response"));
        assert_eq!(m.runner.as_deref(), Some("docker@host"));
        assert_eq!(m.profile, spec.profile);
        assert_eq!(m.image, "img:1");
        assert_eq!(m.image_id.as_deref(), Some("sha256:1"));
        assert_eq!(m.args, spec.command);
        assert!(!m.interactive);
        assert_eq!(m.timeout, Some(Duration::from_secs(60)));
        assert_eq!(m.container.name, "bus-run-r1");
    }

    #[test]
    fn the_name_stands_in_for_a_missing_run_id_label() {
        let labels = HashMap::from([(MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned())]);
        let listed = |name| Listed {
            id: "x",
            name,
            labels: &labels,
            image_id: None,
            state: ContainerState::Exited,
            started_at: None,
            finished_at: None,
            created_at: None,
        };
        assert_eq!(managed(listed("bus-run-r7")).unwrap().run_id.as_str(), "r7");
        let marked = managed(listed("bus-run-r7.answered")).unwrap();
        assert_eq!(
            (marked.run_id.as_str(), marked.mark),
            ("r7", RunMark::Answered)
        );
        assert!(managed(listed("someone-else")).is_none());
    }

    #[test]
    fn the_mark_is_what_the_name_adds_to_the_labelled_run_id() {
        let labels = HashMap::from([(RUN_ID.to_owned(), "x.deleted".to_owned())]);
        let listed = |name| Listed {
            id: "x",
            name,
            labels: &labels,
            image_id: None,
            state: ContainerState::Exited,
            started_at: None,
            finished_at: None,
            created_at: None,
        };
        let live = managed(listed("bus-run-x.deleted")).unwrap();
        assert_eq!(
            (live.run_id.as_str(), live.mark),
            ("x.deleted", RunMark::Live)
        );
        let deleted = managed(listed("bus-run-x.deleted.deleted")).unwrap();
        assert_eq!(deleted.mark, RunMark::Deleted);
    }

    #[test]
    fn image_labels_cannot_speak_for_the_run() {
        let mut spec = test_spec();
        spec.owner = None;
        spec.profile = None;
        let image: HashMap<String, String> = [
            (PROFILE, "admin"),
            (OWNER, "someone-else"),
            (RUNNER, "docker@elsewhere"),
            (CORRELATION, "stolen"),
            ("bus.user.secret", "x"),
            ("org.opencontainers.image.title", "kept"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let labels = for_run(&spec, "docker@host", "sha256:1", &image);
        assert_eq!(labels[PROFILE], "");
        assert_eq!(labels[OWNER], "");
        assert_eq!(labels["bus.user.secret"], "");
        assert_eq!(labels[RUNNER], "docker@host");
        assert_eq!(labels[CORRELATION], "c-1");
        assert!(!labels.contains_key("org.opencontainers.image.title"));
        // What the engine then holds: the image's labels under the worker's.
        let mut merged = image.clone();
        merged.extend(labels);
        let m = managed(Listed {
            id: "abc",
            name: "bus-run-r1",
            labels: &merged,
            image_id: None,
            state: ContainerState::Created,
            started_at: None,
            finished_at: None,
            created_at: None,
        })
        .unwrap();
        assert_eq!((m.owner, m.profile), (None, None));
        assert_eq!(m.runner.as_deref(), Some("docker@host"));
    }

    #[test]
    fn filters_narrow_by_runner_and_run() {
        let all = filters(&ManagedFilter::all());
        assert_eq!(
            all["label"],
            vec![format!("{MANAGED_BY}={MANAGED_BY_VALUE}")]
        );
        let mut both = ManagedFilter::runner("docker@h");
        both.run_id = Some(RunId::parse("r9").unwrap());
        let labels = &filters(&both)["label"];
        assert!(labels.contains(&"bus.runner=docker@h".to_owned()));
        assert!(labels.contains(&"bus.run-id=r9".to_owned()));
        assert_eq!(labels.len(), 3);
        assert!(!filters(&both).contains_key("status"));
        let active = filters(&ManagedFilter::active());
        assert_eq!(
            active["status"],
            ["created", "running", "paused", "restarting"].map(str::to_owned)
        );
    }

    #[test]
    fn a_huge_command_is_cut_in_the_args_label() {
        let command: Vec<String> = (0..100)
            .map(|i| format!("{i}-{}", "x".repeat(1000)))
            .collect();
        let label = args_label(&command);
        assert!(label.len() <= MAX_ARGS_LABEL_BYTES, "{}", label.len());
        let back: Vec<String> = serde_json::from_str(&label).unwrap();
        assert_eq!(back.last().unwrap(), "…");
        assert_eq!(back[0], command[0]);
        assert_eq!(
            args_label(&command[..2]),
            serde_json::Value::from(command[..2].to_vec()).to_string()
        );
    }
}
