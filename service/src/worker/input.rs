//! `input.request`: write to the stdin of a running interactive run. A run
//! this worker drives is fed through its input queue; a run another worker
//! drives is written through the engine. A queued or creating run has no
//! stdin yet: `conflict`.
//!
//! Waiting input is bounded (docs/protocol.md §5, v3; issue 16.4: 300 requests of
//! 1 MiB to a run that never reads grew the worker by 310 MiB). Input is
//! *held* from the moment a request is taken until the run's driver pulls
//! it from the run's queue (or the engine write for another worker's run
//! returns): per run at most [`MAX_HELD_INPUT_PER_RUN`] bytes and
//! [`MAX_HELD_CHUNKS_PER_RUN`] requests, per worker at most
//! [`MAX_HELD_INPUT`] bytes and [`MAX_HELD_CHUNKS`] requests. A request
//! past a bound is answered `capacity` at once and holds nothing; one that
//! waited [`INPUT_SEND_TIMEOUT`] for a run that does not read is answered
//! `conflict`. A run holding nothing always takes one request, whatever its
//! size (an event's data is under 4 MiB).

use bus_docker_domain::container::ContainerState;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher, InputChunk};
use bus_docker_domain::request::{acting_owner, InputRequest};
use bus_docker_domain::response::Reply;
use bus_docker_domain::{OperationError, OwnerId, RunId};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bus_docker_domain::ports::InputStream;
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::table::Local;
use super::{Answer, Refusal, Worker, INPUT_SEND_TIMEOUT};

/// What the run table says about the run an input is for.
enum Target {
    /// Not in this process: maybe another worker drives it.
    Elsewhere,
    Hidden,
    NotInteractive,
    NotAccepting,
    Queue(mpsc::Sender<InputChunk>),
}

/// Bytes of input one run may hold (waiting requests and its queue).
pub const MAX_HELD_INPUT_PER_RUN: usize = 4 * 1024 * 1024;
/// Input requests one run may hold.
pub const MAX_HELD_CHUNKS_PER_RUN: usize = 32;
/// Bytes of input the worker may hold for all runs.
pub const MAX_HELD_INPUT: usize = 64 * 1024 * 1024;
/// Input requests the worker may hold for all runs.
pub const MAX_HELD_CHUNKS: usize = 512;

/// Bytes and requests held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub bytes: usize,
    pub chunks: usize,
}

/// Input the worker holds, per run and in all (shared with each run's
/// metered queue).
#[derive(Clone, Default)]
pub(super) struct HeldInput(Arc<Mutex<Ledger>>);

#[derive(Default)]
struct Ledger {
    runs: HashMap<RunId, Held>,
    total: Held,
}

impl HeldInput {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the worker holds now.
    pub(super) fn total(&self) -> Held {
        self.ledger().total
    }

    /// Take `bytes` for `run`, or say which bound it would pass.
    fn reserve(&self, run: &RunId, bytes: usize) -> Result<(), String> {
        let mut ledger = self.ledger();
        let total = ledger.total;
        let held = ledger.runs.get(run).copied().unwrap_or_default();
        let refusal = if held.chunks > 0
            && (held.bytes + bytes > MAX_HELD_INPUT_PER_RUN
                || held.chunks >= MAX_HELD_CHUNKS_PER_RUN)
        {
            Some(format!(
                "run {run} already has {} bytes of input in {} requests waiting (at most {MAX_HELD_INPUT_PER_RUN} bytes, {MAX_HELD_CHUNKS_PER_RUN} requests): it is not reading its stdin fast enough",
                held.bytes, held.chunks
            ))
        } else if total.bytes + bytes > MAX_HELD_INPUT || total.chunks >= MAX_HELD_CHUNKS {
            Some(format!(
                "the worker already holds {} bytes of input in {} requests (at most {MAX_HELD_INPUT} bytes, {MAX_HELD_CHUNKS} requests)",
                total.bytes, total.chunks
            ))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return Err(refusal);
        }
        let held = ledger.runs.entry(run.clone()).or_default();
        held.bytes += bytes;
        held.chunks += 1;
        ledger.total.bytes += bytes;
        ledger.total.chunks += 1;
        Ok(())
    }

