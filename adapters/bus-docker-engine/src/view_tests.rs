//! Unit tests of `view.rs`: what each event does to the view.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bollard::models::{EventActor, EventMessage, EventMessageTypeEnum};
use bus_docker_domain::container::RunMark;
use bus_docker_domain::container::{ContainerState, ManagedContainer, ManagedFilter};

use super::{apply, change_of, since_param, Change, Entries, Feed, Synced, View, MAX_AGE};
use crate::labels;

fn event(action: &str, id: &str, attributes: &[(&str, &str)], time: i64) -> EventMessage {
    EventMessage {
        typ: Some(EventMessageTypeEnum::CONTAINER),
        action: Some(action.to_owned()),
        actor: Some(EventActor {
            id: Some(id.to_owned()),
            attributes: Some(
                attributes
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }),
        time: Some(time),
        ..EventMessage::default()
    }
}

/// What the engine sends for a managed container: its labels, its name
/// and its image.
fn attrs(name: &str) -> Vec<(&str, &str)> {
    vec![
        (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::RUN_ID, "r1"),
        (labels::RUNNER, "docker@h"),
        (labels::OWNER, "owner-1"),
        ("name", name),
        ("image", "sha256:1"),
    ]
}

fn only(entries: &Entries) -> &ManagedContainer {
    assert_eq!(entries.len(), 1, "{entries:?}");
    entries.values().next().unwrap()
}

#[test]
fn actions_map_to_changes() {
    assert_eq!(change_of("create"), Some(Change::Created));
    for running in ["start", "unpause", "restart"] {
        assert_eq!(
            change_of(running),
            Some(Change::State(ContainerState::Running)),
            "{running}"
        );
    }
    for exited in ["die", "stop"] {
        assert_eq!(
            change_of(exited),
            Some(Change::State(ContainerState::Exited)),
            "{exited}"
        );
    }
    assert_eq!(
        change_of("pause"),
        Some(Change::State(ContainerState::Other("paused".into())))
    );
    assert_eq!(change_of("destroy"), Some(Change::Destroyed));
    assert_eq!(change_of("rename"), Some(Change::Renamed));
    for ignored in [
        "kill",
        "attach",
        "oom",
        "exec_create: sh",
        "health_status: ok",
    ] {
        assert_eq!(change_of(ignored), None, "{ignored}");
    }
}

#[test]
fn a_create_event_builds_the_record_a_listing_gives() {
    let mut entries = Entries::new();
    apply(
        &mut entries,
        &event("create", "abc", &attrs("bus-run-r1"), 1_714_557_600),
    );
    let m = only(&entries);
    assert_eq!(m.container.id, "abc");
    assert_eq!(m.container.name, "bus-run-r1");
    assert_eq!(m.run_id.as_str(), "r1");
    assert_eq!(m.mark, RunMark::Live);
    assert_eq!(m.runner.as_deref(), Some("docker@h"));
    assert_eq!(m.owner.as_ref().map(|o| o.as_str()), Some("owner-1"));
    assert_eq!(m.image_id.as_deref(), Some("sha256:1"));
    assert_eq!(m.state, ContainerState::Created);
    assert_eq!(m.started_at, None);
    assert_eq!(
        m.created_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_714_557_600))
    );
}

#[test]
fn a_container_lives_through_its_events() {
    let mut entries = Entries::new();
    let steps: [(&str, &str, Option<ContainerState>); 5] = [
        ("create", "bus-run-r1", Some(ContainerState::Created)),
        ("start", "bus-run-r1", Some(ContainerState::Running)),
        (
            "pause",
            "bus-run-r1",
            Some(ContainerState::Other("paused".into())),
        ),
        ("unpause", "bus-run-r1", Some(ContainerState::Running)),
        ("die", "bus-run-r1", Some(ContainerState::Exited)),
    ];
    for (action, name, state) in steps {
        apply(&mut entries, &event(action, "abc", &attrs(name), 1));
        assert_eq!(Some(&only(&entries).state), state.as_ref(), "{action}");
    }
    apply(
        &mut entries,
        &event("rename", "abc", &attrs("bus-run-r1.deleted"), 2),
    );
    let m = only(&entries);
    assert_eq!(
        (m.container.name.as_str(), &m.mark),
        ("bus-run-r1.deleted", &RunMark::Deleted)
    );
    assert_eq!(m.state, ContainerState::Exited, "a rename keeps the state");
    apply(&mut entries, &event("destroy", "abc", &attrs("x"), 3));
    assert!(entries.is_empty());
}

