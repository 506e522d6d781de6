//! Quotas (how many requests per window, with which burst, or strictly at most how
//! many in any window) and quota tiers.

use std::{
    collections::{BTreeMap, HashMap},
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use super::clock::MAX_NANOS;

/// The name of the default policy and of the default tier.
pub const DEFAULT_POLICY: &str = "default";

/// The longest a policy name may be, in bytes.
const MAX_POLICY_NAME_LEN: usize = 64;

/// The largest limit of a [strict](Quota::strict) quota: its in-memory log holds up to
/// this many admission times per key (16 bytes each, so at most 1.6 MB per key).
pub const MAX_STRICT_LIMIT: u32 = 100_000;

/// How a [`Quota`] counts requests.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// GCRA (the default): `limit` requests per window on average, one replenished every
    /// `window / limit`, at most `burst` at once. Smooth, with O(1) state per key, but a
    /// caller with a full allowance can make up to `burst + limit` requests in one window.
    Gcra,
    /// A strict sliding window: at most `limit` requests in **any** window of length
    /// `window`. Made by [`Quota::strict`]; each key keeps the times of its admissions
    /// within the last window (at most `limit` of them).
    StrictWindow,
}

/// A rate-limiting quota: `limit` requests per `window`, with a burst capacity, under a
/// policy name.
///
/// It wraps a [`governor::Quota`], which replenishes one cell every `window / limit`
/// and holds at most `burst` cells, and adds what clients are told in the
/// [`RateLimit-Policy`](super::RateLimitHeaders) header: the number of requests per
/// window and the policy's name: the name given to [`named`](Self::named), else the name
/// of the [tier](Tiers::tier) it is configured for, else `"default"`.
///
/// # Burst semantics
///
/// The burst is the number of requests a caller with a full allowance can make at
/// once. By default it equals the limit: `Quota::per_minute(100)` admits 100 requests
/// at once, then one every 600 ms, and is full again after a minute without traffic.
/// [`with_burst`](Self::with_burst) changes only the burst: the rate stays the same
/// and so does [`limit`](Self::limit), which is always the number of requests per
/// window, never the burst.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use keygate::limit::Quota;
///
/// let q = Quota::per_minute(NonZeroU32::new(100).unwrap());
/// assert_eq!(q.limit(), 100);
/// assert_eq!(q.burst(), 100);
/// assert_eq!(q.window(), Duration::from_secs(60));
/// assert_eq!(q.replenish_interval(), Duration::from_millis(600));
/// assert_eq!(q.policy(), "default");
///
/// // 100 per minute on average, but never more than 10 at once:
/// let smooth = q.with_burst(NonZeroU32::new(10).unwrap());
/// assert_eq!(smooth.limit(), 100);
/// assert_eq!(smooth.burst(), 10);
/// assert_eq!(smooth.replenish_interval(), Duration::from_millis(600));
///
/// // 2 per hour, but up to 5 at once after a quiet spell of 2.5 hours:
/// let bursty = Quota::per_hour(NonZeroU32::new(2).unwrap())
///     .with_burst(NonZeroU32::new(5).unwrap());
/// assert_eq!(bursty.limit(), 2);
/// assert_eq!(bursty.burst(), 5);
/// assert_eq!(bursty.replenish_interval(), Duration::from_secs(30 * 60));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    inner: governor::Quota,
    kind: QuotaKind,
    limit: NonZeroU32,
    window: Duration,
    policy: Arc<str>,
    /// Whether [`named`](Self::named) gave the policy its name (a tier then keeps it).
    explicitly_named: bool,
    /// The header values every decision under this quota shares, made once.
    rendered: &'static RenderedPolicy,
}

impl Quota {
    /// `limit` requests per second; the burst is `limit`.
    #[must_use]
    pub fn per_second(limit: NonZeroU32) -> Self {
        Self::from_governor(
            governor::Quota::per_second(limit),
            limit,
            Duration::from_secs(1),
        )
    }

