//! [`DockerEngine`] as the record of runs: managed listings (answered
//! from the event-fed view while it is synced, else asked of the engine)
//! and reading one managed container.

use std::sync::atomic::Ordering;

use bollard::Docker;
use bus_docker_domain::container::{ContainerRef, ManagedContainer, ManagedFilter};
use bus_docker_domain::RuntimeError;

use super::DockerEngine;
use crate::error::DockerError;
use crate::records;
use crate::warm;

impl DockerEngine {
    /// One listing asked of the engine.
    pub(super) async fn list_engine(
        &self,
        docker: &Docker,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, DockerError> {
        self.inner.list_calls.fetch_add(1, Ordering::Relaxed);
        records::list(docker, filter).await
    }

    /// `filter` answered from the container view, building it first when
    /// needed (one full listing); `None` when it cannot be built now.
    pub(super) async fn viewed(
        &self,
        docker: &Docker,
        filter: &ManagedFilter,
    ) -> Option<Vec<ManagedContainer>> {
        let every = ManagedFilter::all();
        let all = self.list_engine(docker, &every);
        self.inner.view.serve(docker, filter, all).await
    }

    /// `ContainerRuntime::list_managed`: from the view unless `fresh`;
    /// claimed warm runs also by name; a full listing sweeps the pins of
    /// runs with no container left.
    pub(super) async fn list_runs(
        &self,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        let docker = self.docker().await?;
        let viewed = if filter.fresh {
            None
        } else {
            self.viewed(&docker, filter).await
        };
        let found = match viewed {
            Some(found) => Ok(found),
            None => match (self.list_engine(&docker, filter).await, &filter.run_id) {
                // Claimed warm runs carry no `bus.run-id` label: by name.
                (Ok(mut found), Some(run_id)) => {
                    match warm::list_by_run_name(&docker, run_id.as_str(), filter.runner.as_deref())
                        .await
                    {
                        Ok(named) => {
                            for m in named {
                                if !found.iter().any(|f| f.container.id == m.container.id) {
                                    found.push(m);
                                }
                            }
                            Ok(found)
                        }
                        Err(err) => Err(err),
                    }
                }
                (other, _) => other,
            },
        };
        let found = match found {
            Ok(mut found) => {
                for m in &mut found {
                    self.fill_warm(&docker, m).await;
                }
                found.retain(|m| filter.matches(m));
                Ok(found)
            }
            Err(err) => Err(err),
        };
        match found {
            Ok(found) => {
                if filter.runner.is_none() && filter.run_id.is_none() {
                    // A full listing: pins of runs with no container left
                    // (a worker that stopped before removing them) go.
                    let existing = found.iter().map(|c| c.run_id.to_string()).collect();
                    self.inner.pins.sweep(existing).await;
                }
                Ok(found)
            }
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::inspect_managed`.
    pub(super) async fn inspect_run(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        let docker = self.docker().await?;
        match records::read(&docker, &container.id).await {
            Ok(Some(mut found)) => {
                self.fill_warm(&docker, &mut found).await;
                Ok(found)
            }
            Ok(None) => Err(RuntimeError::ContainerGone(container.id.clone())),
            Err(err) => Err(self.fail(err).await),
        }
    }
}
