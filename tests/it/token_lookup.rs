//! The worker binary finds its token the Bus way (docs/protocol.md §1), logs which
//! source it used (never the token), and writes no ANSI colour to a stderr
//! that is not a terminal.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bus_integration_docker::local::LocalBus;
use common::settings;

/// Starts the worker (static provider) with `env`, waits until its streams
/// are connected, stops it and returns its stderr.
async fn run_worker(bus: &LocalBus, prefix: &str, home: &Path, env: &[(&str, String)]) -> String {
    let s = settings(&format!(
        "provider = \"static\"\nevent_prefix = \"{prefix}\"\n"
    ));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"));
    for var in [
        "BUS_API_TOKEN",
        "BUS_API_TOKEN_FILE",
        "BUS_CONFIG_DIR",
        "BUS_DOCKER_CONFIG",
        "NO_COLOR",
    ] {
        command.env_remove(var);
    }
    let child = command
        .env("HOME", home)
        .env("RUST_LOG", "info")
        .env("BUS_EVENTS_API_URL", bus.url())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["--provider", "static", "--event-prefix", prefix])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("worker starts");
    common::wait_connected(bus, &s, 1).await;
    let pid = child.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("worker exits")
        .expect("output");
    String::from_utf8(out.stderr).expect("utf-8 logs")
}

fn token_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|line| line.contains("events api token"))
        .unwrap_or_else(|| panic!("no token source line in:\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_order_file_then_env_then_config_dir() {
    let bus = LocalBus::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = bus.token().to_owned();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let config_dir = dir.path().join("bus-config");
    std::fs::create_dir_all(config_dir.join("auth")).unwrap();
    std::fs::write(config_dir.join("auth/api-token"), format!("{token}\n")).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".config/bus/auth")).unwrap();
    std::fs::write(home.join(".config/bus/auth/api-token"), &token).unwrap();

    // The file wins over a (wrong) BUS_API_TOKEN.
    let env = [
        ("BUS_API_TOKEN_FILE", file.display().to_string()),
        ("BUS_API_TOKEN", "wrong-token".to_owned()),
    ];
    let stderr = run_worker(&bus, "tl.file", &home, &env).await;
    assert!(token_line(&stderr).contains(&format!("token file {}", file.display())));

    // Then BUS_API_TOKEN, over the config directory.
    let env = [
        ("BUS_API_TOKEN", token.clone()),
        ("BUS_CONFIG_DIR", "/nonexistent".to_owned()),
    ];
    let stderr = run_worker(&bus, "tl.env", &home, &env).await;
    assert!(
        token_line(&stderr).contains("source=BUS_API_TOKEN"),
        "{stderr}"
    );

    // Then $BUS_CONFIG_DIR/auth/api-token.
    let env = [("BUS_CONFIG_DIR", config_dir.display().to_string())];
    let stderr = run_worker(&bus, "tl.cfg", &home, &env).await;
    assert!(token_line(&stderr).contains(&config_dir.join("auth/api-token").display().to_string()));

    // Then ~/.config/bus/auth/api-token.
    let stderr = run_worker(&bus, "tl.home", &home, &[]).await;
    assert!(
        token_line(&stderr).contains(".config/bus/auth/api-token"),
        "{stderr}"
    );

    assert!(!stderr.contains(&token), "the token is never logged");
    assert!(
        !stderr.contains('\u{1b}'),
        "no ANSI colour off a terminal:\n{stderr}"
    );
    bus.shutdown().await;
}