    /// `limit` requests per minute; the burst is `limit`.
    #[must_use]
    pub fn per_minute(limit: NonZeroU32) -> Self {
        Self::from_governor(
            governor::Quota::per_minute(limit),
            limit,
            Duration::from_secs(60),
        )
    }

    /// `limit` requests per hour; the burst is `limit`.
    #[must_use]
    pub fn per_hour(limit: NonZeroU32) -> Self {
        Self::from_governor(
            governor::Quota::per_hour(limit),
            limit,
            Duration::from_secs(3600),
        )
    }

    /// `limit` requests per `window`; the burst is `limit`.
    ///
    /// One request is replenished every `window / limit` (at least every nanosecond).
    /// Returns `None` if `window` is zero or longer than about 146 years.
    ///
    /// ```
    /// use std::{num::NonZeroU32, time::Duration};
    /// use keygate::limit::Quota;
    ///
    /// let ten = NonZeroU32::new(10).unwrap();
    /// let daily = Quota::new(ten, Duration::from_secs(86_400)).unwrap();
    /// assert_eq!(daily.limit(), 10);
    /// assert_eq!(daily.window(), Duration::from_secs(86_400));
    /// assert_eq!(daily.replenish_interval(), Duration::from_secs(8_640));
    /// assert!(Quota::new(ten, Duration::ZERO).is_none());
    /// ```
    #[must_use]
    pub fn new(limit: NonZeroU32, window: Duration) -> Option<Self> {
        if window.is_zero() || window.as_nanos() > u128::from(MAX_NANOS) {
            return None;
        }
        let period = (window / limit.get()).max(Duration::from_nanos(1));
        let inner = governor::Quota::with_period(period)?.allow_burst(limit);
        Some(Self::from_governor(inner, limit, window))
    }

    /// At most `limit` requests in any window of length `window`: a strict sliding window,
    /// not GCRA (see [`QuotaKind::StrictWindow`]).
    ///
    /// `Quota::per_minute(100)` admits 100 at once and then one every 600 ms, so up to
    /// 199 requests in the first minute; `Quota::strict(100, 60 s)` never admits more
    /// than 100 in any 60 seconds, and a refused caller waits until the oldest admission
    /// in the window is a full window old (`Retry-After`). A request of cost `c` takes `c`
    /// slots; the burst is the limit ([`with_burst`](Self::with_burst) changes nothing).
    ///
    /// Memory: each key keeps the times of its admissions within the last window, at most
    /// `limit` entries of 16 bytes in memory (a sorted set of at most `limit` members on
    /// Redis), dropped once the window has passed. So the limit is capped at
    /// [`MAX_STRICT_LIMIT`]; for more, use GCRA.
    ///
    /// ```
    /// use std::{num::NonZeroU32, time::Duration};
    /// use keygate::limit::{Quota, QuotaKind};
    ///
    /// let hundred = NonZeroU32::new(100).unwrap();
    /// let strict = Quota::strict(hundred, Duration::from_secs(60))?;
    /// assert_eq!(strict.kind(), QuotaKind::StrictWindow);
    /// assert_eq!((strict.limit(), strict.burst()), (100, 100));
    /// assert_eq!(strict, Quota::strict_per_minute(hundred)?);
    /// let huge = NonZeroU32::new(1_000_000).unwrap();
    /// assert!(Quota::strict(huge, Duration::from_secs(60)).is_err());
    /// # Ok::<(), keygate::limit::InvalidStrictQuota>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidStrictQuota`] if `limit` exceeds [`MAX_STRICT_LIMIT`], or `window` is
    /// shorter than a millisecond or longer than about 146 years.
    pub fn strict(limit: NonZeroU32, window: Duration) -> Result<Self, InvalidStrictQuota> {
        if limit.get() > MAX_STRICT_LIMIT {
            return Err(InvalidStrictQuota::TooManyRequests {
                limit: limit.get(),
                max: MAX_STRICT_LIMIT,
            });
        }
        if window < Duration::from_millis(1) {
            return Err(InvalidStrictQuota::WindowTooShort);
        }
        let mut quota = Self::new(limit, window).ok_or(InvalidStrictQuota::WindowTooLong)?;
        quota.kind = QuotaKind::StrictWindow;
        Ok(quota)
    }

