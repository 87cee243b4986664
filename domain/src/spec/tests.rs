//! Unit tests of `resolve` and of each of its rules.

use super::*;
use crate::mount::tests::FakePaths;
use crate::mount::RequestedMount;
use crate::network::NetworkPolicy;
use crate::profile::{CodexOptions, Profile};
use std::path::PathBuf;

fn origin() -> Origin {
    Origin {
        correlation: CorrelationId::parse("c-1").unwrap(),
        stamped_owner: Some(OwnerId::parse("stamped").unwrap()),
        reply_event: "bus.docker.run.response".into(),
    }
}

fn profiles() -> Profiles {
    let codex = CodexOptions {
        image: Some(ImageRef::parse("codex:1").unwrap()),
        ssh_agent_host_path: Some("/run/agent.sock".into()),
        ..CodexOptions::default()
    }
    .profile(Hardening::default())
    .unwrap();
    let mut open = Profile::new(
        ProfileName::parse("open").unwrap(),
        ImageRef::parse("base:1").unwrap(),
    );
    open.allow_image_override = true;
    open.command = Some(vec!["true".into()]);
    open.default_timeout = Some(Duration::from_secs(42));
    Profiles::new([codex, open])
}

fn policy() -> Policy {
    Policy {
        mounts: MountPolicy::new(vec![PathBuf::from("/srv")], vec![]),
        images: ImagePolicy::new(vec!["allowed/*".into(), "base:1".into()]),
        networks: NetworkPolicy::new(
            Some(vec![
                NetworkName::none(),
                NetworkName::parse("host").unwrap(),
            ]),
            None,
        )
        .unwrap(),
        ..Policy::default()
    }
}

fn run(req: &RunRequest) -> Result<RunSpec, OperationError> {
    resolve(
        req,
        &origin(),
        &profiles(),
        &policy(),
        &FakePaths::with(&[("/srv/a", "/srv/a")]),
        RunId::parse("gen").unwrap(),
    )
}

fn image_run() -> RunRequest {
    RunRequest {
        image: Some(ImageRef::parse("allowed/x:1").unwrap()),
        command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
        ..RunRequest::default()
    }
}

fn forbidden_rule(r: Result<RunSpec, OperationError>) -> &'static str {
    match r {
        Err(OperationError::Forbidden { rule, .. }) => rule,
        other => panic!("expected forbidden, got {other:?}"),
    }
}

fn bad_field(r: Result<RunSpec, OperationError>) -> String {
    match r {
        Err(OperationError::InvalidSpec(e)) => e.field().to_owned(),
        other => panic!("expected bad request, got {other:?}"),
    }
}

#[test]
fn an_image_run_gets_defaults() {
    let spec = run(&image_run()).unwrap();
    assert_eq!(spec.run_id.as_str(), "gen");
    assert_eq!(spec.owner.as_ref().unwrap().as_str(), "stamped");
    assert_eq!(spec.network.as_str(), "none");
    assert_eq!(spec.timeout, Duration::from_secs(30 * 60), "v3: 30 minutes");
    assert_eq!(spec.container_name(), "bus-run-gen");
    assert!(spec.hardening.no_new_privileges);
}

#[test]
fn profile_or_image_and_command_are_required() {
    assert_eq!(bad_field(run(&RunRequest::default())), "profile");
    let mut r = image_run();
    r.command = None;
    assert_eq!(bad_field(run(&r)), "command");
    r.command = Some(vec![]);
    assert_eq!(bad_field(run(&r)), "command");
    r.image = None;
    r.profile = Some(ProfileName::parse("nope").unwrap());
    assert_eq!(bad_field(run(&r)), "profile");
}

