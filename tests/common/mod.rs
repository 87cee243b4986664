//! Test harness: a local Events API, workers wired like production
//! (`App` + `HttpSource`/`HttpPublisher`), and a client that publishes requests and waits
//! for their correlated responses.
#![allow(dead_code)]

use std::time::Duration;

use bus_docker_domain::{EventPrefix, Operation};
use bus_events_client::{EventsClient, OutboundEvent};
use bus_integration_docker::app::{self, App, AppError};
use bus_integration_docker::caller::{correlation_id, ResponseWaiter};
use bus_integration_docker::config::{load, Settings};
use bus_integration_docker::local::LocalBus;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);

/// Settings from a TOML snippet (on top of the defaults).
pub fn settings(toml: &str) -> Settings {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.toml");
    std::fs::write(&path, toml).unwrap();
    load(Some(&path), &[])
        .expect("test config loads")
        .settings()
        .expect("test config validates")
}

/// A worker running against `bus`.
pub struct TestWorker {
    pub stop: CancellationToken,
    pub handle: JoinHandle<Result<(), AppError>>,
}

impl TestWorker {
    pub async fn stop(self) -> Result<(), AppError> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("worker stops in time")
            .expect("worker task")
    }
}

/// Start a worker with `settings` against `bus` as `consumer` of `group`,
/// and wait until its streams are connected.
pub async fn spawn_worker(bus: &LocalBus, settings: &Settings, consumer: &str) -> TestWorker {
    init_tracing();
    spawn_worker_with_token(bus, settings, consumer, bus.token()).await
}

pub async fn spawn_worker_with_token(
    bus: &LocalBus,
    settings: &Settings,
    consumer: &str,
    token: &str,
) -> TestWorker {
    let client = bus.client_with(token).unwrap();
    let runtime = app::runtime(settings).unwrap();
    let app = App::over_http(settings, runtime, &client, consumer.to_owned());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    wait_connected(bus, settings, 1).await;
    TestWorker { stop, handle }
}

/// Wait until at least `n` consumers listen on every request name.
pub async fn wait_connected(bus: &LocalBus, settings: &Settings, n: usize) {
    for op in Operation::ALL {
        let name = settings.worker.prefix.request_name(op);
        assert!(
            bus.wait_consumers(&name, &settings.events.group, n, Duration::from_secs(20))
                .await,
            "worker streams did not connect ({name})"
        );
    }
}

/// A caller: publishes requests and collects responses.
pub struct Caller {
    pub client: EventsClient,
    pub prefix: EventPrefix,
}

impl Caller {
    pub fn new(bus: &LocalBus, prefix: &EventPrefix) -> Self {
        Self {
            client: bus.client().unwrap(),
            prefix: prefix.clone(),
        }
    }

    pub fn with_token(bus: &LocalBus, prefix: &EventPrefix, token: &str) -> Self {
        Self {
            client: bus.client_with(token).unwrap(),
            prefix: prefix.clone(),
        }
    }

    /// Subscribe to `<prefix>.run.output` (live output) before publishing
    /// anything: `wait(correlation)` then returns a run's first chunk, a
    /// readiness signal the run itself gives.
    pub async fn output_waiter(&self) -> ResponseWaiter {
        ResponseWaiter::open_name(&self.client, &self.prefix.output_name(), WAIT)
            .await
            .unwrap()
    }

    /// Subscribe to responses of `op` before publishing anything.
    pub async fn waiter(&self, op: Operation) -> ResponseWaiter {
        ResponseWaiter::open(&self.client, &self.prefix, op, WAIT)
            .await
            .unwrap()
    }

    /// Publish a request; returns its correlation id.
    pub async fn publish(&self, op: Operation, payload: Value) -> String {
        let correlation = correlation_id();
        self.publish_as(op, &correlation, payload).await;
        correlation
    }

