//! Live output (`stream_output: true`, docs/protocol.md §2/§4): the runtime hands
//! every chunk the container writes to a [`LiveOutput`] (the run's
//! [`OutputSink`]); a streamer beside the drive turns what accumulated into
//! `<prefix>.run.output` events and publishes them, all before the run's
//! response.
//!
//! What holds, and how:
//! * **Never blocking the container.** `write` copies the chunk under a
//!   short lock and returns; publishing happens on the streamer, never in
//!   the runtime's output reader.
//! * **Bounded memory.** Text waiting to be published is capped at the
//!   run's `max_output_bytes` (the backlog). A chunk that would overflow it
//!   stops live output for the rest of the run: nothing more is taken, the
//!   backlog is still published, and one last event with empty `data`
//!   carries a `note` (and `truncated: true`) saying so. So what was
//!   streamed is always exact: concatenated in `seq` order the events give
//!   the run's output up to where live output stopped.
//! * **UTF-8 safe.** Bytes are decoded as they arrive like the final output
//!   (invalid sequences become U+FFFD, as `String::from_utf8_lossy` does);
//!   a character cut between two writes is held back (at most 3 bytes per
//!   stream) until its end arrives, or replaced when the run ends first.
//!   Events are cut on character boundaries.
//! * **Coalesced and paced.** One event per 100 ms tick at most, each with
//!   up to 64 KiB of one stream's text; adjacent writes of one stream merge.
//!   The k-th event of a streamer goes out no sooner than k ticks after the
//!   streamer began.
//! * **One sequence.** `seq` counts over both streams in the order the
//!   engine delivered the output, from 0 for a fresh run. A recovered run
//!   (re-attached by a restarted worker) starts at [`recovered_first_seq`]:
//!   above any `seq` an earlier worker can have used, by the pacing above.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bus_docker_domain::output::{OutputEvent, OutputSink, OutputStream};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::PublishError;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::answer::RunFacts;
use super::Worker;

/// Most text per event.
pub(crate) const MAX_EVENT_DATA_BYTES: usize = 64 * 1024;

/// At most one event per period (about 10 events per second per run).
pub(crate) const EVENT_PERIOD: Duration = Duration::from_millis(100);

/// Added to a recovered run's first `seq`: slack for the clocks involved
/// (the engine's start time against this host's wall clock).
const RECOVERY_SEQ_MARGIN: u64 = 10;

/// The first `seq` of a run re-attached after a restart: one more than the
/// number of [`EVENT_PERIOD`]s since the container started, plus a margin.
/// Every earlier streamer of the run began after the container started and
/// published at most one event per period, so this cannot collide.
pub(crate) fn recovered_first_seq(started_at: Option<SystemTime>, now: SystemTime) -> u64 {
    let since = started_at
        .and_then(|s| now.duration_since(s).ok())
        .unwrap_or_default();
    let periods = since.as_millis().div_ceil(EVENT_PERIOD.as_millis());
    u64::try_from(periods)
        .unwrap_or(u64::MAX / 2)
        .saturating_add(1 + RECOVERY_SEQ_MARGIN)
}

/// One event's worth of output, numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LiveChunk {
    pub seq: u64,
    pub stream: OutputStream,
    pub data: String,
    pub note: Option<String>,
}

/// Why live output stopped early.
#[derive(Clone, Debug)]
struct Stopped {
    stream: OutputStream,
    note: String,
    announced: bool,
}

/// The accumulation behind [`LiveOutput`]: pure, no clock, no IO.
#[derive(Debug)]
struct Coalescer {
    /// Decoded text waiting to be published, adjacent writes of one
    /// stream merged.
    queue: VecDeque<(OutputStream, String)>,
    /// A character cut at the end of the last write, per stream.
    carry: [Vec<u8>; 2],
    queued_bytes: usize,
    backlog_cap: usize,
    accepted_bytes: u64,
    stopped: Option<Stopped>,
    finished: bool,
    next_seq: u64,
}

