//! The run request stream of the HTTP source, connected only while the
//! worker's intake is open (see [`crate::intake`] for why it is closed
//! rather than left unread).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bus_events_client::{EventsClient, StreamError, StreamItem, StreamStatus, Subscription};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::http::Listen;

type Item = Result<StreamItem, StreamError>;

/// The connection of a stream that comes and goes with intake: the
/// current subscription's status, and what earlier ones counted.
#[derive(Debug, Default)]
pub(crate) struct GatedStatus {
    current: Mutex<Option<StreamStatus>>,
    /// Closed on purpose: not a fault.
    paused: AtomicBool,
    /// Reconnects of subscriptions that have ended.
    past_reconnects: AtomicU64,
}

impl GatedStatus {
    /// Whether the stream is down for a reason other than a paused intake.
    pub(crate) fn is_disconnected(&self) -> bool {
        if self.paused.load(Ordering::Relaxed) {
            return false;
        }
        self.lock().as_ref().is_none_or(|s| !s.is_open())
    }

    /// Reconnects after a drop, across subscriptions; resuming after a
    /// pause is not a reconnect.
    pub(crate) fn reconnects(&self) -> u64 {
        let current = self
            .lock()
            .as_ref()
            .map_or(0, |s| s.connections().saturating_sub(1));
        self.past_reconnects.load(Ordering::Relaxed) + current
    }

    fn resumed(&self, status: StreamStatus) {
        *self.lock() = Some(status);
        self.paused.store(false, Ordering::Relaxed);
    }

    fn paused(&self) {
        self.paused.store(true, Ordering::Relaxed);
        if let Some(ended) = self.lock().take() {
            self.past_reconnects
                .fetch_add(ended.connections().saturating_sub(1), Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StreamStatus>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How reading one subscription ended.
enum Ended {
    /// Intake closed: pause, then subscribe again when it opens.
    Paused,
    /// Stopped, failed for good, or nobody reads the source any more.
    Done,
}

/// The task behind the run stream.
pub(crate) struct RunStream {
    pub client: EventsClient,
    pub name: String,
    pub listen: Listen,
    pub stop: CancellationToken,
    /// `true` while the worker has room for a run.
    pub gate: watch::Receiver<bool>,
    pub tx: mpsc::Sender<Item>,
    pub status: Arc<GatedStatus>,
}

impl RunStream {
    /// Subscribe while the gate is open, until `stop` fires.
    pub(crate) async fn run(mut self) {
        loop {
            let open = tokio::select! {
                biased;
                () = self.stop.cancelled() => false,
                open = async { self.gate.wait_for(|open| *open).await.is_ok() } => open,
            };
            if !open {
                break;
            }
            // A child token per subscription: pausing ends this one only.
            let session = self.stop.child_token();
            let listen = &self.listen;
            let mut sub =
                self.client
                    .subscribe(&self.name, &listen.group, &listen.consumer, session.clone());
            self.status.resumed(sub.status());
            let ended = self.read_while_open(&mut sub).await;
            // Drop the connection (the server takes this consumer out of
            // the group's rotation), but keep what it already received:
            // the subscription ends after handing over its buffered items.
            session.cancel();
            let mut kept = 0_usize;
            while let Some(item) = sub.recv().await {
                kept += 1;
                if self.tx.send(item).await.is_err() {
                    return;
                }
            }
            match ended {
                Ended::Done => break,
                Ended::Paused => {
                    self.status.paused();
                    info!(event = %self.name, already_received = kept, "run intake paused: queue full; the run stream is closed until a slot frees");
                }
            }
        }
        debug!(event = %self.name, "run stream ended");
    }

    async fn read_while_open(&mut self, sub: &mut Subscription) -> Ended {
        loop {
            tokio::select! {
                biased;
                closed = async { self.gate.wait_for(|open| !*open).await.is_ok() } => {
                    return if closed { Ended::Paused } else { Ended::Done };
                }
                item = sub.recv() => match item {
                    Some(item) => {
                        if self.tx.send(item).await.is_err() {
                            return Ended::Done;
                        }
                    }
                    None => return Ended::Done,
                },
            }
        }
    }
}

/// Copy the worker's `intake` into the run stream's `gate` until either
/// side goes away; a worker that goes away leaves the gate open.
pub(crate) fn forward_intake(mut intake: watch::Receiver<bool>, gate: Arc<watch::Sender<bool>>) {
    tokio::spawn(async move {
        loop {
            let open = *intake.borrow_and_update();
            gate.send_if_modified(|current| std::mem::replace(current, open) != open);
            tokio::select! {
                changed = intake.changed() => if changed.is_err() {
                    gate.send_if_modified(|current| !std::mem::replace(current, true));
                    break;
                },
                () = gate.closed() => break,
            }
        }
    });
}
