//! NDJSON framing: bytes in, lines out.
//!
//! [`LineFramer`] turns an arbitrarily chunked byte stream into [`Frame`]s.
//! It is deliberately ignorant of JSON: deciding whether a line is a usable
//! envelope is the job of [`crate::StreamItem::from_frame`].
//!
//! Rules, independent of how the input is chunked:
//!
//! * a line ends at `\n`; one trailing `\r` is stripped (CRLF input);
//! * blank lines (empty or only spaces, tabs and `\r`) are skipped — servers
//!   use them as keep-alives;
//! * a line whose length (without `\n` and the trailing `\r`) exceeds
//!   `max_line_bytes` becomes [`Frame::Oversized`] carrying its first
//!   [`OVERSIZED_PREFIX_BYTES`] bytes and its full length; the rest of it is
//!   discarded as it arrives, so the framer never holds more than
//!   `max_line_bytes + 1 + OVERSIZED_PREFIX_BYTES` bytes;
//! * [`LineFramer::finish`] tells a clean end (nothing pending) from a stream
//!   that was cut in the middle of a line.

use bytes::{Bytes, BytesMut};

/// How much of an oversized line is kept so the caller can still try to read
/// its `name` and correlation id.
pub const OVERSIZED_PREFIX_BYTES: usize = 64 * 1024;

/// One complete line of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A non-blank line, without its `\n` and trailing `\r`.
    Line(Bytes),
    /// A line longer than the configured maximum.
    Oversized {
        /// The first (up to) [`OVERSIZED_PREFIX_BYTES`] bytes of the line.
        prefix: Bytes,
        /// The full length of the line, without `\n` and trailing `\r`.
        len: usize,
    },
}

/// How the input ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The input ended right after a `\n` (or was empty).
    Clean,
    /// The input ended inside a line; the partial line was dropped.
    CutMidLine {
        /// Bytes received for the unfinished line.
        partial_len: usize,
    },
}

#[derive(Debug)]
enum State {
    /// Collecting a line that is (so far) within the limit.
    Collecting { buf: BytesMut },
    /// The current line is over the limit: keep a prefix, count the rest.
    Discarding {
        prefix: BytesMut,
        raw_len: usize,
        last_was_cr: bool,
    },
}

/// Incremental NDJSON line splitter with a maximum line length.
#[derive(Debug)]
pub struct LineFramer {
    max_line_bytes: usize,
    state: State,
}

impl LineFramer {
    /// A framer that reports lines longer than `max_line_bytes` as
    /// [`Frame::Oversized`].
    #[must_use]
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes,
            state: State::Collecting {
                buf: BytesMut::new(),
            },
        }
    }

    /// The configured maximum line length.
    #[must_use]
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Bytes currently held for the unfinished line (at most
    /// `max_line_bytes + 1 + OVERSIZED_PREFIX_BYTES`).
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        match &self.state {
            State::Collecting { buf } => buf.len(),
            State::Discarding { prefix, .. } => prefix.len(),
        }
    }

    /// Feeds one chunk and returns the lines it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.absorb(&rest[..newline]);
            if let Some(frame) = self.end_line() {
                frames.push(frame);
            }
            rest = &rest[newline + 1..];
        }
        self.absorb(rest);
        frames
    }

    /// Ends the input, reporting whether a line was left unfinished.
    #[must_use]
    pub fn finish(self) -> End {
        match self.state {
            State::Collecting { buf } if buf.is_empty() => End::Clean,
            State::Collecting { buf } => End::CutMidLine {
                partial_len: buf.len(),
            },
            State::Discarding { raw_len, .. } => End::CutMidLine {
                partial_len: raw_len,
            },
        }
    }

    /// Adds bytes that belong to the current line (no `\n` inside).
    fn absorb(&mut self, part: &[u8]) {
        if part.is_empty() {
            return;
        }
        // A line of exactly `max` bytes followed by `\r\n` is legal, so one
        // extra byte may be held before the line is known to be too long.
        let limit = self.max_line_bytes.saturating_add(1);
        match &mut self.state {
            State::Collecting { buf } if buf.len() + part.len() <= limit => {
                buf.extend_from_slice(part);
            }
            State::Collecting { buf } => {
                let raw_len = buf.len() + part.len();
                let mut prefix = BytesMut::with_capacity(OVERSIZED_PREFIX_BYTES.min(raw_len));
                let from_buf = buf.len().min(OVERSIZED_PREFIX_BYTES);
                prefix.extend_from_slice(&buf[..from_buf]);
                let from_part = (OVERSIZED_PREFIX_BYTES - from_buf).min(part.len());
                prefix.extend_from_slice(&part[..from_part]);
                self.state = State::Discarding {
                    prefix,
                    raw_len,
                    last_was_cr: part.last() == Some(&b'\r'),
                };
            }
            State::Discarding {
                prefix,
                raw_len,
                last_was_cr,
            } => {
                let room = OVERSIZED_PREFIX_BYTES - prefix.len();
                prefix.extend_from_slice(&part[..room.min(part.len())]);
                *raw_len += part.len();
                *last_was_cr = part.last() == Some(&b'\r');
            }
        }
    }

    /// Called at a `\n`: turns the current line into a frame (or nothing for
    /// a blank line) and starts a new one.
    fn end_line(&mut self) -> Option<Frame> {
        let state = std::mem::replace(
            &mut self.state,
            State::Collecting {
                buf: BytesMut::new(),
            },
        );
        match state {
            State::Collecting { mut buf } => {
                if buf.last() == Some(&b'\r') {
                    buf.truncate(buf.len() - 1);
                }
                if buf.len() > self.max_line_bytes {
                    let len = buf.len();
                    buf.truncate(OVERSIZED_PREFIX_BYTES);
                    return Some(Frame::Oversized {
                        prefix: buf.freeze(),
                        len,
                    });
                }
                if is_blank(&buf) {
                    // Reuse the allocation for the next line.
                    buf.clear();
                    self.state = State::Collecting { buf };
                    return None;
                }
                Some(Frame::Line(buf.freeze()))
            }
            State::Discarding {
                mut prefix,
                raw_len,
                last_was_cr,
            } => {
                let len = raw_len - usize::from(last_was_cr);
                // Entered only once more than `max + 1` bytes were seen, so
                // even without its `\r` the line is over the limit.
                debug_assert!(len > self.max_line_bytes);
                // The prefix may hold the whole line, `\r` included.
                prefix.truncate(len);
                Some(Frame::Oversized {
                    prefix: prefix.freeze(),
                    len,
                })
            }
        }
    }
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}
