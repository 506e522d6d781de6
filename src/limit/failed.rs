//! The failed-attempt limiter (brute-force protection, request path stage 3).

use std::{
    cell::Cell,
    convert::Infallible,
    fmt,
    hash::{Hash, Hasher},
    num::NonZeroU32,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use governor::{
    RateLimiter,
    clock::Clock as _,
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{
        InMemoryState, NotKeyed, StateStore,
        keyed::{DashMapStateStore, ShrinkableKeyedStateStore},
    },
};

use super::{
    ClientKey, Clock, Quota,
    housekeeping::{Sweep, SweepSchedule, worth_shrinking},
};

/// The default number of clients tracked at once.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The shortest clock time between two sweeps forced by a full table.
const FULL_SWEEP_INTERVAL: Nanos = Nanos::new(1_000_000_000);

/// Counts failed authentication attempts per client ([`ClientKey`]: IPv4 address or IPv6
/// /64) and refuses clients that failed too often, before any key lookup.
///
/// The default allows 10 failures per minute, all 10 at once (burst 10): after ten
/// failures in quick succession the client is refused, and may try once more every 6
/// seconds. Memory is capped at [`capacity`](Self::capacity) clients (100,000 by
/// default, a few megabytes); see [Design](#design) for what happens beyond.
///
/// ```
/// use std::{net::IpAddr, num::NonZeroU32, time::Duration};
/// use keygate::limit::{ClientKey, Clock, FailedAttemptLimiter, Quota};
///
/// let clock = Clock::manual();
/// let three_per_minute = Quota::per_minute(NonZeroU32::new(3).unwrap());
/// let limiter = FailedAttemptLimiter::new(three_per_minute).with_clock(clock.clone());
/// let client = ClientKey::from("2001:db8::1".parse::<IpAddr>()?);
///
/// assert_eq!(limiter.check(client), Ok(()));
/// assert_eq!(limiter.record_failure(client), Ok(()));
/// assert_eq!(limiter.record_failure(client), Ok(()));
/// // The third failure uses the last one up: blocked for 20 s (60 s / 3).
/// assert_eq!(limiter.record_failure(client), Err(Duration::from_secs(20)));
/// assert_eq!(limiter.check(client), Err(Duration::from_secs(20)));
/// clock.advance(Duration::from_secs(20));
/// assert_eq!(limiter.check(client), Ok(()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Design
///
/// Failures are counted by a governor keyed limiter (GCRA, one `AtomicU64` per client
/// in a `DashMap`): each failure consumes one cell, and a client without a cell left is
/// blocked until one replenishes. governor lacks two things this needs, and keygate adds
/// them around governor's own state store rather than next to it:
///
/// - **A check that changes nothing.** [`check`](FailedAttemptLimiter::check) runs on
///   every request, before the key is looked up, and must neither consume a cell nor
///   create an entry (unauthenticated input must not grow the table). governor has no
///   "peek", so the store evaluates governor's decision against the stored state and
///   does not write it back; a client that has no entry has all its cells.
/// - **A size cap.** A distributed attack can fail from a million addresses. New
///   clients are added only while the table holds fewer than `capacity` entries
///   (insertions are serialised, so the cap is exact even under concurrency). When the
///   table is full, entries that have fully replenished (governor's `retain_recent`) are
///   swept, at most once a second of clock time; if it is still full, the new client's
///   failure is **not tracked**: it is answered as for a first failure, and counted in
///   [`untracked`](FailedAttemptLimiter::untracked). The trade-off: during such a flood,
///   clients that were not seen before it can make more attempts than the quota allows
///   (the keys' entropy still protects them), while clients already tracked stay
///   blocked and memory stays bounded. The table is also swept every few
///   thousand failures, so stale entries do not linger.
///
/// # How the guard uses it
///
/// ```
/// use std::net::IpAddr;
/// use keygate::limit::{ClientKey, Clock, FailedAttemptLimiter};
///
/// let limiter = FailedAttemptLimiter::default().with_clock(Clock::manual());
/// let client = ClientKey::from("203.0.113.7".parse::<IpAddr>()?);
///
/// let mut lookups = 0;
/// for _attempt in 0..20 {
///     // Stage 3: before any registry lookup.
///     if let Err(retry_after) = limiter.check(client) {
///         // 429 too_many_failed_attempts, `Retry-After: retry_after_secs(retry_after)`
///         assert!(!retry_after.is_zero());
///         continue;
///     }
///     lookups += 1; // Stage 4: the key is unknown...
///     let _ = limiter.record_failure(client); // ...so count a failure: 401.
/// }
/// assert_eq!(lookups, 10); // the default quota: 10 failures per minute
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct FailedAttemptLimiter {
    quota: Quota,
    clock: Clock,
    table: Arc<Table>,
    limiter: RateLimiter<Attempt, BoundedStore, Clock, NoOpMiddleware<Nanos>>,
    schedule: SweepSchedule,
    /// Clock time of the last sweep forced by a full table; `u64::MAX` for never.
    last_full_sweep: AtomicU64,
    untracked: AtomicU64,
    warned_full: AtomicBool,
}

impl FailedAttemptLimiter {
    /// A limiter allowing `quota` failures per client (the burst is how many may come
    /// in a row), tracking up to 100,000 clients, on the [system clock](Clock::system).
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::build(quota, DEFAULT_CAPACITY, Clock::system())
    }

    /// The same limiter, tracking at most `capacity` clients at once (`0` tracks none).
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn with_capacity(self, capacity: usize) -> Self {
        Self::build(self.quota, capacity, self.clock)
    }

    /// The same limiter on `clock` (a [manual](Clock::manual) clock in tests).
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> Self {
        Self::build(self.quota, self.table.capacity, clock)
    }

    fn build(quota: Quota, capacity: usize, clock: Clock) -> Self {
        let table = Arc::new(Table {
            map: DashMapStateStore::default(),
            capacity,
            entries: AtomicUsize::new(0),
            insert: Mutex::new(()),
        });
        let limiter = RateLimiter::new(
            quota.governor(),
            BoundedStore(Arc::clone(&table)),
            clock.clone(),
        );
        Self {
            quota,
            clock,
            table,
            limiter,
            schedule: SweepSchedule::new(),
            last_full_sweep: AtomicU64::new(u64::MAX),
            untracked: AtomicU64::new(0),
            warned_full: AtomicBool::new(false),
        }
    }

    /// `Err(retry_after)` if `client` has used up its failures, `Ok(())` otherwise.
    ///
    /// Call it before looking a key up. It changes nothing and creates no state, so
    /// it is cheap (one hash lookup) and safe to call for every request.
    pub fn check(&self, client: ClientKey) -> Result<(), Duration> {
        self.limiter
            .check_key(&Attempt::peek(client))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Counts one failed attempt by `client`; `Err(retry_after)` if it is now blocked.
    ///
    /// After `burst` failures in a row, [`check`](Self::check) refuses the client until
    /// a failure has replenished. A failure recorded while the client is already
    /// blocked is not counted further.
    pub fn record_failure(&self, client: ClientKey) -> Result<(), Duration> {
        if let Some(sweep) = self.schedule.tick() {
            self.sweep(sweep);
        }
        if self.table.is_full() && !self.table.map.contains_key(&client) {
            self.sweep_full_table();
        }
        let attempt = Attempt::record(client);
        let outcome = self.limiter.check_key(&attempt);
        if attempt.untracked.get() {
            self.untracked.fetch_add(1, Ordering::Relaxed);
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    capacity = self.table.capacity,
                    "failed-attempt table full: new clients are not tracked"
                );
            }
            return Ok(());
        }
        match outcome {
            Ok(()) => self.check(client).inspect_err(|retry_after| {
                tracing::debug!(%client, ?retry_after, "client blocked after failed attempts");
            }),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// The number of clients tracked; never more than [`capacity`](Self::capacity).
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.map.len()
    }

    /// Whether no client is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.table.map.is_empty()
    }

    /// The most clients tracked at once.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.table.capacity
    }

    /// How many failures were not tracked because the table was full.
    #[must_use]
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    /// The quota of failures per client.
    #[must_use]
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Sweeps now if the table is full and the last forced sweep is at least
    /// [`FULL_SWEEP_INTERVAL`] old, so a flood of new clients costs one sweep a second.
    fn sweep_full_table(&self) {
        let now = self.clock.now().as_u64();
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        if last != u64::MAX && now.saturating_sub(last) < FULL_SWEEP_INTERVAL.as_u64() {
            return;
        }
        if let Some(sweep) = self.schedule.begin() {
            self.last_full_sweep.store(now, Ordering::Relaxed);
            self.sweep(sweep);
        }
    }

    fn sweep(&self, sweep: Sweep<'_>) {
        let before = self.len();
        self.limiter.retain_recent();
        let after = self.len();
        if worth_shrinking(before, after) {
            self.limiter.shrink_to_fit();
        }
        if after < self.table.capacity {
            self.warned_full.store(false, Ordering::Relaxed);
        }
        tracing::debug!(before, after, "swept failed-attempt state");
        sweep.finish(after);
    }
}

