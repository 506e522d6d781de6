//! What the scenarios share: the keys, the requests, the inner services, the guards, the
//! stack users assemble today, and a way to drive a tower service whose answer is ready
//! at once.
//!
//! Shared by the `guard`, `allocations` and `instructions` bench binaries (through
//! `#[path]`), so that all three measure exactly the same services.

use std::{
    convert::Infallible,
    fmt,
    future::{Ready, ready},
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU32,
    sync::Arc,
};

use axum::body::Body;
use futures_util::FutureExt as _;
use governor::{clock::QuantaInstant, middleware::NoOpMiddleware};
use http::{HeaderValue, Request, Response, StatusCode};
use keygate::{
    ApiKey, ApiKeyGuard, ClientAddr, InMemoryRegistry, KeyDigest, KeyGrant, KeyId, KeyLookup,
    KeyPrefix, KeyRecord, RateLimit,
    guard::Route,
    limit::{ClientKey, FailedAttemptLimiter, InMemoryRateLimit, Quota, Tiers},
};
use tower::{Service, ServiceBuilder, ServiceExt as _, service_fn, util::ServiceFn};
use tower_governor::{
    GovernorError, GovernorLayer, governor::GovernorConfigBuilder, key_extractor::KeyExtractor,
};
use tower_http::validate_request::ValidateRequestHeaderLayer;

/// The header every scenario presents its key in (keygate's default).
pub(crate) const HEADER: &str = "x-api-key";

/// The path of every request: a route of the coordinator example.
pub(crate) const PATH: &str = "/coordinator/jobs/0b7f6c1e";

/// The tier whose quota is used up before the benchmark starts (one request per hour).
pub(crate) const EXHAUSTED_TIER: &str = "exhausted";

/// The address of the client in scenarios with a failed-attempt limiter.
pub(crate) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

/// A quota no benchmark can use up: `u32::MAX` requests per second, so every check takes
/// governor's write path and is admitted.
pub(crate) fn unlimited() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

/// The guard's tiers: unlimited by default, and one exhausted tier for the 429 scenario.
pub(crate) fn tiers() -> Tiers {
    Tiers::new(unlimited()).tier(EXHAUSTED_TIER, Quota::per_hour(NonZeroU32::MIN))
}

/// The keys of the scenarios, as clients present them.
pub(crate) struct Keys {
    /// A generated key (`kg_<key id>_<secret><checksum>`), registered: looked up by id.
    pub(crate) generated: String,
    /// An opaque key (`openssl rand -base64 32`), registered: looked up by digest.
    pub(crate) opaque: String,
    /// A registered generated key whose principal has used up its quota.
    pub(crate) exhausted: String,
    /// A well-formed generated key with a valid checksum that is not registered.
    pub(crate) unknown: String,
    /// `generated` with one character of its checksum changed.
    pub(crate) bad_checksum: String,
}

/// An in-memory registry holding the scenario keys, and the keys.
pub(crate) fn registry() -> (Arc<InMemoryRegistry>, Keys) {
    let registry = Arc::new(InMemoryRegistry::new());
    let register = |key: &ApiKey, grant: KeyGrant| {
        registry.insert_key(key, grant).expect("registration");
        key.expose_secret().to_owned()
    };
    let generated = register(
        &generate(),
        KeyGrant::new("coordinator-1").workspaces(["ws-1"]),
    );
    let opaque = register(
        &ApiKey::new("yPn5Z0sS9tq0u7Q2l4rX1vWcJm8kE3fHbGdAaNoIiLM=").expect("opaque key"),
        KeyGrant::new("coordinator-2").workspaces(["ws-1"]),
    );
    let exhausted = register(
        &generate(),
        KeyGrant::new("coordinator-3").tier(EXHAUSTED_TIER),
    );
    let mut bad_checksum = generated.clone().into_bytes();
    if let Some(last) = bad_checksum.last_mut() {
        *last = if *last == b'a' { b'b' } else { b'a' };
    }
    let keys = Keys {
        bad_checksum: String::from_utf8(bad_checksum).expect("ASCII"),
        generated,
        opaque,
        exhausted,
        unknown: generate().expose_secret().to_owned(),
    };
    (registry, keys)
}

/// A generated key, not registered anywhere yet.
pub(crate) fn generate() -> ApiKey {
    ApiKey::generate(&KeyPrefix::default())
        .expect("key generation")
        .0
}

