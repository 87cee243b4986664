//! [`DockerEngine`]'s calls on a run's container once it exists: drive
//! (also a claimed warm one), kill, remove, the deleted and answered
//! marks, and stdin for a run another worker drives.

use std::time::Duration;

use bollard::query_parameters::RemoveContainerOptions;
use bus_docker_domain::container::{ContainerRef, RunMark};
use bus_docker_domain::ports::{InputChunk, RunIo};
use bus_docker_domain::run::Exit;
use bus_docker_domain::RuntimeError;

use super::DockerEngine;
use crate::control::{self, Killed};
use crate::drive;
use crate::error::{classify, Class, DockerError};
use crate::input::InputError;
use crate::records::{self, Marked};
use crate::warm;

impl DockerEngine {
    /// `ContainerRuntime::drive` (`drive/`), also of a claimed warm
    /// container.
    #[tracing::instrument(name = "drive", skip_all, fields(container = %container.name))]
    pub(super) async fn drive_run(
        &self,
        container: &ContainerRef,
        io: RunIo,
    ) -> Result<Exit, RuntimeError> {
        let docker = self.docker().await?;
        let settle = self.inner.conn.request_timeout();
        if let Some(claimed) = self.inner.warm.take_claimed(&container.id) {
            let died = self.inner.view.watch_exit(&container.id);
            let driven = drive::drive_claimed(&docker, &container.id, io, settle, claimed, died);
            let driven = driven.await;
            self.inner.view.unwatch_exit(&container.id);
            return match driven {
                Ok(exit) => Ok(exit),
                Err(err) => Err(self.fail(err).await),
            };
        }
        let created = self
            .inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        let warm = match created {
            Some(_) => None,
            None => self.warm_run(&docker, &container.id).await,
        };
        let claimed = warm.is_some();
        match drive::drive(&docker, &container.id, io, settle, created, warm).await {
            Ok(exit) if claimed && warm::never_ran(&exit) => Err(RuntimeError::Engine(
                "the worker that claimed this warm container stopped before handing it the \
                 command: the command never ran"
                    .to_owned(),
            )),
            Ok(exit) => Ok(exit),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::kill`.
    pub(super) async fn kill_run(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match control::kill(&docker, &container.id).await {
            Ok(Killed::Yes) => {
                tracing::info!(container = %container.name, "container killed");
                Ok(())
            }
            Ok(Killed::NotRunning | Killed::Gone) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::remove`: the container, and what this process
    /// held for it (stdin, warm state, pins, its per-run home).
    pub(super) async fn remove_container(
        &self,
        container: &ContainerRef,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        self.inner.inputs.forget(&container.id);
        self.inner.warm.forget(&container.id);
        self.inner
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&container.id);
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match docker.remove_container(&container.id, Some(options)).await {
            Ok(()) => {
                tracing::debug!(container = %container.name, "container removed");
                self.view_removed(&container.id);
                self.inner.pins.release(&container.id).await;
                self.drop_home(&docker, container).await;
                Ok(())
            }
            // Gone, or another worker is removing it right now.
            Err(source) if matches!(classify(&source), Class::NotFound | Class::Conflict) => {
                if classify(&source) == Class::NotFound {
                    self.view_removed(&container.id);
                    self.drop_home(&docker, container).await;
                }
                self.inner.pins.release(&container.id).await;
                Ok(())
            }
            Err(source) => Err(self
                .fail(DockerError::Remove {
                    id: container.id.clone(),
                    source,
                })
                .await),
        }
    }

    /// `ContainerRuntime::delete_run`: mark the run deleted, then stop it
    /// within `grace`.
    #[tracing::instrument(name = "delete_run", skip_all, fields(container = %container.name))]
    pub(super) async fn delete_and_stop(
        &self,
        container: &ContainerRef,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let deleted = async {
            match records::mark(&docker, &container.id, RunMark::Deleted).await {
                Ok(Marked::Gone) => {
                    self.view_removed(&container.id);
                    return Ok(());
                }
                Ok(Marked::Answered) => return Ok(()),
                Ok(Marked::Now { name, .. }) => {
                    self.view_renamed(&container.id, &name);
                    tracing::info!(%name, "run marked deleted");
                }
                // The mark's name is taken (a leftover of an earlier run of
                // this id): stop the run all the same; its driver then
                // reports the kill, not a cancel.
                Err(err @ DockerError::Rename { .. }) if err.class() == Class::Conflict => {
                    tracing::warn!(error = %crate::error::cause_chain(&err), "cannot mark the run deleted; stopping it unmarked");
                }
                Err(err) => return Err(err),
            }
            control::stop(&docker, &container.id, grace)
                .await
                .map(|_| ())
        };
        match deleted.await {
            Ok(()) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::mark_answered`.
    pub(super) async fn mark_run_answered(
        &self,
        container: &ContainerRef,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        match records::mark(&docker, &container.id, RunMark::Answered).await {
            Ok(Marked::Now { name, .. }) => {
                self.view_renamed(&container.id, &name);
                Ok(())
            }
            Ok(Marked::Gone) => {
                self.view_removed(&container.id);
                Ok(())
            }
            Ok(Marked::Answered) => Ok(()),
            Err(err) => Err(self.fail(err).await),
        }
    }

    /// `ContainerRuntime::write_input`: through the held attach
    /// (`input.rs`).
    #[tracing::instrument(name = "write_input", skip_all, fields(container = %container.name, bytes = chunk.data.len(), eof = chunk.eof))]
    pub(super) async fn write_stdin(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> Result<(), RuntimeError> {
        let docker = self.docker().await?;
        let limit = self.inner.conn.request_timeout();
        match self
            .inner
            .inputs
            .write(&docker, &container.id, chunk, limit)
            .await
        {
            Ok(()) => Ok(()),
            Err(InputError::NotAccepting) => {
                Err(RuntimeError::NotAcceptingInput(container.id.clone()))
            }
            Err(InputError::Engine(err)) => Err(self.fail(err).await),
        }
    }
}
