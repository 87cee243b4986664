//! Authentication, authorization and request validation at the HTTP edge.

mod common;

use bus_events_local::{mint_token, MintClaims, Secret};
use common::{numbered, seq_of, spawn_server, spawn_server_with, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Checks status and the `{"error":{"type","message"}}` body.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status, "{}", response.url());
    let body: Value = response.json().await.expect("JSON error body");
    assert_eq!(body["error"]["type"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn publish_with(app: &TestServer, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/events"))
        .json(&json!({"name": "auth.test"}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// A token with hand-written claims, signed with `secret`.
fn signed(secret: &Secret, algorithm: Algorithm, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.expose()),
    )
    .expect("encode")
}

/// Valid claims for `AUDIENCE` with full scope, as a JSON object to edit.
fn claims() -> Value {
    let now = jsonwebtoken::get_current_timestamp();
    json!({
        "sub": "hand-made",
        "aud": bus_events_local::AUDIENCE,
        "scope": "events:send events:listen",
        "iat": now,
        "exp": now + 600,
    })
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

#[tokio::test]
async fn healthz_needs_no_token() {
    let app = spawn_server().await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");
}

#[tokio::test]
async fn bad_credentials_are_unauthorized() {
    let app = spawn_server().await;
    let other = Secret::parse("not-the-server-secret").expect("secret");
    let wrong_audience = MintClaims {
        aud: "someone.else/api".to_owned(),
        ..MintClaims::new("x", "events")
    };
    let cases = [
        ("missing", None),
        ("garbage", Some("not-a-jwt".to_owned())),
        (
            "bad signature",
            Some(mint_token(&other, &MintClaims::new("x", "events")).expect("mint")),
        ),
        (
            "expired",
            Some(signed(&app.secret, Algorithm::HS256, &{
                let mut expired = claims();
                expired["exp"] = json!(jsonwebtoken::get_current_timestamp() - 120);
                expired
            })),
        ),
        (
            "no exp",
            Some(signed(
                &app.secret,
                Algorithm::HS256,
                &without(claims(), "exp"),
            )),
        ),
        (
            "no sub",
            Some(signed(
                &app.secret,
                Algorithm::HS256,
                &without(claims(), "sub"),
            )),
        ),
        (
            "no aud",
            Some(signed(
                &app.secret,
                Algorithm::HS256,
                &without(claims(), "aud"),
            )),
        ),
        (
            "HS384",
            Some(signed(&app.secret, Algorithm::HS384, &claims())),
        ),
        (
            "wrong audience",
            Some(mint_token(&app.secret, &wrong_audience).expect("mint")),
        ),
    ];
    for (case, token) in cases {
        let response = publish_with(&app, token.as_deref()).await;
        assert_eq!(response.status(), 401, "publish, {case}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer",
            "publish, {case}"
        );
        assert_error(response, 401, "invalid_auth").await;

        let response = app.stream_raw("name=auth.test", token.as_deref()).await;
        assert_error(response, 401, "invalid_auth").await;
    }
}

#[tokio::test]
async fn hand_made_tokens_are_accepted_including_an_audience_list() {
    let app = spawn_server().await;
    let token = signed(&app.secret, Algorithm::HS256, &claims());
    assert_eq!(publish_with(&app, Some(&token)).await.status(), 202);

    let mut listed = claims();
    listed["aud"] = json!(["other", bus_events_local::AUDIENCE]);
    let token = signed(&app.secret, Algorithm::HS256, &listed);
    assert_eq!(publish_with(&app, Some(&token)).await.status(), 202);
}

#[tokio::test]
async fn a_token_without_the_scope_is_forbidden() {
    let app = spawn_server().await;

    let listen_only = app.token("events:listen");
    assert_error(
        publish_with(&app, Some(&listen_only)).await,
        403,
        "forbidden",
    )
    .await;

    let send_only = app.token("events:send");
    let response = app.stream_raw("name=auth.test", Some(&send_only)).await;
    assert_error(response, 403, "forbidden").await;

    let unrelated = app.token("profile:read");
    assert_error(publish_with(&app, Some(&unrelated)).await, 403, "forbidden").await;

    let no_scope = signed(&app.secret, Algorithm::HS256, &without(claims(), "scope"));
    assert_error(publish_with(&app, Some(&no_scope)).await, 403, "forbidden").await;
}

#[tokio::test]
async fn old_and_broad_scopes_grant_nothing() {
    let app = spawn_server().await;
    for scope in ["events", "*", "events:read events:write", "events:*"] {
        let token = app.token(scope);
        let response = publish_with(&app, Some(&token)).await;
        assert_eq!(response.status(), 403, "publish with {scope}");
        let response = app
            .stream_raw("name=auth.test&replay=true&follow=false", Some(&token))
            .await;
        assert_eq!(response.status(), 403, "stream with {scope}");
    }
}

#[tokio::test]
async fn invalid_publish_bodies_are_bad_requests() {
    let app = spawn_server().await;
    for body in [
        json!({}),
        json!({"name": ""}),
        json!({"name": 7}),
        json!(["name"]),
        json!({"name": "n", "correlationId": "a", "correlation_id": "b"}),
    ] {
        assert_error(app.publish_raw(&body).await, 400, "bad_request").await;
    }

    let not_json = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(app.token("events:send"))
        .body("{ nope")
        .send()
        .await
        .expect("request");
    assert_error(not_json, 400, "bad_request").await;
}

#[tokio::test]
async fn invalid_stream_queries_are_bad_requests() {
    let app = spawn_server().await;
    let token = app.token("events:listen");
    for query in [
        "",
        "delivery=broadcast",
        "name=n&delivery=fanout",
        "name=n&delivery=unicast&group=has%20space",
        &format!("name=n&delivery=unicast&group={}", "g".repeat(129)),
        "name=n&delivery=unicast&group=g&consumer=%2Fslash",
        "name=n&replay=maybe",
        "name=n&follow=never",
    ] {
        let response = app.stream_raw(query, Some(&token)).await;
        assert_error(response, 400, "bad_request").await;
    }
}

#[tokio::test]
async fn oversized_events_are_refused() {
    let app = spawn_server_with(|config| config.max_event_bytes = 1024).await;
    let big = json!({"name": "big", "payload": "x".repeat(2048)});
    assert_error(app.publish_raw(&big).await, 413, "bad_request").await;

    let small = json!({"name": "big", "payload": "x".repeat(512)});
    assert_eq!(app.publish_raw(&small).await.status(), 202);
}

#[tokio::test]
async fn wildcards_and_malformed_names_are_bad_requests_for_publish_and_stream() {
    let app = spawn_server().await;
    let token = app.token("events:listen");
    for name in [
        "bus.docker.*",
        "bus.%3E",
        "%2A",
        "Bus.docker.run.request",
        "bus..docker",
        ".bus",
        "bus.",
        "bus%20docker",
        "bus%2Fdocker",
    ] {
        let response = app.stream_raw(&format!("name={name}"), Some(&token)).await;
        assert_error(response, 400, "bad_request").await;
        let response = app
            .stream_raw(
                &format!("name={name}&delivery=unicast&group=g"),
                Some(&token),
            )
            .await;
        assert_error(response, 400, "bad_request").await;
    }
    for name in [
        "bus.docker.*",
        "bus.>",
        "*",
        "Bus.docker.run.request",
        "bus..docker",
        "bus.",
        "bus docker",
    ] {
        let response = app.publish_raw(&json!({"name": name})).await;
        assert_error(response, 400, "bad_request").await;
    }
    // Lowercase dot-separated segments of [a-z0-9_-] are fine.
    let ok = app
        .publish_raw(&json!({"name": "bus.docker_x.run-1.request"}))
        .await;
    assert_eq!(ok.status(), 202);
}

#[tokio::test]
async fn the_publish_reply_says_accepted_with_the_id_and_name() {
    let app = spawn_server().await;
    let response = app.publish_raw(&json!({"name": "app.ping"})).await;
    assert!(response.status().is_success());
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["accepted"], true);
    assert_eq!(body["name"], "app.ping");
    assert!(
        body["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(3), "{body}");
}

#[tokio::test]
async fn a_unicast_stream_without_a_group_joins_default() {
    let app = spawn_server().await;
    let mut unnamed = app.open_stream("name=jobs.todo&delivery=unicast").await;
    assert_eq!(app.server.connected_consumers("jobs.todo", "default"), 1);
    let mut named = app
        .open_stream("name=jobs.todo&delivery=work&group=default")
        .await;
    assert_eq!(app.server.connected_consumers("jobs.todo", "default"), 2);
    for seq in 0..4 {
        app.publish(numbered("jobs.todo", seq)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let event = tokio::select! {
            event = unnamed.next_event() => event,
            event = named.next_event() => event,
        };
        assert!(seen.insert(seq_of(&event)), "one group: delivered once");
    }
}

#[tokio::test]
async fn capabilities_answer_without_a_token() {
    let app = spawn_server_with(|config| config.max_event_bytes = 1234).await;
    let response = app
        .client
        .get(app.url("/api/v1/events/capabilities"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["backend"], "memory");
    assert_eq!(body["delivery"], json!(["broadcast", "unicast", "work"]));
    assert_eq!(body["default_group"], "default");
    assert_eq!(body["limits"]["max_event_bytes"], 1234);
    assert!(body["limits"]["subscriber_queue_bytes"].is_u64(), "{body}");
}

#[tokio::test]
async fn a_token_whose_nbf_lies_in_the_future_is_refused() {
    let app = spawn_server().await;
    let now = jsonwebtoken::get_current_timestamp();
    let mut early = claims();
    early["nbf"] = json!(now + 600);
    let token = signed(&app.secret, Algorithm::HS256, &early);
    let response = publish_with(&app, Some(&token)).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["type"], "invalid_auth");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nbf")),
        "{body}"
    );
    let response = app.stream_raw("name=auth.test", Some(&token)).await;
    assert_error(response, 401, "invalid_auth").await;

    // An nbf in the past (or now) is fine.
    let mut ripe = claims();
    ripe["nbf"] = json!(now - 1);
    let token = signed(&app.secret, Algorithm::HS256, &ripe);
    assert_eq!(publish_with(&app, Some(&token)).await.status(), 202);
}
