//! [`Scope`]: the key must hold a scope.

use std::borrow::Cow;

use http::Request;

use super::{Refusal, Require, RequirePolicy};
use crate::{JsonRejection, Principal, Rejection};

/// [`Require`] a scope: for sub-routers that only some keys may use (e.g. admin routes).
///
/// A request whose [`Principal`] lacks the scope, or that has no principal at all, is
/// refused with 403 `insufficient_scope`.
///
/// ```
/// use axum::{Router, routing::post};
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, require::RequireScope};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let admin = ApiKey::new("an-admin-key-of-at-least-32-characters")?;
/// let guard = ApiKeyGuard::builder()
///     .key(admin, KeyGrant::new("admin").scopes(["admin"]))
///     .build()?;
/// let admin_routes: Router = Router::new()
///     .route("/admin/coordinators", post(|| async { "created" }))
///     .layer(RequireScope::new("admin"));
/// let app: Router = Router::new().merge(admin_routes).layer(guard);
/// # let _ = app; Ok(()) }
/// ```
pub type RequireScope<R = JsonRejection> = Require<Scope, R>;

impl Require<Scope> {
    /// Requires `scope`.
    #[must_use]
    pub fn new(scope: impl Into<Cow<'static, str>>) -> Self {
        Self::custom(Scope::new(scope))
    }
}

/// The policy of [`RequireScope`]: the [`Principal`] must hold a scope.
///
/// ```
/// use http::Request;
/// use keygate::require::{RequirePolicy, Scope};
///
/// let refusal = Scope::new("admin").check(&Request::new(()), None).unwrap_err();
/// assert_eq!(refusal.rejection().reason(), "insufficient_scope");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    scope: Cow<'static, str>,
}

impl Scope {
    /// Requires `scope`.
    #[must_use]
    pub fn new(scope: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scope: scope.into(),
        }
    }

    /// The scope required.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.scope
    }
}

impl<B> RequirePolicy<B> for Scope {
    fn check(&self, _request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal> {
        if principal.is_some_and(|p| p.has_scope(&self.scope)) {
            Ok(())
        } else {
            Err(Refusal::new(Rejection::InsufficientScope {
                scope: self.scope.clone(),
            }))
        }
    }
}
