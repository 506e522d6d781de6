//! The guard's [`Service`] and its response future: one place where the request goes on
//! or the refusal comes back ([`proceed`]).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    GuardConfig,
    decide::{Decision, Started, Verification},
    routes::Access,
};
use crate::{Outcome, Rejection, RenderRejection, audit::RequestFacts, limit::RateLimitDecision};

/// The guard wrapped around an inner service. Made by [`ApiKeyGuard`](super::ApiKeyGuard).
#[derive(Clone)]
pub struct ApiKeyGuardService<S, R> {
    inner: S,
    config: Arc<GuardConfig>,
    renderer: R,
}

impl<S, R> ApiKeyGuardService<S, R> {
    pub(crate) fn new(inner: S, config: Arc<GuardConfig>, renderer: R) -> Self {
        Self {
            inner,
            config,
            renderer,
        }
    }

    inner_service_accessors!();
}

impl<S: fmt::Debug, R: fmt::Debug> fmt::Debug for ApiKeyGuardService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyGuardService")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .field("renderer", &self.renderer)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ApiKeyGuardService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    R: RenderRejection<ResBody> + Clone,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = &*self.config;
        let needs_ip = config.audit.is_some() || config.failed_attempts.is_some();
        let ip = if needs_ip {
            config.client_ip(&request)
        } else {
            None
        };
        let facts = config
            .audit
            .as_ref()
            .map(|_| RequestFacts::of(&request, ip));

        // Credentials are hidden from logging layers further in, on public routes too.
        config.hide_credentials(&mut request);

        // 1. Route policy.
        let access =
            config
                .routes
                .access(request.method(), request.uri().path(), request.headers());
        if *access == Access::Public {
            return self.pass_through(request, facts, "public_route");
        }

        // 2. Credential, 3. failed attempts, and the parts of 4. that need no lookup.
        let extracted = config.credentials.extract(request.headers(), request.uri());
        if *access == Access::Optional && matches!(extracted, Err(Rejection::MissingCredentials)) {
            // Optional authentication, and none offered: on, anonymous.
            return self.pass_through(request, facts, "anonymous");
        }
        let started = match extracted {
            Ok(credential) => Verification::start(config, credential.expose_secret(), ip, access),
            Err(rejection) => Started::Decided(Err(rejection.into())),
        };
        let decision = match started {
            Started::Decided(decision) => decision,
            Started::Waiting(verification) => {
                // A network backend: the decision finishes in the future, which takes the
                // inner service that was driven to readiness (tower's clone-and-swap).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                return ResponseFuture {
                    state: State::Deciding {
                        pending: Some(Box::new(Pending {
                            verification,
                            config: Arc::clone(&self.config),
                            renderer: self.renderer.clone(),
                            inner,
                            request,
                            facts,
                        })),
                    },
                };
            }
        };
        let state = proceed(
            config,
            &self.renderer,
            &mut self.inner,
            request,
            facts,
            decision,
        );
        ResponseFuture { state }
    }
}

impl<S, R> ApiKeyGuardService<S, R> {
    /// Lets a request with no credential to check through (a public route, or an optional
    /// one without a credential), with no principal, and audits it with `reason`.
    fn pass_through<ReqBody>(
        &mut self,
        request: Request<ReqBody>,
        facts: Option<RequestFacts>,
        reason: &'static str,
    ) -> ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        if let (Some(sink), Some(facts)) = (&self.config.audit, facts) {
            sink.record(facts.into_event(Outcome::Admitted).with_reason(reason));
        }
        ResponseFuture::inner(self.inner.call(request), None)
    }
}

/// The one place where a decided request goes on to the inner service, with its
/// principal, or its refusal is rendered.
///
/// Always inlined into its two callers: `scripts/callgrind.sh` counts about 100 to 230
/// fewer instructions per request with it (`refused/missing_key` 973 → 741,
/// `admitted/guard+limiter` 8,886 → 8,773), the moves of the request and the decision
/// being elided.
#[allow(clippy::inline_always, reason = "measured: see above")]
#[inline(always)]
fn proceed<S, ReqBody, ResBody, R>(
    config: &GuardConfig,
    renderer: &R,
    inner: &mut S,
    mut request: Request<ReqBody>,
    facts: Option<RequestFacts>,
    decision: Decision,
) -> State<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RenderRejection<ResBody>,
{
    match config.conclude(decision, facts) {
        Ok(admission) => {
            request.extensions_mut().insert(admission.principal);
            State::Inner {
                future: inner.call(request),
                rate: admission.rate,
            }
        }
        Err(rejection) => State::Rejected {
            response: Some(rejection.to_response(renderer, Some(&config.challenge))),
        },
    }
}

