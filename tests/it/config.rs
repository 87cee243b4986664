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
    let policy = &settings.worker.policy;
    assert_eq!(policy.default_timeout, Duration::from_secs(30 * 60));
    assert_eq!(policy.max_timeout, Duration::from_secs(60 * 60));
    assert_eq!(policy.networks.default_network().as_str(), "default");
    let allowed: Vec<&str> = policy
        .networks
        .allowed()
        .expect("the example narrows")
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(allowed, ["none", "default"]);
    let hosts: Vec<&str> = settings
        .docker_hosts
        .iter()
        .map(|h| h.url.as_str())
        .collect();
    assert_eq!(hosts, ["unix:///var/run/docker.sock"]);
    assert_eq!(settings.max_runs_per_engine.map(|n| n.get()), Some(4));
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

// --- engines: docker.hosts, --docker-host, BUS_DOCKER_DOCKER_HOSTS -----------

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A Docker cert directory: `ca.pem`, `cert.pem`, `key.pem`.
fn cert_dir(dir: &std::path::Path) -> std::path::PathBuf {
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(certs.join(name), "-----BEGIN CERTIFICATE-----\n").unwrap();
    }
    certs
}

fn cli_overrides(args: &[&str]) -> Vec<(String, OverrideValue)> {
    use bus_integration_docker::cli::Cli;
    use clap::Parser;
    let argv = std::iter::once("bus-integration-docker").chain(args.iter().copied());
    Cli::try_parse_from(argv)
        .expect("flags parse")
        .worker
        .overrides()
}

fn urls(settings: &bus_integration_docker::config::Settings) -> Vec<&str> {
    settings
        .docker_hosts
        .iter()
        .map(|h| h.url.as_str())
        .collect()
}

#[test]
fn docker_hosts_take_urls_and_tables_with_tls_files() {
    use bus_docker_engine::TlsFiles;
    let dir = tempfile::tempdir().unwrap();
    let certs = cert_dir(dir.path());
    let c = certs.display();
    let path = write_config(
        dir.path(),
        &format!(
            "[docker]\nmax_runs_per_engine = 3\nhosts = [\n  \"unix:///run/e1.sock\",\n  \
             {{ url = \"tcp://10.0.0.2:2376\", tls_cert_path = \"{c}\" }},\n  \
             {{ url = \"https://10.0.0.3:2376\", tls_ca = \"{c}/ca.pem\", \
             tls_cert = \"{c}/cert.pem\", tls_key = \"{c}/key.pem\" }},\n]\n"
        ),
    );
    let settings = load(Some(&path), &[]).unwrap().settings().unwrap();
    assert_eq!(
        urls(&settings),
        [
            "unix:///run/e1.sock",
            "tcp://10.0.0.2:2376",
            "https://10.0.0.3:2376"
        ]
    );
    let tls: Vec<Option<TlsFiles>> = settings
        .docker_hosts
        .iter()
        .map(|h| h.tls.clone())
        .collect();
    let expected = TlsFiles::in_dir(&certs);
    assert_eq!(tls, [None, Some(expected.clone()), Some(expected)]);
    assert_eq!(settings.max_runs_per_engine.map(|n| n.get()), Some(3));
}

#[test]
fn the_docker_host_flag_repeats_and_beats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[docker]\nhosts = [\"unix:///run/file.sock\"]\nmax_runs_per_engine = 3\n",
    );
    let flags = cli_overrides(&[
        "--docker-host",
        "unix:///run/a.sock",
        "--docker-host",
        "tcp://b:2375,,",
        "--max-runs-per-engine",
        "5",
    ]);
    let settings = load(Some(&path), &flags).unwrap().settings().unwrap();
    assert_eq!(urls(&settings), ["unix:///run/a.sock", "tcp://b:2375"]);
    assert_eq!(settings.max_runs_per_engine.map(|n| n.get()), Some(5));
    // No flag: the file's list.
    let settings = load(Some(&path), &[]).unwrap().settings().unwrap();
    assert_eq!(urls(&settings), ["unix:///run/file.sock"]);
}

#[test]
fn without_hosts_the_pool_is_the_one_docker_host() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[docker]\nhost = \"tcp://10.0.0.9:2375\"\n");
    let settings = load(Some(&path), &[]).unwrap().settings().unwrap();
    assert_eq!(urls(&settings), ["tcp://10.0.0.9:2375"]);
    assert_eq!(settings.max_runs_per_engine, None);
    let settings = load(None, &[]).unwrap().settings().unwrap();
    assert_eq!(settings.docker_hosts.len(), 1, "never empty");
    // docker.host and a host list together: ambiguous, refused.
    let flags = cli_overrides(&["--docker-host", "unix:///run/a.sock"]);
    let err = load(Some(&path), &flags).unwrap().settings().unwrap_err();
    assert!(err.to_string().contains("docker.host"), "{err}");
}

