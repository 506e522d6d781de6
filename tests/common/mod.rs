//! What the guard tests share: a service served on a loopback port with a real HTTP
//! client, the assertion of the refusal contract, and a registry that counts lookups.
//!
//! A test file uses it with `mod common;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use axum::{ServiceExt as _, body::Body};
use http::{Request, Response};
use keygate::{
    InMemoryRegistry, KeyDigest, KeyId, KeyRecord, KeyRegistry, RegistryError,
    registry::LookupFuture,
};
use reqwest::header::{CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use serde_json::Value;
use time::OffsetDateTime;
use tower::Service;

/// The refusals that carry `WWW-Authenticate` (the 401 rows about credentials).
pub(crate) const CREDENTIAL_REASONS: [&str; 5] = [
    "missing_credentials",
    "malformed_credentials",
    "invalid_credentials",
    "expired_credentials",
    "revoked_credentials",
];

/// A service listening on `127.0.0.1:<random port>`, and a client for it.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) client: reqwest::Client,
}

impl TestServer {
    /// Serves `service` (an axum `Router` or any service on axum's body) with the peer
    /// address available as `ConnectInfo<SocketAddr>`.
    pub(crate) async fn start<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let make = service.into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, make).await.unwrap() });
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Self { addr, client }
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

/// Sends `request` and returns the response.
pub(crate) async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

/// Asserts that `response` is the refusal of the contract: `status`, the JSON body
/// `{"error":{"code":status,"reason":reason,"message":<non-empty>}}` and nothing else,
/// `Content-Type: application/json`, and `WWW-Authenticate` exactly on the 401 rows about
/// credentials. Returns the headers for further checks.
pub(crate) async fn assert_refusal(
    response: reqwest::Response,
    status: u16,
    reason: &str,
) -> HeaderMap {
    let headers = response.headers().clone();
    let actual = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(actual, status, "status (expected {reason}); body: {text}");
    assert_eq!(
        headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "content-type of {reason}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    let error = body["error"].as_object().unwrap();
    assert_eq!(body.as_object().unwrap().len(), 1, "only `error`: {text}");
    assert_eq!(error.len(), 3, "only code, reason, message: {text}");
    assert_eq!(error["code"], status, "{text}");
    assert_eq!(error["reason"], reason, "{text}");
    let message = error["message"].as_str().unwrap();
    assert!(!message.trim().is_empty(), "{text}");
    let credential_row = status == 401 && CREDENTIAL_REASONS.contains(&reason);
    assert_eq!(
        headers.contains_key(WWW_AUTHENTICATE),
        credential_row,
        "WWW-Authenticate on {reason}: {headers:?}"
    );
    headers
}

/// Asserts `response` is a 200 and returns its body.
pub(crate) async fn assert_ok(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "body: {text}");
    text
}

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

impl KeyRegistry for CountingRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        self.by_id.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_id(key_id)
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        self.by_digest.fetch_add(1, Ordering::SeqCst);
        self.inner.find_by_digest(digest)
    }

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

    fn mark_used(&self, key_id: &KeyId, at: std::time::SystemTime) {
        self.inner.mark_used(key_id, at);
    }
}