impl Default for FailedAttemptLimiter {
    /// 10 failures per minute, burst 10, 100,000 clients, system clock.
    fn default() -> Self {
        const TEN: NonZeroU32 = match NonZeroU32::new(10) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        };
        Self::new(Quota::per_minute(TEN))
    }
}

impl fmt::Debug for FailedAttemptLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailedAttemptLimiter")
            .field("quota", &self.quota)
            .field("capacity", &self.table.capacity)
            .field("len", &self.len())
            .field("untracked", &self.untracked())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The clients' state: governor's `DashMapStateStore`, with a cap on its size.
#[derive(Debug)]
struct Table {
    map: DashMapStateStore<ClientKey>,
    capacity: usize,
    /// The entries in `map`; changed only while `insert` is held.
    entries: AtomicUsize,
    /// Held to add or remove entries.
    insert: Mutex<()>,
}

impl Table {
    fn is_full(&self) -> bool {
        self.entries.load(Ordering::Relaxed) >= self.capacity
    }
}

/// One question to the store, as governor's keyed limiter sees it: a client, whether
/// to record a failure or only look, and whether the failure went untracked.
///
/// Equality and hashing use the client only.
#[derive(Clone, Debug)]
struct Attempt {
    client: ClientKey,
    record: bool,
    untracked: Cell<bool>,
}

