//! Wire formats with no network: the base URL, outgoing and incoming
//! envelopes, secrets and backoff bounds.

use std::time::Duration;

use bus_events_client::ndjson::Frame;
use bus_events_client::{
    Backoff, Envelope, EventsUrl, OutboundEvent, Secret, StreamItem, TokenSource, UrlError,
};
use serde_json::json;

// --- URL -----------------------------------------------------------------

fn endpoints(input: &str) -> (String, String, String) {
    let url = EventsUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
    (
        url.base().to_owned(),
        url.publish_url().to_owned(),
        url.stream_url().to_owned(),
    )
}

#[test]
fn a_bare_origin_gets_the_api_paths() {
    for input in [
        "http://127.0.0.1:8081",
        "http://127.0.0.1:8081/",
        "  http://127.0.0.1:8081//  ",
    ] {
        assert_eq!(
            endpoints(input),
            (
                "http://127.0.0.1:8081".to_owned(),
                "http://127.0.0.1:8081/api/v1/events".to_owned(),
                "http://127.0.0.1:8081/api/v1/events/stream".to_owned(),
            ),
            "{input}"
        );
    }
}

#[test]
fn a_path_prefix_is_kept() {
    for input in ["http://host:8080/local/v1", "http://host:8080/local/v1/"] {
        assert_eq!(
            endpoints(input),
            (
                "http://host:8080/local/v1".to_owned(),
                "http://host:8080/local/v1/api/v1/events".to_owned(),
                "http://host:8080/local/v1/api/v1/events/stream".to_owned(),
            ),
            "{input}"
        );
    }
}

#[test]
fn a_full_collection_url_is_reduced_to_its_base() {
    for (input, base) in [
        ("https://bus.example/api/v1/events", "https://bus.example"),
        ("https://bus.example/api/v1/events/", "https://bus.example"),
        (
            "http://host:8080/local/v1/api/v1/events",
            "http://host:8080/local/v1",
        ),
        (
            "http://host:8080/local/v1/api/v1/events/",
            "http://host:8080/local/v1",
        ),
    ] {
        let (got_base, publish, stream) = endpoints(input);
        assert_eq!(got_base, base, "{input}");
        assert_eq!(publish, format!("{base}/api/v1/events"), "{input}");
        assert_eq!(stream, format!("{base}/api/v1/events/stream"), "{input}");
    }
}

#[test]
fn the_display_form_is_the_base_and_from_str_works() {
    let url: EventsUrl = "http://host:8080/local/v1/".parse().unwrap();
    assert_eq!(url.to_string(), "http://host:8080/local/v1");
}

#[test]
fn other_schemes_are_rejected() {
    assert!(matches!(
        EventsUrl::parse("ftp://host/api"),
        Err(UrlError::UnsupportedScheme { scheme }) if scheme == "ftp"
    ));
    assert!(matches!(
        EventsUrl::parse("ws://host"),
        Err(UrlError::UnsupportedScheme { .. })
    ));
}

#[test]
fn garbage_is_rejected() {
    for input in [
        "",
        "not a url",
        "127.0.0.1:8081",
        "http://",
        "/api/v1/events",
    ] {
        assert!(EventsUrl::parse(input).is_err(), "{input:?} was accepted");
    }
    assert!(matches!(
        EventsUrl::parse("http://host/?x=1"),
        Err(UrlError::QueryOrFragment)
    ));
    assert!(matches!(
        EventsUrl::parse("http://user:pw@host/"),
        Err(UrlError::Credentials)
    ));
}

/// Issue 16 item 8a: no credential of a URL reaches an error message,
/// whether the URL is refused for carrying it or is not a URL at all.
#[test]
fn no_error_about_a_url_shows_its_password() {
    for input in [
        "http://user:S3cretPASS@host/",
        "http://user:S3cretPASS@[::1/",
        "http://user:S3cretPASS@host:notaport/",
        "http://S3cretPASS@host:99999/",
        "ftp://user:S3cretPASS@host/",
        "http://host/?token=S3cretPASS",
        "http://host:bad/#S3cretPASS",
    ] {
        let err = EventsUrl::parse(input).expect_err(input);
        let mut shown = format!("{err} {err:?}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            shown.push_str(&format!(" {cause}"));
            source = cause.source();
        }
        assert!(!shown.contains("S3cretPASS"), "{input}: {shown}");
    }
}

#[test]
fn redact_url_keeps_the_host_and_hides_user_information_and_query() {
    for (input, shown) in [
        (
            "http://user:pw@host:8080/local/v1",
            "http://***@host:8080/local/v1",
        ),
        ("http://pw@host", "http://***@host"),
        ("https://a:b@c@host/x?y=1#z", "https://***@host/x?***"),
        ("http://host:8080/p", "http://host:8080/p"),
        ("user:pw@host/x", "***@host/x"),
        ("not a url", "not a url"),
        ("tcp://u:p@10.0.0.5:2376", "tcp://***@10.0.0.5:2376"),
    ] {
        assert_eq!(bus_events_client::redact_url(input), shown, "{input}");
    }
}

