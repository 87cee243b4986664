//! The status scaling figure (issue 11, item 5): how `status` latency
//! grows with the number of managed containers on the engine.
//!
//! One worker drives one run of its own (`sleep 3600`, owner
//! `<tag>-owner`). Beside it the bench creates containers of *other*
//! owners, each through the adapter's own `DockerEngine::create` (so they
//! carry exactly the labels and body of a real run, runner `<tag>-others`,
//! as if another worker on the same engine drove them) and starts them
//! (`sleep 3600`, network `none`). At each point (0, 64, 256 others by
//! default) it times, interleaved sample by sample:
//!
//! * `status.request {owner}` published → `status.response` received,
//!   through the worker (whose engine list call sees every container);
//! * the same naming the run (`{owner, run_id}`: the list is filtered by
//!   the run's label);
//! * the engine list call alone, `DockerEngine::list_managed` in this
//!   process, both ways (every managed container; one run);
//! * a listing filtered by the owner's label on the engine (raw bollard,
//!   informational: what a server-side owner filter would cost; the
//!   worker does not filter by owner on the engine).
//!
//! Every response must list exactly the owner's one run. The baseline is
//! the first point (0 others); the target is status p50 at the largest
//! point ≤ 2× the baseline.

use std::time::{Duration, Instant};

use bus_docker_domain::container::ManagedFilter;
use bus_docker_domain::ports::ContainerRuntime;
use bus_docker_domain::{EventPrefix, ImageRef, Operation, RunId};
use bus_docker_engine::{labels, DockerEngine, EngineOptions};
use bus_events_client::{CancellationToken, EventsClient, OutboundEvent};
use bus_integration_docker::caller::ResponseWaiter;
use bus_integration_docker::local::LocalBus;
use serde_json::{json, Value};

use crate::others::{remove, Others};
use crate::report::{fmt, single, Figures, Target};
use crate::stats::{round3, Samples};
use crate::{progress, Bench, BenchError};

/// The target: status p50 at the largest point over the baseline's.
pub const TARGET_RATIO: f64 = 2.0;

/// How long one status (or delete) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The figures of one point: `others` containers of other owners.
#[derive(Debug, Default)]
pub struct StatusPoint {
    /// Containers of other owners the bench created.
    pub others: usize,
    /// Managed containers the engine listed at this point (the owner's
    /// run, the others, and any other tenant's on a shared engine).
    pub listed: usize,
    /// `status.request {owner}` end to end.
    pub owner: Samples,
    /// `status.request {owner, run_id}` end to end.
    pub run: Samples,
    /// `list_managed` of every managed container (what `{owner}` costs
    /// the worker on the engine).
    pub list_all: Samples,
    /// `list_managed` filtered by the run's label.
    pub list_run: Samples,
    /// The same listing filtered by the owner's label on the engine
    /// (raw bollard; the worker lists every managed container and filters
    /// by owner itself): what a server-side owner filter would cost.
    pub list_owner: Samples,
}

impl StatusPoint {
    fn to_json(&self) -> Value {
        json!({
            "others": self.others,
            "listed": self.listed,
            "status_owner_ms": self.owner.to_json(),
            "status_run_id_ms": self.run.to_json(),
            "engine_list_all_ms": self.list_all.to_json(),
            "engine_list_run_ms": self.list_run.to_json(),
            "engine_list_owner_label_ms": self.list_owner.to_json(),
        })
    }
}

/// What the status scenario measured, points in increasing `others`.
#[derive(Debug, Default)]
pub struct StatusFigures {
    pub points: Vec<StatusPoint>,
}

/// p50 of `pick` at the last point over the first.
fn growth(points: &[StatusPoint], pick: fn(&StatusPoint) -> &Samples) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    match (pick(last).p50(), pick(first).p50()) {
        (Some(a), Some(b)) if b > 0.0 && points.len() > 1 => Some(a / b),
        _ => None,
    }
}

/// A table row: `(label, n, p50, p95, unit, note)`.
pub type Row = (
    String,
    String,
    Option<f64>,
    Option<f64>,
    &'static str,
    String,
);

impl StatusFigures {
    /// Status `{owner}` p50 at the largest point over the baseline.
    pub fn owner_growth(&self) -> Option<f64> {
        growth(&self.points, |p| &p.owner)
    }

    /// Status `{owner, run_id}` p50 at the largest point over the baseline.
    pub fn run_growth(&self) -> Option<f64> {
        growth(&self.points, |p| &p.run)
    }

