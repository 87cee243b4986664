//! A corpus of malformed and hostile requests against a docker worker:
//! each gets its documented error (or is skipped with a log line), the
//! worker never panics, and no container starts for any of them.

use crate::common;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{docker_settings, require_engine, spawn_worker, test_image, unique, Caller};
use serde_json::{json, Value};

/// One hostile request: the operation, its payload, the expected code.
type Case = (Operation, Value, &'static str);

fn big_map(n: usize, value: &str) -> Value {
    Value::Object((0..n).map(|i| (format!("K{i}"), json!(value))).collect())
}

#[tokio::test]
async fn hostile_requests_get_documented_errors_and_start_nothing() {
    let docker = require_engine().await;
    let root = tempfile::tempdir().unwrap();
    let allowed = root.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("escape")).unwrap();
    let allowed_s = allowed.display().to_string();
    let socket_dir = SocketLinkRoot::new();

    let since = common::unix_now() - 1;
    let runner = unique("hostile");
    let s = docker_settings(
        &runner,
        &format!(
            "[policy]\nallowed_mount_roots = [\"{allowed_s}\", \"{}\"]\n",
            socket_dir.root.display()
        ),
    );
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let image = test_image();
    let run = move |extra: Value| {
        let mut base = json!({"image": image, "command": ["true"]});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    use Operation::Run;
    let mut cases = hostile_cases(&run, &allowed_s);
    let new_cases = new_hostile_cases(&run, &allowed_s, &socket_dir.link_s);
    assert!(
        new_cases.len() >= 60,
        "new corpus has {} cases",
        new_cases.len()
    );
    cases.extend(new_cases);
    assert!(cases.len() >= 110, "corpus has {} cases", cases.len());
    let mut by_code = std::collections::BTreeMap::new();
    for (_, _, code) in &cases {
        *by_code.entry(*code).or_insert(0) += 1;
    }
    println!(
        "HOSTILE: {} requests, expected codes {by_code:?}",
        cases.len()
    );
    for (op, payload, expected) in &cases {
        let r = caller.call(*op, payload.clone()).await;
        let shown: String = payload.to_string().chars().take(120).collect();
        assert_eq!(r["error"]["code"], *expected, "{op} {shown} -> {r}");
        assert!(!r["error"]["message"].as_str().unwrap_or("").is_empty());
    }

    assert_eq!(
        common::creates_since(&docker, &s.worker.runner_name, since).await,
        0,
        "no container was created for an invalid request"
    );

    // Envelopes that cannot be answered are skipped with a log line; the
    // worker goes on answering.
    caller
        .publish_as(Run, "bad\u{1}correlation", run(json!({})))
        .await;
    caller
        .publish_as(Run, &"c".repeat(300), run(json!({})))
        .await;
    let ok = caller
        .call(Run, run(json!({"command": ["sh", "-c", "echo alive"]})))
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["stdout"], "alive\n");

    assert!(!worker.handle.is_finished(), "the worker is still running");
    let left = common::no_containers_left(&docker, &s.worker.runner_name).await;
    assert!(left.is_empty(), "no container may remain: {left:?}");
    assert_eq!(
        common::creates_since(&docker, &s.worker.runner_name, since).await,
        1,
        "only the valid run created one"
    );
    worker.stop().await.unwrap();
}

