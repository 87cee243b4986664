//! Codex runs that do not break each other (docs/protocol.md §6, v3), on the real
//! engine with the fake Codex CLI of `bus-test-codex:local`
//! (`scripts/fake-codex.sh`: login refresh under the OAuth server's lock,
//! a state database held locked for the run, sessions under `sessions/`).
//!
//! Each mode of the home runs many fake Codex runs at once (a barrier in
//! the shared workspace makes them overlap for sure) and counts what
//! failed: the read-only home strands the login (`refresh_token_reused`),
//! the shared writable home locks the state database ("database is
//! locked"), and per-run homes break neither while the host's `auth.json`
//! ends up holding the newest token.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::spec::SessionKey;
use bus_docker_domain::{Operation, OwnerId, SessionName};
use bus_integration_docker::local::LocalBus;
use common::{
    code, docker_settings, eventually, require_engine, spawn_worker, unique, Caller, WAIT,
};
use serde_json::{json, Value};

/// Held by the tests that keep sessions: a worker's sweep removes expired
/// sessions engine-wide (any worker may, as with tombstones), so the
/// retention test's short retention would sweep the other test's.
static SESSIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How a test configures the Codex home.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    ReadOnly,
    SharedWritable,
    PerRun,
}

fn codex_image() -> String {
    std::env::var("BUS_TEST_CODEX_IMAGE").unwrap_or_else(|_| "bus-test-codex:local".into())
}

/// The engine, with a codex test image that has the fake Codex CLI (an
/// image built before it was added would make every run fail for a
/// reason that is not the test's).
async fn require_fake_codex() -> bollard::Docker {
    let docker = require_engine().await;
    let out = std::process::Command::new("docker")
        .args(["run", "--rm", "--network", "none", &codex_image()])
        .args([
            "sh",
            "-c",
            "test -x /bin/codex && test -x /bin/flock && echo fake-codex",
        ])
        .output()
        .expect("the docker CLI runs (scripts/docker-engine.sh ensure installs it)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "fake-codex",
        "{} has no /bin/codex or /bin/flock: rebuild it with scripts/build-test-images.sh",
        codex_image()
    );
    docker
}

/// A configured Codex home as an operator has one: logged in (rt-0),
/// configured, and holding the host's own state, logs and sessions.
struct Host {
    _root: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
}

fn host() -> Host {
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("codex-home");
    let workspace = root.path().join("workspace");
    std::fs::create_dir_all(home.join("prompts")).unwrap();
    std::fs::create_dir_all(home.join("sessions")).unwrap();
    std::fs::create_dir_all(home.join("log")).unwrap();
    std::fs::create_dir_all(&workspace).unwrap();
    std::fs::write(
        home.join("auth.json"),
        "{\"tokens\":{\"refresh_token\":\"rt-0\"}}\n",
    )
    .unwrap();
    std::fs::write(home.join("config.toml"), "model = \"o-test\"\n").unwrap();
    std::fs::write(home.join("AGENTS.md"), "be brief\n").unwrap();
    std::fs::write(home.join("prompts/review.md"), "review it\n").unwrap();
    std::fs::write(
        home.join("sessions/host-session.jsonl"),
        "{\"turn\":\"host\"}\n",
    )
    .unwrap();
    std::fs::write(home.join("log/codex-tui.log"), "host log\n").unwrap();
    std::fs::write(home.join("state_5.sqlite"), "host state\n").unwrap();
    Host {
        _root: root,
        home,
        workspace,
    }
}

fn codex_config(host: &Host, mode: Mode, extra: &str) -> String {
    let home_mode = match mode {
        Mode::ReadOnly => "",
        Mode::SharedWritable => "home_writable = true\n",
        Mode::PerRun => "home_per_run = true\n",
    };
    format!(
        "max_concurrent_runs = 24\n{extra}[codex]\nimage = \"{}\"\nhome_host_path = \"{}\"\nworkspace_host_path = \"{}\"\npull_policy = \"never\"\n{home_mode}",
        codex_image(),
        host.home.display(),
        host.workspace.display(),
    )
}

