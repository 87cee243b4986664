//! Output and stdin of a driven container: the multiplexed output read
//! into two bounded [`TailBuffer`]s (and handed to the run's live output
//! sink when it has one), and the run's stdin written and closed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bus_docker_domain::output::TailBuffer;
use bus_docker_domain::output::{OutputSink, OutputStream};
use bus_docker_domain::ports::Stdin;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// After the exit, how long the output may pause before the reader stops
/// waiting for its end.
const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// After the exit, the longest the reader keeps draining in total.
const DRAIN_MAX: Duration = Duration::from_secs(30);

/// A container's multiplexed output (attach or logs).
pub(crate) type Output = Pin<Box<dyn Stream<Item = Result<LogOutput, BollardError>> + Send>>;

/// The live output sink of a drive, and how many bytes of each stream to
/// hold back from it first (the replayed log of a re-attached container).
pub(crate) struct LiveSink {
    sink: Arc<dyn OutputSink>,
    skip_stdout: u64,
    skip_stderr: u64,
}

impl LiveSink {
    pub fn new(sink: Arc<dyn OutputSink>, skip: LogBytes) -> Self {
        Self {
            sink,
            skip_stdout: skip.stdout,
            skip_stderr: skip.stderr,
        }
    }

    /// Hand `bytes` on, minus what is still to be skipped of that stream.
    fn write(&mut self, stream: OutputStream, bytes: &[u8]) {
        let skip = match stream {
            OutputStream::Stdout => &mut self.skip_stdout,
            OutputStream::Stderr => &mut self.skip_stderr,
        };
        let skipped = usize::try_from(*skip)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        *skip -= skipped as u64;
        if skipped < bytes.len() {
            self.sink.write(stream, &bytes[skipped..]);
        }
    }
}

/// Bytes per stream a container's log held at some moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LogBytes {
    pub stdout: u64,
    pub stderr: u64,
}

