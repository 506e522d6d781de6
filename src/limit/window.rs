//! One caller's strict sliding window: the log of its admissions within the last window.
//!
//! An admission at clock time `t` holds its slots during `[t, t + window)`; a request
//! of cost `c` at `now` is admitted only if the slots held at `now` plus `c` are at most
//! the limit. So no half-open interval of length `window` ever holds more than `limit`
//! admitted slots, whatever the traffic.
//!
//! The log is a ring of `(time, slots)` entries, oldest first: one entry per admitted
//! request (several slots for a cost above one), so at most `limit` entries, and
//! entries leave as soon as their window has passed. A mutex per key makes concurrent
//! checks exact; it is held for the few operations of one check.

use std::{
    collections::VecDeque,
    num::NonZeroU32,
    sync::{Mutex, PoisonError},
};

/// The admissions of one key within the last window.
#[derive(Debug, Default)]
pub(crate) struct WindowLog {
    inner: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    /// `(clock nanoseconds, slots)` of each admission still in the window, oldest first.
    entries: VecDeque<(u64, u32)>,
    /// The sum of the entries' slots.
    held: u32,
}

/// What one check of a [`WindowLog`] found; times in nanoseconds from `now`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WindowChecked {
    /// Whether the request was admitted (and recorded).
    pub(crate) allowed: bool,
    /// The slots still free after this check.
    pub(crate) remaining: u32,
    /// The time until the oldest admission leaves the window (0 if none is in it).
    pub(crate) next_free: u64,
    /// Refused: the time until enough slots are free for the request.
    pub(crate) retry_after: u64,
}

impl Log {
    /// Drops the entries whose window has passed at `now`.
    fn expire(&mut self, now: u64, window: u64) {
        while let Some(&(at, slots)) = self.entries.front() {
            if at.saturating_add(window) > now {
                break;
            }
            self.entries.pop_front();
            self.held -= slots;
        }
    }

    /// The time, from `now`, at which the entry at `index` leaves the window.
    fn leaves(&self, index: usize, now: u64, window: u64) -> u64 {
        self.entries
            .get(index)
            .map_or(0, |&(at, _)| at.saturating_add(window).saturating_sub(now))
    }
}

impl WindowLog {
    /// Admits `cost` slots at clock time `now` if at most `limit` would then be held in
    /// the window of `window` nanoseconds ending at `now`. `cost` is at most `limit`
    /// (the caller rules it out beforehand).
    pub(crate) fn check(
        &self,
        now: u64,
        window: u64,
        limit: u32,
        cost: NonZeroU32,
    ) -> WindowChecked {
        let mut log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.expire(now, window);
        let cost = cost.get();
        if log.held.saturating_add(cost) <= limit {
            // A clock that answers the same time twice merges the entries, which keeps
            // the log at most `limit` entries long whatever the clock does.
            match log.entries.back_mut() {
                Some((at, slots)) if *at >= now => *slots += cost,
                _ => log.entries.push_back((now, cost)),
            }
            log.held += cost;
            return WindowChecked {
                allowed: true,
                remaining: limit - log.held,
                next_free: log.leaves(0, now, window),
                retry_after: 0,
            };
        }
        // The oldest entries must leave until `cost` slots are free.
        let mut missing = log.held.saturating_add(cost) - limit;
        let mut index = 0;
        for &(_, slots) in &log.entries {
            if slots >= missing {
                break;
            }
            missing -= slots;
            index += 1;
        }
        WindowChecked {
            allowed: false,
            remaining: limit.saturating_sub(log.held),
            next_free: log.leaves(0, now, window),
            retry_after: log.leaves(index, now, window),
        }
    }

    /// Whether any admission is still in the window at `now` (else the key can go).
    pub(crate) fn busy(&self, now: u64, window: u64) -> bool {
        let log = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        log.entries
            .back()
            .is_some_and(|&(at, _)| at.saturating_add(window) > now)
    }

    /// The number of entries held (tests: memory stays bounded).
    #[cfg(test)]
    fn entries(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn admits_at_most_limit_in_any_window() {
        let log = WindowLog::default();
        // 3 per 10 s: at 0, 1, 2 admitted; at 3 refused until 0 leaves (at 10).
        for (i, t) in [0, 1, 2].into_iter().enumerate() {
            let checked = log.check(t * SEC, 10 * SEC, 3, nz(1));
            assert!(checked.allowed);
            assert_eq!(checked.remaining, 2 - u32::try_from(i).unwrap());
            assert_eq!(checked.next_free, 10 * SEC - t * SEC);
        }
        let refused = log.check(3 * SEC, 10 * SEC, 3, nz(1));
        assert_eq!(
            refused,
            WindowChecked {
                allowed: false,
                remaining: 0,
                next_free: 7 * SEC,
                retry_after: 7 * SEC,
            }
        );
        // Just before the oldest leaves: still refused; at that moment: admitted.
        assert!(!log.check(10 * SEC - 1, 10 * SEC, 3, nz(1)).allowed);
        let admitted = log.check(10 * SEC, 10 * SEC, 3, nz(1));
        assert!(admitted.allowed);
        assert_eq!((admitted.remaining, admitted.next_free), (0, SEC));
    }

    #[test]
    fn a_cost_waits_for_enough_of_the_oldest_to_leave() {
        let log = WindowLog::default();
        assert!(log.check(0, 10 * SEC, 5, nz(2)).allowed);
        assert!(log.check(SEC, 10 * SEC, 5, nz(1)).allowed);
        assert!(log.check(2 * SEC, 10 * SEC, 5, nz(1)).allowed);
        // 4 held, 1 free: a cost of 3 needs 2 more, which the first entry frees at 10 s.
        let refused = log.check(3 * SEC, 10 * SEC, 5, nz(3));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 1);
        assert_eq!(refused.retry_after, 7 * SEC);
        // A cost of 5 needs all 4 back: the last leaves at 12 s.
        assert_eq!(log.check(3 * SEC, 10 * SEC, 5, nz(5)).retry_after, 9 * SEC);
        // A cost of 1 fits now.
        assert!(log.check(3 * SEC, 10 * SEC, 5, nz(1)).allowed);
    }

    #[test]
    fn memory_is_bounded_by_the_limit_and_freed_after_the_window() {
        let log = WindowLog::default();
        for t in 0..1000 {
            log.check(t, 1_000_000, 10, nz(1));
        }
        assert_eq!(log.entries(), 10);
        // The same instant twice takes one entry.
        let same = WindowLog::default();
        same.check(5, 100, 10, nz(1));
        same.check(5, 100, 10, nz(2));
        assert_eq!(same.entries(), 1);
        assert!(same.busy(104, 100));
        assert!(!same.busy(105, 100));
        assert!(same.check(105, 100, 10, nz(10)).allowed);
    }
}
