//! What the small checking layers ([`RequireScope`](crate::scope::RequireScope),
//! [`RequireWorkspace`](crate::workspace::RequireWorkspace)) share: a response future that is
//! either the inner service's or a refusal, and their audit records.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{Request, Response};
use pin_project_lite::pin_project;

use crate::{AuditEvent, AuditSink, Outcome, Principal, Rejection};

pin_project! {
    /// The response future of the checking layers: the inner service's future, or a refusal
    /// ready at once. Nothing is boxed.
    pub struct GateFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> GateFuture<F, B> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn rejected(response: Response<B>) -> Self {
        Self {
            kind: Kind::Rejected {
                response: Some(response),
            },
        }
    }
}

impl<F, B> fmt::Debug for GateFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Inner { .. } => f.write_str("GateFuture::Inner"),
            Kind::Rejected { .. } => f.write_str("GateFuture::Rejected"),
        }
    }
}

impl<F, B, E> Future for GateFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future.poll(cx),
            KindProj::Rejected { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

/// Records a refusal by a checking layer.
pub(crate) fn audit_refusal<B>(
    sink: Option<&Arc<dyn AuditSink>>,
    request: &Request<B>,
    rejection: &Rejection,
    workspace: Option<&str>,
) {
    let Some(sink) = sink else { return };
    let path = request.uri().path();
    let path = &path[..floor_char_boundary(path, 512)];
    let mut event = AuditEvent::new(format!("{} {path}", request.method()), Outcome::Refused)
        .with_reason(rejection.reason());
    if let Some(principal) = request.extensions().get::<Principal>() {
        event = event
            .with_principal_id(principal.id())
            .with_key_id(principal.key_id());
    }
    if let Some(workspace) = workspace {
        let workspace = &workspace[..floor_char_boundary(workspace, 256)];
        event = event.with_workspace(workspace);
    }
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        event = event.with_request_id(&id[..floor_char_boundary(id, 256)]);
    }
    sink.record(event);
}

fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}
