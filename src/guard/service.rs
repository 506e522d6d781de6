//! The guard's [`Service`] and its response future.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::SystemTime,
};

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{
    ClientAddr, GuardConfig,
    auth::{Admission, Authenticate, Decision, Refusal, Verification, ready_now},
};
use crate::{
    AuditEvent, Outcome, Rejection, RenderRejection, limit::RateLimitDecision, limit::client_ip,
};

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

/// What the audit record of a request needs, taken before the request moves on.
#[derive(Debug)]
pub(crate) struct Facts {
    action: String,
    request_id: Option<String>,
    user_agent: Option<String>,
    client_ip: Option<IpAddr>,
}

impl Facts {
    fn of<B>(request: &Request<B>, client_ip: Option<IpAddr>) -> Self {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| truncate(v, 256).to_owned())
        };
        Facts {
            action: format!(
                "{} {}",
                request.method(),
                truncate(request.uri().path(), 512)
            ),
            request_id: header("x-request-id"),
            user_agent: header(header::USER_AGENT.as_str()),
            client_ip,
        }
    }

    pub(crate) fn named(action: &str, client_ip: Option<IpAddr>) -> Self {
        Facts {
            action: truncate(action, 512).to_owned(),
            request_id: None,
            user_agent: None,
            client_ip,
        }
    }

    fn event(&self, outcome: Outcome) -> AuditEvent {
        let mut event = AuditEvent::new(self.action.clone(), outcome);
        if let Some(id) = &self.request_id {
            event = event.with_request_id(id.clone());
        }
        if let Some(agent) = &self.user_agent {
            event = event.with_user_agent(agent.clone());
        }
        if let Some(ip) = self.client_ip {
            event = event.with_client_ip(ip);
        }
        event
    }
}

/// At most `max` bytes of `text`, cut at a character boundary: unauthenticated input must
/// not make audit records grow without bound.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl GuardConfig {
    pub(crate) fn client_ip<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let extensions = request.extensions();
        let peer = match &self.client_ip {
            Some(read) => read(extensions),
            None => extensions
                .get::<ClientAddr>()
                .map(|a| a.0)
                .or_else(|| extensions.get::<SocketAddr>().map(SocketAddr::ip)),
        };
        client_ip(peer, request.headers(), self.trusted_proxies)
    }

    pub(crate) fn audit_admitted(&self, facts: Option<&Facts>, admission: &Admission) {
        if let (Some(sink), Some(facts)) = (&self.audit, facts) {
            let mut event = facts
                .event(Outcome::Admitted)
                .with_principal_id(admission.principal.id())
                .with_key_id(admission.principal.key_id());
            if admission.limit_failed_open {
                event = event.with_reason("rate_limit_unavailable_failed_open");
            }
            sink.record(event);
        }
    }

    pub(crate) fn audit_refused(&self, facts: Option<&Facts>, refusal: &Refusal) {
        if let (Some(sink), Some(facts)) = (&self.audit, facts) {
            let mut event = facts
                .event(Outcome::Refused)
                .with_reason(refusal.rejection.reason());
            if let Some(principal) = &refusal.principal {
                event = event
                    .with_principal_id(principal.id())
                    .with_key_id(principal.key_id());
            }
            sink.record(event);
        }
    }

    fn audit_public(&self, facts: Option<&Facts>) {
        if let (Some(sink), Some(facts)) = (&self.audit, facts) {
            sink.record(facts.event(Outcome::Admitted).with_reason("public_route"));
        }
    }

    /// Notes the key's use in the registry.
    pub(crate) fn note_use(&self, admission: &Admission) {
        self.registry
            .mark_used(&admission.principal.key_id(), SystemTime::now());
    }

    /// Puts the principal into the request and notes the key's use.
    fn admit<B>(&self, request: &mut Request<B>, admission: &Admission) {
        self.note_use(admission);
        request.extensions_mut().insert(admission.principal.clone());
    }

    /// Marks the credential headers sensitive, so that logging layers further in do not
    /// print them.
    fn hide_credentials<B>(&self, request: &mut Request<B>) {
        for name in &self.credential_header_names {
            if let header::Entry::Occupied(mut entry) = request.headers_mut().entry(name) {
                for value in entry.iter_mut() {
                    value.set_sensitive(true);
                }
            }
        }
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
        let config = &self.config;
        let needs_ip = config.audit.is_some() || config.failed_attempts.is_some();
        let ip = if needs_ip {
            config.client_ip(&request)
        } else {
            None
        };
        let facts = config.audit.as_ref().map(|_| Facts::of(&request, ip));

        // Credentials are hidden from logging layers further in, on public routes too.
        config.hide_credentials(&mut request);

        // 1. Route policy.
        if config.is_public(request.uri().path()) {
            config.audit_public(facts.as_ref());
            return ResponseFuture::inner(self.inner.call(request), None);
        }

        // 2. Credential, 3. failed attempts, and the parts of 4. that need no lookup.
        let started = config
            .credentials
            .extract(request.headers(), request.uri())
            .map_err(Refusal::from)
            .and_then(|credential| Verification::start(config, credential.expose_secret(), ip));
        let mut auth = match started {
            Ok(auth) => auth,
            Err(refusal) => return self.refuse(facts.as_ref(), &refusal),
        };

        // 4. and 5., at once when the backends are in memory.
        match ready_now(&mut auth, config) {
            Some(decision) => self.decided(request, facts.as_ref(), decision),
            None => {
                // A network backend: the decision finishes in the future, which takes the
                // inner service that was driven to readiness (tower's clone-and-swap).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Checking {
                        pending: Some(Box::new(Pending {
                            auth: Authenticate {
                                config: Arc::clone(&self.config),
                                verification: auth,
                            },
                            inner,
                            request,
                            renderer: self.renderer.clone(),
                            config: Arc::clone(&self.config),
                            facts,
                        })),
                    },
                }
            }
        }
    }
}

