//! Private registries (issue 10 item 6): pulls authenticate from the Docker
//! client config, against a real registry with basic auth.
//!
//! The registry is `bus-test-registry:local` (scripts/build-test-images.sh:
//! Debian's docker-registry, htpasswd user `bus-test`), started by
//! testcontainers on the host network at a free loopback port (dockerd runs
//! without a bridge, and treats 127.0.0.0/8 registries as insecure-allowed,
//! so plain HTTP works). The test image is pushed to it and its tag removed
//! locally, then workers run it with good, missing and wrong credentials.

use crate::common;

use std::path::Path;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PushImageOptions, RemoveImageOptions, TagImageOptions};
use bus_docker_domain::Operation;
use bus_docker_engine::{DockerEngine, EngineOptions};
use bus_integration_docker::app::App;
use bus_integration_docker::local::LocalBus;
use bus_integration_docker::runtime::AnyRuntime;
use common::{Caller, TestWorker};
use futures_util::StreamExt;
use serde_json::{json, Value};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio_util::sync::CancellationToken;

const USER: &str = "bus-test";
const PASS: &str = "bus-test-pass";
const WRONG: &str = "wrong-pass-do-not-print";

/// The registry on a free loopback port; returns it and its `host:port`.
async fn start_registry() -> (ContainerAsync<GenericImage>, String) {
    let docker = common::require_engine().await;
    assert!(
        docker
            .inspect_image("bus-test-registry:local")
            .await
            .is_ok(),
        "image bus-test-registry:local missing: run scripts/build-test-images.sh"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let container = GenericImage::new("bus-test-registry", "local")
        .with_wait_for(WaitFor::message_on_stderr("listening on"))
        .with_env_var("REGISTRY_HTTP_ADDR", &addr)
        .with_network("host")
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .expect("testcontainers starts the registry");
    (container, addr)
}

fn credentials(registry: &str) -> DockerCredentials {
    DockerCredentials {
        username: Some(USER.into()),
        password: Some(PASS.into()),
        serveraddress: Some(registry.into()),
        ..DockerCredentials::default()
    }
}

/// Push the test image as `<registry>/bus-test/busybox:<tag>`, then drop
/// that tag locally so only the registry has it.
async fn push_test_image(docker: &bollard::Docker, registry: &str, tag: &str) -> String {
    let repo = format!("{registry}/bus-test/busybox");
    let options = TagImageOptions {
        repo: Some(repo.clone()),
        tag: Some(tag.into()),
    };
    docker
        .tag_image(&common::test_image(), Some(options))
        .await
        .expect("tag the test image");
    let options = PushImageOptions {
        tag: Some(tag.into()),
        ..PushImageOptions::default()
    };
    let mut push = docker.push_image(&repo, Some(options), Some(credentials(registry)));
    while let Some(step) = push.next().await {
        step.expect("push to the local registry");
    }
    let image = format!("{repo}:{tag}");
    untag(docker, &image).await;
    image
}

async fn untag(docker: &bollard::Docker, image: &str) {
    let options = RemoveImageOptions {
        noprune: true,
        ..RemoveImageOptions::default()
    };
    let _ = docker.remove_image(image, Some(options), None).await;
}

/// A Docker client config directory holding `config`.
fn docker_config(config: &Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

/// Run `image` through a worker reading credentials from `config_dir`.
async fn run_through_worker(config_dir: &Path, image: &str, pull_timeout: &str) -> Value {
    let bus = LocalBus::start().await.unwrap();
    let runner = common::unique("registry");
    let s = common::docker_settings(
        &runner,
        &format!("pull_timeout = \"{pull_timeout}\"\n[policy]\npull_policy = \"always\"\n"),
    );
    let engine = DockerEngine::connect(EngineOptions {
        docker_config_dir: Some(config_dir.to_owned()),
        pull_timeout: s.pull_timeout,
        ..EngineOptions::default()
    })
    .unwrap();
    let client = bus.client().unwrap();
    let app = App::over_http(&s, AnyRuntime::Docker(engine), &client, runner.clone());
    let stop = CancellationToken::new();
    let handle = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
    common::wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let response = caller
        .call(
            Operation::Run,
            json!({"image": image, "command": ["sh", "-c", "echo pulled"]}),
        )
        .await;
    TestWorker { stop, handle }.stop().await.unwrap();
    response
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn assert_no_secret(response: &Value) {
    let text = response.to_string();
    for secret in [PASS, WRONG] {
        assert!(!text.contains(secret), "a credential leaked: {text}");
    }
}

#[tokio::test]
async fn pulls_authenticate_from_the_docker_client_config() {
    common::init_tracing();
    let docker = common::require_engine().await;
    let (_registry, addr) = start_registry().await;
    let image = push_test_image(&docker, &addr, &common::unique("t")).await;
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "only the registry has it"
    );

    // Good credentials (base64 `auth`, keyed with a scheme as `docker login` may).
    let auth = base64_of(&format!("{USER}:{PASS}"));
    let good = docker_config(&json!({"auths": {format!("http://{addr}"): {"auth": auth}}}));
    let ok = run_through_worker(good.path(), &image, "2m").await;
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["stdout"], "pulled\n", "{ok}");
    assert_no_secret(&ok);
    untag(&docker, &image).await;

    // No credentials, then wrong ones: image_unavailable naming the registry.
    let none = docker_config(&json!({}));
    let wrong =
        docker_config(&json!({"auths": {addr.clone(): {"username": USER, "password": WRONG}}}));
    for (what, dir) in [("without credentials", &none), ("with wrong ones", &wrong)] {
        let refused = run_through_worker(dir.path(), &image, "2m").await;
        assert_eq!(
            common::code(&refused),
            "image_unavailable",
            "{what}: {refused}"
        );
        let message = refused["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&addr),
            "{what}: names the registry: {message}"
        );
        println!("{what}: {message}");
        assert_no_secret(&refused);
    }
    assert!(
        docker.inspect_image(&image).await.is_err(),
        "nothing was pulled"
    );
}

#[tokio::test]
async fn a_pull_that_does_not_finish_in_time_is_image_unavailable() {
    common::init_tracing();
    common::require_engine().await;
    // A "registry" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            conns.push(conn);
        }
    });
    let none = docker_config(&json!({}));
    let started = std::time::Instant::now();
    let refused = run_through_worker(none.path(), &format!("{addr}/stuck/image:1"), "2s").await;
    assert_eq!(common::code(&refused), "image_unavailable", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("pull_timeout"), "{message}");
    println!("stuck: {message}");
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "{:?}",
        started.elapsed()
    );
    held.abort();
}