    /// At most `limit` requests in any second ([`strict`](Self::strict)).
    ///
    /// # Errors
    ///
    /// [`InvalidStrictQuota::TooManyRequests`] if `limit` exceeds [`MAX_STRICT_LIMIT`].
    pub fn strict_per_second(limit: NonZeroU32) -> Result<Self, InvalidStrictQuota> {
        Self::strict(limit, Duration::from_secs(1))
    }

    /// At most `limit` requests in any 60 seconds ([`strict`](Self::strict)).
    ///
    /// # Errors
    ///
    /// [`InvalidStrictQuota::TooManyRequests`] if `limit` exceeds [`MAX_STRICT_LIMIT`].
    pub fn strict_per_minute(limit: NonZeroU32) -> Result<Self, InvalidStrictQuota> {
        Self::strict(limit, Duration::from_secs(60))
    }

    /// At most `limit` requests in any hour ([`strict`](Self::strict)).
    ///
    /// # Errors
    ///
    /// [`InvalidStrictQuota::TooManyRequests`] if `limit` exceeds [`MAX_STRICT_LIMIT`].
    pub fn strict_per_hour(limit: NonZeroU32) -> Result<Self, InvalidStrictQuota> {
        Self::strict(limit, Duration::from_secs(3600))
    }

    fn from_governor(inner: governor::Quota, limit: NonZeroU32, window: Duration) -> Self {
        let policy: Arc<str> = Arc::from(DEFAULT_POLICY);
        Self {
            inner,
            kind: QuotaKind::Gcra,
            limit,
            window,
            rendered: RenderedPolicy::new(&policy, limit.get(), window),
            policy,
            explicitly_named: false,
        }
    }

    /// Sets how many requests may be made at once; the rate and [`limit`](Self::limit)
    /// stay the same.
    ///
    /// The burst is capped so that a full burst replenishes within about 146 years
    /// (a cap no practical quota reaches). A [strict](Self::strict) quota's burst is its
    /// limit, and stays so.
    #[must_use]
    pub fn with_burst(mut self, burst: NonZeroU32) -> Self {
        if self.kind == QuotaKind::StrictWindow {
            return self;
        }
        let interval = self.replenish_interval().as_nanos().max(1);
        let cap = u128::from(MAX_NANOS) / interval;
        let cap = u32::try_from(cap).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new(burst.get().min(cap)).unwrap_or(NonZeroU32::MIN);
        self.inner = self.inner.allow_burst(burst);
        self
    }

    /// Names the policy, as clients see it in the `RateLimit-Policy` and `RateLimit`
    /// headers.
    ///
    /// Without it, a quota configured for a [tier](Tiers::tier) is advertised under the
    /// tier's name; with it, under this name whatever the tier.
    ///
    /// A name is 1 to 64 HTTP token characters (letters, digits and
    /// ``!#$%&'*+-.^_`|~``).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use keygate::limit::Quota;
    ///
    /// let gold = Quota::per_minute(NonZeroU32::new(1000).unwrap()).named("gold")?;
    /// assert_eq!(gold.policy(), "gold");
    /// assert!(Quota::per_minute(NonZeroU32::MIN).named("has space").is_err());
    /// # Ok::<(), keygate::limit::InvalidPolicyName>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`InvalidPolicyName`] if `name` is not 1 to 64 HTTP token characters.
    pub fn named(self, name: &str) -> Result<Self, InvalidPolicyName> {
        let mut named = self.with_policy(name)?;
        named.explicitly_named = true;
        Ok(named)
    }

    /// This quota under the policy name `name`, unless it was [named](Self::named)
    /// already or `name` is not a valid policy name.
    fn named_after_tier(self, name: &str) -> Self {
        if self.explicitly_named || *self.policy == *name {
            return self;
        }
        match self.clone().with_policy(name) {
            Ok(renamed) => renamed,
            Err(InvalidPolicyName { .. }) => self,
        }
    }

