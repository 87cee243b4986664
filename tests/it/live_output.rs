//! Live output (`stream_output: true`, docs/protocol.md §2/§4).
//!
//! * With the static runtime on the in-memory bus and a paused clock: seq,
//!   coalescing, pacing, and every output event before the response.
//! * Against the real engine through the Events API: output events add up
//!   to the run's output, before its response; a fast writer gets at most
//!   64 KiB per event at a bounded rate and stops with a note; UTF-8
//!   characters cut between writes arrive whole; no events unless asked.

use crate::common;

use std::time::Duration;

use bus_docker_domain::request::Inbound;
use bus_docker_domain::request::{InputRequest, Request, RunRequest};
use bus_docker_domain::response::Reply;
use bus_docker_domain::{CorrelationId, ImageRef, Operation, RunId};
use bus_docker_events::memory::PublishedOutput;
use bus_docker_static::StaticRuntime;
use bus_integration_docker::caller::{correlation_id, ResponseWaiter};
use bus_integration_docker::local::LocalBus;
use common::{docker_settings, require_engine, spawn_worker, test_image, unique, Caller, WAIT};
use serde_json::{json, Value};

fn inbound(correlation: &str, request: Request) -> Inbound {
    Inbound {
        operation: match request {
            Request::Input(_) => Operation::Input,
            _ => Operation::Run,
        },
        correlation: CorrelationId::parse(correlation).unwrap(),
        stamped_owner: None,
        request: Ok(request),
    }
}

fn cat_run(run_id: &str, stream_output: bool) -> Request {
    Request::Run(Box::new(RunRequest {
        run_id: Some(RunId::parse(run_id).unwrap()),
        image: Some(ImageRef::parse("img:1").unwrap()),
        command: Some(vec!["cat".into()]),
        interactive: true,
        stream_output,
        ..RunRequest::default()
    }))
}

fn input(run_id: &str, data: &str, eof: bool) -> Request {
    Request::Input(InputRequest {
        run_id: RunId::parse(run_id).unwrap(),
        owner: None,
        data: data.to_owned(),
        eof,
    })
}

fn of_run<'a>(outputs: &'a [PublishedOutput], correlation: &str) -> Vec<&'a PublishedOutput> {
    outputs
        .iter()
        .filter(|o| o.output.correlation.as_str() == correlation)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn output_is_coalesced_paced_numbered_and_precedes_the_response() {
    let s = common::settings("provider = \"static\"\n");
    let runtime = StaticRuntime::new();
    let (bus, stop, handle) = common::spawn_memory_worker(&s, &runtime);
    bus.send(inbound("live", cat_run("live-1", true)));
    bus.send(inbound("quiet", cat_run("quiet-1", false)));
    // Input goes to running runs: wait until both run.
    common::wait_started(&bus, &runtime, 2).await;
    // Two writes inside one tick: one event. The 20 ms between them (on the
    // paused clock) is the scenario: less than the 100 ms output tick.
    bus.send(inbound("i1", input("live-1", "hello ", false)));
    bus.send(inbound("q1", input("quiet-1", "unseen\n", true)));
    tokio::time::sleep(Duration::from_millis(20)).await;
    bus.send(inbound("i2", input("live-1", "snow ☃\n", false)));
    // The first event is out (the signal) before the big write comes.
    common::eventually("the first live output event", WAIT, || async {
        (!of_run(&bus.outputs(), "live").is_empty()).then_some(())
    })
    .await;
    // 200 KiB at once: at most 64 KiB per event, one event per 100 ms.
    let big = "x".repeat(200 * 1024);
    bus.send(inbound("i3", input("live-1", &big, true)));
    let published = bus
        .wait_for(|r| r.iter().filter(|r| r.operation == Operation::Run).count() == 2)
        .await;
    let response = published
        .iter()
        .find(|r| r.correlation.as_str() == "live")
        .unwrap();
    let Some(Reply::Run(report)) = &response.reply else {
        panic!("not a run reply: {response:?}");
    };
    let outputs = bus.outputs();
    assert!(
        of_run(&outputs, "quiet").is_empty(),
        "no events unless asked"
    );
    let live = of_run(&outputs, "live");
    let seqs: Vec<u64> = live.iter().map(|o| o.output.seq).collect();
    assert_eq!(seqs, (0..live.len() as u64).collect::<Vec<_>>());
    assert_eq!(live[0].output.data, "hello snow ☃\n", "coalesced");
    assert!(live.iter().all(|o| o.output.data.len() <= 64 * 1024));
    assert_eq!(live.len(), 1 + 4, "200 KiB in 64 KiB events");
    for pair in live.windows(2) {
        let gap = pair[1].published_at - pair[0].published_at;
        assert!(gap >= Duration::from_millis(100), "paced: {gap:?}");
    }
    let joined: String = live.iter().map(|o| o.output.data.as_str()).collect();
    assert_eq!(joined, report.stdout.text);
    assert_eq!(joined.len(), "hello snow ☃\n".len() + big.len());
    // Responses are counted by the bus: inputs answered, the quiet run
    // maybe; the live run's own response never.
    let run_index = published
        .iter()
        .position(|r| r.correlation.as_str() == "live")
        .unwrap();
    assert!(live.iter().all(|o| o.responses_before <= run_index));
    assert!(live
        .iter()
        .all(|o| o.output.event == "bus.containers.run.output"));
    stop.cancel();
    handle.await.unwrap().unwrap();
}

