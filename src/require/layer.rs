//! [`Require`]: the layer.

use std::sync::Arc;

use tower_layer::Layer;

use super::RequireService;
use crate::{AuditSink, JsonRejection};

/// Lets a request through to the inner service only if the [policy](super::RequirePolicy)
/// `P` allows it; answers any other with the policy's [`Rejection`](crate::Rejection),
/// rendered by `R`, and records the refusal in the [audit sink](Require::audit) if it has
/// one.
///
/// [`RequireScope`](super::RequireScope) and [`RequireWorkspace`](super::RequireWorkspace)
/// are the two policies of the crate; [`Require::custom`] takes any other.
///
/// ```
/// use http::{Request, Response};
/// use keygate::{KeyDigest, KeyId, KeyRecord, Principal, Rejection, audit::MemorySink};
/// use keygate::require::Require;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Only the `ops` principal may call.
/// let audit = MemorySink::new();
/// let ops_only = Require::custom(|_: &Request<String>, principal: Option<&Principal>| {
///     match principal {
///         Some(principal) if principal.id() == "ops" => Ok(()),
///         _ => Err(Rejection::InsufficientScope { scope: "ops".into() }),
///     }
/// })
/// .audit(audit.clone());
/// let service = ops_only.layer(service_fn(|_: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
/// }));
///
/// let record = KeyRecord::new(KeyId::generate()?, KeyDigest::of(b"..."), "reporting");
/// let mut request = Request::get("/ops/drain").body(String::new())?;
/// request.extensions_mut().insert(Principal::new(record.into()));
/// let response = service.oneshot(request).await?;
///
/// assert_eq!(response.status(), 403);
/// assert_eq!(audit.events()[0].principal_id.as_deref(), Some("reporting"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Require<P, R = JsonRejection> {
    pub(super) policy: P,
    pub(super) renderer: R,
    pub(super) audit: Option<Arc<dyn AuditSink>>,
}

impl<P> Require<P> {
    /// Requires what `policy` allows; refusals are rendered as JSON ([`JsonRejection`]) and
    /// not audited.
    #[must_use]
    pub const fn custom(policy: P) -> Self {
        Self {
            policy,
            renderer: JsonRejection,
            audit: None,
        }
    }
}

impl<P, R> Require<P, R> {
    /// Renders refusals with `renderer` (see [`RenderRejection`](crate::RenderRejection)).
    ///
    /// ```
    /// use keygate::{EmptyRejection, require::RequireScope};
    ///
    /// let layer = RequireScope::new("admin").render_with(EmptyRejection);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn render_with<R2>(self, renderer: R2) -> Require<P, R2> {
        Require {
            policy: self.policy,
            renderer,
            audit: self.audit,
        }
    }

    /// Records refusals in `sink`. An `Arc` of a sink is a sink too, so one sink can be
    /// shared with the guard and the handlers.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use keygate::{AuditSink, audit::TracingSink, require::RequireScope};
    ///
    /// let shared: Arc<dyn AuditSink> = Arc::new(TracingSink::new());
    /// let layer = RequireScope::new("admin").audit(Arc::clone(&shared));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn audit(mut self, sink: impl AuditSink) -> Self {
        self.audit = Some(Arc::new(sink));
        self
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<S, P: Clone, R: Clone> Layer<S> for Require<P, R> {
    type Service = RequireService<S, P, R>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService::new(inner, self.clone())
    }
}
