//! The in-memory event store and its two delivery modes.
//!
//! Every published event is kept for broadcast replay and for unicast
//! groups that do not exist yet, copied to each broadcast subscriber of its
//! name, and offered once to every unicast group of its name. Every event
//! carries the identity that published it, and a stream only ever sees
//! events of its own identity: subscribers and groups are per identity.
//!
//! # Memory
//!
//! The history is bounded per name by a count (`retention`) and across all
//! names by bytes (`history_bytes`, oldest event evicted first); every group
//! backlog is bounded by a count and by bytes, dropping its oldest event. An
//! event's bytes are shared between the history and the backlogs holding it.
//!
//! # Unicast groups
//!
//! A group is created by its first consumer and starts at the oldest event
//! of its name and identity still in the history, so an event published
//! before the group's first consumer connected is delivered to it; from then
//! on the group holds its own backlog (its cursor).
//!
//! A [`Group`] holds a backlog and a FIFO of consumers that are waiting for
//! their next event. A consumer asks for an event only when its HTTP body is
//! polled, i.e. when it is ready to write; if the backlog is empty it parks a
//! oneshot sender in the FIFO. Publishing hands the event to the first
//! waiting consumer, which re-joins the back of the FIFO after writing it, so
//! connected consumers take turns. With nobody waiting the event stays in the
//! backlog until a consumer (re)connects.
//!
//! An event handed to a consumer whose stream ends before writing it (the
//! connection died, `drop_streams`, shutdown) is not lost: the consumer's
//! [`PendingTake`] guard closes the oneshot on drop and, if an event arrived,
//! gives it to the next waiting consumer or puts it back at the front of the
//! backlog. Once an event is handed to the HTTP layer it counts as delivered
//! (at-most-once).
//!
//! Locks are `std::sync::Mutex`es held only for short, non-async sections;
//! the order is always topics, then a group.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// One serialized envelope, `\n` terminated, ready to be written.
pub(crate) type Line = Bytes;

/// The identity (`sub`) that published an event or opened a stream.
pub(crate) type Identity = Arc<str>;

/// How many events a unicast group keeps for absent consumers before it
/// starts dropping the oldest.
pub const UNICAST_QUEUE_CAPACITY: usize = 100_000;

/// How many events a broadcast subscriber may fall behind before it is cut
/// off (it sees its stream end and can reconnect with `replay=true`).
pub const BROADCAST_BUFFER: usize = 100_000;

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// state consistent before anything that could panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How much the broker may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Events kept per name in the history.
    pub(crate) retention: usize,
    /// Bytes kept in the history across all names.
    pub(crate) history_bytes: usize,
    /// Events one group backlog keeps.
    pub(crate) group_events: usize,
    /// Bytes one group backlog keeps.
    pub(crate) group_bytes: usize,
}

/// A stored event: its line and who published it.
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    identity: Identity,
    line: Line,
}

/// All topics of one server.
pub(crate) struct Broker {
    state: Mutex<State>,
    limits: Limits,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    /// Publish order across names, for evicting the oldest history bytes.
    order: VecDeque<(u64, String)>,
    history_bytes: usize,
    next_seq: u64,
}

#[derive(Default)]
struct Topic {
    history: VecDeque<Stored>,
    subscribers: Vec<(Identity, mpsc::Sender<Line>)>,
    groups: HashMap<(String, Identity), Arc<Group>>,
}

/// A broadcast subscription: the replayed history, then (when following)
/// the live events.
pub(crate) struct Subscription {
    pub(crate) replay: VecDeque<Line>,
    pub(crate) live: Option<mpsc::Receiver<Line>>,
}

impl State {
    /// Drops history until it fits in `limit` bytes, oldest first.
    fn evict_history(&mut self, limit: usize) {
        while self.history_bytes > limit {
            let Some((seq, name)) = self.order.pop_front() else {
                break;
            };
            let Some(topic) = self.topics.get_mut(&name) else {
                continue;
            };
            if topic.history.front().is_some_and(|event| event.seq == seq) {
                if let Some(event) = topic.history.pop_front() {
                    self.history_bytes -= event.line.len();
                }
            }
        }
    }
}

impl Broker {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State::default()),
            limits: Limits {
                group_events: limits.group_events.max(1),
                ..limits
            },
        }
    }

    /// Stores `line`, published by `identity`, under `name` and delivers it
    /// to every subscriber and group of that name and identity.
    pub(crate) fn publish(&self, name: &str, identity: &str, line: Line) {
        let mut state = lock(&self.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        let identity: Identity = Arc::from(identity);
        let keep = self.limits.retention > 0 && line.len() <= self.limits.history_bytes;
        let topic = state.topics.entry(name.to_owned()).or_default();
        let mut freed = 0;
        if keep {
            if topic.history.len() >= self.limits.retention {
                freed = topic
                    .history
                    .pop_front()
                    .map_or(0, |event| event.line.len());
            }
            topic.history.push_back(Stored {
                seq,
                identity: Arc::clone(&identity),
                line: line.clone(),
            });
        }
        deliver(topic, name, &identity, &line);
        if keep {
            state.history_bytes = state.history_bytes - freed + line.len();
            state.order.push_back((seq, name.to_owned()));
            state.evict_history(self.limits.history_bytes);
        }
    }

    /// Subscribes `identity` to `name`: a snapshot of its history when
    /// `replay`, and a live feed when `follow`. Snapshot and registration
    /// happen under one lock, so nothing is missed or seen twice.
    pub(crate) fn subscribe(
        &self,
        name: &str,
        identity: &str,
        replay: bool,
        follow: bool,
    ) -> Subscription {
        let mut state = lock(&self.state);
        let topic = state.topics.entry(name.to_owned()).or_default();
        let replay = if replay {
            own_history(topic, identity).collect()
        } else {
            VecDeque::new()
        };
        let live = follow.then(|| {
            let (tx, rx) = mpsc::channel(BROADCAST_BUFFER);
            topic.subscribers.push((Arc::from(identity), tx));
            rx
        });
        Subscription { replay, live }
    }

    /// The unicast group `group` of `name` for `identity`, created if this
    /// is its first consumer; a new group starts with the history of its
    /// name and identity.
    pub(crate) fn join(&self, name: &str, group: &str, identity: &str) -> Consumer {
        let mut state = lock(&self.state);
        let topic = state.topics.entry(name.to_owned()).or_default();
        let key = (group.to_owned(), Arc::from(identity));
        if let Some(existing) = topic.groups.get(&key) {
            return Consumer::new(Arc::clone(existing));
        }
        let created = Arc::new(Group::new(self.limits));
        for line in own_history(topic, identity) {
            created.offer(name, group, line);
        }
        tracing::info!(name, group, identity, "unicast group created");
        topic.groups.insert(key, Arc::clone(&created));
        Consumer::new(created)
    }

    /// How many consumers of `group` on `name`, of any identity, have an
    /// open stream.
    pub(crate) fn connected(&self, name: &str, group: &str) -> usize {
        lock(&self.state).topics.get(name).map_or(0, |topic| {
            topic
                .groups
                .iter()
                .filter(|((g, _), _)| g == group)
                .map(|(_, group)| lock(&group.state).connected)
                .sum()
        })
    }
}

