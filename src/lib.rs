//! bus-integration-docker: the composition root.
//!
//! Wires the pure domain (`bus-docker-domain`) to its adapters: the Events
//! API (`bus-docker-events` over `bus-events-client`) inbound and outbound,
//! and a container runtime (`bus-docker-engine` on bollard, or the
//! deterministic `bus-docker-static`). The application service that
//! answers requests is its own crate, `bus-docker-service` (`service/`),
//! re-exported here as [`worker`], [`pool`] and [`metrics`].
//!
//! Layout:
//! * [`cli`], [`config`], [`telemetry`]: what `main` reads and sets up.
//! * [`app`]: building adapters and the intake loop (`App::run_until`).
//! * [`runtime`]: the `--provider` enum forwarding to an adapter.
//! * [`health`]: the opt-in `/metrics`, `/healthz`, `/readyz` listener.
//! * [`local`], [`caller`], [`commands`]: the in-process local Events
//!   API, the caller side (publish a request, wait for its response), and
//!   the one-shot commands.

pub mod app;
pub mod caller;
pub mod cli;
pub mod commands;
pub mod config;
mod de;
pub mod health;
pub mod local;
pub mod runtime;
pub mod telemetry;

// The application service lives in its own crate (`service/`), which
// depends on the domain and on no adapter; re-exported for `tests/`.
pub use bus_docker_service::{metrics, pool, worker};
