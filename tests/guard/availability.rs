//! Backends that fail, or answer later: a registry outage is 503 `auth_unavailable`
//! (fail closed, never 401), and a registry that answers later decides the same.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use http::header::RETRY_AFTER;
use keygate::{
    ApiKey, ApiKeyGuard, BackendFuture, InMemoryRegistry, KeyDigest, KeyGrant, KeyId, KeyLookup,
    RegistryError,
    audit::{AuditEvent, MemorySink, Outcome},
    registry::LookupFuture,
};

use crate::{app, get, opaque_key, support::oneshot, tampered, unregistered_key};

/// A registry that is down: every operation fails with `Unavailable`, at once or after
/// `delay`.
#[derive(Debug, Default)]
pub(crate) struct FailingRegistry {
    pub(crate) delay: Option<Duration>,
}

impl FailingRegistry {
    fn outage<T: Send + 'static>(&self) -> BackendFuture<'static, Result<T, RegistryError>> {
        let error = || RegistryError::Unavailable("connection refused (test outage)".into());
        match self.delay {
            None => BackendFuture::ready(Err(error())),
            Some(delay) => BackendFuture::new(async move {
                tokio::time::sleep(delay).await;
                Err(error())
            }),
        }
    }
}

impl KeyLookup for FailingRegistry {
    fn find_by_id(&self, _: &KeyId) -> LookupFuture {
        self.outage()
    }
    fn find_by_digest(&self, _: &KeyDigest) -> LookupFuture {
        self.outage()
    }
}

/// An in-memory registry whose lookups answer only after `delay`, as a network registry
/// would: the guard has to finish its decision in the response future.
#[derive(Debug)]
struct DelayedRegistry {
    inner: Arc<InMemoryRegistry>,
    delay: Duration,
}

impl KeyLookup for DelayedRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        let (inner, key_id, delay) = (Arc::clone(&self.inner), *key_id, self.delay);
        BackendFuture::new(async move {
            tokio::time::sleep(delay).await;
            inner.find_by_id(&key_id).await
        })
    }
    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        let (inner, digest, delay) = (Arc::clone(&self.inner), *digest, self.delay);
        BackendFuture::new(async move {
            tokio::time::sleep(delay).await;
            inner.find_by_digest(&digest).await
        })
    }
}

// ---- registry or limit backend down (fail closed): 503 auth_unavailable ----

#[tokio::test]
async fn registry_down_is_503_auth_unavailable_never_401() {
    for delay in [None, Some(Duration::from_millis(20))] {
        let audit = MemorySink::new();
        let guard = ApiKeyGuard::builder()
            .registry(FailingRegistry { delay })
            .audit(audit.clone())
            .build()
            .unwrap();
        let app = app(guard);
        let with_key = |key: &str| get("/whoami").header("x-api-key", key);

        // Keys that need a lookup, by id and by digest.
        for key in [unregistered_key(), opaque_key()] {
            let reply = oneshot(app.clone(), with_key(&key)).await;
            reply.assert_refusal(503, "auth_unavailable");
            assert_eq!(reply.headers[RETRY_AFTER], "5", "{delay:?}");
            let event = audit.events().pop().unwrap();
            assert_eq!(event.outcome, Outcome::Refused);
            assert_eq!(event.reason.as_deref(), Some("auth_unavailable"));
        }
        // What is refused before any lookup is refused for what it is.
        oneshot(app.clone(), get("/whoami"))
            .await
            .assert_refusal(401, "missing_credentials");
        oneshot(app.clone(), with_key(&tampered(&unregistered_key())))
            .await
            .assert_refusal(401, "invalid_credentials");
    }

    // The wait is configurable, in whole seconds rounded up.
    let guard = ApiKeyGuard::builder()
        .registry(FailingRegistry::default())
        .unavailable_retry_after(Duration::from_millis(1500))
        .build()
        .unwrap();
    let reply = oneshot(app(guard), get("/whoami").header("x-api-key", opaque_key())).await;
    reply.assert_refusal(503, "auth_unavailable");
    assert_eq!(reply.headers[RETRY_AFTER], "2");
}

