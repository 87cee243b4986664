//! Ports: the capabilities the domain needs from the outside, in domain
//! words. Adapters implement them; tests implement them with fakes.
//!
//! One async style: methods return `impl Future + Send` on
//! `Send + Sync + 'static` traits; implementations write `async fn`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use futures_core::Stream;

use crate::error::{PublishError, RuntimeError, SourceError};
use crate::ids::{CorrelationId, ImageRef, OwnerId, ProfileName, RunId};
use crate::profile::PullPolicy;
use crate::request::Inbound;
use crate::response::Response;
use crate::run::{ContainerRef, EngineInfo, Exit};
use crate::spec::RunSpec;

/// Resolves when the run must be canceled.
pub type CancelSignal = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Data for the stdin of an interactive run.
pub type InputStream = Pin<Box<dyn Stream<Item = InputChunk> + Send>>;

/// One `input.request`'s data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputChunk {
    pub data: Vec<u8>,
    /// Close stdin after writing.
    pub eof: bool,
}

/// What goes into a container's stdin.
pub enum Stdin {
    /// Nothing: stdin is not attached.
    Closed,
    /// Write this text, then close stdin.
    Text(Vec<u8>),
    /// Write the optional initial text, then whatever the stream brings,
    /// until a chunk with `eof` or the stream ends.
    Interactive(Option<Vec<u8>>, InputStream),
}

/// How the runtime should drive a run.
pub struct RunIo {
    pub stdin: Stdin,
    /// Measured from the container's start (also after a restart: the
    /// runtime reads the start time from the engine).
    pub timeout: Duration,
    pub cancel: CancelSignal,
    pub max_output_bytes: usize,
}

/// The engine's view of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// Paused, restarting, dead, removing: anything else.
    Other(String),
}

/// A container this worker manages, read back from its name and labels
/// (contract §5): the durable record of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    pub container: ContainerRef,
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub correlation: Option<CorrelationId>,
    pub reply_event: Option<String>,
    pub runner: Option<String>,
    pub profile: Option<ProfileName>,
    pub image: String,
    pub image_id: Option<String>,
    pub args: Vec<String>,
    pub interactive: bool,
    pub timeout: Option<Duration>,
    pub state: ContainerState,
    pub started_at: Option<SystemTime>,
}

/// Runs containers. Implemented by `DockerEngine` (bollard) and
/// `StaticRuntime` (deterministic, for self-tests).
pub trait ContainerRuntime: Send + Sync + 'static {
    /// `docker` or `static`.
    fn provider(&self) -> &'static str;

    /// The engine's version and platform.
    ///
    /// # Errors
    /// `Unavailable` when the engine cannot be reached.
    fn engine_info(&self) -> impl Future<Output = Result<EngineInfo, RuntimeError>> + Send;

    /// Whether the image is present locally.
    ///
    /// # Errors
    /// `Unavailable` when the engine cannot be reached.
    fn image_present(
        &self,
        image: &ImageRef,
    ) -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// Make the image present under the pull policy; returns its id.
    ///
    /// # Errors
    /// `ImageMissing` when absent under `Never`, `PullFailed` when a pull
    /// fails, `Unavailable` when the engine cannot be reached.
    fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Create (not start) the run's container, named and labelled per
    /// contract §5 with `runner` as `bus.runner`.
    ///
    /// # Errors
    /// `NameConflict` when `bus-run-<run_id>` exists (a duplicate delivery),
    /// `ImageMissing` when the image vanished, `Unavailable`, `Engine`.
    fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
    ) -> impl Future<Output = Result<ContainerRef, RuntimeError>> + Send;

    /// Drive a container to its end: start it unless it is already
    /// running (re-attach after a restart), stream stdin and output, enforce
    /// the timeout and the cancel signal (killing the container), and report
    /// the exit. An already exited container is collected from its logs.
    /// Does not remove the container.
    ///
    /// # Errors
    /// `ContainerGone` when it was removed under us, `Unavailable`, `Engine`.
    fn drive(
        &self,
        container: &ContainerRef,
        io: RunIo,
    ) -> impl Future<Output = Result<Exit, RuntimeError>> + Send;

    /// Kill a container (no error when it already stopped or is gone).
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn kill(
        &self,
        container: &ContainerRef,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Remove a container, forcing it when running (no error when gone).
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn remove(
        &self,
        container: &ContainerRef,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Every container labelled `bus.managed-by=bus-integration-docker`.
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn list_managed(
        &self,
    ) -> impl Future<Output = Result<Vec<ManagedContainer>, RuntimeError>> + Send;

    /// Write to the stdin of a running interactive container that another
    /// worker drives.
    ///
    /// # Errors
    /// `NotAcceptingInput` when it is not running or not interactive,
    /// `ContainerGone`, `Unavailable`.
    fn write_input(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;
}

/// Publishes responses.
pub trait EventPublisher: Send + Sync + 'static {
    /// Publish one response, retrying transient failures until it is
    /// accepted.
    ///
    /// # Errors
    /// `Rejected` when the Events API refuses it for good, `Abandoned`
    /// when the worker is stopping before it could be published.
    fn publish(&self, response: &Response)
        -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Delivers inbound requests.
pub trait EventSource: Send + 'static {
    /// The next request, `None` when the source has stopped (shutdown).
    ///
    /// # Errors
    /// `Fatal` when the Events API refuses the worker (401/403): a
    /// configuration error the worker cannot recover from.
    fn next_inbound(&mut self)
        -> impl Future<Output = Option<Result<Inbound, SourceError>>> + Send;
}
