//! The guard's contract, one module a topic: the refusal rows of DESIGN.md about
//! credentials (`credentials`), route rules against a real router (`routes`), the
//! credential sources (`sources`), a failed-attempt
//! limiter that cannot see clients (`client_address`), the public-route
//! allowlist (`public_routes`), admission and the key lifecycle (`lifecycle`), build-time
//! errors (`build`), backends that fail or answer late (`availability`), body types other
//! than axum's (`body_types`), the audit trail (`audit`), secrets that must never show
//! up anywhere (`secrets`), and the workspace a route names (`workspaces`).
//!
//! Most tests drive the guard in process, with `oneshot` on a `service_fn` (no socket);
//! those about what only a real connection shows (header spelling on the wire, kept-alive
//! connections, the peer address, hyper's body type, logs of a whole stack) run a server
//! on a loopback port. One test binary, so that it links once.
//!
//! Rate limiting and failed attempts are tested in `tests/rate_limit.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod availability;
mod body_types;
mod build;
mod client_address;
mod credentials;
#[cfg(feature = "jwt")]
mod jwt;
mod lifecycle;
mod public_routes;
mod routes;
mod secrets;
mod sources;
mod workspaces;

use std::{convert::Infallible, sync::Arc};

use axum::body::Body;
use http::{Request, Response, StatusCode, header::CONTENT_TYPE};
use keygate::{
    ApiKey, ApiKeyGuard, ApiKeyGuardBuilder, IssuedKey, KeyGrant, KeyId, KeyPrefix, KeyRegistry,
    Principal,
};
use serde_json::{Value, json};
use time::OffsetDateTime;
use tower::{ServiceBuilder, util::BoxCloneSyncService};

use support::{CountingRegistry, Reply};

// ---------------------------------------------------------------------------------------
// The application under test

/// The guarded application, driven in process or served.
type App = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The inner service: a protected route `/whoami` that answers what the handler sees of
/// the caller, a public one `/health`, look-alikes of it (`/health/`, `/healthz`), a
/// route the guard's configuration never mentions (`/admin/secret`), and 404 for the rest.
async fn routes(request: Request<Body>) -> Result<Response<Body>, Infallible> {
    let text = |body: &'static str| Ok(Response::new(Body::from(body)));
    match request.uri().path() {
        "/whoami" => {
            let Some(principal) = request.extensions().get::<Principal>() else {
                return text("no principal");
            };
            let body = whoami(principal).to_string();
            let mut response = Response::new(Body::from(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, "application/json".parse().unwrap());
            Ok(response)
        }
        "/health" | "/health/" | "/healthz" => text("ok"),
        "/admin/secret" => text("secret"),
        _ => {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_FOUND;
            Ok(response)
        }
    }
}

/// What the handler sees of the caller.
fn whoami(principal: &Principal) -> Value {
    json!({
        "id": principal.id(),
        "key_id": principal.key_id().map(|id| id.as_str().to_owned()),
        "workspaces": principal.workspaces(),
        "scopes": principal.scopes(),
        "tier": principal.tier(),
    })
}

/// [`routes`] behind `guard`.
fn app(guard: ApiKeyGuard) -> App {
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(guard)
            .service(tower::service_fn(routes)),
    )
}

/// A GET request on `path_and_query`.
fn get(path_and_query: &str) -> http::request::Builder {
    Request::get(path_and_query)
}

/// A guard whose registry is a [`CountingRegistry`], driven in process.
struct Fixture {
    app: App,
    registry: Arc<CountingRegistry>,
}

impl Fixture {
    /// The guard made by `configure` from a builder that already has the registry.
    fn new(configure: impl FnOnce(ApiKeyGuardBuilder) -> ApiKeyGuardBuilder) -> Self {
        let registry = Arc::new(CountingRegistry::default());
        let builder = ApiKeyGuard::builder().registry(registry.clone());
        let guard = configure(builder).build().unwrap();
        Self {
            app: app(guard),
            registry,
        }
    }

    async fn issue(&self, grant: KeyGrant) -> IssuedKey {
        self.registry.issue(grant).await.unwrap()
    }

    /// A fresh key of principal `p`, its text, and its id.
    async fn key(&self) -> (String, KeyId) {
        let issued = self.issue(KeyGrant::new("p")).await;
        (issued.key.expose_secret().to_owned(), issued.record.key_id)
    }

    /// Calls the guarded app once with `request`.
    async fn send(&self, request: http::request::Builder) -> Reply {
        support::oneshot(self.app.clone(), request).await
    }

    /// `GET path` with `X-API-Key: key`.
    async fn get_with_key(&self, path: &str, key: &str) -> Reply {
        self.send(get(path).header("x-api-key", key)).await
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
    support::random_key()
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

/// Three keys issued by `registry`: `valid` (a grant of principal `coordinator-1`), one
/// of `coordinator-2` that expired a minute ago, and one of `coordinator-3` revoked now.
async fn valid_expired_revoked(
    registry: &impl KeyRegistry,
    valid: KeyGrant,
) -> (IssuedKey, IssuedKey, IssuedKey) {
    let valid = registry.issue(valid).await.unwrap();
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
    (valid, expired, revoked)
}

fn minutes_ago(minutes: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::minutes(minutes)
}
