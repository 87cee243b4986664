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
    /// A syntactic check only: whether the image exists is the runtime's
    /// question.
    ///
    /// # Errors
    /// `FieldError` when empty, over 512 bytes, or holding whitespace or
    /// control characters.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
        if value.is_empty()
            || value.len() > 512
            || !value.chars().all(ok_char)
            || value.starts_with(['-', '.', '/', ':', '@'])
        {
            return Err(FieldError::new(
                "image",
                "must be an image reference ([A-Za-z0-9._-/:@], at most 512 bytes)",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl NetworkName {
    /// # Errors
    /// `FieldError` unless `[A-Za-z0-9_.-]{1,64}`.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if value.is_empty() || value.len() > 64 || !value.chars().all(is_id_char) {
            return Err(FieldError::new(
                "network",
                "must match [A-Za-z0-9_.-]{1,64}",
            ));
        }
        Ok(Self(value.to_owned()))
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
        assert!(ImageRef::parse("alpine@sha256:abc").is_ok());
        assert!(ImageRef::parse("alpine latest").is_err());
        assert!(ImageRef::parse("--privileged").is_err());
    }
}
