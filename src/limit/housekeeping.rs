//! When to sweep a keyed table, so callers never have to.
//!
//! governor leaves housekeeping (`retain_recent`, `shrink_to_fit`) to its caller, and a
//! tower layer has no task of its own to run it. keygate sweeps inline, on the request
//! that happens to be due: after `max(MIN_CHECKS, entries left by the previous sweep)`
//! counted events, the events that may add an entry (every failure the failed-attempt
//! limiter records, every new key of the per-key limiter).
//! A sweep is linear in the table, so this costs O(1) per event amortised, and between
//! sweeps a table holds at most its live entries of the last sweep plus one new entry per
//! event since (about twice its live size, or `MIN_CHECKS` more).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The fewest checks between two scheduled sweeps.
pub(crate) const MIN_CHECKS: u64 = 4096;

/// Counts checks and hands out the right to sweep, to one caller at a time.
#[derive(Debug)]
pub(crate) struct SweepSchedule {
    checks: AtomicU64,
    due_at: AtomicU64,
    running: AtomicBool,
}

impl SweepSchedule {
    pub(crate) const fn new() -> Self {
        Self {
            checks: AtomicU64::new(0),
            due_at: AtomicU64::new(MIN_CHECKS),
            running: AtomicBool::new(false),
        }
    }

    /// Counts one check; `Some` when this caller should sweep now.
    pub(crate) fn tick(&self) -> Option<Sweep<'_>> {
        let checks = self.checks.fetch_add(1, Ordering::Relaxed) + 1;
        if checks < self.due_at.load(Ordering::Relaxed) {
            return None;
        }
        self.begin()
    }

    /// The right to sweep now, unless another caller is sweeping.
    pub(crate) fn begin(&self) -> Option<Sweep<'_>> {
        if self.running.swap(true, Ordering::Acquire) {
            None
        } else {
            Some(Sweep { schedule: self })
        }
    }
}

/// The right to sweep; released when dropped.
#[derive(Debug)]
pub(crate) struct Sweep<'a> {
    schedule: &'a SweepSchedule,
}

impl Sweep<'_> {
    /// Schedules the next sweep, given the entries this one left.
    pub(crate) fn finish(self, entries_left: usize) {
        let schedule = self.schedule;
        let wait = u64::try_from(entries_left)
            .unwrap_or(u64::MAX)
            .max(MIN_CHECKS);
        let now = schedule.checks.load(Ordering::Relaxed);
        schedule
            .due_at
            .store(now.saturating_add(wait), Ordering::Relaxed);
    }
}

impl Drop for Sweep<'_> {
    fn drop(&mut self) {
        self.schedule.running.store(false, Ordering::Release);
    }
}

/// Whether a sweep that went from `before` to `after` entries freed enough to be worth
/// giving memory back (shrinking rehashes the whole table).
pub(crate) const fn worth_shrinking(before: usize, after: usize) -> bool {
    before > 0 && after <= before / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_after_min_checks_then_after_the_live_size() {
        let schedule = SweepSchedule::new();
        let due = (1..=MIN_CHECKS * 4).find(|_| schedule.tick().is_some());
        assert_eq!(due, Some(MIN_CHECKS));
        // A sweep that leaves 10_000 entries waits 10_000 checks for the next one.
        if let Some(sweep) = schedule.begin() {
            sweep.finish(10_000);
        }
        let due = (1..=100_000).find(|_| schedule.tick().is_some());
        assert_eq!(due, Some(10_000));
    }

    #[test]
    fn only_one_sweep_at_a_time() {
        let schedule = SweepSchedule::new();
        let first = schedule.begin();
        assert!(first.is_some());
        assert!(schedule.begin().is_none());
        drop(first);
        assert!(schedule.begin().is_some());
    }
}
