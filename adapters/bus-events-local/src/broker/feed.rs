//! A broadcast subscriber's queue: bounded by bytes, and a subscriber that
//! falls further behind is cut off ([`Overflow`]) instead of growing the
//! server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{lock, Broker, Line, BROADCAST_BUFFER};

/// The queue between the broker and one broadcast stream, bounded by bytes
/// and by events: a subscriber that stops reading is cut off instead of
/// growing the server.
pub(crate) struct Feed {
    pub(super) state: Mutex<FeedState>,
    ready: Notify,
    pub(super) max_bytes: usize,
}

#[derive(Default)]
pub(super) struct FeedState {
    lines: VecDeque<Line>,
    pub(super) bytes: usize,
    overflowed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    Queued,
    Overflowed,
}

/// The subscriber fell further behind than its limit and was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the subscriber fell more than {0} bytes behind and was cut off")]
pub(crate) struct Overflow(pub(crate) usize);

impl Feed {
    pub(super) fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(FeedState::default()),
            ready: Notify::new(),
            max_bytes,
        }
    }

    /// Queues `line`, or cuts the subscriber off (freeing what it queued)
    /// when it would hold more than its limit. An empty queue always takes
    /// one event, so an event larger than the limit still reaches a
    /// subscriber that keeps up.
    pub(super) fn push(&self, line: Line) -> Pushed {
        let mut state = lock(&self.state);
        if state.overflowed {
            return Pushed::Overflowed;
        }
        let over =
            state.bytes + line.len() > self.max_bytes || state.lines.len() >= BROADCAST_BUFFER;
        if over && !state.lines.is_empty() {
            state.lines = VecDeque::new();
            state.bytes = 0;
            state.overflowed = true;
            drop(state);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        state.bytes += line.len();
        state.lines.push_back(line);
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// The next line; an error once the subscriber was cut off. Cancel safe
    /// (one reader: a wake-up that finds nobody waiting is kept as a permit).
    async fn recv(&self) -> Result<Line, Overflow> {
        loop {
            {
                let mut state = lock(&self.state);
                if let Some(line) = state.lines.pop_front() {
                    state.bytes -= line.len();
                    return Ok(line);
                }
                if state.overflowed {
                    return Err(Overflow(self.max_bytes));
                }
            }
            self.ready.notified().await;
        }
    }
}

/// A stream's end of a [`Feed`]; dropping it unsubscribes.
pub(crate) struct LiveFeed {
    pub(super) feed: Arc<Feed>,
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) broker: Broker,
}

impl LiveFeed {
    pub(crate) async fn recv(&mut self) -> Result<Line, Overflow> {
        self.feed.recv().await
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.broker.unsubscribe(&self.name, self.id);
    }
}
