//! Every way a request is refused, and how a refusal becomes a response.
//!
//! A [`Rejection`] has one status, one machine-readable [`reason`](Rejection::reason) and a
//! human-readable [`message`](Rejection::message). By default it is rendered as
//!
//! ```json
//! {"error":{"code":401,"reason":"missing_credentials","message":"no API key was presented"}}
//! ```
//!
//! with the headers of the contract (`WWW-Authenticate` on 401s about credentials,
//! `Retry-After` on 429 and 503, `RateLimit` and `RateLimit-Policy` on `rate_limited`).
//!
//! The body of every refusal but `insufficient_scope` is a `&'static str` made at compile
//! time ([`Rejection::json_body`]): a body type that can hold one (axum's `Body`, `Bytes`,
//! `Full<Bytes>`) gets it without a copy or an allocation.
//!
//! Rendering is pluggable through [`RenderRejection`]: [`JsonRejection`] (the default) works
//! for any body that can be built from a `&'static str` and from a `String` (axum's `Body`,
//! `Full<Bytes>`, `Bytes`, `String`, ...), [`EmptyRejection`] for any body that is `Default`,
//! [`TokenMessageRejection`] for the bodies of a bearer-token API
//! (`{"error":{"code":401,"message":"Missing authentication token"}}`), and any
//! `Fn(&Rejection) -> Response<B>` closure for anything else. Whatever the renderer, the
//! contract's headers are added when the renderer did not set them.
//!
//! ```
//! use keygate::{JsonRejection, RenderRejection, Rejection};
//!
//! let response: http::Response<String> = JsonRejection.render(&Rejection::MissingCredentials);
//! assert_eq!(response.status(), 401);
//! assert_eq!(
//!     response.body(),
//!     r#"{"error":{"code":401,"reason":"missing_credentials","message":"no API key was presented"}}"#
//! );
//! ```

mod body;
mod render;
mod token;

use std::{borrow::Cow, fmt, time::Duration};

use http::StatusCode;

use self::body::Text;
pub use self::{
    render::{EmptyRejection, JsonRejection, REASON_HEADER, RenderRejection},
    token::TokenMessageRejection,
};
use crate::limit::RateLimitDecision;

/// Why presented credentials were malformed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The credential is empty.
    Empty,
    /// The credential is longer than the configured cap.
    TooLong,
    /// The credential has bytes outside visible ASCII.
    InvalidBytes,
    /// The same credential header or parameter was given more than once.
    Duplicated,
    /// Credentials were given in more than one source at once.
    Ambiguous,
    /// The `Authorization` header is not `Bearer <token>`.
    NotBearer,
    /// An encoded credential (the base64url form of a `Sec-WebSocket-Protocol` entry) does
    /// not decode.
    BadEncoding,
}

/// Every way keygate refuses a request.
///
/// No variant carries key material, so a `Rejection` can be logged as it is.
///
/// ```
/// use keygate::Rejection;
///
/// let rejection = Rejection::InvalidCredentials;
/// assert_eq!(rejection.status(), 401);
/// assert_eq!(rejection.reason(), "invalid_credentials");
/// assert_eq!(
///     rejection.json_body(),
///     r#"{"error":{"code":401,"reason":"invalid_credentials","message":"the API key is not valid"}}"#
/// );
///
/// // A handler refuses the same way the guard does.
/// let response: http::Response<String> = Rejection::WorkspaceForbidden
///     .to_response(&keygate::JsonRejection, None);
/// assert_eq!(response.status(), 403);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// No credential was presented. 401 `missing_credentials`.
    MissingCredentials,
    /// The credential was empty, too long, had bad bytes, or was duplicated.
    /// 401 `malformed_credentials`.
    MalformedCredentials(Malformed),
    /// Unknown key, or a generated key with a bad checksum. 401 `invalid_credentials`.
    InvalidCredentials,
    /// The key has expired. 401 `expired_credentials`.
    ExpiredCredentials,
    /// The key was revoked or disabled. 401 `revoked_credentials`.
    RevokedCredentials,
    /// A webhook signature is missing, malformed or wrong. 401 `invalid_signature`.
    InvalidSignature,
    /// A webhook timestamp is outside the tolerance. 401 `stale_signature`.
    StaleSignature,
    /// The caller lacks a scope. 403 `insufficient_scope`.
    InsufficientScope {
        /// The scope that was required (not secret).
        scope: Cow<'static, str>,
    },
    /// The caller may not use this workspace. 403 `workspace_forbidden`.
    WorkspaceForbidden,
    /// The caller's per-key limit is exhausted. 429 `rate_limited`.
    RateLimited(RateLimitDecision),
    /// The client has failed to authenticate too often. 429 `too_many_failed_attempts`.
    TooManyFailedAttempts {
        /// When the client may try again.
        retry_after: Duration,
    },
    /// The key registry or limit backend is unreachable and the guard fails closed.
    /// 503 `auth_unavailable`.
    AuthUnavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