fn refresh_token(home: &Path) -> String {
    std::fs::read_to_string(home.join("auth.json")).unwrap()
}

/// What `n` fake Codex runs started together reported.
#[derive(Debug, Default)]
struct Tally {
    failed: usize,
    reused: usize,
    locked: usize,
    stranded: usize,
}

/// Start `n` fake Codex runs at once (each waits at a barrier for all the
/// others), and count their failures by kind.
async fn concurrent_runs(caller: &Caller, n: usize, barrier: &str) -> Tally {
    let mut waiter = caller.waiter(Operation::Run).await;
    let sent = caller
        .publish_batch(Operation::Run, 0..n, |i| {
            json!({
                "profile": "codex",
                "command": ["codex", "exec", format!("turn {i}")],
                "env": {
                    "FAKE_CODEX_BARRIER": format!("/workspace/{barrier}:{n}"),
                    "FAKE_CODEX_BARRIER_TIMEOUT": "150",
                },
                "timeout_seconds": 240,
            })
        })
        .await;
    let mut tally = Tally::default();
    // Answers come in any order; every run is answered within 300 s.
    let seen = common::collect(
        &mut waiter,
        n,
        Duration::from_secs(1),
        Duration::from_secs(300),
    )
    .await;
    for r in common::each_answered_once(&seen, &sent) {
        assert!(
            r["status"] == "succeeded" || r["status"] == "failed",
            "a run the worker could not run: {r}"
        );
        let stderr = r["stderr"].as_str().unwrap_or_default();
        if r["exit_code"] != 0 {
            tally.failed += 1;
        }
        tally.reused += usize::from(stderr.contains("refresh_token_reused:"));
        tally.locked += usize::from(stderr.contains("database is locked"));
        tally.stranded += usize::from(stderr.contains("could not save the refreshed login"));
        assert!(
            !stderr.contains("barrier:"),
            "the runs did not overlap as the test needs: {r}"
        );
    }
    tally
}

/// The two failures of today's modes, reproduced with 8 concurrent runs
/// each: a read-only home strands the login, a shared writable one locks
/// the state database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_and_shared_writable_homes_break_concurrent_runs() {
    require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();

    let ro = host();
    let runner = unique("codex-ro");
    let s = docker_settings(&runner, &codex_config(&ro, Mode::ReadOnly, ""));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let tally = concurrent_runs(&caller, 8, "ro").await;
    eprintln!("read-only home, 8 concurrent runs: {tally:?}");
    worker.stop().await.unwrap();
    assert_eq!(tally.failed, 8, "{tally:?}");
    assert_eq!(
        tally.stranded, 1,
        "one run refreshed and could not save it: {tally:?}"
    );
    assert_eq!(
        tally.reused, 7,
        "every other run met a spent token: {tally:?}"
    );
    assert!(
        refresh_token(&ro.home).contains("rt-0"),
        "the host's login is the spent token"
    );

    let shared = host();
    let runner = unique("codex-rw");
    let s = docker_settings(&runner, &codex_config(&shared, Mode::SharedWritable, ""));
    let worker = spawn_worker(&bus, &s, "w2").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let tally = concurrent_runs(&caller, 8, "rw").await;
    eprintln!("shared writable home, 8 concurrent runs: {tally:?}");
    worker.stop().await.unwrap();
    assert_eq!(
        tally.locked, 7,
        "one run holds the state database: {tally:?}"
    );
    assert_eq!(tally.failed, 7, "{tally:?}");
}

