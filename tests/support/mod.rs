//! What every test binary shares: a service served on a loopback port with a real HTTP
//! client ([`TestServer`]), a service driven in process ([`oneshot`]), a response read
//! whole ([`Reply`]) with the assertions of the refusal contract, seeded random input
//! ([`rng`]), fresh keys and temp paths, and a registry that counts lookups.
//!
//! A test file at `tests/<name>.rs` declares `mod support;`; one at `tests/<name>/main.rs`
//! declares `#[path = "../support/mod.rs"] mod support;`. (It is not called `common`:
//! the example tests need that name for `examples/common/mod.rs`, which the examples'
//! `app.rs` reach as `crate::common`.)

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::{
    convert::Infallible,
    fmt::Debug,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{ServiceExt as _, body::Body, body::HttpBody};
use http::{HeaderMap, Request, Response, header::CONTENT_TYPE, header::WWW_AUTHENTICATE};
use http_body_util::BodyExt as _;
use keygate::{
    InMemoryRegistry, KeyDigest, KeyId, KeyLookup, KeyRecord, KeyRegistry, RegistryError,
    registry::LookupFuture,
};
use serde_json::Value;
use time::OffsetDateTime;
use tower::{Service, ServiceExt as _};

// ---------------------------------------------------------------------------------------
// Serving and calling

/// A listener on `127.0.0.1:<free port>`, and its address.
pub(crate) async fn loopback() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// An HTTP client that never goes through a proxy.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A service listening on `127.0.0.1:<random port>`, and a client for it.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
}

impl TestServer {
    /// Serves `service` (an axum `Router` or any service on axum's body) with the peer
    /// address available as `ConnectInfo<SocketAddr>`, until the test's runtime ends.
    pub(crate) async fn start<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
    {
        let (listener, addr) = loopback().await;
        let make = service.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
        Self {
            addr,
            client: client(),
        }
    }

    /// The URL of `path_and_query` on this server.
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    /// A GET request on `path_and_query`.
    pub(crate) fn get(&self, path_and_query: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path_and_query))
    }

    /// A GET request on `path_and_query` with `X-API-Key: key`.
    pub(crate) fn get_with_key(&self, path_and_query: &str, key: &str) -> reqwest::RequestBuilder {
        self.get(path_and_query).header("x-api-key", key)
    }
}

/// A router whose one route, `GET /jobs`, answers the id of the principal the guard
/// admitted; `guard` wraps it.
pub(crate) fn jobs_app(guard: keygate::ApiKeyGuard) -> axum::Router {
    axum::Router::new()
        .route(
            "/jobs",
            axum::routing::get(
                |axum::Extension(principal): axum::Extension<keygate::Principal>| async move {
                    principal.id().to_owned()
                },
            ),
        )
        .layer(guard)
}

/// Sends `request` over the wire and reads the response whole.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> Reply {
    Reply::from_reqwest(request.send().await.unwrap()).await
}

/// Calls `service` once, in process (no server, no socket), with `request` and an empty
/// body, and reads the response whole.
pub(crate) async fn oneshot<S, B>(service: S, request: http::request::Builder) -> Reply
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Error: Debug,
    B: HttpBody,
    B::Error: Debug,
{
    let request = request.body(Body::empty()).unwrap();
    Reply::from_http(service.oneshot(request).await.unwrap()).await
}

// ---------------------------------------------------------------------------------------
// Responses and the refusal contract

/// The refusals that carry `WWW-Authenticate` (the 401 rows about credentials).
pub(crate) const CREDENTIAL_REASONS: [&str; 5] = [
    "missing_credentials",
    "malformed_credentials",
    "invalid_credentials",
    "expired_credentials",
    "revoked_credentials",
];

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    /// The body as JSON (`Null` if it is not JSON).
    pub(crate) body: Value,
    pub(crate) text: String,
}

