//! Side by side, in one group and one run: what a user would otherwise assemble, and
//! keygate.
//!
//! - `no_guard`: the inner service alone;
//! - `tower-http+tower_governor`: tower-http's `ValidateRequestHeaderLayer` comparing the
//!   `X-API-Key` header with the expected key, then tower_governor's `GovernorLayer` keyed
//!   by that header (its default: no headers on admitted responses);
//! - `tower-http+tower_governor/headers`: the same with tower_governor's `x-ratelimit-*`
//!   headers (`use_headers`);
//! - `keygate`: the guard, the in-memory registry and the per-key limiter, which also does
//!   what the stack does not: a constant-time comparison of SHA-256 digests instead of
//!   `==` on the secret, keys looked up in a registry (many keys, expiry, revocation), the
//!   principal in the request extensions, limits per principal and tier, the IETF
//!   `RateLimit` and `RateLimit-Policy` headers, credential headers marked sensitive.
//!
//! All four answer `Response<axum::body::Body>` (see [`InnerBody`](crate::fixtures::InnerBody)).
//! Target: keygate at most 0.8× the stack.

use criterion::{BenchmarkId, Criterion, Throughput};
use http::StatusCode;
use tower::Layer as _;

use crate::{
    bench_calls,
    fixtures::{
        Stages, expect_status, guard, inner_body, registry, request, tower_stack,
        tower_stack_with_headers,
    },
};

pub(crate) fn bench(c: &mut Criterion) {
    let (registry, keys) = registry();
    let key = keys.generated.as_str();
    let mut group = c.benchmark_group("stack");
    group.throughput(Throughput::Elements(1));

    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("no_guard"),
        inner_body,
        || request(Some(key)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("tower-http+tower_governor"),
        || {
            let mut service = tower_stack(key);
            expect_status(&mut service, request(Some(key)), StatusCode::OK);
            expect_status(&mut service, request(None), StatusCode::UNAUTHORIZED);
            service
        },
        || request(Some(key)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::new("tower-http+tower_governor", "headers"),
        || {
            let mut service = tower_stack_with_headers(key);
            expect_status(&mut service, request(Some(key)), StatusCode::OK);
            service
        },
        || request(Some(key)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("keygate"),
        || {
            let mut service = guard(&registry, Stages::limited()).layer(inner_body());
            expect_status(&mut service, request(Some(key)), StatusCode::OK);
            expect_status(&mut service, request(None), StatusCode::UNAUTHORIZED);
            service
        },
        || request(Some(key)),
    );

    group.finish();
}
