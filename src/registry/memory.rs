//! The in-memory registry.

use std::{
    collections::HashMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::SystemTime,
};

use foldhash::fast::RandomState;
use time::OffsetDateTime;

use super::{KeyLookup, KeyRecord, KeyRegistry, KeyUpdate, LookupFuture, RegistryError};
use crate::{BackendFuture, KeyDigest, KeyId};

/// A thread-safe registry kept in memory: the embedded default for one process.
///
/// Lookups are hash-map reads under a read lock: as fast with a million keys as with one
/// (see the `registry` benchmark). Answers are always ready, so the guard never allocates
/// a future for them.
#[derive(Debug, Default)]
pub struct InMemoryRegistry {
    tables: RwLock<Tables>,
    /// Tells live sessions about revocations, expiries, updates and deletions.
    #[cfg(feature = "session")]
    announcer: super::KeyAnnouncer,
}

/// The tables are hashed with foldhash (seeded per process) rather than `SipHash`: their
/// keys are key ids and SHA-256 digests that only registration inserts, so a caller
/// cannot fill them with colliding entries, and lookups are on the request path.
#[derive(Debug, Default)]
#[allow(
    clippy::struct_field_names,
    reason = "`by_` names the index each table is keyed by"
)]
struct Tables {
    by_id: HashMap<KeyId, Entry, RandomState>,
    by_digest: HashMap<KeyDigest, KeyId, RandomState>,
    by_principal: HashMap<String, Vec<KeyId>, RandomState>,
}

#[derive(Debug)]
struct Entry {
    record: Arc<KeyRecord>,
    /// Unix seconds of the last admission, 0 for never.
    last_used: AtomicI64,
}

impl InMemoryRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many keys are registered (of any status).
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Whether no key is registered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a record at once (the same as [`KeyRegistry::register`], without a future).
    ///
    /// # Errors
    ///
    /// [`RegistryError::Duplicate`] if a key with the record's id or digest is registered.
    pub fn insert(&self, record: KeyRecord) -> Result<(), RegistryError> {
        let mut tables = self.write();
        if tables.by_id.contains_key(&record.key_id)
            || tables.by_digest.contains_key(&record.digest)
        {
            return Err(RegistryError::Duplicate);
        }
        tables.by_digest.insert(record.digest, record.key_id);
        tables
            .by_principal
            .entry(record.principal_id.clone())
            .or_default()
            .push(record.key_id);
        let last_used = record
            .last_used_at
            .map_or(0, OffsetDateTime::unix_timestamp);
        tables.by_id.insert(
            record.key_id,
            Entry {
                record: Arc::new(record),
                last_used: AtomicI64::new(last_used),
            },
        );
        Ok(())
    }

    /// Registers `key` (made elsewhere, e.g. read from configuration) with what `grant`
    /// gives it, at once. A generated key keeps its key id; an opaque key gets a new one.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Key`] if `key` does not parse or a key id cannot be generated,
    /// [`RegistryError::Duplicate`] if the key is registered already.
    pub fn insert_key(
        &self,
        key: &crate::ApiKey,
        grant: crate::KeyGrant,
    ) -> Result<Arc<KeyRecord>, RegistryError> {
        let record = grant.record_for(key)?;
        self.insert(record.clone())?;
        Ok(Arc::new(record))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters here (every update is a single insert), so a poisoned lock is used as is.
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(
        &self,
        key_id: &KeyId,
        change: impl FnOnce(&mut KeyRecord),
    ) -> Result<Arc<KeyRecord>, RegistryError> {
        let mut tables = self.write();
        let entry = tables
            .by_id
            .get_mut(key_id)
            .ok_or(RegistryError::UnknownKey(*key_id))?;
        let mut record = KeyRecord::clone(&entry.record);
        change(&mut record);
        entry.record = Arc::new(record);
        let changed = Arc::clone(&entry.record);
        drop(tables);
        self.announce(key_id);
        Ok(changed)
    }

    /// Tells live sessions that `key_id` changed (after the change is visible).
    #[cfg_attr(not(feature = "session"), allow(clippy::unused_self))]
    fn announce(&self, key_id: &KeyId) {
        #[cfg(feature = "session")]
        self.announcer.announce(super::KeyChange::Key(*key_id));
        #[cfg(not(feature = "session"))]
        let _ = key_id;
    }

    fn snapshot(entry: &Entry) -> Arc<KeyRecord> {
        let last_used = entry.last_used.load(Ordering::Relaxed);
        if last_used == 0 {
            return Arc::clone(&entry.record);
        }
        let mut record = KeyRecord::clone(&entry.record);
        record.last_used_at = OffsetDateTime::from_unix_timestamp(last_used).ok();
        Arc::new(record)
    }
}

