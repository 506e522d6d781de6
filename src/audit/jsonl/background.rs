//! [`BackgroundSink`]: a [`JsonLinesSink`] written by a thread of its own, in batches,
//! from a bounded [`Queue`], so that recording costs the request thread a push on a queue.

use std::collections::VecDeque;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::JsonLinesSink;
use super::queue::{Message, Queue, Refused, Taken};
use super::writer::{Batch, Report};
use crate::audit::{AuditError, AuditEvent, AuditSink};

/// The most events one batch holds: the writer takes what is queued up to this many (or
/// [`MAX_BATCH_BYTES`]) and writes them with one `write`.
pub const MAX_BATCH_RECORDS: usize = 512;

/// The most bytes one batch holds, give or take one line: 256 KiB.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// How often an idle writer wakes up (without [`Durability::SyncEvery`]), to report the
/// sink healthy again once a queue that was full has drained.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// When the records written are made durable (survive a power loss), beyond being in
/// the operating system's hands.
///
/// Whatever the policy, each batch is written to the file with one `write` before the
/// writer takes the next: a record in a written batch survives the process crashing. A
/// crash loses at most the records still queued (those of the last
/// [`linger`](Background::linger), or more when the writer is behind) and the batch being
/// written (at most [`MAX_BATCH_RECORDS`] plus the queue's capacity); the chain in the
/// file stays valid
/// (a partial last line makes [`JsonLinesSink::open`] refuse to continue it, so that it
/// is looked at), and signed checkpoints show the records after the last checkpoint as
/// [`unsigned_tail`](super::ChainSummary::unsigned_tail).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Each batch is written to the OS (the default): it survives the process crashing,
    /// and a power loss once the OS has written it out (within seconds, usually).
    #[default]
    Flush,
    /// Each batch is also synced to the disk (`fsync`) before the next is taken: nothing
    /// written is lost in a power loss, at the cost of a disk flush per batch
    /// (milliseconds on many disks; the queue absorbs them, batches grow meanwhile).
    SyncEachBatch,
    /// The file is synced at most once per interval, when a batch was written since the
    /// last sync (also when no further record comes): a power loss loses at most about
    /// that interval's records.
    SyncEvery(Duration),
}

/// What [`record`](AuditSink::record) does when the queue is full (the writer cannot keep
/// up, or the disk stalls).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenFull {
    /// The recording thread waits until there is room (the default): nothing is lost,
    /// and a disk that cannot keep up slows requests down rather than losing their audit
    /// records. An audit trail with holes is worth little, hence this default; a full
    /// queue is also rare, since the writer takes up to [`MAX_BATCH_RECORDS`] at a time.
    #[default]
    Wait,
    /// The record is dropped and counted ([`BackgroundSink::dropped`]), and logged with
    /// `tracing::error!` (target `keygate::audit`; the first at once, then at most one
    /// line every 10 seconds with the number dropped meanwhile): requests never wait.
    Drop,
    /// Like [`Drop`](Self::Drop), and the sink reports itself not
    /// [`healthy`](AuditSink::healthy) until the writer has emptied the queue, so that a
    /// guard built with [`AuditFailure::Refuse`](crate::guard::AuditFailure::Refuse)
    /// answers `503 auth_unavailable` meanwhile instead of admitting what it cannot
    /// record.
    Refuse,
}

/// How a [`BackgroundSink`] queues and writes: the queue's capacity, what happens when
/// it is full, and the durability policy. See [`JsonLinesSink::background`].
///
/// ```
/// use std::time::Duration;
///
/// use keygate::audit::{Background, Durability, WhenFull};
///
/// let background = Background::default()
///     .capacity(10_000)
///     .when_full(WhenFull::Refuse)
///     .durability(Durability::SyncEvery(Duration::from_secs(1)));
/// assert_eq!(background.get_capacity(), 10_000);
/// assert_eq!(Background::default().get_when_full(), WhenFull::Wait);
/// assert_eq!(Background::default().get_durability(), Durability::Flush);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Background {
    capacity: NonZeroUsize,
    when_full: WhenFull,
    durability: Durability,
    linger: Duration,
}

