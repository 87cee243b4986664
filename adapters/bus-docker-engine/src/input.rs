//! Stdin for runs that another worker drives (`input.request` reaching a
//! worker that did not start the run).
//!
//! Why the connection is held: the run's container is created with
//! `StdinOnce`, and dockerd then closes the container's stdin as soon as
//! *any* stdin attach ends, by a half-close or by the connection closing
//! (checked on dockerd 20.10). A chunk without `eof` must therefore keep
//! its attach open, or the container would see EOF right after it. So the
//! first chunk opens a stdin-only attach and keeps it; later chunks reuse
//! it; a chunk with `eof` half-closes it and lets it go.
//!
//! dockerd does not close a stdin-only attach when the container exits,
//! so each held connection has a watcher task that waits for the exit
//! (`wait`) and then drops it. The watchers end with the container or when
//! the engine is dropped. Dropping a held connection (engine dropped,
//! worker exit) closes the container's stdin.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, PoisonError};
use std::time::Duration;

use bollard::container::AttachContainerResults;
use bollard::query_parameters::AttachContainerOptions;
use bollard::Docker;
use bus_docker_domain::ports::InputChunk;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::control::{inspect, wait_exit};
use crate::error::DockerError;

/// Why input was not written.
#[derive(Debug)]
pub(crate) enum InputError {
    /// Not running, or created without an open stdin.
    NotAccepting,
    Engine(DockerError),
}

impl From<DockerError> for InputError {
    fn from(err: DockerError) -> Self {
        Self::Engine(err)
    }
}

struct Held {
    session: u64,
    writer: Pin<Box<dyn AsyncWrite + Send>>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Held>>>;
type Slots = Arc<SyncMutex<HashMap<String, Slot>>>;

/// Held stdin connections, by container id.
pub(crate) struct InputSessions {
    slots: Slots,
    next: AtomicU64,
    stop: CancellationToken,
}

/// Write a chunk, closing the write half after an `eof` chunk.
async fn send(
    writer: &mut Pin<Box<dyn AsyncWrite + Send>>,
    chunk: &InputChunk,
    limit: Duration,
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(&chunk.data).await?;
        writer.flush().await?;
        if chunk.eof {
            writer.shutdown().await?;
        }
        Ok(())
    };
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the container did not take its input in time",
            ))
        })
}

/// Drop the map entry when nothing is held in it any more.
fn release(slots: &Slots, container: &str, slot: &Slot) {
    let mut map = slots.lock().unwrap_or_else(PoisonError::into_inner);
    let idle = slot.try_lock().is_ok_and(|held| held.is_none());
    if idle && map.get(container).is_some_and(|s| Arc::ptr_eq(s, slot)) {
        map.remove(container);
    }
}

impl InputSessions {
    pub(crate) fn new() -> Self {
        Self {
            slots: Slots::default(),
            next: AtomicU64::new(0),
            stop: CancellationToken::new(),
        }
    }

    fn slot(&self, container: &str) -> Slot {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(container.to_owned())
            .or_default()
            .clone()
    }

    /// Forget a removed container's connection.
    pub(crate) fn forget(&self, container: &str) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(container);
    }

    /// How many connections are held (for tests and diagnostics).
    pub(crate) fn held(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) async fn write(
        &self,
        docker: &Docker,
        container: &str,
        chunk: InputChunk,
        limit: Duration,
    ) -> Result<(), InputError> {
        let slot = self.slot(container);
        let mut held = slot.lock().await;
        if let Some(current) = held.as_mut() {
            match send(&mut current.writer, &chunk, limit).await {
                Ok(()) => {
                    if chunk.eof {
                        *held = None;
                        drop(held);
                        release(&self.slots, container, &slot);
                    }
                    return Ok(());
                }
                Err(err) => {
                    tracing::debug!(container, error = %err, "held stdin connection broke; attaching again");
                    *held = None;
                }
            }
        }
        let result = self.attach_and_send(docker, container, &chunk, limit).await;
        match result {
            Ok(Some((writer, session))) => {
                *held = Some(Held { session, writer });
                drop(held);
                self.watch(docker.clone(), container.to_owned(), slot, session);
                Ok(())
            }
            Ok(None) => {
                drop(held);
                release(&self.slots, container, &slot);
                Ok(())
            }
            Err(err) => {
                drop(held);
                release(&self.slots, container, &slot);
                Err(err)
            }
        }
    }

    /// Open a stdin-only attach and write the chunk; the writer to hold
    /// when the chunk did not close stdin.
    async fn attach_and_send(
        &self,
        docker: &Docker,
        container: &str,
        chunk: &InputChunk,
        limit: Duration,
    ) -> Result<Option<(Pin<Box<dyn AsyncWrite + Send>>, u64)>, InputError> {
        let seen = inspect(docker, container).await?;
        if !seen.is_running() || !seen.open_stdin {
            return Err(InputError::NotAccepting);
        }
        let options = AttachContainerOptions {
            stream: true,
            stdin: true,
            ..AttachContainerOptions::default()
        };
        let AttachContainerResults { output, mut input } = docker
            .attach_container(container, Some(options))
            .await
            .map_err(|source| DockerError::Attach {
                id: container.to_owned(),
                source,
            })?;
        // Nothing arrives on a stdin-only attach; the read half only keeps
        // the connection whole.
        drop(output);
        send(&mut input, chunk, limit)
            .await
            .map_err(|source| DockerError::Stdin {
                id: container.to_owned(),
                source,
            })?;
        if chunk.eof {
            return Ok(None);
        }
        Ok(Some((input, self.next.fetch_add(1, Ordering::Relaxed))))
    }

    /// Drop the held connection when the container stops.
    fn watch(&self, docker: Docker, container: String, slot: Slot, session: u64) {
        let slots = Arc::clone(&self.slots);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                ended = wait_exit(&docker, &container) => {
                    tracing::debug!(container, ended = ?ended.map_err(|e| e.to_string()), "releasing held stdin");
                }
            }
            let mut held = slot.lock().await;
            if held.as_ref().is_some_and(|h| h.session == session) {
                *held = None;
            }
            drop(held);
            release(&slots, &container, &slot);
        });
    }
}

impl Drop for InputSessions {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
