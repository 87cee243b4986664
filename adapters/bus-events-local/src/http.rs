//! The HTTP face of the server: routes, request validation, error bodies and
//! the NDJSON stream.
//!
//! Every request is authenticated first (401), so a caller without a valid
//! token learns nothing about the request itself; then the request is read
//! (400/413), because the scope it needs depends on the event name; then
//! the scope is checked (403). A stream only ever carries events published
//! by the caller's own identity. `/healthz` and the capabilities document
//! need no token: they carry no event data.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::acl::{required_scope, Access};
use crate::auth::{AuthError, Caller, Verifier};
use crate::broker::{Broker, Consumer, Line, LiveFeed, Overflow, Reach};
use crate::envelope::{EventIds, InvalidEvent, NewEvent};
use crate::name::validate_name;
use crate::BasePath;

/// A keep-alive: clients skip blank lines.
const KEEPALIVE_LINE: &[u8] = b"\n";
/// Longest accepted group or consumer name.
const MAX_LABEL_LEN: usize = 128;
/// The group of a unicast stream that names none.
pub(crate) const DEFAULT_GROUP: &str = "default";

/// The limits the capabilities document advertises.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Advertised {
    pub(crate) max_event_bytes: usize,
    pub(crate) retention: usize,
    pub(crate) history_bytes: usize,
    pub(crate) group_bytes: usize,
    pub(crate) subscriber_bytes: usize,
}

/// State shared by all handlers.
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    pub(crate) verifier: Verifier,
    pub(crate) ids: EventIds,
    pub(crate) keepalive: Duration,
    pub(crate) max_event_bytes: usize,
    pub(crate) limits: Advertised,
    /// Ends every stream open now when cancelled; replaced by a fresh child
    /// of `shutdown` each time `drop_streams` cuts them.
    pub(crate) streams: Mutex<CancellationToken>,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// The token a newly opened stream watches.
    fn stream_token(&self) -> CancellationToken {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .child_token()
    }

    /// Ends every open stream; streams opened afterwards are unaffected.
    pub(crate) fn drop_streams(&self) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.cancel();
        *streams = self.shutdown.child_token();
    }
}

/// The API at the root and, when given, under `base` too (`/local/v1/api/v1/events`
/// for `--token local`), so clients configured either way reach it.
pub(crate) fn router(shared: Arc<Shared>, base: Option<&BasePath>) -> Router {
    let max_event_bytes = shared.max_event_bytes;
    let api = Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/api/v1/events",
            post(publish).layer(DefaultBodyLimit::max(max_event_bytes)),
        )
        .route("/api/v1/events/stream", get(stream))
        .route("/api/v1/events/capabilities", get(capabilities));
    let app = match base {
        Some(base) => api.clone().nest(base.as_str(), api),
        None => api,
    };
    app.with_state(shared)
}

/// A refused request, answered as `{"error":{"type":..,"message":..}}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    #[error("the token lacks the `{scope}` scope needed to {access} `{name}`")]
    Forbidden {
        scope: &'static str,
        access: &'static str,
        name: String,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("event body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("internal error")]
    Internal,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "invalid_auth"),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "bad_request"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<InvalidEvent> for ApiError {
    fn from(err: InvalidEvent) -> Self {
        Self::BadRequest(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = Json(json!({"error": {"type": code, "message": self.to_string()}}));
        let mut response = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Verifies the bearer token.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().map_err(|_| AuthError::Malformed))
        .transpose()?;
    Ok(shared.verifier.verify_header(header).inspect_err(|err| {
        tracing::debug!(error = %err, "refused credentials");
    })?)
}

/// Checks that `caller` may `access` the event `name`.
fn authorize(caller: &Caller, name: &str, access: Access) -> Result<(), ApiError> {
    let scope = required_scope(name, access);
    if caller.has_scope(scope) {
        return Ok(());
    }
    tracing::info!(name, scope, identity = %caller.identity, ?access, "refused: missing scope");
    Err(ApiError::Forbidden {
        scope,
        access: match access {
            Access::Publish => "publish",
            Access::Listen => "listen to",
        },
        name: name.to_owned(),
    })
}

async fn healthz() -> &'static str {
    "ok"
}

/// `GET /api/v1/events/capabilities`: what this server offers. Public, like
/// `/healthz` (Bus scripts probe it without a token to see that the Events
/// API is up); it carries no event data.
async fn capabilities(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let limits = shared.limits;
    Json(json!({
        "service": "bus-events-local",
        "version": env!("CARGO_PKG_VERSION"),
        "backend": "memory",
        "persistent": false,
        "delivery": ["broadcast", "unicast", "work"],
        "default_group": DEFAULT_GROUP,
        "replay": true,
        "identity_filtering": true,
        "auth": {"scheme": "Bearer", "algorithm": "HS256", "audience": crate::AUDIENCE},
        "limits": {
            "max_event_bytes": limits.max_event_bytes,
            "retention_events_per_name": limits.retention,
            "history_bytes": limits.history_bytes,
            "group_backlog_bytes": limits.group_bytes,
            "group_backlog_events": crate::UNICAST_QUEUE_CAPACITY,
            "subscriber_queue_bytes": limits.subscriber_bytes,
            "subscriber_queue_events": crate::BROADCAST_BUFFER,
            "max_name_bytes": crate::name::MAX_NAME_LEN,
        },
    }))
}

/// Says in the log when identity filtering means nobody will ever see an
/// event: nothing of the publisher's identity listens on the name, while
/// listeners of other identities do (a development stack minting tokens
/// for two subjects would otherwise just hang).
fn log_unreachable(name: &str, publisher: &str, reach: &Reach) {
    if reach.listeners == 0 && !reach.other_identities.is_empty() {
        let listeners = reach
            .other_identities
            .iter()
            .map(|identity| &**identity)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(
            name,
            publisher_identity = publisher,
            listener_identities = %listeners,
            "no listener can receive this event: streams carry only events of their own \
             identity, and the publisher's identity differs from every listener's \
             (mint both tokens with the same --subject)"
        );
    }
}

async fn publish(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&shared, &headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(shared.max_event_bytes)
        } else {
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let event = NewEvent::parse(&body)?;
    authorize(&caller, &event.name, Access::Publish)?;
    let id = shared.ids.next_id();
    let name = event.name.clone();
    let line = event
        .into_line(&id, &caller.identity, OffsetDateTime::now_utc())
        .map_err(|err| {
            tracing::error!(error = %err, "failed to build an envelope");
            ApiError::Internal
        })?;
    let reach = shared.broker.publish(&name, &caller.identity, line);
    tracing::info!(%name, %id, identity = %caller.identity, "event published");
    log_unreachable(&name, &caller.identity, &reach);
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "id": id, "name": name})),
    )
        .into_response())
}

