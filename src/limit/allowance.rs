//! One caller's allowance: a governor direct limiter, and the time it is full again.
//!
//! governor decides: its direct limiter holds the caller's GCRA state (one `AtomicU64`,
//! updated by compare-and-swap, so concurrent checks are exact) and answers each check
//! with the remaining burst (admitted) or the earliest time the cells would fit
//! (refused). It does not tell the time the allowance is full again (the GCRA's
//! "theoretical arrival time"), and it has no check that consumes nothing. Both
//! limiters of this module need that time: the in-memory rate limit for the `t=` of
//! the `RateLimit` header and to sweep idle keys, the failed-attempt limiter for its
//! check that changes nothing and to sweep idle clients. So [`Allowance`] keeps it
//! beside governor's limiter, in a plain atomic, from governor's public answers:
//!
//! - admitted `cost` cells at clock time `now`: `full_at = max(full_at, now) + cost × T`
//!   (`T` the replenish interval), the update governor itself applied;
//! - refused: governor's `NotUntil` gives the earliest time `cost` cells fit, which is
//!   `T × (burst − cost)` before the allowance is full; `full_at` is raised to it.
//!
//! `now` is read after governor's own reading and time never goes back, so `full_at` is
//! never earlier than governor's state: a sweep never drops an allowance governor still
//! counts, and the failed-attempt check never lets a blocked client through. It is
//! exactly governor's state when checks do not overlap (and on a manual clock); checks
//! that overlap can put it later by the time between their clock readings.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
};

use governor::{
    InsufficientCapacity, NotUntil, RateLimiter,
    clock::Clock as _,
    middleware::RateLimitingMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed},
};

use super::{Clock, Quota};

/// One caller's governor limiter, and the clock time its allowance is full again.
#[derive(Debug)]
pub(crate) struct Allowance<MW>
where
    MW: RateLimitingMiddleware<Nanos, NegativeOutcome = NotUntil<Nanos>>,
{
    limiter: RateLimiter<NotKeyed, InMemoryState, Clock, MW>,
    /// Clock nanoseconds at which every cell is back; never earlier than governor's state.
    full_at: AtomicU64,
}

/// What one check of an [`Allowance`] found.
#[derive(Debug)]
pub(crate) struct Checked<P> {
    /// governor's answer: the middleware's outcome if admitted, `NotUntil` if refused.
    pub(crate) outcome: Result<P, NotUntil<Nanos>>,
    /// When the allowance is full again, after this check.
    pub(crate) full_at: Nanos,
    /// The clock reading the check was completed at.
    pub(crate) now: Nanos,
}

