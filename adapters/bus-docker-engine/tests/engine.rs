//! Live tests of driving runs on the real Docker Engine: exits, output,
//! limits, deadlines, cancellation, stdin, and recovery after a worker
//! stops mid-run.

mod support;

use std::time::{Duration, Instant};

use bus_docker_domain::container::{ContainerState, ManagedFilter};
use bus_docker_domain::ports::{ContainerRuntime, InputChunk, InputStream, Stdin};
use bus_docker_domain::run::Ending;
use bus_docker_domain::RuntimeError;
use bus_docker_engine::{DockerEngine, EngineOptions};
use support::{engine, engine_with, io, peak_rss, spec, Cleanup, MIB};
use tokio::sync::mpsc;

fn chunk(data: &str, eof: bool) -> InputChunk {
    InputChunk {
        data: data.as_bytes().to_vec(),
        eof,
    }
}

/// An input stream fed by the returned sender.
fn channel_input() -> (mpsc::UnboundedSender<InputChunk>, InputStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    (tx, Box::pin(stream))
}

/// Retry `write_input` while the container is still being started.
async fn write_when_running(
    engine: &DockerEngine,
    container: &bus_docker_domain::container::ContainerRef,
    c: InputChunk,
) {
    let started = Instant::now();
    loop {
        match engine.write_input(container, c.clone()).await {
            Ok(()) => return,
            Err(RuntimeError::NotAcceptingInput(_))
                if started.elapsed() < Duration::from_secs(20) =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("write_input failed: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_exit_keeps_stdout_and_stderr_apart() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("clean", &["sh", "-c", "echo out; echo err >&2"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.stdout.text, "out\n");
    assert_eq!(exit.stderr.text, "err\n");
    assert_eq!((exit.stdout.total_bytes, exit.stdout.truncated), (4, false));
    assert!(!exit.oom_killed);
    let duration = exit.duration().expect("start and finish are known");
    assert!(duration < Duration::from_secs(30), "{duration:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_zero_exit_is_a_result_not_an_error() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("exit3", &["sh", "-c", "echo bye; exit 3"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(3));
    assert_eq!(exit.exit_code, Some(3));
    assert_eq!(exit.stdout.text, "bye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_is_replaced() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("utf8", &["printf", "a\\377b"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.stdout.text, "a\u{fffd}b");
    assert_eq!(exit.stdout.total_bytes, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_of_output_keep_a_one_mib_tail_in_bounded_memory() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    // Few newlines on purpose: dockerd's json-file logger costs ~1.5 µs per
    // line, and `yes` (26 million lines) would make this a 40 s test of
    // dockerd instead of a test of the adapter.
    let spec = spec(
        "50mib",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero bs=1M count=50 2>/dev/null | tr '\\0' x",
        ],
    );
    let container = cleanup.create(&engine, &spec).await;
    let before = peak_rss();
    let started = Instant::now();
    let exit = engine
        .drive(&container, io(Duration::from_secs(300)))
        .await
        .unwrap();
    let growth = peak_rss().saturating_sub(before);
    eprintln!(
        "50 MiB run took {:?}, peak RSS grew {} KiB",
        started.elapsed(),
        growth / 1024
    );
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.total_bytes, 52_428_800);
    assert!(exit.stdout.truncated);
    assert_eq!(exit.stdout.text.len(), MIB);
    assert!(exit.stdout.text.bytes().all(|b| b == b'x'));
    assert_eq!(exit.stderr.total_bytes, 0);
    assert!(growth < 64 * MIB as u64, "peak RSS grew by {growth} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_kills_the_container() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("timeout", &["sh", "-c", "echo started; sleep 30"]);
    let container = cleanup.create(&engine, &spec).await;
    let started = Instant::now();
    let exit = engine
        .drive(&container, io(Duration::from_secs(1)))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(exit.ending, Ending::TimedOut);
    assert_eq!(exit.exit_code, Some(137));
    assert_eq!(
        exit.stdout.text, "started\n",
        "output before the kill is kept"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_signal_kills_the_container() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("cancel", &["sleep", "30"]);
    let container = cleanup.create(&engine, &spec).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut run = io(Duration::from_secs(60));
    run.cancel = Box::pin(async move {
        let _ = rx.await;
    });
    let started = Instant::now();
    let canceling = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(()).unwrap();
    };
    let (exit, ()) = tokio::join!(engine.drive(&container, run), canceling);
    let exit = exit.unwrap();
    assert_eq!(exit.ending, Ending::Canceled);
    assert_eq!(exit.exit_code, Some(137));
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Prints `started`, then on SIGTERM prints `bye` and exits 3.
const TRAP_TERM: &str = "trap 'echo bye; exit 3' TERM; echo started; sleep 30 & wait";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_and_cancel_stop_with_sigterm_then_sigkill_after_the_grace() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let graceful = |name| spec(name, &["sh", "-c", TRAP_TERM]);
    let timed = cleanup.create(&engine, &graceful("term-timeout")).await;
    let canceled = cleanup.create(&engine, &graceful("term-cancel")).await;
    let stubborn = cleanup
        .create(
            &engine,
            &spec(
                "term-ignored",
                &["sh", "-c", "trap '' TERM; echo started; sleep 30 & wait"],
            ),
        )
        .await;

    let mut on_time = io(Duration::from_secs(1));
    on_time.stop_grace = Duration::from_secs(20);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut on_cancel = io(Duration::from_secs(60));
    on_cancel.stop_grace = Duration::from_secs(20);
    on_cancel.cancel = Box::pin(async move {
        let _ = rx.await;
    });
    let mut ignoring = io(Duration::from_secs(1));
    ignoring.stop_grace = Duration::from_secs(2);
    let canceling = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(()).unwrap();
    };
    let started = Instant::now();
    let timed_run = async {
        let exit = engine.drive(&timed, on_time).await;
        (exit, started.elapsed())
    };
    let ignored_run = async {
        let exit = engine.drive(&stubborn, ignoring).await;
        (exit, started.elapsed())
    };
    let ((timed_exit, timed_took), canceled_exit, (ignored_exit, ignored_took), ()) = tokio::join!(
        timed_run,
        engine.drive(&canceled, on_cancel),
        ignored_run,
        canceling
    );

    for (exit, ending) in [
        (timed_exit.unwrap(), Ending::TimedOut),
        (canceled_exit.unwrap(), Ending::Canceled),
    ] {
        assert_eq!(exit.ending, ending);
        assert_eq!(exit.exit_code, Some(3), "the TERM trap ran: {ending:?}");
        assert_eq!(exit.stdout.text, "started\nbye\n", "{ending:?}");
    }
    // SIGTERM was answered at once: nobody waited for the 20 s grace.
    assert!(timed_took < Duration::from_secs(10), "{timed_took:?}");
    // A process that ignores SIGTERM is killed when the grace is over.
    let ignored = ignored_exit.unwrap();
    assert_eq!(ignored.ending, Ending::TimedOut);
    assert_eq!(ignored.exit_code, Some(137));
    assert!(ignored_took >= Duration::from_secs(3), "{ignored_took:?}");
    assert!(ignored_took < Duration::from_secs(15), "{ignored_took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_kill_is_reported_as_oom_killed() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    // `tail` keeps everything it reads from a stream without newlines.
    let mut spec = spec(
        "oom",
        &["sh", "-c", "head -c 64m /dev/zero | tail; echo tail=$?"],
    );
    spec.hardening.memory_bytes = Some(8 * MIB as i64);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.stdout.text, "tail=137\n", "the kernel killed tail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_stdin_reaches_cat_and_its_end_closes_stdin() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let mut spec = spec("stdin-text", &["cat"]);
    spec.stdin = Some("hello\nworld".into());
    let container = cleanup.create(&engine, &spec).await;
    let mut run = io(Duration::from_secs(30));
    run.stdin = Stdin::Text(b"hello\nworld".to_vec());
    let exit = engine.drive(&container, run).await.unwrap();
    // `cat` exiting by itself proves the half-close reached it as EOF.
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.text, "hello\nworld");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_stdin_follows_the_stream_until_eof() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let mut spec = spec("stdin-stream", &["cat"]);
    spec.interactive = true;
    let container = cleanup.create(&engine, &spec).await;
    let (tx, stream) = channel_input();
    let mut run = io(Duration::from_secs(30));
    run.stdin = Stdin::Interactive(Some(b"a\n".to_vec()), stream);
    let feeding = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(chunk("b\n", false)).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        tx.send(chunk("c\n", true)).unwrap();
    };
    let (exit, ()) = tokio::join!(engine.drive(&container, run), feeding);
    let exit = exit.unwrap();
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.text, "a\nb\nc\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_worker_feeds_stdin_over_a_held_attach() {
    let driver = engine().await;
    let other = engine().await;
    let cleanup = Cleanup::new(&driver);
    let mut spec = spec("stdin-other", &["cat"]);
    spec.interactive = true;
    let container = cleanup.create(&driver, &spec).await;
    let mut run = io(Duration::from_secs(60));
    // The driving worker has nothing to write: its stream never yields.
    run.stdin = Stdin::Interactive(None, Box::pin(futures_util::stream::pending()));
    let feeding = async {
        write_when_running(&other, &container, chunk("x\n", false)).await;
        assert_eq!(other.held_inputs(), 1, "the attach is held between chunks");
        tokio::time::sleep(Duration::from_millis(300)).await;
        other
            .write_input(&container, chunk("y\n", false))
            .await
            .unwrap();
        other
            .write_input(&container, chunk("z\n", true))
            .await
            .unwrap();
        assert_eq!(other.held_inputs(), 0, "eof releases the attach");
    };
    let (exit, ()) = tokio::join!(driver.drive(&container, run), feeding);
    let exit = exit.unwrap();
    // cat exited: the second attach's half-close closed the container's stdin.
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.text, "x\ny\nz\n");
}

/// Documents the engine's `StdinOnce` rule: whoever holds a stdin attach
/// closes the container's stdin when that attach goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_worker_holding_stdin_closes_it() {
    let driver = engine().await;
    let other = engine().await;
    let cleanup = Cleanup::new(&driver);
    let mut spec = spec("stdin-drop", &["cat"]);
    spec.interactive = true;
    let container = cleanup.create(&driver, &spec).await;
    let mut run = io(Duration::from_secs(60));
    run.stdin = Stdin::Interactive(None, Box::pin(futures_util::stream::pending()));
    let feeding = async {
        write_when_running(&other, &container, chunk("p\n", false)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(other);
    };
    let (exit, ()) = tokio::join!(driver.drive(&container, run), feeding);
    let exit = exit.unwrap();
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.text, "p\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_is_refused_unless_running_with_open_stdin() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let closed = spec("no-stdin", &["sleep", "30"]);
    let container = cleanup.create(&engine, &closed).await;
    let driving = engine.drive(&container, io(Duration::from_secs(60)));
    let probing = async {
        // Created, then running: refused either way (no open stdin).
        for _ in 0..2 {
            assert!(matches!(
                engine.write_input(&container, chunk("x", false)).await,
                Err(RuntimeError::NotAcceptingInput(_))
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        engine.kill(&container).await.unwrap();
    };
    let (exit, ()) = tokio::join!(driving, probing);
    assert_eq!(exit.unwrap().exit_code, Some(137));

    let mut open = spec("exited-stdin", &["true"]);
    open.interactive = true;
    let exited = cleanup.create(&engine, &open).await;
    engine
        .drive(&exited, io(Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(matches!(
        engine.write_input(&exited, chunk("x", true)).await,
        Err(RuntimeError::NotAcceptingInput(_))
    ));
    engine.remove(&exited).await.unwrap();
    assert!(matches!(
        engine.write_input(&exited, chunk("x", true)).await,
        Err(RuntimeError::ContainerGone(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_drive_is_resumed_by_reattaching() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec(
        "reattach",
        &["sh", "-c", "echo before; sleep 3; echo after; exit 4"],
    );
    let container = cleanup.create(&engine, &spec).await;
    // The worker "crashes" mid-run: its drive future is dropped.
    let first = tokio::time::timeout(
        Duration::from_millis(1500),
        engine.drive(&container, io(Duration::from_secs(60))),
    )
    .await;
    assert!(first.is_err(), "the first drive was still running");
    let listed = engine.list_managed(&ManagedFilter::all()).await.unwrap();
    let record = listed
        .iter()
        .find(|m| m.run_id == spec.run_id)
        .expect("listed");
    assert_eq!(
        record.state,
        ContainerState::Running,
        "re-attach path exercised"
    );

    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(4));
    assert_eq!(exit.stdout.text, "before\nafter\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reattached_run_keeps_its_original_deadline() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("redeadline", &["sh", "-c", "echo x; sleep 30"]);
    let container = cleanup.create(&engine, &spec).await;
    let timeout = Duration::from_secs(4);
    let first = tokio::time::timeout(
        Duration::from_millis(2500),
        engine.drive(&container, io(timeout)),
    )
    .await;
    assert!(first.is_err());
    let exit = engine.drive(&container, io(timeout)).await.unwrap();
    assert_eq!(exit.ending, Ending::TimedOut);
    let ran = exit.duration().unwrap();
    // Counted from the container's start: about 4 s, not 2.5 + 4.
    assert!(ran < Duration::from_millis(5500), "ran {ran:?}");
    assert_eq!(exit.stdout.text, "x\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exited_container_is_collected_from_its_logs() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("collect", &["sh", "-c", "echo done; echo warn >&2; exit 5"]);
    let container = cleanup.create(&engine, &spec).await;
    let live = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    let collected = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(collected.ending, Ending::Exited(5));
    assert_eq!(collected.exit_code, Some(5));
    assert_eq!(collected.stdout, live.stdout);
    assert_eq!(collected.stderr.text, "warn\n");
    assert_eq!(collected.started_at, live.started_at);
    assert_eq!(collected.finished_at, live.finished_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_outlives_the_request_timeout() {
    // Streams (attach, wait) are not bound by the request timeout.
    let engine = engine_with(EngineOptions {
        request_timeout: Duration::from_secs(2),
        ..EngineOptions::default()
    })
    .await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("long", &["sh", "-c", "sleep 5; echo done"]);
    let container = cleanup.create(&engine, &spec).await;
    let exit = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.text, "done\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_executable_is_a_failed_run_with_127() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    for (name, command) in [("nocmd", "/no/such/binary"), ("nopath", "no-such-command")] {
        let spec = spec(name, &[command]);
        let container = cleanup.create(&engine, &spec).await;
        let exit = engine
            .drive(&container, io(Duration::from_secs(30)))
            .await
            .expect("a result, not an engine error");
        assert_eq!(exit.ending, Ending::Exited(127), "{command}");
        assert_eq!(exit.exit_code, Some(127));
        assert!(
            exit.stderr.text.contains(command),
            "the engine's message names the command: {}",
            exit.stderr.text
        );
        assert_eq!(exit.stdout.total_bytes, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driving_a_removed_container_reports_it_gone() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec("gone", &["true"]);
    let container = cleanup.create(&engine, &spec).await;
    engine.remove(&container).await.unwrap();
    assert!(matches!(
        engine.drive(&container, io(Duration::from_secs(30))).await,
        Err(RuntimeError::ContainerGone(_))
    ));
}

/// The bytes the engine keeps on disk for a container's log: its
/// `LogPath` and the rotated files beside it (`<LogPath>.1`, …).
async fn engine_log_bytes(id: &str) -> (u64, usize) {
    let docker = support::raw_docker().await;
    let info = docker.inspect_container(id, None).await.unwrap();
    let path = std::path::PathBuf::from(info.log_path.expect("a json-file log path"));
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut bytes = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("the engine's log directory (run as root)") {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(&name) {
            bytes += entry.metadata().unwrap().len();
            files += 1;
        }
    }
    (bytes, files)
}

/// Issue 16.3: a run printing 200 MB leaves a bounded engine log (json-file
/// `max-size` = 2 × `max_output_bytes`, 2 files), and the response keeps
/// the right tail and byte counts; collecting the exited container again
/// from its log (what recovery does) still finds the whole tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_run_leaves_a_bounded_engine_log() {
    let engine = engine().await;
    let cleanup = Cleanup::new(&engine);
    let spec = spec(
        "log200",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero bs=1M count=200 2>/dev/null | tr '\\0' x; echo END",
        ],
    );
    let container = cleanup.create(&engine, &spec).await;
    let started = Instant::now();
    let exit = engine
        .drive(&container, io(Duration::from_secs(600)))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(exit.ending, Ending::Exited(0));
    assert_eq!(exit.stdout.total_bytes, 200 * MIB as u64 + 4);
    assert!(exit.stdout.truncated);
    assert_eq!(exit.stdout.text.len(), MIB);
    assert!(exit.stdout.text.ends_with("xxxEND\n"));
    assert_eq!(
        exit.stdout.text.bytes().filter(|b| *b == b'x').count(),
        MIB - 4
    );

    let (bytes, files) = engine_log_bytes(&container.id).await;
    eprintln!("200 MB run took {took:?}; the engine keeps {bytes} bytes of log in {files} files");
    assert!(files <= 2, "{files} log files");
    assert!(bytes <= 4 * MIB as u64 + 64 * 1024, "{bytes} bytes of log");

    // Recovery collects an exited container from its log.
    let again = engine
        .drive(&container, io(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(
        again.stdout.text, exit.stdout.text,
        "the log still holds the tail"
    );
    assert!(again.stdout.truncated);
}
