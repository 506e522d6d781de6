//! How a [`Rejection`] becomes a response: the renderers and the contract's headers.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Response, header};

use super::Rejection;
use crate::limit::retry_after_secs;

const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// The header [`EmptyRejection`] uses to carry the machine-readable reason.
pub const REASON_HEADER: &str = "x-keygate-reason";

impl Rejection {
    /// Adds the contract's headers to `headers`, keeping any a renderer already set:
    /// `WWW-Authenticate` (the given challenge) on credential failures, `Retry-After` on
    /// 429 and 503 (whole seconds, rounded up, at least 1), `RateLimit` and
    /// `RateLimit-Policy` on `rate_limited`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use http::{HeaderMap, HeaderValue};
    /// use keygate::Rejection;
    ///
    /// let mut headers = HeaderMap::new();
    /// let challenge = HeaderValue::from_static("ApiKey realm=\"api\"");
    /// Rejection::MissingCredentials.apply_headers(&mut headers, Some(&challenge));
    /// assert_eq!(headers["www-authenticate"], challenge);
    ///
    /// let mut headers = HeaderMap::new();
    /// let unavailable = Rejection::AuthUnavailable { retry_after: Duration::from_millis(1500) };
    /// unavailable.apply_headers(&mut headers, None);
    /// assert_eq!(headers["retry-after"], "2");
    /// ```
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
    #[must_use]
    pub fn to_response<B, R>(&self, renderer: &R, challenge: Option<&HeaderValue>) -> Response<B>
    where
        R: RenderRejection<B> + ?Sized,
    {
        let mut response = renderer.render(self);
        self.apply_headers(response.headers_mut(), challenge);
        response
    }
}

/// Turns a [`Rejection`] into a response.
///
/// Implemented by [`JsonRejection`], [`EmptyRejection`] and every
/// `Fn(&Rejection) -> Response<B>` closure. The contract's headers are added afterwards by
/// [`Rejection::to_response`], so a renderer need only choose the body.
///
/// ```
/// use http::Response;
/// use keygate::{Rejection, RenderRejection};
///
/// let plain = |rejection: &Rejection| {
///     let mut response = Response::new(rejection.reason().to_owned());
///     *response.status_mut() = rejection.status();
///     response
/// };
/// let response = plain.render(&Rejection::ExpiredCredentials);
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.body(), "expired_credentials");
/// ```
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

/// Renders the JSON body of the contract ([`Rejection::json_body`]) with
/// `Content-Type: application/json`. The default.
///
/// Works for any body built from a `&'static str` and from a `String` (axum's `Body`,
/// `Full<Bytes>`, `Bytes`, `String`, ...): a fixed body is handed over as the
/// `&'static str` it is (for `Bytes`, `Bytes::from_static`: no copy, no allocation), and
/// only the `insufficient_scope` body is a `String`.
///
/// ```
/// use bytes::Bytes;
/// use keygate::{JsonRejection, Rejection, RenderRejection};
///
/// let response: http::Response<Bytes> = JsonRejection.render(&Rejection::RevokedCredentials);
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["content-type"], "application/json");
/// assert_eq!(
///     response.body(),
///     r#"{"error":{"code":401,"reason":"revoked_credentials","message":"the API key has been revoked"}}"#
/// );
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonRejection;

impl<B> RenderRejection<B> for JsonRejection
where
    B: From<&'static str> + From<String>,
{
    fn render(&self, rejection: &Rejection) -> Response<B> {
        let body = match rejection.json_body() {
            Cow::Borrowed(fixed) => B::from(fixed),
            Cow::Owned(serialized) => B::from(serialized),
        };
        let mut response = Response::new(body);
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
///
/// ```
/// use keygate::{EmptyRejection, Rejection, RenderRejection};
///
/// let response: http::Response<()> = EmptyRejection.render(&Rejection::WorkspaceForbidden);
/// assert_eq!(response.status(), 403);
/// assert_eq!(response.headers()["x-keygate-reason"], "workspace_forbidden");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptyRejection;

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
    use std::time::Duration;

    use bytes::Bytes;

    use super::super::tests::all;
    use super::*;

    #[test]
    fn json_bodies_are_the_same_in_every_body_type() {
        for rejection in all() {
            let string: Response<String> = JsonRejection.render(&rejection);
            let bytes: Response<Bytes> = JsonRejection.render(&rejection);
            assert_eq!(string.body().as_bytes(), bytes.body(), "{rejection:?}");
            assert_eq!(*string.body(), rejection.json_body(), "{rejection:?}");
            assert_eq!(string.status(), rejection.status());
        }
    }

    #[test]
    fn fixed_json_bodies_are_not_copied() {
        let fixed = Rejection::MissingCredentials.json_body();
        let response: Response<Bytes> = JsonRejection.render(&Rejection::MissingCredentials);
        assert_eq!(response.body().as_ptr(), fixed.as_ptr());
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
