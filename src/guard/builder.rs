//! [`ApiKeyGuardBuilder`]: the guard's configuration, checked once at
//! [`build`](ApiKeyGuardBuilder::build) so that a misconfigured server never starts.

use std::{
    fmt,
    net::IpAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

use super::{
    ApiKeyGuard, AuditFailure, ClientIpFn, GuardConfig,
    last_use::LastUseClock,
    routes::{Route, RoutePolicy},
};
use crate::{
    ApiKey, AuditSink, InMemoryRegistry, JsonRejection, KeyError, KeyGrant, KeyLookup,
    RegistryError,
    credential::{CredentialSource, Credentials, DEFAULT_HEADER, DEFAULT_MAX_CREDENTIAL_LEN},
    limit::{FailedAttemptLimiter, RateLimit, parse_network},
};

/// How long a client is told to wait when a backend is down, unless configured.
pub const DEFAULT_UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The misconfigurations [`ApiKeyGuardBuilder::build`] refuses, so that a misconfigured
/// server never starts. No variant carries key material.
///
/// `Debug` shows the same message as `Display`, so that a `main` returning
/// `Result<(), Box<dyn Error>>` prints what to fix, not the variant's fields.
#[non_exhaustive]
#[derive(thiserror::Error)]
pub enum BuildError {
    /// Neither a key, a registry nor a JWT verifier was configured.
    #[error(
        "no API key or key registry configured: add a key with `.key(..)` (for example from \
         an environment variable set to the output of `openssl rand -base64 32`), a \
         registry with `.registry(..)`, or a JWT verifier with `.jwt(..)` (feature `jwt`)"
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
    /// A route rule is malformed, or two rules cover the same path and method.
    #[error("{0}")]
    InvalidRoute(String),
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
    /// A trusted proxy entry is neither an IP address nor a CIDR network.
    #[error(
        "trusted proxy `{0}` is neither an IP address (`192.168.1.7`) nor a CIDR network \
         (`10.0.0.0/8`)"
    )]
    InvalidTrustedProxy(String),
    /// A failed-attempt limiter without a configured way to find the client's address.
    #[error(
        "`.failed_attempts(..)` needs the client's address: say where it is with \
         `.client_ip(..)` (axum: `.client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>()\
         .map(|c| c.0.ip()))`, or `keygate::axum::connect_info` with the `axum` feature) or, \
         when the server inserts a `ClientAddr` or `SocketAddr` extension, with \
         `.client_ip_from_extensions()`"
    )]
    NoClientAddress,
}

