//! The in-memory registry.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
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
/// Lookups read concurrent hash tables ([papaya](https://docs.rs/papaya)) without a lock
/// and without writing any memory another core reads, so requests on different cores
/// with different keys do not slow each other down; they are as fast with a million keys
/// as with one (see the `registry` and `threads` benchmarks). Changes (register, revoke,
/// update, delete) take a mutex among themselves and are visible to every lookup that
/// starts after they return. Answers are always ready, so the guard never allocates a
/// future for them.
///
/// The guard and the code that administers keys share one registry through an `Arc`:
///
/// ```
/// use std::sync::Arc;
/// use keygate::{ApiKeyGuard, InMemoryRegistry, KeyGrant, KeyLookup, KeyRegistry, Rejection};
/// use time::OffsetDateTime;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(InMemoryRegistry::new());
/// let guard = ApiKeyGuard::builder().registry(Arc::clone(&registry)).build()?;
///
/// let issued = registry.issue(KeyGrant::new("coordinator-1")).await?;
/// let key = issued.key.expose_secret();
/// assert_eq!(guard.authenticate(key, None, "ws auth").await?.id(), "coordinator-1");
///
/// // The registry keeps the key's digest, never the key.
/// let record = registry.find_by_id(&issued.record.key_id).await?.ok_or("registered")?;
/// assert!(record.digest.ct_eq(&issued.key.digest()));
///
/// // A revocation takes effect on the very next request.
/// registry.revoke(&issued.record.key_id, OffsetDateTime::now_utc()).await?;
/// let refused = guard.authenticate(key, None, "ws auth").await;
/// assert!(matches!(refused, Err(Rejection::RevokedCredentials)));
/// assert_eq!(registry.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct InMemoryRegistry {
    by_id: Table<KeyId>,
    /// The same entries, by digest: an opaque key is found in one lookup too.
    by_digest: Table<KeyDigest>,
    /// Serializes changes (so the tables agree with each other) and holds the keys of
    /// each principal, which only management reads.
    changes: Mutex<Principals>,
    /// Tells live sessions about revocations, expiries, updates and deletions.
    #[cfg(feature = "session")]
    announcer: super::KeyAnnouncer,
}

/// The tables are hashed with foldhash (seeded per process) rather than `SipHash`: their
/// keys are key ids and SHA-256 digests that only registration inserts, so a caller
/// cannot fill them with colliding entries, and lookups are on the request path.
type Table<K> = papaya::HashMap<K, Entry, RandomState>;

type Principals = HashMap<String, Vec<KeyId>, RandomState>;

/// One key: its record (replaced whole on a change) and when it was last admitted.
#[derive(Clone, Debug)]
struct Entry {
    record: Arc<KeyRecord>,
    /// Unix seconds of the last admission, 0 for never. Kept across changes of the
    /// record, and written at most once a second.
    last_used: Arc<AtomicI64>,
}

impl Default for InMemoryRegistry {
    fn default() -> Self {
        Self {
            by_id: table(),
            by_digest: table(),
            changes: Mutex::default(),
            #[cfg(feature = "session")]
            announcer: super::KeyAnnouncer::default(),
        }
    }
}

