//! [`WebhookVerifier`]: the receiver's side.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use subtle::{Choice, ConstantTimeEq};

use super::header::ParsedHeader;
use super::{
    DEFAULT_MAX_HEADER_LEN, DEFAULT_TOLERANCE, SIGNATURE_HEADER, SignatureError,
    WebhookConfigError, WebhookSecret,
};

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
    /// [`MIN_SECRET_LEN`](super::MIN_SECRET_LEN) bytes long (so a secret cannot contain a comma).
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
    /// - [`WebhookConfigError::SecretTooShort`] for an entry shorter than [`MIN_SECRET_LEN`](super::MIN_SECRET_LEN).
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

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::super::sign;
    use super::super::testing::{
        BODY, OTHER_SECRET, SECRET, T, TestResult, at, check, header, secret, signed, valid_v1,
        verifier,
    };
    use super::*;

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

    // ---- configuration ----

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
