//! The registry contract: what every `KeyRegistry` must do, the same checks for every
//! implementation. Each check gets a fresh, empty registry.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use keygate::{
    ApiKey, KeyDigest, KeyGrant, KeyId, KeyLookup, KeyPrefix, KeyRecord, KeyRegistry, KeyStatus,
    KeyUpdate, RegistryError,
};
use time::OffsetDateTime;

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn status(record: &KeyRecord) -> KeyStatus {
    record.status_at(now())
}

/// A record by id, which must exist.
async fn by_id(registry: &impl KeyRegistry, key_id: &KeyId) -> Arc<KeyRecord> {
    registry
        .find_by_id(key_id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("key {key_id} not found"))
}

/// Generated keys are found by id, opaque keys by digest; what was granted is what is
/// read back; unknown ids and digests are `None`, never an error.
pub(crate) async fn lookups_by_id_and_digest(registry: &impl KeyRegistry) {
    let expires = now() + time::Duration::days(30);
    let issued = registry
        .issue(
            KeyGrant::new("coordinator-1")
                .workspaces(["ws-a", "ws-b"])
                .scopes(["jobs:write", "jobs:read"])
                .tier("gold")
                .label("ci runner")
                .expires_at(expires)
                .prefix(KeyPrefix::new("cx").unwrap()),
        )
        .await
        .unwrap();
    let found = by_id(registry, &issued.record.key_id).await;
    assert!(found.digest.ct_eq(&issued.key.digest()));
    assert_eq!(found.principal_id, "coordinator-1");
    assert_eq!(found.workspaces, ["ws-a", "ws-b"]);
    assert_eq!(found.scopes, ["jobs:write", "jobs:read"]);
    assert_eq!(found.tier, "gold");
    assert_eq!(found.label, "ci runner");
    assert_eq!(found.prefix.as_ref().map(KeyPrefix::as_str), Some("cx"));
    assert_eq!(found.revoked_at, None);
    let stored = found.expires_at.unwrap();
    assert!((stored - expires).abs() < time::Duration::milliseconds(1));
    assert!((found.created_at - issued.record.created_at).abs() < time::Duration::seconds(1));
    assert_eq!(status(&found), KeyStatus::Active);
    // Found by digest too (twice: from the store, then possibly from a cache).
    for _ in 0..2 {
        let by_digest = registry
            .find_by_digest(&issued.key.digest())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(by_digest.key_id, issued.record.key_id);
    }

    let opaque = ApiKey::new("yPn5Z0sS9tq0u7Q2l4rX1vWcJm8kE3fHbGdAaNoIiLM=").unwrap();
    let record = registry
        .register_key(&opaque, KeyGrant::new("svc"))
        .await
        .unwrap();
    assert_eq!(record.prefix, None);
    let found = registry
        .find_by_digest(&opaque.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key_id, record.key_id);
    assert_eq!(found.principal_id, "svc");

    let unknown = KeyId::generate().unwrap();
    assert!(registry.find_by_id(&unknown).await.unwrap().is_none());
    let made_up = KeyDigest::of(b"a key nobody registered");
    assert!(registry.find_by_digest(&made_up).await.unwrap().is_none());
}

/// A key id or digest is registered once.
pub(crate) async fn duplicates_are_refused(registry: &impl KeyRegistry) {
    let key = ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx").unwrap();
    let record = KeyRecord::new(KeyId::generate().unwrap(), key.digest(), "p");
    registry.register(record.clone()).await.unwrap();
    assert!(matches!(
        registry.register(record.clone()).await,
        Err(RegistryError::Duplicate)
    ));
    let same_digest = KeyRecord::new(KeyId::generate().unwrap(), key.digest(), "q");
    assert!(matches!(
        registry.register(same_digest).await,
        Err(RegistryError::Duplicate)
    ));
    let same_id = KeyRecord::new(record.key_id, KeyDigest::of(b"another key"), "q");
    assert!(matches!(
        registry.register(same_id).await,
        Err(RegistryError::Duplicate)
    ));
    assert!(matches!(
        registry.register_key(&key, KeyGrant::new("p")).await,
        Err(RegistryError::Duplicate)
    ));
}

