//! Per-key rate limiting, failed-attempt limiting, and rate-limit headers.
//!
//! - [`RateLimitBackend`]: the pluggable per-key limit (request path stage 5), with
//!   [`InMemoryRateLimit`], in process memory on [governor](https://docs.rs/governor).
//!   [`Quota`] says how many requests per window with which burst (GCRA), or at most how
//!   many in any window ([`Quota::strict`]), [`Tiers`] which quota each key tier gets.
//! - [`RateLimitDecision::headers`]: `RateLimit-Policy`, `RateLimit` and
//!   `Retry-After`, per draft-ietf-httpapi-ratelimit-headers-11.
//! - [`FailedAttemptLimiter`]: refuses clients that failed too often, before any key
//!   lookup (stage 3), keyed by [`ClientKey`] and found with [`client_ip`].
//! - [`Clock`]: every limiter here takes one, so tests move time instead of sleeping.
//!
//! governor does the rate limiting itself (the GCRA decisions and each caller's atomic
//! state); this module keeps beside it what its contract leaves out: lookups by `&str`
//! without allocating, the time until full capacity, automatic housekeeping, a size cap
//! and a check that consumes nothing for failed attempts, and HTTP headers.
//!
//! # Example
//!
//! ```
//! use std::{num::NonZeroU32, time::Duration};
//! use http::HeaderMap;
//! use keygate::limit::{Clock, InMemoryRateLimit, Quota, RateLimitBackend, Tiers};
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!
//! let per_minute = |n| NonZeroU32::new(n).map(Quota::per_minute).ok_or("zero");
//! let tiers = Tiers::new(per_minute(100)?).tier("gold", per_minute(1000)?.named("gold")?);
//! let clock = Clock::manual();
//! let backend = InMemoryRateLimit::new(tiers).with_clock(clock.clone());
//! let one = NonZeroU32::MIN;
//!
//! // Admitted: add the headers to the inner service's response.
//! let decision = backend.check("kg_coordinator1", "default", one).await?;
//! assert!(decision.allowed);
//! let mut headers = HeaderMap::new();
//! decision.headers().apply(&mut headers);
//! assert_eq!(headers["ratelimit-policy"], r#""default";q=100;w=60"#);
//! assert_eq!(headers["ratelimit"], r#""default";r=99;t=1"#);
//!
//! // Refused after 100 requests in a minute: 429 with Retry-After.
//! for _ in 0..99 {
//!     backend.check("kg_coordinator1", "default", one).await?;
//! }
//! let refused = backend.check("kg_coordinator1", "default", one).await?;
//! assert!(!refused.allowed);
//! assert_eq!(refused.retry_after, Some(Duration::from_millis(600)));
//! let mut headers = HeaderMap::new();
//! refused.headers().apply(&mut headers);
//! assert_eq!(headers["ratelimit"], r#""default";r=0;t=60"#);
//! assert_eq!(headers["retry-after"], "1");
//!
//! // 600 ms later, one request fits again.
//! clock.advance(Duration::from_millis(600));
//! assert!(backend.check("kg_coordinator1", "default", one).await?.allowed);
//! # Ok(()) }
//! ```

use std::{borrow::Cow, num::NonZeroU32, sync::Arc, time::Duration};

use crate::BackendFuture;

mod allowance;
mod client_ip;
mod clock;
mod failed;
mod headers;
mod housekeeping;
mod in_memory;
pub(crate) mod passage;
mod quota;
mod rate_limit;
mod window;

pub use client_ip::{ClientKey, client_ip};
pub(crate) use client_ip::{client_ip_in_networks, parse_network};
pub use clock::Clock;
pub use failed::{DEFAULT_CAPACITY, FailedAttemptLimiter};
pub use headers::{RATELIMIT, RATELIMIT_POLICY, RateLimitHeaders, retry_after_secs};
pub use in_memory::InMemoryRateLimit;
pub use passage::{DEFAULT_PASSAGE_PER_SECOND, DEFAULT_PASSED_KEYS, PASSED_KEY_LIFETIME};
pub use quota::{
    DEFAULT_POLICY, InvalidPolicyName, InvalidStrictQuota, MAX_STRICT_LIMIT, Quota, QuotaKind,
    Tiers,
};
pub use rate_limit::{LimitBy, RateLimit};

/// Where per-key rate-limit state lives: in process memory ([`InMemoryRateLimit`]) or in
/// a shared store, so the limit holds across replicas.
///
/// The guard calls it once per authenticated request, after the key is verified, so
/// unauthenticated input never creates state. `Arc<T>` is a backend when `T` is, so one
/// backend can serve several guards.
///
/// ```
/// use std::{num::NonZeroU32, sync::Arc};
/// use keygate::limit::{Clock, InMemoryRateLimit, RateLimitBackend, Tiers};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
///
/// fn takes(backend: impl RateLimitBackend) -> impl RateLimitBackend {
///     backend
/// }
/// let shared = Arc::new(InMemoryRateLimit::new(Tiers::default()).with_clock(Clock::manual()));
/// let backend = takes(Arc::clone(&shared));
/// let decision = backend.check("kg_key", "default", NonZeroU32::MIN).await?;
/// assert_eq!(decision.remaining, 99);
/// assert_eq!(shared.len(), 1);
/// # Ok(()) }
/// ```
pub trait RateLimitBackend: Send + Sync + std::fmt::Debug + 'static {
    /// Checks (and on success consumes) `cost` cells for `key` under the quota of `tier`.
    ///
    /// `key` names whom the limit applies to: a key id or a principal id, never the
    /// secret itself (backends may keep it in memory or send it to a shared store).
    ///
    /// A tier the backend does not know gets the default tier's quota. A refusal is an
    /// `Ok` decision with `allowed == false`; `Err` means no decision could be made
    /// ([`LimitError::Unavailable`]: the guard fails closed with a 503 unless configured
    /// otherwise) or can never be made ([`LimitError::CostExceedsBurst`]).
    fn check(
        &self,
        key: &str,
        tier: &str,
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>>;
}

