//! The pure domain core of bus-integration-docker: container runs, run
//! specs, profiles, mounts and mount policy, event names, request
//! validation, errors, and the ports the application needs.
//!
//! This crate must not depend on any IO library (no tokio, bollard,
//! reqwest, serde_json, figment); `tests/no_io_dependencies.rs` checks it.
//! Wire formats belong to the adapters.
//!
//! Layout:
//! * [`ids`]: validated identifiers (`RunId`, `ImageRef`, ...).
//! * [`events`]: operations and the event prefix.
//! * [`mount`], [`profile`], [`spec`]: mounts, profiles, policy, and
//!   [`spec::resolve`] turning a request into a [`spec::RunSpec`].
//! * [`request`], [`response`], [`run`]: what flows in and out; [`run`]
//!   holds a run's outcome (exit, status, report, state, summary).
//! * [`container`]: engines and containers (`EngineId`, `ContainerRef`,
//!   `ManagedContainer`, `ManagedFilter`, ...).
//! * [`runner`]: the runner's report (`runner.status`) and its judgement.
//! * [`output`]: captured output (`TailBuffer`, `CapturedOutput`) and live
//!   output (`OutputSink`, `OutputEvent`).
//! * [`ports`]: the traits `ContainerRuntime`, `EventPublisher`,
//!   `EventSource` and their IO handles (`Stdin`, `RunIo`, `InputChunk`).
//! * [`network`]: which network a run joins (`NetworkPolicy`).
//! * [`placement`]: which engine of the pool a new run goes to.
//! * [`warm`]: parked containers of warm profiles and which runs fit them.
//! * [`error`]: errors and the wire codes they map to.

pub mod container;
pub mod error;
pub mod events;
pub mod ids;
pub mod mount;
pub mod network;
pub mod output;
pub mod placement;
pub mod ports;
pub mod profile;
pub mod request;
pub mod response;
pub mod run;
pub mod runner;
pub mod spec;
pub mod warm;

pub use error::{ErrorCode, FieldError, OperationError, PublishError, RuntimeError, SourceError};
pub use events::{EventPrefix, Operation};
pub use ids::{
    CorrelationId, ImageId, ImageRef, NetworkName, OwnerId, ProfileName, RunId, SessionName,
};