/// Per-run homes: 20 concurrent runs, no failure, and the host's login
/// holds the newest token (every run refreshed it in place, in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_run_homes_let_twenty_concurrent_runs_share_one_login() {
    require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    let runner = unique("codex-per-run");
    let s = docker_settings(&runner, &codex_config(&h, Mode::PerRun, ""));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let tally = concurrent_runs(&caller, 20, "per-run").await;
    eprintln!("per-run homes, 20 concurrent runs: {tally:?}");
    worker.stop().await.unwrap();
    assert_eq!(tally.failed, 0, "{tally:?}");
    assert_eq!(
        refresh_token(&h.home).trim(),
        "{\"tokens\":{\"refresh_token\":\"rt-20\"}}",
        "the host's auth.json holds the newest token"
    );
    // Nothing of the runs reached the host's home but the login.
    assert_eq!(
        std::fs::read_to_string(h.home.join("state_5.sqlite")).unwrap(),
        "host state\n"
    );
    let sessions: Vec<_> = std::fs::read_dir(h.home.join("sessions"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        sessions,
        vec![std::ffi::OsString::from("host-session.jsonl")]
    );
}

/// What a per-run home holds: the configured home's configuration, its
/// login (shared, read-write), and nothing of its state, logs or sessions;
/// what a run writes there stays there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_run_home_is_seeded_with_configuration_only() {
    let docker = require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    let runner = unique("codex-seed");
    let s = docker_settings(&runner, &codex_config(&h, Mode::PerRun, ""));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let script = "cd /root/.codex && find . | sort && cat config.toml AGENTS.md prompts/review.md \
                  && echo mine > config.toml && echo run-state > state_5.sqlite \
                  && echo '{\"tokens\":{\"refresh_token\":\"rt-7\"}}' > auth.json && echo wrote";
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        r["stdout"],
        ".\n./AGENTS.md\n./auth.json\n./config.toml\n./prompts\n./prompts/review.md\n\
         model = \"o-test\"\nbe brief\nreview it\nwrote\n",
        "{r}"
    );
    assert!(r.get("session").is_none(), "no session asked: {r}");
    // The run's own writes stayed in its home; the login is shared.
    assert_eq!(
        std::fs::read_to_string(h.home.join("config.toml")).unwrap(),
        "model = \"o-test\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(h.home.join("state_5.sqlite")).unwrap(),
        "host state\n"
    );
    assert!(refresh_token(&h.home).contains("rt-7"));
    // The home goes with the run's container: no volume of it is left.
    let label = format!("bus.run-id={}", r["run_id"].as_str().unwrap());
    eventually("the run's home is removed with it", WAIT, || {
        let (docker, label) = (docker.clone(), label.clone());
        async move {
            let volumes = docker
                .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                    filters: Some([("label".to_owned(), vec![label])].into()),
                }))
                .await
                .unwrap()
                .volumes
                .unwrap_or_default();
            volumes.is_empty().then_some(())
        }
    })
    .await;
    worker.stop().await.unwrap();
}

/// Remove the session volumes (and markers) of `owner`: the test's own.
async fn remove_sessions_of(docker: &bollard::Docker, owner: &str) {
    let listed = docker
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(
                [(
                    "label".to_owned(),
                    vec![
                        "bus.codex-session".to_owned(),
                        format!("bus.owner-identity-id={owner}"),
                    ],
                )]
                .into(),
            ),
        }))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    for v in listed {
        let _ = docker
            .remove_volume(
                &v.name,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
    }
}

fn turn(owner: &str, session: &str, args: &[&str]) -> Value {
    let mut command = vec!["codex", "exec"];
    command.extend(args);
    json!({
        "profile": "codex",
        "owner_identity_id": owner,
        "session": session,
        "command": command,
        "env": {"FAKE_CODEX_SESSION_ID": "rollout-1"},
    })
}

