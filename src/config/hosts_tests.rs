use super::*;

fn key_of(err: ConfigError) -> String {
    err.key()
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no key named: {err}"))
}

fn url(u: &str) -> HostEntry {
    HostEntry::Url(u.to_owned())
}

/// A directory with `ca.pem`, `cert.pem` and `key.pem`.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::write(dir.path().join(name), "-----BEGIN X-----\n").unwrap();
    }
    dir
}

#[test]
fn the_env_form_splits_on_commas_and_ignores_blanks() {
    let parsed: Vec<HostEntry> = HostsVisitor
        .visit_str::<sde::value::Error>(" unix:///a.sock,, tcp://b:2375 ,")
        .unwrap();
    assert_eq!(parsed, vec![url("unix:///a.sock"), url("tcp://b:2375")]);
}

#[test]
fn no_hosts_is_the_one_docker_host() {
    let one = docker_hosts(Some("tcp://10.0.0.1:2375"), &[], true).unwrap();
    assert_eq!(
        one,
        vec![DockerHostSettings {
            url: "tcp://10.0.0.1:2375".into(),
            tls: None
        }]
    );
    let fallback = docker_hosts(None, &[], false).unwrap();
    assert_eq!(fallback.len(), 1, "never empty");
    assert_eq!(
        key_of(docker_hosts(Some("ftp://x"), &[], false).unwrap_err()),
        "docker.host"
    );
}

#[test]
fn hosts_and_host_together_are_refused() {
    let err = docker_hosts(Some("unix:///a.sock"), &[url("unix:///b.sock")], true).unwrap_err();
    assert_eq!(key_of(err), "docker.host");
}

#[test]
fn duplicates_and_bad_schemes_name_their_entry() {
    let dup = [
        url("tcp://a:2375/"),
        url("unix:///b.sock"),
        url("tcp://a:2375"),
    ];
    let err = docker_hosts(None, &dup, true).unwrap_err();
    assert!(err.to_string().contains("docker.hosts[0]"), "{err}");
    assert_eq!(key_of(err), "docker.hosts[2]");
    let bad = [url("unix:///b.sock"), url("ssh://user:pw@box")];
    let err = docker_hosts(None, &bad, true).unwrap_err();
    assert!(
        !err.to_string().contains("pw"),
        "no credentials in errors: {err}"
    );
    assert_eq!(key_of(err), "docker.hosts[1]");
    let empty = [url(" ")];
    assert_eq!(
        key_of(docker_hosts(None, &empty, true).unwrap_err()),
        "docker.hosts[0]"
    );
}

#[test]
fn tls_comes_from_a_cert_dir_or_three_files() {
    let dir = cert_dir();
    let d = dir.path().display().to_string();
    let by_dir = HostEntry::Table(HostTable {
        url: "tcp://127.0.0.1:2376".into(),
        tls_cert_path: Some(d.clone()),
        ..HostTable::default()
    });
    let by_files = HostEntry::Table(HostTable {
        url: "https://127.0.0.1:2377".into(),
        tls_ca: Some(format!("{d}/ca.pem")),
        tls_cert: Some(format!("{d}/cert.pem")),
        tls_key: Some(format!("{d}/key.pem")),
        ..HostTable::default()
    });
    let hosts = docker_hosts(None, &[by_dir, by_files], true).unwrap();
    let expected = TlsFiles::in_dir(dir.path());
    assert_eq!(hosts[0].tls.as_ref(), Some(&expected));
    assert_eq!(hosts[1].tls.as_ref(), Some(&expected));
}

#[test]
fn incomplete_missing_or_misplaced_tls_is_named() {
    let dir = cert_dir();
    let d = dir.path().display().to_string();
    let table = |url: &str| HostTable {
        url: url.into(),
        tls_cert_path: Some(d.clone()),
        ..HostTable::default()
    };
    let check =
        |t: HostTable| key_of(docker_hosts(None, &[HostEntry::Table(t)], true).unwrap_err());
    assert_eq!(
        check(table("unix:///var/run/docker.sock")),
        "docker.hosts[0].url"
    );
    let partial = HostTable {
        tls_cert_path: None,
        tls_ca: Some(format!("{d}/ca.pem")),
        tls_cert: Some(format!("{d}/cert.pem")),
        ..table("tcp://h:2376")
    };
    assert_eq!(check(partial.clone()), "docker.hosts[0].tls_key");
    let both = HostTable {
        tls_cert_path: Some(d.clone()),
        ..partial.clone()
    };
    assert_eq!(check(both), "docker.hosts[0].tls_cert_path");
    let missing = HostTable {
        tls_key: Some(format!("{d}/absent.pem")),
        ..partial
    };
    assert_eq!(check(missing), "docker.hosts[0].tls_key");
    std::fs::remove_file(dir.path().join("cert.pem")).unwrap();
    assert_eq!(
        check(table("tcp://h:2376")),
        "docker.hosts[0].tls_cert_path"
    );
}

#[test]
fn the_per_engine_cap_is_at_least_one() {
    assert_eq!(per_engine_cap(None).unwrap(), None);
    assert_eq!(per_engine_cap(Some(3)).unwrap(), NonZeroUsize::new(3));
    assert_eq!(
        key_of(per_engine_cap(Some(0)).unwrap_err()),
        "docker.max_runs_per_engine"
    );
}
