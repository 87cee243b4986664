//! Errors, one enum per operation.
//!
//! Top-level messages say what failed; the cause (an I/O error, the server's
//! answer) is the `source()`. Log them with their whole chain.

use std::error::Error as StdError;
use std::fmt;

use crate::token::TokenError;

/// A boxed error from the HTTP stack; kept opaque so its types stay out of
/// this crate's API.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why [`crate::EventsClient::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API token could not be loaded.
    #[error("cannot load the API token")]
    Token(#[from] TokenError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot build the HTTP client")]
    Http(#[source] BoxError),
}

/// What went wrong with one HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum RequestFailure {
    /// The server answered with a non-success status.
    #[error("the Events API answered HTTP {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The start of the response body, for diagnostics.
        message: String,
    },
    /// The request did not complete within the request timeout.
    #[error("the request to the Events API timed out")]
    Timeout,
    /// Connecting, sending or receiving failed.
    #[error("cannot reach the Events API")]
    Transport(#[source] BoxError),
}

impl RequestFailure {
    /// The HTTP status, when the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Timeout | Self::Transport(_) => None,
        }
    }
}

/// Why a publish did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Worth retrying: 5xx, 429, a network error or a timeout.
    #[error("publishing the event failed (retryable)")]
    Retryable(#[source] RequestFailure),
    /// Retrying will not help: any other 4xx (including 401 after the token
    /// was re-read and had not changed) or an unexpected 3xx.
    #[error("the Events API refused the event")]
    Permanent(#[source] RequestFailure),
    /// The event could not be serialised.
    #[error("cannot encode the event as JSON")]
    Encode(#[source] serde_json::Error),
    /// The cancellation token fired before the event was accepted. A request
    /// that was in flight may still have reached the server.
    #[error("publishing was canceled")]
    Canceled,
}

impl PublishError {
    /// Whether [`crate::EventsClient::publish`] would retry this error.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }

    /// The HTTP status, when the server answered.
    #[must_use]
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Retryable(failure) | Self::Permanent(failure) => failure.status(),
            Self::Encode(_) | Self::Canceled => None,
        }
    }
}

/// A subscription error. It is yielded once, then the stream ends: these are
/// configuration errors that reconnecting cannot fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// 401, and the token did not change when re-read.
    #[error("the Events API rejected the API token (HTTP {status}): {message}")]
    Unauthorized {
        /// HTTP status code (401).
        status: u16,
        /// The start of the response body.
        message: String,
    },
    /// 403, and the token did not change when re-read.
    #[error("the API token may not subscribe to this event (HTTP {status}): {message}")]
    Forbidden {
        /// HTTP status code (403).
        status: u16,
        /// The start of the response body.
        message: String,
    },
    /// Any other status that retrying cannot fix: 400 (when it is not the
    /// `unicast` → `work` fallback), 404, an unexpected 3xx, …
    #[error("the Events API refused the subscription (HTTP {status}): {message}")]
    Rejected {
        /// HTTP status code.
        status: u16,
        /// The start of the response body.
        message: String,
    },
}

impl StreamError {
    /// The HTTP status that ended the subscription.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            Self::Unauthorized { status, .. }
            | Self::Forbidden { status, .. }
            | Self::Rejected { status, .. } => *status,
        }
    }
}

/// Displays an error followed by its sources: `a: b: c`.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