/// Publish a run asking for live output; collect its output events and
/// its response in the order they arrive.
async fn run_streaming(caller: &Caller, command: Value) -> (Vec<Value>, Value) {
    let output_name = caller.prefix.output_name();
    let mut outputs = ResponseWaiter::open_name(&caller.client, &output_name, WAIT)
        .await
        .unwrap();
    let mut responses = caller.waiter(Operation::Run).await;
    let correlation = correlation_id();
    caller
        .publish_as(
            Operation::Run,
            &correlation,
            json!({"image": test_image(), "command": command, "stream_output": true}),
        )
        .await;
    let response = responses.wait(&correlation, WAIT).await.unwrap();
    // Every output event was accepted by the Events API before the
    // response was published: they are all on the output stream already.
    let mut events = Vec::new();
    while let Some((c, payload)) = outputs.next_any(Duration::from_secs(2)).await.unwrap() {
        if c == correlation {
            events.push(payload);
        }
    }
    (events, response)
}

fn joined(events: &[Value], stream: &str) -> String {
    events
        .iter()
        .filter(|e| e["stream"] == stream)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

fn assert_numbered(events: &[Value]) {
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..events.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_output_events_add_up_to_the_output() {
    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let s = docker_settings(&unique("live"), "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    // A snowman (e2 98 83) and an emoji cut across writes and pauses.
    let script = "printf 'a\\342\\230'; sleep 0.3; printf '\\203b\\n'; echo err >&2; \
                  printf '\\360\\237'; sleep 0.2; printf '\\230\\200\\n'; printf 'bad\\377\\n'";
    let (events, r) = run_streaming(&caller, json!(["sh", "-c", script])).await;
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_numbered(&events);
    assert!(events.len() >= 2, "output came in more than one event");
    assert_eq!(joined(&events, "stdout"), r["stdout"].as_str().unwrap());
    assert_eq!(joined(&events, "stdout"), "a☃b\n😀\nbad\u{fffd}\n");
    assert_eq!(joined(&events, "stderr"), "err\n");
    assert!(events.iter().all(|e| e["run_id"] == r["run_id"]));

    // Without the flag: no output events.
    let mut outputs =
        ResponseWaiter::open_name(&caller.client, &s.worker.prefix.output_name(), WAIT)
            .await
            .unwrap();
    let mut responses = caller.waiter(Operation::Run).await;
    let quiet = caller
        .publish(
            Operation::Run,
            json!({"image": test_image(), "command": ["sh", "-c", "echo quiet"]}),
        )
        .await;
    let plain = responses.wait(&quiet, WAIT).await.unwrap();
    assert_eq!(plain["stdout"], "quiet\n");
    while let Some((c, event)) = outputs.next_any(Duration::from_secs(1)).await.unwrap() {
        assert_ne!(c, quiet, "no events unless asked: {event}");
    }
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_writer_gets_bounded_events_and_a_note() {
    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let s = docker_settings(&unique("livefast"), "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let started = std::time::Instant::now();
    let (events, r) = run_streaming(
        &caller,
        json!(["sh", "-c", "yes 0123456789abcdef | head -c 20000000"]),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(r["stdout_bytes"], 20_000_000u64);
    assert_numbered(&events);
    assert!(events
        .iter()
        .all(|e| e["data"].as_str().unwrap().len() <= 64 * 1024));
    // The stream is an exact prefix of the output, then a note.
    let last = events.last().expect("events");
    assert_eq!(last["truncated"], true, "{last}");
    assert!(last["note"]
        .as_str()
        .unwrap()
        .contains("live output stopped"));
    let streamed = joined(&events, "stdout");
    // What was taken: at most the backlog (max_output_bytes) beyond what
    // had been published when the stop came.
    let bound = 1024 * 1024 + events.len() * 64 * 1024;
    assert!(
        streamed.len() >= 64 * 1024 && streamed.len() <= bound,
        "{} bytes streamed in {} events",
        streamed.len(),
        events.len()
    );
    let pattern = "0123456789abcdef\n".repeat(streamed.len() / 17 + 1);
    assert!(pattern.starts_with(&streamed), "an exact prefix");
    // Paced: about 10 events per second over the run.
    let per_second = events.len() as f64 / elapsed.as_secs_f64();
    assert!(per_second <= 12.0, "{} events in {elapsed:?}", events.len());
    // The container is not held back: 20 MB with live output stays quick,
    // and the response waits at most for the backlog (1 MiB at 640 KiB/s).
    let duration_ms = r["duration_ms"].as_u64().unwrap();
    assert!(duration_ms < 10_000, "run took {duration_ms} ms");
    assert!(
        elapsed < Duration::from_secs(20),
        "answered after {elapsed:?}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_run_keeps_streaming_with_a_higher_seq() {
    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let s = docker_settings(&unique("liverec"), "");
    let first = spawn_worker(&bus, &s, "w1").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut outputs =
        ResponseWaiter::open_name(&caller.client, &s.worker.prefix.output_name(), WAIT)
            .await
            .unwrap();
    let mut responses = caller.waiter(Operation::Run).await;
    // Outlives the first worker's 5 s shutdown grace.
    let script = "echo before; sleep 7; echo after";
    let correlation = caller
        .publish(
            Operation::Run,
            json!({"image": test_image(), "command": ["sh", "-c", script], "stream_output": true}),
        )
        .await;
    let (c, early) = outputs.next_any(WAIT).await.unwrap().expect("first output");
    assert_eq!(
        (c.as_str(), early["seq"].as_u64()),
        (correlation.as_str(), Some(0))
    );
    assert_eq!(early["data"], "before\n");
    first.stop().await.unwrap();

    let second = spawn_worker(&bus, &s, "w2").await;
    let r = responses.wait(&correlation, WAIT).await.unwrap();
    assert_eq!(r["stdout"], "before\nafter\n", "{r}");
    let mut later = Vec::new();
    while let Some((c, event)) = outputs.next_any(Duration::from_secs(2)).await.unwrap() {
        if c == correlation {
            later.push(event);
        }
    }
    // Only what the container printed after the re-attach, numbered from
    // above anything the first worker can have used (~5 s: 50 periods).
    assert_eq!(joined(&later, "stdout"), "after\n", "{later:?}");
    assert!(later[0]["seq"].as_u64().unwrap() > 50, "{later:?}");
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follow_prints_the_output_live_then_the_response() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

    require_engine().await;
    let bus = LocalBus::start().await.unwrap();
    let s = docker_settings(&unique("livecli"), "");
    let worker = spawn_worker(&bus, &s, "w1").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_bus-integration-docker"))
        .env_remove("BUS_DOCKER_CONFIG")
        .env("BUS_EVENTS_API_URL", bus.url())
        .env("BUS_API_TOKEN", bus.token())
        .args([
            "client",
            "--event-prefix",
            s.worker.prefix.as_str(),
            "run",
            "--follow",
        ])
        .args(["--image", &test_image(), "--timeout", "60s", "--"])
        .args(["sh", "-c", "echo one; echo err >&2; sleep 3; echo two"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(WAIT, stdout.read_line(&mut first))
        .await
        .expect("first line in time")
        .unwrap();
    assert_eq!(first, "one\n");
    assert!(
        child.try_wait().unwrap().is_none(),
        "printed while the run still goes"
    );
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).await.unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success(), "{stderr}");
    let (live, response) = rest.split_once('{').expect("the response follows");
    assert_eq!(live, "two\n");
    let r: Value = serde_json::from_str(&format!("{{{response}")).unwrap();
    assert_eq!(r["stdout"], "one\ntwo\n");
    assert!(stderr.contains("err\n"), "{stderr}");
    worker.stop().await.unwrap();
}
