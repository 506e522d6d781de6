//! The guard: [`ApiKeyGuard`], a tower [`Layer`] that admits only requests carrying a
//! valid API key.
//!
//! Deny by default: every path needs a key except the exact paths on the public
//! allowlist, so a route added later without thought is protected too.
//!
//! On every request, in order (each stage may refuse; nothing after a refusal runs, and the
//! inner service is never called before the decision):
//!
//! 1. **Route policy**: a path on the public allowlist passes without a key.
//! 2. **Credential**: exactly one, from the configured
//!    [`CredentialSource`](crate::CredentialSource)s.
//! 3. **Failed attempts**: a client that has failed too often is refused before any
//!    lookup (when a [`FailedAttemptLimiter`](crate::limit::FailedAttemptLimiter) is
//!    configured).
//! 4. **Verify**: a generated key's checksum first (no lookup for garbage), then the
//!    registry; the stored digest is compared in constant time. Unknown, expired and
//!    revoked keys are refused and counted against the client. With a JWT verifier
//!    (feature `jwt`, [`ApiKeyGuardBuilder::jwt`]), a credential shaped like a JWT is
//!    verified as an access token instead, with the same refusals and counting.
//! 5. **Rate limit**: per principal (or per key), by the key's tier, for authenticated
//!    callers only (when a [`RateLimit`](crate::RateLimit) is configured).
//! 6. **Admit**: the [`Principal`](crate::Principal) goes into the request extensions, an
//!    audit event is recorded, the inner service is called, and its response gets the
//!    rate-limit headers.
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Principal};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::new("an-opaque-key-of-at-least-32-characters")?;
//! let guard = ApiKeyGuard::builder()
//!     .key(key, KeyGrant::new("coordinator").workspaces(["ws-1"]))
//!     .public_path("/health")
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/jobs", get(|Extension(p): Extension<Principal>| async move { p.id().to_owned() }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(guard);
//! # let _ = app; Ok(()) }
//! ```

mod builder;
mod config;
mod decide;
mod last_use;
mod routes;
mod service;

use std::{fmt, future::Future, net::IpAddr, sync::Arc};

use tower_layer::Layer;

pub(crate) use self::config::GuardConfig;
use self::decide::{Started, Verification};
pub use self::{
    builder::{ApiKeyGuardBuilder, BuildError, DEFAULT_UNAVAILABLE_RETRY_AFTER},
    config::{AuditFailure, ClientAddr, ClientIpFn},
    routes::Route,
    service::{ApiKeyGuardService, ResponseFuture},
};
use crate::{JsonRejection, KeyLookup, audit::RequestFacts};

/// The guard layer. Build it with [`ApiKeyGuard::builder`]; cloning is cheap (one `Arc`).
///
/// `R` renders refusals ([`JsonRejection`] by default, see [`crate::reject`]).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Principal};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = "a-key-from-openssl-rand-base64-32-xxxxx";
/// let guard = ApiKeyGuard::builder()
///     .key(ApiKey::new(key)?, KeyGrant::new("coordinator-1"))
///     .build()?;
/// let service = guard.layer(service_fn(|request: Request<()>| async move {
///     let caller = request.extensions().get::<Principal>().map(|p| p.id().to_owned());
///     Ok::<_, Infallible>(Response::new(caller.unwrap_or_default()))
/// }));
///
/// let request = Request::get("/jobs").header("x-api-key", key).body(())?;
/// let response = service.clone().oneshot(request).await?;
/// assert_eq!(response.body(), "coordinator-1");
///
/// let response = service.oneshot(Request::get("/jobs").body(())?).await?;
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiKeyGuard<R = JsonRejection> {
    config: Arc<GuardConfig>,
    renderer: R,
}

impl ApiKeyGuard {
    /// Starts configuring a guard.
    pub fn builder() -> ApiKeyGuardBuilder {
        ApiKeyGuardBuilder::new()
    }
}

impl<R> ApiKeyGuard<R> {
    /// Where the guard looks keys up. (To issue, rotate or revoke keys at run time, keep
    /// an `Arc` of the registry given to the builder.)
    #[must_use]
    pub fn registry(&self) -> &Arc<dyn KeyLookup> {
        &self.config.registry
    }

