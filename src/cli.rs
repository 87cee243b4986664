//! The command line. Every flag of docs/protocol.md §6 with its env var; flags
//! beat env, env beats the config file (see [`crate::config`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::config::{LogFormat, OverrideValue, Provider};
use crate::de::parse_duration;

/// Bus Events worker that runs container requests on a Docker Engine.
#[derive(Debug, Parser)]
#[command(name = "bus-integration-docker", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub worker: WorkerArgs,

    /// Push one run request through the real event path in-process (local
    /// Events server + this worker) and print `bus-integration-docker
    /// self-test OK`, or the reason and exit non-zero.
    #[arg(long, conflicts_with = "events")]
    pub self_test: bool,

    /// List the request and response event names for the configured prefix.
    #[arg(long)]
    pub events: bool,

    /// Output format of `--events`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, requires = "events")]
    pub format: OutputFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What this invocation does, decided once from the command line.
#[derive(Debug)]
pub enum Mode<'a> {
    /// The long-running worker (no subcommand, no one-shot flag).
    Serve,
    /// `--events`: print the event names.
    ListEvents(OutputFormat),
    /// `--self-test`: one request through the real path, in-process.
    SelfTest,
    /// `client …`: one request to a live worker.
    Client(&'a ClientArgs),
    /// `demo …`: local Events server + worker + one run.
    Demo(&'a DemoArgs),
}

impl Cli {
    /// The mode this command line asks for.
    pub fn mode(&self) -> Mode<'_> {
        match (&self.command, self.events, self.self_test) {
            (Some(Command::Client(args)), ..) => Mode::Client(args),
            (Some(Command::Demo(args)), ..) => Mode::Demo(args),
            (None, true, _) => Mode::ListEvents(self.format),
            (None, false, true) => Mode::SelfTest,
            (None, false, false) => Mode::Serve,
        }
    }

    /// Compose files and shells often set an option to "" to mean unset:
    /// treat an empty env var of ours as absent. Call before any thread
    /// starts (it edits the process environment).
    pub fn scrub_empty_env() {
        use clap::CommandFactory;
        for arg in Self::command().get_arguments() {
            if let Some(name) = arg.get_env() {
                if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
                    std::env::remove_var(name);
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish a request to a live worker and print the correlated response.
    Client(ClientArgs),
    /// Quick start: start a local Events server and this worker in-process,
    /// run one container (`docker` when an engine is reachable, else the
    /// `static` provider) and print the run response.
    Demo(DemoArgs),
}

fn duration(v: &str) -> Result<Duration, crate::de::DurationError> {
    parse_duration(v)
}

/// A boolean flag value where empty means unset (docs/protocol.md §6, v3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetBool(pub Option<bool>);

/// `1/true/yes/on`, `0/false/no/off`, or empty for unset.
fn boolish_or_unset(v: &str) -> Result<SetBool, String> {
    if v.is_empty() {
        return Ok(SetBool(None));
    }
    crate::de::parse_bool(v)
        .map(|b| SetBool(Some(b)))
        .ok_or_else(|| format!("{v:?} is not a boolean (1/true/yes/on or 0/false/no/off)"))
}

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Operation: run, status, input, delete, runner.status, runner.start,
    /// runner.delete.
    #[arg(default_value = "run")]
    pub operation: String,
    /// The request payload as JSON; for `run` the flags below fill it.
    #[arg(long)]
    pub payload: Option<String>,
    /// `run`: the image.
    #[arg(long)]
    pub image: Option<String>,
    /// `run`: the profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// `run`: the run's timeout in seconds.
    #[arg(long)]
    pub timeout_seconds: Option<u64>,
    /// `run`: ask for live output (`stream_output: true`) and print it as
    /// it comes (the container's stdout on stdout, its stderr on stderr),
    /// then the response.
    #[arg(long)]
    pub follow: bool,
    /// How long to wait for the response (`30s`, `5m`, seconds).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub timeout: Duration,
    /// `run`: the command, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The command the demo container runs.
    #[arg(last = true)]
    pub command: Vec<String>,
    /// The image (default: `$BUS_TEST_IMAGE`, else `bus-test-busybox:local`).
    #[arg(long, env = "BUS_TEST_IMAGE")]
    pub image: Option<String>,
}

/// Flags and env vars that override config keys.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// TOML config file.
    #[arg(long, env = "BUS_DOCKER_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// `docker` runs real containers; `static` is deterministic (self-tests).
    #[arg(long, value_enum, env = "BUS_DOCKER_PROVIDER", global = true)]
    pub provider: Option<Provider>,
    /// Events API base URL: origin, path prefix, or the full `/api/v1/events` URL.
    #[arg(long, env = "BUS_EVENTS_API_URL", global = true)]
    pub events_url: Option<String>,
    /// File holding the Events API token (re-read on 401); looked up first,
    /// then `BUS_API_TOKEN`, then `$BUS_CONFIG_DIR/auth/api-token` or
    /// `~/.config/bus/auth/api-token`. Never the token itself as a flag.
    #[arg(long, env = "BUS_API_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Event name prefix; `bus.docker` behind the router. Unset: standalone
    /// on `bus.containers`.
    #[arg(long, env = "BUS_DOCKER_EVENT_PREFIX", global = true)]
    pub event_prefix: Option<String>,
    /// Unicast group shared by the workers that split the load.
    #[arg(long, env = "BUS_DOCKER_EVENTS_GROUP", global = true)]
    pub events_group: Option<String>,
    /// This worker's consumer name (default `<hostname>-<pid>`).
    #[arg(long, env = "BUS_DOCKER_EVENTS_CONSUMER", global = true)]
    pub events_consumer: Option<String>,
    /// Minimum reconnect delay of the event streams.
    #[arg(long, env = "BUS_EVENTS_LISTENER_RETRY_MIN", global = true)]
    pub listener_retry_min: Option<String>,
    /// Maximum reconnect delay of the event streams.
    #[arg(long, env = "BUS_EVENTS_LISTENER_RETRY_MAX", global = true)]
    pub listener_retry_max: Option<String>,
    /// Name of this runner (`bus.runner` label); a restarted worker
    /// recovers the containers of its own runner name.
    #[arg(long, env = "BUS_DOCKER_RUNNER_NAME", global = true)]
    pub runner_name: Option<String>,
    /// Maximum containers at once.
    #[arg(long, env = "BUS_DOCKER_MAX_CONCURRENT_RUNS", global = true)]
    pub max_concurrent_runs: Option<u64>,
    /// Maximum runs waiting for a slot; beyond it, `capacity`.
    #[arg(long, env = "BUS_DOCKER_MAX_QUEUED_RUNS", global = true)]
    pub max_queued_runs: Option<u64>,
    /// Serve `/metrics`, `/healthz` and `/readyz` on HOST:PORT (unset: no
    /// listener).
    #[arg(long, env = "BUS_DOCKER_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<String>,
    /// A Docker Engine of the pool (repeat for several; the env var takes
    /// comma-separated URLs). Unset: `docker.hosts`, else the one
    /// `docker.host` / `DOCKER_HOST`. Per-engine TLS files: config file.
    #[arg(long = "docker-host", env = "BUS_DOCKER_DOCKER_HOSTS", global = true,
          action = ArgAction::Append, value_delimiter = ',')]
    pub docker_hosts: Vec<String>,
    /// At most this many runs at once on any one engine (unset: no
    /// per-engine cap).
    #[arg(long, env = "BUS_DOCKER_MAX_RUNS_PER_ENGINE", global = true)]
    pub max_runs_per_engine: Option<u64>,
    /// `text` or `json` logs (stderr).
    #[arg(long, value_enum, env = "BUS_DOCKER_LOG_FORMAT", global = true)]
    pub log_format: Option<LogFormat>,

    /// Image of the codex profile.
    #[arg(long, env = "DOCKER_CONTAINER_CODEX_IMAGE", global = true)]
    pub container_codex_image: Option<String>,
    /// Host Codex home, mounted at /root/.codex. The codex host paths are
    /// text, not clap paths: an empty value is unset (docs/protocol.md §6, v3).
    #[arg(long, env = "BUS_DOCKER_CODEX_HOME_HOST", global = true)]
    pub codex_home_host_path: Option<String>,
    /// Mount the Codex home read-write (default read-only).
    #[arg(long, env = "BUS_DOCKER_CODEX_HOME_WRITABLE", global = true,
          value_parser = boolish_or_unset, num_args = 0..=1, default_missing_value = "true")]
    pub codex_home_writable: Option<SetBool>,
    /// Give each run its own writable Codex home, seeded from the host
    /// home's configuration, with the host home's auth.json shared
    /// read-write (needs --codex-home-host-path).
    #[arg(long, env = "BUS_DOCKER_CODEX_HOME_PER_RUN", global = true,
          value_parser = boolish_or_unset, num_args = 0..=1, default_missing_value = "true")]
    pub codex_home_per_run: Option<SetBool>,
    /// Remove a codex session unused this long (default 7d; per-run homes).
    #[arg(long, env = "BUS_DOCKER_CODEX_SESSION_RETENTION", global = true)]
    pub codex_session_retention: Option<String>,
    /// Host workspace, mounted read-write.
    #[arg(long, env = "BUS_DOCKER_CODEX_WORKSPACE_HOST", global = true)]
    pub codex_workspace_host_path: Option<String>,
    /// Where the workspace appears in the container (default /workspace).
    #[arg(long, env = "BUS_DOCKER_CODEX_WORKSPACE_CONTAINER", global = true)]
    pub codex_workspace_container_path: Option<String>,
    /// Host SSH directory, mounted read-only at /root/.ssh.
    #[arg(long, env = "BUS_DOCKER_CODEX_SSH_HOST", global = true)]
    pub codex_ssh_host_path: Option<String>,
    /// Host SSH agent socket; SSH_AUTH_SOCK points at it in the container.
    #[arg(long, env = "BUS_DOCKER_CODEX_SSH_AGENT_HOST", global = true)]
    pub codex_ssh_agent_host_path: Option<String>,
    /// GIT_SSH_COMMAND in the container.
    #[arg(long, env = "BUS_DOCKER_CODEX_GIT_SSH_COMMAND", global = true)]
    pub codex_git_ssh_command: Option<String>,
    /// Parked codex containers kept per engine (warm start; 0: none).
    #[arg(long, env = "BUS_DOCKER_CODEX_WARM", global = true)]
    pub codex_warm: Option<u64>,
}