    /// One request of `bytes` for `run` is no longer held (written, pulled
    /// by the driver, or refused). Nothing when the run was forgotten.
    fn release(&self, run: &RunId, bytes: usize) {
        let mut ledger = self.ledger();
        let Some(held) = ledger.runs.get_mut(run) else {
            return;
        };
        held.bytes = held.bytes.saturating_sub(bytes);
        held.chunks = held.chunks.saturating_sub(1);
        if held.chunks == 0 {
            ledger.runs.remove(run);
        }
        ledger.total.bytes = ledger.total.bytes.saturating_sub(bytes);
        ledger.total.chunks = ledger.total.chunks.saturating_sub(1);
    }

    /// The run's queue is gone (the run ended): what it held is dropped.
    fn forget(&self, run: &RunId) {
        let mut ledger = self.ledger();
        if let Some(held) = ledger.runs.remove(run) {
            ledger.total.bytes = ledger.total.bytes.saturating_sub(held.bytes);
            ledger.total.chunks = ledger.total.chunks.saturating_sub(held.chunks);
        }
    }

    /// The stdin stream a run's driver reads from `rx`: each chunk it
    /// pulls is released, and the rest when the driver drops it.
    pub(super) fn metered(&self, run: RunId, rx: mpsc::Receiver<InputChunk>) -> InputStream {
        Box::pin(Metered {
            rx: ReceiverStream::new(rx),
            run,
            held: self.clone(),
        })
    }
}

struct Metered {
    rx: ReceiverStream<InputChunk>,
    run: RunId,
    held: HeldInput,
}

impl Stream for Metered {
    type Item = InputChunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<InputChunk>> {
        let polled = Pin::new(&mut self.rx).poll_next(cx);
        if let Poll::Ready(Some(chunk)) = &polled {
            self.held.release(&self.run, chunk.data.len());
        }
        polled
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.held.forget(&self.run);
    }
}

