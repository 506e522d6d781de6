//! Last use of keys, noted on the request path in a bounded map and written to the
//! database in batches by a background task: one transaction per flush, never a write per
//! request.

use std::time::SystemTime;

use foldhash::fast::RandomState;
use time::OffsetDateTime;

use crate::KeyId;

/// The most keys noted between two flushes; uses of other keys are dropped until the next
/// flush (last use is best effort). Requests noting new keys at the same moment on
/// several cores may each add one past it.
pub(super) const MAX_PENDING: usize = 10_000;

/// Keys used since the last flush, each with the latest Unix second it was used.
///
/// Noting a use reads a concurrent table ([papaya](https://docs.rs/papaya)) without a lock
/// and writes a key's entry at most once a second, so that requests on different cores do
/// not wait for each other here; each write replaces the entry whole, so a flush's removal
/// never loses a use noted meanwhile.
#[derive(Debug)]
pub(super) struct Pending {
    /// Hashed with foldhash (seeded per process): only key ids the registry found are
    /// noted.
    used: papaya::HashMap<KeyId, i64, RandomState>,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            used: papaya::HashMap::builder()
                .hasher(RandomState::default())
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
        }
    }
}

impl Pending {
    /// Notes that `key_id` was used at `at`.
    pub(super) fn note(&self, key_id: &KeyId, at: SystemTime) {
        let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH) else {
            return;
        };
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let used = self.used.pin();
        match used.get(key_id) {
            Some(&latest) if latest >= secs => {}
            None if used.len() >= MAX_PENDING => {}
            // A later use of a key noted, or a new key with room for it. Inserted also for
            // a key noted that a flush removed since the lookup: an `update` would find
            // nothing, and lose this use.
            Some(_) | None => {
                used.update_or_insert(*key_id, |latest| (*latest).max(secs), secs);
            }
        }
    }

    /// Everything noted so far, as Unix seconds. The entries stay until
    /// [`written`](Self::written) (so that listings see them while they are being written,
    /// and a failed write is retried at the next flush).
    pub(super) fn snapshot(&self) -> Vec<(KeyId, i64)> {
        self.used
            .pin()
            .iter()
            .map(|(key_id, secs)| (*key_id, *secs))
            .collect()
    }

    /// Forgets the uses of `snapshot`, now in the database, unless a later one was noted
    /// meanwhile.
    pub(super) fn written(&self, snapshot: &[(KeyId, i64)]) {
        let used = self.used.pin();
        for (key_id, secs) in snapshot {
            let _ = used.remove_if(key_id, |_, latest| latest <= secs);
        }
    }

    /// The latest use of `key_id` not written yet.
    pub(super) fn latest(&self, key_id: &KeyId) -> Option<OffsetDateTime> {
        let secs = *self.used.pin().get(key_id)?;
        OffsetDateTime::from_unix_timestamp(secs).ok()
    }

    /// How many keys are waiting to be written.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_the_latest_use_and_stays_bounded() {
        let pending = Pending::default();
        let id = KeyId::generate().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        pending.note(&id, t + Duration::from_secs(5));
        pending.note(&id, t);
        let snapshot = pending.snapshot();
        assert_eq!(snapshot, [(id, 1_800_000_005)]);
        // A later use noted while the snapshot is written stays for the next flush.
        pending.note(&id, t + Duration::from_secs(9));
        pending.written(&snapshot);
        assert_eq!(pending.len(), 1);
        pending.written(&pending.snapshot());
        assert_eq!(pending.len(), 0);
        for _ in 0..MAX_PENDING + 10 {
            pending.note(&KeyId::generate().unwrap(), t);
        }
        assert_eq!(pending.len(), MAX_PENDING);
    }

    #[test]
    fn no_use_is_lost_to_a_flush_running_meanwhile() {
        // Four threads note one use of each key each, thread t at second t, while a
        // flusher writes snapshots to a "database" and forgets them: a flush that forgot
        // a use noted after its snapshot would lose it for good (no later use comes). At
        // the end, each key's latest use (second 3) is in the database or still pending.
        let pending = Pending::default();
        let keys: Vec<KeyId> = (0..5_000).map(|_| KeyId::generate().unwrap()).collect();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut database = std::collections::HashMap::new();
        let done = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for thread in 0..4u64 {
                let (pending, keys, done) = (&pending, &keys, &done);
                s.spawn(move || {
                    for key in keys {
                        pending.note(key, start + Duration::from_secs(thread));
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Release);
                });
            }
            while done.load(std::sync::atomic::Ordering::Acquire) < 4 {
                let snapshot = pending.snapshot();
                for (key, secs) in &snapshot {
                    let latest = database.entry(*key).or_insert(*secs);
                    *latest = (*latest).max(*secs);
                }
                pending.written(&snapshot);
            }
        });
        for (key, secs) in pending.snapshot() {
            let latest = database.entry(key).or_insert(secs);
            *latest = (*latest).max(secs);
        }
        let lost = keys
            .iter()
            .filter(|key| database.get(*key) != Some(&1_800_000_003))
            .count();
        assert_eq!(lost, 0, "latest uses lost");
    }
}
