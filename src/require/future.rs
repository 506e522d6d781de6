//! [`ResponseFuture`]: the inner service's future, or a refusal ready at once.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;

pin_project! {
    /// The response future of [`RequireService`](super::RequireService): the inner
    /// service's future when the policy allowed the request, else the refusal, ready at
    /// once. Nothing is boxed.
    ///
    /// # Panics
    ///
    /// If polled again after it answered with a refusal (a completed future must not be
    /// polled).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Future {
            #[pin]
            future: F,
        },
        Reject {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B> ResponseFuture<F, B> {
    /// The request went on to the inner service.
    pub(crate) fn future(future: F) -> Self {
        Self {
            state: State::Future { future },
        }
    }

    /// The request was refused with `response`.
    pub(crate) fn reject(response: Response<B>) -> Self {
        Self {
            state: State::Reject {
                response: Some(response),
            },
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            State::Future { .. } => f.write_str("ResponseFuture::Future"),
            State::Reject { .. } => f.write_str("ResponseFuture::Reject"),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    /// # Panics
    ///
    /// If a refusal is polled again after it completed.
    #[allow(clippy::expect_used)] // polling after completion is the caller's bug
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Future { future } => future.poll(cx),
            StateProj::Reject { response } => {
                let response = response.take().expect("future polled after completion");
                Poll::Ready(Ok(response))
            }
        }
    }
}