impl<MW> Allowance<MW>
where
    MW: RateLimitingMiddleware<Nanos, NegativeOutcome = NotUntil<Nanos>>,
{
    /// A full allowance under `quota`.
    pub(crate) fn new(quota: &Quota, clock: &Clock) -> Self {
        Self {
            limiter: RateLimiter::new(quota.governor(), InMemoryState::default(), clock.clone()),
            full_at: AtomicU64::new(0),
        }
    }

    /// Consumes `cost` cells if they fit (governor decides).
    ///
    /// `quota` is the one the allowance was made with.
    ///
    /// # Errors
    ///
    /// governor's `InsufficientCapacity` if `cost` exceeds the quota's burst (the
    /// caller rules that out beforehand, so as to create no state for it).
    pub(crate) fn check_n(
        &self,
        quota: &Quota,
        cost: NonZeroU32,
    ) -> Result<Checked<MW::PositiveOutcome>, InsufficientCapacity> {
        let outcome = self.limiter.check_n(cost)?;
        Ok(self.note(quota, cost, outcome))
    }

    /// Consumes one cell if it fits (governor decides).
    pub(crate) fn check(&self, quota: &Quota) -> Checked<MW::PositiveOutcome> {
        let outcome = self.limiter.check();
        self.note(quota, NonZeroU32::MIN, outcome)
    }

    /// Updates `full_at` after governor's `outcome` for `cost` cells.
    fn note(
        &self,
        quota: &Quota,
        cost: NonZeroU32,
        outcome: Result<MW::PositiveOutcome, NotUntil<Nanos>>,
    ) -> Checked<MW::PositiveOutcome> {
        let now = self.limiter.clock().now();
        let cell = quota.cell_nanos();
        let full_at = match &outcome {
            Ok(_) => {
                let add = cell.saturating_mul(u64::from(cost.get()));
                let step = |full_at: u64| full_at.max(now.as_u64()).saturating_add(add);
                // The closure always answers `Some`, so `fetch_update` cannot fail.
                let previous = self
                    .full_at
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |full_at| {
                        Some(step(full_at))
                    })
                    .unwrap_or_else(|current| current);
                step(previous)
            }
            Err(not_until) => {
                let unused = u64::from(quota.burst().saturating_sub(cost.get()));
                let full_at = not_until
                    .earliest_possible()
                    .as_u64()
                    .saturating_add(cell.saturating_mul(unused));
                self.full_at
                    .fetch_max(full_at, Ordering::AcqRel)
                    .max(full_at)
            }
        };
        Checked {
            outcome,
            full_at: Nanos::new(full_at),
            now,
        }
    }

    /// The clock time at which every cell is back (in the past if it is full).
    pub(crate) fn full_at(&self) -> Nanos {
        Nanos::new(self.full_at.load(Ordering::Acquire))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use governor::middleware::{NoOpMiddleware, StateInformationMiddleware};

    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn nanos(d: Duration) -> Nanos {
        Nanos::from(d)
    }

    #[test]
    fn full_at_follows_admissions_and_refusals_exactly() {
        let clock = Clock::manual();
        let quota = Quota::per_second(nz(10)); // a cell every 100 ms
        let allowance = Allowance::<StateInformationMiddleware>::new(&quota, &clock);
        assert_eq!(allowance.full_at(), Nanos::new(0));

        let first = allowance.check_n(&quota, nz(4)).unwrap();
        let snapshot = first.outcome.unwrap();
        assert_eq!(snapshot.remaining_burst_capacity(), 6);
        assert_eq!(first.full_at, nanos(Duration::from_millis(400)));

        clock.advance(Duration::from_millis(250));
        let second = allowance.check_n(&quota, nz(6)).unwrap();
        assert!(second.outcome.is_ok());
        assert_eq!(second.full_at, nanos(Duration::from_secs(1)));

        // Refused: governor's earliest time plus the cells the request leaves unused.
        let refused = allowance.check_n(&quota, nz(3)).unwrap();
        let not_until = refused.outcome.unwrap_err();
        assert_eq!(
            not_until.earliest_possible(),
            nanos(Duration::from_millis(300))
        );
        assert_eq!(refused.full_at, nanos(Duration::from_secs(1)));
        assert_eq!(allowance.full_at(), refused.full_at);

        // Once full, the next admission counts from now.
        clock.advance(Duration::from_secs(5));
        let later = allowance.check_n(&quota, nz(1)).unwrap();
        assert_eq!(later.full_at, nanos(Duration::from_millis(5250 + 100)));
        assert_eq!(later.now, nanos(Duration::from_millis(5250)));
    }

    #[test]
    fn a_cost_above_the_burst_is_governors_error() {
        let clock = Clock::manual();
        let quota = Quota::per_second(nz(2));
        let allowance = Allowance::<NoOpMiddleware<Nanos>>::new(&quota, &clock);
        assert_eq!(
            allowance.check_n(&quota, nz(3)).unwrap_err(),
            InsufficientCapacity(2)
        );
        assert_eq!(allowance.full_at(), Nanos::new(0));
        let one = allowance.check(&quota);
        assert!(one.outcome.is_ok());
        assert_eq!(one.full_at, nanos(Duration::from_millis(500)));
    }
}
