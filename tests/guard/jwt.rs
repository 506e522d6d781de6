//! JWT access tokens through the guard (feature `jwt`): one decision path for API keys and
//! tokens, the same principal, limits, refusals and audit records.

use std::num::NonZeroU32;

use keygate::{
    ApiKeyGuard, ApiKeyGuardBuilder, ClientAddr, CredentialKind, RateLimit, TokenMessageRejection,
    audit::{MemorySink, Outcome},
    jwt::{HmacSecret, JwtIssuer, JwtVerifier, TokenKind},
    limit::{Clock, FailedAttemptLimiter, InMemoryRateLimit, Quota, Tiers},
    require::RequireScope,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tower::{Layer, ServiceBuilder, util::BoxCloneSyncService};

use crate::{App, Fixture, app, get, opaque_key, routes, support};

const SECRET: &str = "a-secret-of-at-least-32-bytes-for-hs256-tests!";

fn secret() -> HmacSecret {
    HmacSecret::new(SECRET).unwrap()
}

fn issuer() -> JwtIssuer {
    JwtIssuer::hs256(&secret())
}

fn verifier() -> JwtVerifier {
    JwtVerifier::hs256(&secret()).build()
}

fn claims(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// An access token of `sub` with scope `packs:read` in workspace `ws-a`.
fn token(sub: &str) -> String {
    issuer()
        .access(
            sub,
            claims(json!({"scope": "packs:read", "workspaces": ["ws-a"]})),
        )
        .unwrap()
        .expose_secret()
        .to_owned()
}

fn bearer(path: &str, token: &str) -> http::request::Builder {
    get(path).header("authorization", format!("Bearer {token}"))
}

/// Keys (in the fixture's registry) and tokens on one guard.
fn both(configure: impl FnOnce(ApiKeyGuardBuilder) -> ApiKeyGuardBuilder) -> Fixture {
    Fixture::new(|builder| configure(builder.jwt(verifier())))
}

#[tokio::test]
async fn one_guard_admits_an_api_key_and_a_token_as_the_same_kind_of_principal() {
    let fixture = both(|b| b);
    let (key, key_id) = fixture.key().await;

    let by_key = fixture.get_with_key("/whoami", &key).await;
    by_key.assert_ok();
    assert_eq!(by_key.body["id"], "p");
    assert_eq!(by_key.body["key_id"], key_id.as_str());

    let by_token = fixture.send(bearer("/whoami", &token("user-1"))).await;
    by_token.assert_ok();
    assert_eq!(by_token.body["id"], "user-1");
    assert_eq!(by_token.body["key_id"], Value::Null);
    assert_eq!(by_token.body["scopes"], json!(["packs:read"]));
    assert_eq!(by_token.body["workspaces"], json!(["ws-a"]));
    assert_eq!(by_token.body["tier"], "default");

    // The API key may come as a bearer value too: not JWT-shaped, so it is looked up.
    let lookups = fixture.registry.lookups();
    fixture.send(bearer("/whoami", &key)).await.assert_ok();
    assert_eq!(fixture.registry.lookups(), lookups + 1);
    // A token is never looked up in the registry.
    fixture
        .send(bearer("/whoami", &token("user-1")))
        .await
        .assert_ok();
    assert_eq!(fixture.registry.lookups(), lookups + 1);
}

#[tokio::test]
async fn token_refusals_map_onto_the_existing_reasons() {
    let fixture = both(|b| b);
    let expired = issuer()
        .issue_at(
            TokenKind::Access,
            "user-1",
            Map::new(),
            OffsetDateTime::now_utc() - time::Duration::hours(1),
        )
        .unwrap();
    let refresh = issuer().refresh("user-1", Map::new()).unwrap();
    let other =
        JwtIssuer::hs256(&HmacSecret::new("an-other-secret-of-at-least-32-bytes!!").unwrap());
    let forged = other.access("user-1", Map::new()).unwrap();
    let cases = [
        (expired.expose_secret(), "expired_credentials"),
        (refresh.expose_secret(), "invalid_credentials"),
        (forged.expose_secret(), "invalid_credentials"),
        (
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.c2ln",
            "invalid_credentials",
        ),
        ("not.a.jwt", "invalid_credentials"),
    ];
    for (token, reason) in cases {
        fixture
            .send(bearer("/whoami", token))
            .await
            .assert_refusal(401, reason);
    }
    fixture
        .send(get("/whoami"))
        .await
        .assert_refusal(401, "missing_credentials");
    let challenge = fixture.send(get("/whoami")).await;
    assert_eq!(
        challenge.header("www-authenticate"),
        Some("Bearer realm=\"api\"")
    );
}

#[tokio::test]
async fn a_token_only_guard_needs_no_keys_and_refuses_anything_else() {
    let guard = ApiKeyGuard::builder()
        .jwt(verifier())
        .public_path("/health")
        .build()
        .unwrap();
    let app = app(guard);
    let send = |request| support::oneshot(app.clone(), request);

    send(bearer("/whoami", &token("user-1"))).await.assert_ok();
    send(get("/health")).await.assert_ok();
    send(bearer("/whoami", &opaque_key()))
        .await
        .assert_refusal(401, "invalid_credentials");
    send(get("/whoami").header("x-api-key", opaque_key()))
        .await
        .assert_refusal(401, "invalid_credentials");
}

#[tokio::test]
async fn tokens_longer_than_the_key_cap_are_read_keys_are_not() {
    let fixture = both(|b| b);
    let big = issuer()
        .access("user-1", claims(json!({"scope": vec!["s"; 600].join(" ")})))
        .unwrap();
    assert!(big.expose_secret().len() > 1_000);
    fixture
        .send(bearer("/whoami", big.expose_secret()))
        .await
        .assert_ok();
    // An API key over 512 bytes stays malformed.
    fixture
        .get_with_key("/whoami", &"k".repeat(600))
        .await
        .assert_refusal(401, "malformed_credentials");
    // A token over the verifier's cap (8 KiB) too.
    let huge = format!("{}.{}.{}", "a".repeat(10), "b".repeat(9_000), "c");
    fixture
        .send(bearer("/whoami", &huge))
        .await
        .assert_refusal(401, "malformed_credentials");
}

#[tokio::test]
async fn bad_tokens_count_as_failed_attempts() {
    let limiter = FailedAttemptLimiter::new(Quota::per_minute(NonZeroU32::new(2).unwrap()))
        .with_clock(Clock::manual());
    let fixture = both(|b| b.failed_attempts(limiter).client_ip_from_extensions());
    let from_client = |request: http::request::Builder| {
        request.extension(ClientAddr("203.0.113.7".parse().unwrap()))
    };
    for _ in 0..2 {
        fixture
            .send(from_client(bearer("/whoami", "not.a.jwt")))
            .await
            .assert_refusal(401, "invalid_credentials");
    }
    // From the blocked address a token is verified while the shared budget lasts
    // (default 10 per second): a valid one is admitted (a neighbour behind the same NAT),
    // a bad one refused 429.
    fixture
        .send(from_client(bearer("/whoami", &token("user-1"))))
        .await
        .assert_ok();
    for _ in 0..9 {
        fixture
            .send(from_client(bearer("/whoami", "not.a.jwt")))
            .await
            .assert_refusal(429, "too_many_failed_attempts");
    }
    // The budget is spent: refused before any verification, even a valid token.
    fixture
        .send(from_client(bearer("/whoami", &token("user-1"))))
        .await
        .assert_refusal(429, "too_many_failed_attempts");
}

#[tokio::test]
async fn the_rate_limit_counts_per_principal_whichever_token_it_shows() {
    let backend =
        InMemoryRateLimit::new(Tiers::new(Quota::per_minute(NonZeroU32::new(2).unwrap())))
            .with_clock(Clock::manual());
    let fixture = both(|b| b.rate_limit(RateLimit::new(backend)));
    // Two tokens (two `jti`) of one subject share its limit.
    fixture
        .send(bearer("/whoami", &token("user-1")))
        .await
        .assert_ok();
    fixture
        .send(bearer("/whoami", &token("user-1")))
        .await
        .assert_rate_limit(2, 0);
    fixture
        .send(bearer("/whoami", &token("user-1")))
        .await
        .assert_refusal(429, "rate_limited");
    // Another subject has its own.
    fixture
        .send(bearer("/whoami", &token("user-2")))
        .await
        .assert_ok();
}

#[tokio::test]
async fn require_scope_works_for_token_callers() {
    let guard = ApiKeyGuard::builder().jwt(verifier()).build().unwrap();
    let app: App = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(guard)
            .layer(RequireScope::new("packs:write"))
            .service(tower::service_fn(routes)),
    );
    support::oneshot(app.clone(), bearer("/whoami", &token("user-1")))
        .await
        .assert_refusal(403, "insufficient_scope");
    let writer = issuer()
        .access("user-2", claims(json!({"scope": ["packs:write"]})))
        .unwrap();
    support::oneshot(app, bearer("/whoami", writer.expose_secret()))
        .await
        .assert_ok();
}

#[tokio::test]
async fn audit_records_name_the_credential_kind_and_the_token_id_never_the_token() {
    let audit = MemorySink::new();
    let fixture = both(|b| b.audit(audit.clone()));
    let (key, key_id) = fixture.key().await;
    let issued = issuer().access("user-1", Map::new()).unwrap();

    fixture.get_with_key("/whoami", &key).await.assert_ok();
    fixture
        .send(bearer("/whoami", issued.expose_secret()))
        .await
        .assert_ok();
    fixture
        .send(bearer("/whoami", "not.a.jwt"))
        .await
        .assert_refusal(401, "invalid_credentials");

    let events = audit.events();
    assert_eq!(events.len(), 3);
    let (by_key, by_token, refused) = (&events[0], &events[1], &events[2]);
    assert_eq!(by_key.credential, Some(CredentialKind::ApiKey));
    assert_eq!(by_key.key_id, Some(key_id));
    assert_eq!(by_key.token_id, None);
    assert_eq!(by_token.outcome, Outcome::Admitted);
    assert_eq!(by_token.credential, Some(CredentialKind::Jwt));
    assert_eq!(by_token.principal_id.as_deref(), Some("user-1"));
    assert_eq!(by_token.key_id, None);
    assert_eq!(by_token.token_id.as_deref(), Some(issued.token_id.as_str()));
    assert_eq!(refused.reason.as_deref(), Some("invalid_credentials"));
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(issued.expose_secret()));
    assert!(all.contains(r#""credential":"jwt""#), "{all}");
}

#[tokio::test]
async fn the_token_message_preset_answers_the_seed_bodies() {
    let guard = ApiKeyGuard::builder()
        .jwt(verifier())
        .render_with(TokenMessageRejection)
        .build()
        .unwrap();
    let service = guard.layer(tower::service_fn(routes));
    let expired = issuer()
        .issue_at(
            TokenKind::Access,
            "user-1",
            Map::new(),
            OffsetDateTime::now_utc() - time::Duration::hours(1),
        )
        .unwrap();
    for (request, body) in [
        (get("/whoami"), "Missing authentication token"),
        (bearer("/whoami", "a.b.c"), "Invalid authentication token"),
        (
            bearer("/whoami", expired.expose_secret()),
            "Authentication token expired",
        ),
    ] {
        let reply = support::oneshot(service.clone(), request).await;
        assert_eq!(reply.status, 401);
        assert_eq!(
            reply.text,
            format!(r#"{{"error":{{"code":401,"message":"{body}"}}}}"#)
        );
        assert!(reply.header("www-authenticate").is_some());
    }
    let ok = support::oneshot(service, bearer("/whoami", &token("user-1"))).await;
    ok.assert_ok();
}