    fn with_policy(mut self, name: &str) -> Result<Self, InvalidPolicyName> {
        if name.is_empty() || name.len() > MAX_POLICY_NAME_LEN || !name.bytes().all(is_tchar) {
            return Err(InvalidPolicyName { _private: () });
        }
        self.policy = Arc::from(name);
        self.rendered = RenderedPolicy::new(&self.policy, self.limit.get(), self.window);
        Ok(self)
    }

    /// How this quota counts: GCRA, or a [strict](Self::strict) sliding window.
    #[must_use]
    pub const fn kind(&self) -> QuotaKind {
        self.kind
    }

    /// Whether this is a [strict](Self::strict) sliding-window quota.
    #[must_use]
    pub const fn is_strict(&self) -> bool {
        matches!(self.kind, QuotaKind::StrictWindow)
    }

    /// The number of requests per [`window`](Self::window) (not the burst).
    #[must_use]
    pub const fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The number of requests that may be made at once by a caller whose allowance is full.
    #[must_use]
    pub const fn burst(&self) -> u32 {
        self.inner.burst_size().get()
    }

    /// The window [`limit`](Self::limit) is counted over.
    #[must_use]
    pub const fn window(&self) -> Duration {
        self.window
    }

    /// The time it takes to replenish one request: `window / limit`.
    #[must_use]
    pub const fn replenish_interval(&self) -> Duration {
        self.inner.replenish_interval()
    }

    /// The policy name: the name given to [`named`](Self::named), else the tier's name
    /// once configured for a [tier](Tiers::tier), else `"default"`.
    #[must_use]
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// The policy name, shared (cloning it does not allocate).
    #[must_use]
    pub fn policy_shared(&self) -> Arc<str> {
        Arc::clone(&self.policy)
    }

    /// The governor quota this quota enforces.
    pub(crate) const fn governor(&self) -> governor::Quota {
        self.inner
    }

    /// The replenish interval in nanoseconds, at least one: the time governor's GCRA
    /// charges for one cell.
    pub(crate) fn cell_nanos(&self) -> u64 {
        u64::try_from(self.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The header values shared by every decision under this quota.
    pub(crate) fn rendered(&self) -> &'static RenderedPolicy {
        self.rendered
    }
}

/// What the rate-limit headers of every decision under one quota have in common, made
/// when the quota is: the whole `RateLimit-Policy` value and the start of the `RateLimit`
/// value (`"<policy>";r=`). A response then copies no policy text and formats only its
/// two numbers.
///
/// Made once per distinct policy name, limit and window in the process and kept for its
/// lifetime (interned): a decision refers to it and a response's `RateLimit-Policy` value
/// is a static [`Bytes`](bytes::Bytes), so that admitting a request changes no reference
/// count that every core shares. Quotas are configuration, so the set stays small; a
/// process that builds quotas in a loop keeps one copy (about 100 bytes) per distinct
/// triple, not one per quota.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RenderedPolicy {
    /// The policy name, limit and window the values were made from.
    pub(crate) policy: &'static str,
    pub(crate) limit: u32,
    pub(crate) window: Duration,
    /// `"<policy>";q=<limit>;w=<window seconds>`.
    pub(crate) policy_value: http::HeaderValue,
    /// `"<policy>";r=`.
    pub(crate) rate_limit_prefix: &'static [u8],
}

