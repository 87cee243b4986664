//! The calls that go to one engine: the image and the create on the
//! placed engine, images on every engine, the session sweep, and calls on
//! one container routed to the engine holding it.

use std::time::Duration;

use bus_docker_domain::container::ManagedContainer;
use bus_docker_domain::container::{ContainerRef, EngineId, SessionsSwept};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, RunIo};
use bus_docker_domain::profile::PullPolicy;
use bus_docker_domain::run::Exit;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::{ImageId, ImageRef, RuntimeError};
use futures_util::future::join_all;

use super::{EnginePool, Placement};

impl<R: ContainerRuntime> EnginePool<R> {
    /// Make the image present on the placed engine; returns its id there.
    ///
    /// # Errors
    /// As [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image(
        &self,
        on: &Placement,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        let m = &self.members[on.index];
        let result = m.runtime.ensure_image(image, policy).await;
        m.note(&result);
        result
    }

    /// The runtime of `engine` (warm start parks and claims through it;
    /// the caller stamps the engine on what it returns).
    ///
    /// # Errors
    /// `Engine` for an engine outside the pool.
    pub fn runtime_on(&self, engine: &EngineId) -> Result<&R, RuntimeError> {
        self.member(engine).map(|m| &m.runtime)
    }

    /// Make the image present on `engine` under `policy`.
    ///
    /// # Errors
    /// As [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image_on(
        &self,
        engine: &EngineId,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<ImageId, RuntimeError> {
        let m = self.member(engine)?;
        let result = m.runtime.ensure_image(image, policy).await;
        m.note(&result);
        result
    }

    /// Create the run's container on the placed engine.
    ///
    /// # Errors
    /// As [`ContainerRuntime::create`].
    pub async fn create(
        &self,
        on: &Placement,
        spec: &RunSpec,
        runner: &str,
        image: &ImageId,
    ) -> Result<ContainerRef, RuntimeError> {
        let m = &self.members[on.index];
        let result = m.runtime.create(spec, runner, image).await;
        m.note(&result);
        let mut container = result?;
        container.engine = m.id.clone();
        Ok(container)
    }

    /// Make `image` present on every reachable engine (`runner.start`).
    ///
    /// # Errors
    /// The first engine's failure, as [`ContainerRuntime::ensure_image`].
    pub async fn ensure_image_everywhere(
        &self,
        image: &ImageRef,
        policy: PullPolicy,
    ) -> Result<(), RuntimeError> {
        let (ask, _) = self.askable();
        let results = join_all(ask.iter().map(|m| async {
            let result = m.runtime.ensure_image(image, policy).await;
            m.note(&result);
            result
        }))
        .await;
        results.into_iter().try_for_each(|r| r.map(drop))
    }

    /// Whether `image` is present on every reachable engine.
    pub async fn image_present_everywhere(&self, image: &ImageRef) -> bool {
        let (ask, _) = self.askable();
        let present = join_all(ask.iter().map(|m| async {
            let result = m.runtime.image_present(image).await;
            m.note(&result);
            result.unwrap_or(false)
        }))
        .await;
        present.into_iter().all(|p| p)
    }

    /// Remove the codex sessions unused for `retention` on every engine
    /// not known to be down (docs/protocol.md §6); each engine's outcome.
    pub async fn sweep_sessions(
        &self,
        retention: Duration,
    ) -> Vec<(EngineId, Result<SessionsSwept, RuntimeError>)> {
        let (ask, _) = self.askable();
        join_all(
            ask.into_iter()
                .map(|m| async move { (m.id.clone(), m.runtime.sweep_sessions(retention).await) }),
        )
        .await
    }
}

/// Calls on one container, routed to the engine holding it.
macro_rules! routed {
    ($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $out:ty) => {
        $(#[$doc])*
        ///
        /// # Errors
        /// As the [`ContainerRuntime`] method of the same name; `Engine`
        /// for a container on an engine outside the pool.
        pub async fn $name(&self, container: &ContainerRef $(, $arg: $ty)*) -> Result<$out, RuntimeError> {
            let m = self.member(&container.engine)?;
            let result = m.runtime.$name(container $(, $arg)*).await;
            m.note(&result);
            result
        }
    };
}

impl<R: ContainerRuntime> EnginePool<R> {
    routed!(
        /// Drive the container to its end on its engine.
        drive(io: RunIo) -> Exit
    );
    routed!(
        /// Kill the container.
        kill() -> ()
    );
    routed!(
        /// Remove the container.
        remove() -> ()
    );
    routed!(
        /// Mark the run deleted and stop it.
        delete_run(grace: Duration) -> ()
    );
    routed!(
        /// Mark the run answered.
        mark_answered() -> ()
    );
    routed!(
        /// Write to the stdin of a run another worker drives.
        write_input(chunk: InputChunk) -> ()
    );

    /// One container read in full, stamped with its engine.
    ///
    /// # Errors
    /// As [`ContainerRuntime::inspect_managed`].
    pub async fn inspect_managed(
        &self,
        container: &ContainerRef,
    ) -> Result<ManagedContainer, RuntimeError> {
        let m = self.member(&container.engine)?;
        let result = m.runtime.inspect_managed(container).await;
        m.note(&result);
        let mut managed = result?;
        managed.container.engine = m.id.clone();
        Ok(managed)
    }
}