#[test]
fn the_permissive_defaults_of_v3() {
    let permissive = Policy::default();
    let go = |r: &RunRequest, policy: &Policy| {
        resolve(
            r,
            &origin(),
            &profiles(),
            policy,
            &FakePaths::with(&[]),
            RunId::parse("gen").unwrap(),
        )
    };
    let mut r = image_run();
    r.image = Some(ImageRef::parse("any/image:1").unwrap());
    let spec = go(&r, &permissive).unwrap();
    assert_eq!(
        spec.network.as_str(),
        "default",
        "the engine's default network"
    );
    assert_eq!(spec.timeout, Duration::from_secs(30 * 60));
    assert!(permissive.max_timeout >= spec.timeout);
    let mut codex = RunRequest {
        profile: Some(ProfileName::parse("codex").unwrap()),
        command: Some(vec!["codex".into()]),
        ..RunRequest::default()
    };
    assert_eq!(go(&codex, &permissive).unwrap().network.as_str(), "default");
    for name in ["none", "default", "bridge", "bus-stack_net"] {
        codex.network = Some(NetworkName::parse(name).unwrap());
        assert_eq!(go(&codex, &permissive).unwrap().network.as_str(), name);
    }
    for name in ["host", "container:0123abcd"] {
        r.network = Some(NetworkName::parse(name).unwrap());
        match go(&r, &permissive) {
            Err(OperationError::Forbidden { rule, .. }) => assert_eq!(rule, "network_not_allowed"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn an_unconfigured_profile_with_an_image_is_an_image_run_under_its_name() {
    let mut r = image_run();
    r.profile = Some(ProfileName::parse("local-model").unwrap());
    let spec = run(&r).unwrap();
    assert_eq!(spec.profile.as_ref().unwrap().as_str(), "local-model");
    assert_eq!(spec.image.as_str(), "allowed/x:1");
    // Still under the image policy.
    r.image = Some(ImageRef::parse("elsewhere/x:1").unwrap());
    assert_eq!(forbidden_rule(run(&r)), "image_not_allowed");
    // Without an image: bad_request saying how to configure it.
    r.image = None;
    match run(&r) {
        Err(OperationError::InvalidSpec(e)) => {
            assert_eq!(e.field(), "profile");
            assert!(e.message().contains("[profiles.local-model]"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let no_codex = RunRequest {
        profile: Some(ProfileName::parse("codex").unwrap()),
        command: Some(vec!["codex".into()]),
        ..RunRequest::default()
    };
    match resolve(
        &no_codex,
        &origin(),
        &Profiles::default(),
        &policy(),
        &FakePaths::with(&[]),
        RunId::parse("gen").unwrap(),
    ) {
        Err(OperationError::InvalidSpec(e)) => {
            assert!(e.message().contains("--container-codex-image"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn profile_supplies_image_command_env_and_timeout() {
    let r = RunRequest {
        profile: Some(ProfileName::parse("open").unwrap()),
        timeout_seconds: Some(0),
        ..RunRequest::default()
    };
    let spec = run(&r).unwrap();
    assert_eq!(spec.image.as_str(), "base:1");
    assert_eq!(spec.command, vec!["true"]);
    assert_eq!(spec.timeout, Duration::from_secs(42));
    let codex = run(&RunRequest {
        profile: Some(ProfileName::parse("codex").unwrap()),
        command: Some(vec!["codex".into()]),
        ..RunRequest::default()
    })
    .unwrap();
    assert_eq!(
        codex.env["SSH_AUTH_SOCK"],
        crate::profile::CODEX_SSH_AGENT_SOCKET
    );
}

#[test]
fn image_override_needs_the_profile_and_the_policy() {
    let mut r = RunRequest {
        profile: Some(ProfileName::parse("codex").unwrap()),
        image: Some(ImageRef::parse("allowed/y:1").unwrap()),
        command: Some(vec!["x".into()]),
        ..RunRequest::default()
    };
    assert_eq!(forbidden_rule(run(&r)), "image_override");
    r.profile = Some(ProfileName::parse("open").unwrap());
    assert_eq!(run(&r).unwrap().image.as_str(), "allowed/y:1");
    r.image = Some(ImageRef::parse("evil:1").unwrap());
    assert_eq!(forbidden_rule(run(&r)), "image_not_allowed");
    let mut plain = image_run();
    plain.image = Some(ImageRef::parse("evil:1").unwrap());
    assert_eq!(forbidden_rule(run(&plain)), "image_not_allowed");
}

#[test]
fn env_keys_are_checked_and_reserved_keys_refused() {
    let mut r = image_run();
    r.env.insert("1BAD".into(), "x".into());
    assert_eq!(bad_field(run(&r)), "env.1BAD");
    let mut r = image_run();
    r.env.insert("GIT_SSH_COMMAND".into(), "evil".into());
    assert_eq!(forbidden_rule(run(&r)), "reserved_env");
    let mut r = image_run();
    r.env.insert("OK_KEY".into(), "v".into());
    assert_eq!(run(&r).unwrap().env["OK_KEY"], "v");
    let mut r = image_run();
    for i in 0..=limits::MAX_ENV {
        r.env.insert(format!("K{i}"), "v".into());
    }
    assert_eq!(bad_field(run(&r)), "env");
}

#[test]
fn networks_must_be_allowed() {
    let mut r = image_run();
    r.network = Some(NetworkName::parse("bridge").unwrap());
    assert_eq!(forbidden_rule(run(&r)), "network_not_allowed");
    r.network = Some(NetworkName::parse("default").unwrap());
    assert_eq!(forbidden_rule(run(&r)), "network_not_allowed");
    r.network = Some(NetworkName::parse("host").unwrap());
    assert_eq!(run(&r).unwrap().network.as_str(), "host");
}

#[test]
fn timeouts_are_capped() {
    let mut r = image_run();
    r.timeout_seconds = Some(1_000_000);
    assert_eq!(run(&r).unwrap().timeout, Duration::from_secs(3600));
    r.timeout_seconds = Some(5);
    assert_eq!(run(&r).unwrap().timeout, Duration::from_secs(5));
}

#[test]
fn mounts_go_through_the_policy_and_targets_are_unique() {
    let mut r = image_run();
    r.mounts = vec![RequestedMount {
        source: "/srv/a".into(),
        target: "/a".into(),
        read_only: false,
    }];
    assert_eq!(run(&r).unwrap().mounts.len(), 1);
    r.mounts.push(RequestedMount {
        source: "/srv/a".into(),
        target: "/a".into(),
        read_only: true,
    });
    assert_eq!(bad_field(run(&r)), "mounts[1].target");
    r.mounts = vec![RequestedMount {
        source: "/etc".into(),
        target: "/a".into(),
        read_only: true,
    }];
    assert_eq!(forbidden_rule(run(&r)), "mount_root");
}

#[test]
fn oversized_and_hostile_text_is_refused() {
    let mut r = image_run();
    r.command = Some(vec!["a\0b".into()]);
    assert_eq!(bad_field(run(&r)), "command[0]");
    let mut r = image_run();
    r.stdin = Some("x".repeat(limits::MAX_STDIN_BYTES + 1));
    assert_eq!(bad_field(run(&r)), "stdin");
    let mut r = image_run();
    r.labels.insert("bad key".into(), "v".into());
    assert_eq!(bad_field(run(&r)), "labels.bad key");
    let mut r = image_run();
    r.workdir = Some("relative".into());
    assert_eq!(bad_field(run(&r)), "workdir");
}

// One test per rule helper: each rule alone, without the others.

fn open_profile() -> Profile {
    profiles()
        .get(&ProfileName::parse("open").unwrap())
        .unwrap()
        .clone()
}

#[test]
fn check_privileges_names_the_first_field() {
    let mut r = image_run();
    assert!(check_privileges(&r).is_ok());
    r.privilege_fields = vec!["capAdd".into(), "privileged".into()];
    match check_privileges(&r) {
        Err(OperationError::Forbidden { rule, detail }) => {
            assert_eq!(rule, "privilege");
            assert!(detail.starts_with("capAdd:"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // The privilege rule comes first: it wins over every other error.
    let r = RunRequest {
        privilege_fields: vec!["host_config".into()],
        ..RunRequest::default()
    };
    assert_eq!(forbidden_rule(run(&r)), "privilege");
}

#[test]
fn profile_of_finds_or_names_the_profile() {
    let mut r = image_run();
    assert!(profile_of(&r, &profiles()).unwrap().is_none());
    r.profile = Some(ProfileName::parse("open").unwrap());
    assert_eq!(
        profile_of(&r, &profiles()).unwrap().unwrap().name.as_str(),
        "open"
    );
    r.profile = Some(ProfileName::parse("missing").unwrap());
    assert!(
        profile_of(&r, &profiles()).unwrap().is_none(),
        "with an image"
    );
    r.image = None;
    assert!(matches!(
        profile_of(&r, &profiles()),
        Err(OperationError::InvalidSpec(e)) if e.field() == "profile"
    ));
}

#[test]
fn image_of_applies_override_and_allow_list() {
    let open = open_profile();
    let mut r = image_run();
    assert_eq!(
        image_of(&r, None, &policy()).unwrap().as_str(),
        "allowed/x:1"
    );
    assert_eq!(
        image_of(&r, Some(&open), &policy()).unwrap().as_str(),
        "allowed/x:1"
    );
    r.image = None;
    assert_eq!(
        image_of(&r, Some(&open), &policy()).unwrap().as_str(),
        "base:1"
    );
    assert!(image_of(&r, None, &policy()).is_err());
    r.image = Some(ImageRef::parse("other:1").unwrap());
    assert!(matches!(
        image_of(&r, Some(&open), &policy()),
        Err(OperationError::Forbidden {
            rule: "image_not_allowed",
            ..
        })
    ));
}

#[test]
fn command_of_needs_a_named_executable() {
    let mut r = image_run();
    assert_eq!(command_of(&r, None).unwrap().len(), 3);
    for empty in [vec![], vec![String::new()], vec![" ".into(), "x".into()]] {
        r.command = Some(empty.clone());
        match command_of(&r, None) {
            Err(OperationError::InvalidSpec(e)) => {
                assert_eq!(e.field(), "command", "{empty:?}")
            }
            other => panic!("{empty:?}: {other:?}"),
        }
    }
    r.command = None;
    assert_eq!(command_of(&r, Some(&open_profile())).unwrap(), vec!["true"]);
    r.command = Some(vec!["x".repeat(limits::MAX_ARG_BYTES); 9]);
    assert!(command_of(&r, None).is_err());
}

#[test]
fn merged_env_layers_the_request_over_the_profile() {
    let mut open = open_profile();
    open.env.insert("A".into(), "profile".into());
    open.env.insert("B".into(), "profile".into());
    let mut r = image_run();
    r.env.insert("B".into(), "request".into());
    let env = merged_env(&r, Some(&open)).unwrap();
    assert_eq!(
        (env["A"].as_str(), env["B"].as_str()),
        ("profile", "request")
    );
    open.reserved_env.push("B".into());
    assert!(matches!(
        merged_env(&r, Some(&open)),
        Err(OperationError::Forbidden {
            rule: "reserved_env",
            ..
        })
    ));
    r.env.insert("C".into(), "nul\0".into());
    assert!(merged_env(&r, None).is_err());
}

#[test]
fn admitted_mounts_refuse_one_target_twice_in_any_spelling() {
    let mut open = open_profile();
    let target = |t: &str| ContainerPath::parse("t", t).unwrap();
    open.mounts.push(Mount::operator(
        "/opt/p".into(),
        target("/p"),
        crate::mount::AccessMode::ReadOnly,
    ));
    let paths = FakePaths::with(&[("/srv/a", "/srv/a")]);
    for spelling in ["/p", "//p", "/p/", "/./p", "/x/../p", "///p//"] {
        let mut r = image_run();
        r.mounts = vec![RequestedMount {
            source: "/srv/a".into(),
            target: spelling.into(),
            read_only: true,
        }];
        match admitted_mounts(&r, Some(&open), &policy(), &paths) {
            Err(OperationError::InvalidSpec(e)) => assert_eq!(e.field(), "mounts[0].target"),
            other => panic!("{spelling}: {other:?}"),
        }
    }
    let mut r = image_run();
    r.mounts = vec![
        RequestedMount {
            source: "/srv/a".into(),
            target: "/w".into(),
            read_only: true,
        },
        RequestedMount {
            source: "/srv/a".into(),
            target: "/q/../w/".into(),
            read_only: true,
        },
    ];
    match admitted_mounts(&r, None, &policy(), &paths) {
        Err(OperationError::InvalidSpec(e)) => assert_eq!(e.field(), "mounts[1].target"),
        other => panic!("{other:?}"),
    }
    open.mounts.push(Mount::operator(
        "/opt/q".into(),
        target("/p"),
        crate::mount::AccessMode::ReadOnly,
    ));
    match admitted_mounts(&image_run(), Some(&open), &policy(), &paths) {
        Err(OperationError::InvalidSpec(e)) => assert_eq!(e.field(), "profile"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn network_of_prefers_request_then_profile_then_default() {
    let mut open = open_profile();
    let r = image_run();
    assert_eq!(network_of(&r, None, &policy()).unwrap().as_str(), "none");
    open.network = Some(NetworkName::parse("special").unwrap());
    assert_eq!(
        network_of(&r, Some(&open), &policy()).unwrap().as_str(),
        "special"
    );
    let mut asks = image_run();
    asks.network = Some(NetworkName::parse("special").unwrap());
    assert_eq!(
        network_of(&asks, Some(&open), &policy()).unwrap().as_str(),
        "special"
    );
    assert!(network_of(&asks, None, &policy()).is_err());
}

#[test]
fn timeout_of_defaults_and_caps() {
    let open = open_profile();
    let mut r = image_run();
    assert_eq!(timeout_of(&r, None, &policy()), Duration::from_secs(1800));
    assert_eq!(
        timeout_of(&r, Some(&open), &policy()),
        Duration::from_secs(42)
    );
    r.timeout_seconds = Some(0);
    assert_eq!(
        timeout_of(&r, Some(&open), &policy()),
        Duration::from_secs(42)
    );
    r.timeout_seconds = Some(u64::MAX);
    assert_eq!(timeout_of(&r, None, &policy()), Duration::from_secs(3600));
}

#[test]
fn check_stdin_and_check_labels_bound_the_text() {
    let mut r = image_run();
    r.stdin = Some("x".repeat(limits::MAX_STDIN_BYTES));
    assert!(check_stdin(&r).is_ok());
    r.stdin = Some("x".repeat(limits::MAX_STDIN_BYTES + 1));
    assert!(check_stdin(&r).is_err());
    let mut r = image_run();
    r.labels.insert("ok.key-1_x".into(), "v".into());
    assert!(check_labels(&r).is_ok());
    r.labels
        .insert("k".repeat(limits::MAX_LABEL_KEY_BYTES + 1), "v".into());
    assert!(check_labels(&r).is_err());
    let mut r = image_run();
    r.labels.insert("é".into(), "v".into());
    assert!(check_labels(&r).is_err());
}

#[test]
fn live_output_is_carried_only_when_asked() {
    assert!(!run(&image_run()).unwrap().stream_output);
    let asked = RunRequest {
        stream_output: true,
        ..image_run()
    };
    assert!(run(&asked).unwrap().stream_output);
}
