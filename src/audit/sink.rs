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

    /// Whether events are being written: `false` while the last attempt to write one
    /// failed. The guard reads it after recording a decision, to apply its
    /// [`AuditFailure`](crate::guard::AuditFailure) policy. The default is `true`, for
    /// sinks that cannot fail.
    fn healthy(&self) -> bool {
        true
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Box<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
}

impl<T: AuditSink + ?Sized> AuditSink for &'static T {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
}

impl<A: AuditSink, B: AuditSink> AuditSink for (A, B) {
    fn record(&self, event: AuditEvent) {
        self.0.record(event.clone());
        self.1.record(event);
    }
    fn healthy(&self) -> bool {
        self.0.healthy() && self.1.healthy()
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
