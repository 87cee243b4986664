use std::time::Duration;

use super::*;

const ME: &str = "me";

fn line(n: u32) -> Line {
    Bytes::from(format!("{n}\n"))
}

fn limits(retention: usize, group_events: usize) -> Limits {
    Limits {
        retention,
        history_bytes: usize::MAX,
        group_events,
        group_bytes: usize::MAX,
        subscriber_bytes: usize::MAX,
    }
}

fn broker(retention: usize, group_events: usize) -> Broker {
    Broker::new(limits(retention, group_events))
}

async fn next_within(consumer: &mut Consumer) -> Option<Line> {
    tokio::time::timeout(Duration::from_millis(200), consumer.next())
        .await
        .ok()
}

#[test]
fn history_is_bounded_by_retention() {
    let broker = broker(2, 10);
    for n in 0..3 {
        broker.publish("a", ME, line(n));
    }
    let sub = broker.subscribe("a", ME, true, false);
    assert_eq!(sub.replay, vec![line(1), line(2)]);
    assert!(sub.live.is_none());
}

#[test]
fn history_is_bounded_by_bytes_across_names_oldest_first() {
    // Each line is 2 bytes; 5 bytes hold two of them.
    let broker = Broker::new(Limits {
        history_bytes: 5,
        ..limits(10, 10)
    });
    broker.publish("a", ME, line(1));
    broker.publish("b", ME, line(2));
    broker.publish("a", ME, line(3));
    assert_eq!(broker.subscribe("a", ME, true, false).replay, vec![line(3)]);
    assert_eq!(broker.subscribe("b", ME, true, false).replay, vec![line(2)]);
    assert!(lock(&broker.inner.state).history_bytes <= 5);
}

#[test]
fn a_group_backlog_is_bounded_by_bytes() {
    let broker = Broker::new(Limits {
        group_bytes: 4,
        ..limits(0, 10)
    });
    let mut consumer = broker.join("a", "g", ME);
    for n in 0..3 {
        broker.publish("a", ME, line(n));
    }
    assert_eq!(consumer.next_queued(), Some(line(1)));
    assert_eq!(consumer.next_queued(), Some(line(2)));
    assert_eq!(consumer.next_queued(), None);
}

#[tokio::test]
async fn subscribe_sees_replay_then_live_of_its_own_identity_only() {
    let broker = broker(10, 10);
    broker.publish("a", ME, line(1));
    broker.publish("a", "other", line(7));
    broker.publish("b", ME, line(99));
    let mut sub = broker.subscribe("a", ME, true, true);
    broker.publish("a", "other", line(8));
    broker.publish("a", ME, line(2));
    assert_eq!(sub.replay, vec![line(1)]);
    let live = sub.live.as_mut().expect("following");
    assert_eq!(live.recv().await, Ok(line(2)));
    assert!(
        tokio::time::timeout(Duration::from_millis(50), live.recv())
            .await
            .is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn a_new_group_starts_with_the_retained_events_of_its_identity() {
    let broker = broker(10, 10);
    broker.publish("a", ME, line(1));
    broker.publish("a", "other", line(5));
    let mut consumer = broker.join("a", "g", ME);
    assert_eq!(consumer.next_queued(), Some(line(1)));
    assert_eq!(consumer.next_queued(), None);
    broker.publish("a", "other", line(6));
    broker.publish("a", ME, line(2));
    assert_eq!(next_within(&mut consumer).await, Some(line(2)));
    assert_eq!(consumer.next_queued(), None);
}

#[tokio::test]
async fn an_existing_group_does_not_see_history_again() {
    let broker = broker(10, 10);
    broker.publish("a", ME, line(1));
    let mut first = broker.join("a", "g", ME);
    assert_eq!(first.next_queued(), Some(line(1)));
    drop(first);
    let mut again = broker.join("a", "g", ME);
    assert_eq!(again.next_queued(), None);
}

#[tokio::test]
async fn queued_events_wait_for_a_consumer() {
    let broker = broker(10, 10);
    let mut first = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut first).await, None);
    broker.publish("a", ME, line(0));
    assert_eq!(next_within(&mut first).await, Some(line(0)));
    // Something queued keeps the group while its consumer is away.
    broker.publish("a", ME, line(1));
    drop(first);
    assert_eq!(broker.connected("a", "g"), 0);
    assert_eq!(broker.connected("a", "g"), 0);
    broker.publish("a", ME, line(2));
    let mut consumer = broker.join("a", "g", ME);
    assert_eq!(broker.connected("a", "g"), 1);
    assert_eq!(next_within(&mut consumer).await, Some(line(1)));
    assert_eq!(next_within(&mut consumer).await, Some(line(2)));
    assert_eq!(next_within(&mut consumer).await, None);
}

