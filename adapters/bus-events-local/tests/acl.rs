//! The Bus scope rules at the HTTP edge: every protected operation is
//! refused without its scope and allowed with it, for publishing and
//! listening, request and response names; streams are filtered by identity.

mod common;

use bus_events_local::acl::{
    CONTAINER_ADMIN, CONTAINER_DELETE, CONTAINER_READ, CONTAINER_RUN, EVENTS_LISTEN, EVENTS_SEND,
};
use bus_events_local::{mint_token, MintClaims};
use common::{spawn_server, TestServer};
use serde_json::{json, Value};

/// Every name a container operation uses, with the scope it needs.
fn protected_names() -> Vec<(String, &'static str)> {
    let mut names = Vec::new();
    for prefix in ["bus.containers", "bus.docker"] {
        for (op, scope) in [
            ("status", CONTAINER_READ),
            ("run", CONTAINER_RUN),
            ("input", CONTAINER_RUN),
            ("delete", CONTAINER_DELETE),
            ("runner.status", CONTAINER_ADMIN),
            ("runner.start", CONTAINER_ADMIN),
            ("runner.delete", CONTAINER_ADMIN),
        ] {
            for kind in ["request", "response"] {
                names.push((format!("{prefix}.{op}.{kind}"), scope));
            }
        }
        names.push((format!("{prefix}.run.output"), CONTAINER_RUN));
    }
    names
}

const ALL_SCOPES: [&str; 6] = [
    EVENTS_SEND,
    EVENTS_LISTEN,
    CONTAINER_READ,
    CONTAINER_RUN,
    CONTAINER_DELETE,
    CONTAINER_ADMIN,
];

/// Every scope except `missing`.
fn all_but(missing: &str) -> String {
    ALL_SCOPES
        .iter()
        .filter(|scope| **scope != missing)
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

async fn publish(app: &TestServer, token: &str, name: &str) -> reqwest::Response {
    app.client
        .post(app.url("/api/v1/events"))
        .bearer_auth(token)
        .json(&json!({"name": name, "correlationId": "c"}))
        .send()
        .await
        .expect("publish")
}

async fn forbidden_naming(response: reqwest::Response, scope: &str) {
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.expect("json body");
    assert_eq!(body["error"]["type"], "forbidden", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(scope), "names {scope}: {message}");
}

#[tokio::test]
async fn each_protected_name_needs_its_scope_to_publish() {
    let app = spawn_server().await;
    for (name, scope) in protected_names() {
        let without = app.token(&all_but(scope));
        forbidden_naming(publish(&app, &without, &name).await, scope).await;
        let with = app.token(scope);
        assert_eq!(publish(&app, &with, &name).await.status(), 202, "{name}");
    }
}

#[tokio::test]
async fn each_protected_name_needs_its_scope_to_listen() {
    let app = spawn_server().await;
    for (name, scope) in protected_names() {
        let query = format!("name={name}&delivery=unicast&group=g&follow=false");
        let without = app.token(&all_but(scope));
        forbidden_naming(app.stream_raw(&query, Some(&without)).await, scope).await;
        let with = app.token(scope);
        let response = app.stream_raw(&query, Some(&with)).await;
        assert_eq!(response.status(), 200, "{name}");
    }
}

#[tokio::test]
async fn unprotected_names_need_send_and_listen() {
    let app = spawn_server().await;
    let containers = app.token("container:read container:run container:delete container:admin");
    forbidden_naming(publish(&app, &containers, "app.ping").await, EVENTS_SEND).await;
    let query = "name=app.ping&follow=false";
    forbidden_naming(
        app.stream_raw(query, Some(&containers)).await,
        EVENTS_LISTEN,
    )
    .await;
    assert_eq!(
        publish(&app, &app.token(EVENTS_SEND), "app.ping")
            .await
            .status(),
        202
    );
    let listen = app.token(EVENTS_LISTEN);
    assert_eq!(app.stream_raw(query, Some(&listen)).await.status(), 200);
}

#[tokio::test]
async fn a_bad_token_is_invalid_auth_before_anything_else() {
    let app = spawn_server().await;
    let response = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth("not-a-token")
        .body("not even json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_auth", "{body}");
}

fn token_of(app: &TestServer, sub: &str) -> String {
    mint_token(
        &app.secret,
        &MintClaims::new(sub, "events:send events:listen"),
    )
    .expect("mint")
}

async fn publish_seq(app: &TestServer, token: &str, name: &str, seq: u64) {
    let response = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(token)
        .json(&json!({"name": name, "payload": {"seq": seq}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn listeners_only_receive_events_of_their_own_identity() {
    let app = spawn_server().await;
    let (alice, bob) = (token_of(&app, "alice"), token_of(&app, "bob"));
    let open = |token: String, query: &'static str| {
        let app = &app;
        async move {
            let response = app.stream_raw(query, Some(&token)).await;
            assert_eq!(response.status(), 200);
            common::Lines::new(response)
        }
    };
    let mut alice_all = open(alice.clone(), "name=shared").await;
    let mut bob_all = open(bob.clone(), "name=shared").await;
    let mut alice_work = open(alice.clone(), "name=shared&delivery=unicast&group=g").await;

    publish_seq(&app, &bob, "shared", 1).await;
    publish_seq(&app, &alice, "shared", 2).await;

    let event = alice_all.next_event().await;
    assert_eq!(common::seq_of(&event), 2, "alice never sees bob's event");
    assert_eq!(event["identity_id"], "alice");
    assert_eq!(common::seq_of(&alice_work.next_event().await), 2);
    assert_eq!(common::seq_of(&bob_all.next_event().await), 1);

    // Bob's unicast group of the same name starts with bob's event only.
    let mut bob_work = open(bob, "name=shared&delivery=unicast&group=g&follow=false").await;
    assert_eq!(common::seq_of(&bob_work.next_event().await), 1);
    bob_work.expect_end().await;
}

#[tokio::test]
async fn an_event_published_before_the_first_consumer_reaches_it() {
    let app = spawn_server().await;
    let token = app.token("container:run");
    assert_eq!(
        publish(&app, &token, "bus.docker.run.request")
            .await
            .status(),
        202
    );
    let response = app
        .stream_raw(
            "name=bus.docker.run.request&delivery=unicast&group=workers&consumer=w1",
            Some(&token),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut lines = common::Lines::new(response);
    let event = lines.next_event().await;
    assert_eq!(event["name"], "bus.docker.run.request");
    assert_eq!(event["correlationId"], "c");
}
