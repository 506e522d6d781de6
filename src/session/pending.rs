//! [`PendingAuth`]: a connection that has not authenticated yet, with its deadline.

use std::{fmt, future::Future, sync::Arc};

use tokio::{sync::OwnedSemaphorePermit, time::Instant};

/// A place for a connection that has not authenticated yet (its credential is to come as
/// its first message), from [`Sessions::pending`](super::Sessions::pending). It holds one
/// of the service's places for such connections until it is dropped, and has until its
/// [`deadline`](Self::deadline) to authenticate.
///
/// ```
/// use std::time::Duration;
///
/// use keygate::{InMemoryRegistry, session::{AuthTimedOut, Sessions}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keygate::Rejection> {
/// let sessions = Sessions::builder(InMemoryRegistry::new())
///     .auth_deadline(Duration::from_millis(10))
///     .max_pending(1)
///     .build();
/// let pending = sessions.pending()?;
/// // Only one connection may wait at a time.
/// assert!(sessions.pending().is_err());
///
/// // A client that never sends its key.
/// let first_message = std::future::pending::<String>();
/// assert_eq!(pending.within(first_message).await, Err(AuthTimedOut));
/// // The place is free again.
/// assert!(sessions.pending().is_ok());
/// # Ok(()) }
/// ```
pub struct PendingAuth {
    deadline: Instant,
    _place: OwnedSemaphorePermit,
}

impl PendingAuth {
    pub(super) fn new(place: OwnedSemaphorePermit, deadline: Instant) -> Self {
        Self {
            deadline,
            _place: place,
        }
    }

    /// When the connection must have authenticated.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Runs `authentication` (typically: receive the first message, then
    /// [`ApiKeyGuard::authenticate`](crate::ApiKeyGuard::authenticate) its key) until the
    /// deadline, then gives the place back.
    ///
    /// # Errors
    ///
    /// [`AuthTimedOut`] if the deadline passed first; close the connection (with
    /// WebSocket: [`AuthTimedOut::websocket_close_code`], reason `auth_timeout`).
    pub async fn within<F: Future>(self, authentication: F) -> Result<F::Output, AuthTimedOut> {
        tokio::time::timeout_at(self.deadline, authentication)
            .await
            .map_err(|_| AuthTimedOut)
    }
}

impl fmt::Debug for PendingAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingAuth")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// A connection did not authenticate before its deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the connection did not authenticate in time")]
pub struct AuthTimedOut;

impl AuthTimedOut {
    /// The machine-readable reason, `auth_timeout` (a close frame's reason).
    #[must_use]
    pub const fn reason(self) -> &'static str {
        "auth_timeout"
    }

    /// The WebSocket close code: 1008 (policy violation).
    #[must_use]
    pub const fn websocket_close_code(self) -> u16 {
        1008
    }
}

/// The shared places of a [`Sessions`](super::Sessions).
pub(super) type Places = Arc<tokio::sync::Semaphore>;