/// A second turn of the same owner and session finds the first turn's
/// session; another owner naming the same session, or the same owner
/// another session, does not. The response echoes the session, and
/// `runner.status` counts the session volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_resume_for_their_owner_and_session_only() {
    let _sessions = SESSIONS.lock().await;
    let docker = require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    let runner = unique("codex-sessions");
    let s = docker_settings(&runner, &codex_config(&h, Mode::PerRun, ""));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let alice = unique("alice");
    let mallory = unique("mallory");

    let first = caller
        .call(Operation::Run, turn(&alice, "task-1", &["turn one"]))
        .await;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(first["session"], "task-1", "echoed: {first}");
    assert_eq!(first["stdout"], "session rollout-1\n", "{first}");

    let second = caller
        .call(
            Operation::Run,
            turn(&alice, "task-1", &["resume", "rollout-1", "turn two"]),
        )
        .await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["stdout"], "resumed rollout-1:\n{\"turn\":\"turn one\"}\nsession rollout-1\n",
        "{second}"
    );

    for (owner, session) in [(&mallory, "task-1"), (&alice, "task-2")] {
        let other = caller
            .call(
                Operation::Run,
                turn(owner, session, &["resume", "rollout-1", "peek"]),
            )
            .await;
        assert_eq!(other["status"], "failed", "{owner}/{session}: {other}");
        assert!(
            other["stderr"]
                .as_str()
                .unwrap()
                .contains("session rollout-1 not found"),
            "{other}"
        );
    }

    // Three sessions now exist on the engine (alice's two, mallory's), with
    // names that say nothing of owner or session.
    let status = caller.call(Operation::RunnerStatus, json!({})).await;
    let engines = status["status"]["details"]["engines"].as_array().unwrap();
    let volumes = engines[0]["codex_sessions"]["volumes"].as_u64().unwrap();
    assert!(volumes >= 3, "{status}");
    let names: Vec<String> = docker
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(
                [(
                    "label".to_owned(),
                    vec![format!("bus.owner-identity-id={alice}")],
                )]
                .into(),
            ),
        }))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(names.len(), 4, "two sessions and their markers: {names:?}");
    assert!(names.iter().all(|n| n.starts_with("bus-codex-session-")
        && !n.contains("task")
        && !n.contains(&alice)));

    // A session where nothing keeps one is refused, naming the field.
    for bad in [
        json!({"profile": "codex", "session": "a/b", "command": ["true"]}),
        json!({"profile": "codex", "session": "", "command": ["true"]}),
        json!({"image": codex_image(), "session": "s", "command": ["true"]}),
    ] {
        let r = caller.call(Operation::Run, bad.clone()).await;
        assert_eq!(code(&r), "bad_request", "{bad}: {r}");
        assert!(r.to_string().contains("session"), "{r}");
    }
    worker.stop().await.unwrap();
    remove_sessions_of(&docker, &alice).await;
    remove_sessions_of(&docker, &mallory).await;
}

/// A session unused past `session_retention` is removed by the sweep; one
/// in use by a running run is kept however old its last use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_unused_past_their_retention_are_removed() {
    let _sessions = SESSIONS.lock().await;
    let docker = require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    let runner = unique("codex-retention");
    let config = codex_config(&h, Mode::PerRun, "").replace(
        "pull_policy = \"never\"\n",
        "pull_policy = \"never\"\nsession_retention = \"2s\"\n",
    );
    let s = docker_settings(&runner, &config);
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let owner = unique("owner");
    let volume = |session: &str| {
        bus_docker_engine::codex_home::session_volume(&SessionKey {
            owner: OwnerId::parse(&owner).unwrap(),
            name: SessionName::parse(session).unwrap(),
        })
    };
    let exists = |docker: bollard::Docker, name: String| async move {
        docker.inspect_volume(&name).await.is_ok()
    };

    // A run that outlives the retention holds its session open until the
    // test releases it.
    let mut runs = caller.waiter(Operation::Run).await;
    let long = caller
        .publish(
            Operation::Run,
            json!({
                "profile": "codex",
                "owner_identity_id": owner,
                "session": "long",
                "command": ["sh", "-c", "echo started > /workspace/long; while [ ! -e /workspace/release ]; do sleep 0.1; done; echo done"],
            }),
        )
        .await;
    eventually("the long run started", Duration::from_secs(60), || {
        let marker = h.workspace.join("long");
        async move { marker.exists().then_some(()) }
    })
    .await;
    // A session used after it, by a short run, expires and is removed:
    // the sweep has run past the long session's retention too.
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "owner_identity_id": owner, "session": "short", "command": ["true"]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(exists(docker.clone(), volume("long")).await);
    eventually("the short session expires", Duration::from_secs(30), || {
        let (docker, name) = (docker.clone(), volume("short"));
        async move { (!exists(docker, name).await).then_some(()) }
    })
    .await;
    assert!(
        exists(docker.clone(), volume("long")).await,
        "a session in use is kept past its retention"
    );
    std::fs::write(h.workspace.join("release"), "").unwrap();
    let r = runs.wait(&long, Duration::from_secs(60)).await.unwrap();
    assert_eq!(r["status"], "succeeded", "{r}");
    // Unused now: removed within a few sweeps, with its marker (the sweep
    // removes the marker right after the session).
    eventually("the long session expires", Duration::from_secs(30), || {
        let (docker, name) = (docker.clone(), volume("long"));
        let mark = format!("{name}.used");
        async move {
            (!exists(docker.clone(), name).await && !exists(docker, mark).await).then_some(())
        }
    })
    .await;
    worker.stop().await.unwrap();
    remove_sessions_of(&docker, &owner).await;
}

