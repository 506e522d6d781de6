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
//! 2. **Credential**: exactly one, from the configured [`CredentialSource`]s.
//! 3. **Failed attempts**: a client that has failed too often is refused before any
//!    lookup (when a [`FailedAttemptLimiter`] is configured).
//! 4. **Verify**: a generated key's checksum first (no lookup for garbage), then the
//!    registry; the stored digest is compared in constant time. Unknown, expired and
//!    revoked keys are refused and counted against the client.
//! 5. **Rate limit**: per principal (or per key), by the key's tier, for authenticated
//!    callers only (when a [`RateLimit`] is configured).
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

mod auth;
mod service;

use std::{fmt, future::Future, net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use http::{HeaderName, HeaderValue};
use tower_layer::Layer;

pub use self::service::{ApiKeyGuardService, ResponseFuture};
use crate::{
    ApiKey, AuditSink, InMemoryRegistry, JsonRejection, KeyError, KeyGrant, KeyRegistry,
    RegistryError,
    credential::{CredentialSource, Credentials, DEFAULT_HEADER, DEFAULT_MAX_CREDENTIAL_LEN},
    limit::{FailedAttemptLimiter, RateLimitBackend},
};

/// How long a client is told to wait when a backend is down, unless configured.
pub const DEFAULT_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The misconfigurations [`ApiKeyGuardBuilder::build`] refuses, so that a misconfigured
/// server never starts. No variant carries key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Neither a key nor a registry was configured.
    #[error(
        "no API key or key registry configured: add a key with `.key(..)` (for example from \
         an environment variable set to the output of `openssl rand -base64 32`) or a \
         registry with `.registry(..)`"
    )]
    NoKeySource,
    /// Every credential source was switched off.
    #[error("no credential source configured: keep the X-API-Key header or add another source")]
    NoCredentialSource,
    /// A header name is not a valid HTTP header name.
    #[error("`{0}` is not a valid header name")]
    InvalidHeaderName(String),
    /// A public path does not start with `/`.
    #[error("public path `{0}` must start with `/`")]
    InvalidPublicPath(String),
    /// The realm contains characters a header cannot carry.
    #[error("the realm must be visible ASCII without `\"` or `\\`")]
    InvalidRealm,
    /// Keys given to the builder and a registry cannot be combined.
    #[error(
        "keys given with `.key(..)` cannot be combined with `.registry(..)`: register them in \
         the registry instead"
    )]
    KeysAndRegistry,
    /// The same key was given twice.
    #[error("the same API key was configured twice")]
    DuplicateKey,
    /// A key is unusable (too short, missing environment variable, ...).
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Whom the per-request rate limit counts against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitBy {
    /// All keys of a principal share one budget (the default): rotating keys does not
    /// reset it.
    #[default]
    Principal,
    /// Each key has its own budget.
    Key,
}

/// The per-request rate limit of the guard: a backend, whom it counts against, what a
/// request costs, and what happens when the backend fails.
#[derive(Clone)]
pub struct RateLimit {
    pub(crate) backend: Arc<dyn RateLimitBackend>,
    pub(crate) key_by: LimitBy,
    pub(crate) cost: NonZeroU32,
    pub(crate) fail_open: bool,
}

impl RateLimit {
    /// A limit on `backend`, per principal, cost 1, failing closed.
    pub fn new(backend: impl RateLimitBackend) -> Self {
        Self::shared(Arc::new(backend))
    }

    /// A limit on a shared backend.
    pub fn shared(backend: Arc<dyn RateLimitBackend>) -> Self {
        Self {
            backend,
            key_by: LimitBy::Principal,
            cost: NonZeroU32::MIN,
            fail_open: false,
        }
    }

    /// Whom the limit counts against.
    pub fn by(mut self, key_by: LimitBy) -> Self {
        self.key_by = key_by;
        self
    }

    /// What one request costs (default 1).
    pub fn cost(mut self, cost: NonZeroU32) -> Self {
        self.cost = cost;
        self
    }

    /// Admit requests (and audit them as such) when the backend fails, instead of refusing
    /// them with 503 `auth_unavailable` (the default).
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("backend", &self.backend)
            .field("key_by", &self.key_by)
            .field("cost", &self.cost)
            .field("fail_open", &self.fail_open)
            .finish()
    }
}

/// Reads the connecting peer's address from the request extensions.
pub type ClientIpFn = dyn Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync;

