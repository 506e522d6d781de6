//! Webhook signature verification, without a web framework.
//!
//! A sender signs each webhook with HMAC-SHA256 over `"<timestamp>.<raw body>"` and
//! sends the result in the [`X-Keygate-Signature`](SIGNATURE_HEADER) header:
//!
//! ```text
//! X-Keygate-Signature: t=1700000000,v1=b5b94bb87361d24fba1f62c01c2b6df26e81f467a6de243c0f02dbc38d3d1581
//! ```
//!
//! A [`WebhookVerifier`] checks that header against the raw request body:
//!
//! ```
//! use std::time::{SystemTime, UNIX_EPOCH};
//!
//! use http::HeaderMap;
//! use keygate::webhook::{SIGNATURE_HEADER, SignatureError, WebhookSecret, WebhookVerifier, sign};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The sender signs the exact bytes it is about to send.
//! let secret = WebhookSecret::try_from("whsec_current_0123456789")?;
//! let body = br#"{"job":"42","event":"completed"}"#;
//! let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
//! let mut headers = HeaderMap::new();
//! headers.insert(SIGNATURE_HEADER, sign(&secret, now, body).parse()?);
//!
//! // The receiver accepts the current and the previous secret during a rotation,
//! // e.g. from `STITCHER_WEBHOOK_SECRETS="whsec_current_0123456789,whsec_previous_0123456789"`.
//! let verifier =
//!     WebhookVerifier::from_comma_separated("whsec_current_0123456789,whsec_previous_0123456789")?;
//! verifier.verify_headers(&headers, body)?;
//!
//! // A body changed in transit is refused, with the reason used in the JSON rejection.
//! let tampered = br#"{"job":"43","event":"completed"}"#;
//! assert_eq!(verifier.verify_headers(&headers, tampered), Err(SignatureError::Mismatch));
//! assert_eq!(SignatureError::Mismatch.reason(), "invalid_signature");
//! # Ok(())
//! # }
//! ```
//!
//! # The header
//!
//! The value is a comma-separated list of `key=value` items, without spaces:
//!
//! - `t` — the signing time in Unix seconds, exactly once;
//! - `v1` — a hex HMAC-SHA256 (64 hex digits, either case), once or several times: a
//!   sender that is rotating its secret may sign with each of them;
//! - any other alphanumeric key (e.g. a future `v2`) is ignored.
//!
//! The request is accepted when any `v1` matches the MAC computed with any configured
//! secret, and the timestamp is within the tolerance ([`DEFAULT_TOLERANCE`], 300 s) of
//! the verifier's clock, in either direction.
//!
//! # Security notes
//!
//! - Verify the **raw** body, byte for byte as received: never a re-serialized JSON value.
//!   Limit the body size before buffering it (e.g. with tower-http's
//!   `RequestBodyLimitLayer`): the verifier hashes whatever it is given.
//! - The header is parsed strictly and cheaply (at most
//!   [`DEFAULT_MAX_HEADER_LEN`] bytes of visible ASCII), and the timestamp is checked
//!   before any MAC is computed, so garbage and stale requests cost almost nothing.
//! - MACs are compared in constant time, on fixed 32-byte tags.
//! - The tolerance bounds replays but does not prevent them inside the window: a handler
//!   whose action is not idempotent should also remember the event ids it has seen.
//! - Secrets are kept in [`secrecy`] boxes, zeroized on drop, and are never printed:
//!   not by `Debug`, not in errors.
//!
//! Every error maps to a row of the rejection table: [`SignatureError::reason`] is
//! `invalid_signature` (missing, malformed or wrong) or `stale_signature`, both `401`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The header that carries the signature, in the lowercase form `http` uses for names.
pub const SIGNATURE_HEADER: &str = "x-keygate-signature";

/// How far the signed timestamp may be from the verifier's clock, in either direction,
/// unless [`WebhookVerifier::with_tolerance`] says otherwise.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The longest signature header accepted, in bytes, unless
/// [`WebhookVerifier::with_max_header_len`] says otherwise.
///
/// 1024 bytes hold a timestamp and a dozen `v1` signatures.
pub const DEFAULT_MAX_HEADER_LEN: usize = 1024;

/// The shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Longest accepted `t` value: `u64::MAX` has 20 decimal digits.
const MAX_TIMESTAMP_DIGITS: usize = 20;

/// Length of a `v1` value: the hex form of a 32-byte HMAC-SHA256 tag.
const SIGNATURE_HEX_LEN: usize = 64;

/// SHA-256's block size: the length of the HMAC key once it has been normalized.
const BLOCK_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A shared webhook signing secret.
///
/// Built from a string or bytes of at least [`MIN_SECRET_LEN`] bytes, which are used
/// verbatim as the HMAC key (a `whsec_...` string is used as it is, not base64-decoded).
///
/// The secret is stored in a [`SecretBox`] (zeroized on drop) in the block-sized form
/// HMAC works with (RFC 2104: padded with zeros, or first hashed when longer than a
/// block), so it never has to be re-derived or re-validated. The owned `String` and
/// `Vec<u8>` conversions zeroize their input. `Debug` prints `[REDACTED]`.
///
/// ```
/// use keygate::webhook::{WebhookConfigError, WebhookSecret};
///
/// # fn main() -> Result<(), WebhookConfigError> {
/// let secret: WebhookSecret = "whsec_0123456789abcdef".parse()?;
/// assert_eq!(format!("{secret:?}"), "WebhookSecret([REDACTED])");
/// assert!(WebhookSecret::try_from("too short").is_err());
/// # Ok(())
/// # }
/// ```
pub struct WebhookSecret(SecretBox<[u8; BLOCK_LEN]>);

