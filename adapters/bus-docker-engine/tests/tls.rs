//! An engine reached over tcp+TLS with its own certificate files (the
//! second test engine of `scripts/test.sh`: `BUS_TEST_DOCKER_TLS_HOST`,
//! `BUS_TEST_DOCKER_TLS_DIR`).
//!
//! A missing variable fails the test with how to get the engine: like
//! every engine test, these never pass without one.

use std::path::PathBuf;

use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::RuntimeError;
use bus_docker_engine::{DockerEngine, EngineOptions, TlsFiles};

/// The TLS engine's address and cert directory; panics with how to get
/// one otherwise (these tests never pass without the engine).
fn tls_engine() -> (String, PathBuf) {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("BUS_TEST_DOCKER_TLS_HOST"),
        var("BUS_TEST_DOCKER_TLS_DIR"),
    ) {
        (Some(host), Some(dir)) => (host, PathBuf::from(dir)),
        _ => panic!(
            "BUS_TEST_DOCKER_TLS_HOST / BUS_TEST_DOCKER_TLS_DIR are not set: run scripts/test.sh, \
             or scripts/docker-engine.sh ensure2 and export what \
             scripts/docker-engine.sh env2 prints"
        ),
    }
}

fn engine(host: &str, tls: TlsFiles) -> DockerEngine {
    DockerEngine::connect(EngineOptions {
        docker_host: Some(host.to_owned()),
        tls: Some(tls),
        ..EngineOptions::default()
    })
    .expect("a tcp host with readable TLS files is usable")
}

#[tokio::test]
async fn an_engine_answers_over_tls_with_its_own_files() {
    let (host, dir) = tls_engine();
    let engine = engine(&host, TlsFiles::in_dir(&dir));
    let info = engine
        .engine_info()
        .await
        .unwrap_or_else(|err| panic!("no answer over TLS from {host}: {err}"));
    assert!(!info.engine_version.is_empty(), "{info:?}");
    assert!(!info.api_version.is_empty(), "{info:?}");
}

#[tokio::test]
async fn a_ca_that_did_not_sign_the_engine_is_refused_clearly() {
    let (host, dir) = tls_engine();
    // The client certificate is a well-formed certificate, but not the CA
    // that signed the engine's: the handshake must fail.
    let wrong = TlsFiles {
        ca: dir.join("cert.pem"),
        ..TlsFiles::in_dir(&dir)
    };
    let err = engine(&host, wrong)
        .engine_info()
        .await
        .expect_err("an engine whose certificate the CA did not sign is not trusted");
    eprintln!("refused as expected: {err}");
    assert!(matches!(err, RuntimeError::Unavailable(_)), "{err:?}");
    let text = format!("{err:?} {err}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("unknownissuer"),
        "the cause names the certificate problem: {text}"
    );
}

#[tokio::test]
async fn without_a_client_certificate_the_engine_refuses() {
    let (host, dir) = tls_engine();
    // The right CA, but the engine's own server certificate offered as the
    // client's: the engine (--tlsverify) refuses it (no clientAuth).
    let not_a_client = TlsFiles {
        cert: dir.join("server-cert.pem"),
        key: dir.join("server-key.pem"),
        ..TlsFiles::in_dir(&dir)
    };
    if !not_a_client.cert.exists() {
        panic!(
            "{} is missing: the TLS dir of scripts/docker-engine.sh ensure2 holds it",
            not_a_client.cert.display()
        );
    }
    let err = engine(&host, not_a_client).engine_info().await;
    assert!(
        err.is_err(),
        "a server certificate is no client certificate"
    );
}
