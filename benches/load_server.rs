//! The server of the end-to-end load test (`scripts/load.sh`): one axum application
//! served three times on loopback, so that a load generator can compare them in one run.
//!
//! - `plain`: the application alone;
//! - `headers`: the application alone, answering with `RateLimit-Policy` and `RateLimit`
//!   headers as long as keygate's (a control: what sending those headers costs in HTTP);
//! - `stack`: behind tower-http's `ValidateRequestHeaderLayer` comparing the key with `==`
//!   and tower_governor's `GovernorLayer` keyed by it (what users assemble today);
//! - `guarded`: behind keygate as the coordinator example sets it up (in-memory registry,
//!   per-principal rate limit, failed-attempt limiter, client address from `ConnectInfo`),
//!   with a quota no load test uses up, so that every request is admitted;
//! - `audited`: the same, plus a hash-chained JSON-lines audit log written on the request
//!   thread (`JsonLinesSink`: one record and one `write` per request, to a temporary file
//!   removed at exit);
//! - `queued`: the same, with the log written as the coordinator example writes it, from
//!   a queue by a writer thread, in batches (`BackgroundSink`, default options).
//!
//! The application is one route of the coordinator example, `GET /coordinator/jobs/{id}`,
//! answering a job as JSON from memory. The coordinator example itself cannot serve
//! without its guard (its handlers need the `Principal`) and limits each coordinator to
//! 100 requests a minute, so it cannot be the unguarded side of the comparison.
//!
//! ```text
//! load_server [--workers N] [--seconds S]
//! ```
//!
//! Prints one line, `plain=<url> headers=<url> stack=<url> guarded=<url> audited=<url>
//! queued=<url> key=<key>`, then serves until
//! interrupted or terminated, or for `S` seconds (default 600), whichever comes first. `N` is the number of
//! tokio worker threads (default 1). Not run by `cargo bench` (`bench = false`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::PathBuf,
    sync::Arc,
    time::Duration,
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
    ApiKey, ApiKeyGuard, InMemoryRegistry, KeyGrant, KeyPrefix, RateLimit,
    audit::{Background, JsonLinesSink},
    limit::{FailedAttemptLimiter, InMemoryRateLimit, Quota, RATELIMIT, RATELIMIT_POLICY, Tiers},
};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};
use tower_governor::{
    GovernorError, GovernorLayer, governor::GovernorConfigBuilder, key_extractor::KeyExtractor,
};
use tower_http::validate_request::ValidateRequestHeaderLayer;

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

fn application() -> Router {
    routes(false)
}

/// The application; with `with_headers`, its handler adds [`get_job_with_headers`]'s
/// headers.
fn routes(with_headers: bool) -> Router {
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
fn stack(application: Router, key: &ApiKey) -> Router {
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
enum Audit<'a> {
    None,
    /// On the request thread.
    Sync(&'a PathBuf),
    /// From a queue, by a writer thread.
    Queued(&'a PathBuf),
}

/// keygate as the coordinator example sets it up, with a quota no load test uses up.
fn guard(key: &ApiKey, audit: Audit<'_>) -> ApiKeyGuard {
    let registry = InMemoryRegistry::new();
    registry
        .insert_key(key, KeyGrant::new("coordinator").workspaces(["ws-1"]))
        .expect("registration");
    let unlimited = Quota::per_second(NonZeroU32::MAX);
    let mut builder = ApiKeyGuard::builder()
        .registry(registry)
        .client_ip(|extensions| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip())
        })
        .rate_limit(RateLimit::new(InMemoryRateLimit::new(Tiers::new(
            unlimited,
        ))))
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

async fn serve(router: Router) -> String {
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

fn main() {
    let mut workers: usize = 1;
    let mut seconds: u64 = 600;
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|value| value.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--workers", Some(n @ 1..=1024)) => workers = n as usize,
            ("--seconds", Some(n @ 1..)) => seconds = n,
            _ => {
                eprintln!("usage: load_server [--workers N] [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let key = ApiKey::generate(&KeyPrefix::default())
        .expect("key generation")
        .0;
    let audit_log =
        std::env::temp_dir().join(format!("keygate-load-audit-{}.jsonl", std::process::id()));
    let queued_log = std::env::temp_dir().join(format!(
        "keygate-load-audit-queued-{}.jsonl",
        std::process::id()
    ));
    runtime.block_on(async {
        let plain = serve(application()).await;
        let headers = serve(routes(true)).await;
        let stack = serve(stack(application(), &key)).await;
        let guarded = serve(application().layer(guard(&key, Audit::None))).await;
        let audited = serve(application().layer(guard(&key, Audit::Sync(&audit_log)))).await;
        let queued = serve(application().layer(guard(&key, Audit::Queued(&queued_log)))).await;
        println!(
            "plain={plain} headers={headers} stack={stack} guarded={guarded} audited={audited} \
             queued={queued} key={}",
            key.expose_secret()
        );
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    });
    let _ = std::fs::remove_file(&audit_log);
    let _ = std::fs::remove_file(&queued_log);
}