impl Attempt {
    fn peek(client: ClientKey) -> Self {
        Self {
            client,
            record: false,
            untracked: Cell::new(false),
        }
    }

    fn record(client: ClientKey) -> Self {
        Self {
            record: true,
            ..Self::peek(client)
        }
    }
}

impl PartialEq for Attempt {
    fn eq(&self, other: &Self) -> bool {
        self.client == other.client
    }
}

impl Eq for Attempt {}

impl Hash for Attempt {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.client.hash(state);
    }
}

/// The [`Table`] as governor's state store: governor decides (GCRA) and updates each
/// client's `InMemoryState` by compare-and-swap; this store only decides whether a
/// decision is written back (not for a peek) and whether a new client gets an entry.
#[derive(Debug)]
struct BoundedStore(Arc<Table>);

impl StateStore for BoundedStore {
    type Key = Attempt;

    fn measure_and_replace<T, F, E>(&self, attempt: &Attempt, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let table = &*self.0;
        if !attempt.record {
            return match table.map.get(&attempt.client) {
                Some(state) => peek(&state, f),
                None => fresh(f),
            };
        }
        if let Some(state) = table.map.get(&attempt.client) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let _insert = table.insert.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = table.map.get(&attempt.client) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        if table.is_full() {
            attempt.untracked.set(true);
            return fresh(f);
        }
        table.entries.fetch_add(1, Ordering::Relaxed);
        let state = table.map.entry(attempt.client).or_default();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

/// governor's decision against `state`, not written back.
fn peek<T, E, F>(state: &InMemoryState, f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    // Answering `Err` makes the state store keep the current value.
    let kept = state.measure_and_replace(&NotKeyed::NonKey, |prev| {
        Err::<(Infallible, Nanos), _>(f(prev).map(|(outcome, _)| outcome))
    });
    match kept {
        Ok(never) => match never {},
        Err(decision) => decision,
    }
}

/// governor's decision for a client without state (all its cells), not stored.
fn fresh<T, E, F>(f: F) -> Result<T, E>
where
    F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
{
    f(None).map(|(outcome, _)| outcome)
}

impl ShrinkableKeyedStateStore<Attempt> for BoundedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let table = &*self.0;
        let _insert = table.insert.lock().unwrap_or_else(PoisonError::into_inner);
        ShrinkableKeyedStateStore::retain_recent(&table.map, drop_below);
        table.entries.store(table.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.0.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.0.map.len()
    }

    fn is_empty(&self) -> bool {
        self.0.map.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{net::IpAddr, thread, time::Instant};

    use super::*;

    fn client(s: &str) -> ClientKey {
        ClientKey::from(s.parse::<IpAddr>().unwrap())
    }

    fn limiter(per_minute: u32) -> (FailedAttemptLimiter, Clock) {
        let clock = Clock::manual();
        let quota = Quota::per_minute(NonZeroU32::new(per_minute).unwrap());
        (
            FailedAttemptLimiter::new(quota).with_clock(clock.clone()),
            clock,
        )
    }

    #[test]
    fn default_is_ten_failures_per_minute_burst_ten() {
        let limiter = FailedAttemptLimiter::default();
        assert_eq!(limiter.quota().limit(), 10);
        assert_eq!(limiter.quota().burst(), 10);
        assert_eq!(limiter.quota().window(), Duration::from_secs(60));
        assert_eq!(limiter.capacity(), DEFAULT_CAPACITY);
    }

    #[test]
    fn blocks_after_exactly_burst_failures() {
        let (limiter, _clock) = limiter(10);
        let c = client("203.0.113.7");
        for _ in 0..9 {
            assert_eq!(limiter.check(c), Ok(()));
            assert_eq!(limiter.record_failure(c), Ok(()));
        }
        assert_eq!(limiter.check(c), Ok(()));
        assert_eq!(limiter.record_failure(c), Err(Duration::from_secs(6)));
        assert_eq!(limiter.check(c), Err(Duration::from_secs(6)));
        // More failures while blocked are not counted further.
        assert_eq!(limiter.record_failure(c), Err(Duration::from_secs(6)));
        assert_eq!(limiter.check(c), Err(Duration::from_secs(6)));
    }

    #[test]
    fn blocked_client_is_refused_before_the_registry() {
        let (limiter, clock) = limiter(10);
        let c = client("203.0.113.7");
        let mut lookups = 0;
        let mut refused = 0;
        for _ in 0..50 {
            match limiter.check(c) {
                Err(retry_after) => {
                    assert!(retry_after > Duration::ZERO);
                    refused += 1;
                }
                Ok(()) => {
                    lookups += 1;
                    let _ = limiter.record_failure(c);
                }
            }
        }
        assert_eq!((lookups, refused), (10, 40));
        // One attempt per replenished failure.
        clock.advance(Duration::from_secs(6));
        assert_eq!(limiter.check(c), Ok(()));
        assert_eq!(limiter.record_failure(c), Err(Duration::from_secs(6)));
        // Other clients are unaffected.
        assert_eq!(limiter.check(client("203.0.113.8")), Ok(()));
    }

    #[test]
    fn check_creates_no_state() {
        let (limiter, _clock) = limiter(10);
        for i in 0..1000u32 {
            assert_eq!(
                limiter.check(ClientKey::from(std::net::Ipv4Addr::from(i))),
                Ok(())
            );
        }
        assert!(limiter.is_empty());
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let (limiter, _clock) = limiter(3);
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:abcd::3"] {
            let _ = limiter.record_failure(client(host));
        }
        assert!(limiter.check(client("2001:db8:1:2::99")).is_err());
        assert_eq!(limiter.check(client("2001:db8:1:3::1")), Ok(()));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn burst_smaller_than_the_limit() {
        let clock = Clock::manual();
        let quota =
            Quota::per_minute(NonZeroU32::new(10).unwrap()).with_burst(NonZeroU32::new(3).unwrap());
        let limiter = FailedAttemptLimiter::new(quota).with_clock(clock.clone());
        let c = client("192.0.2.1");
        assert_eq!(limiter.record_failure(c), Ok(()));
        assert_eq!(limiter.record_failure(c), Ok(()));
        assert_eq!(limiter.record_failure(c), Err(Duration::from_secs(6)));
        clock.advance(Duration::from_secs(18));
        assert_eq!(limiter.record_failure(c), Ok(()));
    }

    #[test]
    fn full_table_sweeps_replenished_clients_before_refusing_to_track() {
        let (limiter, clock) = limiter(10);
        let limiter = limiter.with_capacity(10).with_clock(clock.clone());
        for i in 0..10u32 {
            let _ = limiter.record_failure(ClientKey::from(std::net::Ipv4Addr::from(i)));
        }
        assert_eq!(limiter.len(), 10);
        // Full, nothing replenished: the newcomer is not tracked.
        let newcomer = client("203.0.113.7");
        assert_eq!(limiter.record_failure(newcomer), Ok(()));
        assert_eq!(limiter.untracked(), 1);
        assert_eq!(limiter.len(), 10);
        // Tracked clients keep counting.
        assert_eq!(
            limiter.record_failure(ClientKey::from(std::net::Ipv4Addr::from(0))),
            Ok(())
        );
        // Once the old entries have replenished, a sweep makes room.
        clock.advance(Duration::from_secs(61));
        assert_eq!(limiter.record_failure(newcomer), Ok(()));
        assert_eq!(limiter.untracked(), 1);
        // Everyone else had replenished and was swept: only the newcomer is left.
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn zero_capacity_tracks_nobody() {
        let (limiter, _clock) = limiter(1);
        let limiter = limiter.with_capacity(0);
        let c = client("192.0.2.1");
        for _ in 0..5 {
            assert_eq!(limiter.record_failure(c), Ok(()));
        }
        assert_eq!(limiter.check(c), Ok(()));
        assert_eq!((limiter.len(), limiter.untracked()), (0, 5));
    }

    /// 1,000,000 distinct clients against a capacity of 100,000 (a few seconds in debug).
    #[test]
    fn a_million_clients_never_exceed_the_capacity() {
        let (limiter, clock) = limiter(10);
        let limiter = Arc::new(limiter.with_capacity(100_000));
        let started = Instant::now();
        let threads: Vec<_> = (0..4u32)
            .map(|t| {
                let limiter = Arc::clone(&limiter);
                let clock = clock.clone();
                thread::spawn(move || {
                    for i in 0..250_000u32 {
                        let ip = std::net::Ipv4Addr::from(t * 250_000 + i);
                        let _ = limiter.record_failure(ClientKey::from(ip));
                        if i % 50_000 == 0 {
                            assert!(limiter.len() <= 100_000);
                            clock.advance(Duration::from_millis(100));
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(limiter.len() <= 100_000, "{}", limiter.len());
        assert_eq!(limiter.len() as u64 + limiter.untracked(), 1_000_000);
        eprintln!("1,000,000 clients in {:?}", started.elapsed());
    }
}
