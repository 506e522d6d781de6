//! The application of the end-to-end benchmarks, and each way of guarding it: served on
//! loopback by `load_server` (for `scripts/load.sh`) and by `allocations` (to count the
//! heap allocations of a request in a real server).
//!
//! The application is one route of the coordinator example, `GET /coordinator/jobs/{id}`,
//! answering a job as JSON from memory.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::PathBuf,
    sync::Arc,
};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{HeaderName, HeaderValue, Request, StatusCode},
    response::IntoResponse as _,
    routing::get,
};
use keygate::{
    ApiKey, ApiKeyGuard, InMemoryRegistry, KeyGrant, RateLimit,
    audit::{Background, JsonLinesSink},
    limit::{FailedAttemptLimiter, InMemoryRateLimit, Quota, RATELIMIT, RATELIMIT_POLICY, Tiers},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower_governor::{
    GovernorError, GovernorLayer, governor::GovernorConfigBuilder, key_extractor::KeyExtractor,
};
use tower_http::validate_request::ValidateRequestHeaderLayer;

/// The path every benchmark request asks for: a job the application has.
pub(crate) const JOB_PATH: &str = "/coordinator/jobs/job-0042";

/// The jobs the application answers with.
type Jobs = Arc<HashMap<String, Value>>;

async fn get_job(
    State(jobs): State<Jobs>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StatusCode> {
    jobs.get(&id)
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

/// [`get_job`] with rate-limit headers as long as the guard's, set by the handler.
async fn get_job_with_headers(
    jobs: State<Jobs>,
    id: Path<String>,
) -> Result<([(HeaderName, HeaderValue); 2], Json<Value>), StatusCode> {
    let headers = [
        (
            RATELIMIT_POLICY,
            HeaderValue::from_static(r#""default";q=4294967295;w=1"#),
        ),
        (
            RATELIMIT,
            HeaderValue::from_static(r#""default";r=4294967294;t=1"#),
        ),
    ];
    Ok((headers, get_job(jobs, id).await?))
}

/// The application alone.
pub(crate) fn application() -> Router {
    routes(false)
}

/// The application; with `with_headers`, its handler adds [`get_job_with_headers`]'s
/// headers.
pub(crate) fn routes(with_headers: bool) -> Router {
    let jobs: HashMap<String, Value> = (0..100)
        .map(|i| {
            let id = format!("job-{i:04}");
            let job = json!({
                "id": id,
                "workspaceId": "ws-1",
                "type": "render",
                "status": "running",
                "progress": i % 100,
                "attempts": 1,
                "createdAt": "2026-11-23T10:00:00Z",
                "updatedAt": "2026-11-23T10:00:05Z",
            });
            (id, job)
        })
        .collect();
    let handler = if with_headers {
        get(get_job_with_headers)
    } else {
        get(get_job)
    };
    Router::new()
        .route("/coordinator/jobs/{id}", handler)
        .with_state(Arc::new(jobs))
}

/// tower_governor keyed by the API key header (its text, as a `String`).
#[derive(Clone, Copy, Debug)]
struct ApiKeyHeader;

impl KeyExtractor for ApiKeyHeader {
    type Key = String;

    fn extract<T>(&self, request: &Request<T>) -> Result<String, GovernorError> {
        request
            .headers()
            .get("x-api-key")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

/// What users assemble today: tower-http's `ValidateRequestHeaderLayer` comparing the key
/// with `==`, then tower_governor keyed by it, with a quota no load test uses up.
pub(crate) fn stack(application: Router, key: &ApiKey) -> Router {
    let expected = HeaderValue::from_str(key.expose_secret()).expect("header value");
    #[allow(clippy::result_large_err)]
    let validate = ValidateRequestHeaderLayer::custom(move |request: &mut Request<Body>| {
        match request.headers().get("x-api-key") {
            Some(presented) if *presented == expected => Ok(()),
            _ => Err(StatusCode::UNAUTHORIZED.into_response()),
        }
    });
    let mut config = GovernorConfigBuilder::default().key_extractor(ApiKeyHeader);
    config.per_nanosecond(1).burst_size(u32::MAX);
    let governor = GovernorLayer::new(config.finish().expect("quota"));
    // The last layer added runs first: the key is checked before the limit.
    application.layer(governor).layer(validate)
}

/// How the audit log is written, if there is one.
pub(crate) enum Audit<'a> {
    None,
    /// On the request thread.
    Sync(&'a PathBuf),
    /// From a queue, by a writer thread.
    Queued(&'a PathBuf),
}

/// keygate as the coordinator example sets it up, with a quota no load test uses up;
/// with `admitted_headers` false, admitted responses go without rate-limit headers
/// ([`RateLimit::without_headers_on_admitted`]).
pub(crate) fn guard(key: &ApiKey, audit: Audit<'_>, admitted_headers: bool) -> ApiKeyGuard {
    let registry = InMemoryRegistry::new();
    registry
        .insert_key(key, KeyGrant::new("coordinator").workspaces(["ws-1"]))
        .expect("registration");
    let unlimited = Quota::per_second(NonZeroU32::MAX);
    let mut rate_limit = RateLimit::new(InMemoryRateLimit::new(Tiers::new(unlimited)));
    if !admitted_headers {
        rate_limit = rate_limit.without_headers_on_admitted();
    }
    let mut builder = ApiKeyGuard::builder()
        .registry(registry)
        .client_ip(|extensions| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
        .rate_limit(rate_limit)
        .failed_attempts(FailedAttemptLimiter::default())
        .public_path("/coordinator/health");
    match audit {
        Audit::None => {}
        Audit::Sync(path) => {
            builder = builder.audit(JsonLinesSink::open(path).expect("audit log"));
        }
        Audit::Queued(path) => {
            let sink = JsonLinesSink::open(path)
                .expect("audit log")
                .background(Background::default())
                .expect("audit writer");
            builder = builder.audit(sink);
        }
    }
    builder.build().expect("guard configuration")
}

/// Serves `router` on a free loopback port, with the client address in `ConnectInfo`;
/// returns its base URL.
pub(crate) async fn serve(router: Router) -> String {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("loopback port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("server");
    });
    url
}