impl<S, R> ApiKeyGuardService<S, R> {
    fn refuse<ReqBody, ResBody>(
        &self,
        facts: Option<&Facts>,
        refusal: &Refusal,
    ) -> ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        R: RenderRejection<ResBody>,
    {
        self.config.audit_refused(facts, refusal);
        ResponseFuture::rejected(render(&self.config, &self.renderer, &refusal.rejection))
    }

    fn decided<ReqBody, ResBody>(
        &mut self,
        mut request: Request<ReqBody>,
        facts: Option<&Facts>,
        decision: Decision,
    ) -> ResponseFuture<S, ReqBody, R>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        R: RenderRejection<ResBody>,
    {
        match decision {
            Ok(admission) => {
                self.config.audit_admitted(facts, &admission);
                self.config.admit(&mut request, &admission);
                ResponseFuture::inner(self.inner.call(request), admission.rate)
            }
            Err(refusal) => self.refuse(facts, &refusal),
        }
    }
}

fn render<B, R: RenderRejection<B>>(
    config: &GuardConfig,
    renderer: &R,
    rejection: &Rejection,
) -> Response<B> {
    rejection.to_response(renderer, Some(&config.challenge))
}

/// The request, the inner service and the renderer, kept while a network backend answers.
struct Pending<S, ReqBody, R> {
    auth: Authenticate,
    inner: S,
    request: Request<ReqBody>,
    renderer: R,
    config: Arc<GuardConfig>,
    facts: Option<Facts>,
}

pin_project! {
    /// The response future of [`ApiKeyGuardService`].
    ///
    /// With in-memory backends the decision is made in `call`, and this future is the
    /// inner service's (plus the rate-limit headers) or the refusal, with nothing boxed.
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
        Checking {
            pending: Option<Box<Pending<S, ReqBody, R>>>,
        },
        Inner {
            #[pin]
            future: S::Future,
            rate: Option<RateLimitDecision>,
        },
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

    fn rejected(response: S::Response) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<S, ReqBody, R> fmt::Debug for ResponseFuture<S, ReqBody, R>
where
    S: Service<Request<ReqBody>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "Checking",
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { pending } => {
                    let Some(waiting) = pending.as_mut() else {
                        // Only reachable if polled after completion.
                        return Poll::Pending;
                    };
                    let decision = ready!(Pin::new(&mut waiting.auth).poll(cx));
                    let Some(waiting) = pending.take() else {
                        return Poll::Pending;
                    };
                    let Pending {
                        mut inner,
                        mut request,
                        renderer,
                        config,
                        facts,
                        ..
                    } = *waiting;
                    match decision {
                        Ok(admission) => {
                            config.audit_admitted(facts.as_ref(), &admission);
                            config.admit(&mut request, &admission);
                            let future = inner.call(request);
                            this.state.set(State::Inner {
                                future,
                                rate: admission.rate,
                            });
                        }
                        Err(refusal) => {
                            config.audit_refused(facts.as_ref(), &refusal);
                            let response = render(&config, &renderer, &refusal.rejection);
                            this.state.set(State::Rejected { response: None });
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Inner { future, rate } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(rate) = rate.take() {
                        rate.headers().apply(response.headers_mut());
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { response } => {
                    return match response.take() {
                        Some(response) => Poll::Ready(Ok(response)),
                        // Polled after completion.
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}
