//! Where keys are kept: the [`KeyRegistry`] trait, [`KeyRecord`], and the
//! [`InMemoryRegistry`].
//!
//! A registry stores [`KeyRecord`]s: a key's SHA-256 digest (never the key), its principal,
//! workspaces, scopes, quota tier and lifetime. The guard asks it for a record by key id
//! (generated keys) or by digest (opaque keys) and compares digests itself, in constant
//! time.

mod memory;

use std::{fmt, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use self::memory::InMemoryRegistry;
use crate::{ApiKey, BackendFuture, KeyDigest, KeyError, KeyId, KeyPrefix, key::ParsedKey};

/// The tier a key gets unless another is named.
pub const DEFAULT_TIER: &str = "default";

/// What a registry knows of one key. Holds the key's digest, never the key.
///
/// Registries make records from a [`KeyGrant`]; a record can also be built directly,
/// e.g. from a store of its own:
///
/// ```
/// use keygate::{ApiKey, KeyId, KeyRecord, KeyStatus};
/// use time::{Duration, OffsetDateTime};
///
/// let key = ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?;
/// let now = OffsetDateTime::now_utc();
/// let record = KeyRecord::new(KeyId::generate()?, key.digest(), "coordinator-1")
///     .with_scopes(["jobs"])
///     .with_expiry(Some(now + Duration::days(30)));
///
/// assert!(record.digest.ct_eq(&key.digest()));
/// assert_eq!(record.tier, "default");
/// assert_eq!(record.status_at(now), KeyStatus::Active);
/// assert_eq!(record.status_at(now + Duration::days(31)), KeyStatus::Expired);
/// # Ok::<(), keygate::KeyError>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's public id.
    pub key_id: KeyId,
    /// SHA-256 of the key.
    pub digest: KeyDigest,
    /// Who holds the key, e.g. `coordinator-1`. A principal may hold several keys.
    pub principal_id: String,
    /// A label for humans, e.g. `rotated 2026-11-23`.
    pub label: String,
    /// The workspaces the key may use.
    pub workspaces: Vec<String>,
    /// The key's scopes, e.g. `admin`.
    pub scopes: Vec<String>,
    /// The quota tier, which picks the key's rate limit.
    pub tier: String,
    /// When the key was registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the key stops working, if ever.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When the key was revoked, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// When the key was last admitted, as far as the registry knows.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    /// The prefix of a generated key (`kg` in `kg_…`); `None` for an opaque key. A
    /// successor made by [`KeyRegistry::rotate`] gets the same prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<KeyPrefix>,
}

/// Whether a key works at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyStatus {
    /// The key works.
    Active,
    /// The key has expired.
    Expired,
    /// The key was revoked.
    Revoked,
}

impl KeyRecord {
    /// A record for an active key of `principal_id`, in the default tier, with no
    /// workspaces or scopes, created now.
    #[must_use]
    pub fn new(key_id: KeyId, digest: KeyDigest, principal_id: impl Into<String>) -> Self {
        Self {
            key_id,
            digest,
            principal_id: principal_id.into(),
            label: String::new(),
            workspaces: Vec::new(),
            scopes: Vec::new(),
            tier: DEFAULT_TIER.to_owned(),
            created_at: OffsetDateTime::now_utc(),
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            prefix: None,
        }
    }

    /// Sets the workspaces.
    #[must_use]
    pub fn with_workspaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ws: I) -> Self {
        self.workspaces = ws.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the scopes.
    #[must_use]
    pub fn with_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the tier.
    #[must_use]
    pub fn with_tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = tier.into();
        self
    }

    /// Sets the label.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Sets the expiry.
    #[must_use]
    pub fn with_expiry(mut self, expires_at: Option<OffsetDateTime>) -> Self {
        self.expires_at = expires_at;
        self
    }

    /// Whether the key works at `now`. Revocation wins over expiry.
    #[must_use]
    pub fn status_at(&self, now: OffsetDateTime) -> KeyStatus {
        if self.revoked_at.is_some_and(|at| at <= now) {
            KeyStatus::Revoked
        } else if self.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    /// Whether the key may ever stop working on its own (it has an expiry or a
    /// scheduled revocation), so the guard must read the clock to decide.
    pub(crate) fn is_time_bound(&self) -> bool {
        self.expires_at.is_some() || self.revoked_at.is_some()
    }
}

/// What a new key is granted: used by [`KeyRegistry::issue`] and
/// [`KeyRegistry::register_key`].
///
/// A builder: every setter takes and returns the grant.
///
/// ```
/// use keygate::{InMemoryRegistry, KeyGrant, KeyPrefix};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let grant = KeyGrant::new("coordinator-1")
///     .workspaces(["ws-a", "ws-b"])
///     .scopes(["jobs:write"])
///     .tier("gold")
///     .label("ci runner")
///     .prefix(KeyPrefix::new("cx")?);
///
/// let registry = InMemoryRegistry::new();
/// let key = keygate::ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?;
/// let record = registry.insert_key(&key, grant)?;
/// assert_eq!(record.workspaces, ["ws-a", "ws-b"]);
/// assert_eq!(record.tier, "gold");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct KeyGrant {
    principal_id: String,
    label: String,
    workspaces: Vec<String>,
    scopes: Vec<String>,
    tier: String,
    expires_at: Option<OffsetDateTime>,
    prefix: KeyPrefix,
}