/// The corpus the worker has answered since its first release.
fn hostile_cases(
    run: &dyn Fn(Value) -> Value,
    allowed_s: &str,
) -> Vec<(Operation, Value, &'static str)> {
    use Operation::{Delete, Input, Run, Status};
    vec![
        (Run, json!([1, 2]), "bad_request"),
        (Run, json!("run please"), "bad_request"),
        (Run, json!(42), "bad_request"),
        (Run, run(json!({"command": "true"})), "bad_request"),
        (Run, run(json!({"command": [1, 2]})), "bad_request"),
        (Run, run(json!({"command": []})), "bad_request"),
        (Run, run(json!({"command": ["a\u{0}b"]})), "bad_request"),
        (Run, run(json!({"command": vec!["x"; 2000]})), "bad_request"),
        (
            Run,
            run(json!({"command": ["x".repeat(200 * 1024)]})),
            "bad_request",
        ),
        (Run, run(json!({"env": ["A=1"]})), "bad_request"),
        (Run, run(json!({"env": {"A": 1}})), "bad_request"),
        (Run, run(json!({"env": {"1X": "v"}})), "bad_request"),
        (Run, run(json!({"env": {"A-B": "v"}})), "bad_request"),
        (Run, run(json!({"env": {"": "v"}})), "bad_request"),
        (
            Run,
            run(json!({"env": {"SSH_AUTH_SOCK": "/tmp/x"}})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"env": {"GIT_SSH_COMMAND": "sh -c evil"}})),
            "forbidden",
        ),
        (Run, run(json!({"env": big_map(300, "v")})), "bad_request"),
        (
            Run,
            run(json!({"env": {"BIG": "v".repeat(40 * 1024)}})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "/etc", "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": format!("{allowed_s}/../../etc"), "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": format!("{allowed_s}/escape"), "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "/var/run/docker.sock", "target": "/x"}]})),
            "forbidden",
        ),
        (
            Run,
            run(
                json!({"mounts": [{"source": "/run/docker.sock", "target": "/var/run/docker.sock"}]}),
            ),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": "relative/dir", "target": "/x"}]})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s, "target": "relative"}]})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s, "target": "/proc"}]})),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": [{"source": allowed_s}]})),
            "bad_request",
        ),
        (
            Run,
            run(
                json!({"mounts": [{"source": format!("{allowed_s}/nonexistent"), "target": "/x"}]}),
            ),
            "forbidden",
        ),
        (
            Run,
            run(json!({"mounts": vec![json!({"source": allowed_s, "target": "/x"}); 40]})),
            "bad_request",
        ),
        (Run, run(json!({"mounts": "all"})), "bad_request"),
        (Run, run(json!({"network": "host"})), "forbidden"),
        (Run, run(json!({"network": "bad name!"})), "bad_request"),
        (Run, run(json!({"image": "evil image"})), "bad_request"),
        (Run, run(json!({"image": "--privileged"})), "bad_request"),
        (Run, run(json!({"image": "a".repeat(600)})), "bad_request"),
        (Run, run(json!({"image": 7})), "bad_request"),
        (
            Run,
            json!({"profile": "unknown", "command": ["true"]}),
            "bad_request",
        ),
        (
            Run,
            json!({"profile": "../codex", "command": ["true"]}),
            "bad_request",
        ),
        (Run, json!({"command": ["true"]}), "bad_request"),
        (Run, run(json!({"run_id": "a/b"})), "bad_request"),
        (Run, run(json!({"run_id": "line\nbreak"})), "bad_request"),
        (Run, run(json!({"run_id": "r".repeat(200)})), "bad_request"),
        (Run, run(json!({"timeout_seconds": -5})), "bad_request"),
        (Run, run(json!({"timeout_seconds": "10"})), "bad_request"),
        (Run, run(json!({"timeout_seconds": 1.5})), "bad_request"),
        (Run, run(json!({"timeout_seconds": 1e300})), "bad_request"),
        (Run, run(json!({"interactive": "yes"})), "bad_request"),
        (
            Run,
            run(json!({"stdin": "x".repeat(2 * 1024 * 1024)})),
            "bad_request",
        ),
        (Run, run(json!({"stdin": 5})), "bad_request"),
        (Run, run(json!({"labels": {"bad key": "v"}})), "bad_request"),
        (
            Run,
            run(json!({"labels": {"k": "v".repeat(2048)}})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"labels": big_map(100, "v")})),
            "bad_request",
        ),
        (Run, run(json!({"workdir": "relative"})), "bad_request"),
        (Run, run(json!({"workdir": "/a/../b"})), "bad_request"),
        (
            Run,
            run(json!({"owner_identity_id": "evil\u{7}owner"})),
            "bad_request",
        ),
        (
            Run,
            run(json!({"command": "x", "args": ["y"]})),
            "bad_request",
        ),
        (Input, json!({"data": "x"}), "bad_request"),
        (Input, json!({"run_id": "r1", "data": 5}), "bad_request"),
        (Input, json!({"run_id": "r1", "eof": "true"}), "bad_request"),
        (
            Input,
            json!({"run_id": "no-such-run", "data": "x"}),
            "not_found",
        ),
        (Delete, json!({}), "bad_request"),
        (Delete, json!({"run_id": "../../x"}), "bad_request"),
        (Delete, json!({"run_id": "no-such-run"}), "not_found"),
        (Status, json!({"run_id": 1}), "bad_request"),
        (Status, json!({"owner_identity_id": ["a"]}), "bad_request"),
    ]
}

