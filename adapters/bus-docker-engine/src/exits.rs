//! Exits as the engine's event stream reports them, for claimed warm runs
//! (docs/protocol.md §10).
//!
//! Why: dockerd answers `wait` only when it has taken the container down
//! (task deleted, streams closed, rootfs unmounted, network released).
//! Its `die` event, with the exit code, comes before the unmount and
//! network steps: 20–40 ms earlier on the machines measured
//! (BENCHMARKS.md, "Warm start"), a third of a warm hit. A claimed warm
//! run may take its exit from that event, the engine's own record of it,
//! instead of waiting for the teardown.
//!
//! When the event does not decide alone, the run waits and inspects as
//! before: an exit code of 137 (SIGKILL: an OOM kill, or a stop), an
//! `oom` event before the `die`, or a name carrying a mark (another
//! worker deleted the run). The watch is kept by the container view's
//! stream (`view.rs`); with no synced view there is no watch and the run
//! waits. A watch never fires twice and is dropped with its run.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bollard::models::EventMessage;
use bus_docker_domain::container::RunMark;
use tokio::sync::oneshot;

/// A `die` event of a watched container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Died {
    pub exit_code: i64,
    /// The event's time (nanoseconds): the exit as the engine saw it.
    pub at: Option<SystemTime>,
    /// An `oom` event came for the container before its `die`.
    pub oom: bool,
    /// The container's name at the event.
    pub name: String,
}

impl Died {
    /// Whether the event alone says how the run ended (module docs).
    pub fn decides(&self) -> bool {
        self.exit_code != 137
            && !self.oom
            && RunMark::split(&self.name).is_some_and(|(_, mark)| mark == RunMark::Live)
    }
}

struct Watch {
    oom: bool,
    tx: Option<oneshot::Sender<Died>>,
}

/// The containers whose `die` someone waits for.
#[derive(Default)]
pub(crate) struct ExitWatch {
    watched: Mutex<HashMap<String, Watch>>,
}

impl ExitWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Watch>> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watch `id` for its `die`.
    pub fn watch(&self, id: &str) -> oneshot::Receiver<Died> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(
            id.to_owned(),
            Watch {
                oom: false,
                tx: Some(tx),
            },
        );
        rx
    }

    pub fn unwatch(&self, id: &str) {
        self.lock().remove(id);
    }

    /// How many containers are watched (tests: nothing is left behind).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Take one event of the engine's stream.
    pub fn observe(&self, event: &EventMessage) {
        let Some(actor) = event.actor.as_ref() else {
            return;
        };
        let Some(id) = actor.id.as_deref() else {
            return;
        };
        let mut watched = self.lock();
        let Some(watch) = watched.get_mut(id) else {
            return;
        };
        match event.action.as_deref() {
            Some("oom") => watch.oom = true,
            Some("die") => {
                let attrs = actor.attributes.as_ref();
                let attr = |k: &str| attrs.and_then(|a| a.get(k)).cloned();
                let Some(exit_code) = attr("exitCode").and_then(|c| c.parse().ok()) else {
                    return;
                };
                let died = Died {
                    exit_code,
                    at: event
                        .time_nano
                        .and_then(|ns| u64::try_from(ns).ok())
                        .map(|ns| SystemTime::UNIX_EPOCH + Duration::from_nanos(ns)),
                    oom: watch.oom,
                    name: attr("name").unwrap_or_default(),
                };
                if let Some(tx) = watch.tx.take() {
                    let _ = tx.send(died);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::EventActor;

    use super::*;

    fn event(id: &str, action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            action: Some(action.to_owned()),
            actor: Some(EventActor {
                id: Some(id.to_owned()),
                attributes: Some(
                    attrs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect::<HashMap<_, _>>(),
                ),
            }),
            time_nano: Some(1_796_000_000_123_456_789),
            ..EventMessage::default()
        }
    }

    #[test]
    fn a_die_of_a_watched_container_gives_its_exit_once() {
        let w = ExitWatch::default();
        let mut rx = w.watch("a");
        w.observe(&event(
            "b",
            "die",
            &[("exitCode", "1"), ("name", "bus-run-b")],
        ));
        assert!(rx.try_recv().is_err(), "another container's die");
        w.observe(&event(
            "a",
            "die",
            &[("exitCode", "3"), ("name", "bus-run-r")],
        ));
        let died = rx.try_recv().unwrap();
        assert_eq!(died.exit_code, 3);
        assert_eq!(
            died.at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_000_000_123_456_789))
        );
        assert!(died.decides());
        w.unwatch("a");
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_kill_an_oom_or_a_marked_name_leaves_the_exit_to_the_inspect() {
        for (before, code, name) in [
            (None, "137", "bus-run-r"),
            (Some("oom"), "1", "bus-run-r"),
            (None, "0", "bus-run-r.deleted"),
        ] {
            let w = ExitWatch::default();
            let mut rx = w.watch("a");
            if let Some(action) = before {
                w.observe(&event("a", action, &[]));
            }
            w.observe(&event("a", "die", &[("exitCode", code), ("name", name)]));
            assert!(
                !rx.try_recv().unwrap().decides(),
                "{before:?} {code} {name}"
            );
        }
    }

    #[test]
    fn a_die_without_an_exit_code_is_not_taken() {
        let w = ExitWatch::default();
        let mut rx = w.watch("a");
        w.observe(&event("a", "die", &[("name", "bus-run-r")]));
        assert!(rx.try_recv().is_err());
    }
}
