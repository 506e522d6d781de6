//! [`MemorySink`]: events kept in memory.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{AuditEvent, AuditSink};

/// An [`AuditSink`] that keeps every event in memory, in the order recorded.
///
/// Clones share the same list, so a test can hand one clone to the guard and read the
/// events from another. It grows without bound: use it for tests and short-lived tools,
/// not for a long-running server.
///
/// ```
/// use keygate::audit::{AuditEvent, AuditSink, MemorySink, Outcome};
///
/// let sink = MemorySink::new();
/// let handle = sink.clone();
/// sink.record(AuditEvent::new("GET /coordinator/jobs/7", Outcome::Admitted));
/// assert_eq!(handle.len(), 1);
/// handle.clear();
/// assert!(sink.is_empty());
/// ```
#[derive(Clone, Default)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<AuditEvent>>>,
}

impl MemorySink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events recorded so far, oldest first.
    #[must_use]
    pub fn events(&self) -> Vec<AuditEvent> {
        self.lock().clone()
    }

    /// Removes and returns the events recorded so far, oldest first.
    #[must_use = "`clear` empties the sink without returning the events"]
    pub fn take(&self) -> Vec<AuditEvent> {
        std::mem::take(&mut *self.lock())
    }

    /// How many events are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// `true` if no event is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets every event held.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The list, even if a thread panicked while holding it: pushing an event cannot
    /// leave it half-updated.
    fn lock(&self) -> MutexGuard<'_, Vec<AuditEvent>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AuditSink for MemorySink {
    fn record(&self, event: AuditEvent) {
        self.lock().push(event);
    }
}

impl fmt::Debug for MemorySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemorySink")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use crate::audit::Outcome;

    #[test]
    fn clones_share_events_in_order() {
        let sink = MemorySink::new();
        let other = sink.clone();
        sink.record(AuditEvent::new("first", Outcome::Admitted));
        other.record(AuditEvent::new("second", Outcome::Refused));

        let actions: Vec<_> = sink.events().into_iter().map(|e| e.action).collect();
        assert_eq!(actions, ["first", "second"]);
        assert_eq!(other.len(), 2);
        assert!(!other.is_empty());
    }

    #[test]
    fn take_and_clear_empty_the_sink() {
        let sink = MemorySink::new();
        sink.record(AuditEvent::new("a", Outcome::Succeeded));
        assert_eq!(sink.take().len(), 1);
        assert!(sink.is_empty());

        sink.record(AuditEvent::new("b", Outcome::Failed));
        sink.clear();
        assert_eq!(sink.len(), 0);
    }

    #[test]
    fn debug_shows_the_count_not_the_events() {
        let sink = MemorySink::new();
        sink.record(AuditEvent::new("a", Outcome::Succeeded).with_user_agent("agent"));
        assert_eq!(format!("{sink:?}"), "MemorySink { len: 1 }");
    }

    #[test]
    fn keeps_working_after_a_panic_while_locked() {
        let sink = MemorySink::new();
        let poisoner = sink.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.events.lock();
            panic!("poison the lock");
        })
        .join();
        sink.record(AuditEvent::new("after", Outcome::Admitted));
        assert_eq!(sink.len(), 1);
    }
}