// --- Outgoing envelope -----------------------------------------------------

#[test]
fn an_outbound_event_carries_both_correlation_spellings_and_no_error_on_success() {
    let event = OutboundEvent {
        name: "bus.docker.run.response".to_owned(),
        correlation_id: "c-1".to_owned(),
        payload: json!({"run_id": "r1"}),
        error: None,
    };
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({
            "name": "bus.docker.run.response",
            "correlationId": "c-1",
            "correlation_id": "c-1",
            "payload": {"run_id": "r1"},
        })
    );
}

#[test]
fn an_outbound_event_carries_the_error_when_present() {
    let event = OutboundEvent {
        name: "n".to_owned(),
        correlation_id: "c".to_owned(),
        payload: json!({}),
        error: Some(json!({"code": "timeout", "message": "too slow"})),
    };
    let value = serde_json::to_value(&event).unwrap();
    assert_eq!(
        value["error"],
        json!({"code": "timeout", "message": "too slow"})
    );
}

// --- Incoming envelope -----------------------------------------------------

fn event(line: &str) -> Envelope {
    match StreamItem::from_line(line.as_bytes()) {
        StreamItem::Event(envelope) => envelope,
        other => panic!("{line}: {other:?}"),
    }
}

fn malformed(item: StreamItem) -> (Option<String>, Option<String>, String) {
    match item {
        StreamItem::Malformed {
            name,
            correlation_id,
            reason,
        } => (name, correlation_id, reason),
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn the_correlation_id_is_read_from_either_spelling() {
    assert_eq!(
        event(r#"{"name":"n","correlationId":"c-camel"}"#).correlation_id,
        Some("c-camel".to_owned())
    );
    assert_eq!(
        event(r#"{"name":"n","correlation_id":"c-snake"}"#).correlation_id,
        Some("c-snake".to_owned())
    );
    assert_eq!(
        event(r#"{"name":"n","correlation_id":"old","correlationId":"new"}"#).correlation_id,
        Some("new".to_owned())
    );
    assert_eq!(
        event(r#"{"name":"n","correlationId":"","correlation_id":"old"}"#).correlation_id,
        Some("old".to_owned())
    );
    assert_eq!(event(r#"{"name":"n"}"#).correlation_id, None);
}

#[test]
fn the_owner_is_identity_id_else_account_id() {
    assert_eq!(
        event(r#"{"name":"n","identity_id":"i-1","account_id":"a-1"}"#).owner,
        Some("i-1".to_owned())
    );
    assert_eq!(
        event(r#"{"name":"n","account_id":"a-1"}"#).owner,
        Some("a-1".to_owned())
    );
    assert_eq!(event(r#"{"name":"n"}"#).owner, None);
}

#[test]
fn unknown_fields_are_ignored_and_a_missing_payload_is_null() {
    let envelope = event(
        r#"{"id":"e-1","name":"bus.docker.run.request","correlationId":"c-1",
            "created_at":"2024-01-01T00:00:00Z","metadata":{"x":[1,2]},
            "payload":{"image":"alpine"}}"#,
    );
    assert_eq!(
        envelope,
        Envelope {
            name: "bus.docker.run.request".to_owned(),
            correlation_id: Some("c-1".to_owned()),
            owner: None,
            payload: json!({"image": "alpine"}),
        }
    );
    assert_eq!(event(r#"{"name":"n"}"#).payload, serde_json::Value::Null);
}

#[test]
fn a_line_that_is_not_json_is_malformed() {
    let (name, correlation_id, reason) = malformed(StreamItem::from_line(b"not json"));
    assert_eq!((name, correlation_id), (None, None));
    assert!(reason.contains("not valid JSON"), "{reason}");
}

#[test]
fn a_json_value_that_is_not_an_object_is_malformed() {
    for line in ["[1,2]", "\"text\"", "42", "null"] {
        let (name, correlation_id, reason) = malformed(StreamItem::from_line(line.as_bytes()));
        assert_eq!((name, correlation_id), (None, None), "{line}");
        assert!(reason.contains("not a JSON object"), "{line}: {reason}");
    }
}

#[test]
fn a_wrong_typed_field_is_malformed_but_keeps_the_readable_ids() {
    let (name, correlation_id, _) = malformed(StreamItem::from_line(
        br#"{"name":"n.request","correlationId":"c-7","identity_id":5,"payload":{}}"#,
    ));
    assert_eq!(name.as_deref(), Some("n.request"));
    assert_eq!(correlation_id.as_deref(), Some("c-7"));

    let (name, correlation_id, _) = malformed(StreamItem::from_line(
        br#"{"name":17,"correlation_id":"c-8"}"#,
    ));
    assert_eq!(name, None);
    assert_eq!(correlation_id.as_deref(), Some("c-8"));
}

#[test]
fn a_missing_name_is_malformed() {
    let (name, correlation_id, reason) = malformed(StreamItem::from_line(
        br#"{"correlationId":"c-9","payload":{}}"#,
    ));
    assert_eq!((name, correlation_id.as_deref()), (None, Some("c-9")));
    assert!(reason.contains("name"), "{reason}");
}

#[test]
fn broken_json_still_yields_the_ids_read_before_the_break() {
    let (name, correlation_id, _) = malformed(StreamItem::from_line(
        br#"{"name":"n.request","correlation_id":"c-3","payload":{"a":"#,
    ));
    assert_eq!(name.as_deref(), Some("n.request"));
    assert_eq!(correlation_id.as_deref(), Some("c-3"));
}

#[test]
fn an_oversized_frame_is_malformed_with_ids_from_its_prefix() {
    let mut line =
        br#"{"name":"bus.docker.run.request","correlationId":"c-big","payload":{"blob":""#.to_vec();
    line.resize(70_000, b'a');
    let frame = Frame::Oversized {
        prefix: line[..64 * 1024].to_vec().into(),
        len: 5 * 1024 * 1024,
    };
    let (name, correlation_id, reason) = malformed(StreamItem::from_frame(&frame, 4 * 1024 * 1024));
    assert_eq!(name.as_deref(), Some("bus.docker.run.request"));
    assert_eq!(correlation_id.as_deref(), Some("c-big"));
    assert!(reason.contains("5242880"), "{reason}");

    // Ids that come after the cut are simply unknown.
    let frame = Frame::Oversized {
        prefix: br#"{"payload":{"blob":"aaaa"#.to_vec().into(),
        len: 5 * 1024 * 1024,
    };
    let (name, correlation_id, _) = malformed(StreamItem::from_frame(&frame, 4 * 1024 * 1024));
    assert_eq!((name, correlation_id), (None, None));
}

#[test]
fn nested_name_fields_are_not_mistaken_for_the_envelope_name() {
    let (name, _, _) = malformed(StreamItem::from_line(
        br#"{"payload":{"name":"inner"},"correlationId":"c","#,
    ));
    assert_eq!(name, None);
}

// --- Secrets and backoff ---------------------------------------------------

#[test]
fn secrets_never_print() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(format!("{secret:?}"), "***");
    let source = TokenSource::Static(secret.clone());
    assert!(!format!("{source:?}").contains("hunter2"));
    assert_eq!(secret.expose_secret(), "hunter2");
}

#[test]
fn backoff_grows_within_its_bounds() {
    let backoff = Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    };
    for attempt in 0..100 {
        let delay = backoff.delay(attempt);
        assert!(
            delay >= backoff.min && delay <= backoff.max,
            "{attempt}: {delay:?}"
        );
        let ceiling = Duration::from_millis(200)
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(backoff.max);
        assert!(
            delay >= ceiling / 2,
            "{attempt}: {delay:?} below half of {ceiling:?}"
        );
    }
    for _ in 0..100 {
        let first = backoff.delay(0);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200));
    }
    assert!(backoff.delay(1000) >= Duration::from_millis(2500));
    assert_eq!(Backoff::PUBLISH_DEFAULT.min, Duration::from_millis(100));
    assert_eq!(Backoff::STREAM_DEFAULT.min, Duration::from_millis(250));
    assert_eq!(Backoff::STREAM_DEFAULT.max, Duration::from_secs(5));
}

#[test]
fn an_array_shaped_like_an_envelope_is_not_an_envelope() {
    // serde would read the envelope struct from this array positionally:
    // name, correlationId, correlation_id, identity_id, account_id, payload.
    let line = br#"["bus.docker.run.request","c-1","c-1",null,null,{"image":"alpine","command":["sh","-c","id"]}]"#;
    let (name, correlation_id, reason) = malformed(StreamItem::from_line(line));
    assert_eq!((name, correlation_id), (None, None));
    assert!(reason.contains("not a JSON object"), "{reason}");
    let padded = b"  \t[\"bus.docker.run.request\",\"c-1\"]";
    assert!(matches!(
        StreamItem::from_line(padded),
        StreamItem::Malformed { .. }
    ));
    // The same envelope as an object is one.
    let object = br#" {"name":"bus.docker.run.request","correlationId":"c-1","payload":{}}"#;
    assert!(matches!(
        StreamItem::from_line(object),
        StreamItem::Event(_)
    ));
}
