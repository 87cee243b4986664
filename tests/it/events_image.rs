//! The worker against the development Events API started from the project's
//! own image (`bus-integration-docker:local`, `scripts/build-image.sh`) with
//! testcontainers: the Bus scope rules, identity filtering and group cursors
//! as the worker meets them, with exactly the seed scopes it needs.

use crate::common;

use std::time::Duration;

use bus_docker_domain::Operation;
use bus_events_client::{
    ClientConfig, EventsClient, EventsUrl, OutboundEvent, Secret as Bearer, TokenSource,
};
use bus_events_local::{mint_token, MintClaims, Secret};
use bus_integration_docker::app::{self, App, AppError};
use bus_integration_docker::caller::{correlation_id, ResponseWaiter};
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::WORKER_SCOPES;
use common::{settings, WAIT};
use serde_json::json;
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "events-image-test-secret";
const ACCOUNT: &str = "00000000-0000-4000-8000-000000000001";

fn image() -> String {
    std::env::var("BUS_DOCKER_IMAGE").unwrap_or_else(|_| "bus-integration-docker:local".into())
}

/// The Events API from the image, on a free loopback port (host network:
/// the engine runs without a bridge).
async fn start_events() -> (ContainerAsync<GenericImage>, String) {
    let docker = common::require_engine().await;
    let image = image();
    assert!(
        docker.inspect_image(&image).await.is_ok(),
        "image {image} missing: run scripts/build-image.sh"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (name, tag) = image.rsplit_once(':').expect("name:tag");
    let addr = format!("127.0.0.1:{port}");
    let container = GenericImage::new(name, tag)
        .with_entrypoint("bus-events-local")
        .with_wait_for(WaitFor::message_on_stdout("bus-events-local listening on"))
        .with_cmd(["serve", "--addr", &addr, "--events-backend", "memory"])
        .with_env_var("BUS_API_JWT_SECRET", SECRET)
        .with_network("host")
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("testcontainers starts the Events API from the image");
    (container, format!("http://{addr}"))
}

fn token(sub: &str, scope: &str) -> String {
    let secret = Secret::parse(SECRET).expect("secret");
    mint_token(&secret, &MintClaims::new(sub, scope)).expect("mint")
}

fn client(url: &str, token: &str) -> EventsClient {
    let mut config = ClientConfig::new(
        EventsUrl::parse(url).expect("url"),
        TokenSource::Static(Bearer::new(token.to_owned())),
    );
    config.stream_backoff.min = Duration::from_millis(50);
    config.stream_backoff.max = Duration::from_millis(500);
    EventsClient::new(config).expect("client")
}

/// A worker (static provider) in-process against `url` with `token`.
fn spawn_worker(
    url: &str,
    token: &str,
    s: &Settings,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), AppError>>,
) {
    let client = client(url, token);
    let app = App::over_http(
        s,
        app::runtime(s).expect("runtime"),
        &client,
        "image-w1".into(),
    );
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    (stop, handle)
}

async fn publish_run(caller: &EventsClient, s: &Settings, correlation: &str) {
    let event = OutboundEvent {
        name: s.worker.prefix.request_name(Operation::Run),
        correlation_id: correlation.to_owned(),
        payload: json!({"image": "any:1", "command": ["printf", "OK"]}),
        error: None,
    };
    caller
        .publish(&event, &CancellationToken::new())
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_with_its_seed_scopes_answers_through_the_image_server() {
    let (_events, url) = start_events().await;
    let s =
        settings("provider = \"static\"\nevent_prefix = \"bus.docker\"\nshutdown_grace = \"2s\"\n");
    let caller = client(&url, &token(ACCOUNT, "container:run"));
    let mut waiter = ResponseWaiter::open(&caller, &s.worker.prefix, Operation::Run, WAIT)
        .await
        .expect("waiter");

    // Published before the worker's group has a consumer: the group cursor
    // keeps it for the worker.
    let early = correlation_id();
    publish_run(&caller, &s, &early).await;
    let (stop, handle) = spawn_worker(&url, &token(ACCOUNT, WORKER_SCOPES), &s);
    let r = waiter.wait(&early, WAIT).await.expect("response");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["owner_identity_id"], ACCOUNT);

    // A caller of another identity never sees this worker's responses.
    let stranger = client(&url, &token("someone-else", "container:run"));
    let mut strangers = ResponseWaiter::open(
        &stranger,
        &s.worker.prefix,
        Operation::Run,
        Duration::from_secs(2),
    )
    .await
    .expect("waiter");
    let late = correlation_id();
    publish_run(&caller, &s, &late).await;
    let r = waiter.wait(&late, WAIT).await.expect("response");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(
        strangers.wait(&late, Duration::from_secs(2)).await.is_err(),
        "identity filtering hides the response from another identity"
    );

    stop.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops")
        .expect("task")
        .expect("clean exit");
}

/// docs/protocol.md §9 (changed on purpose: before v3 this worker exited): a
/// token that lacks `container:admin` serves the operations it has; only a
/// token that opens no stream at all stops the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_missing_one_seed_scope_serves_the_operations_it_has() {
    let (_events, url) = start_events().await;
    let s =
        settings("provider = \"static\"\nevent_prefix = \"bus.docker\"\nshutdown_grace = \"2s\"\n");
    let caller = client(&url, &token(ACCOUNT, "container:run"));
    let mut waiter = ResponseWaiter::open(&caller, &s.worker.prefix, Operation::Run, WAIT)
        .await
        .expect("waiter");
    let without_admin = WORKER_SCOPES.replace(" container:admin", "");
    let (stop, handle) = spawn_worker(&url, &token(ACCOUNT, &without_admin), &s);
    let run = correlation_id();
    publish_run(&caller, &s, &run).await;
    let r = waiter.wait(&run, WAIT).await.expect("response");
    assert_eq!(r["status"], "succeeded", "{r}");
    assert!(!handle.is_finished(), "a missing scope does not stop it");
    stop.cancel();
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("worker stops")
        .expect("task")
        .expect("clean exit");

    let (_stop, handle) = spawn_worker(&url, &token(ACCOUNT, "events:send events:listen"), &s);
    let result = tokio::time::timeout(WAIT, handle)
        .await
        .expect("the worker gives up in time")
        .expect("task");
    let err = result.expect_err("no stream can be opened: fatal");
    assert!(matches!(err, AppError::Unauthorized(_)), "{err}");
    assert!(
        err.to_string().contains("no request stream can be opened"),
        "{err}"
    );
}