/// An allowed mount root next to the Docker socket (so on its filesystem)
/// holding a hard link to it under an innocent name; removed on drop.
struct SocketLinkRoot {
    root: std::path::PathBuf,
    link_s: String,
}

impl SocketLinkRoot {
    fn new() -> Self {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let socket = host
            .strip_prefix("unix://")
            .unwrap_or("/var/run/docker.sock")
            .to_owned();
        let socket = std::fs::canonicalize(socket).expect("the engine socket resolves");
        let root = socket
            .parent()
            .expect("the socket has a directory")
            .join(unique("bus-hostile-root"));
        std::fs::create_dir(&root).unwrap();
        let link = root.join("innocent-data");
        std::fs::hard_link(&socket, &link).expect("hard link to the engine socket");
        Self {
            link_s: link.display().to_string(),
            root,
        }
    }
}

impl Drop for SocketLinkRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Cases added for the trust issue: mount target spellings, duplicate
/// targets, the socket under another name, privilege fields in many
/// spellings, Docker's image grammar, empty executables, shapes that are
/// not objects, env/label abuse, control characters and unicode tricks.
fn new_hostile_cases(run: &dyn Fn(Value) -> Value, allowed_s: &str, link_s: &str) -> Vec<Case> {
    let mut cases = mount_cases(run, allowed_s, link_s);
    cases.extend(privilege_cases(run, allowed_s));
    cases.extend(image_cases(run));
    cases.extend(shape_and_text_cases(run, allowed_s));
    cases
}

/// Mount targets in many spellings, duplicate targets, the socket under
/// another name, oversized and control-character paths.
fn mount_cases(run: &dyn Fn(Value) -> Value, allowed_s: &str, link_s: &str) -> Vec<Case> {
    use Operation::Run;
    let mount_on = |target: &str| run(json!({"mounts": [{"source": allowed_s, "target": target}]}));
    let twice = |a: &str, b: &str| {
        run(json!({"mounts": [
            {"source": allowed_s, "target": a},
            {"source": allowed_s, "target": b, "read_only": true}
        ]}))
    };
    let mut cases: Vec<Case> = Vec::new();
    for target in [
        "//sys",
        "/sys/",
        "/./proc",
        "/dev/../proc",
        "/proc/sys/kernel",
        "/sys/fs/cgroup",
        "///proc//",
        "/",
        "//",
        "/..",
        "/dev/shm",
        "/x/../../dev",
        "/proc/1/root",
        "/sys/kernel/security",
        "/./dev/./pts",
    ] {
        cases.push((Run, mount_on(target), "forbidden"));
    }
    for (a, b) in [
        ("/w", "//w"),
        ("/w", "/w/"),
        ("/w", "/./w"),
        ("/a/../w", "/w"),
        ("/w//x", "/w/x/."),
    ] {
        cases.push((Run, twice(a, b), "bad_request"));
    }
    let mount_source = |source: &str| run(json!({"mounts": [{"source": source, "target": "/x"}]}));
    cases.push((Run, mount_source(link_s), "forbidden"));
    cases.push((Run, mount_source("/run"), "forbidden"));
    cases.push((Run, mount_source("/var/run/"), "forbidden"));
    cases.push((
        Run,
        mount_source(&format!("/{}", "a".repeat(5000))),
        "bad_request",
    ));
    cases.push((
        Run,
        mount_on(&format!("/{}", "t".repeat(5000))),
        "bad_request",
    ));
    cases.push((Run, mount_on("/a\u{1}b"), "bad_request"));
    cases
}

