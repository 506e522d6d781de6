//! [`RequireScope`]: a layer for sub-routers that only some keys may use (e.g. admin
//! routes).
//!
//! It sits behind the [`ApiKeyGuard`](crate::ApiKeyGuard) and reads the
//! [`Principal`] the guard inserted. A request without the scope, or without a principal at
//! all, is refused with 403 `insufficient_scope`.
//!
//! ```
//! use axum::{Router, routing::post};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, scope::RequireScope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let admin = ApiKey::new("an-admin-key-of-at-least-32-characters")?;
//! let guard = ApiKeyGuard::builder()
//!     .key(admin, KeyGrant::new("admin").scopes(["admin"]))
//!     .build()?;
//! let admin_routes: Router = Router::new()
//!     .route("/admin/coordinators", post(|| async { "created" }))
//!     .layer(RequireScope::new("admin"));
//! let app: Router = Router::new().merge(admin_routes).layer(guard);
//! # let _ = app; Ok(()) }
//! ```

use std::{
    borrow::Cow,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    AuditSink, JsonRejection, Principal, Rejection, RenderRejection,
    gate::{GateFuture, audit_refusal},
};

/// Refuses requests whose [`Principal`] lacks a scope. See the [module docs](self).
#[derive(Clone)]
pub struct RequireScope<R = JsonRejection> {
    scope: Cow<'static, str>,
    renderer: R,
    audit: Option<Arc<dyn AuditSink>>,
}

impl RequireScope {
    /// Requires `scope`.
    pub fn new(scope: impl Into<Cow<'static, str>>) -> Self {
        Self {
            scope: scope.into(),
            renderer: JsonRejection,
            audit: None,
        }
    }
}

impl<R> RequireScope<R> {
    /// Renders refusals with `renderer`.
    pub fn render_with<R2>(self, renderer: R2) -> RequireScope<R2> {
        RequireScope {
            scope: self.scope,
            renderer,
            audit: self.audit,
        }
    }

    /// Records refusals in `sink`.
    pub fn audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }
}

impl<R: fmt::Debug> fmt::Debug for RequireScope<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScope")
            .field("scope", &self.scope)
            .field("renderer", &self.renderer)
            .field("audit", &self.audit)
            .finish()
    }
}

impl<S, R: Clone> Layer<S> for RequireScope<R> {
    type Service = RequireScopeService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopeService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RequireScope`].
#[derive(Clone)]
pub struct RequireScopeService<S, R> {
    inner: S,
    layer: RequireScope<R>,
}

impl<S, R> RequireScopeService<S, R> {
    inner_service_accessors!();
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for RequireScopeService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopeService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireScopeService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RenderRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = GateFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let allowed = request
            .extensions()
            .get::<Principal>()
            .is_some_and(|p| p.has_scope(&self.layer.scope));
        if allowed {
            return GateFuture::inner(self.inner.call(request));
        }
        let rejection = Rejection::InsufficientScope {
            scope: self.layer.scope.clone(),
        };
        audit_refusal(self.layer.audit.as_ref(), &request, &rejection, None);
        GateFuture::rejected(rejection.to_response(&self.layer.renderer, None))
    }
}