impl KeyRegistry for InMemoryRegistry {
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        BackendFuture::ready(self.insert(record))
    }

    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::ready(self.change(key_id, |record| {
            record.revoke_at(at);
        }))
    }

    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::ready(self.change(key_id, |record| record.expires_at = expires_at))
    }

    fn update(
        &self,
        key_id: &KeyId,
        change: KeyUpdate,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::ready(self.change(key_id, |record| change.apply(record)))
    }

    fn delete(&self, key_id: &KeyId) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let mut tables = self.write();
        let Some(entry) = tables.by_id.remove(key_id) else {
            return BackendFuture::ready(Err(RegistryError::UnknownKey(*key_id)));
        };
        let record = Self::snapshot(&entry);
        tables.by_digest.remove(&record.digest);
        if let Some(ids) = tables.by_principal.get_mut(&record.principal_id) {
            ids.retain(|id| id != key_id);
            if ids.is_empty() {
                tables.by_principal.remove(&record.principal_id);
            }
        }
        drop(tables);
        self.announce(key_id);
        BackendFuture::ready(Ok(record))
    }

    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        let tables = self.read();
        let keys = tables
            .by_principal
            .get(principal_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| tables.by_id.get(id))
                    .map(Self::snapshot)
                    .collect()
            })
            .unwrap_or_default();
        BackendFuture::ready(Ok(keys))
    }

    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        let mut principals: Vec<String> = self.read().by_principal.keys().cloned().collect();
        principals.sort_unstable();
        BackendFuture::ready(Ok(principals))
    }
}