/// Privilege fields in many spellings, whatever their value.
fn privilege_cases(run: &dyn Fn(Value) -> Value, allowed_s: &str) -> Vec<Case> {
    use Operation::Run;
    let mut cases: Vec<Case> = Vec::new();
    for (key, value) in [
        ("privileged", json!(true)),
        ("privileged", json!(false)),
        ("privileged", Value::Null),
        ("cap_add", json!(["SYS_ADMIN"])),
        ("capAdd", json!(["ALL"])),
        ("CapAdd", json!([])),
        ("CAP_ADD", json!(["NET_ADMIN"])),
        ("cap-drop", json!([])),
        (
            "HostConfig",
            json!({"Privileged": true, "Binds": ["/:/host"]}),
        ),
        ("host_config", json!({})),
        ("pid_mode", json!("host")),
        ("PidMode", json!("host")),
        ("ipc_mode", json!("host")),
        ("uts_mode", json!("host")),
        ("userns_mode", json!("host")),
        ("cgroupns_mode", json!("host")),
        ("cgroup_parent", json!("/")),
        ("network_mode", json!("host")),
        (
            "security_opt",
            json!(["seccomp=unconfined", "apparmor=unconfined"]),
        ),
        ("devices", json!(["/dev/sda:/dev/sda:rwm"])),
        ("device_requests", json!([{"Count": -1}])),
        ("device_cgroup_rules", json!(["a *:* rwm"])),
        ("user", json!("0:0")),
        ("group_add", json!(["docker"])),
        ("sysctls", json!({"kernel.core_pattern": "|/evil"})),
        ("runtime", json!("runc")),
        ("volumes_from", json!(["other"])),
        ("binds", json!(["/:/host"])),
        ("Binds", json!(["/var/run/docker.sock:/s"])),
        ("oom_kill_disable", json!(true)),
        ("pids_limit", json!(-1)),
        ("ulimits", json!([{"Name": "nofile", "Soft": 1, "Hard": 1}])),
        ("isolation", json!("process")),
        ("memory", json!(0)),
        ("tmpfs", json!({"/run": ""})),
        ("port_bindings", json!({"22/tcp": [{"HostPort": "22"}]})),
        ("pid", json!("host")),
    ] {
        cases.push((Run, run(json!({key: value})), "forbidden"));
    }
    cases.push((
        Run,
        run(json!({"mounts": [{"source": allowed_s, "target": "/x", "propagation": "rshared"}]})),
        "forbidden",
    ));
    cases.push((
        Run,
        run(json!({"mounts": [{"source": allowed_s, "target": "/x", "type": "volume"}]})),
        "forbidden",
    ));
    cases
}

/// Image references Docker's grammar refuses.
fn image_cases(run: &dyn Fn(Value) -> Value) -> Vec<Case> {
    use Operation::Run;
    let mut cases: Vec<Case> = Vec::new();
    let digest = "0123456789abcdef".repeat(4);
    for image in [
        "BusyBox".to_owned(),
        "library/Alpine:3".to_owned(),
        "alpine@sha256:abc".to_owned(),
        format!("alpine@sha256:{}", digest.to_uppercase()),
        format!("alpine@md5:{}", &digest[..32]),
        "alpine:-1".to_owned(),
        format!("alpine:{}", "t".repeat(129)),
        "a".repeat(300),
        "a//b".to_owned(),
        "büsybox".to_owned(),
        "busybox\u{200b}".to_owned(),
        "busybox:latest@".to_owned(),
    ] {
        cases.push((Run, run(json!({"image": image})), "bad_request"));
    }
    cases
}