/// `--codex-home-per-run` in every form: the env var's booleans, the flag
/// (beating the env), the config key; it needs a home and excludes the
/// shared writable one, and `session_retention` defaults to 7 days.
#[test]
fn per_run_homes_are_configured_by_flag_env_or_file() {
    use bus_integration_docker::config::{load, OverrideValue};

    // The env var, through the binary (clap reads it in that process). No
    // home is configured, so a true value fails naming the key; a false one
    // passes that check and fails on the zero retention instead.
    let run = |value: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"))
            .args(["--provider", "static", "--events-url", "http://127.0.0.1:9"])
            .args([
                "--container-codex-image",
                "codex:1",
                "--codex-session-retention",
                "0s",
            ])
            .args(args)
            .env("BUS_API_TOKEN", "x.y.z")
            .env("BUS_DOCKER_CODEX_HOME_PER_RUN", value)
            .env_remove("BUS_DOCKER_CONFIG")
            .env_remove("BUS_DOCKER_CODEX_HOME_HOST")
            .env_remove("BUS_DOCKER_CODEX_HOME_WRITABLE")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for truthy in ["1", "true", "yes", "on"] {
        let (code, stderr) = run(truthy, &[]);
        assert_eq!(code, Some(2), "{truthy}: {stderr}");
        assert!(stderr.contains("codex.home_per_run"), "{truthy}: {stderr}");
    }
    for falsy in ["0", "false", "no", "off"] {
        let (code, stderr) = run(falsy, &[]);
        assert_eq!(code, Some(2), "{falsy}: {stderr}");
        assert!(
            !stderr.contains("codex.home_per_run") && stderr.contains("codex.session_retention"),
            "{falsy}: {stderr}"
        );
    }
    let (code, stderr) = run("maybe", &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("maybe"), "{stderr}");
    // The flag beats the env var.
    let (_, stderr) = run("true", &["--codex-home-per-run=false"]);
    assert!(!stderr.contains("codex.home_per_run"), "{stderr}");

    // The config key, with a home: the codex profile gets a per-run home
    // and the worker a session retention.
    let h = host();
    let file = |text: &str| {
        let path = h.workspace.join("c.toml");
        std::fs::write(&path, text).unwrap();
        load(Some(&path), &[]).unwrap().settings()
    };
    let base = format!(
        "[codex]\nimage = \"codex:1\"\nhome_host_path = \"{}\"\n",
        h.home.display()
    );
    let settings = file(&format!("{base}home_per_run = true\n")).unwrap();
    let codex = settings.worker.profiles.iter().next().unwrap();
    assert_eq!(codex.per_run_home.as_deref(), Some(h.home.as_path()));
    assert_eq!(
        settings.worker.session_retention,
        Some(Duration::from_secs(7 * 24 * 3600))
    );
    let settings = file(&format!(
        "{base}home_per_run = \"on\"\nsession_retention = \"36h\"\n"
    ))
    .unwrap();
    assert_eq!(
        settings.worker.session_retention,
        Some(Duration::from_secs(36 * 3600))
    );
    // Default: the read-only home as before, and nothing keeps sessions.
    let settings = file(&base).unwrap();
    assert!(settings
        .worker
        .profiles
        .iter()
        .next()
        .unwrap()
        .per_run_home
        .is_none());
    assert_eq!(settings.worker.session_retention, None);
    // Per run excludes the shared writable home; the flag form too.
    let err = file(&format!(
        "{base}home_per_run = true\nhome_writable = true\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("codex.home_per_run"), "{err}");
    let flags = vec![
        ("codex.home_per_run".to_owned(), OverrideValue::Bool(true)),
        (
            "codex.image".to_owned(),
            OverrideValue::Text("codex:1".into()),
        ),
    ];
    let err = load(None, &flags)
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("codex.home_per_run") && err.contains("home_host_path"),
        "{err}"
    );
}

/// A per-run home needs a logged-in configured home: without its
/// `auth.json` on the engine's host the run is answered an error naming
/// the file (the engine refuses the bind), and nothing of it is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_run_home_without_a_login_fails_naming_the_file() {
    let docker = require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    std::fs::remove_file(h.home.join("auth.json")).unwrap();
    let runner = unique("codex-nologin");
    let s = docker_settings(&runner, &codex_config(&h, Mode::PerRun, ""));
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["true"]}),
        )
        .await;
    assert_eq!(r["status"], "error", "{r}");
    assert!(!code(&r).is_empty(), "{r}");
    assert!(r.to_string().contains("auth.json"), "{r}");
    let left = common::containers_of(&docker, &runner).await;
    assert!(left.is_empty(), "{left:?}");
    worker.stop().await.unwrap();
}