impl Background {
    /// The default capacity of the queue: 4,096 records.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// The default [`linger`](Self::linger): 1 ms.
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);

    /// The defaults: a queue of [`DEFAULT_CAPACITY`](Self::DEFAULT_CAPACITY) records,
    /// [`WhenFull::Wait`], [`Durability::Flush`], a linger of
    /// [`DEFAULT_LINGER`](Self::DEFAULT_LINGER).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            capacity: match NonZeroUsize::new(Self::DEFAULT_CAPACITY) {
                Some(capacity) => capacity,
                None => NonZeroUsize::MIN,
            },
            when_full: WhenFull::Wait,
            durability: Durability::Flush,
            linger: Self::DEFAULT_LINGER,
        }
    }

    /// How many records the queue holds (at least 1); flushes are not counted. A queued
    /// record takes the size of an [`AuditEvent`] (about 250 bytes) and its strings.
    #[must_use]
    pub const fn capacity(mut self, records: usize) -> Self {
        self.capacity = match NonZeroUsize::new(records) {
            Some(capacity) => capacity,
            None => NonZeroUsize::MIN,
        };
        self
    }

    /// What happens to a record when the queue is full.
    #[must_use]
    pub const fn when_full(mut self, policy: WhenFull) -> Self {
        self.when_full = policy;
        self
    }

    /// When written batches are synced to the disk.
    #[must_use]
    pub const fn durability(mut self, policy: Durability) -> Self {
        self.durability = policy;
        self
    }

    /// How long the writer, finding records but not a whole batch, waits for more before
    /// it writes (unless a batch fills, a flush comes, a recording thread waits for room,
    /// or the sink closes first): the records of that time go out in one batch, with one
    /// wake-up of the writer and one `write`, where waking it for each record would cost
    /// the process more than the synchronous sink. Records wait that much longer in memory, which a crash
    /// loses. `Duration::ZERO` writes as soon as the writer wakes.
    #[must_use]
    pub const fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The queue's capacity, in records.
    #[must_use]
    pub const fn get_capacity(&self) -> usize {
        self.capacity.get()
    }

    /// What happens to a record when the queue is full.
    #[must_use]
    pub const fn get_when_full(&self) -> WhenFull {
        self.when_full
    }

    /// When written batches are synced to the disk.
    #[must_use]
    pub const fn get_durability(&self) -> Durability {
        self.durability
    }

    /// How long the writer waits for more records before it writes.
    #[must_use]
    pub const fn get_linger(&self) -> Duration {
        self.linger
    }
}

impl Default for Background {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLinesSink {
    /// Moves the sink to a writer thread of its own, fed by a bounded queue: the
    /// recommended way to write an audit file from a server. See [`BackgroundSink`].
    ///
    /// ```
    /// use keygate::audit::{verify_file, AuditEvent, AuditSink, Background, JsonLinesSink, Outcome};
    ///
    /// # let dir = std::env::temp_dir().join(format!("keygate-background-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("audit.jsonl");
    /// let sink = JsonLinesSink::open(&path)?.background(Background::default())?;
    /// for _ in 0..100 {
    ///     sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
    /// }
    /// drop(sink); // drains the queue and joins the writer
    /// assert_eq!(verify_file(&path)?.lines, 100);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the OS refuses to start the thread.
    pub fn background(self, options: Background) -> Result<BackgroundSink, AuditError> {
        let shared = Arc::new(Shared {
            queue: Queue::new(options.capacity.get()),
            sink: self,
            options,
            dropped: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            refusing: AtomicBool::new(false),
            drops_reported: Mutex::new(Report::default()),
        });
        let writer = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("keygate-audit-writer".to_owned())
                .spawn(move || shared.run())?
        };
        Ok(BackgroundSink {
            shared,
            writer: Some(writer),
        })
    }
}

