//! The Docker Engines of the pool: `docker.hosts` (`--docker-host`,
//! `BUS_DOCKER_DOCKER_HOSTS`), else the one `docker.host`, else
//! `DOCKER_HOST`, else the local socket.
//!
//! An entry is a URL, or a table naming the engine's own TLS files:
//!
//! ```toml
//! [docker]
//! hosts = [
//!   "unix:///var/run/docker.sock",
//!   { url = "tcp://10.0.0.2:2376", tls_cert_path = "/etc/bus/engine2" },
//!   { url = "tcp://10.0.0.3:2376", tls_ca = "ca.pem", tls_cert = "cert.pem", tls_key = "key.pem" },
//! ]
//! ```

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use bus_docker_engine::TlsFiles;
use serde::de::{self as sde, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::de;

/// The URL schemes this worker can reach an engine on.
const SCHEMES: [&str; 4] = ["unix://", "tcp://", "http://", "https://"];

/// One engine of the pool, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerHostSettings {
    /// As configured: may carry credentials, so show
    /// [`bus_docker_engine::display_host`] of it instead.
    pub url: String,
    /// The engine's own TLS files; `None`: Docker's `DOCKER_TLS_VERIFY` /
    /// `DOCKER_CERT_PATH` apply.
    pub tls: Option<TlsFiles>,
}

impl DockerHostSettings {
    /// The engine's socket path, for a `unix://` host.
    pub fn socket(&self) -> Option<PathBuf> {
        self.url.strip_prefix("unix://").map(PathBuf::from)
    }
}

/// One `docker.hosts` entry as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEntry {
    /// A URL as written (not an error: `docker_hosts` checks it and names
    /// the entry when it is wrong).
    Url(String),
    Table(HostTable),
}

/// `{ url = "...", tls_ca = "...", tls_cert = "...", tls_key = "..." }` or
/// `{ url = "...", tls_cert_path = "dir" }`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostTable {
    #[serde(deserialize_with = "de::text::deserialize")]
    pub url: String,
    #[serde(default, deserialize_with = "de::opt_text::deserialize")]
    pub tls_ca: Option<String>,
    #[serde(default, deserialize_with = "de::opt_text::deserialize")]
    pub tls_cert: Option<String>,
    #[serde(default, deserialize_with = "de::opt_text::deserialize")]
    pub tls_key: Option<String>,
    /// A directory holding `ca.pem`, `cert.pem` and `key.pem`, like
    /// `DOCKER_CERT_PATH`.
    #[serde(default, deserialize_with = "de::opt_text::deserialize")]
    pub tls_cert_path: Option<String>,
}

struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = HostEntry;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a docker host URL or a table { url = ..., tls_... }")
    }
    fn visit_str<E: sde::Error>(self, v: &str) -> Result<HostEntry, E> {
        Ok(HostEntry::Url(v.to_owned()))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HostEntry, A::Error> {
        HostTable::deserialize(sde::value::MapAccessDeserializer::new(map)).map(HostEntry::Table)
    }
}

impl<'de> Deserialize<'de> for HostEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntryVisitor)
    }
}

struct HostsVisitor;

impl<'de> Visitor<'de> for HostsVisitor {
    type Value = Vec<HostEntry>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of docker hosts, or comma-separated URLs")
    }
    /// The env form: `unix:///a.sock,tcp://b:2376`; blank entries ignored.
    fn visit_str<E: sde::Error>(self, v: &str) -> Result<Vec<HostEntry>, E> {
        Ok(v.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| HostEntry::Url(u.to_owned()))
            .collect())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<HostEntry>, A::Error> {
        let mut out = Vec::new();
        while let Some(entry) = seq.next_element::<HostEntry>()? {
            out.push(entry);
        }
        Ok(out)
    }
}

/// `docker.hosts`: a list of entries, or one comma-separated string.
pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HostEntry>, D::Error> {
    d.deserialize_any(HostsVisitor)
}

/// A URL this worker can dial, named by `key` when it cannot.
fn checked_url(key: &str, url: &str) -> Result<String, ConfigError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(invalid(key, "is empty"));
    }
    if !SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Err(invalid(
            key,
            format!(
                "the scheme of {:?} is not supported (use unix://, tcp://, http:// or https://)",
                bus_docker_engine::display_host(url)
            ),
        ));
    }
    Ok(url.to_owned())
}

/// A TLS file that exists, named by `key` when it does not.
fn tls_file(key: &str, path: &Path) -> Result<PathBuf, ConfigError> {
    if path.is_file() {
        Ok(path.to_owned())
    } else {
        Err(invalid(
            key,
            format!("{} is not a readable file", path.display()),
        ))
    }
}

