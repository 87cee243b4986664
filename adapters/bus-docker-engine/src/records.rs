//! The engine as the record of runs (docs/protocol.md §5): listing the managed
//! containers with one call, reading one in full, and setting run marks.
//!
//! A listing is one `GET /containers/json` with label filters, whatever
//! the number of containers: everything it returns comes from the list
//! response (the start time, which only an inspect has, stays `None`).
//! Recovery, which needs exact start times, reads single containers with
//! [`read`].
//!
//! Marks are renames (`bus-run-<id>` → `bus-run-<id>.deleted` /
//! `.answered`). The run id comes from the worker's `bus.run-id` label,
//! read with an inspect, so a run id that itself ends in `.deleted` is
//! never mistaken for a mark.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum,
};
use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};

use crate::bodies::engine_time;
use crate::control::{inspect_raw, rename};
use crate::error::DockerError;
use crate::labels::{self, Listed};

pub(crate) fn listed_state(state: Option<ContainerSummaryStateEnum>) -> ContainerState {
    match state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING) => ContainerState::Running,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited,
        Some(other) => ContainerState::Other(other.to_string()),
        None => ContainerState::Other(String::new()),
    }
}

fn inspected_state(state: Option<ContainerStateStatusEnum>) -> ContainerState {
    match state {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited,
        Some(other) => ContainerState::Other(other.to_string()),
        None => ContainerState::Other(String::new()),
    }
}

pub(crate) fn from_summary(summary: &ContainerSummary) -> Option<ManagedContainer> {
    let empty = HashMap::new();
    let name = summary
        .names
        .as_ref()
        .and_then(|n| n.first())
        .map_or("", |n| n.trim_start_matches('/'));
    labels::managed(Listed {
        id: summary.id.as_deref()?,
        name,
        labels: summary.labels.as_ref().unwrap_or(&empty),
        image_id: summary.image_id.as_deref(),
        state: listed_state(summary.state),
        started_at: None,
        created_at: summary
            .created
            .and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        finished_at: None,
    })
}

/// The managed containers passing `filter`, from one listing.
pub(crate) async fn list(
    docker: &Docker,
    filter: &ManagedFilter,
) -> Result<Vec<ManagedContainer>, DockerError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(labels::filters(filter)),
        ..ListContainersOptions::default()
    };
    let listed = docker
        .list_containers(Some(options))
        .await
        .map_err(|source| DockerError::List { source })?;
    Ok(listed.iter().filter_map(from_summary).collect())
}

/// An inspect's `Created`: a string, or a parsed time when another crate
/// of the build turns on bollard's `time` feature (testcontainers does).
trait Stamp {
    fn system_time(&self) -> Option<SystemTime>;
}

impl Stamp for String {
    fn system_time(&self) -> Option<SystemTime> {
        engine_time(Some(self))
    }
}

impl Stamp for time::OffsetDateTime {
    fn system_time(&self) -> Option<SystemTime> {
        (self.year() >= 1970).then(|| (*self).into())
    }
}

/// The run record of an inspected container; `None` when it is not a
/// managed run.
fn from_inspect(info: &ContainerInspectResponse) -> Option<ManagedContainer> {
    let empty = HashMap::new();
    let labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .unwrap_or(&empty);
    if labels.get(labels::MANAGED_BY).map(String::as_str) != Some(labels::MANAGED_BY_VALUE) {
        return None;
    }
    let state = info.state.as_ref();
    labels::managed(Listed {
        id: info.id.as_deref()?,
        name: info.name.as_deref().unwrap_or("").trim_start_matches('/'),
        labels,
        image_id: info.image.as_deref(),
        state: inspected_state(state.and_then(|s| s.status)),
        started_at: engine_time(state.and_then(|s| s.started_at.as_deref())),
        created_at: info.created.as_ref().and_then(Stamp::system_time),
        finished_at: engine_time(state.and_then(|s| s.finished_at.as_deref())),
    })
}

/// One container read in full; `None` when it is gone or not a managed
/// run.
pub(crate) async fn read(
    docker: &Docker,
    id: &str,
) -> Result<Option<ManagedContainer>, DockerError> {
    match inspect_raw(docker, id).await {
        Ok(info) => Ok(from_inspect(&info)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// What setting a mark found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Marked {
    /// Renamed (or it already carried the mark); the mark it had before.
    Now {
        before: RunMark,
        name: String,
    },
    /// Left as it was: an answered run is not marked deleted.
    Answered,
    Gone,
}

/// Rename the run's container to carry `mark`.
pub(crate) async fn mark(docker: &Docker, id: &str, mark: RunMark) -> Result<Marked, DockerError> {
    let Some(record) = read(docker, id).await? else {
        return Ok(Marked::Gone);
    };
    if mark == RunMark::Deleted && record.mark == RunMark::Answered {
        return Ok(Marked::Answered);
    }
    let name = mark.container_name(&record.run_id);
    if record.mark != mark && !rename(docker, id, &name).await? {
        return Ok(Marked::Gone);
    }
    Ok(Marked::Now {
        before: record.mark,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(name: &str, labels: &[(&str, &str)]) -> ContainerSummary {
        ContainerSummary {
            id: Some("abc".into()),
            names: Some(vec![format!("/{name}")]),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            image_id: Some("sha256:1".into()),
            state: Some(ContainerSummaryStateEnum::EXITED),
            created: Some(1_714_557_600),
            ..ContainerSummary::default()
        }
    }

    #[test]
    fn a_listing_alone_builds_the_record() {
        let m = from_summary(&summary(
            "bus-run-r1.deleted",
            &[(labels::RUN_ID, "r1"), (labels::RUNNER, "docker@h")],
        ))
        .unwrap();
        assert_eq!(m.run_id.as_str(), "r1");
        assert_eq!(m.mark, RunMark::Deleted);
        assert_eq!(m.state, ContainerState::Exited);
        assert_eq!(m.started_at, None, "only an inspect has it");
        assert_eq!(
            m.created_at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600))
        );
        assert_eq!(m.image_id.as_deref(), Some("sha256:1"));
    }

    #[test]
    fn an_inspect_of_a_foreign_container_is_no_record() {
        let foreign = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/bus-run-r1".into()),
            ..ContainerInspectResponse::default()
        };
        assert!(from_inspect(&foreign).is_none());
    }
}
