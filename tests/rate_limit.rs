//! Per-key rate limiting and brute-force protection, through the guard.
//!
//! Time never passes by itself here: every limiter runs on a manual clock, so the tests
//! are exact and never sleep.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{CountingRegistry, TestServer, jobs_app, refusal_reason as reason};

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body};
use http::{Request, Response, StatusCode};
use keygate::{
    ApiKey, ApiKeyGuard, BackendFuture, ClientAddr, InMemoryRegistry, KeyGrant, KeyPrefix,
    KeyRegistry, LimitBy, RateLimit,
    audit::{MemorySink, Outcome},
    limit::{
        Clock, FailedAttemptLimiter, InMemoryRateLimit, LimitError, Quota, RateLimitBackend,
        RateLimitDecision, Tiers,
    },
};
use tower::{Service, ServiceExt};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn generated_key() -> ApiKey {
    ApiKey::generate(&KeyPrefix::default()).unwrap().0
}

/// A random opaque key (no key id: looked up by digest).
fn opaque_key() -> ApiKey {
    ApiKey::new(support::random_key()).unwrap()
}

/// Calls the guarded router in process, as client `ip`.
async fn call(app: &Router, key: Option<&str>, ip: IpAddr) -> Response<Body> {
    let mut request = Request::get("/jobs");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let mut request = request.body(Body::empty()).unwrap();
    request.extensions_mut().insert(ClientAddr(ip));
    app.clone().oneshot(request).await.unwrap()
}

