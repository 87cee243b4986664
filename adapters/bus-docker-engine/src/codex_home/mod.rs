//! Per-run Codex homes and the sessions they keep (docs/protocol.md §6, v3).
//!
//! A run with a [`RunHome`] gets, all on the engine's side (the configured
//! home is a path on the Docker host, which this worker may not see):
//!
//! * `/root/.codex`: a **volume of the run's own**, [`home_volume`]
//!   (`NoCopy`: nothing of the image), removed before the create (a
//!   leftover of an earlier attempt is never reused: fresh) and after the
//!   container (`v=true` never removes a named volume, so the worker
//!   does); the sweep removes any that no container uses (a worker that
//!   stopped before removing one, a run recovered by another process);
//! * `/root/.codex/auth.json`: the configured home's own file, bound
//!   read-write (a profile mount): one token lineage for every run and
//!   the host;
//! * `/root/.codex/sessions`, when the run names a session: the **named
//!   volume** [`session_volume`] of the owner and session, created by the
//!   engine at first use and labelled as managed;
//! * the configuration seeded by a **seed step**: once the run's container
//!   is created (its volumes exist) and before it starts, a short helper
//!   container of the run's own image takes the run's mounts
//!   (`VolumesFrom`) plus the configured home read-only at [`SEED_FROM`],
//!   and copies [`CODEX_HOME_SEED`] (config, `AGENTS.md`, instructions,
//!   prompts, rules) into the home with `/bin/sh` and `cp`. The run itself
//!   never sees the configured home, so never its state, logs or sessions.
//!   The image therefore needs `/bin/sh` and `cp` (the Codex images have
//!   them); a seed that fails fails the run with the helper's stderr.
//!
//! **Last use of a session.** Volume labels are fixed at creation, and the
//! volume's contents are the run's to change, so the last use is kept as
//! an engine object only the worker touches: a marker volume
//! `<session volume>.used`, removed and created again at each use; its
//! engine-stamped `CreatedAt` is the last use. `sweep` removes a session
//! (and its marker) unused for the retention; the engine refuses to remove
//! a volume a container still mounts, so a session in use is kept.
//!
//! Layout: this file holds the names, mounts and session volumes;
//! `seed.rs` the seed step; `sweep.rs` the usage and the sweep.

mod seed;
mod sweep;

pub(crate) use seed::seed;
pub(crate) use sweep::{sweep, usage};

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{Mount as EngineMount, MountType, MountVolumeOptions, VolumeCreateRequest};
use bollard::query_parameters::RemoveVolumeOptions;
use bollard::Docker;
use bus_docker_domain::profile::{CODEX_HOME, CODEX_SESSIONS};
use bus_docker_domain::spec::{RunSpec, SessionKey};
use sha2::{Digest, Sha256};

use crate::error::{classify, Class, DockerError};
use crate::labels::{MANAGED_BY, MANAGED_BY_VALUE, OWNER, RUN_ID};

/// Where the seed step sees the configured home (read-only).
pub const SEED_FROM: &str = "/run/bus-codex-home-seed";
/// Label of every session volume and marker: `data` or `mark`.
pub const SESSION_ROLE: &str = "bus.codex-session";
/// On a marker: the session volume whose last use it records.
pub const SESSION_OF: &str = "bus.codex-session-volume";
/// Label of a per-run home volume (`run`).
pub const HOME_ROLE: &str = "bus.codex-home";
/// Label of a seed helper container: the run id it seeds.
pub const SEED_OF: &str = "bus.codex-seed-for";
/// What a marker's name adds to its session volume's.
pub const MARK_SUFFIX: &str = ".used";
/// How long a seed step may take.
pub const SEED_TIMEOUT: Duration = Duration::from_secs(120);
/// A seed helper left older than this (a worker that died mid-seed) is
/// removed by the sweep.
pub const STALE_SEED: Duration = Duration::from_secs(600);

/// The engine volume of one owner's session: a hash of both, so a request
/// cannot name or reach another owner's, and two keys cannot meet.
pub fn session_volume(key: &SessionKey) -> String {
    let mut hash = Sha256::new();
    for part in [key.owner.as_str(), key.name.as_str()] {
        // Length-prefixed: ("ab","c") and ("a","bc") differ.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    format!("bus-codex-session-{hex}")
}

/// The volume of a run's own home.
pub fn home_volume(run_id: &bus_docker_domain::RunId) -> String {
    format!("bus-codex-home-{}", run_id.as_str())
}

/// Make sure a run's home starts empty: a leftover volume of the same run
/// id (an earlier attempt) goes. One that a container uses stays: that
/// container holds the run's name, so the create fails on it anyway.
pub(crate) async fn clear_home(docker: &Docker, spec: &RunSpec) -> Result<(), DockerError> {
    if spec.codex_home.is_some() {
        remove_volume(docker, &home_volume(&spec.run_id)).await?;
    }
    Ok(())
}

/// Remove a run's home once its container is gone (`false`: still used).
pub(crate) async fn drop_home(docker: &Docker, volume: &str) -> Result<bool, DockerError> {
    remove_volume(docker, volume).await
}

/// The engine mounts a run's own home adds to its container.
pub fn mounts(spec: &RunSpec) -> Vec<EngineMount> {
    let Some(home) = &spec.codex_home else {
        return Vec::new();
    };
    let mut out = vec![EngineMount {
        typ: Some(MountType::VOLUME),
        source: Some(home_volume(&spec.run_id)),
        target: Some(CODEX_HOME.to_owned()),
        read_only: Some(false),
        volume_options: Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(HashMap::from([
                (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
                (HOME_ROLE.to_owned(), "run".to_owned()),
                (RUN_ID.to_owned(), spec.run_id.as_str().to_owned()),
            ])),
            ..MountVolumeOptions::default()
        }),
        ..EngineMount::default()
    }];
    if let Some(key) = &home.session {
        out.push(EngineMount {
            typ: Some(MountType::VOLUME),
            source: Some(session_volume(key)),
            target: Some(CODEX_SESSIONS.to_owned()),
            read_only: Some(false),
            volume_options: Some(MountVolumeOptions {
                no_copy: Some(true),
                labels: Some(session_labels(key, "data", None)),
                ..MountVolumeOptions::default()
            }),
            ..EngineMount::default()
        });
    }
    out
}

