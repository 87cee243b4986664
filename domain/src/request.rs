//! Requests in domain words, as the events adapter decodes them. Fields
//! are syntactically typed; the rules that need configuration (profiles,
//! policy) are applied by [`crate::spec::resolve`].

use std::collections::BTreeMap;

use crate::events::Operation;
use crate::ids::{CorrelationId, ImageRef, NetworkName, OwnerId, ProfileName, RunId};
use crate::mount::RequestedMount;

/// A `run.request` payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunRequest {
    pub run_id: Option<RunId>,
    pub owner: Option<OwnerId>,
    pub profile: Option<ProfileName>,
    pub image: Option<ImageRef>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<RequestedMount>,
    pub network: Option<NetworkName>,
    pub stdin: Option<String>,
    pub interactive: bool,
    pub timeout_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

/// A `status.request` payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusQuery {
    pub owner: Option<OwnerId>,
    pub run_id: Option<RunId>,
}

/// An `input.request` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRequest {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
    pub data: String,
    pub eof: bool,
}

/// A `delete.request` payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteRequest {
    pub run_id: RunId,
    pub owner: Option<OwnerId>,
}

/// One decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status(StatusQuery),
    Run(Box<RunRequest>),
    Input(InputRequest),
    Delete(DeleteRequest),
    RunnerStatus,
    RunnerStart,
    RunnerDelete,
}

impl Request {
    pub fn operation(&self) -> Operation {
        match self {
            Self::Status(_) => Operation::Status,
            Self::Run(_) => Operation::Run,
            Self::Input(_) => Operation::Input,
            Self::Delete(_) => Operation::Delete,
            Self::RunnerStatus => Operation::RunnerStatus,
            Self::RunnerStart => Operation::RunnerStart,
            Self::RunnerDelete => Operation::RunnerDelete,
        }
    }
}

/// A request as it arrived: who to answer, and what was asked (or why it
/// could not be understood).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    pub operation: Operation,
    pub correlation: CorrelationId,
    /// The owner the Events API stamped on the envelope.
    pub stamped_owner: Option<OwnerId>,
    pub request: Result<Request, crate::error::FieldError>,
}
