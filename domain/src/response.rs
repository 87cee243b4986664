//! Responses in domain words; the events adapter turns them into wire
//! payloads.

use crate::error::{ErrorCode, OperationError};
use crate::events::Operation;
use crate::ids::{CorrelationId, OwnerId, RunId};
use crate::run::{RunReport, RunSummary};
use crate::runner::RunnerReport;

/// What an operation produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Run(Box<RunReport>),
    Status(Vec<RunSummary>),
    Input {
        run_id: RunId,
        bytes: usize,
    },
    Delete {
        run_id: RunId,
        owner: Option<OwnerId>,
    },
    RunnerStatus(Box<RunnerReport>),
    RunnerStart(Box<RunnerReport>),
    RunnerDelete {
        removed_containers: usize,
    },
}

/// The `error` object of a failed response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl From<&OperationError> for Failure {
    fn from(err: &OperationError) -> Self {
        Self {
            code: err.code(),
            message: err.to_string(),
        }
    }
}

/// One response event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub operation: Operation,
    /// The response event name.
    pub event: String,
    pub correlation: CorrelationId,
    /// The result, or the partial result of a failure (a timed-out run
    /// still reports its output).
    pub reply: Option<Reply>,
    pub error: Option<Failure>,
}

impl Response {
    /// A finished run as `status` lists it while it is retained: `None`
    /// unless this is a run response.
    pub fn finished_summary(&self) -> Option<crate::run::RunSummary> {
        let Some(Reply::Run(report)) = &self.reply else {
            return None;
        };
        Some(crate::run::RunSummary {
            run_id: report.run_id.clone(),
            state: crate::run::RunState::Exited,
            owner: report.owner.clone(),
            image: Some(report.image.to_string()),
            profile: report.profile.as_ref().map(ToString::to_string),
            container_id: report.runtime.container_id.clone(),
            started_at: report.started_at,
            finished: Some(crate::run::Finished {
                status: Some(report.status),
                exit_code: report.exit_code,
                finished_at: report.finished_at,
            }),
        })
    }

    pub fn success(
        operation: Operation,
        event: String,
        correlation: CorrelationId,
        reply: Reply,
    ) -> Self {
        Self {
            operation,
            event,
            correlation,
            reply: Some(reply),
            error: None,
        }
    }

    pub fn failure(
        operation: Operation,
        event: String,
        correlation: CorrelationId,
        error: &OperationError,
    ) -> Self {
        Self {
            operation,
            event,
            correlation,
            reply: None,
            error: Some(error.into()),
        }
    }
}
