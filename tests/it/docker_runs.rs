//! Every operation end to end through the local Events API on a real
//! Docker Engine: exit codes, streams, timeout, cancel, stdin, interactive
//! input, the codex mounts, pull policies, runner operations, hardening.

use crate::common;

use std::io::{Read, Write};
use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::local::LocalBus;
use common::{
    code, docker_settings, require_engine, spawn_worker, test_image, unique, Caller, WAIT,
};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_report_exit_codes_streams_timeouts_and_cancels() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("runs");
    let s = docker_settings(&runner, "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let image = test_image();

    let ok = caller
        .call(
            Operation::Run,
            json!({"image": image, "command": ["sh", "-c", "printf OK; printf oops >&2"]}),
        )
        .await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["exit_code"], 0);
    assert_eq!(ok["stdout"], "OK");
    assert_eq!(ok["stderr"], "oops");
    assert_eq!(
        (ok["stdout_bytes"].clone(), ok["stderr_bytes"].clone()),
        (json!(2), json!(4))
    );
    assert_eq!(ok["runtime"]["provider"], "docker");
    assert!(ok["runtime"]["engine_version"].is_string());
    assert!(ok["image_id"].as_str().unwrap().starts_with("sha256:"));
    assert!(ok["runtime"]["container_name"]
        .as_str()
        .unwrap()
        .starts_with("bus-run-"));

    let failed = caller
        .call(
            Operation::Run,
            json!({"image": image, "command": ["sh", "-c", "printf '\\377bad'; exit 3"]}),
        )
        .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["stdout"], "\u{fffd}bad", "invalid UTF-8 is replaced");
    assert!(failed.get("error").is_none_or(Value::is_null));

    let started = std::time::Instant::now();
    let timed = caller.call(Operation::Run, json!({"image": image, "command": ["sh", "-c", "echo begun; sleep 60"], "timeout_seconds": 1})).await;
    assert_eq!(timed["status"], "timed_out", "{timed}");
    assert_eq!(code(&timed), "timeout");
    assert_eq!(
        timed["stdout"], "begun\n",
        "a timed-out run still reports its output"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let stdin = caller
        .call(
            Operation::Run,
            json!({"image": image, "command": ["cat"], "stdin": "piped text"}),
        )
        .await;
    assert_eq!(stdin["stdout"], "piped text", "{stdin}");
    assert_eq!(stdin["status"], "succeeded");

    // Cancel: delete a running run; its own response says canceled.
    let mut runs = caller.waiter(Operation::Run).await;
    let run_id = unique("cancel");
    let c = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": image, "command": ["sleep", "60"]}),
        )
        .await;
    common::wait_running(&caller, &run_id).await;
    let st = caller.call(Operation::Status, json!({})).await;
    assert!(
        st["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == run_id.as_str() && i["details"]["container_id"].is_string()),
        "{st}"
    );
    let theirs = caller
        .call(
            Operation::Delete,
            json!({"run_id": run_id, "owner_identity_id": "other"}),
        )
        .await;
    assert_eq!(code(&theirs), "not_found");
    let del = caller
        .call(Operation::Delete, json!({"run_id": run_id}))
        .await;
    assert_eq!(del["deleted"], true);
    let r = runs.wait(&c, WAIT).await.unwrap();
    assert_eq!(r["status"], "canceled", "{r}");
    assert_eq!(code(&r), "canceled");

    // Interactive: input.request feeds stdin, eof closes it.
    let run_id = unique("inter");
    let c = caller.publish(Operation::Run, json!({"run_id": run_id, "image": image, "command": ["sh", "-c", "read a; read b; echo \"got $a+$b\"; cat"], "interactive": true})).await;
    common::wait_running(&caller, &run_id).await;
    let a = caller
        .call(Operation::Input, json!({"run_id": run_id, "data": "one\n"}))
        .await;
    assert_eq!(a["accepted"], true, "{a}");
    assert_eq!(a["bytes"], 4);
    let b = caller
        .call(
            Operation::Input,
            json!({"run_id": run_id, "data": "two\ntail", "eof": true}),
        )
        .await;
    assert_eq!(b["accepted"], true, "{b}");
    let r = runs.wait(&c, WAIT).await.unwrap();
    assert_eq!(r["stdout"], "got one+two\ntail", "{r}");
    let late = caller
        .call(Operation::Input, json!({"run_id": run_id, "data": "x"}))
        .await;
    assert!(
        ["conflict", "not_found"].contains(&code(&late)),
        "a finished run takes no input: {late}"
    );

    let left = common::no_containers_left(&docker, &runner).await;
    assert!(left.is_empty(), "{left:?}");
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cannot_widen_privileges_and_hardening_applies() {
    let docker = require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("harden");
    let s = docker_settings(
        &runner,
        "[policy.hardening]\npids_limit = 64\nread_only_rootfs = true\ntmpfs = [\"/scratch\"]\n",
    );
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let run_id = unique("hard");
    // Privilege fields are refused naming the field, not silently dropped.
    for (field, value) in [
        ("privileged", json!(true)),
        ("cap_add", json!(["SYS_ADMIN"])),
        ("pid_mode", json!("host")),
    ] {
        let mut payload = json!({"run_id": run_id, "image": test_image(), "command": ["true"]});
        payload[field] = value;
        let refused = caller.call(Operation::Run, payload).await;
        assert_eq!(code(&refused), "forbidden", "{field}: {refused}");
        assert!(
            refused["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{refused}"
        );
    }
    let mut runs = caller.waiter(Operation::Run).await;
    let c = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": test_image(), "network": "none",
                   "command": ["sh", "-c", "touch /rootfs-file 2>/dev/null && echo rootfs-rw || echo rootfs-ro; touch /scratch/f && echo tmpfs-rw; ls /sys/class/net; sleep 2"]}),
        )
        .await;
    common::wait_running(&caller, &run_id).await;
    let info = docker
        .inspect_container(&format!("bus-run-{run_id}"), None)
        .await
        .unwrap();
    let hc = info.host_config.unwrap();
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(!hc
        .cap_add
        .unwrap_or_default()
        .iter()
        .any(|c| c.contains("SYS_ADMIN")));
    assert!(hc
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(hc.pids_limit, Some(64));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert!(hc.pid_mode.unwrap_or_default().is_empty());
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    let config = info.config.unwrap();
    assert_eq!(
        config.network_disabled,
        Some(true),
        "network none skips network setup"
    );
    let labels = config.labels.unwrap();
    assert_eq!(labels["bus.managed-by"], "bus-integration-docker");
    assert_eq!(labels["bus.run-id"], run_id);
    assert_eq!(labels["bus.runner"], runner);
    assert_eq!(labels["bus.correlation-id"], c);
    let r = runs.wait(&c, WAIT).await.unwrap();
    assert_eq!(
        r["stdout"], "rootfs-ro\ntmpfs-rw\nlo\n",
        "{r}: network none means loopback only"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codex_profile_mounts_exactly_what_is_configured() {
    require_engine().await;
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("codex-home");
    let ws = root.path().join("workspace");
    let ssh = root.path().join("ssh");
    for d in [&home, &ws, &ssh] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(home.join("config.toml"), "model = \"x\"\n").unwrap();
    std::fs::write(ssh.join("id_test"), "KEY\n").unwrap();
    let agent_path = root.path().join("agent.sock");
    let agent = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
    let agent_thread = std::thread::spawn(move || {
        let (mut conn, _) = agent.accept().unwrap();
        let mut got = String::new();
        conn.read_to_string(&mut got).unwrap();
        conn.write_all(format!("agent-saw:{got}").as_bytes())
            .unwrap();
    });
    let codex_image =
        std::env::var("BUS_TEST_CODEX_IMAGE").unwrap_or_else(|_| "bus-test-codex:local".into());
    let runner = unique("codex");
    let extra = format!(
        "[codex]\nimage = \"{codex_image}\"\nhome_host_path = \"{}\"\nworkspace_host_path = \"{}\"\nworkspace_container_path = \"/workspace/bus-dev\"\nssh_host_path = \"{}\"\nssh_agent_host_path = \"{}\"\ngit_ssh_command = \"ssh -o BatchMode=yes\"\npull_policy = \"never\"\n",
        home.display(), ws.display(), ssh.display(), agent_path.display()
    );
    let s = docker_settings(&runner, &extra);
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let script = "cat /root/.codex/config.toml; \
        touch /root/.codex/new 2>/dev/null && echo home-rw || echo home-ro; \
        pwd; echo made > /workspace/bus-dev/out.txt && echo ws-rw; \
        cat /root/.ssh/id_test; touch /root/.ssh/x 2>/dev/null && echo ssh-rw || echo ssh-ro; \
        echo \"sock=$SSH_AUTH_SOCK\"; echo \"git=$GIT_SSH_COMMAND\"; \
        printf ping | sockcat \"$SSH_AUTH_SOCK\"";
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}");
    let out = r["stdout"].as_str().unwrap();
    let expected = "model = \"x\"\nhome-ro\n/workspace/bus-dev\nws-rw\nKEY\nssh-ro\nsock=/run/ssh-agent.sock\ngit=ssh -o BatchMode=yes\nagent-saw:ping";
    assert_eq!(out, expected, "{r}");
    assert_eq!(
        std::fs::read_to_string(ws.join("out.txt")).unwrap(),
        "made\n",
        "the workspace is really writable"
    );
    assert!(
        !home.join("new").exists(),
        "the codex home is really read-only"
    );
    agent_thread.join().unwrap();

    // The env keys the profile owns cannot be overridden.
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["true"], "env": {"SSH_AUTH_SOCK": "/x"}}),
        )
        .await;
    assert_eq!(code(&r), "forbidden");
    // Nor can a request swap the profile's image.
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "image": test_image(), "command": ["true"]}),
        )
        .await;
    assert_eq!(code(&r), "forbidden");
    worker.stop().await.unwrap();

    // Writable home when opted in.
    let runner = unique("codexw");
    let s = docker_settings(&runner, &format!("{extra}home_writable = true\n"));
    let worker = spawn_worker(&bus, &s, "w2").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let r = caller.call(Operation::Run, json!({"profile": "codex", "command": ["sh", "-c", "touch /root/.codex/new && echo home-rw"]})).await;
    assert_eq!(r["stdout"], "home-rw\n", "{r}");
    assert!(home.join("new").exists());
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_under_each_pull_policy_and_runner_operations() {
    use testcontainers::core::WaitFor;
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    let docker = require_engine().await;
    let image = test_image();
    let (name, tag) = image.rsplit_once(':').unwrap();
    // An unmanaged container on the same engine, started by testcontainers:
    // runner.delete must leave it alone.
    let bystander = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::Nothing)
        .with_cmd(["sleep", "300"])
        .with_network("none")
        .start()
        .await
        .expect("testcontainers starts the local test image");

    let runner = unique("images");
    let extra = format!(
        "[profiles.never]\nimage = \"bus-test-missing:never\"\npull_policy = \"never\"\ncommand = [\"true\"]\n\
         [profiles.ifnp]\nimage = \"bus-test-missing:ifnp\"\npull_policy = \"if-not-present\"\ncommand = [\"true\"]\n\
         [profiles.always]\nimage = \"{image}\"\npull_policy = \"always\"\ncommand = [\"true\"]\n\
         [profiles.local]\nimage = \"{image}\"\npull_policy = \"never\"\ncommand = [\"echo\", \"local\"]\n"
    );
    let s = docker_settings(&runner, &extra);
    let bus = LocalBus::start().await.unwrap();
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);

    for (profile, mention) in [
        ("never", "bus-test-missing:never"),
        ("ifnp", "bus-test-missing:ifnp"),
        ("always", image.as_str()),
    ] {
        let r = caller
            .call(Operation::Run, json!({"profile": profile}))
            .await;
        assert_eq!(code(&r), "image_unavailable", "{profile}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(mention),
            "{r}"
        );
    }
    let r = caller
        .call(Operation::Run, json!({"profile": "local"}))
        .await;
    assert_eq!(r["stdout"], "local\n", "{r}");

    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    let d = &st["status"]["details"];
    assert_eq!(st["status"]["state"], "degraded", "{st}");
    assert!(
        d["engine_version"].is_string() && d["api_version"].is_string(),
        "{st}"
    );
    assert_eq!(d["profiles"]["local"]["present"], true);
    assert_eq!(d["profiles"]["never"]["present"], false);
    let start = caller.call(Operation::RunnerStart, json!({})).await;
    assert_eq!(code(&start), "image_unavailable", "{start}");
    assert_eq!(start["details"]["profiles"]["local"]["present"], true);

    // runner.delete cancels managed runs and removes managed containers only.
    let mut runs = caller.waiter(Operation::Run).await;
    let run_id = unique("rd");
    let c = caller
        .publish(
            Operation::Run,
            json!({"run_id": run_id, "image": image, "command": ["sleep", "60"]}),
        )
        .await;
    common::wait_running(&caller, &run_id).await;
    let del = caller.call(Operation::RunnerDelete, json!({})).await;
    assert_eq!(del["deleted"], true);
    assert!(del["removed_containers"].as_u64().unwrap() >= 1, "{del}");
    assert_eq!(runs.wait(&c, WAIT).await.unwrap()["status"], "canceled");
    let still = docker
        .inspect_container(bystander.id(), None)
        .await
        .unwrap();
    assert_eq!(
        still.state.unwrap().running,
        Some(true),
        "the unmanaged container is untouched"
    );
    let left = common::no_containers_left(&docker, &runner).await;
    assert!(left.is_empty(), "removed after answering: {left:?}");
    worker.stop().await.unwrap();
    bystander.rm().await.unwrap();
}
