//! The future type shared by every pluggable backend.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// The answer of a backend ([`KeyRegistry`](crate::KeyRegistry),
/// [`RateLimitBackend`](crate::limit::RateLimitBackend)): ready at once, as
/// in-memory backends answer, with no allocation, or a boxed future, as network
/// backends answer.
///
/// The guard takes a ready answer as it is, inside its service's `call`, so the in-memory
/// path polls and boxes nothing. A future made with [`new`](Self::new) waits in the
/// guard's response future, even one that would finish on its first poll: an answer known
/// at once is best given with [`ready`](Self::ready).
///
/// ```
/// use keygate::BackendFuture;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let ready = BackendFuture::ready(7);
/// assert_eq!(ready.await, 7);
/// let later = BackendFuture::new(async { 6 * 7 });
/// assert_eq!(later.await, 42);
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// A ready answer panics if it is polled again after it completed.
#[must_use = "futures do nothing unless polled"]
pub struct BackendFuture<'a, T> {
    inner: Inner<'a, T>,
}

enum Inner<'a, T> {
    Ready(Option<T>),
    Pending(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> BackendFuture<'a, T> {
    /// An answer that is already known.
    pub fn ready(value: T) -> Self {
        Self {
            inner: Inner::Ready(Some(value)),
        }
    }

    /// An answer that needs I/O; the future is boxed.
    pub fn new(future: impl Future<Output = T> + Send + 'a) -> Self {
        Self {
            inner: Inner::Pending(Box::pin(future)),
        }
    }

    /// The answer when it is already known, without polling; the future otherwise.
    pub(crate) fn into_ready(self) -> Result<T, Self> {
        match self.inner {
            Inner::Ready(Some(value)) => Ok(value),
            inner => Err(Self { inner }),
        }
    }
}

impl<T> Unpin for BackendFuture<'_, T> {}

impl<T> Future for BackendFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.get_mut().inner {
            #[allow(clippy::expect_used)]
            Inner::Ready(value) => {
                Poll::Ready(value.take().expect("BackendFuture polled after completion"))
            }
            Inner::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for BackendFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner {
            Inner::Ready(_) => f.write_str("BackendFuture::Ready"),
            Inner::Pending(_) => f.write_str("BackendFuture::Pending"),
        }
    }
}