#[test]
fn events_of_containers_the_view_does_not_hold_add_nothing() {
    let mut entries = Entries::new();
    for action in ["start", "die", "rename", "pause", "destroy"] {
        apply(
            &mut entries,
            &event(action, "gone", &attrs("bus-run-r1"), 1),
        );
    }
    assert!(entries.is_empty(), "{entries:?}");
    let mut other = event("create", "img", &attrs("bus-run-r1"), 1);
    other.typ = Some(EventMessageTypeEnum::IMAGE);
    apply(&mut entries, &other);
    assert!(entries.is_empty(), "only container events count");
}

#[test]
fn a_create_event_of_a_known_container_only_brings_the_time() {
    let mut entries = Entries::new();
    apply(
        &mut entries,
        &event("create", "abc", &attrs("bus-run-r1"), 5),
    );
    // This worker marked it (a write) before the event of the create came.
    super::renamed(entries.get_mut("abc").unwrap(), "bus-run-r1.answered");
    entries.get_mut("abc").unwrap().created_at = None;
    apply(
        &mut entries,
        &event("create", "abc", &attrs("bus-run-r1"), 7),
    );
    let m = only(&entries);
    assert_eq!(
        m.mark,
        RunMark::Answered,
        "a late create does not undo a write"
    );
    assert_eq!(
        m.created_at,
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(7))
    );
}

#[test]
fn events_before_the_list_wait_and_apply_after_it() {
    let synced = Synced {
        state: std::sync::Mutex::new(Feed::Pending(Vec::new())),
        connected: true.into(),
        stop: tokio_util::sync::CancellationToken::new(),
        built: Instant::now(),
    };
    // Between the engine's clock read and the list: created, then removed.
    synced.take(event("create", "a", &attrs("bus-run-r1"), 1));
    synced.take(event("destroy", "a", &attrs("bus-run-r1"), 2));
    synced.take(event("create", "b", &attrs("bus-run-r1"), 3));
    // The list ran before `a` was removed: it still shows `a`.
    let mut a = Entries::new();
    apply(&mut a, &event("create", "a", &attrs("bus-run-r1"), 1));
    synced.listed(a.into_values().collect());
    let feed = synced.lock();
    let Feed::Listed(entries) = &*feed else {
        panic!("listed")
    };
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        vec!["b"],
        "converges to what the engine holds"
    );
}

#[test]
fn since_is_unix_seconds_with_nanoseconds() {
    let at = SystemTime::UNIX_EPOCH + Duration::new(1_714_557_600, 5);
    assert_eq!(since_param(at), "1714557600.000000005");
}

#[test]
fn a_view_older_than_its_max_age_is_not_trusted() {
    let view_of = |age: Duration| {
        let synced = Synced {
            state: std::sync::Mutex::new(Feed::Listed(Entries::new())),
            connected: true.into(),
            stop: tokio_util::sync::CancellationToken::new(),
            built: Instant::now()
                .checked_sub(age)
                .expect("a monotonic clock this old"),
        };
        let view = View::new();
        *view.current() = Some(Arc::new(synced));
        view
    };
    let all = ManagedFilter::all();
    assert_eq!(view_of(Duration::ZERO).answer(&all), Some(Vec::new()));
    assert_eq!(view_of(MAX_AGE + Duration::from_secs(1)).answer(&all), None);
}
