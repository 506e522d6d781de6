//! The local cache of key records that the network registries (Redis, SQL) serve lookups
//! from: bounded, short-lived, and invalidated by messages from the store.
// SQLite alone gets no invalidation messages: their parsing is unused then.
#![cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use foldhash::fast::RandomState;

use crate::{
    BackendFuture, KeyDigest, KeyId, KeyRecord, RegistryError, limit::Clock, registry::LookupFuture,
};

/// What a record was looked up by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum CacheKey {
    /// A generated key's id.
    Id(KeyId),
    /// An opaque key's digest.
    Digest(KeyDigest),
}

/// Records looked up recently, each kept for at most `ttl`, at most `capacity` of them.
///
/// Served only while the invalidation channel is known to be subscribed
/// ([`listening`](Self::is_listening)); otherwise lookups go to the store (which also
/// drives reconnection) and the cache only answers when the store cannot.
///
/// Lookups read a concurrent table ([papaya](https://docs.rs/papaya)) without a lock and
/// without writing memory another core reads, as the in-memory registry does; the writers
/// (a record cached, forgotten or invalidated) take a mutex among themselves. An epoch
/// counts invalidations, so that a lookup that started before an invalidation never puts
/// back the record it made stale.
#[derive(Debug)]
pub(crate) struct Cache {
    /// Hashed with foldhash (seeded per process): only records the store returned are
    /// inserted, so a caller cannot fill it with colliding entries.
    entries: papaya::HashMap<CacheKey, Entry, RandomState>,
    /// Serializes the writers, and holds when expired entries were last swept out (clock
    /// time).
    writer: Mutex<Duration>,
    capacity: usize,
    ttl: Duration,
    clock: Clock,
    epoch: AtomicU64,
    listening: AtomicBool,
    /// Tells live sessions about what was invalidated.
    #[cfg(feature = "session")]
    announcer: super::KeyAnnouncer,
}

#[derive(Debug)]
struct Entry {
    record: Arc<KeyRecord>,
    stored_at: Duration,
}

impl Cache {
    pub(crate) fn new(capacity: usize, ttl: Duration, clock: Clock) -> Self {
        Self {
            entries: papaya::HashMap::builder()
                .hasher(RandomState::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            writer: Mutex::default(),
            capacity,
            ttl,
            clock,
            epoch: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            #[cfg(feature = "session")]
            announcer: super::KeyAnnouncer::new(),
        }
    }

    fn write(&self) -> MutexGuard<'_, Duration> {
        // Guards no invariant of its own (the table is always usable): poison is ignored.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fresh(&self, entry: &Entry, now: Duration) -> bool {
        now.saturating_sub(entry.stored_at) < self.ttl
    }

    /// A lookup through the cache, the same for every remote registry: served from the
    /// cache while invalidations are known to arrive; otherwise `fetched` from the
    /// store, the answer cached (a record) or forgotten (none), and when the store
    /// cannot answer, a cached record younger than the lifetime is served all the same.
    pub(crate) fn lookup<F>(
        self: &Arc<Self>,
        key: CacheKey,
        fetch: impl FnOnce() -> F,
    ) -> LookupFuture
    where
        F: Future<Output = Result<Option<KeyRecord>, RegistryError>> + Send + 'static,
    {
        if self.is_listening()
            && let Some(record) = self.get(&key)
        {
            return BackendFuture::ready(Ok(Some(record)));
        }
        self.fetch(key, fetch(), true)
    }

    /// A lookup that asks the store whatever the cache holds (the periodic checks of live
    /// sessions: they must find what no invalidation announced), and caches the answer.
    /// An outage is an error: no cached record stands in for the store.
    pub(crate) fn refresh<F>(
        self: &Arc<Self>,
        key: CacheKey,
        fetch: impl FnOnce() -> F,
    ) -> LookupFuture
    where
        F: Future<Output = Result<Option<KeyRecord>, RegistryError>> + Send + 'static,
    {
        self.fetch(key, fetch(), false)
    }

    fn fetch<F>(self: &Arc<Self>, key: CacheKey, fetched: F, serve_stale: bool) -> LookupFuture
    where
        F: Future<Output = Result<Option<KeyRecord>, RegistryError>> + Send + 'static,
    {
        // Taken before the fetch, so that an invalidation meanwhile wins.
        let epoch = self.epoch();
        let cache = Arc::clone(self);
        BackendFuture::new(async move {
            match fetched.await {
                Ok(Some(record)) => {
                    let record = Arc::new(record);
                    cache.insert(key, Arc::clone(&record), epoch);
                    Ok(Some(record))
                }
                Ok(None) => {
                    cache.remove(&key);
                    Ok(None)
                }
                Err(error) => match cache.get(&key).filter(|_| serve_stale) {
                    Some(record) => {
                        tracing::debug!(%error, "keygate: registry unavailable; cached record served");
                        Ok(Some(record))
                    }
                    None => Err(error),
                },
            }
        })
    }

