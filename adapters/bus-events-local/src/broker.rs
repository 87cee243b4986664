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
//! backlog is bounded by a count and by bytes, dropping its oldest event;
//! every broadcast subscriber's queue is bounded by bytes
//! (`subscriber_bytes`) and a subscriber that falls further behind is cut
//! off, its queue freed at once. An event's bytes are shared between the
//! history, the backlogs and the queues holding it.
//!
//! Names and groups nobody uses any more are forgotten: a name is tracked
//! only while it has a retained event, a subscriber or a group, and a group
//! only while it has a consumer, a queued event, or retained events of its
//! identity it could otherwise be re-created from. A forgotten group that
//! gets a consumer again is created anew from the history, which is exactly
//! what it would have received: nothing queued, nothing retained.
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
use tokio::sync::{oneshot, Notify};

/// One serialized envelope, `\n` terminated, ready to be written.
pub(crate) type Line = Bytes;

/// The identity (`sub`) that published an event or opened a stream.
pub(crate) type Identity = Arc<str>;

/// How many events a unicast group keeps for absent consumers before it
/// starts dropping the oldest.
pub const UNICAST_QUEUE_CAPACITY: usize = 100_000;

/// How many events a broadcast subscriber may fall behind before it is cut
/// off (it sees its stream cut and can reconnect with `replay=true`). Its
/// bytes are bounded too: see [`crate::ServerConfig::subscriber_bytes`].
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
    /// Bytes one broadcast subscriber may have queued and unread before it
    /// is cut off (one event is always accepted into an empty queue).
    pub(crate) subscriber_bytes: usize,
}

/// A stored event: its line and who published it.
#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    identity: Identity,
    line: Line,
}

/// All topics of one server. Cheap to share: streams hold a handle so that
/// leaving forgets what only they kept alive.
#[derive(Clone)]
pub(crate) struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    limits: Limits,
}

#[derive(Default)]
struct State {
    /// Only names something is using: a retained event, a subscriber or a
    /// group. A name nobody uses any more is removed (see `forget_if_unused`).
    topics: HashMap<Arc<str>, Topic>,
    /// Publish order across names, for evicting the oldest history bytes.
    /// May hold entries of events already gone (dropped by `retention`);
    /// `compact_order` keeps it within a small multiple of the history.
    order: VecDeque<(u64, Arc<str>)>,
    history_events: usize,
    history_bytes: usize,
    next_seq: u64,
    next_subscriber: u64,
}

#[derive(Default)]
struct Topic {
    history: VecDeque<Stored>,
    /// Retained events per publishing identity, so that a group can tell
    /// whether the history still holds anything it would start from.
    retained: HashMap<Identity, usize>,
    subscribers: Vec<Subscriber>,
    groups: HashMap<(String, Identity), Arc<Group>>,
}

struct Subscriber {
    id: u64,
    identity: Identity,
    feed: Arc<Feed>,
}

/// What a publish reached, for the server's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Subscribers and groups of the publisher's identity on the name.
    pub(crate) listeners: usize,
    /// Identities that listen on the name but never see this event,
    /// because streams only carry events of their own identity.
    pub(crate) other_identities: Vec<Identity>,
}

/// What the broker tracks right now (a diagnostic and test hook).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Event names with a retained event, a subscriber or a group.
    pub names: usize,
    /// Unicast groups (name, group, identity).
    pub groups: usize,
    /// Open broadcast subscriptions.
    pub subscribers: usize,
    /// Retained events across all names.
    pub history_events: usize,
    /// Bytes of the retained events.
    pub history_bytes: usize,
}

/// A broadcast subscription: the replayed history, then (when following)
/// the live events.
pub(crate) struct Subscription {
    pub(crate) replay: VecDeque<Line>,
    pub(crate) live: Option<LiveFeed>,
}

