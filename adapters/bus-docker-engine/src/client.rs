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

use std::path::PathBuf;
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
    /// `None`: `DOCKER_HOST`, else the platform default. TLS follows
    /// Docker's own variables (`DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH`).
    pub docker_host: Option<String>,
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
            request_timeout: Duration::from_secs(30),
            mount_staging_dir: None,
            allowed_mount_roots: Vec::new(),
            protected_paths: Vec::new(),
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            docker_config_dir: None,
        }
    }
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
    host: String,
    request_timeout: Duration,
    state: Mutex<State>,
}

/// Build a client for `host` (may read TLS files: run off the runtime).
fn build(host: &str, request_timeout: Duration) -> Result<Docker, bollard::errors::Error> {
    Ok(Docker::connect_with_host(host)?.with_timeout(request_timeout))
}

impl Connection {
    /// Check the host is usable and build the client if the engine's
    /// socket is there; a missing socket is not an error yet.
    pub(crate) fn new(opts: &EngineOptions) -> Result<Self, DockerError> {
        let host = resolve_host(opts.docker_host.as_deref());
        let request_timeout = opts.request_timeout.max(Duration::from_secs(1));
        let client = match build(&host, request_timeout) {
            Ok(client) => Some(client),
            Err(bollard::errors::Error::SocketNotFoundError(_)) => None,
            Err(source) => return Err(DockerError::Connect { host, source }),
        };
        Ok(Self {
            host,
            request_timeout,
            state: Mutex::new(State {
                client,
                negotiated: false,
                failed: None,
            }),
        })
    }

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
                let host = self.host.clone();
                let timeout = self.request_timeout;
                let built = tokio::task::spawn_blocking(move || build(&host, timeout))
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
}
