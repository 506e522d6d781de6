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
//! Rendering is pluggable through [`RenderRejection`]: [`JsonRejection`] (the default) works
//! for any body that can be built from a `String` (axum's `Body`, `Full<Bytes>`, `String`,
//! ...), [`EmptyRejection`] for any body that is `Default`, and any
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

use std::{borrow::Cow, fmt, sync::OnceLock, time::Duration};

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::limit::{RateLimitDecision, retry_after_secs};

const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

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
}

impl Malformed {
    fn message(self) -> &'static str {
        match self {
            Malformed::Empty => "the API key is empty",
            Malformed::TooLong => "the API key is too long",
            Malformed::InvalidBytes => "the API key contains characters outside visible ASCII",
            Malformed::Duplicated => "the API key was given more than once",
            Malformed::Ambiguous => "API keys were given in more than one place",
            Malformed::NotBearer => "the Authorization header is not of the form `Bearer <key>`",
        }
    }
}

/// The JSON bodies of the refusals whose body never changes, one slot each (see
/// [`Rejection::fixed_body`]), made when first needed.
static FIXED_BODIES: [OnceLock<Box<str>>; 16] = [const { OnceLock::new() }; 16];

/// Every way keygate refuses a request.
///
/// No variant carries key material, so a `Rejection` can be logged as it is.
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
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingCredentials => "missing_credentials",
            Rejection::MalformedCredentials(_) => "malformed_credentials",
            Rejection::InvalidCredentials => "invalid_credentials",
            Rejection::ExpiredCredentials => "expired_credentials",
            Rejection::RevokedCredentials => "revoked_credentials",
            Rejection::InvalidSignature => "invalid_signature",
            Rejection::StaleSignature => "stale_signature",
            Rejection::InsufficientScope { .. } => "insufficient_scope",
            Rejection::WorkspaceForbidden => "workspace_forbidden",
            Rejection::RateLimited(_) => "rate_limited",
            Rejection::TooManyFailedAttempts { .. } => "too_many_failed_attempts",
            Rejection::AuthUnavailable { .. } => "auth_unavailable",
        }
    }

    /// A sentence for humans. Never contains key material.
    pub fn message(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Rejection::MissingCredentials => "no API key was presented",
            Rejection::MalformedCredentials(why) => why.message(),
            Rejection::InvalidCredentials => "the API key is not valid",
            Rejection::ExpiredCredentials => "the API key has expired",
            Rejection::RevokedCredentials => "the API key has been revoked",
            Rejection::InvalidSignature => "the webhook signature is missing, malformed or wrong",
            Rejection::StaleSignature => "the webhook timestamp is outside the accepted tolerance",
            Rejection::InsufficientScope { scope } => {
                return Cow::Owned(format!("this action requires the scope `{scope}`"));
            }
            Rejection::WorkspaceForbidden => "the API key may not use this workspace",
            Rejection::RateLimited(_) => "the rate limit for this API key is exhausted",
            Rejection::TooManyFailedAttempts { .. } => {
                "too many failed authentication attempts from this client"
            }
            Rejection::AuthUnavailable { .. } => "authentication is temporarily unavailable",
        })
    }

    /// `true` for the 401 refusals about API keys, which carry `WWW-Authenticate`.
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
    /// Every refusal but `insufficient_scope` has a fixed body, serialized the first time
    /// it is needed and copied after that: refusing is cheap, however many bad requests
    /// arrive.
    pub fn to_json(&self) -> String {
        match self.fixed_body().and_then(|index| FIXED_BODIES.get(index)) {
            Some(body) => String::from(&**body.get_or_init(|| self.serialize_json().into())),
            None => self.serialize_json(),
        }
    }

    /// The slot in [`FIXED_BODIES`] of a refusal whose body never changes.
    fn fixed_body(&self) -> Option<usize> {
        Some(match self {
            Rejection::MissingCredentials => 0,
            Rejection::MalformedCredentials(why) => match why {
                Malformed::Empty => 1,
                Malformed::TooLong => 2,
                Malformed::InvalidBytes => 3,
                Malformed::Duplicated => 4,
                Malformed::Ambiguous => 5,
                Malformed::NotBearer => 6,
            },
            Rejection::InvalidCredentials => 7,
            Rejection::ExpiredCredentials => 8,
            Rejection::RevokedCredentials => 9,
            Rejection::InvalidSignature => 10,
            Rejection::StaleSignature => 11,
            Rejection::WorkspaceForbidden => 12,
            Rejection::RateLimited(_) => 13,
            Rejection::TooManyFailedAttempts { .. } => 14,
            Rejection::AuthUnavailable { .. } => 15,
            Rejection::InsufficientScope { .. } => return None,
        })
    }

    fn serialize_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Error<'a>,
        }
        #[derive(serde::Serialize)]
        struct Error<'a> {
            code: u16,
            reason: &'a str,
            message: &'a str,
        }
        let message = self.message();
        let body = Body {
            error: Error {
                code: self.status().as_u16(),
                reason: self.reason(),
                message: &message,
            },
        };
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// Adds the contract's headers to `headers`, keeping any a renderer already set:
    /// `WWW-Authenticate` (the given challenge) on credential failures, `Retry-After` on
    /// 429 and 503 (whole seconds, rounded up, at least 1), `RateLimit` and
    /// `RateLimit-Policy` on `rate_limited`.
    pub fn apply_headers(&self, headers: &mut HeaderMap, challenge: Option<&HeaderValue>) {
        if let (true, Some(challenge)) = (self.is_credential_failure(), challenge) {
            headers
                .entry(header::WWW_AUTHENTICATE)
                .or_insert_with(|| challenge.clone());
        }
        if let Rejection::RateLimited(decision) = self
            && !headers.contains_key(RATELIMIT)
        {
            decision.headers().apply(headers);
        }
        if let Some(wait) = self.retry_after() {
            headers
                .entry(header::RETRY_AFTER)
                .or_insert_with(|| HeaderValue::from(retry_after_secs(wait)));
        }
    }

    /// Renders with `renderer` and adds the contract's headers.
    pub fn to_response<B, R>(&self, renderer: &R, challenge: Option<&HeaderValue>) -> Response<B>
    where
        R: RenderRejection<B> + ?Sized,
    {
        let mut response = renderer.render(self);
        self.apply_headers(response.headers_mut(), challenge);
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.reason())
    }
}

