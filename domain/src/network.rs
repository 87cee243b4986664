//! Which network a run joins (docs/protocol.md §4, v3).
//!
//! A run without a `network` uses its profile's network, and without one
//! the policy default: the engine's default network (Docker's `default`)
//! unless the operator says otherwise, as the Bus Go worker does, so that a
//! `codex` run reaches its API and a Git remote. A request may name
//! `none`, `default`, `bridge` or a user-defined network; whether that
//! network exists is the engine's answer. Forms that share another
//! namespace (`host`, `container:<id>`, any `<mode>:<target>`) are refused
//! unless the operator lists them. `policy.allowed_networks`, when set, is
//! the complete list.

use crate::error::{FieldError, OperationError};
use crate::ids::NetworkName;

/// What a network name means to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkKind {
    /// `none`: loopback only.
    None,
    /// `default`: the engine's default network.
    Default,
    /// `bridge`: Docker's default bridge.
    Bridge,
    /// A user-defined network, by name or id.
    User,
    /// `host`, `container:<id>` or another `<mode>:<target>`: the run
    /// would share a namespace with the host or another container.
    SharedNamespace,
}

impl NetworkName {
    /// What this name means to the engine.
    pub fn kind(&self) -> NetworkKind {
        match self.as_str() {
            "none" => NetworkKind::None,
            "default" => NetworkKind::Default,
            "bridge" => NetworkKind::Bridge,
            "host" => NetworkKind::SharedNamespace,
            n if n.contains(':') => NetworkKind::SharedNamespace,
            _ => NetworkKind::User,
        }
    }
}

/// The operator's network rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// `None`: any network that does not share a namespace.
    allowed: Option<Vec<NetworkName>>,
    default: NetworkName,
}

impl Default for NetworkPolicy {
    /// The permissive default: the engine's default network, any network
    /// that shares no namespace.
    fn default() -> Self {
        Self {
            allowed: None,
            default: NetworkName::engine_default(),
        }
    }
}

impl NetworkPolicy {
    /// The operator's narrowing: `allowed` (when set, the complete list)
    /// and `default`. Without a `default`, the first allowed network, else
    /// the engine's default network.
    ///
    /// # Errors
    /// `FieldError` naming `allowed_networks` for an empty list (no run
    /// could ever run), or `default_network` when it is not in the list.
    pub fn new(
        allowed: Option<Vec<NetworkName>>,
        default: Option<NetworkName>,
    ) -> Result<Self, FieldError> {
        let default = match (&allowed, default) {
            (Some(list), _) if list.is_empty() => {
                return Err(FieldError::new(
                    "allowed_networks",
                    "is empty, so no run could start: list at least one network, or remove \
                     the key to allow any network that shares no namespace",
                ))
            }
            (Some(list), Some(d)) if !list.contains(&d) => {
                return Err(FieldError::new(
                    "default_network",
                    format!("{d} is not in allowed_networks"),
                ))
            }
            (_, Some(d)) => d,
            (Some(list), None) => list[0].clone(),
            (None, None) => NetworkName::engine_default(),
        };
        Ok(Self { allowed, default })
    }

    /// The network of a run that names none (and whose profile names none).
    pub fn default_network(&self) -> &NetworkName {
        &self.default
    }

    /// The complete list of allowed networks, when the operator set one.
    pub fn allowed(&self) -> Option<&[NetworkName]> {
        self.allowed.as_deref()
    }

    /// Whether a request may name `network`.
    ///
    /// # Errors
    /// `Forbidden` (`network_not_allowed`) for a network outside the
    /// operator's list, or one that shares a namespace when there is no
    /// list (the default network itself is always allowed).
    pub fn check(&self, network: &NetworkName) -> Result<(), OperationError> {
        if *network == self.default {
            return Ok(());
        }
        match &self.allowed {
            Some(list) if list.contains(network) => Ok(()),
            Some(list) => Err(OperationError::forbidden(
                "network_not_allowed",
                format!(
                    "network {network} is not in the allowed networks ({})",
                    list.iter()
                        .map(NetworkName::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            None if network.kind() == NetworkKind::SharedNamespace => {
                Err(OperationError::forbidden(
                    "network_not_allowed",
                    format!(
                        "network {network} would share the host's or another container's \
                         namespace; only the operator can allow it (policy.allowed_networks)"
                    ),
                ))
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(n: &str) -> NetworkName {
        NetworkName::parse(n).unwrap()
    }

    fn rule(r: Result<(), OperationError>) -> &'static str {
        match r {
            Err(OperationError::Forbidden { rule, .. }) => rule,
            other => panic!("expected forbidden, got {other:?}"),
        }
    }

    #[test]
    fn names_and_modes_parse_and_are_classified() {
        assert_eq!(net("none").kind(), NetworkKind::None);
        assert_eq!(net("default").kind(), NetworkKind::Default);
        assert_eq!(net("bridge").kind(), NetworkKind::Bridge);
        assert_eq!(net("bus_stack-net.1").kind(), NetworkKind::User);
        assert_eq!(net("host").kind(), NetworkKind::SharedNamespace);
        assert_eq!(net("container:abc123").kind(), NetworkKind::SharedNamespace);
        assert_eq!(net("ns:x").kind(), NetworkKind::SharedNamespace);
        for bad in ["", "a b", "container:", ":x", "container:/proc/1", "a:b:c"] {
            assert_eq!(
                NetworkName::parse(bad).unwrap_err().field(),
                "network",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_permissive_default_allows_all_but_shared_namespaces() {
        let p = NetworkPolicy::default();
        assert_eq!(p.default_network().as_str(), "default");
        assert!(p.allowed().is_none());
        for ok in ["none", "default", "bridge", "bus-stack"] {
            p.check(&net(ok)).unwrap();
        }
        for shared in ["host", "container:abc", "ns:net"] {
            assert_eq!(
                rule(p.check(&net(shared))),
                "network_not_allowed",
                "{shared}"
            );
        }
    }

    #[test]
    fn the_operator_narrows_with_a_complete_list_and_a_default() {
        let p = NetworkPolicy::new(Some(vec![net("none"), net("jobs")]), None).unwrap();
        assert_eq!(p.default_network().as_str(), "none", "the first listed");
        p.check(&net("jobs")).unwrap();
        assert_eq!(rule(p.check(&net("default"))), "network_not_allowed");
        assert_eq!(rule(p.check(&net("bridge"))), "network_not_allowed");

        let p =
            NetworkPolicy::new(Some(vec![net("none"), net("jobs")]), Some(net("jobs"))).unwrap();
        assert_eq!(p.default_network().as_str(), "jobs");

        let p = NetworkPolicy::new(None, Some(net("none"))).unwrap();
        assert_eq!(p.default_network().as_str(), "none");
        p.check(&net("bus-stack")).unwrap();

        // The operator may allow a shared namespace explicitly.
        let p = NetworkPolicy::new(Some(vec![net("host")]), None).unwrap();
        p.check(&net("host")).unwrap();

        assert_eq!(
            NetworkPolicy::new(Some(vec![]), None).unwrap_err().field(),
            "allowed_networks"
        );
        assert_eq!(
            NetworkPolicy::new(Some(vec![net("none")]), Some(net("default")))
                .unwrap_err()
                .field(),
            "default_network"
        );
    }
}