/// An empty table. Blocking resizes: a registration that grows a table finishes the copy
/// itself, so lookups never search an old table and a new one.
fn table<K>() -> Table<K> {
    papaya::HashMap::builder()
        .hasher(RandomState::default())
        .resize_mode(papaya::ResizeMode::Blocking)
        .build()
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
        self.by_id.len()
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
        let mut principals = self.lock();
        let (by_id, by_digest) = (self.by_id.pin(), self.by_digest.pin());
        if by_id.contains_key(&record.key_id) || by_digest.contains_key(&record.digest) {
            return Err(RegistryError::Duplicate);
        }
        principals
            .entry(record.principal_id.clone())
            .or_default()
            .push(record.key_id);
        let last_used = record
            .last_used_at
            .map_or(0, OffsetDateTime::unix_timestamp);
        let (key_id, digest) = (record.key_id, record.digest);
        let entry = Entry {
            record: Arc::new(record),
            last_used: Arc::new(AtomicI64::new(last_used)),
        };
        by_digest.insert(digest, entry.clone());
        by_id.insert(key_id, entry);
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

    /// The lock that serializes changes.
    fn lock(&self) -> MutexGuard<'_, Principals> {
        // Every change leaves the tables consistent before it can panic (each is one
        // insert or removal per table), so a poisoned lock is used as is.
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn change(
        &self,
        key_id: &KeyId,
        change: impl FnOnce(&mut KeyRecord),
    ) -> Result<Arc<KeyRecord>, RegistryError> {
        let principals = self.lock();
        let by_id = self.by_id.pin();
        let entry = by_id
            .get(key_id)
            .ok_or(RegistryError::UnknownKey(*key_id))?;
        let mut record = KeyRecord::clone(&entry.record);
        change(&mut record);
        let changed = Entry {
            record: Arc::new(record),
            last_used: Arc::clone(&entry.last_used),
        };
        let record = Arc::clone(&changed.record);
        // Neither the key id nor the digest changes; the record of both is replaced.
        self.by_digest.pin().insert(record.digest, changed.clone());
        by_id.insert(*key_id, changed);
        drop(principals);
        self.announce(key_id);
        Ok(record)
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
        let mut principals = self.lock();
        let Some(entry) = self.by_id.pin().remove(key_id).cloned() else {
            return BackendFuture::ready(Err(RegistryError::UnknownKey(*key_id)));
        };
        let record = Self::snapshot(&entry);
        self.by_digest.pin().remove(&record.digest);
        if let Some(ids) = principals.get_mut(&record.principal_id) {
            ids.retain(|id| id != key_id);
            if ids.is_empty() {
                principals.remove(&record.principal_id);
            }
        }
        drop(principals);
        self.announce(key_id);
        BackendFuture::ready(Ok(record))
    }

    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        let principals = self.lock();
        let by_id = self.by_id.pin();
        let keys = principals
            .get(principal_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| by_id.get(id))
                    .map(Self::snapshot)
                    .collect()
            })
            .unwrap_or_default();
        BackendFuture::ready(Ok(keys))
    }

    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        let mut principals: Vec<String> = self.lock().keys().cloned().collect();
        principals.sort_unstable();
        BackendFuture::ready(Ok(principals))
    }
}

