//! Unicast groups: a group's backlog and its waiting consumers, who take
//! turns; an event handed to a consumer that never received it goes back
//! to the group ([`PendingTake`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{lock, Broker, Identity, Limits, Line};

/// One unicast group: every event of its name is delivered to exactly one of
/// its consumers.
pub(crate) struct Group {
    pub(super) state: Mutex<GroupState>,
}

/// An event queued for a group, with its publish sequence number.
pub(super) type Item = (u64, Line);

pub(super) struct GroupState {
    backlog: VecDeque<Item>,
    backlog_bytes: usize,
    waiting: VecDeque<oneshot::Sender<Item>>,
    pub(super) connected: usize,
    max_events: usize,
    max_bytes: usize,
}

impl GroupState {
    /// Gives `item` to the first consumer still waiting; returns it when
    /// nobody is. Senders whose consumer has gone are discarded on the way.
    fn hand_off(&mut self, mut item: Item) -> Option<Item> {
        while let Some(waiter) = self.waiting.pop_front() {
            match waiter.send(item) {
                Ok(()) => return None,
                Err(returned) => item = returned,
            }
        }
        Some(item)
    }

    fn pop_front(&mut self) -> Option<Item> {
        let item = self.backlog.pop_front()?;
        self.backlog_bytes -= item.1.len();
        Some(item)
    }

    /// Queues `item` at the front or the back, then drops the oldest events
    /// until the backlog fits its limits; returns how many were dropped.
    fn queue(&mut self, item: Item, front: bool) -> usize {
        self.backlog_bytes += item.1.len();
        if front {
            self.backlog.push_front(item);
        } else {
            self.backlog.push_back(item);
        }
        let mut dropped = 0;
        while self.backlog.len() > self.max_events
            || (self.backlog_bytes > self.max_bytes && !self.backlog.is_empty())
        {
            self.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// While no consumer is connected, the group keeps only events the
    /// history still retains: drops queued events older than `oldest`
    /// (everything when nothing is retained).
    pub(super) fn expire_absent(&mut self, oldest: Option<u64>) {
        if self.connected > 0 {
            return;
        }
        while self
            .backlog
            .front()
            .is_some_and(|(seq, _)| oldest.is_none_or(|oldest| *seq < oldest))
        {
            self.pop_front();
        }
    }
}

impl Group {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(GroupState {
                backlog: VecDeque::new(),
                backlog_bytes: 0,
                waiting: VecDeque::new(),
                connected: 0,
                max_events: limits.group_events,
                max_bytes: limits.group_bytes,
            }),
        }
    }

    /// A newly published event.
    pub(super) fn offer(&self, name: &str, group: &str, item: Item) {
        let mut state = lock(&self.state);
        if let Some(item) = state.hand_off(item) {
            let dropped = state.queue(item, false);
            if dropped > 0 {
                tracing::warn!(
                    name,
                    group,
                    dropped,
                    "unicast queue full; dropped its oldest events"
                );
            }
        }
    }

    /// An event that was handed out but never written: it goes to another
    /// waiting consumer or back to the front of the queue.
    fn requeue(&self, item: Item) {
        let mut state = lock(&self.state);
        if let Some(item) = state.hand_off(item) {
            state.queue(item, true);
        }
    }

    /// The next queued event, or a place in the waiting line.
    fn take(&self) -> Result<Item, oneshot::Receiver<Item>> {
        let mut state = lock(&self.state);
        match state.pop_front() {
            Some(item) => Ok(item),
            None => {
                let (tx, rx) = oneshot::channel();
                state.waiting.push_back(tx);
                Err(rx)
            }
        }
    }

    /// The next queued event, without waiting.
    fn try_take(&self) -> Option<Line> {
        lock(&self.state).pop_front().map(|(_, line)| line)
    }

    /// No consumer and nothing queued: forgetting the group loses nothing
    /// that the history does not hold.
    pub(super) fn is_idle(&self) -> bool {
        let state = lock(&self.state);
        state.connected == 0 && state.backlog.is_empty()
    }
}

/// One connected consumer of a unicast group. Counted as connected from
/// creation until drop.
pub(crate) struct Consumer {
    group: Arc<Group>,
    pending: Option<PendingTake>,
    broker: Broker,
    name: String,
    key: (String, Identity),
}

impl Consumer {
    pub(super) fn new(
        group: Arc<Group>,
        broker: Broker,
        name: String,
        key: (String, Identity),
    ) -> Self {
        lock(&group.state).connected += 1;
        Self {
            group,
            pending: None,
            broker,
            name,
            key,
        }
    }

    /// Waits for the next event for this consumer.
    ///
    /// Cancel safe: if the future is dropped while waiting, the place in the
    /// waiting line is kept for the next call, and an event that arrives in
    /// the meantime is kept too (or re-queued when the consumer is dropped).
    pub(crate) async fn next(&mut self) -> Line {
        loop {
            if self.pending.is_none() {
                match self.group.take() {
                    Ok((_, line)) => return line,
                    Err(rx) => {
                        self.pending = Some(PendingTake {
                            rx,
                            group: Arc::clone(&self.group),
                        });
                    }
                }
            }
            if let Some(pending) = self.pending.as_mut() {
                let received = (&mut pending.rx).await;
                self.pending = None;
                if let Ok((_, line)) = received {
                    return line;
                }
                // The group dropped our sender without an event; ask again.
            }
        }
    }

    /// The next queued event, if any, without waiting for one.
    pub(crate) fn next_queued(&mut self) -> Option<Line> {
        self.group.try_take()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        // Drop the pending take first so that an event it holds can go to a
        // consumer that is still connected (or back to the backlog).
        self.pending = None;
        self.broker.leave(&self.name, &self.key, &self.group);
    }
}

/// A consumer's place in the waiting line. Dropping it returns an event that
/// was handed over but never received to the group.
struct PendingTake {
    rx: oneshot::Receiver<Item>,
    group: Arc<Group>,
}

impl Drop for PendingTake {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(item) = self.rx.try_recv() {
            self.group.requeue(item);
        }
    }
}