/// Query of `GET /api/v1/events/stream`; validated by [`StreamRequest::try_from`].
#[derive(Debug, Deserialize)]
struct StreamQuery {
    name: Option<String>,
    delivery: Option<String>,
    group: Option<String>,
    consumer: Option<String>,
    replay: Option<String>,
    follow: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Delivery {
    Broadcast,
    Unicast { group: String },
}

#[derive(Debug)]
struct StreamRequest {
    name: String,
    delivery: Delivery,
    consumer: Option<String>,
    replay: bool,
    follow: bool,
}

impl TryFrom<StreamQuery> for StreamRequest {
    type Error = ApiError;

    fn try_from(query: StreamQuery) -> Result<Self, ApiError> {
        let bad = |message: &str| ApiError::BadRequest(message.to_owned());
        let name = query
            .name
            .filter(|name| !name.trim().is_empty())
            .ok_or_else(|| bad("query parameter `name` is required"))?;
        validate_name(&name).map_err(|err| ApiError::BadRequest(err.to_string()))?;
        let group = query.group.map(|g| label("group", g)).transpose()?;
        let consumer = query.consumer.map(|c| label("consumer", c)).transpose()?;
        let delivery = match query.delivery.as_deref() {
            None | Some("broadcast") => Delivery::Broadcast,
            // Like the Bus server, a unicast stream without a group joins
            // the group `default`.
            Some("unicast" | "work") => Delivery::Unicast {
                group: group.unwrap_or_else(|| DEFAULT_GROUP.to_owned()),
            },
            Some(_) => return Err(bad("`delivery` must be broadcast, unicast or work")),
        };
        Ok(Self {
            name,
            delivery,
            consumer,
            replay: flag("replay", query.replay, false)?,
            follow: flag("follow", query.follow, true)?,
        })
    }
}

/// A group or consumer name: `[A-Za-z0-9_.:-]{1,128}`.
fn label(what: &str, value: String) -> Result<String, ApiError> {
    let valid = (1..=MAX_LABEL_LEN).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
    if valid {
        Ok(value)
    } else {
        Err(ApiError::BadRequest(format!(
            "`{what}` must match [A-Za-z0-9_.:-]{{1,{MAX_LABEL_LEN}}}"
        )))
    }
}

fn flag(what: &str, value: Option<String>, default: bool) -> Result<bool, ApiError> {
    match value.as_deref() {
        None => Ok(default),
        Some("true" | "1") => Ok(true),
        Some("false" | "0") => Ok(false),
        Some(_) => Err(ApiError::BadRequest(format!(
            "`{what}` must be true or false"
        ))),
    }
}

async fn stream(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = authenticate(&shared, &headers)?;
    let Query(query) = query.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let request = StreamRequest::try_from(query)?;
    authorize(&caller, &request.name, Access::Listen)?;

    // Subscribe before answering: once the client sees the response head,
    // every later publish reaches this stream.
    let source = match &request.delivery {
        Delivery::Broadcast => {
            let sub = shared.broker.subscribe(
                &request.name,
                &caller.identity,
                request.replay,
                request.follow,
            );
            Source::Broadcast {
                replay: sub.replay,
                live: sub.live,
            }
        }
        Delivery::Unicast { group } => Source::Unicast {
            consumer: shared.broker.join(&request.name, group, &caller.identity),
            follow: request.follow,
        },
    };
    let (delivery, group) = match &request.delivery {
        Delivery::Broadcast => ("broadcast", "-"),
        Delivery::Unicast { group } => ("unicast", group.as_str()),
    };
    tracing::info!(
        name = %request.name,
        delivery,
        group,
        consumer = request.consumer.as_deref().unwrap_or("-"),
        replay = request.replay,
        follow = request.follow,
        identity = %caller.identity,
        "stream opened"
    );

    let outgoing = Outgoing {
        source,
        cancel: shared.stream_token(),
        keepalive: shared.keepalive,
        name: request.name,
    };
    // A subscriber cut off for falling behind gets an error on its body, so
    // the connection is aborted instead of ending cleanly: the client sees a
    // failed stream, not a finished one.
    let body = Body::from_stream(futures_util::stream::unfold(
        Some(outgoing),
        |outgoing| async {
            let mut outgoing = outgoing?;
            match outgoing.next_line().await? {
                Ok(line) => Some((Ok(line), Some(outgoing))),
                Err(overflow) => Some((Err(std::io::Error::other(overflow)), None)),
            }
        },
    ));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// Where a stream's events come from.
enum Source {
    Broadcast {
        replay: VecDeque<Line>,
        live: Option<LiveFeed>,
    },
    Unicast {
        consumer: Consumer,
        follow: bool,
    },
}

impl Source {
    /// The next event, or `None` when the stream is complete. Cancel safe.
    async fn next(&mut self) -> Option<Result<Line, Overflow>> {
        match self {
            Self::Broadcast { replay, live } => match replay.pop_front() {
                Some(line) => Some(Ok(line)),
                None => Some(live.as_mut()?.recv().await),
            },
            Self::Unicast {
                consumer,
                follow: true,
            } => Some(Ok(consumer.next().await)),
            Self::Unicast {
                consumer,
                follow: false,
            } => consumer.next_queued().map(Ok),
        }
    }
}

/// One open stream: events, keep-alives when idle, and an end on
/// `drop_streams`, shutdown or exhaustion.
struct Outgoing {
    source: Source,
    cancel: CancellationToken,
    keepalive: Duration,
    name: String,
}

impl Outgoing {
    async fn next_line(&mut self) -> Option<Result<Bytes, Overflow>> {
        let idle = self.keepalive;
        let keepalive = async move {
            if idle.is_zero() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(idle).await;
        };
        tokio::select! {
            biased;
            () = self.cancel.cancelled() => None,
            line = self.source.next() => line,
            () = keepalive => Some(Ok(Bytes::from_static(KEEPALIVE_LINE))),
        }
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        tracing::info!(name = %self.name, "stream closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> StreamQuery {
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        };
        StreamQuery {
            name: get("name"),
            delivery: get("delivery"),
            group: get("group"),
            consumer: get("consumer"),
            replay: get("replay"),
            follow: get("follow"),
        }
    }

    fn request(pairs: &[(&str, &str)]) -> Result<StreamRequest, ApiError> {
        StreamRequest::try_from(query(pairs))
    }

    #[test]
    fn defaults_are_broadcast_follow_without_replay() {
        let req = request(&[("name", "n")]).expect("valid");
        assert_eq!(req.delivery, Delivery::Broadcast);
        assert!(req.follow);
        assert!(!req.replay);
    }

    #[test]
    fn unicast_without_a_group_joins_default() {
        let req = request(&[("name", "n"), ("delivery", "unicast")]).expect("valid");
        assert_eq!(
            req.delivery,
            Delivery::Unicast {
                group: DEFAULT_GROUP.to_owned()
            }
        );
    }

    #[test]
    fn work_is_unicast() {
        let req = request(&[("name", "n"), ("delivery", "work"), ("group", "g")]).expect("valid");
        assert_eq!(
            req.delivery,
            Delivery::Unicast {
                group: "g".to_owned()
            }
        );
    }

    #[test]
    fn invalid_queries_are_bad_requests() {
        for pairs in [
            &[][..],
            &[("name", "")][..],
            &[("name", "n"), ("delivery", "fanout")][..],
            &[("name", "bus.*")][..],
            &[("name", "Bus.docker")][..],
            &[("name", "n"), ("delivery", "unicast"), ("group", "a b")][..],
            &[("name", "n"), ("consumer", "")][..],
            &[("name", "n"), ("replay", "yes")][..],
        ] {
            assert!(
                matches!(request(pairs), Err(ApiError::BadRequest(_))),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn labels() {
        assert!(label("group", "a-Z_0.9:x".to_owned()).is_ok());
        assert!(label("group", "x".repeat(MAX_LABEL_LEN)).is_ok());
        assert!(label("group", "x".repeat(MAX_LABEL_LEN + 1)).is_err());
        assert!(label("group", "ä".to_owned()).is_err());
    }
}
