//! The failed-attempt limiter (brute-force protection, request path stage 3).
//!
//! Why governor alone is not enough, and what sits beside it:
//!
//! - governor has no check that consumes nothing, and its keyed limiter inserts every
//!   key it is asked about. [`check`](FailedAttemptLimiter::check) runs on every request,
//!   before the key is looked up, and must neither consume a cell nor create an entry
//!   (unauthenticated input must not grow memory). So each client's entry is an
//!   [`Allowance`]: governor's direct limiter, which counts the failures, and beside it
//!   the time the allowance is full again; the client is blocked until one failure's
//!   interval before that (`full_at − (burst − 1) × T`). `check` only reads that time.
//! - governor's keyed store has no size cap. The clients' table here is a `DashMap`
//!   that grows only under a lock, up to `capacity` entries, and is swept by this module.

use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use governor::{clock::Clock as _, middleware::NoOpMiddleware, nanos::Nanos};

use super::{
    ClientKey, Clock, Quota,
    allowance::{Allowance, Checked},
    housekeeping::{Sweep, SweepSchedule, worth_shrinking},
    passage::{DEFAULT_PASSAGE_PER_SECOND, Passage},
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
/// let three_per_minute = Quota::per_minute(NonZeroU32::new(3).ok_or("zero")?);
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
/// Failures are counted by governor (GCRA), one limiter per client: each failure
/// consumes one cell, and a client without a cell left is blocked until one
/// replenishes. [`check`](FailedAttemptLimiter::check) consumes nothing and creates no
/// entry; a client that has no entry has all its cells.
///
/// A distributed attack can fail from a million addresses, so the table is capped: new
/// clients are added only while it holds fewer than `capacity` entries (insertions are
/// serialised, so the cap is exact even under concurrency). When the table is full,
/// clients that have fully replenished are swept, at most once a second of clock time;
/// if it is still full, the new client's failure is **not tracked**: it is answered as
/// for a first failure, and counted in [`untracked`](FailedAttemptLimiter::untracked).
/// The trade-off: during such a flood, clients that were not seen before it can make
/// more attempts than the quota allows (the keys' entropy still protects them), while
/// clients already tracked stay blocked and memory stays bounded. The table is also
/// swept every few thousand failures, so stale entries do not linger.
///
/// # Blocked addresses
///
/// Many callers can share one address (a NAT, a proxy, an IPv6 /64): one of them failing
/// ten times must not lock the others out. So the guard still refuses, before any lookup,
/// an opaque key or a malformed one from a blocked address, but lets a generated key
/// (`kg_…`, which names its key id and whose checksum is checked first) be looked up
/// when either its key id verified from a blocked address in the last ten minutes, or a
/// budget shared by all blocked addresses allows one more lookup (default 10 per second,
/// [`with_passage`](Self::with_passage); [`without_passage`](Self::without_passage)
/// turns this off). A key that verifies is admitted; one that does not is refused with
/// 429 `too_many_failed_attempts` and counted. A flood of made-up well-formed keys from
/// blocked addresses thus causes at most the budget's lookups, and a caller whose key
/// verified keeps working while its neighbour is blocked. JWTs (feature `jwt`) need no
/// lookup: from a blocked address, one that verifies is admitted.
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
    /// `(burst − 1) × T`: how long before its allowance is full a client stops being blocked.
    tolerance: u64,
    clock: Clock,
    /// The clients with failures (`SipHash`: the keys are chosen by whoever connects).
    clients: DashMap<ClientKey, Allowance<NoOpMiddleware<Nanos>>>,
    capacity: usize,
    /// The entries in `clients`; changed only while `insert` is held.
    entries: AtomicUsize,
    /// Held to add or remove entries.
    insert: Mutex<()>,
    schedule: SweepSchedule,
    /// Clock time of the last sweep forced by a full table; `u64::MAX` for never.
    last_full_sweep: AtomicU64,
    untracked: AtomicU64,
    warned_full: AtomicBool,
    /// The way in for verified keys from blocked addresses; `None`: there is none.
    passage: Option<Passage>,
}

impl FailedAttemptLimiter {
    /// A limiter allowing `quota` failures per client (the burst is how many may come
    /// in a row), tracking up to 100,000 clients, on the [system clock](Clock::system).
    ///
    /// Failures are counted with GCRA, also for a [strict](Quota::strict) quota (whose
    /// limit then is the burst).
    #[must_use]
    pub fn new(quota: Quota) -> Self {
        Self::build(
            quota,
            DEFAULT_CAPACITY,
            Clock::system(),
            NonZeroU32::new(DEFAULT_PASSAGE_PER_SECOND),
        )
    }

    /// The same limiter, tracking at most `capacity` clients at once (`0` tracks none).
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn with_capacity(self, capacity: usize) -> Self {
        let passage = self.passage_per_second();
        Self::build(self.quota, capacity, self.clock, passage)
    }

    /// The budget of lookups for keys presented from blocked addresses (default
    /// [`DEFAULT_PASSAGE_PER_SECOND`](super::DEFAULT_PASSAGE_PER_SECOND), for all blocked
    /// addresses together); see [Blocked addresses](#blocked-addresses).
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn with_passage(self, per_second: NonZeroU32) -> Self {
        Self::build(self.quota, self.capacity, self.clock, Some(per_second))
    }

    /// No way in from a blocked address: every request from it is refused before any
    /// lookup, valid key or not, until it is unblocked.
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn without_passage(self) -> Self {
        Self::build(self.quota, self.capacity, self.clock, None)
    }

