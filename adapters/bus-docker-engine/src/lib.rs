//! The Docker Engine adapter of bus-integration-docker: [`DockerEngine`]
//! implements the domain's `ContainerRuntime` port with bollard.
//!
//! It depends on the domain crate and never the other way round; no other
//! adapter depends on it. Engine API bodies and bollard types stay inside
//! this crate: the port speaks `RunSpec`, `Exit`, `ManagedContainer`.
//!
//! Layout:
//! * [`engine`]: `DockerEngine`, the port implementation, one file per
//!   concern under `engine/`: `create.rs` (images, the create), `runs.rs`
//!   (drive, kill, remove, marks, stdin), `listing.rs` (the record),
//!   `sessions.rs` (Codex homes and sessions), `warm.rs` (warm start).
//! * [`client`]: `EngineOptions` (with the engine's own `TlsFiles`) and the
//!   lazily built, version-negotiated client (the engine may be down at
//!   start-up and come back later); `display_host` for what logs show.
//! * `drive/`: attach/start, re-attach after a restart (`mod.rs`);
//!   collecting an exited container, the deadline, cancellation (graceful
//!   stop), run marks, OOM kills and commands that cannot start, read from
//!   the final inspect (`end.rs`).
//! * `exits.rs`: a claimed warm run's exit taken from the engine's `die`
//!   event, when that event decides it.
//! * `output.rs`: the bounded output tail and feeding stdin.
//! * `control.rs`: single container calls (inspect, kill, stop, wait,
//!   rename) and what their answers mean.
//! * `records.rs`: the engine as the record of runs: filtered listing,
//!   reading one container in full, run marks (renames).
//! * `view.rs`: the managed containers kept from the engine's event
//!   stream, so listings do not ask the engine each time (`fresh`
//!   listings still do).
//! * `input.rs`: stdin for runs another worker drives (held attaches).
//! * `images.rs`: making an image present under a pull policy (a cache
//!   of images seen), reading an image's id and labels.
//! * `pull.rs`: pulls with credentials, an idle limit and a deadline.
//! * `bodies.rs`: create bodies, pull references, engine timestamps.
//! * [`codex_home`]: per-run Codex homes (an anonymous volume seeded on
//!   the engine's side), session volumes, their last use and sweep.
//! * [`pinning`]: request mounts pinned to what was checked
//!   (`bus-host-mounts`), or refused where this worker cannot pin.
//! * [`labels`]: the labels that make a container the durable record of a
//!   run, and reading them back.
//! * [`registry`]: registry credentials from the Docker client config
//!   (`auths`, `credsStore`, `credHelpers`) for pulls.
//! * [`warm`]: warm start (docs/protocol.md §10): parked containers and
//!   claims (`warm/mod.rs`), the launcher (`launcher.rs`), the claim record
//!   in the engine's log (`record.rs`), and what start-up does with what an
//!   earlier process parked (`settle.rs`).
//! * [`error`]: `DockerError` (one variant per Engine call) and its
//!   mapping to `RuntimeError`.
//!
//! Tests: unit tests beside the code; live tests against the real engine
//! under `tests/` (`engine.rs`: runs, graceful stop, OOM, missing
//! executables; `lifecycle.rs`: the record, images, reachability;
//! `records.rs`: image labels, filtered listings, run marks across workers;
//! `tls.rs`: an engine over tcp+TLS with its own files, the second test
//! engine of `scripts/test.sh`). They fail, never skip, when no engine is
//! reachable (`tls.rs` skips only without `BUS_TEST_DOCKER`).

mod bodies;
pub mod client;
pub mod codex_home;
mod control;
mod drive;
pub mod engine;
pub mod error;
mod exits;
mod images;
mod input;
pub mod labels;
mod output;
pub mod pinning;
mod pull;
mod records;
pub mod registry;
mod view;
pub mod warm;

pub use client::{
    display_host, EngineOptions, TlsError, TlsFiles, CONNECT_TIMEOUT, DEFAULT_PULL_TIMEOUT,
};
pub use engine::DockerEngine;
pub use error::DockerError;

/// A spec for unit tests.
#[cfg(test)]
pub(crate) fn test_spec() -> bus_docker_domain::spec::RunSpec {
    bus_docker_domain::spec::RunSpec::builder("r1", "img:1")
        .owner("owner-1")
        .correlation("c-1")
        .profile("codex")
        .command(&["sh", "-c", "echo \"hi\""])
        .env("A", "1")
        .label("bus.task.ref", "t-9")
        .max_output_bytes(1024)
        .build()
}