#[tokio::test]
async fn waiting_consumers_take_turns() {
    let broker = broker(10, 10);
    let mut first = broker.join("a", "g", ME);
    let mut second = broker.join("a", "g", ME);
    // Both park in the waiting line (first, then second).
    assert_eq!(next_within(&mut first).await, None);
    assert_eq!(next_within(&mut second).await, None);
    broker.publish("a", ME, line(1));
    broker.publish("a", ME, line(2));
    assert_eq!(next_within(&mut first).await, Some(line(1)));
    assert_eq!(next_within(&mut second).await, Some(line(2)));
}

#[tokio::test]
async fn an_event_handed_to_a_departed_consumer_is_requeued() {
    let broker = broker(10, 10);
    let mut leaving = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut leaving).await, None);
    // The event is handed to `leaving`, which goes away without reading it.
    broker.publish("a", ME, line(1));
    drop(leaving);
    let mut staying = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut staying).await, Some(line(1)));
}

#[tokio::test]
async fn a_requeued_event_goes_to_a_waiting_consumer_first() {
    let broker = broker(10, 10);
    let mut leaving = broker.join("a", "g", ME);
    let mut staying = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut leaving).await, None);
    assert_eq!(next_within(&mut staying).await, None);
    broker.publish("a", ME, line(1)); // handed to `leaving`
    drop(leaving);
    assert_eq!(next_within(&mut staying).await, Some(line(1)));
}

#[tokio::test]
async fn different_groups_each_get_every_event() {
    let broker = broker(10, 10);
    let mut one = broker.join("a", "one", ME);
    let mut two = broker.join("a", "two", ME);
    broker.publish("a", ME, line(1));
    assert_eq!(next_within(&mut one).await, Some(line(1)));
    assert_eq!(next_within(&mut two).await, Some(line(1)));
}

#[test]
fn a_full_queue_drops_its_oldest_event() {
    let broker = broker(0, 2);
    let mut consumer = broker.join("a", "g", ME);
    for n in 0..3 {
        broker.publish("a", ME, line(n));
    }
    assert_eq!(consumer.next_queued(), Some(line(1)));
    assert_eq!(consumer.next_queued(), Some(line(2)));
    assert_eq!(consumer.next_queued(), None);
}