impl std::fmt::Debug for BuildError {
    /// The message of [`Display`](std::fmt::Display).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Configures an [`ApiKeyGuard`]. Errors are kept until [`build`](Self::build), which
/// reports the first, so a misconfigured server never starts.
///
/// ```
/// use std::{net::SocketAddr, num::NonZeroU32, sync::Arc};
///
/// use axum::extract::ConnectInfo;
/// use keygate::{
///     ApiKey, ApiKeyGuard, BuildError, InMemoryRegistry, KeyGrant,
///     audit::MemorySink,
///     limit::{FailedAttemptLimiter, InMemoryRateLimit, Quota, RateLimit, Tiers},
/// };
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A registry shared with an admin API that issues and revokes keys.
/// let registry = Arc::new(InMemoryRegistry::new());
/// let per_minute = Quota::per_minute(NonZeroU32::new(100).unwrap());
/// let guard = ApiKeyGuard::builder()
///     .registry(Arc::clone(&registry))
///     .bearer()
///     .public_path("/health")
///     .rate_limit(RateLimit::new(InMemoryRateLimit::new(Tiers::new(per_minute))))
///     .failed_attempts(FailedAttemptLimiter::default())
///     // The failed-attempt limiter counts per client: axum's peer address.
///     .client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
///     .audit(MemorySink::new())
///     .build()?;
/// # let _ = guard;
///
/// // Misconfiguration is refused at build time.
/// let error = ApiKeyGuard::builder().build().unwrap_err();
/// assert!(matches!(error, BuildError::NoKeySource));
/// let error = ApiKeyGuard::builder()
///     .key(ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?, KeyGrant::new("p"))
///     .public_path("health")
///     .build()
///     .unwrap_err();
/// assert!(matches!(error, BuildError::InvalidPublicPath(_)));
/// # Ok(()) }
/// ```
#[must_use]
pub struct ApiKeyGuardBuilder<R = JsonRejection> {
    settings: Settings,
    renderer: R,
}

/// What the builder collected, apart from the renderer.
struct Settings {
    registry: Option<Arc<dyn KeyLookup>>,
    keys: Vec<(ApiKey, KeyGrant)>,
    sources: Vec<CredentialSource>,
    max_len: usize,
    routes: Vec<Route>,
    preflight: bool,
    realm: String,
    audit: Option<Arc<dyn AuditSink>>,
    audit_failure: AuditFailure,
    rate_limit: Option<RateLimit>,
    failed_attempts: Option<Arc<FailedAttemptLimiter>>,
    client_ip: Option<Arc<ClientIpFn>>,
    trusted_proxies: usize,
    trusted_networks: Option<Vec<IpNet>>,
    unavailable_retry_after: Duration,
    /// The JWT verifier, if tokens are accepted.
    #[cfg(feature = "jwt")]
    jwt: Option<crate::jwt::JwtVerifier>,
    /// The first misconfiguration met, reported by `build`.
    error: Option<BuildError>,
}

impl ApiKeyGuardBuilder {
    pub(super) fn new() -> Self {
        let settings = Settings {
            registry: None,
            keys: Vec::new(),
            sources: vec![CredentialSource::Header(HeaderName::from_static(
                DEFAULT_HEADER,
            ))],
            max_len: DEFAULT_MAX_CREDENTIAL_LEN,
            routes: Vec::new(),
            preflight: false,
            realm: "api".to_owned(),
            audit: None,
            audit_failure: AuditFailure::KeepServing,
            rate_limit: None,
            failed_attempts: None,
            client_ip: None,
            trusted_proxies: 0,
            trusted_networks: None,
            unavailable_retry_after: DEFAULT_UNAVAILABLE_RETRY_AFTER,
            #[cfg(feature = "jwt")]
            jwt: None,
            error: None,
        };
        Self {
            settings,
            renderer: JsonRejection,
        }
    }
}

impl<R> ApiKeyGuardBuilder<R> {
    fn fail(mut self, error: BuildError) -> Self {
        self.settings.error.get_or_insert(error);
        self
    }

