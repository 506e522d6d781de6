//! The admitted path: a valid key through the guard, the in-memory registry and the
//! per-key limiter, to an inner service that answers at once.
//!
//! - `no_guard`: the inner service alone, the floor every other number stands on;
//! - `guard+limiter/generated_key`: the path of the targets (median ≤ 250 ns);
//! - `guard+limiter/strict_window`: the first row with a strict window
//!   (`Quota::strict`, 100,000 per millisecond: never used up, thousands of admissions in
//!   each key's log) instead of GCRA;
//! - `guard+limiter/opaque_key`: a key such as `openssl rand -base64 32`, looked up by
//!   its digest instead of its key id;
//! - `guard/generated_key`: without the rate limit, to show the limiter's share;
//! - `guard+limiter+failed_attempts/generated_key`: the production setup of the examples,
//!   which also reads the client address and checks its failures before the lookup;
//! - `no_guard/client_addr`: the floor of the previous one, whose requests carry the
//!   client address in their extensions;
//! - `guard+limiter/jwt_hs256` and `guard+limiter/jwt_eddsa` (with `--features jwt`): the
//!   same guard, registry and limiter, also taking JWTs, admitting an HS256 or an EdDSA
//!   access token from `Authorization: Bearer` (signature, claims, principal from claims).
//! - `guard+limiter+sqlite/generated_key` (feature `sqlite`): the first row with the SQL
//!   registry on an SQLite file instead of the in-memory one, its cache warm (what almost
//!   every request of a running service finds).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput};
use http::StatusCode;
use keygate::{
    ApiKeyGuard, RateLimit,
    limit::{InMemoryRateLimit, Quota, Tiers},
};
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
    let mut group = c.benchmark_group("admitted");
    group.throughput(Throughput::Elements(1));

    bench_calls(
        &mut group,
        BenchmarkId::from_parameter("no_guard"),
        inner,
        || request(Some(&keys.generated)),
    );

    for (name, key) in [
        ("generated_key", &keys.generated),
        ("opaque_key", &keys.opaque),
    ] {
        bench_calls(
            &mut group,
            BenchmarkId::new("guard+limiter", name),
            || {
                let mut service = guard(&registry, Stages::limited()).layer(inner());
                expect_status(&mut service, request(Some(key)), StatusCode::OK);
                service
            },
            || request(Some(key)),
        );
    }

    bench_calls(
        &mut group,
        BenchmarkId::new("guard+limiter", "strict_window"),
        || {
            let strict = Quota::strict(NonZeroU32::new(100_000).unwrap(), Duration::from_millis(1));
            let limit = InMemoryRateLimit::new(Tiers::new(strict.unwrap()));
            let guard = ApiKeyGuard::builder()
                .registry(Arc::clone(&registry))
                .rate_limit(RateLimit::new(limit))
                .build()
                .unwrap();
            let mut service = guard.layer(inner());
            expect_status(&mut service, request(Some(&keys.generated)), StatusCode::OK);
            service
        },
        || request(Some(&keys.generated)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::new("guard", "generated_key"),
        || {
            let mut service = guard(&registry, Stages::guard_only()).layer(inner());
            expect_status(&mut service, request(Some(&keys.generated)), StatusCode::OK);
            service
        },
        || request(Some(&keys.generated)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::new("guard+limiter+failed_attempts", "generated_key"),
        || {
            let stages = Stages::limited().failed_attempts(failed_attempt_limiter(false));
            let mut service = guard(&registry, stages).layer(inner());
            let request = request_from_client(Some(&keys.generated));
            expect_status(&mut service, request, StatusCode::OK);
            service
        },
        || request_from_client(Some(&keys.generated)),
    );

    bench_calls(
        &mut group,
        BenchmarkId::new("no_guard", "client_addr"),
        inner,
        || request_from_client(Some(&keys.generated)),
    );

    #[cfg(feature = "jwt")]
    jwt::bench(&mut group, &registry);
    #[cfg(feature = "sqlite")]
    sqlite(&mut group);

    group.finish();
}

/// The admitted path with a token instead of a key.
#[cfg(feature = "jwt")]
mod jwt {
    use std::{sync::Arc, time::Duration};

    use criterion::{BenchmarkGroup, BenchmarkId, measurement::WallTime};
    use http::{Request, StatusCode};
    use keygate::{
        ApiKeyGuard, InMemoryRegistry, RateLimit,
        jwt::{HmacSecret, JwtIssuer, JwtKeySet, JwtVerifier, SigningKey, VerifyingKey},
        limit::InMemoryRateLimit,
    };
    use serde_json::{Map, json};
    use tower::Layer as _;

    use crate::{
        bench_calls,
        fixtures::{expect_status, inner, request, tiers},
    };

    const ED_PRIVATE: &[u8] = include_bytes!("../../src/jwt/testdata/ed25519.pem");
    const ED_PUBLIC: &[u8] = include_bytes!("../../src/jwt/testdata/ed25519.pub.pem");

    /// [`request`] with `Authorization: Bearer <token>` instead of a key.
    fn bearer(token: &str) -> Request<()> {
        let mut request = request(None);
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        request
    }

    pub(crate) fn bench(
        group: &mut BenchmarkGroup<'_, WallTime>,
        registry: &Arc<InMemoryRegistry>,
    ) {
        let secret = HmacSecret::new("a-bench-secret-of-at-least-32-bytes-long!!").unwrap();
        let ed_keys =
            JwtKeySet::new([VerifyingKey::ed25519_pem(ED_PUBLIC).unwrap().with_kid("ed")]);
        let ed_issuer = JwtIssuer::new(SigningKey::ed25519_pem(ED_PRIVATE).unwrap()).key_id("ed");
        let cases = [
            (
                "jwt_hs256",
                JwtIssuer::hs256(&secret),
                JwtVerifier::hs256(&secret).build(),
            ),
            (
                "jwt_eddsa",
                ed_issuer,
                JwtVerifier::builder(ed_keys).build(),
            ),
        ];
        for (name, issuer, verifier) in cases {
            // Claims as a login would give them.
            let claims = json!({"scope": "packs:read packs:write", "username": "alice"});
            let token = issuer
                .access_ttl(Duration::from_secs(3600))
                .access(
                    "user-15b8b56067c0e936",
                    claims.as_object().cloned().unwrap_or_else(Map::new),
                )
                .unwrap()
                .expose_secret()
                .to_owned();
            bench_calls(
                group,
                BenchmarkId::new("guard+limiter", name),
                || {
                    let guard = ApiKeyGuard::builder()
                        .registry(Arc::clone(registry))
                        .jwt(verifier)
                        .rate_limit(RateLimit::new(InMemoryRateLimit::new(tiers())))
                        .build()
                        .unwrap();
                    let mut service = guard.layer(inner());
                    expect_status(&mut service, bearer(&token), StatusCode::OK);
                    service
                },
                || bearer(&token),
            );
        }
    }
}

/// The admitted path with an [`SqlRegistry`](keygate::sql::SqlRegistry) on an SQLite
/// file, its cache warm.
#[cfg(feature = "sqlite")]
fn sqlite(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    use std::sync::Arc;

    use keygate::{KeyGrant, KeyLookup, KeyRegistry, sql::SqlRegistry};

    // The registry's background task (last use, written every few seconds) runs here.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let (registry, key) = runtime.block_on(async {
        let registry = Arc::new(SqlRegistry::connect(&url).await.unwrap());
        let issued = registry
            .issue(KeyGrant::new("coordinator-1").workspaces(["ws-1"]))
            .await
            .unwrap();
        // The cache warm: lookups are answered without a query.
        registry.find_by_id(&issued.record.key_id).await.unwrap();
        (registry, issued.key.expose_secret().to_owned())
    });
    bench_calls(
        group,
        BenchmarkId::new("guard+limiter+sqlite", "generated_key"),
        || {
            let mut service = guard(&registry, Stages::limited()).layer(inner());
            expect_status(&mut service, request(Some(&key)), StatusCode::OK);
            service
        },
        || request(Some(&key)),
    );
    drop(registry);
    drop(runtime);
    let _ = std::fs::remove_dir_all(&dir);
}
