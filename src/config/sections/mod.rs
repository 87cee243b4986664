//! The sections of the configuration file, each able to build its own
//! domain value: `[policy]` a [`Policy`](bus_docker_domain::spec::Policy),
//! `[codex]` and `[profiles.*]` a
//! [`Profile`](bus_docker_domain::profile::Profile), each key checked and
//! named when it is wrong. One file per section group:
//!
//! | file | sections |
//! |---|---|
//! | `connection.rs` | `[events]`, `[docker]` |
//! | `policy.rs` | `[policy]`, `[policy.hardening]` |
//! | `profiles.rs` | `[profiles.<name>]` and their mounts |
//! | `codex.rs` | `[codex]` |

mod codex;
mod connection;
mod policy;
mod profiles;

pub use codex::{CodexConfig, InvisibleHostPath};
pub use connection::{DockerConfig, EventsConfig};
pub use policy::{HardeningConfig, PolicyConfig};
pub use profiles::{MountConfig, ProfileConfig};

#[cfg(test)]
mod tests;
