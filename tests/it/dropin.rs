//! THE DROP-IN TEST (docs/protocol.md §9 "Worker", §6 v3): the worker started
//! exactly as BusDK's compose `bus-docker` service starts it — its env
//! block with the Bus `.env.example` values and its `sh -ec` command line,
//! `go run ./cmd/bus-integration-docker` replaced by this binary and the
//! token minting by `BUS_API_TOKEN` from the test's local Events server —
//! in the two situations operators hit:
//!
//! (a) a host without an SSH agent: `--codex-ssh-agent-host-path ""`;
//! (b) the worker in its own mount namespace where the codex host paths do
//!     not exist (a tmpfs over their parent, as in a container that mounts
//!     only the workspace and the Docker socket), while the engine, in the
//!     host's namespace, still mounts them.
//!
//! Each time the worker starts, warns once per path it cannot see, and a
//! codex run sees `/root/.codex`, `/root/.ssh` and `/workspace` from the
//! host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bus_docker_domain::{EventPrefix, Operation};
use bus_integration_docker::local::LocalBus;
use serde_json::json;

use crate::common::{self, require_engine, unique, Caller};

/// The `bus-docker` service's command, from BusDK `compose.yaml` (develop),
/// with compose's `$$` unescaped. Two replacements, both named: the token
/// line (`go run ./cmd/bus-operator-token …`) is `BUS_API_TOKEN` from the
/// test's server, and `go run ./cmd/bus-integration-docker` is
/// `"$WORKER_BIN"`; `http://bus-events:8081` is `"$EVENTS_URL"`.
const BUS_DOCKER_COMMAND: &str = r#"
codex_home_writable_flag=
if [ "${BUS_DOCKER_CODEX_HOME_WRITABLE}" = "true" ] || [ "${BUS_DOCKER_CODEX_HOME_WRITABLE}" = "1" ]; then
  codex_home_writable_flag="--codex-home-writable"
fi
exec "$WORKER_BIN" --provider docker --events-url "$EVENTS_URL" --event-prefix bus.docker --container-codex-image "${DOCKER_CONTAINER_CODEX_IMAGE}" --codex-home-host-path "${BUS_DOCKER_CODEX_HOME_HOST}" $codex_home_writable_flag --codex-ssh-host-path "${BUS_DOCKER_CODEX_SSH_HOST}" --codex-ssh-agent-host-path "${BUS_DOCKER_CODEX_SSH_AGENT_HOST}" --codex-git-ssh-command "${BUS_DOCKER_CODEX_GIT_SSH_COMMAND}" --codex-workspace-host-path "${BUS_DOCKER_CODEX_WORKSPACE_HOST}" --codex-workspace-container-path "${BUS_DOCKER_CODEX_WORKSPACE_CONTAINER}"
"#;

/// What the warning of a path the worker cannot see says.
const INVISIBLE: &str = "not visible to the worker";

/// The host side of the codex options: a Codex home, an SSH directory and a
/// workspace with marker files, all under `host/` (so one tmpfs hides
/// them), and optionally an SSH agent socket there too.
struct HostSide {
    _root: tempfile::TempDir,
    host: PathBuf,
    home: PathBuf,
    ssh: PathBuf,
    workspace: PathBuf,
    agent: Option<(PathBuf, std::os::unix::net::UnixListener)>,
}

impl HostSide {
    fn new(with_agent: bool) -> Self {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("host");
        let home = host.join("home/.codex");
        let ssh = host.join("home/.ssh");
        let workspace = host.join("workspace");
        for d in [&home, &ssh, &workspace] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(home.join("config.toml"), "model = \"from-host\"\n").unwrap();
        std::fs::write(ssh.join("id_test"), "KEY\n").unwrap();
        std::fs::write(workspace.join("README"), "bus workspace\n").unwrap();
        let agent = with_agent.then(|| {
            let path = host.join("agent.sock");
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            (path, listener)
        });
        Self {
            _root: root,
            host,
            home,
            ssh,
            workspace,
            agent,
        }
    }

    fn agent_path(&self) -> String {
        self.agent
            .as_ref()
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_default()
    }
}

