//! The claim record: the run's facts as one line at the head of the
//! container's log, written through the launcher before the rename
//! (the module docs of [`super`], "The claim and its record").

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use bus_docker_domain::container::ManagedContainer;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{CorrelationId, OwnerId};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::bodies::engine_time;
use crate::error::DockerError;
use crate::labels;
use crate::output::Output;

/// What starts a claim record line in the log.
const RECORD_TAG: &str = "bus-warm-claim ";

/// The facts of a claimed run, as its record line holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub run_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub correlation: String,
    pub reply_event: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub stream_output: bool,
    pub timeout_seconds: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A record read back: the facts, when the engine logged it (the claim),
/// and its length in the container's stdout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReadRecord {
    pub record: Record,
    pub claimed_at: SystemTime,
    pub len: u64,
}

impl ReadRecord {
    /// Put the run's facts into a container read back from its name and
    /// the profile's labels; `false` when the record is of another run.
    pub fn fill(&self, m: &mut ManagedContainer) -> bool {
        if self.record.run_id != m.run_id.as_str() {
            return false;
        }
        let r = &self.record;
        m.owner = r.owner.as_deref().and_then(|o| OwnerId::parse(o).ok());
        m.correlation = CorrelationId::parse(&r.correlation).ok();
        m.reply_event = Some(r.reply_event.clone());
        m.args.clone_from(&r.args);
        m.interactive = r.interactive;
        m.stream_output = r.stream_output;
        m.timeout = Some(Duration::from_secs(r.timeout_seconds));
        if m.state != bus_docker_domain::container::ContainerState::Created {
            m.started_at = Some(self.claimed_at);
        }
        true
    }
}

impl Record {
    pub fn of(spec: &RunSpec) -> Self {
        Self {
            run_id: spec.run_id.as_str().to_owned(),
            owner: spec.owner.as_ref().map(|o| o.as_str().to_owned()),
            correlation: spec.correlation.as_str().to_owned(),
            reply_event: spec.reply_event.clone(),
            args: labels::capped_args(&spec.command),
            interactive: spec.interactive,
            stream_output: spec.stream_output,
            timeout_seconds: spec.timeout.as_secs(),
            labels: spec.labels.clone(),
        }
    }

    /// The line the launcher copies to the log (JSON escapes newlines).
    pub fn line(&self) -> String {
        let json = serde_json::to_string(self).expect("a record always serialises");
        format!("{RECORD_TAG}{json}\n")
    }
}

/// Parse the first stdout entry of a log read with timestamps:
/// `<RFC 3339 time> bus-warm-claim {json}\n`.
pub(crate) fn parse_logged(entry: &[u8]) -> Option<ReadRecord> {
    let text = std::str::from_utf8(entry).ok()?;
    let (stamp, line) = text.split_once(' ')?;
    let json = line.strip_prefix(RECORD_TAG)?.strip_suffix('\n')?;
    let record: Record = serde_json::from_str(json).ok()?;
    Some(ReadRecord {
        record,
        claimed_at: engine_time(Some(stamp))?,
        len: line.len() as u64,
    })
}

/// The container's output without its first `n` stdout bytes (the claim
/// record, in a replayed log).
pub(crate) fn skip_stdout(output: Output, n: u64) -> Output {
    if n == 0 {
        return output;
    }
    Box::pin(SkipStdout {
        inner: output,
        left: n,
    })
}

struct SkipStdout {
    inner: Output,
    left: u64,
}

impl Stream for SkipStdout {
    type Item = <Output as Stream>::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let item = match self.inner.as_mut().poll_next(cx) {
                Poll::Ready(item) => item,
                Poll::Pending => return Poll::Pending,
            };
            let left = self.left;
            match item {
                Some(Ok(LogOutput::StdOut { message })) if left > 0 => {
                    let cut = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(message.len());
                    self.left -= cut as u64;
                    if cut < message.len() {
                        return Poll::Ready(Some(Ok(LogOutput::StdOut {
                            message: message.slice(cut..),
                        })));
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }
}

/// The claim record at the head of a container's log; `None` when its log
/// does not start with one (never claimed, or not a warm container).
pub(crate) async fn read_record(
    docker: &Docker,
    id: &str,
) -> Result<Option<ReadRecord>, DockerError> {
    let options = LogsOptions {
        stdout: true,
        stderr: false,
        follow: false,
        timestamps: true,
        ..LogsOptions::default()
    };
    let mut logs = docker.logs(id, Some(options));
    match logs.next().await {
        Some(Ok(LogOutput::StdOut { message })) => Ok(parse_logged(&message)),
        Some(Ok(_)) | None => Ok(None),
        Some(Err(source)) => Err(DockerError::Logs {
            id: id.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_spec;
    use tokio_util::bytes::Bytes;

    #[test]
    fn a_record_round_trips_through_the_log() {
        let spec = test_spec();
        let line = Record::of(&spec).line();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let logged = format!("2026-12-02T05:00:01.250000000Z {line}");
        let read = parse_logged(logged.as_bytes()).unwrap();
        assert_eq!(read.record, Record::of(&spec));
        assert_eq!(read.len, line.len() as u64);
        assert_eq!(
            Some(read.claimed_at),
            engine_time(Some("2026-12-02T05:00:01.250000000Z"))
        );
        assert!(parse_logged(b"2026-12-02T05:00:01Z hello\n").is_none());
    }

    #[tokio::test]
    async fn the_record_is_held_back_from_the_output() {
        let items: Vec<Result<LogOutput, bollard::errors::Error>> = vec![
            Ok(LogOutput::StdErr {
                message: Bytes::from("e"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from("rec"),
            }),
            Ok(LogOutput::StdOut {
                message: Bytes::from("ord\nout"),
            }),
        ];
        let out = skip_stdout(Box::pin(futures_util::stream::iter(items)), 7);
        let got: Vec<String> = out
            .map(|i| match i.unwrap() {
                LogOutput::StdOut { message } => format!("o:{}", String::from_utf8_lossy(&message)),
                LogOutput::StdErr { message } => format!("e:{}", String::from_utf8_lossy(&message)),
                _ => String::new(),
            })
            .collect()
            .await;
        assert_eq!(got, ["e:e", "o:out"]);
    }
}
