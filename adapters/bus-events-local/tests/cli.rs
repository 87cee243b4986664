//! The `bus-events-local` binary: `serve` and `token issue --local`, with
//! the Bus spellings of flags and secret variables.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_bus-events-local");
const WAIT: Duration = Duration::from_secs(20);

/// The binary with a clean environment for its own variables.
fn command() -> Command {
    let mut command = Command::new(BIN);
    for name in [
        "BUS_API_JWT_SECRET",
        "BUS_API_JWT_SECRET_FILE",
        "BUS_EVENTS_JWT_SECRET",
        "BUS_AUTH_HS256_SECRET",
        "BUS_AUTH_HS256_SECRET_FILE",
        "BUS_EVENTS_ADDR",
        "BUS_EVENTS_BACKEND",
    ] {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// `token issue --local <args>` with `BUS_AUTH_HS256_SECRET=secret_env`;
/// returns stdout without its final newline.
async fn issue(secret_env: &str, args: &[&str]) -> String {
    let output = tokio::time::timeout(
        WAIT,
        command()
            .env("BUS_AUTH_HS256_SECRET", secret_env)
            .args(["token", "issue", "--local"])
            .args(args)
            .output(),
    )
    .await
    .expect("token issue finishes")
    .expect("token issue runs");
    assert!(
        output.status.success(),
        "token issue failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let text = stdout.trim_end().to_owned();
    assert_eq!(text.lines().count(), 1, "one line on stdout: {stdout:?}");
    text
}

fn decode(token: &str, secret: &[u8], audience: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[audience]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret),
        &validation,
    )
    .expect("valid token")
    .claims
}

/// Starts `serve` with `args` and env; returns the child and its base URL.
async fn start_serve(env: &[(&str, &str)], args: &[&str]) -> (tokio::process::Child, String) {
    let mut server = command()
        .envs(env.iter().copied())
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--events-backend",
            "memory",
        ])
        .args(args)
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
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{base_url}");
    (server, base_url)
}

async fn publish(base_url: &str, token: &str, name: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base_url}/api/v1/events"))
        .bearer_auth(token)
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("publish")
        .status()
        .as_u16()
}

#[tokio::test]
async fn serve_accepts_issued_tokens_and_stops_on_sigterm() {
    let secret_file =
        std::env::temp_dir().join(format!("bus-events-local-{}.secret", std::process::id()));
    std::fs::write(&secret_file, "base64:Y2xpIHNlY3JldA==\n").expect("write secret file");
    let (mut server, base_url) = start_serve(
        &[],
        &[
            "--jwt-secret-file",
            secret_file.to_str().expect("utf-8 path"),
        ],
    )
    .await;

    // "cli secret" is what the base64 in the file decodes to.
    let token = issue(
        "cli secret",
        &[
            "--subject",
            "cli-test",
            "--audience",
            "ai.hg.fi/api",
            "--scope",
            "events:send container:read",
            "--ttl",
            "5m",
        ],
    )
    .await;
    assert_eq!(publish(&base_url, &token, "cli").await, 202);
    let addr = base_url.trim_start_matches("http://").to_owned();
    let healthy = command()
        .args(["health", "--addr", &addr])
        .status()
        .await
        .expect("runs");
    assert!(healthy.success(), "health of a running server");
    assert_eq!(
        publish(&base_url, &token, "bus.docker.status.request").await,
        202
    );
    assert_eq!(
        publish(&base_url, &token, "bus.docker.run.request").await,
        403
    );

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
async fn serve_reads_the_bus_secret_variable_and_its_older_name() {
    for variable in ["BUS_API_JWT_SECRET", "BUS_EVENTS_JWT_SECRET"] {
        let (server, base_url) = start_serve(&[(variable, "base64:ZW52IHNlY3JldA==")], &[]).await;
        let token = issue("env secret", &["--subject", "s", "--scope", "events:send"]).await;
        assert_eq!(publish(&base_url, &token, "x").await, 202, "{variable}");
        let wrong = issue("other", &["--subject", "s", "--scope", "events:send"]).await;
        assert_eq!(publish(&base_url, &wrong, "x").await, 401, "{variable}");
        drop(server);
    }
}

#[tokio::test]
async fn token_issue_writes_the_given_claims() {
    let token = issue(
        "env secret",
        &[
            "--subject",
            "someone",
            "--audience",
            "other/aud",
            "--scope",
            "events:send events:listen",
            "--ttl",
            "12h",
        ],
    )
    .await;
    let claims = decode(&token, b"env secret", "other/aud");
    assert_eq!(claims["sub"], "someone");
    assert_eq!(claims["scope"], "events:send events:listen");
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        12 * 3600
    );
}