    /// The engine list call's p50 at the largest point over the baseline.
    pub fn list_growth(&self) -> Option<f64> {
        growth(&self.points, |p| &p.list_all)
    }

    /// `"0 → 256"`: the counts the ratios compare.
    pub fn span(&self) -> String {
        match (self.points.first(), self.points.last()) {
            (Some(a), Some(b)) => format!("{} → {}", a.others, b.others),
            _ => "-".to_owned(),
        }
    }

    /// Latency rows per point, then the growth ratios (without targets;
    /// the report adds those).
    pub fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for p in &self.points {
            let n = p.owner.len().to_string();
            let at = format!("{} others", p.others);
            let listed = format!("engine listed {} managed", p.listed);
            for (what, s, note) in [
                ("status {owner}", &p.owner, listed.clone()),
                ("status {owner, run_id}", &p.run, String::new()),
                ("  engine list, all managed", &p.list_all, String::new()),
                ("  engine list, one run", &p.list_run, String::new()),
                (
                    "  engine list, owner label (raw)",
                    &p.list_owner,
                    "informational: not what the worker does".to_owned(),
                ),
            ] {
                let label = format!("{what}, {at}");
                rows.push((label, n.clone(), s.p50(), s.p95(), "ms", note));
            }
        }
        rows
    }

    /// Status rows: latency per point, then the growth ratios.
    pub fn table_rows(&self, targets: &[Target]) -> Vec<[String; 9]> {
        let status = self;
        let find = |name: &str| targets.iter().find(|t| t.name == name);
        let mut rows: Vec<[String; 9]> = status
            .rows()
            .into_iter()
            .map(|(label, n, p50, p95, unit, note)| {
                let mut row = single(&label, &n, p50, unit, None, &note);
                row[3] = fmt(p95);
                row
            })
            .collect();
        let span = status.span();
        for (label, value, target) in [
            (
                "status {owner} p50 growth",
                status.owner_growth(),
                find(crate::report::STATUS_OWNER),
            ),
            (
                "status {owner, run_id} p50 growth",
                status.run_growth(),
                find(crate::report::STATUS_RUN),
            ),
            (
                "engine list (all managed) p50 growth",
                status.list_growth(),
                None,
            ),
        ] {
            let note = if target.is_some() {
                format!("others {span}")
            } else {
                format!("others {span}; informational")
            };
            rows.push(single(label, "", value, "×", target, &note));
        }
        rows
    }

    pub fn to_json(&self) -> Value {
        json!({
            "points": self.points.iter().map(StatusPoint::to_json).collect::<Vec<_>>(),
            "span": self.span(),
            "status_owner_p50_growth": round3(self.owner_growth()),
            "status_run_id_p50_growth": round3(self.run_growth()),
            "engine_list_all_p50_growth": round3(self.list_growth()),
            "target_growth_at_most": TARGET_RATIO,
        })
    }
}

/// Publishes `status.request`s and waits for their responses.
struct StatusCaller {
    client: EventsClient,
    prefix: EventPrefix,
    waiter: ResponseWaiter,
    cancel: CancellationToken,
    tag: String,
    sent: usize,
}

impl StatusCaller {
    async fn open(bus: &LocalBus, prefix: &EventPrefix, tag: &str) -> Result<Self, BenchError> {
        let client = bus.client().map_err(|e| BenchError::new(e.to_string()))?;
        let waiter = ResponseWaiter::open(&client, prefix, Operation::Status, REQUEST_TIMEOUT)
            .await
            .map_err(|e| BenchError::new(e.to_string()))?;
        Ok(Self {
            client,
            prefix: prefix.clone(),
            waiter,
            cancel: CancellationToken::new(),
            tag: tag.to_owned(),
            sent: 0,
        })
    }

    /// One status request: its end-to-end time and the response.
    async fn ask(&mut self, payload: Value) -> Result<(Duration, Value), BenchError> {
        self.sent += 1;
        let correlation = format!("{}-status-{}", self.tag, self.sent);
        let event = OutboundEvent {
            name: self.prefix.request_name(Operation::Status),
            correlation_id: correlation.clone(),
            payload,
            error: None,
        };
        let started = Instant::now();
        self.client
            .publish(&event, &self.cancel)
            .await
            .map_err(|e| BenchError::new(format!("publish status.request: {e}")))?;
        let response = self
            .waiter
            .wait(&correlation, REQUEST_TIMEOUT)
            .await
            .map_err(|e| BenchError::new(format!("status {correlation}: {e}")))?;
        Ok((started.elapsed(), response))
    }
}