impl KeyGrant {
    /// A grant for `principal_id`: no workspaces, no scopes, the default tier, no expiry.
    pub fn new(principal_id: impl Into<String>) -> Self {
        Self {
            principal_id: principal_id.into(),
            label: String::new(),
            workspaces: Vec::new(),
            scopes: Vec::new(),
            tier: DEFAULT_TIER.to_owned(),
            expires_at: None,
            prefix: KeyPrefix::default(),
        }
    }

    /// The workspaces the key may use.
    pub fn workspaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ws: I) -> Self {
        self.workspaces = ws.into_iter().map(Into::into).collect();
        self
    }

    /// The key's scopes.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// The key's quota tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = tier.into();
        self
    }

    /// A label for humans.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// When the key stops working.
    pub fn expires_at(mut self, at: OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The prefix of a generated key (default `kg`).
    pub fn prefix(mut self, prefix: KeyPrefix) -> Self {
        self.prefix = prefix;
        self
    }

    pub(crate) fn into_record(mut self, key_id: KeyId, digest: KeyDigest) -> KeyRecord {
        let prefix = Some(std::mem::take(&mut self.prefix));
        self.into_record_with_prefix(key_id, digest, prefix)
    }

    /// The record of `key`, made elsewhere: a generated key keeps its key id and prefix,
    /// an opaque key gets a new key id and no prefix. (For [`KeyRegistry::register_key`]
    /// and [`InMemoryRegistry::insert_key`].)
    pub(crate) fn record_for(self, key: &ApiKey) -> Result<KeyRecord, RegistryError> {
        let (key_id, prefix) = match key.parse()? {
            ParsedKey::Structured { key_id } => {
                // A generated key reads `<prefix>_<key id>_<secret>`.
                let prefix = key
                    .expose_secret()
                    .split_once('_')
                    .and_then(|(prefix, _)| KeyPrefix::new(prefix).ok());
                (key_id, prefix)
            }
            _ => (KeyId::generate()?, None),
        };
        Ok(self.into_record_with_prefix(key_id, key.digest(), prefix))
    }

    fn into_record_with_prefix(
        self,
        key_id: KeyId,
        digest: KeyDigest,
        prefix: Option<KeyPrefix>,
    ) -> KeyRecord {
        KeyRecord {
            key_id,
            digest,
            principal_id: self.principal_id,
            label: self.label,
            workspaces: self.workspaces,
            scopes: self.scopes,
            tier: self.tier,
            created_at: OffsetDateTime::now_utc(),
            expires_at: self.expires_at,
            revoked_at: None,
            last_used_at: None,
            prefix,
        }
    }

    /// The same grant for a successor key (rotation).
    fn from_record(record: &KeyRecord) -> Self {
        Self {
            principal_id: record.principal_id.clone(),
            label: record.label.clone(),
            workspaces: record.workspaces.clone(),
            scopes: record.scopes.clone(),
            tier: record.tier.clone(),
            expires_at: None,
            prefix: record.prefix.clone().unwrap_or_default(),
        }
    }
}

/// A key just made: the key itself, to be shown to its owner once, and its record.
///
/// ```
/// use keygate::{InMemoryRegistry, KeyGrant, KeyRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// let issued = registry.issue(KeyGrant::new("coordinator-1")).await?;
///
/// // Hand `issued.key.expose_secret()` to its owner once; the registry keeps the digest.
/// assert!(issued.key.expose_secret().starts_with("kg_"));
/// assert!(issued.record.digest.ct_eq(&issued.key.digest()));
/// assert_eq!(issued.key.parse()?.key_id(), Some(issued.record.key_id));
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct IssuedKey {
    /// The key. Shown once; never stored.
    pub key: ApiKey,
    /// What the registry keeps.
    pub record: Arc<KeyRecord>,
}

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

/// The answer of a lookup.
pub type LookupFuture = BackendFuture<'static, Result<Option<Arc<KeyRecord>>, RegistryError>>;

/// Where keys are kept.
///
/// ```
/// use std::time::Duration;
///
/// use keygate::{InMemoryRegistry, KeyGrant, KeyRegistry};
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
/// Lookups return a `'static` [`BackendFuture`] (ready at once for in-memory registries),
/// so the guard never boxes on the in-memory path. Management operations borrow the
/// registry.
///
/// Implementations store digests only, answer "not found" with `Ok(None)` and an outage
/// with [`RegistryError::Unavailable`] (a registry outage must never look like a bad key).
pub trait KeyRegistry: Send + Sync + fmt::Debug + 'static {
    /// The record of the generated key with this id.
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture;

    /// The record of the key with this digest (opaque keys are looked up this way).
    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture;

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

    /// Every key of a principal, active or not.
    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>>;

    /// Notes that a key was admitted at `at`. Best effort, called on the request path of
    /// every admitted request: it must be cheap and must not block (a plain
    /// [`SystemTime`](std::time::SystemTime), so that the guard need not turn the clock
    /// into a calendar date on every request). The default does nothing.
    fn mark_used(&self, key_id: &KeyId, at: std::time::SystemTime) {
        let _ = (key_id, at);
    }

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
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        (**self).find_by_id(key_id)
    }
    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        (**self).find_by_digest(digest)
    }
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
    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        (**self).list_keys(principal_id)
    }
    fn mark_used(&self, key_id: &KeyId, at: std::time::SystemTime) {
        (**self).mark_used(key_id, at)
    }
}
