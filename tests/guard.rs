//! The guard's contract, end to end: a real axum server on a loopback port, a real HTTP
//! client, one test per refusal row of DESIGN.md, the sources, the allowlist, the
//! registry's lifecycle (rotation, revocation), build-time errors, backends that fail or
//! answer late, body types other than axum's, the audit trail, and secrets that must never
//! show up anywhere.
//!
//! Rate limiting is tested in `tests/rate_limit.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    convert::Infallible,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::ConnectInfo,
    middleware::{self, Next},
    routing::get,
};
use bytes::Bytes;
use common::{CountingRegistry, TestServer, assert_ok, assert_refusal, send};
use futures_util::future::join_all;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use keygate::{
    ApiKey, ApiKeyGuard, ApiKeyGuardBuilder, BackendFuture, BuildError, ClientAddr, EmptyRejection,
    InMemoryRegistry, IssuedKey, KeyDigest, KeyError, KeyGrant, KeyId, KeyPrefix, KeyRecord,
    KeyRegistry, Principal, RegistryError,
    audit::{AuditEvent, JsonLinesSink, MemorySink, Outcome},
    registry::LookupFuture,
};
use reqwest::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{ServiceBuilder, ServiceExt};

// ---------------------------------------------------------------------------------------
// The application under test

/// What the handler sees of the caller.
async fn whoami(Extension(principal): Extension<Principal>) -> Json<Value> {
    Json(json!({
        "id": principal.id(),
        "key_id": principal.key_id().as_str(),
        "workspaces": principal.workspaces(),
        "scopes": principal.scopes(),
        "tier": principal.tier(),
    }))
}

/// A router with a protected route, a public one, look-alikes of the public one, and a
/// route the guard's configuration never mentions.
fn app(guard: ApiKeyGuard) -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/health", get(|| async { "ok" }))
        .route("/health/", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/admin/secret", get(|| async { "secret" }))
        .layer(guard)
}

/// A server whose guard looks keys up in a [`CountingRegistry`].
struct Fixture {
    server: TestServer,
    registry: Arc<CountingRegistry>,
}

impl Fixture {
    /// The guard made by `configure` from a builder that already has the registry.
    async fn new(configure: impl FnOnce(ApiKeyGuardBuilder) -> ApiKeyGuardBuilder) -> Self {
        let registry = Arc::new(CountingRegistry::default());
        let builder = ApiKeyGuard::builder().shared_registry(registry.clone());
        let guard = configure(builder).build().unwrap();
        let server = TestServer::start(app(guard)).await;
        Self { server, registry }
    }

    async fn issue(&self, grant: KeyGrant) -> IssuedKey {
        self.registry.issue(grant).await.unwrap()
    }

    /// A fresh key of principal `p`, its text, and its id.
    async fn key(&self) -> (String, KeyId) {
        let issued = self.issue(KeyGrant::new("p")).await;
        (issued.key.expose_secret().to_owned(), issued.record.key_id)
    }

    async fn get_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        send(self.server.get_with_key(path, key)).await
    }
}

// ---------------------------------------------------------------------------------------
// Keys

/// A generated key that no registry knows.
fn unregistered_key() -> String {
    ApiKey::generate(&KeyPrefix::default())
        .unwrap()
        .0
        .expose_secret()
        .to_owned()
}

