//! What the webhook tests share: a secret, a body, a time, and shorthands.

use std::error::Error;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::{SignatureError, WebhookConfigError, WebhookSecret, WebhookVerifier, sign};

pub(super) const SECRET: &str = "whsec_test_secret_0123456789";
pub(super) const OTHER_SECRET: &str = "whsec_other_secret_9876543210";
pub(super) const T: u64 = 1_700_000_000;
pub(super) const BODY: &[u8] = br#"{"job":"42","event":"completed"}"#;

pub(super) fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

pub(super) fn secret(value: &str) -> Result<WebhookSecret, WebhookConfigError> {
    WebhookSecret::try_from(value)
}

pub(super) fn verifier() -> Result<WebhookVerifier, WebhookConfigError> {
    WebhookVerifier::new([secret(SECRET)?])
}

pub(super) fn header(value: &str) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
    HeaderValue::from_str(value)
}

pub(super) fn signed(secret_value: &str, timestamp: u64, body: &[u8]) -> TestResult<HeaderValue> {
    Ok(header(&sign(&secret(secret_value)?, timestamp, body))?)
}

pub(super) type TestResult<T = ()> = Result<T, Box<dyn Error>>;

pub(super) fn check(value: &str, now: u64) -> Result<Result<(), SignatureError>, Box<dyn Error>> {
    Ok(verifier()?.verify_at(Some(&header(value)?), BODY, at(now)))
}

/// A valid `v1` value computed with `SECRET` over `T` and `BODY`.
pub(super) fn valid_v1() -> Result<String, Box<dyn Error>> {
    let value = sign(&secret(SECRET)?, T, BODY);
    let (_, v1) = value.split_once(",v1=").ok_or("no v1 in signed value")?;
    Ok(v1.to_owned())
}
