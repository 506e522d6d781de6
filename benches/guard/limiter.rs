//! The limiters alone, without the guard around them:
//!
//! - `in_memory/admitted` and `in_memory/refused`: `InMemoryRateLimit::check`
//!   (the per-key limit of the guard: governor's GCRA plus the decision keygate turns into
//!   headers), for a key with an unlimited quota and for one whose quota is used up (the
//!   id keeps the backend's former name, so that results compare with earlier runs);
//! - `in_memory/admitted_strict`: the same for a strict window (`Quota::strict`) of
//!   100,000 per millisecond, never used up but holding the thousands of admissions of
//!   its last millisecond, so each check drops old ones and records one;
//! - `governor/admitted`: governor's own keyed limiter (`RateLimiter::keyed`, `String`
//!   keys), what `tower_governor` calls, as the floor of the backend;
//! - `failed_attempts/clean` and `failed_attempts/blocked`: `FailedAttemptLimiter::check`
//!   for a client with no failures (no entry) and for a blocked client.

use std::{hint::black_box, num::NonZeroU32, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::FutureExt as _;
use governor::{DefaultKeyedRateLimiter, RateLimiter};
use keygate::limit::{ClientKey, InMemoryRateLimit, Quota, RateLimitBackend as _, Tiers};

use crate::fixtures::{CLIENT, EXHAUSTED_TIER, failed_attempt_limiter, tiers};

pub(crate) fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    group.throughput(Throughput::Elements(1));
    let one = NonZeroU32::MIN;

    let backend = InMemoryRateLimit::new(tiers());
    let check = |key: &str, tier: &str| {
        backend
            .check(black_box(key), black_box(tier), one)
            .now_or_never()
            .expect("in-memory checks answer at once")
            .expect("a decision")
    };
    assert!(check("coordinator-1", "default").allowed);
    assert!(check("coordinator-3", EXHAUSTED_TIER).allowed);
    assert!(!check("coordinator-3", EXHAUSTED_TIER).allowed);
    group.bench_function(BenchmarkId::new("in_memory", "admitted"), |b| {
        b.iter(|| check("coordinator-1", "default"));
    });
    group.bench_function(BenchmarkId::new("in_memory", "refused"), |b| {
        b.iter(|| check("coordinator-3", EXHAUSTED_TIER));
    });

    let strict = Quota::strict(NonZeroU32::new(100_000).unwrap(), Duration::from_millis(1));
    let strict = InMemoryRateLimit::new(Tiers::new(strict.unwrap()));
    let check_strict = || {
        strict
            .check(black_box("coordinator-1"), black_box("default"), one)
            .now_or_never()
            .expect("in-memory checks answer at once")
            .expect("a decision")
    };
    group.bench_function(BenchmarkId::new("in_memory", "admitted_strict"), |b| {
        b.iter(check_strict);
    });
    assert!(check_strict().allowed);

    let governor: DefaultKeyedRateLimiter<String> =
        RateLimiter::keyed(governor::Quota::per_second(NonZeroU32::MAX));
    let key = "coordinator-1".to_owned();
    group.bench_function(BenchmarkId::new("governor", "admitted"), |b| {
        b.iter(|| governor.check_key(black_box(&key)).is_ok());
    });

    let client = ClientKey::from(CLIENT);
    for (name, blocked) in [("clean", false), ("blocked", true)] {
        let limiter = failed_attempt_limiter(blocked);
        assert_eq!(limiter.check(client).is_err(), blocked);
        group.bench_function(BenchmarkId::new("failed_attempts", name), |b| {
            b.iter(|| limiter.check(black_box(client)));
        });
    }

    group.finish();
}
