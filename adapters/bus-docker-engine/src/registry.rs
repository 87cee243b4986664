//! Registry credentials for pulls, found the way the docker CLI finds them.
//!
//! Engine API clients do not inherit `docker login`: the client sends the
//! credentials of the image's registry in the `X-Registry-Auth` header. They
//! come from the Docker client config (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), read at every pull so a `docker login` after
//! start-up counts:
//!
//! 1. `credHelpers[<registry>]`, else `credsStore`: the helper
//!    `docker-credential-<name> get` is given the registry on stdin and
//!    answers `{"Username","Secret"}` (`<token>` as user: an identity token);
//!    "credentials not found" means an anonymous pull;
//! 2. otherwise `auths[<registry>]`: `auth` (base64 `user:password`),
//!    `username`/`password`, or `identitytoken`. Keys match by host, so
//!    `https://127.0.0.1:5000/v2/` is the entry of `127.0.0.1:5000`.
//!
//! Docker Hub (`docker.io`, and references without a registry) is keyed
//! `https://index.docker.io/v1/`, as the CLI does.
//!
//! Secrets live in [`Secret`] (its `Debug` prints `[redacted]`) until the
//! header is built; errors name the registry, the file and the helper, never
//! a credential or a helper's answer.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// Docker Hub's key in the client config and for credential helpers.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The longest a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// A credential: kept out of `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The registry an image reference names: its host (`127.0.0.1:5000`,
/// `ghcr.io`), `docker.io` when it names none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    host: String,
}

impl Registry {
    /// The registry of `image`: the first path component when it looks like
    /// a host (has a `.` or a `:`, or is `localhost`), else Docker Hub.
    pub fn of_image(image: &str) -> Self {
        let host = match image.split_once('/') {
            Some((first, _))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                first.to_owned()
            }
            _ => "docker.io".to_owned(),
        };
        Self { host }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn is_docker_hub(&self) -> bool {
        matches!(
            self.host.as_str(),
            "docker.io" | "index.docker.io" | "registry-1.docker.io"
        )
    }

    /// The key of this registry in `auths` and for credential helpers.
    pub fn config_key(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_KEY
        } else {
            &self.host
        }
    }
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.host)
    }
}

/// Where credentials came from, for logs and errors (never the values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `auths` in this config file.
    ConfigFile(PathBuf),
    /// `docker-credential-<name>`.
    Helper(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfigFile(path) => write!(f, "auths in {}", path.display()),
            Self::Helper(name) => write!(f, "docker-credential-{name}"),
        }
    }
}

/// Credentials for one registry.
#[derive(Clone, Debug)]
pub struct RegistryAuth {
    pub origin: Origin,
    username: Option<String>,
    password: Option<Secret>,
    identity_token: Option<Secret>,
    server: String,
}

impl RegistryAuth {
    /// The body of the `X-Registry-Auth` header.
    pub fn to_engine(&self) -> DockerCredentials {
        DockerCredentials {
            username: self.username.clone(),
            password: self.password.as_ref().map(|s| s.expose().to_owned()),
            identitytoken: self.identity_token.as_ref().map(|s| s.expose().to_owned()),
            serveraddress: Some(self.server.clone()),
            ..DockerCredentials::default()
        }
    }
}

/// Why credentials could not be read. Names files, registries and helpers;
/// never a credential, never a helper's stdout on success.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading the docker client config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the docker client config {} is not valid JSON", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("auths entry of {registry} in {}: {problem}", path.display())]
    BadEntry {
        path: PathBuf,
        registry: String,
        problem: &'static str,
    },
    #[error("credential helper name {0:?} is not a plain name")]
    HelperName(String),
    #[error("credential helper docker-credential-{helper} for {registry}: {problem}")]
    Helper {
        helper: String,
        registry: String,
        problem: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    auths: std::collections::HashMap<String, AuthEntry>,
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: std::collections::HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// The Docker client config: `dir/config.json`, `dir` being the option,
/// else `DOCKER_CONFIG`, else `~/.docker`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    path: Option<PathBuf>,
}

