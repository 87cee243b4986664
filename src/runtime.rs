//! The runtime chosen at start-up (`--provider`): an enum that forwards to
//! the adapter, so the worker stays generic without `dyn`.

use std::time::Duration;

use bus_docker_domain::container::{ContainerRef, EngineInfo, SessionUsage, SessionsSwept};
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};
use bus_docker_engine::DockerEngine;
use bus_docker_static::StaticRuntime;

/// `--provider docker` or `--provider static`.
#[derive(Clone)]
pub enum AnyRuntime {
    Docker(DockerEngine),
    Static(StaticRuntime),
}

macro_rules! forward {
    ($self:ident, $rt:ident => $call:expr) => {
        match $self {
            AnyRuntime::Docker($rt) => $call.await,
            AnyRuntime::Static($rt) => $call.await,
        }
    };
}

impl ContainerRuntime for AnyRuntime {
    fn provider(&self) -> &'static str {
        match self {
            Self::Docker(d) => d.provider(),
            Self::Static(s) => s.provider(),
        }
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        forward!(self, rt => rt.engine_info())
    }

    async fn image_present(&self, image: &ImageRef) -> Result<bool, RuntimeError> {
        forward!(self, rt => rt.image_present(image))
    }

    async fn ensure_image(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        forward!(self, rt => rt.ensure_image(image, policy))
    }

    async fn create(
        &self,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        forward!(self, rt => rt.create(spec, runner, image))
    }

    async fn drive(&self, container: &ContainerRef, io: RunIo) -> Result<Exit, RuntimeError> {
        forward!(self, rt => rt.drive(container, io))
    }

    async fn kill(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        forward!(self, rt => rt.kill(container))
    }

    async fn remove(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        forward!(self, rt => rt.remove(container))
    }

    async fn list_managed(
        &self,
        filter: &ManagedFilter,
    ) -> Result<Vec<ManagedContainer>, RuntimeError> {
        forward!(self, rt => rt.list_managed(filter))
    }

    async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        forward!(self, rt => rt.inspect_managed(container))
    }

    async fn delete_run(
        &self,
        container: &ContainerRef,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        forward!(self, rt => rt.delete_run(container, grace))
    }

    async fn mark_answered(&self, container: &ContainerRef) -> Result<(), RuntimeError> {
        forward!(self, rt => rt.mark_answered(container))
    }

    async fn write_input(
        &self,
        container: &ContainerRef,
        chunk: InputChunk,
    ) -> Result<(), RuntimeError> {
        forward!(self, rt => rt.write_input(container, chunk))
    }

    async fn has_session(
        &self,
        key: &bus_docker_domain::spec::SessionKey,
    ) -> Result<bool, RuntimeError> {
        forward!(self, rt => rt.has_session(key))
    }

    async fn session_usage(&self) -> Result<SessionUsage, RuntimeError> {
        forward!(self, rt => rt.session_usage())
    }

    async fn sweep_sessions(&self, retention: Duration) -> Result<SessionsSwept, RuntimeError> {
        forward!(self, rt => rt.sweep_sessions(retention))
    }

    async fn park(&self, template: &RunSpec, runner: &str) -> Result<ContainerRef, RuntimeError> {
        forward!(self, rt => rt.park(template, runner))
    }

    async fn list_parked(
        &self,
        runner: &str,
    ) -> Result<Vec<bus_docker_domain::warm::ParkedContainer>, RuntimeError> {
        forward!(self, rt => rt.list_parked(runner))
    }

    async fn settle_parked(
        &self,
        runner: &str,
    ) -> Result<bus_docker_domain::warm::SettledParked, RuntimeError> {
        forward!(self, rt => rt.settle_parked(runner))
    }

    async fn claim(
        &self,
        parked: &ContainerRef,
        spec: &RunSpec,
    ) -> Result<ContainerRef, RuntimeError> {
        forward!(self, rt => rt.claim(parked, spec))
    }
}
