//! A view of the managed containers kept from the engine's event stream,
//! so a listing does not ask the engine each time.
//!
//! Why: `GET /containers/json` makes dockerd snapshot and filter every
//! container it holds, so its cost grows with their number; `status`
//! would grow with it. The view costs one subscription and one full
//! listing per connection, then answers in memory.
//!
//! How it is built (lazily, on the first listing that may use it):
//! 1. read the engine's clock (`GET /info`), `T`;
//! 2. subscribe to container events of managed containers since `T`: the
//!    engine replays what happened from `T` on, then streams live;
//! 3. list every managed container once (at `L ≥ T`);
//! 4. apply the list, then every event in order. Events between `T` and
//!    `L` are already in the list: applying them again passes through
//!    older states and ends at the latest, so the view converges.
//!
//! The view is synced only while its stream is connected. When the stream
//! ends or fails (engine restart, engine away) it is dropped; the next
//! listing builds a new one, and until one is built listings ask the
//! engine. The stream task ends when the view (its `DockerEngine`) is
//! dropped. Its memory is what the engine holds: one entry per managed
//! container.
//!
//! What an event gives: `Actor.Attributes` are the container's labels plus
//! `name` (the name after the event) and `image` (the reference the
//! container was created from: what `docker ps` shows, not its id; the id
//! is the worker's `bus.image-id` label, as in a listing). The creation time is the create event's (whole
//! seconds, like a listing's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::bodies::engine_time;
use crate::error::DockerError;
use crate::exits::{Died, ExitWatch};
use crate::labels::{self, Listed};

/// After a failed build, listings ask the engine for this long before the
/// next build is tried.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The longest a view is trusted before it is rebuilt from a fresh
/// listing: a connection that stalls without closing (a half-open TCP
/// connection to a remote engine) sends no events and no error, so only
/// its age bounds how stale the view can get.
const MAX_AGE: Duration = Duration::from_secs(60);

/// What an event does to a container of the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    Created,
    State(ContainerState),
    Renamed,
    Destroyed,
}

/// The change an event action stands for; `None` for actions that change
/// nothing the view holds (attach, kill, exec, health, …).
pub(crate) fn change_of(action: &str) -> Option<Change> {
    Some(match action {
        "create" => Change::Created,
        "start" | "unpause" | "restart" => Change::State(ContainerState::Running),
        // `die` is the exit; `stop` follows it.
        "die" | "stop" => Change::State(ContainerState::Exited),
        "pause" => Change::State(ContainerState::Other("paused".to_owned())),
        "destroy" => Change::Destroyed,
        "rename" => Change::Renamed,
        _ => return None,
    })
}

/// The managed containers by container id.
pub(crate) type Entries = HashMap<String, ManagedContainer>;

/// Apply one event to the entries.
///
/// A create inserts the container as its labels say; other events change
/// only containers the view holds (one it does not hold was removed, or
/// predates nothing the list missed).
pub(crate) fn apply(entries: &mut Entries, event: &EventMessage) {
    if event.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return;
    }
    let Some(change) = event.action.as_deref().and_then(change_of) else {
        return;
    };
    let Some(actor) = &event.actor else { return };
    let Some(id) = actor.id.as_deref() else {
        return;
    };
    let empty = HashMap::new();
    let attributes = actor.attributes.as_ref().unwrap_or(&empty);
    let name = attributes.get("name").map_or("", String::as_str);
    match change {
        Change::Created => {
            if let Some(known) = entries.get_mut(id) {
                // Known from the list or this worker's own write: only the
                // time is news (a write does not know the engine's).
                if known.created_at.is_none() {
                    known.created_at = event_time(event);
                }
                return;
            }
            let created = labels::managed(Listed {
                id,
                name,
                labels: attributes,
                image_id: attributes.get("image").map(String::as_str),
                state: ContainerState::Created,
                started_at: None,
                finished_at: None,
                created_at: event_time(event),
            });
            if let Some(created) = created {
                entries.insert(id.to_owned(), created);
            }
        }
        Change::State(state) => {
            if let Some(known) = entries.get_mut(id) {
                known.state = state;
            }
        }
        Change::Renamed => {
            if let Some(known) = entries.get_mut(id) {
                renamed(known, name);
            } else if let Some(claimed) = labels::managed(Listed {
                id,
                name,
                labels: attributes,
                image_id: attributes.get("image").map(String::as_str),
                state: ContainerState::Running,
                started_at: None,
                created_at: event_time(event),
                finished_at: None,
            }) {
                // A parked warm container claimed by a run (docs/protocol.md §10):
                // it becomes a run by its new name.
                entries.insert(id.to_owned(), claimed);
            }
        }
        Change::Destroyed => {
            entries.remove(id);
        }
    }
}