fn slot(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// Decode `bytes` like `String::from_utf8_lossy`, except that an
/// incomplete character at the very end is returned undecoded (unless
/// `last`, when it is replaced too).
fn decode(mut bytes: &[u8], last: bool) -> (String, Vec<u8>) {
    let mut text = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                text.push_str(valid);
                return (text, Vec::new());
            }
            Err(err) => {
                let (valid, rest) = bytes.split_at(err.valid_up_to());
                // The first `valid_up_to` bytes are valid UTF-8.
                text.push_str(&String::from_utf8_lossy(valid));
                match err.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        bytes = &rest[bad..];
                    }
                    None if last => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        return (text, Vec::new());
                    }
                    None => return (text, rest.to_vec()),
                }
            }
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes ending on a
/// character boundary (never empty when `max` ≥ 4 and `text` is not).
fn cut_at(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

impl Coalescer {
    fn new(backlog_cap: usize, first_seq: u64) -> Self {
        Self {
            queue: VecDeque::new(),
            carry: [Vec::new(), Vec::new()],
            queued_bytes: 0,
            backlog_cap: backlog_cap.max(MAX_EVENT_DATA_BYTES),
            accepted_bytes: 0,
            stopped: None,
            finished: false,
            next_seq: first_seq,
        }
    }

    fn push(&mut self, stream: OutputStream, bytes: &[u8]) {
        if self.stopped.is_some() || self.finished || bytes.is_empty() {
            return;
        }
        let carry = &mut self.carry[slot(stream)];
        let (text, rest) = if carry.is_empty() {
            decode(bytes, false)
        } else {
            carry.extend_from_slice(bytes);
            decode(carry, false)
        };
        if self.queued_bytes + text.len() > self.backlog_cap {
            self.stop(
                stream,
                format!(
                    "live output stopped after {} bytes: the run writes faster than live \
                     output carries it (64 KiB per 100 ms) and {} bytes were waiting; the \
                     run response has the tail of its output",
                    self.accepted_bytes, self.queued_bytes
                ),
            );
            return;
        }
        self.carry[slot(stream)] = rest;
        self.enqueue(stream, text);
    }

    fn enqueue(&mut self, stream: OutputStream, text: String) {
        if text.is_empty() {
            return;
        }
        self.queued_bytes += text.len();
        self.accepted_bytes += text.len() as u64;
        match self.queue.back_mut() {
            Some((last, queued)) if *last == stream => queued.push_str(&text),
            _ => self.queue.push_back((stream, text)),
        }
    }

    /// Take nothing more; the backlog is still published, then the note.
    fn stop(&mut self, stream: OutputStream, note: String) {
        if self.stopped.is_none() {
            self.stopped = Some(Stopped {
                stream,
                note,
                announced: false,
            });
        }
    }

    /// The run ended: characters still cut are replaced.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let carry = std::mem::take(&mut self.carry[slot(stream)]);
            if !carry.is_empty() && self.stopped.is_none() {
                self.enqueue(stream, decode(&carry, true).0);
            }
        }
        self.finished = true;
    }

    fn next_chunk(&mut self) -> Option<LiveChunk> {
        let (stream, data) = match self.queue.front_mut() {
            Some((stream, text)) => {
                let stream = *stream;
                let end = cut_at(text, MAX_EVENT_DATA_BYTES);
                let data = if end == text.len() {
                    self.queue.pop_front().map(|(_, t)| t).unwrap_or_default()
                } else {
                    let rest = text.split_off(end);
                    std::mem::replace(text, rest)
                };
                (stream, data)
            }
            None => {
                let stopped = self.stopped.as_mut().filter(|s| !s.announced)?;
                stopped.announced = true;
                let chunk = LiveChunk {
                    seq: self.next_seq,
                    stream: stopped.stream,
                    data: String::new(),
                    note: Some(stopped.note.clone()),
                };
                self.next_seq += 1;
                return Some(chunk);
            }
        };
        self.queued_bytes -= data.len();
        let chunk = LiveChunk {
            seq: self.next_seq,
            stream,
            data,
            note: None,
        };
        self.next_seq += 1;
        Some(chunk)
    }

    /// Finished, and everything (the note included) handed out.
    fn is_done(&self) -> bool {
        self.finished && self.queue.is_empty() && self.stopped.as_ref().is_none_or(|s| s.announced)
    }
}

