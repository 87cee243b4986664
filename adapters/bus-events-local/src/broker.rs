//! The in-memory event store and its two delivery modes.
//!
//! Every published event is kept (up to `retention` per name) for broadcast
//! replay, copied to each broadcast subscriber of its name, and offered once
//! to every unicast group of its name.
//!
//! # Unicast hand-off
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

/// All topics of one server.
pub(crate) struct Broker {
    topics: Mutex<HashMap<String, Topic>>,
    retention: usize,
    group_capacity: usize,
}

#[derive(Default)]
struct Topic {
    history: VecDeque<Line>,
    subscribers: Vec<mpsc::Sender<Line>>,
    groups: HashMap<String, Arc<Group>>,
}

/// A broadcast subscription: the replayed history, then (when following)
/// the live events.
pub(crate) struct Subscription {
    pub(crate) replay: VecDeque<Line>,
    pub(crate) live: Option<mpsc::Receiver<Line>>,
}

impl Broker {
    pub(crate) fn new(retention: usize, group_capacity: usize) -> Self {
        Self {
            topics: Mutex::new(HashMap::new()),
            retention,
            group_capacity: group_capacity.max(1),
        }
    }

    /// Stores `line` under `name` and delivers it to every subscriber and
    /// group of that name.
    pub(crate) fn publish(&self, name: &str, line: Line) {
        let mut topics = lock(&self.topics);
        let topic = topics.entry(name.to_owned()).or_default();

        if self.retention > 0 {
            if topic.history.len() >= self.retention {
                topic.history.pop_front();
            }
            topic.history.push_back(line.clone());
        }

        topic
            .subscribers
            .retain(|tx| match tx.try_send(line.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        name,
                        "broadcast subscriber fell too far behind; closing its stream"
                    );
                    false
                }
            });

        for (group_name, group) in &topic.groups {
            group.offer(name, group_name, line.clone());
        }
    }

    /// Subscribes to `name`: a snapshot of the history when `replay`, and a
    /// live feed when `follow`. Snapshot and registration happen under one
    /// lock, so nothing is missed or seen twice between them.
    pub(crate) fn subscribe(&self, name: &str, replay: bool, follow: bool) -> Subscription {
        let mut topics = lock(&self.topics);
        let topic = topics.entry(name.to_owned()).or_default();
        let replay = if replay {
            topic.history.clone()
        } else {
            VecDeque::new()
        };
        let live = follow.then(|| {
            let (tx, rx) = mpsc::channel(BROADCAST_BUFFER);
            topic.subscribers.push(tx);
            rx
        });
        Subscription { replay, live }
    }

    /// The unicast group `group` of `name`, created if this is its first
    /// consumer. Only events published from now on reach a new group.
    pub(crate) fn join(&self, name: &str, group: &str) -> Consumer {
        let mut topics = lock(&self.topics);
        let topic = topics.entry(name.to_owned()).or_default();
        let group = topic
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| {
                tracing::info!(name, group, "unicast group created");
                Arc::new(Group::new(self.group_capacity))
            })
            .clone();
        Consumer::new(group)
    }

    /// How many consumers of `group` on `name` have an open stream.
    pub(crate) fn connected(&self, name: &str, group: &str) -> usize {
        lock(&self.topics)
            .get(name)
            .and_then(|topic| topic.groups.get(group))
            .map_or(0, |group| lock(&group.state).connected)
    }
}

/// One unicast group: every event of its name is delivered to exactly one of
/// its consumers.
pub(crate) struct Group {
    state: Mutex<GroupState>,
}

struct GroupState {
    backlog: VecDeque<Line>,
    waiting: VecDeque<oneshot::Sender<Line>>,
    connected: usize,
    capacity: usize,
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
}

