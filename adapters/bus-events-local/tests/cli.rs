//! The `bus-events-local` binary: `serve` and `mint-token`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bus-events-local");
const WAIT: Duration = Duration::from_secs(20);

/// The binary with a clean environment for its own variables.
fn command() -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("BUS_EVENTS_SECRET")
        .env_remove("BUS_EVENTS_SECRET_FILE")
        .env_remove("BUS_EVENTS_LISTEN")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn mint(secret_env: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        WAIT,
        command()
            .env("BUS_EVENTS_SECRET", secret_env)
            .arg("mint-token")
            .args(args)
            .output(),
    )
    .await
    .expect("mint-token finishes")
    .expect("mint-token runs");
    assert!(
        output.status.success(),
        "mint-token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let token = stdout.trim_end().to_owned();
    assert_eq!(
        token.lines().count(),
        1,
        "only the token on stdout: {stdout:?}"
    );
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

#[tokio::test]
async fn serve_accepts_tokens_from_mint_token_and_stops_on_sigterm() {
    let secret_file =
        std::env::temp_dir().join(format!("bus-events-local-{}.secret", std::process::id()));
    std::fs::write(&secret_file, "base64:Y2xpIHNlY3JldA==\n").expect("write secret file");

    let mut server = command()
        .args(["serve", "--listen", "127.0.0.1:0", "--secret-file"])
        .arg(&secret_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = server.stdout.take().expect("stdout piped");
    let first = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
        .await
        .expect("listening line in time")
        .expect("stdout readable")
        .expect("a line");
    let base_url = first
        .strip_prefix("bus-events-local listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");

    // "cli secret" is what the base64 in the file decodes to.
    let token = mint(
        "cli secret",
        &[
            "--sub",
            "cli-test",
            "--scope",
            "events:write",
            "--ttl",
            "5m",
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base_url}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let published = client
        .post(format!("{base_url}/api/v1/events"))
        .bearer_auth(&token)
        .json(&json!({"name": "cli"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(published.status(), 202);

    let pid = server.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, server.wait())
        .await
        .expect("exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "graceful exit, got {status}");
    let _ = std::fs::remove_file(&secret_file);
}

#[tokio::test]
async fn mint_token_uses_the_given_claims() {
    let token = mint(
        "env secret",
        &["--sub", "someone", "--aud", "other/aud", "--ttl", "120"],
    )
    .await;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["other/aud"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(b"env secret"),
        &validation,
    )
    .expect("valid token")
    .claims;
    assert_eq!(claims["sub"], "someone");
    assert_eq!(claims["scope"], "events:read events:write");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        120
    );
}

#[tokio::test]
async fn a_missing_secret_is_a_clear_error() {
    let output = tokio::time::timeout(WAIT, command().args(["mint-token", "--sub", "x"]).output())
        .await
        .expect("finishes")
        .expect("runs");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("BUS_EVENTS_SECRET"), "{stderr}");
}
