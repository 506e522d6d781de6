//! [`AggregatingSink`]: refusals of unauthenticated callers, one record per client and
//! reason per interval, so that a flood of bad requests cannot fill the disk.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak},
    thread,
    time::{Duration, Instant},
};

use super::{AuditEvent, AuditSink, Outcome};
use crate::limit::ClientKey;

/// The default interval over which refusals are counted: 10 seconds.
pub const DEFAULT_AGGREGATION_INTERVAL: Duration = Duration::from_secs(10);

/// The default number of (client, reason) pairs counted at once: 10,000.
pub const DEFAULT_AGGREGATION_CAPACITY: usize = 10_000;

/// An [`AuditSink`] in front of another that aggregates the refusals of unauthenticated
/// callers (outcome `refused`, no principal: missing, malformed or unknown credentials,
/// too many failed attempts).
///
/// For each client (its IPv4 address or IPv6 /64, as the failed-attempt limiter counts
/// it) and reason, the first refusal of an interval is recorded at once; the ones after
/// it in the same interval are counted, and when the interval ends the last of them is
/// recorded with [`count`](AuditEvent::count) set to how many there were. A flood thus
/// writes at most two records per client and reason per interval, however fast it comes.
/// Every other event (admitted requests, refusals of authenticated callers, handlers'
/// actions) goes to the inner sink as it is, one record each.
///
/// Memory is bounded: at most `capacity` (client, reason) pairs are counted at once;
/// beyond that, refusals are counted per reason alone (the record's `client_ip` is then
/// `null`). Each pair holds one event (its path and user agent are capped at 256 bytes by
/// the guard), so the default capacity of 10,000 holds a few MiB at most.
///
/// A background thread records the counts of intervals that have ended (within one
/// interval of their end); dropping the sink records the rest. A process that crashes
/// loses the counts of the last interval, never a first refusal.
///
/// ```
/// use std::time::Duration;
///
/// use keygate::audit::{AggregatingSink, AuditEvent, AuditSink, MemorySink, Outcome};
///
/// let memory = MemorySink::new();
/// let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_secs(60));
/// let refusal = || {
///     AuditEvent::new("GET /jobs", Outcome::Refused)
///         .with_reason("invalid_credentials")
///         .with_client_ip("203.0.113.7".parse().unwrap())
/// };
/// for _ in 0..1_000 {
///     sink.record(refusal());
/// }
/// assert_eq!(memory.len(), 1); // the first, at once
/// sink.flush();
/// let events = memory.events();
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[1].count, 999); // the others, in one record
/// ```
pub struct AggregatingSink<S: AuditSink> {
    shared: Arc<Shared<S>>,
    /// Starts the background thread at the first record, once the settings are final.
    started: Once,
}

struct Shared<S: AuditSink> {
    inner: S,
    interval: Duration,
    capacity: usize,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
}

/// What refusals are counted by. `client: None` is the overflow of one reason.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BucketKey {
    client: Option<ClientKey>,
    reason: Option<String>,
}

/// The refusals of one key in the current interval, after the first.
struct Bucket {
    opened: Instant,
    /// How many came after the first, and the last of them.
    repeats: u64,
    last: Option<AuditEvent>,
}

impl<S: AuditSink> AggregatingSink<S> {
    /// Aggregates in front of `inner`, over [`DEFAULT_AGGREGATION_INTERVAL`] and for at
    /// most [`DEFAULT_AGGREGATION_CAPACITY`] clients and reasons at once.
    #[must_use]
    pub fn new(inner: S) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner,
                interval: DEFAULT_AGGREGATION_INTERVAL,
                capacity: DEFAULT_AGGREGATION_CAPACITY,
                buckets: Mutex::new(HashMap::new()),
            }),
            started: Once::new(),
        }
    }

    /// The interval over which refusals are counted (at least 1 ms).
    ///
    /// A setting, made before the sink records anything: once it has recorded a refusal
    /// (its background thread runs), the sink keeps the value it started with, and logs a
    /// warning.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.interval = interval.max(Duration::from_millis(1)),
            None => ignored("interval"),
        }
        self
    }

    /// How many (client, reason) pairs are counted at once (at least 1).
    ///
    /// A setting, made before the sink records anything: once it has recorded a refusal
    /// (its background thread runs), the sink keeps the value it started with, and logs a
    /// warning.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.capacity = capacity.max(1),
            None => ignored("capacity"),
        }
        self
    }

    /// The inner sink.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.shared.inner
    }

    /// Records the counts of every interval now, ended or not, then flushes the inner
    /// sink (see [`AuditSink::flush`]): for shutdown and tests.
    pub fn flush(&self) {
        self.shared.flush(|_| true);
        self.shared.inner.flush();
    }

    /// Starts the thread that records the counts of ended intervals. Without it (the OS
    /// refused a thread) counts are still recorded, when the next refusal of the same
    /// client and reason comes, or when the sink is dropped.
    fn start(&self) {
        let weak = Arc::downgrade(&self.shared);
        let interval = self.shared.interval;
        let spawned = thread::Builder::new()
            .name("keygate-audit-aggregate".to_owned())
            .spawn(move || flush_periodically(&weak, interval));
        if let Err(error) = spawned {
            tracing::error!(
                target: "keygate::audit",
                %error,
                "cannot start the audit aggregation thread; counts are recorded late",
            );
        }
    }
}

