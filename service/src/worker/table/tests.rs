//! Unit tests of the run table: admission, the caches, intake.

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
        2 * (CACHE_ENTRY_OVERHEAD + "x".len()),
        "each entry weighs the overhead plus its event name here; the oldest went"
    );
    assert!(cache
        .by_correlation(&CorrelationId::parse("a").unwrap())
        .is_none());
    assert!(cache
        .by_correlation(&CorrelationId::parse("b").unwrap())
        .is_some());
}

fn live(correlation: &str, state: RunState) -> LiveRun {
    LiveRun {
        owner: None,
        correlation: CorrelationId::parse(correlation).unwrap(),
        image: "img:1".into(),
        profile: None,
        state,
        container: None,
        started_at: None,
        cancel: CancellationToken::new(),
        input: None,
        interactive: false,
    }
}

fn room() -> Capacity {
    Capacity {
        slot_free: true,
        max_queued: 1,
        stopping: false,
    }
}

fn id(s: &str) -> RunId {
    RunId::parse(s).unwrap()
}

#[test]
fn admission_registers_a_new_run() {
    let mut t = RunTable::new(8, usize::MAX);
    let got = t.admit(&id("r1"), live("c1", RunState::Queued), room());
    assert_eq!(got, Ok(Admission::Admitted));
    assert_eq!(t.queued(), 1);
    assert_eq!(
        t.by_correlation[&CorrelationId::parse("c1").unwrap()],
        id("r1")
    );
}

#[test]
fn admission_treats_the_same_request_as_a_duplicate_live_or_answered() {
    let mut t = RunTable::new(8, usize::MAX);
    t.admit(&id("r1"), live("c1", RunState::Queued), room())
        .unwrap();
    let again = t.admit(&id("r1"), live("c1", RunState::Queued), room());
    assert_eq!(again, Ok(Admission::Duplicate));
    t.remove(&id("r1"));
    t.done.insert(id("r1"), response("c1"));
    let after = t.admit(&id("r1"), live("c1", RunState::Queued), room());
    assert_eq!(
        after,
        Ok(Admission::Duplicate),
        "answered: still no second run"
    );
    assert!(t.live.is_empty());
}

#[test]
fn admission_refuses_a_run_id_used_by_another_request() {
    let mut t = RunTable::new(8, usize::MAX);
    t.admit(&id("r1"), live("c1", RunState::Queued), room())
        .unwrap();
    let live_conflict = t.admit(&id("r1"), live("c2", RunState::Queued), room());
    assert!(matches!(live_conflict, Err(OperationError::Conflict(m)) if m.contains("c1")));
    t.remove(&id("r1"));
    t.done.insert(id("r1"), response("c1"));
    let done_conflict = t.admit(&id("r1"), live("c3", RunState::Queued), room());
    assert!(matches!(done_conflict, Err(OperationError::Conflict(_))));
}

#[test]
fn admission_refuses_when_no_slot_and_the_queue_is_full() {
    let mut t = RunTable::new(8, usize::MAX);
    let busy = Capacity {
        slot_free: false,
        ..room()
    };
    t.admit(&id("r1"), live("c1", RunState::Queued), busy)
        .unwrap();
    let full = t.admit(&id("r2"), live("c2", RunState::Queued), busy);
    assert!(matches!(full, Err(OperationError::Capacity(_))), "{full:?}");
    // A free slot admits regardless of the queue.
    assert!(t
        .admit(&id("r2"), live("c2", RunState::Queued), room())
        .is_ok());
}

#[test]
fn admission_refuses_while_stopping() {
    let mut t = RunTable::new(8, usize::MAX);
    let stopping = Capacity {
        stopping: true,
        ..room()
    };
    let got = t.admit(&id("r1"), live("c1", RunState::Queued), stopping);
    assert!(matches!(got, Err(OperationError::Canceled(_))));
    assert!(t.live.is_empty());
}

#[test]
fn intake_closes_when_admitted_runs_fill_the_limit_and_opens_when_one_retires() {
    let mut t = RunTable::new(8, usize::MAX).with_intake_limit(2);
    let watch = t.intake.watch();
    t.admit(&id("r1"), live("c1", RunState::Queued), room())
        .unwrap();
    assert!(*watch.borrow(), "one of two");
    t.admit(&id("r2"), live("c2", RunState::Queued), room())
        .unwrap();
    assert!(!*watch.borrow(), "full: intake paused");
    t.remove(&id("r1"));
    assert!(*watch.borrow(), "a run retired: open again");
}

#[test]
fn set_state_records_container_and_first_start() {
    let mut t = RunTable::new(8, usize::MAX);
    t.admit(&id("r1"), live("c1", RunState::Queued), room())
        .unwrap();
    t.set_state(&id("r1"), RunState::Running, None);
    let started = t.live[&id("r1")].started_at;
    assert!(started.is_some());
    assert_eq!(t.active(), 1);
    t.set_state(&id("r1"), RunState::Running, None);
    assert_eq!(t.live[&id("r1")].started_at, started, "kept, not reset");
}

#[test]
fn only_a_running_interactive_run_with_open_stdin_accepts_input() {
    let (tx, _rx) = mpsc::channel(1);
    let mut run = live("c1", RunState::Queued);
    run.interactive = true;
    run.input = Some(tx);
    assert!(!run.accepts_input(), "queued: no stdin yet");
    run.state = RunState::Creating;
    assert!(!run.accepts_input(), "creating: no stdin yet");
    run.state = RunState::Running;
    assert!(run.accepts_input());
    run.input = None;
    assert!(!run.accepts_input(), "stdin closed by eof");
}

#[test]
fn seen_requests_drop_repeats_and_forget_oldest_first() {
    let mut seen = SeenRequests::new(2);
    let c = |s: &str| CorrelationId::parse(s).unwrap();
    assert!(seen.first_time(Operation::Status, &c("a")));
    assert!(!seen.first_time(Operation::Status, &c("a")));
    assert!(seen.first_time(Operation::Delete, &c("a")), "per operation");
    assert!(seen.first_time(Operation::Status, &c("b")));
    assert!(
        seen.first_time(Operation::Status, &c("a")),
        "forgotten after two more"
    );
}

#[test]
fn a_cached_run_weighs_its_echoed_args_too() {
    use bus_docker_domain::run::{RunReport, RunStatus, RuntimeDetails};
    let run = |args: Vec<String>| {
        let report = RunReport {
            run_id: id("r1"),
            owner: None,
            runner_name: "w".into(),
            profile: None,
            image: bus_docker_domain::ImageRef::parse("img:1").unwrap(),
            image_id: None,
            args,
            status: RunStatus::Succeeded,
            exit_code: Some(0),
            stdout: Default::default(),
            stderr: Default::default(),
            started_at: None,
            finished_at: None,
            duration: None,
            oom_killed: false,
            runtime: RuntimeDetails::default(),
            session: None,
        };
        Response::success(
            Operation::Run,
            "x".into(),
            CorrelationId::parse("c").unwrap(),
            Reply::Run(Box::new(report)),
        )
    };
    let small = weight(&run(vec!["a".into()]));
    let big = weight(&run(vec!["a".into(), "b".repeat(100_000)]));
    assert_eq!(big - small, 100_000, "a 100 kB command line is not free");
}
