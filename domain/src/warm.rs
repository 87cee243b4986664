//! Warm start (docs/protocol.md §10): which runs a parked container can take.
//!
//! A parked container is created and started from a profile alone, before
//! any request: its image, mounts, network, hardening and log limits are
//! fixed at create. A run can claim one only when everything fixed at
//! create is what the run would have been created with; what the launcher
//! hands over at the claim (command, env, workdir, stdin, timeout, labels,
//! owner) may differ. [`fits`] is that rule, pure.

use std::time::SystemTime;

use crate::container::ContainerRef;
use crate::container::ContainerState;
use crate::ids::ProfileName;
use crate::spec::RunSpec;

/// A parked container of a warm profile, read back from the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedContainer {
    pub container: ContainerRef,
    /// The warm profile it was parked for.
    pub profile: Option<ProfileName>,
    pub runner: Option<String>,
    pub state: ContainerState,
    /// When the engine created it (for `warm_max_age`).
    pub created_at: Option<SystemTime>,
    /// This process parked it and holds its stdin, so it can claim it. A
    /// parked container of an earlier process is never claimed: it is
    /// removed (its launcher exits when that process's stdin closed).
    pub claimable: bool,
}

/// What start-up did with the parked containers an earlier process of this
/// runner left on an engine (docs/protocol.md §10).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettledParked {
    /// Claims cut off between the record and the rename, completed: runs
    /// now (`bus-run-<run_id>`), answered once by recovery.
    pub completed: Vec<ContainerRef>,
    /// Never claimed, or their run had a container already: removed,
    /// never answered.
    pub removed: usize,
}

/// One warm profile on one engine in `runner.status` (`details.warm`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WarmReport {
    pub profile: String,
    /// The engine's URL without credentials (empty for an unnamed one).
    pub docker_host: String,
    pub parked: usize,
    pub wanted: usize,
    /// Why the profile cannot be kept warm (its runs take the cold path).
    pub refused: Option<String>,
}

/// Why a run cannot take a container parked from `template` (`None`: it
/// can). The reason names the first field fixed at create that differs.
pub fn misfit(template: &RunSpec, spec: &RunSpec) -> Option<&'static str> {
    if spec.profile.is_none() || spec.profile != template.profile {
        return Some("profile");
    }
    if spec.image != template.image {
        return Some("image");
    }
    if spec.mounts != template.mounts {
        return Some("mounts");
    }
    if spec.network != template.network {
        return Some("network");
    }
    if spec.hardening != template.hardening {
        return Some("hardening");
    }
    if spec.max_output_bytes != template.max_output_bytes {
        return Some("max_output_bytes");
    }
    // A per-run Codex home (and its session volume) is a volume fixed at
    // create: such a run always takes the cold path.
    if spec.codex_home.is_some() || template.codex_home.is_some() {
        return Some("codex_home");
    }
    None
}

#[cfg(test)]
mod tests {

    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::mount::{AccessMode, ContainerPath, Mount};

    use crate::{ImageRef, NetworkName, RunId};

    fn spec() -> RunSpec {
        RunSpec::builder("r1", "img:1")
            .correlation("c")
            .reply_event("x")
            .profile("codex")
            .max_output_bytes(1024)
            .build()
    }

    #[test]
    fn what_the_launcher_hands_over_may_differ() {
        let template = spec();
        let mut run = spec();
        run.run_id = RunId::parse("r2").unwrap();
        run.command = vec!["sh".into(), "-c".into(), "echo hi".into()];
        run.env.insert("K".into(), "v".into());
        run.workdir = Some(ContainerPath::parse("workdir", "/w").unwrap());
        run.stdin = Some("in".into());
        run.interactive = true;
        run.timeout = Duration::from_secs(5);
        run.labels.insert("a".into(), "b".into());
        run.stream_output = true;
        assert_eq!(misfit(&template, &run), None);
    }

    #[test]
    fn what_is_fixed_at_create_takes_the_cold_path() {
        let template = spec();
        let mut other = spec();
        other.image = ImageRef::parse("img:2").unwrap();
        assert_eq!(misfit(&template, &other), Some("image"));
        let mut mounted = spec();
        mounted.mounts.push(Mount::operator(
            PathBuf::from("/srv"),
            ContainerPath::parse("t", "/m").unwrap(),
            AccessMode::ReadOnly,
        ));
        assert_eq!(misfit(&template, &mounted), Some("mounts"));
        let mut net = spec();
        net.network = NetworkName::parse("default").unwrap();
        assert_eq!(misfit(&template, &net), Some("network"));
        let mut plain = spec();
        plain.profile = None;
        assert_eq!(misfit(&template, &plain), Some("profile"));
        let mut capped = spec();
        capped.max_output_bytes = 10;
        assert_eq!(misfit(&template, &capped), Some("max_output_bytes"));
    }
}
