//! The Events API base URL and the endpoints derived from it.

use std::fmt;
use std::str::FromStr;

use url::Url;

const COLLECTION_PATH: &str = "/api/v1/events";
const STREAM_PATH: &str = "/api/v1/events/stream";

/// Why a string is not a usable Events API URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The text does not parse as an absolute URL.
    #[error("`{input}` is not a valid URL")]
    Invalid {
        /// The rejected text as [`redact_url`] shows it: credentials and
        /// query never reach an error message.
        input: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },
    /// Only `http` and `https` are spoken.
    #[error("unsupported URL scheme `{scheme}` (expected http or https)")]
    UnsupportedScheme {
        /// The scheme that was given.
        scheme: String,
    },
    /// The URL names no host.
    #[error("the URL has no host")]
    MissingHost,
    /// A query string or fragment has no meaning for a base URL.
    #[error("the URL must not carry a query string or a fragment")]
    QueryOrFragment,
    /// Credentials belong in the token, not in a URL that may be logged.
    #[error("the URL must not carry a user name or password; use the API token")]
    Credentials,
}

/// A normalised Events API base URL.
///
/// Accepts a bare origin (`http://127.0.0.1:8081`), a path prefix
/// (`http://host:8080/local/v1`) or the full collection URL ending in
/// `/api/v1/events`, each with or without a trailing `/`.
#[derive(Clone, PartialEq, Eq)]
pub struct EventsUrl {
    base: String,
    publish: Url,
    stream: Url,
}

impl EventsUrl {
    /// Parses and normalises an Events API URL.
    ///
    /// # Errors
    ///
    /// [`UrlError::Invalid`] for text that is not a URL,
    /// [`UrlError::UnsupportedScheme`] for anything but http/https,
    /// [`UrlError::MissingHost`], [`UrlError::QueryOrFragment`] and
    /// [`UrlError::Credentials`] for URLs that cannot be a base.
    pub fn parse(input: &str) -> Result<Self, UrlError> {
        let trimmed = input.trim();
        let url = Url::parse(trimmed).map_err(|source| UrlError::Invalid {
            input: redact_url(trimmed),
            source,
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::UnsupportedScheme {
                scheme: url.scheme().to_owned(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::MissingHost);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::QueryOrFragment);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }

        let path = url.path().trim_end_matches('/');
        let prefix = path
            .strip_suffix(COLLECTION_PATH)
            .unwrap_or(path)
            .trim_end_matches('/')
            .to_owned();

        let with_path = |suffix: &str| {
            let mut endpoint = url.clone();
            endpoint.set_path(&format!("{prefix}{suffix}"));
            endpoint
        };
        let publish = with_path(COLLECTION_PATH);
        let stream = with_path(STREAM_PATH);
        // An empty path serialises as `/`; the base is shown without it.
        let base = with_path("").as_str().trim_end_matches('/').to_owned();
        Ok(Self {
            base,
            publish,
            stream,
        })
    }

    /// The normalised base, without a trailing `/`
    /// (e.g. `http://host:8080/local/v1`).
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/api/v1/events`: where events are published.
    #[must_use]
    pub fn publish_url(&self) -> &str {
        self.publish.as_str()
    }

    /// `{base}/api/v1/events/stream`: where subscriptions are opened.
    #[must_use]
    pub fn stream_url(&self) -> &str {
        self.stream.as_str()
    }

    pub(crate) fn publish_endpoint(&self) -> &Url {
        &self.publish
    }

    pub(crate) fn stream_endpoint(&self) -> &Url {
        &self.stream
    }
}

/// `text` as logs and error messages may show it: a `user:password@`
/// before the host becomes `***@`, and a query or fragment (which may carry
/// a secret too) becomes `?***`. Works on text that is not a valid URL as
/// well (RFC 3986: the authority ends at the first `/`, `?` or `#` after
/// `://`, and its user information at the last `@` in it), so that an
/// error about a malformed URL cannot leak what it carried either.
#[must_use]
pub fn redact_url(text: &str) -> String {
    let (scheme, rest) = match text.find("://") {
        Some(at) => text.split_at(at + 3),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let path = match tail.find(['?', '#']) {
        Some(at) => format!("{}?***", &tail[..at]),
        None => tail.to_owned(),
    };
    format!("{scheme}{host}{path}")
}

impl FromStr for EventsUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for EventsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl fmt::Debug for EventsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventsUrl").field(&self.base).finish()
    }
}
