//! Where keys are kept: the [`KeyLookup`] trait (what the request path needs), the
//! [`KeyRegistry`] trait (management), [`KeyRecord`], and the [`InMemoryRegistry`].
//!
//! A registry stores [`KeyRecord`]s: a key's SHA-256 digest (never the key), its principal,
//! workspaces, scopes, quota tier and lifetime. The guard asks it for a record by key id
//! (generated keys) or by digest (opaque keys) and compares digests itself, in constant
//! time.

#[cfg(any(feature = "redis", feature = "sqlite", feature = "postgres"))]
pub(crate) mod cache;
#[cfg(feature = "session")]
mod changes;
mod grant;
mod lookup;
mod memory;
mod record;
mod update;

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;

#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub use self::changes::{KeyAnnouncer, KeyChange, KeyChanges};
pub use self::grant::{IssuedKey, KeyGrant};
pub use self::lookup::{KeyLookup, LookupFuture};
pub use self::memory::InMemoryRegistry;
pub use self::record::{DEFAULT_TIER, KeyRecord, KeyStatus};
pub use self::update::KeyUpdate;
use crate::{ApiKey, BackendFuture, KeyError, KeyId};

/// Why a registry operation failed. Never contains key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry cannot be reached (the guard answers 503 `auth_unavailable`).
    #[error("key registry unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A key with this id or digest is registered already.
    #[error("a key with this id or digest is already registered")]
    Duplicate,
    /// No key has this id.
    #[error("no key with id {0}")]
    UnknownKey(KeyId),
    /// The key is revoked or expired, so it cannot be rotated.
    #[error("key {0} is revoked or expired and cannot be rotated")]
    InactiveKey(KeyId),
    /// The key could not be made or is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Where keys are kept, and how they are managed: on top of the lookups of
/// [`KeyLookup`], register, revoke, set an expiry, update, delete and list keys, and
/// (provided) issue, register a key made elsewhere, and rotate.
///
/// ```
/// use std::time::Duration;
///
/// use keygate::{InMemoryRegistry, KeyGrant, KeyLookup, KeyRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// let issued = registry
///     .issue(KeyGrant::new("coordinator-1").workspaces(["ws-a"]).scopes(["jobs"]))
///     .await?;
/// // Show `issued.key.expose_secret()` to its owner once; only the digest is kept.
/// let record = registry.find_by_id(&issued.record.key_id).await?.ok_or("not found")?;
/// assert!(record.digest.ct_eq(&issued.key.digest()));
///
/// // Rotation: a new key; the old one keeps working for the overlap, then expires.
/// let rotated = registry.rotate(&issued.record.key_id, Duration::from_secs(60)).await?;
/// assert_ne!(rotated.record.key_id, issued.record.key_id);
/// assert_eq!(registry.list_keys("coordinator-1").await?.len(), 2);
/// # Ok(()) }
/// ```
///
/// Management operations borrow the registry. Implementations store digests only and
/// answer an outage with [`RegistryError::Unavailable`].
pub trait KeyRegistry: KeyLookup {
    /// Adds a record. Fails with [`RegistryError::Duplicate`] if its id or digest is known.
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>>;

    /// Revokes a key at `at` (normally now); it is refused from then on.
    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>>;

    /// Sets (or clears) a key's expiry.
    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>>;

    /// Changes a key's scopes, workspaces or tier (what `change` names) and returns the
    /// new record. Fails with [`RegistryError::UnknownKey`] if no key has this id.
    fn update(
        &self,
        key_id: &KeyId,
        change: KeyUpdate,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>>;

    /// Removes a key for good and returns its last record (revoking keeps the record;
    /// deleting forgets it). Fails with [`RegistryError::UnknownKey`] if no key has this id.
    fn delete(&self, key_id: &KeyId) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>>;

    /// Every key of a principal, active or not.
    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>>;

    /// Every principal holding at least one key (of any status), sorted, each once.
    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>>;

    /// Generates a new key for `grant` and registers its digest. The key is in the
    /// returned [`IssuedKey`], to be shown once.
    fn issue(&self, grant: KeyGrant) -> BackendFuture<'_, Result<IssuedKey, RegistryError>> {
        BackendFuture::new(async move {
            let (key, key_id) = ApiKey::generate(&grant.prefix)?;
            let record = Arc::new(grant.into_record(key_id, key.digest()));
            self.register(KeyRecord::clone(&record)).await?;
            Ok(IssuedKey { key, record })
        })
    }

    /// Registers a key made elsewhere (an opaque key from configuration, or a generated
    /// key read back). A generated key keeps its own key id; an opaque key gets a new one.
    fn register_key(
        &self,
        key: &ApiKey,
        grant: KeyGrant,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        let record = grant.record_for(key);
        BackendFuture::new(async move {
            let record = Arc::new(record?);
            self.register(KeyRecord::clone(&record)).await?;
            Ok(record)
        })
    }

    /// Rotates a key: issues a successor with the same principal, workspaces, scopes and
    /// tier, and lets the old key work for `overlap` more (never longer than it would
    /// have anyway). Both keys work during the overlap. A revoked or expired key is not
    /// rotated ([`RegistryError::InactiveKey`]).
    fn rotate(
        &self,
        key_id: &KeyId,
        overlap: Duration,
    ) -> BackendFuture<'_, Result<IssuedKey, RegistryError>> {
        let key_id = *key_id;
        BackendFuture::new(async move {
            let old = self
                .find_by_id(&key_id)
                .await?
                .ok_or(RegistryError::UnknownKey(key_id))?;
            // A successor of a revoked or expired key would bring its principal back.
            if old.status_at(OffsetDateTime::now_utc()) != KeyStatus::Active {
                return Err(RegistryError::InactiveKey(key_id));
            }
            let grant = KeyGrant::from_record(&old).label(format!("rotated from {key_id}"));
            let issued = self.issue(grant).await?;
            let end = OffsetDateTime::now_utc() + overlap;
            let end = old.expires_at.map_or(end, |at| at.min(end));
            self.set_expiry(&key_id, Some(end)).await?;
            Ok(issued)
        })
    }
}

impl<R: KeyRegistry + ?Sized> KeyRegistry for Arc<R> {
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        (**self).register(record)
    }
    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        (**self).revoke(key_id, at)
    }
    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        (**self).set_expiry(key_id, expires_at)
    }
    fn update(
        &self,
        key_id: &KeyId,
        change: KeyUpdate,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        (**self).update(key_id, change)
    }
    fn delete(&self, key_id: &KeyId) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        (**self).delete(key_id)
    }
    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        (**self).list_keys(principal_id)
    }
    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        (**self).list_principals()
    }
    fn issue(&self, grant: KeyGrant) -> BackendFuture<'_, Result<IssuedKey, RegistryError>> {
        (**self).issue(grant)
    }
    fn register_key(
        &self,
        key: &ApiKey,
        grant: KeyGrant,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        (**self).register_key(key, grant)
    }
    fn rotate(
        &self,
        key_id: &KeyId,
        overlap: Duration,
    ) -> BackendFuture<'_, Result<IssuedKey, RegistryError>> {
        (**self).rotate(key_id, overlap)
    }
}