/// Every [`RenderedPolicy`] made so far, by policy name, limit and window.
type Interned = BTreeMap<(&'static str, u32, Duration), &'static RenderedPolicy>;

static INTERNED: Mutex<Interned> = Mutex::new(BTreeMap::new());

impl RenderedPolicy {
    /// The values for `policy`, `limit` and `window`, made on first use.
    fn new(policy: &str, limit: u32, window: Duration) -> &'static Self {
        // Only quota construction (configuration) takes this lock, never a request.
        let mut interned = INTERNED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&rendered) = interned.get(&(policy, limit, window)) {
            return rendered;
        }
        let (value, prefix) = super::headers::render_policy(policy, limit, window);
        let value: &'static [u8] = Box::leak(value);
        let policy: &'static str = Box::leak(Box::from(policy));
        let rendered: &'static Self = Box::leak(Box::new(Self {
            policy,
            limit,
            window,
            // Only printable ASCII is written (see `render_policy`), which a header value
            // always accepts.
            policy_value: http::HeaderValue::from_maybe_shared(bytes::Bytes::from_static(value))
                .unwrap_or(http::HeaderValue::from_static("")),
            rate_limit_prefix: Box::leak(prefix),
        }));
        interned.insert((policy, limit, window), rendered);
        rendered
    }

    /// Whether these values still describe a decision's `policy`, `limit` and `window`
    /// (the fields of a decision are public and may have been changed).
    pub(crate) fn describes(&self, policy: &str, limit: u32, window: Duration) -> bool {
        self.policy == policy && self.limit == limit && self.window == window
    }
}

/// `tchar` of RFC 9110, section 5.6.2.
const fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// A policy name given to [`Quota::named`] was empty, longer than 64 bytes, or held a
/// character that is not an HTTP token character.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate-limit policy name: expected 1 to 64 HTTP token characters")]
pub struct InvalidPolicyName {
    _private: (),
}

/// Why [`Quota::strict`] refused to make a quota.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidStrictQuota {
    /// The limit is above [`MAX_STRICT_LIMIT`]: each key would keep too many admission
    /// times. Use GCRA ([`Quota::new`]) for limits this large.
    #[error("strict window limit {limit} exceeds {max}: use a GCRA quota for limits this large")]
    TooManyRequests {
        /// The limit asked for.
        limit: u32,
        /// The largest limit a strict quota takes.
        max: u32,
    },
    /// The window is shorter than one millisecond.
    #[error("strict window shorter than one millisecond")]
    WindowTooShort,
    /// The window is longer than about 146 years.
    #[error("strict window longer than about 146 years")]
    WindowTooLong,
}

/// Quota tiers: a quota per tier name, and a default quota.
///
/// A key's tier (from its record) picks its quota. A tier that was not configured
/// gets the default tier's quota, so a typo in a record never lifts the limit; the
/// default tier is named `"default"`, and configuring a tier of that name replaces the
/// default quota.
///
/// A tier's quota is advertised to clients (`RateLimit-Policy`) under the tier's name,
/// unless the quota was given a name of its own with [`Quota::named`] (or the tier's
/// name is not a valid policy name: see [`Quota::named`]).
///
/// ```
/// use std::num::NonZeroU32;
/// use keygate::limit::{Quota, Tiers};
///
/// let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap());
/// let tiers = Tiers::new(per_minute(100))
///     .tier("gold", per_minute(1000))
///     .tier("bulk", per_minute(10).named("batch")?);
/// assert_eq!(tiers.quota_for("gold").limit(), 1000);
/// assert_eq!(tiers.quota_for("gold").policy(), "gold");
/// assert_eq!(tiers.quota_for("bulk").policy(), "batch");
/// assert_eq!(tiers.quota_for("default").limit(), 100);
/// assert_eq!(tiers.quota_for("no-such-tier").limit(), 100);
///
/// // The default: 100 requests per minute.
/// assert_eq!(Tiers::default().quota_for("default"), &per_minute(100));
/// # Ok::<(), keygate::limit::InvalidPolicyName>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tiers {
    default: Quota,
    named: HashMap<Box<str>, Quota>,
}

impl Tiers {
    /// Tiers with only the default tier, whose quota is `default`.
    #[must_use]
    pub fn new(default: Quota) -> Self {
        Self {
            default,
            named: HashMap::new(),
        }
    }

    /// Adds (or replaces) the tier `name`; `"default"` replaces the default quota.
    ///
    /// The quota is advertised under the policy name `name` unless it was
    /// [named](Quota::named) (or `name` is not 1 to 64 HTTP token characters, when it
    /// keeps its own name).
    #[must_use]
    pub fn tier(mut self, name: &str, quota: Quota) -> Self {
        let quota = quota.named_after_tier(name);
        if name == DEFAULT_POLICY {
            self.default = quota;
        } else {
            self.named.insert(Box::from(name), quota);
        }
        self
    }