impl HostTable {
    fn tls(&self, key: &str) -> Result<Option<TlsFiles>, ConfigError> {
        let files = [&self.tls_ca, &self.tls_cert, &self.tls_key];
        let named = |k: &str| format!("{key}.{k}");
        let files = match (&self.tls_cert_path, files) {
            (None, [None, None, None]) => return Ok(None),
            (Some(dir), [None, None, None]) => TlsFiles::in_dir(Path::new(dir)),
            (Some(_), _) => {
                return Err(invalid(
                    named("tls_cert_path"),
                    "give either tls_cert_path or tls_ca, tls_cert and tls_key, not both",
                ))
            }
            (None, [Some(ca), Some(cert), Some(key)]) => TlsFiles {
                ca: ca.into(),
                cert: cert.into(),
                key: key.into(),
            },
            (None, [ca, cert, _]) => {
                let missing = if ca.is_none() {
                    "tls_ca"
                } else if cert.is_none() {
                    "tls_cert"
                } else {
                    "tls_key"
                };
                return Err(invalid(
                    named(missing),
                    "missing: tls_ca, tls_cert and tls_key go together",
                ));
            }
        };
        let via_dir = self.tls_cert_path.is_some();
        let file_key = |k: &str| named(if via_dir { "tls_cert_path" } else { k });
        Ok(Some(TlsFiles {
            ca: tls_file(&file_key("tls_ca"), &files.ca)?,
            cert: tls_file(&file_key("tls_cert"), &files.cert)?,
            key: tls_file(&file_key("tls_key"), &files.key)?,
        }))
    }
}

impl HostEntry {
    fn settings(&self, key: &str) -> Result<DockerHostSettings, ConfigError> {
        match self {
            Self::Url(url) => Ok(DockerHostSettings {
                url: checked_url(key, url)?,
                tls: None,
            }),
            Self::Table(table) => {
                let url = checked_url(&format!("{key}.url"), &table.url)?;
                let tls = table.tls(key)?;
                if tls.is_some() && !(url.starts_with("tcp://") || url.starts_with("https://")) {
                    return Err(invalid(
                        format!("{key}.url"),
                        "TLS files are for tcp:// and https:// hosts only",
                    ));
                }
                Ok(DockerHostSettings { url, tls })
            }
        }
    }
}

/// The pool's engines, never empty.
///
/// `check_fallback`: whether a host taken from `DOCKER_HOST` (nothing
/// configured) must be usable too; with the `static` provider it is never
/// dialled.
///
/// # Errors
/// `Invalid` naming the key: an unsupported scheme, an empty URL, TLS
/// files that are incomplete or missing, a host listed twice, or both
/// `docker.host` and `docker.hosts` set.
pub(super) fn docker_hosts(
    host: Option<&str>,
    hosts: &[HostEntry],
    check_fallback: bool,
) -> Result<Vec<DockerHostSettings>, ConfigError> {
    if hosts.is_empty() {
        let url = match host.filter(|h| !h.trim().is_empty()) {
            Some(h) => checked_url("docker.host", h)?,
            None => {
                let url = bus_docker_engine::client::resolve_host(None);
                if check_fallback {
                    checked_url("DOCKER_HOST", &url)?
                } else {
                    url
                }
            }
        };
        return Ok(vec![DockerHostSettings { url, tls: None }]);
    }
    if host.is_some_and(|h| !h.trim().is_empty()) {
        return Err(invalid(
            "docker.host",
            "set either docker.host or docker.hosts (--docker-host, BUS_DOCKER_DOCKER_HOSTS), not both",
        ));
    }
    let mut out: Vec<DockerHostSettings> = Vec::with_capacity(hosts.len());
    for (i, entry) in hosts.iter().enumerate() {
        let key = format!("docker.hosts[{i}]");
        let host = entry.settings(&key)?;
        let same =
            |h: &DockerHostSettings| h.url.trim_end_matches('/') == host.url.trim_end_matches('/');
        if let Some(first) = out.iter().position(same) {
            return Err(invalid(
                key,
                format!(
                    "{} is already docker.hosts[{first}]: list each engine once",
                    bus_docker_engine::display_host(&host.url)
                ),
            ));
        }
        out.push(host);
    }
    Ok(out)
}

/// `docker.max_runs_per_engine`: unset, or at least 1.
///
/// # Errors
/// `Invalid` naming the key for 0.
pub(super) fn per_engine_cap(n: Option<usize>) -> Result<Option<NonZeroUsize>, ConfigError> {
    n.map(|n| {
        NonZeroUsize::new(n)
            .ok_or_else(|| invalid("docker.max_runs_per_engine", "must be at least 1"))
    })
    .transpose()
}

#[cfg(test)]
#[path = "hosts_tests.rs"]
mod tests;
