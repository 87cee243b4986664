//! Validated identifiers. Each newtype has a private field and a named
//! constructor, so a value that exists has passed its rule.

use std::fmt;

use crate::error::FieldError;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A run id: `[A-Za-z0-9_.-]{1,128}`, chosen by the caller or made by the worker.
    RunId
);
string_newtype!(
    /// The correlation id tying a response to its request. Any printable
    /// text up to 256 bytes without control characters.
    CorrelationId
);
string_newtype!(
    /// The identity that owns a run (`owner_identity_id`).
    OwnerId
);
string_newtype!(
    /// A profile name: `[A-Za-z0-9_.-]{1,64}`.
    ProfileName
);
string_newtype!(
    /// A Docker image reference such as `docker.io/library/alpine:3.20`.
    ImageRef
);
string_newtype!(
    /// A Docker network mode or name (`none`, `host`, `bridge`, a user network).
    NetworkName
);

string_newtype!(
    /// A codex session a run resumes (`session`): `[A-Za-z0-9_.-]{1,128}`.
    /// Only together with the run's owner does it name what persists.
    SessionName
);

impl SessionName {
    /// Parse a request's `session`.
    ///
    /// # Errors
    /// `FieldError` (field `session`) when empty, longer than 128 bytes or
    /// holding a character outside `[A-Za-z0-9_.-]`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > 128 || !value.chars().all(is_id_char) {
            return Err(FieldError::new(
                "session",
                "must match [A-Za-z0-9_.-]{1,128}",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl RunId {
    /// Parse a caller-chosen run id.
    ///
    /// # Errors
    /// `FieldError` when empty, longer than 128 bytes or holding a character
    /// outside `[A-Za-z0-9_.-]`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > 128 || !value.chars().all(is_id_char) {
            return Err(FieldError::new(
                "run_id",
                "must match [A-Za-z0-9_.-]{1,128}",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// A fresh id from a unique suffix the caller provides (time + counter).
    pub fn generated(unique: u128) -> Self {
        Self(format!("run_{unique:032x}"))
    }
}

fn check_printable(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl CorrelationId {
    /// # Errors
    /// `FieldError` when empty, over 256 bytes, or holding control characters.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        check_printable("correlation_id", value, 256)?;
        Ok(Self(value.to_owned()))
    }
}

impl OwnerId {
    /// # Errors
    /// `FieldError` when empty, over 256 bytes, or holding control characters.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        check_printable("owner_identity_id", value, 256)?;
        Ok(Self(value.to_owned()))
    }
}

impl ProfileName {
    /// # Errors
    /// `FieldError` unless `[A-Za-z0-9_.-]{1,64}`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > 64 || !value.chars().all(is_id_char) {
            return Err(FieldError::new(
                "profile",
                "must match [A-Za-z0-9_.-]{1,64}",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl ImageRef {
    /// Docker's reference grammar (`distribution/reference`), checked
    /// syntactically: whether the image exists is the runtime's question.
    ///
    /// `[domain[:port]/]path[:tag][@digest]` where each path component is
    /// lowercase `[a-z0-9]+` joined by `.`, `_`, `__` or dashes; the name is
    /// at most 255 bytes; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a
    /// digest is `sha256:` + 64, `sha384:` + 96 or `sha512:` + 128
    /// lowercase hex digits.
    ///
    /// # Errors
    /// `FieldError` on `image` saying which part is wrong.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        reference::check(value).map_err(|why| FieldError::new("image", why))?;
        Ok(Self(value.to_owned()))
    }
}

/// Docker's image reference grammar, ported by hand from
/// `distribution/reference` (`regexp.go`, `reference.go`) and `go-digest`.
/// It is small and pure, which keeps the domain free of dependencies.
mod reference {
    /// `NameTotalLengthMax` of the reference package.
    const NAME_MAX: usize = 255;
    const TAG_MAX: usize = 128;

    pub(super) fn check(value: &str) -> Result<(), String> {
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain whitespace or control characters".into());
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (value, None),
        };
        if let Some(digest) = digest {
            check_digest(digest)?;
        }
        // A tag follows the last `:` after the last `/`; a `:` before it
        // belongs to the registry's port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag)?;
        }
        check_name(name)
    }

    fn check_name(name: &str) -> Result<(), String> {
        if name.is_empty() {
            return Err("must name a repository".into());
        }
        if name.len() > NAME_MAX {
            return Err(format!("repository name must be at most {NAME_MAX} bytes"));
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        if parts.len() > 1 && is_domain(parts[0]) {
            parts.remove(0);
        }
        for part in parts {
            if !is_path_component(part) {
                return Err(if is_path_component(&part.to_ascii_lowercase()) {
                    "repository name must be lowercase".into()
                } else {
                    format!("invalid repository name component {part:?}")
                });
            }
        }
        Ok(())
    }

    /// `alphanumeric (separator alphanumeric)*` with `alphanumeric =
    /// [a-z0-9]+` and `separator = [._] | __ | -+`.
    fn is_path_component(part: &str) -> bool {
        let bytes = part.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < bytes.len() {
            if alnum(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && !alnum(bytes[i]) {
                i += 1;
            }
            let sep = &bytes[start..i];
            let ok = matches!(sep, b"." | b"_" | b"__") || sep.iter().all(|b| *b == b'-');
            if !ok {
                return false;
            }
        }
        true
    }

    /// `host[:port]`: a domain name (components of `[A-Za-z0-9]` with inner
    /// dashes, joined by `.`) or `[ipv6]`. Like the grammar, any such first
    /// component counts as a domain when more components follow.
    fn is_domain(first: &str) -> bool {
        let (host, port) = if let Some(rest) = first.strip_prefix('[') {
            match rest.split_once(']') {
                Some((v6, tail)) => {
                    if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                        return false;
                    }
                    match tail.strip_prefix(':') {
                        Some(port) => ("", Some(port)),
                        None if tail.is_empty() => ("", None),
                        None => return false,
                    }
                }
                None => return false,
            }
        } else {
            match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            }
        };
        if let Some(port) = port {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
        }
        if first.starts_with('[') {
            return true;
        }
        !host.is_empty()
            && host.split('.').all(|c| {
                let b = c.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
            })
    }

    fn check_tag(tag: &str) -> Result<(), String> {
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let b = tag.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= TAG_MAX
            && word(b[0])
            && b.iter().all(|x| word(*x) || *x == b'.' || *x == b'-');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid tag {tag:?}: must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
            ))
        }
    }

    /// go-digest: a known algorithm and exactly its length of lowercase hex.
    fn check_digest(digest: &str) -> Result<(), String> {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or_else(|| "invalid digest: must be <algorithm>:<hex>".to_owned())?;
        let len = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            other => return Err(format!("unsupported digest algorithm {other:?}")),
        };
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if hex.len() != len || !hex.bytes().all(lower_hex) {
            return Err(format!(
                "invalid {algorithm} digest: must be {len} lowercase hex digits"
            ));
        }
        Ok(())
    }
}

