//! Unicast (work) delivery: one consumer per group gets each event, and
//! events wait for a consumer that is away.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{numbered, seq_of, spawn_server, Lines, TestServer, WAIT};

/// Waits until the server counts `expected` connected consumers.
async fn wait_for_consumers(app: &TestServer, name: &str, group: &str, expected: usize) {
    tokio::time::timeout(WAIT, async {
        while app.server.connected_consumers(name, group) != expected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{name}/{group} never had {expected} consumers"));
}

#[tokio::test]
async fn consumers_of_one_group_share_the_events() {
    const EVENTS: u64 = 50;
    let app = spawn_server().await;
    let query = "name=jobs&delivery=unicast&group=workers";
    let mut first = app.open_stream(&format!("{query}&consumer=a")).await;
    let mut second = app.open_stream(&format!("{query}&consumer=b")).await;

    for seq in 0..EVENTS {
        app.publish(numbered("jobs", seq)).await;
    }

    let mut got_first = Vec::new();
    let mut got_second = Vec::new();
    while got_first.len() + got_second.len() < EVENTS as usize {
        tokio::select! {
            event = first.next_event() => got_first.push(seq_of(&event)),
            event = second.next_event() => got_second.push(seq_of(&event)),
        }
    }

    let all: BTreeSet<u64> = got_first.iter().chain(&got_second).copied().collect();
    assert_eq!(
        all,
        (0..EVENTS).collect(),
        "together they got every event once"
    );
    assert!(
        !got_first.is_empty() && !got_second.is_empty(),
        "both consumers got work: {got_first:?} / {got_second:?}"
    );
    // Each consumer sees its share in publish order.
    assert!(got_first.windows(2).all(|w| w[0] < w[1]), "{got_first:?}");
    assert!(got_second.windows(2).all(|w| w[0] < w[1]), "{got_second:?}");
}

#[tokio::test]
async fn work_is_an_alias_of_unicast() {
    let app = spawn_server().await;
    let mut work = app.open_stream("name=w&delivery=work&group=g").await;
    let mut unicast = app.open_stream("name=w&delivery=unicast&group=g").await;
    assert_eq!(app.server.connected_consumers("w", "g"), 2, "same group");
    for seq in 0..4 {
        app.publish(numbered("w", seq)).await;
    }
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let event = tokio::select! {
            event = work.next_event() => event,
            event = unicast.next_event() => event,
        };
        assert!(seen.insert(seq_of(&event)), "delivered once");
    }
    assert_eq!(seen, (0..4).collect());
}

#[tokio::test]
async fn every_group_and_every_broadcast_subscriber_get_each_event() {
    let app = spawn_server().await;
    let mut alpha = app
        .open_stream("name=multi&delivery=unicast&group=alpha")
        .await;
    let mut beta = app
        .open_stream("name=multi&delivery=unicast&group=beta")
        .await;
    let mut watcher = app.open_stream("name=multi").await;
    for seq in 0..5 {
        app.publish(numbered("multi", seq)).await;
    }
    for seq in 0..5 {
        assert_eq!(seq_of(&alpha.next_event().await), seq);
        assert_eq!(seq_of(&beta.next_event().await), seq);
        assert_eq!(seq_of(&watcher.next_event().await), seq);
    }
}

#[tokio::test]
async fn events_from_before_the_groups_first_consumer_are_delivered_to_it() {
    let app = spawn_server().await;
    app.publish(numbered("early", 0)).await;
    let mut stream = app.open_stream("name=early&delivery=unicast&group=g").await;
    app.publish(numbered("early", 1)).await;
    assert_eq!(seq_of(&stream.next_event().await), 0);
    assert_eq!(seq_of(&stream.next_event().await), 1);
    drop(stream);

    // The group exists now: its cursor is past both, nothing comes again.
    let mut again = app.open_stream("name=early&delivery=unicast&group=g").await;
    app.publish(numbered("early", 2)).await;
    assert_eq!(seq_of(&again.next_event().await), 2);
}

#[tokio::test]
async fn events_wait_for_a_consumer_cut_by_the_server() {
    let app = spawn_server().await;
    let query = "name=retry&delivery=unicast&group=g&consumer=w1";
    let mut stream = app.open_stream(query).await;
    app.publish(numbered("retry", 0)).await;
    assert_eq!(seq_of(&stream.next_event().await), 0);

    app.server.drop_streams();
    stream.expect_end().await;
    assert_eq!(app.server.connected_consumers("retry", "g"), 0);

    for seq in 1..=5 {
        app.publish(numbered("retry", seq)).await;
    }
    let mut again = app.open_stream(query).await;
    for seq in 1..=5 {
        assert_eq!(seq_of(&again.next_event().await), seq);
    }
}

#[tokio::test]
async fn events_wait_for_a_consumer_that_hung_up() {
    let app = spawn_server().await;
    let query = "name=hangup&delivery=unicast&group=g";
    let stream = app.open_stream(query).await;
    wait_for_consumers(&app, "hangup", "g", 1).await;

    drop(stream);
    wait_for_consumers(&app, "hangup", "g", 0).await;

    for seq in 0..3 {
        app.publish(numbered("hangup", seq)).await;
    }
    let mut again = app.open_stream(query).await;
    for seq in 0..3 {
        assert_eq!(seq_of(&again.next_event().await), seq);
    }
}

#[tokio::test]
async fn a_remaining_consumer_takes_over_the_queue() {
    let app = spawn_server().await;
    let query = "name=takeover&delivery=unicast&group=g";
    let leaving = app.open_stream(query).await;
    let mut staying = app.open_stream(query).await;
    drop(leaving);
    wait_for_consumers(&app, "takeover", "g", 1).await;

    for seq in 0..5 {
        app.publish(numbered("takeover", seq)).await;
    }
    for seq in 0..5 {
        assert_eq!(seq_of(&staying.next_event().await), seq);
    }
}

#[tokio::test]
async fn without_follow_a_consumer_drains_the_queue_and_ends() {
    let app = spawn_server().await;
    let query = "name=drain&delivery=unicast&group=g";
    drop(app.open_stream(query).await);
    wait_for_consumers(&app, "drain", "g", 0).await;
    for seq in 0..3 {
        app.publish(numbered("drain", seq)).await;
    }

    let mut drain: Lines = app.open_stream(&format!("{query}&follow=false")).await;
    for seq in 0..3 {
        assert_eq!(seq_of(&drain.next_event().await), seq);
    }
    drain.expect_end().await;
}