impl WebhookSecret {
    /// Builds a secret from raw bytes.
    ///
    /// # Errors
    ///
    /// [`WebhookConfigError::SecretTooShort`] (with `index` 0) when `secret` is shorter
    /// than [`MIN_SECRET_LEN`] bytes.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, WebhookConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(WebhookConfigError::SecretTooShort { index: 0 });
        }
        let mut key = SecretBox::new(Box::new([0_u8; BLOCK_LEN]));
        let block = key.expose_secret_mut();
        if secret.len() <= BLOCK_LEN {
            block[..secret.len()].copy_from_slice(secret);
        } else {
            let mut digest = Sha256::digest(secret);
            block[..digest.len()].copy_from_slice(&digest);
            digest.as_mut_slice().zeroize();
        }
        Ok(Self(key))
    }

    /// A MAC keyed with this secret, ready for input.
    fn mac(&self) -> HmacSha256 {
        let key: &Key<HmacSha256> = self.0.expose_secret().into();
        HmacSha256::new(key)
    }

    /// The HMAC-SHA256 tag of `"<timestamp>.<body>"`, `timestamp` as written in the header.
    fn tag(&self, timestamp: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl TryFrom<&[u8]> for WebhookSecret {
    type Error = WebhookConfigError;

    fn try_from(secret: &[u8]) -> Result<Self, Self::Error> {
        Self::from_bytes(secret)
    }
}

impl TryFrom<&str> for WebhookSecret {
    type Error = WebhookConfigError;

    fn try_from(secret: &str) -> Result<Self, Self::Error> {
        Self::from_bytes(secret.as_bytes())
    }
}

impl TryFrom<Vec<u8>> for WebhookSecret {
    type Error = WebhookConfigError;

    /// Builds a secret from owned bytes, then zeroizes them.
    fn try_from(mut secret: Vec<u8>) -> Result<Self, Self::Error> {
        let result = Self::from_bytes(&secret);
        secret.zeroize();
        result
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = WebhookConfigError;

    /// Builds a secret from an owned string, then zeroizes it.
    fn try_from(mut secret: String) -> Result<Self, Self::Error> {
        let result = Self::from_bytes(secret.as_bytes());
        secret.zeroize();
        result
    }
}

impl FromStr for WebhookSecret {
    type Err = WebhookConfigError;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(secret.as_bytes())
    }
}

/// Verifies `X-Keygate-Signature` headers against one or more secrets.
///
/// Cheap to clone (the secrets are shared), `Send + Sync`, and free of any framework:
/// give it the header and the raw body. Several secrets are valid at once so that a
/// secret can be rotated without downtime: configure the new and the old one, move the
/// sender to the new one, then drop the old one.
///
/// `Debug` shows how many secrets there are and the tolerance, never the secrets.
#[derive(Clone)]
pub struct WebhookVerifier {
    secrets: Arc<[WebhookSecret]>,
    tolerance: Duration,
    max_header_len: usize,
}

impl WebhookVerifier {
    /// A verifier accepting signatures made with any of `secrets`, with the
    /// [`DEFAULT_TOLERANCE`] and [`DEFAULT_MAX_HEADER_LEN`].
    ///
    /// # Errors
    ///
    /// [`WebhookConfigError::NoSecrets`] when `secrets` is empty.
    pub fn new(
        secrets: impl IntoIterator<Item = WebhookSecret>,
    ) -> Result<Self, WebhookConfigError> {
        let secrets: Arc<[WebhookSecret]> = secrets.into_iter().collect();
        if secrets.is_empty() {
            return Err(WebhookConfigError::NoSecrets);
        }
        Ok(Self {
            secrets,
            tolerance: DEFAULT_TOLERANCE,
            max_header_len: DEFAULT_MAX_HEADER_LEN,
        })
    }

    /// A verifier from a comma-separated list of secrets, as kept in an environment
    /// variable such as `STITCHER_WEBHOOK_SECRETS`.
    ///
    /// Whitespace around each entry is trimmed; every entry must then be at least
    /// [`MIN_SECRET_LEN`] bytes long (so a secret cannot contain a comma).
    ///
    /// ```
    /// use keygate::webhook::{WebhookConfigError, WebhookVerifier};
    ///
    /// let verifier = WebhookVerifier::from_comma_separated("whsec_new_0123456789, whsec_old_0123456789");
    /// assert!(verifier.is_ok());
    /// assert!(matches!(
    ///     WebhookVerifier::from_comma_separated("whsec_new_0123456789,"),
    ///     Err(WebhookConfigError::EmptySecret { index: 1 })
    /// ));
    /// assert!(matches!(WebhookVerifier::from_comma_separated(""), Err(WebhookConfigError::NoSecrets)));
    /// ```
    ///
    /// # Errors
    ///
    /// - [`WebhookConfigError::NoSecrets`] when `value` is empty or only whitespace;
    /// - [`WebhookConfigError::EmptySecret`] for an empty entry (`"a,,b"`, a trailing comma);
    /// - [`WebhookConfigError::SecretTooShort`] for an entry shorter than [`MIN_SECRET_LEN`].
    pub fn from_comma_separated(value: &str) -> Result<Self, WebhookConfigError> {
        if value.trim().is_empty() {
            return Err(WebhookConfigError::NoSecrets);
        }
        let secrets = value
            .split(',')
            .map(str::trim)
            .enumerate()
            .map(|(index, entry)| {
                if entry.is_empty() {
                    return Err(WebhookConfigError::EmptySecret { index });
                }
                WebhookSecret::from_bytes(entry.as_bytes()).map_err(|error| match error {
                    WebhookConfigError::SecretTooShort { .. } => {
                        WebhookConfigError::SecretTooShort { index }
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(secrets)
    }

    /// Sets how far the signed timestamp may be from the verifier's clock, in either
    /// direction (default [`DEFAULT_TOLERANCE`]). A timestamp exactly `tolerance` away
    /// is still accepted.
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets the longest signature header accepted, in bytes (default
    /// [`DEFAULT_MAX_HEADER_LEN`]). Longer headers are [`SignatureError::Malformed`].
    #[must_use]
    pub fn with_max_header_len(mut self, max_header_len: usize) -> Self {
        self.max_header_len = max_header_len;
        self
    }

    /// The configured tolerance.
    #[must_use]
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }

    /// The configured maximum header length, in bytes.
    #[must_use]
    pub fn max_header_len(&self) -> usize {
        self.max_header_len
    }

    /// Verifies a signature header against `body`, at the current system time.
    ///
    /// Pass `headers.get(SIGNATURE_HEADER)`; [`verify_headers`](Self::verify_headers)
    /// also refuses a header given twice.
    ///
    /// # Errors
    ///
    /// See [`verify_at`](Self::verify_at).
    pub fn verify(
        &self,
        header: Option<&http::HeaderValue>,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        self.verify_at(header, body, SystemTime::now())
    }

    /// Verifies a signature header against `body`, as if the time were `now`.
    ///
    /// The header is parsed fully, then the timestamp is checked, and only then is a MAC
    /// computed for each secret (the body is hashed once per secret, however many `v1`
    /// entries there are).
    ///
    /// # Errors
    ///
    /// - [`SignatureError::Missing`] when `header` is `None`;
    /// - [`SignatureError::Malformed`] when it is too long, not visible ASCII, has no or
    ///   several `t`, no `v1`, or a `t` or `v1` of the wrong form;
    /// - [`SignatureError::Stale`] when `t` is more than the tolerance away from `now`
    ///   (or `now` is before the Unix epoch);
    /// - [`SignatureError::Mismatch`] when no `v1` matches any secret.
    pub fn verify_at(
        &self,
        header: Option<&http::HeaderValue>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let parsed = ParsedHeader::parse(header.as_bytes(), self.max_header_len)?;

        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SignatureError::Stale)?;
        if now.abs_diff(Duration::from_secs(parsed.timestamp)) > self.tolerance {
            return Err(SignatureError::Stale);
        }

        for secret in self.secrets.iter() {
            let expected = secret.tag(parsed.timestamp_digits, body);
            let matched = parsed
                .signatures()
                .fold(Choice::from(0), |matched, candidate| {
                    matched | expected[..].ct_eq(&candidate[..])
                });
            if bool::from(matched) {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }

    /// Verifies the signature header found in `headers` against `body`, at the current
    /// system time. A header present more than once is [`SignatureError::Malformed`].
    ///
    /// This is all a handler needs, whatever the framework:
    ///
    /// ```
    /// use http::{Request, StatusCode};
    /// use keygate::webhook::{WebhookVerifier, sign};
    /// # use keygate::webhook::WebhookSecret;
    /// # use std::time::{SystemTime, UNIX_EPOCH};
    ///
    /// fn webhook(verifier: &WebhookVerifier, request: &Request<Vec<u8>>) -> StatusCode {
    ///     match verifier.verify_headers(request.headers(), request.body()) {
    ///         Ok(()) => StatusCode::ACCEPTED,
    ///         Err(_) => StatusCode::UNAUTHORIZED,
    ///     }
    /// }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let verifier = WebhookVerifier::from_comma_separated("whsec_0123456789abcdef")?;
    /// # let secret = WebhookSecret::try_from("whsec_0123456789abcdef")?;
    /// # let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    /// # let body = b"{}".to_vec();
    /// # let request = Request::post("/stitcher/webhook")
    /// #     .header("x-keygate-signature", sign(&secret, now, &body))
    /// #     .body(body)?;
    /// # assert_eq!(webhook(&verifier, &request), StatusCode::ACCEPTED);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`verify_at`](Self::verify_at).
    pub fn verify_headers(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        self.verify_headers_at(headers, body, SystemTime::now())
    }

    /// Like [`verify_headers`](Self::verify_headers), as if the time were `now`.
    ///
    /// # Errors
    ///
    /// See [`verify_at`](Self::verify_at); a header present more than once is
    /// [`SignatureError::Malformed`].
    pub fn verify_headers_at(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), SignatureError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let header = values.next();
        if values.next().is_some() {
            return Err(SignatureError::Malformed);
        }
        self.verify_at(header, body, now)
    }
}

impl fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

/// Signs `body` as sent at `timestamp` (Unix seconds) and returns the whole
/// [`SIGNATURE_HEADER`] value: `t=<timestamp>,v1=<lowercase hex HMAC-SHA256>`.
///
/// For senders and tests. A sender rotating its secret may sign with each secret and
/// join the `v1=` items of the results with commas.
///
/// ```
/// use keygate::webhook::{WebhookSecret, sign};
///
/// # fn main() -> Result<(), keygate::webhook::WebhookConfigError> {
/// let secret = WebhookSecret::try_from("whsec_0123456789abcdef")?;
/// let value = sign(&secret, 1_700_000_000, b"{}");
/// assert!(value.starts_with("t=1700000000,v1="));
/// assert_eq!(value.len(), "t=1700000000,v1=".len() + 64);
/// # Ok(())
/// # }
/// ```
#[must_use]
pub fn sign(secret: &WebhookSecret, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let tag = secret.tag(timestamp.as_bytes(), body);
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a webhook signature was refused.
///
/// The messages say what was wrong with the header, never what it contained.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The request has no signature header.
    #[error("webhook signature is missing")]
    Missing,
    /// The signature header is not of the form `t=<digits>,v1=<64 hex digits>[,...]`,
    /// is too long, or is present more than once.
    #[error("webhook signature is malformed")]
    Malformed,
    /// No `v1` signature matches the body under any configured secret.
    #[error("webhook signature does not match")]
    Mismatch,
    /// The signed timestamp is outside the tolerance.
    #[error("webhook signature timestamp is outside the tolerance")]
    Stale,
}

impl SignatureError {
    /// The machine-readable reason of the rejection: `"stale_signature"` for
    /// [`Stale`](Self::Stale), `"invalid_signature"` otherwise. Either way the status is
    /// `401 Unauthorized`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Stale => "stale_signature",
            Self::Missing | Self::Malformed | Self::Mismatch => "invalid_signature",
        }
    }
}

/// Why a [`WebhookSecret`] or [`WebhookVerifier`] could not be built.
///
/// A server should refuse to start on any of these.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// No secret was configured.
    #[error("no webhook secret configured")]
    NoSecrets,
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("webhook secret {index} is shorter than {min} bytes", min = MIN_SECRET_LEN)]
    SecretTooShort {
        /// Zero-based position of the secret in its list (0 for a secret built alone).
        index: usize,
    },
    /// An entry of a comma-separated list of secrets is empty.
    #[error("webhook secret {index} is empty")]
    EmptySecret {
        /// Zero-based position of the entry in the list.
        index: usize,
    },
}

/// A signature header that passed the syntax checks.
#[derive(Debug)]
struct ParsedHeader<'a> {
    /// The whole header value.
    value: &'a [u8],
    /// `t` as written: the exact bytes that were signed.
    timestamp_digits: &'a [u8],
    /// `t` as a number.
    timestamp: u64,
}

impl<'a> ParsedHeader<'a> {
    /// Checks the whole header without allocating: length, charset, one valid `t`, at
    /// least one `v1`, every `v1` 64 hex digits, every key alphanumeric.
    fn parse(value: &'a [u8], max_len: usize) -> Result<Self, SignatureError> {
        if value.len() > max_len || !value.iter().all(u8::is_ascii_graphic) {
            return Err(SignatureError::Malformed);
        }
        let mut timestamp = None;
        let mut has_signature = false;
        for item in value.split(|&byte| byte == b',') {
            let (key, field) = split_item(item).ok_or(SignatureError::Malformed)?;
            match key {
                b"t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed);
                    }
                    let number = parse_timestamp(field).ok_or(SignatureError::Malformed)?;
                    timestamp = Some((field, number));
                }
                b"v1" => {
                    if field.len() != SIGNATURE_HEX_LEN || !field.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(SignatureError::Malformed);
                    }
                    has_signature = true;
                }
                _ => {
                    if key.is_empty() || !key.iter().all(u8::is_ascii_alphanumeric) {
                        return Err(SignatureError::Malformed);
                    }
                }
            }
        }
        match timestamp {
            Some((timestamp_digits, timestamp)) if has_signature => Ok(Self {
                value,
                timestamp_digits,
                timestamp,
            }),
            _ => Err(SignatureError::Malformed),
        }
    }

    /// The decoded `v1` signatures, in order.
    fn signatures(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.value
            .split(|&byte| byte == b',')
            .filter_map(split_item)
            .filter(|(key, _)| *key == b"v1")
            .filter_map(|(_, field)| {
                let mut tag = [0_u8; 32];
                hex::decode_to_slice(field, &mut tag).ok().map(|()| tag)
            })
    }
}