/// The one run a status response must list: `(run_id, state)`.
fn only_run(response: &Value) -> Result<(&str, &str), BenchError> {
    match response["items"].as_array().map(Vec::as_slice) {
        Some([item]) => Ok((
            item["id"].as_str().unwrap_or_default(),
            item["state"].as_str().unwrap_or_default(),
        )),
        _ => Err(BenchError::new(format!(
            "status.response should list exactly the owner's one run: {response}"
        ))),
    }
}

/// What one point measures: the owner's run and the two callers.
struct Probe<'a> {
    engine: &'a DockerEngine,
    docker: &'a bollard::Docker,
    status: StatusCaller,
    owner: String,
    run_id: RunId,
}

impl Probe<'_> {
    async fn status(&mut self, with_run: bool) -> Result<Duration, BenchError> {
        let payload = if with_run {
            json!({"owner_identity_id": self.owner, "run_id": self.run_id.as_str()})
        } else {
            json!({"owner_identity_id": self.owner})
        };
        let (elapsed, response) = self.status.ask(payload).await?;
        let (id, _) = only_run(&response)?;
        if id != self.run_id.as_str() {
            return Err(BenchError::new(format!(
                "status.response lists {id}, not the owner's run {}",
                self.run_id
            )));
        }
        Ok(elapsed)
    }

    /// One `list_managed`: its time and how many containers it listed.
    async fn list(&self, filter: &ManagedFilter) -> Result<(Duration, usize), BenchError> {
        let started = Instant::now();
        let listed = self
            .engine
            .list_managed(filter)
            .await
            .map_err(|e| BenchError::new(format!("engine list: {e}")))?;
        Ok((started.elapsed(), listed.len()))
    }

    /// The managed containers of the owner, filtered by the engine.
    async fn list_owner(&self) -> Result<Duration, BenchError> {
        let labels = vec![
            format!("{}={}", labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
            format!("{}={}", labels::OWNER, self.owner),
        ];
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_owned(),
                labels,
            )])),
            ..Default::default()
        };
        let started = Instant::now();
        let listed = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| BenchError::new(format!("engine list by owner: {e}")))?;
        if listed.len() != 1 {
            return Err(BenchError::new(format!(
                "the engine listed {} containers of owner {}, expected 1",
                listed.len(),
                self.owner
            )));
        }
        Ok(started.elapsed())
    }

    /// Warm-up, then `samples` rounds of the five calls, interleaved.
    async fn point(
        &mut self,
        others: usize,
        warmup: usize,
        samples: usize,
    ) -> Result<StatusPoint, BenchError> {
        let (all, one) = (
            ManagedFilter::all(),
            ManagedFilter::run(self.run_id.clone()),
        );
        let mut point = StatusPoint {
            others,
            ..StatusPoint::default()
        };
        for i in 0..warmup + samples {
            let owner = self.status(false).await?;
            let run = self.status(true).await?;
            let (list_all, listed) = self.list(&all).await?;
            let (list_run, _) = self.list(&one).await?;
            let list_owner = self.list_owner().await?;
            if listed < others + 1 {
                return Err(BenchError::new(format!(
                    "the engine listed {listed} managed containers, expected at least {}",
                    others + 1
                )));
            }
            if i >= warmup {
                point.owner.push(owner);
                point.run.push(run);
                point.list_all.push(list_all);
                point.list_run.push(list_run);
                point.list_owner.push(list_owner);
                point.listed = point.listed.max(listed);
            }
        }
        Ok(point)
    }
}

/// The status scaling scenario; containers are removed whatever happens.
pub async fn scenario(bench: &Bench, figures: &mut Figures) -> Result<(), BenchError> {
    let mut counts = bench.args.status_containers.clone();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() {
        return Ok(());
    }
    progress(format!(
        "status: {} warm-up + {} samples at {counts:?} containers of other owners",
        bench.args.warmup, bench.args.status_samples
    ));
    let engine = DockerEngine::connect(EngineOptions::default())
        .map_err(|e| BenchError::new(format!("docker engine adapter: {e}")))?;
    let (mut worker, mut caller) = bench.worker("status", 2).await?;
    worker
        .wait_stream(&bench.bus, caller.prefix(), Operation::Status)
        .await?;
    let mut others = Others {
        engine: engine.clone(),
        docker: bench.docker.clone(),
        tag: bench.tag.clone(),
        image: ImageRef::parse(&bench.args.image).map_err(|e| BenchError::new(e.to_string()))?,
        reply_event: caller.prefix().response_name(Operation::Run),
        ids: Vec::new(),
    };
    let outcome = measure(bench, &engine, &mut caller, &mut others, &counts).await;
    let removed = remove(&bench.docker, std::mem::take(&mut others.ids)).await;
    let stopped = worker.stop().await;
    figures.status = Some(outcome?);
    removed?;
    stopped
}

