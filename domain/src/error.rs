//! Errors of the domain, one enum per concern, each mapping onto the wire
//! codes of docs/protocol.md §3 through [`ErrorCode`].

use std::fmt;

/// A request field that failed validation. The message says what the field
/// must be; the field is named so a caller can fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    field: String,
    message: String,
}

impl FieldError {
    /// A failure of `field` (a dotted path such as `mounts[0].source`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The offending field.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What the field must be.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure under a parent path (`mounts[0]` + `source`).
    #[must_use]
    pub fn within(self, parent: &str) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

/// The error codes of docs/protocol.md §3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Forbidden,
    NotFound,
    Conflict,
    Capacity,
    ImageUnavailable,
    RuntimeUnavailable,
    Timeout,
    Canceled,
    Internal,
}

impl ErrorCode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Capacity => "capacity",
            Self::ImageUnavailable => "image_unavailable",
            Self::RuntimeUnavailable => "runtime_unavailable",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an operation failed, in domain words. Every variant maps to one wire
/// code through [`OperationError::code`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error("invalid request: {0}")]
    InvalidSpec(#[from] FieldError),
    #[error("forbidden by policy ({rule}): {detail}")]
    Forbidden { rule: &'static str, detail: String },
    #[error("run not found: {0}")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("capacity: {0}")]
    Capacity(String),
    #[error("image unavailable: {image}: {reason}")]
    ImageUnavailable { image: String, reason: String },
    #[error("docker engine unavailable: {0}")]
    RuntimeUnavailable(String),
    #[error("run timed out after {0} s and was killed")]
    Timeout(u64),
    #[error("run canceled: {0}")]
    Canceled(String),
    #[error("internal error: {0}")]
    Unexpected(String),
}

impl OperationError {
    /// A policy refusal naming its rule.
    pub fn forbidden(rule: &'static str, detail: impl Into<String>) -> Self {
        Self::Forbidden {
            rule,
            detail: detail.into(),
        }
    }

    /// The wire code of docs/protocol.md §3.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidSpec(_) => ErrorCode::BadRequest,
            Self::Forbidden { .. } => ErrorCode::Forbidden,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Capacity(_) => ErrorCode::Capacity,
            Self::ImageUnavailable { .. } => ErrorCode::ImageUnavailable,
            Self::RuntimeUnavailable(_) => ErrorCode::RuntimeUnavailable,
            Self::Timeout(_) => ErrorCode::Timeout,
            Self::Canceled(_) => ErrorCode::Canceled,
            Self::Unexpected(_) => ErrorCode::Internal,
        }
    }
}

/// Failures of the container runtime port.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached or answers with a server error.
    #[error("engine unreachable: {0}")]
    Unavailable(String),
    /// The image is absent and the pull policy forbids pulling it.
    #[error("image {0} is not present and the pull policy forbids pulling it")]
    ImageMissing(String),
    /// Pulling the image failed.
    #[error("pulling image {image} failed: {reason}")]
    PullFailed { image: String, reason: String },
    /// A container with this run's name already exists (another delivery of
    /// the same request won the race).
    #[error("container name {0} is already in use")]
    NameConflict(String),
    /// The container no longer exists.
    #[error("container {0} not found")]
    ContainerGone(String),
    /// The operation needs a running container with open stdin.
    #[error("container {0} is not accepting input")]
    NotAcceptingInput(String),
    /// The runtime refuses part of the spec by policy (e.g. a request
    /// mount it cannot pin), naming the rule.
    #[error("forbidden by the runtime ({rule}): {detail}")]
    Forbidden { rule: &'static str, detail: String },
    /// Anything else the engine refused.
    #[error("engine error: {0}")]
    Engine(String),
    /// The engine refused a field of the request that only it can check,
    /// e.g. a `network` that does not exist on it.
    #[error("{0}")]
    InvalidSpec(FieldError),
}

impl From<RuntimeError> for OperationError {
    fn from(err: RuntimeError) -> Self {
        match err {
            RuntimeError::Unavailable(m) => Self::RuntimeUnavailable(m),
            RuntimeError::ImageMissing(image) => Self::ImageUnavailable {
                image,
                reason: "not present and the pull policy is never".into(),
            },
            RuntimeError::PullFailed { image, reason } => Self::ImageUnavailable { image, reason },
            RuntimeError::NameConflict(name) => {
                Self::Conflict(format!("container {name} already exists"))
            }
            RuntimeError::ContainerGone(id) => Self::NotFound(id),
            RuntimeError::NotAcceptingInput(id) => {
                Self::Conflict(format!("run {id} is not accepting input"))
            }
            RuntimeError::Forbidden { rule, detail } => Self::Forbidden { rule, detail },
            RuntimeError::Engine(m) => Self::Unexpected(m),
            RuntimeError::InvalidSpec(e) => Self::InvalidSpec(e),
        }
    }
}

/// Failures of publishing a response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The Events API refused the event for good (a 4xx other than 429).
    #[error("events api rejected the event: {0}")]
    Rejected(String),
    /// The Events API refused the worker's token for good (401/403 after
    /// re-reading a token file): no response can be delivered any more.
    #[error("events api refused the worker's token: {0}")]
    Unauthorized(String),
    /// Publishing was abandoned because the worker is stopping.
    #[error("publish abandoned at shutdown: {0}")]
    Abandoned(String),
}

/// Failures of the inbound event source.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A configuration error (401/403): the worker cannot go on.
    #[error("event source refused the worker: {0}")]
    Fatal(String),
}