impl KeyLookup for InMemoryRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        let found = self
            .by_id
            .pin()
            .get(key_id)
            .map(|entry| Arc::clone(&entry.record));
        BackendFuture::ready(Ok(found))
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        let found = self
            .by_digest
            .pin()
            .get(digest)
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
        // A lookup without a lock, and a write at most once a second: a busy key's entry
        // is not written by every core on every request.
        if let Some(entry) = self.by_id.pin().get(key_id)
            && entry.last_used.load(Ordering::Relaxed) != secs
        {
            entry.last_used.store(secs, Ordering::Relaxed);
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

    /// Lookups on some threads while others register: every registered key is found,
    /// by id and by digest, and the tables agree at the end.
    #[test]
    fn concurrent_registration_and_lookup() {
        const WRITERS: usize = 4;
        const PER_WRITER: usize = 500;
        let registry = InMemoryRegistry::new();
        let known = KeyRecord::new(KeyId::generate().unwrap(), KeyDigest::of(b"known"), "p");
        registry.insert(known.clone()).unwrap();
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for writer in 0..WRITERS {
                let (registry, done) = (&registry, &done);
                scope.spawn(move || {
                    for i in 0..PER_WRITER {
                        let digest = KeyDigest::of(format!("{writer}-{i}").as_bytes());
                        let record = KeyRecord::new(KeyId::generate().unwrap(), digest, "w");
                        let key_id = record.key_id;
                        registry.insert(record).unwrap();
                        // Visible to this thread at once, by both handles.
                        assert!(ready(registry.find_by_id(&key_id)).is_some());
                        assert!(ready(registry.find_by_digest(&digest)).is_some());
                    }
                    done.fetch_add(1, Ordering::Release);
                });
            }
            for _ in 0..2 {
                let (registry, done, known) = (&registry, &done, &known);
                scope.spawn(move || {
                    while done.load(Ordering::Acquire) < WRITERS {
                        let found = ready(registry.find_by_id(&known.key_id)).unwrap();
                        assert!(found.digest.ct_eq(&known.digest));
                        assert!(ready(registry.find_by_digest(&known.digest)).is_some());
                    }
                });
            }
        });
        assert_eq!(registry.len(), WRITERS * PER_WRITER + 1);
        let keys = ready(registry.list_keys("w"));
        assert_eq!(keys.len(), WRITERS * PER_WRITER);
        for record in keys {
            assert!(ready(registry.find_by_digest(&record.digest)).is_some());
        }
    }

    /// A revocation made on one thread is seen by the next lookup on another, by id and
    /// by digest.
    #[test]
    fn revocation_is_seen_by_the_next_lookup_on_another_thread() {
        let registry = InMemoryRegistry::new();
        let record = KeyRecord::new(KeyId::generate().unwrap(), KeyDigest::of(b"k"), "p");
        let (key_id, digest) = (record.key_id, record.digest);
        registry.insert(record).unwrap();
        let now = OffsetDateTime::now_utc();
        let status = |record: Option<Arc<KeyRecord>>| record.unwrap().status_at(now);
        assert_eq!(
            status(ready(registry.find_by_id(&key_id))),
            KeyStatus::Active
        );
        let (revoked, seen) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let registry = &registry;
            scope.spawn(move || {
                let record = ready(registry.revoke(&key_id, now));
                assert_eq!(record.status_at(now), KeyStatus::Revoked);
                revoked.send(()).unwrap();
            });
            scope.spawn(move || {
                seen.recv().unwrap();
                assert_eq!(
                    status(ready(registry.find_by_id(&key_id))),
                    KeyStatus::Revoked
                );
                assert_eq!(
                    status(ready(registry.find_by_digest(&digest))),
                    KeyStatus::Revoked
                );
            });
        });
    }

    /// The last use is kept when the record changes, and a deleted key is gone from
    /// both tables.
    #[tokio::test]
    async fn last_use_survives_changes_and_delete_forgets_both_handles() {
        let registry = InMemoryRegistry::new();
        let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
        let key_id = issued.record.key_id;
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        registry.mark_used(&key_id, at.into());
        registry
            .update(&key_id, crate::KeyUpdate::new().scopes(["s"]))
            .await
            .unwrap();
        let keys = registry.list_keys("p").await.unwrap();
        assert_eq!(
            (keys[0].last_used_at, &keys[0].scopes[..]),
            (Some(at), &["s".to_owned()][..])
        );
        let deleted = registry.delete(&key_id).await.unwrap();
        assert_eq!(deleted.last_used_at, Some(at));
        assert!(registry.find_by_id(&key_id).await.unwrap().is_none());
        let digest = issued.key.digest();
        assert!(registry.find_by_digest(&digest).await.unwrap().is_none());
        assert!(registry.is_empty());
        assert!(registry.list_principals().await.unwrap().is_empty());
        // Registered again after its deletion: a fresh entry.
        registry
            .insert(KeyRecord::new(key_id, digest, "p"))
            .unwrap();
        assert_eq!(registry.list_keys("p").await.unwrap()[0].last_used_at, None);
    }

    /// The answer of an in-memory operation, which is always ready.
    fn ready<T>(future: BackendFuture<'_, Result<T, RegistryError>>) -> T {
        use std::future::Future as _;
        let mut future = std::pin::pin!(future);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(answer) => answer.unwrap(),
            std::task::Poll::Pending => panic!("an in-memory answer is ready at once"),
        }
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
