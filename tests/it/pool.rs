//! The engine pool on two real engines (docs/protocol.md §5, issue 11): the
//! second and third test engines that `scripts/test.sh` starts beside the
//! first (`scripts/docker-engine.sh ensure2`/`ensure3`). The pool is
//! engine 2 over tcp+TLS and engine 3 over its unix socket, so TLS is on the
//! path of every test here.
//!
//! * two workers, one group, the same pool: runs spread over both engines,
//!   and status, input and delete reach any run whichever worker gets them;
//! * a duplicate request delivered to both workers at once runs once across
//!   the engines;
//! * kill -9 of a worker with runs in flight on both engines loses nothing;
//! * an engine lost mid-batch (its socket cut through a proxy; its
//!   containers run on) and an engine stopped mid-batch (its dockerd stopped
//!   with `scripts/docker-engine.sh stop3`, which stops its containers, then
//!   started again): runs go on on the other, `runner.status` says
//!   `degraded`, and the runs on the lost engine are answered once it is back;
//! * runs with request mounts go to the engine that pins them.
//!
//! The tests take one lock: placement counts every active container on an
//! engine, so tests sharing the two engines at once would skew each other's
//! spread.

use crate::common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bus_docker_domain::Operation;
use bus_integration_docker::caller::ResponseWaiter;
use bus_integration_docker::config::Settings;
use bus_integration_docker::local::LocalBus;
use common::{
    answered_once, code, collect, collect_more, containers_of, each_answered_once, eventually,
    settings, shell, spawn_worker, test_image, unique, wait_connected, Answers, Caller,
    SocketProxy, WAIT,
};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// One pool test at a time (see the module comment).
static SERIAL: Mutex<()> = Mutex::const_new(());

/// The two test engines, from the variables `scripts/test.sh` exports.
struct Pool {
    /// Engine 2 over tcp+TLS, and the directory of its client files.
    tls_host: String,
    tls_dir: String,
    /// Engine 3's unix socket.
    unix_socket: PathBuf,
}

impl Pool {
    fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: the engine-pool tests need the second and third test \
                     engines; run the suite with scripts/test.sh (or scripts/docker-engine.sh \
                     ensure2 && ensure3, then eval \"$(scripts/docker-engine.sh env2)\")"
                )
            })
        };
        let unix = var("BUS_TEST_DOCKER_HOST_3");
        Self {
            tls_host: var("BUS_TEST_DOCKER_TLS_HOST"),
            tls_dir: var("BUS_TEST_DOCKER_TLS_DIR"),
            unix_socket: PathBuf::from(unix.trim_start_matches("unix://")),
        }
    }

    fn unix_host(&self) -> String {
        format!("unix://{}", self.unix_socket.display())
    }

    /// `[docker] hosts = [...]` for `unix` as the second engine.
    fn toml(&self, unix: &str) -> String {
        format!(
            "[docker]\nhosts = [{{ url = \"{}\", tls_cert_path = \"{}\" }}, \"{unix}\"]\n",
            self.tls_host, self.tls_dir
        )
    }

    /// Clients of both engines (engine 2 through its unix socket).
    async fn clients(&self) -> [bollard::Docker; 2] {
        let two = std::env::var("BUS_TEST_DOCKER_HOST_2").expect("BUS_TEST_DOCKER_HOST_2");
        [connect(&two).await, connect(&self.unix_host()).await]
    }
}

/// A negotiated client of the engine at `host` (a unix socket).
async fn connect(host: &str) -> bollard::Docker {
    let d = bollard::Docker::connect_with_unix(host, 30, bollard::API_DEFAULT_VERSION)
        .expect("engine client");
    d.negotiate_version().await.expect("engine answers")
}

/// A docker worker in `group` on `prefix` with its own runner name;
/// answered containers go at once, so "nothing left" is exact.
fn pool_settings(runner: &str, prefix: &str, group: &str, pool: &str) -> Settings {
    retained_settings(runner, prefix, group, pool, "0s")
}

/// A lone worker's settings: its own prefix from its runner name, the
/// default group.
fn solo_settings(runner: &str, pool: &str) -> Settings {
    let prefix = format!("bus.t.{}", runner.replace('_', "-"));
    pool_settings(runner, &prefix, "bus-integration-docker", pool)
}

