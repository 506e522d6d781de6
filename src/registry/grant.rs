//! [`KeyGrant`]: what a new key is granted, and [`IssuedKey`]: a key just made.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{DEFAULT_TIER, KeyRecord, RegistryError};
use crate::{ApiKey, KeyDigest, KeyId, KeyPrefix, key::ParsedKey};

/// What a new key is granted: used by [`KeyRegistry::issue`](super::KeyRegistry::issue) and
/// [`KeyRegistry::register_key`](super::KeyRegistry::register_key).
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
    pub(super) prefix: KeyPrefix,
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
    /// an opaque key gets a new key id and no prefix. (For [`KeyRegistry::register_key`](super::KeyRegistry::register_key)
    /// and [`InMemoryRegistry::insert_key`](super::InMemoryRegistry::insert_key).)
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
    pub(super) fn from_record(record: &KeyRecord) -> Self {
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