/// The `bus-docker` service as compose starts it: `sh -ec <command>` with
/// the service's environment (`x-go-service` env and the service's own
/// block, `.env.example` values), optionally inside `unshare -m` with a
/// tmpfs mounted over `hide` before the worker starts.
fn bus_docker_service(
    bus: &LocalBus,
    side: &HostSide,
    runner: &str,
    hide: Option<&Path>,
    log: &Path,
) -> tokio::process::Command {
    let mut command = match hide {
        None => {
            let mut c = tokio::process::Command::new("sh");
            c.env_clear().args(["-ec", BUS_DOCKER_COMMAND]);
            c
        }
        Some(dir) => {
            let mut c = tokio::process::Command::new("unshare");
            let script = format!("mount -t tmpfs bus-dropin-hide \"$HIDE\"\n{BUS_DOCKER_COMMAND}");
            c.env_clear()
                .args(["--mount", "--propagation", "private", "sh", "-ec", &script])
                .env("HIDE", dir);
            c
        }
    };
    let codex_image =
        std::env::var("BUS_TEST_CODEX_IMAGE").unwrap_or_else(|_| "bus-test-codex:local".into());
    let log = std::fs::File::create(log).unwrap();
    command
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WORKER_BIN", env!("CARGO_BIN_EXE_bus-integration-docker"))
        .env("EVENTS_URL", bus.url())
        .env("BUS_API_TOKEN", bus.token())
        // x-go-service environment the worker could read.
        .env("BUS_EVENTS_API_URL", bus.url())
        .env("BUS_EVENTS_LISTENER_RETRY", "true")
        .env("BUS_EVENTS_LISTENER_RETRY_MIN", "250ms")
        .env("BUS_EVENTS_LISTENER_RETRY_MAX", "5s")
        .env(
            "BUS_LOCAL_ACCOUNT_ID",
            "00000000-0000-4000-8000-000000000001",
        )
        // The bus-docker service's own block, .env.example values.
        .env(
            "DOCKER_HOST",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into()),
        )
        .env("BUS_DOCKER_EVENT_PREFIX", "bus.docker")
        .env("DOCKER_CONTAINER_CODEX_IMAGE", codex_image)
        .env("BUS_DOCKER_CODEX_HOME_HOST", &side.home)
        .env("BUS_DOCKER_CODEX_HOME_WRITABLE", "false")
        .env("BUS_DOCKER_CODEX_SSH_HOST", &side.ssh)
        .env("BUS_DOCKER_CODEX_SSH_AGENT_HOST", side.agent_path())
        .env(
            "BUS_DOCKER_CODEX_GIT_SSH_COMMAND",
            "ssh -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/tmp/bus-known-hosts",
        )
        .env("BUS_DOCKER_CODEX_WORKSPACE_HOST", &side.workspace)
        .env("BUS_DOCKER_CODEX_WORKSPACE_CONTAINER", "/workspace")
        // Not in the compose file, for isolation on a shared test engine:
        // this worker's own runner name (it recovers only its own
        // containers) and answered containers removed at once.
        .env("BUS_DOCKER_RUNNER_NAME", runner)
        .env("BUS_DOCKER__RUN_RETENTION", "0s")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    command
}

/// Start the service, wait until its streams are connected (or fail with
/// its log if it exits), run one codex request, check it and the warnings.
async fn drop_in(side: HostSide, hide: bool, expect_invisible: &[&Path]) {
    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("dropin");
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("worker.log");
    let hidden = side.host.clone();
    let mut child = bus_docker_service(&bus, &side, &runner, hide.then_some(&*hidden), &log)
        .spawn()
        .expect("start sh / unshare");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let prefix = EventPrefix::parse("bus.docker").unwrap();
    let connected = async {
        for op in Operation::ALL {
            let name = prefix.request_name(op);
            assert!(
                bus.wait_consumers(&name, "bus-integration-docker", 1, Duration::from_secs(30))
                    .await,
                "worker streams did not connect ({name}): {}",
                read_log()
            );
        }
    };
    tokio::select! {
        () = connected => {}
        status = child.wait() => panic!(
            "the bus-docker service exited ({status:?}) instead of serving:\n{}",
            read_log()
        ),
    }

    let caller = Caller::new(&bus, &prefix);
    let script = "cat /root/.codex/config.toml; cat /root/.ssh/id_test; pwd; cat README; \
        echo \"sock=$SSH_AUTH_SOCK\"; echo \"git=$GIT_SSH_COMMAND\"";
    let r = caller
        .call(
            Operation::Run,
            json!({"profile": "codex", "command": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(r["status"], "succeeded", "{r}\n{}", read_log());
    let sock = if side.agent.is_some() {
        "/run/ssh-agent.sock"
    } else {
        ""
    };
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        format!(
            "model = \"from-host\"\nKEY\n/workspace\nbus workspace\nsock={sock}\n\
             git=ssh -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=/tmp/bus-known-hosts\n"
        ),
        "{r}"
    );
    assert_eq!(r["profile"], "codex");

    // One warning per path the worker cannot see, none for the others.
    let text = read_log();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(INVISIBLE)).collect();
    assert_eq!(warnings.len(), expect_invisible.len(), "{text}");
    for path in expect_invisible {
        let shown = path.display().to_string();
        let naming = warnings
            .iter()
            .filter(|l| l.contains(&format!("path={shown} ")))
            .count();
        assert_eq!(naming, 1, "one warning naming {shown}:\n{text}");
        assert!(warnings.iter().all(|l| l.contains("WARN")), "{text}");
    }
    let left = common::no_containers_left(&require_engine().await, &runner).await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert!(
        left.is_empty(),
        "the answered run's container is removed: {left:?}"
    );
}

/// (a) No SSH agent: compose passes `--codex-ssh-agent-host-path ""`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_compose_line_serves_without_an_ssh_agent() {
    drop_in(HostSide::new(false), false, &[]).await;
}

/// (b) The worker cannot see the codex host paths; the engine can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_compose_line_serves_when_the_host_paths_are_the_engines_only() {
    let side = HostSide::new(true);
    let invisible = [
        side.home.clone(),
        side.ssh.clone(),
        side.agent.as_ref().unwrap().0.clone(),
        side.workspace.clone(),
    ];
    let refs: Vec<&Path> = invisible.iter().map(PathBuf::as_path).collect();
    drop_in(side, true, &refs).await;
}