fn not_accepting(run_id: &RunId) -> OperationError {
    OperationError::Conflict(format!("run {run_id} is not accepting input"))
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn input(&self, req: InputRequest, stamped: Option<OwnerId>) -> Answer {
        let owner = acting_owner(req.owner.clone(), stamped);
        let bytes = req.data.len();
        let chunk = InputChunk {
            data: req.data.into_bytes(),
            eof: req.eof,
        };
        let run_id = req.run_id;
        let target = self.input_target(&run_id, owner.as_ref());
        let holds = matches!(target, Target::Queue(_) | Target::Elsewhere);
        if holds {
            if let Err(refusal) = self.inner.held_input.reserve(&run_id, bytes) {
                return Err(OperationError::Capacity(refusal).into());
            }
        }
        let (written, queued) = self.input_to(target, &run_id, owner.as_ref(), chunk).await;
        if holds && !queued {
            self.inner.held_input.release(&run_id, bytes);
        }
        written.map(|()| Reply::Input { run_id, bytes })
    }

    /// Write `chunk` to the run; whether it is now in the run's queue
    /// (held until the driver pulls it).
    async fn input_to(
        &self,
        target: Target,
        run_id: &RunId,
        owner: Option<&OwnerId>,
        chunk: InputChunk,
    ) -> (Result<(), Refusal>, bool) {
        match target {
            Target::Hidden => (
                Err(OperationError::NotFound(run_id.to_string()).into()),
                false,
            ),
            Target::NotInteractive => (
                Err(OperationError::Conflict(format!("run {run_id} is not interactive")).into()),
                false,
            ),
            Target::NotAccepting => (Err(not_accepting(run_id).into()), false),
            Target::Queue(tx) => {
                let eof = chunk.eof;
                match tokio::time::timeout(INPUT_SEND_TIMEOUT, tx.send(chunk)).await {
                    Ok(Ok(())) => {
                        if eof {
                            if let Some(run) = self.table().live.get_mut(run_id) {
                                run.input = None;
                            }
                        }
                        (Ok(()), true)
                    }
                    _ => (Err(not_accepting(run_id).into()), false),
                }
            }
            Target::Elsewhere => {
                let written = async {
                    let c = self.find_in_engine(run_id, owner).await?;
                    if !c.interactive
                        || c.state != ContainerState::Running
                        || c.mark != RunMark::Live
                    {
                        return Err(not_accepting(run_id).into());
                    }
                    self.inner.pool.write_input(&c.container, chunk).await?;
                    Ok(())
                };
                (written.await, false)
            }
        }
    }

    fn input_target(&self, run_id: &RunId, owner: Option<&OwnerId>) -> Target {
        let table = self.table();
        match table.lookup(run_id, owner) {
            Local::Elsewhere => Target::Elsewhere,
            Local::Hidden => Target::Hidden,
            Local::Here(run) if !run.interactive => Target::NotInteractive,
            Local::Here(run) => match (&run.input, run.accepts_input()) {
                (Some(tx), true) => Target::Queue(tx.clone()),
                _ => Target::NotAccepting,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const MIB: usize = 1024 * 1024;

    fn run(id: &str) -> RunId {
        RunId::parse(id).unwrap()
    }

    #[test]
    fn a_run_holds_at_most_its_bound_and_a_refusal_holds_nothing() {
        let held = HeldInput::default();
        let mut taken = 0;
        let mut refused = 0;
        for _ in 0..300 {
            match held.reserve(&run("r"), MIB) {
                Ok(()) => taken += 1,
                Err(why) => {
                    assert!(why.contains("not reading"), "{why}");
                    refused += 1;
                }
            }
        }
        assert_eq!((taken, refused), (4, 296));
        assert_eq!(
            held.total(),
            Held {
                bytes: 4 * MIB,
                chunks: 4
            }
        );
        held.release(&run("r"), MIB);
        assert!(held.reserve(&run("r"), MIB).is_ok(), "room again");
        held.forget(&run("r"));
        assert_eq!(held.total(), Held::default());
    }

    #[test]
    fn an_idle_run_takes_one_request_whatever_its_size() {
        let held = HeldInput::default();
        assert!(held.reserve(&run("big"), 5 * MIB).is_ok());
        assert!(held.reserve(&run("big"), 1).is_err());
    }

    #[test]
    fn the_worker_bound_holds_across_runs() {
        let held = HeldInput::default();
        let mut taken = 0;
        for i in 0..100 {
            for _ in 0..4 {
                if held.reserve(&run(&format!("r{i}")), MIB).is_ok() {
                    taken += 1;
                }
            }
        }
        assert_eq!(taken * MIB, MAX_HELD_INPUT);
        assert_eq!(held.total().bytes, MAX_HELD_INPUT);
    }

    #[tokio::test]
    async fn the_driver_pulling_a_chunk_releases_it_and_dropping_the_queue_releases_all() {
        let held = HeldInput::default();
        let (tx, rx) = mpsc::channel(4);
        let mut stdin = held.metered(run("q"), rx);
        for _ in 0..3 {
            held.reserve(&run("q"), 10).unwrap();
            tx.send(InputChunk {
                data: vec![0; 10],
                eof: false,
            })
            .await
            .unwrap();
        }
        assert_eq!(
            held.total(),
            Held {
                bytes: 30,
                chunks: 3
            }
        );
        stdin.next().await.unwrap();
        assert_eq!(
            held.total(),
            Held {
                bytes: 20,
                chunks: 2
            }
        );
        drop(stdin);
        assert_eq!(held.total(), Held::default());
    }
}
