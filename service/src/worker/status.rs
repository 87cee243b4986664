//! `status.request`: the runs an owner can see — this worker's live runs,
//! the runs it answered within `run_retention` (`state: exited` with their
//! outcome), and every managed container on the engine (runs other workers
//! drive, and their `.answered` tombstones) on every reachable engine of
//! the pool. One list call per engine, filtered by run id when the request
//! names one: no call per container.

use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ManagedContainer, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::request::{acting_owner, StatusQuery};
use bus_docker_domain::response::Reply;
use bus_docker_domain::run::{Finished, RunState, RunStatus, RunSummary};
use bus_docker_domain::OwnerId;
use tracing::debug;

use super::{visible, Answer, Worker};

/// A run from the engine's record alone.
fn engine_summary(c: ManagedContainer) -> RunSummary {
    let finished = match c.mark {
        RunMark::Live => None,
        RunMark::Deleted => Some(RunStatus::Canceled),
        // Another worker answered it; the list does not say how it ended.
        RunMark::Answered => None,
    };
    let exited = c.mark == RunMark::Answered;
    RunSummary {
        run_id: c.run_id,
        state: if exited {
            RunState::Exited
        } else {
            RunState::from(&c.state)
        },
        owner: c.owner,
        image: Some(c.image),
        profile: c.profile.map(|p| p.to_string()),
        container_id: Some(c.container.id),
        started_at: c.started_at.or(c.created_at),
        finished: (exited || finished.is_some()).then_some(Finished {
            status: finished,
            exit_code: None,
            finished_at: None,
        }),
    }
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn status(&self, q: StatusQuery, stamped: Option<OwnerId>) -> Answer {
        let owner = acting_owner(q.owner.clone(), stamped);
        let retention = self.inner.settings.run_retention;
        let mut items: Vec<RunSummary> = {
            let table = self.table();
            let live = table.live.iter().map(|(id, run)| run.summary(id));
            let answered = table
                .done
                .answered_within(retention)
                .filter_map(|(_, response)| response.finished_summary());
            live.chain(answered).collect()
        };
        let filter = q
            .run_id
            .clone()
            // One run: asked of the engines (one filtered call each), so
            // its state is the engine's now; every run: the event-fed view.
            .map_or_else(ManagedFilter::all, |id| ManagedFilter::run(id).fresh());
        let listing = self.inner.pool.list_managed(&filter).await?;
        for (engine, why) in &listing.unreachable {
            debug!(docker_host = %engine, error = %why, "status: engine unreachable, its runs are not listed");
        }
        for c in listing.containers {
            if !items.iter().any(|i| i.run_id == c.run_id) {
                items.push(engine_summary(c));
            }
        }
        items.retain(|i| {
            visible(owner.as_ref(), i.owner.as_ref())
                && q.run_id.as_ref().is_none_or(|r| *r == i.run_id)
        });
        items.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(Reply::Status(items))
    }
}
