//! [`Workspace`]: the workspace a request names must be one the key may use.

use std::borrow::Cow;

use http::{HeaderName, Request};

use super::{PathTemplate, PathTemplateError, Refusal, Require, RequirePolicy};
use crate::{JsonRejection, Principal, Rejection};

/// [`Require`] that the workspace a request names is one the caller's key may use, else
/// 403 `workspace_forbidden`.
///
/// The workspace is read from a header, from a route's path parameter
/// (`/workspaces/{ws}/...`, read as the router extracts it), from the path segment that
/// follows a fixed one, or from a query parameter ([`WorkspaceSource`]). A request
/// that names no workspace, names it twice, or has no [`Principal`] is refused too (deny
/// by default). Handlers that find the workspace in a request body call
/// [`Principal::require_workspace`] instead.
///
/// ```
/// use axum::{Router, routing::get};
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, require::RequireWorkspace};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let key = ApiKey::new("a-coordinator-key-of-at-least-32-chars")?;
/// let guard = ApiKeyGuard::builder()
///     .key(key, KeyGrant::new("coordinator").workspaces(["ws-1"]))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/workspaces/{ws}/jobs", get(|| async { "jobs" }))
///     .route_layer(RequireWorkspace::path_param("/workspaces/{ws}/jobs", "ws"))
///     .layer(guard);
/// # let _ = app; Ok(()) }
/// ```
pub type RequireWorkspace<R = JsonRejection> = Require<Workspace, R>;

impl Require<Workspace> {
    /// Reads the workspace from `source`.
    ///
    /// ```
    /// use keygate::require::{RequireWorkspace, WorkspaceSource};
    ///
    /// let layer = RequireWorkspace::new(WorkspaceSource::Query("workspaceId".to_owned()));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn new(source: WorkspaceSource) -> Self {
        Self::custom(Workspace::new(source))
    }

    /// Reads the workspace from a header.
    ///
    /// # Panics
    ///
    /// On an invalid header name, like `HeaderName::from_static`; use
    /// [`RequireWorkspace::new`] to build one at run time.
    #[must_use]
    pub fn header(name: &'static str) -> Self {
        Self::new(WorkspaceSource::Header(HeaderName::from_static(name)))
    }

    /// Reads the workspace from parameter `param` of the route `template`
    /// (`/workspaces/{ws}/jobs`), as the router extracts it ([`PathTemplate`]). Give the
    /// route's own template and add the layer to that route (axum: `route_layer`), so that
    /// both read the same segment; under `Router::nest`, the template is the path the
    /// nested router sees.
    ///
    /// # Panics
    ///
    /// On an invalid template or a `param` it does not have (see [`PathTemplate::new`]);
    /// use [`RequireWorkspace::new`] with [`WorkspaceSource::path_param`] to build one at
    /// run time.
    #[must_use]
    pub fn path_param(template: &str, param: &str) -> Self {
        match WorkspaceSource::path_param(template, param) {
            Ok(source) => Self::new(source),
            Err(error) => panic!("keygate: {error}"),
        }
    }

    /// Reads the workspace from the path segment after `marker`, in a path where `marker`
    /// appears once. A path with `marker` twice names no workspace (so it is refused): the
    /// router could extract either. Prefer [`path_param`](Self::path_param), which reads
    /// exactly what the router extracts.
    #[must_use]
    pub fn path_segment_after(marker: &str) -> Self {
        Self::new(WorkspaceSource::PathSegmentAfter(marker.to_owned()))
    }

    /// Reads the workspace from a query parameter.
    #[must_use]
    pub fn query(name: &str) -> Self {
        Self::new(WorkspaceSource::Query(name.to_owned()))
    }
}

/// Where a request names its workspace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkspaceSource {
    /// A header, e.g. `X-Workspace-Id`.
    Header(HeaderName),
    /// A route's path parameter, read as the router extracts it ([`PathTemplate`]).
    PathParam(PathTemplate),
    /// The path segment right after the segment equal to this one, e.g. `workspaces` in
    /// `/workspaces/ws-1/jobs`. A path with this segment twice names none.
    PathSegmentAfter(String),
    /// A query parameter, e.g. `workspaceId`.
    Query(String),
}

impl WorkspaceSource {
    /// Parameter `param` of the route `template`.
    ///
    /// # Errors
    ///
    /// [`PathTemplateError`] as [`PathTemplate::new`] gives it.
    pub fn path_param(template: &str, param: &str) -> Result<Self, PathTemplateError> {
        PathTemplate::new(template, param).map(Self::PathParam)
    }

    /// The workspace `request` names, if it names exactly one (a header or query parameter
    /// given twice, or a header that is not text, names none).
    fn read<'a, B>(&self, request: &'a Request<B>) -> Option<Cow<'a, str>> {
        match self {
            WorkspaceSource::Header(name) => {
                let mut values = request.headers().get_all(name).iter();
                let value = values.next()?;
                if values.next().is_some() {
                    return None;
                }
                value.to_str().ok().map(Cow::Borrowed)
            }
            WorkspaceSource::PathParam(template) => template.capture(request.uri().path()),
            WorkspaceSource::PathSegmentAfter(marker) => {
                let mut segments = request.uri().path().split('/');
                segments.find(|segment| segment == marker)?;
                let workspace = segments.next().filter(|s| !s.is_empty())?;
                if segments.any(|segment| segment == marker) {
                    return None;
                }
                Some(Cow::Borrowed(workspace))
            }
            WorkspaceSource::Query(name) => {
                let query = request.uri().query()?;
                let mut found = None;
                for (key, value) in form_urlencoded::parse(query.as_bytes()) {
                    if key == name.as_str() {
                        if found.is_some() {
                            return None;
                        }
                        found = Some(value);
                    }
                }
                found
            }
        }
    }
}

/// The policy of [`RequireWorkspace`]: the workspace a request names (see
/// [`WorkspaceSource`]) must be one the [`Principal`] may use. The audit record of a
/// refusal names the workspace asked for.
///
/// ```
/// use http::Request;
/// use keygate::require::{RequirePolicy, Workspace, WorkspaceSource};
///
/// let policy = Workspace::new(WorkspaceSource::PathSegmentAfter("workspaces".to_owned()));
/// let request = Request::get("/workspaces/ws-2/jobs").body(())?;
/// let refusal = policy.check(&request, None).unwrap_err();
/// assert_eq!(refusal.rejection().reason(), "workspace_forbidden");
/// assert_eq!(refusal.workspace(), Some("ws-2"));
/// # Ok::<(), http::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workspace {
    source: WorkspaceSource,
}

impl Workspace {
    /// Reads the workspace from `source`.
    #[must_use]
    pub fn new(source: WorkspaceSource) -> Self {
        Self { source }
    }

    /// Where the workspace is read from.
    #[must_use]
    pub fn source(&self) -> &WorkspaceSource {
        &self.source
    }
}

impl<B> RequirePolicy<B> for Workspace {
    fn check(&self, request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal> {
        let workspace = self.source.read(request);
        match (workspace, principal) {
            (Some(workspace), Some(principal)) if principal.may_use_workspace(&workspace) => Ok(()),
            (Some(workspace), _) => {
                Err(Refusal::new(Rejection::WorkspaceForbidden).with_workspace(workspace))
            }
            (None, _) => Err(Refusal::new(Rejection::WorkspaceForbidden)),
        }
    }
}