fn small_feed(subscriber_bytes: usize) -> Broker {
    Broker::new(Limits {
        subscriber_bytes,
        ..limits(10, 10)
    })
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_cut_off_and_its_queue_freed() {
    // Each line is 2 bytes; 5 bytes hold two of them.
    let broker = small_feed(5);
    let mut sub = broker.subscribe("a", ME, false, true);
    broker.publish("a", ME, line(1));
    broker.publish("a", ME, line(2));
    assert_eq!(broker.tracked().subscribers, 1);
    broker.publish("a", ME, line(3));
    assert_eq!(broker.tracked().subscribers, 0, "cut off at once");
    let feed = sub.live.as_mut().expect("following");
    assert_eq!(lock(&feed.feed.state).bytes, 0, "queue freed");
    assert!(feed.recv().await.is_err(), "the stream learns it was cut");
}

#[tokio::test]
async fn a_subscriber_that_keeps_up_gets_events_larger_than_its_limit() {
    let broker = small_feed(1);
    let mut sub = broker.subscribe("a", ME, false, true);
    let feed = sub.live.as_mut().expect("following");
    for n in 10..13 {
        broker.publish("a", ME, line(n));
        assert_eq!(feed.recv().await, Ok(line(n)));
    }
}

#[test]
fn names_and_groups_nobody_uses_are_forgotten() {
    // History of at most 4 events of 2 to 5 bytes.
    let broker = Broker::new(Limits {
        history_bytes: 8,
        ..limits(10, 10)
    });
    for n in 0..8000 {
        let name = format!("n{n}");
        let consumer = broker.join(&name, "g", ME);
        let sub = broker.subscribe(&name, ME, false, true);
        broker.publish(&name, ME, line(n));
        drop(sub);
        drop(consumer);
    }
    let tracked = broker.tracked();
    assert!(tracked.names <= 4, "{tracked:?}");
    assert!(tracked.groups <= 4, "{tracked:?}");
    assert_eq!(tracked.subscribers, 0);
    assert!(lock(&broker.inner.state).order.len() <= 2 * 4 + 64);
    // Events kept for absent groups go with the history.
    broker.publish("flush", ME, Bytes::from_static(b"1234567\n"));
    let tracked = broker.tracked();
    assert_eq!((tracked.names, tracked.groups), (1, 0), "{tracked:?}");
}

#[test]
fn order_does_not_grow_with_events_dropped_by_retention() {
    let broker = broker(2, 10);
    broker.publish("pinned", ME, line(0));
    for n in 0..10_000 {
        broker.publish("busy", ME, line(n));
    }
    assert!(lock(&broker.inner.state).order.len() <= 2 * 3 + 64);
}

#[tokio::test]
async fn a_forgotten_group_is_created_again_with_what_it_would_have_received() {
    let broker = broker(10, 10);
    let mut consumer = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut consumer).await, None);
    drop(consumer);
    assert_eq!(broker.tracked().groups, 0, "idle, nothing retained");
    broker.publish("a", ME, line(1));
    let mut again = broker.join("a", "g", ME);
    assert_eq!(next_within(&mut again).await, Some(line(1)));
    drop(again);
    // Retained events of its identity keep the group (and its cursor).
    assert_eq!(broker.tracked().groups, 1);
    let mut third = broker.join("a", "g", ME);
    assert_eq!(third.next_queued(), None, "not delivered twice");
}

#[test]
fn publish_reports_listeners_of_other_identities() {
    let broker = broker(10, 10);
    let _theirs = broker.join("a", "g", "them");
    let _sub = broker.subscribe("a", "someone", false, true);
    let reach = broker.publish("a", ME, line(1));
    assert_eq!(reach.listeners, 0);
    let mut others: Vec<&str> = reach.other_identities.iter().map(|i| &**i).collect();
    others.sort_unstable();
    assert_eq!(others, ["someone", "them"]);
    let _mine = broker.join("a", "g", ME);
    assert_eq!(broker.publish("a", ME, line(2)).listeners, 1);
}

#[tokio::test]
async fn an_absent_group_keeps_what_the_history_keeps() {
    let broker = broker(2, 10);
    let consumer = broker.join("a", "g", ME);
    broker.publish("a", ME, line(0));
    drop(consumer);
    assert_eq!(broker.tracked().groups, 1, "kept: an event waits in it");
    for n in 1..4 {
        broker.publish("a", ME, line(n));
    }
    // Retention 2: events 0 and 1 left the history, so the absent group
    // let them go too.
    let mut again = broker.join("a", "g", ME);
    assert_eq!(again.next_queued(), Some(line(2)));
    assert_eq!(again.next_queued(), Some(line(3)));
    assert_eq!(again.next_queued(), None);
}
