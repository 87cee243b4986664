//! The one-shot commands: `--events`, `--self-test`, `demo`, `client`.

use std::time::Duration;

use bus_docker_domain::{ImageRef, Operation};
use serde_json::{json, Value};

use crate::app::{self, App, AppError};
use crate::caller::{operation, request, run_following};
use crate::cli::{ClientArgs, DemoArgs, OutputFormat};
use crate::config::{Provider, Settings};
use crate::local::LocalBus;
use crate::runtime::AnyRuntime;
use bus_docker_service::pool::EnginePool;

/// A command's failure: printed with its cause chain, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A step failed; the cause is kept.
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// `--self-test` with `static`: the known run was not answered as
    /// expected. The response is what the operator needs to see.
    #[error("unexpected run response: {0}")]
    UnexpectedRun(Value),
    /// `--self-test` with `docker`: `runner.status` says the engine is
    /// unavailable; its `problem` detail, as the worker reported it.
    #[error("docker engine unavailable: {0}")]
    EngineUnavailable(Value),
    /// `client --payload` is not JSON.
    #[error("--payload is not JSON")]
    PayloadNotJson(#[source] serde_json::Error),
    /// `client --payload` of a run is JSON, but not an object.
    #[error("--payload must be a JSON object")]
    PayloadNotObject,
}

fn fail(e: impl std::error::Error + Send + Sync + 'static) -> CommandError {
    CommandError::Failed(Box::new(e))
}