fn session_labels(key: &SessionKey, role: &str, of: Option<&str>) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (SESSION_ROLE.to_owned(), role.to_owned()),
        (OWNER.to_owned(), key.owner.as_str().to_owned()),
    ]);
    if let Some(of) = of {
        labels.insert(SESSION_OF.to_owned(), of.to_owned());
    }
    labels
}

/// Whether this engine holds the session's volume.
pub(crate) async fn has_session(docker: &Docker, key: &SessionKey) -> Result<bool, DockerError> {
    let name = session_volume(key);
    match docker.inspect_volume(&name).await {
        Ok(_) => Ok(true),
        Err(source) if classify(&source) == Class::NotFound => Ok(false),
        Err(source) => Err(DockerError::Volume {
            action: "inspecting",
            name,
            source,
        }),
    }
}

/// Record that the session is used now: its marker volume made anew (the
/// engine stamps `CreatedAt`). Before the run's container is created, so
/// a sweep in between sees it used.
pub(crate) async fn touch(docker: &Docker, key: &SessionKey) -> Result<(), DockerError> {
    let data = session_volume(key);
    let mark = format!("{data}{MARK_SUFFIX}");
    remove_volume(docker, &mark).await?;
    let request = VolumeCreateRequest {
        name: Some(mark.clone()),
        labels: Some(session_labels(key, "mark", Some(&data))),
        ..VolumeCreateRequest::default()
    };
    docker
        .create_volume(request)
        .await
        .map(|_| ())
        .map_err(|source| DockerError::Volume {
            action: "creating",
            name: mark,
            source,
        })
}

/// Remove a volume; `Ok(false)` when a container still uses it, `Ok(true)`
/// when it is gone (also when it was gone already).
pub(super) async fn remove_volume(docker: &Docker, name: &str) -> Result<bool, DockerError> {
    match docker
        .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
        .await
    {
        Ok(()) => Ok(true),
        Err(source) => match classify(&source) {
            Class::NotFound => Ok(true),
            Class::Conflict => Ok(false),
            _ => Err(DockerError::Volume {
                action: "removing",
                name: name.to_owned(),
                source,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_docker_domain::spec::RunHome;
    use bus_docker_domain::{OwnerId, SessionName};

    fn key(owner: &str, name: &str) -> SessionKey {
        SessionKey {
            owner: OwnerId::parse(owner).unwrap(),
            name: SessionName::parse(name).unwrap(),
        }
    }

    #[test]
    fn session_volumes_are_per_owner_and_session() {
        let a = session_volume(&key("alice", "s1"));
        assert!(a.starts_with("bus-codex-session-"));
        assert_eq!(a.len(), "bus-codex-session-".len() + 40);
        assert_eq!(a, session_volume(&key("alice", "s1")), "stable");
        assert_ne!(a, session_volume(&key("bob", "s1")), "another owner");
        assert_ne!(a, session_volume(&key("alice", "s2")), "another session");
        // The boundary between owner and session counts.
        assert_ne!(
            session_volume(&key("ab", "c")),
            session_volume(&key("a", "bc"))
        );
    }

    #[test]
    fn a_run_home_and_a_session_are_volumes_of_their_own() {
        let mut spec = crate::test_spec();
        assert!(mounts(&spec).is_empty());
        spec.codex_home = Some(RunHome {
            seed_from: "/h/codex".into(),
            session: Some(key("owner-1", "s1")),
        });
        let m = mounts(&spec);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target.as_deref(), Some(CODEX_HOME));
        assert_eq!(m[0].typ, Some(MountType::VOLUME));
        assert_eq!(
            m[0].source.as_deref(),
            Some("bus-codex-home-r1"),
            "the run's own"
        );
        let opts = m[0].volume_options.as_ref().unwrap();
        assert_eq!(opts.no_copy, Some(true), "nothing of the image");
        assert_eq!(m[1].target.as_deref(), Some(CODEX_SESSIONS));
        assert_eq!(
            m[1].source.as_deref(),
            Some(session_volume(&key("owner-1", "s1")).as_str())
        );
        let labels = m[1]
            .volume_options
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(labels[SESSION_ROLE], "data");
        assert_eq!(labels[MANAGED_BY], MANAGED_BY_VALUE);
    }
}