/// The peer address of a connection, for servers that want to hand it to keygate
/// explicitly: insert it into the request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Everything the guard needs on the request path, shared by all clones.
pub(crate) struct GuardConfig {
    pub(crate) registry: Arc<dyn KeyRegistry>,
    pub(crate) credentials: Credentials,
    /// Sorted, for binary search.
    pub(crate) public_paths: Vec<Box<str>>,
    pub(crate) challenge: HeaderValue,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) failed_attempts: Option<Arc<FailedAttemptLimiter>>,
    pub(crate) client_ip: Option<Arc<ClientIpFn>>,
    pub(crate) trusted_proxies: usize,
    pub(crate) unavailable_retry_after: Duration,
    pub(crate) credential_header_names: Vec<HeaderName>,
}

impl GuardConfig {
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.public_paths
            .binary_search_by(|p| (**p).cmp(path))
            .is_ok()
    }
}

impl fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardConfig")
            .field("registry", &self.registry)
            .field("sources", &self.credentials.sources)
            .field("max_credential_len", &self.credentials.max_len)
            .field("public_paths", &self.public_paths)
            .field("audit", &self.audit)
            .field("rate_limit", &self.rate_limit)
            .field("failed_attempts", &self.failed_attempts)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// The guard layer. Build it with [`ApiKeyGuard::builder`]; cloning is cheap (one `Arc`).
