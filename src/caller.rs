//! Publishing one request and waiting for its correlated response: what
//! the `client` subcommand, the self-test and the tests do.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bus_docker_domain::{EventPrefix, Operation};
use bus_events_client::{CancellationToken, EventsClient, OutboundEvent, StreamItem};
use serde_json::Value;

/// Why no response came back.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("unknown operation {0:?} (run, status, input, delete, runner.status, runner.start, runner.delete)")]
    UnknownOperation(String),
    #[error("publishing the request failed")]
    Publish(#[source] bus_events_client::PublishError),
    #[error("the response stream failed")]
    Stream(#[source] bus_events_client::StreamError),
    #[error("the response stream did not connect within {0:?}")]
    NotConnected(Duration),
    #[error("the response stream ended")]
    StreamEnded,
    #[error("the response stream carried a malformed line: {0}")]
    Malformed(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// The operation named `op`.
///
/// # Errors
/// `UnknownOperation`.
pub fn operation(op: &str) -> Result<Operation, RequestError> {
    Operation::ALL
        .into_iter()
        .find(|o| o.as_str() == op)
        .ok_or_else(|| RequestError::UnknownOperation(op.to_owned()))
}

/// A fresh correlation id.
pub fn correlation_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("cli-{nanos:x}-{:x}", rand::random::<u32>())
}

/// A subscription to one response name that is connected (so nothing
/// published after this returns is missed).
pub struct ResponseWaiter {
    sub: bus_events_client::Subscription,
    cancel: CancellationToken,
}

impl ResponseWaiter {
    /// Subscribe to `<prefix>.<op>.response` in a private group.
    ///
    /// # Errors
    /// `Stream` when the stream does not connect within `timeout`.
    pub async fn open(
        client: &EventsClient,
        prefix: &EventPrefix,
        op: Operation,
        timeout: Duration,
    ) -> Result<Self, RequestError> {
        Self::open_name(client, &prefix.response_name(op), timeout).await
    }

    /// Subscribe to the events named `name` (e.g. `<prefix>.run.output`)
    /// in a private group.
    ///
    /// # Errors
    /// `Stream` when the stream does not connect within `timeout`.
    pub async fn open_name(
        client: &EventsClient,
        name: &str,
        timeout: Duration,
    ) -> Result<Self, RequestError> {
        let cancel = CancellationToken::new();
        let group = format!("client-{}", correlation_id());
        let sub = client.subscribe(name, &group, "client", cancel.clone());
        let deadline = Instant::now() + timeout;
        while sub.connections() == 0 {
            if Instant::now() > deadline {
                cancel.cancel();
                return Err(RequestError::NotConnected(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Self { sub, cancel })
    }

    /// The payload of the response with `correlation` (with `error` merged
    /// in as the envelope carries it).
    ///
    /// # Errors
    /// `Timeout`, `Stream`.
    pub async fn wait(
        &mut self,
        correlation: &str,
        timeout: Duration,
    ) -> Result<Value, RequestError> {
        let result = tokio::time::timeout(timeout, async {
            loop {
                match self.sub.recv().await {
                    Some(Ok(StreamItem::Event(env)))
                        if env.correlation_id.as_deref() == Some(correlation) =>
                    {
                        return Ok(env.payload);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(RequestError::Stream(e)),
                    None => return Err(RequestError::StreamEnded),
                }
            }
        })
        .await;
        result.unwrap_or(Err(RequestError::Timeout(timeout)))
    }
}

impl ResponseWaiter {
    /// The next response of any correlation: `(correlation id, payload)`,
    /// or `None` when nothing arrives within `timeout`.
    ///
    /// # Errors
    /// `Stream` when the stream failed for good.
    pub async fn next_any(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<(String, Value)>, RequestError> {
        match tokio::time::timeout(timeout, self.sub.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(Ok(StreamItem::Event(env)))) => {
                Ok(Some((env.correlation_id.unwrap_or_default(), env.payload)))
            }
            Ok(Some(Ok(StreamItem::Malformed { reason, .. }))) => {
                Err(RequestError::Malformed(reason))
            }
            Ok(Some(Err(e))) => Err(RequestError::Stream(e)),
            Ok(None) => Err(RequestError::StreamEnded),
        }
    }
}

impl Drop for ResponseWaiter {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// After the response, [`run_following`] keeps reading output events
/// until none came for this long: they were all published before the
/// response, but travel on another stream, which a loaded machine can
/// deliver later than the response's.
const OUTPUT_SETTLE: Duration = Duration::from_secs(1);

/// Publish a run request with `stream_output: true`, hand each of its
/// `run.output` payloads to `on_output` as it arrives, and return the
/// response payload.
///
/// # Errors
/// `Publish`, `Stream`, `Timeout`.
pub async fn run_following(
    client: &EventsClient,
    prefix: &EventPrefix,
    mut payload: Value,
    timeout: Duration,
    mut on_output: impl FnMut(&Value),
) -> Result<Value, RequestError> {
    payload["stream_output"] = Value::Bool(true);
    let mut outputs = ResponseWaiter::open_name(client, &prefix.output_name(), timeout).await?;
    let mut responses = ResponseWaiter::open(client, prefix, Operation::Run, timeout).await?;
    let correlation = correlation_id();
    publish(
        client,
        prefix,
        Operation::Run,
        &correlation,
        payload,
        timeout,
    )
    .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let response = loop {
        tokio::select! {
            output = outputs.next_any(timeout) => match output? {
                Some((c, out)) if c == correlation => on_output(&out),
                Some(_) | None => {}
            },
            response = responses.wait(&correlation, timeout) => break response?,
            () = tokio::time::sleep_until(deadline) => return Err(RequestError::Timeout(timeout)),
        }
    };
    while let Some((c, out)) = outputs.next_any(OUTPUT_SETTLE).await? {
        if c == correlation {
            on_output(&out);
        }
    }
    Ok(response)
}

async fn publish(
    client: &EventsClient,
    prefix: &EventPrefix,
    op: Operation,
    correlation: &str,
    payload: Value,
    timeout: Duration,
) -> Result<(), RequestError> {
    let event = OutboundEvent {
        name: prefix.request_name(op),
        correlation_id: correlation.to_owned(),
        payload,
        error: None,
    };
    let cancel = CancellationToken::new();
    tokio::time::timeout(timeout, client.publish(&event, &cancel))
        .await
        .map_err(|_| RequestError::Timeout(timeout))?
        .map_err(RequestError::Publish)
}

/// Publish a request and wait for its response payload.
///
/// # Errors
/// `Publish`, `Stream`, `Timeout`.
pub async fn request(
    client: &EventsClient,
    prefix: &EventPrefix,
    op: Operation,
    payload: Value,
    timeout: Duration,
) -> Result<Value, RequestError> {
    let mut waiter = ResponseWaiter::open(client, prefix, op, timeout).await?;
    let correlation = correlation_id();
    publish(client, prefix, op, &correlation, payload, timeout).await?;
    waiter.wait(&correlation, timeout).await
}
