//! The adapter's own error, one variant per Engine call, and its translation
//! into the domain's [`RuntimeError`].
//!
//! Translation is the one place that decides what an Engine failure means
//! for a run, so it is also where the full cause chain is logged:
//!
//! | Engine answer | `RuntimeError` |
//! |---|---|
//! | socket missing, connection refused/reset, request timeout, 502/503/504 | `Unavailable` |
//! | any failure to negotiate the API version | `Unavailable` |
//! | 404 on create or start naming a network (`network X not found`) | `InvalidSpec` (`network`) |
//! | 404 on create (the image) | `ImageMissing` |
//! | 409 on create (the name) | `NameConflict` |
//! | 404 on any container call | `ContainerGone` |
//! | 409 on a rename (the mark's name is taken) | `NameConflict` |
//! | a wait that ends while the container still runs (`StillRunning`) | `Unavailable` (the driver re-attaches) |
//! | a container gone before it reported its exit (`Vanished`) | `ContainerGone` |
//! | any failure of a pull, its deadline (`pull_timeout`) or its credentials | `PullFailed` naming the registry (unless the engine itself is unreachable) |
//! | anything else, including 500 | `Engine` with the cause chain |
//!
//! A plain 500 stays `Engine`: dockerd answers 500 for many request-specific
//! failures (a bind source it cannot mount, a registry it cannot reach), and
//! calling those `runtime_unavailable` would send operators looking at a
//! healthy engine. An engine that is down does not answer at all.

use std::fmt::Write as _;

use bollard::errors::Error as BollardError;
use bus_docker_domain::RuntimeError;

/// A failed Engine API call, naming the call and what it was about.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The Docker host cannot be used at all (an unsupported scheme, TLS
    /// files that cannot be read). A configuration error.
    #[error("cannot use docker host {host}")]
    Connect {
        host: String,
        #[source]
        source: BollardError,
    },
    /// `GET /version` while negotiating the API version.
    #[error("negotiating the API version with the engine at {host}")]
    Negotiate {
        host: String,
        #[source]
        source: BollardError,
    },
    /// `GET /version` for the engine's identity.
    #[error("reading the engine version")]
    Version {
        #[source]
        source: BollardError,
    },
    /// `GET /info` for the engine's clock (the container view's start).
    #[error("reading the engine's system information")]
    Info {
        #[source]
        source: BollardError,
    },
    #[error("creating container {name} from image {image}")]
    Create {
        name: String,
        image: String,
        #[source]
        source: BollardError,
    },
    #[error("starting container {id}")]
    Start {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("attaching to container {id}")]
    Attach {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("writing to the stdin of container {id}")]
    Stdin {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for container {id}")]
    Wait {
        id: String,
        #[source]
        source: BollardError,
    },
    /// `POST /containers/{id}/stop`: SIGTERM, SIGKILL after the grace.
    #[error("stopping container {id}")]
    Stop {
        id: String,
        #[source]
        source: BollardError,
    },
    /// `POST /containers/{id}/rename`: setting a run mark.
    #[error("renaming container {id} to {name}")]
    Rename {
        id: String,
        name: String,
        #[source]
        source: BollardError,
    },
    /// The wait for the exit ended while the engine still reports the
    /// container running: the connection broke, not the run.
    #[error("waiting for container {id}: the wait ended while the container is still running")]
    StillRunning { id: String },
    /// The container was removed before the engine reported its exit.
    #[error("container {id} vanished before reporting its exit")]
    Vanished { id: String },
    #[error("killing container {id}")]
    Kill {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("removing container {id}")]
    Remove {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("inspecting container {id}")]
    Inspect {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("reading the logs of container {id}")]
    Logs {
        id: String,
        #[source]
        source: BollardError,
    },
    #[error("listing managed containers")]
    List {
        #[source]
        source: BollardError,
    },
    #[error("inspecting image {image}")]
    InspectImage {
        image: String,
        #[source]
        source: BollardError,
    },
    /// `POST /images/create`; `from` names the registry and how the worker
    /// authenticated (anonymously, or where the credentials came from;
    /// never what they are).
    #[error("pulling image {image} from {from}")]
    Pull {
        image: String,
        from: String,
        #[source]
        source: BollardError,
    },
    /// The pull did not finish within `pull_timeout`.
    #[error("pulling image {image} from registry {registry}: not done within pull_timeout ({}s)", after.as_secs())]
    PullDeadline {
        image: String,
        registry: String,
        after: std::time::Duration,
    },
    /// The registry's credentials could not be read.
    #[error("pulling image {image}: credentials for registry {registry}")]
    Credentials {
        image: String,
        registry: String,
        #[source]
        source: crate::registry::CredentialError,
    },
    /// A call on a volume of a per-run Codex home or session
    /// (`codex_home/`): `action` says which.
    #[error("{action} volume {name}")]
    Volume {
        action: &'static str,
        name: String,
        #[source]
        source: BollardError,
    },
    /// Seeding a per-run Codex home from the configured one failed.
    #[error("seeding the Codex home of run {run} from {from}: {reason}")]
    Seed {
        run: String,
        from: String,
        reason: String,
    },
    /// The mount staging directory is unsafe (a configuration error).
    #[error("preparing the mount staging directory")]
    Staging {
        #[source]
        source: bus_host_mounts::PinError,
    },
}

