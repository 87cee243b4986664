//! The Engine connection: built lazily, API version negotiated on first
//! use and again after the engine was unreachable.
//!
//! Why lazy: the worker must start while the engine is down, answer
//! `runtime_unavailable` per request, and recover on its own when the
//! engine returns. bollard refuses to build a unix-socket client whose
//! socket file is missing, so even building waits for the first call.
//!
//! Why negotiate: bollard 0.21 speaks API 1.53 by default and older
//! engines (dockerd 20.10 speaks 1.41) refuse newer clients with 400
//! "client version is too new". Negotiation only ever lowers the version.
//!
//! TLS: an engine with its own [`TlsFiles`] (a CA, a client certificate and
//! its key) is reached with exactly those; without, bollard follows
//! Docker's variables (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`). Several
//! engines can so each have their own certificates. The files are checked
//! when the client is built: bollard reads the client key only during the
//! handshake and, when it cannot, silently offers no certificate at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use tokio::sync::Mutex;

use crate::error::DockerError;

/// Docker's default host when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long the version probe may take before the engine counts as
/// unreachable. Short on purpose: an unreachable TCP engine would
/// otherwise hold every request for the full request timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the Docker Engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, `https://…`.
    /// `None`: `DOCKER_HOST`, else the platform default.
    pub docker_host: Option<String>,
    /// This engine's TLS files (`tcp://` and `https://` hosts only).
    /// `None`: TLS follows Docker's own variables (`DOCKER_TLS_VERIFY`,
    /// `DOCKER_CERT_PATH`).
    pub tls: Option<TlsFiles>,
    /// Limit for an Engine call to answer (the response head; streams such
    /// as attach, wait and logs then run as long as the container does).
    /// Whole seconds, at least one.
    pub request_timeout: Duration,
    /// Where request mounts are pinned (`docker.mount_staging_dir`).
    /// `None`: `/run/bus-integration-docker/mounts/default`.
    pub mount_staging_dir: Option<PathBuf>,
    /// The allowed mount roots: the staging directory must not overlap
    /// them (connect fails otherwise).
    pub allowed_mount_roots: Vec<PathBuf>,
    /// Files no request mount may be (by device and inode), besides the
    /// engine socket, which is always protected.
    pub protected_paths: Vec<PathBuf>,
    /// The longest one image pull may take (`pull_timeout`).
    pub pull_timeout: Duration,
    /// The Docker client config directory that holds registry credentials
    /// (`config.json`). `None`: `DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
}

/// The default `pull_timeout`.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            docker_host: None,
            tls: None,
            request_timeout: Duration::from_secs(30),
            mount_staging_dir: None,
            allowed_mount_roots: Vec::new(),
            protected_paths: Vec::new(),
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            docker_config_dir: None,
        }
    }
}