fn header(response: &Response<Body>, name: &str) -> String {
    response.headers()[name].to_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_are_admitted_exactly_the_burst() {
    let clock = Clock::manual();
    let backend = InMemoryRateLimit::new(Tiers::default()).with_clock(clock);
    let key = generated_key();
    let guard = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("coordinator"))
        .rate_limit(RateLimit::new(backend))
        .build()
        .unwrap();
    let server = TestServer::start(jobs_app(guard)).await;

    let (client, url) = (server.client.clone(), server.url("/jobs"));
    let admitted = Arc::new(AtomicUsize::new(0));
    let limited = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..64 {
        let (client, url, key) = (client.clone(), url.clone(), key.expose_secret().to_owned());
        let (admitted, limited) = (Arc::clone(&admitted), Arc::clone(&limited));
        // 10,000 requests in total: 16 tasks send 157, 48 send 156.
        let count = if task < 16 { 157 } else { 156 };
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                let response = client
                    .get(&url)
                    .header("x-api-key", &key)
                    .send()
                    .await
                    .unwrap();
                match response.status() {
                    reqwest::StatusCode::OK => admitted.fetch_add(1, Ordering::Relaxed),
                    reqwest::StatusCode::TOO_MANY_REQUESTS => {
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
    assert_eq!(admitted.load(Ordering::Relaxed), 100);
    assert_eq!(limited.load(Ordering::Relaxed), 9_900);
}

#[tokio::test]
async fn without_headers_on_admitted_only_429s_carry_them() {
    let backend =
        InMemoryRateLimit::new(Tiers::new(Quota::per_minute(nz(2)))).with_clock(Clock::manual());
    let key = generated_key();
    let guard = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("coordinator"))
        .rate_limit(RateLimit::new(backend).without_headers_on_admitted())
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let ip = IpAddr::from([127, 0, 0, 1]);
    let key = key.expose_secret();
    for _ in 0..2 {
        let admitted = call(&app, Some(key), ip).await;
        assert_eq!(admitted.status(), StatusCode::OK);
        assert!(!admitted.headers().contains_key("ratelimit"));
        assert!(!admitted.headers().contains_key("ratelimit-policy"));
    }
    // The limit still counts, and its refusal says when to come back.
    let refused = call(&app, Some(key), ip).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"default\";q=2;w=60");
    assert_eq!(header(&refused, "ratelimit"), "\"default\";r=0;t=60");
    assert_eq!(header(&refused, "retry-after"), "30");
}

#[tokio::test]
async fn rate_limited_is_429_with_headers_and_replenishes_over_time() {
    let clock = Clock::manual();
    let backend = InMemoryRateLimit::new(Tiers::default()).with_clock(clock.clone());
    let key = generated_key();
    let guard = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("coordinator"))
        .rate_limit(RateLimit::new(backend))
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let ip = IpAddr::from([127, 0, 0, 1]);
    let key = key.expose_secret();

    let first = call(&app, Some(key), ip).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "ratelimit-policy"), "\"default\";q=100;w=60");
    // One of 100 used; full again 0.6 s later, rounded up.
    assert_eq!(header(&first, "ratelimit"), "\"default\";r=99;t=1");
    assert!(!first.headers().contains_key("retry-after"));

    for _ in 1..100 {
        assert_eq!(call(&app, Some(key), ip).await.status(), StatusCode::OK);
    }
    let refused = call(&app, Some(key), ip).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&refused, "ratelimit-policy"),
        "\"default\";q=100;w=60"
    );
    assert_eq!(header(&refused, "ratelimit"), "\"default\";r=0;t=60");
    // One request is back after 0.6 s: rounded up, never 0.
    assert_eq!(header(&refused, "retry-after"), "1");
    assert_eq!(reason(refused).await, "rate_limited");

    // Retry-After never reads 0 while the caller is still limited, at any fraction of the
    // interval.
    for _ in 0..5 {
        clock.advance(Duration::from_millis(100));
        let response = call(&app, Some(key), ip).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
        assert!(retry_after >= 1);
    }

    // 0.6 s after exhaustion one request fits again, and only one.
    clock.advance(Duration::from_millis(100));
    assert_eq!(call(&app, Some(key), ip).await.status(), StatusCode::OK);
    assert_eq!(
        call(&app, Some(key), ip).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // A full window later, the whole burst again.
    clock.advance(Duration::from_secs(60));
    for _ in 0..100 {
        assert_eq!(call(&app, Some(key), ip).await.status(), StatusCode::OK);
    }
    assert_eq!(
        call(&app, Some(key), ip).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn tiers_get_their_own_quotas_and_cost_counts() {
    let tiers = Tiers::new(Quota::per_minute(nz(3))).tier("gold", Quota::per_minute(nz(6)));
    let registry = Arc::new(InMemoryRegistry::new());
    let basic = registry.issue(KeyGrant::new("basic")).await.unwrap().key;
    let gold = registry
        .issue(KeyGrant::new("gold").tier("gold"))
        .await
        .unwrap()
        .key;
    let guard = ApiKeyGuard::builder()
        .registry(registry)
        .rate_limit(
            RateLimit::new(InMemoryRateLimit::new(tiers).with_clock(Clock::manual())).cost(nz(2)),
        )
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let ip = IpAddr::from([127, 0, 0, 1]);

    let admitted = |key: ApiKey| {
        let app = app.clone();
        async move {
            let mut n = 0;
            while call(&app, Some(key.expose_secret()), ip).await.status() == StatusCode::OK {
                n += 1;
                assert!(n < 100);
            }
            n
        }
    };
    // Each request costs 2: 3 per minute allows 1 request, 6 per minute allows 3.
    assert_eq!(admitted(basic).await, 1);
    assert_eq!(admitted(gold).await, 3);
}

#[tokio::test]
async fn keys_of_one_principal_share_a_budget_unless_limited_per_key() {
    for (by, expected) in [(LimitBy::Principal, 4), (LimitBy::Key, 8)] {
        let registry = Arc::new(InMemoryRegistry::new());
        let first = registry.issue(KeyGrant::new("p")).await.unwrap().key;
        let second = registry.issue(KeyGrant::new("p")).await.unwrap().key;
        let backend = InMemoryRateLimit::new(Tiers::new(Quota::per_minute(nz(4))))
            .with_clock(Clock::manual());
        let guard = ApiKeyGuard::builder()
            .registry(registry)
            .rate_limit(RateLimit::new(backend).by(by))
            .build()
            .unwrap();
        let app = jobs_app(guard);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut admitted = 0;
        for _ in 0..10 {
            for key in [&first, &second] {
                if call(&app, Some(key.expose_secret()), ip).await.status() == StatusCode::OK {
                    admitted += 1;
                }
            }
        }
        assert_eq!(admitted, expected, "{by:?}");
    }
}

#[tokio::test]
async fn too_many_failed_attempts_is_429_before_any_lookup() {
    let registry = Arc::new(CountingRegistry::default());
    // An opaque key: from a blocked address, only generated keys may be looked up.
    let valid = opaque_key();
    registry
        .register_key(&valid, KeyGrant::new("p"))
        .await
        .unwrap();
    let clock = Clock::manual();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .failed_attempts(FailedAttemptLimiter::default().with_clock(clock.clone()))
        .client_ip_from_extensions()
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let attacker = IpAddr::from([203, 0, 113, 7]);
    let bystander = IpAddr::from([198, 51, 100, 1]);

    // The default allows 10 failures per minute: each is looked up and answered 401.
    for _ in 0..10 {
        let response = call(&app, Some(&"x".repeat(40)), attacker).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(registry.lookups(), 10);

    // The 11th attempt, even with a valid opaque key, is refused before the registry is
    // asked.
    let response = call(&app, Some(valid.expose_secret()), attacker).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
    assert!(retry_after >= 1);
    assert!(!response.headers().contains_key("www-authenticate"));
    assert_eq!(reason(response).await, "too_many_failed_attempts");
    assert_eq!(registry.lookups(), 10);

    // Another client is unaffected.
    let response = call(&app, Some(valid.expose_secret()), bystander).await;
    assert_eq!(response.status(), StatusCode::OK);

    // A failure replenishes after 6 s.
    clock.advance(Duration::from_secs(6));
    let response = call(&app, Some(valid.expose_secret()), attacker).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_that_verifies_gets_through_a_blocked_address_and_lookups_stay_bounded() {
    let registry = Arc::new(CountingRegistry::default());
    let honest = registry
        .issue(KeyGrant::new("neighbour"))
        .await
        .unwrap()
        .key;
    let clock = Clock::manual();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .failed_attempts(FailedAttemptLimiter::default().with_clock(clock.clone()))
        .client_ip_from_extensions()
        .build()
        .unwrap();
    let app = jobs_app(guard);
    // One address for an attacker and an honest caller (a NAT).
    let nat = IpAddr::from([203, 0, 113, 7]);
    let status = |response: Response<Body>| response.status();

    for _ in 0..10 {
        let response = call(&app, Some(&"x".repeat(40)), nat).await;
        assert_eq!(status(response), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(registry.lookups(), 10);

    // A flood of made-up keys of the generated form (valid checksums): the default budget
    // lets 10 be looked up, all refused 429 and counted, then none.
    for _ in 0..100 {
        let made_up = generated_key();
        let response = call(&app, Some(made_up.expose_secret()), nat).await;
        assert_eq!(status(response), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(registry.lookups(), 20, "the budget bounds the lookups");
    // The budget is spent: the honest caller is refused too, before its lookup.
    let response = call(&app, Some(honest.expose_secret()), nat).await;
    assert_eq!(status(response), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(registry.lookups(), 20);

    // A second later the budget has refilled: the honest key is looked up and admitted...
    clock.advance(Duration::from_secs(1));
    let response = call(&app, Some(honest.expose_secret()), nat).await;
    assert_eq!(status(response), StatusCode::OK);
    // ...and from then on goes straight to its lookup, however the flood goes on.
    for _ in 0..100 {
        let made_up = generated_key();
        call(&app, Some(made_up.expose_secret()), nat).await;
        let response = call(&app, Some(honest.expose_secret()), nat).await;
        assert_eq!(status(response), StatusCode::OK);
    }
    // 21 as above; 9 made-up keys more (the refilled budget, less the honest key's
    // first lookup) and 100 honest lookups.
    assert_eq!(registry.lookups(), 130);

    // The address itself is still blocked: an unknown opaque key never reaches the registry.
    let response = call(&app, Some(&"y".repeat(40)), nat).await;
    assert_eq!(status(response), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(registry.lookups(), 130);
}

#[tokio::test]
async fn without_passage_a_blocked_address_is_refused_whatever_the_key() {
    let registry = Arc::new(CountingRegistry::default());
    let honest = registry
        .issue(KeyGrant::new("neighbour"))
        .await
        .unwrap()
        .key;
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .failed_attempts(
            FailedAttemptLimiter::default()
                .with_clock(Clock::manual())
                .without_passage(),
        )
        .client_ip_from_extensions()
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let nat = IpAddr::from([203, 0, 113, 7]);
    for _ in 0..10 {
        call(&app, Some(&"x".repeat(40)), nat).await;
    }
    let response = call(&app, Some(honest.expose_secret()), nat).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(registry.lookups(), 10);
}

#[tokio::test]
async fn failures_from_one_ipv6_slash_64_count_together() {
    let registry = Arc::new(InMemoryRegistry::new());
    let valid = opaque_key();
    registry
        .register_key(&valid, KeyGrant::new("p"))
        .await
        .unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry)
        .failed_attempts(FailedAttemptLimiter::default().with_clock(Clock::manual()))
        .client_ip_from_extensions()
        .build()
        .unwrap();
    let app = jobs_app(guard);

    // Ten failures, each from another address of the same /64.
    for host in 1..=10u16 {
        let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, host]);
        assert_eq!(
            call(&app, Some(&"y".repeat(40)), ip).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Then a valid key: refused from the same /64, admitted from the next one.
    for (ip, status) in [
        (
            [0x2001, 0xdb8, 0, 0, 0xffff, 1, 2, 3],
            StatusCode::TOO_MANY_REQUESTS,
        ),
        ([0x2001, 0xdb8, 0, 1, 0, 0, 0, 1], StatusCode::OK),
    ] {
        let response = call(&app, Some(valid.expose_secret()), IpAddr::from(ip)).await;
        assert_eq!(response.status(), status, "{ip:x?}");
    }
}

#[tokio::test]
async fn a_spoofed_leftmost_forwarded_for_does_not_escape_the_limit() {
    let registry = Arc::new(InMemoryRegistry::new());
    let valid = opaque_key();
    registry
        .register_key(&valid, KeyGrant::new("p"))
        .await
        .unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry)
        .failed_attempts(FailedAttemptLimiter::default().with_clock(Clock::manual()))
        .client_ip_from_extensions()
        .trusted_proxies(1)
        .build()
        .unwrap();
    let server = TestServer::start(jobs_app(guard)).await;
    let (client, url) = (server.client.clone(), server.url("/jobs"));
    let send = |key: String, spoofed: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .get(&url)
                .header("x-api-key", key)
                // The attacker writes whatever it likes on the left; the one trusted
                // proxy appends the real address on the right.
                .header("x-forwarded-for", format!("{spoofed}, 203.0.113.9"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    for i in 0..10 {
        let status = send("z".repeat(40), format!("10.0.0.{i}")).await;
        assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    }
    let status = send(valid.expose_secret().to_owned(), "10.9.9.9".into()).await;
    assert_eq!(status, reqwest::StatusCode::TOO_MANY_REQUESTS);

    // Another client behind the same proxy is unaffected.
    let other = client
        .get(&url)
        .header("x-api-key", valid.expose_secret())
        .header("x-forwarded-for", "203.0.113.10")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxy_networks() {
    let registry = Arc::new(InMemoryRegistry::new());
    let valid = opaque_key();
    registry
        .register_key(&valid, KeyGrant::new("p"))
        .await
        .unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry)
        .failed_attempts(FailedAttemptLimiter::default().with_clock(Clock::manual()))
        .client_ip_from_extensions()
        .trusted_proxy_networks(["10.0.0.0/8", "192.168.1.7"])
        .build()
        .unwrap();
    let app = jobs_app(guard);
    let send = |key: String, peer: &str, forwarded_for: String| {
        let mut request = Request::get("/jobs")
            .header("x-api-key", key)
            .header("x-forwarded-for", forwarded_for)
            .body(Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ClientAddr(peer.parse().unwrap()));
        let app = app.clone();
        async move { app.oneshot(request).await.unwrap().status() }
    };

    // An attacker connecting directly names a fresh address in every request: ignored,
    // all ten failures count against its own address.
    for i in 0..10 {
        let status = send("z".repeat(40), "198.51.100.66", format!("203.0.113.{i}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let spoofed = send(
        valid.expose_secret().to_owned(),
        "198.51.100.66",
        "203.0.113.77".into(),
    )
    .await;
    assert_eq!(spoofed, StatusCode::TOO_MANY_REQUESTS);

    // The same header from a trusted proxy (here through a chain of two, the outer one
    // IPv4-mapped) is honoured: the client behind it is another client.
    let honoured = send(
        valid.expose_secret().to_owned(),
        "::ffff:10.0.0.2",
        "6.6.6.6, 203.0.113.77, 192.168.1.7".into(),
    )
    .await;
    assert_eq!(honoured, StatusCode::OK);

    // And a client behind the trusted proxy is counted under its own address.
    for _ in 0..10 {
        let status = send("z".repeat(40), "10.0.0.2", "203.0.113.88".into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let limited = send(
        valid.expose_secret().to_owned(),
        "10.0.0.3",
        "203.0.113.88".into(),
    )
    .await;
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
    let neighbour = send(
        valid.expose_secret().to_owned(),
        "10.0.0.3",
        "203.0.113.89".into(),
    )
    .await;
    assert_eq!(neighbour, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_invalid_keys_leave_the_limiters_bounded() {
    let backend = Arc::new(InMemoryRateLimit::new(Tiers::default()).with_clock(Clock::manual()));
    let failed = Arc::new(FailedAttemptLimiter::default().with_clock(Clock::manual()));
    let registry = Arc::new(InMemoryRegistry::new());
    registry.issue(KeyGrant::new("p")).await.unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry)
        .rate_limit(RateLimit::new(backend.clone()))
        .failed_attempts(failed.clone())
        .client_ip_from_extensions()
        .build()
        .unwrap();
    let service = jobs_app(guard);

    let mut tasks = Vec::new();
    for worker in 0..2u32 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut service = service.into_service::<Body>();
            for i in (worker..1_000_000).step_by(2) {
                // Half well-formed generated keys with a bad checksum, half unknown opaque keys.
                let key = if i % 2 == 0 {
                    format!("kg_{:012}_{:038}", i, i)
                } else {
                    format!("unknown-opaque-key-{i:020}-padding")
                };
                let ip = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
                let mut request = Request::get("/jobs")
                    .header("x-api-key", key)
                    .body(Body::empty())
                    .unwrap();
                request.extensions_mut().insert(ClientAddr(ip));
                let response = service.ready().await.unwrap().call(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        backend.len(),
        0,
        "no limiter state for unauthenticated input"
    );
    assert!(
        failed.len() <= failed.capacity(),
        "{} entries for a capacity of {}",
        failed.len(),
        failed.capacity()
    );
    assert_eq!(failed.capacity(), 100_000);
}

/// A limit backend that is down.
#[derive(Debug)]
struct DownBackend;

impl RateLimitBackend for DownBackend {
    fn check(
        &self,
        _key: &str,
        _tier: &str,
        _cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>> {
        BackendFuture::new(async { Err(LimitError::unavailable("connection refused")) })
    }
}

#[tokio::test]
async fn a_failed_backend_fails_closed_by_default_and_open_when_configured() {
    let key = generated_key();
    let ip = IpAddr::from([127, 0, 0, 1]);

    let closed = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("p"))
        .rate_limit(RateLimit::new(DownBackend))
        .build()
        .unwrap();
    let response = call(&jobs_app(closed), Some(key.expose_secret()), ip).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after"), "5");
    assert_eq!(reason(response).await, "auth_unavailable");

    let audit = MemorySink::new();
    let open = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("p"))
        .rate_limit(RateLimit::new(DownBackend).fail_open())
        .audit(audit.clone())
        .build()
        .unwrap();
    let response = call(&jobs_app(open), Some(key.expose_secret()), ip).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("ratelimit"));
    let events = audit.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome, Outcome::Admitted);
    assert_eq!(
        events[0].reason.as_deref(),
        Some("rate_limit_unavailable_failed_open")
    );
}

/// The most admissions any half-open window `[t, t + window)` holds, over the sorted
/// admission times `admitted`. A window holding the most can be moved forward until it
/// starts at an admission without losing one, so checking the windows that start at each
/// admission checks every window.
fn busiest_window(admitted: &[Duration], window: Duration) -> usize {
    admitted
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            admitted[i..]
                .iter()
                .take_while(|&&at| at < start + window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_strict_window_never_admits_more_than_100_in_any_minute() {
    const WINDOW: Duration = Duration::from_secs(60);
    let clock = Clock::manual();
    let quota = Quota::strict_per_minute(nz(100)).unwrap();
    let backend = InMemoryRateLimit::new(Tiers::new(quota)).with_clock(clock.clone());
    let key = generated_key();
    let guard = ApiKeyGuard::builder()
        .key(key.clone(), KeyGrant::new("coordinator"))
        .rate_limit(RateLimit::new(backend))
        .build()
        .unwrap();
    let server = TestServer::start(jobs_app(guard)).await;

    // A steady 171 requests per minute (one every 350 ms) for 200 s of clock time.
    let step = Duration::from_millis(350);
    let mut admitted: Vec<Duration> = Vec::new();
    let mut refused = 0;
    for _ in 0..572 {
        clock.advance(step);
        let now = clock.elapsed();
        let reply = support::send(server.get_with_key("/jobs", key.expose_secret())).await;
        assert_eq!(
            reply.header("ratelimit-policy"),
            Some("\"default\";q=100;w=60")
        );
        // The admissions still in the window ending now, `(now - 60 s, now]`.
        let in_window: Vec<Duration> = admitted
            .iter()
            .copied()
            .filter(|&at| at + WINDOW > now)
            .collect();
        if reply.status == 200 {
            assert!(
                in_window.len() < 100,
                "admitted at {now:?} over a full window"
            );
            admitted.push(now);
        } else {
            reply.assert_refusal(429, "rate_limited");
            // Refused only when the window is full, until its oldest admission leaves.
            assert_eq!(in_window.len(), 100, "refused at {now:?} with room left");
            let wait = in_window[0] + WINDOW - now;
            assert_eq!(reply.retry_after(), wait.as_secs_f64().ceil() as u64);
            assert_eq!(
                reply
                    .header("ratelimit")
                    .map(|v| v.starts_with("\"default\";r=0;t=")),
                Some(true)
            );
            refused += 1;
        }
    }
    assert!(clock.elapsed() > 3 * WINDOW);
    assert_eq!(busiest_window(&admitted, WINDOW), 100);
    // GCRA would have admitted 100 at once and then 100 a minute: ~433 in 200 s.
    println!("{} admitted, {refused} refused", admitted.len());
    assert!(admitted.len() <= 400 && refused > 0);
}
