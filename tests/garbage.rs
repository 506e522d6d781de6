//! No bad input ever produces a 5xx or a panic: tens of thousands of random requests
//! (credentials in every source, paths, queries, duplicates) through a guard with every
//! stage switched on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::IpAddr, sync::Arc};

use axum::{Router, body::Body, routing::get};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use keygate::{
    ApiKeyGuard, ClientAddr, InMemoryRegistry, KeyGrant, KeyRegistry, RateLimit,
    audit::{MemorySink, Outcome},
    limit::{Clock, FailedAttemptLimiter, InMemoryRateLimit, Tiers},
};
use tower::{Service, ServiceExt};

mod support;

/// Up to `max` bytes, mostly from `valid`, a quarter any byte a header value may hold
/// (not CR, LF or NUL).
fn bytes(rng: &mut fastrand::Rng, max: usize, valid: &[u8]) -> Vec<u8> {
    let len = rng.usize(..=max);
    (0..len)
        .map(|_| {
            if rng.usize(..4) == 0 {
                let b = rng.u8(..);
                if matches!(b, b'\r' | b'\n' | 0) {
                    b'x'
                } else {
                    b
                }
            } else {
                valid[rng.usize(..valid.len())]
            }
        })
        .collect()
}

#[tokio::test]
async fn random_requests_never_get_a_5xx() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry
        .issue(KeyGrant::new("p").workspaces(["w"]))
        .await
        .unwrap();
    let valid_key = issued.key.expose_secret().to_owned();
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone() as Arc<dyn KeyRegistry>)
        .bearer()
        .query("token")
        .websocket_protocol()
        .public_path("/health")
        .rate_limit(RateLimit::new(
            InMemoryRateLimit::new(Tiers::default()).with_clock(Clock::manual()),
        ))
        .failed_attempts(FailedAttemptLimiter::default().with_clock(Clock::manual()))
        .client_ip_from_extensions()
        .trusted_proxies(1)
        .audit(audit.clone())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { "inner" })
        .layer(guard);
    let mut service = app.into_service::<Body>();

    let alphabet: &[u8] =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/=%., ";
    let names = [
        "x-api-key",
        "authorization",
        "sec-websocket-protocol",
        "x-forwarded-for",
        "x-request-id",
        "user-agent",
    ];
    let prefixes: [&[u8]; 6] = [
        b"",
        b"Bearer ",
        b"keygate.key.",
        b"kg_",
        b"bearer  ",
        b"Basic ",
    ];
    let mut rng = support::rng(0x5eed_1234_abcd_0001);
    let requests = 20_000;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..requests {
        let path = match rng.usize(..4) {
            0 => "/health".to_owned(),
            1 => format!(
                "/jobs/{}",
                String::from_utf8_lossy(&bytes(&mut rng, 20, b"abc%2F/.."))
            ),
            2 => "/".to_owned(),
            _ => "/health/".to_owned(),
        };
        let path: String = path
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '?' && *c != '#')
            .collect();
        let query = String::from_utf8_lossy(&bytes(&mut rng, 40, b"token=abc&%00%ff+="))
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '#')
            .collect::<String>();
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let Ok(mut request) = Request::get(uri.as_str()).body(Body::empty()) else {
            continue;
        };
        for _ in 0..rng.usize(..4) {
            let index = rng.usize(..names.len());
            let name = HeaderName::from_static(names[index]);
            let mut value = prefixes[rng.usize(..prefixes.len())].to_vec();
            // The key goes only where keys belong (a client that writes its key into its
            // User-Agent has it recorded there).
            if index < 3 && rng.usize(..10) == 0 {
                value.extend_from_slice(valid_key.as_bytes());
            } else {
                let max = if rng.usize(..20) == 0 { 700 } else { 60 };
                value.extend(bytes(&mut rng, max, alphabet));
            }
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                request.headers_mut().append(name, value);
            }
        }
        let ip = IpAddr::from(rng.u32(..64).to_be_bytes());
        request.extensions_mut().insert(ClientAddr(ip));
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        let status = response.status();
        assert!(
            matches!(
                status,
                StatusCode::OK | StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
            ),
            "request {i} ({uri}) got {status}"
        );
        *statuses.entry(status.as_u16()).or_default() += 1;
    }
    // Every kind of answer happened, and every request was audited once.
    assert!(statuses.len() == 3, "{statuses:?}");
    let events = audit.events();
    assert_eq!(events.len() as u64, statuses.values().sum::<usize>() as u64);
    assert!(events.iter().any(|e| e.outcome == Outcome::Refused));
    // The valid key never shows up in the audit trail.
    let json = serde_json::to_string(&events).unwrap();
    assert!(!json.contains(&valid_key[16..]));
}