impl Topic {
    fn is_unused(&self) -> bool {
        self.history.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    /// Removes the front event of the history and returns its size.
    fn pop_history(&mut self) -> Option<usize> {
        let event = self.history.pop_front()?;
        // An absent group keeps what the history keeps: what leaves the
        // history leaves the backlogs of groups with no consumer too.
        if !self.groups.is_empty() {
            let oldest = self.oldest_retained(&event.identity);
            for ((_, owner), group) in &self.groups {
                if *owner == event.identity {
                    lock(&group.state).expire_absent(oldest);
                }
            }
        }
        if let Some(count) = self.retained.get_mut(&event.identity) {
            *count -= 1;
            if *count == 0 {
                self.retained.remove(&event.identity);
                // Nothing of this identity is left to start a group from: an
                // idle, empty group of it is the same as no group at all.
                let identity = event.identity;
                self.groups
                    .retain(|(_, owner), group| *owner != identity || !group.is_idle());
            }
        }
        Some(event.line.len())
    }

    fn retains(&self, identity: &str) -> bool {
        self.retained.contains_key(identity)
    }

    /// The sequence number of the oldest retained event of `identity`.
    fn oldest_retained(&self, identity: &str) -> Option<u64> {
        if !self.retains(identity) {
            return None;
        }
        self.history
            .iter()
            .find(|event| &*event.identity == identity)
            .map(|event| event.seq)
    }
}

impl State {
    /// Removes `name` when nothing uses it any more.
    fn forget_if_unused(&mut self, name: &str) {
        if self.topics.get(name).is_some_and(Topic::is_unused) {
            self.topics.remove(name);
        }
    }

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
                if let Some(len) = topic.pop_history() {
                    self.history_bytes -= len;
                    self.history_events -= 1;
                }
                self.forget_if_unused(&name);
            }
        }
    }

    /// Drops the entries of `order` whose event is gone once they outnumber
    /// the retained events by far, so that `order` cannot grow without the
    /// history growing.
    fn compact_order(&mut self) {
        if self.order.len() <= 2 * self.history_events + 64 {
            return;
        }
        let topics = &self.topics;
        self.order.retain(|(seq, name)| {
            // A topic's history is contiguous and only loses its front, so
            // an event is still there when the front is not newer.
            topics
                .get(name)
                .and_then(|topic| topic.history.front())
                .is_some_and(|front| front.seq <= *seq)
        });
    }
}

impl Broker {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                limits: Limits {
                    group_events: limits.group_events.max(1),
                    ..limits
                },
            }),
        }
    }

    /// Stores `line`, published by `identity`, under `name` and delivers it
    /// to every subscriber and group of that name and identity.
    pub(crate) fn publish(&self, name: &str, identity: &str, line: Line) -> Reach {
        let limits = self.inner.limits;
        let mut state = lock(&self.inner.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        let identity: Identity = Arc::from(identity);
        let keep = limits.retention > 0 && line.len() <= limits.history_bytes;
        if !keep && !state.topics.contains_key(name) {
            // Nobody listens and nothing is kept: no need to track the name.
            return Reach::default();
        }
        let key: Arc<str> = match state.topics.get_key_value(name) {
            Some((key, _)) => Arc::clone(key),
            None => Arc::from(name),
        };
        let topic = state.topics.entry(Arc::clone(&key)).or_default();
        let mut freed = None;
        if keep {
            if topic.history.len() >= limits.retention {
                freed = topic.pop_history();
            }
            topic.history.push_back(Stored {
                seq,
                identity: Arc::clone(&identity),
                line: line.clone(),
            });
            *topic.retained.entry(Arc::clone(&identity)).or_default() += 1;
        }
        let reach = deliver(topic, name, seq, &identity, &line);
        if keep {
            if let Some(freed) = freed {
                state.history_bytes -= freed;
                state.history_events -= 1;
            }
            state.history_bytes += line.len();
            state.history_events += 1;
            state.order.push_back((seq, key));
            state.evict_history(limits.history_bytes);
            state.compact_order();
        }
        state.forget_if_unused(name);
        reach
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
        let mut state = lock(&self.inner.state);
        let replay = match state.topics.get(name) {
            Some(topic) if replay => own_history(topic, identity).map(|(_, line)| line).collect(),
            _ => VecDeque::new(),
        };
        let live = follow.then(|| {
            let id = state.next_subscriber;
            state.next_subscriber += 1;
            let feed = Arc::new(Feed::new(self.inner.limits.subscriber_bytes));
            let topic = state.topics.entry(Arc::from(name)).or_default();
            topic.subscribers.push(Subscriber {
                id,
                identity: Arc::from(identity),
                feed: Arc::clone(&feed),
            });
            LiveFeed {
                feed,
                id,
                name: name.to_owned(),
                broker: self.clone(),
            }
        });
        Subscription { replay, live }
    }

    /// The unicast group `group` of `name` for `identity`, created if this
    /// is its first consumer; a new group starts with the history of its
    /// name and identity.
    pub(crate) fn join(&self, name: &str, group: &str, identity: &str) -> Consumer {
        let mut state = lock(&self.inner.state);
        let topic = state.topics.entry(Arc::from(name)).or_default();
        let key = (group.to_owned(), Arc::from(identity));
        let group_arc = match topic.groups.get(&key) {
            Some(existing) => Arc::clone(existing),
            None => {
                let created = Arc::new(Group::new(self.inner.limits));
                for item in own_history(topic, identity) {
                    created.offer(name, group, item);
                }
                tracing::info!(name, group, identity, "unicast group created");
                topic.groups.insert(key.clone(), Arc::clone(&created));
                created
            }
        };
        Consumer::new(group_arc, self.clone(), name.to_owned(), key)
    }

    /// How many consumers of `group` on `name`, of any identity, have an
    /// open stream.
    pub(crate) fn connected(&self, name: &str, group: &str) -> usize {
        lock(&self.inner.state).topics.get(name).map_or(0, |topic| {
            topic
                .groups
                .iter()
                .filter(|((g, _), _)| g == group)
                .map(|(_, group)| lock(&group.state).connected)
                .sum()
        })
    }

    /// What the broker holds right now.
    pub(crate) fn tracked(&self) -> Tracked {
        let state = lock(&self.inner.state);
        Tracked {
            names: state.topics.len(),
            groups: state.topics.values().map(|t| t.groups.len()).sum(),
            subscribers: state.topics.values().map(|t| t.subscribers.len()).sum(),
            history_events: state.history_events,
            history_bytes: state.history_bytes,
        }
    }

    /// A broadcast subscriber went away.
    fn unsubscribe(&self, name: &str, id: u64) {
        let mut state = lock(&self.inner.state);
        if let Some(topic) = state.topics.get_mut(name) {
            topic.subscribers.retain(|sub| sub.id != id);
        }
        state.forget_if_unused(name);
    }

    /// A consumer of a group went away: the group is forgotten when it is
    /// idle and the history holds nothing it would start from again.
    fn leave(&self, name: &str, key: &(String, Identity), group: &Group) {
        let mut state = lock(&self.inner.state);
        {
            let mut group_state = lock(&group.state);
            group_state.connected = group_state.connected.saturating_sub(1);
        }
        if let Some(topic) = state.topics.get_mut(name) {
            lock(&group.state).expire_absent(topic.oldest_retained(&key.1));
            if !topic.retains(&key.1) && group.is_idle() {
                topic.groups.remove(key);
            }
        }
        state.forget_if_unused(name);
    }
}