impl Group {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(GroupState {
                backlog: VecDeque::new(),
                waiting: VecDeque::new(),
                connected: 0,
                capacity,
            }),
        }
    }

    /// A newly published event.
    fn offer(&self, name: &str, group: &str, line: Line) {
        let mut state = lock(&self.state);
        if let Some(line) = state.hand_off(line) {
            if state.backlog.len() >= state.capacity {
                state.backlog.pop_front();
                tracing::warn!(name, group, "unicast queue full; dropped its oldest event");
            }
            state.backlog.push_back(line);
        }
    }

    /// An event that was handed out but never written: it goes to another
    /// waiting consumer or back to the front of the queue.
    fn requeue(&self, line: Line) {
        let mut state = lock(&self.state);
        if let Some(line) = state.hand_off(line) {
            state.backlog.push_front(line);
        }
    }

    /// The next queued event, or a place in the waiting line.
    fn take(&self) -> Result<Line, oneshot::Receiver<Line>> {
        let mut state = lock(&self.state);
        match state.backlog.pop_front() {
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
        lock(&self.state).backlog.pop_front()
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
mod tests {
    use std::time::Duration;

    use super::*;

    fn line(n: u32) -> Line {
        Bytes::from(format!("{n}\n"))
    }

    async fn next_within(consumer: &mut Consumer) -> Option<Line> {
        tokio::time::timeout(Duration::from_millis(200), consumer.next())
            .await
            .ok()
    }

    #[test]
    fn history_is_bounded_by_retention() {
        let broker = Broker::new(2, 10);
        for n in 0..3 {
            broker.publish("a", line(n));
        }
        let sub = broker.subscribe("a", true, false);
        assert_eq!(sub.replay, vec![line(1), line(2)]);
        assert!(sub.live.is_none());
    }

    #[tokio::test]
    async fn subscribe_sees_replay_then_live() {
        let broker = Broker::new(10, 10);
        broker.publish("a", line(1));
        broker.publish("b", line(99));
        let mut sub = broker.subscribe("a", true, true);
        broker.publish("a", line(2));
        assert_eq!(sub.replay, vec![line(1)]);
        let live = sub.live.as_mut().expect("following");
        assert_eq!(live.recv().await, Some(line(2)));
        assert!(live.try_recv().is_err());
    }

    #[tokio::test]
    async fn groups_only_see_events_published_after_they_exist() {
        let broker = Broker::new(10, 10);
        broker.publish("a", line(1));
        let mut consumer = broker.join("a", "g");
        assert_eq!(consumer.next_queued(), None);
        broker.publish("a", line(2));
        assert_eq!(next_within(&mut consumer).await, Some(line(2)));
    }

    #[tokio::test]
    async fn queued_events_wait_for_a_consumer() {
        let broker = Broker::new(10, 10);
        drop(broker.join("a", "g"));
        assert_eq!(broker.connected("a", "g"), 0);
        broker.publish("a", line(1));
        broker.publish("a", line(2));
        let mut consumer = broker.join("a", "g");
        assert_eq!(broker.connected("a", "g"), 1);
        assert_eq!(next_within(&mut consumer).await, Some(line(1)));
        assert_eq!(next_within(&mut consumer).await, Some(line(2)));
        assert_eq!(next_within(&mut consumer).await, None);
    }

    #[tokio::test]
    async fn waiting_consumers_take_turns() {
        let broker = Broker::new(10, 10);
        let mut first = broker.join("a", "g");
        let mut second = broker.join("a", "g");
        // Both park in the waiting line (first, then second).
        assert_eq!(next_within(&mut first).await, None);
        assert_eq!(next_within(&mut second).await, None);
        broker.publish("a", line(1));
        broker.publish("a", line(2));
        assert_eq!(next_within(&mut first).await, Some(line(1)));
        assert_eq!(next_within(&mut second).await, Some(line(2)));
    }

    #[tokio::test]
    async fn an_event_handed_to_a_departed_consumer_is_requeued() {
        let broker = Broker::new(10, 10);
        let mut leaving = broker.join("a", "g");
        assert_eq!(next_within(&mut leaving).await, None);
        // The event is handed to `leaving`, which goes away without reading it.
        broker.publish("a", line(1));
        drop(leaving);
        let mut staying = broker.join("a", "g");
        assert_eq!(next_within(&mut staying).await, Some(line(1)));
    }

    #[tokio::test]
    async fn a_requeued_event_goes_to_a_waiting_consumer_first() {
        let broker = Broker::new(10, 10);
        let mut leaving = broker.join("a", "g");
        let mut staying = broker.join("a", "g");
        assert_eq!(next_within(&mut leaving).await, None);
        assert_eq!(next_within(&mut staying).await, None);
        broker.publish("a", line(1)); // handed to `leaving`
        drop(leaving);
        assert_eq!(next_within(&mut staying).await, Some(line(1)));
    }

    #[tokio::test]
    async fn different_groups_each_get_every_event() {
        let broker = Broker::new(10, 10);
        let mut one = broker.join("a", "one");
        let mut two = broker.join("a", "two");
        broker.publish("a", line(1));
        assert_eq!(next_within(&mut one).await, Some(line(1)));
        assert_eq!(next_within(&mut two).await, Some(line(1)));
    }

    #[test]
    fn a_full_queue_drops_its_oldest_event() {
        let broker = Broker::new(0, 2);
        let mut consumer = broker.join("a", "g");
        for n in 0..3 {
            broker.publish("a", line(n));
        }
        assert_eq!(consumer.next_queued(), Some(line(1)));
        assert_eq!(consumer.next_queued(), Some(line(2)));
        assert_eq!(consumer.next_queued(), None);
    }
}
