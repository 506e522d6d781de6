//! Admission and the key lifecycle: the principal the handler sees, several keys of one
//! principal, rotation, the last use, revocation.

use std::time::Duration;

use http::header::WWW_AUTHENTICATE;
use keygate::{ApiKey, ApiKeyGuard, KeyGrant, KeyLookup, KeyPrefix, KeyRegistry};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::{
    Fixture, app, opaque_key,
    support::{self, TestServer, send},
};

#[tokio::test]
async fn valid_key_is_admitted_and_the_handler_sees_its_principal() {
    let f = Fixture::new(|b| b);
    let issued = f
        .issue(
            KeyGrant::new("coordinator-1")
                .workspaces(["ws-a", "ws-b"])
                .scopes(["jobs:write", "jobs:read"])
                .tier("gold"),
        )
        .await;
    let reply = f.get_with_key("/whoami", issued.key.expose_secret()).await;
    assert!(!reply.headers.contains_key(WWW_AUTHENTICATE));
    reply.assert_ok();
    assert_eq!(
        reply.body,
        json!({
            "id": "coordinator-1",
            "key_id": issued.record.key_id.as_str(),
            "workspaces": ["ws-a", "ws-b"],
            "scopes": ["jobs:write", "jobs:read"],
            "tier": "gold",
        })
    );
    assert_eq!(f.registry.lookups_by_id(), 1);
}

#[tokio::test]
async fn opaque_key_given_to_the_builder_is_admitted() {
    let key = opaque_key();
    let guard = ApiKeyGuard::builder()
        .key(
            ApiKey::new(key.clone()).unwrap(),
            KeyGrant::new("coordinator").workspaces(["render"]),
        )
        .build()
        .unwrap();
    let app = app(guard);
    let with_key = |key: &str| crate::get("/whoami").header("x-api-key", key);
    let reply = support::oneshot(app.clone(), with_key(&key)).await;
    reply.assert_ok();
    let body: &Value = &reply.body;
    assert_eq!(body["id"], "coordinator");
    assert_eq!(body["workspaces"], json!(["render"]));
    assert_eq!(body["tier"], "default");
    assert_eq!(body["key_id"].as_str().unwrap().len(), 12);
    support::oneshot(app, with_key(&opaque_key()))
        .await
        .assert_refusal(401, "invalid_credentials");
}

