//! The in-memory rate limit: per key, one governor direct limiter.
//!
//! Why governor alone is not enough, and what sits beside it:
//!
//! - governor's keyed limiter looks a key up by `&K`, so `String` keys would cost an
//!   allocation per check. Each tier keeps its own `DashMap<Box<str>, Allowance>`
//!   instead, looked up by `&str` (`Box<str>: Borrow<str>`): only a new key allocates.
//! - governor does not tell when the allowance is full again (the `t=` of the
//!   `RateLimit` header), nor which checks made a new key. [`Allowance`] keeps the first
//!   beside each limiter (see its module), and the second is whether the check inserted
//!   the key.
//! - governor leaves housekeeping to its caller. New keys are counted
//!   ([`SweepSchedule`]); the check that is due drops the keys whose allowance is full
//!   again and gives memory back. Checks of known keys touch no shared counter.

use std::{collections::HashMap, fmt, num::NonZeroU32, time::Duration};

use dashmap::{DashMap, Entry};
use governor::{
    InsufficientCapacity,
    clock::Clock as _,
    middleware::{StateInformationMiddleware, StateSnapshot},
    nanos::Nanos,
};

use super::{
    Clock, LimitError, Quota, RateLimitBackend, RateLimitDecision, Tiers,
    allowance::{Allowance, Checked},
    housekeeping::{Sweep, SweepSchedule, worth_shrinking},
    window::WindowLog,
};
use crate::BackendFuture;

/// Rate limiting in process memory, on [governor](https://docs.rs/governor): per tier and
/// key, one GCRA limiter.
///
/// Answers at once ([`BackendFuture::ready`]) and allocates only for the first check of
/// a key. Concurrent checks are exact: 64 threads racing for a quota of 100 admit
/// exactly 100 requests. Its memory looks after itself: every few thousand new keys (at
/// least 4096, and at least as many as there are live keys, so the cost per new key stays
/// constant), keys whose allowance is full again are dropped and freed memory is
/// returned; nothing needs to be spawned, and a check of a known key touches no shared
/// counter.
///
/// A tier that is not configured is limited by the default tier's quota, and shares
/// its counters.
///
/// Each process counts on its own: behind a load balancer, use a shared backend (the
/// `redis` feature's `RedisRateLimit`) so the limit holds across replicas. To share one
/// backend between several guards, pass an `Arc<InMemoryRateLimit>`.
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
/// use keygate::limit::{Clock, InMemoryRateLimit, Quota, RateLimitBackend, Tiers};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
///
/// let three = NonZeroU32::new(3).ok_or("zero")?;
/// let limit = InMemoryRateLimit::new(Tiers::new(Quota::per_minute(three)))
///     .with_clock(Clock::manual());
/// let one = NonZeroU32::MIN;
/// for remaining in [2, 1, 0] {
///     let decision = limit.check("kg_key", "default", one).await?;
///     assert!(decision.allowed);
///     assert_eq!(decision.remaining, remaining);
/// }
/// let refused = limit.check("kg_key", "default", one).await?;
/// assert!(!refused.allowed);
/// assert_eq!(refused.retry_after, Some(Duration::from_secs(20)));
/// // Other keys have their own allowance.
/// assert!(limit.check("kg_other", "default", one).await?.allowed);
/// # Ok(()) }
/// ```
pub struct InMemoryRateLimit {
    tiers: Tiers,
    default: Tier,
    named: HashMap<Box<str>, Tier>,
    clock: Clock,
    schedule: SweepSchedule,
}

/// One tier's quota, and the state of each key seen under it.
///
/// Hashed with foldhash (seeded per process) rather than `SipHash`: only authenticated
/// principals get an entry, so no caller can fill the table with colliding keys. (The
/// failed-attempt table, whose keys are client addresses, keeps `SipHash`.)
struct Tier {
    quota: Quota,
    keys: Keys,
}

type Table<T> = DashMap<Box<str>, T, foldhash::fast::RandomState>;

