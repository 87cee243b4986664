//! Authentication, authorization and request validation at the HTTP edge.

mod common;

use bus_events_local::{mint_token, MintClaims, Secret};
use common::{spawn_server, spawn_server_with, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Checks status and the `{"error":{"type","message"}}` body.
async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
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
        "name=n&delivery=unicast",
        "name=n&delivery=work",
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