/// The history lines of `topic` published by `identity`, oldest first.
fn own_history<'a>(topic: &'a Topic, identity: &'a str) -> impl Iterator<Item = Line> + 'a {
    topic
        .history
        .iter()
        .filter(move |event| &*event.identity == identity)
        .map(|event| event.line.clone())
}

/// Hands a new event to the subscribers and groups of its identity.
fn deliver(topic: &mut Topic, name: &str, identity: &str, line: &Line) {
    topic.subscribers.retain(|(owner, tx)| {
        if &**owner != identity {
            return !tx.is_closed();
        }
        match tx.try_send(line.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    name,
                    "broadcast subscriber fell too far behind; closing its stream"
                );
                false
            }
        }
    });
    for ((group_name, owner), group) in &topic.groups {
        if &**owner == identity {
            group.offer(name, group_name, line.clone());
        }
    }
}

/// One unicast group: every event of its name is delivered to exactly one of
/// its consumers.
pub(crate) struct Group {
    state: Mutex<GroupState>,
}

struct GroupState {
    backlog: VecDeque<Line>,
    backlog_bytes: usize,
    waiting: VecDeque<oneshot::Sender<Line>>,
    connected: usize,
    max_events: usize,
    max_bytes: usize,
}

impl GroupState {
    /// Gives `line` to the first consumer still waiting; returns it when
    /// nobody is. Senders whose consumer has gone are discarded on the way.
    fn hand_off(&mut self, mut line: Line) -> Option<Line> {
        while let Some(waiter) = self.waiting.pop_front() {
            match waiter.send(line) {
                Ok(()) => return None,
                Err(returned) => line = returned,
            }
        }
        Some(line)
    }

    fn pop_front(&mut self) -> Option<Line> {
        let line = self.backlog.pop_front()?;
        self.backlog_bytes -= line.len();
        Some(line)
    }

    /// Queues `line` at the front or the back, then drops the oldest events
    /// until the backlog fits its limits; returns how many were dropped.
    fn queue(&mut self, line: Line, front: bool) -> usize {
        self.backlog_bytes += line.len();
        if front {
            self.backlog.push_front(line);
        } else {
            self.backlog.push_back(line);
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
}

impl Group {
    fn new(limits: Limits) -> Self {
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
    fn offer(&self, name: &str, group: &str, line: Line) {
        let mut state = lock(&self.state);
        if let Some(line) = state.hand_off(line) {
            let dropped = state.queue(line, false);
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
    fn requeue(&self, line: Line) {
        let mut state = lock(&self.state);
        if let Some(line) = state.hand_off(line) {
            state.queue(line, true);
        }
    }

    /// The next queued event, or a place in the waiting line.
    fn take(&self) -> Result<Line, oneshot::Receiver<Line>> {
        let mut state = lock(&self.state);
        match state.pop_front() {
            Some(line) => Ok(line),
            None => {
                let (tx, rx) = oneshot::channel();
                state.waiting.push_back(tx);
                Err(rx)
            }
        }
    }

    /// The next queued event, without waiting.
    fn try_take(&self) -> Option<Line> {
        lock(&self.state).pop_front()
    }
}

/// One connected consumer of a unicast group. Counted as connected from
/// creation until drop.
pub(crate) struct Consumer {
    group: Arc<Group>,
    pending: Option<PendingTake>,
}

impl Consumer {
    fn new(group: Arc<Group>) -> Self {
        lock(&group.state).connected += 1;
        Self {
            group,
            pending: None,
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
                    Ok(line) => return line,
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
                if let Ok(line) = received {
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
        // consumer that is still connected.
        self.pending = None;
        let mut state = lock(&self.group.state);
        state.connected = state.connected.saturating_sub(1);
    }
}

/// A consumer's place in the waiting line. Dropping it returns an event that
/// was handed over but never received to the group.
struct PendingTake {
    rx: oneshot::Receiver<Line>,
    group: Arc<Group>,
}

impl Drop for PendingTake {
    fn drop(&mut self) {
        self.rx.close();
        if let Ok(line) = self.rx.try_recv() {
            self.group.requeue(line);
        }
    }
}

#[cfg(test)]
mod tests;