impl Rejection {
    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingCredentials
            | Rejection::MalformedCredentials(_)
            | Rejection::InvalidCredentials
            | Rejection::ExpiredCredentials
            | Rejection::RevokedCredentials
            | Rejection::InvalidSignature
            | Rejection::StaleSignature => StatusCode::UNAUTHORIZED,
            Rejection::InsufficientScope { .. } | Rejection::WorkspaceForbidden => {
                StatusCode::FORBIDDEN
            }
            Rejection::RateLimited(_) | Rejection::TooManyFailedAttempts { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Rejection::AuthUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable reason, e.g. `invalid_credentials`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self.text() {
            Text::Fixed(fixed) => fixed.reason,
            Text::Scope(_) => body::INSUFFICIENT_SCOPE,
        }
    }

    /// A sentence for humans. Never contains key material.
    #[must_use]
    pub fn message(&self) -> Cow<'static, str> {
        match self.text() {
            Text::Fixed(fixed) => Cow::Borrowed(fixed.message),
            Text::Scope(scope) => Cow::Owned(body::scope_message(scope)),
        }
    }

    /// `true` for the 401 refusals about API keys, which carry `WWW-Authenticate`.
    #[must_use]
    pub fn is_credential_failure(&self) -> bool {
        matches!(
            self,
            Rejection::MissingCredentials
                | Rejection::MalformedCredentials(_)
                | Rejection::InvalidCredentials
                | Rejection::ExpiredCredentials
                | Rejection::RevokedCredentials
        )
    }

    /// How long the client should wait, for 429 and 503 refusals.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::RateLimited(decision) => Some(decision.retry_after.unwrap_or_default()),
            Rejection::TooManyFailedAttempts { retry_after }
            | Rejection::AuthUnavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// The JSON body of the contract:
    /// `{"error":{"code":<status>,"reason":"<reason>","message":"<text>"}}`.
    ///
    /// Every refusal but `insufficient_scope` has a fixed body, made at compile time and
    /// borrowed here: refusing is cheap, however many bad requests arrive. The
    /// `insufficient_scope` body names the scope, so it is serialized each time.
    ///
    /// ```
    /// use std::borrow::Cow;
    ///
    /// use keygate::Rejection;
    ///
    /// assert!(matches!(Rejection::MissingCredentials.json_body(), Cow::Borrowed(_)));
    /// let scope = Rejection::InsufficientScope { scope: "admin".into() };
    /// assert_eq!(
    ///     scope.json_body(),
    ///     r#"{"error":{"code":403,"reason":"insufficient_scope","message":"this action requires the scope `admin`"}}"#
    /// );
    /// ```
    #[must_use]
    pub fn json_body(&self) -> Cow<'static, str> {
        match self.text() {
            Text::Fixed(fixed) => Cow::Borrowed(fixed.json),
            Text::Scope(scope) => Cow::Owned(body::scope_json(scope)),
        }
    }

    /// [`json_body`](Self::json_body) as an owned `String`.
    #[must_use]
    pub fn to_json(&self) -> String {
        self.json_body().into_owned()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.reason())
    }
}

impl std::error::Error for Rejection {}

#[cfg(test)]
mod tests {
    use super::*;

    /// One refusal of each kind.
    pub(super) fn all() -> Vec<Rejection> {
        vec![
            Rejection::MissingCredentials,
            Rejection::MalformedCredentials(Malformed::Empty),
            Rejection::InvalidCredentials,
            Rejection::ExpiredCredentials,
            Rejection::RevokedCredentials,
            Rejection::InvalidSignature,
            Rejection::StaleSignature,
            Rejection::InsufficientScope {
                scope: "admin".into(),
            },
            Rejection::WorkspaceForbidden,
            Rejection::TooManyFailedAttempts {
                retry_after: Duration::from_millis(1500),
            },
            Rejection::AuthUnavailable {
                retry_after: Duration::from_millis(10),
            },
        ]
    }

    #[test]
    fn statuses_and_reasons_follow_the_contract() {
        let table: Vec<(u16, &str)> = all()
            .iter()
            .map(|r| (r.status().as_u16(), r.reason()))
            .collect();
        assert_eq!(
            table,
            [
                (401, "missing_credentials"),
                (401, "malformed_credentials"),
                (401, "invalid_credentials"),
                (401, "expired_credentials"),
                (401, "revoked_credentials"),
                (401, "invalid_signature"),
                (401, "stale_signature"),
                (403, "insufficient_scope"),
                (403, "workspace_forbidden"),
                (429, "too_many_failed_attempts"),
                (503, "auth_unavailable"),
            ]
        );
    }

    #[test]
    fn json_body_has_the_contract_shape() -> Result<(), serde_json::Error> {
        for rejection in all() {
            let body: serde_json::Value = serde_json::from_str(&rejection.json_body())?;
            assert_eq!(body["error"]["code"], rejection.status().as_u16());
            assert_eq!(body["error"]["reason"], rejection.reason());
            assert_eq!(body["error"]["message"], *rejection.message());
            assert_eq!(rejection.to_json(), rejection.json_body());
        }
        Ok(())
    }

    #[test]
    fn display_is_message_and_reason() {
        assert_eq!(
            Rejection::ExpiredCredentials.to_string(),
            "the API key has expired (expired_credentials)"
        );
    }
}
