//! Last use of keys, noted on the request path in a bounded map and written to the
//! database in batches by a background task: one transaction per flush, never a write per
//! request.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use time::OffsetDateTime;

use crate::KeyId;

/// The most keys noted between two flushes; uses of other keys are dropped until the next
/// flush (last use is best effort).
pub(super) const MAX_PENDING: usize = 10_000;

/// Keys used since the last flush, each with the latest Unix second it was used.
#[derive(Debug, Default)]
pub(super) struct Pending {
    used: Mutex<HashMap<KeyId, i64>>,
}

impl Pending {
    /// Notes that `key_id` was used at `at`.
    pub(super) fn note(&self, key_id: &KeyId, at: SystemTime) {
        let Ok(since_epoch) = at.duration_since(SystemTime::UNIX_EPOCH) else {
            return;
        };
        let secs = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(latest) = used.get_mut(key_id) {
            *latest = (*latest).max(secs);
        } else if used.len() < MAX_PENDING {
            used.insert(*key_id, secs);
        }
    }

    /// Everything noted so far, as Unix seconds. The entries stay until
    /// [`written`](Self::written) (so that listings see them while they are being written,
    /// and a failed write is retried at the next flush).
    pub(super) fn snapshot(&self) -> Vec<(KeyId, i64)> {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(key_id, secs)| (*key_id, *secs))
            .collect()
    }

    /// Forgets the uses of `snapshot`, now in the database, unless a later one was noted
    /// meanwhile.
    pub(super) fn written(&self, snapshot: &[(KeyId, i64)]) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        for (key_id, secs) in snapshot {
            if used.get(key_id).is_some_and(|latest| latest <= secs) {
                used.remove(key_id);
            }
        }
    }

    /// The latest use of `key_id` not written yet.
    pub(super) fn latest(&self, key_id: &KeyId) -> Option<OffsetDateTime> {
        let secs = *self
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)?;
        OffsetDateTime::from_unix_timestamp(secs).ok()
    }

    /// How many keys are waiting to be written.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
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
}