    fn passage_per_second(&self) -> Option<NonZeroU32> {
        self.passage
            .as_ref()
            .and_then(|passage| NonZeroU32::new(passage.per_second()))
    }

    /// The way in for verified keys from blocked addresses, if there is one.
    pub(crate) fn passage(&self) -> Option<&Passage> {
        self.passage.as_ref()
    }

    /// The same limiter on `clock` (a [manual](Clock::manual) clock in tests).
    ///
    /// Meant for construction: failures recorded so far are dropped.
    #[must_use]
    pub fn with_clock(self, clock: Clock) -> Self {
        let passage = self.passage_per_second();
        Self::build(self.quota, self.capacity, clock, passage)
    }

    fn build(quota: Quota, capacity: usize, clock: Clock, passage: Option<NonZeroU32>) -> Self {
        let tolerance = quota
            .cell_nanos()
            .saturating_mul(u64::from(quota.burst() - 1));
        Self {
            quota,
            tolerance,
            clients: DashMap::new(),
            capacity,
            entries: AtomicUsize::new(0),
            insert: Mutex::new(()),
            schedule: SweepSchedule::new(),
            last_full_sweep: AtomicU64::new(u64::MAX),
            untracked: AtomicU64::new(0),
            warned_full: AtomicBool::new(false),
            passage: passage.map(|per_second| Passage::new(per_second, clock.clone())),
            clock,
        }
    }

    /// `Err(retry_after)` if `client` has used up its failures, `Ok(())` otherwise.
    ///
    /// Call it before looking a key up. It changes nothing and creates no state, so
    /// it is cheap (one hash lookup) and safe to call for every request.
    ///
    /// # Errors
    ///
    /// `Err` with the time until the client may try again, while it is blocked.
    pub fn check(&self, client: ClientKey) -> Result<(), Duration> {
        // The entry's lock is released at the end of this statement.
        let full_at = self
            .clients
            .get(&client)
            .map(|allowance| allowance.full_at());
        match full_at {
            Some(full_at) => self.blocked(full_at, self.clock.now()),
            None => Ok(()),
        }
    }

    /// Counts one failed attempt by `client`; `Err(retry_after)` if it is now blocked.
    ///
    /// After `burst` failures in a row, [`check`](Self::check) refuses the client until
    /// a failure has replenished. A failure recorded while the client is already
    /// blocked is not counted further.
    ///
    /// # Errors
    ///
    /// `Err` with the time until the client may try again, if it is now blocked.
    pub fn record_failure(&self, client: ClientKey) -> Result<(), Duration> {
        if let Some(sweep) = self.schedule.tick() {
            self.sweep(sweep);
        }
        // The entry's lock is released at the end of this statement.
        let known = self
            .clients
            .get(&client)
            .map(|allowance| allowance.check(&self.quota));
        let Some(Checked {
            outcome,
            full_at,
            now,
        }) = known.or_else(|| self.insert_and_check(client))
        else {
            self.note_untracked();
            return Ok(());
        };
        match outcome {
            Ok(()) => self.blocked(full_at, now).inspect_err(|retry_after| {
                tracing::debug!(%client, ?retry_after, "client blocked after failed attempts");
            }),
            Err(not_until) => Err(not_until.wait_time_from(now)),
        }
    }

    /// Whether a client whose allowance is full at `full_at` is blocked at `now`.
    fn blocked(&self, full_at: Nanos, now: Nanos) -> Result<(), Duration> {
        let blocked_until = full_at.as_u64().saturating_sub(self.tolerance);
        match blocked_until.checked_sub(now.as_u64()) {
            Some(wait) if wait > 0 => Err(Duration::from_nanos(wait)),
            _ => Ok(()),
        }
    }

    /// Adds `client` and counts its failure, unless the table is full even after a
    /// sweep (`None`: the failure is not tracked).
    fn insert_and_check(&self, client: ClientKey) -> Option<Checked<()>> {
        if self.is_full() {
            self.sweep_full_table();
        }
        let _insert = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let allowance = match self.clients.get(&client) {
            // Added by another failure of the same client meanwhile.
            Some(allowance) => return Some(allowance.check(&self.quota)),
            None if self.is_full() => return None,
            None => {
                self.entries.fetch_add(1, Ordering::Relaxed);
                self.clients
                    .entry(client)
                    .or_insert_with(|| Allowance::new(&self.quota, &self.clock))
            }
        };
        Some(allowance.check(&self.quota))
    }

    fn is_full(&self) -> bool {
        self.entries.load(Ordering::Relaxed) >= self.capacity
    }

    fn note_untracked(&self) {
        self.untracked.fetch_add(1, Ordering::Relaxed);
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                capacity = self.capacity,
                "failed-attempt table full: new clients are not tracked"
            );
        }
    }

    /// The number of clients tracked; never more than [`capacity`](Self::capacity).
    #[must_use]
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether no client is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The most clients tracked at once.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
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

    /// Drops the clients whose allowance is full again.
    fn sweep(&self, sweep: Sweep<'_>) {
        let (before, after) = {
            let _insert = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
            let now = self.clock.now();
            let before = self.clients.len();
            self.clients
                .retain(|_, allowance| allowance.full_at() > now);
            let after = self.clients.len();
            self.entries.store(after, Ordering::Relaxed);
            (before, after)
        };
        if worth_shrinking(before, after) {
            self.clients.shrink_to_fit();
        }
        if after < self.capacity {
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
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("untracked", &self.untracked())
            .field("clock", &self.clock)
            .field("passage", &self.passage)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{net::IpAddr, sync::Arc, thread};

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
    }
}