/// An in-memory registry of `size` keys (at least one): `key` and `size - 1` others.
pub(crate) fn registry_of_size(key: &ApiKey, size: usize) -> Arc<InMemoryRegistry> {
    let registry = Arc::new(InMemoryRegistry::new());
    registry
        .insert_key(key, KeyGrant::new("coordinator-1"))
        .expect("registration");
    // The other records are made without the CSPRNG or SHA-256, so that a million take a
    // second: ids `000000000000`, `000000000001`, ..., digests with the index up front.
    for i in 1..size {
        let key_id = KeyId::parse(&format!("{i:012}")).expect("digits are base62");
        let mut digest = [0xa5; 32];
        digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
        registry
            .insert(KeyRecord::new(
                key_id,
                KeyDigest::from_bytes(digest),
                format!("principal-{i}"),
            ))
            .expect("registration");
    }
    assert_eq!(registry.len(), size.max(1));
    registry
}

/// Which of the guard's optional stages are on.
#[derive(Clone, Debug)]
pub(crate) struct Stages {
    rate_limit: bool,
    /// Whether admitted responses carry the rate-limit headers.
    admitted_headers: bool,
    failed_attempts: Option<Arc<FailedAttemptLimiter>>,
    /// A route rule asking keys for this scope on every path ([`SCOPE`]).
    scoped: bool,
}

/// The scope a [`Stages::scoped`] guard asks of every key (the benches' keys hold it).
pub(crate) const SCOPE: &str = "jobs:read";

impl Stages {
    /// The guard, the in-memory registry and the per-key limiter ([`InMemoryRateLimit`] with
    /// [`tiers`]): the admitted path of the targets.
    pub(crate) fn limited() -> Self {
        Self {
            rate_limit: true,
            admitted_headers: true,
            failed_attempts: None,
            scoped: false,
        }
    }

    /// [`Self::limited`] without the rate-limit headers on admitted responses
    /// (`RateLimit::without_headers_on_admitted`).
    pub(crate) fn limited_without_headers() -> Self {
        Self {
            admitted_headers: false,
            ..Self::limited()
        }
    }

    /// The guard and the registry, no rate limit.
    pub(crate) fn guard_only() -> Self {
        Self {
            rate_limit: false,
            admitted_headers: false,
            failed_attempts: None,
            scoped: false,
        }
    }

