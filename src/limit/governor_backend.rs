//! The in-memory rate-limit backend, on governor's keyed rate limiters.

use std::{
    cell::Cell,
    collections::HashMap,
    fmt,
    hash::{Hash, Hasher},
    num::NonZeroU32,
    time::Duration,
};

use governor::{
    InsufficientCapacity, RateLimiter,
    clock::{Clock as _, Reference as _},
    middleware::StateInformationMiddleware,
    nanos::Nanos,
    state::{
        StateStore,
        keyed::{DashMapStateStore, ShrinkableKeyedStateStore},
    },
};

use super::{
    Clock, LimitError, Quota, RateLimitBackend, RateLimitDecision, Tiers,
    housekeeping::{SweepSchedule, worth_shrinking},
};
use crate::BackendFuture;

/// Rate limiting in process memory, on [governor](https://docs.rs/governor): one keyed
/// GCRA limiter per [tier](Tiers).
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
/// `redis` feature) so the limit holds across replicas.
///
/// ```
/// use std::num::NonZeroU32;
/// use keygate::limit::{Clock, GovernorBackend, Quota, RateLimitBackend, Tiers};
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
///
/// let three = NonZeroU32::new(3).unwrap();
/// let backend = GovernorBackend::new(Tiers::new(Quota::per_minute(three)))
///     .with_clock(Clock::manual());
/// let one = NonZeroU32::MIN;
/// for remaining in [2, 1, 0] {
///     let decision = block_on(backend.check("kg_key", "default", one))?;
///     assert!(decision.allowed);
///     assert_eq!(decision.remaining, remaining);
/// }
/// let refused = block_on(backend.check("kg_key", "default", one))?;
/// assert!(!refused.allowed);
/// assert_eq!(refused.retry_after, Some(std::time::Duration::from_secs(20)));
/// // Other keys have their own allowance.
/// assert!(block_on(backend.check("kg_other", "default", one))?.allowed);
/// # Ok::<(), keygate::limit::LimitError>(())
/// ```
///
/// # Why not governor alone
///
/// governor does the rate limiting: the GCRA decision, the per-key state (one
/// `AtomicU64` per key in a `DashMap`, updated by compare-and-swap, so concurrent checks
/// are exact) and the removal of stale keys. keygate adds what governor leaves out:
///
/// - **Lookups by `&str` without allocating.** governor looks a key up by `&K`, and a
///   `DashMap<String, _>` would need a `String` for every check. Each thread keeps one
///   reusable key buffer; only the first check of a new key allocates, for
///   its entry.
/// - **The time until full capacity.** governor's snapshot tells the remaining burst but
///   not when the allowance is full again. keygate wraps governor's own
///   `DashMapStateStore` and notes the theoretical arrival time governor stores, so
///   `reset` is exact rather than an estimate.
/// - **Housekeeping.** governor's `retain_recent` and `shrink_to_fit` must be called by
///   someone; the backend calls them itself.
pub struct GovernorBackend {
    tiers: Tiers,
    default: Tier,
    named: HashMap<Box<str>, Tier>,
    clock: Clock,
    schedule: SweepSchedule,
}

/// One tier's quota and governor limiter.
struct Tier {
    quota: Quota,
    /// The clock reading governor took as its origin (read just before it did).
    start: Nanos,
    limiter: RateLimiter<Probe, TierStore, Clock, StateInformationMiddleware>,
}

impl Tier {
    fn new(quota: &Quota, clock: &Clock) -> Self {
        let start = clock.now();
        Self {
            quota: quota.clone(),
            start,
            limiter: RateLimiter::new(quota.governor(), TierStore::default(), clock.clone()),
        }
    }
}

