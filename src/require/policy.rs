//! [`RequirePolicy`]: what a [`Require`](super::Require) layer checks, and the
//! [`Refusal`] it answers with.

use http::Request;

use crate::{Principal, Rejection};

/// Decides whether a request may go on, from the request and the [`Principal`] the guard
/// inserted (`None` when there is none: a public path, or no guard in front).
///
/// [`Scope`](super::Scope) and [`Workspace`](super::Workspace) are the policies the crate
/// offers. Any `Fn(&Request<B>, Option<&Principal>) -> Result<(), E>` closure is one too,
/// where `E` is a [`Rejection`] or a [`Refusal`] (write the argument types out, as in the
/// example of [`Require`](super::Require)).
///
/// # Example
///
/// A policy of one's own: reads need `jobs:read`, everything else `jobs:write`.
///
/// ```
/// use http::{Method, Request, Response};
/// use keygate::{KeyDigest, KeyId, KeyRecord, Principal, Rejection};
/// use keygate::require::{Refusal, Require, RequirePolicy};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// #[derive(Clone, Debug)]
/// struct ReadOrWrite;
///
/// impl<B> RequirePolicy<B> for ReadOrWrite {
///     fn check(&self, request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal> {
///         let scope = if request.method() == Method::GET { "jobs:read" } else { "jobs:write" };
///         if principal.is_some_and(|p| p.has_scope(scope)) {
///             Ok(())
///         } else {
///             Err(Rejection::InsufficientScope { scope: scope.into() }.into())
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let handler = service_fn(|_: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
/// });
/// let record = KeyRecord::new(KeyId::generate()?, KeyDigest::of(b"..."), "reader")
///     .with_scopes(["jobs:read"]);
/// let mut request = Request::post("/jobs").body(String::new())?;
/// request.extensions_mut().insert(Principal::new(record.into()));
///
/// let response = Require::custom(ReadOrWrite).layer(handler).oneshot(request).await?;
/// assert_eq!(response.status(), 403);
/// # Ok(()) }
/// ```
pub trait RequirePolicy<B> {
    /// `Ok` lets the request through; a [`Refusal`] answers it.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] when the request may not go on.
    fn check(&self, request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal>;
}

impl<B, F, E> RequirePolicy<B> for F
where
    F: Fn(&Request<B>, Option<&Principal>) -> Result<(), E>,
    E: Into<Refusal>,
{
    fn check(&self, request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal> {
        self(request, principal).map_err(Into::into)
    }
}

/// A policy's answer to a request it refuses: the [`Rejection`] the caller gets, and what
/// the audit record of the refusal names beyond the request itself (the workspace).
///
/// Made from a [`Rejection`] with `From`, so `?` on [`Principal::require_scope`] and
/// [`Principal::require_workspace`] gives one.
///
/// ```
/// use keygate::{Rejection, require::Refusal};
///
/// let refusal = Refusal::from(Rejection::WorkspaceForbidden).with_workspace("ws-2");
/// assert_eq!(refusal.rejection().reason(), "workspace_forbidden");
/// assert_eq!(refusal.workspace(), Some("ws-2"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    rejection: Rejection,
    workspace: Option<String>,
}

impl Refusal {
    /// Refuses with `rejection`.
    #[must_use]
    pub fn new(rejection: Rejection) -> Self {
        Self {
            rejection,
            workspace: None,
        }
    }

    /// Names the workspace the refused request concerns, for the audit record.
    #[must_use]
    pub fn with_workspace(mut self, workspace: impl Into<String>) -> Self {
        self.workspace = Some(workspace.into());
        self
    }

    /// What the caller gets.
    #[must_use]
    pub fn rejection(&self) -> &Rejection {
        &self.rejection
    }

    /// The workspace the refused request concerns, if the policy named one.
    #[must_use]
    pub fn workspace(&self) -> Option<&str> {
        self.workspace.as_deref()
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        Self::new(rejection)
    }
}