    /// The quota of `tier`, or the default tier's quota if `tier` was not configured.
    #[must_use]
    pub fn quota_for(&self, tier: &str) -> &Quota {
        self.named.get(tier).unwrap_or(&self.default)
    }

    /// The default tier's quota.
    #[must_use]
    pub fn default_quota(&self) -> &Quota {
        &self.default
    }

    /// Every tier with its quota, the default tier first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Quota)> + '_ {
        std::iter::once((DEFAULT_POLICY, &self.default))
            .chain(self.named.iter().map(|(name, quota)| (&**name, quota)))
    }
}

impl Default for Tiers {
    /// One tier, `"default"`: 100 requests per minute.
    fn default() -> Self {
        const HUNDRED: NonZeroU32 = match NonZeroU32::new(100) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        };
        Self::new(Quota::per_minute(HUNDRED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn nz(n: u32) -> NonZeroU32 {
        match NonZeroU32::new(n) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        }
    }

    #[test]
    fn limit_is_requests_per_window_not_the_burst() {
        let q = Quota::per_minute(nz(100)).with_burst(nz(5));
        assert_eq!(q.limit(), 100);
        assert_eq!(q.burst(), 5);
        assert_eq!(q.window(), Duration::from_secs(60));
    }

    #[test]
    fn constructors_agree_with_governor() {
        let expected = Some(Quota::per_minute(nz(100)));
        assert_eq!(Quota::new(nz(100), Duration::from_secs(60)), expected);
        assert_eq!(
            Quota::per_second(nz(4)).replenish_interval(),
            Duration::from_millis(250)
        );
        assert_eq!(
            Quota::per_hour(nz(60)).replenish_interval(),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn new_rejects_zero_and_absurd_windows() {
        assert!(Quota::new(nz(1), Duration::ZERO).is_none());
        assert!(Quota::new(nz(1), Duration::MAX).is_none());
        assert!(Quota::new(nz(1), Duration::from_nanos(MAX_NANOS)).is_some());
    }

    #[test]
    fn tiny_windows_replenish_at_least_every_nanosecond() {
        let q = Quota::new(nz(10), Duration::from_nanos(1));
        assert_eq!(
            q.map(|q| q.replenish_interval()),
            Some(Duration::from_nanos(1))
        );
    }

    #[test]
    fn header_values_are_made_once_per_policy_limit_and_window() {
        let gold = || Quota::per_minute(nz(100)).named("gold").unwrap();
        let (a, b) = (gold(), gold());
        // The same values, not copies: every decision refers to one interned set.
        assert!(std::ptr::eq(a.rendered(), b.rendered()));
        assert!(std::ptr::eq(
            a.rendered(),
            Tiers::new(Quota::per_minute(nz(1)))
                .tier("gold", Quota::per_minute(nz(100)))
                .quota_for("gold")
                .rendered()
        ));
        assert_eq!(a.rendered().policy_value, r#""gold";q=100;w=60"#);
        assert_eq!(a.rendered().rate_limit_prefix, br#""gold";r="#);
        for other in [
            Quota::per_minute(nz(101)).named("gold").unwrap(),
            Quota::per_hour(nz(100)).named("gold").unwrap(),
            Quota::per_minute(nz(100)).named("silver").unwrap(),
        ] {
            assert!(!std::ptr::eq(a.rendered(), other.rendered()));
            assert_ne!(a.rendered().policy_value, other.rendered().policy_value);
        }
    }

    #[test]
    fn burst_is_capped_so_governor_arithmetic_cannot_overflow() {
        let q = Quota::per_hour(nz(1)).with_burst(nz(u32::MAX));
        let span = q.replenish_interval().as_nanos() * u128::from(q.burst());
        assert!(span <= u128::from(MAX_NANOS));
        assert!(q.burst() > 1_000_000);
    }

    #[test]
    fn strict_quotas_are_bounded_and_keep_their_burst() {
        let q = Quota::strict(nz(100), Duration::from_secs(60)).unwrap();
        assert!(q.is_strict());
        assert_eq!(q.kind(), QuotaKind::StrictWindow);
        assert_eq!(q.clone().with_burst(nz(5)).burst(), 100);
        assert_eq!(q.rendered().policy_value, r#""default";q=100;w=60"#);
        assert_eq!(Quota::strict_per_minute(nz(100)), Ok(q.clone()));
        assert_ne!(Quota::per_minute(nz(100)), q);
        assert_eq!(Quota::per_minute(nz(100)).kind(), QuotaKind::Gcra);
        assert_eq!(
            Quota::strict_per_second(nz(MAX_STRICT_LIMIT)).map(|q| q.limit()),
            Ok(MAX_STRICT_LIMIT)
        );
        let too_many = Quota::strict_per_hour(nz(MAX_STRICT_LIMIT + 1)).unwrap_err();
        assert_eq!(
            too_many,
            InvalidStrictQuota::TooManyRequests {
                limit: 100_001,
                max: 100_000
            }
        );
        assert_eq!(
            too_many.to_string(),
            "strict window limit 100001 exceeds 100000: use a GCRA quota for limits this large"
        );
        assert_eq!(
            Quota::strict(nz(1), Duration::from_micros(999)),
            Err(InvalidStrictQuota::WindowTooShort)
        );
        assert_eq!(
            Quota::strict(nz(1), Duration::MAX),
            Err(InvalidStrictQuota::WindowTooLong)
        );
        // A tier renames a strict quota like any other.
        let tiers = Tiers::default().tier("contract", q);
        assert!(tiers.quota_for("contract").is_strict());
        assert_eq!(tiers.quota_for("contract").policy(), "contract");
    }

    #[test]
    fn policy_names_are_http_tokens() {
        assert!(Quota::per_second(nz(1)).named("gold-2024_v1.x").is_ok());
        for bad in [
            "",
            "a b",
            "quo\"te",
            "semi;colon",
            "comma,",
            "é",
            &"x".repeat(65),
        ] {
            assert!(Quota::per_second(nz(1)).named(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tier_advertises_its_name_unless_its_quota_was_named() {
        let tiers = Tiers::new(Quota::per_minute(nz(10)))
            .tier("bulk", Quota::per_minute(nz(20)))
            .tier("gold", Quota::per_minute(nz(30)).named("premium").unwrap())
            .tier("has space", Quota::per_minute(nz(40)));
        assert_eq!(tiers.quota_for("bulk").policy(), "bulk");
        assert_eq!(
            tiers.quota_for("bulk").rendered().policy_value,
            r#""bulk";q=20;w=60"#
        );
        // An explicit name wins over the tier's.
        assert_eq!(tiers.quota_for("gold").policy(), "premium");
        // A tier name that is not a valid policy name leaves the quota's name.
        assert_eq!(tiers.quota_for("has space").policy(), "default");
        assert_eq!(tiers.quota_for("no-such-tier").policy(), "default");
        assert_eq!(tiers.default_quota().policy(), "default");
        let named_default = Tiers::new(Quota::per_minute(nz(10)).named("base").unwrap());
        assert_eq!(named_default.default_quota().policy(), "base");
        let replaced = tiers.tier("default", Quota::per_minute(nz(50)));
        assert_eq!(replaced.default_quota().policy(), "default");
    }

    #[test]
    fn unknown_tier_falls_back_to_the_default_quota() {
        let tiers = Tiers::new(Quota::per_minute(nz(10))).tier("gold", Quota::per_minute(nz(20)));
        assert_eq!(tiers.quota_for("gold").limit(), 20);
        assert_eq!(tiers.quota_for("silver").limit(), 10);
        assert_eq!(tiers.quota_for("").limit(), 10);
        let replaced = tiers.tier("default", Quota::per_minute(nz(30)));
        assert_eq!(replaced.quota_for("silver").limit(), 30);
        assert_eq!(replaced.iter().count(), 2);
    }
}