/// An [`AuditSink`] that hands each event to a bounded queue; a thread of its own takes
/// what is queued (up to [`MAX_BATCH_RECORDS`] or [`MAX_BATCH_BYTES`]), serializes and
/// chains it into one buffer, and writes the whole batch with one `write`. Made by
/// [`JsonLinesSink::background`].
///
/// The file is the same as [`JsonLinesSink`] writes: the same
/// [chain format](crate::audit#the-chain-format), the same signed checkpoints
/// ([`with_checkpoints`](JsonLinesSink::with_checkpoints), set before `background`), so
/// [`verify_file`](super::verify_file) and [`verify_file_signed`](super::verify_file_signed)
/// check it. Line order is the order in which records entered the queue.
///
/// - **The request thread** only moves the event into the queue; serializing, hashing
///   and writing happen on the writer thread.
/// - **Durability**: see [`Durability`] (default: each batch written to the OS, no
///   `fsync`).
/// - **A full queue**: see [`WhenFull`] (default: the recording thread waits, nothing
///   is lost).
/// - **Shutdown**: [`flush`](AuditSink::flush) waits until everything recorded before it
///   is written, and writes a checkpoint (when checkpoints are on); dropping the sink
///   does the same for everything queued, then stops and joins the writer. Wrapped in an
///   `Arc`, that is when the last clone goes.
/// - **A crash** loses what was still queued and the batch being written, nothing
///   written before; see [`Durability`].
/// - **Write failures** are handled as by [`JsonLinesSink`]: counted
///   ([`write_errors`](Self::write_errors), every record of a failed batch), logged
///   (rate-limited), the sink unhealthy until a write succeeds again, and the partial
///   batch cut off so that the chain stays valid.
///
/// ```
/// use std::num::NonZeroU64;
/// use std::sync::Arc;
///
/// use keygate::audit::{
///     verify_file_signed, AuditEvent, AuditSink, Background, CheckpointKey, JsonLinesSink,
///     Outcome, WhenFull,
/// };
///
/// # let dir = std::env::temp_dir().join(format!("keygate-background-sink-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("audit.jsonl");
/// let key = || CheckpointKey::from_bytes(b"an-audit-checkpoint-key-of-32-bytes");
/// let sink = JsonLinesSink::open(&path)?
///     .with_checkpoints(key()?, NonZeroU64::new(1000).unwrap())
///     .background(Background::default().when_full(WhenFull::Refuse))?;
/// let sink = Arc::new(sink);
/// let threads: Vec<_> = (0..4)
///     .map(|_| {
///         let sink = Arc::clone(&sink);
///         std::thread::spawn(move || {
///             for _ in 0..250 {
///                 sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
///             }
///         })
///     })
///     .collect();
/// for thread in threads {
///     thread.join().unwrap();
/// }
/// sink.flush(); // at graceful stop: drained, written, checkpointed
/// let written = 1000 - sink.dropped();
/// assert!(sink.batches() >= 1);
/// drop(sink);
///
/// let summary = verify_file_signed(&path, &key()?)?;
/// assert_eq!(summary.unsigned_tail, 0);
/// assert!(summary.lines > written);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BackgroundSink {
    shared: Arc<Shared>,
    /// `None` only while dropping.
    writer: Option<JoinHandle<()>>,
}

/// What the handle and the writer thread share.
struct Shared {
    queue: Queue,
    sink: JsonLinesSink,
    options: Background,
    /// Records dropped because the queue was full.
    dropped: AtomicU64,
    /// Batches written (one `write` each).
    batches: AtomicU64,
    /// Records handed to the queue (or waiting to be) and not yet written.
    pending: AtomicUsize,
    /// [`WhenFull::Refuse`] refused a record; cleared once the queue is empty.
    refusing: AtomicBool,
    /// The rate limit on logs of dropped records.
    drops_reported: Mutex<Report>,
}

impl BackgroundSink {
    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.shared.sink.path()
    }

    /// How many records were dropped because the queue was full ([`WhenFull::Drop`] and
    /// [`WhenFull::Refuse`]).
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many records could not be written (a failed write loses its whole batch), as
    /// [`JsonLinesSink::write_errors`].
    #[must_use]
    pub fn write_errors(&self) -> u64 {
        self.shared.sink.write_errors()
    }

    /// How many batches were written, one `write` each: fewer than the records when the
    /// writer found several queued at once.
    #[must_use]
    pub fn batches(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// How many records are queued (or waiting for room in the queue) or in the batch
    /// being written: what a crash now would lose.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// `seq` of the last line written, as [`JsonLinesSink::last_seq`].
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.shared.sink.last_seq()
    }

    /// `hash` of the last line written, as [`JsonLinesSink::last_hash`].
    #[must_use]
    pub fn last_hash(&self) -> String {
        self.shared.sink.last_hash()
    }

    /// How the sink queues and writes.
    #[must_use]
    pub fn options(&self) -> Background {
        self.shared.options
    }

    /// A record the queue could not take: counted, logged (rate-limited), and with
    /// [`WhenFull::Refuse`] the sink is unhealthy until the queue is empty.
    fn refused(&self, event: &AuditEvent) {
        let shared = &*self.shared;
        shared.pending.fetch_sub(1, Ordering::Relaxed);
        let total = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if shared.options.when_full == WhenFull::Refuse {
            shared.refusing.store(true, Ordering::Relaxed);
        }
        let due = shared
            .drops_reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(1);
        if let Some(since_last) = due {
            tracing::error!(
                target: "keygate::audit",
                path = %shared.sink.path().display(),
                action = event.action.as_str(),
                outcome = event.outcome.as_str(),
                dropped_since_last_report = since_last,
                dropped_in_all = total,
                capacity = shared.options.capacity.get(),
                "the audit queue is full; audit events are dropped",
            );
        }
    }

    /// The writer is gone (it panicked): the record is lost, counted as a write error.
    fn writer_gone(&self, event: &AuditEvent) {
        self.shared.pending.fetch_sub(1, Ordering::Relaxed);
        let error = std::io::Error::other("the audit writer thread has stopped");
        self.shared.sink.lost(&error, Some(event), 1);
    }
}

