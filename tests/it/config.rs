//! Configuration: the example parses, layering holds, unknown keys are
//! named, text forms of values load.

use std::time::Duration;

use bus_integration_docker::config::{load, OverrideValue, Provider};

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml")
}

#[test]
fn the_example_config_parses_and_validates() {
    let config = load(Some(&example()), &[]).expect("config.example.toml loads");
    let settings = config.settings().expect("config.example.toml validates");
    assert_eq!(settings.worker.prefix.as_str(), "bus.docker");
    assert_eq!(settings.worker.max_concurrent_runs, 4);
    assert_eq!(
        settings.events.listener_retry_min,
        Duration::from_millis(250)
    );
    let names: Vec<String> = settings
        .worker
        .profiles
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    assert_eq!(names, vec!["codex", "shell"]);
    assert_eq!(
        settings.metrics_addr,
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
    );
    assert_eq!(settings.pull_timeout, Duration::from_secs(600));
    let shell = settings
        .worker
        .profiles
        .iter()
        .find(|p| p.name.as_str() == "shell")
        .unwrap();
    assert!(shell.hardening.read_only_rootfs);
    assert_eq!(shell.hardening.pids_limit, Some(128));
    assert_eq!(
        shell.hardening.nano_cpus,
        Some(2_000_000_000),
        "cpus falls back to [policy.hardening]"
    );
}

#[test]
fn unknown_keys_are_rejected_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[policy]\nmax_timout = \"5m\"\n").unwrap();
    let err = load(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("max_timout"), "{err}");
}

#[test]
fn flags_beat_the_file_and_text_values_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "provider = \"docker\"\nrunner_name = \"from-file\"\n[events]\nconsumer = \"file\"\n",
    )
    .unwrap();
    let overrides = vec![
        ("provider".to_owned(), OverrideValue::Text("static".into())),
        (
            "events.consumer".to_owned(),
            OverrideValue::Text("12345".into()),
        ),
        (
            "codex.home_writable".to_owned(),
            OverrideValue::Text("yes".into()),
        ),
        (
            "shutdown_grace".to_owned(),
            OverrideValue::Text("250ms".into()),
        ),
        ("max_concurrent_runs".to_owned(), OverrideValue::Number(2)),
    ];
    let config = load(Some(&path), &overrides).unwrap();
    assert_eq!(config.provider, Provider::Static);
    assert_eq!(config.runner_name.as_deref(), Some("from-file"));
    assert_eq!(config.events.consumer.as_deref(), Some("12345"));
    assert!(config.codex.home_writable);
    assert_eq!(config.shutdown_grace, Duration::from_millis(250));
    assert_eq!(config.max_concurrent_runs, 2);
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err = load(Some(std::path::Path::new("/nonexistent/bus.toml")), &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn invalid_values_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "event_prefix = \"bus..docker\"\n").unwrap();
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("event_prefix"), "{err}");
    std::fs::write(
        &path,
        "[policy]\nallowed_mount_roots = [\"/nonexistent-root\"]\n",
    )
    .unwrap();
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.allowed_mount_roots"), "{err}");
    std::fs::write(&path, "shutdown_grace = \"soon\"\n").unwrap();
    let err = load(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("soon"), "{err}");
}

#[test]
fn metrics_addr_and_pull_timeout_are_checked_naming_the_key() {
    let flag = |v: &str| vec![("metrics_addr".to_owned(), OverrideValue::Text(v.into()))];
    let settings = load(None, &flag("localhost:9100"))
        .unwrap()
        .settings()
        .unwrap();
    assert_eq!(settings.metrics_addr.map(|a| a.port()), Some(9100));
    assert_eq!(
        load(None, &[]).unwrap().settings().unwrap().metrics_addr,
        None
    );
    let err = load(None, &flag("nine-thousand"))
        .unwrap()
        .settings()
        .unwrap_err();
    assert!(err.to_string().contains("metrics_addr"), "{err}");
    let zero = vec![("pull_timeout".to_owned(), OverrideValue::Text("0s".into()))];
    let err = load(None, &zero).unwrap().settings().unwrap_err();
    assert!(err.to_string().contains("pull_timeout"), "{err}");
}

#[test]
fn the_metrics_addr_flag_overrides_the_file() {
    use bus_integration_docker::cli::Cli;
    use clap::Parser;
    let cli = Cli::try_parse_from(["bus-integration-docker", "--metrics-addr", "127.0.0.1:9464"])
        .expect("flag parses");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "metrics_addr = \"127.0.0.1:1\"\n").unwrap();
    let settings = load(Some(&path), &cli.worker.overrides())
        .unwrap()
        .settings()
        .unwrap();
    assert_eq!(settings.metrics_addr.map(|a| a.port()), Some(9464));
}
