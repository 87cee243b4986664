//! The history's bounds and what is forgotten: events leave a name's
//! history by count (`retention`) and the whole history by bytes
//! (`history_bytes`, oldest first), taking absent groups' copies with
//! them; a name nobody uses any more is removed.

use super::{lock, State, Topic};

impl Topic {
    fn is_unused(&self) -> bool {
        self.history.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }

    /// Removes the front event of the history and returns its size.
    pub(super) fn pop_history(&mut self) -> Option<usize> {
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

    pub(super) fn retains(&self, identity: &str) -> bool {
        self.retained.contains_key(identity)
    }

    /// The sequence number of the oldest retained event of `identity`.
    pub(super) fn oldest_retained(&self, identity: &str) -> Option<u64> {
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
    pub(super) fn forget_if_unused(&mut self, name: &str) {
        if self.topics.get(name).is_some_and(Topic::is_unused) {
            self.topics.remove(name);
        }
    }

    /// Drops history until it fits in `limit` bytes, oldest first.
    pub(super) fn evict_history(&mut self, limit: usize) {
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
    pub(super) fn compact_order(&mut self) {
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