/// Wait until `runner`'s containers on engines 2 and 3 are `counts` and
/// every one has started: an engine cut while a container is only created
/// would test a different thing (a run that never began).
async fn wait_spread(clients: &[bollard::Docker; 2], runner: &str, counts: [usize; 2]) {
    eventually(
        &format!("{counts:?} runs started on engines 2 and 3"),
        Duration::from_secs(30),
        || async {
            let mut created = 0;
            for client in clients {
                created += common::created_not_started(client, runner).await.len();
            }
            (created == 0 && spread(clients, &[runner]).await == counts).then_some(())
        },
    )
    .await;
}

fn retained_settings(
    runner: &str,
    prefix: &str,
    group: &str,
    pool: &str,
    retention: &str,
) -> Settings {
    settings(&format!(
        "provider = \"docker\"\nrunner_name = \"{runner}\"\nevent_prefix = \"{prefix}\"\n\
         shutdown_grace = \"5s\"\nstop_grace = \"2s\"\nrun_retention = \"{retention}\"\n\
         max_concurrent_runs = 8\n{pool}[events]\ngroup = \"{group}\"\n"
    ))
}

/// The runs of `runners` on each engine of the pool.
async fn spread(clients: &[bollard::Docker; 2], runners: &[&str]) -> [usize; 2] {
    let mut counts = [0; 2];
    for (count, client) in counts.iter_mut().zip(clients) {
        for runner in runners {
            *count += containers_of(client, runner).await.len();
        }
    }
    counts
}

/// Remove whatever `runners` left on both engines (after a failure).
async fn cleanup(clients: &[bollard::Docker; 2], runners: &[&str]) {
    use bollard::query_parameters::RemoveContainerOptionsBuilder;
    for client in clients {
        for runner in runners {
            for name in containers_of(client, runner).await {
                let opts = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = client
                    .remove_container(name.trim_start_matches('/'), Some(opts))
                    .await;
            }
        }
    }
}

/// A batch of four runs spread over both engines when engine 3 went
/// down, and four more sent while it is down.
struct Batch {
    first: Vec<String>,
    second: Vec<String>,
    seen: Answers,
}

impl Batch {
    /// With engine 3 down: four more runs all go to engine 2 and are
    /// answered, as are the two runs of `first` that engine 2 holds.
    async fn on_engine_2_while_3_is_down(
        caller: &Caller,
        waiter: &mut ResponseWaiter,
        pool: &Pool,
        first: Vec<String>,
    ) -> Self {
        let second = caller
            .publish_batch(Operation::Run, 0..4, |i| shell(&format!("echo second-{i}")))
            .await;
        let seen = collect(waiter, 6, Duration::from_millis(500), WAIT).await;
        for c in &second {
            let r = answered_once(&seen, c);
            assert_eq!(r["status"], "succeeded", "{r}");
            assert_eq!(
                docker_host(r),
                pool.tls_host,
                "placed on the engine that answers: {r}"
            );
        }
        Self {
            first,
            second,
            seen,
        }
    }

    /// Once engine 3 is back: its two runs are answered too, every run of
    /// both batches exactly once, and `runner.status` is `ready` again.
    /// Returns the answers of `first`, in order.
    async fn first_once_engine_3_is_back(
        &mut self,
        caller: &Caller,
        waiter: &mut ResponseWaiter,
    ) -> Vec<Value> {
        collect_more(&mut self.seen, waiter, 2, Duration::from_millis(1500), WAIT).await;
        let sent = [self.first.as_slice(), &self.second].concat();
        let answers = each_answered_once(&self.seen, &sent);
        let st = caller.call(Operation::RunnerStatus, json!({})).await;
        assert_eq!(st["status"]["state"], "ready", "{st}");
        answers
            .into_iter()
            .take(self.first.len())
            .cloned()
            .collect()
    }
}

