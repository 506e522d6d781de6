//! [`AuditSink`]: where audit events go.

use std::fmt;
use std::sync::Arc;

use super::AuditEvent;

/// Where audit events go.
///
/// Implementations must be cheap and must not fail loudly: `record` is called on the
/// request path, for every decision. A sink that can fail (a file, a network) reports
/// its failures itself — a log line, a counter — rather than to the caller.
///
/// Implemented for `Arc<T>`, `Box<T>` and `&'static T` of any sink (including
/// `dyn AuditSink`), and for a pair `(A, B)` of sinks, which records to both.
pub trait AuditSink: Send + Sync + fmt::Debug + 'static {
    /// Records one event. Must not panic; must not block for long (it is called on the
    /// request path).
    fn record(&self, event: AuditEvent);
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Box<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
}

impl<T: AuditSink + ?Sized> AuditSink for &'static T {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
}

impl<A: AuditSink, B: AuditSink> AuditSink for (A, B) {
    fn record(&self, event: AuditEvent) {
        self.0.record(event.clone());
        self.1.record(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{MemorySink, Outcome};

    #[test]
    fn smart_pointers_and_pairs_are_sinks() {
        let a = MemorySink::new();
        let b = MemorySink::new();
        let shared: Arc<dyn AuditSink> = Arc::new((a.clone(), Box::new(b.clone())));
        shared.record(AuditEvent::new("x", Outcome::Admitted));
        assert_eq!(a.len(), 1);
        assert_eq!(b.len(), 1);
    }
}