/// `--events`: the request and response names of the configured prefix.
pub fn list_events(settings: &Settings, format: OutputFormat) -> String {
    let prefix = &settings.worker.prefix;
    match format {
        OutputFormat::Text => Operation::ALL
            .iter()
            .map(|op| {
                format!(
                    "{:<14} {} -> {}",
                    op.as_str(),
                    prefix.request_name(*op),
                    prefix.response_name(*op)
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        OutputFormat::Json => {
            let ops: Vec<Value> = Operation::ALL
                .iter()
                .map(|op| json!({"operation": op.as_str(), "request": prefix.request_name(*op), "response": prefix.response_name(*op)}))
                .collect();
            json!({"prefix": prefix.as_str(), "operations": ops}).to_string()
        }
    }
}

/// Run a worker with `runtime` against an in-process local Events API,
/// send one request, return its response payload.
async fn one_request(
    settings: &Settings,
    runtime: EnginePool<AnyRuntime>,
    op: Operation,
    payload: Value,
    timeout: Duration,
) -> Result<Value, CommandError> {
    let bus = LocalBus::start().await.map_err(fail)?;
    let client = bus.client().map_err(fail)?;
    let mut local = settings.clone();
    local.shutdown_grace = Duration::from_secs(5);
    // A one-shot command never listens: the worker it sits beside may
    // hold the metrics address.
    local.metrics_addr = None;
    // A runner name of its own: this short-lived worker must not adopt the
    // containers of a real worker on the same engine at start-up.
    local.worker.runner_name = format!(
        "{}-oneshot-{}",
        settings.worker.runner_name,
        std::process::id()
    );
    let consumer = format!("self-test-{}", std::process::id());
    let app = App::over_http(&local, runtime, &client, consumer);
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    // Unicast groups exist once their first consumer connected: wait for
    // the worker's stream before publishing, or the request is not routed.
    bus.wait_consumers(
        &settings.worker.prefix.request_name(op),
        &local.events.group,
        1,
        timeout,
    )
    .await;
    let result = request(&client, &settings.worker.prefix, op, payload, timeout).await;
    stop.cancel();
    let stopped = worker.await;
    bus.shutdown().await;
    let payload = result.map_err(fail)?;
    match stopped {
        Ok(Ok(())) => Ok(payload),
        Ok(Err(e)) => Err(fail(e)),
        Err(e) => Err(fail(e)),
    }
}

/// `--self-test`: with `static`, one run whose result is known; with
/// `docker`, one `runner.status` that must find the engine.
///
/// # Errors
/// The reason the self-test failed.
pub async fn self_test(settings: &Settings) -> Result<(), CommandError> {
    let runtime = app::runtime(settings).map_err(fail)?;
    let timeout = Duration::from_secs(30);
    match settings.provider {
        Provider::Static => {
            let payload = json!({"image": "static/self-test", "command": ["printf", "OK"]});
            let r = one_request(settings, runtime, Operation::Run, payload, timeout).await?;
            if r["status"] != "succeeded" || r["stdout"] != "printf OK\n" || r["exit_code"] != 0 {
                return Err(CommandError::UnexpectedRun(r));
            }
        }
        Provider::Docker => {
            let r = one_request(
                settings,
                runtime,
                Operation::RunnerStatus,
                json!({}),
                timeout,
            )
            .await?;
            let state = &r["status"]["state"];
            if state == "unavailable" {
                return Err(CommandError::EngineUnavailable(
                    r["status"]["details"]["problem"].clone(),
                ));
            }
        }
    }
    Ok(())
}

/// The locally built test image (`scripts/build-test-images.sh`).
const DEMO_TEST_IMAGE: &str = "bus-test-busybox:local";
/// A public image the demo pulls when the test image is not built.
const DEMO_PUBLIC_IMAGE: &str = "docker.io/library/busybox:1.36";

/// Why the demo runs on the static provider instead of an engine.
#[derive(Debug, thiserror::Error)]
enum NoDockerDemo {
    #[error("the Docker runtime cannot be built")]
    Runtime(#[source] AppError),
    #[error("no Docker Engine reachable: scripts/docker-engine.sh ensure starts one")]
    NoEngine,
    #[error("--image")]
    Image(#[source] bus_docker_domain::FieldError),
    #[error("no image to run (scripts/build-test-images.sh builds {DEMO_TEST_IMAGE} offline)")]
    NoImage(#[source] ImageUnavailable),
}

/// Why the demo's last candidate image cannot be run.
#[derive(Debug, thiserror::Error)]
enum ImageUnavailable {
    /// The pool could not have it on every engine (the error names it).
    #[error(transparent)]
    Ensure(bus_docker_domain::RuntimeError),
    #[error("pulling {image} took too long")]
    Timeout { image: String },
}

/// An image the demo can run on a reachable engine: the one asked for, else
/// the local test image, else a public busybox pulled if-not-present; or
/// why the demo falls back to the static provider.
async fn demo_docker_image(
    settings: &Settings,
    asked: Option<&str>,
) -> Result<String, NoDockerDemo> {
    let docker = Settings {
        provider: Provider::Docker,
        ..settings.clone()
    };
    let rt = app::runtime(&docker).map_err(NoDockerDemo::Runtime)?;
    rt.probe().await;
    if !rt.health().iter().any(|engine| engine.state.is_ok()) {
        return Err(NoDockerDemo::NoEngine);
    }
    let (first, fallback) = match asked {
        Some(image) => (image, None),
        None => (DEMO_TEST_IMAGE, Some(DEMO_PUBLIC_IMAGE)),
    };
    match (ensure_demo_image(&rt, first).await, fallback) {
        (Ok(()), _) => Ok(first.to_owned()),
        (Err(why), None) => Err(why),
        (Err(_), Some(public)) => ensure_demo_image(&rt, public)
            .await
            .map(|()| public.to_owned()),
    }
}

/// `candidate` present on every engine (pulled if not present), or why not.
async fn ensure_demo_image(
    rt: &EnginePool<AnyRuntime>,
    candidate: &str,
) -> Result<(), NoDockerDemo> {
    let image = ImageRef::parse(candidate).map_err(NoDockerDemo::Image)?;
    let ensured = tokio::time::timeout(
        Duration::from_secs(120),
        rt.ensure_image_everywhere(&image, bus_docker_domain::profile::PullPolicy::IfNotPresent),
    )
    .await;
    match ensured {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(NoDockerDemo::NoImage(ImageUnavailable::Ensure(e))),
        Err(_) => Err(NoDockerDemo::NoImage(ImageUnavailable::Timeout {
            image: candidate.to_owned(),
        })),
    }
}

/// `demo`: a real container when an engine and the image are there, else
/// the static provider.
///
/// # Errors
/// The run could not be done.
pub async fn demo(settings: &Settings, args: &DemoArgs) -> Result<Value, CommandError> {
    let mut settings = settings.clone();
    let (image, why) = match demo_docker_image(&settings, args.image.as_deref()).await {
        Ok(image) => {
            settings.provider = Provider::Docker;
            let why = format!("engine reachable, image {image} present");
            (image, why)
        }
        Err(err) => {
            let why = app::report(&err);
            settings.provider = Provider::Static;
            let image = args
                .image
                .clone()
                .unwrap_or_else(|| DEMO_TEST_IMAGE.to_owned());
            (image, why)
        }
    };
    let provider = if settings.provider == Provider::Docker {
        "docker"
    } else {
        "static"
    };
    eprintln!("demo: provider {provider} ({why})");
    let command = if args.command.is_empty() {
        vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "echo hello from a bus-integration-docker run; uname -sm".to_owned(),
        ]
    } else {
        args.command.clone()
    };
    let runtime = app::runtime(&settings).map_err(fail)?;
    let payload = json!({"image": image, "command": command, "timeout_seconds": 60});
    one_request(
        &settings,
        runtime,
        Operation::Run,
        payload,
        Duration::from_secs(120),
    )
    .await
}

/// `client`: publish to a live worker, print the response.
///
/// # Errors
/// Bad arguments, no response.
pub async fn client(settings: &Settings, args: &ClientArgs) -> Result<Value, CommandError> {
    let op = operation(&args.operation).map_err(fail)?;
    let mut payload: Value = match &args.payload {
        Some(text) => serde_json::from_str(text).map_err(CommandError::PayloadNotJson)?,
        None => json!({}),
    };
    if op == Operation::Run {
        let obj = payload
            .as_object_mut()
            .ok_or(CommandError::PayloadNotObject)?;
        if let Some(i) = &args.image {
            obj.insert("image".into(), json!(i));
        }
        if let Some(p) = &args.profile {
            obj.insert("profile".into(), json!(p));
        }
        if let Some(t) = args.timeout_seconds {
            obj.insert("timeout_seconds".into(), json!(t));
        }
        if !args.command.is_empty() {
            obj.insert("command".into(), json!(args.command));
        }
    }
    let client = app::events_client(settings).map_err(|e: AppError| fail(e))?;
    if args.follow && op == Operation::Run {
        return run_following(
            &client,
            &settings.worker.prefix,
            payload,
            args.timeout,
            print_output,
        )
        .await
        .map_err(fail);
    }
    request(&client, &settings.worker.prefix, op, payload, args.timeout)
        .await
        .map_err(fail)
}

/// Print one `run.output` payload as it comes: its data on the stream it
/// came from, a note (live output stopped early) on stderr.
fn print_output(output: &Value) {
    use std::io::Write;
    let data = output["data"].as_str().unwrap_or_default();
    let written = if output["stream"] == "stderr" {
        let mut err = std::io::stderr().lock();
        err.write_all(data.as_bytes()).and_then(|()| err.flush())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(data.as_bytes()).and_then(|()| out.flush())
    };
    if let Err(e) = written {
        tracing::debug!(error = %e, "cannot print live output");
    }
    if let Some(note) = output["note"].as_str() {
        eprintln!("[{note}]");
    }
}