/// Count a container's logged bytes per stream (reads the log once).
pub(crate) async fn count_log(mut stream: Output) -> Result<LogBytes, BollardError> {
    let mut count = LogBytes::default();
    while let Some(item) = stream.next().await {
        match item? {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                count.stdout += message.len() as u64;
            }
            LogOutput::StdErr { message } => count.stderr += message.len() as u64,
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(count)
}

/// Reads a multiplexed output stream into two tail buffers.
pub(crate) struct OutputPump {
    stream: Output,
    pub stdout: TailBuffer,
    pub stderr: TailBuffer,
    pub done: bool,
    pub error: Option<BollardError>,
    live: Option<LiveSink>,
}

impl OutputPump {
    pub fn new(stream: Output, cap: usize) -> Self {
        Self {
            stream,
            stdout: TailBuffer::new(cap),
            stderr: TailBuffer::new(cap),
            done: false,
            error: None,
            live: None,
        }
    }

    /// Also hand every chunk to a live output sink.
    pub fn with_live(mut self, live: Option<LiveSink>) -> Self {
        self.live = live;
        self
    }

    fn accept(&mut self, item: Option<Result<LogOutput, BollardError>>) {
        match item {
            Some(Ok(LogOutput::StdOut { message } | LogOutput::Console { message })) => {
                self.stdout.push(&message);
                if let Some(live) = &mut self.live {
                    live.write(OutputStream::Stdout, &message);
                }
            }
            Some(Ok(LogOutput::StdErr { message })) => {
                self.stderr.push(&message);
                if let Some(live) = &mut self.live {
                    live.write(OutputStream::Stderr, &message);
                }
            }
            Some(Ok(LogOutput::StdIn { .. })) => {}
            Some(Err(err)) => {
                self.error = Some(err);
                self.done = true;
            }
            None => self.done = true,
        }
    }

    /// Read until the stream ends. Cancel-safe: every chunk is stored as
    /// soon as it arrives.
    pub async fn run(&mut self) {
        while !self.done {
            let item = self.stream.next().await;
            self.accept(item);
        }
    }

    /// Read what is left after the exit, giving up when the stream pauses
    /// for [`DRAIN_IDLE`] or after [`DRAIN_MAX`]; `false` when it gave up.
    pub async fn drain(&mut self) -> bool {
        let hard = Instant::now() + DRAIN_MAX;
        while !self.done {
            let until = (Instant::now() + DRAIN_IDLE).min(hard);
            match tokio::time::timeout_at(until, self.stream.next()).await {
                Ok(item) => self.accept(item),
                Err(_) => return false,
            }
        }
        true
    }
}

/// Write the run's stdin, then close it. Errors end the feeding quietly:
/// a container that stops reading its stdin is its own business.
pub(crate) async fn feed_stdin(mut input: Pin<Box<dyn AsyncWrite + Send>>, stdin: Stdin, id: &str) {
    let fed: std::io::Result<()> = async {
        match stdin {
            Stdin::Closed => return Ok(()),
            Stdin::Text(text) => input.write_all(&text).await?,
            Stdin::Interactive(initial, mut chunks) => {
                if let Some(text) = initial {
                    input.write_all(&text).await?;
                    input.flush().await?;
                }
                while let Some(chunk) = chunks.next().await {
                    input.write_all(&chunk.data).await?;
                    input.flush().await?;
                    if chunk.eof {
                        break;
                    }
                }
            }
        }
        // The half-close reaches dockerd, which closes the container's
        // stdin because it was created with `StdinOnce`.
        input.shutdown().await
    }
    .await;
    match fed {
        Ok(()) => tracing::debug!(container = id, "stdin fed"),
        Err(err) => {
            tracing::debug!(container = id, error = %err, "stdin ended early: the container stopped reading");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pump_keeps_streams_apart_and_bounded() {
        let items: Vec<Result<LogOutput, BollardError>> = vec![
            Ok(LogOutput::StdOut {
                message: "abc".into(),
            }),
            Ok(LogOutput::StdErr {
                message: "err".into(),
            }),
            Ok(LogOutput::StdOut {
                message: "def".into(),
            }),
        ];
        let mut pump = OutputPump::new(Box::pin(futures_util::stream::iter(items)), 4);
        pump.run().await;
        assert!(pump.done);
        let out = pump.stdout.finish();
        assert_eq!(
            (out.text.as_str(), out.total_bytes, out.truncated),
            ("cdef", 6, true)
        );
        assert_eq!(pump.stderr.finish().text, "err");
    }

    /// Records what a sink is handed.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<(OutputStream, Vec<u8>)>>);

    impl OutputSink for Recorder {
        fn write(&self, stream: OutputStream, bytes: &[u8]) {
            self.0.lock().unwrap().push((stream, bytes.to_vec()));
        }
    }

    #[tokio::test]
    async fn the_live_sink_gets_every_chunk_after_the_skipped_replay() {
        let items: Vec<Result<LogOutput, BollardError>> = vec![
            Ok(LogOutput::StdOut {
                message: "old".into(),
            }),
            Ok(LogOutput::StdErr {
                message: "e1e2".into(),
            }),
            Ok(LogOutput::StdOut {
                message: "-new".into(),
            }),
        ];
        let recorder = Arc::new(Recorder::default());
        let skip = LogBytes {
            stdout: 4,
            stderr: 2,
        };
        let sink: Arc<dyn OutputSink> = recorder.clone();
        let mut pump = OutputPump::new(Box::pin(futures_util::stream::iter(items)), 64)
            .with_live(Some(LiveSink::new(sink, skip)));
        pump.run().await;
        let got = recorder.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                (OutputStream::Stderr, b"e2".to_vec()),
                (OutputStream::Stdout, b"new".to_vec()),
            ]
        );
        // The tail buffers still hold everything.
        assert_eq!(pump.stdout.finish().text, "old-new");
    }

    #[tokio::test]
    async fn a_log_is_counted_per_stream() {
        let items: Vec<Result<LogOutput, BollardError>> = vec![
            Ok(LogOutput::StdOut {
                message: "abc".into(),
            }),
            Ok(LogOutput::StdErr {
                message: "de".into(),
            }),
        ];
        let count = count_log(Box::pin(futures_util::stream::iter(items)))
            .await
            .unwrap();
        assert_eq!(
            count,
            LogBytes {
                stdout: 3,
                stderr: 2
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn draining_gives_up_on_a_stuck_stream() {
        let stuck = futures_util::stream::pending();
        let mut pump = OutputPump::new(Box::pin(stuck), 4);
        let started = Instant::now();
        assert!(!pump.drain().await);
        assert_eq!(started.elapsed(), DRAIN_IDLE);
    }
}