impl Reply {
    fn new(status: u16, headers: HeaderMap, text: String) -> Self {
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    /// Reads a response that came over the wire.
    pub(crate) async fn from_reqwest(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Self::new(status, headers, response.text().await.unwrap())
    }

    /// Reads a response of a service called in process.
    pub(crate) async fn from_http<B>(response: Response<B>) -> Self
    where
        B: HttpBody,
        B::Error: Debug,
    {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        Self::new(parts.status.as_u16(), parts.headers, text)
    }

    /// The header `name` as text, if present.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts this is the refusal of the guard's contract: `status`, the JSON body
    /// `{"error":{"code":status,"reason":reason,"message":<non-empty>}}` and nothing else,
    /// `Content-Type: application/json`, and `WWW-Authenticate` exactly on the 401 rows
    /// about credentials.
    #[track_caller]
    pub(crate) fn assert_refusal(&self, status: u16, reason: &str) -> &Self {
        let text = &self.text;
        assert_eq!(
            self.status, status,
            "status (expected {reason}); body: {text}"
        );
        assert_eq!(
            self.header(CONTENT_TYPE.as_str()),
            Some("application/json"),
            "content-type of {reason}"
        );
        let error = self.body["error"].as_object().unwrap();
        assert_eq!(
            self.body.as_object().unwrap().len(),
            1,
            "only `error`: {text}"
        );
        assert_eq!(error.len(), 3, "only code, reason, message: {text}");
        assert_eq!(error["code"], status, "{text}");
        assert_eq!(error["reason"], reason, "{text}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.trim().is_empty(), "{text}");
        let credential_row = status == 401 && CREDENTIAL_REASONS.contains(&reason);
        assert_eq!(
            self.headers.contains_key(WWW_AUTHENTICATE),
            credential_row,
            "WWW-Authenticate on {reason}: {:?}",
            self.headers
        );
        self
    }

    /// Asserts this is an error with `status` and `reason`, in the guard's shape
    /// `{"error":{"code":<status>,"reason":<reason>,"message":<text>}}` (an example's own
    /// errors included, so `WWW-Authenticate` is not checked).
    #[track_caller]
    pub(crate) fn assert_error(&self, status: u16, reason: &str) -> &Self {
        assert_eq!(
            (self.status, self.body["error"]["reason"].as_str()),
            (status, Some(reason)),
            "{}",
            self.text
        );
        assert_eq!(self.body["error"]["code"], status, "{}", self.text);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "{}",
            self.text
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        self
    }

    /// Asserts the status is `status`.
    #[track_caller]
    pub(crate) fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }

    /// Asserts the rate-limit headers of the `"default"` tier (a window of 60 s):
    /// `RateLimit-Policy` with `quota`, and `RateLimit` with `remaining`.
    #[track_caller]
    pub(crate) fn assert_rate_limit(&self, quota: u32, remaining: u32) -> &Self {
        let policy = format!("\"default\";q={quota};w=60");
        assert_eq!(self.header("ratelimit-policy"), Some(policy.as_str()));
        let limit = format!("\"default\";r={remaining};");
        assert!(
            self.header("ratelimit")
                .is_some_and(|value| value.starts_with(&limit)),
            "{:?}",
            self.header("ratelimit")
        );
        self
    }

    /// The whole seconds of `Retry-After`.
    #[track_caller]
    pub(crate) fn retry_after(&self) -> u64 {
        self.header("retry-after").unwrap().parse().unwrap()
    }

    /// Asserts this is a 200 and returns its body.
    #[track_caller]
    pub(crate) fn assert_ok(&self) -> &str {
        assert_eq!(self.status, 200, "body: {}", self.text);
        &self.text
    }
}

/// The reason of the refusal `response` (its body's `error.reason`).
pub(crate) async fn refusal_reason<B>(response: Response<B>) -> String
where
    B: HttpBody,
    B::Error: Debug,
{
    let reply = Reply::from_http(response).await;
    reply.body["error"]["reason"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// Input

/// The environment variable that replays a failed run of a random-input test.
pub(crate) const SEED_VAR: &str = "KEYGATE_TEST_SEED";

/// A seeded random generator for random input: the seed is `KEYGATE_TEST_SEED` if set,
/// else `default_seed`, so every run is the same unless asked otherwise. The seed is
/// printed (libtest shows it when the test fails).
pub(crate) fn rng(default_seed: u64) -> fastrand::Rng {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|seed| seed.trim().parse().ok())
        .unwrap_or(default_seed);
    println!("random input from seed {seed} (replay with {SEED_VAR}={seed})");
    fastrand::Rng::with_seed(seed)
}

/// A random opaque key, as `openssl rand -base64 32` would make (here 64 hex digits).
pub(crate) fn random_key() -> String {
    let mut bytes = [0_u8; 32];
    getrandom::fill(&mut bytes).unwrap();
    hex::encode(bytes)
}

/// A fresh path under the system temp dir: `keygate-<name>-<pid>-<n>-<nanos><suffix>`.
pub(crate) fn temp_path(name: &str, suffix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "keygate-{name}-{}-{}-{nanos}{suffix}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A directory under the system temp dir, removed when dropped.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let path = temp_path(name, "");
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// A registry that counts

/// An [`InMemoryRegistry`] that counts the lookups the guard makes.
#[derive(Debug, Default)]
pub(crate) struct CountingRegistry {
    pub(crate) inner: InMemoryRegistry,
    by_id: AtomicUsize,
    by_digest: AtomicUsize,
}

impl CountingRegistry {
    /// `find_by_id` plus `find_by_digest` calls so far.
    pub(crate) fn lookups(&self) -> usize {
        self.by_id.load(Ordering::SeqCst) + self.by_digest.load(Ordering::SeqCst)
    }

    /// `find_by_id` calls so far.
    pub(crate) fn lookups_by_id(&self) -> usize {
        self.by_id.load(Ordering::SeqCst)
    }

    /// `find_by_digest` calls so far.
    pub(crate) fn lookups_by_digest(&self) -> usize {
        self.by_digest.load(Ordering::SeqCst)
    }
}

impl KeyLookup for CountingRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        self.by_id.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_id(key_id)
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        self.by_digest.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_digest(digest)
    }

    fn mark_used(&self, key_id: &KeyId, at: std::time::SystemTime) {
        self.inner.mark_used(key_id, at);
    }
}

impl KeyRegistry for CountingRegistry {
    fn register(&self, record: KeyRecord) -> keygate::BackendFuture<'_, Result<(), RegistryError>> {
        self.inner.register(record)
    }

    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> keygate::BackendFuture<'_, Result<std::sync::Arc<KeyRecord>, RegistryError>> {
        self.inner.revoke(key_id, at)
    }

    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> keygate::BackendFuture<'_, Result<std::sync::Arc<KeyRecord>, RegistryError>> {
        self.inner.set_expiry(key_id, expires_at)
    }

    fn list_keys(
        &self,
        principal_id: &str,
    ) -> keygate::BackendFuture<'_, Result<Vec<std::sync::Arc<KeyRecord>>, RegistryError>> {
        self.inner.list_keys(principal_id)
    }

    fn update(
        &self,
        key_id: &KeyId,
        change: keygate::KeyUpdate,
    ) -> keygate::BackendFuture<'_, Result<std::sync::Arc<KeyRecord>, RegistryError>> {
        self.inner.update(key_id, change)
    }

    fn delete(
        &self,
        key_id: &KeyId,
    ) -> keygate::BackendFuture<'_, Result<std::sync::Arc<KeyRecord>, RegistryError>> {
        self.inner.delete(key_id)
    }

    fn list_principals(&self) -> keygate::BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        self.inner.list_principals()
    }
}
