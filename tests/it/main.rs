//! The integration tests, one binary with a module per theme: on two cores it
//! rebuilds 2.5–3.3× faster than one binary per theme (README, Tests).
//! `tests/output_cap.rs` stays its own binary: it measures the process's
//! peak RSS, which other tests in the same process would disturb.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod codex_home;
mod config;
mod docker_runs;
mod dropin;
mod events_image;
mod events_path;
mod faults;
mod hostile;
mod intake;
mod live_output;
mod metrics;
mod networks;
mod pool;
mod private_registry;
mod scopes;
mod shutdown;
mod token_lookup;
mod trust;
mod warm;
