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

mod error;
mod header;
mod secret;
mod sign;
#[cfg(test)]
mod testing;
mod verify;

use std::time::Duration;

pub use self::error::{SignatureError, WebhookConfigError};
pub use self::secret::WebhookSecret;
pub use self::sign::sign;
pub use self::verify::WebhookVerifier;

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