impl<S: AuditSink> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, HashMap<BucketKey, Bucket>> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the counts of the buckets `ended` picks, and forgets those buckets.
    fn flush(&self, ended: impl Fn(&Bucket) -> bool) {
        let mut due = Vec::new();
        self.lock().retain(|_, bucket| {
            if !ended(bucket) {
                return true;
            }
            if let Some(mut last) = bucket.last.take() {
                last.count = bucket.repeats;
                due.push(last);
            }
            false
        });
        due.sort_by_key(|event| event.timestamp);
        for event in due {
            self.inner.record(event);
        }
    }
}

/// Says that a setting came after the sink started, and was not taken.
fn ignored(setting: &str) {
    tracing::warn!(
        target: "keygate::audit",
        setting,
        "AggregatingSink: a setting made after the sink started recording is ignored",
    );
}

/// Wakes every `interval` and records the counts of the intervals that ended, until the
/// sink is gone.
fn flush_periodically<S: AuditSink>(shared: &Weak<Shared<S>>, interval: Duration) {
    loop {
        thread::sleep(interval);
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        shared.flush(|bucket| now.duration_since(bucket.opened) >= interval);
    }
}

impl<S: AuditSink> AuditSink for AggregatingSink<S> {
    fn record(&self, event: AuditEvent) {
        if event.outcome != Outcome::Refused || event.principal_id.is_some() {
            self.shared.inner.record(event);
            return;
        }
        self.started.call_once(|| self.start());
        let now = Instant::now();
        let shared = &*self.shared;
        let mut key = BucketKey {
            client: event.client_ip.map(ClientKey::from),
            reason: event.reason.clone(),
        };
        let mut buckets = shared.lock();
        if !buckets.contains_key(&key) && buckets.len() >= shared.capacity {
            // Full: counted per reason alone (a handful of buckets more at most).
            key.client = None;
        }
        if let Some(bucket) = buckets.get_mut(&key)
            && now.duration_since(bucket.opened) < shared.interval
        {
            bucket.repeats += 1;
            bucket.last = Some(event);
            return;
        }
        // The first of a new interval: recorded at once, after the count of the last.
        let fresh = Bucket {
            opened: now,
            repeats: 0,
            last: None,
        };
        let ended = buckets.insert(key, fresh).and_then(|bucket| {
            let mut last = bucket.last?;
            last.count = bucket.repeats;
            Some(last)
        });
        drop(buckets);
        if let Some(ended) = ended {
            shared.inner.record(ended);
        }
        shared.inner.record(event);
    }

    fn healthy(&self) -> bool {
        self.shared.inner.healthy()
    }

    /// See [`AggregatingSink::flush`].
    fn flush(&self) {
        AggregatingSink::flush(self);
    }
}

impl<S: AuditSink> Drop for Shared<S> {
    fn drop(&mut self) {
        self.flush(|_| true);
    }
}

