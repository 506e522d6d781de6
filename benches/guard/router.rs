//! The harness of issue 12: an axum `Router` (one `GET` route whose handler answers an
//! empty body) called per request, bare and with each contender as a layer around it,
//! in one group and one run, like with like:
//!
//! - `no_guard`: the router alone: the floor every other row is measured from;
//! - `tower-http+tower_governor`: tower-http's `ValidateRequestHeaderLayer` comparing the
//!   `X-API-Key` header with the key, then tower_governor keyed by that header, no headers
//!   on admitted responses; against it `keygate/no_headers`: the guard, the in-memory
//!   registry and the per-principal limiter, with `without_headers_on_admitted()`;
//! - `tower-http+tower_governor/headers` (tower_governor's `use_headers`), against
//!   `keygate/headers` (`RateLimit` and `RateLimit-Policy` on every admitted response);
//! - `keygate/*/1M_keys`: the same two with 1,000,000 keys in the registry (built on the
//!   first run of those rows, about a second).
//!
//! An overhead is a row's time minus `no_guard`'s; the target is keygate's overhead at
//! most 0.8× the stack's, in both pairs.
//!
//! ```text
//! cargo bench --bench guard -- router
//! ```

use std::sync::{Arc, OnceLock};

use axum::{Router, body::Body, routing::get};
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{Request, StatusCode};
use keygate::InMemoryRegistry;
use tower::ServiceBuilder;
use tower_governor::GovernorLayer;

use crate::{
    bench_calls,
    fixtures::{
        PATH, Stages, call, generate, governor_config, guard, registry, registry_of_size, request,
        validate_key,
    },
};

/// The application: one route, answering at once.
fn app() -> Router {
    Router::new().route(PATH, get(|| async { "" }))
}

/// [`request`] with axum's body, as a server hands it to the router.
fn router_request(key: Option<&str>) -> Request<Body> {
    let (parts, ()) = request(key).into_parts();
    Request::from_parts(parts, Body::empty())
}

/// Checks the scenario answers `status` before it is measured.
fn checked(mut router: Router, key: &str) -> Router {
    let response = call(&mut router, router_request(Some(key)));
    assert_eq!(response.status(), StatusCode::OK, "admitted");
    let refused = call(&mut router, router_request(None));
    assert_ne!(refused.status(), StatusCode::OK, "refused without a key");
    router
}

fn stack(key: &str, headers: bool) -> Router {
    let mut config = governor_config();
    if headers {
        config.use_headers();
    }
    let governor = GovernorLayer::new(config.finish().expect("quota"));
    app().layer(
        ServiceBuilder::new()
            .layer(validate_key::<Body>(key))
            .layer(governor),
    )
}

pub(crate) fn bench(c: &mut Criterion) {
    let (registry, keys) = registry();
    let key = keys.generated.as_str();
    // One registry of a million keys for both `1M_keys` rows, built when the first runs.
    let large_key = generate();
    let large_key_text = large_key.expose_secret().to_owned();
    let large: OnceLock<Arc<InMemoryRegistry>> = OnceLock::new();
    let mut group = c.benchmark_group("router");
    group.throughput(Throughput::Elements(1));

    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("no_guard"),
        app,
        || router_request(Some(key)),
    );
    for (id, headers) in [("no_headers", false), ("headers", true)] {
        let stack_id = if headers {
            BenchmarkId::new("tower-http+tower_governor", "headers")
        } else {
            BenchmarkId::from_parameter("tower-http+tower_governor")
        };
        bench_calls(
            &mut group,
            stack_id,
            || checked(stack(key, headers), key),
            || router_request(Some(key)),
        );
        let stages = || {
            if headers {
                Stages::limited()
            } else {
                Stages::limited_without_headers()
            }
        };
        bench_calls(
            &mut group,
            BenchmarkId::new("keygate", id),
            || checked(app().layer(guard(&registry, stages())), key),
            || router_request(Some(key)),
        );
        bench_calls(
            &mut group,
            BenchmarkId::new("keygate", format!("{id}/1M_keys")),
            || {
                let large = large.get_or_init(|| registry_of_size(&large_key, 1_000_000));
                checked(app().layer(guard(large, stages())), &large_key_text)
            },
            || router_request(Some(&large_key_text)),
        );
    }
    group.finish();
}