    pub async fn publish_as(&self, op: Operation, correlation: &str, payload: Value) {
        let event = OutboundEvent {
            name: self.prefix.request_name(op),
            correlation_id: correlation.to_owned(),
            payload,
            error: None,
        };
        self.client
            .publish(&event, &CancellationToken::new())
            .await
            .expect("publish");
    }

    /// Publish a run of `sh -c <script>` on `image`; returns its correlation id.
    pub async fn publish_shell(&self, image: &str, script: &str) -> String {
        self.publish(
            Operation::Run,
            serde_json::json!({"image": image, "command": ["sh", "-c", script]}),
        )
        .await
    }

    /// Publish one `op` request per index of `batch`, one after another,
    /// with the payload `payload(i)`; returns their correlation ids in
    /// order (for [`each_answered_once`]).
    pub async fn publish_batch(
        &self,
        op: Operation,
        batch: std::ops::Range<usize>,
        payload: impl Fn(usize) -> Value,
    ) -> Vec<String> {
        let mut sent = Vec::with_capacity(batch.len());
        for i in batch {
            sent.push(self.publish(op, payload(i)).await);
        }
        sent
    }

    /// Publish and wait for the response payload.
    pub async fn call(&self, op: Operation, payload: Value) -> Value {
        let mut w = self.waiter(op).await;
        let c = self.publish(op, payload).await;
        w.wait(&c, WAIT).await.expect("response")
    }
}

/// The locally built test image (`scripts/build-test-images.sh`).
pub fn test_image() -> String {
    std::env::var("BUS_TEST_IMAGE").unwrap_or_else(|_| "bus-test-busybox:local".into())
}

/// A run payload: `sh -c <script>` on the test image.
pub fn shell(script: &str) -> Value {
    serde_json::json!({"image": test_image(), "command": ["sh", "-c", script]})
}

/// A unique name for this test's runner, prefix and run ids.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A Docker Engine client, or a failure saying how to get an engine: these
/// tests never pass silently without one.
pub async fn require_engine() -> bollard::Docker {
    let docker = bollard::Docker::connect_with_defaults().expect("docker client");
    let docker = match tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
    {
        Ok(Ok(d)) => d,
        other => panic!(
            "no Docker Engine reachable at {}: {other:?}. Run scripts/docker-engine.sh ensure \
             (or the whole suite with scripts/test.sh), then scripts/build-test-images.sh",
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
        ),
    };
    let image = test_image();
    assert!(
        docker.inspect_image(&image).await.is_ok(),
        "test image {image} missing: run scripts/build-test-images.sh"
    );
    docker
}

/// Managed containers carrying `bus.runner=<runner>`.
pub async fn containers_of(docker: &bollard::Docker, runner: &str) -> Vec<String> {
    containers_in(docker, runner, &[]).await
}

/// Managed containers of `runner` created and not started yet: a run
/// whose container exists but whose process has not begun.
pub async fn created_not_started(docker: &bollard::Docker, runner: &str) -> Vec<String> {
    containers_in(docker, runner, &["created"]).await
}

/// Containers of `runner` in one of `states` (Docker's `status` filter;
/// empty: any state).
async fn containers_in(docker: &bollard::Docker, runner: &str, states: &[&str]) -> Vec<String> {
    listed_of(docker, runner, states)
        .await
        .into_iter()
        .filter_map(|c| c.names.and_then(|n| n.first().cloned()))
        .collect()
}

/// The engine's listing of `runner`'s containers in one of `states`
/// (empty: any state).
pub async fn listed_of(
    docker: &bollard::Docker,
    runner: &str,
    states: &[&str],
) -> Vec<bollard::models::ContainerSummary> {
    use bollard::query_parameters::ListContainersOptionsBuilder;
    let mut filters = std::collections::HashMap::new();
    filters.insert("label".to_owned(), vec![format!("bus.runner={runner}")]);
    if !states.is_empty() {
        filters.insert(
            "status".to_owned(),
            states.iter().map(|s| (*s).to_owned()).collect(),
        );
    }
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
}

