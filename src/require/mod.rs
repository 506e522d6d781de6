//! [`Require`]: a layer for sub-routers that only some keys may use. It lets a request
//! through only if a [`RequirePolicy`] allows it.
//!
//! It sits behind the [`ApiKeyGuard`](crate::ApiKeyGuard) and hands the policy the request
//! and the [`Principal`](crate::Principal) the guard inserted. The crate offers two
//! policies:
//!
//! * [`RequireScope`] (policy [`Scope`]): the key must hold a scope, else 403
//!   `insufficient_scope`;
//! * [`RequireWorkspace`] (policy [`Workspace`]): the workspace a request names in a
//!   header, a route's path parameter or a query parameter must be one the key may use, else 403
//!   `workspace_forbidden`.
//!
//! A third is a type that implements [`RequirePolicy`], or a closure, given to
//! [`Require::custom`]. Whatever the policy, a request without a principal should be
//! refused (deny by default), refusals are rendered as JSON unless
//! [`render_with`](Require::render_with) says otherwise, and recorded in the sink given to
//! [`audit`](Require::audit).
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, audit::MemorySink};
//! use keygate::require::{RequireScope, RequireWorkspace};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let audit = MemorySink::new();
//! let guard = ApiKeyGuard::builder()
//!     .key(
//!         ApiKey::new("a-coordinator-key-of-at-least-32-chars")?,
//!         KeyGrant::new("coordinator").workspaces(["ws-1"]),
//!     )
//!     .key(
//!         ApiKey::new("an-admin-key-of-at-least-32-characters")?,
//!         KeyGrant::new("admin").scopes(["admin"]),
//!     )
//!     .build()?;
//! let admin: Router = Router::new()
//!     .route("/admin/coordinators", post(|| async { "created" }))
//!     .route_layer(RequireScope::new("admin").audit(audit.clone()));
//! let jobs: Router = Router::new()
//!     .route("/workspaces/{ws}/jobs", get(|| async { "jobs" }))
//!     .route_layer(RequireWorkspace::path_param("/workspaces/{ws}/jobs", "ws").audit(audit));
//! let app: Router = admin.merge(jobs).layer(guard);
//! # let _ = app; Ok(()) }
//! ```

mod audit;
mod future;
mod layer;
mod path;
mod policy;
mod scope;
mod service;
mod workspace;

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests;

pub use self::{
    future::ResponseFuture,
    layer::Require,
    path::{PathTemplate, PathTemplateError},
    policy::{Refusal, RequirePolicy},
    scope::{RequireScope, Scope},
    service::RequireService,
    workspace::{RequireWorkspace, Workspace, WorkspaceSource},
};
