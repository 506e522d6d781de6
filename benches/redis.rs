//! The Redis rate-limit check (GCRA, a strict window, two limits at once) against the
//! floor of any Redis call: a `PING` on the same multiplexed connection.
//!
//! Starts its own `redis-server` on a free loopback port (no persistence) and stops it
//! afterwards; fails if `redis-server` is not installed.
//!
//! ```text
//! cargo bench --features redis --bench redis
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{hint::black_box, num::NonZeroU32};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keygate::{
    limit::{Quota, RateLimitBackend, Tiers},
    redis::RedisRateLimit,
};

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

fn redis(c: &mut Criterion) {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A quota no benchmark exhausts, so every check takes the write path.
    // The strict window holds what a second of checks adds (a few thousand entries in its
    // sorted set), below its limit of 100,000.
    let tiers = Tiers::new(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()))
        .tier(
            "workspace",
            Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()),
        )
        .tier(
            "strict",
            Quota::strict_per_second(NonZeroU32::new(100_000).unwrap()).unwrap(),
        );
    let limit = runtime
        .block_on(RedisRateLimit::connect(server.url(), tiers))
        .unwrap();
    let one = NonZeroU32::MIN;

    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ping", |b| {
        b.to_async(&runtime).iter(|| {
            let mut connection = limit.connection().clone();
            async move {
                let pong: String = ::redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                black_box(pong)
            }
        });
    });
    group.bench_function("check", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check(black_box("coordinator-1"), "default", one);
            async move { black_box(check.await.unwrap()) }
        });
    });
    group.bench_function("check/strict_window", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check(black_box("coordinator-2"), "strict", one);
            async move { black_box(check.await.unwrap()) }
        });
    });
    group.bench_function("check_all/2", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check_all(
                black_box(&[("coordinator-1", "default"), ("ws-1", "workspace")]),
                one,
            );
            async move { black_box(check.await.unwrap()) }
        });
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, redis);
criterion_main!(benches);