/// The shards of each table: a check takes its shard's read lock, a write to memory that
/// every core checking a key of the same shard shares. With dashmap's default (4 per
/// core, 8 on two cores) one pair of busy keys in 8 would share a lock; with 64, one in 64,
/// for 8 KiB per table and no cost per check (the shard is picked from the hash alike).
const SHARDS: usize = 64;

/// An empty table of [`SHARDS`] shards.
fn table<T>() -> Table<T> {
    DashMap::with_hasher_and_shard_amount(foldhash::fast::RandomState::default(), SHARDS)
}

/// Each key's state: a GCRA allowance, or a strict window's log.
enum Keys {
    Gcra(Table<Allowance<StateInformationMiddleware>>),
    Window {
        keys: Table<WindowLog>,
        /// The window in nanoseconds.
        window: u64,
    },
}

/// The table entry of `key`, made if missing; with whether this call made it.
fn entry<'a, T>(
    table: &'a Table<T>,
    key: &str,
    make: impl FnOnce() -> T,
) -> (dashmap::mapref::one::Ref<'a, Box<str>, T>, bool) {
    // The lookup's read lock is released at the end of this statement, before an
    // insertion takes the shard's write lock.
    if let Some(found) = table.get(key) {
        return (found, false);
    }
    match table.entry(Box::from(key)) {
        // Another check inserted it meanwhile.
        Entry::Occupied(entry) => (entry.into_ref().downgrade(), false),
        Entry::Vacant(entry) => (entry.insert(make()).downgrade(), true),
    }
}

impl Tier {
    fn new(quota: &Quota) -> Self {
        let keys = if quota.is_strict() {
            Keys::Window {
                keys: table(),
                window: u64::try_from(quota.window().as_nanos()).unwrap_or(u64::MAX),
            }
        } else {
            Keys::Gcra(table())
        };
        Self {
            quota: quota.clone(),
            keys,
        }
    }

    /// Checks `cost` cells of `key`; with the decision, whether this check made its entry.
    fn check(
        &self,
        key: &str,
        cost: NonZeroU32,
        clock: &Clock,
    ) -> Result<(RateLimitDecision, bool), InsufficientCapacity> {
        let quota = &self.quota;
        match &self.keys {
            Keys::Gcra(table) => {
                let (allowance, new_key) = entry(table, key, || Allowance::new(quota, clock));
                let checked = allowance.check_n(quota, cost)?;
                drop(allowance);
                Ok((gcra_decision(quota, cost, checked), new_key))
            }
            Keys::Window { keys, window } => {
                let (log, new_key) = entry(keys, key, WindowLog::default);
                let checked = log.check(clock.now().as_u64(), *window, quota.limit(), cost);
                drop(log);
                let next_free = Duration::from_nanos(checked.next_free);
                let decision = if checked.allowed {
                    RateLimitDecision::allow(quota, checked.remaining, next_free)
                } else {
                    tracing::trace!(cost = cost.get(), "strict window refused");
                    RateLimitDecision::refuse(
                        quota,
                        checked.remaining,
                        next_free,
                        Duration::from_nanos(checked.retry_after),
                    )
                };
                Ok((decision, new_key))
            }
        }
    }

    fn len(&self) -> usize {
        match &self.keys {
            Keys::Gcra(table) => table.len(),
            Keys::Window { keys, .. } => keys.len(),
        }
    }

    /// Drops the keys with nothing to remember at `now`; the keys left.
    fn sweep(&self, now: Nanos) -> usize {
        let before = self.len();
        match &self.keys {
            Keys::Gcra(table) => table.retain(|_, allowance| allowance.full_at() > now),
            Keys::Window { keys, window } => {
                keys.retain(|_, log| log.busy(now.as_u64(), *window));
            }
        }
        let after = self.len();
        if worth_shrinking(before, after) {
            match &self.keys {
                Keys::Gcra(table) => table.shrink_to_fit(),
                Keys::Window { keys, .. } => keys.shrink_to_fit(),
            }
        }
        after
    }
}

impl InMemoryRateLimit {
    /// A backend enforcing `tiers`, on the [system clock](Clock::system).
    #[must_use]
    pub fn new(tiers: Tiers) -> Self {
        Self::build(tiers, Clock::system())
    }

