//! `delete.request`: stop a run and remove it. A run this worker holds is
//! cancelled through its token (queued: dropped from the queue; running:
//! its driver stops the container and answers `canceled`). A run another
//! worker drives is stopped through the engine; that worker answers it.

use bus_docker_domain::container::RunMark;
use bus_docker_domain::ports::{ContainerRuntime, EventPublisher};
use bus_docker_domain::request::{acting_owner, DeleteRequest};
use bus_docker_domain::response::Reply;
use bus_docker_domain::{OperationError, OwnerId};

use super::table::Local;
use super::{Answer, Worker};

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn delete(&self, req: DeleteRequest, stamped: Option<OwnerId>) -> Answer {
        let owner = acting_owner(req.owner, stamped);
        let here = match self.table().lookup(&req.run_id, owner.as_ref()) {
            Local::Here(run) => Some((run.cancel.clone(), run.owner.clone())),
            Local::Hidden => return Err(OperationError::NotFound(req.run_id.to_string()).into()),
            Local::Elsewhere => None,
        };
        let run_owner = match here {
            Some((cancel, run_owner)) => {
                cancel.cancel();
                run_owner
            }
            None => {
                let c = self.find_in_engine(&req.run_id, owner.as_ref()).await?;
                match c.mark {
                    // Driven by another worker: marked `.deleted`, then
                    // stopped (SIGTERM, SIGKILL after the grace); that
                    // worker's drive sees the mark and answers `canceled`.
                    RunMark::Live => {
                        let grace = self.inner.settings.stop_grace;
                        self.inner.pool.delete_run(&c.container, grace).await?;
                    }
                    // Being deleted already: nothing more to do.
                    RunMark::Deleted => {}
                    // Finished and answered: delete drops its record.
                    RunMark::Answered => self.inner.pool.remove(&c.container).await?,
                }
                c.owner
            }
        };
        Ok(Reply::Delete {
            run_id: req.run_id,
            owner: owner.or(run_owner),
        })
    }
}