/// The history of `topic` published by `identity`, oldest first.
fn own_history<'a>(topic: &'a Topic, identity: &'a str) -> impl Iterator<Item = Item> + 'a {
    topic
        .history
        .iter()
        .filter(move |event| &*event.identity == identity)
        .map(|event| (event.seq, event.line.clone()))
}

/// Hands a new event to the subscribers and groups of its identity.
fn deliver(topic: &mut Topic, name: &str, seq: u64, identity: &Identity, line: &Line) -> Reach {
    let mut reach = Reach::default();
    let mut note_other = |owner: &Identity| {
        if owner != identity && !reach.other_identities.contains(owner) {
            reach.other_identities.push(Arc::clone(owner));
        }
    };
    topic.subscribers.retain(|sub| {
        if sub.identity != *identity {
            note_other(&sub.identity);
            return true;
        }
        match sub.feed.push(line.clone()) {
            Pushed::Queued => true,
            Pushed::Overflowed => {
                tracing::warn!(
                    name,
                    identity = %sub.identity,
                    limit_bytes = sub.feed.max_bytes,
                    "broadcast subscriber fell too far behind; its stream is cut \
                     (reconnect with replay=true to catch up)"
                );
                false
            }
        }
    });
    for ((group_name, owner), group) in &topic.groups {
        if owner == identity {
            group.offer(name, group_name, (seq, line.clone()));
        } else {
            note_other(owner);
        }
    }
    reach.listeners = topic
        .subscribers
        .iter()
        .filter(|s| s.identity == *identity)
        .count()
        + topic
            .groups
            .keys()
            .filter(|(_, owner)| owner == identity)
            .count();
    reach
}

/// The queue between the broker and one broadcast stream, bounded by bytes
/// and by events: a subscriber that stops reading is cut off instead of
/// growing the server.
pub(crate) struct Feed {
    state: Mutex<FeedState>,
    ready: Notify,
    max_bytes: usize,
}

#[derive(Default)]
struct FeedState {
    lines: VecDeque<Line>,
    bytes: usize,
    overflowed: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    Queued,
    Overflowed,
}

/// The subscriber fell further behind than its limit and was cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the subscriber fell more than {0} bytes behind and was cut off")]
pub(crate) struct Overflow(pub(crate) usize);

impl Feed {
    fn new(max_bytes: usize) -> Self {
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
    fn push(&self, line: Line) -> Pushed {
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
    feed: Arc<Feed>,
    id: u64,
    name: String,
    broker: Broker,
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

/// One unicast group: every event of its name is delivered to exactly one of
/// its consumers.
pub(crate) struct Group {
    state: Mutex<GroupState>,
}

/// An event queued for a group, with its publish sequence number.
type Item = (u64, Line);

struct GroupState {
    backlog: VecDeque<Item>,
    backlog_bytes: usize,
    waiting: VecDeque<oneshot::Sender<Item>>,
    connected: usize,
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
    fn expire_absent(&mut self, oldest: Option<u64>) {
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
    fn offer(&self, name: &str, group: &str, item: Item) {
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
    fn is_idle(&self) -> bool {
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
    fn new(group: Arc<Group>, broker: Broker, name: String, key: (String, Identity)) -> Self {
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

#[cfg(test)]
mod tests;