    /// The client address the guard sees for `request`: from the configured closure or
    /// the `ClientAddr` / `SocketAddr` extension, then through `X-Forwarded-For` as far as
    /// the trusted proxy networks (or, without them, the configured number of trusted
    /// proxies) allow: the same rule as the guard's. For handlers that authenticate by
    /// themselves ([`authenticate`](Self::authenticate)), so that their failed attempts
    /// count against the same client as the guard's.
    ///
    /// ```
    /// use keygate::{ApiKey, ApiKeyGuard, ClientAddr, KeyGrant};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let guard = ApiKeyGuard::builder()
    ///     .key(ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?, KeyGrant::new("p"))
    ///     .trusted_proxies(1)
    ///     .build()?;
    /// let mut request = http::Request::get("/ws")
    ///     .header("x-forwarded-for", "10.0.0.1, 203.0.113.9")
    ///     .body(())?;
    /// request.extensions_mut().insert(ClientAddr("192.0.2.1".parse()?));
    /// // The proxy at 192.0.2.1 appended the real client on the right.
    /// assert_eq!(guard.client_ip(&request), Some("203.0.113.9".parse()?));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn client_ip<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        self.config.client_ip(request)
    }

    /// The credential of a request, from the guard's configured sources, with the same
    /// refusals as the layer (missing, malformed). For handlers that authenticate by
    /// themselves, such as a WebSocket endpoint that also accepts the key as its first
    /// message.
    ///
    /// # Errors
    ///
    /// [`Rejection::MissingCredentials`](crate::Rejection::MissingCredentials) or
    /// [`Rejection::MalformedCredentials`](crate::Rejection::MalformedCredentials).
    pub fn credential<'a, B>(
        &'a self,
        request: &'a http::Request<B>,
    ) -> Result<crate::credential::Credential<'a>, crate::Rejection> {
        self.config
            .credentials
            .extract(request.headers(), request.uri())
    }

    /// Runs stages 3 to 5 of the guard (failed attempts, verification, rate limit) on a key
    /// (or, with a JWT verifier, a token) presented outside the request headers, e.g. in a
    /// WebSocket message, and records the decision in the audit sink under `action`, as
    /// the layer does.
    ///
    /// # Errors
    ///
    /// The [`Rejection`](crate::Rejection) the layer would answer for the same key.
    ///
    /// ```
    /// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Rejection};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = "a-key-from-openssl-rand-base64-32-xxxxx";
    /// let guard = ApiKeyGuard::builder()
    ///     .key(ApiKey::new(key)?, KeyGrant::new("browser-1"))
    ///     .build()?;
    /// let principal = guard.authenticate(key, None, "ws auth").await?;
    /// assert_eq!(principal.id(), "browser-1");
    /// let refused = guard.authenticate("not-a-registered-key-but-long-enough", None, "ws auth");
    /// assert!(matches!(refused.await, Err(Rejection::InvalidCredentials)));
    /// # Ok(()) }
    /// ```
    pub fn authenticate(
        &self,
        credential: &str,
        client_ip: Option<IpAddr>,
        action: &str,
    ) -> impl Future<Output = Result<crate::Principal, crate::Rejection>> + Send + use<R> {
        let config = Arc::clone(&self.config);
        let facts = config
            .audit
            .as_ref()
            .map(|_| RequestFacts::named(action, client_ip));
        let started = match config.credentials.check(credential) {
            Ok(()) => Verification::start(&config, credential, client_ip, &routes::DEFAULT_ACCESS),
            Err(rejection) => Started::Decided(Err(rejection.into())),
        };
        async move {
            let decision = match started {
                Started::Decided(decision) => decision,
                Started::Waiting(mut verification) => {
                    std::future::poll_fn(|cx| verification.poll_with(&config, cx)).await
                }
            };
            config
                .conclude(decision, facts)
                .map(|admission| admission.principal)
        }
    }
}

impl<R: fmt::Debug> fmt::Debug for ApiKeyGuard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyGuard")
            .field("config", &self.config)
            .field("renderer", &self.renderer)
            .finish()
    }
}

impl<S, R: Clone> Layer<S> for ApiKeyGuard<R> {
    type Service = ApiKeyGuardService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyGuardService::new(inner, Arc::clone(&self.config), self.renderer.clone())
    }
}