#[test]
fn duplicate_hosts_bad_schemes_and_a_zero_cap_name_their_key() {
    let settings_err = |flags: &[&str]| {
        load(None, &cli_overrides(flags))
            .unwrap()
            .settings()
            .unwrap_err()
            .to_string()
    };
    let err = settings_err(&["--docker-host", "tcp://a:2375/,tcp://a:2375"]);
    assert!(
        err.contains("docker.hosts[1]") && err.contains("docker.hosts[0]"),
        "{err}"
    );
    let err = settings_err(&["--docker-host", "unix:///a.sock,ssh://u:secret@b"]);
    assert!(
        err.contains("docker.hosts[1]") && err.contains("not supported"),
        "{err}"
    );
    assert!(!err.contains("secret"), "credentials never shown: {err}");
    let err = settings_err(&["--max-runs-per-engine", "0"]);
    assert!(err.contains("docker.max_runs_per_engine"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[docker]\nhosts = [{ url = \"tcp://a:2376\", tls_cert_path = \"/nonexistent\" }]\n",
    );
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("docker.hosts[0].tls_cert_path"), "{err}");
    let path = write_config(
        dir.path(),
        "[docker]\nhosts = [{ url = \"tcp://a:2376\", tls = 1 }]\n",
    );
    let err = load(Some(&path), &[]).unwrap_err().to_string();
    assert!(
        err.contains("tls"),
        "unknown keys of an entry are named: {err}"
    );
}

#[test]
fn the_hosts_env_var_is_comma_separated_and_below_the_flag() {
    // Through the binary: the env var is read by clap in that process
    // only. Blank entries are skipped, so the bad URL is entry [1].
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"))
            .args(["--provider", "static", "--events-url", "http://127.0.0.1:9"])
            .args(args)
            .env("BUS_API_TOKEN", "x.y.z")
            .env("BUS_DOCKER_DOCKER_HOSTS", "unix:///a.sock, ,ftp://from-env")
            .env_remove("BUS_DOCKER_CONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("docker.hosts[1]") && stderr.contains("ftp://from-env"),
        "{stderr}"
    );
    let (code, stderr) = run(&["--docker-host", "ftp://from-flag"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("docker.hosts[0]") && stderr.contains("ftp://from-flag"),
        "{stderr}"
    );
}

#[test]
fn every_unix_engine_socket_is_protected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("engines")).unwrap();
    let e1 = dir.path().join("e1.sock");
    let e2 = root.join("engines/e2.sock");
    let _l1 = std::os::unix::net::UnixListener::bind(&e1).unwrap();
    let _l2 = std::os::unix::net::UnixListener::bind(&e2).unwrap();
    let profile = |source: &std::path::Path| {
        format!(
            "[docker]\nhosts = [\"unix://{}\", \"unix://{}\"]\n\
             [profiles.tools]\nimage = \"alpine:3.20\"\n\
             mounts = [{{ source = \"{}\", target = \"/data\" }}]\n",
            e1.display(),
            e2.display(),
            source.display()
        )
    };
    let path = write_config(dir.path(), &profile(&root.join("engines")));
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("profiles.tools.mounts[0].source"), "{err}");
    assert!(
        err.contains("e2.sock"),
        "the second engine's socket is named: {err}"
    );
    // A hard link to the second socket is that socket.
    let link = root.join("innocent");
    std::fs::hard_link(&e2, &link).unwrap();
    let path = write_config(dir.path(), &profile(&link));
    assert!(load(Some(&path), &[]).unwrap().settings().is_err());
    std::fs::remove_file(&link).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    let path = write_config(dir.path(), &profile(&root.join("data")));
    load(Some(&path), &[])
        .unwrap()
        .settings()
        .expect("a directory without a socket mounts");
}

// --- v3: drop-in values (docs/protocol.md §4, §6) -------------------------------------

#[test]
fn v3_defaults_are_the_go_workers() {
    let settings = load(None, &[]).unwrap().settings().unwrap();
    let policy = &settings.worker.policy;
    assert_eq!(policy.default_timeout, Duration::from_secs(30 * 60));
    assert!(
        policy.max_timeout >= policy.default_timeout,
        "the default fits"
    );
    assert_eq!(policy.networks.default_network().as_str(), "default");
    assert!(policy.networks.allowed().is_none(), "permissive");
    // A configured maximum still caps the default.
    let capped = vec![(
        "policy.max_timeout".to_owned(),
        OverrideValue::Text("10m".into()),
    )];
    let settings = load(None, &capped).unwrap().settings().unwrap();
    assert_eq!(settings.worker.policy.max_timeout, Duration::from_secs(600));
}