    /// Admits `key` with what `grant` gives it. The keys given this way are kept (as
    /// digests) in an [`InMemoryRegistry`] of the guard's own.
    pub fn key(mut self, key: ApiKey, grant: KeyGrant) -> Self {
        self.settings.keys.push((key, grant));
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

    /// Looks keys up in `registry`: any [`KeyLookup`], e.g. a
    /// [`KeyRegistry`](crate::KeyRegistry). A registry shared with the rest of the
    /// application (e.g. an admin API that issues and revokes keys) is passed as an `Arc`,
    /// which implements [`KeyLookup`] too.
    pub fn registry(mut self, registry: impl KeyLookup) -> Self {
        self.settings.registry = Some(Arc::new(registry));
        self
    }

    /// Also accepts JWT access tokens, verified by `verifier` (feature `jwt`), and reads
    /// credentials from `Authorization: Bearer` too (see [`crate::jwt`]).
    ///
    /// A guard may take API keys only, tokens only (no key or registry needed), or both.
    /// With both, a credential shaped like a JWT (three base64url segments separated by
    /// dots) is verified as a token and anything else is looked up as an API key; a guard
    /// with tokens only refuses anything that is not a valid token (401
    /// `invalid_credentials`). Credentials up to the verifier's
    /// [`max_token_len`](crate::jwt::JwtVerifierBuilder::max_token_len) (default 8 KiB) are
    /// read; API keys stay capped at [`max_credential_len`](Self::max_credential_len).
    ///
    /// ```
    /// use keygate::{ApiKeyGuard, jwt::{HmacSecret, JwtVerifier}};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
    /// let guard = ApiKeyGuard::builder()
    ///     .jwt(JwtVerifier::hs256(&secret).build())
    ///     .public_path("/health")
    ///     .build()?;
    /// # let _ = guard; Ok(()) }
    /// ```
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn jwt(mut self, verifier: crate::jwt::JwtVerifier) -> Self {
        self.settings.jwt = Some(verifier);
        self.bearer()
    }

    /// Reads the key from this header instead of `X-API-Key`.
    pub fn header(mut self, name: &str) -> Self {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => {
                self.settings
                    .sources
                    .retain(|s| !matches!(s, CredentialSource::Header(_)));
                self.settings
                    .sources
                    .insert(0, CredentialSource::Header(name));
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

    /// Also accepts a `Sec-WebSocket-Protocol` entry `keygate.key.<key>`, or
    /// `keygate.key.b64.<base64url(key)>` for keys with `/`, `+` or `=`
    /// ([`CredentialSource::WebSocketProtocol`]).
    pub fn websocket_protocol(self) -> Self {
        self.source(CredentialSource::WebSocketProtocol {
            prefix: crate::credential::DEFAULT_WEBSOCKET_PROTOCOL_PREFIX.to_owned(),
        })
    }

    /// Adds a credential source.
    pub fn source(mut self, source: CredentialSource) -> Self {
        if !self.settings.sources.contains(&source) {
            self.settings.sources.push(source);
        }
        self
    }

    /// Replaces the credential sources.
    pub fn sources(mut self, sources: impl IntoIterator<Item = CredentialSource>) -> Self {
        self.settings.sources = sources.into_iter().collect();
        self
    }

    /// The longest API key accepted, in bytes (default 512). Tokens have a cap of their
    /// own, set on the JWT verifier.
    pub fn max_credential_len(mut self, max: usize) -> Self {
        self.settings.max_len = max;
        self
    }

    /// A path that needs no key, matched exactly (`/health` is not `/health/`).
    pub fn public_path(self, path: &str) -> Self {
        if !path.starts_with('/') {
            return self.fail(BuildError::InvalidPublicPath(path.to_owned()));
        }
        self.route(Route::exact(path).public())
    }

    /// Makes `path` and every path under it public, on segment boundaries: `/docs`
    /// covers `/docs`, `/docs/` and `/docs/openapi.json`, never `/docsx` (see [`Route`]).
    pub fn public_prefix(self, path: &str) -> Self {
        self.route(Route::prefix(path).public())
    }

    /// Adds a route rule: public, optional authentication, or what a valid credential
    /// needs there (scopes, rate-limit cost). See [`Route`] for how paths match and which
    /// rule wins; a malformed rule, or two rules for one path and method, fail
    /// [`build`](Self::build) ([`BuildError::InvalidRoute`]).
    pub fn route(mut self, route: Route) -> Self {
        self.settings.routes.push(route);
        self
    }

    /// Lets CORS preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// through without a credential, to a CORS layer inside the guard that answers them.
    /// Off by default: without it a browser cannot call a guarded API from another
    /// origin, but nothing passes unauthenticated.
    pub fn allow_preflight(mut self) -> Self {
        self.settings.preflight = true;
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
        realm.clone_into(&mut self.settings.realm);
        self
    }

    /// Records every decision in `sink`. A sink shared with the rest of the application
    /// is passed as an `Arc`, which implements [`AuditSink`] too.
    ///
    /// Every unauthenticated request is a decision: in front of a sink that writes to
    /// disk, put an [`AggregatingSink`](crate::audit::AggregatingSink), which records the
    /// refusals of one client and reason once per interval with a count, so that a flood
    /// cannot fill the disk.
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.settings.audit = Some(Arc::new(sink));
        self
    }

    /// What to do when the audit sink cannot write (default
    /// [`AuditFailure::KeepServing`]).
    pub fn audit_failure(mut self, policy: AuditFailure) -> Self {
        self.settings.audit_failure = policy;
        self
    }

    /// Rate-limits admitted callers.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.settings.rate_limit = Some(limit);
        self
    }

    /// Refuses clients that fail too often, before any registry lookup. A limiter shared
    /// with the application (to read its size, or to share it between several guards) is
    /// passed as an `Arc<FailedAttemptLimiter>`.
    ///
    /// The limiter counts per client address, so [`build`](Self::build) refuses it
    /// ([`BuildError::NoClientAddress`]) unless the guard is told where the address is:
    /// [`client_ip`](Self::client_ip) (with axum:
    /// `.client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))`, and
    /// the server started with `into_make_service_with_connect_info::<SocketAddr>()`) or
    /// [`client_ip_from_extensions`](Self::client_ip_from_extensions). A request that
    /// still comes without an address cannot be counted: the guard logs a warning, once.
    ///
    /// ```
    /// use std::net::SocketAddr;
    ///
    /// use axum::extract::ConnectInfo;
    /// use keygate::{ApiKey, ApiKeyGuard, BuildError, KeyGrant, limit::FailedAttemptLimiter};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let key = || ApiKey::new("a-coordinator-key-of-at-least-32-chars");
    /// let blind = ApiKeyGuard::builder()
    ///     .key(key()?, KeyGrant::new("coordinator"))
    ///     .failed_attempts(FailedAttemptLimiter::default())
    ///     .build();
    /// assert!(matches!(blind, Err(BuildError::NoClientAddress)));
    ///
    /// let guard = ApiKeyGuard::builder()
    ///     .key(key()?, KeyGrant::new("coordinator"))
    ///     .failed_attempts(FailedAttemptLimiter::default())
    ///     .client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
    ///     .build()?;
    /// # let _ = guard; Ok(()) }
    /// ```
    pub fn failed_attempts(mut self, limiter: impl Into<Arc<FailedAttemptLimiter>>) -> Self {
        self.settings.failed_attempts = Some(limiter.into());
        self
    }

    /// How to find the connecting peer's address in the request extensions. By default
    /// keygate looks for a [`ClientAddr`](super::ClientAddr) or a `std::net::SocketAddr`
    /// extension. With axum:
    /// `.client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))`.
    pub fn client_ip(
        mut self,
        read: impl Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.settings.client_ip = Some(Arc::new(read));
        self
    }

    /// Reads the connecting peer's address from a [`ClientAddr`](super::ClientAddr) or
    /// `std::net::SocketAddr` extension that the server inserts: the default reader, chosen
    /// explicitly, as [`failed_attempts`](Self::failed_attempts) requires.
    pub fn client_ip_from_extensions(mut self) -> Self {
        self.settings.client_ip = Some(Arc::new(super::config::extension_client_ip));
        self
    }

    /// How many reverse proxies in front of the service append to `X-Forwarded-For`
    /// (default 0: the header is ignored). The client is the rightmost address those proxies
    /// did not add; the leftmost entries are never trusted.
    ///
    /// This rule trusts the header from **any** peer: a client that can reach the service
    /// directly, bypassing the proxies, picks its own address. Prefer
    /// [`trusted_proxy_networks`](Self::trusted_proxy_networks), which reads the header
    /// only from the proxies' addresses; once networks are given, this count is ignored.
    pub fn trusted_proxies(mut self, count: usize) -> Self {
        self.settings.trusted_proxies = count;
        self
    }

    /// The addresses and CIDR networks of the reverse proxies in front of the service,
    /// as nginx's `set_real_ip_from` (with `real_ip_recursive on`) and Envoy's trusted
    /// CIDRs. `X-Forwarded-For` is read only when the connecting peer is in one of these
    /// networks; the header is then walked from the right, each entry taken while the hop
    /// before it is a trusted proxy, so the client is the rightmost address that is not a
    /// trusted proxy (the leftmost entry if all are). An entry that is not an address
    /// stops the walk and the peer is the client. An IPv4-mapped IPv6 address
    /// (`::ffff:10.0.0.1`) matches IPv4 networks.
    ///
    /// Entries are CIDR networks (`10.0.0.0/8`, `2001:db8::/32`) or single addresses
    /// (`192.168.1.7`). Calls add up. When networks are given they replace the
    /// [`trusted_proxies`](Self::trusted_proxies) count, whatever the order of the calls;
    /// an empty list trusts no peer (the header is ignored).
    ///
    /// # Errors
    ///
    /// [`build`](Self::build) returns [`BuildError::InvalidTrustedProxy`], naming the
    /// entry, if one is neither an address nor a network.
    ///
    /// ```
    /// use keygate::{ApiKey, ApiKeyGuard, BuildError, ClientAddr, KeyGrant};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let guard = ApiKeyGuard::builder()
    ///     .key(ApiKey::new("a-long-enough-secret-for-the-examples!")?, KeyGrant::new("p"))
    ///     .trusted_proxy_networks(["10.0.0.0/8", "192.168.1.7"])
    ///     .build()?;
    ///
    /// let request = |peer: &str| -> Result<_, Box<dyn std::error::Error>> {
    ///     let mut request = http::Request::get("/jobs")
    ///         .header("x-forwarded-for", "6.6.6.6, 203.0.113.9, 192.168.1.7")
    ///         .body(())?;
    ///     request.extensions_mut().insert(ClientAddr(peer.parse()?));
    ///     Ok(request)
    /// };
    /// // From a trusted proxy, the rightmost address that is not a proxy is the client.
    /// assert_eq!(guard.client_ip(&request("10.0.0.2")?), Some("203.0.113.9".parse()?));
    /// // From anyone else, the header is ignored.
    /// assert_eq!(guard.client_ip(&request("198.51.100.4")?), Some("198.51.100.4".parse()?));
    ///
    /// let error = ApiKeyGuard::builder()
    ///     .key(ApiKey::new("a-long-enough-secret-for-the-examples!")?, KeyGrant::new("p"))
    ///     .trusted_proxy_networks(["10.0.0.0/33"])
    ///     .build()
    ///     .unwrap_err();
    /// assert!(matches!(error, BuildError::InvalidTrustedProxy(entry) if entry == "10.0.0.0/33"));
    /// # Ok(()) }
    /// ```
    pub fn trusted_proxy_networks<I>(mut self, networks: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut parsed = self.settings.trusted_networks.take().unwrap_or_default();
        let mut bad = None;
        for entry in networks {
            let entry = entry.as_ref();
            match parse_network(entry) {
                Some(network) => parsed.push(network),
                None => {
                    bad.get_or_insert_with(|| entry.to_owned());
                }
            }
        }
        self.settings.trusted_networks = Some(parsed);
        match bad {
            Some(entry) => self.fail(BuildError::InvalidTrustedProxy(entry)),
            None => self,
        }
    }

    /// `Retry-After` of a 503 `auth_unavailable` (default 5 s).
    pub fn unavailable_retry_after(mut self, wait: Duration) -> Self {
        self.settings.unavailable_retry_after = wait;
        self
    }

    /// Renders refusals with `renderer` (see [`crate::reject`]).
    pub fn render_with<R2>(self, renderer: R2) -> ApiKeyGuardBuilder<R2> {
        ApiKeyGuardBuilder {
            settings: self.settings,
            renderer,
        }
    }

    /// Checks the configuration and builds the guard.
    ///
    /// # Errors
    ///
    /// The first misconfiguration met while configuring ([`BuildError`]): no key or
    /// registry, an unusable key, an invalid header name, public path or realm, no
    /// credential source.
    pub fn build(self) -> Result<ApiKeyGuard<R>, BuildError> {
        let Self { settings, renderer } = self;
        if let Some(error) = settings.error {
            return Err(error);
        }
        if settings.sources.is_empty() {
            return Err(BuildError::NoCredentialSource);
        }
        if settings.failed_attempts.is_some() && settings.client_ip.is_none() {
            return Err(BuildError::NoClientAddress);
        }
        #[cfg(feature = "jwt")]
        let tokens = settings.jwt.is_some();
        #[cfg(not(feature = "jwt"))]
        let tokens = false;
        let api_keys = settings.registry.is_some() || !settings.keys.is_empty();
        let registry: Arc<dyn KeyLookup> = match (settings.registry, settings.keys.is_empty()) {
            (Some(_), false) => return Err(BuildError::KeysAndRegistry),
            (Some(registry), true) => registry,
            // Tokens only: an empty registry, never asked.
            (None, true) if tokens => Arc::new(InMemoryRegistry::new()),
            (None, true) => return Err(BuildError::NoKeySource),
            (None, false) => {
                let registry = InMemoryRegistry::new();
                for (key, grant) in settings.keys {
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
        let bearer = settings.sources.contains(&CredentialSource::Bearer);
        let scheme = if bearer { "Bearer" } else { "ApiKey" };
        let challenge = HeaderValue::try_from(format!("{scheme} realm=\"{}\"", settings.realm))
            .map_err(|_| BuildError::InvalidRealm)?;
        let credential_header_names = settings
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
        let routes = RoutePolicy::new(settings.routes, settings.preflight)
            .map_err(BuildError::InvalidRoute)?;
        #[cfg(feature = "jwt")]
        let max_len = settings.jwt.as_ref().map_or(settings.max_len, |jwt| {
            if api_keys {
                settings.max_len.max(jwt.max_token_len())
            } else {
                jwt.max_token_len()
            }
        });
        #[cfg(not(feature = "jwt"))]
        let max_len = settings.max_len;
        Ok(ApiKeyGuard {
            config: Arc::new(GuardConfig {
                registry,
                api_keys,
                max_key_len: settings.max_len,
                #[cfg(feature = "jwt")]
                jwt: settings.jwt,
                credentials: Credentials {
                    sources: settings.sources,
                    max_len,
                },
                routes,
                challenge,
                audit: settings.audit,
                audit_failure: settings.audit_failure,
                rate_limit: settings.rate_limit,
                failed_attempts: settings.failed_attempts,
                client_ip: settings.client_ip,
                trusted_proxies: settings.trusted_proxies,
                trusted_networks: settings.trusted_networks,
                unavailable_retry_after: settings.unavailable_retry_after,
                credential_header_names,
                warned_no_client: AtomicBool::new(false),
                last_use: LastUseClock::new(crate::limit::Clock::system()),
            }),
            renderer,
        })
    }
}

impl<R: fmt::Debug> fmt::Debug for ApiKeyGuardBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyGuardBuilder")
            .field("keys", &self.settings.keys.len())
            .field("registry", &self.settings.registry)
            .field("sources", &self.settings.sources)
            .field("routes", &self.settings.routes)
            .field("preflight", &self.settings.preflight)
            .field("renderer", &self.renderer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn builder() -> ApiKeyGuardBuilder {
        ApiKeyGuard::builder().key(
            ApiKey::new("a-long-enough-secret-for-the-unit-tests").unwrap(),
            KeyGrant::new("p"),
        )
    }

    #[test]
    fn a_bad_trusted_proxy_entry_fails_the_build_and_is_named() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "proxy.internal",
            "",
            "10.0.0.1:80",
        ] {
            let error = builder()
                .trusted_proxy_networks(["192.168.1.7", bad, "also-bad"])
                .build()
                .unwrap_err();
            assert!(
                matches!(&error, BuildError::InvalidTrustedProxy(entry) if entry == bad),
                "{bad}: {error}"
            );
            assert!(error.to_string().contains(&format!("`{bad}`")), "{error}");
        }
        // A later valid call does not hide an earlier bad entry.
        let error = builder()
            .trusted_proxy_networks(["nope"])
            .trusted_proxy_networks(["10.0.0.0/8"])
            .build()
            .unwrap_err();
        assert!(matches!(error, BuildError::InvalidTrustedProxy(entry) if entry == "nope"));
    }

    #[test]
    fn networks_replace_the_proxy_count_and_calls_add_up() {
        let guard = builder()
            .trusted_proxy_networks(["10.0.0.0/8"])
            .trusted_proxies(1)
            .trusted_proxy_networks(["2001:db8::/32"])
            .build()
            .unwrap();
        let request = |peer: &str| {
            let mut request = http::Request::get("/jobs")
                .header("x-forwarded-for", "203.0.113.9")
                .body(())
                .unwrap();
            request
                .extensions_mut()
                .insert(super::super::ClientAddr(peer.parse().unwrap()));
            request
        };
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(guard.client_ip(&request("10.0.0.2")), Some(client));
        assert_eq!(guard.client_ip(&request("2001:db8::1")), Some(client));
        // The count rule would trust this peer; the networks do not.
        assert_eq!(
            guard.client_ip(&request("198.51.100.4")),
            Some("198.51.100.4".parse().unwrap())
        );
        // An empty list trusts nobody, even with a count.
        let guard = builder()
            .trusted_proxies(1)
            .trusted_proxy_networks::<[&str; 0]>([])
            .build()
            .unwrap();
        assert_eq!(
            guard.client_ip(&request("10.0.0.2")),
            Some("10.0.0.2".parse().unwrap())
        );
    }
}
