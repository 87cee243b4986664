//! Shared helpers of the live tests: a reachable engine (or a clear
//! failure saying how to get one), unique run ids, specs, and a guard that
//! removes every container a test created, also when the test fails.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bus_docker_domain::container::ContainerRef;
use bus_docker_domain::ports::{ContainerRuntime, RunIo, Stdin};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{ImageRef, RunId};
use bus_docker_engine::{DockerEngine, EngineOptions};

pub const MIB: usize = 1024 * 1024;

/// The image every test runs (`BUS_TEST_IMAGE`, default the local busybox).
pub fn image() -> String {
    std::env::var("BUS_TEST_IMAGE").unwrap_or_else(|_| "bus-test-busybox:local".to_owned())
}

/// An engine that answers, with the test image present; panics with
/// what to do otherwise (these tests never pass without an engine).
pub async fn engine() -> DockerEngine {
    engine_with(EngineOptions::default()).await
}

pub async fn engine_with(opts: EngineOptions) -> DockerEngine {
    let engine = DockerEngine::connect(opts).expect("docker host is usable");
    if let Err(err) = engine.engine_info().await {
        panic!(
            "no Docker Engine reachable at {}: run scripts/docker-engine.sh ensure ({err})",
            engine.host()
        );
    }
    let image = ImageRef::parse(&image()).expect("BUS_TEST_IMAGE is an image reference");
    if !engine.image_present(&image).await.expect("engine answers") {
        panic!("test image {image} is missing: run scripts/build-test-images.sh");
    }
    engine
}

/// A run id unique to this process, counter and test.
pub fn run_id(test: &str) -> RunId {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    RunId::parse(&format!("t{}-{n}-{test}", std::process::id())).expect("valid run id")
}

/// The prefix of every run id this process makes.
pub fn run_id_prefix() -> String {
    format!("t{}-", std::process::id())
}

pub fn spec(test: &str, command: &[&str]) -> RunSpec {
    RunSpec::builder(run_id(test).as_str(), &image())
        .owner("owner-1")
        .correlation(&format!("corr-{test}"))
        .command(command)
        .max_output_bytes(MIB)
        .build()
}

/// Run io with nothing on stdin, no cancel, a 1 MiB tail, and no stop
/// grace (SIGKILL right after SIGTERM: most test commands ignore SIGTERM
/// as PID 1).
pub fn io(timeout: Duration) -> RunIo {
    RunIo {
        stdin: Stdin::Closed,
        timeout,
        cancel: Box::pin(std::future::pending()),
        max_output_bytes: MIB,
        stop_grace: Duration::ZERO,
        output: None,
    }
}

/// Create the spec's container as the worker does: the image is ensured
/// under the spec's pull policy and the id it gave is handed to `create`.
pub async fn create_run(
    engine: &DockerEngine,
    spec: &RunSpec,
    runner: &str,
) -> Result<ContainerRef, bus_docker_domain::RuntimeError> {
    let image = engine.ensure_image(&spec.image, spec.pull_policy).await?;
    engine.create(spec, runner, &image).await
}

/// Removes the containers it tracks when dropped, even while a failed
/// test unwinds.
pub struct Cleanup {
    host: String,
    names: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new(engine: &DockerEngine) -> Self {
        Self {
            host: engine.host().to_owned(),
            names: Mutex::new(Vec::new()),
        }
    }

    pub fn track(&self, name: &str) {
        self.names.lock().unwrap().push(name.to_owned());
    }

    /// Track a container created by the test itself (by id).
    pub fn track_created(&self, container: ContainerRef) -> ContainerRef {
        self.track(&container.id);
        container
    }

    /// Create the spec's container and track it (by name before the
    /// create, by id after: a run mark renames it).
    pub async fn create(&self, engine: &DockerEngine, spec: &RunSpec) -> ContainerRef {
        self.track(&spec.container_name());
        let container = create_run(engine, spec, "docker@test")
            .await
            .expect("container created");
        self.track(&container.id);
        container
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        if names.is_empty() {
            return;
        }
        let host = self.host.clone();
        // Drop cannot await, and may run inside the test's runtime: remove
        // from a thread with its own.
        let removing = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                let engine = DockerEngine::connect(EngineOptions {
                    docker_host: Some(host),
                    ..EngineOptions::default()
                })
                .expect("cleanup engine");
                for name in names {
                    let container = ContainerRef::new(name.clone(), name);
                    if let Err(err) = engine.remove(&container).await {
                        eprintln!("cleanup: removing {} failed: {err}", container.name);
                    }
                }
            });
        });
        let _ = removing.join();
    }
}

/// A bollard client of its own, for looking at what the engine holds.
pub async fn raw_docker() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("engine reachable for inspection")
}

/// The process's peak resident memory (`VmHWM`), in bytes.
pub fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// The local engine's socket path (`DOCKER_HOST` when it is a unix
/// socket, else the default).
pub fn engine_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/var/run/docker.sock".to_owned())
}

/// A unix-socket proxy in front of the engine: an engine that can be
/// taken away (drop) and brought back (start again).
pub struct EngineProxy {
    path: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl EngineProxy {
    pub fn start(path: &std::path::Path, upstream: &str) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path).expect("proxy socket");
        let upstream = upstream.to_owned();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::UnixStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                    }
                });
            }
        });
        Self {
            path: path.to_owned(),
            task,
        }
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}
