use std::os::unix::fs::PermissionsExt;

use super::*;

fn config(dir: &Path, json: &str) -> ClientConfig {
    std::fs::write(dir.join("config.json"), json).unwrap();
    ClientConfig::locate(Some(dir))
}

#[test]
fn the_registry_is_the_first_component_when_it_looks_like_a_host() {
    for (image, host, key) in [
        ("alpine", "docker.io", DOCKER_HUB_KEY),
        ("library/alpine:3", "docker.io", DOCKER_HUB_KEY),
        ("docker.io/library/alpine", "docker.io", DOCKER_HUB_KEY),
        ("index.docker.io/x/y", "index.docker.io", DOCKER_HUB_KEY),
        (
            "127.0.0.1:5000/team/app:1",
            "127.0.0.1:5000",
            "127.0.0.1:5000",
        ),
        ("localhost/app", "localhost", "localhost"),
        ("ghcr.io/o/app@sha256:ab", "ghcr.io", "ghcr.io"),
        ("team/app", "docker.io", DOCKER_HUB_KEY),
    ] {
        let r = Registry::of_image(image);
        assert_eq!((r.host(), r.config_key()), (host, key), "{image}");
    }
}

#[tokio::test]
async fn auths_entries_match_by_host_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        r#"{"auths": {
            "https://127.0.0.1:5000/v2/": {"auth": "dXNlcjpwYTpzcw=="},
            "https://index.docker.io/v1/": {"username": "hub", "password": "hubpass"},
            "ghcr.io": {"identitytoken": "tok"},
            "empty.io": {}
        }}"#,
    );
    let local = c
        .credentials(&Registry::of_image("127.0.0.1:5000/a:1"))
        .await
        .unwrap()
        .unwrap();
    let sent = local.to_engine();
    assert_eq!(sent.username.as_deref(), Some("user"));
    assert_eq!(
        sent.password.as_deref(),
        Some("pa:ss"),
        "only the first colon splits"
    );
    assert_eq!(sent.serveraddress.as_deref(), Some("127.0.0.1:5000"));
    assert_eq!(
        local.origin,
        Origin::ConfigFile(dir.path().join("config.json"))
    );
    let hub = c
        .credentials(&Registry::of_image("alpine"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hub.to_engine().serveraddress.as_deref(),
        Some(DOCKER_HUB_KEY)
    );
    let ghcr = c
        .credentials(&Registry::of_image("ghcr.io/a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ghcr.to_engine().identitytoken.as_deref(), Some("tok"));
    assert!(c
        .credentials(&Registry::of_image("empty.io/a"))
        .await
        .unwrap()
        .is_none());
    assert!(c
        .credentials(&Registry::of_image("other.io/a"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        r#"{"auths": {"r.io": {"username": "u", "password": "hunter2-secret"}, "bad.io": {"auth": "!!notbase64"}}}"#,
    );
    let auth = c
        .credentials(&Registry::of_image("r.io/a"))
        .await
        .unwrap()
        .unwrap();
    let debug = format!("{auth:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("[redacted]"), "{debug}");
    let err = c
        .credentials(&Registry::of_image("bad.io/a"))
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("bad.io") && !text.contains("notbase64"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_file_means_anonymous_and_a_broken_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let c = ClientConfig::locate(Some(dir.path()));
    assert!(c
        .credentials(&Registry::of_image("r.io/a"))
        .await
        .unwrap()
        .is_none());
    let c = config(dir.path(), "{not json");
    let err = c
        .credentials(&Registry::of_image("r.io/a"))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::Parse { .. }), "{err}");
}

fn helper_script(dir: &Path, body: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let path = dir.join(format!(
        "docker-credential-test{}",
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn helpers_are_asked_for_the_registry_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("asked");
    let helper = helper_script(
        dir.path(),
        &format!(
            "[ \"$1\" = get ] || exit 2\ncat > {}\necho '{{\"ServerURL\":\"x\",\"Username\":\"u\",\"Secret\":\"s3cret\"}}'",
            log.display()
        ),
    );
    let auth = run_helper(&helper, "test", "127.0.0.1:5000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "127.0.0.1:5000");
    let sent = auth.to_engine();
    assert_eq!(
        (sent.username.as_deref(), sent.password.as_deref()),
        (Some("u"), Some("s3cret"))
    );
    assert_eq!(auth.origin, Origin::Helper("test".into()));

    let token = helper_script(
        dir.path(),
        "echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"idt\"}'",
    );
    let auth = run_helper(&token, "test", "r.io").await.unwrap().unwrap();
    assert_eq!(auth.to_engine().identitytoken.as_deref(), Some("idt"));
    assert_eq!(auth.to_engine().username, None);

    let none = helper_script(
        dir.path(),
        "echo 'credentials not found in native keychain'; exit 1",
    );
    assert!(run_helper(&none, "test", "r.io").await.unwrap().is_none());

    let broken = helper_script(dir.path(), "echo 'keychain locked'; exit 1");
    let err = run_helper(&broken, "test", "r.io").await.unwrap_err();
    assert!(
        err.to_string().contains("keychain locked") && err.to_string().contains("r.io"),
        "{err}"
    );
}

#[tokio::test]
async fn helper_names_cannot_be_paths_and_missing_helpers_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), r#"{"credsStore": "../../bin/sh"}"#);
    let err = c
        .credentials(&Registry::of_image("r.io/a"))
        .await
        .unwrap_err();
    assert!(matches!(err, CredentialError::HelperName(_)), "{err}");
    let c = config(
        dir.path(),
        r#"{"credHelpers": {"r.io": "bus-no-such-helper"}, "auths": {"r.io": {"auth": "dTpw"}}}"#,
    );
    let err = c
        .credentials(&Registry::of_image("r.io/a"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("docker-credential-bus-no-such-helper"),
        "{err}"
    );
    // A helper for another registry leaves this one to `auths`.
    let auth = c.credentials(&Registry::of_image("q.io/a")).await.unwrap();
    assert!(auth.is_none());
}