impl GovernorBackend {
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
        let default = Tier::new(tiers.default_quota(), &clock);
        let named = tiers
            .iter()
            .skip(1)
            .map(|(name, quota)| (Box::from(name), Tier::new(quota, &clock)))
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
        self.all_tiers().map(|tier| tier.limiter.len()).sum()
    }

    /// Whether no key has state.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.all_tiers().all(|tier| tier.limiter.is_empty())
    }

    fn all_tiers(&self) -> impl Iterator<Item = &Tier> {
        std::iter::once(&self.default).chain(self.named.values())
    }

    fn tier(&self, name: &str) -> &Tier {
        // Most keys are in the default tier: found without hashing its name.
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
        let (outcome, tat, new_key) = with_probe(key, |probe| {
            let outcome = tier.limiter.check_key_n(probe, cost);
            (outcome, probe.tat.get(), probe.new_key.get())
        });
        let now = self.clock.now();
        let quota = &tier.quota;
        // The time until the allowance is full: governor's stored arrival time, from now.
        let reset = |tat: Option<Nanos>| -> Duration {
            tat.map_or(Duration::ZERO, |tat| {
                (tier.start + tat).duration_since(now).into()
            })
        };
        let decision = match outcome {
            Err(InsufficientCapacity(burst)) => {
                return Err(LimitError::CostExceedsBurst {
                    cost: cost.get(),
                    burst,
                });
            }
            Ok(Ok(snapshot)) => {
                RateLimitDecision::allow(quota, snapshot.remaining_burst_capacity(), reset(tat))
            }
            Ok(Err(not_until)) => {
                let reset = reset(tat);
                tracing::trace!(tier = tier_name, cost = cost.get(), "rate limit refused");
                RateLimitDecision::refuse(
                    quota,
                    remaining_at(quota, reset),
                    reset,
                    not_until.wait_time_from(now),
                )
            }
        };
        // Only new keys grow the tables, so only they count towards the next sweep: a
        // check of a known key touches no shared counter.
        if let Some(sweep) = new_key.then(|| self.schedule.tick()).flatten() {
            let before = self.len();
            for tier in self.all_tiers() {
                let before = tier.limiter.len();
                tier.limiter.retain_recent();
                if worth_shrinking(before, tier.limiter.len()) {
                    tier.limiter.shrink_to_fit();
                }
            }
            let after = self.len();
            tracing::debug!(before, after, "swept rate-limit state");
            sweep.finish(after);
        }
        Ok(decision)
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

impl RateLimitBackend for GovernorBackend {
    fn check(
        &self,
        key: &str,
        tier: &str,
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>> {
        BackendFuture::ready(self.decide(key, tier, cost))
    }
}

impl fmt::Debug for GovernorBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GovernorBackend")
            .field("tiers", &self.tiers)
            .field("keys", &self.len())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The key of one check, as governor's keyed limiter sees it: a reusable key buffer,
/// plus a slot where [`TierStore`] notes the arrival time governor stored.
///
/// Equality and hashing use the key only.
#[derive(Clone, Debug, Default)]
struct Probe {
    key: String,
    tat: Cell<Option<Nanos>>,
    /// Whether the check made the key's entry (it had no state before).
    new_key: Cell<bool>,
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Probe {}

impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// A key buffer larger than this is not kept for the next check.
const MAX_KEPT_KEY: usize = 1024;

thread_local! {
    static PROBE: Cell<Probe> = const {
        Cell::new(Probe { key: String::new(), tat: Cell::new(None), new_key: Cell::new(false) })
    };
}

/// Runs `f` with a probe for `key`, reusing the thread's key buffer (taken out of the
/// thread-local for the call and put back afterwards, so no borrow is held while
/// governor runs).
fn with_probe<R>(key: &str, f: impl FnOnce(&Probe) -> R) -> R {
    let mut probe = PROBE.try_with(Cell::take).unwrap_or_default();
    probe.key.clear();
    probe.key.push_str(key);
    probe.tat.set(None);
    probe.new_key.set(false);
    let result = f(&probe);
    if probe.key.capacity() <= MAX_KEPT_KEY {
        // Fails only while the thread is shutting down; the buffer is then dropped.
        let _ = PROBE.try_with(|cell| cell.set(probe));
    }
    result
}

/// governor's `DashMapStateStore<String, _>`, looked up through a [`Probe`], noting the
/// theoretical arrival time governor keeps for the key (after an allowed check, the one
/// it stored; after a refusal, the one it found).
///
/// Hashed with foldhash (seeded per process) rather than SipHash: only authenticated
/// principals get an entry, so no caller can fill the table with colliding keys. (The
/// failed-attempt table, whose keys are client addresses, keeps SipHash.)
#[derive(Debug, Default)]
struct TierStore {
    map: DashMapStateStore<String, foldhash::fast::RandomState>,
}

impl StateStore for TierStore {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.map.measure_and_replace(&probe.key, |prev| {
            // No stored arrival time: the key's entry was just made.
            probe.new_key.set(prev.is_none());
            let decision = f(prev);
            probe.tat.set(match &decision {
                Ok((_, next)) => Some(*next),
                Err(_) => prev,
            });
            decision
        })
    }
}

impl ShrinkableKeyedStateStore<Probe> for TierStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::{
        future::Future,
        pin::pin,
        sync::{
            Arc,
            atomic::{AtomicU32, Ordering},
        },
        task::{Context, Poll, Waker},
        thread,
    };

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    fn backend(tiers: Tiers) -> (GovernorBackend, Clock) {
        let clock = Clock::manual();
        (GovernorBackend::new(tiers).with_clock(clock.clone()), clock)
    }

    fn check(backend: &GovernorBackend, key: &str, tier: &str, cost: u32) -> RateLimitDecision {
        block_on(backend.check(key, tier, nz(cost))).unwrap()
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
        let error = block_on(backend.check("k", "default", nz(11))).unwrap_err();
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
        assert!(
            block_on(dynamic.check("k", "default", nz(1)))
                .unwrap()
                .allowed
        );
        let debug = format!("{dynamic:?}");
        assert!(debug.starts_with("GovernorBackend"), "{debug}");
        assert!(debug.contains("keys: 1"), "{debug}");
    }
}
