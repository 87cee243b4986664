//! bus-docker-service: the application service of bus-integration-docker.
//!
//! It answers container requests through the domain's ports only
//! (`bus-docker-domain::ports`): events come in through an `EventSource`,
//! answers go out through an `EventPublisher`, containers run on a
//! `ContainerRuntime`. It must not depend on any adapter crate (bollard,
//! reqwest, axum, …): `tests/no_adapter_dependencies.rs` reads `cargo tree`
//! to keep it so. The composition root (`src/` of the workspace) builds the
//! adapters and hands them in.
//!
//! Layout:
//! * [`worker`]: one file per operation (run, status, input, delete,
//!   runner status/start/delete), the dispatch, the run table, recovery,
//!   retention, intake and shutdown.
//! * [`pool`]: the engines a worker places runs on, their health and
//!   placement.
//! * [`metrics`]: what the worker counts (Prometheus text).

pub mod metrics;
pub mod pool;
pub mod worker;
