//! The in-process run table: live runs by id and correlation, and a
//! bounded cache of finished runs' responses for redelivery.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use bus_docker_domain::ports::InputChunk;
use bus_docker_domain::response::Response;
use bus_docker_domain::run::{ContainerRef, RunState, RunSummary};
use bus_docker_domain::{CorrelationId, OwnerId, RunId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A run this process is responsible for right now.
pub(crate) struct LiveRun {
    pub owner: Option<OwnerId>,
    pub correlation: CorrelationId,
    pub image: String,
    pub profile: Option<String>,
    pub state: RunState,
    pub container: Option<ContainerRef>,
    pub started_at: Option<SystemTime>,
    pub cancel: CancellationToken,
    /// Feeds stdin of an interactive run until `eof`.
    pub input: Option<mpsc::Sender<InputChunk>>,
    pub interactive: bool,
}

impl LiveRun {
    pub fn summary(&self, run_id: &RunId) -> RunSummary {
        RunSummary {
            run_id: run_id.clone(),
            state: self.state,
            owner: self.owner.clone(),
            image: Some(self.image.clone()),
            profile: self.profile.clone(),
            container_id: self.container.as_ref().map(|c| c.id.clone()),
            started_at: self.started_at,
        }
    }
}

/// Responses of finished runs, so a redelivered request gets the same
/// answer again instead of a second container. Bounded by entries and by
/// bytes (a run response carries up to 2 × `max_output_bytes` of output):
/// oldest first out.
pub(crate) struct ResponseCache {
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    order: VecDeque<CorrelationId>,
    by_correlation: HashMap<CorrelationId, (RunId, Response, usize)>,
    by_run: HashMap<RunId, CorrelationId>,
}

/// What a cached response costs: its output text plus a fixed overhead.
fn weight(response: &Response) -> usize {
    let output = match &response.reply {
        Some(bus_docker_domain::response::Reply::Run(r)) => {
            r.stdout.text.len() + r.stderr.text.len()
        }
        _ => 0,
    };
    output + 1024
}

impl ResponseCache {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            order: VecDeque::new(),
            by_correlation: HashMap::new(),
            by_run: HashMap::new(),
        }
    }

    pub fn insert(&mut self, run_id: RunId, response: Response) {
        let correlation = response.correlation.clone();
        if self.by_correlation.contains_key(&correlation) {
            return;
        }
        let cost = weight(&response);
        while !self.order.is_empty()
            && (self.order.len() >= self.capacity || self.bytes + cost > self.max_bytes)
        {
            if let Some(old) = self.order.pop_front() {
                if let Some((old_run, _, old_cost)) = self.by_correlation.remove(&old) {
                    self.by_run.remove(&old_run);
                    self.bytes -= old_cost;
                }
            }
        }
        self.bytes += cost;
        self.order.push_back(correlation.clone());
        self.by_run.insert(run_id.clone(), correlation.clone());
        self.by_correlation
            .insert(correlation, (run_id, response, cost));
    }

    pub fn by_correlation(&self, correlation: &CorrelationId) -> Option<&Response> {
        self.by_correlation.get(correlation).map(|(_, r, _)| r)
    }

    /// Bytes held (output text plus overhead).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The correlation id that already used this run id.
    pub fn correlation_of(&self, run_id: &RunId) -> Option<&CorrelationId> {
        self.by_run.get(run_id)
    }
}

/// Everything the worker knows in memory. The engine stays the durable
/// record; this table only makes decisions fast and consistent in-process.
pub(crate) struct RunTable {
    pub live: HashMap<RunId, LiveRun>,
    pub by_correlation: HashMap<CorrelationId, RunId>,
    pub done: ResponseCache,
}

impl RunTable {
    pub fn new(cache: usize, cache_bytes: usize) -> Self {
        Self {
            live: HashMap::new(),
            by_correlation: HashMap::new(),
            done: ResponseCache::new(cache, cache_bytes),
        }
    }

    pub fn insert(&mut self, run_id: RunId, run: LiveRun) {
        self.by_correlation
            .insert(run.correlation.clone(), run_id.clone());
        self.live.insert(run_id, run);
    }

    pub fn remove(&mut self, run_id: &RunId) -> Option<LiveRun> {
        let run = self.live.remove(run_id)?;
        if self.by_correlation.get(&run.correlation) == Some(run_id) {
            self.by_correlation.remove(&run.correlation);
        }
        Some(run)
    }

    pub fn queued(&self) -> usize {
        self.live
            .values()
            .filter(|r| r.state == RunState::Queued)
            .count()
    }

    pub fn active(&self) -> usize {
        self.live
            .values()
            .filter(|r| matches!(r.state, RunState::Creating | RunState::Running))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus_docker_domain::response::Reply;
    use bus_docker_domain::Operation;

    fn response(c: &str) -> Response {
        Response::success(
            Operation::RunnerDelete,
            "x".into(),
            CorrelationId::parse(c).unwrap(),
            Reply::RunnerDelete {
                removed_containers: 0,
            },
        )
    }

    #[test]
    fn cache_is_bounded_and_forgets_oldest_first() {
        let mut cache = ResponseCache::new(2, usize::MAX);
        for (i, c) in ["a", "b", "c"].iter().enumerate() {
            cache.insert(RunId::parse(&format!("r{i}")).unwrap(), response(c));
        }
        assert!(cache
            .by_correlation(&CorrelationId::parse("a").unwrap())
            .is_none());
        assert!(cache
            .by_correlation(&CorrelationId::parse("c").unwrap())
            .is_some());
        assert!(cache.correlation_of(&RunId::parse("r0").unwrap()).is_none());
        assert_eq!(
            cache
                .correlation_of(&RunId::parse("r2").unwrap())
                .unwrap()
                .as_str(),
            "c"
        );
    }

    #[test]
    fn cache_is_bounded_by_bytes() {
        let mut cache = ResponseCache::new(100, 2500);
        for (i, c) in ["a", "b", "c"].iter().enumerate() {
            cache.insert(RunId::parse(&format!("r{i}")).unwrap(), response(c));
        }
        assert_eq!(
            cache.bytes(),
            2048,
            "each entry weighs 1 KiB here; the oldest went"
        );
        assert!(cache
            .by_correlation(&CorrelationId::parse("a").unwrap())
            .is_none());
        assert!(cache
            .by_correlation(&CorrelationId::parse("b").unwrap())
            .is_some());
    }
}