impl AuditSink for BackgroundSink {
    /// Moves `event` into the queue; when it is full, waits, drops or refuses as
    /// [`WhenFull`] says.
    fn record(&self, event: AuditEvent) {
        let shared = &*self.shared;
        // Counted before it is queued, so that the writer never counts it down first.
        shared.pending.fetch_add(1, Ordering::Relaxed);
        let wait = shared.options.when_full == WhenFull::Wait;
        match shared.queue.push(event, wait) {
            Ok(()) => {}
            Err(Refused::Full(event)) => self.refused(&event),
            Err(Refused::WriterGone(event)) => self.writer_gone(&event),
        }
    }

    /// `false` while the last write failed, and with [`WhenFull::Refuse`] from a refused
    /// record until the queue is empty again.
    fn healthy(&self) -> bool {
        self.shared.sink.healthy() && !self.shared.refusing.load(Ordering::Relaxed)
    }

    /// Waits until every record handed over before the call is written (and synced, with
    /// a durability policy that syncs), and writes a checkpoint when checkpoints are on.
    /// A flush never waits for room in the queue.
    fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.shared.queue.push_flush(done) {
            // An error here means the writer is gone: nothing more will be written.
            let _ = wait.recv();
        }
    }
}

impl Drop for BackgroundSink {
    /// Closes the queue, lets the writer write what it holds and the last checkpoint,
    /// and waits for it.
    fn drop(&mut self) {
        self.shared.queue.close();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(
                target: "keygate::audit",
                path = %self.shared.sink.path().display(),
                "the audit writer thread panicked; records still queued are lost",
            );
        }
    }
}

impl fmt::Debug for BackgroundSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundSink")
            .field("path", &self.path())
            .field("options", &self.shared.options)
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .finish_non_exhaustive()
    }
}

/// The writer's clock for [`Durability::SyncEvery`].
struct Syncing {
    /// When the file was last synced.
    at: Instant,
    /// Whether a batch was written since.
    dirty: bool,
}