/// An opaque key like `openssl rand -base64 32` makes (here 64 hex digits).
fn opaque_key() -> String {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// The 32-character secret part of a generated key `<prefix>_<key id>_<secret><checksum>`.
fn secret_part(key: &str) -> &str {
    let rest = key.splitn(3, '_').nth(2).unwrap();
    &rest[..32]
}

/// `key` with one character of its secret part changed: the checksum no longer matches.
fn tampered(key: &str) -> String {
    let at = key.len() - 6 - 10;
    let mut bytes = key.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

/// A generated-format key with key id `key_id`, secret `secret` and a correct checksum,
/// made without the crate (the checksum is the CRC32 of everything before it, as 6 base62
/// digits, most significant first).
fn forge(key_id: &KeyId, secret: &str) -> String {
    const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body = format!("kg_{key_id}_{secret}");
    let mut value = u64::from(crc32fast::hash(body.as_bytes()));
    let mut sum = [b'0'; 6];
    for slot in sum.iter_mut().rev() {
        *slot = BASE62[usize::try_from(value % 62).unwrap()];
        value /= 62;
    }
    format!("{body}{}", std::str::from_utf8(&sum).unwrap())
}

fn minutes_ago(minutes: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::minutes(minutes)
}

// ---------------------------------------------------------------------------------------
// Credential refusals, one per row of the contract

#[tokio::test]
async fn missing_credentials_is_401_with_www_authenticate() {
    let f = Fixture::new(|b| b).await;
    let headers = assert_refusal(
        send(f.server.get("/whoami")).await,
        401,
        "missing_credentials",
    )
    .await;
    assert_eq!(headers[WWW_AUTHENTICATE], r#"ApiKey realm="api""#);

    // Sources that are not configured are not read: they do not count as a credential.
    let (key, _) = f.key().await;
    for request in [
        f.server
            .get("/whoami")
            .header("authorization", format!("Bearer {key}")),
        f.server.get(&format!("/whoami?token={key}")),
        f.server
            .get("/whoami")
            .header("sec-websocket-protocol", format!("keygate.key.{key}")),
    ] {
        assert_refusal(send(request).await, 401, "missing_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn empty_credentials_are_malformed() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol()).await;
    for request in [
        f.server.get("/whoami").header("x-api-key", ""),
        f.server.get("/whoami").header("x-api-key", "   "),
        f.server.get("/whoami").header("authorization", "Bearer "),
        f.server.get("/whoami").header("authorization", "Bearer"),
        f.server.get("/whoami?token="),
        f.server
            .get("/whoami")
            .header("sec-websocket-protocol", "json, keygate.key."),
    ] {
        assert_refusal(send(request).await, 401, "malformed_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn too_long_credentials_are_malformed() {
    let f = Fixture::new(|b| b).await;
    for len in [513, 4096] {
        let response = f.get_with_key("/whoami", &"a".repeat(len)).await;
        assert_refusal(response, 401, "malformed_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);

    // 512 bytes is within the default cap: looked up, and unknown.
    let response = f.get_with_key("/whoami", &"a".repeat(512)).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    assert_eq!(f.registry.lookups_by_digest(), 1);
}

#[tokio::test]
async fn custom_length_cap_is_enforced() {
    // Lowered to exactly the length of a generated key.
    let f = Fixture::new(|b| b.max_credential_len(54)).await;
    let (key, _) = f.key().await;
    assert_eq!(key.len(), 54);
    assert_ok(f.get_with_key("/whoami", &key).await).await;
    let response = f.get_with_key("/whoami", &format!("{key}x")).await;
    assert_refusal(response, 401, "malformed_credentials").await;
    let response = f.get_with_key("/whoami", &"b".repeat(55)).await;
    assert_refusal(response, 401, "malformed_credentials").await;
    assert_eq!(f.registry.lookups(), 1);

    // Raised above the default: a 600-character opaque key now works.
    let f = Fixture::new(|b| b.max_credential_len(1024)).await;
    let long = "k".repeat(600);
    f.registry
        .inner
        .insert_key(&ApiKey::new(long.clone()).unwrap(), KeyGrant::new("long"))
        .unwrap();
    let body = assert_ok(f.get_with_key("/whoami", &long).await).await;
    assert!(body.contains(r#""id":"long""#), "{body}");
    let response = f.get_with_key("/whoami", &"k".repeat(1025)).await;
    assert_refusal(response, 401, "malformed_credentials").await;
}

#[tokio::test]
async fn credentials_with_bytes_outside_visible_ascii_are_malformed() {
    let f = Fixture::new(|b| b.query("token")).await;
    let (key, _) = f.key().await;
    let raw: [&[u8]; 4] = [
        // UTF-8 "é", sent as raw bytes.
        b"caf\xc3\xa9-0123456789abcdef0123456789abcdef",
        // Latin-1 bytes that are not UTF-8 at all.
        b"\xff\xfe0123456789abcdef0123456789abcdef",
        b"0123456789abcdef 0123456789abcdef",
        b"0123456789abcdef\t0123456789abcdef",
    ];
    for bytes in raw {
        let request = f
            .server
            .get("/whoami")
            .header("x-api-key", HeaderValue::from_bytes(bytes).unwrap());
        assert_refusal(send(request).await, 401, "malformed_credentials").await;
    }
    // A valid key with a non-ASCII byte appended is not "nearly valid".
    let mut bytes = key.as_bytes().to_vec();
    bytes.push(0xe9);
    let request = f
        .server
        .get("/whoami")
        .header("x-api-key", HeaderValue::from_bytes(&bytes).unwrap());
    assert_refusal(send(request).await, 401, "malformed_credentials").await;

    // The query parameter is percent-decoded before the check.
    for query in ["caf%C3%A9%20and%20more", "a%00b", "a%20b", "a+b"] {
        let response = send(f.server.get(&format!("/whoami?token={query}"))).await;
        assert_refusal(response, 401, "malformed_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn credentials_given_twice_are_malformed() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol()).await;
    // Refused even when both copies are the same valid key.
    let (key, _) = f.key().await;
    for request in [
        f.server
            .get("/whoami")
            .header("x-api-key", &key)
            .header("X-API-Key", &key),
        f.server
            .get("/whoami")
            .header("authorization", format!("Bearer {key}"))
            .header("authorization", format!("Bearer {key}")),
        f.server.get(&format!("/whoami?token={key}&token={key}")),
        f.server.get("/whoami").header(
            "sec-websocket-protocol",
            format!("keygate.key.{key}, keygate.key.{key}"),
        ),
        f.server
            .get("/whoami")
            .header("sec-websocket-protocol", format!("keygate.key.{key}"))
            .header("sec-websocket-protocol", format!("keygate.key.{key}")),
    ] {
        assert_refusal(send(request).await, 401, "malformed_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn credentials_in_two_sources_at_once_are_malformed() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol()).await;
    let (key, _) = f.key().await;
    let (other, _) = f.key().await;
    for (first, second) in [(&key, &key), (&key, &other)] {
        for request in [
            f.server
                .get("/whoami")
                .header("x-api-key", first)
                .header("authorization", format!("Bearer {second}")),
            f.server
                .get(&format!("/whoami?token={second}"))
                .header("x-api-key", first),
            f.server
                .get("/whoami")
                .header("authorization", format!("Bearer {first}"))
                .header("sec-websocket-protocol", format!("keygate.key.{second}")),
        ] {
            assert_refusal(send(request).await, 401, "malformed_credentials").await;
        }
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn basic_authorization_is_malformed_when_bearer_is_enabled() {
    let f = Fixture::new(|b| b.bearer()).await;
    let (key, _) = f.key().await;
    let basic = "Basic dXNlcjpwYXNzd29yZA==";
    let request = f.server.get("/whoami").header("authorization", basic);
    let headers = assert_refusal(send(request).await, 401, "malformed_credentials").await;
    assert_eq!(headers[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
    // Even next to a valid key in the X-API-Key header.
    let request = f
        .server
        .get_with_key("/whoami", &key)
        .header("authorization", basic);
    assert_refusal(send(request).await, 401, "malformed_credentials").await;
    assert_eq!(f.registry.lookups(), 0);

    // Without the Bearer source, `Authorization` is not a credential: ignored.
    let f = Fixture::new(|b| b).await;
    let (key, _) = f.key().await;
    let request = f.server.get("/whoami").header("authorization", basic);
    assert_refusal(send(request).await, 401, "missing_credentials").await;
    let request = f
        .server
        .get_with_key("/whoami", &key)
        .header("authorization", basic);
    assert_ok(send(request).await).await;
}

#[tokio::test]
async fn unknown_key_is_401_invalid_credentials() {
    let f = Fixture::new(|b| b).await;
    let (known, known_id) = f.key().await;

    // An opaque key nobody registered: one lookup by digest.
    let response = f.get_with_key("/whoami", &opaque_key()).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    assert_eq!(
        (f.registry.lookups_by_id(), f.registry.lookups_by_digest()),
        (0, 1)
    );

    // A well-formed generated key with a valid checksum that nobody registered: one
    // lookup by key id.
    let response = f.get_with_key("/whoami", &unregistered_key()).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    assert_eq!(
        (f.registry.lookups_by_id(), f.registry.lookups_by_digest()),
        (1, 1)
    );

    // The key id of a real key with another secret and a correct checksum: found by id,
    // refused by the digest comparison.
    assert_eq!(forge(&known_id, secret_part(&known)), known, "forge works");
    let forged = forge(&known_id, &"Z".repeat(32));
    assert!(ApiKey::new(forged.clone()).is_ok(), "checksum is valid");
    let response = f.get_with_key("/whoami", &forged).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    assert_eq!(f.registry.lookups_by_id(), 2);

    // Too short to be any key: refused without a lookup.
    let response = f.get_with_key("/whoami", "short-key").await;
    assert_refusal(response, 401, "invalid_credentials").await;
    assert_eq!(f.registry.lookups(), 3);

    // The real key still works.
    assert_ok(f.get_with_key("/whoami", &known).await).await;
}

#[tokio::test]
async fn bad_checksum_is_401_invalid_credentials_without_a_registry_lookup() {
    let f = Fixture::new(|b| b).await;
    let (key, _) = f.key().await;
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '0' { '1' } else { '0' });
    for garbage in [tampered(&key), bad_checksum] {
        assert!(matches!(
            ApiKey::new(garbage.clone()),
            Err(KeyError::BadChecksum)
        ));
        let response = f.get_with_key("/whoami", &garbage).await;
        assert_refusal(response, 401, "invalid_credentials").await;
    }
    assert_eq!(
        f.registry.lookups(),
        0,
        "garbage never reaches the registry"
    );

    assert_ok(f.get_with_key("/whoami", &key).await).await;
    assert_eq!(f.registry.lookups(), 1);
}

#[tokio::test]
async fn expired_key_is_401_expired_credentials() {
    let f = Fixture::new(|b| b).await;
    let expired = f.issue(KeyGrant::new("p").expires_at(minutes_ago(1))).await;
    let response = f.get_with_key("/whoami", expired.key.expose_secret()).await;
    assert_refusal(response, 401, "expired_credentials").await;

    // A key that expires later works until then.
    let later = f
        .issue(KeyGrant::new("p").expires_at(minutes_ago(-60)))
        .await;
    assert_ok(f.get_with_key("/whoami", later.key.expose_secret()).await).await;

    // An opaque key that expired (looked up by digest).
    let opaque = ApiKey::new(opaque_key()).unwrap();
    f.registry
        .inner
        .insert_key(&opaque, KeyGrant::new("legacy").expires_at(minutes_ago(10)))
        .unwrap();
    let response = f.get_with_key("/whoami", opaque.expose_secret()).await;
    assert_refusal(response, 401, "expired_credentials").await;
}

#[tokio::test]
async fn revoked_key_is_401_revoked_credentials() {
    let f = Fixture::new(|b| b).await;
    let (key, key_id) = f.key().await;
    f.registry
        .revoke(&key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let response = f.get_with_key("/whoami", &key).await;
    assert_refusal(response, 401, "revoked_credentials").await;

    // Revoked and expired: revocation wins.
    let both = f.issue(KeyGrant::new("p").expires_at(minutes_ago(5))).await;
    f.registry
        .revoke(&both.record.key_id, minutes_ago(1))
        .await
        .unwrap();
    let response = f.get_with_key("/whoami", both.key.expose_secret()).await;
    assert_refusal(response, 401, "revoked_credentials").await;
}

// ---------------------------------------------------------------------------------------
// Sources

/// Sends `GET /whoami` with the raw header lines `headers` (names exactly as written) and
/// returns the status and the whole response text.
async fn raw_get(addr: SocketAddr, headers: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text["HTTP/1.1 ".len().."HTTP/1.1 200".len()]
        .parse()
        .unwrap();
    (status, text)
}

#[tokio::test]
async fn header_names_are_case_insensitive() {
    let f = Fixture::new(|b| b.header("X-API-Key")).await;
    let (key, _) = f.key().await;
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key", "x-ApI-kEy"] {
        let (status, text) = raw_get(f.server.addr, &format!("{name}: {key}\r\n")).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains(r#""id":"p""#), "{text}");
    }
    // Two spellings of one name are the same header given twice.
    let (status, text) = raw_get(
        f.server.addr,
        &format!("X-API-KEY: {key}\r\nx-api-key: {key}\r\n"),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("malformed_credentials"), "{text}");

    // A client that sends Title-Case names.
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_title_case_headers()
        .build()
        .unwrap();
    let response = client
        .get(f.server.url("/whoami"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_ok(response).await;
}

#[tokio::test]
async fn custom_header_name_replaces_x_api_key() {
    let f = Fixture::new(|b| b.header("X-Coordinator-Key")).await;
    let (key, _) = f.key().await;
    let request = f.server.get("/whoami").header("x-coordinator-key", &key);
    assert_ok(send(request).await).await;

    // The default header is no longer read.
    let headers = assert_refusal(
        f.get_with_key("/whoami", &key).await,
        401,
        "missing_credentials",
    )
    .await;
    assert_eq!(headers[WWW_AUTHENTICATE], r#"ApiKey realm="api""#);
    let request = f
        .server
        .get_with_key("/whoami", &key)
        .header("X-Coordinator-Key", &key);
    assert_ok(send(request).await).await;
}

#[tokio::test]
async fn bearer_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.bearer()).await;
    let (key, _) = f.key().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = f
            .server
            .get("/whoami")
            .header("authorization", format!("{scheme} {key}"));
        let body = assert_ok(send(request).await).await;
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // The X-API-Key header keeps working next to it.
    assert_ok(f.get_with_key("/whoami", &key).await).await;
    let headers = assert_refusal(
        send(f.server.get("/whoami")).await,
        401,
        "missing_credentials",
    )
    .await;
    assert_eq!(headers[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
}

#[tokio::test]
async fn query_parameter_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.query("token")).await;
    let (key, _) = f.key().await;
    for path in [
        format!("/whoami?token={key}"),
        format!("/whoami?job=7&token={key}&page=2"),
    ] {
        let body = assert_ok(send(f.server.get(&path)).await).await;
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // Another parameter name is not the credential.
    let response = send(f.server.get(&format!("/whoami?key={key}"))).await;
    assert_refusal(response, 401, "missing_credentials").await;
}

#[tokio::test]
async fn websocket_protocol_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.websocket_protocol()).await;
    let (key, _) = f.key().await;
    for value in [
        format!("keygate.key.{key}"),
        format!("json, keygate.key.{key}"),
        format!("keygate.key.{key}, graphql-ws"),
    ] {
        let request = f
            .server
            .get("/whoami")
            .header("sec-websocket-protocol", value);
        let body = assert_ok(send(request).await).await;
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // Protocols that carry no key are not a credential.
    let request = f
        .server
        .get("/whoami")
        .header("sec-websocket-protocol", "json, graphql-ws");
    assert_refusal(send(request).await, 401, "missing_credentials").await;
}

// ---------------------------------------------------------------------------------------
// Route policy

#[tokio::test]
async fn public_allowlist_matches_exact_paths_only() {
    let f = Fixture::new(|b| b.public_path("/health")).await;
    assert_eq!(assert_ok(send(f.server.get("/health")).await).await, "ok");
    assert_eq!(
        assert_ok(send(f.server.get("/health?verbose=1")).await).await,
        "ok"
    );
    for path in ["/health/", "/healthz", "/whoami", "/admin/secret"] {
        let response = send(f.server.get(path)).await;
        assert_refusal(response, 401, "missing_credentials").await;
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn routes_without_configuration_are_denied_by_default() {
    // The guard's configuration names only `/health`; `/admin/secret` was added to the
    // router with no thought about authentication.
    let f = Fixture::new(|b| b.public_path("/health")).await;
    let response = send(f.server.get("/admin/secret")).await;
    assert_refusal(response, 401, "missing_credentials").await;
    let response = f.get_with_key("/admin/secret", &unregistered_key()).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    let (key, _) = f.key().await;
    assert_eq!(
        assert_ok(f.get_with_key("/admin/secret", &key).await).await,
        "secret"
    );
    // A path no route serves is refused before the router says 404.
    let response = send(f.server.get("/no/such/route")).await;
    assert_refusal(response, 401, "missing_credentials").await;
    let response = f.get_with_key("/no/such/route", &key).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn empty_allowlist_makes_nothing_public() {
    let f = Fixture::new(|b| b).await;
    for path in ["/health", "/health/", "/healthz", "/", "/whoami"] {
        let response = send(f.server.get(path)).await;
        assert_refusal(response, 401, "missing_credentials").await;
    }
    let (key, _) = f.key().await;
    assert_eq!(assert_ok(f.get_with_key("/health", &key).await).await, "ok");
}

// ---------------------------------------------------------------------------------------
// Admission and the key lifecycle

#[tokio::test]
async fn valid_key_is_admitted_and_the_handler_sees_its_principal() {
    let f = Fixture::new(|b| b).await;
    let issued = f
        .issue(
            KeyGrant::new("coordinator-1")
                .workspaces(["ws-a", "ws-b"])
                .scopes(["jobs:write", "jobs:read"])
                .tier("gold"),
        )
        .await;
    let response = f.get_with_key("/whoami", issued.key.expose_secret()).await;
    assert!(!response.headers().contains_key(WWW_AUTHENTICATE));
    let body: Value = serde_json::from_str(&assert_ok(response).await).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "coordinator-1",
            "key_id": issued.record.key_id.as_str(),
            "workspaces": ["ws-a", "ws-b"],
            "scopes": ["jobs:write", "jobs:read"],
            "tier": "gold",
        })
    );
    assert_eq!(f.registry.lookups_by_id(), 1);
}

#[tokio::test]
async fn opaque_key_given_to_the_builder_is_admitted() {
    let key = opaque_key();
    let guard = ApiKeyGuard::builder()
        .key(
            ApiKey::new(key.clone()).unwrap(),
            KeyGrant::new("coordinator").workspaces(["render"]),
        )
        .build()
        .unwrap();
    let server = TestServer::start(app(guard)).await;
    let body: Value =
        serde_json::from_str(&assert_ok(send(server.get_with_key("/whoami", &key)).await).await)
            .unwrap();
    assert_eq!(body["id"], "coordinator");
    assert_eq!(body["workspaces"], json!(["render"]));
    assert_eq!(body["tier"], "default");
    assert_eq!(body["key_id"].as_str().unwrap().len(), 12);
    let response = send(server.get_with_key("/whoami", &opaque_key())).await;
    assert_refusal(response, 401, "invalid_credentials").await;
}

#[tokio::test]
async fn several_active_keys_of_one_principal_are_admitted() {
    let f = Fixture::new(|b| b).await;
    let mut keys = Vec::new();
    for label in ["laptop", "ci", "cron"] {
        keys.push(
            f.issue(
                KeyGrant::new("coordinator-1")
                    .label(label)
                    .workspaces(["w"]),
            )
            .await,
        );
    }
    assert_eq!(
        f.registry.list_keys("coordinator-1").await.unwrap().len(),
        3
    );
    for issued in &keys {
        let body: Value = serde_json::from_str(
            &assert_ok(f.get_with_key("/whoami", issued.key.expose_secret()).await).await,
        )
        .unwrap();
        assert_eq!(body["id"], "coordinator-1");
        assert_eq!(body["key_id"], issued.record.key_id.as_str());
    }
    // Revoking one leaves the others working.
    f.registry
        .revoke(&keys[1].record.key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let response = f.get_with_key("/whoami", keys[1].key.expose_secret()).await;
    assert_refusal(response, 401, "revoked_credentials").await;
    for issued in [&keys[0], &keys[2]] {
        assert_ok(f.get_with_key("/whoami", issued.key.expose_secret()).await).await;
    }
}

#[tokio::test]
async fn rotation_keeps_both_keys_for_the_overlap_then_the_old_one_expires() {
    let f = Fixture::new(|b| b).await;
    let old = f
        .issue(KeyGrant::new("coordinator-1").scopes(["jobs"]).tier("gold"))
        .await;
    let overlap = Duration::from_secs(2);
    let new = f
        .registry
        .rotate(&old.record.key_id, overlap)
        .await
        .unwrap();
    assert_ne!(new.record.key_id, old.record.key_id);

    // During the overlap both keys work, as the same principal.
    for issued in [&old, &new] {
        let body: Value = serde_json::from_str(
            &assert_ok(f.get_with_key("/whoami", issued.key.expose_secret()).await).await,
        )
        .unwrap();
        assert_eq!(body["id"], "coordinator-1");
        assert_eq!(body["tier"], "gold");
        assert_eq!(body["scopes"], json!(["jobs"]));
        assert_eq!(body["key_id"], issued.record.key_id.as_str());
    }

    // After the overlap, the old key has expired; the new one works.
    let ends = f
        .registry
        .find_by_id(&old.record.key_id)
        .await
        .unwrap()
        .unwrap()
        .expires_at
        .unwrap();
    let remaining = ends - OffsetDateTime::now_utc();
    assert!(remaining <= time::Duration::seconds(2), "{remaining}");
    let wait = Duration::try_from(remaining).unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    let response = f.get_with_key("/whoami", old.key.expose_secret()).await;
    assert_refusal(response, 401, "expired_credentials").await;
    assert_ok(f.get_with_key("/whoami", new.key.expose_secret()).await).await;
}

#[tokio::test]
async fn an_admitted_request_notes_the_keys_last_use() {
    let f = Fixture::new(|b| b).await;
    let (key, key_id) = f.key().await;
    let last_use = || async {
        let keys = f.registry.list_keys("p").await.unwrap();
        let record = keys.iter().find(|r| r.key_id == key_id).unwrap();
        record.last_used_at
    };
    assert_eq!(last_use().await, None, "never used yet");

    let before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    for _ in 0..3 {
        assert_ok(f.get_with_key("/whoami", &key).await).await;
    }
    let after = OffsetDateTime::now_utc();
    let used = last_use().await.expect("the last use is noted");
    assert!(
        before <= used && used <= after,
        "{before} <= {used} <= {after}"
    );

    // A refused key is not "used".
    let (unused, unused_id) = f.key().await;
    f.registry
        .revoke(&unused_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_refusal(
        f.get_with_key("/whoami", &unused).await,
        401,
        "revoked_credentials",
    )
    .await;
    let keys = f.registry.list_keys("p").await.unwrap();
    let record = keys.iter().find(|r| r.key_id == unused_id).unwrap();
    assert_eq!(record.last_used_at, None);
}

#[tokio::test]
async fn rotation_keeps_the_key_prefix() {
    let f = Fixture::new(|b| b).await;
    let old = f
        .issue(KeyGrant::new("coordinator-1").prefix(KeyPrefix::new("cx").unwrap()))
        .await;
    assert!(old.key.expose_secret().starts_with("cx_"));
    let new = f
        .registry
        .rotate(&old.record.key_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_ok(f.get_with_key("/whoami", new.key.expose_secret()).await).await;
    // Secret scanners look for the prefix a principal's keys were given.
    assert!(
        new.key.expose_secret().starts_with("cx_"),
        "successor lost its prefix"
    );
}

#[tokio::test]
async fn revocation_takes_effect_on_the_very_next_request() {
    let f = Fixture::new(|b| b).await;
    let (key, key_id) = f.key().await;
    // One client, so the next request reuses the kept-alive connection.
    for _ in 0..3 {
        assert_ok(f.get_with_key("/whoami", &key).await).await;
    }
    f.registry
        .revoke(&key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let response = f.get_with_key("/whoami", &key).await;
    assert_refusal(response, 401, "revoked_credentials").await;
}

// ---------------------------------------------------------------------------------------
// Build-time errors

#[test]
fn build_without_a_key_source_fails() {
    let error = ApiKeyGuard::builder().build().unwrap_err();
    assert!(matches!(error, BuildError::NoKeySource), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("openssl rand -base64 32"), "{message}");

    // Sources and a public path are no substitute for a key.
    let error = ApiKeyGuard::builder()
        .bearer()
        .public_path("/health")
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::NoKeySource), "{error:?}");
}

#[test]
fn opaque_key_shorter_than_32_characters_is_refused() {
    let error = ApiKey::new("x".repeat(31)).unwrap_err();
    assert!(
        matches!(error, KeyError::TooShort { len: 31, min: 32 }),
        "{error:?}"
    );
    assert!(ApiKey::new("x".repeat(32)).is_ok());
    assert!(ApiKey::new("").is_err());

    // The same check for a value read from the environment, and it stops the build.
    let error = ApiKey::from_var("COORDINATOR_API_KEY", Some("too-short\n".into())).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("COORDINATOR_API_KEY"), "{message}");
    assert!(message.contains("openssl rand -base64 32"), "{message}");
    assert!(!message.contains("too-short"), "{message}");
    let error = BuildError::from(error);
    assert!(matches!(error, BuildError::Key(_)), "{error:?}");
}

#[test]
fn invalid_header_name_fails_to_build() {
    for name in ["X API Key", "", "x-api-key:", "ключ"] {
        let error = ApiKeyGuard::builder()
            .key(ApiKey::new(opaque_key()).unwrap(), KeyGrant::new("p"))
            .header(name)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, BuildError::InvalidHeaderName(n) if n == name),
            "{error:?}"
        );
        assert!(error.to_string().contains(name), "{error}");
    }
}

#[test]
fn key_from_an_unset_env_var_fails_naming_the_variable() {
    const VAR: &str = "KEYGATE_GUARD_TEST_SURELY_UNSET_API_KEY";
    assert!(std::env::var_os(VAR).is_none());
    let error = ApiKeyGuard::builder()
        .key_from_env(VAR, KeyGrant::new("coordinator"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::Key(KeyError::MissingEnv { var }) if var == VAR),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(VAR), "{message}");
    assert!(message.contains("openssl rand -base64 32"), "{message}");
}

#[test]
fn other_misconfigurations_fail_to_build() {
    let key = || ApiKey::new(opaque_key()).unwrap();
    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .sources([])
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::NoCredentialSource), "{error:?}");

    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .public_path("health")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, BuildError::InvalidPublicPath(_)),
        "{error:?}"
    );

    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .registry(InMemoryRegistry::new())
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::KeysAndRegistry), "{error:?}");

    let same = key();
    let error = ApiKeyGuard::builder()
        .key(same.clone(), KeyGrant::new("p"))
        .key(same, KeyGrant::new("q"))
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::DuplicateKey), "{error:?}");
}

// ---------------------------------------------------------------------------------------
// Backends that fail, or answer later

/// A registry that is down: every operation fails with `Unavailable`, at once or after
/// `delay`.
#[derive(Debug, Default)]
struct FailingRegistry {
    delay: Option<Duration>,
}

impl FailingRegistry {
    fn outage<T: Send + 'static>(&self) -> BackendFuture<'static, Result<T, RegistryError>> {
        let error = || RegistryError::Unavailable("connection refused (test outage)".into());
        match self.delay {
            None => BackendFuture::ready(Err(error())),
            Some(delay) => BackendFuture::new(async move {
                tokio::time::sleep(delay).await;
                Err(error())
            }),
        }
    }
}

impl KeyRegistry for FailingRegistry {
    fn find_by_id(&self, _: &KeyId) -> LookupFuture {
        self.outage()
    }
    fn find_by_digest(&self, _: &KeyDigest) -> LookupFuture {
        self.outage()
    }
    fn register(&self, _: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        self.outage()
    }
    fn revoke(
        &self,
        _: &KeyId,
        _: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        self.outage()
    }
    fn set_expiry(
        &self,
        _: &KeyId,
        _: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        self.outage()
    }
    fn list_keys(&self, _: &str) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        self.outage()
    }
}

/// An in-memory registry whose lookups answer only after `delay`, as a network registry
/// would: the guard has to finish its decision in the response future.
#[derive(Debug)]
struct DelayedRegistry {
    inner: Arc<InMemoryRegistry>,
    delay: Duration,
}

impl KeyRegistry for DelayedRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        let (inner, key_id, delay) = (Arc::clone(&self.inner), *key_id, self.delay);
        BackendFuture::new(async move {
            tokio::time::sleep(delay).await;
            inner.find_by_id(&key_id).await
        })
    }
    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        let (inner, digest, delay) = (Arc::clone(&self.inner), *digest, self.delay);
        BackendFuture::new(async move {
            tokio::time::sleep(delay).await;
            inner.find_by_digest(&digest).await
        })
    }
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        self.inner.register(record)
    }
    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        self.inner.revoke(key_id, at)
    }
    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        self.inner.set_expiry(key_id, expires_at)
    }
    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        self.inner.list_keys(principal_id)
    }
}

#[tokio::test]
async fn registry_outage_is_503_auth_unavailable_never_401() {
    for delay in [None, Some(Duration::from_millis(20))] {
        let audit = MemorySink::new();
        let guard = ApiKeyGuard::builder()
            .registry(FailingRegistry { delay })
            .audit(audit.clone())
            .build()
            .unwrap();
        let server = TestServer::start(app(guard)).await;

        // Keys that need a lookup, by id and by digest.
        for key in [unregistered_key(), opaque_key()] {
            let response = send(server.get_with_key("/whoami", &key)).await;
            let headers = assert_refusal(response, 503, "auth_unavailable").await;
            assert_eq!(headers[RETRY_AFTER], "5", "{delay:?}");
            let event = audit.events().pop().unwrap();
            assert_eq!(event.outcome, Outcome::Refused);
            assert_eq!(event.reason.as_deref(), Some("auth_unavailable"));
        }
        // What is refused before any lookup is refused for what it is.
        let response = send(server.get("/whoami")).await;
        assert_refusal(response, 401, "missing_credentials").await;
        let response = send(server.get_with_key("/whoami", &tampered(&unregistered_key()))).await;
        assert_refusal(response, 401, "invalid_credentials").await;
    }

    // The wait is configurable, in whole seconds rounded up.
    let guard = ApiKeyGuard::builder()
        .registry(FailingRegistry::default())
        .unavailable_retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let server = TestServer::start(app(guard)).await;
    let response = send(server.get_with_key("/whoami", &opaque_key())).await;
    let headers = assert_refusal(response, 503, "auth_unavailable").await;
    assert_eq!(headers[RETRY_AFTER], "2");
}

#[tokio::test]
async fn asynchronous_registry_admits_and_refuses_correctly() {
    let inner = Arc::new(InMemoryRegistry::new());
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .registry(DelayedRegistry {
            inner: Arc::clone(&inner),
            delay: Duration::from_millis(15),
        })
        .audit(audit.clone())
        .build()
        .unwrap();
    let server = TestServer::start(app(guard)).await;

    let valid = inner
        .issue(
            KeyGrant::new("coordinator-1")
                .workspaces(["w"])
                .tier("gold"),
        )
        .await
        .unwrap();
    let expired = inner
        .issue(KeyGrant::new("coordinator-2").expires_at(minutes_ago(1)))
        .await
        .unwrap();
    let revoked = inner.issue(KeyGrant::new("coordinator-3")).await.unwrap();
    inner
        .revoke(&revoked.record.key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let opaque = opaque_key();
    inner
        .insert_key(
            &ApiKey::new(opaque.clone()).unwrap(),
            KeyGrant::new("legacy"),
        )
        .unwrap();

    // All at once, several times over: each answer must belong to its own request.
    let cases: Vec<(String, Result<&str, &str>)> = (0..4)
        .flat_map(|_| {
            [
                (valid.key.expose_secret().to_owned(), Ok("coordinator-1")),
                (opaque.clone(), Ok("legacy")),
                (unregistered_key(), Err("invalid_credentials")),
                (opaque_key(), Err("invalid_credentials")),
                (
                    expired.key.expose_secret().to_owned(),
                    Err("expired_credentials"),
                ),
                (
                    revoked.key.expose_secret().to_owned(),
                    Err("revoked_credentials"),
                ),
                (
                    tampered(valid.key.expose_secret()),
                    Err("invalid_credentials"),
                ),
            ]
        })
        .collect();
    let responses = join_all(
        cases
            .iter()
            .map(|(key, _)| send(server.get_with_key("/whoami", key))),
    )
    .await;
    for ((_, expected), response) in cases.iter().zip(responses) {
        match expected {
            Ok(principal) => {
                let body: Value = serde_json::from_str(&assert_ok(response).await).unwrap();
                assert_eq!(body["id"], *principal);
            }
            Err(reason) => {
                assert_refusal(response, 401, reason).await;
            }
        }
    }

    // Every decision was audited once, admitted ones with their principal.
    let events = audit.events();
    assert_eq!(events.len(), cases.len());
    let admitted: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Admitted)
        .collect();
    assert_eq!(admitted.len(), 8);
    assert!(
        admitted
            .iter()
            .all(|e| matches!(e.principal_id.as_deref(), Some("coordinator-1" | "legacy")))
    );
}

// ---------------------------------------------------------------------------------------
// Body types: no glue code in the guard

async fn hello<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = request
        .extensions()
        .get::<Principal>()
        .map_or("nobody", |p| p.id())
        .to_owned();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello {who}"
    )))))
}