fn docker_host(response: &Value) -> String {
    response["runtime"]["docker_host"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_pool_and_answer_any_follow_up() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("pool");
    let prefix = format!("bus.t.{}", tag.replace('_', "-"));
    let group = format!("{tag}-g");
    let (ra, rb) = (format!("{tag}-a"), format!("{tag}-b"));
    let a = pool_settings(&ra, &prefix, &group, &pool.toml(&pool.unix_host()));
    let b = pool_settings(&rb, &prefix, &group, &pool.toml(&pool.unix_host()));
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    wait_connected(&bus, &a, 2).await;
    let caller = Caller::new(&bus, &a.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;

    let ids: Vec<String> = (0..6).map(|i| format!("{tag}-r{i}")).collect();
    let sent = caller
        .publish_batch(Operation::Run, 0..6, |i| {
            json!({"run_id": ids[i], "image": test_image(), "interactive": true,
                "command": ["sh", "-c", "read line; echo got-$line"]})
        })
        .await;
    for id in &ids {
        common::wait_running(&caller, id).await;
    }
    let counts = spread(&clients, &[&ra, &rb]).await;
    println!("POOL spread of 6 runs over engine 2 / engine 3: {counts:?}");
    assert_eq!(counts[0] + counts[1], 6, "{counts:?}");
    assert!(
        counts[0] >= 1 && counts[1] >= 1,
        "both engines hold runs: {counts:?}"
    );

    // Follow-ups land on either worker (one group); each finds its run on
    // whichever engine holds it.
    for (i, id) in ids.iter().enumerate() {
        let st = caller.call(Operation::Status, json!({"run_id": id})).await;
        assert_eq!(st["items"][0]["state"], "running", "{st}");
        let answer = if i % 2 == 0 {
            caller
                .call(
                    Operation::Input,
                    json!({"run_id": id, "data": format!("in-{i}\n"), "eof": true}),
                )
                .await
        } else {
            caller.call(Operation::Delete, json!({"run_id": id})).await
        };
        assert_eq!(code(&answer), "", "{id}: {answer}");
    }
    let seen = collect(&mut runs, 6, Duration::from_millis(1500), WAIT).await;
    let mut hosts = HashMap::new();
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(r["status"], "succeeded", "{r}");
            assert_eq!(r["stdout"], format!("got-in-{i}\n"), "{r}");
        } else {
            assert_eq!(r["status"], "canceled", "{r}");
        }
        *hosts.entry(docker_host(r)).or_insert(0) += 1;
    }
    println!("POOL runtime.docker_host of the answers: {hosts:?}");
    assert_eq!(
        hosts
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        [pool.tls_host.clone(), pool.unix_host()].into(),
        "answers name the engine each run was on"
    );
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    assert_eq!(
        spread(&clients, &[&ra, &rb]).await,
        [0, 0],
        "no container left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivered_to_two_workers_runs_once_across_the_engines() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let tag = unique("pooldup");
    let prefix = format!("bus.t.{}", tag.replace('_', "-"));
    let (ra, rb) = (format!("{tag}-a"), format!("{tag}-b"));
    // Two groups on one prefix: each worker gets every request. Worker b
    // lists the engines in the other order, so the two do not simply meet
    // on the same engine.
    let swapped = format!(
        "[docker]\nhosts = [\"{}\", {{ url = \"{}\", tls_cert_path = \"{}\" }}]\n",
        pool.unix_host(),
        pool.tls_host,
        pool.tls_dir
    );
    // Tombstones stop a delivery that comes after the other one finished
    // (with retention 0 nothing would be left to find).
    let own = pool.toml(&pool.unix_host());
    let a = retained_settings(&ra, &prefix, &format!("{tag}-ga"), &own, "1m");
    let b = retained_settings(&rb, &prefix, &format!("{tag}-gb"), &swapped, "1m");
    let wa = spawn_worker(&bus, &a, "wa").await;
    let wb = spawn_worker(&bus, &b, "wb").await;
    let caller = Caller::new(&bus, &a.worker.prefix);
    let mut runs = caller.waiter(Operation::Run).await;
    let since = common::unix_now() - 1;
    let n = 6;
    let sent: Vec<String> = (0..n).map(|i| format!("{tag}-dup{i}")).collect();
    for (i, correlation) in sent.iter().enumerate() {
        let payload = shell(&format!("echo once-{i}"));
        caller
            .publish_as(Operation::Run, correlation, payload)
            .await;
    }
    let seen = collect(&mut runs, n, Duration::from_millis(2000), WAIT).await;
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        assert_eq!(r["stdout"], format!("once-{i}\n"), "{r}");
    }
    let mut starts = 0;
    for client in &clients {
        for runner in [&ra, &rb] {
            starts += common::starts_since(client, runner, since).await;
        }
    }
    assert_eq!(starts, n, "each request ran once across both engines");
    wa.stop().await.unwrap();
    wb.stop().await.unwrap();
    cleanup(&clients, &[&ra, &rb]).await;
    assert_eq!(
        spread(&clients, &[&ra, &rb]).await,
        [0, 0],
        "tombstones removed"
    );
}

