//! [`KeyLookup`]: what the request path asks of a key store.

use std::{fmt, sync::Arc, time::SystemTime};

use super::{KeyRecord, RegistryError};
use crate::{BackendFuture, KeyDigest, KeyId};

/// The answer of a lookup.
pub type LookupFuture = BackendFuture<'static, Result<Option<Arc<KeyRecord>>, RegistryError>>;

/// What the guard needs of a key store: a record by key id or by digest, and a note that a
/// key was used. A read-only store (keys loaded at start, a table another service manages)
/// implements only this; [`KeyRegistry`](super::KeyRegistry) adds the management
/// operations (register, revoke, update, ...).
///
/// Implementations store digests only, answer "not found" with `Ok(None)` and an outage
/// with [`RegistryError::Unavailable`] (the guard answers 503 `auth_unavailable`: an
/// outage must never look like a bad key). Lookups return a `'static` [`BackendFuture`]:
/// [`BackendFuture::ready`] when the answer is at hand (no allocation), or
/// [`BackendFuture::new`] around owned data when it needs I/O.
///
/// A read-only store, loaded once at start, in a guard:
///
/// ```
/// use std::{collections::HashMap, sync::Arc};
///
/// use keygate::{
///     ApiKey, ApiKeyGuard, BackendFuture, KeyDigest, KeyId, KeyLookup, KeyRecord,
///     registry::LookupFuture,
/// };
///
/// /// Keys read from a file at start; never changed.
/// #[derive(Debug, Default)]
/// struct StaticKeys {
///     by_digest: HashMap<KeyDigest, Arc<KeyRecord>>,
/// }
///
/// impl KeyLookup for StaticKeys {
///     fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
///         let found = self.by_digest.values().find(|r| r.key_id == *key_id).cloned();
///         BackendFuture::ready(Ok(found))
///     }
///
///     fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
///         BackendFuture::ready(Ok(self.by_digest.get(digest).cloned()))
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?;
/// let record = KeyRecord::new(KeyId::generate()?, key.digest(), "coordinator-1");
/// let mut keys = StaticKeys::default();
/// keys.by_digest.insert(record.digest, Arc::new(record));
///
/// let guard = ApiKeyGuard::builder().registry(keys).build()?;
/// # let _ = guard; Ok(()) }
/// ```
pub trait KeyLookup: Send + Sync + fmt::Debug + 'static {
    /// The record of the generated key with this id.
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture;

    /// The record of the key with this digest (opaque keys are looked up this way).
    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture;

    /// The record of the generated key with this id, read from the store itself rather
    /// than from a local cache: what the periodic checks of [live sessions](crate::session)
    /// use, so that a change no announcement reached this process with (another process
    /// on the same SQLite file, a missed invalidation) is still found. The default is
    /// [`find_by_id`](Self::find_by_id), right for a store without a cache.
    fn find_by_id_uncached(&self, key_id: &KeyId) -> LookupFuture {
        self.find_by_id(key_id)
    }

    /// Notes that a key was admitted at `at`. Best effort, called on the request path of
    /// every admitted request: it must be cheap and must not block (a plain
    /// [`SystemTime`], so that the guard need not turn the clock into a calendar date on
    /// every request). The default does nothing.
    fn mark_used(&self, key_id: &KeyId, at: SystemTime) {
        let _ = (key_id, at);
    }

    /// The changes this store announces from now on (revocations, expiries, updates,
    /// deletions), for [live sessions](crate::session) to end at once rather than at
    /// their next check; `None` (the default) when it cannot announce them. The
    /// in-memory registry announces its own changes; Redis and PostgreSQL those of every
    /// replica.
    #[cfg(feature = "session")]
    #[cfg_attr(docsrs, doc(cfg(feature = "session")))]
    fn changes(&self) -> Option<super::KeyChanges> {
        None
    }
}

impl<L: KeyLookup + ?Sized> KeyLookup for Arc<L> {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        (**self).find_by_id(key_id)
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        (**self).find_by_digest(digest)
    }

    fn find_by_id_uncached(&self, key_id: &KeyId) -> LookupFuture {
        (**self).find_by_id_uncached(key_id)
    }

    fn mark_used(&self, key_id: &KeyId, at: SystemTime) {
        (**self).mark_used(key_id, at);
    }

    #[cfg(feature = "session")]
    fn changes(&self) -> Option<super::KeyChanges> {
        (**self).changes()
    }
}
