//! `input.request`: write to the stdin of a running interactive run. A run
//! this worker drives is fed through its input queue; a run another worker
//! drives is written through the engine. A queued or creating run has no
//! stdin yet: `conflict`.

use bus_docker_domain::ports::{ContainerRuntime, ContainerState, EventPublisher, InputChunk};
use bus_docker_domain::request::InputRequest;
use bus_docker_domain::response::Reply;
use bus_docker_domain::run::RunMark;
use bus_docker_domain::{OperationError, OwnerId, RunId};
use tokio::sync::mpsc;

use super::{visible, Answer, Worker, INPUT_SEND_TIMEOUT};

/// What the run table says about the run an input is for.
enum Target {
    /// Not in this process: maybe another worker drives it.
    Elsewhere,
    Hidden,
    NotInteractive,
    NotAccepting,
    Queue(mpsc::Sender<InputChunk>),
}

fn not_accepting(run_id: &RunId) -> OperationError {
    OperationError::Conflict(format!("run {run_id} is not accepting input"))
}

impl<R: ContainerRuntime, P: EventPublisher> Worker<R, P> {
    pub(super) async fn input(&self, req: InputRequest, stamped: Option<OwnerId>) -> Answer {
        let owner = req.owner.or(stamped);
        let bytes = req.data.len();
        let chunk = InputChunk {
            data: req.data.into_bytes(),
            eof: req.eof,
        };
        match self.input_target(&req.run_id, owner.as_ref()) {
            Target::Hidden => Err(OperationError::NotFound(req.run_id.to_string()).into()),
            Target::NotInteractive => Err(OperationError::Conflict(format!(
                "run {} is not interactive",
                req.run_id
            ))
            .into()),
            Target::NotAccepting => Err(not_accepting(&req.run_id).into()),
            Target::Queue(tx) => {
                let eof = chunk.eof;
                match tokio::time::timeout(INPUT_SEND_TIMEOUT, tx.send(chunk)).await {
                    Ok(Ok(())) => {
                        if eof {
                            if let Some(run) = self.table().live.get_mut(&req.run_id) {
                                run.input = None;
                            }
                        }
                        Ok(Reply::Input {
                            run_id: req.run_id,
                            bytes,
                        })
                    }
                    _ => Err(not_accepting(&req.run_id).into()),
                }
            }
            Target::Elsewhere => {
                let c = self.find_in_engine(&req.run_id, owner.as_ref()).await?;
                if !c.interactive || c.state != ContainerState::Running || c.mark != RunMark::Live {
                    return Err(not_accepting(&req.run_id).into());
                }
                self.inner.pool.write_input(&c.container, chunk).await?;
                Ok(Reply::Input {
                    run_id: req.run_id,
                    bytes,
                })
            }
        }
    }

    fn input_target(&self, run_id: &RunId, owner: Option<&OwnerId>) -> Target {
        let table = self.table();
        match table.live.get(run_id) {
            None => Target::Elsewhere,
            Some(run) if !visible(owner, run.owner.as_ref()) => Target::Hidden,
            Some(run) if !run.interactive => Target::NotInteractive,
            Some(run) => match (&run.input, run.accepts_input()) {
                (Some(tx), true) => Target::Queue(tx.clone()),
                _ => Target::NotAccepting,
            },
        }
    }
}
