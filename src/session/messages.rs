//! [`TooManyMessages`]: a message refused by a session's per-principal budget.

use std::time::Duration;

/// A message refused because its principal spent its message budget (or the limit's
/// backend could not decide: refused all the same, fail closed), from
/// [`Session::spend_message`](super::Session::spend_message).
///
/// Answer it with an error the client can read (reason [`reason`](Self::reason),
/// `rate_limited`); when [`should_close`](Self::should_close) says so, the client kept
/// going after several such answers in a row: close the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("too many messages")]
pub struct TooManyMessages {
    pub(super) retry_after: Option<Duration>,
    pub(super) refused_in_a_row: u32,
    pub(super) close: bool,
}

impl TooManyMessages {
    /// How long until a message would be admitted, when the limit says.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// How many messages in a row were refused, this one included.
    #[must_use]
    pub fn refused_in_a_row(&self) -> u32 {
        self.refused_in_a_row
    }

    /// Whether the client went on past
    /// [`close_after_refused`](super::SessionsBuilder::close_after_refused) refusals in a
    /// row and the connection should be closed (WebSocket: 1008, reason `rate_limited`).
    #[must_use]
    pub fn should_close(&self) -> bool {
        self.close
    }

    /// The machine-readable reason, `rate_limited`.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        "rate_limited"
    }

    /// The WebSocket close code for a client that would not slow down: 1008 (policy
    /// violation).
    #[must_use]
    pub const fn websocket_close_code(&self) -> u16 {
        1008
    }
}
