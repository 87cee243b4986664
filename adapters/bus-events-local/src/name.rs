//! Event names as the Bus Events API accepts them: dot-separated segments
//! of lowercase `[a-z0-9_-]`. The same rule holds for publishing and for
//! streaming, so a wildcard (`bus.docker.*`) or a typo (`Bus.Docker..run`)
//! is a 400 at once instead of a stream that never carries anything.

/// Longest accepted event name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// Why an event name was refused; the message goes back to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// No name at all.
    #[error("the event name is empty")]
    Empty,
    /// Longer than [`MAX_NAME_LEN`].
    #[error("the event name is longer than {MAX_NAME_LEN} bytes")]
    TooLong,
    /// A segment is empty (`a..b`, `.a`, `a.`).
    #[error(
        "the event name `{0}` has an empty segment: names are dot-separated segments of [a-z0-9_-]"
    )]
    EmptySegment(String),
    /// A character outside `[a-z0-9_-]` (wildcards and capitals included).
    #[error("the event name `{name}` contains `{ch}`: names are dot-separated segments of [a-z0-9_-] (no wildcards)")]
    Character {
        /// The name as given.
        name: String,
        /// The first character that is not allowed.
        ch: char,
    },
}

/// Checks an event name: dot-separated, non-empty segments of
/// `[a-z0-9_-]`, at most [`MAX_NAME_LEN`] bytes.
///
/// # Errors
///
/// [`InvalidName`] naming the first problem found.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong);
    }
    for segment in name.split('.') {
        if segment.is_empty() {
            return Err(InvalidName::EmptySegment(name.to_owned()));
        }
        if let Some(ch) = segment
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            return Err(InvalidName::Character {
                name: name.to_owned(),
                ch,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_names_are_valid() {
        for name in [
            "bus.docker.run.request",
            "bus.containers.runner.status.response",
            "a",
            "app_1.x-y.z9",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn wildcards_capitals_and_malformed_names_are_refused() {
        for name in [
            "",
            "bus.docker.*",
            "bus.>",
            "*",
            "Bus.docker",
            "bus..docker",
            ".bus",
            "bus.",
            "bus docker",
            "bus/docker",
            "bus.dockér",
            "bus:docker",
            &"a".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
    }
}
