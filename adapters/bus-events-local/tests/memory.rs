//! What the server holds: a subscriber that stops reading costs bounded
//! memory, and names and groups nobody uses any more are forgotten.

mod common;

use std::io::{Read as _, Write as _};
use std::process::Stdio;
use std::time::Duration;

use bus_events_local::{mint_token, MintClaims, Secret};
use common::{spawn_server_with, WAIT};
use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The binary under test; `BUS_EVENTS_LOCAL_BIN` measures another build
/// (e.g. an older one) with the same test.
fn binary() -> String {
    std::env::var("BUS_EVENTS_LOCAL_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_bus-events-local").to_owned())
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Opens a broadcast stream on a raw socket, reads its response head and
/// then never reads again.
fn stalled_subscriber(addr: &str, token: &str, name: &str) -> std::net::TcpStream {
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        socket,
        "GET /api/v1/events/stream?name={name} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("request");
    socket.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    socket
}

#[tokio::test]
async fn a_stalled_subscriber_costs_bounded_memory() {
    const MIB: u64 = 1024;
    const EVENTS: usize = 120;
    let mut server = tokio::process::Command::new(binary())
        .env("BUS_API_JWT_SECRET", "memory secret")
        .env("RUST_LOG", "warn")
        .args(["serve", "--addr", "127.0.0.1:0", "--memory-max-bytes"])
        .arg((16 * 1024 * 1024).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("serve starts");
    let pid = server.id().expect("running");
    let stdout = server.stdout.take().expect("stdout");
    let first = tokio::time::timeout(WAIT, BufReader::new(stdout).lines().next_line())
        .await
        .expect("listening line")
        .expect("stdout")
        .expect("a line");
    let base_url = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("url")
        .to_owned();
    let addr = base_url.trim_start_matches("http://").to_owned();
    let secret = Secret::parse("memory secret").expect("secret");
    let token = mint_token(
        &secret,
        &MintClaims::new("mem", "events:send events:listen"),
    )
    .expect("token");

    let client = reqwest::Client::new();
    // Just under the 4 MiB event limit once wrapped in its envelope.
    let payload = "x".repeat(4 * 1024 * 1024 - 1024);
    let publish = |name: &'static str| {
        let request = client
            .post(format!("{base_url}/api/v1/events"))
            .bearer_auth(&token)
            .json(&json!({"name": name, "payload": payload}));
        async move {
            let status = request.send().await.expect("publish").status();
            assert!(status.is_success(), "{status}");
        }
    };
    // Warm the allocator up with a few events nobody listens to.
    for _ in 0..4 {
        publish("warm.up").await;
    }
    let (baseline, _) = rss_kib(pid);

    let stalled = stalled_subscriber(&addr, &token, "big.event");
    for _ in 0..EVENTS {
        publish("big.event").await;
    }
    let (after, peak) = rss_kib(pid);
    let growth = after.saturating_sub(baseline);
    let peak_growth = peak.saturating_sub(baseline);
    eprintln!(
        "RSS baseline {} MiB, after {EVENTS} x 4 MiB to a stalled subscriber {} MiB \
         (+{} MiB), peak +{} MiB",
        baseline / MIB,
        after / MIB,
        growth / MIB,
        peak_growth / MIB
    );
    // History 16 MiB + the subscriber's queue 16 MiB + one event in flight
    // and allocator slack; before the bound it was about +500 MiB.
    assert!(growth < 128 * MIB, "RSS grew by {} MiB", growth / MIB);
    assert!(
        peak_growth < 160 * MIB,
        "peak RSS grew by {} MiB",
        peak_growth / MIB
    );
    drop(stalled);
}

#[tokio::test]
async fn names_groups_and_subscribers_nobody_uses_are_forgotten() {
    const NAMES: usize = 8000;
    const STREAMS: usize = 100;
    let app = spawn_server_with(|config| {
        config.history_bytes = 64 * 1024;
        // Streams write keep-alives, so a hung-up client is noticed quickly.
        config.keepalive = Duration::from_millis(20);
    })
    .await;

    let mut streams = Vec::new();
    for n in 0..STREAMS {
        let name = format!("names.n{n}");
        streams.push(app.open_stream(&format!("name={name}")).await);
        streams.push(
            app.open_stream(&format!("name={name}&delivery=unicast&group=g{n}"))
                .await,
        );
    }
    let during = app.server.tracked();
    assert_eq!(during.subscribers, STREAMS);
    assert_eq!(during.groups, STREAMS);

    futures_util::stream::iter(0..NAMES)
        .for_each_concurrent(16, |n| {
            let body = json!({"name": format!("names.n{n}"), "payload": n});
            let app = &app;
            async move {
                app.publish(body).await;
            }
        })
        .await;
    drop(streams);
    // The history holds the newest events that fit in 64 KiB: a few
    // hundred names, not 8000.
    let tracked = wait_for(&app, |t| t.subscribers == 0 && t.groups == 0).await;
    assert!(tracked.names <= 600, "{tracked:?}");
    assert_eq!(
        tracked.names, tracked.history_events,
        "only names with a retained event: {tracked:?}"
    );

    // Once their events expire (evicted by newer ones) the names go too.
    app.publish(json!({"name": "names.flush", "payload": "x".repeat(64 * 1024 - 400)}))
        .await;
    let tracked = app.server.tracked();
    assert!(tracked.names <= 2, "{tracked:?}");
    assert_eq!(tracked.groups, 0);
}

/// Polls `tracked()` until `done` holds.
async fn wait_for(
    app: &common::TestServer,
    done: impl Fn(&bus_events_local::Tracked) -> bool,
) -> bus_events_local::Tracked {
    tokio::time::timeout(WAIT, async {
        loop {
            let tracked = app.server.tracked();
            if done(&tracked) {
                return tracked;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never reached: {:?}", app.server.tracked()))
}
