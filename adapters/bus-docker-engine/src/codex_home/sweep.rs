//! What the Codex sessions on an engine use, and their sweep: sessions
//! unused for the retention, per-run homes no container uses, seed helpers
//! a worker left behind.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bollard::query_parameters::{ListContainersOptions, ListVolumesOptions};
use bollard::Docker;
use bus_docker_domain::container::{SessionUsage, SessionsSwept};

use crate::error::DockerError;
use crate::labels::{MANAGED_BY, MANAGED_BY_VALUE};

use super::seed::remove_helper;
use super::{remove_volume, HOME_ROLE, MARK_SUFFIX, SEED_OF, SESSION_OF, SESSION_ROLE, STALE_SEED};

/// One listing of the session volumes and markers on this engine.
async fn session_volumes(docker: &Docker) -> Result<Vec<bollard::models::Volume>, DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}={MANAGED_BY_VALUE}"),
            SESSION_ROLE.to_owned(),
        ],
    )]);
    docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map(|listed| listed.volumes.unwrap_or_default())
        .map_err(|source| DockerError::Volume {
            action: "listing",
            name: "(codex sessions)".to_owned(),
            source,
        })
}

fn role(volume: &bollard::models::Volume) -> Option<&str> {
    volume.labels.get(SESSION_ROLE).map(String::as_str)
}

fn created(volume: &bollard::models::Volume) -> Option<SystemTime> {
    volume.created_at.as_ref()?.system_time()
}

/// bollard's date type is a `String` or a `time::OffsetDateTime` depending
/// on which of its features the whole build unifies: read either.
trait EngineDate {
    fn system_time(&self) -> Option<SystemTime>;
}

impl EngineDate for String {
    fn system_time(&self) -> Option<SystemTime> {
        crate::bodies::engine_time(Some(self))
    }
}

impl EngineDate for time::OffsetDateTime {
    fn system_time(&self) -> Option<SystemTime> {
        Some((*self).into())
    }
}

/// How many session volumes this engine keeps. Their size is not asked:
/// only `GET /system/df` computes volume sizes, the whole engine's at
/// once, and engines before API 1.42 answer it in a form this client does
/// not read.
pub(crate) async fn usage(docker: &Docker) -> Result<SessionUsage, DockerError> {
    let volumes = session_volumes(docker).await?;
    Ok(SessionUsage {
        volumes: volumes.iter().filter(|v| role(v) == Some("data")).count(),
        bytes: None,
    })
}

/// Remove the sessions unused for `retention` (and their markers, and
/// markers whose session is gone), and seed helpers left by a worker that
/// died mid-seed.
pub(crate) async fn sweep(
    docker: &Docker,
    retention: Duration,
    now: SystemTime,
) -> Result<SessionsSwept, DockerError> {
    let volumes = session_volumes(docker).await?;
    let mut last_use: HashMap<&str, SystemTime> = HashMap::new();
    for v in volumes.iter().filter(|v| role(v) == Some("data")) {
        last_use.insert(&v.name, created(v).unwrap_or(now));
    }
    let mut orphan_marks = Vec::new();
    for mark in volumes.iter().filter(|v| role(v) == Some("mark")) {
        let of = mark.labels.get(SESSION_OF).map(String::as_str);
        match of.and_then(|of| last_use.get_mut(of)) {
            Some(used) => *used = (*used).max(created(mark).unwrap_or(now)),
            None => orphan_marks.push(mark.name.clone()),
        }
    }
    let mut swept = SessionsSwept::default();
    for (name, used) in last_use {
        let idle = now.duration_since(used).unwrap_or_default();
        if idle < retention {
            swept.kept += 1;
            continue;
        }
        if remove_volume(docker, name).await? {
            tracing::info!(
                volume = name,
                idle_secs = idle.as_secs(),
                "codex session unused past its retention: removed"
            );
            remove_volume(docker, &format!("{name}{MARK_SUFFIX}")).await?;
            swept.removed += 1;
        } else {
            swept.kept += 1;
        }
    }
    for mark in orphan_marks {
        remove_volume(docker, &mark).await?;
    }
    sweep_homes(docker).await?;
    sweep_helpers(docker, now).await;
    Ok(swept)
}

/// Remove the run homes no container uses any more (the engine refuses to
/// remove one in use, so a live run's home stays).
async fn sweep_homes(docker: &Docker) -> Result<(), DockerError> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{MANAGED_BY}={MANAGED_BY_VALUE}"),
            format!("{HOME_ROLE}=run"),
        ],
    )]);
    let homes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|source| DockerError::Volume {
            action: "listing",
            name: "(codex run homes)".to_owned(),
            source,
        })?
        .volumes
        .unwrap_or_default();
    for home in homes {
        if remove_volume(docker, &home.name).await? {
            tracing::debug!(volume = %home.name, "left-behind codex run home removed");
        }
    }
    Ok(())
}

async fn sweep_helpers(docker: &Docker, now: SystemTime) {
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![SEED_OF.to_owned()],
        )])),
        ..ListContainersOptions::default()
    };
    let Ok(helpers) = docker.list_containers(Some(options)).await else {
        return;
    };
    for helper in helpers {
        let born = helper
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        let stale = born.is_some_and(|b| now.duration_since(b).unwrap_or_default() > STALE_SEED);
        if let (true, Some(id)) = (stale, helper.id) {
            remove_helper(docker, &id).await;
        }
    }
}