/// The TLS files of one engine, PEM encoded: the CA that signed the
/// engine's certificate, and the client certificate and key this worker
/// presents (Docker's `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files of a Docker cert directory (`DOCKER_CERT_PATH`):
    /// `ca.pem`, `cert.pem` and `key.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Each file readable and PEM encoded; the error names the file.
    ///
    /// # Errors
    /// [`TlsError::Unreadable`] or [`TlsError::NotPem`] for the first file
    /// that is not usable.
    pub fn check(&self) -> Result<(), TlsError> {
        for (role, path) in [
            ("CA", &self.ca),
            ("certificate", &self.cert),
            ("key", &self.key),
        ] {
            let text = std::fs::read(path).map_err(|source| TlsError::Unreadable {
                role,
                path: path.clone(),
                source,
            })?;
            if !text.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(TlsError::NotPem {
                    role,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }
}

/// TLS files that cannot be used for a host.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// TLS files were given for a host that is not `tcp://` or `https://`.
    #[error("TLS files are for tcp:// and https:// hosts, not {host}")]
    Scheme { host: String },
    #[error("TLS {role} file {}: {source}", path.display())]
    Unreadable {
        role: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS {role} file {} holds no PEM data", path.display())]
    NotPem { role: &'static str, path: PathBuf },
}

/// `url` as responses and logs show it: without credentials (`user:pass@`)
/// and without query or fragment, which may carry secrets too.
pub fn display_host(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    // RFC 3986: the authority ends at the first '/', '?' or '#'; its
    // userinfo ends at the last '@' in it.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rfind('@')
        .map_or(authority, |at| &authority[at + 1..]);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    format!("{scheme}{host}{path}")
}

/// The resolved host: the option, else `DOCKER_HOST`, else the default.
pub fn resolve_host(option: Option<&str>) -> String {
    option
        .map(str::to_owned)
        .filter(|h| !h.trim().is_empty())
        .or_else(|| {
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// After a failed probe, callers within this window get its failure
/// instead of probing again: requests queued behind a dead engine then fail
/// together instead of one connect timeout after another.
const PROBE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    client: Option<Docker>,
    negotiated: bool,
    /// When the last probe failed, and why.
    failed: Option<(tokio::time::Instant, String)>,
}

/// A lazily built, version-negotiated bollard client.
pub(crate) struct Connection {
    /// The host as configured (may carry credentials): what is dialled.
    url: String,
    /// The host as errors and logs show it ([`display_host`]).
    host: String,
    tls: Option<TlsFiles>,
    request_timeout: Duration,
    state: Mutex<State>,
}

/// Build a client for `url` (may read TLS files: run off the runtime).
fn build(
    url: &str,
    tls: Option<&TlsFiles>,
    request_timeout: Duration,
) -> Result<Docker, bollard::errors::Error> {
    let Some(files) = tls else {
        return match Docker::connect_with_host(url) {
            Ok(client) => Ok(client.with_timeout(request_timeout)),
            // bollard echoes the whole URL, credentials included.
            Err(bollard::errors::Error::UnsupportedURISchemeError { uri }) => {
                Err(bollard::errors::Error::UnsupportedURISchemeError {
                    uri: display_host(&uri),
                })
            }
            Err(other) => Err(other),
        };
    };
    let tls_error = |e: TlsError| bollard::errors::Error::IOError {
        err: std::io::Error::other(e),
    };
    if !(url.starts_with("tcp://") || url.starts_with("https://")) {
        return Err(tls_error(TlsError::Scheme {
            host: display_host(url),
        }));
    }
    files.check().map_err(tls_error)?;
    Docker::connect_with_ssl(
        url,
        &files.key,
        &files.cert,
        &files.ca,
        request_timeout.as_secs(),
        bollard::API_DEFAULT_VERSION,
    )
}

impl Connection {
    /// Check the host is usable and build the client if the engine's
    /// socket is there; a missing socket is not an error yet.
    pub(crate) fn new(opts: &EngineOptions) -> Result<Self, DockerError> {
        let url = resolve_host(opts.docker_host.as_deref());
        let host = display_host(&url);
        let request_timeout = opts.request_timeout.max(Duration::from_secs(1));
        let client = match build(&url, opts.tls.as_ref(), request_timeout) {
            Ok(client) => Some(client),
            Err(bollard::errors::Error::SocketNotFoundError(_)) => None,
            Err(source) => return Err(DockerError::Connect { host, source }),
        };
        Ok(Self {
            url,
            host,
            tls: opts.tls.clone(),
            request_timeout,
            state: Mutex::new(State {
                client,
                negotiated: false,
                failed: None,
            }),
        })
    }

    /// The host without credentials ([`display_host`]).
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// A negotiated client, building and negotiating when needed.
    ///
    /// Concurrent callers wait for one negotiation (at most
    /// [`CONNECT_TIMEOUT`]) instead of all probing the engine, and for
    /// [`PROBE_BACKOFF`] after a failed probe they share its failure.
    pub(crate) async fn client(&self) -> Result<Docker, DockerError> {
        let mut state = self.state.lock().await;
        if let (Some(client), true) = (&state.client, state.negotiated) {
            return Ok(client.clone());
        }
        if let Some((at, why)) = &state.failed {
            if at.elapsed() < PROBE_BACKOFF {
                return Err(DockerError::Negotiate {
                    host: self.host.clone(),
                    source: bollard::errors::Error::IOError {
                        err: std::io::Error::other(why.clone()),
                    },
                });
            }
        }
        let result = self.probe(&mut state).await;
        state.failed = match &result {
            Ok(_) => None,
            Err(err) => Some((
                tokio::time::Instant::now(),
                std::error::Error::source(err)
                    .map_or_else(|| err.to_string(), crate::error::cause_chain),
            )),
        };
        result
    }

    async fn probe(&self, state: &mut State) -> Result<Docker, DockerError> {
        let client = match state.client.clone() {
            Some(client) => client,
            None => {
                let (url, tls) = (self.url.clone(), self.tls.clone());
                let timeout = self.request_timeout;
                let built = tokio::task::spawn_blocking(move || build(&url, tls.as_ref(), timeout))
                    .await
                    .map_err(|join| DockerError::Connect {
                        host: self.host.clone(),
                        source: bollard::errors::Error::IOError {
                            err: std::io::Error::other(join),
                        },
                    })?;
                let client = built.map_err(|source| DockerError::Negotiate {
                    host: self.host.clone(),
                    source,
                })?;
                state.client = Some(client.clone());
                client
            }
        };
        let probe = tokio::time::timeout(
            CONNECT_TIMEOUT.min(self.request_timeout),
            client.clone().negotiate_version(),
        )
        .await;
        match probe {
            Ok(Ok(negotiated)) => {
                let version = negotiated.client_version();
                tracing::debug!(host = %self.host, api_version = %version, "negotiated docker api version");
                // `negotiate_version` lowers the version shared by every
                // clone of `client`, so the stored client speaks it too.
                state.negotiated = true;
                Ok(negotiated)
            }
            Ok(Err(source)) => Err(DockerError::Negotiate {
                host: self.host.clone(),
                source,
            }),
            Err(_elapsed) => Err(DockerError::Negotiate {
                host: self.host.clone(),
                source: bollard::errors::Error::RequestTimeoutError,
            }),
        }
    }

    /// The engine was unreachable: probe it again before the next call.
    pub(crate) async fn forget(&self) {
        self.state.lock().await.negotiated = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_host_beats_the_environment() {
        assert_eq!(
            resolve_host(Some("tcp://10.0.0.1:2375")),
            "tcp://10.0.0.1:2375"
        );
        // Blank options fall through to DOCKER_HOST or the default.
        let fallback = resolve_host(Some("  "));
        assert!(!fallback.trim().is_empty());
    }

    #[test]
    fn unsupported_schemes_are_configuration_errors() {
        let opts = EngineOptions {
            docker_host: Some("gopher://x".into()),
            ..EngineOptions::default()
        };
        assert!(matches!(
            Connection::new(&opts),
            Err(DockerError::Connect { .. })
        ));
    }

    #[test]
    fn a_missing_socket_is_not_an_error_at_connect() {
        let opts = EngineOptions {
            docker_host: Some("unix:///tmp/bus-docker-engine-no-such.sock".into()),
            ..EngineOptions::default()
        };
        assert!(Connection::new(&opts).is_ok());
    }

    #[test]
    fn display_host_drops_credentials_query_and_fragment() {
        for (url, shown) in [
            ("tcp://user:s3cret@10.0.0.1:2376", "tcp://10.0.0.1:2376"),
            (
                "https://u:p@ss@engine.example:2376/v1?token=x#f",
                "https://engine.example:2376/v1",
            ),
            ("tcp://engine:2376?secret=1", "tcp://engine:2376"),
            ("tcp://engine:2376#frag", "tcp://engine:2376"),
            ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
            ("unix:///run/a@b/docker.sock", "unix:///run/a@b/docker.sock"),
            ("user@host:2375", "host:2375"),
        ] {
            assert_eq!(display_host(url), shown, "{url}");
        }
    }

    #[test]
    fn errors_show_the_host_without_credentials() {
        let opts = EngineOptions {
            docker_host: Some("gopher://user:s3cret@x".into()),
            ..EngineOptions::default()
        };
        let Err(err) = Connection::new(&opts) else {
            panic!("gopher is not a docker scheme");
        };
        let text = crate::error::cause_chain(&err);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("gopher://x"), "{text}");
    }

    /// Three PEM-looking files in `dir`.
    fn pem_files(dir: &Path) -> TlsFiles {
        let files = TlsFiles::in_dir(dir);
        for path in [&files.ca, &files.cert, &files.key] {
            std::fs::write(
                path,
                "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
        }
        files
    }

    fn connect_error(host: &str, tls: TlsFiles) -> String {
        let opts = EngineOptions {
            docker_host: Some(host.into()),
            tls: Some(tls),
            ..EngineOptions::default()
        };
        match Connection::new(&opts) {
            Ok(_) => panic!("{host} with these TLS files must not connect"),
            Err(err) => crate::error::cause_chain(&err),
        }
    }

    #[test]
    fn tls_files_on_a_unix_host_are_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_error("unix:///var/run/docker.sock", pem_files(dir.path()));
        assert!(err.contains("tcp:// and https://"), "{err}");
    }

    #[test]
    fn missing_or_non_pem_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = pem_files(dir.path());
        std::fs::remove_file(&files.key).unwrap();
        let err = connect_error("tcp://127.0.0.1:2376", files.clone());
        assert!(err.contains(&files.key.display().to_string()), "{err}");
        assert!(err.contains("TLS key file"), "{err}");
        std::fs::write(&files.key, "not a key").unwrap();
        std::fs::write(&files.ca, "not a certificate").unwrap();
        let err = connect_error("https://127.0.0.1:2376", files.clone());
        assert!(err.contains(&files.ca.display().to_string()), "{err}");
        assert!(err.contains("no PEM data"), "{err}");
    }

    #[test]
    fn usable_tls_files_build_a_client_without_dialling() {
        let dir = tempfile::tempdir().unwrap();
        let opts = EngineOptions {
            docker_host: Some("tcp://127.0.0.1:9".into()),
            tls: Some(pem_files(dir.path())),
            ..EngineOptions::default()
        };
        let conn = Connection::new(&opts).expect("a TLS client builds while the engine is away");
        assert_eq!(conn.host(), "tcp://127.0.0.1:9");
    }
}
