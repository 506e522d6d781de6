//! [`sign`]: the sender's side.

use super::WebhookSecret;

/// Signs `body` as sent at `timestamp` (Unix seconds) and returns the whole
/// [`SIGNATURE_HEADER`](super::SIGNATURE_HEADER) value: `t=<timestamp>,v1=<lowercase hex HMAC-SHA256>`.
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

#[cfg(test)]
mod tests {
    use super::super::testing::{BODY, SECRET, T, TestResult, secret};
    use super::*;

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
}