impl WorkerArgs {
    /// The given flags as dotted config keys. An empty value is unset
    /// (docs/protocol.md §6, v3): the Bus compose file always passes
    /// `--codex-ssh-agent-host-path "$SSH_AUTH_SOCK"`, empty on a host
    /// without an agent.
    pub fn overrides(&self) -> Vec<(String, OverrideValue)> {
        let mut out = Vec::new();
        let mut text = |key: &str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                out.push((key.to_owned(), OverrideValue::Text(v)));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        text(
            "provider",
            self.provider.map(|p| format!("{p:?}").to_lowercase()),
        );
        text("events.url", self.events_url.clone());
        text("events.token_file", path(&self.token_file));
        text("event_prefix", self.event_prefix.clone());
        text("events.group", self.events_group.clone());
        text("events.consumer", self.events_consumer.clone());
        text("events.listener_retry_min", self.listener_retry_min.clone());
        text("events.listener_retry_max", self.listener_retry_max.clone());
        text("runner_name", self.runner_name.clone());
        text("metrics_addr", self.metrics_addr.clone());
        text(
            "log_format",
            self.log_format.map(|f| format!("{f:?}").to_lowercase()),
        );
        text("codex.image", self.container_codex_image.clone());
        text("codex.home_host_path", self.codex_home_host_path.clone());
        text(
            "codex.workspace_host_path",
            self.codex_workspace_host_path.clone(),
        );
        text(
            "codex.workspace_container_path",
            self.codex_workspace_container_path.clone(),
        );
        text("codex.ssh_host_path", self.codex_ssh_host_path.clone());
        text(
            "codex.ssh_agent_host_path",
            self.codex_ssh_agent_host_path.clone(),
        );
        text("codex.git_ssh_command", self.codex_git_ssh_command.clone());
        text(
            "codex.session_retention",
            self.codex_session_retention.clone(),
        );
        if let Some(SetBool(Some(w))) = self.codex_home_writable {
            out.push(("codex.home_writable".into(), OverrideValue::Bool(w)));
        }
        if let Some(SetBool(Some(p))) = self.codex_home_per_run {
            out.push(("codex.home_per_run".into(), OverrideValue::Bool(p)));
        }
        if let Some(n) = self.max_concurrent_runs {
            out.push(("max_concurrent_runs".into(), OverrideValue::Number(n)));
        }
        if let Some(n) = self.max_runs_per_engine {
            out.push((
                "docker.max_runs_per_engine".into(),
                OverrideValue::Number(n),
            ));
        }
        // Blank entries (`a,,b`, a trailing comma) are ignored.
        let hosts: Vec<String> = self
            .docker_hosts
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if !hosts.is_empty() {
            out.push(("docker.hosts".into(), OverrideValue::List(hosts)));
        }
        if let Some(n) = self.max_queued_runs {
            out.push(("max_queued_runs".into(), OverrideValue::Number(n)));
        }
        if let Some(n) = self.codex_warm {
            out.push(("codex.warm".into(), OverrideValue::Number(n)));
        }
        out
    }
}
