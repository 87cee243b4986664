//! Ports: the capabilities the domain needs from the outside, in domain
//! words. Adapters implement them; tests implement them with fakes.
//!
//! One async style: methods return `impl Future + Send` on
//! `Send + Sync + 'static` traits; implementations write `async fn`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;

use crate::container::{ContainerRef, EngineInfo, SessionUsage, SessionsSwept};
use crate::container::{ManagedContainer, ManagedFilter};
use crate::error::{PublishError, RuntimeError, SourceError};
use crate::ids::{ImageId, ImageRef};
use crate::output::{OutputEvent, OutputSink};
use crate::profile::PullPolicy;
use crate::request::Inbound;
use crate::response::Response;
use crate::run::Exit;
use crate::spec::RunSpec;
use crate::warm::{ParkedContainer, SettledParked};

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
    /// When the deadline passes or the cancel signal fires, the container
    /// gets SIGTERM and, `stop_grace` later, SIGKILL; what it prints in
    /// between is captured.
    pub stop_grace: Duration,
    /// Live output: when set, every chunk the container writes is also
    /// handed to the sink as it arrives. A re-attached container (after a
    /// restart) feeds only what it writes from the re-attach on, not the
    /// replay of its earlier log; a collected (exited) one feeds nothing.
    pub output: Option<Arc<dyn OutputSink>>,
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

    /// Make the image present under the pull policy; returns its id (what
    /// [`ContainerRuntime::create`] is then given).
    ///
    /// # Errors
    /// `ImageMissing` when absent under `Never`, `PullFailed` when a pull
    /// fails, `Unavailable` when the engine cannot be reached.
    fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> impl Future<Output = Result<ImageId, RuntimeError>> + Send;

    /// Create (not start) the run's container, named and labelled per
    /// docs/protocol.md §5 with `runner` as `bus.runner`, from `image`: the id
    /// [`ContainerRuntime::ensure_image`] checked for `spec.image`. The
    /// container is created from exactly that image (what was checked is
    /// what runs and what the response reports), and shows the reference
    /// the run asked for where the runtime can (docs/protocol.md §9).
    ///
    /// # Errors
    /// `NameConflict` when `bus-run-<run_id>` exists (a duplicate delivery),
    /// `ImageMissing` when the image vanished (ensure it again, then
    /// create), `Unavailable`, `Engine`.
    fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> impl Future<Output = Result<ContainerRef, RuntimeError>> + Send;

    /// Drive a container to its end: start it unless it is already
    /// running (re-attach after a restart), stream stdin and output, enforce
    /// the timeout and the cancel signal (stopping the container: SIGTERM,
    /// SIGKILL after `io.stop_grace`), and report the exit. An already
    /// exited container is collected from its logs. A container whose name
    /// carries the [`RunMark::Deleted`] mark at its exit ends
    /// [`Ending::Canceled`](crate::run::Ending::Canceled): another worker
    /// deleted it. A command the engine cannot start (its executable is
    /// missing or not executable) ends `Exited(127)` (or `126`) with the
    /// engine's message as stderr. Does not remove the container.
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

    /// The containers labelled `bus.managed-by=bus-integration-docker`
    /// that pass `filter`, read from one listing: `started_at` is `None`
    /// (use [`ContainerRuntime::inspect_managed`] where it matters).
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn list_managed(
        &self,
        filter: &ManagedFilter,
    ) -> impl Future<Output = Result<Vec<ManagedContainer>, RuntimeError>> + Send;

    /// One managed container read in full, with its exact start time (for
    /// recovery, whose deadlines count from the start).
    ///
    /// # Errors
    /// `ContainerGone` when it does not exist or is not a managed run,
    /// `Unavailable`, `Engine`.
    fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> impl Future<Output = Result<ManagedContainer, RuntimeError>> + Send;

    /// Delete a run another worker may be driving: mark it
    /// [`RunMark::Deleted`] (rename to `bus-run-<id>.deleted`), then stop
    /// it (SIGTERM, SIGKILL after `grace`), so that its driver reports
    /// `Canceled`. No error when it already stopped or is gone; an
    /// answered run is left as it is.
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn delete_run(
        &self,
        container: &ContainerRef,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Mark a run [`RunMark::Answered`] (rename to `bus-run-<id>.answered`)
    /// once its response is published: the container stays as a tombstone
    /// until it is removed. No error when it is gone.
    ///
    /// # Errors
    /// `NameConflict` when a tombstone of that name already exists,
    /// `Unavailable`, `Engine`.
    fn mark_answered(
        &self,
        container: &ContainerRef,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

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

    /// Whether this engine keeps the session `key` (docs/protocol.md §6): a pool
    /// places the session's next run on the engine that holds it. A
    /// runtime without per-run homes keeps none.
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn has_session(
        &self,
        key: &crate::spec::SessionKey,
    ) -> impl Future<Output = Result<bool, RuntimeError>> + Send {
        let _ = key;
        async { Ok(false) }
    }

    /// The codex session volumes this engine keeps (docs/protocol.md §6). A
    /// runtime without per-run homes keeps none.
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn session_usage(&self) -> impl Future<Output = Result<SessionUsage, RuntimeError>> + Send {
        async { Ok(SessionUsage::default()) }
    }

    /// Remove the codex sessions not used for `retention` (a session in
    /// use by a run is kept whatever its age).
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn sweep_sessions(
        &self,
        retention: Duration,
    ) -> impl Future<Output = Result<SessionsSwept, RuntimeError>> + Send {
        let _ = retention;
        async { Ok(SessionsSwept::default()) }
    }

    /// Warm start (docs/protocol.md §10): create and start a container from
    /// `template` (a profile's spec with no request in it) that waits,
    /// running nothing, until [`ContainerRuntime::claim`] hands it a run.
    /// The default refuses: a runtime that cannot park containers serves
    /// every run cold.
    ///
    /// # Errors
    /// `Forbidden` (rule `warm`) when the image cannot be parked, naming
    /// why (no shell for the launcher); `ImageMissing`, `Unavailable`,
    /// `Engine`.
    fn park(
        &self,
        template: &RunSpec,
        runner: &str,
    ) -> impl Future<Output = Result<ContainerRef, RuntimeError>> + Send {
        let _ = (template, runner);
        async {
            Err(RuntimeError::Forbidden {
                rule: "warm",
                detail: format!("the {} runtime cannot park containers", self.provider()),
            })
        }
    }

    /// The parked containers of `runner` (unclaimed ones only; a claimed
    /// container is a run and lists with [`ContainerRuntime::list_managed`]).
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn list_parked(
        &self,
        runner: &str,
    ) -> impl Future<Output = Result<Vec<ParkedContainer>, RuntimeError>> + Send {
        let _ = runner;
        async { Ok(Vec::new()) }
    }

    /// Settle the parked containers an earlier process of `runner` left
    /// on this engine, before start-up recovery lists its runs: a claim
    /// cut off between its record and its rename is completed (unless the
    /// run has a container already), every other one is removed. Parked
    /// containers this process holds are untouched.
    ///
    /// # Errors
    /// `Unavailable`, `Engine`.
    fn settle_parked(
        &self,
        runner: &str,
    ) -> impl Future<Output = Result<SettledParked, RuntimeError>> + Send {
        let _ = runner;
        async { Ok(SettledParked::default()) }
    }

    /// Claim a parked container for `spec`: record the run's facts with
    /// the container (the engine keeps them) and rename it
    /// `bus-run-<run_id>`, the durable claim (unique per engine, so two
    /// deliveries never claim two containers on one engine). The next
    /// [`ContainerRuntime::drive`] of the returned container starts the
    /// command at once; its `started_at`, duration and deadline count from
    /// the claim. A container whose claim failed after its record was
    /// written is removed by the runtime (it never serves another run).
    ///
    /// # Errors
    /// `NameConflict` when `bus-run-<run_id>` exists (the parked container
    /// is removed), `ContainerGone` when it is not claimable by this
    /// process, `Unavailable`, `Engine`.
    fn claim(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> impl Future<Output = Result<ContainerRef, RuntimeError>> + Send {
        let _ = spec;
        let gone = RuntimeError::ContainerGone(parked.id.clone());
        async { Err(gone) }
    }
}

/// Publishes responses and live output.
pub trait EventPublisher: Send + Sync + 'static {
    /// Publish one response, retrying transient failures until it is
    /// accepted.
    ///
    /// # Errors
    /// `Rejected` when the Events API refuses it for good, `Abandoned`
    /// when the worker is stopping before it could be published.
    fn publish(&self, response: &Response)
        -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Publish one live output event, retrying transient failures like
    /// [`EventPublisher::publish`].
    ///
    /// # Errors
    /// `Rejected` when the Events API refuses it for good, `Abandoned`
    /// when the worker is stopping before it could be published.
    fn publish_output(
        &self,
        output: &OutputEvent,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Delivers inbound requests.
///
/// A request the source has taken off its transport is a request it hands
/// on: the Events API counts it as delivered and sends it to nobody else
/// (docs/protocol.md §5). So a source never withholds or drops one, whatever the
/// worker's load (a run the worker has no room for is answered
/// `capacity`), and after [`EventSource::close`] it still returns
/// everything it had taken before it returns `None`.
pub trait EventSource: Send + 'static {
    /// The next request, `None` when the source has stopped (shutdown) and
    /// handed on everything it had taken.
    ///
    /// # Errors
    /// `Fatal` when the Events API refuses the worker so that it cannot
    /// serve anything (401, or every request stream 403): a configuration
    /// error the worker cannot recover from.
    fn next_inbound(&mut self)
        -> impl Future<Output = Option<Result<Inbound, SourceError>>> + Send;

    /// Take nothing more off the transport: from now on
    /// [`EventSource::next_inbound`] returns what was already taken, then
    /// `None`.
    fn close(&mut self);
}