#[tokio::test]
async fn token_issue_json_and_a_secret_file_with_a_trailing_newline() {
    let dir = std::env::temp_dir().join(format!("bus-events-local-issue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret_file = dir.join("hs256");
    std::fs::write(&secret_file, "file secret\n").expect("write");
    let output = tokio::time::timeout(
        WAIT,
        command()
            .env("BUS_AUTH_HS256_SECRET", "ignored: the file wins")
            .args(["token", "issue", "--local", "--subject", "acct"])
            .args(["--scope", "container:run", "--format", "json"])
            .arg("--hs256-secret-file")
            .arg(&secret_file)
            .output(),
    )
    .await
    .expect("finishes")
    .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let value: Value = serde_json::from_slice(&output.stdout).expect("one JSON object");
    assert_eq!(value["subject"], "acct");
    assert_eq!(value["scope"], "container:run");
    let token = value["token"].as_str().expect("token");
    assert_eq!(decode(token, b"file secret", "ai.hg.fi/api")["sub"], "acct");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_issue_output_is_a_private_file() {
    let dir = std::env::temp_dir().join(format!("bus-events-local-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = dir.join("api-token");
    let status = command()
        .env("BUS_AUTH_HS256_SECRET", "s")
        .args([
            "token",
            "issue",
            "--local",
            "--subject",
            "a",
            "--scope",
            "events:send",
        ])
        .arg("--output")
        .arg(&out)
        .status()
        .await
        .expect("runs");
    assert!(status.success());
    let token = std::fs::read_to_string(&out).expect("written");
    assert_eq!(decode(token.trim_end(), b"s", "ai.hg.fi/api")["sub"], "a");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn failure(env: &[(&str, &str)], args: &[&str]) -> String {
    let output = tokio::time::timeout(
        WAIT,
        command().envs(env.iter().copied()).args(args).output(),
    )
    .await
    .expect("finishes")
    .expect("runs");
    assert!(!output.status.success(), "{args:?} should fail");
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn bad_invocations_are_clear_errors() {
    let stderr = failure(
        &[],
        &[
            "token",
            "issue",
            "--local",
            "--subject",
            "x",
            "--scope",
            "s",
        ],
    )
    .await;
    assert!(stderr.contains("BUS_AUTH_HS256_SECRET"), "{stderr}");

    let stderr = failure(&[], &["health", "--addr", "127.0.0.1:9"]).await;
    assert!(stderr.contains("not healthy"), "{stderr}");

    let stderr = failure(&[], &["serve", "--addr", "127.0.0.1:0"]).await;
    assert!(stderr.contains("BUS_API_JWT_SECRET"), "{stderr}");

    let stderr = failure(
        &[("BUS_API_JWT_SECRET", "s")],
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--events-backend",
            "postgres",
        ],
    )
    .await;
    assert!(
        stderr.contains("`postgres` is not supported by the development server"),
        "{stderr}"
    );

    let stderr = failure(
        &[("BUS_AUTH_HS256_SECRET", "s")],
        &["token", "issue", "--subject", "x", "--scope", "s"],
    )
    .await;
    assert!(stderr.contains("--local"), "{stderr}");
}
