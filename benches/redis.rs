//! The Redis rate-limit check (GCRA, a strict window, two limits at once) against the
//! floor of any Redis call: a `PING` on the same multiplexed connection.
//!
//! Starts its own `redis-server` on a free loopback port (no persistence) and stops it
//! afterwards; fails if `redis-server` is not installed. After the group, prints the
//! server's own time per call of each benchmark's commands (`INFO commandstats`), which
//! the round trip's scheduling noise does not blur. Then times a `PING` and a GCRA check
//! alternately on the same connection, pair by pair, and prints their medians and ratio:
//! the issue's target (a check at most 1.3× a `PING`) compared within each pair, so that
//! the machine's load, which drifts over seconds, hits both alike.
//!
//! ```text
//! cargo bench --features redis --bench redis
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    num::NonZeroU32,
    time::{Duration, Instant},
};

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

    // What the connection's setup sent is not any benchmark's.
    runtime.block_on(server_time(limit.connection().clone()));
    let server_time_of = |name: &str| {
        let stats = runtime.block_on(server_time(limit.connection().clone()));
        (name.to_owned(), stats)
    };
    let mut server_times = Vec::new();
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
    server_times.push(server_time_of("ping"));
    group.bench_function("check", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check(black_box("coordinator-1"), "default", one);
            async move { black_box(check.await.unwrap()) }
        });
    });
    server_times.push(server_time_of("check"));
    group.bench_function("check/strict_window", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check(black_box("coordinator-2"), "strict", one);
            async move { black_box(check.await.unwrap()) }
        });
    });
    server_times.push(server_time_of("check/strict_window"));
    group.bench_function("check_all/2", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check_all(
                black_box(&[("coordinator-1", "default"), ("ws-1", "workspace")]),
                one,
            );
            async move { black_box(check.await.unwrap()) }
        });
    });
    server_times.push(server_time_of("check_all/2"));
    group.finish();
    println!("\nredis-server's own time per call (INFO commandstats, round trip excluded)\n");
    println!("| benchmark | command | calls | µs per call |");
    println!("|---|---|---:|---:|");
    for (benchmark, stats) in server_times {
        for (command, calls, usec) in stats {
            println!("| {benchmark} | {command} | {calls} | {usec} |");
        }
    }
    paired(&runtime, &limit, one);
    drop(server);
}

/// Pairs timed by [`paired`] (after as many unrecorded, to warm up).
const PAIRS: usize = 20_000;

/// Times a `PING` and a GCRA check alternately on the limit's connection, [`PAIRS`]
/// times, which goes first alternating too, and prints the medians, the ratio of the
/// medians and the median of the pairs' own ratios.
///
/// Criterion times its benchmarks one after the other, seconds apart; on a shared machine
/// the round trip's cost drifts more than the difference between the two in that time
/// (the ratio of criterion's medians ranged over 1.0–3.6× from run to run). Within a pair,
/// both calls meet the same load.
fn paired(runtime: &tokio::runtime::Runtime, limit: &RedisRateLimit, one: NonZeroU32) {
    let (pings, checks) = runtime.block_on(async {
        let mut connection = limit.connection().clone();
        let mut pings = Vec::with_capacity(PAIRS);
        let mut checks = Vec::with_capacity(PAIRS);
        for round in 0..2 * PAIRS {
            let mut ping = Duration::ZERO;
            let mut check = Duration::ZERO;
            for ping_first in [round % 2 == 0, round % 2 == 1] {
                let start = Instant::now();
                if ping_first {
                    let pong: String = ::redis::cmd("PING")
                        .query_async(&mut connection)
                        .await
                        .unwrap();
                    black_box(pong);
                    ping = start.elapsed();
                } else {
                    let decision = limit.check(black_box("coordinator-1"), "default", one);
                    black_box(decision.await.unwrap());
                    check = start.elapsed();
                }
            }
            if round >= PAIRS {
                pings.push(ping);
                checks.push(check);
            }
        }
        (pings, checks)
    });
    let mut ratios: Vec<f64> = pings
        .iter()
        .zip(&checks)
        .map(|(ping, check)| check.as_secs_f64() / ping.as_secs_f64())
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (ping, check) = (quantiles(pings), quantiles(checks));
    println!("\n{PAIRS} pairs of a PING and a GCRA check, alternated on one connection\n");
    println!("| call | p10 | median | p90 |");
    println!("|---|---:|---:|---:|");
    for (call, [p10, median, p90]) in [("PING", ping), ("check", check)] {
        println!("| {call} | {p10:.1?} | {median:.1?} | {p90:.1?} |");
    }
    println!(
        "\ncheck ÷ PING: {:.2}× (medians), {:.2}× (median of the pairs' ratios; p10 {:.2}×, \
         p90 {:.2}×); the target is at most 1.3×",
        check[1].as_secs_f64() / ping[1].as_secs_f64(),
        ratios[ratios.len() / 2],
        ratios[ratios.len() / 10],
        ratios[ratios.len() * 9 / 10],
    );
}

/// The 10th percentile, the median and the 90th percentile of `times`.
fn quantiles(mut times: Vec<Duration>) -> [Duration; 3] {
    times.sort_unstable();
    [10, 50, 90].map(|percent| times[times.len() * percent / 100])
}

/// The server's own time per call of the commands sent since the last call, from `INFO
/// commandstats` (`usec_per_call`, measured inside `redis-server`, round trip excluded),
/// then resets the statistics. The round trip is the same for a `PING` and a check, and
/// on a shared machine its scheduling noise swamps the difference between them; this
/// shows the difference itself: what the check's script costs the server beyond a `PING`.
async fn server_time(
    mut connection: ::redis::aio::ConnectionManager,
) -> Vec<(String, String, String)> {
    let info: String = ::redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let () = ::redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut connection)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| line.strip_prefix("cmdstat_")?.split_once(':'))
        .filter(|(command, _)| ["ping", "evalsha", "eval"].contains(command))
        .map(|(command, stats)| {
            let field = |name: &str| {
                stats
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .unwrap_or("?")
                    .to_owned()
            };
            (command.to_owned(), field("calls"), field("usec_per_call"))
        })
        .collect()
}

criterion_group!(benches, redis);
criterion_main!(benches);