///
/// `R` renders refusals ([`JsonRejection`] by default, see [`crate::reject`]).
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
    /// The registry the guard looks keys up in (to issue, rotate or revoke keys at run time).
    pub fn registry(&self) -> &Arc<dyn KeyRegistry> {
        &self.config.registry
    }

    /// The client address the guard sees for `request`: from the configured closure or
    /// the `ClientAddr` / `SocketAddr` extension, then through `X-Forwarded-For` as far as
    /// the configured number of trusted proxies allows. For handlers that authenticate by
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
    pub fn client_ip<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        self.config.client_ip(request)
    }

    /// The credential of a request, from the guard's configured sources, with the same
    /// refusals as the layer (missing, malformed). For handlers that authenticate by
    /// themselves, such as a WebSocket endpoint that also accepts the key as its first
    /// message.
    pub fn credential<'a, B>(
        &'a self,
        request: &'a http::Request<B>,
    ) -> Result<crate::credential::Credential<'a>, crate::Rejection> {
        self.config
            .credentials
            .extract(request.headers(), request.uri())
    }

    /// Runs stages 3 to 5 of the guard (failed attempts, verification, rate limit) on a key
    /// presented outside the request headers, e.g. in a WebSocket message, and records the
    /// decision in the audit sink under `action`.
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
            .map(|_| service::Facts::named(action, client_ip));
        let started = config
            .credentials
            .check(credential)
            .map_err(auth::Refusal::from)
            .and_then(|()| auth::Verification::start(&config, credential, client_ip))
            .map(|verification| auth::Authenticate {
                config: Arc::clone(&config),
                verification,
            });
        async move {
            let decision = match started {
                Ok(auth) => auth.await,
                Err(refusal) => Err(refusal),
            };
            match decision {
                Ok(admission) => {
                    config.audit_admitted(facts.as_ref(), &admission);
                    config.note_use(&admission);
                    Ok(admission.principal)
                }
                Err(refusal) => {
                    config.audit_refused(facts.as_ref(), &refusal);
                    Err(refusal.rejection)
                }
            }
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

/// Configures an [`ApiKeyGuard`]. Errors are kept until [`build`](Self::build), which
/// reports the first.
#[must_use]
pub struct ApiKeyGuardBuilder<R = JsonRejection> {
    registry: Option<Arc<dyn KeyRegistry>>,
    keys: Vec<(ApiKey, KeyGrant)>,
    sources: Vec<CredentialSource>,
    max_len: usize,
    public_paths: Vec<String>,
    realm: String,
    audit: Option<Arc<dyn AuditSink>>,
    rate_limit: Option<RateLimit>,
    failed_attempts: Option<Arc<FailedAttemptLimiter>>,
    client_ip: Option<Arc<ClientIpFn>>,
    trusted_proxies: usize,
    unavailable_retry_after: Duration,
    renderer: R,
    error: Option<BuildError>,
}

impl ApiKeyGuardBuilder {
    fn new() -> Self {
        Self {
            registry: None,
            keys: Vec::new(),
            sources: vec![CredentialSource::Header(HeaderName::from_static(
                DEFAULT_HEADER,
            ))],
            max_len: DEFAULT_MAX_CREDENTIAL_LEN,
            public_paths: Vec::new(),
            realm: "api".to_owned(),
            audit: None,
            rate_limit: None,
            failed_attempts: None,
            client_ip: None,
            trusted_proxies: 0,
            unavailable_retry_after: DEFAULT_UNAVAILABLE_RETRY_AFTER,
            renderer: JsonRejection,
            error: None,
        }
    }
}

impl<R> ApiKeyGuardBuilder<R> {
    fn fail(mut self, error: BuildError) -> Self {
        self.error.get_or_insert(error);
        self
    }

    /// Admits `key` with what `grant` gives it. The keys given this way are kept (as
    /// digests) in an [`InMemoryRegistry`] of the guard's own.
    pub fn key(mut self, key: ApiKey, grant: KeyGrant) -> Self {
        self.keys.push((key, grant));
        self
    }

    /// Admits the key in environment variable `var` (e.g. `COORDINATOR_API_KEY`). When the
    /// variable is unset or holds a key shorter than 32 characters, [`build`](Self::build)
    /// fails with an error that names the variable and says how to make a key.
    pub fn key_from_env(self, var: &str, grant: KeyGrant) -> Self {
        match ApiKey::from_env(var) {
            Ok(key) => self.key(key, grant),
            Err(error) => self.fail(error.into()),
        }
    }

    /// Looks keys up in `registry`.
    pub fn registry(self, registry: impl KeyRegistry) -> Self {
        self.shared_registry(Arc::new(registry))
    }

    /// Looks keys up in a registry shared with the rest of the application (e.g. an
    /// admin API that issues and revokes keys).
    pub fn shared_registry(mut self, registry: Arc<dyn KeyRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Reads the key from this header instead of `X-API-Key`.
    pub fn header(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => {
                self.sources
                    .retain(|s| !matches!(s, CredentialSource::Header(_)));
                self.sources.insert(0, CredentialSource::Header(name));
                self
            }
            Err(_) => self.fail(BuildError::InvalidHeaderName(name.to_owned())),
        }
    }

    /// Also accepts `Authorization: Bearer <key>`.
    pub fn bearer(self) -> Self {
        self.source(CredentialSource::Bearer)
    }

    /// Also accepts the key in query parameter `name` (e.g. `token`).
    pub fn query(self, name: &str) -> Self {
        self.source(CredentialSource::Query(name.to_owned()))
    }

    /// Also accepts a `Sec-WebSocket-Protocol` entry `keygate.key.<key>`.
    pub fn websocket_protocol(self) -> Self {
        self.source(CredentialSource::WebSocketProtocol {
            prefix: crate::credential::DEFAULT_WEBSOCKET_PROTOCOL_PREFIX.to_owned(),
        })
    }

    /// Adds a credential source.
    pub fn source(mut self, source: CredentialSource) -> Self {
        if !self.sources.contains(&source) {
            self.sources.push(source);
        }
        self
    }

    /// Replaces the credential sources.
    pub fn sources(mut self, sources: impl IntoIterator<Item = CredentialSource>) -> Self {
        self.sources = sources.into_iter().collect();
        self
    }

    /// The longest credential accepted, in bytes (default 512).
    pub fn max_credential_len(mut self, max: usize) -> Self {
        self.max_len = max;
        self
    }

    /// A path that needs no key, matched exactly (`/health` is not `/health/`).
    pub fn public_path(mut self, path: &str) -> Self {
        if !path.starts_with('/') {
            return self.fail(BuildError::InvalidPublicPath(path.to_owned()));
        }
        self.public_paths.push(path.to_owned());
        self
    }

    /// The realm named in `WWW-Authenticate` (default `api`).
    pub fn realm(mut self, realm: &str) -> Self {
        if !realm
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return self.fail(BuildError::InvalidRealm);
        }
        self.realm = realm.to_owned();
        self
    }

    /// Records every decision in `sink`.
    pub fn audit(self, sink: impl AuditSink) -> Self {
        self.shared_audit(Arc::new(sink))
    }

    /// Records every decision in a sink shared with the rest of the application.
    pub fn shared_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Rate-limits admitted callers.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Refuses clients that fail too often, before any registry lookup.
    pub fn failed_attempts(self, limiter: FailedAttemptLimiter) -> Self {
        self.shared_failed_attempts(Arc::new(limiter))
    }

    /// Refuses clients that fail too often, with a limiter shared with the application (to
    /// read its size, or to share it between several guards).
    pub fn shared_failed_attempts(mut self, limiter: Arc<FailedAttemptLimiter>) -> Self {
        self.failed_attempts = Some(limiter);
        self
    }

    /// How to find the connecting peer's address in the request extensions. By default
    /// keygate looks for a [`ClientAddr`] or a `std::net::SocketAddr` extension. With axum:
    /// `.client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))`.
    pub fn client_ip(
        mut self,
        read: impl Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.client_ip = Some(Arc::new(read));
        self
    }

    /// How many reverse proxies in front of the service append to `X-Forwarded-For`
    /// (default 0: the header is ignored). The client is the rightmost address those proxies
    /// did not add; the leftmost entries are never trusted.
    pub fn trusted_proxies(mut self, count: usize) -> Self {
        self.trusted_proxies = count;
        self
    }

    /// `Retry-After` of a 503 `auth_unavailable` (default 5 s).
    pub fn unavailable_retry_after(mut self, wait: Duration) -> Self {
        self.unavailable_retry_after = wait;
        self
    }

    /// Renders refusals with `renderer` (see [`crate::reject`]).
    pub fn render_with<R2>(self, renderer: R2) -> ApiKeyGuardBuilder<R2> {
        ApiKeyGuardBuilder {
            registry: self.registry,
            keys: self.keys,
            sources: self.sources,
            max_len: self.max_len,
            public_paths: self.public_paths,
            realm: self.realm,
            audit: self.audit,
            rate_limit: self.rate_limit,
            failed_attempts: self.failed_attempts,
            client_ip: self.client_ip,
            trusted_proxies: self.trusted_proxies,
            unavailable_retry_after: self.unavailable_retry_after,
            renderer,
            error: self.error,
        }
    }

    /// Checks the configuration and builds the guard.
    pub fn build(self) -> Result<ApiKeyGuard<R>, BuildError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        if self.sources.is_empty() {
            return Err(BuildError::NoCredentialSource);
        }
        let registry: Arc<dyn KeyRegistry> = match (self.registry, self.keys.is_empty()) {
            (Some(_), false) => return Err(BuildError::KeysAndRegistry),
            (Some(registry), true) => registry,
            (None, true) => return Err(BuildError::NoKeySource),
            (None, false) => {
                let registry = InMemoryRegistry::new();
                for (key, grant) in self.keys {
                    registry
                        .insert_key(&key, grant)
                        .map_err(|error| match error {
                            RegistryError::Key(error) => BuildError::Key(error),
                            _ => BuildError::DuplicateKey,
                        })?;
                }
                Arc::new(registry)
            }
        };
        let bearer = self.sources.contains(&CredentialSource::Bearer);
        let scheme = if bearer { "Bearer" } else { "ApiKey" };
        let challenge = HeaderValue::try_from(format!("{scheme} realm=\"{}\"", self.realm))
            .map_err(|_| BuildError::InvalidRealm)?;
        let credential_header_names = self
            .sources
            .iter()
            .filter_map(|s| match s {
                CredentialSource::Header(name) => Some(name.clone()),
                CredentialSource::Bearer => Some(http::header::AUTHORIZATION),
                CredentialSource::WebSocketProtocol { .. } => {
                    Some(http::header::SEC_WEBSOCKET_PROTOCOL)
                }
                _ => None,
            })
            .collect();
        let mut public_paths: Vec<Box<str>> =
            self.public_paths.into_iter().map(Into::into).collect();
        public_paths.sort();
        public_paths.dedup();
        Ok(ApiKeyGuard {
            config: Arc::new(GuardConfig {
                registry,
                credentials: Credentials {
                    sources: self.sources,
                    max_len: self.max_len,
                },
                public_paths,
                challenge,
                audit: self.audit,
                rate_limit: self.rate_limit,
                failed_attempts: self.failed_attempts,
                client_ip: self.client_ip,
                trusted_proxies: self.trusted_proxies,
                unavailable_retry_after: self.unavailable_retry_after,
                credential_header_names,
            }),
            renderer: self.renderer,
        })
    }
}

impl<R: fmt::Debug> fmt::Debug for ApiKeyGuardBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyGuardBuilder")
            .field("keys", &self.keys.len())
            .field("registry", &self.registry)
            .field("sources", &self.sources)
            .field("public_paths", &self.public_paths)
            .field("renderer", &self.renderer)
            .finish_non_exhaustive()
    }
}
