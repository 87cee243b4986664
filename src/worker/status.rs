//! `status.request`: the runs an owner can see — this worker's live runs
//! and every managed container on the engine (runs other workers drive).

use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::request::StatusQuery;
use bus_docker_domain::response::Reply;
use bus_docker_domain::run::{RunState, RunSummary};
use bus_docker_domain::OwnerId;

use super::{visible, Answer, Worker};

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn status(&self, q: StatusQuery, stamped: Option<OwnerId>) -> Answer {
        let owner = q.owner.or(stamped);
        let mut items: Vec<RunSummary> = self
            .table()
            .live
            .iter()
            .map(|(id, run)| run.summary(id))
            .collect();
        let engine = self.inner.runtime.list_managed().await?;
        for c in engine {
            if items.iter().any(|i| i.run_id == c.run_id) {
                continue;
            }
            items.push(RunSummary {
                run_id: c.run_id,
                state: RunState::from(&c.state),
                owner: c.owner,
                image: Some(c.image),
                profile: c.profile.map(|p| p.to_string()),
                container_id: Some(c.container.id),
                started_at: c.started_at,
            });
        }
        items.retain(|i| {
            visible(owner.as_ref(), i.owner.as_ref())
                && q.run_id.as_ref().is_none_or(|r| *r == i.run_id)
        });
        items.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        Ok(Reply::Status(items))
    }
}
