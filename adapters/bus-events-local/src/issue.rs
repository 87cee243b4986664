//! `bus-events-local token issue`: a token signed with the local HS256
//! secret, printed the way `bus operator token issue --local` prints it.

use std::fmt;
use std::str::FromStr;

use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::auth::mint_timed;
use crate::{MintClaims, Secret, TokenError};

/// How the issued token is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The bare token and a newline.
    #[default]
    Token,
    /// One JSON object: `token`, `token_type`, `subject`, `audience`,
    /// `scope`, `issued_at`, `expires_at` (RFC 3339).
    Json,
}

/// A `--format` value that is neither `token` nor `json`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}`: use `token` or `json`")]
pub struct UnknownFormat(String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "token" => Ok(Self::Token),
            "json" => Ok(Self::Json),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Token => "token",
            Self::Json => "json",
        })
    }
}

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The subject is empty; the server refuses tokens without one.
    #[error("--subject must not be empty")]
    NoSubject,
    /// Signing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// Signs a token for `claims` and renders it in `format` (no trailing
/// newline).
///
/// # Errors
///
/// [`IssueError::NoSubject`] for a blank subject, [`IssueError::Token`]
/// when signing fails or the lifetime overflows.
pub fn issue(secret: &Secret, claims: &MintClaims, format: Format) -> Result<String, IssueError> {
    if claims.sub.trim().is_empty() {
        return Err(IssueError::NoSubject);
    }
    let minted = mint_timed(secret, claims)?;
    Ok(match format {
        Format::Token => minted.token,
        Format::Json => json!({
            "token": minted.token,
            "token_type": "Bearer",
            "subject": claims.sub,
            "audience": claims.aud,
            "scope": claims.scope,
            "issued_at": rfc3339(minted.issued_at),
            "expires_at": rfc3339(minted.expires_at),
        })
        .to_string(),
    })
}

/// Seconds since the epoch as RFC 3339; the raw number if out of range.
fn rfc3339(secs: u64) -> serde_json::Value {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(&Rfc3339).ok())
        .map_or_else(|| json!(secs), serde_json::Value::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        assert_eq!("token".parse(), Ok(Format::Token));
        assert_eq!("json".parse(), Ok(Format::Json));
        assert!("yaml".parse::<Format>().is_err());
        assert_eq!(Format::Json.to_string(), "json");
    }

    #[test]
    fn json_carries_the_claims_and_times() {
        let secret = Secret::parse("s").expect("secret");
        let claims = MintClaims::new("acct", "events:send container:run");
        let out = issue(&secret, &claims, Format::Json).expect("issued");
        let value: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(value["subject"], "acct");
        assert_eq!(value["scope"], "events:send container:run");
        assert_eq!(value["audience"], crate::AUDIENCE);
        assert_eq!(value["token_type"], "Bearer");
        assert_eq!(
            value["token"].as_str().expect("token").split('.').count(),
            3
        );
        assert!(value["expires_at"]
            .as_str()
            .expect("rfc3339")
            .ends_with('Z'));
    }

    #[test]
    fn a_blank_subject_is_refused() {
        let secret = Secret::parse("s").expect("secret");
        let claims = MintClaims::new(" ", "events:send");
        assert!(matches!(
            issue(&secret, &claims, Format::Token),
            Err(IssueError::NoSubject)
        ));
    }
}