impl NetworkName {
    /// A network name (`[A-Za-z0-9_.-]{1,64}`: `none`, `default`, `bridge`,
    /// `host`, a user-defined network), or a namespace-sharing mode
    /// `<mode>:<target>` such as `container:<id>` (`[A-Za-z0-9_.-]` on both
    /// sides, at most 256 bytes). Parsing says nothing about whether it is
    /// allowed: see [`crate::network::NetworkPolicy`].
    ///
    /// # Errors
    /// `FieldError` for anything else.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let plain = !value.is_empty() && value.len() <= 64 && value.chars().all(is_id_char);
        let mode = value.split_once(':').is_some_and(|(mode, target)| {
            value.len() <= 256
                && !mode.is_empty()
                && mode.chars().all(is_id_char)
                && !target.is_empty()
                && target.chars().all(is_id_char)
        });
        if !plain && !mode {
            return Err(FieldError::new(
                "network",
                "must be a network name [A-Za-z0-9_.-]{1,64} or a mode such as container:<id>",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The engine's default network (Docker's `default`).
    pub fn engine_default() -> Self {
        Self("default".to_owned())
    }

    /// The network mode `none`.
    pub fn none() -> Self {
        Self("none".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_follow_the_contract_pattern() {
        assert!(RunId::parse("abc_1.2-3").is_ok());
        assert!(RunId::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "ä", "x\u{7}", &"a".repeat(129)] {
            let err = RunId::parse(bad).unwrap_err();
            assert_eq!(err.field(), "run_id", "{bad:?}");
        }
    }

    #[test]
    fn generated_run_ids_are_valid() {
        let id = RunId::generated(u128::MAX);
        assert!(RunId::parse(id.as_str()).is_ok());
    }

    #[test]
    fn correlation_ids_refuse_control_characters() {
        assert!(CorrelationId::parse("c-1 with spaces").is_ok());
        assert!(CorrelationId::parse("c\n1").is_err());
        assert!(CorrelationId::parse("").is_err());
        assert!(CorrelationId::parse(&"c".repeat(257)).is_err());
    }

    #[test]
    fn image_refs_are_checked_syntactically() {
        assert!(ImageRef::parse("docker.io/library/alpine:3.20").is_ok());
        assert!(ImageRef::parse(&format!("alpine@sha256:{}", "ab".repeat(32))).is_ok());
        assert!(ImageRef::parse("alpine latest").is_err());
        assert!(ImageRef::parse("--privileged").is_err());
    }

    #[test]
    fn image_refs_follow_dockers_grammar() {
        let sha = "0123456789abcdef".repeat(4);
        for ok in [
            "alpine".to_owned(),
            "alpine:3.20".to_owned(),
            "library/alpine:latest".to_owned(),
            "localhost:5000/a/b_c__d-e--f.g:v1.0-rc_1".to_owned(),
            "Registry.Example.com/team/app:Tag".to_owned(),
            "[::1]:5000/app".to_owned(),
            "192.168.1.1:443/x/y".to_owned(),
            format!("app:1@sha256:{sha}"),
            format!("app@sha512:{}", "f".repeat(128)),
            format!("app@sha384:{}", "0".repeat(96)),
            "bus-test-busybox:local".to_owned(),
            format!("sha256:{sha}"),
            format!("{}:{}", "a".repeat(255), "t".repeat(128)),
        ] {
            assert!(ImageRef::parse(&ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("Alpine".to_owned(), "lowercase"),
            ("library/Alpine:1".to_owned(), "lowercase"),
            ("docker.io/Library/alpine".to_owned(), "lowercase"),
            ("alpine@sha256:abc".to_owned(), "digest"),
            (format!("alpine@sha256:{}", "A".repeat(64)), "digest"),
            (format!("alpine@md5:{}", "a".repeat(32)), "algorithm"),
            ("alpine@".to_owned(), "digest"),
            ("alpine@sha256".to_owned(), "digest"),
            ("alpine:".to_owned(), "tag"),
            ("alpine:-x".to_owned(), "tag"),
            ("alpine:.x".to_owned(), "tag"),
            (format!("alpine:{}", "t".repeat(129)), "tag"),
            ("alpine:a:b".to_owned(), "tag"),
            ("a..b".to_owned(), "component"),
            ("a/".to_owned(), "component"),
            ("/a".to_owned(), "component"),
            ("a//b".to_owned(), "component"),
            ("-a".to_owned(), "component"),
            ("a___b".to_owned(), "component"),
            ("a.-b".to_owned(), "component"),
            (":tag".to_owned(), "repository"),
            ("@sha256:x".to_owned(), "digest"),
            ("a".repeat(256), "255"),
            ("ünïcode".to_owned(), "component"),
            ("alpine\u{200b}".to_owned(), "component"),
            ("a b".to_owned(), "whitespace"),
            ("a\nb".to_owned(), "whitespace"),
            (String::new(), "empty"),
        ] {
            let err = ImageRef::parse(&bad).expect_err(&bad);
            assert_eq!(err.field(), "image");
            assert!(err.message().contains(why), "{bad:?}: {}", err.message());
        }
    }
}

/// An image's id as the engine names it (`sha256:…`): what was checked
/// present, what a run's container is created from, and what its response
/// reports. The engine gives it; it is not parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageId(String);

impl ImageId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ImageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
