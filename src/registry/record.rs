//! [`KeyRecord`]: what a registry knows of one key, and its [`KeyStatus`].

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{KeyDigest, KeyId, KeyPrefix};

/// The tier a key gets unless another is named.
pub const DEFAULT_TIER: &str = "default";

/// What a registry knows of one key. Holds the key's digest, never the key.
///
/// Registries make records from a [`KeyGrant`](super::KeyGrant); a record can also be built directly,
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
    /// successor made by [`KeyRegistry::rotate`](super::KeyRegistry::rotate) gets the same prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<KeyPrefix>,
}

/// Whether a key works at a given moment.
///
/// ```
/// use keygate::{ApiKey, KeyPrefix, KeyRecord, KeyStatus};
/// use time::{Duration, OffsetDateTime};
///
/// let (key, key_id) = ApiKey::generate(&KeyPrefix::default())?;
/// let now = OffsetDateTime::now_utc();
/// let record = KeyRecord::new(key_id, key.digest(), "ci-runner")
///     .with_expiry(Some(now + Duration::days(90)));
/// assert_eq!(record.status_at(now), KeyStatus::Active);
/// assert_eq!(record.status_at(now + Duration::days(91)), KeyStatus::Expired);
/// # Ok::<(), keygate::KeyError>(())
/// ```
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

    /// Marks the key revoked at `at`; a key revoked earlier keeps its earlier time.
    pub(crate) fn revoke_at(&mut self, at: OffsetDateTime) {
        self.revoked_at = Some(self.revoked_at.map_or(at, |old| old.min(at)));
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