fn spawn_pool_worker(
    bus: &LocalBus,
    runner: &str,
    prefix: &str,
    pool: &Pool,
    log: &std::path::Path,
) -> tokio::process::Child {
    common::worker_process(bus, runner, prefix, log)
        // The pool as an operator's env gives it: TLS for the tcp engine
        // from Docker's own variables.
        .env(
            "BUS_DOCKER_DOCKER_HOSTS",
            format!("{},{}", pool.tls_host, pool.unix_host()),
        )
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &pool.tls_dir)
        .spawn()
        .expect("worker binary starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_runs_on_both_engines_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("poolcrash");
    let s = solo_settings(&runner, "");
    let prefix = s.worker.prefix.as_str().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");

    let mut first = spawn_pool_worker(&bus, &runner, &prefix, &pool, &log);
    wait_connected(&bus, &s, 1).await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let sent = caller
        .publish_batch(Operation::Run, 0..4, |i| {
            shell(&format!("sleep 2; echo done-{i}"))
        })
        .await;
    wait_spread(&clients, &runner, [2, 2]).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let _second = spawn_pool_worker(&bus, &runner, &prefix, &pool, &log);
    let seen = collect(
        &mut waiter,
        sent.len(),
        Duration::from_secs(2),
        Duration::from_secs(90),
    )
    .await;
    for (i, r) in each_answered_once(&seen, &sent).into_iter().enumerate() {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert_eq!(r["stdout"], format!("done-{i}\n"));
    }
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.contains("recovering run"),
        "the second worker recovered the runs"
    );
    eventually("no container left", Duration::from_secs(20), || async {
        (spread(&clients, &[&runner]).await == [0, 0]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_lost_mid_batch_degrades_and_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("poollost");
    let dir = tempfile::tempdir().unwrap();
    // Engine 3 through a proxy the test can cut: to the worker, the engine
    // is gone (its socket refuses), while its containers run on.
    let proxy_path = dir.path().join("engine3.sock");
    let proxy = SocketProxy::start(&proxy_path, &pool.unix_socket).await;
    let proxied = format!("unix://{}", proxy_path.display());
    let s = solo_settings(&runner, &pool.toml(&proxied));
    let w = spawn_worker(&bus, &s, "w").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let first = caller
        .publish_batch(Operation::Run, 0..4, |i| {
            shell(&format!("sleep 2; echo first-{i}"))
        })
        .await;
    wait_spread(&clients, &runner, [2, 2]).await;
    proxy.stop().await;

    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["state"], "degraded", "{st}");
    let engines = st["status"]["details"]["engines"]
        .as_array()
        .unwrap()
        .clone();
    let states: Vec<(&str, &str)> = engines
        .iter()
        .map(|e| {
            (
                e["docker_host"].as_str().unwrap(),
                e["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [(pool.tls_host.as_str(), "up"), (proxied.as_str(), "down")],
        "{st}"
    );

    let mut batch = Batch::on_engine_2_while_3_is_down(&caller, &mut waiter, &pool, first).await;
    // The runs on the lost engine wait for it; once it is back they are
    // answered (collected from the exited containers).
    let proxy = SocketProxy::start(&proxy_path, &pool.unix_socket).await;
    for (i, r) in batch
        .first_once_engine_3_is_back(&caller, &mut waiter)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r["stdout"], format!("first-{i}\n"), "{r}");
    }
    w.stop().await.unwrap();
    proxy.stop().await;
    assert_eq!(
        spread(&clients, &[&runner]).await,
        [0, 0],
        "no container left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_request_mounts_go_to_the_engine_that_pins_them() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("poolpin");
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("note.txt"), "pinned here\n").unwrap();
    let allowed = root.path().display().to_string();
    // Engine 2 is reached over tcp+TLS (it cannot pin: the worker does not
    // know that host's files); engine 3 over its local unix socket can.
    let s = solo_settings(
        &runner,
        &format!(
            "{}[policy]\nallowed_mount_roots = [\"{allowed}\"]\n",
            pool.toml(&pool.unix_host())
        ),
    );
    let w = spawn_worker(&bus, &s, "w").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    for i in 0..3 {
        let r = caller
            .call(
                Operation::Run,
                json!({"image": test_image(), "command": ["cat", "/data/note.txt"],
                    "mounts": [{"source": allowed, "target": "/data", "read_only": true}]}),
            )
            .await;
        assert_eq!(code(&r), "", "run {i}: {r}");
        assert_eq!(r["stdout"], "pinned here\n", "{r}");
        assert_eq!(
            docker_host(&r),
            pool.unix_host(),
            "run {i} on the engine that pins: {r}"
        );
    }
    // Without mounts the same worker still uses both engines.
    let r = caller
        .call(
            Operation::Run,
            json!({"image": test_image(), "command": ["true"]}),
        )
        .await;
    assert_eq!(
        docker_host(&r),
        pool.tls_host,
        "the idle tcp engine comes first: {r}"
    );
    w.stop().await.unwrap();
    assert_eq!(
        spread(&clients, &[&runner]).await,
        [0, 0],
        "no container left"
    );
}

/// `scripts/docker-engine.sh <command>` (the test engines are the test
/// script's: same state directory through `BUS_STATE_DIR`, or its default).
async fn engine_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/docker-engine.sh");
    let out = tokio::process::Command::new(script)
        .arg(command)
        .env("BUS_TEST_IMAGES", test_image())
        .output()
        .await
        .expect("docker-engine.sh runs");
    assert!(
        out.status.success(),
        "docker-engine.sh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_stopped_and_restarted_mid_batch_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let pool = Pool::from_env();
    let clients = pool.clients().await;
    let bus = LocalBus::start().await.unwrap();
    let runner = unique("poolstop");
    let s = solo_settings(&runner, &pool.toml(&pool.unix_host()));
    let w = spawn_worker(&bus, &s, "w").await;
    let caller = Caller::new(&bus, &s.worker.prefix);
    let mut waiter = caller.waiter(Operation::Run).await;
    let mut output = caller.output_waiter().await;
    // Runs that end at once on SIGTERM (dockerd stops its containers when
    // it stops), else after 6 s.
    let first = caller
        .publish_batch(Operation::Run, 0..4, |i| {
            let script =
                format!("trap 'echo stopped-{i}; exit 0' TERM; echo started-{i}; sleep 6 & wait");
            json!({"image": test_image(), "command": ["sh", "-c", script],
                   "stream_output": true})
        })
        .await;
    wait_spread(&clients, &runner, [2, 2]).await;
    // Each shell says `started-<i>` once its trap is installed: its first
    // live output is the signal, not a pause.
    let started = common::collect(&mut output, 4, Duration::ZERO, WAIT).await;
    assert!(
        first.iter().all(|c| started.contains_key(c)),
        "every shell started: {started:?}"
    );
    engine_script("stop3").await;

    let st = caller.call(Operation::RunnerStatus, json!({})).await;
    assert_eq!(st["status"]["state"], "degraded", "{st}");
    assert_eq!(
        st["status"]["details"]["engines"][1]["state"], "down",
        "{st}"
    );
    let mut batch = Batch::on_engine_2_while_3_is_down(&caller, &mut waiter, &pool, first).await;
    engine_script("ensure3").await;
    for (i, r) in batch
        .first_once_engine_3_is_back(&caller, &mut waiter)
        .await
        .into_iter()
        .enumerate()
    {
        let stdout = r["stdout"].as_str().unwrap_or_default();
        assert!(stdout.starts_with(&format!("started-{i}\n")), "{r}");
    }
    w.stop().await.unwrap();
    let clients = pool.clients().await; // engine 3 restarted: a new client
    assert_eq!(
        spread(&clients, &[&runner]).await,
        [0, 0],
        "no container left"
    );
}
