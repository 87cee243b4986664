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
        "BUS_EVENTS_PORT",
        "BUS_EVENTS_BACKEND",
        "BUS_LOCAL_ACCOUNT_ID",
        "BUS_LOCAL_JWT_SECRET",
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
    let mut all = vec!["--addr", "127.0.0.1:0", "--events-backend", "memory"];
    all.extend_from_slice(args);
    spawn_serve(env, &all, Stdio::null()).await
}

/// Starts `serve <args>` exactly as given; returns the child (its stderr
/// as asked) and its base URL.
async fn spawn_serve(
    env: &[(&str, &str)],
    args: &[&str],
    stderr: Stdio,
) -> (tokio::process::Child, String) {
    let mut server = command()
        .envs(env.iter().copied())
        .arg("serve")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
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
    for variable in [
        "BUS_API_JWT_SECRET",
        "BUS_EVENTS_JWT_SECRET",
        "BUS_LOCAL_JWT_SECRET",
    ] {
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

/// `token <args>` with `BUS_AUTH_HS256_SECRET=secret` and `env`; returns
/// the whole output.
async fn token_command(secret: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    tokio::time::timeout(
        WAIT,
        command()
            .env("BUS_AUTH_HS256_SECRET", secret)
            .envs(env.iter().copied())
            .arg("token")
            .args(args)
            .output(),
    )
    .await
    .expect("token finishes")
    .expect("token runs")
}

fn stdout_token(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("utf-8")
        .trim_end()
        .to_owned()
}

/// Splits a shell-quoted BusDK command line (single and double quotes, no
/// escapes) into words.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for ch in line.chars() {
        match (quote, ch) {
            (None, '\'' | '"') => {
                quote = Some(ch);
                in_word = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[tokio::test]
async fn every_way_busdk_calls_bus_operator_token_works_with_the_name_swapped() {
    // The arguments after `bus-operator-token` in BusDK's compose.yaml,
    // scripts/*.sh and tests/superproject/*.sh (develop), with their shell
    // variables filled in.
    let calls = [
        // compose.yaml: bus-local-token and every service's BUS_API_TOKEN
        r#"--format token issue --local --subject "00000000-0000-4000-8000-000000000001" --audience ai.hg.fi/api --scope "events:send events:listen container:read container:run container:delete container:admin" --ttl 12h"#,
        // compose.yaml: the auth token
        r#"--format token issue --local --subject "00000000-0000-4000-8000-000000000001" --audience ai.hg.fi/auth --scope "waitlist:read waitlist:approve admin:manage" --ttl 12h"#,
        // scripts/test-local-*-smoke.sh, test-local-task-events-proof.sh (multi-line)
        "--format token issue --local \
         --subject acct_local_spark \
         --audience ai.hg.fi/api \
         --scope 'events:send events:listen dev:task:send dev:task:read dev:task:reply dev:task:claim notes.write notes.read notes.search' \
         --ttl 2h",
        // scripts/h100-offload-runner.sh
        r#"--format token issue --local --subject "acct" --audience "ai.hg.fi/api" --scope "events:send events:listen" --ttl "2h""#,
        // tests/superproject/test_dev_task_docker_compose_smoke.sh
        r#"--format token issue --local --subject "00000000-0000-4000-8000-000000000001" --audience ai.hg.fi/api --scope "notes.write notes.read notes.search" --ttl 2h"#,
    ];
    for call in calls {
        let args = words(call);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = token_command("busdk secret", &[], &args).await;
        let token = stdout_token(&output);
        let audience = args[args.iter().position(|a| *a == "--audience").unwrap() + 1];
        let claims = decode(&token, b"busdk secret", audience);
        let subject = args[args.iter().position(|a| *a == "--subject").unwrap() + 1];
        let scope = args[args.iter().position(|a| *a == "--scope").unwrap() + 1];
        assert_eq!(claims["sub"], subject, "{call}");
        assert_eq!(claims["scope"], scope, "{call}");
    }
}

#[tokio::test]
async fn token_global_flags_go_before_or_after_the_verb() {
    let scope = ["--scope", "events:send"];
    for args in [
        vec!["--format", "json", "issue", "--local"],
        vec!["issue", "--local", "--format", "json"],
        vec!["--format", "json", "--local", "issue"],
        vec![
            "--quiet",
            "--timeout",
            "30s",
            "--format",
            "json",
            "issue",
            "--local",
        ],
        vec![
            "issue",
            "--local",
            "--format",
            "json",
            "--quiet",
            "--timeout",
            "30",
        ],
    ] {
        let mut all = args.clone();
        all.extend_from_slice(&scope);
        let output = token_command("s", &[], &all).await;
        let value: Value = serde_json::from_str(&stdout_token(&output)).expect("json");
        assert_eq!(value["scope"], "events:send", "{all:?}");
    }

    let dir = tempfile::tempdir().expect("dir");
    for (n, args) in [
        vec!["--output", "OUT", "--quiet", "issue", "--local"],
        vec!["issue", "--local", "--output", "OUT", "--quiet"],
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("token-{n}"));
        let out_text = out.to_str().expect("utf-8").to_owned();
        let mut all: Vec<&str> = args
            .iter()
            .map(|a| if *a == "OUT" { out_text.as_str() } else { a })
            .collect();
        all.extend_from_slice(&scope);
        let output = token_command("s", &[], &all).await;
        assert!(output.status.success(), "{all:?}: {output:?}");
        assert!(
            output.stdout.is_empty() && output.stderr.is_empty(),
            "quiet"
        );
        let token = std::fs::read_to_string(&out).expect("written");
        assert_eq!(
            decode(token.trim_end(), b"s", "ai.hg.fi/api")["scope"],
            "events:send"
        );
    }
}

#[tokio::test]
async fn the_subject_defaults_to_the_local_account_id() {
    let args = ["issue", "--local", "--scope", "events:send"];
    let token = stdout_token(&token_command("s", &[], &args).await);
    assert_eq!(
        decode(&token, b"s", "ai.hg.fi/api")["sub"],
        "00000000-0000-4000-8000-000000000001"
    );
    let token =
        stdout_token(&token_command("s", &[("BUS_LOCAL_ACCOUNT_ID", "acct-7")], &args).await);
    assert_eq!(decode(&token, b"s", "ai.hg.fi/api")["sub"], "acct-7");
    let args = ["issue", "--local", "--scope", "x", "--subject", "explicit"];
    let token =
        stdout_token(&token_command("s", &[("BUS_LOCAL_ACCOUNT_ID", "acct-7")], &args).await);
    assert_eq!(decode(&token, b"s", "ai.hg.fi/api")["sub"], "explicit");
}

/// Runs `token issue --output <out>` with a symlink planted, in the child
/// between fork and exec (so with the child's own pid), at the name the
/// old code used for its temporary file: `.<file>.<pid>.tmp`.
fn issue_with_planted_link(
    out: &std::path::Path,
    victim: &std::path::Path,
) -> std::process::Output {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::process::CommandExt as _;

    let dir = CString::new(out.parent().expect("dir").as_os_str().as_bytes()).expect("cstr");
    let prefix = format!(
        ".{}.",
        out.file_name().expect("name").to_str().expect("utf-8")
    );
    let victim = CString::new(victim.as_os_str().as_bytes()).expect("cstr");
    let mut command = std::process::Command::new(BIN);
    command
        .env("BUS_AUTH_HS256_SECRET", "s")
        .args([
            "token",
            "issue",
            "--local",
            "--scope",
            "events:send",
            "--output",
        ])
        .arg(out);
    // SAFETY: the closure only formats into a stack buffer and calls
    // getpid and symlinkat, which are async-signal-safe; nothing allocates.
    unsafe {
        command.pre_exec(move || {
            let mut path = [0u8; 512];
            let mut len = 0;
            for &b in dir.as_bytes().iter().chain(b"/").chain(prefix.as_bytes()) {
                path[len] = b;
                len += 1;
            }
            let pid = libc::getpid() as u32;
            let mut digits = [0u8; 10];
            let mut n = 0;
            let mut rest = pid;
            loop {
                digits[n] = b'0' + (rest % 10) as u8;
                n += 1;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            for i in (0..n).rev() {
                path[len] = digits[i];
                len += 1;
            }
            for &b in b".tmp\0" {
                path[len] = b;
                len += 1;
            }
            libc::symlink(victim.as_ptr(), path.as_ptr().cast());
            Ok(())
        });
    }
    command.output().expect("runs")
}

#[test]
fn token_output_never_writes_through_a_planted_symlink() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("dir");
    let elsewhere = tempfile::tempdir().expect("victim dir");
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let out = dir.path().join("api-token");

    // A link at the old predictable temporary name.
    let output = issue_with_planted_link(&out, &victim);
    assert!(output.status.success(), "{output:?}");
    let planted = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(".api-token.") && name.ends_with(".tmp")
        })
        .expect("the planted link is there");
    assert!(std::fs::symlink_metadata(&planted)
        .expect("meta")
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    let token = std::fs::read_to_string(&out).expect("token written");
    assert_eq!(
        decode(token.trim_end(), b"s", "ai.hg.fi/api")["scope"],
        "events:send"
    );
    assert_eq!(
        std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777,
        0o600
    );

    // The target itself is a link: it is replaced, its target untouched.
    let linked = dir.path().join("linked-token");
    std::os::unix::fs::symlink(&victim, &linked).expect("link");
    let status = std::process::Command::new(BIN)
        .env("BUS_AUTH_HS256_SECRET", "s")
        .args([
            "token",
            "issue",
            "--local",
            "--scope",
            "events:send",
            "--quiet",
            "--output",
        ])
        .arg(&linked)
        .status()
        .expect("runs");
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    let meta = std::fs::symlink_metadata(&linked).expect("meta");
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by the file"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // Nothing but the two token files is left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".tmp"))
        .collect();
    names.sort();
    assert_eq!(names, ["api-token", "linked-token"]);
}

/// The port `serve` printed.
fn port_of(base_url: &str) -> u16 {
    base_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

#[tokio::test]
async fn serve_takes_the_bus_api_serve_layout_with_a_base_path() {
    let secret = [("BUS_API_JWT_SECRET", "layout secret")];
    let (server, base_url) = spawn_serve(
        &secret,
        &[
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--token",
            "local",
            "--provider",
            "events",
        ],
        Stdio::null(),
    )
    .await;
    let token = issue(
        "layout secret",
        &["--subject", "s", "--scope", "events:send events:listen"],
    )
    .await;
    // A client whose base URL is http://HOST:PORT/local/v1 and one at the root.
    assert_eq!(
        publish(&format!("{base_url}/local/v1"), &token, "x.y").await,
        202
    );
    assert_eq!(publish(&base_url, &token, "x.y").await, 202);
    assert_eq!(
        publish(&format!("{base_url}/other/v1"), &token, "x.y").await,
        404
    );
    let client = reqwest::Client::new();
    let stream = client
        .get(format!(
            "{base_url}/local/v1/api/v1/events/stream?name=x.y&replay=true&follow=false"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.text().await.expect("body").lines().count(), 2);
    let caps = client
        .get(format!("{base_url}/local/v1/api/v1/events/capabilities"))
        .send()
        .await
        .expect("capabilities");
    assert_eq!(caps.status(), 200);
    drop(server);

    // A custom template, and the port from BUS_EVENTS_PORT.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    let port_text = port.to_string();
    let (server, base_url) = spawn_serve(
        &[secret[0], ("BUS_EVENTS_PORT", &port_text)],
        &[
            "--listen",
            "127.0.0.1",
            "--token",
            "t0k",
            "--base-path",
            "/api-{token}",
        ],
        Stdio::null(),
    )
    .await;
    assert_eq!(port_of(&base_url), port);
    assert_eq!(
        publish(&format!("{base_url}/api-t0k"), &token, "x.y").await,
        202
    );
    drop(server);
}

#[tokio::test]
async fn serve_refuses_layouts_it_cannot_honour() {
    let env = [("BUS_API_JWT_SECRET", "s")];
    for (args, expected) in [
        (&["--token", "local", "--base-path", "/v1"][..], "{token}"),
        (
            &["--port", "0", "--provider", "auth"][..],
            "--provider `auth`",
        ),
        (
            &["--addr", "127.0.0.1:0", "--listen", "127.0.0.1"][..],
            "not both",
        ),
        (&["--listen", "no such host", "--port", "0"][..], "--listen"),
        (
            &["--port", "0", "--base-path", "/{token}/v1"][..],
            "--token",
        ),
    ] {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let stderr = failure(&env, &all).await;
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn an_event_no_listener_can_receive_is_logged_with_both_identities() {
    let (mut server, base_url) = spawn_serve(
        &[("BUS_API_JWT_SECRET", "s"), ("RUST_LOG", "info")],
        &["--addr", "127.0.0.1:0"],
        Stdio::piped(),
    )
    .await;
    let stderr = server.stderr.take().expect("stderr piped");
    let mut lines = BufReader::new(stderr).lines();
    let listener = issue(
        "s",
        &["--subject", "listener-identity", "--scope", "events:listen"],
    )
    .await;
    let publisher = issue(
        "s",
        &["--subject", "publisher-identity", "--scope", "events:send"],
    )
    .await;
    let stream = reqwest::Client::new()
        .get(format!(
            "{base_url}/api/v1/events/stream?name=app.ping&delivery=unicast"
        ))
        .bearer_auth(&listener)
        .send()
        .await
        .expect("stream");
    assert_eq!(stream.status(), 200);
    assert_eq!(publish(&base_url, &publisher, "app.ping").await, 202);
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            if line.contains("no listener can receive") {
                return line;
            }
        }
        panic!("stderr ended without the line");
    })
    .await
    .expect("the line in time");
    assert!(found.contains("INFO"), "{found}");
    assert!(found.contains("publisher-identity"), "{found}");
    assert!(found.contains("listener-identity"), "{found}");
    assert!(found.contains("app.ping"), "{found}");
    drop(stream);
}

#[tokio::test]
async fn the_bus_env_example_secret_name_serves_and_signs() {
    // Only the name of the Bus .env.example, for both sides; an empty
    // BUS_API_JWT_SECRET (compose passes it through unset) counts as unset.
    let env = [
        (
            "BUS_LOCAL_JWT_SECRET",
            "not-a-secret-local-development-hs256-key",
        ),
        ("BUS_API_JWT_SECRET", ""),
    ];
    let (server, base_url) = spawn_serve(&env, &["--addr", "127.0.0.1:0"], Stdio::null()).await;
    let output = tokio::time::timeout(
        WAIT,
        command()
            .envs(env)
            .env("BUS_AUTH_HS256_SECRET", "")
            .args(["token", "issue", "--local", "--scope", "events:send"])
            .output(),
    )
    .await
    .expect("finishes")
    .expect("runs");
    let token = stdout_token(&output);
    assert_eq!(publish(&base_url, &token, "x").await, 202);
    drop(server);
}
