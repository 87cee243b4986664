//! Logging: `tracing` to stderr, as text or JSON, filtered by `RUST_LOG`
//! (default `info`). Tokens are never logged anywhere.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Install the global subscriber once; later calls are no-ops (tests).
/// `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
