//! `mint_token` and `Secret` as other crates use them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use bus_events_local::{mint_token, serve, MintClaims, Secret, ServerConfig, AUDIENCE};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

fn decode(token: &str, secret: &[u8]) -> Value {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.required_spec_claims = HashSet::new();
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(secret), &validation)
        .expect("token decodes with the same secret")
        .claims
}

#[test]
fn minted_claims_round_trip() {
    let secret = Secret::parse("round-trip").expect("secret");
    let claims = MintClaims {
        sub: "worker-7".to_owned(),
        aud: AUDIENCE.to_owned(),
        scope: "events:send events:listen".to_owned(),
        ttl: Duration::from_secs(90),
    };
    let token = mint_token(&secret, &claims).expect("mint");
    let decoded = decode(&token, b"round-trip");
    assert_eq!(decoded["sub"], "worker-7");
    assert_eq!(decoded["aud"], AUDIENCE);
    assert_eq!(decoded["scope"], "events:send events:listen");
    let iat = decoded["iat"].as_u64().expect("iat");
    let exp = decoded["exp"].as_u64().expect("exp");
    assert_eq!(exp - iat, 90);
    let now = jsonwebtoken::get_current_timestamp();
    assert!(iat.abs_diff(now) <= 5, "iat is now");
}

#[test]
fn defaults_send_and_listen_for_an_hour_at_the_api_audience() {
    let claims = MintClaims::new("me", "events:send");
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.ttl, Duration::from_secs(3600));
    assert_eq!(MintClaims::default().scope, "events:send events:listen");
}

#[test]
fn base64_secrets_sign_with_the_decoded_bytes() {
    let raw: &[u8] = b"\x00\xffbinary secret\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let secret = Secret::parse(&format!("base64:{encoded}")).expect("secret");
    assert_eq!(secret.expose(), raw);
    assert_eq!(format!("{secret:?}"), "Secret(***)");

    let token = mint_token(&secret, &MintClaims::default()).expect("mint");
    assert_eq!(decode(&token, raw)["sub"], "local-dev");
}

#[tokio::test]
async fn a_server_with_a_base64_secret_accepts_tokens_for_the_raw_bytes() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(b"shared bytes");
    let config = ServerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Secret::parse(&format!("base64:{encoded}")).expect("secret"),
    );
    let server = serve(config).await.expect("binds");
    let token = mint_token(
        &Secret::parse("shared bytes").expect("secret"),
        &MintClaims::new("b64", "events:send"),
    )
    .expect("mint");

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/events", server.base_url()))
        .bearer_auth(token)
        .json(&json!({"name": "b64"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 202);
    server.shutdown().await;
}