impl<T: RateLimitBackend + ?Sized> RateLimitBackend for Arc<T> {
    fn check(
        &self,
        key: &str,
        tier: &str,
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>> {
        (**self).check(key, tier, cost)
    }
}

/// Why a [`RateLimitBackend`] could not decide.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The backend's store could not be reached or answered wrongly.
    #[error("rate-limit backend unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request costs more cells than the quota's burst: it could never be admitted.
    #[error("cost {cost} exceeds the quota's burst {burst}")]
    CostExceedsBurst {
        /// The cells the request asked for.
        cost: u32,
        /// The most cells the quota ever admits at once.
        burst: u32,
    },
}

impl LimitError {
    /// [`LimitError::Unavailable`] caused by `error`.
    #[must_use]
    pub fn unavailable(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Unavailable(error.into())
    }
}

/// The outcome of one rate-limit check, with what the rate-limit headers report.
///
/// Build one with [`allow`](Self::allow) or [`refuse`](Self::refuse) (other backends do
/// too), turn it into headers with [`headers`](Self::headers).
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use keygate::limit::{Quota, RateLimitDecision};
///
/// let quota = Quota::per_minute(NonZeroU32::new(100).ok_or("zero")?);
/// let refused = RateLimitDecision::refuse(
///     &quota, 0, Duration::from_secs(60), Duration::from_millis(600));
/// assert!(!refused.allowed);
/// assert_eq!((refused.limit, refused.window), (100, Duration::from_secs(60)));
/// let headers = refused.headers();
/// assert_eq!(headers.retry_after().map(|v| v.as_bytes()), Some(&b"1"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitDecision {
    /// Whether the request was admitted (and its cost consumed).
    pub allowed: bool,
    /// The quota's policy name: borrowed from the quota (copying it costs nothing),
    /// or owned when set by hand.
    pub policy: Cow<'static, str>,
    /// The quota's requests per window ([`Quota::limit`], not the burst).
    pub limit: u32,
    /// The quota's window.
    pub window: Duration,
    /// The requests that could still be made at once, after this decision.
    pub remaining: u32,
    /// GCRA: the time until the caller's allowance is full again (`0` if it is full).
    /// Strict window: the time until the next slot frees, when the oldest admission in
    /// the window leaves it (`0` if the window holds none).
    pub reset: Duration,
    /// For refusals: the time until this request's cost would fit (strict window: until
    /// enough of the oldest admissions have left the window). `None` when allowed.
    pub retry_after: Option<Duration>,
    /// The quota's header values, made once per quota (see [`RateLimitDecision::headers`]).
    rendered: Option<&'static quota::RenderedPolicy>,
}

impl PartialEq for RateLimitDecision {
    /// Compares what the decision says; how its headers are made does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.allowed == other.allowed
            && self.policy == other.policy
            && self.limit == other.limit
            && self.window == other.window
            && self.remaining == other.remaining
            && self.reset == other.reset
            && self.retry_after == other.retry_after
    }
}

impl Eq for RateLimitDecision {}

impl RateLimitDecision {
    /// An admitted request under `quota`.
    #[must_use]
    pub fn allow(quota: &Quota, remaining: u32, reset: Duration) -> Self {
        Self {
            allowed: true,
            policy: Cow::Borrowed(quota.rendered().policy),
            limit: quota.limit(),
            window: quota.window(),
            remaining,
            reset,
            retry_after: None,
            rendered: Some(quota.rendered()),
        }
    }

    /// A refused request under `quota`, which would fit in `retry_after`.
    #[must_use]
    pub fn refuse(quota: &Quota, remaining: u32, reset: Duration, retry_after: Duration) -> Self {
        Self {
            allowed: false,
            retry_after: Some(retry_after),
            ..Self::allow(quota, remaining, reset)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn unavailable_keeps_its_cause_out_of_the_message() {
        let error = LimitError::unavailable("connection refused");
        assert_eq!(error.to_string(), "rate-limit backend unavailable");
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("connection refused")
        );
    }

    #[test]
    fn decisions_carry_the_quota_not_the_burst() {
        let quota = Quota::per_minute(NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN))
            .with_burst(NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN));
        let allowed = RateLimitDecision::allow(&quota, 4, Duration::from_millis(600));
        assert_eq!(
            (allowed.limit, allowed.window),
            (100, Duration::from_secs(60))
        );
        assert_eq!(allowed.retry_after, None);
        let refused = RateLimitDecision::refuse(
            &quota,
            0,
            Duration::from_secs(3),
            Duration::from_millis(600),
        );
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(&*refused.policy, "default");
    }
}
