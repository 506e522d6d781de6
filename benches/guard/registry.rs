//! Registry scaling: the admitted path (guard, in-memory registry, per-key limiter) with
//! 1, 10,000 and 1,000,000 registered keys. The target: a million keys cost at most 1.2×
//! what one key costs.
//!
//! The same key is presented on every request, so its entry stays in the CPU cache: this
//! measures how the lookup scales (a hash-map read without a lock), not the memory
//! latency of a cold entry, which any table of a million keys pays alike.

use criterion::{BenchmarkId, Criterion, Throughput};
use http::StatusCode;
use tower::Layer as _;

use crate::{
    bench_calls,
    fixtures::{Stages, expect_status, generate, guard, inner, registry_of_size, request},
};

pub(crate) fn bench(c: &mut Criterion) {
    let key = generate();
    let text = key.expose_secret();
    let mut group = c.benchmark_group("registry");
    group.throughput(Throughput::Elements(1));
    for size in [1, 10_000, 1_000_000] {
        bench_calls(
            &mut group,
            BenchmarkId::from_parameter(size),
            || {
                let registry = registry_of_size(&key, size);
                let mut service = guard(&registry, Stages::limited()).layer(inner());
                expect_status(&mut service, request(Some(text)), StatusCode::OK);
                service
            },
            || request(Some(text)),
        );
    }
    group.finish();
}