impl<S: AuditSink> fmt::Debug for AggregatingSink<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatingSink")
            .field("inner", &self.shared.inner)
            .field("interval", &self.shared.interval)
            .field("capacity", &self.shared.capacity)
            .field("counting", &self.shared.lock().len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::audit::MemorySink;

    fn refusal(client: &str, reason: &str) -> AuditEvent {
        AuditEvent::new("GET /jobs", Outcome::Refused)
            .with_reason(reason)
            .with_client_ip(client.parse::<IpAddr>().unwrap())
    }

    /// (client, reason, count) of each record.
    fn summary(memory: &MemorySink) -> Vec<(Option<IpAddr>, Option<String>, u64)> {
        memory
            .events()
            .into_iter()
            .map(|e| (e.client_ip, e.reason, e.count))
            .collect()
    }

    #[test]
    fn a_flood_from_one_client_is_one_record_and_one_count() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_secs(3600));
        for _ in 0..1_000 {
            sink.record(refusal("203.0.113.7", "invalid_credentials"));
        }
        assert_eq!(memory.len(), 1);
        assert_eq!(memory.events()[0].count, 1);
        sink.flush();
        let ip = Some("203.0.113.7".parse().unwrap());
        let reason = Some("invalid_credentials".to_owned());
        assert_eq!(
            summary(&memory),
            [(ip, reason.clone(), 1), (ip, reason, 999)]
        );
        // The count is serialized; a plain record's is not.
        let json = serde_json::to_string(&memory.events()[1]).unwrap();
        assert!(json.ends_with(r#","count":999}"#), "{json}");
        assert!(
            !serde_json::to_string(&memory.events()[0])
                .unwrap()
                .contains("count")
        );
    }

    #[test]
    fn a_setting_after_the_sink_started_is_not_taken() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone())
            .interval(Duration::from_secs(3600))
            .capacity(5);
        sink.record(refusal("203.0.113.7", "invalid_credentials"));
        let mut late = None;
        let logged = crate::audit::tracing_sink::tests::capture(|| {
            late = Some(sink.interval(Duration::from_millis(1)).capacity(1));
        });
        assert!(
            logged.contains("WARN") && logged.contains("setting=\"interval\""),
            "{logged}"
        );
        assert!(logged.contains("setting=\"capacity\""), "{logged}");
        let sink = late.unwrap();
        let shown = format!("{sink:?}");
        assert!(
            shown.contains("interval: 3600s") && shown.contains("capacity: 5"),
            "{shown}"
        );
        // Still counted over the hour it started with.
        std::thread::sleep(Duration::from_millis(20));
        sink.record(refusal("203.0.113.7", "invalid_credentials"));
        assert_eq!(memory.len(), 1);
    }

    #[test]
    fn clients_and_reasons_are_counted_apart_and_ipv6_by_64() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_secs(3600));
        for _ in 0..3 {
            sink.record(refusal("203.0.113.7", "invalid_credentials"));
            sink.record(refusal("203.0.113.7", "missing_credentials"));
            sink.record(refusal("203.0.113.8", "invalid_credentials"));
            // Hopping addresses within one /64 is one client.
            sink.record(refusal(
                &format!("2001:db8::{:x}", fastrand::u16(..)),
                "invalid_credentials",
            ));
        }
        assert_eq!(memory.len(), 4);
        sink.flush();
        let counts: Vec<u64> = summary(&memory).iter().map(|s| s.2).collect();
        assert_eq!(counts, [1, 1, 1, 1, 2, 2, 2, 2]);
    }

    #[test]
    fn admissions_actions_and_authenticated_refusals_are_never_aggregated() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_secs(3600));
        for _ in 0..5 {
            sink.record(AuditEvent::new("GET /jobs", Outcome::Admitted).with_principal_id("c"));
            sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
            sink.record(refusal("203.0.113.7", "rate_limited").with_principal_id("c"));
        }
        assert_eq!(memory.len(), 15);
        assert!(memory.events().iter().all(|e| e.count == 1));
    }

    #[test]
    fn beyond_capacity_refusals_are_counted_per_reason() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone())
            .interval(Duration::from_secs(3600))
            .capacity(2);
        for round in 0..10 {
            for client in 1..=50 {
                sink.record(refusal(
                    &format!("198.51.100.{client}"),
                    "invalid_credentials",
                ));
            }
            // Two buckets of clients and one overflow bucket for the reason.
            assert_eq!(sink.shared.lock().len(), 3, "round {round}");
        }
        // Two clients' first records, and the overflow's first.
        assert_eq!(memory.len(), 3);
        sink.flush();
        let counts: u64 = memory.events().iter().map(|e| e.count).sum();
        assert_eq!(counts, 500, "nothing lost, only counted");
        assert_eq!(memory.len(), 6);
    }

    #[test]
    fn a_new_interval_records_the_last_count_then_its_first() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_millis(1));
        sink.record(refusal("203.0.113.7", "invalid_credentials"));
        sink.record(refusal("203.0.113.7", "invalid_credentials"));
        thread::sleep(Duration::from_millis(5));
        sink.record(refusal("203.0.113.7", "invalid_credentials"));
        let counts: Vec<u64> = summary(&memory).iter().map(|s| s.2).collect();
        // The first, the count of the one after it (by the next record or the thread),
        // and the first of the new interval.
        assert_eq!(counts.iter().sum::<u64>(), 3, "{counts:?}");
        assert_eq!(counts.len(), 3, "{counts:?}");
    }

    #[test]
    fn the_thread_records_ended_intervals_and_drop_records_the_rest() {
        let memory = MemorySink::new();
        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_millis(20));
        for _ in 0..10 {
            sink.record(refusal("203.0.113.7", "invalid_credentials"));
        }
        // Functional, not a timing: the count arrives however slow the machine is.
        let deadline = Instant::now() + Duration::from_secs(30);
        while memory.len() < 2 {
            assert!(Instant::now() < deadline, "the count was never recorded");
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(memory.events()[1].count, 9);

        let sink = AggregatingSink::new(memory.clone()).interval(Duration::from_secs(3600));
        for _ in 0..4 {
            sink.record(refusal("203.0.113.9", "missing_credentials"));
        }
        drop(sink);
        assert_eq!(memory.events().last().map(|e| e.count), Some(3));
    }
}
