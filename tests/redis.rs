//! Distributed mode: the Redis rate-limit backend and registry, against a real
//! `redis-server`.
//!
//! Every test starts its own `redis-server` on a free loopback port, without
//! persistence, and kills it when done. Without `redis-server` on the `PATH` the tests
//! fail (they never skip silently).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::{Ipv4Addr, TcpListener},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body};
use http::{Request, Response, StatusCode};
use keygate::{
    ApiKey, ApiKeyGuard, InMemoryRegistry, KeyGrant, KeyId, KeyLookup, KeyPrefix, KeyRegistry,
    RateLimit, RegistryError,
    audit::{MemorySink, Outcome},
    limit::{Clock, InMemoryRateLimit, LimitError, Quota, RateLimitBackend, Tiers},
    redis::{RedisRateLimit, RedisRegistry},
};
use time::OffsetDateTime;
use tower::ServiceExt;

// The coordinator example's router and what it shares with the other examples, for the
// tests of two coordinator replicas on one Redis.
#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/coordinator/app.rs"]
mod coordinator;
mod examples_common;
mod support;

use support::refusal_reason as reason;

use examples_common::{Env, Reply, TestServer, random_key, register_coordinator, temp_audit_log};
use serde_json::json;

#[path = "support/redis_server.rs"]
mod redis_server;

use redis_server::RedisServer;

// ---------------------------------------------------------------------------------------
// Helpers

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// Calls the guarded router in process.
async fn call(app: &Router, key: &str) -> Response<Body> {
    let request = Request::get("/jobs")
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap()
}

