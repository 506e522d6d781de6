//! [`RequireService`]: the service made by [`Require`].

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{Require, RequirePolicy, ResponseFuture, audit::audit_refusal};
use crate::{Principal, RenderRejection};

/// The service made by [`Require`]: checks each request with the policy `P` and either
/// calls the inner service `S` or answers with the refusal, rendered by `R`.
///
/// ```
/// use http::{Request, Response};
/// use keygate::require::RequireScope;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let service = RequireScope::new("admin").layer(service_fn(|_: Request<String>| async {
///     Ok::<_, std::convert::Infallible>(Response::new(String::from("ok")))
/// }));
/// // No guard in front, so no principal: refused.
/// let response = service.oneshot(Request::new(String::new())).await?;
/// assert_eq!(response.status(), 403);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RequireService<S, P, R> {
    inner: S,
    require: Require<P, R>,
}

impl<S, P, R> RequireService<S, P, R> {
    pub(super) fn new(inner: S, require: Require<P, R>) -> Self {
        Self { inner, require }
    }

    inner_service_accessors!();
}

impl<S, P, R, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S, P, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    P: RequirePolicy<ReqBody>,
    R: RenderRejection<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let principal = request.extensions().get::<Principal>();
        match self.require.policy.check(&request, principal) {
            Ok(()) => ResponseFuture::future(self.inner.call(request)),
            Err(refusal) => {
                let rejection = refusal.rejection();
                if let Some(sink) = &self.require.audit {
                    audit_refusal(sink.as_ref(), &request, rejection, refusal.workspace());
                }
                ResponseFuture::reject(rejection.to_response(&self.require.renderer, None))
            }
        }
    }
}
