//! [`TracingSink`]: events as `tracing` events.

use tracing::Level;

use super::{AuditEvent, AuditSink, Outcome, timestamp};

/// An [`AuditSink`] that emits one [`tracing`] event per audit event.
///
/// The target is `keygate::audit` (see [`TracingSink::TARGET`]), so a subscriber can
/// route or filter audit records on their own (`RUST_LOG=keygate::audit=info`). The level
/// is `INFO` for [`Admitted`](Outcome::Admitted) and [`Succeeded`](Outcome::Succeeded),
/// `WARN` for [`Refused`](Outcome::Refused) and [`Failed`](Outcome::Failed). The message
/// is `"audit"`; the event's parts are structured fields named as in [`AuditEvent`]:
/// `timestamp`, `request_id`, `principal_id`, `key_id`, `workspace`, `action`,
/// `outcome`, `reason`, `client_ip`, `user_agent`. Empty parts are left out. Nothing in
/// an event is secret, so nothing secret is logged.
///
/// ```
/// use keygate::audit::{AuditEvent, AuditSink, Outcome, TracingSink};
///
/// let sink = TracingSink::new();
/// sink.record(AuditEvent::new("POST /stitcher/webhook", Outcome::Refused).with_reason("stale_signature"));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink {
    _private: (),
}

impl TracingSink {
    /// The target of every event this sink emits.
    pub const TARGET: &'static str = "keygate::audit";

    /// A sink emitting to the current `tracing` dispatcher.
    #[must_use]
    pub const fn new() -> Self {
        TracingSink { _private: () }
    }
}

/// `tracing` needs the level as a constant, so the event is written once per level.
macro_rules! audit_event {
    ($level:expr, $event:expr, $timestamp:expr) => {{
        let event = $event;
        tracing::event!(
            target: "keygate::audit",
            $level,
            timestamp = $timestamp,
            request_id = event.request_id.as_deref(),
            principal_id = event.principal_id.as_deref(),
            key_id = event.key_id.as_ref().map(|id| id.as_str()),
            workspace = event.workspace.as_deref(),
            action = event.action.as_str(),
            outcome = event.outcome.as_str(),
            reason = event.reason.as_deref(),
            client_ip = event.client_ip.map(tracing::field::display),
            user_agent = event.user_agent.as_deref(),
            "audit"
        )
    }};
}

impl AuditSink for TracingSink {
    fn record(&self, event: AuditEvent) {
        // Field values are evaluated only when a subscriber is interested, so the
        // timestamp is formatted only then.
        let stamp = || timestamp::format(event.timestamp).ok();
        match event.outcome {
            Outcome::Admitted | Outcome::Succeeded => {
                audit_event!(
                    Level::INFO,
                    &event,
                    stamp().as_ref().map(timestamp::Stamp::as_str)
                );
            }
            Outcome::Refused | Outcome::Failed => {
                audit_event!(
                    Level::WARN,
                    &event,
                    stamp().as_ref().map(timestamp::Stamp::as_str)
                );
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
pub(super) mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Collects everything the subscriber writes.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Buffer {
        fn contents(&self) -> String {
            String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
        }
    }

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// What `record` logs, at every level.
    pub(crate) fn capture(record: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buffer.clone())
            .with_ansi(false)
            .with_max_level(Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, record);
        buffer.contents()
    }

    #[test]
    fn refusal_is_a_warning_with_reason_and_key_id() {
        let key_id = "AbCdEf012345".parse().expect("key id");
        let output = capture(|| {
            TracingSink::new().record(
                AuditEvent::new("POST /coordinator/jobs", Outcome::Refused)
                    .with_key_id(key_id)
                    .with_reason("revoked_credentials")
                    .with_client_ip("203.0.113.7".parse().expect("ip")),
            );
        });
        assert!(output.contains("WARN"), "{output}");
        assert!(output.contains("keygate::audit"), "{output}");
        assert!(output.contains("revoked_credentials"), "{output}");
        assert!(output.contains("key_id=\"AbCdEf012345\""), "{output}");
        assert!(output.contains("client_ip=203.0.113.7"), "{output}");
        assert!(output.contains("outcome=\"refused\""), "{output}");
        assert!(
            !output.contains("user_agent"),
            "empty fields are left out: {output}"
        );
    }

    #[test]
    fn success_is_info_with_structured_fields() {
        let output = capture(|| {
            TracingSink::new().record(
                AuditEvent::new("job.create", Outcome::Succeeded)
                    .with_principal_id("coordinator-eu")
                    .with_workspace("render")
                    .with_request_id("req-42"),
            );
        });
        assert!(output.contains(" INFO "), "{output}");
        assert!(output.contains("action=\"job.create\""), "{output}");
        assert!(
            output.contains("principal_id=\"coordinator-eu\""),
            "{output}"
        );
        assert!(output.contains("workspace=\"render\""), "{output}");
        assert!(output.contains("request_id=\"req-42\""), "{output}");
        assert!(output.contains("timestamp=\""), "{output}");
    }

    #[test]
    fn hostile_strings_stay_on_one_line() {
        let output = capture(|| {
            TracingSink::new().record(
                AuditEvent::new("GET /", Outcome::Refused)
                    .with_user_agent("x\nINFO keygate::audit: forged"),
            );
        });
        assert_eq!(output.trim_end().lines().count(), 1, "{output}");
    }
}
