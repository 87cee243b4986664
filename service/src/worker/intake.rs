//! Intake follows capacity (docs/protocol.md §5): whether the worker has room for
//! another run.
//!
//! The run table counts admitted runs (queued, creating, running, and
//! recovered ones) and updates the signal on every admission and every
//! retirement. It is an observable only — `runner.status`
//! (`details.intake: "open" | "full"`) and `bus_docker_run_intake_open` —
//! never a switch on the event source: every run request read is handed
//! to the worker, and one that finds no room is answered `capacity` at
//! once. (Before v3 the source closed its run stream while this read
//! `false`, and lost the requests the server had already written into it.)

use tokio::sync::watch;

/// The "run intake open" signal and the limit it follows.
pub(crate) struct Intake {
    /// Admitted runs at which intake closes: `max_concurrent_runs` running
    /// plus `max_queued_runs` queued.
    limit: usize,
    open: watch::Sender<bool>,
}

impl Intake {
    /// Open intake that closes at `limit` admitted runs (at least 1).
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            open: watch::Sender::new(true),
        }
    }

    /// Follow the number of admitted runs: wakes the watchers only when the
    /// state flips.
    pub fn update(&self, admitted: usize) {
        let open = admitted < self.limit;
        self.open.send_if_modified(|current| {
            let flipped = *current != open;
            *current = open;
            flipped
        });
    }

    /// Whether the worker takes run requests now.
    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// A watch on [`Intake::is_open`].
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.open.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_at_the_limit_and_opens_below_it() {
        let intake = Intake::new(2);
        let mut watch = intake.watch();
        assert!(intake.is_open());
        intake.update(1);
        assert!(!watch.has_changed().unwrap(), "still open: no wake-up");
        intake.update(2);
        assert!(watch.has_changed().unwrap());
        assert!(!*watch.borrow_and_update());
        intake.update(3);
        assert!(!watch.has_changed().unwrap(), "still closed: no wake-up");
        intake.update(1);
        assert!(*watch.borrow_and_update());
        assert!(intake.is_open());
    }

    #[test]
    fn a_zero_limit_still_admits_one_run() {
        let intake = Intake::new(0);
        intake.update(0);
        assert!(intake.is_open());
        intake.update(1);
        assert!(!intake.is_open());
    }
}
