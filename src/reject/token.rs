//! [`TokenMessageRejection`]: the bodies of a bearer-token API that answers
//! `{"error":{"code":<status>,"message":"<text>"}}`, without a machine-readable reason.

use http::{HeaderValue, Response, header};

use super::{REASON_HEADER, Rejection, RenderRejection};

/// Renders refusals as the seed token API did: `{"error":{"code":<status>,"message":
/// "<text>"}}` with `Content-Type: application/json`, and exactly these bodies for the
/// three 401s its clients tell apart:
///
/// | refusal | body |
/// |---|---|
/// | `missing_credentials` | `{"error":{"code":401,"message":"Missing authentication token"}}` |
/// | `malformed_credentials`, `invalid_credentials`, `revoked_credentials` | `{"error":{"code":401,"message":"Invalid authentication token"}}` |
/// | `expired_credentials` | `{"error":{"code":401,"message":"Authentication token expired"}}` |
///
/// The other refusals keep the same shape with a short sentence: `Insufficient scope`,
/// `Workspace forbidden` (403), `Rate limit exceeded`, `Too many failed authentication
/// attempts` (429), `Authentication temporarily unavailable` (503), `Invalid signature`,
/// `Stale signature` (401, webhooks). The machine-readable reason is kept in the
/// `X-Keygate-Reason` header ([`REASON_HEADER`]), and the contract's headers
/// (`WWW-Authenticate`, `Retry-After`, `RateLimit`) are added as with any renderer.
///
/// Every body is a `&'static str`: works for any body built from one (axum's `Body`,
/// `Bytes`, `Full<Bytes>`, `String`, ...).
///
/// ```
/// use keygate::{Rejection, RenderRejection, TokenMessageRejection};
///
/// let response: http::Response<String> =
///     TokenMessageRejection.render(&Rejection::ExpiredCredentials);
/// assert_eq!(response.status(), 401);
/// assert_eq!(
///     response.body(),
///     r#"{"error":{"code":401,"message":"Authentication token expired"}}"#
/// );
/// assert_eq!(response.headers()["x-keygate-reason"], "expired_credentials");
/// ```
///
/// With the guard: `ApiKeyGuard::builder().render_with(TokenMessageRejection)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokenMessageRejection;

impl TokenMessageRejection {
    /// The body for `rejection`.
    ///
    /// ```
    /// use keygate::{Rejection, TokenMessageRejection};
    ///
    /// assert_eq!(
    ///     TokenMessageRejection::body(&Rejection::MissingCredentials),
    ///     r#"{"error":{"code":401,"message":"Missing authentication token"}}"#
    /// );
    /// ```
    #[must_use]
    pub fn body(rejection: &Rejection) -> &'static str {
        match rejection {
            Rejection::MissingCredentials => {
                r#"{"error":{"code":401,"message":"Missing authentication token"}}"#
            }
            Rejection::MalformedCredentials(_)
            | Rejection::InvalidCredentials
            | Rejection::RevokedCredentials => {
                r#"{"error":{"code":401,"message":"Invalid authentication token"}}"#
            }
            Rejection::ExpiredCredentials => {
                r#"{"error":{"code":401,"message":"Authentication token expired"}}"#
            }
            Rejection::InvalidSignature => {
                r#"{"error":{"code":401,"message":"Invalid signature"}}"#
            }
            Rejection::StaleSignature => r#"{"error":{"code":401,"message":"Stale signature"}}"#,
            Rejection::InsufficientScope { .. } => {
                r#"{"error":{"code":403,"message":"Insufficient scope"}}"#
            }
            Rejection::WorkspaceForbidden => {
                r#"{"error":{"code":403,"message":"Workspace forbidden"}}"#
            }
            Rejection::RateLimited(_) => {
                r#"{"error":{"code":429,"message":"Rate limit exceeded"}}"#
            }
            Rejection::TooManyFailedAttempts { .. } => {
                r#"{"error":{"code":429,"message":"Too many failed authentication attempts"}}"#
            }
            Rejection::AuthUnavailable { .. } => {
                r#"{"error":{"code":503,"message":"Authentication temporarily unavailable"}}"#
            }
        }
    }
}

impl<B> RenderRejection<B> for TokenMessageRejection
where
    B: From<&'static str>,
{
    fn render(&self, rejection: &Rejection) -> Response<B> {
        let mut response = Response::new(B::from(Self::body(rejection)));
        *response.status_mut() = rejection.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::HeaderName::from_static(REASON_HEADER),
            HeaderValue::from_static(rejection.reason()),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::all;
    use super::*;

    #[test]
    fn the_three_token_refusals_have_the_seed_bodies() {
        let body = |r: Rejection| {
            let response: Response<String> = r.to_response(&TokenMessageRejection, None);
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            response.into_body()
        };
        assert_eq!(
            body(Rejection::MissingCredentials),
            r#"{"error":{"code":401,"message":"Missing authentication token"}}"#
        );
        assert_eq!(
            body(Rejection::InvalidCredentials),
            r#"{"error":{"code":401,"message":"Invalid authentication token"}}"#
        );
        assert_eq!(
            body(Rejection::MalformedCredentials(crate::Malformed::TooLong)),
            r#"{"error":{"code":401,"message":"Invalid authentication token"}}"#
        );
        assert_eq!(
            body(Rejection::ExpiredCredentials),
            r#"{"error":{"code":401,"message":"Authentication token expired"}}"#
        );
    }

    #[test]
    fn every_body_has_the_shape_and_the_status() -> Result<(), serde_json::Error> {
        for rejection in all() {
            let response: Response<String> = TokenMessageRejection.render(&rejection);
            let body: serde_json::Value = serde_json::from_str(response.body())?;
            assert_eq!(body["error"]["code"], rejection.status().as_u16());
            assert!(body["error"]["message"].is_string(), "{rejection:?}");
            assert_eq!(body["error"].as_object().map(|o| o.len()), Some(2));
            assert_eq!(response.status(), rejection.status());
            assert_eq!(response.headers()[REASON_HEADER], rejection.reason());
        }
        Ok(())
    }
}