/// Polls `app` with `key` until it answers `status`, for at most `limit`; returns how long
/// that took.
async fn until_status(app: &Router, key: &str, status: StatusCode, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let response = call(app, key).await;
        if response.status() == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "still {} after {limit:?}, expected {status}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asserts that `registry` answers a lookup of a fresh key id with "not found" (and no
/// error).
async fn assert_unknown_key_id_is_not_found(registry: &RedisRegistry) {
    let found = registry.find_by_id(&KeyId::generate().unwrap()).await;
    assert!(found.unwrap().is_none());
}

/// Waits until `registry` has confirmed its subscription to the invalidation channel.
async fn until_listening(registry: &RedisRegistry) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !registry.is_listening() {
        assert!(Instant::now() < deadline, "the registry never subscribed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Rate limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_admit_exactly_the_quota_together() {
    let server = RedisServer::start();
    // Two replicas: each its own registry, limit backend, guard and HTTP server.
    let mut replicas = Vec::new();
    let mut registries = Vec::new();
    for _ in 0..2 {
        let registry = Arc::new(RedisRegistry::connect(server.url()).await.unwrap());
        let limit = RedisRateLimit::connect(server.url(), Tiers::default())
            .await
            .unwrap();
        let guard = ApiKeyGuard::builder()
            .registry(registry.clone())
            .rate_limit(RateLimit::new(limit))
            .build()
            .unwrap();
        replicas.push(support::TestServer::start(support::jobs_app(guard)).await);
        registries.push(registry);
    }
    let issued = registries[0]
        .issue(KeyGrant::new("coordinator"))
        .await
        .unwrap();
    let key = issued.key.expose_secret().to_owned();

    let client = support::client();
    let admitted = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    // 2 × 32 concurrent clients, 4 requests each: 256 requests for a quota of 100.
    for client_no in 0..64 {
        let url = replicas[client_no % 2].url("/jobs");
        let (client, key) = (client.clone(), key.clone());
        let (admitted, limited) = (Arc::clone(&admitted), Arc::clone(&limited));
        tasks.push(tokio::spawn(async move {
            for _ in 0..4 {
                let response = client
                    .get(&url)
                    .header("x-api-key", &key)
                    .send()
                    .await
                    .unwrap();
                match response.status() {
                    reqwest::StatusCode::OK => admitted.fetch_add(1, Ordering::Relaxed),
                    reqwest::StatusCode::TOO_MANY_REQUESTS => {
                        let headers = response.headers();
                        assert!(
                            headers["retry-after"]
                                .to_str()
                                .unwrap()
                                .parse::<u64>()
                                .unwrap()
                                >= 1
                        );
                        assert!(
                            headers["ratelimit"]
                                .to_str()
                                .unwrap()
                                .starts_with(r#""default";r=0;"#)
                        );
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected status {other}"),
                };
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();
    let admitted = admitted.load(Ordering::Relaxed);
    let limited = limited.load(Ordering::Relaxed);
    println!("256 requests on 2 replicas in {elapsed:?}: {admitted} admitted, {limited} limited");
    assert_eq!(admitted + limited, 256);
    // One request is replenished every 600 ms; the burst takes well under that, so exactly
    // 100 are admitted (and if the machine is very slow, exactly the replenished ones more).
    let replenished = usize::try_from(elapsed.as_millis() / 600).unwrap();
    assert!(
        (100..=100 + replenished).contains(&admitted),
        "{admitted} admitted in {elapsed:?}"
    );
    if elapsed < Duration::from_millis(600) {
        assert_eq!(admitted, 100);
    }
}

#[tokio::test]
async fn redis_decides_exactly_as_the_in_memory_backend() {
    let server = RedisServer::start();
    let tiers = Tiers::new(Quota::per_second(nz(3))) // T = 333 333 333 ns
        .tier(
            "gold",
            Quota::per_minute(nz(100))
                .with_burst(nz(5))
                .named("gold")
                .unwrap(),
        )
        .tier(
            "odd",
            Quota::new(nz(7), Duration::from_nanos(10_000_000_001))
                .unwrap()
                .named("odd")
                .unwrap(),
        );
    let clock = Clock::manual();
    let memory = InMemoryRateLimit::new(tiers.clone()).with_clock(clock.clone());
    let redis = RedisRateLimit::connect(server.url(), tiers)
        .await
        .unwrap()
        .with_clock(clock.clone());

    let mut rng = support::rng(0x9E37_79B9_7F4A_7C15);
    let (mut allowed, mut refused, mut too_costly) = (0, 0, 0);
    for step in 0..500 {
        let advance = match rng.u64(..20) {
            0..10 => 0,
            10..16 => rng.u64(..20_000_000),
            16..19 => rng.u64(..700_000_000),
            _ => rng.u64(..20_000_000_000),
        };
        clock.advance(Duration::from_nanos(advance));
        let key = ["coordinator-1", "stitcher"][rng.usize(..2)];
        let tier = ["default", "gold", "odd", "no-such-tier"][rng.usize(..4)];
        let cost = if rng.u64(..10) < 7 {
            1
        } else {
            1 + rng.u32(..6)
        };
        let expected = memory.check(key, tier, nz(cost)).await;
        let actual = redis.check(key, tier, nz(cost)).await;
        let at = clock.elapsed();
        match (expected, actual) {
            (Ok(expected), Ok(actual)) => {
                assert_eq!(
                    actual, expected,
                    "step {step} at {at:?}: {key} in {tier}, cost {cost}"
                );
                if expected.allowed {
                    allowed += 1;
                } else {
                    refused += 1;
                }
            }
            (
                Err(LimitError::CostExceedsBurst {
                    cost: c1,
                    burst: b1,
                }),
                Err(LimitError::CostExceedsBurst {
                    cost: c2,
                    burst: b2,
                }),
            ) => {
                assert_eq!((c1, b1), (c2, b2), "step {step}");
                too_costly += 1;
            }
            (expected, actual) => {
                panic!("step {step}: in memory {expected:?}, on Redis {actual:?}")
            }
        }
    }
    println!("{allowed} allowed, {refused} refused, {too_costly} over the burst");
    assert!(allowed > 100 && refused > 50 && too_costly > 5);
}

#[tokio::test]
async fn a_tier_is_advertised_under_its_name_as_in_memory() {
    let server = RedisServer::start();
    let tiers = Tiers::default().tier("bulk", Quota::per_minute(nz(5)));
    let clock = Clock::manual();
    let memory = InMemoryRateLimit::new(tiers.clone()).with_clock(clock.clone());
    let redis = RedisRateLimit::connect(server.url(), tiers)
        .await
        .unwrap()
        .with_clock(clock.clone());
    let on_redis = redis.check("k", "bulk", nz(1)).await.unwrap();
    let in_memory = memory.check("k", "bulk", nz(1)).await.unwrap();
    assert_eq!(on_redis, in_memory);
    assert_eq!(&*on_redis.policy, "bulk");
    assert_eq!(on_redis.headers().policy(), r#""bulk";q=5;w=60"#);
    assert!(
        on_redis
            .headers()
            .rate_limit()
            .to_str()
            .unwrap()
            .starts_with(r#""bulk";r=4;"#)
    );
}

#[tokio::test]
async fn check_all_is_all_or_nothing() {
    let server = RedisServer::start();
    let tiers = Tiers::default().tier(
        "workspace",
        Quota::per_minute(nz(3)).named("workspace").unwrap(),
    );
    let limit = RedisRateLimit::connect(server.url(), tiers)
        .await
        .unwrap()
        .with_clock(Clock::manual());
    let both = [("coordinator-1", "default"), ("ws-1", "workspace")];
    for left in [2, 1, 0] {
        let decision = limit.check_all(&both, nz(1)).await.unwrap();
        assert!(decision.allowed());
        let [principal, workspace] = decision.decisions() else {
            panic!("two decisions expected");
        };
        assert_eq!(principal.remaining, 97 + left);
        assert_eq!(workspace.remaining, left);
        assert_eq!(decision.binding(), Some(workspace));
    }
    // The workspace is exhausted: refused, and the principal is not charged.
    let refused = limit.check_all(&both, nz(1)).await.unwrap();
    assert!(!refused.allowed());
    let [principal, workspace] = refused.decisions() else {
        panic!("two decisions expected");
    };
    assert!(!principal.allowed && !workspace.allowed);
    assert_eq!(principal.remaining, 97);
    assert_eq!(principal.retry_after, Some(Duration::ZERO));
    assert_eq!(workspace.retry_after, Some(Duration::from_secs(20)));
    assert_eq!(refused.binding(), Some(workspace));
    let alone = limit
        .check("coordinator-1", "default", nz(1))
        .await
        .unwrap();
    assert_eq!(alone.remaining, 96);

    // A cost no limit's burst allows is refused without a round trip.
    assert!(matches!(
        limit.check_all(&both, nz(4)).await,
        Err(LimitError::CostExceedsBurst { cost: 4, burst: 3 })
    ));
    assert!(limit.check_all(&[], nz(1)).await.unwrap().allowed());
}

#[tokio::test]
async fn buckets_expire_when_full_and_the_script_survives_a_flush() {
    let server = RedisServer::start();
    let limit = RedisRateLimit::builder(Tiers::default())
        .prefix("app:rl:")
        .connect(server.url())
        .await
        .unwrap();
    let mut redis = server.inspect().await;

    // Cost 5 of 100 per minute: full again in 3 s, and the bucket expires then.
    let decision = limit
        .check("coordinator-1", "default", nz(5))
        .await
        .unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 95);
    assert!(
        decision.reset > Duration::from_millis(2900) && decision.reset <= Duration::from_secs(3)
    );
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("app:rl:default:coordinator-1")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((2900..=3000).contains(&ttl), "PTTL {ttl}");
    // The bucket holds the theoretical arrival time, in nanoseconds since the epoch.
    let tat: String = ::redis::cmd("GET")
        .arg("app:rl:default:coordinator-1")
        .query_async(&mut redis)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let tat: i128 = tat.parse().unwrap();
    assert!(
        (tat - now - 3_000_000_000).abs() < 1_000_000_000,
        "{tat} vs {now}"
    );

    // Redis forgets its scripts (restart, failover, SCRIPT FLUSH): the next check loads it again.
    let () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut redis)
        .await
        .unwrap();
    let again = limit
        .check("coordinator-1", "default", nz(1))
        .await
        .unwrap();
    assert!(again.allowed);
    assert!(again.remaining <= 94);
}

#[tokio::test]
async fn strict_windows_decide_exactly_as_in_memory_and_mix_with_gcra() {
    let server = RedisServer::start();
    let tiers = Tiers::new(Quota::strict(nz(5), Duration::from_secs(10)).unwrap())
        .tier(
            "contract",
            Quota::strict_per_minute(nz(100))
                .unwrap()
                .named("contract")
                .unwrap(),
        )
        .tier("gcra", Quota::per_second(nz(3)));
    let clock = Clock::manual();
    let memory = InMemoryRateLimit::new(tiers.clone()).with_clock(clock.clone());
    let redis = RedisRateLimit::connect(server.url(), tiers)
        .await
        .unwrap()
        .with_clock(clock.clone());

    let mut rng = support::rng(0x5EED_0F57_01C7);
    let (mut allowed, mut refused) = (0, 0);
    for step in 0..600 {
        // Whole microseconds: Redis scores admissions in microseconds.
        let advance = match rng.u64(..20) {
            0..8 => 0,
            8..16 => rng.u64(..500_000),
            16..19 => rng.u64(..3_000_000),
            _ => rng.u64(..30_000_000),
        };
        clock.advance(Duration::from_micros(advance));
        let key = ["coordinator-1", "stitcher"][rng.usize(..2)];
        let tier = ["default", "contract", "gcra", "no-such-tier"][rng.usize(..4)];
        let cost = if rng.u64(..10) < 7 {
            1
        } else {
            1 + rng.u32(..3)
        };
        let expected = memory.check(key, tier, nz(cost)).await.unwrap();
        let actual = redis.check(key, tier, nz(cost)).await.unwrap();
        assert_eq!(
            actual, expected,
            "step {step}: {key} in {tier}, cost {cost}"
        );
        if expected.allowed {
            allowed += 1;
        } else {
            refused += 1;
        }
    }
    println!("{allowed} allowed, {refused} refused");
    assert!(allowed > 100 && refused > 50);

    // All or nothing across kinds: the strict window refuses, the GCRA bucket is not charged.
    let both = [("ws-1", "gcra"), ("ws-1", "default")];
    clock.advance(Duration::from_secs(60));
    for _ in 0..2 {
        assert!(redis.check_all(&both, nz(2)).await.unwrap().allowed());
        clock.advance(Duration::from_secs(1));
    }
    let refused = redis.check_all(&both, nz(2)).await.unwrap();
    assert!(!refused.allowed());
    let [gcra, strict] = refused.decisions() else {
        panic!("two decisions expected");
    };
    assert_eq!(gcra.retry_after, Some(Duration::ZERO));
    // 4 of 5 held: 1 more slot frees when the first request is 10 s old.
    assert_eq!(
        (strict.remaining, strict.retry_after),
        (1, Some(Duration::from_secs(8)))
    );
    assert_eq!(refused.binding(), Some(strict));
    assert_eq!(
        redis.check("ws-1", "gcra", nz(3)).await.unwrap().remaining,
        0
    );
}

#[tokio::test]
async fn a_strict_window_is_a_sorted_set_that_expires_with_its_window() {
    let server = RedisServer::start();
    let quota = Quota::strict(nz(10), Duration::from_secs(3)).unwrap();
    let limit = RedisRateLimit::builder(Tiers::new(quota))
        .prefix("app:rl:")
        .connect(server.url())
        .await
        .unwrap();
    let mut redis = server.inspect().await;
    let decision = limit
        .check("coordinator-1", "default", nz(4))
        .await
        .unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.remaining, 6);
    assert_eq!(decision.reset, Duration::from_secs(3));
    let key = "app:rl:default:coordinator-1";
    let members: usize = ::redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, 4);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((2900..=3000).contains(&ttl), "PTTL {ttl}");
    let refused = limit
        .check("coordinator-1", "default", nz(7))
        .await
        .unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after.unwrap() <= Duration::from_secs(3));
    let members: usize = ::redis::cmd("ZCARD")
        .arg(key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(members, 4, "a refusal records nothing");
}

/// Checks, from the client's side, that no window of `window` held more than `limit`
/// admissions on the server. Each admission happened on the server between its request
/// was sent and its response came back (`(sent, received)`, from one start). For each
/// admission `i`, take the admissions sent no earlier; if `limit + 1` of them came back
/// within `window` of `i`'s sending, those `limit + 1` were all admitted within a window:
/// a violation. Every window of server time is covered, since a window holding too many
/// admissions contains the sending of its earliest-sent one.
fn assert_no_window_over(admitted: &[(Duration, Duration)], window: Duration, limit: usize) {
    for &(sent, _) in admitted {
        let mut received: Vec<Duration> = admitted
            .iter()
            .filter(|&&(other, _)| other >= sent)
            .map(|&(_, received)| received)
            .collect();
        received.sort_unstable();
        if let Some(&last) = received.get(limit) {
            assert!(
                last - sent >= window,
                "{} admissions between {sent:?} and {last:?}",
                limit + 1
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_admit_more_than_the_strict_window_together() {
    const WINDOW: Duration = Duration::from_secs(2);
    const LIMIT: u32 = 20;
    let server = RedisServer::start();
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("coordinator")).await.unwrap();
    let key = issued.key.expose_secret().to_owned();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let quota = Quota::strict(nz(LIMIT), WINDOW).unwrap();
        let limit = RedisRateLimit::connect(server.url(), Tiers::new(quota))
            .await
            .unwrap();
        let guard = ApiKeyGuard::builder()
            .registry(Arc::clone(&registry))
            .rate_limit(RateLimit::new(limit))
            .build()
            .unwrap();
        replicas.push(support::TestServer::start(support::jobs_app(guard)).await);
    }

    // A steady 25 requests per second, alternating between the replicas (2.5 times the
    // limit), for more than three windows and until enough were refused.
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(40));
    let (mut admitted, mut refused) = (Vec::new(), 0_usize);
    let mut sent_count = 0_usize;
    while started.elapsed() < 3 * WINDOW || refused < 20 {
        assert!(
            started.elapsed() < 10 * WINDOW,
            "only {refused} refused in 10 windows"
        );
        ticks.tick().await;
        let sent = started.elapsed();
        let reply = support::send(replicas[sent_count % 2].get_with_key("/jobs", &key)).await;
        let received = started.elapsed();
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"default\";q=20;w=2")
        );
        if reply.status == 200 {
            admitted.push((sent, received));
        } else {
            reply.assert_refusal(429, "rate_limited");
            // Until the oldest admission leaves the window: at most the window.
            assert!((1..=2).contains(&reply.retry_after()));
            refused += 1;
        }
        // Any 20 requests fit in an empty window: the first 20 are all admitted.
        if sent_count < 20 {
            assert_eq!(
                admitted.len(),
                sent_count + 1,
                "request {sent_count} refused"
            );
        }
        sent_count += 1;
    }
    println!(
        "{sent_count} requests in {:?}: {} admitted, {refused} refused",
        started.elapsed(),
        admitted.len()
    );
    assert_no_window_over(&admitted, WINDOW, 20);
}

// ---------------------------------------------------------------------------------------
// Registry

/// An update or a deletion through one replica reaches the other's cache within a second,
/// as a revocation does (the cache would otherwise serve the old record for 5 minutes).
#[tokio::test]
async fn updates_and_deletions_through_one_replica_reach_the_other_within_a_second() {
    let server = RedisServer::start();
    let admin = RedisRegistry::connect(server.url()).await.unwrap();
    let replica = RedisRegistry::builder()
        .cache_ttl(Duration::from_secs(300))
        .connect(server.url())
        .await
        .unwrap();
    until_listening(&replica).await;
    let issued = admin.issue(KeyGrant::new("coordinator")).await.unwrap();
    let key_id = issued.record.key_id;
    assert!(
        replica
            .find_by_id(&key_id)
            .await
            .unwrap()
            .unwrap()
            .scopes
            .is_empty()
    );

    admin
        .update(&key_id, keygate::KeyUpdate::new().scopes(["admin"]))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while replica
        .find_by_id(&key_id)
        .await
        .unwrap()
        .unwrap()
        .scopes
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the update did not reach the other replica"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    admin.delete(&key_id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while replica.find_by_id(&key_id).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the deletion did not reach the other replica"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        replica
            .find_by_digest(&issued.key.digest())
            .await
            .unwrap()
            .is_none()
    );
    assert!(admin.list_principals().await.unwrap().is_empty());
}

#[tokio::test]
async fn revocation_through_one_replica_is_refused_by_the_other_within_a_second() {
    let server = RedisServer::start();
    let admin = RedisRegistry::connect(server.url()).await.unwrap();
    // A long cache lifetime: only the invalidation message can explain a prompt refusal.
    let replica = Arc::new(
        RedisRegistry::builder()
            .cache_ttl(Duration::from_secs(300))
            .connect(server.url())
            .await
            .unwrap(),
    );
    until_listening(&replica).await;
    let other = support::jobs_app(
        ApiKeyGuard::builder()
            .registry(replica.clone())
            .build()
            .unwrap(),
    );

    // A generated key (looked up by id) and an opaque key (looked up by digest).
    let generated = admin.issue(KeyGrant::new("coordinator")).await.unwrap();
    let opaque = ApiKey::new("an-opaque-key-from-openssl-rand-base64-32").unwrap();
    let opaque_record = admin
        .register_key(&opaque, KeyGrant::new("stitcher"))
        .await
        .unwrap();
    for (key, key_id) in [
        (generated.key.expose_secret(), generated.record.key_id),
        (opaque.expose_secret(), opaque_record.key_id),
    ] {
        assert_eq!(call(&other, key).await.status(), StatusCode::OK);
        let cached = replica.cached();
        assert!(cached >= 1);
        // Served from the cache now.
        assert_eq!(call(&other, key).await.status(), StatusCode::OK);
        assert_eq!(replica.cached(), cached);

        let started = Instant::now();
        admin
            .revoke(&key_id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        let took = until_status(
            &other,
            key,
            StatusCode::UNAUTHORIZED,
            Duration::from_secs(1),
        )
        .await;
        let total = started.elapsed();
        println!(
            "revocation reached the other replica {took:?} after the revoke returned ({total:?} in all)"
        );
        assert!(total < Duration::from_secs(1), "{total:?}");
        assert_eq!(reason(call(&other, key).await).await, "revoked_credentials");
    }

    // Rotation without overlap: the old key stops at once everywhere, the new one works.
    let old = admin.issue(KeyGrant::new("coordinator")).await.unwrap();
    let old_key = old.key.expose_secret();
    assert_eq!(call(&other, old_key).await.status(), StatusCode::OK);
    let new = admin
        .rotate(&old.record.key_id, Duration::ZERO)
        .await
        .unwrap();
    until_status(
        &other,
        old_key,
        StatusCode::UNAUTHORIZED,
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        reason(call(&other, old_key).await).await,
        "expired_credentials"
    );
    assert_eq!(
        call(&other, new.key.expose_secret()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_registry_stores_digests_only() {
    let server = RedisServer::start();
    let registry = RedisRegistry::builder()
        .cache_capacity(4)
        .connect(server.url())
        .await
        .unwrap();
    let issued = registry
        .issue(
            KeyGrant::new("coordinator")
                .workspaces(["ws-1"])
                .scopes(["jobs"]),
        )
        .await
        .unwrap();
    let opaque = ApiKey::new("an-opaque-key-from-openssl-rand-base64-32").unwrap();
    registry
        .register_key(&opaque, KeyGrant::new("coordinator").tier("gold"))
        .await
        .unwrap();
    assert!(matches!(
        registry
            .register_key(&opaque, KeyGrant::new("someone-else"))
            .await,
        Err(RegistryError::Duplicate)
    ));

    // Lookups by id and by digest; unknown keys are `None`, not errors.
    let by_id = registry
        .find_by_id(&issued.record.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(by_id.digest.ct_eq(&issued.key.digest()));
    assert_eq!(by_id.workspaces, ["ws-1"]);
    let by_digest = registry
        .find_by_digest(&opaque.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_digest.tier, "gold");
    assert_unknown_key_id_is_not_found(&registry).await;
    assert!(matches!(
        registry
            .revoke(&KeyId::generate().unwrap(), OffsetDateTime::now_utc())
            .await,
        Err(RegistryError::UnknownKey(_))
    ));
    assert_eq!(registry.list_keys("coordinator").await.unwrap().len(), 2);
    assert!(registry.list_keys("nobody").await.unwrap().is_empty());

    // The cache is bounded.
    for _ in 0..10 {
        let issued = registry.issue(KeyGrant::new("many")).await.unwrap();
        registry.find_by_id(&issued.record.key_id).await.unwrap();
        assert!(registry.cached() <= 4);
    }

    // Nothing in Redis holds a key, only digests.
    let mut redis = server.inspect().await;
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        keys.iter().all(|k| k.starts_with("keygate:registry:")),
        "{keys:?}"
    );
    let mut stored = keys.join("\n");
    for key in &keys {
        let kind: String = ::redis::cmd("TYPE")
            .arg(key)
            .query_async(&mut redis)
            .await
            .unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![
                ::redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut redis)
                    .await
                    .unwrap(),
            ],
            "set" => ::redis::cmd("SMEMBERS")
                .arg(key)
                .query_async(&mut redis)
                .await
                .unwrap(),
            other => panic!("unexpected {other} at {key}"),
        };
        stored.extend(values.iter().map(|v| format!("\n{v}")));
    }
    for secret in [issued.key.expose_secret(), opaque.expose_secret()] {
        assert!(!stored.contains(secret));
        assert!(!stored.contains(&secret[secret.len() - 20..]));
    }
    assert!(stored.contains(&issued.key.digest().to_hex()));
    assert!(stored.contains(&opaque.digest().to_hex()));
}

// ---------------------------------------------------------------------------------------
// Outages

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_or_open_and_the_guard_recovers() {
    let mut server = RedisServer::start();
    let key = ApiKey::new("an-opaque-key-from-openssl-rand-base64-32").unwrap();
    let key_text = key.expose_secret().to_owned();
    let limit: Arc<dyn RateLimitBackend> = Arc::new(
        RedisRateLimit::connect(server.url(), Tiers::default())
            .await
            .unwrap(),
    );
    let closed = support::jobs_app(
        ApiKeyGuard::builder()
            .key(key.clone(), KeyGrant::new("coordinator"))
            .rate_limit(RateLimit::new(limit.clone()))
            .build()
            .unwrap(),
    );
    let audit = MemorySink::new();
    let open = support::jobs_app(
        ApiKeyGuard::builder()
            .key(key.clone(), KeyGrant::new("coordinator"))
            .rate_limit(RateLimit::new(limit.clone()).fail_open())
            .audit(audit.clone())
            .build()
            .unwrap(),
    );
    // And a guard whose keys live in Redis.
    let registry = Arc::new(RedisRegistry::connect(server.url()).await.unwrap());
    let issued = registry.issue(KeyGrant::new("stitcher")).await.unwrap();
    let stored = support::jobs_app(
        ApiKeyGuard::builder()
            .registry(registry.clone())
            .build()
            .unwrap(),
    );
    let stored_key = issued.key.expose_secret().to_owned();
    assert_eq!(call(&closed, &key_text).await.status(), StatusCode::OK);
    assert_eq!(call(&open, &key_text).await.status(), StatusCode::OK);
    assert_eq!(call(&stored, &stored_key).await.status(), StatusCode::OK);

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let refused = call(&closed, &key_text).await;
        let took = started.elapsed();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key("retry-after"));
        assert_eq!(reason(refused).await, "auth_unavailable");
        // The default timeout is 250 ms; a stopped server refuses connections at once.
        assert!(
            took < Duration::from_millis(600),
            "fail-closed answer took {took:?}"
        );

        let started = Instant::now();
        assert_eq!(call(&open, &key_text).await.status(), StatusCode::OK);
        assert!(started.elapsed() < Duration::from_millis(600));
    }
    let failed_open = audit
        .events()
        .into_iter()
        .filter(|e| {
            e.outcome == Outcome::Admitted
                && e.reason.as_deref() == Some("rate_limit_unavailable_failed_open")
        })
        .count();
    assert_eq!(failed_open, 3);
    // A cached key keeps working for the cache lifetime; an unknown one is an outage, not
    // a bad key.
    assert_eq!(call(&stored, &stored_key).await.status(), StatusCode::OK);
    let (unknown, _) = ApiKey::generate(&KeyPrefix::default()).unwrap();
    let response = call(&stored, unknown.expose_secret()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reason(response).await, "auth_unavailable");

    // Redis comes back on the same port (empty: no persistence). No restart of anything.
    server.restart();
    let took = until_status(&closed, &key_text, StatusCode::OK, Duration::from_secs(5)).await;
    println!("fail-closed guard recovered {took:?} after Redis restarted");
    let rate_limited = call(&open, &key_text).await;
    assert_eq!(rate_limited.status(), StatusCode::OK);
    assert!(rate_limited.headers().contains_key("ratelimit"));
    // The registry reconnects too, and serves keys issued after the restart.
    let fresh = registry.issue(KeyGrant::new("stitcher")).await.unwrap();
    until_status(
        &stored,
        fresh.key.expose_secret(),
        StatusCode::OK,
        Duration::from_secs(5),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !registry.is_listening() {
        assert!(Instant::now() < deadline, "registry did not resubscribe");
        call(&stored, fresh.key.expose_secret()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_hung_redis_cannot_hang_requests() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(200);
    let limit = RedisRateLimit::builder(Tiers::default())
        .timeout(timeout)
        .connect(server.url())
        .await
        .unwrap();
    let registry = RedisRegistry::builder()
        .timeout(timeout)
        .connect(server.url())
        .await
        .unwrap();
    assert!(limit.check("k", "default", nz(1)).await.unwrap().allowed);

    server.pause();
    let started = Instant::now();
    let error = limit.check("k", "default", nz(1)).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, LimitError::Unavailable(_)), "{error:?}");
    assert!(
        took >= timeout - Duration::from_millis(20) && took < timeout + Duration::from_millis(150),
        "{took:?}"
    );
    let started = Instant::now();
    let error = registry
        .find_by_id(&KeyId::generate().unwrap())
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(error, RegistryError::Unavailable(_)), "{error:?}");
    assert!(took < timeout + Duration::from_millis(150), "{took:?}");

    server.resume();
    let deadline = Instant::now() + Duration::from_secs(5);
    while limit.check("k", "default", nz(1)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no recovery after the server resumed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_unknown_key_id_is_not_found(&registry).await;
}

// ---------------------------------------------------------------------------------------
// The coordinator example: two replicas on one Redis

/// The coordinator's configuration for a replica on `redis` (each replica gets its own
/// audit log when it starts).
fn coordinator_env(redis: &RedisServer, key: &str, admin: &str) -> Env {
    Env::default()
        .set("COORDINATOR_API_KEY", key)
        .set("COORDINATOR_WORKSPACES", "ws-a")
        .set("ADMIN_API_KEY", admin)
        .set("REDIS_URL", redis.url())
        // The refusals polled for below count as failed attempts.
        .set("FAILED_ATTEMPTS_PER_MINUTE", "1000")
}

/// Two replicas of the coordinator example, `a` and `b`: its router in process, each on
/// its own loopback port with its own audit log, started with the same configuration and
/// sharing one Redis.
struct Replicas {
    env: Env,
    /// The clock of the replicas' rate limits (the Redis script takes its time instead of
    /// the server's): it stands still, so no outcome depends on the speed of the test.
    clock: Clock,
    a: TestServer,
    b: TestServer,
    /// `COORDINATOR_API_KEY`, for workspace `ws-a`.
    key: String,
    /// `ADMIN_API_KEY`.
    admin: String,
}

impl Replicas {
    async fn start(redis: &RedisServer) -> Self {
        let (key, admin) = (random_key(), random_key());
        let env = coordinator_env(redis, &key, &admin);
        let clock = Clock::manual();
        let a = start_replica(&env, &clock).await.unwrap();
        // The second replica finds the configured keys registered by the first.
        let b = start_replica(&env, &clock).await.unwrap();
        Self {
            env,
            clock,
            a,
            b,
            key,
            admin,
        }
    }

    /// Stops both replicas and checks their audit logs.
    async fn finish(self) {
        self.a.finish().await;
        self.b.finish().await;
    }
}

/// Starts a coordinator replica configured by `env`, its rate limits on `clock`.
async fn start_replica(env: &Env, clock: &Clock) -> Result<TestServer, common::StartError> {
    let audit_log = temp_audit_log("coordinator-replica");
    let env = env
        .clone()
        .set("AUDIT_LOG", audit_log.display().to_string());
    let mut config = coordinator::Config::from_lookup(env.lookup()).unwrap();
    config.server.clock = clock.clone();
    match coordinator::router(config).await {
        Ok(router) => Ok(TestServer::start(router, audit_log).await),
        Err(error) => {
            let _ = std::fs::remove_file(&audit_log);
            Err(error)
        }
    }
}

/// The message a replica configured by `env` refuses to start with.
async fn start_error(env: &Env, clock: &Clock) -> String {
    match start_replica(env, clock).await {
        Ok(_) => panic!("the replica started"),
        Err(error) => {
            // With its causes, as `main` prints it.
            let mut message = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            message
        }
    }
}

async fn create_job(replica: &TestServer, key: &str, workspace: &str) -> Reply {
    replica
        .post("/coordinator/jobs")
        .key(key)
        .json(&json!({ "workspaceId": workspace, "type": "stitch" }))
        .send()
        .await
}

/// Polls `replica` with `key` (creating a job in `workspace`) until it is refused with
/// 401, for at most a second; returns the refusal.
async fn until_refused(replica: &TestServer, key: &str, workspace: &str) -> Reply {
    let started = Instant::now();
    loop {
        let reply = create_job(replica, key, workspace).await;
        if reply.status == 401 {
            println!("refused {:?} after the change", started.elapsed());
            return reply;
        }
        reply.assert_status(201);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still admitted a second after the change"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn coordinator_replicas_share_the_limit_of_100_requests_per_minute() {
    let redis = RedisServer::start();
    let r = Replicas::start(&redis).await;
    for n in 1..=100 {
        let replica = if n % 2 == 1 { &r.a } else { &r.b };
        let reply = create_job(replica, &r.key, "ws-a").await;
        reply.assert_status(201);
        // One count for both replicas.
        let remaining = format!("\"default\";r={};", 100 - n);
        assert!(
            reply.header("ratelimit").unwrap().starts_with(&remaining),
            "request {n}: {:?}",
            reply.header("ratelimit")
        );
    }
    // The 101st is refused, whichever replica it reaches.
    for replica in [&r.a, &r.b] {
        let limited = create_job(replica, &r.key, "ws-a").await;
        limited
            .assert_error(429, "rate_limited")
            .assert_rate_limit(100, 0);
        assert!(limited.retry_after() >= 1);
    }
    // The limit is per principal: the administrator still has all of its own.
    register_coordinator(&r.b, &r.admin, "coordinator-b", &["ws-b"]).await;
    r.finish().await;
}

#[tokio::test]
async fn a_coordinator_registered_through_one_replica_works_on_the_other() {
    let redis = RedisServer::start();
    let r = Replicas::start(&redis).await;
    let (key, key_id) = register_coordinator(&r.a, &r.admin, "coordinator-b", &["ws-b"]).await;

    // The key works on the other replica at once, with the workspaces it was given.
    let created = create_job(&r.b, &key, "ws-b").await;
    created.assert_status(201);
    create_job(&r.b, &key, "ws-a")
        .await
        .assert_error(403, "workspace_forbidden");
    // The other replica knows the principal too.
    r.b.post("/admin/coordinators")
        .key(&r.admin)
        .json(&json!({ "name": "coordinator-b", "workspaces": ["ws-c"] }))
        .send()
        .await
        .assert_error(409, "conflict");
    // Jobs, unlike keys, stay in the memory of the replica that created them.
    let job = created.body["id"].as_str().unwrap();
    r.b.get(&format!("/coordinator/jobs/{job}"))
        .key(&key)
        .send()
        .await
        .assert_status(200);
    r.a.get(&format!("/coordinator/jobs/{job}"))
        .key(&key)
        .send()
        .await
        .assert_error(404, "not_found");

    // Rotated through one replica without overlap: the old key stops on the other, the
    // new one works there.
    let rotated =
        r.a.post(&format!("/admin/keys/{key_id}/rotate"))
            .key(&r.admin)
            .json(&json!({ "overlapSeconds": 0 }))
            .send()
            .await;
    rotated.assert_status(201);
    until_refused(&r.b, &key, "ws-b")
        .await
        .assert_error(401, "expired_credentials");
    let new_key = rotated.body["key"].as_str().unwrap();
    create_job(&r.b, new_key, "ws-b").await.assert_status(201);
    r.finish().await;
}

#[tokio::test]
async fn a_key_revoked_through_one_replica_is_refused_by_the_other_within_a_second() {
    let redis = RedisServer::start();
    let r = Replicas::start(&redis).await;
    // Replica b has the key's record in its cache.
    create_job(&r.b, &r.key, "ws-a").await.assert_status(201);
    create_job(&r.b, &r.key, "ws-a").await.assert_status(201);
    // The configured key's id, from the shared registry.
    let registry = RedisRegistry::connect(redis.url()).await.unwrap();
    let record = registry
        .find_by_digest(&ApiKey::new(r.key.clone()).unwrap().digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.principal_id, coordinator::FIRST_COORDINATOR);

    let revoked =
        r.a.delete(&format!("/admin/keys/{}", record.key_id))
            .key(&r.admin)
            .send()
            .await;
    revoked.assert_status(200);
    assert_eq!(revoked.body["principalId"], coordinator::FIRST_COORDINATOR);
    until_refused(&r.b, &r.key, "ws-a")
        .await
        .assert_error(401, "revoked_credentials");
    create_job(&r.a, &r.key, "ws-a")
        .await
        .assert_error(401, "revoked_credentials");

    // A replica (re)started with the same configuration accepts the keys registered
    // already, and the revoked one stays revoked.
    let c = start_replica(&r.env, &r.clock).await.unwrap();
    create_job(&c, &r.key, "ws-a")
        .await
        .assert_error(401, "revoked_credentials");
    register_coordinator(&c, &r.admin, "coordinator-c", &["ws-c"]).await;
    c.finish().await;
    r.finish().await;
}

/// Redis restarted without its data: the configured keys are registered again by the
/// running replicas (no restart needed), so they are not locked out.
#[tokio::test]
async fn configured_keys_come_back_after_redis_restarts_empty() {
    let mut redis = RedisServer::start();
    let r = Replicas::start(&redis).await;
    create_job(&r.b, &r.key, "ws-a").await.assert_status(201);
    redis.stop();
    redis.restart();

    let registry = RedisRegistry::connect(redis.url()).await.unwrap();
    let digest = ApiKey::new(r.key.clone()).unwrap().digest();
    let deadline = Instant::now() + Duration::from_secs(20);
    while registry.find_by_digest(&digest).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the configured key was not registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = ApiKey::new(r.admin.clone()).unwrap().digest();
    while registry.find_by_digest(&admin).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the admin key was not registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first request of a replica's rate-limit connection after the restart may find
    // it broken (503, and it reconnects); then the key is admitted.
    for replica in [&r.a, &r.b] {
        let mut reply = create_job(replica, &r.key, "ws-a").await;
        if reply.status == 503 {
            reply = create_job(replica, &r.key, "ws-a").await;
        }
        reply.assert_status(201);
    }
    register_coordinator(&r.a, &r.admin, "coordinator-c", &["ws-c"]).await;
    r.finish().await;
}

#[tokio::test]
async fn a_replica_refuses_to_start_with_a_key_registered_for_another_principal() {
    let redis = RedisServer::start();
    let r = Replicas::start(&redis).await;
    let registry = RedisRegistry::connect(redis.url()).await.unwrap();

    // The two keys swapped.
    let swapped = r
        .env
        .clone()
        .set("COORDINATOR_API_KEY", &r.admin)
        .set("ADMIN_API_KEY", &r.key);
    let error = start_error(&swapped, &r.clock).await;
    assert!(
        error.contains("COORDINATOR_API_KEY")
            && error.contains("principal `admin`")
            && error.contains("principal `coordinator`"),
        "{error}"
    );
    assert!(
        !error.contains(&r.key) && !error.contains(&r.admin),
        "{error}"
    );

    // A new coordinator key with the coordinator's key as the admin key: refused, and
    // the new key was not registered before the refusal.
    let new_key = random_key();
    let conflicting = r
        .env
        .clone()
        .set("COORDINATOR_API_KEY", &new_key)
        .set("ADMIN_API_KEY", &r.key);
    let error = start_error(&conflicting, &r.clock).await;
    assert!(
        error.contains("ADMIN_API_KEY") && error.contains("principal `coordinator`"),
        "{error}"
    );
    assert!(
        registry
            .find_by_digest(&ApiKey::new(new_key).unwrap().digest())
            .await
            .unwrap()
            .is_none()
    );
    // The running replicas are unaffected.
    create_job(&r.a, &r.key, "ws-a").await.assert_status(201);
    r.finish().await;
}

#[tokio::test]
async fn without_its_redis_a_replica_refuses_to_start_and_never_shows_the_password() {
    // A port nothing listens on.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://:s3cret-pa55word@127.0.0.1:{port}/0");
    let env = Env::default()
        .set("COORDINATOR_API_KEY", random_key())
        .set("COORDINATOR_WORKSPACES", "ws-a")
        .set("ADMIN_API_KEY", random_key())
        .set("REDIS_URL", &url);

    // The configuration printout.
    let config = coordinator::Config::from_lookup(env.lookup()).unwrap();
    assert_eq!(config.redis_url.as_ref().unwrap().expose(), url);
    let shown = format!("{config:#?}");
    assert!(
        shown.contains(&format!("redis://:[REDACTED]@127.0.0.1:{port}/0")),
        "{shown}"
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    let error = start_error(&env, &Clock::manual()).await;
    assert!(
        error.contains("REDIS_URL") && error.contains(&format!("127.0.0.1:{port}")),
        "{error}"
    );
    assert!(!error.contains("s3cret"), "{error}");

    let empty = coordinator::Config::from_lookup(env.set("REDIS_URL", " ").lookup())
        .unwrap_err()
        .to_string();
    assert!(empty.contains("REDIS_URL"), "{empty}");
}

#[test]
fn redis_urls_are_shown_with_their_passwords_redacted() {
    for (url, shown) in [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (
            "redis://:s3cret@10.0.0.5:6379/0",
            "redis://:[REDACTED]@10.0.0.5:6379/0",
        ),
        (
            "rediss://app-user:s3cret@redis.internal/1",
            "rediss://app-user:[REDACTED]@redis.internal/1",
        ),
        // Without the colon, most likely a password.
        ("redis://s3cret@host", "redis://[REDACTED]@host"),
        // Unencoded `@` or `/` in the password.
        (
            "redis://:s3c@ret@host:6379",
            "redis://:[REDACTED]@host:6379",
        ),
        ("redis://u:s3c/r@et@host", "redis://u:[REDACTED]@host"),
        (
            "redis+unix:///run/redis.sock?db=1&pass=s3cret&protocol=resp3",
            "redis+unix:///run/redis.sock?db=1&pass=[REDACTED]&protocol=resp3",
        ),
        (
            "redis://host/?password=s3cret#frag",
            "redis://host/?password=[REDACTED]#frag",
        ),
        // An `@` in the query: more hidden than needed, but no password shown.
        ("redis://host/?pass=s3:c@ret", "redis://[REDACTED]@ret"),
        // Not a URL: shown not at all.
        ("s3cret", "[REDACTED]"),
    ] {
        let redacted = common::RedisUrl::new(url);
        assert_eq!(redacted.to_string(), shown, "{url}");
        assert!(!format!("{redacted:?}").contains("s3c"), "{url}");
        assert_eq!(redacted.expose(), url);
    }
}
