//! The time source of every limiter in this module.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use governor::{
    clock::{Clock as _, QuantaClock, QuantaInstant, Reference as _},
    nanos::Nanos,
};

/// The latest time a [`Clock`] reports, in nanoseconds since its origin (about 146 years).
///
/// Keeping time well below `u64::MAX` nanoseconds leaves governor's arithmetic
/// (theoretical arrival time plus a full burst) room to never overflow.
pub(crate) const MAX_NANOS: u64 = 1 << 62;

/// A monotonic time source for the limiters of this module, shared by clones.
///
/// It implements [`governor::clock::Clock`] with [`Nanos`] (nanoseconds since the
/// clock's origin) as its instant, so it plugs straight into governor.
///
/// - [`Clock::system`] (the [`Default`]) follows real time. It reads the CPU's
///   time-stamp counter through [`quanta`](https://docs.rs/quanta), as governor's own
///   default clock does: a few nanoseconds per reading, no system call.
/// - [`Clock::manual`] stands still until [`Clock::advance`] moves it, so tests of
///   replenishment and expiry run without sleeping. Clones share the same time, like
///   governor's `FakeRelativeClock`.
///
/// ```
/// use std::time::Duration;
/// use keygate::limit::Clock;
///
/// let clock = Clock::manual();
/// let same = clock.clone();
/// assert_eq!(clock.elapsed(), Duration::ZERO);
/// same.advance(Duration::from_secs(90));
/// assert_eq!(clock.elapsed(), Duration::from_secs(90));
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    /// Shared, so that a clone is one pointer: every per-key governor limiter holds one.
    source: Arc<Source>,
}

#[derive(Debug)]
enum Source {
    System {
        clock: QuantaClock,
        origin: QuantaInstant,
    },
    Manual(AtomicU64),
}

impl Clock {
    /// A clock that follows real, monotonic time; its origin is the moment it was created.
    #[must_use]
    pub fn system() -> Self {
        let clock = QuantaClock::default();
        let origin = clock.now();
        Self {
            source: Arc::new(Source::System { clock, origin }),
        }
    }

    /// A clock that starts at zero and moves only when [`advance`](Self::advance) is called.
    #[must_use]
    pub fn manual() -> Self {
        Self {
            source: Arc::new(Source::Manual(AtomicU64::new(0))),
        }
    }

    /// Moves a [manual](Self::manual) clock, and every clone of it, forward by `by`.
    ///
    /// Time saturates at about 146 years. A [system](Self::system) clock follows real
    /// time and ignores this call.
    pub fn advance(&self, by: Duration) {
        if let Source::Manual(now) = &*self.source {
            let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
            // `fetch_update` with a closure that always returns `Some` cannot fail.
            let _ = now.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(current.saturating_add(by).min(MAX_NANOS))
            });
        }
    }

    /// Whether this clock moves only with [`advance`](Self::advance).
    #[must_use]
    pub fn is_manual(&self) -> bool {
        matches!(*self.source, Source::Manual(_))
    }

    /// The time since this clock's origin.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now().into()
    }
}

impl Default for Clock {
    /// [`Clock::system`].
    fn default() -> Self {
        Self::system()
    }
}

impl governor::clock::Clock for Clock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match &*self.source {
            Source::System { clock, origin } => clock.now().duration_since(*origin),
            Source::Manual(now) => Nanos::new(now.load(Ordering::Acquire)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_between_clones_and_only_moves_when_advanced() {
        let clock = Clock::manual();
        let clone = clock.clone();
        assert!(clock.is_manual());
        assert_eq!(clock.now(), Nanos::new(0));
        clone.advance(Duration::from_millis(1500));
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        assert_eq!(clone.elapsed(), Duration::from_millis(1500));
    }

    #[test]
    fn manual_clock_saturates_instead_of_overflowing() {
        let clock = Clock::manual();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), Nanos::new(MAX_NANOS));
    }

    #[test]
    fn system_clock_is_monotonic_and_ignores_advance() {
        let clock = Clock::default();
        assert!(!clock.is_manual());
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now();
        assert!(after >= before);
        assert!(after.duration_since(before) < Nanos::from(Duration::from_secs(3600)));
    }
}