/// What an Engine failure means, independent of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The engine could not be reached or did not answer in time.
    Unreachable,
    NotFound,
    Conflict,
    Other,
}

/// Classify a bollard error by what it says about the engine.
pub(crate) fn classify(err: &BollardError) -> Class {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => match status_code {
            404 => Class::NotFound,
            409 => Class::Conflict,
            502..=504 => Class::Unreachable,
            _ => Class::Other,
        },
        BollardError::RequestTimeoutError
        | BollardError::SocketNotFoundError(_)
        | BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::IOError { .. } => Class::Unreachable,
        _ => Class::Other,
    }
}

/// Whether a 404 on create is about the run's network, not its image
/// (dockerd: `network <name> not found`).
fn missing_network(err: &BollardError) -> bool {
    matches!(err, BollardError::DockerResponseServerError { message, .. }
        if message.contains("network ") && message.contains("not found"))
}

/// `error: cause: cause`, each source once.
pub fn cause_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // `#[error(transparent)]` wrappers repeat their source verbatim.
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out
}

impl DockerError {
    /// The bollard error underneath, when there is one.
    fn bollard(&self) -> Option<&BollardError> {
        match self {
            Self::Connect { source, .. }
            | Self::Negotiate { source, .. }
            | Self::Version { source }
            | Self::Info { source }
            | Self::Create { source, .. }
            | Self::Start { source, .. }
            | Self::Attach { source, .. }
            | Self::Wait { source, .. }
            | Self::Kill { source, .. }
            | Self::Stop { source, .. }
            | Self::Rename { source, .. }
            | Self::Remove { source, .. }
            | Self::Inspect { source, .. }
            | Self::Logs { source, .. }
            | Self::List { source }
            | Self::InspectImage { source, .. }
            | Self::Volume { source, .. }
            | Self::Pull { source, .. } => Some(source),
            Self::Stdin { .. }
            | Self::PullDeadline { .. }
            | Self::Credentials { .. }
            | Self::Staging { .. }
            | Self::Seed { .. }
            | Self::StillRunning { .. }
            | Self::Vanished { .. } => None,
        }
    }