/// The container now carries `name`: its mark follows (the run id stays
/// the labelled one).
pub(crate) fn renamed(known: &mut ManagedContainer, name: &str) {
    if name.is_empty() {
        return;
    }
    let mark = RunMark::of(name, &known.run_id)
        .unwrap_or_else(|| RunMark::split(name).map_or(RunMark::Live, |(_, mark)| mark));
    known.container.name = name.to_owned();
    known.mark = mark;
}

fn event_time(event: &EventMessage) -> Option<SystemTime> {
    let secs = u64::try_from(event.time?).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// One connection's view: the entries (once listed) and whether its stream
/// still runs.
struct Synced {
    state: Mutex<Feed>,
    connected: AtomicBool,
    stop: CancellationToken,
    /// When it was built: a view older than [`MAX_AGE`] is rebuilt.
    built: Instant,
}

/// Events arrive before the list answers: they wait in `pending`.
enum Feed {
    Pending(Vec<EventMessage>),
    Listed(Entries),
}

impl Synced {
    fn lock(&self) -> MutexGuard<'_, Feed> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self, event: EventMessage) {
        match &mut *self.lock() {
            Feed::Pending(events) => events.push(event),
            Feed::Listed(entries) => apply(entries, &event),
        }
    }

    fn listed(&self, list: Vec<ManagedContainer>) {
        let mut feed = self.lock();
        let mut entries: Entries = list
            .into_iter()
            .map(|c| (c.container.id.clone(), c))
            .collect();
        if let Feed::Pending(events) = &*feed {
            for event in events {
                apply(&mut entries, event);
            }
        }
        *feed = Feed::Listed(entries);
    }
}

/// The event-fed view of one `DockerEngine`.
pub(crate) struct View {
    current: Mutex<Option<Arc<Synced>>>,
    /// One build at a time; listings meanwhile wait for it.
    building: tokio::sync::Mutex<Option<Instant>>,
    /// Cancelled on drop: ends every stream task.
    stop: CancellationToken,
    /// Exits watched by claimed warm runs, fed by the same stream
    /// (`exits.rs`).
    exits: Arc<ExitWatch>,
}

impl Drop for View {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl View {
    pub(crate) fn new() -> Self {
        Self {
            current: Mutex::new(None),
            building: tokio::sync::Mutex::new(None),
            stop: CancellationToken::new(),
            exits: Arc::default(),
        }
    }

    /// Watch container `id` for its `die` event; `None` when the view is
    /// not synced (no stream: the caller waits on the engine alone). The
    /// caller unwatches when its run ends ([`View::unwatch_exit`]).
    pub(crate) fn watch_exit(&self, id: &str) -> Option<oneshot::Receiver<Died>> {
        self.is_synced().then(|| self.exits.watch(id))
    }

    pub(crate) fn unwatch_exit(&self, id: &str) {
        self.exits.unwatch(id);
    }

    fn current(&self) -> MutexGuard<'_, Option<Arc<Synced>>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synced view's entries passing `filter`; `None` when not synced.
    fn answer(&self, filter: &ManagedFilter) -> Option<Vec<ManagedContainer>> {
        let synced = self.current().clone()?;
        if !synced.connected.load(Ordering::Acquire) || synced.built.elapsed() > MAX_AGE {
            return None;
        }
        let feed = synced.lock();
        match &*feed {
            Feed::Listed(entries) => Some(
                entries
                    .values()
                    .filter(|c| filter.matches(c))
                    .cloned()
                    .collect(),
            ),
            Feed::Pending(_) => None,
        }
    }

