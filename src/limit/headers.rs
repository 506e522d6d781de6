//! `RateLimit-Policy`, `RateLimit` and `Retry-After` headers
//! (draft-ietf-httpapi-ratelimit-headers-11).

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, header::RETRY_AFTER};

use super::RateLimitDecision;

/// The `RateLimit-Policy` header name: the quota policy (`"default";q=100;w=60`).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The `RateLimit` header name: the caller's current allowance (`"default";r=42;t=17`).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds for a `Retry-After` header: `wait` rounded **up**, and never `0`.
///
/// A refused caller told `Retry-After: 0` retries at once and is refused again, so
/// the minimum is one second. Use it for every `Retry-After` keygate sends (429 and 503).
///
/// ```
/// use std::time::Duration;
/// use keygate::limit::retry_after_secs;
///
/// assert_eq!(retry_after_secs(Duration::from_millis(1200)), 2);
/// assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
/// assert_eq!(retry_after_secs(Duration::from_nanos(1)), 1);
/// assert_eq!(retry_after_secs(Duration::ZERO), 1);
/// ```
#[must_use]
pub const fn retry_after_secs(wait: Duration) -> u64 {
    let secs = ceil_secs(wait);
    if secs == 0 { 1 } else { secs }
}

/// `duration` in whole seconds, rounded up.
const fn ceil_secs(duration: Duration) -> u64 {
    if duration.subsec_nanos() == 0 {
        duration.as_secs()
    } else {
        duration.as_secs().saturating_add(1)
    }
}

/// The rate-limit headers of one decision, ready to be added to a response.
///
/// Built by [`RateLimitDecision::headers`]:
///
/// - `RateLimit-Policy: "<policy>";q=<limit>;w=<window seconds>`
/// - `RateLimit: "<policy>";r=<remaining>;t=<seconds until full capacity>` (for a
///   [strict](super::Quota::strict) quota: seconds until the next slot frees)
/// - `Retry-After: <seconds>` on refusals only ([`retry_after_secs`]: rounded up, at least 1).
///
/// Seconds are rounded up. The policy name is a structured-field string; names set with
/// [`Quota::named`](super::Quota::named) are tokens and appear as they are.
///
/// governor reports decisions, not HTTP headers, so keygate formats them itself. The
/// `RateLimit-Policy` value is made once per distinct policy name, limit and window of a
/// [`Quota`](super::Quota) and kept as a static value that every decision under it clones
/// without touching a reference count; the `RateLimit` value is written into a small
/// stack buffer and copied once into its [`HeaderValue`]: one allocation per admitted
/// response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHeaders {
    policy: HeaderValue,
    rate_limit: HeaderValue,
    retry_after: Option<HeaderValue>,
}

impl RateLimitHeaders {
    /// The `RateLimit-Policy` value.
    #[must_use]
    pub fn policy(&self) -> &HeaderValue {
        &self.policy
    }

    /// The `RateLimit` value.
    #[must_use]
    pub fn rate_limit(&self) -> &HeaderValue {
        &self.rate_limit
    }

    /// The `Retry-After` value (refusals only).
    #[must_use]
    pub fn retry_after(&self) -> Option<&HeaderValue> {
        self.retry_after.as_ref()
    }

    /// Inserts the headers into `headers`, replacing any of the same names.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy);
        headers.insert(RATELIMIT, self.rate_limit);
        if let Some(retry_after) = self.retry_after {
            headers.insert(RETRY_AFTER, retry_after);
        }
    }
}