/// The Bus compose `bus-docker` line on a host without an SSH agent:
/// `--codex-ssh-agent-host-path ""`. Every empty codex value is unset, as a
/// flag and in the file.
#[test]
fn empty_codex_values_are_unset() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("codex");
    std::fs::create_dir(&home).unwrap();
    let home = home.to_str().unwrap();
    let overrides = cli_overrides(&[
        "--provider",
        "docker",
        "--container-codex-image",
        "bus-local-codex:dev",
        "--codex-home-host-path",
        home,
        "--codex-home-writable",
        "",
        "--codex-ssh-host-path",
        "",
        "--codex-ssh-agent-host-path",
        "",
        "--codex-git-ssh-command",
        "",
        "--codex-workspace-host-path",
        "",
        "--codex-workspace-container-path",
        "",
    ]);
    let settings = load(None, &overrides).unwrap().settings().unwrap();
    let codex = settings
        .worker
        .profiles
        .iter()
        .find(|p| p.name.as_str() == "codex")
        .expect("the codex profile");
    let targets: Vec<&str> = codex.mounts.iter().map(|m| m.target().as_str()).collect();
    assert_eq!(targets, ["/root/.codex"], "only the home is set");
    assert!(!codex.env.contains_key("SSH_AUTH_SOCK"));
    assert!(!codex.env.contains_key("GIT_SSH_COMMAND"));
    assert!(settings.invisible_host_paths.is_empty());

    let path = write_config(
        dir.path(),
        &format!(
            "[codex]\nimage = \"bus-local-codex:dev\"\nhome_host_path = \"{home}\"\n\
             home_writable = \"\"\nssh_host_path = \"\"\nssh_agent_host_path = \"\"\n\
             git_ssh_command = \"\"\nworkspace_host_path = \"\"\n"
        ),
    );
    let settings = load(Some(&path), &[]).unwrap().settings().unwrap();
    let codex = settings.worker.profiles.iter().next().unwrap();
    assert_eq!(codex.mounts.len(), 1);
    assert!(codex.env.is_empty());
}

/// v3 §6: host paths the worker cannot see are passed on as given and
/// listed for one warning each; an engine socket is still refused, by
/// path when the worker cannot see it.
#[test]
fn codex_host_paths_the_worker_cannot_see_are_listed_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hidden = dir.path().join("host-only");
    let overrides = cli_overrides(&[
        "--container-codex-image",
        "bus-local-codex:dev",
        "--codex-home-host-path",
        hidden.join(".codex").to_str().unwrap(),
        "--codex-ssh-host-path",
        hidden.join(".ssh").to_str().unwrap(),
        "--codex-ssh-agent-host-path",
        hidden.join("agent.sock").to_str().unwrap(),
        "--codex-workspace-host-path",
        dir.path().to_str().unwrap(),
    ]);
    let settings = load(None, &overrides).unwrap().settings().unwrap();
    let keys: Vec<&str> = settings
        .invisible_host_paths
        .iter()
        .map(|p| p.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "codex.home_host_path",
            "codex.ssh_host_path",
            "codex.ssh_agent_host_path"
        ]
    );
    assert_eq!(settings.invisible_host_paths[0].path, hidden.join(".codex"));
    let codex = settings.worker.profiles.iter().next().unwrap();
    let home = codex
        .mounts
        .iter()
        .find(|m| m.target().as_str() == "/root/.codex")
        .unwrap();
    assert_eq!(home.source(), hidden.join(".codex"));

    // An engine socket the worker cannot see is refused by its path.
    let socket = hidden.join("engine.sock");
    let socket_url = format!("unix://{}", socket.display());
    let overrides = cli_overrides(&[
        "--docker-host",
        &socket_url,
        "--container-codex-image",
        "bus-local-codex:dev",
        "--codex-ssh-agent-host-path",
        socket.to_str().unwrap(),
    ]);
    let err = load(None, &overrides)
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("codex.ssh_agent_host_path"), "{err}");
    let overrides = cli_overrides(&[
        "--docker-host",
        &socket_url,
        "--container-codex-image",
        "bus-local-codex:dev",
        "--codex-home-host-path",
        hidden.to_str().unwrap(),
    ]);
    let err = load(None, &overrides)
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("codex.home_host_path"),
        "a directory holding it: {err}"
    );
}

#[test]
fn network_policy_keys_load_and_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[policy]\nallowed_networks = [\"none\", \"jobs\"]\n",
    );
    let settings = load(Some(&path), &[]).unwrap().settings().unwrap();
    let networks = &settings.worker.policy.networks;
    assert_eq!(
        networks.default_network().as_str(),
        "none",
        "the first listed"
    );
    networks
        .check(&bus_docker_domain::NetworkName::parse("jobs").unwrap())
        .unwrap();
    assert!(networks
        .check(&bus_docker_domain::NetworkName::parse("default").unwrap())
        .is_err());
    let path = write_config(
        dir.path(),
        "[policy]\nallowed_networks = [\"none\"]\ndefault_network = \"jobs\"\n",
    );
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.default_network"), "{err}");
    let path = write_config(dir.path(), "[policy]\ndefault_network = \"a b\"\n");
    let err = load(Some(&path), &[])
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("policy.default_network"), "{err}");
}