/// Settings for a docker worker with its own runner name and prefix.
/// Answered containers are removed at once (`run_retention = "0s"`) unless
/// `extra` sets a retention: the tests that check removal stay exact.
pub fn docker_settings(runner: &str, extra: &str) -> Settings {
    let retention = if extra.contains("run_retention") {
        ""
    } else {
        "run_retention = \"0s\"\n"
    };
    settings(&format!(
        "provider = \"docker\"\nrunner_name = \"{runner}\"\nevent_prefix = \"bus.t.{}\"\nshutdown_grace = \"5s\"\n{retention}{extra}",
        runner.replace(['@', '_'], "-")
    ))
}

/// Unix seconds now, for engine event queries.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The container events of `kind` (`create`, `start`, `rename`, ...) the
/// engine logged between `since` and now, narrowed by `labels`
/// (`key=value`): the engine's own record, for "exactly once" checks.
pub async fn engine_events(
    docker: &bollard::Docker,
    kind: &str,
    labels: &[String],
    since: i64,
) -> Vec<bollard::models::EventMessage> {
    use bollard::query_parameters::EventsOptionsBuilder;
    use futures_util::StreamExt;
    let mut filters = std::collections::HashMap::new();
    filters.insert("event".to_owned(), vec![kind.to_owned()]);
    filters.insert("type".to_owned(), vec!["container".to_owned()]);
    if !labels.is_empty() {
        filters.insert("label".to_owned(), labels.to_vec());
    }
    let until = (unix_now() + 1).to_string();
    let opts = EventsOptionsBuilder::default()
        .since(&since.to_string())
        .until(&until)
        .filters(&filters)
        .build();
    let events: Vec<_> = docker.events(Some(opts)).collect().await;
    events.into_iter().filter_map(Result::ok).collect()
}

/// How many containers with `bus.runner=<runner>` the engine created
/// between `since` and now (from the engine's own event log).
pub async fn creates_since(docker: &bollard::Docker, runner: &str, since: i64) -> usize {
    engine_events(docker, "create", &[format!("bus.runner={runner}")], since)
        .await
        .len()
}

/// How many containers with `bus.runner=<runner>` the engine started
/// between `since` and now (from the engine's own event log): "it ran once".
pub async fn starts_since(docker: &bollard::Docker, runner: &str, since: i64) -> usize {
    engine_events(docker, "start", &[format!("bus.runner={runner}")], since)
        .await
        .len()
}

/// The test engine's unix socket (`DOCKER_HOST`, else the default one),
/// for a [`SocketProxy`] to stand in front of.
pub fn docker_socket() -> std::path::PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".into())
        .into()
}

/// A unix-socket proxy in front of the Docker socket: stopping it makes the
/// engine unreachable for a worker pointed at it, without touching dockerd.
pub struct SocketProxy {
    pub path: std::path::PathBuf,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl SocketProxy {
    pub async fn start(path: &std::path::Path, target: &std::path::Path) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("bind proxy socket");
        let stop = CancellationToken::new();
        let (token, target, sock) = (stop.clone(), target.to_owned(), path.to_owned());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((mut down, _)) = accepted else { continue };
                        let target = target.clone();
                        conns.spawn(async move {
                            if let Ok(mut up) = tokio::net::UnixStream::connect(&target).await {
                                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            }
                        });
                    }
                }
            }
            drop(listener);
            conns.abort_all();
            while conns.join_next().await.is_some() {}
            let _ = std::fs::remove_file(&sock);
        });
        Self {
            path: path.to_owned(),
            stop,
            task,
        }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Correlation id → every payload received for it, duplicates visible
/// (what [`collect`] returns).
pub type Answers = std::collections::HashMap<String, Vec<Value>>;