/// Splits `key=value` at the first `=`.
fn split_item(item: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = item.iter().position(|&byte| byte == b'=')?;
    Some((&item[..at], &item[at + 1..]))
}

/// Parses 1 to 20 ASCII digits into a `u64` (no sign, no overflow).
fn parse_timestamp(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_TIMESTAMP_DIGITS {
        return None;
    }
    digits.iter().try_fold(0_u64, |number, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

/// A signature refusal as the guard's [`Rejection`](crate::Rejection): stale timestamps
/// are `stale_signature`, anything else `invalid_signature`.
impl From<SignatureError> for crate::Rejection {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::Stale => crate::Rejection::StaleSignature,
            _ => crate::Rejection::InvalidSignature,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use http::{HeaderMap, HeaderValue};

    use super::*;

    const SECRET: &str = "whsec_test_secret_0123456789";
    const OTHER_SECRET: &str = "whsec_other_secret_9876543210";
    const T: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"job":"42","event":"completed"}"#;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn secret(value: &str) -> Result<WebhookSecret, WebhookConfigError> {
        WebhookSecret::try_from(value)
    }

    fn verifier() -> Result<WebhookVerifier, WebhookConfigError> {
        WebhookVerifier::new([secret(SECRET)?])
    }

    fn header(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        HeaderValue::from_str(value)
    }

    fn signed(secret_value: &str, timestamp: u64, body: &[u8]) -> TestResult<HeaderValue> {
        Ok(header(&sign(&secret(secret_value)?, timestamp, body))?)
    }

    type TestResult<T = ()> = Result<T, Box<dyn Error>>;

    fn check(value: &str, now: u64) -> Result<Result<(), SignatureError>, Box<dyn Error>> {
        Ok(verifier()?.verify_at(Some(&header(value)?), BODY, at(now)))
    }

    /// A valid `v1` value computed with `SECRET` over `T` and `BODY`.
    fn valid_v1() -> Result<String, Box<dyn Error>> {
        let value = sign(&secret(SECRET)?, T, BODY);
        let (_, v1) = value.split_once(",v1=").ok_or("no v1 in signed value")?;
        Ok(v1.to_owned())
    }

    // ---- the format, pinned against an independent implementation ----

    #[test]
    fn sign_matches_known_answer() -> TestResult {
        // python3: hmac.new(SECRET, b"1700000000." + BODY, hashlib.sha256).hexdigest()
        assert_eq!(
            sign(&secret(SECRET)?, T, BODY),
            "t=1700000000,v1=b5b94bb87361d24fba1f62c01c2b6df26e81f467a6de243c0f02dbc38d3d1581"
        );
        Ok(())
    }

    #[test]
    fn key_normalization_matches_rfc_4231() -> TestResult {
        // Test case 1 (key shorter than a block) and 6 (key longer than a block).
        let cases: [(Vec<u8>, &[u8], &str); 2] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, expected) in cases {
            let mac = WebhookSecret::from_bytes(&key)?.mac().chain_update(data);
            assert_eq!(hex::encode(mac.finalize().into_bytes()), expected);
        }
        Ok(())
    }

    #[test]
    fn key_normalization_matches_hmac_for_every_length() -> TestResult {
        for len in MIN_SECRET_LEN..=3 * BLOCK_LEN {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let ours = WebhookSecret::from_bytes(&key)?.mac().chain_update(BODY);
            let reference = HmacSha256::new_from_slice(&key)?.chain_update(BODY);
            assert_eq!(
                ours.finalize().into_bytes(),
                reference.finalize().into_bytes(),
                "key length {len}"
            );
        }
        Ok(())
    }

    // ---- accepted ----

    #[test]
    fn valid_signature_is_accepted() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        assert_eq!(verifier()?.verify_at(Some(&value), BODY, at(T)), Ok(()));
        Ok(())
    }

    #[test]
    fn verify_uses_the_system_clock() -> TestResult {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let verifier = verifier()?;
        assert_eq!(
            verifier.verify(Some(&signed(SECRET, now, BODY)?), BODY),
            Ok(())
        );
        assert_eq!(
            verifier.verify(Some(&signed(SECRET, T, BODY)?), BODY),
            Err(SignatureError::Stale)
        );
        Ok(())
    }

    #[test]
    fn second_secret_is_accepted_during_rotation() -> TestResult {
        let verifier = WebhookVerifier::new([secret(SECRET)?, secret(OTHER_SECRET)?])?;
        for used in [SECRET, OTHER_SECRET] {
            let value = signed(used, T, BODY)?;
            assert_eq!(verifier.verify_at(Some(&value), BODY, at(T)), Ok(()));
        }
        Ok(())
    }

    #[test]
    fn any_of_two_v1_entries_is_accepted() -> TestResult {
        let good = valid_v1()?;
        let bad = "0".repeat(64);
        for value in [
            format!("t={T},v1={bad},v1={good}"),
            format!("t={T},v1={good},v1={bad}"),
        ] {
            assert_eq!(check(&value, T)?, Ok(()), "{value}");
        }
        Ok(())
    }

    #[test]
    fn sender_signing_with_both_secrets_is_accepted_by_either_verifier() -> TestResult {
        let new = sign(&secret(OTHER_SECRET)?, T, BODY);
        let (_, new_v1) = new.split_once(",v1=").ok_or("no v1")?;
        let value = header(&format!("{},v1={new_v1}", sign(&secret(SECRET)?, T, BODY)))?;
        for verifying in [SECRET, OTHER_SECRET] {
            let verifier = WebhookVerifier::new([secret(verifying)?])?;
            assert_eq!(verifier.verify_at(Some(&value), BODY, at(T)), Ok(()));
        }
        Ok(())
    }

    #[test]
    fn uppercase_hex_and_item_order_and_unknown_schemes_are_accepted() -> TestResult {
        let v1 = valid_v1()?;
        let upper = v1.to_ascii_uppercase();
        for value in [
            format!("t={T},v1={upper}"),
            format!("v1={v1},t={T}"),
            format!("t={T},v0=legacy,v1={v1},v2={}", "f".repeat(128)),
        ] {
            assert_eq!(check(&value, T)?, Ok(()), "{value}");
        }
        Ok(())
    }

    #[test]
    fn timestamp_is_signed_as_written() -> TestResult {
        // Leading zeros change the signed payload, so the canonical signature no longer fits.
        let value = format!("t=0{T},v1={}", valid_v1()?);
        assert_eq!(check(&value, T)?, Err(SignatureError::Mismatch));
        Ok(())
    }

    // ---- invalid_signature: mismatch ----

    #[test]
    fn wrong_secret_is_mismatch() -> TestResult {
        let value = signed(OTHER_SECRET, T, BODY)?;
        assert_eq!(
            verifier()?.verify_at(Some(&value), BODY, at(T)),
            Err(SignatureError::Mismatch)
        );
        Ok(())
    }

    #[test]
    fn tampered_body_is_mismatch() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        let verifier = verifier()?;
        for body in [
            &br#"{"job":"43","event":"completed"}"#[..],
            br#"{"job":"42","event":"completed"} "#,
            b"",
        ] {
            assert_eq!(
                verifier.verify_at(Some(&value), body, at(T)),
                Err(SignatureError::Mismatch)
            );
        }
        Ok(())
    }

    #[test]
    fn tampered_timestamp_is_mismatch() -> TestResult {
        let value = format!("t={},v1={}", T + 1, valid_v1()?);
        assert_eq!(check(&value, T)?, Err(SignatureError::Mismatch));
        Ok(())
    }

    // ---- stale_signature ----

    #[test]
    fn old_timestamp_is_stale() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        let verifier = verifier()?;
        assert_eq!(verifier.verify_at(Some(&value), BODY, at(T + 300)), Ok(()));
        assert_eq!(
            verifier.verify_at(Some(&value), BODY, at(T + 301)),
            Err(SignatureError::Stale)
        );
        Ok(())
    }

    #[test]
    fn future_timestamp_is_stale() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        let verifier = verifier()?;
        assert_eq!(verifier.verify_at(Some(&value), BODY, at(T - 300)), Ok(()));
        assert_eq!(
            verifier.verify_at(Some(&value), BODY, at(T - 301)),
            Err(SignatureError::Stale)
        );
        Ok(())
    }

    #[test]
    fn tolerance_is_configurable_to_sub_second_precision() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        let verifier = verifier()?.with_tolerance(Duration::from_secs(10));
        assert_eq!(verifier.tolerance(), Duration::from_secs(10));
        let now = at(T + 10);
        assert_eq!(verifier.verify_at(Some(&value), BODY, now), Ok(()));
        assert_eq!(
            verifier.verify_at(Some(&value), BODY, now + Duration::from_millis(1)),
            Err(SignatureError::Stale)
        );
        Ok(())
    }

    #[test]
    fn stale_is_decided_before_the_signature() -> TestResult {
        // A wrong signature with an old timestamp reports the cheap check.
        let value = format!("t=1,v1={}", "0".repeat(64));
        assert_eq!(check(&value, T)?, Err(SignatureError::Stale));
        Ok(())
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() -> TestResult {
        let v1 = "0".repeat(64);
        for t in [0, u64::MAX] {
            let value = format!("t={t},v1={v1}");
            assert_eq!(check(&value, T)?, Err(SignatureError::Stale), "{value}");
        }
        let value = format!("t={T},v1={}", valid_v1()?);
        let huge = verifier()?.with_tolerance(Duration::MAX);
        assert_eq!(
            huge.verify_at(Some(&header(&value)?), BODY, UNIX_EPOCH),
            Ok(())
        );
        let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(
            huge.verify_at(Some(&header(&value)?), BODY, before_epoch),
            Err(SignatureError::Stale)
        );
        Ok(())
    }

    // ---- invalid_signature: missing and malformed ----

    #[test]
    fn missing_header_is_missing() -> TestResult {
        let verifier = verifier()?;
        assert_eq!(
            verifier.verify_at(None, BODY, at(T)),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verifier.verify_headers_at(&HeaderMap::new(), BODY, at(T)),
            Err(SignatureError::Missing)
        );
        Ok(())
    }

    #[test]
    fn malformed_headers_are_malformed() -> TestResult {
        let v1 = valid_v1()?;
        let cases = [
            ("empty", String::new()),
            ("no t", format!("v1={v1}")),
            ("no v1", format!("t={T}")),
            ("only unknown schemes", format!("t={T},v0={v1}")),
            ("t twice", format!("t={T},t={T},v1={v1}")),
            ("empty t", format!("t=,v1={v1}")),
            ("signed t", format!("t=+{T},v1={v1}")),
            ("negative t", format!("t=-{T},v1={v1}")),
            ("fractional t", format!("t={T}.5,v1={v1}")),
            ("21-digit t", format!("t={},v1={v1}", "1".repeat(21))),
            ("t over u64", format!("t=18446744073709551616,v1={v1}")),
            ("non-hex v1", format!("t={T},v1={}g", &v1[..63])),
            ("short v1", format!("t={T},v1={}", &v1[..63])),
            ("long v1", format!("t={T},v1={v1}0")),
            ("empty v1", format!("t={T},v1=")),
            ("base64 v1", format!("t={T},v1={}==", &v1[..42])),
            ("space after comma", format!("t={T}, v1={v1}")),
            ("space inside", format!("t={T},v1 ={v1}")),
            ("tab inside", format!("t={T},\tv1={v1}")),
            ("semicolon separator", format!("t={T};v1={v1}")),
            ("item without =", format!("t={T},v1={v1},garbage")),
            ("empty item", format!("t={T},,v1={v1}")),
            ("trailing comma", format!("t={T},v1={v1},")),
            ("leading comma", format!(",t={T},v1={v1}")),
            ("empty key", format!("t={T},={v1},v1={v1}")),
            ("odd key", format!("t={T},v-1=x,v1={v1}")),
            ("uppercase T", format!("T={T},v1={v1}")),
            ("uppercase V1", format!("t={T},V1={v1}")),
        ];
        for (name, value) in cases {
            assert_eq!(check(&value, T)?, Err(SignatureError::Malformed), "{name}");
        }
        Ok(())
    }

    #[test]
    fn non_ascii_header_is_malformed() -> TestResult {
        let v1 = valid_v1()?;
        let verifier = verifier()?;
        for bytes in [
            format!("t={T},v1={v1},x=\u{e9}").into_bytes(),
            [format!("t={T},v1={v1},x=").as_bytes(), &[0xff]].concat(),
        ] {
            let value = HeaderValue::from_bytes(&bytes)?;
            assert_eq!(
                verifier.verify_at(Some(&value), BODY, at(T)),
                Err(SignatureError::Malformed)
            );
        }
        Ok(())
    }

    #[test]
    fn overlong_header_is_malformed() -> TestResult {
        let v1 = valid_v1()?;
        let prefix = format!("t={T},v1={v1},x=");
        let exact = format!(
            "{prefix}{}",
            "a".repeat(DEFAULT_MAX_HEADER_LEN - prefix.len())
        );
        assert_eq!(exact.len(), DEFAULT_MAX_HEADER_LEN);
        assert_eq!(check(&exact, T)?, Ok(()));
        let over = format!("{exact}a");
        assert_eq!(check(&over, T)?, Err(SignatureError::Malformed));

        let verifier = verifier()?.with_max_header_len(4096);
        assert_eq!(verifier.max_header_len(), 4096);
        assert_eq!(
            verifier.verify_at(Some(&header(&over)?), BODY, at(T)),
            Ok(())
        );
        Ok(())
    }

    #[test]
    fn duplicated_header_is_malformed() -> TestResult {
        let value = signed(SECRET, T, BODY)?;
        let mut headers = HeaderMap::new();
        headers.append(SIGNATURE_HEADER, value.clone());
        assert_eq!(verifier()?.verify_headers_at(&headers, BODY, at(T)), Ok(()));
        headers.append(SIGNATURE_HEADER, value);
        assert_eq!(
            verifier()?.verify_headers_at(&headers, BODY, at(T)),
            Err(SignatureError::Malformed)
        );
        Ok(())
    }

    #[test]
    fn header_name_is_case_insensitive() -> TestResult {
        let mut headers = HeaderMap::new();
        headers.insert("X-Keygate-Signature", signed(SECRET, T, BODY)?);
        assert_eq!(verifier()?.verify_headers_at(&headers, BODY, at(T)), Ok(()));
        Ok(())
    }

    // ---- errors ----

    #[test]
    fn reasons_follow_the_rejection_table() {
        assert_eq!(SignatureError::Missing.reason(), "invalid_signature");
        assert_eq!(SignatureError::Malformed.reason(), "invalid_signature");
        assert_eq!(SignatureError::Mismatch.reason(), "invalid_signature");
        assert_eq!(SignatureError::Stale.reason(), "stale_signature");
    }

    #[test]
    fn error_messages_are_lowercase() {
        for err in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
            SignatureError::Stale,
        ] {
            let message = err.to_string();
            assert_eq!(message, message.to_lowercase());
            assert!(!message.ends_with('.'));
        }
        assert_eq!(
            WebhookConfigError::SecretTooShort { index: 2 }.to_string(),
            "webhook secret 2 is shorter than 16 bytes"
        );
    }

    // ---- configuration ----

    #[test]
    fn secret_shorter_than_16_bytes_is_refused() {
        assert!(matches!(
            WebhookSecret::try_from("0123456789abcde"),
            Err(WebhookConfigError::SecretTooShort { index: 0 })
        ));
        assert!(WebhookSecret::try_from("0123456789abcdef").is_ok());
        assert!(WebhookSecret::try_from(String::new()).is_err());
        assert!(WebhookSecret::try_from(vec![0_u8; 16]).is_ok());
        assert!(WebhookSecret::try_from(&[0_u8; 15][..]).is_err());
        assert!("0123456789abcdef".parse::<WebhookSecret>().is_ok());
    }

    #[test]
    fn verifier_without_secrets_is_refused() {
        assert!(matches!(
            WebhookVerifier::new([]),
            Err(WebhookConfigError::NoSecrets)
        ));
        for value in ["", "  "] {
            assert!(matches!(
                WebhookVerifier::from_comma_separated(value),
                Err(WebhookConfigError::NoSecrets)
            ));
        }
    }

    #[test]
    fn comma_separated_secrets_are_parsed_strictly() -> TestResult {
        let verifier =
            WebhookVerifier::from_comma_separated(&format!(" {SECRET} ,\t{OTHER_SECRET}\n"))?;
        for used in [SECRET, OTHER_SECRET] {
            let value = signed(used, T, BODY)?;
            assert_eq!(verifier.verify_at(Some(&value), BODY, at(T)), Ok(()));
        }
        for (value, index) in [
            (format!("{SECRET},,{OTHER_SECRET}"), 1),
            (format!("{SECRET},"), 1),
            (format!(",{SECRET}"), 0),
            (format!("{SECRET}, ,{OTHER_SECRET}"), 1),
        ] {
            assert!(
                matches!(
                    WebhookVerifier::from_comma_separated(&value),
                    Err(WebhookConfigError::EmptySecret { index: i }) if i == index
                ),
                "{value:?}"
            );
        }
        assert!(matches!(
            WebhookVerifier::from_comma_separated(&format!("{SECRET},short,{OTHER_SECRET}")),
            Err(WebhookConfigError::SecretTooShort { index: 1 })
        ));
        Ok(())
    }

    #[test]
    fn debug_shows_no_secret_material() -> TestResult {
        let secret_debug = format!("{:?}", secret(SECRET)?);
        assert_eq!(secret_debug, "WebhookSecret([REDACTED])");

        let verifier = WebhookVerifier::from_comma_separated(&format!("{SECRET},{OTHER_SECRET}"))?;
        let debug = format!("{verifier:?}");
        let pretty = format!("{verifier:#?}");
        assert_eq!(debug, "WebhookVerifier { secrets: 2, tolerance: 300s, .. }");
        for text in [&debug, &pretty, &secret_debug] {
            for needle in [SECRET, OTHER_SECRET, "whsec", &hex::encode(SECRET)] {
                assert!(!text.contains(needle), "{text} contains {needle}");
            }
        }
        Ok(())
    }

    #[test]
    fn verifier_is_cheap_to_share() {
        fn assert_send_sync_clone<V: Send + Sync + Clone + 'static>() {}
        assert_send_sync_clone::<WebhookVerifier>();
    }

    // ---- never panic, never accept garbage ----

    /// A generator for garbled input, seeded so that a failure replays (the seed is
    /// printed; libtest shows it when the test fails).
    fn rng(seed: u64) -> fastrand::Rng {
        println!("random input from seed {seed:#x}");
        fastrand::Rng::with_seed(seed)
    }

    /// Up to `max_len` random bytes.
    fn random_bytes(rng: &mut fastrand::Rng, max_len: usize) -> Vec<u8> {
        let len = rng.usize(..=max_len);
        (0..len).map(|_| rng.u8(..)).collect()
    }

    /// Header-like text: grammar fragments mixed with random bytes.
    fn garbled_header(rng: &mut fastrand::Rng, v1: &str) -> Vec<u8> {
        const PIECES: [&[u8]; 16] = [
            b"t=",
            b"v1=",
            b"v0=",
            b",",
            b"=",
            b"1700000000",
            b"0",
            b"99999999999999999999",
            b"18446744073709551615",
            b"deadbeef",
            b"DEADBEEF",
            b" ",
            b"\t",
            b"\xc3\xa9",
            b"-",
            b"",
        ];
        let mut out = Vec::new();
        for _ in 0..rng.usize(..12) {
            match rng.usize(..6) {
                0 => out.extend_from_slice(v1.as_bytes()),
                1 => out.extend(random_bytes(rng, 8)),
                2 => out.extend("f".repeat(rng.usize(..130)).bytes()),
                _ => out.extend_from_slice(PIECES[rng.usize(..PIECES.len())]),
            }
        }
        out
    }

    #[test]
    fn garbage_never_panics_and_is_never_accepted() -> TestResult {
        let verifier = WebhookVerifier::new([secret(SECRET)?, secret(OTHER_SECRET)?])?;
        let v1 = valid_v1()?;
        let mut rng = rng(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for _ in 0..20_000 {
            let bytes = garbled_header(&mut rng, &v1);
            let body = random_bytes(&mut rng, 64);
            // Random garbage may not even be a valid header value; the rest must be refused.
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                let now = at(T + rng.u64(..700) - 350);
                assert!(
                    verifier.verify_at(Some(&value), &body, now).is_err(),
                    "accepted {:?}",
                    String::from_utf8_lossy(&bytes)
                );
                checked += 1;
            }
        }
        assert!(checked > 10_000, "only {checked} headers were checked");
        Ok(())
    }

    #[test]
    fn mutated_signatures_are_never_accepted() -> TestResult {
        let verifier = WebhookVerifier::new([secret(SECRET)?, secret(OTHER_SECRET)?])?;
        let original = sign(&secret(SECRET)?, T, BODY);
        let mut rng = rng(0x0123_4567_89ab_cdef);
        for _ in 0..5_000 {
            let mut bytes = original.clone().into_bytes();
            match rng.usize(..3) {
                0 => {
                    let index = rng.usize(..bytes.len());
                    bytes[index] = rng.u8(..);
                }
                1 => bytes.truncate(rng.usize(..bytes.len())),
                _ => bytes.extend(random_bytes(&mut rng, 4)),
            }
            let mut body = BODY.to_vec();
            if rng.usize(..2) == 0 {
                let index = rng.usize(..body.len());
                body[index] ^= 1 << rng.usize(..8);
            }
            let Ok(value) = HeaderValue::from_bytes(&bytes) else {
                continue;
            };
            let result = verifier.verify_at(Some(&value), &body, at(T));
            if result.is_ok() {
                // Only harmless changes are accepted: the case of a hex digit, or an
                // appended unknown item's value.
                assert_eq!(body, BODY);
                let same = bytes.eq_ignore_ascii_case(original.as_bytes())
                    || bytes.starts_with(original.as_bytes());
                assert!(same, "accepted {:?}", String::from_utf8_lossy(&bytes));
            }
        }
        Ok(())
    }
}
