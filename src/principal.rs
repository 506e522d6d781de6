//! Who is calling.
//!
//! The guard inserts a [`Principal`] into the request extensions of every admitted request
//! that presented a key. Handlers read it from there (with axum: `Extension<Principal>`).

use std::sync::Arc;

use crate::{KeyId, KeyRecord, Rejection};

/// The authenticated caller: the principal id, the key it used, its workspaces, scopes
/// and quota tier.
///
/// Cheap to clone (one `Arc`). Holds no secret. A handler checks what the key may do:
///
/// ```
/// use keygate::{KeyDigest, KeyId, KeyRecord, Principal, Rejection};
///
/// // The guard makes it from the key's record; a test can too.
/// let record = KeyRecord::new(KeyId::generate()?, KeyDigest::of(b"..."), "coordinator-1")
///     .with_workspaces(["ws-a"])
///     .with_scopes(["jobs:write"]);
/// let principal = Principal::new(record.into());
///
/// assert_eq!(principal.id(), "coordinator-1");
/// assert!(principal.require_scope("jobs:write").is_ok());
/// assert!(principal.require_workspace("ws-a").is_ok());
/// assert_eq!(principal.require_workspace("ws-b"), Err(Rejection::WorkspaceForbidden));
/// # Ok::<(), keygate::KeyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Principal {
    record: Arc<KeyRecord>,
}

impl Principal {
    /// The principal behind a key record.
    #[must_use]
    pub fn new(record: Arc<KeyRecord>) -> Self {
        Self { record }
    }

    /// The principal's id, e.g. `coordinator-1`.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.record.principal_id
    }

    /// The id of the key this request used.
    #[must_use]
    pub fn key_id(&self) -> KeyId {
        self.record.key_id
    }

    pub(crate) fn key_id_str(&self) -> &str {
        self.record.key_id.as_str()
    }

    /// The workspaces the key may use.
    #[must_use]
    pub fn workspaces(&self) -> &[String] {
        &self.record.workspaces
    }

    /// The key's scopes.
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.record.scopes
    }

    /// The key's quota tier.
    #[must_use]
    pub fn tier(&self) -> &str {
        &self.record.tier
    }

    /// The whole key record (no secret in it).
    #[must_use]
    pub fn record(&self) -> &Arc<KeyRecord> {
        &self.record
    }

    /// Whether the key holds `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.record.scopes.iter().any(|s| s == scope)
    }

    /// Whether the key may use `workspace`.
    #[must_use]
    pub fn may_use_workspace(&self, workspace: &str) -> bool {
        self.record.workspaces.iter().any(|w| w == workspace)
    }

    /// `Ok` if the key holds `scope`, else 403 `insufficient_scope`.
    ///
    /// # Errors
    ///
    /// [`Rejection::InsufficientScope`] naming `scope` if the key does not hold it.
    pub fn require_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope {
                scope: scope.to_owned().into(),
            })
        }
    }

    /// `Ok` if the key may use `workspace`, else 403 `workspace_forbidden`. For handlers
    /// that find the workspace in a request body.
    ///
    /// # Errors
    ///
    /// [`Rejection::WorkspaceForbidden`] if the key may not use `workspace`.
    pub fn require_workspace(&self, workspace: &str) -> Result<(), Rejection> {
        if self.may_use_workspace(workspace) {
            Ok(())
        } else {
            Err(Rejection::WorkspaceForbidden)
        }
    }
}