    /// The record cached under `key`, if it is younger than the cache lifetime.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<KeyRecord>> {
        let now = self.clock.elapsed();
        self.entries
            .pin()
            .get(key)
            .filter(|entry| self.fresh(entry, now))
            .map(|entry| Arc::clone(&entry.record))
    }

    /// The invalidation epoch: read it before asking Redis, hand it to [`Self::insert`].
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches `record` under `key`, unless an invalidation happened since `epoch` was read.
    /// When full, expired entries go first, then arbitrary ones (the hash order is random).
    pub(crate) fn insert(&self, key: CacheKey, record: Arc<KeyRecord>, epoch: u64) {
        if self.capacity == 0 {
            return;
        }
        let now = self.clock.elapsed();
        let mut swept_at = self.write();
        // Checked under the writers' lock: an invalidation bumps the epoch before it takes
        // the lock, so either it sees this entry and removes it, or this insert sees its
        // epoch.
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        let entries = self.entries.pin();
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            // A full sweep at most twice per lifetime keeps inserts O(1) amortised.
            if now.saturating_sub(*swept_at) >= self.ttl / 2 {
                entries.retain(|_, entry| self.fresh(entry, now));
                *swept_at = now;
            }
            while entries.len() >= self.capacity {
                let Some(victim) = entries.keys().next().copied() else {
                    break;
                };
                entries.remove(&victim);
            }
        }
        entries.insert(
            key,
            Entry {
                record,
                stored_at: now,
            },
        );
    }

    /// Forgets `key` (Redis no longer knows it, e.g. after losing its data).
    ///
    /// Lookups of unknown keys end here, so this takes no lock unless the key is cached,
    /// and leaves the epoch alone: a flood of made-up keys must not keep other lookups
    /// from being cached.
    pub(crate) fn remove(&self, key: &CacheKey) {
        if self.entries.pin().contains_key(key) {
            let _writer = self.write();
            self.entries.pin().remove(key);
        }
    }

    /// Forgets a changed key, under both names it may be cached by.
    pub(crate) fn invalidate(&self, key_id: KeyId, digest: KeyDigest) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let writer = self.write();
        let entries = self.entries.pin();
        entries.remove(&CacheKey::Id(key_id));
        entries.remove(&CacheKey::Digest(digest));
        drop(writer);
        #[cfg(feature = "session")]
        self.announcer.announce(super::KeyChange::Key(key_id));
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let _writer = self.write();
        self.entries.pin().clear();
        #[cfg(feature = "session")]
        self.announcer.announce(super::KeyChange::Missed);
    }

    /// The changes announced from now on: every invalidation, and
    /// [`Missed`](super::KeyChange::Missed) whenever the cache was cleared.
    #[cfg(feature = "session")]
    pub(crate) fn changes(&self) -> super::KeyChanges {
        self.announcer.subscribe()
    }

    /// Applies an invalidation message, `<key id>:<digest hex>`; anything else clears the
    /// whole cache (safe whatever it meant).
    pub(crate) fn apply(&self, message: &[u8]) {
        if let Some((key_id, digest)) = parse_message(message) {
            self.invalidate(key_id, digest);
        } else {
            tracing::warn!("keygate: unexpected registry invalidation message; cache cleared");
            self.clear();
        }
    }

    /// Whether invalidations are being received, so cached records can be served.
    pub(crate) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// The channel was (re)subscribed: whatever was missed meanwhile is dropped first.
    pub(crate) fn subscribed(&self) {
        self.clear();
        self.listening.store(true, Ordering::Release);
    }

    /// The connection dropped: invalidations may be missed from now on.
    pub(crate) fn disconnected(&self) {
        self.listening.store(false, Ordering::Release);
    }

    /// The number of cached records (fresh or not).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The invalidation message for a key.
pub(crate) fn message(key_id: KeyId, digest: &KeyDigest) -> String {
    let mut message = String::with_capacity(KEY_MESSAGE_LEN);
    message.push_str(key_id.as_str());
    message.push(':');
    message.push_str(&digest.to_hex());
    message
}

const KEY_MESSAGE_LEN: usize = crate::key::KEY_ID_LEN + 1 + 64;