/// What a decision waiting for a network backend keeps.
struct Pending<S, ReqBody, R> {
    verification: Verification,
    config: Arc<GuardConfig>,
    renderer: R,
    inner: S,
    request: Request<ReqBody>,
    facts: Option<RequestFacts>,
}

pin_project! {
    /// The response future of [`ApiKeyGuardService`]: the inner service's response with
    /// the rate-limit headers added, or the refusal.
    ///
    /// With in-memory backends the decision is made in `call`, and nothing is boxed.
    ///
    /// # Panics
    ///
    /// When polled after it completed.
    pub struct ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>>,
    {
        /// Waiting for a network backend's answer.
        Deciding {
            pending: Option<Box<Pending<S, ReqBody, R>>>,
        },
        /// Admitted: the inner service's future.
        Inner {
            #[pin]
            future: S::Future,
            rate: Option<RateLimitDecision>,
        },
        /// Refused.
        Rejected {
            response: Option<S::Response>,
        },
    }
}

impl<S, ReqBody, R> ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn inner(future: S::Future, rate: Option<RateLimitDecision>) -> Self {
        Self {
            state: State::Inner { future, rate },
        }
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Deciding { .. } => "Deciding",
            State::Inner { .. } => "Inner",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, R, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    R: RenderRejection<ResBody>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    #[allow(
        clippy::expect_used,
        reason = "polling after completion is a caller's bug"
    )]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding { pending } => {
                    let waiting = pending
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    let decision = ready!(waiting.verification.poll_with(&waiting.config, cx));
                    let Pending {
                        config,
                        renderer,
                        mut inner,
                        request,
                        facts,
                        ..
                    } = *pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let state = proceed(&config, &renderer, &mut inner, request, facts, decision);
                    this.state.set(state);
                }
                StateProj::Inner { future, rate } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(rate) = rate.take() {
                        rate.headers().apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        future::Future,
        pin::pin,
        task::{Context, Poll, Waker},
    };

    use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
    use tower::{Layer, Service, service_fn};

    use crate::{ApiKey, ApiKeyGuard, KeyGrant};

    const KEY: &str = "a-key-from-openssl-rand-base64-32-xxxxx";

    fn guarded() -> impl Service<
        Request<()>,
        Response = Response<String>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<String>, Infallible>>,
    > {
        let guard = ApiKeyGuard::builder()
            .key(ApiKey::new(KEY).unwrap(), KeyGrant::new("p"))
            .build()
            .unwrap();
        guard.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("inner")))
        }))
    }

    fn poll_twice(request: Request<()>) -> StatusCode {
        let mut service = guarded();
        let mut future = pin!(service.call(request));
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("an in-memory decision is ready at once");
        };
        let status = response.status();
        let _ = future.as_mut().poll(&mut cx);
        status
    }

    #[test]
    #[should_panic(expected = "ResponseFuture polled after completion")]
    fn a_refusal_polled_after_completion_panics() {
        let status = poll_twice(Request::get("/jobs").body(()).unwrap());
        unreachable!("second poll returned after a {status}");
    }

    /// As hyper builds a request's headers: a map sized to them, which they fill. Hiding
    /// the credential must not make room for an insertion (a reallocation and a rehash
    /// on every such request).
    #[test]
    fn credentials_are_hidden_without_growing_a_full_header_map() {
        let guard = ApiKeyGuard::builder()
            .key(ApiKey::new(KEY).unwrap(), KeyGrant::new("p"))
            .build()
            .unwrap();
        let mut service = guard.layer(service_fn(|request: Request<()>| async move {
            let headers = request.headers();
            let seen = format!(
                "capacity={} sensitive={}",
                headers.capacity(),
                headers["x-api-key"].is_sensitive()
            );
            Ok::<_, Infallible>(Response::new(seen))
        }));
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(header::HOST, HeaderValue::from_static("localhost"));
        headers.insert("x-api-key", HeaderValue::from_static(KEY));
        assert_eq!(headers.len(), headers.capacity(), "the map is full");
        let capacity = headers.capacity();
        let mut request = Request::get("/jobs").body(()).unwrap();
        *request.headers_mut() = headers;

        let mut future = pin!(service.call(request));
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("an in-memory decision is ready at once");
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.body(),
            &format!("capacity={capacity} sensitive=true")
        );
    }

    #[test]
    fn an_admitted_request_reaches_the_inner_service() {
        let mut service = guarded();
        let request = Request::get("/jobs")
            .header("x-api-key", KEY)
            .body(())
            .unwrap();
        let mut future = pin!(service.call(request));
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(response)) = future.as_mut().poll(&mut cx) else {
            panic!("an in-memory decision is ready at once");
        };
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "inner");
    }
}
