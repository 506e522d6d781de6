//! The wall-clock time the guard gives a registry with each admitted key's use
//! ([`KeyLookup::mark_used`](crate::KeyLookup::mark_used)), read without asking the
//! system for it on every request.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use crate::limit::Clock;

/// How long (nanoseconds) the offset between the monotonic clock and the system's wall
/// clock is used before it is measured again: a step of the system clock (NTP, an
/// operator) shows in last-use times within a minute.
const REANCHOR_EVERY_NANOS: u64 = 60_000_000_000;

/// Wall-clock time as the monotonic [`Clock`] (the CPU's time-stamp counter, as the
/// limiters read it) plus an offset to the system clock, measured again every minute.
///
/// A registry keeps a key's last use to the second, so this is precise enough, and it
/// costs about half of `SystemTime::now()` on the request path (`perf` on the load server:
/// the system call's `clock_gettime` and the conversion were about 70 ns of the last-use
/// note's 130 ns per request). Reading it writes nothing other cores read, except once a
/// minute, when one request measures the offset again.
#[derive(Debug)]
pub(crate) struct LastUseClock {
    clock: Clock,
    /// Nanoseconds from the Unix epoch to the clock's origin, as last measured.
    offset: AtomicU64,
    /// When (in the clock's time, nanoseconds) the offset was last measured.
    anchored_at: AtomicU64,
}

impl LastUseClock {
    pub(crate) fn new(clock: Clock) -> Self {
        let this = Self {
            clock,
            offset: AtomicU64::new(0),
            anchored_at: AtomicU64::new(0),
        };
        this.anchor(this.elapsed_nanos());
        this
    }

    fn elapsed_nanos(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Measures the offset between the system clock and the monotonic one.
    fn anchor(&self, elapsed: u64) {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        self.offset
            .store(wall.saturating_sub(elapsed), Ordering::Relaxed);
        self.anchored_at.store(elapsed, Ordering::Relaxed);
    }

    /// The current wall-clock time.
    pub(crate) fn now(&self) -> SystemTime {
        let elapsed = self.elapsed_nanos();
        if elapsed.saturating_sub(self.anchored_at.load(Ordering::Relaxed)) >= REANCHOR_EVERY_NANOS
        {
            // Requests that get here at once each measure it; any of them is right.
            self.anchor(elapsed);
        }
        let since_epoch = self.offset.load(Ordering::Relaxed).saturating_add(elapsed);
        SystemTime::UNIX_EPOCH + Duration::from_nanos(since_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds_apart(a: SystemTime, b: SystemTime) -> f64 {
        match a.duration_since(b) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => e.duration().as_secs_f64(),
        }
    }

    #[test]
    fn follows_the_system_clock() {
        let clock = LastUseClock::new(Clock::system());
        let apart = seconds_apart(clock.now(), SystemTime::now());
        assert!(apart < 1.0, "{apart} s from the system clock");
    }

    #[test]
    fn moves_with_the_monotonic_clock_and_measures_the_offset_again_every_minute() {
        let monotonic = Clock::manual();
        let clock = LastUseClock::new(monotonic.clone());
        let start = clock.now();
        // Within the minute, the monotonic clock alone moves it (the system clock, which
        // the manual clock does not follow, is not read).
        monotonic.advance(Duration::from_secs(30));
        assert_eq!(
            clock.now().duration_since(start).ok(),
            Some(Duration::from_secs(30))
        );
        // After a minute the system clock is read again: the 60 s the manual clock
        // pretends to have passed are replaced by the real time since the start.
        monotonic.advance(Duration::from_secs(30));
        let now = clock.now();
        let apart = seconds_apart(now, SystemTime::now());
        assert!(
            apart < 1.0,
            "{apart} s from the system clock after re-anchoring"
        );
        monotonic.advance(Duration::from_secs(1));
        assert_eq!(
            clock.now().duration_since(now).ok(),
            Some(Duration::from_secs(1))
        );
    }
}
