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
/// `dyn AuditSink`), and for a pair `(A, B)` of sinks, which records to (and flushes)
/// both.
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

    /// Writes out what was recorded so far, and returns once it is written: for a
    /// graceful shutdown, and for tests that read what a sink wrote. A sink that writes
    /// from a queue ([`BackgroundSink`](super::BackgroundSink)) drains it; a signed
    /// [`JsonLinesSink`](super::JsonLinesSink) also writes a checkpoint. It may block, so
    /// call it when the server stops, not per request. The default does nothing, for sinks
    /// that write each event before `record` returns.
    ///
    /// ```
    /// use std::sync::Arc;
    ///
    /// use keygate::audit::{AuditEvent, AuditSink, Background, JsonLinesSink, Outcome, verify_file};
    ///
    /// # let dir = std::env::temp_dir().join(format!("keygate-flush-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("audit.jsonl");
    /// let sink: Arc<dyn AuditSink> =
    ///     Arc::new(JsonLinesSink::open(&path)?.background(Background::default())?);
    /// sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
    /// sink.flush(); // at graceful stop
    /// assert_eq!(verify_file(&path)?.lines, 1);
    /// # drop(sink);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn flush(&self) {}
}

impl<T: AuditSink + ?Sized> AuditSink for Arc<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
    fn flush(&self) {
        (**self).flush();
    }
}

impl<T: AuditSink + ?Sized> AuditSink for Box<T> {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
    fn flush(&self) {
        (**self).flush();
    }
}

impl<T: AuditSink + ?Sized> AuditSink for &'static T {
    fn record(&self, event: AuditEvent) {
        (**self).record(event);
    }
    fn healthy(&self) -> bool {
        (**self).healthy()
    }
    fn flush(&self) {
        (**self).flush();
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
    fn flush(&self) {
        self.0.flush();
        self.1.flush();
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