/// A revoked key is revoked for every lookup at once, also one answered from a cache; an
/// earlier revocation time is kept.
pub(crate) async fn revocation(registry: &impl KeyRegistry) {
    let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
    let key_id = issued.record.key_id;
    // Looked up first, so that a cache holds the active record.
    assert_eq!(
        by_id(registry, &key_id).await.status_at(now()),
        KeyStatus::Active
    );
    let digest = issued.key.digest();
    let _ = registry.find_by_digest(&digest).await.unwrap();

    let at = now() - time::Duration::seconds(5);
    let revoked = registry.revoke(&key_id, at).await.unwrap();
    assert_eq!(status(&revoked), KeyStatus::Revoked);
    assert_eq!(
        by_id(registry, &key_id).await.status_at(now()),
        KeyStatus::Revoked
    );
    let found = registry.find_by_digest(&digest).await.unwrap().unwrap();
    assert_eq!(status(&found), KeyStatus::Revoked);

    // Revoking again later keeps the first time.
    let again = registry.revoke(&key_id, now()).await.unwrap();
    let kept = again.revoked_at.unwrap();
    assert!((kept - at).abs() < time::Duration::milliseconds(1));

    let unknown = KeyId::generate().unwrap();
    assert!(matches!(
        registry.revoke(&unknown, now()).await,
        Err(RegistryError::UnknownKey(id)) if id == unknown
    ));
}

/// An expiry set (or cleared) applies to the next lookup.
pub(crate) async fn expiry(registry: &impl KeyRegistry) {
    let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
    let key_id = issued.record.key_id;
    assert_eq!(
        by_id(registry, &key_id).await.status_at(now()),
        KeyStatus::Active
    );

    let past = now() - time::Duration::minutes(1);
    let expired = registry.set_expiry(&key_id, Some(past)).await.unwrap();
    assert_eq!(status(&expired), KeyStatus::Expired);
    assert_eq!(
        by_id(registry, &key_id).await.status_at(now()),
        KeyStatus::Expired
    );

    let cleared = registry.set_expiry(&key_id, None).await.unwrap();
    assert_eq!(cleared.expires_at, None);
    assert_eq!(
        by_id(registry, &key_id).await.status_at(now()),
        KeyStatus::Active
    );

    assert!(matches!(
        registry.set_expiry(&KeyId::generate().unwrap(), None).await,
        Err(RegistryError::UnknownKey(_))
    ));
}

