//! Who is calling.
//!
//! The guard inserts a [`Principal`] into the request extensions of every admitted request
//! that presented a credential. Handlers read it from there (with axum:
//! `Extension<Principal>`), whichever credential was used: an API key or (feature `jwt`) a
//! JWT access token.

use std::sync::Arc;

use crate::{KeyId, KeyRecord, Rejection};

/// Which kind of credential a caller presented.
///
/// Serialized as `"api_key"` or `"jwt"` (in audit records).
///
/// ```
/// use keygate::CredentialKind;
///
/// assert_eq!(CredentialKind::Jwt.as_str(), "jwt");
/// assert_eq!(serde_json::to_string(&CredentialKind::ApiKey)?, r#""api_key""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// An API key, looked up in the registry.
    ApiKey,
    /// A JWT access token, verified by the guard's JWT verifier.
    Jwt,
}

impl CredentialKind {
    /// The word for this kind, as serialized: `api_key` or `jwt`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            CredentialKind::ApiKey => "api_key",
            CredentialKind::Jwt => "jwt",
        }
    }
}

/// What a verified token says about its caller: the claims the guard maps to a
/// [`Principal`]. Holds no secret (never the token's text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    /// The subject (`sub`): the principal id.
    pub subject: String,
    /// The token's id (`jti`), if it has one: what audit records name instead of a key id.
    pub token_id: Option<String>,
    /// The workspaces the token grants.
    pub workspaces: Vec<String>,
    /// The token's scopes.
    pub scopes: Vec<String>,
    /// The quota tier.
    pub tier: String,
    /// When the token expires (`exp`): a [live session](crate::session) on it ends then.
    pub expires_at: Option<time::OffsetDateTime>,
}

#[derive(Clone, Debug)]
enum Caller {
    Key(Arc<KeyRecord>),
    Token(Arc<TokenIdentity>),
}

/// The authenticated caller: the principal id, the credential it used, its workspaces,
/// scopes and quota tier.
///
/// Cheap to clone (one `Arc`). Holds no secret. A handler checks what the caller may do:
///
/// ```
/// use keygate::{CredentialKind, KeyDigest, KeyId, KeyRecord, Principal, Rejection};
///
/// // The guard makes it from the key's record; a test can too.
/// let record = KeyRecord::new(KeyId::generate()?, KeyDigest::of(b"..."), "coordinator-1")
///     .with_workspaces(["ws-a"])
///     .with_scopes(["jobs:write"]);
/// let principal = Principal::new(record.into());
///
/// assert_eq!(principal.id(), "coordinator-1");
/// assert_eq!(principal.credential_kind(), CredentialKind::ApiKey);
/// assert!(principal.key_id().is_some());
/// assert!(principal.require_scope("jobs:write").is_ok());
/// assert!(principal.require_workspace("ws-a").is_ok());
/// assert_eq!(principal.require_workspace("ws-b"), Err(Rejection::WorkspaceForbidden));
/// # Ok::<(), keygate::KeyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Principal {
    caller: Caller,
}

impl Principal {
    /// The principal behind a key record.
    #[must_use]
    pub fn new(record: Arc<KeyRecord>) -> Self {
        Self {
            caller: Caller::Key(record),
        }
    }

    /// The principal behind a verified token (the guard's JWT verifier makes it; a test
    /// can too).
    ///
    /// ```
    /// use keygate::{CredentialKind, Principal, TokenIdentity};
    ///
    /// let principal = Principal::from_token(TokenIdentity {
    ///     subject: "user-42".into(),
    ///     token_id: Some("8f2c".into()),
    ///     workspaces: vec!["ws-a".into()],
    ///     scopes: vec!["packs:read".into()],
    ///     tier: "default".into(),
    ///     expires_at: None,
    /// });
    /// assert_eq!(principal.id(), "user-42");
    /// assert_eq!(principal.credential_kind(), CredentialKind::Jwt);
    /// assert_eq!(principal.key_id(), None);
    /// assert_eq!(principal.token_id(), Some("8f2c"));
    /// assert!(principal.has_scope("packs:read"));
    /// ```
    #[must_use]
    pub fn from_token(identity: TokenIdentity) -> Self {
        Self {
            caller: Caller::Token(Arc::new(identity)),
        }
    }