    /// Adds a route rule that asks every key for [`SCOPE`] (`Route::prefix("/")`): the
    /// path of a route with scopes, which a key holding it passes.
    pub(crate) fn scoped(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// Adds a failed-attempt limiter (the client address comes from a [`ClientAddr`]
    /// extension, see [`request_from_client`]).
    pub(crate) fn failed_attempts(mut self, limiter: Arc<FailedAttemptLimiter>) -> Self {
        self.failed_attempts = Some(limiter);
        self
    }
}

/// A guard on `registry` with `stages`, rendering refusals as JSON (the default).
pub(crate) fn guard<R: KeyLookup>(registry: &Arc<R>, stages: Stages) -> ApiKeyGuard {
    let mut builder = ApiKeyGuard::builder().registry(Arc::clone(registry));
    if stages.rate_limit {
        let limit = RateLimit::new(InMemoryRateLimit::new(tiers()));
        builder = builder.rate_limit(if stages.admitted_headers {
            limit
        } else {
            limit.without_headers_on_admitted()
        });
    }
    if stages.scoped {
        builder = builder.route(Route::prefix("/").scope(SCOPE));
    }
    if let Some(limiter) = stages.failed_attempts {
        builder = builder.failed_attempts(limiter).client_ip_from_extensions();
    }
    builder.build().expect("guard configuration")
}

/// A failed-attempt limiter with the default quota (10 failures per minute) that has
/// blocked [`CLIENT`] when `blocked`. A blocked client gets no passage
/// (`without_passage`): every request from it, valid key or not, is the refusal before
/// any lookup that the scenario measures.
pub(crate) fn failed_attempt_limiter(blocked: bool) -> Arc<FailedAttemptLimiter> {
    let limiter = if blocked {
        FailedAttemptLimiter::default().without_passage()
    } else {
        FailedAttemptLimiter::default()
    };
    let limiter = Arc::new(limiter);
    if blocked {
        while limiter.record_failure(ClientKey::from(CLIENT)).is_ok() {}
        assert!(limiter.check(ClientKey::from(CLIENT)).is_err());
    }
    limiter
}

/// A request as a client sends it, with `key` in [`HEADER`] if given.
pub(crate) fn request(key: Option<&str>) -> Request<()> {
    let mut builder = Request::get(PATH)
        .header("host", "coordinator.internal")
        .header("user-agent", "python-requests/2.32.3")
        .header("accept", "application/json");
    if let Some(key) = key {
        builder = builder.header(HEADER, key);
    }
    builder.body(()).expect("valid request")
}

/// [`request`], from a connection whose peer address the server put in the extensions.
pub(crate) fn request_from_client(key: Option<&str>) -> Request<()> {
    let mut request = request(key);
    request.extensions_mut().insert(ClientAddr(CLIENT));
    request
}

/// The inner service of keygate's scenarios: a ready `service_fn` that answers at once
/// with an empty `Response<String>`.
pub(crate) type Inner = ServiceFn<fn(Request<()>) -> Ready<Result<Response<String>, Infallible>>>;

/// [`Inner`].
pub(crate) fn inner() -> Inner {
    service_fn(|_| ready(Ok(Response::new(String::new()))))
}

/// The inner service of the comparison: the same, answering `Response<axum::body::Body>`,
/// because tower_governor renders its refusals only into axum's or tonic's body types
/// (`Response<B>: From<GovernorError>`), so every contender in that group uses it.
pub(crate) type InnerBody = ServiceFn<fn(Request<()>) -> Ready<Result<Response<Body>, Infallible>>>;

/// [`InnerBody`].
pub(crate) fn inner_body() -> InnerBody {
    service_fn(|_| ready(Ok(Response::new(Body::empty()))))
}

/// tower_governor keyed by the API key header, as a custom `KeyExtractor` is usually
/// written: the header's text, copied into a `String`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApiKeyHeader;

impl KeyExtractor for ApiKeyHeader {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<String, GovernorError> {
        request
            .headers()
            .get(HEADER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// tower-http's `ValidateRequestHeaderLayer` as users write it for an API key: a `custom`
/// validator comparing the header with the expected key (`==`).
///
/// The refusal is the response itself, as tower-http's `ValidateRequest` wants it.
#[allow(clippy::result_large_err)]
pub(crate) fn validate_key<B>(
    key: &str,
) -> ValidateRequestHeaderLayer<
    impl FnMut(&mut Request<B>) -> Result<(), Response<Body>> + Clone + use<B>,
> {
    let expected = HeaderValue::from_str(key).expect("key is a valid header value");
    ValidateRequestHeaderLayer::custom(move |request: &mut Request<B>| {
        match request.headers().get(HEADER) {
            Some(presented) if presented == expected => Ok(()),
            _ => Err(Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(Body::empty())
                .expect("valid response")),
        }
    })
}

/// tower_governor's builder keyed by [`ApiKeyHeader`], with the same quota as keygate's
/// benchmarks: one cell a nanosecond, a burst no benchmark uses up.
pub(crate) fn governor_config() -> GovernorConfigBuilder<ApiKeyHeader, NoOpMiddleware<QuantaInstant>>
{
    let mut config = GovernorConfigBuilder::default().key_extractor(ApiKeyHeader);
    config.per_nanosecond(1).burst_size(u32::MAX);
    config
}

/// The stack users assemble today: [`validate_key`], then tower_governor's `GovernorLayer`
/// keyed by the same header, around [`InnerBody`].
pub(crate) fn tower_stack(
    key: &str,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + use<> {
    let governor = GovernorLayer::new(governor_config().finish().expect("quota"));
    ServiceBuilder::new()
        .layer(validate_key(key))
        .layer(governor)
        .service(inner_body())
}

/// [`tower_stack`] with tower_governor's `x-ratelimit-*` headers on admitted responses
/// (`use_headers`), as keygate adds its `RateLimit` headers.
pub(crate) fn tower_stack_with_headers(
    key: &str,
) -> impl Service<Request<()>, Response = Response<Body>, Error = Infallible> + Clone + use<> {
    let governor = GovernorLayer::new(governor_config().use_headers().finish().expect("quota"));
    ServiceBuilder::new()
        .layer(validate_key(key))
        .layer(governor)
        .service(inner_body())
}

/// Calls `service` with `request` through `ServiceExt::ready` and `Service::call`, polled
/// once: every service here answers at once, and one that does not is a bug in the
/// benchmark, not something to measure.
pub(crate) fn call<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: fmt::Debug,
{
    let answer = async { service.ready().await?.call(request).await };
    match answer.now_or_never() {
        Some(Ok(response)) => response,
        Some(Err(error)) => panic!("service failed: {error:?}"),
        None => panic!("the service did not answer at once"),
    }
}

/// Calls `service` once with `request` and checks the status: a scenario that measures
/// the wrong path (a 401 where a 200 was meant) would give a meaningless number.
pub(crate) fn expect_status<S, B>(service: &mut S, request: Request<()>, status: StatusCode)
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: fmt::Debug,
{
    let response = call(service, request);
    assert_eq!(response.status(), status, "scenario answers {status}");
}
