//! The event ports in memory (`MemoryBus`, `MemorySource`, `MemoryPublisher`), for tests of everything
//! above the transport. Requests go in through a [`MemoryBus`] handle;
//! published responses come out of it.
//!
//! Requests wait on the bus until the worker takes them, in the order they
//! were sent, whatever the worker's load: like the HTTP source, this one
//! never withholds a request (a run the worker has no room for is answered
//! `capacity`). Once closed it takes nothing more: requests still on the
//! bus were never taken, so nothing taken is left behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bus_docker_domain::error::{PublishError, SourceError};
use bus_docker_domain::output::OutputEvent;
use bus_docker_domain::ports::{EventPublisher, EventSource};
use bus_docker_domain::request::Inbound;
use bus_docker_domain::response::Response;
use tokio::sync::Notify;

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
    requests: Arc<Senders>,
    published: Arc<Mutex<Vec<Response>>>,
    outputs: Arc<Mutex<Vec<PublishedOutput>>>,
    notify: Arc<Notify>,
    refuse: Arc<AtomicBool>,
}

/// Requests sent and not yet taken.
#[derive(Default)]
struct Requests {
    waiting: Mutex<VecDeque<Inbound>>,
    /// Every bus handle is gone: nothing more will be sent.
    closed: AtomicBool,
    /// A request was sent, or the bus closed.
    sent: Notify,
}

impl Requests {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Inbound>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shared by the clones of one [`MemoryBus`]: the last one to go closes
/// the bus, as dropping every sender of a channel does.
struct Senders(Arc<Requests>);

impl Drop for Senders {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::SeqCst);
        self.0.sent.notify_one();
    }
}

/// The worker's inbound side.
pub struct MemorySource {
    requests: Arc<Requests>,
    /// [`EventSource::close`] was called: take nothing more.
    closed: bool,
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
    let requests = Arc::new(Requests::default());
    let published = Arc::new(Mutex::new(Vec::new()));
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let notify = Arc::new(Notify::new());
    let refuse = Arc::new(AtomicBool::new(false));
    (
        MemoryBus {
            requests: Arc::new(Senders(Arc::clone(&requests))),
            published: Arc::clone(&published),
            outputs: Arc::clone(&outputs),
            notify: Arc::clone(&notify),
            refuse: Arc::clone(&refuse),
        },
        MemorySource {
            requests,
            closed: false,
        },
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
        let requests = &self.requests.0;
        requests.lock().push_back(inbound);
        requests.sent.notify_one();
    }

    /// Requests sent and not yet taken by the worker.
    pub fn untaken(&self) -> Vec<Inbound> {
        self.requests.0.lock().iter().cloned().collect()
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

impl MemorySource {
    /// The first waiting request; `Err(true)` when none is waiting and the
    /// bus is closed.
    fn take(&self) -> Result<Inbound, bool> {
        let mut waiting = self.requests.lock();
        match waiting.pop_front() {
            Some(inbound) => Ok(inbound),
            None => Err(self.requests.closed.load(Ordering::SeqCst)),
        }
    }
}

impl EventSource for MemorySource {
    /// Cancel safe: a request is taken only when it is returned.
    async fn next_inbound(&mut self) -> Option<Result<Inbound, SourceError>> {
        loop {
            if self.closed {
                return None;
            }
            match self.take() {
                Ok(inbound) => return Some(Ok(inbound)),
                Err(true) => return None,
                // `notify_one` keeps a permit when nobody waits: no lost wake-up.
                Err(false) => self.requests.sent.notified().await,
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bus_docker_domain::request::Request;
    use bus_docker_domain::CorrelationId;

    use super::*;

    fn inbound(correlation: &str, request: Request) -> Inbound {
        Inbound {
            operation: request.operation(),
            correlation: CorrelationId::parse(correlation).unwrap(),
            stamped_owner: None,
            request: Ok(request),
        }
    }

    fn run(correlation: &str) -> Inbound {
        inbound(correlation, Request::Run(Box::default()))
    }

    async fn next(source: &mut MemorySource) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(200), source.next_inbound())
            .await
            .ok()
            .flatten()
            .map(|taken| taken.unwrap().correlation.as_str().to_owned())
    }

    #[tokio::test]
    async fn every_request_flows_in_order_and_a_dropped_bus_ends_the_source() {
        let (bus, mut source, _publisher) = memory_events();
        bus.send(run("r-1"));
        bus.send(inbound("s-1", Request::RunnerStatus));
        assert_eq!(next(&mut source).await.as_deref(), Some("r-1"));
        assert_eq!(next(&mut source).await.as_deref(), Some("s-1"));
        drop(bus);
        let ended = tokio::time::timeout(Duration::from_secs(1), source.next_inbound()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[tokio::test]
    async fn a_closed_source_takes_nothing_more() {
        let (bus, mut source, _publisher) = memory_events();
        bus.send(run("r-1"));
        assert_eq!(next(&mut source).await.as_deref(), Some("r-1"));
        bus.send(run("r-2"));
        source.close();
        assert_eq!(source.next_inbound().await.map(|_| ()), None);
        let untaken: Vec<_> = bus.untaken().into_iter().map(|i| i.correlation).collect();
        assert_eq!(
            untaken,
            [CorrelationId::parse("r-2").unwrap()],
            "left on the bus, never taken"
        );
    }
}
