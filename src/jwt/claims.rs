//! [`ClaimMapping`]: which claims of a verified token make the caller's
//! [`Principal`](crate::Principal) — subject, scopes, workspaces, tier — and which claim
//! tells an access token from a refresh token.

use serde_json::{Map, Value};

use super::TokenKind;
use crate::{Rejection, TokenIdentity, audit::MAX_FIELD, registry::DEFAULT_TIER};

/// The default claim that holds the token type.
pub const DEFAULT_TYPE_CLAIM: &str = "token_type";
/// The token type of access tokens, the only type the guard admits.
pub const ACCESS_TYPE: &str = "access";
/// The token type of refresh tokens (never admitted by the guard).
pub const REFRESH_TYPE: &str = "refresh";

/// Which claims make the [`Principal`](crate::Principal) of a token caller.
///
/// * the subject (`sub`, required) is the principal id;
/// * the token type claim (default `token_type`, required) must be `access`: a refresh
///   token is refused with 401 `invalid_credentials`;
/// * scopes from the scope claim (default `scope`): a space-separated string (RFC 8693
///   §4.2) or an array of strings;
/// * workspaces from the workspaces claim (default `workspaces`): an array of strings
///   or one string;
/// * the tier from the tier claim if one is named and present, else the default tier
///   (`default`);
/// * the token id (`jti`), if present, for audit records.
///
/// A claim of the wrong type makes the token invalid.
///
/// ```
/// use keygate::jwt::ClaimMapping;
///
/// let mapping = ClaimMapping::default()
///     .scope_claim("scp")
///     .workspaces_claim("tenants")
///     .tier_claim("plan");
/// # let _ = mapping;
/// ```
#[derive(Clone, Debug)]
pub struct ClaimMapping {
    scope: String,
    workspaces: String,
    tier: Option<String>,
    default_tier: String,
    token_type: String,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            scope: "scope".to_owned(),
            workspaces: "workspaces".to_owned(),
            tier: None,
            default_tier: DEFAULT_TIER.to_owned(),
            token_type: DEFAULT_TYPE_CLAIM.to_owned(),
        }
    }
}

impl ClaimMapping {
    /// The claim holding the scopes (default `scope`).
    #[must_use]
    pub fn scope_claim(mut self, name: impl Into<String>) -> Self {
        self.scope = name.into();
        self
    }

    /// The claim holding the workspaces (default `workspaces`).
    #[must_use]
    pub fn workspaces_claim(mut self, name: impl Into<String>) -> Self {
        self.workspaces = name.into();
        self
    }

    /// The claim holding the quota tier (default: none, every token caller gets the
    /// default tier).
    #[must_use]
    pub fn tier_claim(mut self, name: impl Into<String>) -> Self {
        self.tier = Some(name.into());
        self
    }

    /// The tier of a token without a tier claim (default `default`).
    #[must_use]
    pub fn default_tier(mut self, tier: impl Into<String>) -> Self {
        self.default_tier = tier.into();
        self
    }

    /// The claim holding the token type, `access` or `refresh` (default `token_type`).
    #[must_use]
    pub fn token_type_claim(mut self, name: impl Into<String>) -> Self {
        self.token_type = name.into();
        self
    }

    /// The name of the token type claim.
    #[must_use]
    pub fn token_type_name(&self) -> &str {
        &self.token_type
    }

    /// The caller a token of `kind` names, or why the token is refused (always 401
    /// `invalid_credentials`: a token of the other kind, a missing or ill-typed claim).
    pub(super) fn identity(
        &self,
        claims: &Map<String, Value>,
        kind: TokenKind,
    ) -> Result<TokenIdentity, Rejection> {
        let invalid = || Rejection::InvalidCredentials;
        if claims.get(&self.token_type).and_then(Value::as_str) != Some(kind.as_str()) {
            return Err(invalid());
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() && sub.len() <= MAX_FIELD => sub.clone(),
            _ => return Err(invalid()),
        };
        let token_id = match claims.get("jti") {
            None => None,
            Some(Value::String(jti)) if jti.len() <= MAX_FIELD => Some(jti.clone()),
            Some(_) => return Err(invalid()),
        };
        let scopes = strings(claims.get(&self.scope), true).ok_or_else(invalid)?;
        let workspaces = strings(claims.get(&self.workspaces), false).ok_or_else(invalid)?;
        let tier = match self.tier.as_ref().and_then(|name| claims.get(name)) {
            None => self.default_tier.clone(),
            Some(Value::String(tier)) => tier.clone(),
            Some(_) => return Err(invalid()),
        };
        // Checked by the verifier already: present and in the future.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|exp| time::OffsetDateTime::from_unix_timestamp(exp).ok());
        Ok(TokenIdentity {
            subject,
            token_id,
            workspaces,
            scopes,
            tier,
            expires_at,
        })
    }
}

/// A claim read as a list of strings: absent is empty; an array of strings; a string,
/// split on spaces when `split` (OAuth's `scope`), else one entry. `None` for any other
/// type.
fn strings(value: Option<&Value>, split: bool) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(text)) if split => {
            Some(text.split_ascii_whitespace().map(str::to_owned).collect())
        }
        Some(Value::String(text)) => Some(vec![text.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn identity(mapping: &ClaimMapping, claims: Value) -> Result<TokenIdentity, Rejection> {
        let Value::Object(claims) = claims else {
            panic!("not an object")
        };
        mapping.identity(&claims, TokenKind::Access)
    }

    #[test]
    fn scopes_as_a_string_or_an_array_and_workspaces() {
        let mapping = ClaimMapping::default();
        let found = identity(
            &mapping,
            json!({"sub": "u1", "token_type": "access", "jti": "t1",
                   "scope": "packs:read  packs:write", "workspaces": ["ws-a", "ws-b"]}),
        )
        .unwrap();
        assert_eq!(found.subject, "u1");
        assert_eq!(found.token_id.as_deref(), Some("t1"));
        assert_eq!(found.scopes, ["packs:read", "packs:write"]);
        assert_eq!(found.workspaces, ["ws-a", "ws-b"]);
        assert_eq!(found.tier, "default");

        let found = identity(
            &mapping.clone().tier_claim("plan"),
            json!({"sub": "u1", "token_type": "access", "scope": ["a", "b"], "plan": "gold"}),
        )
        .unwrap();
        assert_eq!(found.scopes, ["a", "b"]);
        assert!(found.workspaces.is_empty());
        assert_eq!(found.tier, "gold");
    }

    #[test]
    fn refresh_tokens_missing_and_ill_typed_claims_are_invalid() {
        let mapping = ClaimMapping::default();
        for claims in [
            json!({"sub": "u1", "token_type": "refresh"}),
            json!({"sub": "u1"}),
            json!({"token_type": "access"}),
            json!({"sub": "", "token_type": "access"}),
            json!({"sub": 7, "token_type": "access"}),
            json!({"sub": "u1", "token_type": "access", "scope": 3}),
            json!({"sub": "u1", "token_type": "access", "scope": ["a", 1]}),
            json!({"sub": "u1", "token_type": "access", "workspaces": {"a": 1}}),
            json!({"sub": "u1", "token_type": "access", "jti": 5}),
            json!({"sub": "x".repeat(MAX_FIELD + 1), "token_type": "access"}),
        ] {
            assert_eq!(
                identity(&mapping, claims.clone()),
                Err(Rejection::InvalidCredentials),
                "{claims}"
            );
        }
    }
}
