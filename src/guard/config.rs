//! What the guard knows once built: everything the request path reads, shared by every
//! clone of the layer and its services.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use http::{HeaderName, HeaderValue, Request};

use super::routes::RoutePolicy;
use crate::{
    AuditSink, KeyLookup,
    credential::Credentials,
    limit::{FailedAttemptLimiter, RateLimit, client_ip, client_ip_in_networks},
};

/// Reads the connecting peer's address from the request extensions.
pub type ClientIpFn = dyn Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync;

/// The peer address of a connection, for servers that want to hand it to keygate
/// explicitly: insert it into the request extensions.
///
/// ```
/// use keygate::ClientAddr;
///
/// let mut request = http::Request::get("/jobs").body(()).unwrap();
/// request.extensions_mut().insert(ClientAddr("203.0.113.9".parse().unwrap()));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// What the guard does when its audit sink cannot write (the sink is not
/// [`healthy`](crate::audit::AuditSink::healthy), e.g. the disk is full).
///
/// ```
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, audit::MemorySink, guard::AuditFailure};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let guard = ApiKeyGuard::builder()
///     .key(ApiKey::new("a-coordinator-key-of-at-least-32-chars")?, KeyGrant::new("c"))
///     .audit(MemorySink::new())
///     .audit_failure(AuditFailure::Refuse) // no admission goes unrecorded
///     .build()?;
/// # let _ = guard; Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditFailure {
    /// Keep serving; the sink counts and logs what it lost (the default).
    #[default]
    KeepServing,
    /// Answer 503 `auth_unavailable` (with `Retry-After`) instead of admitting a request
    /// whose admission could not be recorded, until the sink writes again. Refusals stay
    /// refusals.
    Refuse,
}

/// Everything the guard needs on the request path.
pub(crate) struct GuardConfig {
    pub(crate) registry: Arc<dyn KeyLookup>,
    /// Whether API keys are accepted (keys or a registry were configured); a guard with
    /// only a JWT verifier takes tokens only.
    pub(crate) api_keys: bool,
    /// The longest API key accepted; `credentials.max_len` may be larger for tokens.
    pub(crate) max_key_len: usize,
    /// The JWT verifier, if tokens are accepted.
    #[cfg(feature = "jwt")]
    pub(crate) jwt: Option<crate::jwt::JwtVerifier>,
    pub(crate) credentials: Credentials,
    /// Stage 1: which routes are public, optional, or require more.
    pub(crate) routes: RoutePolicy,
    pub(crate) challenge: HeaderValue,
    pub(crate) audit: Option<Arc<dyn AuditSink>>,
    pub(crate) audit_failure: AuditFailure,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) failed_attempts: Option<Arc<FailedAttemptLimiter>>,
    pub(crate) client_ip: Option<Arc<ClientIpFn>>,
    pub(crate) trusted_proxies: usize,
    /// The trusted proxy networks; when set, they replace `trusted_proxies`.
    pub(crate) trusted_networks: Option<Vec<ipnet::IpNet>>,
    pub(crate) unavailable_retry_after: Duration,
    /// The headers a credential may come in, hidden from logging layers further in.
    pub(crate) credential_header_names: Vec<HeaderName>,
    /// Whether the failed-attempt limiter has warned that a request had no client address.
    pub(crate) warned_no_client: AtomicBool,
    /// The time given to the registry with each admitted key's use.
    pub(crate) last_use: super::last_use::LastUseClock,
}

/// The default reader of the peer address: a [`ClientAddr`] or a `SocketAddr` extension.
pub(crate) fn extension_client_ip(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ClientAddr>()
        .map(|a| a.0)
        .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip))
}

impl GuardConfig {
    /// The client address: from the configured closure or the `ClientAddr` / `SocketAddr`
    /// extension, then through `X-Forwarded-For` as far as the trusted proxies allow: the
    /// trusted proxy networks when configured, otherwise the count of trusted proxies.
    pub(crate) fn client_ip<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let extensions = request.extensions();
        let peer = match &self.client_ip {
            Some(read) => read(extensions),
            None => extension_client_ip(extensions),
        };
        match &self.trusted_networks {
            Some(networks) => client_ip_in_networks(peer, request.headers(), networks),
            None => client_ip(peer, request.headers(), self.trusted_proxies),
        }
    }

    /// Logs, once per guard, that the failed-attempt limiter saw a request without a
    /// client address (and so could not count it).
    #[cold]
    pub(crate) fn warn_no_client_address(&self) {
        if !self.warned_no_client.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "keygate: a request had no client address, so the failed-attempt limiter \
                 cannot count its failures; check the guard's `.client_ip(..)` reader (axum: \
                 serve with `into_make_service_with_connect_info::<SocketAddr>()`). Logged once."
            );
        }
    }

    /// Marks the credential headers sensitive (every value of each), so that logging
    /// layers further in do not print them.
    ///
    /// One pass over the request's headers, not a lookup per name: `HeaderMap::entry`
    /// makes room for an insertion first, and a map sized to the headers it holds (hyper
    /// sizes the first request's map of each connection so; 2, 3, 6 or 12 headers fill
    /// it) would be reallocated and rehashed.
    pub(crate) fn hide_credentials<B>(&self, request: &mut Request<B>) {
        for (name, value) in request.headers_mut().iter_mut() {
            if self.credential_header_names.contains(name) {
                value.set_sensitive(true);
            }
        }
    }
}

impl fmt::Debug for GuardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let f = &mut f.debug_struct("GuardConfig");
        let f = f
            .field("registry", &self.registry)
            .field("api_keys", &self.api_keys)
            .field("max_key_len", &self.max_key_len);
        #[cfg(feature = "jwt")]
        let f = f.field("jwt", &self.jwt);
        f.field("sources", &self.credentials.sources)
            .field("max_credential_len", &self.credentials.max_len)
            .field("routes", &self.routes)
            .field("audit", &self.audit)
            .field("audit_failure", &self.audit_failure)
            .field("rate_limit", &self.rate_limit)
            .field("failed_attempts", &self.failed_attempts)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("trusted_networks", &self.trusted_networks)
            .finish_non_exhaustive()
    }
}
