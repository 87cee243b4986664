//! Parked containers an earlier process of this runner left behind
//! (docs/protocol.md §10, "a worker killed between claim and response").
//!
//! A parked container of an earlier process can no longer be claimed: its
//! launcher's stdin closed with that process. What happens to it depends on
//! how far a claim had got:
//!
//! * no record in its log: it was never claimed. It is removed and never
//!   answered.
//! * a record, and the name is still `bus-warm-…`: the process was killed
//!   between writing the record and the rename. The record is the request's
//!   own facts, so the claim is completed here (the rename), unless the run
//!   already has a container on this engine under any of its names (a
//!   redelivery took the cold path or another parked container first, or
//!   was answered already): then this one is removed unanswered. Completed
//!   claims are runs like any other: start-up recovery reads them back and
//!   answers them once (the launcher exits `nothing ran`, so the answer is
//!   `error`, "the command never ran").
//!
//! The rename is the arbiter as at a claim: of two processes completing the
//! same run, or a completion racing a redelivery, one name wins and the
//! loser's container is removed.

use std::collections::HashMap;

use bollard::Docker;
use bus_docker_domain::container::{ContainerRef, RunMark};
use bus_docker_domain::warm::SettledParked;
use bus_docker_domain::RunId;

use super::{list_filtered, list_parked, read_record, remove_quietly, ReadRecord, WarmState};
use crate::error::{Class, DockerError};
use crate::labels;

/// Settle the parked containers `runner` left behind on this engine (the
/// module docs); the ones this process holds or is claiming are untouched.
pub(crate) async fn settle_left_behind(
    docker: &Docker,
    state: &WarmState,
    runner: &str,
) -> Result<SettledParked, DockerError> {
    let mut settled = SettledParked::default();
    for parked in list_parked(docker, state, runner).await? {
        let c = parked.container;
        // Held or being claimed by this process (`claimable` is part of it).
        if state.is_busy(&c.id) {
            continue;
        }
        let record = match read_record(docker, &c.id).await {
            Ok(record) => record,
            Err(err) if err.class() == Class::NotFound => continue,
            Err(err) => return Err(err),
        };
        if state.is_busy(&c.id) {
            continue;
        }
        match record {
            Some(read) => match complete(docker, state, &c, read).await? {
                Some(claimed) => settled.completed.push(claimed),
                None => settled.removed += 1,
            },
            None => {
                remove_quietly(docker, &c.id).await;
                settled.removed += 1;
            }
        }
    }
    Ok(settled)
}

/// Complete the claim `read` records on `parked`: the claimed container,
/// or `None` when it was removed instead (the run has a container, or the
/// record names no valid run).
async fn complete(
    docker: &Docker,
    state: &WarmState,
    parked: &ContainerRef,
    read: ReadRecord,
) -> Result<Option<ContainerRef>, DockerError> {
    let Ok(run_id) = RunId::parse(&read.record.run_id) else {
        tracing::warn!(container = %parked.name, "a parked container's claim record names no valid run id; removed");
        remove_quietly(docker, &parked.id).await;
        return Ok(None);
    };
    let holders = containers_of_run(docker, &run_id).await?;
    if holders.contains(&parked.id) {
        // Renamed since the listing: claimed, not left behind.
        return Ok(None);
    }
    if !holders.is_empty() {
        tracing::info!(container = %parked.name, run_id = %run_id, "interrupted claim: the run has its container already; removed unanswered");
        remove_quietly(docker, &parked.id).await;
        return Ok(None);
    }
    let name = RunMark::Live.container_name(&run_id);
    match crate::control::rename(docker, &parked.id, &name).await {
        Ok(true) => {
            tracing::info!(container = %parked.name, run_id = %run_id, "completed a claim interrupted before its rename; the run is answered by recovery");
            state.remember(&parked.id, Some(read));
            Ok(Some(ContainerRef::new(parked.id.clone(), name)))
        }
        Ok(false) => Ok(None),
        Err(err) if err.class() == Class::Conflict => {
            tracing::info!(container = %parked.name, run_id = %run_id, "interrupted claim lost the name to another container of the run; removed unanswered");
            remove_quietly(docker, &parked.id).await;
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// The ids of the managed containers on this engine that hold run
/// `run_id`, under any mark and of any runner.
async fn containers_of_run(docker: &Docker, run_id: &RunId) -> Result<Vec<String>, DockerError> {
    let filters = HashMap::from([
        (
            "label".to_owned(),
            vec![format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::MANAGED_BY_VALUE
            )],
        ),
        // A pattern: narrowed to this run's exact names below.
        (
            "name".to_owned(),
            vec![format!("bus-run-{}", run_id.as_str())],
        ),
    ]);
    Ok(list_filtered(docker, filters)
        .await?
        .into_iter()
        .filter(|c| {
            c.names
                .iter()
                .flatten()
                .any(|n| RunMark::of(n.trim_start_matches('/'), run_id).is_some())
        })
        .filter_map(|c| c.id)
        .collect())
}