/// Collect responses until `expected` distinct correlations were seen and
/// then `quiet` passes without another response; returns correlation →
/// every payload received for it (duplicates visible).
pub async fn collect(
    waiter: &mut ResponseWaiter,
    expected: usize,
    quiet: Duration,
    overall: Duration,
) -> Answers {
    let mut seen = Answers::new();
    let deadline = tokio::time::Instant::now() + overall;
    loop {
        let wait = if seen.len() >= expected {
            quiet
        } else {
            Duration::from_secs(5)
        };
        match waiter.next_any(wait).await.expect("response stream") {
            Some((c, v)) => seen.entry(c).or_default().push(v),
            None if seen.len() >= expected => return seen,
            None => assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {expected} responses: {:?}",
                seen.len(),
                seen.keys()
            ),
        }
    }
}

/// [`collect`] `n` more correlations into `seen` (answers that come later,
/// e.g. once a lost engine is back), merged with what it already holds.
pub async fn collect_more(
    seen: &mut Answers,
    waiter: &mut ResponseWaiter,
    n: usize,
    quiet: Duration,
    overall: Duration,
) {
    for (correlation, payloads) in collect(waiter, n, quiet, overall).await {
        seen.entry(correlation).or_default().extend(payloads);
    }
}

/// The one answer to `correlation` in `seen`; panics naming the
/// correlation and what was received when it got none or more than one.
pub fn answered_once<'a>(seen: &'a Answers, correlation: &str) -> &'a Value {
    match seen.get(correlation).map(Vec::as_slice) {
        Some([answer]) => answer,
        Some(answers) => panic!(
            "{correlation} answered {} times: {answers:?}",
            answers.len()
        ),
        None => panic!(
            "{correlation} never answered; answered: {:?}",
            seen.keys().collect::<Vec<_>>()
        ),
    }
}

/// Every correlation of `sent` answered exactly once, and nothing else
/// answered; returns the answers in the order of `sent`. Panics listing
/// every correlation never answered, answered more than once, or answered
/// without being sent.
pub fn each_answered_once<'a>(seen: &'a Answers, sent: &[String]) -> Vec<&'a Value> {
    let missing: Vec<&String> = sent.iter().filter(|c| !seen.contains_key(*c)).collect();
    let repeated: Vec<(&String, usize)> = seen
        .iter()
        .filter(|(_, answers)| answers.len() != 1)
        .map(|(c, answers)| (c, answers.len()))
        .collect();
    let unknown: Vec<&String> = seen.keys().filter(|c| !sent.contains(c)).collect();
    assert!(
        missing.is_empty() && repeated.is_empty() && unknown.is_empty(),
        "of {} requests: {} never answered {missing:?}; answered more than once \
         (correlation, times) {repeated:?}; answers to requests not sent {unknown:?}",
        sent.len(),
        missing.len(),
    );
    sent.iter().map(|c| &seen[c][0]).collect()
}

/// Poll `probe` until it yields `Some`, every `EVENTUALLY_POLL`, for at
/// most `timeout`; panics naming `what` when it never does. The one poll
/// loop of the harness.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(EVENTUALLY_POLL).await;
    }
}

/// How often [`eventually`] looks again.
pub const EVENTUALLY_POLL: Duration = Duration::from_millis(20);

/// Wait until no managed container of `runner` remains (removal follows
/// publishing the response), up to 20 s; returns what is left.
pub async fn no_containers_left(docker: &bollard::Docker, runner: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut left = containers_of(docker, runner).await;
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(EVENTUALLY_POLL).await;
        left = containers_of(docker, runner).await;
    }
    left
}

/// Wait until `status` says the run is `running` (30 s at most).
pub async fn wait_running(caller: &Caller, run_id: &str) -> Value {
    eventually(
        &format!("{run_id} running"),
        Duration::from_secs(30),
        || async {
            let st = caller
                .call(Operation::Status, serde_json::json!({"run_id": run_id}))
                .await;
            (st["items"][0]["state"] == "running").then_some(st)
        },
    )
    .await
}

/// Wait until `runner.status` reports `n` active runs (30 s at most).
pub async fn wait_active_runs(caller: &Caller, n: u64) {
    eventually(
        &format!("{n} active runs"),
        Duration::from_secs(30),
        || async {
            let st = caller
                .call(Operation::RunnerStatus, serde_json::json!({}))
                .await;
            (st["status"]["details"]["active_runs"] == n).then_some(())
        },
    )
    .await;
}