impl std::error::Error for Rejection {}

/// Turns a [`Rejection`] into a response.
///
/// Implemented by [`JsonRejection`], [`EmptyRejection`] and every
/// `Fn(&Rejection) -> Response<B>` closure. The contract's headers are added afterwards by
/// [`Rejection::to_response`], so a renderer need only choose the body.
pub trait RenderRejection<B> {
    /// Builds the response for `rejection`.
    fn render(&self, rejection: &Rejection) -> Response<B>;
}

impl<B, F> RenderRejection<B> for F
where
    F: Fn(&Rejection) -> Response<B>,
{
    fn render(&self, rejection: &Rejection) -> Response<B> {
        self(rejection)
    }
}

/// Renders the JSON body of the contract, for any body type `B: From<String>`. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl<B: From<String>> RenderRejection<B> for JsonRejection {
    fn render(&self, rejection: &Rejection) -> Response<B> {
        let mut response = Response::new(B::from(rejection.to_json()));
        *response.status_mut() = rejection.status();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// Renders an empty body, for any body type `B: Default` (status and headers still tell
/// the reason: see [`REASON_HEADER`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyRejection;

/// The header [`EmptyRejection`] uses to carry the machine-readable reason.
pub const REASON_HEADER: &str = "x-keygate-reason";

impl<B: Default> RenderRejection<B> for EmptyRejection {
    fn render(&self, rejection: &Rejection) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = rejection.status();
        response.headers_mut().insert(
            http::HeaderName::from_static(REASON_HEADER),
            HeaderValue::from_static(rejection.reason()),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Rejection> {
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
    fn fixed_bodies_are_the_serialized_ones_and_each_has_its_own_slot() {
        let mut every = all();
        every.extend(
            [
                Malformed::TooLong,
                Malformed::InvalidBytes,
                Malformed::Duplicated,
                Malformed::Ambiguous,
                Malformed::NotBearer,
            ]
            .map(Rejection::MalformedCredentials),
        );
        let quota = crate::limit::Quota::per_minute(std::num::NonZeroU32::MIN);
        every.push(Rejection::RateLimited(RateLimitDecision::refuse(
            &quota,
            0,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )));
        let mut slots = std::collections::HashMap::new();
        for rejection in every {
            // Twice: the first call fills the slot, the second reads it.
            for _ in 0..2 {
                assert_eq!(
                    rejection.to_json(),
                    rejection.serialize_json(),
                    "{rejection:?}"
                );
            }
            if let Some(slot) = rejection.fixed_body() {
                assert!(slot < FIXED_BODIES.len());
                let body = rejection.serialize_json();
                let previous = slots.insert(slot, body.clone());
                assert!(
                    previous.is_none_or(|previous| previous == body),
                    "slot {slot} shared by different bodies"
                );
            }
        }
        // Every slot is used by exactly one kind of refusal.
        assert_eq!(slots.len(), FIXED_BODIES.len());
    }

    #[test]
    fn json_body_has_the_contract_shape() {
        for rejection in all() {
            let body: serde_json::Value = serde_json::from_str(&rejection.to_json()).unwrap();
            assert_eq!(body["error"]["code"], rejection.status().as_u16());
            assert_eq!(body["error"]["reason"], rejection.reason());
            assert!(body["error"]["message"].as_str().unwrap().len() > 5);
        }
    }

    #[test]
    fn headers_follow_the_contract() {
        let challenge = HeaderValue::from_static("ApiKey realm=\"api\"");
        for rejection in all() {
            let response: Response<String> =
                rejection.to_response(&JsonRejection, Some(&challenge));
            let headers = response.headers();
            assert_eq!(
                headers.contains_key(header::WWW_AUTHENTICATE),
                rejection.is_credential_failure(),
                "{rejection:?}"
            );
            assert_eq!(
                headers.contains_key(header::RETRY_AFTER),
                matches!(rejection.status().as_u16(), 429 | 503),
                "{rejection:?}"
            );
        }
        let response: Response<String> = Rejection::TooManyFailedAttempts {
            retry_after: Duration::from_millis(1500),
        }
        .to_response(&JsonRejection, None);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let response: Response<String> = Rejection::AuthUnavailable {
            retry_after: Duration::ZERO,
        }
        .to_response(&JsonRejection, None);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn empty_and_closure_renderers() {
        let response: Response<()> =
            Rejection::WorkspaceForbidden.to_response(&EmptyRejection, None);
        assert_eq!(response.status(), 403);
        assert_eq!(response.headers()[REASON_HEADER], "workspace_forbidden");

        let custom = |r: &Rejection| {
            let mut res = Response::new(r.reason().to_owned());
            *res.status_mut() = r.status();
            res
        };
        let response: Response<String> = Rejection::InvalidCredentials
            .to_response(&custom, Some(&HeaderValue::from_static("x")));
        assert_eq!(response.body(), "invalid_credentials");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "x");
    }
}