/// A run's live output: the sink the runtime writes to, and the source
/// the streamer reads events from.
#[derive(Debug)]
pub(crate) struct LiveOutput {
    state: Mutex<Coalescer>,
    finished: Notify,
}

impl LiveOutput {
    /// `backlog_cap`: most text waiting (at least one event's worth);
    /// `first_seq`: 0 for a fresh run, [`recovered_first_seq`] otherwise.
    pub fn new(backlog_cap: usize, first_seq: u64) -> Self {
        Self {
            state: Mutex::new(Coalescer::new(backlog_cap, first_seq)),
            finished: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Coalescer> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The drive is over: no more writes.
    pub fn finish(&self) {
        self.lock().finish();
        self.finished.notify_one();
    }

    /// Stop live output early (e.g. the Events API refused an event).
    pub fn stop(&self, stream: OutputStream, note: String) {
        self.lock().stop(stream, note);
    }

    /// The next event's worth, if any is waiting.
    pub fn next_chunk(&self) -> Option<LiveChunk> {
        self.lock().next_chunk()
    }

    pub fn is_done(&self) -> bool {
        self.lock().is_done()
    }

    /// Resolves after [`LiveOutput::finish`] (at once when it was called
    /// before).
    pub async fn finished(&self) {
        self.finished.notified().await;
    }
}

impl OutputSink for LiveOutput {
    fn write(&self, stream: OutputStream, bytes: &[u8]) {
        self.lock().push(stream, bytes);
    }
}

/// `<prefix>.run.output` for a run answered on `<prefix>.run.response`.
fn output_event_name(reply_event: &str, fallback: String) -> String {
    match reply_event.strip_suffix(".response") {
        Some(base) => format!("{base}.output"),
        None => fallback,
    }
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    /// Publish a run's live output, paced, until the drive is over and
    /// everything taken is out (or the shutdown grace ends). The caller
    /// publishes the run's response only after this returns.
    pub(super) async fn stream_live(&self, live: &LiveOutput, facts: &RunFacts) {
        let event = output_event_name(&facts.reply_event, self.inner.settings.prefix.output_name());
        let start = tokio::time::Instant::now();
        let mut ticks = tokio::time::interval_at(start + EVENT_PERIOD, EVENT_PERIOD);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let abandon = self.inner.lifecycle.abandoned();
        let mut finish_seen = false;
        while !live.is_done() {
            tokio::select! {
                biased;
                () = abandon.cancelled() => return,
                () = live.finished(), if !finish_seen => {
                    finish_seen = true;
                    continue;
                }
                _ = ticks.tick() => {}
            }
            let Some(chunk) = live.next_chunk() else {
                continue;
            };
            let output = OutputEvent {
                event: event.clone(),
                correlation: facts.correlation.clone(),
                run_id: facts.run_id.clone(),
                seq: chunk.seq,
                stream: chunk.stream,
                data: chunk.data,
                note: chunk.note,
            };
            match self.inner.publisher.publish_output(&output).await {
                Ok(()) => {}
                Err(PublishError::Abandoned(m)) => {
                    warn!(run_id = %facts.run_id, "live output not published before shutdown: {m}");
                    return;
                }
                Err(err @ PublishError::Unauthorized(_)) => {
                    // The response publish meets the same refusal and stops
                    // intake; there is no one left to stream to.
                    warn!(run_id = %facts.run_id, error = %err, "live output refused with the worker's token; live output stops");
                    return;
                }
                Err(err @ PublishError::Rejected(_)) => {
                    warn!(run_id = %facts.run_id, seq = output.seq, error = %err, "live output event rejected; live output stops");
                    let note = format!(
                        "live output stopped: the Events API refused the event with seq {} ({err}); \
                         the run response has the tail of its output",
                        output.seq
                    );
                    live.stop(output.stream, note);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