impl RateLimitDecision {
    /// The rate-limit headers for this decision.
    ///
    /// ```
    /// use std::{num::NonZeroU32, time::Duration};
    /// use keygate::limit::{Quota, RateLimitDecision};
    ///
    /// let quota = Quota::per_minute(NonZeroU32::new(100).unwrap());
    /// let allowed = RateLimitDecision::allow(&quota, 42, Duration::from_millis(16_200));
    /// let headers = allowed.headers();
    /// assert_eq!(headers.policy(), r#""default";q=100;w=60"#);
    /// assert_eq!(headers.rate_limit(), r#""default";r=42;t=17"#);
    /// assert!(headers.retry_after().is_none());
    ///
    /// let refused = RateLimitDecision::refuse(
    ///     &quota, 0, Duration::from_secs(60), Duration::from_millis(600));
    /// let mut map = http::HeaderMap::new();
    /// refused.headers().apply(&mut map);
    /// assert_eq!(map["ratelimit"], r#""default";r=0;t=60"#);
    /// assert_eq!(map["retry-after"], "1");
    /// ```
    #[must_use]
    pub fn headers(&self) -> RateLimitHeaders {
        // A decision made under a quota carries the quota's values, made once; one whose
        // fields were changed since is formatted in full.
        let rendered = self
            .rendered
            .filter(|r| r.describes(&self.policy, self.limit, self.window));

        let policy = match rendered {
            // A static value: cloning it touches no reference count.
            Some(rendered) => rendered.policy_value.clone(),
            None => value_of(&render_policy(&self.policy, self.limit, self.window).0),
        };

        let mut rate_limit = ValueBuf::new();
        if let Some(rendered) = rendered {
            rate_limit.push(rendered.rate_limit_prefix);
        } else {
            rate_limit.push_sf_string(&self.policy);
            rate_limit.push(b";r=");
        }
        rate_limit.push_u64(u64::from(self.remaining));
        rate_limit.push(b";t=");
        rate_limit.push_u64(ceil_secs(self.reset));

        let retry_after = (!self.allowed).then(|| {
            let secs = retry_after_secs(self.retry_after.unwrap_or(self.reset));
            HeaderValue::from(secs)
        });

        RateLimitHeaders {
            policy,
            rate_limit: rate_limit.into_value(),
            retry_after,
        }
    }
}

/// The `RateLimit-Policy` value of a policy (`"<policy>";q=<limit>;w=<window>`), and the
/// start of its `RateLimit` values (`"<policy>";r=`). Printable ASCII only.
pub(crate) fn render_policy(policy: &str, limit: u32, window: Duration) -> (Box<[u8]>, Box<[u8]>) {
    let mut prefix = ValueBuf::new();
    prefix.push_sf_string(policy);
    let name_len = prefix.len();
    prefix.push(b";r=");
    let mut value = ValueBuf::new();
    value.push(prefix.as_bytes().get(..name_len).unwrap_or_default());
    value.push(b";q=");
    value.push_u64(u64::from(limit));
    value.push(b";w=");
    value.push_u64(ceil_secs(window).max(1));
    (value.as_bytes().into(), prefix.as_bytes().into())
}

/// A header value of printable ASCII (what [`ValueBuf`] writes), copied.
fn value_of(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or(HeaderValue::from_static(""))
}

/// The bytes of a header value: on the stack up to `STACK` bytes (every value keygate
/// makes with a policy name of up to 64 token characters), on the heap past that.
/// Copied once into its [`HeaderValue`]: one allocation per header, none for formatting.
struct ValueBuf {
    stack: [u8; STACK],
    len: usize,
    heap: Vec<u8>,
}

const STACK: usize = 128;

