//! Live output (docs/protocol.md §2/§4, `stream_output: true`): the runtime hands
//! the raw bytes a container writes to an [`OutputSink`] as they arrive;
//! the application coalesces them into [`OutputEvent`]s and publishes them
//! before the run's one response.

use crate::ids::{CorrelationId, RunId};

/// Which of a container's output streams bytes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// `stdout` or `stderr` (the wire spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// Where a runtime puts a container's output while the run goes.
///
/// `write` is called from the runtime's output reader for every chunk, in
/// the order the engine delivered them. It must return at once: an
/// implementation copies the bytes (bounded) and never waits, so a slow
/// consumer can never stall the reader and, through it, the container.
pub trait OutputSink: Send + Sync + 'static {
    /// Raw bytes as the container wrote them (any UTF-8 may be cut).
    fn write(&self, stream: OutputStream, bytes: &[u8]);
}

/// One `<prefix>.run.output` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputEvent {
    /// The event name (`<prefix>.run.output`).
    pub event: String,
    /// The run request's correlation id.
    pub correlation: CorrelationId,
    pub run_id: RunId,
    /// Position in the run's one sequence over both streams.
    pub seq: u64,
    pub stream: OutputStream,
    /// Whole characters only; invalid bytes replaced with U+FFFD.
    pub data: String,
    /// Set on the last event when live output stopped before the run's
    /// end (the run's response still carries the tail of its output).
    pub note: Option<String>,
}