    /// The principal's id, e.g. `coordinator-1` (a token's subject).
    #[must_use]
    pub fn id(&self) -> &str {
        match &self.caller {
            Caller::Key(record) => &record.principal_id,
            Caller::Token(token) => &token.subject,
        }
    }

    /// Which kind of credential this request used.
    #[must_use]
    pub fn credential_kind(&self) -> CredentialKind {
        match &self.caller {
            Caller::Key(_) => CredentialKind::ApiKey,
            Caller::Token(_) => CredentialKind::Jwt,
        }
    }

    /// The id of the API key this request used; `None` for a token.
    #[must_use]
    pub fn key_id(&self) -> Option<KeyId> {
        match &self.caller {
            Caller::Key(record) => Some(record.key_id),
            Caller::Token(_) => None,
        }
    }

    /// The id (`jti`) of the token this request used; `None` for an API key or a token
    /// without one.
    #[must_use]
    pub fn token_id(&self) -> Option<&str> {
        match &self.caller {
            Caller::Key(_) => None,
            Caller::Token(token) => token.token_id.as_deref(),
        }
    }

    /// What the rate limit counts under when it counts per key: the key id, or for a
    /// token the principal id (a token is not a long-lived key).
    pub(crate) fn key_id_str(&self) -> &str {
        match &self.caller {
            Caller::Key(record) => record.key_id.as_str(),
            Caller::Token(token) => &token.subject,
        }
    }

    /// The workspaces the caller may use.
    #[must_use]
    pub fn workspaces(&self) -> &[String] {
        match &self.caller {
            Caller::Key(record) => &record.workspaces,
            Caller::Token(token) => &token.workspaces,
        }
    }

    /// The caller's scopes.
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        match &self.caller {
            Caller::Key(record) => &record.scopes,
            Caller::Token(token) => &token.scopes,
        }
    }

    /// The caller's quota tier.
    #[must_use]
    pub fn tier(&self) -> &str {
        match &self.caller {
            Caller::Key(record) => &record.tier,
            Caller::Token(token) => &token.tier,
        }
    }

    /// The whole key record (no secret in it); `None` for a token.
    #[must_use]
    pub fn record(&self) -> Option<&Arc<KeyRecord>> {
        match &self.caller {
            Caller::Key(record) => Some(record),
            Caller::Token(_) => None,
        }
    }

    /// What a verified token said; `None` for an API key.
    #[must_use]
    pub fn token(&self) -> Option<&TokenIdentity> {
        match &self.caller {
            Caller::Key(_) => None,
            Caller::Token(token) => Some(token),
        }
    }

    /// Whether the caller holds `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().iter().any(|s| s == scope)
    }

    /// Whether the caller may use `workspace`.
    #[must_use]
    pub fn may_use_workspace(&self, workspace: &str) -> bool {
        self.workspaces().iter().any(|w| w == workspace)
    }

    /// `Ok` if the caller holds `scope`, else 403 `insufficient_scope`.
    ///
    /// # Errors
    ///
    /// [`Rejection::InsufficientScope`] naming `scope` if the caller does not hold it.
    pub fn require_scope(&self, scope: &str) -> Result<(), Rejection> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Rejection::InsufficientScope {
                scope: scope.to_owned().into(),
            })
        }
    }

    /// `Ok` if the caller may use `workspace`, else 403 `workspace_forbidden`. For handlers
    /// that find the workspace in a request body.
    ///
    /// # Errors
    ///
    /// [`Rejection::WorkspaceForbidden`] if the caller may not use `workspace`.
    pub fn require_workspace(&self, workspace: &str) -> Result<(), Rejection> {
        if self.may_use_workspace(workspace) {
            Ok(())
        } else {
            Err(Rejection::WorkspaceForbidden)
        }
    }
}