fn parse_message(message: &[u8]) -> Option<(KeyId, KeyDigest)> {
    let text = std::str::from_utf8(message).ok()?;
    let (key_id, digest) = text.split_once(':')?;
    Some((KeyId::parse(key_id).ok()?, KeyDigest::from_hex(digest)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(seed: &[u8]) -> Arc<KeyRecord> {
        Arc::new(KeyRecord::new(
            KeyId::generate().unwrap(),
            KeyDigest::of(seed),
            "p",
        ))
    }

    fn cache(capacity: usize) -> (Cache, Clock) {
        let clock = Clock::manual();
        (
            Cache::new(capacity, Duration::from_secs(10), clock.clone()),
            clock,
        )
    }

    #[test]
    fn entries_live_for_the_cache_lifetime() {
        let (cache, clock) = cache(10);
        let r = record(b"a");
        let key = CacheKey::Id(r.key_id);
        cache.insert(key, Arc::clone(&r), cache.epoch());
        assert!(cache.get(&key).is_some());
        clock.advance(Duration::from_millis(9_999));
        assert!(cache.get(&key).is_some());
        clock.advance(Duration::from_millis(1));
        assert!(cache.get(&key).is_none());
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let (cache, clock) = cache(8);
        for i in 0..100u32 {
            let r = record(&i.to_le_bytes());
            cache.insert(CacheKey::Id(r.key_id), r, cache.epoch());
            clock.advance(Duration::from_millis(100));
            assert!(cache.len() <= 8);
        }
        assert_eq!(cache.len(), 8);
        let (disabled, _) = self::cache(0);
        let r = record(b"x");
        disabled.insert(CacheKey::Id(r.key_id), r, 0);
        assert_eq!(disabled.len(), 0);
    }

    #[test]
    fn a_lookup_that_raced_an_invalidation_is_not_cached() {
        let (cache, _) = cache(10);
        let r = record(b"a");
        let before = cache.epoch();
        cache.invalidate(r.key_id, r.digest);
        cache.insert(CacheKey::Id(r.key_id), Arc::clone(&r), before);
        assert_eq!(cache.len(), 0);
        cache.insert(CacheKey::Id(r.key_id), r, cache.epoch());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_invalidation_wins_over_an_insert_racing_it() {
        // The record was fetched before the invalidation (its epoch read then) and is
        // cached while the invalidation runs on another thread: whichever comes first,
        // once both are done the stale record is not served.
        let (cache, _) = cache(64);
        for round in 0..500u32 {
            let r = record(&round.to_le_bytes());
            let key = CacheKey::Id(r.key_id);
            let epoch = cache.epoch();
            let barrier = std::sync::Barrier::new(2);
            std::thread::scope(|s| {
                s.spawn(|| {
                    barrier.wait();
                    cache.insert(key, Arc::clone(&r), epoch);
                });
                s.spawn(|| {
                    barrier.wait();
                    cache.invalidate(r.key_id, r.digest);
                });
            });
            assert!(
                cache.get(&key).is_none(),
                "round {round}: stale record served"
            );
        }
    }

    #[test]
    fn lookups_on_several_threads_find_what_was_cached() {
        let (cache, _) = cache(1_000);
        let records: Vec<_> = (0..100u32).map(|i| record(&i.to_le_bytes())).collect();
        std::thread::scope(|s| {
            for chunk in records.chunks(25) {
                let cache = &cache;
                s.spawn(move || {
                    for r in chunk {
                        cache.insert(CacheKey::Id(r.key_id), Arc::clone(r), cache.epoch());
                    }
                    for _ in 0..100 {
                        for r in chunk {
                            let found = cache.get(&CacheKey::Id(r.key_id)).unwrap();
                            assert!(Arc::ptr_eq(&found, r));
                        }
                    }
                });
            }
        });
        assert_eq!(cache.len(), 100);
    }

    #[test]
    fn unknown_keys_do_not_disturb_other_lookups() {
        let (cache, _) = cache(10);
        let r = record(b"a");
        let epoch = cache.epoch();
        cache.remove(&CacheKey::Digest(KeyDigest::of(b"made up")));
        cache.insert(CacheKey::Id(r.key_id), Arc::clone(&r), epoch);
        assert_eq!(cache.len(), 1);
        cache.remove(&CacheKey::Id(r.key_id));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn messages_invalidate_both_names_of_a_key() {
        let (cache, _) = cache(10);
        let r = record(b"a");
        let other = record(b"b");
        for key in [CacheKey::Id(r.key_id), CacheKey::Digest(r.digest)] {
            cache.insert(key, Arc::clone(&r), cache.epoch());
        }
        cache.insert(CacheKey::Id(other.key_id), other.clone(), cache.epoch());
        let text = message(r.key_id, &r.digest);
        assert_eq!(text.len(), KEY_MESSAGE_LEN);
        cache.apply(text.as_bytes());
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&CacheKey::Id(other.key_id)).is_some());
        // Garbage clears everything rather than nothing.
        cache.apply(b"garbage");
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn subscribing_clears_what_was_cached_while_deaf() {
        let (cache, _) = cache(10);
        assert!(!cache.is_listening());
        let r = record(b"a");
        cache.insert(CacheKey::Id(r.key_id), r, cache.epoch());
        cache.subscribed();
        assert!(cache.is_listening());
        assert_eq!(cache.len(), 0);
        cache.disconnected();
        assert!(!cache.is_listening());
    }
}
