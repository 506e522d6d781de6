//! [`RequireWorkspace`]: a layer that refuses requests for a workspace the caller's key may
//! not use (403 `workspace_forbidden`).
//!
//! The workspace is read from a header, from the path segment that follows a fixed one
//! (`/workspaces/{id}/...`), or from a query parameter. A request that names no workspace
//! is refused too (deny by default). Handlers that find the workspace in a request body
//! call [`Principal::require_workspace`] instead.
//!
//! ```
//! use axum::{Router, routing::get};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, workspace::RequireWorkspace};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::new("a-coordinator-key-of-at-least-32-chars")?;
//! let guard = ApiKeyGuard::builder()
//!     .key(key, KeyGrant::new("coordinator").workspaces(["ws-1"]))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/workspaces/{ws}/jobs", get(|| async { "jobs" }))
//!     .layer(RequireWorkspace::path_segment_after("workspaces"))
//!     .layer(guard);
//! # let _ = app; Ok(()) }
//! ```

use std::{
    borrow::Cow,
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderName, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    AuditSink, JsonRejection, Principal, Rejection, RenderRejection,
    gate::{GateFuture, audit_refusal},
};

/// Where a request names its workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkspaceSource {
    /// A header, e.g. `X-Workspace-Id`.
    Header(HeaderName),
    /// The path segment right after the first segment equal to this one, e.g. `workspaces`
    /// in `/workspaces/ws-1/jobs`.
    PathSegmentAfter(String),
    /// A query parameter, e.g. `workspaceId`.
    Query(String),
}

impl WorkspaceSource {
    fn read<'a, B>(&self, request: &'a Request<B>) -> Result<Option<Cow<'a, str>>, ()> {
        match self {
            WorkspaceSource::Header(name) => {
                let mut values = request.headers().get_all(name).iter();
                let Some(value) = values.next() else {
                    return Ok(None);
                };
                if values.next().is_some() {
                    return Err(());
                }
                value
                    .to_str()
                    .map(|v| Some(Cow::Borrowed(v)))
                    .map_err(|_| ())
            }
            WorkspaceSource::PathSegmentAfter(marker) => {
                let mut segments = request.uri().path().split('/');
                while let Some(segment) = segments.next() {
                    if segment == marker {
                        return Ok(segments.next().filter(|s| !s.is_empty()).map(Cow::Borrowed));
                    }
                }
                Ok(None)
            }
            WorkspaceSource::Query(name) => {
                let Some(query) = request.uri().query() else {
                    return Ok(None);
                };
                let mut found = None;
                for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                    if key == name.as_str() {
                        if found.is_some() {
                            return Err(());
                        }
                        found = Some(value);
                    }
                }
                Ok(found)
            }
        }
    }
}

/// Refuses requests for a workspace the [`Principal`] may not use. See the
/// [module docs](self).
#[derive(Clone)]
pub struct RequireWorkspace<R = JsonRejection> {
    source: WorkspaceSource,
    renderer: R,
    audit: Option<Arc<dyn AuditSink>>,
}

impl RequireWorkspace {
    /// Reads the workspace from `source`.
    pub fn new(source: WorkspaceSource) -> Self {
        Self {
            source,
            renderer: JsonRejection,
            audit: None,
        }
    }

    /// Reads the workspace from a header. Panics on an invalid header name, like
    /// `HeaderName::from_static`; use [`RequireWorkspace::new`] to build one at run time.
    pub fn header(name: &'static str) -> Self {
        Self::new(WorkspaceSource::Header(HeaderName::from_static(name)))
    }

    /// Reads the workspace from the path segment after `marker`.
    pub fn path_segment_after(marker: &str) -> Self {
        Self::new(WorkspaceSource::PathSegmentAfter(marker.to_owned()))
    }

    /// Reads the workspace from a query parameter.
    pub fn query(name: &str) -> Self {
        Self::new(WorkspaceSource::Query(name.to_owned()))
    }
}

impl<R> RequireWorkspace<R> {
    /// Renders refusals with `renderer`.
    pub fn render_with<R2>(self, renderer: R2) -> RequireWorkspace<R2> {
        RequireWorkspace {
            source: self.source,
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

impl<R: fmt::Debug> fmt::Debug for RequireWorkspace<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireWorkspace")
            .field("source", &self.source)
            .field("renderer", &self.renderer)
            .field("audit", &self.audit)
            .finish()
    }
}

impl<S, R: Clone> Layer<S> for RequireWorkspace<R> {
    type Service = RequireWorkspaceService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireWorkspaceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RequireWorkspace`].
#[derive(Clone)]
pub struct RequireWorkspaceService<S, R> {
    inner: S,
    layer: RequireWorkspace<R>,
}

impl<S, R> RequireWorkspaceService<S, R> {
    inner_service_accessors!();
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for RequireWorkspaceService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireWorkspaceService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireWorkspaceService<S, R>
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
        let workspace = self.layer.source.read(&request);
        let allowed = match (&workspace, request.extensions().get::<Principal>()) {
            (Ok(Some(workspace)), Some(principal)) => principal.may_use_workspace(workspace),
            _ => false,
        };
        if allowed {
            return GateFuture::inner(self.inner.call(request));
        }
        let rejection = Rejection::WorkspaceForbidden;
        let named = workspace.ok().flatten().map(Cow::into_owned);
        audit_refusal(
            self.layer.audit.as_ref(),
            &request,
            &rejection,
            named.as_deref(),
        );
        GateFuture::rejected(rejection.to_response(&self.layer.renderer, None))
    }
}
