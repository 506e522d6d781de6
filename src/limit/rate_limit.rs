//! The guard's per-request rate limit: which backend, whom it counts against, what a
//! request costs, and what happens when the backend fails.

use std::{fmt, num::NonZeroU32, sync::Arc};

use super::RateLimitBackend;

/// Whom the per-request rate limit counts against.
///
/// ```
/// use std::num::NonZeroU32;
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, RateLimit, Rejection};
/// use keygate::limit::{InMemoryRateLimit, LimitBy, Quota, Tiers};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (old, new) = ("old-key-from-openssl-rand-base64-32-xxx", "new-key-from-openssl-rand-base64-32-xxx");
/// let guard = |by| {
///     let one_per_minute = Tiers::new(Quota::per_minute(NonZeroU32::MIN));
///     ApiKeyGuard::builder()
///         .key(ApiKey::new(old)?, KeyGrant::new("ci-runner"))
///         .key(ApiKey::new(new)?, KeyGrant::new("ci-runner"))
///         .rate_limit(RateLimit::new(InMemoryRateLimit::new(one_per_minute)).by(by))
///         .build()
/// };
///
/// // Per principal: the new key shares the old one's budget.
/// let per_principal = guard(LimitBy::Principal)?;
/// per_principal.authenticate(old, None, "call").await?;
/// let refused = per_principal.authenticate(new, None, "call").await;
/// assert!(matches!(refused, Err(Rejection::RateLimited(_))));
///
/// // Per key: each has its own.
/// let per_key = guard(LimitBy::Key)?;
/// per_key.authenticate(old, None, "call").await?;
/// per_key.authenticate(new, None, "call").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitBy {
    /// All keys of a principal share one budget (the default): rotating keys does not
    /// reset it.
    #[default]
    Principal,
    /// Each key has its own budget.
    Key,
}

/// The per-request rate limit of the guard (stage 5 of the request path): a backend,
/// whom it counts against, what a request costs, and what happens when the backend fails.
///
/// A backend shared with the rest of the application is passed as an `Arc`, which
/// implements [`RateLimitBackend`] too.
///
/// ```
/// use std::{num::NonZeroU32, sync::Arc};
/// use keygate::limit::{InMemoryRateLimit, LimitBy, Quota, RateLimit, Tiers};
///
/// let backend = Arc::new(InMemoryRateLimit::new(Tiers::new(Quota::per_minute(
///     NonZeroU32::new(100).unwrap(),
/// ))));
/// let limit = RateLimit::new(Arc::clone(&backend))
///     .by(LimitBy::Key)
///     .cost(NonZeroU32::new(2).unwrap());
/// assert_eq!(limit.limit_by(), LimitBy::Key);
/// assert_eq!(limit.request_cost().get(), 2);
/// assert!(!limit.fails_open());
/// assert!(limit.headers_on_admitted());
/// ```
#[derive(Clone)]
pub struct RateLimit {
    pub(crate) backend: Arc<dyn RateLimitBackend>,
    pub(crate) key_by: LimitBy,
    pub(crate) cost: NonZeroU32,
    pub(crate) fail_open: bool,
    pub(crate) admitted_headers: bool,
}

impl RateLimit {
    /// A limit on `backend`, per principal, cost 1, failing closed.
    #[must_use]
    pub fn new(backend: impl RateLimitBackend) -> Self {
        Self {
            backend: Arc::new(backend),
            key_by: LimitBy::Principal,
            cost: NonZeroU32::MIN,
            fail_open: false,
            admitted_headers: true,
        }
    }

    /// Whom the limit counts against.
    #[must_use]
    pub fn by(mut self, key_by: LimitBy) -> Self {
        self.key_by = key_by;
        self
    }

    /// What one request costs (default 1).
    #[must_use]
    pub fn cost(mut self, cost: NonZeroU32) -> Self {
        self.cost = cost;
        self
    }

    /// Admit requests (and audit them as such) when the backend fails, instead of refusing
    /// them with 503 `auth_unavailable` (the default).
    #[must_use]
    pub fn fail_open(mut self) -> Self {
        self.fail_open = true;
        self
    }

    /// Leaves the `RateLimit` and `RateLimit-Policy` headers off admitted responses
    /// (they are on by default). Refusals with 429 `rate_limited` always carry them, with
    /// `Retry-After`: a client that is refused learns when to come back, and a client that
    /// is admitted pays nothing for headers it may not read.
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use keygate::limit::{InMemoryRateLimit, Quota, RateLimit, Tiers};
    ///
    /// let limit = RateLimit::new(InMemoryRateLimit::new(Tiers::new(Quota::per_minute(
    ///     NonZeroU32::new(100).unwrap(),
    /// ))))
    /// .without_headers_on_admitted();
    /// assert!(!limit.headers_on_admitted());
    /// ```
    #[must_use]
    pub fn without_headers_on_admitted(mut self) -> Self {
        self.admitted_headers = false;
        self
    }

    /// Whether admitted responses carry the rate-limit headers.
    #[must_use]
    pub fn headers_on_admitted(&self) -> bool {
        self.admitted_headers
    }

    /// Whom the limit counts against.
    #[must_use]
    pub fn limit_by(&self) -> LimitBy {
        self.key_by
    }

    /// What one request costs.
    #[must_use]
    pub fn request_cost(&self) -> NonZeroU32 {
        self.cost
    }

    /// Whether requests are admitted when the backend fails.
    #[must_use]
    pub fn fails_open(&self) -> bool {
        self.fail_open
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("backend", &self.backend)
            .field("key_by", &self.key_by)
            .field("cost", &self.cost)
            .field("fail_open", &self.fail_open)
            .field("admitted_headers", &self.admitted_headers)
            .finish()
    }
}
