//! Which scope an operation on an event name needs: the Bus rules.
//!
//! * Names under [`PROTECTED_PREFIXES`] (`bus.containers.*`, `bus.docker.*`)
//!   need a `container:*` scope chosen by the operation the name belongs
//!   to, for publishing and for listening, request and response alike:
//!   `status.*` → [`CONTAINER_READ`]; `run.*` (including the live
//!   `run.output`) and `input.*` → [`CONTAINER_RUN`]; `delete.*` →
//!   [`CONTAINER_DELETE`]; `runner.*` and anything unknown →
//!   [`CONTAINER_ADMIN`].
//! * Every other name needs [`EVENTS_SEND`] to publish and
//!   [`EVENTS_LISTEN`] to stream.

/// Publish an unprotected event.
pub const EVENTS_SEND: &str = "events:send";
/// Stream an unprotected event name.
pub const EVENTS_LISTEN: &str = "events:listen";
/// Container status requests and responses.
pub const CONTAINER_READ: &str = "container:read";
/// Container runs, their live output, and stdin input.
pub const CONTAINER_RUN: &str = "container:run";
/// Container deletion.
pub const CONTAINER_DELETE: &str = "container:delete";
/// Runner management (`runner.*`).
pub const CONTAINER_ADMIN: &str = "container:admin";

/// Event namespaces guarded by the `container:*` scopes.
pub const PROTECTED_PREFIXES: [&str; 2] = ["bus.containers.", "bus.docker."];

/// What a caller wants to do with an event name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `POST /api/v1/events`.
    Publish,
    /// `GET /api/v1/events/stream`.
    Listen,
}

/// The scope `access` to `name` needs.
pub fn required_scope(name: &str, access: Access) -> &'static str {
    let Some(rest) = PROTECTED_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
    else {
        return match access {
            Access::Publish => EVENTS_SEND,
            Access::Listen => EVENTS_LISTEN,
        };
    };
    let operation = rest.split('.').next().unwrap_or_default();
    match operation {
        "status" => CONTAINER_READ,
        "run" | "input" => CONTAINER_RUN,
        "delete" => CONTAINER_DELETE,
        _ => CONTAINER_ADMIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprotected_names_need_the_events_scopes() {
        for name in [
            "app.ping",
            "bus.dockerx.run.request",
            "bus",
            "bus.container.x",
        ] {
            assert_eq!(required_scope(name, Access::Publish), EVENTS_SEND, "{name}");
            assert_eq!(
                required_scope(name, Access::Listen),
                EVENTS_LISTEN,
                "{name}"
            );
        }
    }

    #[test]
    fn protected_names_need_the_scope_of_their_operation_both_ways() {
        let cases = [
            ("status.request", CONTAINER_READ),
            ("status.response", CONTAINER_READ),
            ("run.request", CONTAINER_RUN),
            ("run.response", CONTAINER_RUN),
            ("run.output", CONTAINER_RUN),
            ("input.request", CONTAINER_RUN),
            ("input.response", CONTAINER_RUN),
            ("delete.request", CONTAINER_DELETE),
            ("delete.response", CONTAINER_DELETE),
            ("runner.status.request", CONTAINER_ADMIN),
            ("runner.start.response", CONTAINER_ADMIN),
            ("runner.delete.request", CONTAINER_ADMIN),
            ("something.else", CONTAINER_ADMIN),
            ("", CONTAINER_ADMIN),
        ];
        for prefix in PROTECTED_PREFIXES {
            for (suffix, scope) in cases {
                let name = format!("{prefix}{suffix}");
                assert_eq!(required_scope(&name, Access::Publish), scope, "{name}");
                assert_eq!(required_scope(&name, Access::Listen), scope, "{name}");
            }
        }
    }
}
