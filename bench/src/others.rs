//! The containers of other owners in the status scenario, and removing
//! containers a few at a time.

use std::time::{Duration, Instant};

use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::spec::RunSpec;
use bus_docker_domain::ImageRef;
use bus_docker_engine::DockerEngine;

use crate::runs::pool;
use crate::{progress, BenchError};

/// Containers created or removed at a time while a point is set up.
const SETUP_PARALLEL: usize = 4;

/// The containers of other owners: `<tag>-other-<k>`, runner
/// `<tag>-others`, created through the adapter and started.
pub struct Others {
    pub engine: DockerEngine,
    pub docker: bollard::Docker,
    pub tag: String,
    pub image: ImageRef,
    pub reply_event: String,
    /// Every container created so far (removed at the end).
    pub ids: Vec<String>,
}

impl Others {
    fn spec(&self, k: usize) -> RunSpec {
        RunSpec::builder(&format!("{}-other-{k}", self.tag), self.image.as_str())
            .owner(&format!("{}-owner-{k}", self.tag))
            .reply_event(&self.reply_event)
            .command(&["sleep", "3600"])
            .timeout(Duration::from_secs(3600))
            .build()
    }

    /// Create and start containers until there are `n`.
    pub async fn grow_to(&mut self, n: usize) -> Result<(), BenchError> {
        let from = self.ids.len();
        if n <= from {
            return Ok(());
        }
        progress(format!(
            "status: starting containers {from}..{n} of other owners"
        ));
        let specs = (from..n).map(|k| self.spec(k)).collect::<Vec<_>>();
        let created = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let job = {
            let (engine, docker, specs) = (self.engine.clone(), self.docker.clone(), specs);
            let (specs, created, runner) = (
                std::sync::Arc::new(specs),
                std::sync::Arc::clone(&created),
                format!("{}-others", self.tag),
            );
            move |i: usize| {
                let (engine, docker, specs, created, runner) = (
                    engine.clone(),
                    docker.clone(),
                    std::sync::Arc::clone(&specs),
                    std::sync::Arc::clone(&created),
                    runner.clone(),
                );
                async move {
                    let started = Instant::now();
                    let image = engine
                        .ensure_image(&specs[i].image, specs[i].pull_policy)
                        .await
                        .map_err(|e| BenchError::new(format!("image {}: {e}", specs[i].image)))?;
                    let container = engine
                        .create(&specs[i], &runner, &image)
                        .await
                        .map_err(|e| BenchError::new(format!("create {}: {e}", specs[i].run_id)))?;
                    created
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(container.id.clone());
                    docker
                        .start_container(
                            &container.id,
                            None::<bollard::query_parameters::StartContainerOptions>,
                        )
                        .await
                        .map_err(|e| BenchError::new(format!("start {}: {e}", specs[i].run_id)))?;
                    Ok(started.elapsed())
                }
            }
        };
        let outcome = pool(SETUP_PARALLEL, n - from, job).await;
        let ids = std::mem::take(
            &mut *created
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        self.ids.extend(ids);
        outcome.map(|_| ())
    }
}

/// Force-remove `ids`, a few at a time, each tried whatever became of
/// the others; the number removed.
pub async fn remove(docker: &bollard::Docker, ids: Vec<String>) -> Result<usize, BenchError> {
    use std::sync::{Arc, Mutex, PoisonError};
    if ids.is_empty() {
        return Ok(0);
    }
    progress(format!("removing {} containers", ids.len()));
    let total = ids.len();
    let ids = Arc::new(ids);
    let failed = Arc::new(Mutex::new(Vec::new()));
    let job = {
        let (docker, ids, failed) = (docker.clone(), Arc::clone(&ids), Arc::clone(&failed));
        move |i: usize| {
            let (docker, ids, failed) = (docker.clone(), Arc::clone(&ids), Arc::clone(&failed));
            async move {
                let started = Instant::now();
                if let Err(e) = crate::engine::force_remove(&docker, &ids[i]).await {
                    failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(format!("{}: {e}", ids[i]));
                }
                Ok(started.elapsed())
            }
        }
    };
    pool(SETUP_PARALLEL * 2, total, job).await?;
    let failed = std::mem::take(&mut *failed.lock().unwrap_or_else(PoisonError::into_inner));
    match failed.first() {
        None => Ok(total),
        Some(first) => Err(BenchError::new(format!(
            "{} of {total} containers could not be removed (first: {first})",
            failed.len()
        ))),
    }
}