#[tokio::test]
async fn asynchronous_registry_admits_and_refuses_correctly() {
    let inner = Arc::new(InMemoryRegistry::new());
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .registry(DelayedRegistry {
            inner: Arc::clone(&inner),
            delay: Duration::from_millis(15),
        })
        .audit(audit.clone())
        .build()
        .unwrap();
    let app = app(guard);
    let (valid, expired, revoked) = crate::valid_expired_revoked(
        &inner,
        KeyGrant::new("coordinator-1")
            .workspaces(["w"])
            .tier("gold"),
    )
    .await;
    let opaque = opaque_key();
    inner
        .insert_key(
            &ApiKey::new(opaque.clone()).unwrap(),
            KeyGrant::new("legacy"),
        )
        .unwrap();

    // All at once, several times over: each answer must belong to its own request.
    let cases: Vec<(String, Result<&str, &str>)> = (0..4)
        .flat_map(|_| {
            [
                (valid.key.expose_secret().to_owned(), Ok("coordinator-1")),
                (opaque.clone(), Ok("legacy")),
                (unregistered_key(), Err("invalid_credentials")),
                (opaque_key(), Err("invalid_credentials")),
                (
                    expired.key.expose_secret().to_owned(),
                    Err("expired_credentials"),
                ),
                (
                    revoked.key.expose_secret().to_owned(),
                    Err("revoked_credentials"),
                ),
                (
                    tampered(valid.key.expose_secret()),
                    Err("invalid_credentials"),
                ),
            ]
        })
        .collect();
    let replies = join_all(
        cases
            .iter()
            .map(|(key, _)| oneshot(app.clone(), get("/whoami").header("x-api-key", key))),
    )
    .await;
    for ((_, expected), reply) in cases.iter().zip(replies) {
        match expected {
            Ok(principal) => {
                reply.assert_ok();
                assert_eq!(reply.body["id"], *principal);
            }
            Err(reason) => {
                reply.assert_refusal(401, reason);
            }
        }
    }

    // Every decision was audited once, admitted ones with their principal.
    let events = audit.events();
    assert_eq!(events.len(), cases.len());
    let admitted: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.outcome == Outcome::Admitted)
        .collect();
    assert_eq!(admitted.len(), 8);
    assert!(
        admitted
            .iter()
            .all(|e| matches!(e.principal_id.as_deref(), Some("coordinator-1" | "legacy")))
    );
}

/// A decision that waits for the registry keeps what the route asks of the key: its
/// scopes (checked before anything is counted) and its cost, as a decision taken at once
/// does.
#[tokio::test]
async fn a_decision_waiting_for_the_registry_keeps_the_routes_scopes_and_cost() {
    use std::num::NonZeroU32;

    use keygate::{
        KeyRegistry as _, RateLimit,
        guard::Route,
        limit::{Clock, InMemoryRateLimit, Quota, Tiers},
    };

    let inner = Arc::new(InMemoryRegistry::new());
    let quota = Quota::per_minute(NonZeroU32::new(20).unwrap());
    let guard = ApiKeyGuard::builder()
        .registry(DelayedRegistry {
            inner: Arc::clone(&inner),
            delay: Duration::from_millis(5),
        })
        .rate_limit(RateLimit::new(
            InMemoryRateLimit::new(Tiers::new(quota)).with_clock(Clock::manual()),
        ))
        .route(
            Route::exact("/whoami")
                .scope("jobs:read")
                .cost(NonZeroU32::new(7).unwrap()),
        )
        .build()
        .unwrap();
    let app = app(guard);
    let issue = |grant| async {
        let issued = inner.issue(grant).await.unwrap();
        issued.key.expose_secret().to_owned()
    };
    let reader = issue(KeyGrant::new("reader").scopes(["jobs:read"])).await;
    let other = issue(KeyGrant::new("other").scopes(["jobs:write"])).await;

    // Without the scope: 403, however often, and nothing counted.
    for _ in 0..5 {
        oneshot(app.clone(), get("/whoami").header("x-api-key", &other))
            .await
            .assert_refusal(403, "insufficient_scope");
    }
    // With it: each request costs 7 of 20.
    for remaining in [13, 6] {
        let reply = oneshot(app.clone(), get("/whoami").header("x-api-key", &reader)).await;
        reply.assert_ok();
        let rate_limit = reply.headers["ratelimit"].to_str().unwrap();
        assert!(
            rate_limit.starts_with(&format!("\"default\";r={remaining};")),
            "{rate_limit}"
        );
    }
    oneshot(app.clone(), get("/whoami").header("x-api-key", &reader))
        .await
        .assert_refusal(429, "rate_limited");
}
