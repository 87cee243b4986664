//! The HS256 signing secret, wrapped so it can never be printed by accident.

use std::fmt;

use base64::Engine as _;

/// Prefix that marks a secret written as standard base64.
const BASE64_PREFIX: &str = "base64:";

/// HS256 secret bytes shared by the token issuer and the server.
///
/// `Debug` prints `Secret(***)`; there is deliberately no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

/// Why a secret could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret (after decoding) has no bytes.
    #[error("the secret is empty")]
    Empty,
    /// The value after `base64:` is not valid standard base64.
    #[error("the secret after `base64:` is not valid standard base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

impl Secret {
    /// Wraps raw secret bytes.
    ///
    /// # Errors
    ///
    /// [`SecretError::Empty`] when `bytes` is empty: an empty HMAC key would
    /// make every token trivially forgeable.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(bytes))
    }

    /// Parses a secret as written in configuration: the raw text itself,
    /// unless written `base64:<value>`, in which case `<value>` (surrounding
    /// whitespace ignored) is decoded as standard base64.
    ///
    /// # Errors
    ///
    /// [`SecretError::Base64`] for a malformed `base64:` value and
    /// [`SecretError::Empty`] when no bytes remain.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        match text.strip_prefix(BASE64_PREFIX) {
            Some(encoded) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim())?;
                Self::new(bytes)
            }
            None => Self::new(text.as_bytes()),
        }
    }

    /// The secret bytes, for signing or verifying a token.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_is_taken_as_is() {
        let secret = Secret::parse("s3cret base64").expect("valid");
        assert_eq!(secret.expose(), b"s3cret base64");
    }

    #[test]
    fn base64_prefix_is_decoded() {
        let secret = Secret::parse("base64:aGVsbG8gd29ybGQ=").expect("valid");
        assert_eq!(secret.expose(), b"hello world");
        let trimmed = Secret::parse("base64: aGVsbG8gd29ybGQ=\n").expect("valid");
        assert_eq!(trimmed, secret);
    }

    #[test]
    fn malformed_base64_is_rejected() {
        assert!(matches!(
            Secret::parse("base64:not base64!"),
            Err(SecretError::Base64(_))
        ));
    }

    #[test]
    fn empty_secrets_are_rejected() {
        assert_eq!(Secret::parse(""), Err(SecretError::Empty));
        assert_eq!(Secret::parse("base64:"), Err(SecretError::Empty));
    }

    #[test]
    fn debug_never_shows_the_bytes() {
        let secret = Secret::parse("top-secret").expect("valid");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }
}
