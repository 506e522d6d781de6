//! The refused paths, each answered with keygate's JSON body and its headers:
//!
//! - `missing_key`: 401 `missing_credentials`, before anything else;
//! - `bad_checksum`: 401 `invalid_credentials`, refused by the key's CRC32 without a lookup;
//! - `unknown_key`: 401 `invalid_credentials` after a registry lookup that finds nothing;
//! - `rate_limited`: 429 `rate_limited`, a registered key whose quota is used up;
//! - `too_many_failed_attempts`: 429, a client refused before any lookup.
//!
//! The guard is the one of the admitted path (registry and per-key limiter); the last
//! case adds the failed-attempt limiter. Nothing counts failures in the first three, so
//! they stay what they are for the whole run.

use criterion::{BenchmarkId, Criterion, Throughput};
use http::StatusCode;
use tower::Layer as _;

use crate::{
    bench_calls,
    fixtures::{
        Stages, expect_status, failed_attempt_limiter, guard, inner, registry, request,
        request_from_client,
    },
};

pub(crate) fn bench(c: &mut Criterion) {
    let (registry, keys) = registry();
    let mut group = c.benchmark_group("refused");
    group.throughput(Throughput::Elements(1));

    let cases = [
        ("missing_key", None, StatusCode::UNAUTHORIZED),
        (
            "bad_checksum",
            Some(&keys.bad_checksum),
            StatusCode::UNAUTHORIZED,
        ),
        ("unknown_key", Some(&keys.unknown), StatusCode::UNAUTHORIZED),
        (
            "rate_limited",
            Some(&keys.exhausted),
            StatusCode::TOO_MANY_REQUESTS,
        ),
    ];
    for (name, key, status) in cases {
        let key = key.map(String::as_str);
        bench_calls(
            &mut group,
            BenchmarkId::from_parameter(name),
            || {
                let mut service = guard(&registry, Stages::limited()).layer(inner());
                if status == StatusCode::TOO_MANY_REQUESTS {
                    // The first request uses up the hour's single request.
                    expect_status(&mut service, request(key), StatusCode::OK);
                }
                expect_status(&mut service, request(key), status);
                service
            },
            || request(key),
        );
    }

    let key = Some(keys.generated.as_str());
    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("too_many_failed_attempts"),
        || {
            let stages = Stages::limited().failed_attempts(failed_attempt_limiter(true));
            let mut service = guard(&registry, stages).layer(inner());
            let status = StatusCode::TOO_MANY_REQUESTS;
            expect_status(&mut service, request_from_client(key), status);
            service
        },
        || request_from_client(key),
    );

    group.finish();
}
