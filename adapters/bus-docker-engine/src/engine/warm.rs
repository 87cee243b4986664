//! [`DockerEngine`]'s warm start calls (docs/protocol.md §10): parking,
//! listing and settling parked containers, the claim, and a claimed run's
//! facts read back from its claim record. The work itself is in
//! `crate::warm` (launcher, record, settle).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use bollard::Docker;
use bus_docker_domain::container::{ContainerRef, ManagedContainer, ManagedFilter};
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::warm::{ParkedContainer, SettledParked};
use bus_docker_domain::RuntimeError;

use super::DockerEngine;
use crate::control;
use crate::drive;
use crate::labels::{self, Listed};
use crate::warm::{self, ClaimOutcome};

#[cfg(feature = "testing")]
impl DockerEngine {
    /// Cut a claim of `parked` for `spec` off where a worker killed between
    /// the claim record and the rename would leave it (docs/protocol.md
    /// §10): the record is in the engine's log, the name is still the
    /// parked one, and the launcher's stdin is closed. Tests only.
    ///
    /// # Errors
    /// `ContainerGone` when this process does not hold `parked`; what
    /// writing the record met.
    pub async fn interrupt_claim(
        &self,
        parked: &ContainerRef,
        spec: &bus_docker_domain::spec::RunSpec,
    ) -> Result<(), RuntimeError> {
        match warm::interrupt_claim(&self.inner.warm, parked, spec).await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }
}

impl DockerEngine {
    /// `ContainerRuntime::park`.
    #[tracing::instrument(name = "park", skip_all, fields(profile = ?template.profile))]
    pub(super) async fn park_warm(
        &self,
        template: &RunSpec,
        runner: &str,
    ) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        match warm::park(&docker, &self.inner.warm, template, runner).await {
            Ok(Ok(parked)) => {
                // A claimed run's exit comes fastest from the view's event
                // stream (`exits.rs`): have it synced before any claim, off
                // the request path (building it is one listing).
                if !self.inner.view.is_synced() {
                    let _ = self.viewed(&docker, &ManagedFilter::all()).await;
                }
                Ok(parked)
            }
            Ok(Err(reason)) => Err(RuntimeError::Forbidden {
                rule: "warm",
                detail: reason,
            }),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::list_parked`.
    pub(super) async fn parked(&self, runner: &str) -> Result<Vec<ParkedContainer>, RuntimeError> {
        let docker = self.docker().await?;
        self.inner.list_calls.fetch_add(1, Ordering::Relaxed);
        match warm::list_parked(&docker, &self.inner.warm, runner).await {
            Ok(parked) => Ok(parked),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::settle_parked`.
    pub(super) async fn settle_left_behind(
        &self,
        runner: &str,
    ) -> Result<SettledParked, RuntimeError> {
        let docker = self.docker().await?;
        match warm::settle_left_behind(&docker, &self.inner.warm, runner).await {
            Ok(settled) => Ok(settled),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::claim`: the claimed run enters the view.
    #[tracing::instrument(name = "claim", skip_all, fields(run_id = %spec.run_id, parked = %parked.name))]
    pub(super) async fn claim_parked(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ContainerRef, RuntimeError> {
        let docker = self.docker().await?;
        match warm::claim(&docker, &self.inner.warm, parked, spec).await {
            ClaimOutcome::Claimed(claimed, runner) => {
                let mut record = labels::managed(Listed {
                    id: &claimed.id,
                    name: &claimed.name,
                    labels: &labels::for_run(spec, &runner, "", &HashMap::new()),
                    image_id: None,
                    state: bus_docker_domain::container::ContainerState::Running,
                    started_at: None,
                    created_at: None,
                    finished_at: None,
                });
                if let Some(record) = record.take() {
                    self.inner.view.write(&claimed.id, |entries| {
                        entries.insert(claimed.id.clone(), record);
                    });
                }
                Ok(claimed)
            }
            ClaimOutcome::NotHeld => Err(RuntimeError::ContainerGone(parked.id.clone())),
            ClaimOutcome::Spoiled(err) => {
                self.view_removed(&parked.id);
                Err(self.fail(err).await)
            }
        }
    }

    /// A claimed warm run read back without its run's facts (its labels are
    /// the profile's): fill them from its claim record, read once from the
    /// engine's log and then remembered (it never changes).
    pub(super) async fn fill_warm(&self, docker: &Docker, m: &mut ManagedContainer) {
        if m.correlation.is_some() {
            return;
        }
        let id = m.container.id.clone();
        let record = match self.inner.warm.record(&id) {
            Some(known) => known,
            None => match warm::read_record(docker, &id).await {
                // Only a record found is remembered: the engine's log can
                // trail the claim by a moment.
                Ok(Some(read)) => {
                    self.inner.warm.remember(&id, Some(read.clone()));
                    Some(read)
                }
                Ok(None) => None,
                Err(err) => {
                    tracing::debug!(container = %id, error = %err, "cannot read the claim record");
                    None
                }
            },
        };
        if let Some(record) = record {
            record.fill(m);
        }
    }

    /// The claim of a warm container, for a drive that re-attaches to it
    /// or collects it (its times count from the claim).
    pub(super) async fn warm_run(&self, docker: &Docker, id: &str) -> Option<drive::WarmRun> {
        let record = match self.inner.warm.record(id) {
            Some(known) => known,
            None => {
                let info = control::inspect_raw(docker, id).await.ok()?;
                let labels = info.config.as_ref()?.labels.as_ref()?;
                if labels.get(labels::WARM).is_none_or(String::is_empty) {
                    return None;
                }
                let read = warm::read_record(docker, id).await.ok()??;
                self.inner.warm.remember(id, Some(read.clone()));
                Some(read)
            }
        }?;
        Some(drive::WarmRun {
            claimed_at: record.claimed_at,
            record_len: record.len,
        })
    }
}
