//! [`SessionEnd`]: why a live session ended.

use std::time::Duration;

use crate::Rejection;

/// How long a client whose session ended for an outage should wait before reconnecting.
const RETRY_AFTER_OUTAGE: Duration = Duration::from_secs(1);

/// Why a live session ended: its credential was revoked or expired, or the registry could
/// not say for longer than the check interval (fail closed).
///
/// ```
/// use keygate::session::SessionEnd;
///
/// assert_eq!(SessionEnd::Revoked.reason(), "revoked_credentials");
/// assert_eq!(SessionEnd::Expired.websocket_close_code(), 1008);
/// assert_eq!(SessionEnd::Unavailable.websocket_close_code(), 1013);
/// ```
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The key was revoked or deleted (`revoked_credentials`).
    Revoked,
    /// The key or token expired (`expired_credentials`).
    Expired,
    /// The registry could not be asked for a whole check interval (`auth_unavailable`).
    Unavailable,
}

impl SessionEnd {
    /// The refusal a request with the same credential would get now.
    #[must_use]
    pub fn rejection(self) -> Rejection {
        match self {
            SessionEnd::Revoked => Rejection::RevokedCredentials,
            SessionEnd::Expired => Rejection::ExpiredCredentials,
            SessionEnd::Unavailable => Rejection::AuthUnavailable {
                retry_after: RETRY_AFTER_OUTAGE,
            },
        }
    }

    /// The machine-readable reason: `revoked_credentials`, `expired_credentials` or
    /// `auth_unavailable`, as in the guard's refusals (and fit for a close frame's reason).
    #[must_use]
    pub fn reason(self) -> &'static str {
        self.rejection().reason()
    }

    /// The WebSocket close code (RFC 6455) to close with: 1008 (policy violation) when the
    /// credential ended, 1013 (try again later) for an outage, so that a client tells a
    /// dead key from a passing failure.
    #[must_use]
    pub const fn websocket_close_code(self) -> u16 {
        match self {
            SessionEnd::Revoked | SessionEnd::Expired => 1008,
            SessionEnd::Unavailable => 1013,
        }
    }
}
