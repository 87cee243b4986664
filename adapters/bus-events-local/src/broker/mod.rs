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
//! `PendingTake` guard (`group.rs`) closes the oneshot on drop and, if an
//! event arrived, gives it to the next waiting consumer or puts it back at
//! the front of the backlog. Once an event is handed to the HTTP layer it counts as delivered
//! (at-most-once).
//!
//! Locks are `std::sync::Mutex`es held only for short, non-async sections;
//! the order is always topics, then a group.
//!
//! Layout: this file holds the store and publishing, subscribing and
//! joining; `history.rs` the history's bounds and forgetting what nobody
//! uses; `feed.rs` a broadcast subscriber's bounded queue; `group.rs`
//! unicast groups and their consumers.

mod feed;
mod group;
mod history;

pub(crate) use feed::{LiveFeed, Overflow};
pub(crate) use group::Consumer;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use feed::{Feed, Pushed};
use group::{Group, Item};

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

#[cfg(test)]
mod tests;
