//! [`KeyUpdate`]: a change of a key's scopes, workspaces or tier.

use super::KeyRecord;

/// A change of a key's scopes, workspaces or tier, for
/// [`KeyRegistry::update`](super::KeyRegistry::update). What is not set stays as it is.
///
/// A builder: every setter takes and returns the update.
///
/// ```
/// use keygate::{InMemoryRegistry, KeyGrant, KeyRegistry, KeyUpdate};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = InMemoryRegistry::new();
/// let issued = registry.issue(KeyGrant::new("coordinator-1").scopes(["jobs"])).await?;
///
/// let change = KeyUpdate::new().workspaces(["ws-a", "ws-b"]).tier("gold");
/// let record = registry.update(&issued.record.key_id, change).await?;
/// assert_eq!(record.workspaces, ["ws-a", "ws-b"]);
/// assert_eq!(record.tier, "gold");
/// assert_eq!(record.scopes, ["jobs"]); // not named, so unchanged
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct KeyUpdate {
    pub(crate) scopes: Option<Vec<String>>,
    pub(crate) workspaces: Option<Vec<String>>,
    pub(crate) tier: Option<String>,
}

impl KeyUpdate {
    /// An update that changes nothing (yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the key's scopes.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the key's workspaces.
    pub fn workspaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, ws: I) -> Self {
        self.workspaces = Some(ws.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the key's quota tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// Whether the update changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.scopes.is_none() && self.workspaces.is_none() && self.tier.is_none()
    }

    /// Applies the update to `record`.
    pub(crate) fn apply(&self, record: &mut KeyRecord) {
        if let Some(scopes) = &self.scopes {
            record.scopes.clone_from(scopes);
        }
        if let Some(workspaces) = &self.workspaces {
            record.workspaces.clone_from(workspaces);
        }
        if let Some(tier) = &self.tier {
            record.tier.clone_from(tier);
        }
    }
}