    pub(crate) fn class(&self) -> Class {
        match self {
            // A broken stdin connection says nothing about the engine.
            Self::Stdin { .. } => Class::Other,
            // A wait that broke off mid-run: the connection to the engine
            // failed, so the driver re-attaches once it answers again.
            Self::StillRunning { .. } => Class::Unreachable,
            Self::Vanished { .. } => Class::NotFound,
            // Whatever answers (or not) at the host, it is no engine we can
            // talk to: a 404 from some other HTTP server included.
            Self::Negotiate { .. } => Class::Unreachable,
            // A pull that times out is waiting on a registry, not on the
            // engine; only a connection failure means the engine is gone.
            Self::Pull { source, .. } => match source {
                BollardError::SocketNotFoundError(_) | BollardError::HyperLegacyError { .. } => {
                    Class::Unreachable
                }
                _ => Class::Other,
            },
            other => other.bollard().map_or(Class::Other, classify),
        }
    }

    /// Whether the engine could not be reached (the client should
    /// re-negotiate before the next call).
    pub fn is_unreachable(&self) -> bool {
        self.class() == Class::Unreachable
    }

    /// Whether the engine answered 404 to this call.
    pub fn is_not_found(&self) -> bool {
        self.class() == Class::NotFound
    }

    /// Translate into the domain error, logging the full cause chain.
    pub fn into_runtime(self) -> RuntimeError {
        let chain = cause_chain(&self);
        let mapped = match (self.class(), &self) {
            (Class::Unreachable, _) => RuntimeError::Unavailable(chain.clone()),
            (
                _,
                Self::Pull { image, .. }
                | Self::PullDeadline { image, .. }
                | Self::Credentials { image, .. },
            ) => RuntimeError::PullFailed {
                image: image.clone(),
                reason: chain.clone(),
            },
            // dockerd 20.10 checks the network at start, newer ones at create.
            (Class::NotFound, Self::Create { source, .. } | Self::Start { source, .. })
                if missing_network(source) =>
            {
                RuntimeError::InvalidSpec(bus_docker_domain::FieldError::new(
                    "network",
                    format!("does not exist on the engine: {chain}"),
                ))
            }
            (Class::NotFound, Self::Create { image, .. }) => {
                RuntimeError::ImageMissing(image.clone())
            }
            (Class::Conflict, Self::Create { name, .. } | Self::Rename { name, .. }) => {
                RuntimeError::NameConflict(name.clone())
            }
            (
                Class::NotFound,
                Self::Start { id, .. }
                | Self::Attach { id, .. }
                | Self::Wait { id, .. }
                | Self::Kill { id, .. }
                | Self::Stop { id, .. }
                | Self::Rename { id, .. }
                | Self::Remove { id, .. }
                | Self::Inspect { id, .. }
                | Self::Logs { id, .. }
                | Self::Vanished { id },
            ) => RuntimeError::ContainerGone(id.clone()),
            _ => RuntimeError::Engine(chain.clone()),
        };
        match &mapped {
            // A duplicate delivery losing the name race is expected.
            RuntimeError::NameConflict(_) | RuntimeError::ContainerGone(_) => {
                tracing::debug!(error = %chain, "docker engine call failed");
            }
            _ => tracing::warn!(error = %chain, "docker engine call failed"),
        }
        mapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, message: &str) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code: code,
            message: message.to_owned(),
        }
    }

    #[test]
    fn create_maps_404_to_image_missing_and_409_to_name_conflict() {
        let create = |source| DockerError::Create {
            name: "bus-run-a".into(),
            image: "img:1".into(),
            source,
        };
        assert_eq!(
            create(status(404, "No such image: img:1")).into_runtime(),
            RuntimeError::ImageMissing("img:1".into())
        );
        assert!(matches!(
            create(status(404, "network jobs-net not found")).into_runtime(),
            RuntimeError::InvalidSpec(e) if e.field() == "network" && e.message().contains("jobs-net")
        ));
        let start = DockerError::Start {
            id: "abc".into(),
            source: status(404, "network jobs-net not found"),
        };
        assert!(matches!(
            start.into_runtime(),
            RuntimeError::InvalidSpec(e) if e.field() == "network"
        ));
        assert_eq!(
            create(status(
                409,
                "Conflict. The container name is already in use"
            ))
            .into_runtime(),
            RuntimeError::NameConflict("bus-run-a".into())
        );
        assert!(matches!(
            create(status(400, "invalid mount config")).into_runtime(),
            RuntimeError::Engine(m) if m.contains("invalid mount config") && m.contains("creating container bus-run-a")
        ));
    }

    #[test]
    fn container_calls_map_404_to_gone() {
        let err = DockerError::Inspect {
            id: "abc".into(),
            source: status(404, "No such container: abc"),
        };
        assert_eq!(
            err.into_runtime(),
            RuntimeError::ContainerGone("abc".into())
        );
    }

    #[test]
    fn transport_failures_and_gateway_errors_are_unavailable() {
        for source in [
            BollardError::RequestTimeoutError,
            BollardError::SocketNotFoundError("/nope.sock".into()),
            status(503, "proxy: engine down"),
            BollardError::IOError {
                err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        ] {
            let err = DockerError::List { source };
            assert!(err.is_unreachable(), "{err:?}");
            assert!(matches!(err.into_runtime(), RuntimeError::Unavailable(_)));
        }
        let plain_500 = DockerError::Start {
            id: "x".into(),
            source: status(500, "error while mounting"),
        };
        assert!(matches!(plain_500.into_runtime(), RuntimeError::Engine(_)));
    }

    #[test]
    fn pull_failures_name_the_image_even_on_timeouts() {
        let err = DockerError::Pull {
            image: "nope:1".into(),
            from: "registry docker.io (anonymously)".into(),
            source: BollardError::RequestTimeoutError,
        };
        assert!(matches!(
            err.into_runtime(),
            RuntimeError::PullFailed { image, .. } if image == "nope:1"
        ));
        let err = DockerError::Pull {
            image: "nope:1".into(),
            from: "registry docker.io (anonymously)".into(),
            source: BollardError::SocketNotFoundError("/x".into()),
        };
        assert!(matches!(err.into_runtime(), RuntimeError::Unavailable(_)));
        let err = DockerError::PullDeadline {
            image: "big:1".into(),
            registry: "r.io".into(),
            after: std::time::Duration::from_secs(600),
        };
        assert!(matches!(
            err.into_runtime(),
            RuntimeError::PullFailed { reason, .. } if reason.contains("r.io") && reason.contains("pull_timeout (600s)")
        ));
    }

    #[test]
    fn explicit_drive_failures_keep_their_classification() {
        let still = DockerError::StillRunning { id: "c1".into() };
        assert!(still.is_unreachable());
        assert!(matches!(
            still.into_runtime(),
            RuntimeError::Unavailable(m) if m.contains("still running") && m.contains("c1")
        ));
        let gone = DockerError::Vanished { id: "c2".into() };
        assert!(gone.is_not_found());
        assert_eq!(
            gone.into_runtime(),
            RuntimeError::ContainerGone("c2".into())
        );
    }

    #[test]
    fn a_taken_mark_name_is_a_name_conflict() {
        let err = DockerError::Rename {
            id: "c1".into(),
            name: "bus-run-r.answered".into(),
            source: status(409, "Conflict. The container name is already in use"),
        };
        assert_eq!(
            err.into_runtime(),
            RuntimeError::NameConflict("bus-run-r.answered".into())
        );
        let stop = DockerError::Stop {
            id: "c1".into(),
            source: status(404, "No such container"),
        };
        assert_eq!(
            stop.into_runtime(),
            RuntimeError::ContainerGone("c1".into())
        );
    }

    #[test]
    fn cause_chain_lists_each_cause_once() {
        let err = DockerError::Kill {
            id: "c1".into(),
            source: status(500, "boom"),
        };
        assert_eq!(
            cause_chain(&err),
            "killing container c1: Docker responded with status code 500: boom"
        );
    }
}
