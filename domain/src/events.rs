//! Operations and event names (docs/protocol.md §2).

use std::fmt;

use crate::error::FieldError;

/// The seven operations a worker answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    Status,
    Run,
    Input,
    Delete,
    RunnerStatus,
    RunnerStart,
    RunnerDelete,
}

impl Operation {
    /// Every operation, in contract order.
    pub const ALL: [Operation; 7] = [
        Self::Status,
        Self::Run,
        Self::Input,
        Self::Delete,
        Self::RunnerStatus,
        Self::RunnerStart,
        Self::RunnerDelete,
    ];

    /// The operation segment of the event name (`run`, `runner.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Run => "run",
            Self::Input => "input",
            Self::Delete => "delete",
            Self::RunnerStatus => "runner.status",
            Self::RunnerStart => "runner.start",
            Self::RunnerDelete => "runner.delete",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The event-name prefix: `bus.docker` behind the router, `bus.containers`
/// in standalone mode. Dot-separated segments of `[a-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventPrefix(String);

impl EventPrefix {
    /// The public prefix used in standalone compatibility mode.
    pub const STANDALONE: &'static str = "bus.containers";

    /// # Errors
    /// `FieldError` unless 1–128 bytes of dot-separated non-empty segments of
    /// `[a-z0-9_-]` (event names are lowercase: an Events API refuses
    /// others, so a prefix with capitals could never be served).
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        if value.len() > 128 || !value.split('.').all(segment_ok) {
            return Err(FieldError::new(
                "event_prefix",
                "must be dot-separated lowercase segments of [a-z0-9_-], e.g. bus.docker (event names are lowercase, docs/protocol.md §2)",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// The standalone prefix `bus.containers`.
    pub fn standalone() -> Self {
        Self(Self::STANDALONE.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<prefix>.<op>.request`
    pub fn request_name(&self, op: Operation) -> String {
        format!("{}.{}.request", self.0, op.as_str())
    }

    /// `<prefix>.<op>.response`
    pub fn response_name(&self, op: Operation) -> String {
        format!("{}.{}.response", self.0, op.as_str())
    }

    /// `<prefix>.run.output`: live output of a run (docs/protocol.md §2).
    pub fn output_name(&self) -> String {
        format!("{}.run.output", self.0)
    }

    /// The operation a request event name stands for, if it is one of ours.
    pub fn operation_of(&self, event_name: &str) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|op| self.request_name(*op) == event_name)
    }
}

impl Default for EventPrefix {
    fn default() -> Self {
        Self::standalone()
    }
}

impl fmt::Display for EventPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract_table() {
        let p = EventPrefix::parse("bus.docker").unwrap();
        assert_eq!(p.request_name(Operation::Run), "bus.docker.run.request");
        assert_eq!(
            p.response_name(Operation::RunnerStatus),
            "bus.docker.runner.status.response"
        );
        assert_eq!(
            p.operation_of("bus.docker.runner.delete.request"),
            Some(Operation::RunnerDelete)
        );
        assert_eq!(p.operation_of("bus.containers.run.request"), None);
        assert_eq!(EventPrefix::default().as_str(), "bus.containers");
        assert_eq!(p.output_name(), "bus.docker.run.output");
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in [
            "",
            ".",
            "bus..docker",
            "bus.docker.",
            "bus docker",
            "bus/x",
            "Bus.docker",
            "bus.Docker",
        ] {
            assert!(EventPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }
}