impl KeyLookup for InMemoryRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        let found = self
            .read()
            .by_id
            .get(key_id)
            .map(|entry| Arc::clone(&entry.record));
        BackendFuture::ready(Ok(found))
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        let tables = self.read();
        let found = tables
            .by_digest
            .get(digest)
            .and_then(|id| tables.by_id.get(id))
            .map(|entry| Arc::clone(&entry.record));
        BackendFuture::ready(Ok(found))
    }

    #[cfg(feature = "session")]
    fn changes(&self) -> Option<super::KeyChanges> {
        Some(self.announcer.subscribe())
    }

    fn mark_used(&self, key_id: &KeyId, at: SystemTime) {
        let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH) else {
            return;
        };
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        if let Some(entry) = self.read().by_id.get(key_id) {
            // Written once a second at most: a busy key's entry is not written by every
            // core on every request.
            if entry.last_used.load(Ordering::Relaxed) != secs {
                entry.last_used.store(secs, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{ApiKey, KeyGrant, KeyPrefix, KeyStatus};

    #[tokio::test]
    async fn issue_find_revoke() {
        let registry = InMemoryRegistry::new();
        let issued = registry.issue(KeyGrant::new("p1")).await.unwrap();
        let id = issued.record.key_id;
        let found = registry.find_by_id(&id).await.unwrap().unwrap();
        assert!(found.digest.ct_eq(&issued.key.digest()));
        assert_eq!(
            found.status_at(OffsetDateTime::now_utc()),
            KeyStatus::Active
        );
        assert!(
            registry
                .find_by_digest(&issued.key.digest())
                .await
                .unwrap()
                .is_some()
        );

        registry
            .revoke(&id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        let found = registry.find_by_id(&id).await.unwrap().unwrap();
        assert_eq!(
            found.status_at(OffsetDateTime::now_utc()),
            KeyStatus::Revoked
        );
    }

    #[test]
    fn duplicates_are_refused() {
        let registry = InMemoryRegistry::new();
        let record = KeyRecord::new(KeyId::generate().unwrap(), KeyDigest::of(b"k"), "p");
        registry.insert(record.clone()).unwrap();
        assert!(matches!(
            registry.insert(record),
            Err(RegistryError::Duplicate)
        ));
        let other = KeyRecord::new(KeyId::generate().unwrap(), KeyDigest::of(b"k"), "p");
        assert!(matches!(
            registry.insert(other),
            Err(RegistryError::Duplicate)
        ));
    }

    #[tokio::test]
    async fn rotation_keeps_both_keys_for_the_overlap() {
        let registry = InMemoryRegistry::new();
        let first = registry
            .issue(
                KeyGrant::new("p")
                    .workspaces(["w"])
                    .scopes(["s"])
                    .tier("gold"),
            )
            .await
            .unwrap();
        let second = registry
            .rotate(&first.record.key_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(second.record.workspaces, ["w"]);
        assert_eq!(second.record.tier, "gold");
        let old = registry
            .find_by_id(&first.record.key_id)
            .await
            .unwrap()
            .unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(old.status_at(now), KeyStatus::Active);
        assert_eq!(
            old.status_at(now + Duration::from_secs(61)),
            KeyStatus::Expired
        );
        assert_eq!(registry.list_keys("p").await.unwrap().len(), 2);
        assert!(matches!(
            registry
                .rotate(&KeyId::generate().unwrap(), Duration::ZERO)
                .await,
            Err(RegistryError::UnknownKey(_))
        ));
        registry
            .revoke(&second.record.key_id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert!(matches!(
            registry
                .rotate(&second.record.key_id, Duration::from_secs(60))
                .await,
            Err(RegistryError::InactiveKey(_))
        ));
    }

    #[tokio::test]
    async fn keys_made_elsewhere_keep_their_id_and_prefix_through_rotation() {
        let registry = InMemoryRegistry::new();
        let (generated, key_id) = ApiKey::generate(&KeyPrefix::new("cx").unwrap()).unwrap();
        let record = registry.insert_key(&generated, KeyGrant::new("p")).unwrap();
        assert_eq!(record.key_id, key_id);
        assert_eq!(record.prefix.as_ref().map(KeyPrefix::as_str), Some("cx"));
        let rotated = registry
            .rotate(&key_id, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(rotated.key.expose_secret().starts_with("cx_"));

        // The trait's `register_key` makes the same record.
        let (other, other_id) = ApiKey::generate(&KeyPrefix::new("cx").unwrap()).unwrap();
        let record = registry
            .register_key(&other, KeyGrant::new("p"))
            .await
            .unwrap();
        assert_eq!(record.key_id, other_id);
        assert_eq!(record.prefix.as_ref().map(KeyPrefix::as_str), Some("cx"));

        let opaque = ApiKey::new("yPn5Z0sS9tq0u7Q2l4rX1vWcJm8kE3fHbGdAaNoIiLM=").unwrap();
        let record = registry.insert_key(&opaque, KeyGrant::new("q")).unwrap();
        assert_eq!(record.prefix, None);
    }

    #[tokio::test]
    async fn mark_used_shows_in_listing() {
        let registry = InMemoryRegistry::new();
        let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        registry.mark_used(&issued.record.key_id, at.into());
        let keys = registry.list_keys("p").await.unwrap();
        assert_eq!(keys[0].last_used_at, Some(at));
    }
}
