//! HS256 bearer tokens: minting them for local use and checking them on
//! every API request.
//!
//! The rules mirror the real Bus Events API: the audience must contain
//! [`AUDIENCE`], `exp` and `sub` are required, and the space-separated
//! `scope` claim lists the scopes granted, each matched exactly (which
//! operation needs which scope is decided in `acl`).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Audience every token must carry.
pub const AUDIENCE: &str = "ai.hg.fi/api";
use crate::acl::{EVENTS_LISTEN, EVENTS_SEND};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

/// What a minted token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintClaims {
    /// Identity of the holder; becomes `identity_id` on published events.
    pub sub: String,
    /// Audience; the server only accepts [`AUDIENCE`].
    pub aud: String,
    /// Space-separated scopes, e.g. `"events:send events:listen"`.
    pub scope: String,
    /// Lifetime: `exp = iat + ttl`.
    pub ttl: Duration,
}

impl MintClaims {
    /// Claims for `sub` with `scope`, the default audience and a one hour
    /// lifetime.
    pub fn new(sub: impl Into<String>, scope: impl Into<String>) -> Self {
        Self {
            sub: sub.into(),
            scope: scope.into(),
            ..Self::default()
        }
    }
}

impl Default for MintClaims {
    /// A token for `local-dev` that may publish and stream unprotected
    /// names, valid for one hour.
    fn default() -> Self {
        Self {
            sub: "local-dev".to_owned(),
            aud: AUDIENCE.to_owned(),
            scope: format!("{EVENTS_SEND} {EVENTS_LISTEN}"),
            ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The JWT library refused to sign.
    #[error("failed to sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// `iat + ttl` does not fit in a timestamp.
    #[error("token lifetime is too long")]
    TtlTooLong,
}

/// The claims as they are written into, and read back from, a token.
#[derive(Debug, Serialize, Deserialize)]
struct WireClaims {
    sub: String,
    aud: String,
    #[serde(default)]
    scope: String,
    iat: u64,
    exp: u64,
}

/// Signs an HS256 token with `iat = now` and `exp = now + ttl`.
///
/// # Errors
///
/// [`TokenError::TtlTooLong`] when the expiry overflows, and
/// [`TokenError::Sign`] when signing fails.
pub fn mint_token(secret: &Secret, claims: &MintClaims) -> Result<String, TokenError> {
    mint_timed(secret, claims).map(|minted| minted.token)
}

/// A signed token with the times written into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Minted {
    pub(crate) token: String,
    /// `iat`, seconds since the Unix epoch.
    pub(crate) issued_at: u64,
    /// `exp`, seconds since the Unix epoch.
    pub(crate) expires_at: u64,
}

/// Like [`mint_token`], also returning `iat` and `exp`.
pub(crate) fn mint_timed(secret: &Secret, claims: &MintClaims) -> Result<Minted, TokenError> {
    let iat = jsonwebtoken::get_current_timestamp();
    let exp = iat
        .checked_add(claims.ttl.as_secs())
        .ok_or(TokenError::TtlTooLong)?;
    let wire = WireClaims {
        sub: claims.sub.clone(),
        aud: claims.aud.clone(),
        scope: claims.scope.clone(),
        iat,
        exp,
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &wire,
        &EncodingKey::from_secret(secret.expose()),
    )
    .map_err(TokenError::Sign)?;
    Ok(Minted {
        token,
        issued_at: iat,
        expires_at: exp,
    })
}

/// A token that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The `sub` claim.
    pub(crate) identity: String,
    scopes: Vec<String>,
}

impl Caller {
    /// Whether the token's scopes grant `needed`.
    pub(crate) fn has_scope(&self, needed: &str) -> bool {
        self.scopes.iter().any(|scope| scope == needed)
    }
}

/// Why a request's credentials were refused. The messages are safe to
/// return to the client: they never contain the token.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("token audience does not include {AUDIENCE}")]
    Audience,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has no subject")]
    NoSubject,
    #[error("token is invalid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// Verifies bearer tokens against one secret.
#[derive(Clone)]
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

/// Only the claims the server looks at; `aud` and `exp` are checked by
/// [`Validation`].
#[derive(Debug, Deserialize)]
struct CheckedClaims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
}

impl Verifier {
    pub(crate) fn new(secret: &Secret) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        // RFC 7519 §4.1.5: a token must not be accepted before `nbf`.
        validation.validate_nbf = true;
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        Self {
            key: DecodingKey::from_secret(secret.expose()),
            validation,
        }
    }

    /// Checks the value of an `Authorization` header.
    pub(crate) fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        self.verify(token)
    }

    fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        use jsonwebtoken::errors::ErrorKind;

        let data = jsonwebtoken::decode::<CheckedClaims>(token, &self.key, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::Audience,
                ErrorKind::InvalidSignature => AuthError::Signature,
                _ => AuthError::Invalid(err),
            })?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() {
            return Err(AuthError::NoSubject);
        }
        Ok(Caller {
            identity: claims.sub,
            scopes: claims
                .scope
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::parse("unit-test-secret").expect("valid secret")
    }

    fn verify(claims: &MintClaims) -> Result<Caller, AuthError> {
        let token = mint_token(&secret(), claims).expect("mint");
        Verifier::new(&secret()).verify_header(Some(&format!("Bearer {token}")))
    }

    #[test]
    fn minted_tokens_verify() {
        let caller = verify(&MintClaims::new("worker-1", "events:listen")).expect("valid");
        assert_eq!(caller.identity, "worker-1");
        assert!(caller.has_scope(EVENTS_LISTEN));
        assert!(!caller.has_scope(EVENTS_SEND));
    }

    #[test]
    fn scopes_match_exactly_and_nothing_is_broad() {
        for scope in ["events", "*", "events:*", "container:*", "events:sendx", ""] {
            let caller = verify(&MintClaims::new("w", scope)).expect("valid");
            assert!(!caller.has_scope(EVENTS_SEND), "{scope}");
            assert!(!caller.has_scope(EVENTS_LISTEN), "{scope}");
            assert!(!caller.has_scope("container:run"), "{scope}");
        }
    }

    #[test]
    fn wrong_audience_is_refused() {
        let claims = MintClaims {
            aud: "someone-else".into(),
            ..MintClaims::default()
        };
        assert!(matches!(verify(&claims), Err(AuthError::Audience)));
    }

    #[test]
    fn other_secret_is_refused() {
        let token = mint_token(&secret(), &MintClaims::default()).expect("mint");
        let other = Verifier::new(&Secret::parse("another").expect("valid"));
        assert!(matches!(
            other.verify_header(Some(&format!("Bearer {token}"))),
            Err(AuthError::Signature)
        ));
    }

    #[test]
    fn header_shapes() {
        let verifier = Verifier::new(&secret());
        assert!(matches!(
            verifier.verify_header(None),
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            verifier.verify_header(Some("Bearer not.a.jwt")),
            Err(AuthError::Invalid(_))
        ));
        let token = mint_token(&secret(), &MintClaims::default()).expect("mint");
        assert!(verifier
            .verify_header(Some(&format!("bearer {token}")))
            .is_ok());
    }
}
