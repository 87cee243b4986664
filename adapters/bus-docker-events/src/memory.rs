//! `MemoryEvents`: the event ports in memory, for tests of everything
//! above the transport. Requests go in through a [`MemoryBus`] handle;
//! published responses come out of it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bus_docker_domain::error::{PublishError, SourceError};
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::ports::{EventPublisher, EventSource};
use bus_docker_domain::request::Inbound;
use bus_docker_domain::response::Response;
use tokio::sync::{mpsc, Notify};

/// A live output event as the bus saw it: with how many responses had
/// been published before it (to check that a run's output events precede
/// its response).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedOutput {
    pub output: OutputEvent,
    pub responses_before: usize,
    /// When it was published (tokio's clock: paused in tests that pause it).
    pub published_at: tokio::time::Instant,
}

/// The test's side of the in-memory bus.
#[derive(Clone)]
pub struct MemoryBus {
    requests: mpsc::UnboundedSender<Inbound>,
    published: Arc<Mutex<Vec<Response>>>,
    outputs: Arc<Mutex<Vec<PublishedOutput>>>,
    notify: Arc<Notify>,
    refuse: Arc<AtomicBool>,
}

/// The worker's inbound side.
pub struct MemorySource {
    rx: mpsc::UnboundedReceiver<Inbound>,
}

/// The worker's outbound side.
#[derive(Clone)]
pub struct MemoryPublisher {
    published: Arc<Mutex<Vec<Response>>>,
    outputs: Arc<Mutex<Vec<PublishedOutput>>>,
    notify: Arc<Notify>,
    refuse: Arc<AtomicBool>,
}

/// A connected bus, source and publisher.
pub fn memory_events() -> (MemoryBus, MemorySource, MemoryPublisher) {
    let (tx, rx) = mpsc::unbounded_channel();
    let published = Arc::new(Mutex::new(Vec::new()));
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let notify = Arc::new(Notify::new());
    let refuse = Arc::new(AtomicBool::new(false));
    (
        MemoryBus {
            requests: tx,
            published: Arc::clone(&published),
            outputs: Arc::clone(&outputs),
            notify: Arc::clone(&notify),
            refuse: Arc::clone(&refuse),
        },
        MemorySource { rx },
        MemoryPublisher {
            published,
            outputs,
            notify,
            refuse,
        },
    )
}

impl MemoryBus {
    /// Deliver a request to the worker.
    pub fn send(&self, inbound: Inbound) {
        let _ = self.requests.send(inbound);
    }

    /// From now on, refuse every publish as an Events API that no longer
    /// accepts the worker's token would (401/403).
    pub fn refuse_publishing(&self) {
        self.refuse.store(true, Ordering::SeqCst);
    }

    /// Every response published so far.
    pub fn published(&self) -> Vec<Response> {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every live output event published so far, in publishing order.
    pub fn outputs(&self) -> Vec<PublishedOutput> {
        self.outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Wait until `pred` holds for the published responses.
    pub async fn wait_for(&self, pred: impl Fn(&[Response]) -> bool) -> Vec<Response> {
        loop {
            let notified = self.notify.notified();
            {
                let list = self
                    .published
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if pred(&list) {
                    return list.clone();
                }
            }
            notified.await;
        }
    }
}

impl EventSource for MemorySource {
    async fn next_inbound(&mut self) -> Option<Result<Inbound, SourceError>> {
        self.rx.recv().await.map(Ok)
    }
}

impl EventPublisher for MemoryPublisher {
    async fn publish(&self, response: &Response) -> Result<(), PublishError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(PublishError::Unauthorized("HTTP 401 (memory bus)".into()));
        }
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(response.clone());
        self.notify.notify_waiters();
        Ok(())
    }

    async fn publish_output(&self, output: &OutputEvent) -> Result<(), PublishError> {
        let responses_before = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(PublishedOutput {
                output: output.clone(),
                responses_before,
                published_at: tokio::time::Instant::now(),
            });
        Ok(())
    }
}