/// A worker that cannot read the configured home (in the Bus compose stack
/// it runs in a container without it) still gives each run its seeded
/// home: the seeding happens on the engine's side. The worker process runs
/// in a mount namespace of its own where the home's path is an empty
/// tmpfs; the engine sees the real home.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_comes_from_the_engines_view_of_the_home_not_the_workers() {
    let docker = require_fake_codex().await;
    let bus = LocalBus::start().await.unwrap();
    let h = host();
    let runner = unique("codex-blind");
    let s = docker_settings(&runner, "");
    let prefix = s.worker.prefix.as_str().to_owned();
    let log = h.workspace.join("worker.log");
    let base = common::worker_process(&bus, &runner, &prefix, &log);
    let worker_bin = env!("CARGO_BIN_EXE_bus-integration-docker");
    let mut command = tokio::process::Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            // Hide the home from the worker, show that it is hidden, run it.
            "mount -t tmpfs -o size=1m bus-blind \"$BLIND\" && test ! -e \"$BLIND/config.toml\" \
         && echo 'home hidden from the worker' >&2 && exec \"$WORKER\"",
        );
    for (key, value) in base.as_std().get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    let log_file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut child = command
        .env("BLIND", &h.home)
        .env("WORKER", worker_bin)
        .env("DOCKER_CONTAINER_CODEX_IMAGE", codex_image())
        .env("BUS_DOCKER_CODEX_HOME_HOST", &h.home)
        .env("BUS_DOCKER_CODEX_HOME_PER_RUN", "true")
        .env("BUS_DOCKER_CODEX_WORKSPACE_HOST", &h.workspace)
        .env("BUS_DOCKER__CODEX__PULL_POLICY", "never")
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("unshare starts (util-linux)");
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["sh", "-c", "cat /root/.codex/config.toml /root/.codex/AGENTS.md && codex exec hello"]}),
        )
        .await;
    let worker_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        worker_log.contains("home hidden from the worker"),
        "{worker_log}"
    );
    assert_eq!(r["status"], "succeeded", "{r}\n{worker_log}");
    assert!(
        r["stdout"]
            .as_str()
            .unwrap()
            .starts_with("model = \"o-test\"\nbe brief\nsession "),
        "{r}"
    );
    // The login the engine sees was refreshed in place.
    assert!(refresh_token(&h.home).contains("rt-1"));
    let left = common::no_containers_left(&docker, &runner).await;
    assert!(left.is_empty(), "{left:?}");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
