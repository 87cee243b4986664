//! Pinned bind mounts for bus-integration-docker (Linux only).
//!
//! The worker checks a request's mount source (canonical, inside an
//! allowed root), but Docker resolves the path again when the container
//! starts: a container with write access to the root can swap a directory
//! for a symlink in between. [`HostMounts`] closes that gap: it opens the
//! checked path following no symlink, checks what it holds (identity,
//! where the kernel says it is), and bind-mounts the held fd onto a
//! private staging path (`nosuid,nodev`, `ro` when asked) that no
//! container can reach. Docker is handed the staging path; what it mounts
//! is what was checked.
//!
//! Depends on `rustix` only (no domain, no Docker): the Docker adapter
//! maps [`PinError`] to its own refusals.
//!
//! Layout:
//! * `open.rs`: `openat2(RESOLVE_NO_SYMLINKS)` (component walk before
//!   Linux 5.6), [`Identity`].
//! * `staging.rs`: the staging tree (`<root>/<run_id>/<index>-<token>`),
//!   bind, remount, unmount, sweep.
//! * `mountinfo.rs`: [`is_mount_point`] (is the engine socket mounted in
//!   from another mount namespace?).
//! * `error.rs`: [`PinError`].

mod error;
mod mountinfo;
mod open;
mod staging;

pub use error::PinError;
pub use mountinfo::is_mount_point;
pub use open::{identity, Identity, Kind};
pub use staging::{default_staging_dir, HostMounts, Pin};