/// Rotation issues a successor with the same grant and lets the old key work for the
/// overlap only; a revoked key is not rotated.
pub(crate) async fn rotation(registry: &impl KeyRegistry) {
    let first = registry
        .issue(
            KeyGrant::new("p")
                .workspaces(["ws-1"])
                .scopes(["jobs"])
                .tier("gold")
                .prefix(KeyPrefix::new("cx").unwrap()),
        )
        .await
        .unwrap();
    let old_id = first.record.key_id;
    let rotated = registry
        .rotate(&old_id, Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(rotated.record.key_id, old_id);
    assert!(rotated.key.expose_secret().starts_with("cx_"));
    let new = by_id(registry, &rotated.record.key_id).await;
    assert_eq!(
        (
            new.workspaces.as_slice(),
            new.scopes.as_slice(),
            new.tier.as_str()
        ),
        (&["ws-1".to_owned()][..], &["jobs".to_owned()][..], "gold")
    );
    let old = by_id(registry, &old_id).await;
    assert_eq!(status(&old), KeyStatus::Active);
    let ends = old.expires_at.unwrap();
    assert!(ends <= now() + time::Duration::seconds(61));
    assert_eq!(
        old.status_at(now() + time::Duration::seconds(61)),
        KeyStatus::Expired
    );
    assert_eq!(registry.list_keys("p").await.unwrap().len(), 2);

    registry.revoke(&old_id, now()).await.unwrap();
    assert!(matches!(
        registry.rotate(&old_id, Duration::from_secs(60)).await,
        Err(RegistryError::InactiveKey(id)) if id == old_id
    ));
    assert!(matches!(
        registry
            .rotate(&KeyId::generate().unwrap(), Duration::from_secs(60))
            .await,
        Err(RegistryError::UnknownKey(_))
    ));
}

/// An update changes what it names, leaves the rest, and applies to the next lookup.
pub(crate) async fn update(registry: &impl KeyRegistry) {
    let issued = registry
        .issue(
            KeyGrant::new("p")
                .workspaces(["ws-1"])
                .scopes(["jobs"])
                .label("kept"),
        )
        .await
        .unwrap();
    let key_id = issued.record.key_id;
    let _ = by_id(registry, &key_id).await;

    let updated = registry
        .update(
            &key_id,
            KeyUpdate::new().scopes(["jobs", "admin"]).tier("gold"),
        )
        .await
        .unwrap();
    assert_eq!(updated.scopes, ["jobs", "admin"]);
    assert_eq!(updated.tier, "gold");
    assert_eq!(updated.workspaces, ["ws-1"]);
    assert_eq!(updated.label, "kept");
    let found = by_id(registry, &key_id).await;
    assert_eq!(found.scopes, ["jobs", "admin"]);
    assert_eq!(found.tier, "gold");

    let found = registry
        .update(&key_id, KeyUpdate::new().workspaces(Vec::<String>::new()))
        .await
        .unwrap();
    assert!(found.workspaces.is_empty());
    let by_digest = registry
        .find_by_digest(&issued.key.digest())
        .await
        .unwrap()
        .unwrap();
    assert!(by_digest.workspaces.is_empty());
    assert_eq!(by_digest.scopes, ["jobs", "admin"]);

    assert!(matches!(
        registry
            .update(&KeyId::generate().unwrap(), KeyUpdate::new().tier("x"))
            .await,
        Err(RegistryError::UnknownKey(_))
    ));
}

/// A deleted key is gone for every lookup and listing; its key and id can be registered
/// again.
pub(crate) async fn delete(registry: &impl KeyRegistry) {
    let issued = registry.issue(KeyGrant::new("gone")).await.unwrap();
    let kept = registry.issue(KeyGrant::new("stays")).await.unwrap();
    let key_id = issued.record.key_id;
    let _ = by_id(registry, &key_id).await;
    let _ = registry.find_by_digest(&issued.key.digest()).await.unwrap();

    let deleted = registry.delete(&key_id).await.unwrap();
    assert_eq!(deleted.key_id, key_id);
    assert_eq!(deleted.principal_id, "gone");
    assert!(registry.find_by_id(&key_id).await.unwrap().is_none());
    assert!(
        registry
            .find_by_digest(&issued.key.digest())
            .await
            .unwrap()
            .is_none()
    );
    assert!(registry.list_keys("gone").await.unwrap().is_empty());
    assert_eq!(registry.list_principals().await.unwrap(), ["stays"]);
    assert!(matches!(
        registry.delete(&key_id).await,
        Err(RegistryError::UnknownKey(id)) if id == key_id
    ));
    assert!(
        registry
            .find_by_id(&kept.record.key_id)
            .await
            .unwrap()
            .is_some()
    );

    registry
        .register_key(&issued.key, KeyGrant::new("back"))
        .await
        .unwrap();
    assert_eq!(by_id(registry, &key_id).await.principal_id, "back");
}

/// Principals are listed sorted, each once, whatever the status of their keys.
pub(crate) async fn list_principals(registry: &impl KeyRegistry) {
    assert!(registry.list_principals().await.unwrap().is_empty());
    for principal in ["zeta", "alpha", "Mid", "alpha", "beta"] {
        registry.issue(KeyGrant::new(principal)).await.unwrap();
    }
    let revoked = registry.issue(KeyGrant::new("omega")).await.unwrap();
    registry
        .revoke(&revoked.record.key_id, now())
        .await
        .unwrap();
    assert_eq!(
        registry.list_principals().await.unwrap(),
        ["Mid", "alpha", "beta", "omega", "zeta"]
    );
    let alpha = registry.list_keys("alpha").await.unwrap();
    assert_eq!(alpha.len(), 2);
    assert!(alpha.iter().all(|record| record.principal_id == "alpha"));
    assert!(registry.list_keys("nobody").await.unwrap().is_empty());
}

/// Many tasks registering, looking up and revoking at once: every key is registered
/// once, and every revocation holds.
pub(crate) async fn concurrency<R: KeyRegistry>(registry: Arc<R>) {
    const TASKS: usize = 32;
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let registry = Arc::clone(&registry);
            tokio::spawn(async move {
                let principal = format!("p{}", i % 4);
                let issued = registry.issue(KeyGrant::new(principal)).await.unwrap();
                let key_id = issued.record.key_id;
                assert!(registry.find_by_id(&key_id).await.unwrap().is_some());
                if i % 2 == 0 {
                    registry.revoke(&key_id, now()).await.unwrap();
                } else {
                    registry
                        .update(&key_id, KeyUpdate::new().scopes([format!("s{i}")]))
                        .await
                        .unwrap();
                }
                (i, key_id)
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for task in tasks {
        let (i, key_id) = task.await.unwrap();
        assert!(ids.insert(key_id));
        let found = by_id(&*registry, &key_id).await;
        if i % 2 == 0 {
            assert_eq!(status(&found), KeyStatus::Revoked);
        } else {
            assert_eq!(found.scopes, [format!("s{i}")]);
            assert_eq!(status(&found), KeyStatus::Active);
        }
    }
    let mut listed = 0;
    for principal in registry.list_principals().await.unwrap() {
        listed += registry.list_keys(&principal).await.unwrap().len();
    }
    assert_eq!(listed, TASKS);
    assert_eq!(
        registry.list_principals().await.unwrap(),
        ["p0", "p1", "p2", "p3"]
    );
}

/// A registry whose store is down: lookups of keys it has not cached, and every change,
/// fail with `Unavailable` (the guard's 503), never "not found" (401).
#[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
pub(crate) async fn unavailable_while_down(registry: &impl KeyRegistry) {
    let unavailable = |result: Result<_, RegistryError>| {
        assert!(
            matches!(result, Err(RegistryError::Unavailable(_))),
            "expected Unavailable"
        );
    };
    unavailable(
        registry
            .find_by_id(&KeyId::generate().unwrap())
            .await
            .map(drop),
    );
    unavailable(
        registry
            .find_by_digest(&KeyDigest::of(b"any key"))
            .await
            .map(drop),
    );
    unavailable(registry.issue(KeyGrant::new("p")).await.map(drop));
    unavailable(
        registry
            .revoke(&KeyId::generate().unwrap(), now())
            .await
            .map(drop),
    );
    unavailable(registry.list_principals().await.map(drop));
}

/// One `#[tokio::test]` per check, each on a registry from `$fresh` (an async expression
/// that gives `(registry, whatever must live as long)`).
macro_rules! contract_tests {
    ($fresh:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lookups_by_id_and_digest() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::lookups_by_id_and_digest(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn duplicates_are_refused() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::duplicates_are_refused(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn revocation() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::revocation(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn expiry() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::expiry(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn rotation() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::rotation(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn update() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::update(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn delete() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::delete(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn list_principals() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::list_principals(&registry).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrency() {
            let (registry, _keep) = $fresh.await;
            $crate::contract::concurrency(std::sync::Arc::new(registry)).await;
        }
    };
}

pub(crate) use contract_tests;