impl Shared {
    /// The writer thread: batches until the queue is closed and empty, then the last
    /// checkpoint.
    fn run(&self) {
        /// Tells the queue when the writer stops, however it stops (a panic included), so
        /// that no recording thread or flush waits for it forever.
        struct Stopped<'a>(&'a Queue);
        impl Drop for Stopped<'_> {
            fn drop(&mut self) {
                self.0.writer_stopped();
            }
        }
        let _stopped = Stopped(&self.queue);

        let mut taken = VecDeque::new();
        let mut buf = Vec::with_capacity(MAX_BATCH_BYTES + 4096);
        let mut syncing = Syncing {
            at: Instant::now(),
            dirty: false,
        };
        let tick = match self.options.durability {
            Durability::SyncEvery(interval) => interval.max(Duration::from_millis(1)),
            Durability::Flush | Durability::SyncEachBatch => IDLE_TICK,
        };
        loop {
            match self.queue.take(&mut taken, tick, self.options.linger) {
                Taken::Messages => self.write(&mut taken, &mut buf, &mut syncing),
                Taken::Idle => self.idle(&mut syncing),
                Taken::Closed => break,
            }
        }
        // Closed: everything queued has been written. The last checkpoint.
        let mut batch = self.sink.batch(&mut buf);
        let written = batch.checkpoint().and_then(|()| batch.write());
        match written {
            Ok(()) => self.sink.written(),
            Err(error) => self.sink.lost(&error, None, 0),
        }
        if self.options.durability != Durability::Flush && syncing.dirty {
            self.sync(&mut syncing);
        }
    }

    /// Writes the records `taken` from the queue: one batch (one `write`), or more when
    /// they exceed [`MAX_BATCH_BYTES`] or a flush comes between them.
    fn write(&self, taken: &mut VecDeque<Message>, buf: &mut Vec<u8>, syncing: &mut Syncing) {
        let mut batch = self.sink.batch(&mut *buf);
        // Records taken into this batch, written or not.
        let mut records = 0;
        while let Some(message) = taken.pop_front() {
            match message {
                Message::Record(event) => {
                    records += 1;
                    if let Err(error) = batch.push(&event) {
                        self.sink.lost(&error, Some(&event), 1);
                    }
                    if batch.bytes() >= MAX_BATCH_BYTES {
                        self.finish(batch, records, false, syncing);
                        records = 0;
                        batch = self.sink.batch(&mut *buf);
                    }
                }
                Message::Flush(done) => {
                    if let Err(error) = batch.checkpoint() {
                        self.sink.lost(&error, None, 0);
                    }
                    self.finish(batch, records, true, syncing);
                    records = 0;
                    // The flusher may have given up waiting; nothing to do then.
                    let _ = done.send(());
                    batch = self.sink.batch(&mut *buf);
                }
            }
        }
        self.finish(batch, records, false, syncing);
    }

    /// Writes `batch`, which holds `records` records taken from the queue, and applies the
    /// durability policy (a flush syncs under any policy that syncs).
    fn finish(&self, batch: Batch<'_>, records: usize, flush: bool, syncing: &mut Syncing) {
        let lines = batch.records();
        let wrote = batch.bytes() > 0;
        match batch.write() {
            Ok(()) if wrote => {
                self.batches.fetch_add(1, Ordering::Relaxed);
                self.sink.written();
                syncing.dirty = true;
            }
            Ok(()) => {}
            Err(error) => self.sink.lost(&error, None, lines),
        }
        let sync_now = match self.options.durability {
            Durability::Flush => false,
            Durability::SyncEachBatch => true,
            Durability::SyncEvery(interval) => flush || syncing.at.elapsed() >= interval,
        };
        if sync_now && syncing.dirty {
            self.sync(syncing);
        }
        if self.pending.fetch_sub(records, Ordering::Relaxed) == records {
            self.refusing.store(false, Ordering::Relaxed);
        }
    }

    /// Nothing came for a tick: sync if due, and healthy again once the queue is empty.
    fn idle(&self, syncing: &mut Syncing) {
        if let Durability::SyncEvery(interval) = self.options.durability
            && syncing.dirty
            && syncing.at.elapsed() >= interval
        {
            self.sync(syncing);
        }
        if self.pending.load(Ordering::Relaxed) == 0 {
            self.refusing.store(false, Ordering::Relaxed);
        }
    }

    /// `fsync`s the file; a failure is logged and makes the sink unhealthy.
    fn sync(&self, syncing: &mut Syncing) {
        syncing.at = Instant::now();
        syncing.dirty = false;
        if let Err(AuditError::Io(error)) = self.sink.sync() {
            self.sink.sync_failed(&error);
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use std::collections::HashSet;
    use std::num::NonZeroU64;

    use super::super::testing::{TempDir, event, record_from_threads};
    use super::super::{CheckpointKey, verify_chain, verify_file, verify_file_signed};
    use super::*;

    fn open(dir: &TempDir, options: Background) -> BackgroundSink {
        JsonLinesSink::open(dir.file())
            .expect("open")
            .background(options)
            .expect("writer thread")
    }

    /// The actions of the events in a chain's text, checkpoints left out.
    fn actions(text: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|line| serde_json::from_str::<AuditEvent>(line).expect("an event"))
            .filter(|event| event.action != super::super::CHECKPOINT_ACTION)
            .map(|event| event.action)
            .collect()
    }

    #[test]
    fn many_threads_recording_at_once_lose_nothing_and_keep_the_chain_valid() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 500;
        let dir = TempDir::new();
        // A small queue, so that recording threads also wait for room.
        let sink = Arc::new(open(&dir, Background::default().capacity(16)));
        record_from_threads(&sink, THREADS, PER_THREAD);
        let sink = Arc::into_inner(sink).expect("the last handle");
        assert_eq!((sink.dropped(), sink.write_errors()), (0, 0));
        drop(sink);

        let summary = verify_file(dir.file()).expect("valid chain");
        assert_eq!(summary.lines, (THREADS * PER_THREAD) as u64);
        let text = std::fs::read(dir.file()).expect("read");
        let actions = actions(&text);
        let unique: HashSet<&String> = actions.iter().collect();
        assert_eq!(
            unique.len(),
            THREADS * PER_THREAD,
            "each record exactly once"
        );
        for n in 0..THREADS * PER_THREAD {
            assert!(
                unique.contains(&format!("POST /coordinator/jobs/{n}")),
                "{n}"
            );
        }
    }

    #[test]
    fn checkpoints_are_written_as_by_the_synchronous_sink_and_the_last_at_drop() {
        let key = || CheckpointKey::from_bytes(&[1; 32]).expect("key");
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file())
            .expect("open")
            .with_checkpoints(key(), NonZeroU64::new(10).expect("10"))
            .background(Background::default())
            .expect("writer");
        for i in 0..25 {
            sink.record(event(i));
        }
        // A flush writes everything recorded so far, and a checkpoint after it.
        sink.flush();
        let summary = verify_file_signed(dir.file(), &key()).expect("valid");
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (28, 3, 0)
        );
        assert_eq!(sink.last_seq(), 28);
        assert_eq!(sink.last_hash(), summary.last_hash);
        for i in 25..30 {
            sink.record(event(i));
        }
        drop(sink);
        let summary = verify_file_signed(dir.file(), &key()).expect("valid");
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (34, 4, 0)
        );
        // The same file, reopened synchronously, goes on.
        let sink = JsonLinesSink::open(dir.file())
            .expect("reopen")
            .with_checkpoints(key(), NonZeroU64::new(10).expect("10"));
        sink.record(event(30));
        drop(sink);
        let summary = verify_file_signed(dir.file(), &key()).expect("valid");
        assert_eq!((summary.lines, summary.unsigned_tail), (36, 0));
    }

    #[test]
    fn records_that_come_while_the_writer_lingers_go_out_in_one_batch() {
        let dir = TempDir::new();
        // A linger far longer than the test: the flush ends it.
        let sink = open(&dir, Background::default().linger(Duration::from_secs(600)));
        for i in 0..50 {
            sink.record(event(i));
        }
        sink.flush();
        assert_eq!(sink.batches(), 1);
        assert_eq!(sink.last_seq(), 50);
        // A batch that fills ends it too.
        let dir = TempDir::new();
        let sink = open(
            &dir,
            Background::default()
                .capacity(MAX_BATCH_RECORDS * 4)
                .linger(Duration::from_secs(600)),
        );
        for i in 0..MAX_BATCH_RECORDS {
            sink.record(event(i));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while sink.batches() == 0 {
            assert!(Instant::now() < deadline, "the full batch was not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.last_seq(), MAX_BATCH_RECORDS as u64);
    }

    #[test]
    fn the_file_stays_locked_until_the_writer_is_done() {
        let dir = TempDir::new();
        let sink = open(&dir, Background::default());
        let error = JsonLinesSink::open(dir.file()).expect_err("locked");
        assert!(matches!(error, AuditError::Locked { .. }), "{error:?}");
        drop(sink);
        JsonLinesSink::open(dir.file()).expect("free again");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn write_failures_are_counted_per_record_and_the_sink_is_unhealthy() {
        let (_turn, sink) = super::super::testing::on_dev_full();
        let sink = sink.background(Background::default()).expect("writer");
        for i in 0..3 {
            sink.record(event(i));
        }
        sink.flush();
        assert_eq!(sink.write_errors(), 3);
        assert_eq!(sink.last_seq(), 0);
        assert!(!sink.healthy());
        assert_eq!(sink.batches(), 0);
    }

    #[test]
    fn an_oversized_event_is_counted_and_the_rest_of_its_batch_written() {
        let dir = TempDir::new();
        let sink = open(&dir, Background::default());
        sink.record(event(0));
        sink.record(event(1).with_user_agent("x".repeat(super::super::MAX_LINE_LEN)));
        sink.record(event(2));
        sink.flush();
        assert_eq!(sink.write_errors(), 1);
        drop(sink);
        assert_eq!(verify_file(dir.file()).expect("valid").lines, 2);
    }

    #[cfg(unix)]
    mod blocked_writer {
        use super::super::super::testing::{Pipe, huge_event};
        use super::*;

        /// A sink on a pipe, whose writer is held inside the `write` of its first batch
        /// (one huge event) until `pipe.release()`.
        fn held(dir: &TempDir, options: Background) -> (BackgroundSink, Pipe) {
            let mut pipe = Pipe::new(dir);
            let sink = JsonLinesSink::open(&pipe.path)
                .expect("open the pipe")
                .background(options)
                .expect("writer");
            pipe.start_reader();
            sink.record(huge_event());
            pipe.wait_for_writer();
            (sink, pipe)
        }

        /// What went through the pipe once the writer is let go and the sink dropped, as a
        /// verified chain: its events' actions.
        fn written(sink: BackgroundSink, mut pipe: Pipe) -> Vec<String> {
            pipe.release();
            drop(sink);
            let bytes = pipe.finish();
            let summary = verify_chain(&bytes[..]).expect("a valid chain");
            let actions = actions(&bytes);
            assert_eq!(summary.lines, actions.len() as u64);
            actions
        }

        #[test]
        fn records_queued_while_the_writer_is_busy_go_out_in_one_batch() {
            let dir = TempDir::new();
            let (sink, mut pipe) = held(&dir, Background::default().capacity(128));
            for i in 1..=100 {
                sink.record(event(i));
            }
            assert_eq!(sink.batches(), 0);
            assert_eq!(sink.pending(), 101);
            pipe.release();
            sink.flush();
            // The huge event's batch, then the hundred in one `write`.
            assert_eq!(sink.batches(), 2);
            assert_eq!(sink.pending(), 0);
            assert_eq!(written(sink, pipe).len(), 101);
        }

        #[test]
        fn wait_blocks_the_recording_thread_and_loses_nothing() {
            let dir = TempDir::new();
            let (sink, mut pipe) = held(&dir, Background::default().capacity(4));
            let sink = Arc::new(sink);
            let recorder = {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 1..=10 {
                        sink.record(event(i));
                    }
                })
            };
            // The huge event, four queued, and a fifth waiting for room.
            let deadline = Instant::now() + Duration::from_secs(30);
            while sink.pending() < 6 {
                assert!(Instant::now() < deadline, "pending: {}", sink.pending());
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(sink.pending(), 6);
            assert!(!recorder.is_finished(), "the recording thread waits");
            assert!(sink.healthy());
            pipe.release();
            recorder.join().expect("recorder");
            let sink = Arc::into_inner(sink).expect("the last handle");
            assert_eq!(sink.dropped(), 0);
            assert_eq!(written(sink, pipe).len(), 11);
        }

        #[test]
        fn drop_counts_what_a_full_queue_cannot_take_and_stays_healthy() {
            let dir = TempDir::new();
            let (sink, pipe) = held(
                &dir,
                Background::default().capacity(4).when_full(WhenFull::Drop),
            );
            for i in 1..=10 {
                sink.record(event(i));
            }
            assert_eq!(sink.dropped(), 6);
            assert!(sink.healthy(), "Drop keeps serving");
            let actions = written(sink, pipe);
            let expected: Vec<String> = (0..=4)
                .map(|n| format!("POST /coordinator/jobs/{n}"))
                .collect();
            assert_eq!(actions, expected, "the first four queued, in order");
        }

        #[test]
        fn refuse_is_unhealthy_while_the_queue_is_full_and_healthy_once_drained() {
            let dir = TempDir::new();
            let (sink, mut pipe) = held(
                &dir,
                Background::default()
                    .capacity(4)
                    .when_full(WhenFull::Refuse),
            );
            for i in 1..=4 {
                sink.record(event(i));
            }
            assert!(sink.healthy(), "room for four");
            sink.record(event(5));
            assert_eq!(sink.dropped(), 1);
            assert!(!sink.healthy(), "a refused record");
            pipe.release();
            sink.flush();
            assert!(sink.healthy(), "drained");
            sink.record(event(6));
            sink.flush();
            assert_eq!((sink.dropped(), sink.write_errors()), (1, 0));
            assert_eq!(written(sink, pipe).len(), 6);
        }
    }
}