async fn measure(
    bench: &Bench,
    engine: &DockerEngine,
    caller: &mut crate::worker::Caller,
    others: &mut Others,
    counts: &[usize],
) -> Result<StatusFigures, BenchError> {
    let owner = format!("{}-owner", bench.tag);
    let run_id = bench.run_id("status-own", 0);
    let payload = json!({"run_id": run_id, "image": bench.args.image, "command": ["sleep", "3600"],
                         "network": "none", "owner_identity_id": owner});
    caller.publish_payload(&run_id, payload).await?;
    let mut probe = Probe {
        engine,
        docker: &bench.docker,
        status: StatusCaller::open(&bench.bus, caller.prefix(), &bench.tag).await?,
        owner: owner.clone(),
        run_id: RunId::parse(&run_id).map_err(|e| BenchError::new(e.to_string()))?,
    };
    wait_running(&mut probe).await?;
    let mut figures = StatusFigures::default();
    let measured = async {
        for &n in counts {
            others.grow_to(n).await?;
            progress(format!(
                "status: measuring with {n} containers of other owners"
            ));
            let point = probe
                .point(n, bench.args.warmup, bench.args.status_samples)
                .await?;
            figures.points.push(point);
        }
        Ok::<(), BenchError>(())
    }
    .await;
    // End the owner's run the way a caller would, whatever happened.
    let deleted = bus_integration_docker::caller::request(
        &bench
            .bus
            .client()
            .map_err(|e| BenchError::new(e.to_string()))?,
        caller.prefix(),
        Operation::Delete,
        json!({"run_id": run_id, "owner_identity_id": owner}),
        REQUEST_TIMEOUT,
    )
    .await
    .map_err(|e| BenchError::new(format!("delete.request for {run_id}: {e}")));
    measured?;
    deleted?;
    let response = caller.wait(&run_id).await?;
    if response["status"] != "canceled" {
        return Err(BenchError::new(format!(
            "the owner's run should end canceled after delete: {response}"
        )));
    }
    // Its container stays as a tombstone for `run_retention`: remove it.
    let left = engine
        .list_managed(&ManagedFilter::run(probe.run_id.clone()))
        .await
        .map_err(|e| BenchError::new(format!("engine list: {e}")))?;
    others.ids.extend(left.into_iter().map(|c| c.container.id));
    Ok(figures)
}

/// Until the owner's run is `running` (its container started).
async fn wait_running(probe: &mut Probe<'_>) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let payload = json!({"owner_identity_id": probe.owner, "run_id": probe.run_id.as_str()});
        let (_, response) = probe.status.ask(payload).await?;
        if let Ok((_, "running")) = only_run(&response) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::new(format!(
                "the owner's run did not reach running within 60s: {response}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(others: usize, owner_ms: &[f64]) -> StatusPoint {
        let mut p = StatusPoint {
            others,
            ..StatusPoint::default()
        };
        for ms in owner_ms {
            p.owner.push_ms(*ms);
        }
        p
    }

    #[test]
    fn growth_compares_the_last_point_with_the_first() {
        let figures = StatusFigures {
            points: vec![
                point(0, &[2.0, 3.0, 4.0]),
                point(64, &[4.0, 5.0, 6.0]),
                point(256, &[5.0, 7.5, 9.0]),
            ],
        };
        assert_eq!(figures.owner_growth(), Some(2.5));
        assert_eq!(figures.span(), "0 → 256");
        assert_eq!(figures.run_growth(), None, "no samples, no ratio");
    }

    #[test]
    fn one_point_has_no_growth() {
        let figures = StatusFigures {
            points: vec![point(0, &[2.0])],
        };
        assert_eq!(figures.owner_growth(), None);
    }

    #[test]
    fn a_response_must_list_exactly_one_run() {
        let one = json!({"items": [{"id": "r1", "state": "running"}]});
        assert_eq!(only_run(&one).unwrap(), ("r1", "running"));
        let two = json!({"items": [{"id": "r1"}, {"id": "r2"}]});
        assert!(only_run(&two).is_err());
        assert!(only_run(&json!({"items": []})).is_err());
        assert!(only_run(&json!({"error": "x"})).is_err());
    }
}
