//! Live output (docs/protocol.md §2/§4, `stream_output: true`): the runtime hands
//! the raw bytes a container writes to an [`OutputSink`] as they arrive;
//! the application coalesces them into [`OutputEvent`]s and publishes them
//! before the run's one response.

use crate::ids::{CorrelationId, RunId};
use std::collections::VecDeque;

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

/// Keeps the last `cap` bytes of a stream and counts all of them, so a
/// container printing gigabytes costs at most `cap` bytes of memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailBuffer {
    cap: usize,
    tail: VecDeque<u8>,
    total: u64,
}

impl TailBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            tail: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let keep = &bytes[bytes.len().saturating_sub(self.cap)..];
        let overflow = (self.tail.len() + keep.len()).saturating_sub(self.cap);
        self.tail.drain(..overflow);
        self.tail.extend(keep);
    }

    /// The captured tail as UTF-8, invalid bytes replaced.
    pub fn finish(self) -> CapturedOutput {
        let bytes: Vec<u8> = self.tail.into_iter().collect();
        let truncated = self.total > bytes.len() as u64;
        // Valid UTF-8 (the common case) moves without a copy.
        let text = String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        CapturedOutput {
            truncated,
            text,
            total_bytes: self.total,
        }
    }
}

/// One output stream of a finished run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedOutput {
    /// The tail, UTF-8 with invalid bytes replaced.
    pub text: String,
    /// Every byte the container wrote to this stream.
    pub total_bytes: u64,
    /// Whether bytes were dropped from the front.
    pub truncated: bool,
}

impl CapturedOutput {
    /// Keep only the last `max` bytes of text (on a char boundary), for
    /// when a response would exceed the event size limit.
    pub fn shrink_to(&mut self, max: usize) {
        if self.text.len() <= max {
            return;
        }
        let mut start = self.text.len() - max;
        while !self.text.is_char_boundary(start) {
            start += 1;
        }
        self.text.drain(..start);
        self.truncated = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_buffer_keeps_the_tail_and_counts_everything() {
        let mut b = TailBuffer::new(4);
        b.push(b"ab");
        b.push(b"cdef");
        b.push(b"");
        b.push(b"g");
        let out = b.finish();
        assert_eq!(out.text, "defg");
        assert_eq!(out.total_bytes, 7);
        assert!(out.truncated);
    }

    #[test]
    fn tail_buffer_handles_chunks_larger_than_the_cap() {
        let mut b = TailBuffer::new(3);
        b.push(b"0123456789");
        let out = b.finish();
        assert_eq!(out.text, "789");
        assert_eq!(out.total_bytes, 10);
        let mut small = TailBuffer::new(10);
        small.push(b"ok");
        let out = small.finish();
        assert!(!out.truncated);
        assert_eq!(out.text, "ok");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut b = TailBuffer::new(10);
        b.push(&[b'a', 0xff, b'b']);
        assert_eq!(b.finish().text, "a\u{fffd}b");
    }

    #[test]
    fn shrink_keeps_a_char_boundary() {
        let mut o = CapturedOutput {
            text: "aéb".into(),
            total_bytes: 4,
            truncated: false,
        };
        o.shrink_to(2);
        assert_eq!(o.text, "b");
        assert!(o.truncated);
    }
}