/// Empty executables, shapes that are not objects, env/label abuse,
/// control characters and unicode tricks.
fn shape_and_text_cases(run: &dyn Fn(Value) -> Value, allowed_s: &str) -> Vec<Case> {
    use Operation::Run;
    let mut cases: Vec<Case> = Vec::new();
    cases.push((Run, run(json!({"command": [""]})), "bad_request"));
    cases.push((
        Run,
        run(json!({"command": [" ", "-c", "id"]})),
        "bad_request",
    ));
    cases.push((
        Run,
        run(json!({"command": vec!["x".repeat(120 * 1024); 9]})),
        "bad_request",
    ));
    cases.push((Run, json!([run(json!({}))]), "bad_request"));
    cases.push((Run, json!(true), "bad_request"));
    cases.push((Run, json!({"payload": run(json!({}))}), "bad_request"));
    cases.push((
        Run,
        run(json!({"mounts": [[allowed_s, "/x", false]]})),
        "bad_request",
    ));
    for env in [
        json!({"A=B": "v"}),
        json!({"ÄPFEL": "v"}),
        json!({"A\nB": "v"}),
        json!({"OK": "nul\u{0}"}),
        json!({"K".repeat(300): "v"}),
        json!({"PATH": ["x"]}),
    ] {
        cases.push((Run, run(json!({"env": env})), "bad_request"));
    }
    for labels in [
        json!({"a=b": "v"}),
        json!({"k".repeat(200): "v"}),
        json!({"k": "nul\u{0}"}),
        json!({"bus\u{202e}.x": "v"}),
    ] {
        cases.push((Run, run(json!({"labels": labels})), "bad_request"));
    }
    cases.push((Run, run(json!({"workdir": "/a\nb"})), "bad_request"));
    cases.push((Run, run(json!({"run_id": "rün"})), "bad_request"));
    cases.push((Run, run(json!({"run_id": "ab\u{202e}cd"})), "bad_request"));
    cases.push((Run, run(json!({"network": "nöne"})), "bad_request"));
    cases.push((
        Run,
        json!({"profile": "co\u{0}dex", "command": ["true"]}),
        "bad_request",
    ));
    cases
}

/// Class 7: a command line that is almost the whole event limit once
/// escaped (control bytes cost six bytes each in JSON) comes back as a
/// response under the limit, its echoed args cut and flagged, its output
/// whole.
#[tokio::test]
async fn a_command_line_near_the_event_limit_is_answered_cut_and_flagged() {
    let _docker = require_engine().await;
    let runner = unique("hostile-big");
    let s = docker_settings(&runner, "");
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut command = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        "yes x | head -c 600000".to_owned(),
    ];
    command.extend(std::iter::repeat_n("\u{1}".repeat(85 * 1024), 7));
    let request = json!({"image": test_image(), "command": command});
    assert!(request.to_string().len() > 3_500_000);
    let r = caller.call(Operation::Run, request).await;
    assert_eq!(r["status"], "succeeded", "{}", r["error"]);
    assert_eq!(r["args_truncated"], true);
    assert!(r["args"].as_array().unwrap().len() < command.len());
    assert_eq!(r["stdout_truncated"], false);
    assert_eq!(r["stdout"].as_str().unwrap().len(), 600_000);
    assert!(r.to_string().len() < 4 * 1024 * 1024);
    worker.stop().await.unwrap();
}

/// Issue 16 item 8a: a password in `--events-url` (or `BUS_EVENTS_API_URL`),
/// or in a Docker host, is refused or used, but never printed: not in the
/// error message, not in any log line of the start-up.
#[test]
fn no_credential_of_a_url_reaches_the_output() {
    const SECRET: &str = "S3cretPASS";
    let worker = || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"));
        command
            .env_remove("BUS_EVENTS_API_URL")
            .env_remove("BUS_DOCKER_CONFIG")
            .env_remove("BUS_DOCKER_PROVIDER")
            .env_remove("BUS_DOCKER_DOCKER_HOSTS")
            .env_remove("DOCKER_HOST")
            .env("BUS_API_TOKEN", "x.y.z")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1");
        command
    };
    // What the message shows instead: where, without the credential.
    let cases: Vec<(&str, &str, std::process::Command)> = vec![
        ("a password in --events-url", "http://***@127.0.0.1:9", {
            let mut c = worker();
            c.args([
                "--provider",
                "static",
                "--events-url",
                &format!("http://user:{SECRET}@127.0.0.1:9"),
            ]);
            c
        }),
        (
            "a password in BUS_EVENTS_API_URL",
            "http://***@127.0.0.1:9/local/v1",
            {
                let mut c = worker();
                c.args(["--provider", "static"]).env(
                    "BUS_EVENTS_API_URL",
                    format!("http://bus:{SECRET}@127.0.0.1:9/local/v1"),
                );
                c
            },
        ),
        (
            "a password in an events URL that does not parse",
            "http://***@[::1",
            {
                let mut c = worker();
                c.args([
                    "--provider",
                    "static",
                    "--events-url",
                    &format!("http://user:{SECRET}@[::1"),
                ]);
                c
            },
        ),
        (
            "a password in a Docker host with an unsupported scheme",
            "ftp://nowhere",
            {
                let mut c = worker();
                c.args(["--events-url", "http://127.0.0.1:9"])
                    .env("DOCKER_HOST", format!("ftp://user:{SECRET}@nowhere"));
                c
            },
        ),
    ];
    for (what, shown, mut command) in cases {
        let out = command.output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(2), "{what}: refused: {stderr}");
        assert!(
            stderr.contains(shown),
            "{what}: the message still says where ({shown}): {stderr}"
        );
        assert!(
            !stdout.contains(SECRET) && !stderr.contains(SECRET),
            "{what}: the password was printed: {stdout}{stderr}"
        );
    }
}