    /// Whether the view is synced (its stream connected).
    pub(crate) fn is_synced(&self) -> bool {
        let Some(synced) = self.current().clone() else {
            return false;
        };
        synced.connected.load(Ordering::Acquire) && matches!(&*synced.lock(), Feed::Listed(_))
    }

    /// Serve `filter` from the view, building it first when needed; `None`
    /// when it cannot be built now (the caller lists the engine).
    /// `list_all` is the one full listing of a build.
    pub(crate) async fn serve(
        &self,
        docker: &Docker,
        filter: &ManagedFilter,
        list_all: impl std::future::Future<Output = Result<Vec<ManagedContainer>, DockerError>>,
    ) -> Option<Vec<ManagedContainer>> {
        if let Some(found) = self.answer(filter) {
            return Some(found);
        }
        let mut failed_at = self.building.lock().await;
        if let Some(found) = self.answer(filter) {
            return Some(found);
        }
        if failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return None;
        }
        match self.build(docker, list_all).await {
            Ok(()) => *failed_at = None,
            Err(err) => {
                tracing::debug!(error = %crate::error::cause_chain(&err), "container view not built; listing the engine");
                *failed_at = Some(Instant::now());
            }
        }
        self.answer(filter)
    }

    async fn build(
        &self,
        docker: &Docker,
        list_all: impl std::future::Future<Output = Result<Vec<ManagedContainer>, DockerError>>,
    ) -> Result<(), DockerError> {
        if let Some(old) = self.current().take() {
            old.stop.cancel();
        }
        let info = docker
            .info()
            .await
            .map_err(|source| DockerError::Info { source })?;
        let since = engine_time(info.system_time.as_deref()).map(since_param);
        let synced = Arc::new(Synced {
            state: Mutex::new(Feed::Pending(Vec::new())),
            connected: AtomicBool::new(true),
            stop: self.stop.child_token(),
            built: Instant::now(),
        });
        tokio::spawn(follow(
            docker.clone(),
            since,
            Arc::clone(&synced),
            Arc::clone(&self.exits),
        ));
        match list_all.await {
            Ok(list) => {
                synced.listed(list);
                *self.current() = Some(synced);
                Ok(())
            }
            Err(err) => {
                synced.stop.cancel();
                Err(err)
            }
        }
    }

    /// A container this worker just created, renamed or removed: the view
    /// shows it at once, before its event arrives.
    pub(crate) fn write(&self, id: &str, change: impl FnOnce(&mut Entries)) {
        let Some(synced) = self.current().clone() else {
            return;
        };
        if let Feed::Listed(entries) = &mut *synced.lock() {
            change(entries);
        }
        tracing::trace!(container = id, "container view updated by a write");
    }
}

/// `since` for the events call: Unix seconds with nanoseconds.
fn since_param(at: SystemTime) -> String {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Feed the view from the engine's events until the stream ends, fails or
/// the view goes; then mark it disconnected.
async fn follow(docker: Docker, since: Option<String>, synced: Arc<Synced>, exits: Arc<ExitWatch>) {
    let filters = HashMap::from([
        ("type".to_owned(), vec!["container".to_owned()]),
        (
            "label".to_owned(),
            vec![format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE
            )],
        ),
    ]);
    let options = EventsOptions {
        since,
        until: None,
        filters: Some(filters),
    };
    let mut events = docker.events(Some(options));
    loop {
        tokio::select! {
            () = synced.stop.cancelled() => break,
            next = events.next() => match next {
                Some(Ok(event)) => {
                    exits.observe(&event);
                    synced.take(event);
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "engine event stream failed; the container view is dropped");
                    break;
                }
                None => {
                    tracing::debug!("engine event stream ended; the container view is dropped");
                    break;
                }
            }
        }
    }
    synced.connected.store(false, Ordering::Release);
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