/// Wait until the engine holds at least `n` containers of `runner` (30 s).
pub async fn wait_containers(docker: &bollard::Docker, runner: &str, n: usize) {
    eventually(
        &format!("{n} containers of {runner}"),
        Duration::from_secs(30),
        || async { (containers_of(docker, runner).await.len() >= n).then_some(()) },
    )
    .await;
}

/// Wait until the engine holds at least `n` containers of `runner` and
/// none of them is only created: every run's process has begun (30 s).
pub async fn wait_runs_started(docker: &bollard::Docker, runner: &str, n: usize) {
    eventually(
        &format!("{n} runs of {runner} started"),
        Duration::from_secs(30),
        || async {
            let all = containers_of(docker, runner).await.len();
            let created = created_not_started(docker, runner).await.len();
            (all >= n && created == 0).then_some(())
        },
    )
    .await;
}

/// The error code of a response payload (`""` when it succeeded).
pub fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// Worker logs in tests: silent unless `TEST_LOG` is set (`TEST_LOG=1`
/// or a filter such as `TEST_LOG=bus_integration_docker=debug`). Installed
/// once per test binary, from every worker starter.
pub fn init_tracing() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let Ok(filter) = std::env::var("TEST_LOG") else {
            return;
        };
        let filter = if filter == "1" {
            "info".to_owned()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// A worker on the in-memory event ports and `runtime` (shared, so a second
/// start sees the first one's containers), running until the token is
/// cancelled.
pub fn spawn_memory_worker(
    settings: &Settings,
    runtime: &bus_docker_static::StaticRuntime,
) -> (
    bus_docker_events::memory::MemoryBus,
    CancellationToken,
    JoinHandle<Result<(), AppError>>,
) {
    init_tracing();
    let (bus, source, publisher) = bus_docker_events::memory::memory_events();
    let app = App::build_with(
        settings,
        bus_integration_docker::runtime::AnyRuntime::Static(runtime.clone()),
        source,
        publisher,
        bus_integration_docker::worker::Lifecycle::default(),
    );
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    (bus, stop, handle)
}

/// Wait until the memory worker took every request sent on `bus` and `n`
/// containers run on `runtime`: the worker's own state says the runs
/// started (under a paused clock too), not a pause.
pub async fn wait_started(
    bus: &bus_docker_events::memory::MemoryBus,
    runtime: &bus_docker_static::StaticRuntime,
    n: usize,
) {
    use bus_docker_domain::container::{ContainerState, ManagedFilter};
    use bus_docker_domain::ports::ContainerRuntime;
    eventually(
        &format!("every request taken and {n} runs running"),
        Duration::from_secs(30),
        || async {
            let running = runtime
                .list_managed(&ManagedFilter::all())
                .await
                .expect("static runtime lists")
                .into_iter()
                .filter(|c| c.state == ContainerState::Running)
                .count();
            (bus.untaken().is_empty() && running == n).then_some(())
        },
    )
    .await;
}

/// The worker binary as a child process on `bus`, as a docker worker with
/// runner name `runner` on `prefix`, logging to `log` (appended). Answered
/// containers go at once, so "no container left" is exact. Callers add
/// their own environment and spawn it.
pub fn worker_process(
    bus: &LocalBus,
    runner: &str,
    prefix: &str,
    log: &std::path::Path,
) -> tokio::process::Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut command = bus.worker_command(
        std::path::Path::new(env!("CARGO_BIN_EXE_bus-integration-docker")),
        runner,
        prefix,
    );
    command
        .env("BUS_DOCKER_MAX_CONCURRENT_RUNS", "8")
        .env("BUS_DOCKER__RUN_RETENTION", "0s")
        .env("BUS_EVENTS_LISTENER_RETRY_MIN", "50ms")
        .env("BUS_EVENTS_LISTENER_RETRY_MAX", "500ms")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    command
}