impl ClientConfig {
    pub fn locate(dir: Option<&Path>) -> Self {
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        Self {
            path: dir.map(|d| d.join("config.json")),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The credentials for `registry`; `None`: pull anonymously (no config
    /// file, no entry, or the helper has none).
    ///
    /// # Errors
    /// The file cannot be read or parsed, its entry is malformed, or the
    /// helper fails.
    pub async fn credentials(
        &self,
        registry: &Registry,
    ) -> Result<Option<RegistryAuth>, CredentialError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let text = match tokio::fs::read(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let config: ConfigFile =
            serde_json::from_slice(&text).map_err(|source| CredentialError::Parse {
                path: path.clone(),
                source,
            })?;
        let key = registry.config_key();
        let helper = config
            .cred_helpers
            .iter()
            .find(|(k, _)| same_registry(k, key))
            .map(|(_, v)| v)
            .or(config.creds_store.as_ref())
            .filter(|h| !h.is_empty());
        match helper {
            Some(helper) => from_helper(helper, key).await,
            None => from_auths(&config, path, key),
        }
    }
}

/// `https://host/v1/` and `host` are the same registry: the CLI compares
/// hosts.
fn hostname(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn same_registry(entry: &str, key: &str) -> bool {
    entry == key || hostname(entry) == hostname(key)
}

fn from_auths(
    config: &ConfigFile,
    path: &Path,
    key: &str,
) -> Result<Option<RegistryAuth>, CredentialError> {
    let entry = config.auths.get(key).or_else(|| {
        config
            .auths
            .iter()
            .find(|(k, _)| same_registry(k, key))
            .map(|(_, v)| v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let bad = |problem| CredentialError::BadEntry {
        path: path.to_owned(),
        registry: key.to_owned(),
        problem,
    };
    let (username, password) = match entry.auth.as_deref().filter(|a| !a.is_empty()) {
        Some(auth) => {
            let decoded = STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("`auth` is not base64"))?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8"))?;
            let (user, pass) = decoded
                .split_once(':')
                .ok_or_else(|| bad("`auth` is not user:password"))?;
            (Some(user.to_owned()), Some(Secret(pass.to_owned())))
        }
        None => (entry.username.clone(), entry.password.clone().map(Secret)),
    };
    let identity_token = entry
        .identitytoken
        .clone()
        .filter(|t| !t.is_empty())
        .map(Secret);
    if username.is_none() && identity_token.is_none() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth {
        origin: Origin::ConfigFile(path.to_owned()),
        username,
        password,
        identity_token,
        server: key.to_owned(),
    }))
}

/// `docker-credential-<helper> get` with `key` on stdin.
async fn from_helper(helper: &str, key: &str) -> Result<Option<RegistryAuth>, CredentialError> {
    if !helper
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || helper.starts_with('.')
    {
        return Err(CredentialError::HelperName(helper.to_owned()));
    }
    let program = PathBuf::from(format!("docker-credential-{helper}"));
    run_helper(&program, helper, key).await
}

/// Ask `program` (found on `PATH` unless absolute) for `key`'s credentials.
async fn run_helper(
    program: &Path,
    helper: &str,
    key: &str,
) -> Result<Option<RegistryAuth>, CredentialError> {
    let fail = |problem: String| CredentialError::Helper {
        helper: helper.to_owned(),
        registry: key.to_owned(),
        problem,
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that answers without reading closes its stdin early:
        // its answer, not this write, decides.
        let _ = stdin.write_all(key.as_bytes()).await;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {HELPER_TIMEOUT:?}")))?
        .map_err(|e| fail(format!("waiting for it: {e}")))?;
    if !output.status.success() {
        // On failure helpers print their error on stdout (no secret there).
        let said = String::from_utf8_lossy(&output.stdout);
        let said = said.trim();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.chars().take(200).collect();
        return Err(fail(format!("{}: {said}", output.status)));
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout)
        .map_err(|_| fail("its answer is not the expected JSON".to_owned()))?;
    let secret = Secret(answer.secret);
    let (username, password, identity_token) = if answer.username == "<token>" {
        (None, None, Some(secret))
    } else {
        (Some(answer.username), Some(secret), None)
    };
    Ok(Some(RegistryAuth {
        origin: Origin::Helper(helper.to_owned()),
        username,
        password,
        identity_token,
        server: key.to_owned(),
    }))
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
