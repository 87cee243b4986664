//! The bearer token: where it comes from, how it is cached and rotated.
//!
//! [`TokenLookup`] finds it the Bus way, first hit wins: a token file
//! (`--token-file` / `BUS_API_TOKEN_FILE`), then `BUS_API_TOKEN`, then
//! `$BUS_CONFIG_DIR/auth/api-token` or `~/.config/bus/auth/api-token`.
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

/// Where [`TokenLookup::resolve`] found the token; printable, never the
/// token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The file given by `--token-file` / `BUS_API_TOKEN_FILE`.
    TokenFile(PathBuf),
    /// The `BUS_API_TOKEN` environment variable.
    Env,
    /// The Bus CLI's token file under the config directory.
    ConfigDir(PathBuf),
}

impl fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TokenFile(path) => write!(f, "token file {}", path.display()),
            Self::Env => f.write_str("BUS_API_TOKEN"),
            Self::ConfigDir(path) => write!(f, "Bus config token file {}", path.display()),
        }
    }
}

/// The inputs of the token lookup, gathered from the environment by
/// [`TokenLookup::from_env`] (or set directly in tests).
#[derive(Debug, Clone, Default)]
pub struct TokenLookup {
    /// `--token-file` / `BUS_API_TOKEN_FILE` (or the config file's
    /// `events.token_file`).
    pub token_file: Option<PathBuf>,
    /// `BUS_API_TOKEN`; blank counts as unset.
    pub env_token: Option<Secret>,
    /// `BUS_CONFIG_DIR`.
    pub config_dir: Option<PathBuf>,
    /// `HOME`, for `~/.config/bus` when `BUS_CONFIG_DIR` is unset.
    pub home: Option<PathBuf>,
}

impl TokenLookup {
    /// The lookup for `token_file` with `BUS_API_TOKEN`, `BUS_CONFIG_DIR`
    /// and `HOME` read from the process environment (empty values unset).
    pub fn from_env(token_file: Option<PathBuf>) -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        Self {
            token_file,
            env_token: std::env::var("BUS_API_TOKEN").ok().map(Secret::new),
            config_dir: var("BUS_CONFIG_DIR").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
        }
    }

    /// `$BUS_CONFIG_DIR/auth/api-token`, else
    /// `$HOME/.config/bus/auth/api-token`.
    pub fn config_token_path(&self) -> Option<PathBuf> {
        let dir = match (&self.config_dir, &self.home) {
            (Some(dir), _) => dir.clone(),
            (None, Some(home)) => home.join(".config").join("bus"),
            (None, None) => return None,
        };
        Some(dir.join("auth").join("api-token"))
    }

    /// The first source that is set: the token file (it must then be
    /// readable when the client is built), `BUS_API_TOKEN`, the config
    /// directory's file if it exists.
    ///
    /// # Errors
    ///
    /// [`TokenError::NotFound`] naming every place that was searched.
    pub fn resolve(&self) -> Result<(TokenSource, TokenOrigin), TokenError> {
        if let Some(path) = &self.token_file {
            return Ok((
                TokenSource::File(path.clone()),
                TokenOrigin::TokenFile(path.clone()),
            ));
        }
        if let Some(token) = self
            .env_token
            .as_ref()
            .filter(|token| !token.expose_secret().trim().is_empty())
        {
            return Ok((TokenSource::Static(token.clone()), TokenOrigin::Env));
        }
        let config_path = self.config_token_path();
        if let Some(path) = config_path.as_ref().filter(|path| path.is_file()) {
            return Ok((
                TokenSource::File(path.clone()),
                TokenOrigin::ConfigDir(path.clone()),
            ));
        }
        Err(TokenError::NotFound {
            config_path: config_path.map_or_else(
                || {
                    "$BUS_CONFIG_DIR/auth/api-token (neither BUS_CONFIG_DIR nor HOME is set)"
                        .to_owned()
                },
                |path| path.display().to_string(),
            ),
        })
    }
}

/// Why a token could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No source holds a token.
    #[error(
        "no Events API token: pass --token-file (or BUS_API_TOKEN_FILE), set BUS_API_TOKEN, \
         or write it to {config_path}"
    )]
    NotFound {
        /// The config-directory path that was looked at.
        config_path: String,
    },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(dir: &Path) -> TokenLookup {
        TokenLookup {
            token_file: Some(dir.join("flag-token")),
            env_token: Some(Secret::new("env-token")),
            config_dir: Some(dir.join("config")),
            home: Some(dir.join("home")),
        }
    }

    fn write_config_token(dir: &Path, sub: &str) -> PathBuf {
        let path = dir.join(sub).join("auth").join("api-token");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, "config-token\n").expect("write");
        path
    }

    #[test]
    fn the_token_file_wins_over_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config_token(dir.path(), "config");
        let (source, origin) = lookup(dir.path()).resolve().expect("found");
        let flag = dir.path().join("flag-token");
        assert!(matches!(source, TokenSource::File(path) if path == flag));
        assert_eq!(origin, TokenOrigin::TokenFile(flag));
    }

    #[test]
    fn then_the_environment_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config_token(dir.path(), "config");
        let mut lookup = lookup(dir.path());
        lookup.token_file = None;
        let (source, origin) = lookup.resolve().expect("found");
        assert!(matches!(source, TokenSource::Static(t) if t.expose_secret() == "env-token"));
        assert_eq!(origin, TokenOrigin::Env);
    }

    #[test]
    fn then_bus_config_dir_then_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lookup = lookup(dir.path());
        lookup.token_file = None;
        lookup.env_token = Some(Secret::new("  "));
        let in_home = write_config_token(dir.path(), "home/.config/bus");
        // BUS_CONFIG_DIR is set but has no token: HOME is not consulted.
        assert!(matches!(lookup.resolve(), Err(TokenError::NotFound { .. })));

        let in_config = write_config_token(dir.path(), "config");
        let (source, origin) = lookup.resolve().expect("found");
        assert!(matches!(source, TokenSource::File(ref p) if *p == in_config));
        assert_eq!(origin, TokenOrigin::ConfigDir(in_config));

        lookup.config_dir = None;
        let (_, origin) = lookup.resolve().expect("found");
        assert_eq!(origin, TokenOrigin::ConfigDir(in_home));
    }

    #[test]
    fn nothing_found_names_every_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lookup = TokenLookup {
            home: Some(dir.path().to_owned()),
            ..TokenLookup::default()
        };
        let message = lookup.resolve().expect_err("nothing").to_string();
        for part in [
            "--token-file",
            "BUS_API_TOKEN_FILE",
            "BUS_API_TOKEN",
            ".config/bus/auth/api-token",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn the_origin_never_prints_the_token() {
        assert_eq!(TokenOrigin::Env.to_string(), "BUS_API_TOKEN");
        let lookup = TokenLookup {
            env_token: Some(Secret::new("very-secret")),
            ..TokenLookup::default()
        };
        let (source, origin) = lookup.resolve().expect("found");
        assert!(!format!("{origin} {source:?}").contains("very-secret"));
    }
}