async fn empty<B>(request: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    assert!(request.extensions().get::<Principal>().is_some());
    Ok(Response::new(Empty::new()))
}

fn request<B>(key: Option<&str>, body: B) -> Request<B> {
    let mut builder = Request::get("/jobs").header("user-agent", "body-test/1");
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    builder.body(body).unwrap()
}

#[tokio::test]
async fn full_bytes_service_is_guarded_without_glue() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let key = issued.key.expose_secret();
    let guard = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .build()
        .unwrap();

    // Driven directly: request body `String`, response body `Full<Bytes>`.
    let service = ServiceBuilder::new()
        .layer(guard.clone())
        .service(tower::service_fn(hello::<String>));
    let response = service
        .clone()
        .oneshot(request(Some(key), String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello svc");

    let response = service
        .clone()
        .oneshot(request(None, String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("www-authenticate"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["reason"], "missing_credentials");

    // Over the wire (hyper, through `axum::serve`): the guard still answers in
    // `Full<Bytes>`; only the server's own body type is converted, outside the guard.
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(hello::<Body>))
        .map_response(|response: Response<Full<Bytes>>| response.map(Body::new));
    let server = TestServer::start(service).await;
    let text = assert_ok(send(server.get_with_key("/jobs", key)).await).await;
    assert_eq!(text, "hello svc");
    let response = send(server.get_with_key("/jobs", &unregistered_key())).await;
    assert_refusal(response, 401, "invalid_credentials").await;
    let response = send(server.get("/jobs")).await;
    assert_refusal(response, 401, "missing_credentials").await;
}

#[tokio::test]
async fn empty_rejection_serves_an_empty_body_service() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let guard = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .render_with(EmptyRejection)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(empty::<Empty<Bytes>>));

    let response = service
        .clone()
        .oneshot(request(Some(issued.key.expose_secret()), Empty::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (key, reason) in [
        (None, "missing_credentials"),
        (Some(unregistered_key()), "invalid_credentials"),
        (Some("a".repeat(600)), "malformed_credentials"),
    ] {
        let response = service
            .clone()
            .oneshot(request(key.as_deref(), Empty::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-keygate-reason"], reason);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"ApiKey realm="api""#
        );
        assert!(!response.headers().contains_key("content-type"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
}

// ---------------------------------------------------------------------------------------
// Audit

#[tokio::test]
async fn every_request_yields_exactly_one_audit_event() {
    let registry = Arc::new(CountingRegistry::default());
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .public_path("/health")
        .audit(audit.clone())
        .client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .build()
        .unwrap();
    let server = TestServer::start(app(guard)).await;

    let valid = registry
        .issue(KeyGrant::new("coordinator-1"))
        .await
        .unwrap();
    let expired = registry
        .issue(KeyGrant::new("coordinator-2").expires_at(minutes_ago(1)))
        .await
        .unwrap();
    let revoked = registry
        .issue(KeyGrant::new("coordinator-3"))
        .await
        .unwrap();
    registry
        .revoke(&revoked.record.key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let valid_key = valid.key.expose_secret();

    // (path, key(s), outcome, reason, principal and key id)
    type Case<'a> = (
        &'a str,
        Vec<String>,
        Outcome,
        Option<&'a str>,
        Option<(&'a str, KeyId)>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "/whoami",
            vec![valid_key.to_owned()],
            Outcome::Admitted,
            None,
            Some(("coordinator-1", valid.record.key_id)),
        ),
        (
            "/whoami",
            vec![],
            Outcome::Refused,
            Some("missing_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![valid_key.to_owned(), valid_key.to_owned()],
            Outcome::Refused,
            Some("malformed_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![unregistered_key()],
            Outcome::Refused,
            Some("invalid_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![tampered(valid_key)],
            Outcome::Refused,
            Some("invalid_credentials"),
            None,
        ),
        (
            "/admin/secret",
            vec![expired.key.expose_secret().to_owned()],
            Outcome::Refused,
            Some("expired_credentials"),
            Some(("coordinator-2", expired.record.key_id)),
        ),
        (
            "/whoami",
            vec![revoked.key.expose_secret().to_owned()],
            Outcome::Refused,
            Some("revoked_credentials"),
            Some(("coordinator-3", revoked.record.key_id)),
        ),
        ("/health", vec![], Outcome::Admitted, None, None),
    ];

    for (n, (path, keys, outcome, reason, who)) in cases.into_iter().enumerate() {
        let request_id = format!("req-{n}");
        let user_agent = format!("audit-test/{n}");
        let mut request = server
            .get(path)
            .header("x-request-id", &request_id)
            .header("user-agent", &user_agent);
        for key in &keys {
            request = request.header("x-api-key", key);
        }
        let before = audit.events().len();
        let response = send(request).await;
        assert_eq!(response.status().is_success(), outcome == Outcome::Admitted);
        let events = audit.events();
        assert_eq!(events.len(), before + 1, "case {n}: exactly one event");
        let event = events.last().unwrap();
        assert_eq!(event.action, format!("GET {path}"), "case {n}");
        assert_eq!(event.outcome, outcome, "case {n}");
        if let Some(reason) = reason {
            assert_eq!(event.reason.as_deref(), Some(reason), "case {n}");
        } else if path != "/health" {
            assert_eq!(event.reason, None, "case {n}");
        }
        assert_eq!(event.principal_id.as_deref(), who.map(|w| w.0), "case {n}");
        assert_eq!(event.key_id, who.map(|w| w.1), "case {n}");
        assert_eq!(event.request_id.as_deref(), Some(request_id.as_str()));
        assert_eq!(event.user_agent.as_deref(), Some(user_agent.as_str()));
        assert_eq!(event.client_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(event.workspace, None);
    }
}

#[tokio::test]
async fn audit_reads_the_client_addr_extension() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .audit(audit.clone())
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(hello::<String>));
    let ip: IpAddr = "2001:db8::7".parse().unwrap();
    for key in [Some(issued.key.expose_secret()), None] {
        let mut request = request(key, String::new());
        request.extensions_mut().insert(ClientAddr(ip));
        service.clone().oneshot(request).await.unwrap();
    }
    let events = audit.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].outcome, Outcome::Admitted);
    assert_eq!(events[0].principal_id.as_deref(), Some("svc"));
    assert_eq!(events[0].key_id, Some(issued.record.key_id));
    assert_eq!(events[1].outcome, Outcome::Refused);
    assert_eq!(events[1].reason.as_deref(), Some("missing_credentials"));
    for event in &events {
        assert_eq!(event.client_ip, Some(ip));
        assert_eq!(event.user_agent.as_deref(), Some("body-test/1"));
        assert_eq!(event.action, "GET /jobs");
    }
}

// ---------------------------------------------------------------------------------------
// No secret leaks

/// Everything the process logs, at TRACE level.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Where the log stands now.
    fn mark(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// What was logged since `mark` (by this test, and by any running next to it).
    fn since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[mark..]).into_owned()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide log capture, installed on first use as the global subscriber.
///
/// Not a per-thread `set_default` subscriber: while such a subscriber is the only one,
/// tracing-core builds the interest of a callsite first hit on *another* thread from that
/// thread's (empty) default, caches "never", and the test misses the event.
fn captured_logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// A logging layer inside the guard, as an application would have: it logs every
/// request's headers at TRACE (the guard marks credential headers sensitive).
async fn log_headers(request: axum::extract::Request, next: Next) -> axum::response::Response {
    tracing::trace!(headers = ?request.headers(), method = %request.method(), "request reached the app");
    next.run(request).await
}

/// Fails if any secret, or the 32-character secret part of a generated one, is in `text`.
fn assert_no_secret(secrets: &[String], what: &str, text: &str) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "a key leaked into {what}");
        if secret.len() == 54 && secret.starts_with("kg_") {
            let part = secret_part(secret);
            assert!(!text.contains(part), "a secret part leaked into {what}");
        }
    }
}

#[tokio::test]
async fn no_secret_leaks_into_logs_audit_debug_or_errors() {
    // Every log line from here on, at TRACE level.
    let logs = captured_logs();
    let mark = logs.mark();

    let dir = std::env::temp_dir().join(format!(
        "keygate-guard-leaks-{}-{}",
        std::process::id(),
        opaque_key()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let audit_path = dir.join("audit.jsonl");

    let registry = Arc::new(InMemoryRegistry::new());
    let builder = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .bearer()
        .query("token")
        .websocket_protocol()
        .public_path("/health")
        .audit(JsonLinesSink::open(&audit_path).unwrap());
    let builder_debug = format!("{builder:?}");
    let guard = builder.build().unwrap();
    let router = Router::new()
        .route("/whoami", get(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(middleware::from_fn(log_headers))
        .layer(guard.clone());
    let server = TestServer::start(router).await;

    let valid = registry
        .issue(KeyGrant::new("coordinator-1").workspaces(["w"]))
        .await
        .unwrap();
    let expired = registry
        .issue(KeyGrant::new("coordinator-2").expires_at(minutes_ago(1)))
        .await
        .unwrap();
    let revoked = registry
        .issue(KeyGrant::new("coordinator-3"))
        .await
        .unwrap();
    registry
        .revoke(&revoked.record.key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let opaque = opaque_key();
    let opaque_record = registry
        .insert_key(
            &ApiKey::new(opaque.clone()).unwrap(),
            KeyGrant::new("legacy"),
        )
        .unwrap();
    let (valid_key, expired_key, revoked_key) = (
        valid.key.expose_secret().to_owned(),
        expired.key.expose_secret().to_owned(),
        revoked.key.expose_secret().to_owned(),
    );
    let (wrong, wrong_opaque, garbage) = (unregistered_key(), opaque_key(), tampered(&valid_key));
    let secrets = vec![
        valid_key.clone(),
        expired_key.clone(),
        revoked_key.clone(),
        opaque.clone(),
        wrong.clone(),
        wrong_opaque.clone(),
        garbage.clone(),
    ];

    // A batch of requests: valid through every source, wrong, expired, revoked,
    // malformed, duplicated.
    let requests = vec![
        server.get_with_key("/whoami", &valid_key),
        server
            .get("/whoami")
            .header("authorization", format!("Bearer {valid_key}")),
        server.get(&format!("/whoami?token={valid_key}")),
        server.get("/whoami").header(
            "sec-websocket-protocol",
            format!("json, keygate.key.{valid_key}"),
        ),
        server.get_with_key("/whoami", &opaque),
        server.get_with_key("/whoami", &wrong),
        server.get_with_key("/whoami", &wrong_opaque),
        server.get_with_key("/whoami", &garbage),
        server.get(&format!("/whoami?token={expired_key}")),
        server
            .get("/whoami")
            .header("authorization", format!("Bearer {revoked_key}")),
        server.get_with_key("/whoami", &valid_key.repeat(10)),
        server.get_with_key("/whoami", &format!("{valid_key} {wrong}")),
        server
            .get_with_key("/whoami", &valid_key)
            .header("x-api-key", &wrong),
        server
            .get_with_key("/whoami", &valid_key)
            .header("authorization", format!("Bearer {wrong}")),
        server
            .get("/whoami")
            .header("authorization", format!("Basic {valid_key}")),
    ];
    let sent = requests.len();
    let mut admitted = 0;
    for request in requests {
        let response = send(request).await;
        admitted += usize::from(response.status().is_success());
        let headers = format!("{:?}", response.headers());
        let body = response.text().await.unwrap();
        assert_no_secret(&secrets, "a response", &format!("{headers}{body}"));
    }
    assert_eq!(admitted, 5);

    // A handler that authenticates by itself (e.g. a WebSocket's first message).
    let principal = guard
        .authenticate(&valid_key, None, "ws.first_message")
        .await
        .unwrap();
    let refused = guard
        .authenticate(&wrong, None, "ws.first_message")
        .await
        .unwrap_err();
    let with_key = Request::get("/")
        .header("x-api-key", &valid_key)
        .body(())
        .unwrap();
    let credential = guard.credential(&with_key).unwrap();
    let credential_debug = format!("{credential:?}");
    let twice = Request::get(format!("/?token={valid_key}"))
        .header("x-api-key", &valid_key)
        .body(())
        .unwrap();
    let ambiguous = guard.credential(&twice).unwrap_err();

    // A registry that is down also logs.
    let failing = ApiKeyGuard::builder()
        .registry(FailingRegistry::default())
        .build()
        .unwrap();
    let failing_server = TestServer::start(app(failing.clone())).await;
    let response = send(failing_server.get_with_key("/whoami", &valid_key)).await;
    assert_eq!(response.status(), 503);

    // Errors of every kind, made from the secrets.
    let mut errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(ApiKey::new(garbage.clone()).unwrap_err()),
        Box::new(ApiKey::new(format!("{valid_key}é")).unwrap_err()),
        Box::new(ApiKey::new(format!("{opaque} ")).unwrap_err()),
        Box::new(ApiKey::new(valid_key[..20].to_owned()).unwrap_err()),
        Box::new(ApiKey::from_var("COORDINATOR_API_KEY", Some(garbage.clone())).unwrap_err()),
        Box::new(ApiKey::from_var("COORDINATOR_API_KEY", Some(format!("é{opaque}"))).unwrap_err()),
        Box::new(ApiKeyGuard::builder().build().unwrap_err()),
        Box::new(
            ApiKeyGuard::builder()
                .key(ApiKey::new(opaque.clone()).unwrap(), KeyGrant::new("a"))
                .key(ApiKey::new(opaque.clone()).unwrap(), KeyGrant::new("b"))
                .build()
                .unwrap_err(),
        ),
        Box::new(
            ApiKeyGuard::builder()
                .key_from_env(
                    "KEYGATE_GUARD_TEST_SURELY_UNSET_API_KEY",
                    KeyGrant::new("a"),
                )
                .build()
                .unwrap_err(),
        ),
        Box::new(
            registry
                .register_key(&valid.key, KeyGrant::new("again"))
                .await
                .unwrap_err(),
        ),
        Box::new(
            registry
                .rotate(&revoked.record.key_id, Duration::from_secs(60))
                .await
                .unwrap_err(),
        ),
        Box::new(refused),
        Box::new(ambiguous),
    ];
    errors.push(Box::new(
        registry
            .insert_key(
                &ApiKey::new(opaque.clone()).unwrap(),
                KeyGrant::new("again"),
            )
            .unwrap_err(),
    ));
    for error in &errors {
        let mut text = format!("{error} {error:?}");
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert_no_secret(&secrets, "an error", &text);
    }

    // Debug of everything that holds or saw a secret.
    let debugs = [
        ("the guard", format!("{guard:?}")),
        ("the failing guard", format!("{failing:?}")),
        ("the builder", builder_debug),
        ("an ApiKey", format!("{:?}", valid.key)),
        ("an IssuedKey", format!("{valid:?} {expired:?} {revoked:?}")),
        (
            "a KeyRecord",
            format!("{:?} {:?}", *valid.record, *opaque_record),
        ),
        ("a Principal", format!("{principal:?}")),
        ("a Credential", credential_debug),
        ("the registry", format!("{registry:?}")),
    ];
    for (what, text) in &debugs {
        assert_no_secret(&secrets, what, text);
    }
    assert!(debugs[3].1.contains("REDACTED"), "{}", debugs[3].1);

    // The audit file: one line per decision, none with a secret.
    let audit_text = std::fs::read_to_string(&audit_path).unwrap();
    assert_eq!(audit_text.lines().count(), sent + 2, "{audit_text}");
    assert_no_secret(&secrets, "the audit file", &audit_text);
    assert!(audit_text.contains(valid.record.key_id.as_str()));

    // The logs: the app's header log ran, with the credential headers hidden, and the
    // registry outage was logged.
    let log_text = logs.since(mark);
    assert!(log_text.contains("request reached the app"), "{log_text}");
    assert!(log_text.contains("Sensitive"), "{log_text}");
    assert!(log_text.contains("key registry failed"), "{log_text}");
    assert_no_secret(&secrets, "the logs", &log_text);

    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn credentials_sent_to_a_public_path_are_hidden_from_inner_layers() {
    let logs = captured_logs();
    let mark = logs.mark();
    let registry = Arc::new(InMemoryRegistry::new());
    let valid = registry.issue(KeyGrant::new("monitor")).await.unwrap();
    let guard = ApiKeyGuard::builder()
        .shared_registry(registry.clone())
        .bearer()
        .public_path("/health")
        .build()
        .unwrap();
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .layer(middleware::from_fn(log_headers))
        .layer(guard);
    let server = TestServer::start(router).await;

    // Monitoring tools often send their key everywhere, public paths included.
    let (valid_key, wrong) = (valid.key.expose_secret().to_owned(), unregistered_key());
    for request in [
        server.get_with_key("/health", &valid_key),
        server.get_with_key("/health", &wrong),
        server
            .get("/health")
            .header("authorization", format!("Bearer {valid_key}")),
    ] {
        assert_eq!(assert_ok(send(request).await).await, "ok");
    }
    let log_text = logs.since(mark);
    assert!(log_text.contains("request reached the app"), "{log_text}");
    assert_no_secret(&[valid_key, wrong], "the logs", &log_text);
}