    /// The same backend on `clock` (a [manual](Clock::manual) clock in tests).
    ///
    /// Meant for construction: state recorded so far is dropped.
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> Self {
        Self::build(self.tiers, clock)
    }

    fn build(tiers: Tiers, clock: Clock) -> Self {
        let default = Tier::new(tiers.default_quota());
        let named = tiers
            .iter()
            .skip(1)
            .map(|(name, quota)| (Box::from(name), Tier::new(quota)))
            .collect();
        Self {
            tiers,
            default,
            named,
            clock,
            schedule: SweepSchedule::new(),
        }
    }

    /// The tiers this backend enforces.
    #[must_use]
    pub fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// The number of keys with state, across tiers.
    ///
    /// Keys whose allowance is full again are dropped by the automatic housekeeping, so
    /// this is about the number of keys seen recently.
    #[must_use]
    pub fn len(&self) -> usize {
        self.all_tiers().map(Tier::len).sum()
    }

    /// Whether no key has state.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.all_tiers().all(|tier| tier.len() == 0)
    }

    fn all_tiers(&self) -> impl Iterator<Item = &Tier> {
        std::iter::once(&self.default).chain(self.named.values())
    }

    fn tier(&self, name: &str) -> &Tier {
        if name == super::DEFAULT_POLICY || self.named.is_empty() {
            return &self.default;
        }
        self.named.get(name).unwrap_or(&self.default)
    }

    fn decide(
        &self,
        key: &str,
        tier_name: &str,
        cost: NonZeroU32,
    ) -> Result<RateLimitDecision, LimitError> {
        let tier = self.tier(tier_name);
        let quota = &tier.quota;
        let exceeds = |burst| LimitError::CostExceedsBurst {
            cost: cost.get(),
            burst,
        };
        // Refused before the lookup, so that it creates no state.
        if cost.get() > quota.burst() {
            return Err(exceeds(quota.burst()));
        }
        let (decision, new_key) = tier
            .check(key, cost, &self.clock)
            .map_err(|InsufficientCapacity(burst)| exceeds(burst))?;
        // Only new keys grow the tables, so only they count towards the next sweep.
        if let Some(sweep) = new_key.then(|| self.schedule.tick()).flatten() {
            self.sweep(sweep);
        }
        Ok(decision)
    }

    fn sweep(&self, sweep: Sweep<'_>) {
        let before = self.len();
        let now = self.clock.now();
        let after = self.all_tiers().map(|tier| tier.sweep(now)).sum();
        tracing::debug!(before, after, "swept rate-limit state");
        sweep.finish(after);
    }
}

/// The decision for governor's answer to a check of `cost` cells under `quota`.
fn gcra_decision(
    quota: &Quota,
    cost: NonZeroU32,
    checked: Checked<StateSnapshot>,
) -> RateLimitDecision {
    let reset = Duration::from_nanos(
        checked
            .full_at
            .as_u64()
            .saturating_sub(checked.now.as_u64()),
    );
    match checked.outcome {
        Ok(snapshot) => RateLimitDecision::allow(quota, snapshot.remaining_burst_capacity(), reset),
        Err(not_until) => {
            tracing::trace!(cost = cost.get(), "rate limit refused");
            RateLimitDecision::refuse(
                quota,
                remaining_at(quota, reset),
                reset,
                not_until.wait_time_from(checked.now),
            )
        }
    }
}

/// The cells left when the allowance is full again in `reset`: each missing cell takes
/// one replenish interval (the snapshot governor gives for allowed requests says the
/// same; refusals come without one).
fn remaining_at(quota: &Quota, reset: Duration) -> u32 {
    let interval = quota.replenish_interval().as_nanos().max(1);
    let missing = reset.as_nanos().div_ceil(interval);
    let missing = u32::try_from(missing).unwrap_or(u32::MAX);
    quota.burst().saturating_sub(missing)
}

impl RateLimitBackend for InMemoryRateLimit {
    fn check(
        &self,
        key: &str,
        tier: &str,
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>> {
        BackendFuture::ready(self.decide(key, tier, cost))
    }
}

impl fmt::Debug for InMemoryRateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryRateLimit")
            .field("tiers", &self.tiers)
            .field("keys", &self.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        thread,
    };

