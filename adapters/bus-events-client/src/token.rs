//! The bearer token: where it comes from, how it is cached and rotated.
//!
//! A token file is read once when the client is built and cached. When the
//! server answers 401 (or 403 on a stream) the file is read again: if it now
//! holds a different token the request is retried with it, otherwise the
//! rejection is final. A static token never changes, so its 401 is final.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use reqwest::header::HeaderValue;

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Never log the result.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// A token given directly (e.g. from `BUS_API_TOKEN`).
    Static(Secret),
    /// A file holding the token; surrounding whitespace is ignored. The file
    /// is re-read when the server rejects the cached token.
    File(PathBuf),
}

/// Why a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token file could not be read.
    #[error("cannot read token file {path}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token (or token file) is empty.
    #[error("the API token {origin} is empty")]
    Empty {
        /// `from <path>` or `given directly`.
        origin: String,
    },
    /// The token holds characters that cannot go in an HTTP header.
    #[error("the API token {origin} contains characters not allowed in an HTTP header")]
    InvalidCharacters {
        /// `from <path>` or `given directly`.
        origin: String,
    },
}

/// A validated token, kept ready as a (sensitive) header value.
#[derive(Clone)]
pub(crate) struct Bearer {
    secret: Secret,
    header: HeaderValue,
}

impl Bearer {
    fn new(raw: &str, origin: impl FnOnce() -> String) -> Result<Self, TokenError> {
        let token = raw.trim();
        if token.is_empty() {
            return Err(TokenError::Empty { origin: origin() });
        }
        let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TokenError::InvalidCharacters { origin: origin() })?;
        header.set_sensitive(true);
        Ok(Self {
            secret: Secret::new(token),
            header,
        })
    }

    pub(crate) fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

/// The cached token plus the means to re-read it.
#[derive(Clone)]
pub(crate) struct Tokens {
    file: Option<Arc<Path>>,
    current: Arc<RwLock<Bearer>>,
}

impl Tokens {
    /// Reads the token once (blocking file read: this runs at start-up).
    pub(crate) fn load(source: &TokenSource) -> Result<Self, TokenError> {
        let (bearer, file) = match source {
            TokenSource::Static(secret) => (
                Bearer::new(secret.expose_secret(), || "given directly".to_owned())?,
                None,
            ),
            TokenSource::File(path) => {
                let raw = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?;
                (
                    Bearer::new(&raw, || format!("from {}", path.display()))?,
                    Some(Arc::from(path.as_path())),
                )
            }
        };
        Ok(Self {
            file,
            current: Arc::new(RwLock::new(bearer)),
        })
    }

    pub(crate) fn current(&self) -> Bearer {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Called after the server rejected `rejected`. Returns `true` when a
    /// different token is now cached (the request is worth retrying), `false`
    /// when the rejection is final: a static token, an unreadable or invalid
    /// file, or a file that still holds the rejected token.
    pub(crate) async fn token_changed(&self, rejected: &Bearer) -> bool {
        // Another request may already have picked up the rotated token.
        if self.current().secret != rejected.secret {
            return true;
        }
        let Some(path) = &self.file else {
            return false;
        };
        let fresh = match tokio::fs::read_to_string(path).await {
            Ok(raw) => Bearer::new(&raw, || format!("from {}", path.display())),
            Err(source) => Err(TokenError::Read {
                path: path.to_path_buf(),
                source,
            }),
        };
        match fresh {
            Ok(fresh) if fresh.secret != rejected.secret => {
                tracing::info!(path = %path.display(), "API token file changed; using the new token");
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(error = %crate::error::Chain(&error), "cannot re-read the API token after a rejection");
                false
            }
        }
    }
}