impl ValueBuf {
    const fn new() -> Self {
        Self {
            stack: [0; STACK],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        if self.heap.is_empty() {
            self.len
        } else {
            self.heap.len()
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.heap.is_empty() {
            let end = self.len + bytes.len();
            if let Some(slot) = self.stack.get_mut(self.len..end) {
                slot.copy_from_slice(bytes);
                self.len = end;
                return;
            }
            self.heap.reserve(end.max(STACK * 2));
            self.heap
                .extend_from_slice(self.stack.get(..self.len).unwrap_or_default());
        }
        self.heap.extend_from_slice(bytes);
    }

    /// Writes `n` in decimal.
    fn push_u64(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Writes `s` as a structured-field string (RFC 8941, section 3.3.3): quoted,
    /// `"` and `\` escaped, and any byte outside printable ASCII replaced by `?` (a
    /// decision built by hand may carry any name; the header must stay valid).
    fn push_sf_string(&mut self, s: &str) {
        self.push(b"\"");
        for byte in s.bytes() {
            match byte {
                b'"' | b'\\' => self.push(&[b'\\', byte]),
                0x20..=0x7e => self.push(&[byte]),
                _ => self.push(b"?"),
            }
        }
        self.push(b"\"");
    }

    fn as_bytes(&self) -> &[u8] {
        if self.heap.is_empty() {
            self.stack.get(..self.len).unwrap_or_default()
        } else {
            &self.heap
        }
    }

    fn into_value(self) -> HeaderValue {
        // Only printable ASCII is ever written, which `HeaderValue` always accepts.
        value_of(self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::limit::Quota;

    fn quota(limit: u32) -> Quota {
        Quota::per_minute(NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN))
    }

    #[test]
    fn allowed_decision_has_policy_and_ratelimit_but_no_retry_after() {
        let decision = RateLimitDecision::allow(&quota(100), 99, Duration::from_millis(600));
        let mut map = HeaderMap::new();
        decision.headers().apply(&mut map);
        assert_eq!(map[RATELIMIT_POLICY], r#""default";q=100;w=60"#);
        assert_eq!(map[RATELIMIT], r#""default";r=99;t=1"#);
        assert!(!map.contains_key(RETRY_AFTER));
    }

    #[test]
    fn refused_decision_has_retry_after_rounded_up() {
        let q = quota(100).named("gold").unwrap_or_else(|_| quota(100));
        let decision = RateLimitDecision::refuse(
            &q,
            0,
            Duration::from_millis(59_400),
            Duration::from_millis(1_200),
        );
        let headers = decision.headers();
        assert_eq!(headers.policy(), r#""gold";q=100;w=60"#);
        assert_eq!(headers.rate_limit(), r#""gold";r=0;t=60"#);
        assert_eq!(
            headers.retry_after().map(HeaderValue::as_bytes),
            Some(&b"2"[..])
        );
    }

    #[test]
    fn a_changed_decision_is_formatted_from_its_fields_not_its_quota() {
        let mut decision = RateLimitDecision::allow(&quota(100), 7, Duration::from_secs(3));
        assert_eq!(decision.headers().policy(), r#""default";q=100;w=60"#);
        decision.limit = 5;
        assert_eq!(decision.headers().policy(), r#""default";q=5;w=60"#);
        decision.policy = "gold".into();
        let headers = decision.headers();
        assert_eq!(headers.policy(), r#""gold";q=5;w=60"#);
        assert_eq!(headers.rate_limit(), r#""gold";r=7;t=3"#);
    }

    #[test]
    fn retry_after_is_never_zero_while_refused() {
        let decision = RateLimitDecision::refuse(&quota(1), 0, Duration::ZERO, Duration::ZERO);
        assert_eq!(
            decision.headers().retry_after().map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
        let no_wait = RateLimitDecision {
            retry_after: None,
            ..decision
        };
        assert_eq!(
            no_wait.headers().retry_after().map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn retry_after_secs_rounds_up_with_a_minimum_of_one() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn subsecond_windows_round_up_and_big_numbers_print_in_full() {
        let q = Quota::new(NonZeroU32::MAX, Duration::from_millis(500));
        let Some(q) = q else { panic!("valid quota") };
        let decision = RateLimitDecision::allow(&q, u32::MAX, Duration::from_secs(u64::MAX));
        let headers = decision.headers();
        assert_eq!(headers.policy(), r#""default";q=4294967295;w=1"#);
        assert_eq!(
            headers.rate_limit(),
            r#""default";r=4294967295;t=18446744073709551615"#
        );
    }

    #[test]
    fn hand_built_policy_names_stay_valid_header_values() {
        let decision = RateLimitDecision {
            policy: "we\"ird\\ nämé".into(),
            ..RateLimitDecision::allow(&quota(1), 0, Duration::ZERO)
        };
        assert_eq!(
            decision.headers().rate_limit(),
            r#""we\"ird\\ n??m??";r=0;t=0"#
        );
        let long = RateLimitDecision {
            policy: "x".repeat(300).into(),
            ..decision
        };
        let value = long.headers().policy().clone();
        assert_eq!(value.len(), 300 + 2 + ";q=1;w=60".len());
    }
}