#[tokio::test]
async fn several_active_keys_of_one_principal_are_admitted() {
    let f = Fixture::new(|b| b);
    let mut keys = Vec::new();
    for label in ["laptop", "ci", "cron"] {
        keys.push(
            f.issue(
                KeyGrant::new("coordinator-1")
                    .label(label)
                    .workspaces(["w"]),
            )
            .await,
        );
    }
    assert_eq!(
        f.registry.list_keys("coordinator-1").await.unwrap().len(),
        3
    );
    for issued in &keys {
        let reply = f.get_with_key("/whoami", issued.key.expose_secret()).await;
        reply.assert_ok();
        assert_eq!(reply.body["id"], "coordinator-1");
        assert_eq!(reply.body["key_id"], issued.record.key_id.as_str());
    }
    // Revoking one leaves the others working.
    f.registry
        .revoke(&keys[1].record.key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    f.get_with_key("/whoami", keys[1].key.expose_secret())
        .await
        .assert_refusal(401, "revoked_credentials");
    for issued in [&keys[0], &keys[2]] {
        f.get_with_key("/whoami", issued.key.expose_secret())
            .await
            .assert_ok();
    }
}

#[tokio::test]
async fn rotation_keeps_both_keys_for_the_overlap_then_the_old_one_expires() {
    let f = Fixture::new(|b| b);
    let old = f
        .issue(KeyGrant::new("coordinator-1").scopes(["jobs"]).tier("gold"))
        .await;
    let overlap = Duration::from_secs(2);
    let new = f
        .registry
        .rotate(&old.record.key_id, overlap)
        .await
        .unwrap();
    assert_ne!(new.record.key_id, old.record.key_id);

    // During the overlap both keys work, as the same principal.
    for issued in [&old, &new] {
        let reply = f.get_with_key("/whoami", issued.key.expose_secret()).await;
        reply.assert_ok();
        let body = &reply.body;
        assert_eq!(body["id"], "coordinator-1");
        assert_eq!(body["tier"], "gold");
        assert_eq!(body["scopes"], json!(["jobs"]));
        assert_eq!(body["key_id"], issued.record.key_id.as_str());
    }

    // After the overlap, the old key has expired; the new one works.
    let ends = f
        .registry
        .find_by_id(&old.record.key_id)
        .await
        .unwrap()
        .unwrap()
        .expires_at
        .unwrap();
    let remaining = ends - OffsetDateTime::now_utc();
    assert!(remaining <= time::Duration::seconds(2), "{remaining}");
    let wait = Duration::try_from(remaining).unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    f.get_with_key("/whoami", old.key.expose_secret())
        .await
        .assert_refusal(401, "expired_credentials");
    f.get_with_key("/whoami", new.key.expose_secret())
        .await
        .assert_ok();
}

#[tokio::test]
async fn an_admitted_request_notes_the_keys_last_use() {
    let f = Fixture::new(|b| b);
    let (key, key_id) = f.key().await;
    let last_use = || async {
        let keys = f.registry.list_keys("p").await.unwrap();
        let record = keys.iter().find(|r| r.key_id == key_id).unwrap();
        record.last_used_at
    };
    assert_eq!(last_use().await, None, "never used yet");

    let before = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    for _ in 0..3 {
        f.get_with_key("/whoami", &key).await.assert_ok();
    }
    let after = OffsetDateTime::now_utc();
    let used = last_use().await.expect("the last use is noted");
    assert!(
        before <= used && used <= after,
        "{before} <= {used} <= {after}"
    );

    // A refused key is not "used".
    let (unused, unused_id) = f.key().await;
    f.registry
        .revoke(&unused_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    f.get_with_key("/whoami", &unused)
        .await
        .assert_refusal(401, "revoked_credentials");
    let keys = f.registry.list_keys("p").await.unwrap();
    let record = keys.iter().find(|r| r.key_id == unused_id).unwrap();
    assert_eq!(record.last_used_at, None);
}

#[tokio::test]
async fn rotation_keeps_the_key_prefix() {
    let f = Fixture::new(|b| b);
    let old = f
        .issue(KeyGrant::new("coordinator-1").prefix(KeyPrefix::new("cx").unwrap()))
        .await;
    assert!(old.key.expose_secret().starts_with("cx_"));
    let new = f
        .registry
        .rotate(&old.record.key_id, Duration::from_secs(60))
        .await
        .unwrap();
    f.get_with_key("/whoami", new.key.expose_secret())
        .await
        .assert_ok();
    // Secret scanners look for the prefix a principal's keys were given.
    assert!(
        new.key.expose_secret().starts_with("cx_"),
        "successor lost its prefix"
    );
}

/// Over the wire: the next request reuses the kept-alive connection.
#[tokio::test]
async fn revocation_takes_effect_on_the_very_next_request() {
    let f = Fixture::new(|b| b);
    let (key, key_id) = f.key().await;
    let server = TestServer::start(f.app.clone()).await;
    // One client, so the next request reuses the kept-alive connection.
    for _ in 0..3 {
        send(server.get_with_key("/whoami", &key)).await.assert_ok();
    }
    f.registry
        .revoke(&key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    send(server.get_with_key("/whoami", &key))
        .await
        .assert_refusal(401, "revoked_credentials");
}

/// Across threads: while two threads serve requests through clones of one guard (the
/// in-memory registry, read without a lock), a key revoked on a third is refused on the
/// very next request, and the other thread's key keeps working.
#[test]
fn revocation_on_one_thread_is_seen_by_the_next_request_on_another() {
    use std::{
        convert::Infallible,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };

    use futures_util::FutureExt as _;
    use http::{Request, Response, StatusCode};
    use keygate::InMemoryRegistry;
    use tower::{Layer as _, Service, ServiceExt as _, service_fn};

    fn call<S>(service: &mut S, key: &str) -> (StatusCode, String)
    where
        S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
    {
        let request = Request::get("/jobs")
            .header("x-api-key", key)
            .body(())
            .unwrap();
        let response = async { service.ready().await?.call(request).await }
            .now_or_never()
            .expect("in memory: answered at once")
            .unwrap();
        (response.status(), response.into_body())
    }

    let registry = Arc::new(InMemoryRegistry::new());
    let issue = |principal: &str| {
        let (key, key_id) = ApiKey::generate(&KeyPrefix::default()).unwrap();
        registry.insert_key(&key, KeyGrant::new(principal)).unwrap();
        (key.expose_secret().to_owned(), key_id)
    };
    let (doomed, doomed_id) = issue("a");
    let (kept, _) = issue("b");
    let guard = ApiKeyGuard::builder()
        .registry(Arc::clone(&registry))
        .build()
        .unwrap();
    let service = guard.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(String::new()))
    }));
    let (revoked, stop) = (AtomicBool::new(false), AtomicBool::new(false));
    let served = AtomicUsize::new(0);

    std::thread::scope(|scope| {
        let (revoked, stop, served) = (&revoked, &stop, &served);
        let mut first = service.clone();
        let doomed = &doomed;
        let refused = scope.spawn(move || {
            loop {
                // Read before the request: once set, the revocation has returned.
                let after = revoked.load(Ordering::Acquire);
                let (status, body) = call(&mut first, doomed);
                if after {
                    return (status, body);
                }
                // Before: admitted, unless the revocation just landed.
                assert!(status == StatusCode::OK || body.contains("revoked_credentials"));
                served.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut second = service.clone();
        let kept = &kept;
        let other = scope.spawn(move || {
            while !stop.load(Ordering::Acquire) {
                assert_eq!(call(&mut second, kept).0, StatusCode::OK);
                served.fetch_add(1, Ordering::Relaxed);
            }
        });
        while served.load(Ordering::Relaxed) < 200 {
            std::thread::yield_now();
        }
        registry
            .revoke(&doomed_id, OffsetDateTime::now_utc())
            .now_or_never()
            .expect("in memory: answered at once")
            .unwrap();
        revoked.store(true, Ordering::Release);
        let (status, body) = refused.join().unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("revoked_credentials"), "{body}");
        stop.store(true, Ordering::Release);
        other.join().unwrap();
    });
    let mut service = service;
    assert_eq!(call(&mut service, &kept).0, StatusCode::OK);
}