/// The engine's finish time of a container (by name); `None` when it is
/// gone.
async fn finished_at(docker: &bollard::Docker, name: &str) -> Option<std::time::SystemTime> {
    let info = docker
        .inspect_container(name.trim_start_matches('/'), None)
        .await
        .ok()?;
    let at = info.state?.finished_at?;
    humantime::parse_rfc3339(&at).ok()
}

/// How long a response may precede its run mark.
const WAIT_MARK: std::time::Duration = std::time::Duration::from_secs(10);

/// Issue 16.6: a runner answers runs and stops for good; a worker with
/// another runner name removes its `.answered` tombstones once their
/// retention (from the finish time on the engine) is over, and touches
/// neither a tombstone still within retention nor the live run it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_of_a_runner_that_never_comes_back_are_removed_by_another() {
    use std::time::{Duration, SystemTime};
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let gone = unique("gone");
    // The runner that goes keeps its tombstones for an hour itself.
    let a = docker_settings(&gone, "run_retention = \"1h\"\n");
    let worker_a = spawn_worker(&bus, &a, "wa").await;
    let caller = Caller::new(&bus, &a.worker.prefix);
    let image = test_image();
    let early = format!("{gone}-early");
    let late = format!("{gone}-late");
    let live = format!("{gone}-live");
    let r = caller
        .call(
            Operation::Run,
            json!({"run_id": early, "image": image, "command": ["true"]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    // docs/protocol.md §9: the container shows the reference the run asked for,
    // and the response's image id is the one it was created from.
    // (It is marked answered right after the response is published.)
    let tomb = format!("bus-run-{early}.answered");
    let info = common::eventually("the early run is marked answered", WAIT_MARK, || {
        let (docker, tomb) = (docker.clone(), tomb.clone());
        async move { docker.inspect_container(&tomb, None).await.ok() }
    })
    .await;
    assert_eq!(info.config.unwrap().image.as_deref(), Some(image.as_str()));
    assert_eq!(info.image.as_deref(), r["image_id"].as_str(), "{r}");
    caller
        .publish(
            Operation::Run,
            json!({"run_id": live, "image": image, "command": ["sleep", "120"]}),
        )
        .await;
    let r = caller
        .call(
            Operation::Run,
            json!({"run_id": late, "image": image, "command": ["sleep", "5"]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    common::wait_running(&caller, &live).await;
    // Stopped for good: the live run is left to the engine (shutdown).
    let _ = worker_a.stop().await;
    let name = |id: &str| format!("bus-run-{id}");
    let early_done = finished_at(&docker, &format!("{}.answered", name(&early)))
        .await
        .expect("the early tombstone");
    let late_done = finished_at(&docker, &format!("{}.answered", name(&late)))
        .await
        .expect("the late tombstone");
    assert!(late_done > early_done + Duration::from_secs(4));

    let retention = Duration::from_secs(8);
    let other = unique("sweeper");
    let b = docker_settings(&other, "run_retention = \"8s\"\n");
    let worker_b = spawn_worker(&bus, &b, "wb").await;
    let present = |tomb: String| {
        let docker = docker.clone();
        async move { finished_at(&docker, &tomb).await.is_some() }
    };
    let early_tomb = format!("{}.answered", name(&early));
    let late_tomb = format!("{}.answered", name(&late));
    common::eventually(
        "the early tombstone is removed",
        Duration::from_secs(30),
        || {
            let present = present(early_tomb.clone());
            async move { (!present.await).then_some(()) }
        },
    )
    .await;
    let removed = SystemTime::now();
    assert!(
        removed >= early_done + retention,
        "removed {:?} before its retention was over",
        (early_done + retention).duration_since(removed)
    );
    if SystemTime::now() < late_done + retention - Duration::from_millis(500) {
        assert!(
            present(late_tomb.clone()).await,
            "still within retention: kept"
        );
    }
    common::eventually(
        "the late tombstone is removed",
        Duration::from_secs(30),
        || {
            let present = present(late_tomb.clone());
            async move { (!present.await).then_some(()) }
        },
    )
    .await;
    assert!(SystemTime::now() >= late_done + retention);
    let left = common::containers_of(&docker, &gone).await;
    assert_eq!(
        left,
        vec![format!("/{}", name(&live))],
        "the live run is untouched"
    );
    let _ = worker_b.stop().await;
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    docker
        .remove_container(&name(&live), Some(opts))
        .await
        .unwrap();
}

/// A process's resident memory now (`VmRSS`) and at its peak (`VmHWM`), in
/// bytes.
fn memory_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("procfs");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .expect("a memory field")
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Issue 16.4: 300 input requests of 1 MiB each to an interactive run that
/// never reads its stdin. Every one is answered at once (accepted while
/// the run's bound has room, `capacity` past it; none waits out its 10 s),
/// and the worker process (the binary, measured from /proc) stays near
/// its idle memory instead of growing by the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_flood_to_a_run_that_never_reads_holds_nothing_past_its_bound() {
    use std::time::Duration;
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("flood");
    let s = docker_settings(&runner, "");
    let prefix = s.worker.prefix.as_str().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut child = common::worker_process(&bus, &runner, &prefix, &log)
        .spawn()
        .expect("worker binary starts");
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let run_id = format!("{runner}-r");
    let mut runs = caller.waiter(Operation::Run).await;
    let run = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": test_image(), "command": ["sleep", "120"],
                   "interactive": true, "timeout_seconds": 300}),
        )
        .await;
    common::wait_running(&caller, &run_id).await;
    let pid = child.id().expect("worker pid");
    let (idle, _) = memory_of(pid);

    let mut inputs = caller.waiter(Operation::Input).await;
    let data = "x".repeat(1024 * 1024);
    let started = std::time::Instant::now();
    let sent = caller
        .publish_batch(
            Operation::Input,
            0..300,
            |_| json!({"run_id": run_id, "data": data}),
        )
        .await;
    let seen = common::collect(
        &mut inputs,
        300,
        Duration::from_millis(500),
        Duration::from_secs(120),
    )
    .await;
    let took = started.elapsed();
    let (now, peak) = memory_of(pid);
    let answers = common::each_answered_once(&seen, &sent);
    let accepted = answers.iter().filter(|a| a["accepted"] == true).count();
    let capacity = answers
        .iter()
        .filter(|a| common::code(a) == "capacity")
        .count();
    eprintln!(
        "input flood: {accepted} accepted, {capacity} capacity in {took:?}; worker RSS idle {} KiB, after {} KiB, peak {} KiB",
        idle / 1024,
        now / 1024,
        peak / 1024
    );
    assert_eq!(
        accepted + capacity,
        300,
        "accepted or capacity, nothing else"
    );
    assert!(
        accepted <= 8,
        "{accepted} accepted: 4 MiB may wait, and the driver writes one"
    );
    assert!(
        now.saturating_sub(idle) < 32 * 1024 * 1024,
        "the worker holds {} KiB more than idle",
        (now - idle) / 1024
    );
    let deleted = caller
        .call(Operation::Delete, json!({"run_id": run_id}))
        .await;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    // Answered, then removed (no retention here): only then is the worker
    // stopped, so nothing is left behind.
    let r = runs.wait(&run, Duration::from_secs(60)).await.unwrap();
    assert_eq!(r["status"], "canceled", "{r}");
    let left = common::no_containers_left(&docker, &runner).await;
    assert!(left.is_empty(), "left behind: {left:?}");
    let _ = child.kill().await;
}