    use futures_util::FutureExt as _;

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    /// The answer of an in-memory check, which is ready at once.
    fn ready<T>(future: BackendFuture<'static, T>) -> T {
        future
            .now_or_never()
            .expect("in-memory checks answer at once")
    }

    fn backend(tiers: Tiers) -> (InMemoryRateLimit, Clock) {
        let clock = Clock::manual();
        (
            InMemoryRateLimit::new(tiers).with_clock(clock.clone()),
            clock,
        )
    }

    fn check(backend: &InMemoryRateLimit, key: &str, tier: &str, cost: u32) -> RateLimitDecision {
        ready(backend.check(key, tier, nz(cost))).unwrap()
    }

    #[test]
    fn admits_exactly_the_quota_under_concurrency() {
        let (backend, _clock) = backend(Tiers::default());
        let backend = Arc::new(backend);
        let admitted = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..64)
            .map(|i| {
                let backend = Arc::clone(&backend);
                let admitted = Arc::clone(&admitted);
                // 10_000 checks in all: 16 threads do 157, 48 do 156.
                let checks = if i < 16 { 157 } else { 156 };
                thread::spawn(move || {
                    for _ in 0..checks {
                        if check(&backend, "kg_shared", "default", 1).allowed {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 100);
        assert_eq!(backend.len(), 1);
    }

    #[test]
    fn replenishes_over_manual_time() {
        let (backend, clock) = backend(Tiers::default()); // 100 per minute
        for _ in 0..100 {
            assert!(check(&backend, "k", "default", 1).allowed);
        }
        let refused = check(&backend, "k", "default", 1);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(refused.reset, Duration::from_secs(60));

        clock.advance(Duration::from_millis(599));
        assert!(!check(&backend, "k", "default", 1).allowed);
        clock.advance(Duration::from_millis(1));
        let allowed = check(&backend, "k", "default", 1);
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 0);
        assert_eq!(allowed.retry_after, None);

        clock.advance(Duration::from_secs(60));
        let full = check(&backend, "k", "default", 1);
        assert_eq!(full.remaining, 99);
        assert_eq!(full.reset, Duration::from_millis(600));
    }

    #[test]
    fn reset_is_the_exact_time_until_full_capacity() {
        let quota = Quota::per_hour(nz(10)); // one every 6 minutes
        let (backend, clock) = backend(Tiers::new(quota));
        let first = check(&backend, "k", "default", 1);
        assert_eq!(
            (first.remaining, first.reset),
            (9, Duration::from_secs(360))
        );
        clock.advance(Duration::from_secs(300));
        let second = check(&backend, "k", "default", 1);
        // 60 s left of the first cell, plus 360 s for the second.
        assert_eq!(
            (second.remaining, second.reset),
            (8, Duration::from_secs(420))
        );
        assert_eq!(second.limit, 10);
        assert_eq!(second.window, Duration::from_secs(3600));
    }

    #[test]
    fn a_tier_is_advertised_under_its_name() {
        let tiers = Tiers::new(Quota::per_minute(nz(2))).tier("bulk", Quota::per_minute(nz(5)));
        let (backend, _clock) = backend(tiers);
        let decision = check(&backend, "b", "bulk", 1);
        assert_eq!(&*decision.policy, "bulk");
        assert_eq!(decision.headers().policy(), r#""bulk";q=5;w=60"#);
        assert_eq!(decision.headers().rate_limit(), r#""bulk";r=4;t=12"#);
        let default = check(&backend, "d", "default", 1);
        assert_eq!(default.headers().policy(), r#""default";q=2;w=60"#);
    }

    #[test]
    fn tiers_have_their_own_quotas_and_unknown_tiers_get_the_default() {
        let tiers = Tiers::new(Quota::per_minute(nz(2)))
            .tier("gold", Quota::per_minute(nz(5)).named("gold").unwrap());
        let (backend, _clock) = backend(tiers);
        let gold: Vec<bool> = (0..6)
            .map(|_| check(&backend, "g", "gold", 1).allowed)
            .collect();
        assert_eq!(gold, [true, true, true, true, true, false]);
        let default: Vec<bool> = (0..3)
            .map(|_| check(&backend, "d", "default", 1).allowed)
            .collect();
        assert_eq!(default, [true, true, false]);
        // An unconfigured tier is limited like the default tier (and shares its state).
        let unknown = check(&backend, "d", "platinum", 1);
        assert!(!unknown.allowed);
        assert_eq!(&*unknown.policy, "default");
        assert_eq!(unknown.limit, 2);

        let decision = check(&backend, "g2", "gold", 1);
        assert_eq!(&*decision.policy, "gold");
        assert_eq!(decision.limit, 5);
        assert_eq!(backend.len(), 3);
    }

    #[test]
    fn cost_above_one_consumes_several_cells() {
        let (backend, clock) = backend(Tiers::new(Quota::per_second(nz(10))));
        let first = check(&backend, "k", "default", 4);
        assert!(first.allowed);
        assert_eq!(first.remaining, 6);
        assert_eq!(first.reset, Duration::from_millis(400));
        assert!(check(&backend, "k", "default", 6).allowed);
        let refused = check(&backend, "k", "default", 3);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(300)));
        assert_eq!(refused.reset, Duration::from_secs(1));
        assert_eq!(refused.remaining, 0);

        clock.advance(Duration::from_millis(200));
        let partial = check(&backend, "k", "default", 3);
        assert!(!partial.allowed);
        assert_eq!(partial.remaining, 2);
        assert_eq!(partial.retry_after, Some(Duration::from_millis(100)));
    }

    #[test]
    fn cost_above_the_burst_is_an_error_and_creates_no_state() {
        let quota = Quota::per_minute(nz(100)).with_burst(nz(10));
        let (backend, _clock) = backend(Tiers::new(quota));
        let error = ready(backend.check("k", "default", nz(11))).unwrap_err();
        assert!(matches!(
            error,
            LimitError::CostExceedsBurst {
                cost: 11,
                burst: 10
            }
        ));
        assert_eq!(error.to_string(), "cost 11 exceeds the quota's burst 10");
        assert!(backend.is_empty());
        assert!(check(&backend, "k", "default", 10).allowed);
    }

    #[test]
    fn housekeeping_drops_keys_whose_allowance_is_full_again() {
        let (backend, clock) = backend(Tiers::default());
        for i in 0..1000 {
            check(&backend, &format!("key-{i}"), "default", 1);
        }
        assert_eq!(backend.len(), 1000);
        clock.advance(Duration::from_secs(61));
        // Checks of a known key add nothing, and sweep nothing.
        for _ in 0..5000 {
            check(&backend, "busy", "default", 1);
        }
        assert_eq!(backend.len(), 1001);
        // New keys do: the sweep they bring (after 4096 new keys) drops every key whose
        // allowance is full again, and keeps the recent ones.
        for i in 0..5000 {
            check(&backend, &format!("new-{i}"), "default", 1);
        }
        assert_eq!(backend.len(), 5000 + 1);
    }

    fn strict(limit: u32, window: Duration) -> Quota {
        Quota::strict(nz(limit), window).unwrap()
    }

    #[test]
    fn a_strict_window_never_admits_more_than_its_limit_and_tells_when() {
        let (backend, clock) = backend(Tiers::new(strict(3, Duration::from_secs(60))));
        let first = check(&backend, "k", "default", 1);
        assert_eq!(first.headers().policy(), r#""default";q=3;w=60"#);
        // t: seconds until the oldest admission leaves the window.
        assert_eq!(first.headers().rate_limit(), r#""default";r=2;t=60"#);
        clock.advance(Duration::from_secs(10));
        assert!(check(&backend, "k", "default", 1).allowed);
        clock.advance(Duration::from_secs(10));
        let third = check(&backend, "k", "default", 1);
        assert_eq!(third.headers().rate_limit(), r#""default";r=0;t=40"#);
        // Refused until the first admission is 60 s old: Retry-After says so.
        clock.advance(Duration::from_millis(500));
        let refused = check(&backend, "k", "default", 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(39_500)));
        let mut headers = http::HeaderMap::new();
        refused.headers().apply(&mut headers);
        assert_eq!(headers["retry-after"], "40");
        assert_eq!(headers["ratelimit"], r#""default";r=0;t=40"#);
        // Unlike GCRA, a quiet spell of a window does not refill early.
        clock.advance(Duration::from_millis(39_499));
        assert!(!check(&backend, "k", "default", 1).allowed);
        clock.advance(Duration::from_millis(1));
        let admitted = check(&backend, "k", "default", 1);
        assert!(admitted.allowed);
        assert_eq!(
            (admitted.remaining, admitted.reset),
            (0, Duration::from_secs(10))
        );
    }

    #[test]
    fn a_strict_cost_takes_as_many_slots() {
        let (backend, clock) = backend(Tiers::new(strict(10, Duration::from_secs(10))));
        assert_eq!(check(&backend, "k", "default", 4).remaining, 6);
        clock.advance(Duration::from_secs(1));
        assert_eq!(check(&backend, "k", "default", 5).remaining, 1);
        clock.advance(Duration::from_secs(1));
        // 9 held: a cost of 3 needs 2 more slots, which the first request frees at 10 s.
        let refused = check(&backend, "k", "default", 3);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 1);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(8)));
        assert_eq!(refused.reset, Duration::from_secs(8));
        // A cost of 10 waits for both: the second request leaves at 11 s.
        let all = check(&backend, "k", "default", 10);
        assert_eq!(all.retry_after, Some(Duration::from_secs(9)));
        // A cost above the limit can never fit.
        let error = ready(backend.check("k", "default", nz(11))).unwrap_err();
        assert!(matches!(
            error,
            LimitError::CostExceedsBurst {
                cost: 11,
                burst: 10
            }
        ));
        assert!(check(&backend, "k", "default", 1).allowed);
    }

    #[test]
    fn tiers_mix_gcra_and_strict_windows_and_idle_windows_are_swept() {
        let tiers = Tiers::new(Quota::per_minute(nz(2)))
            .tier("contract", strict(2, Duration::from_secs(60)));
        let (backend, clock) = backend(tiers);
        // GCRA: 2 at once, then one every 30 s; strict: 2, then nothing for 60 s.
        for tier in ["default", "contract"] {
            assert!(check(&backend, "k", tier, 2).allowed);
        }
        clock.advance(Duration::from_secs(30));
        assert!(check(&backend, "k", "default", 1).allowed);
        let strict = check(&backend, "k", "contract", 1);
        assert!(!strict.allowed);
        assert_eq!(&*strict.policy, "contract");
        assert_eq!(strict.retry_after, Some(Duration::from_secs(30)));
        for i in 0..1000 {
            check(&backend, &format!("w-{i}"), "contract", 1);
        }
        assert_eq!(backend.len(), 1002);
        // A window later, the next sweep (after 4096 new keys) drops every idle key.
        clock.advance(Duration::from_secs(61));
        for i in 0..5000 {
            check(&backend, &format!("new-{i}"), "contract", 1);
        }
        assert_eq!(backend.len(), 5000);
    }

    #[test]
    fn keys_are_distinct_and_long_keys_work() {
        let (backend, _clock) = backend(Tiers::new(Quota::per_minute(nz(1))));
        let long = "x".repeat(4000);
        assert!(check(&backend, &long, "default", 1).allowed);
        assert!(!check(&backend, &long, "default", 1).allowed);
        assert!(check(&backend, "short", "default", 1).allowed);
        assert!(check(&backend, "", "default", 1).allowed);
        assert_eq!(backend.len(), 3);
    }

    #[test]
    fn backend_is_object_safe_and_debug_is_short() {
        let (backend, _clock) = backend(Tiers::default());
        let dynamic: Arc<dyn RateLimitBackend> = Arc::new(backend);
        assert!(ready(dynamic.check("k", "default", nz(1))).unwrap().allowed);
        let debug = format!("{dynamic:?}");
        assert!(debug.starts_with("InMemoryRateLimit"), "{debug}");
        assert!(debug.contains("keys: 1"), "{debug}");
    }
}
