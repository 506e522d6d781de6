//! [`JsonLinesSink`]: appends events to a file as chained lines.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ChainErrorKind;
use super::checkpoint::CheckpointKey;
use super::format::{GENESIS_HASH, HexHash, MAX_LINE_LEN, parse_line, push_event_line, push_line};
use crate::audit::{AuditError, AuditEvent, AuditSink};

/// The room made for an event's serialized fields before serializing it: a guard's
/// record of an admitted request is 300 to 450 bytes (a longer one grows it).
const FIELDS_CAPACITY: usize = 512;

/// An [`AuditSink`] that appends each event to a file as one hash-chained JSON line.
///
/// See the [chain format](crate::audit#the-chain-format). Each [`record`](AuditSink::record)
/// serializes the event, links it to the previous line and writes the whole line with
/// one `write` to the file before returning, so a line that `record` returned for is in
/// the operating system's hands and survives the process exiting or crashing. (It
/// survives a power loss only once the OS writes it out; call [`sync`](Self::sync) where
/// that matters.) Records from many threads are serialized by a mutex, and line order
/// is sequence order.
///
/// `record` never fails or panics: if an event cannot be written (disk full, a line
/// longer than 1 MiB, …) it is counted in [`write_errors`](Self::write_errors), the sink
/// reports itself not [`healthy`](AuditSink::healthy) until a write succeeds again (the
/// guard's [`AuditFailure`](crate::guard::AuditFailure) policy reads that), the failure is
/// logged with `tracing::error!` (target `keygate::audit`; the first of a run at once,
/// then at most one line every 10 seconds with the number lost meanwhile), and any
/// partial line is cut off again so that the chain stays valid. Alert on that counter: a
/// lost audit event is an incident.
///
/// That write happens on the recording thread, under a mutex: in a server, make it a
/// [`BackgroundSink`](super::BackgroundSink) with [`background`](Self::background), which
/// moves serializing and writing to a thread of its own and writes in batches.
///
/// One sink per file: two writers, in one process or several, would break the chain, so
/// [`open`](Self::open) takes an exclusive lock on the file (`flock`), held until the sink
/// is dropped, and refuses a file another sink holds ([`AuditError::Locked`]).
///
/// ```
/// use keygate::audit::{verify_file, AuditEvent, AuditSink, JsonLinesSink, Outcome};
///
/// # let dir = std::env::temp_dir().join(format!("keygate-jsonl-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("audit.jsonl");
/// let sink = JsonLinesSink::open(&path)?;
/// sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
/// drop(sink);
///
/// // Reopening continues the chain where the file ends.
/// let sink = JsonLinesSink::open(&path)?;
/// assert_eq!(sink.last_seq(), 1);
/// sink.record(AuditEvent::new("job.complete", Outcome::Succeeded));
///
/// let summary = verify_file(&path)?;
/// assert_eq!(summary.lines, 2);
/// assert_eq!(summary.last_hash, sink.last_hash());
/// # drop(sink);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct JsonLinesSink {
    path: PathBuf,
    state: Mutex<ChainState>,
    write_errors: AtomicU64,
    /// Whether the last write failed.
    failing: AtomicBool,
    /// When a write failure was last logged, and the failures since.
    reported: Mutex<Report>,
    /// The key that signs checkpoints, and how many records go between two.
    checkpoints: Option<(CheckpointKey, NonZeroU64)>,
}

/// The rate limit on failure logs: one line per [`REPORT_EVERY`] at most.
#[derive(Debug, Default)]
pub(super) struct Report {
    at: Option<Instant>,
    unreported: u64,
}

impl Report {
    /// Notes `lost` more records: `Some(lost since the last line)` when a line is due now
    /// (the first of a run at once, then at most one per [`REPORT_EVERY`]), `None` when
    /// they are only counted until then.
    pub(super) fn due(&mut self, lost: u64) -> Option<u64> {
        let now = Instant::now();
        self.unreported += lost;
        if self
            .at
            .is_some_and(|at| now.duration_since(at) < REPORT_EVERY)
        {
            return None;
        }
        self.at = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

/// How often a run of write failures is logged: the first at once, then a summary at
/// most every 10 seconds.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The end of the chain, as written so far.
struct ChainState {
    file: File,
    /// `seq` of the last line; 0 for an empty file.
    seq: u64,
    /// `hash` of the last line; 64 zeros for an empty file.
    hash: HexHash,
    /// File length after the last whole line, to cut off a partial write.
    len: u64,
    /// Records written since the last checkpoint (or since the file was opened).
    since_checkpoint: u64,
}

impl JsonLinesSink {
    /// Opens `path` for appending, creating it if needed.
    ///
    /// If the file is not empty, the chain continues from its last line, whose `seq` and
    /// `hash` are read back; only that line is checked (its hash must match its
    /// content), not the whole file: use [`verify_file`](super::verify_file) for that. A last line without
    /// its final newline gets one.
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the file cannot be opened or read, and
    /// [`AuditError::BrokenTail`] if its last line is not a whole, valid record (for
    /// example a line cut short by a crash) — the chain would be broken from there, so
    /// the file needs a look before anything is appended.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        // One writer per file: a second one would break the chain.
        file.try_lock().map_err(|error| match error {
            TryLockError::WouldBlock => AuditError::Locked { path: path.clone() },
            TryLockError::Error(error) => AuditError::Io(error),
        })?;
        let mut len = file.metadata()?.len();

        let (seq, hash) = if len == 0 {
            (0, GENESIS_HASH)
        } else {
            let tail = read_last_line(&mut file, len)?;
            let (seq, hash) = tail
                .line
                .ok_or(ChainErrorKind::Unparseable)
                .and_then(|line| parse_line(&line))
                .and_then(|link| {
                    let hash = HexHash::try_from(link.hash.as_bytes())
                        .map_err(|_| ChainErrorKind::Unparseable)?;
                    Ok((link.seq, hash))
                })
                .map_err(|kind| AuditError::BrokenTail { kind })?;
            if !tail.terminated {
                file.write_all(b"\n")?;
                len += 1;
            }
            (seq, hash)
        };

        Ok(JsonLinesSink {
            path,
            state: Mutex::new(ChainState {
                file,
                seq,
                hash,
                len,
                since_checkpoint: 0,
            }),
            write_errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            reported: Mutex::new(Report::default()),
            checkpoints: None,
        })
    }

    /// Signs the chain with `key`: after every `every` records, and when the sink is
    /// dropped (or [`checkpoint`](Self::checkpoint) is called), a checkpoint record
    /// (action [`CHECKPOINT_ACTION`](super::CHECKPOINT_ACTION)) carries an HMAC-SHA256 of
    /// its place in the chain. [`verify_file_signed`](super::verify_file_signed) checks
    /// them with the same key and says how many records follow the last one: a file
    /// rewritten without the key fails, and a clean shutdown leaves no unsigned tail.
    ///
    /// ```
    /// use std::num::NonZeroU64;
    ///
    /// use keygate::audit::{AuditEvent, AuditSink, CheckpointKey, JsonLinesSink, Outcome, verify_file_signed};
    ///
    /// # let dir = std::env::temp_dir().join(format!("keygate-checkpoint-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("audit.jsonl");
    /// let key = || CheckpointKey::from_bytes(b"an-audit-checkpoint-key-of-32-bytes");
    /// let sink = JsonLinesSink::open(&path)?.with_checkpoints(key()?, NonZeroU64::new(100).unwrap());
    /// for _ in 0..150 {
    ///     sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
    /// }
    /// drop(sink); // the last checkpoint
    ///
    /// let summary = verify_file_signed(&path, &key()?)?;
    /// assert_eq!((summary.lines, summary.checkpoints, summary.unsigned_tail), (152, 2, 0));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn with_checkpoints(mut self, key: CheckpointKey, every: NonZeroU64) -> Self {
        self.checkpoints = Some((key, every));
        self
    }

    /// Writes a checkpoint now, if records were written since the last one (and
    /// checkpoints are on). For shutdown, when the sink may outlive the server.
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the checkpoint cannot be written.
    pub fn checkpoint(&self) -> Result<(), AuditError> {
        let mut buf = Vec::new();
        let mut batch = self.batch(&mut buf);
        batch.checkpoint()?;
        batch.write()?;
        Ok(())
    }

    /// The file's path, as given to [`open`](Self::open).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many events could not be written since the sink was opened.
    #[must_use]
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// `seq` of the last line in the file: the number of records it holds.
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.lock().seq
    }

    /// `hash` of the last line in the file (64 zeros if it is empty). Keep it elsewhere
    /// to detect a rewritten or shortened file later; see
    /// [what the chain proves](crate::audit#what-the-chain-proves).
    #[must_use]
    pub fn last_hash(&self) -> String {
        String::from_utf8_lossy(&self.lock().hash).into_owned()
    }

    /// Asks the OS to write the file's data to the disk (`fsync`), so that the records
    /// written so far survive a power loss. This can take milliseconds: call it at
    /// shutdown or on a timer, not per request.
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the OS reports a failure.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.lock().file.sync_data().map_err(AuditError::Io)
    }

    /// The chain state, even if a thread panicked while holding it: it is only updated
    /// after a line is fully written.
    fn lock(&self) -> MutexGuard<'_, ChainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `event` as the next line, and a checkpoint after it when one is due, with
    /// one `write`.
    fn append(&self, event: &AuditEvent) -> io::Result<()> {
        // Serialize outside the lock; only linking and writing are serialized. Sized for
        // a guard's record (about 400 bytes), so that it is not grown on the way.
        let mut fields = Vec::with_capacity(FIELDS_CAPACITY);
        serde_json::to_writer(&mut fields, event)?;
        let mut buf = Vec::with_capacity(fields.len() + 256);
        let mut batch = self.batch(&mut buf);
        batch.push_serialized(&fields)?;
        batch.write()
    }

    /// Starts a batch of lines, written to the file in one `write` by
    /// [`Batch::write`]; `buf` holds them meanwhile (it is cleared then, and can be
    /// reused). The chain is locked until the batch is dropped.
    pub(super) fn batch<'a>(&'a self, buf: &'a mut Vec<u8>) -> Batch<'a> {
        buf.clear();
        let state = self.lock();
        Batch {
            seq: state.seq,
            hash: state.hash,
            since_checkpoint: state.since_checkpoint,
            records: 0,
            state,
            buf,
            sink: self,
        }
    }

    /// Counts `lost` records that could not be written (`event` is one of them, when
    /// known), reports the sink unhealthy until a write succeeds again, and logs it
    /// (rate-limited: see [`Report`]).
    pub(super) fn lost(&self, err: &io::Error, event: Option<&AuditEvent>, lost: u64) {
        let total = self.write_errors.fetch_add(lost, Ordering::Relaxed) + lost;
        self.failing.store(true, Ordering::Relaxed);
        let due = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(lost);
        if let Some(since_last) = due {
            tracing::error!(
                target: "keygate::audit",
                path = %self.path.display(),
                error = %err,
                action = event.map(|event| event.action.as_str()),
                outcome = event.map(|event| event.outcome.as_str()),
                lost_since_last_report = since_last,
                lost_in_all = total,
                "could not write audit events; they are lost",
            );
        }
    }

    /// Notes a successful write: healthy again, and logged if it was not.
    pub(super) fn written(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                target: "keygate::audit",
                path = %self.path.display(),
                lost = self.write_errors(),
                "audit events are written again",
            );
        }
    }

    /// Notes a failed `fsync`: the records written are in the OS's hands but may not
    /// survive a power loss. Logged like a write failure (rate-limited), and the sink is
    /// unhealthy until a write succeeds again; nothing is counted as lost.
    pub(super) fn sync_failed(&self, err: &io::Error) {
        self.failing.store(true, Ordering::Relaxed);
        let due = self
            .reported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .due(0);
        if due.is_some() {
            tracing::error!(
                target: "keygate::audit",
                path = %self.path.display(),
                error = %err,
                "could not sync the audit file to disk (fsync)",
            );
        }
    }
}

/// Lines added to the chain and written with one `write`: see [`JsonLinesSink::batch`].
///
/// The chain's head advances in the batch as lines are added, and in the sink only once
/// [`write`](Self::write) succeeds; a batch dropped unwritten leaves the file and the
/// chain as they were.
pub(super) struct Batch<'a> {
    sink: &'a JsonLinesSink,
    state: MutexGuard<'a, ChainState>,
    buf: &'a mut Vec<u8>,
    /// `seq` and `hash` of the last line in the batch (or in the file, before the first).
    seq: u64,
    hash: HexHash,
    since_checkpoint: u64,
    /// Events (not checkpoints) in the batch.
    records: u64,
}

impl Batch<'_> {
    /// Adds `event` (serialized straight into the batch), and a checkpoint after it when
    /// one is due.
    ///
    /// # Errors
    ///
    /// If the event does not serialize or its line would be longer than
    /// [`MAX_LINE_LEN`]; it is then not added, and the batch goes on without it.
    pub(super) fn push(&mut self, event: &AuditEvent) -> io::Result<()> {
        let seq = self.next_seq()?;
        self.hash = push_event_line(self.buf, seq, &self.hash, event)?;
        self.added(seq)
    }

    /// [`push`](Self::push) for an event serialized already (a JSON object).
    fn push_serialized(&mut self, fields: &[u8]) -> io::Result<()> {
        let seq = self.next_seq()?;
        self.hash = push_line(self.buf, seq, &self.hash, |buf| {
            buf.extend_from_slice(fields);
            Ok(())
        })?;
        self.added(seq)
    }

    /// Counts the event just added as line `seq`, and adds a checkpoint when one is due.
    fn added(&mut self, seq: u64) -> io::Result<()> {
        self.seq = seq;
        self.records += 1;
        self.since_checkpoint += 1;
        if let Some((_, every)) = &self.sink.checkpoints
            && self.since_checkpoint >= every.get()
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Adds a checkpoint, if checkpoints are on and events came after the last one.
    ///
    /// # Errors
    ///
    /// Only if the sequence number overflows.
    pub(super) fn checkpoint(&mut self) -> io::Result<()> {
        let Some((key, _)) = &self.sink.checkpoints else {
            return Ok(());
        };
        if self.since_checkpoint == 0 {
            return Ok(());
        }
        let seq = self.next_seq()?;
        let prev = String::from_utf8_lossy(&self.hash);
        let record = key.record(seq, &prev);
        self.hash = push_event_line(self.buf, seq, &self.hash, &record)?;
        self.seq = seq;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// The `seq` of the next line.
    fn next_seq(&self) -> io::Result<u64> {
        self.seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("audit sequence number overflow"))
    }

    /// Events in the batch (checkpoints not counted).
    pub(super) fn records(&self) -> u64 {
        self.records
    }

    /// Bytes in the batch.
    pub(super) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Writes the batch to the file with one `write_all` (nothing if it is empty), and
    /// moves the chain's head to its last line.
    ///
    /// # Errors
    ///
    /// If the write fails. Whatever part of the batch reached the file is cut off again,
    /// so that the chain stays valid, and the chain's head stays where it was: every line
    /// of the batch is lost.
    pub(super) fn write(mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self
            .state
            .file
            .write_all(self.buf)
            .and_then(|()| self.state.file.flush());
        if let Err(err) = written {
            // A partial line would break the chain for every line after it.
            let len = self.state.len;
            if let Err(truncate) = self.state.file.set_len(len) {
                tracing::error!(
                    target: "keygate::audit",
                    path = %self.sink.path.display(),
                    error = %truncate,
                    "could not cut off a partial audit line; the chain may be broken here",
                );
            }
            self.buf.clear();
            return Err(err);
        }
        self.state.seq = self.seq;
        self.state.hash = self.hash;
        self.state.len += self.buf.len() as u64;
        self.state.since_checkpoint = self.since_checkpoint;
        self.buf.clear();
        Ok(())
    }
}

impl Drop for JsonLinesSink {
    /// Writes the last checkpoint, when checkpoints are on and records followed the last.
    fn drop(&mut self) {
        if let Err(error) = self.checkpoint() {
            tracing::error!(
                target: "keygate::audit",
                path = %self.path.display(),
                %error,
                "could not write the last audit checkpoint",
            );
        }
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: AuditEvent) {
        match self.append(&event) {
            Ok(()) => self.written(),
            Err(err) => self.lost(&err, Some(&event), 1),
        }
    }

    fn healthy(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }

    /// Every record is written when `record` returns: writes a checkpoint, if
    /// checkpoints are on and records followed the last (see
    /// [`checkpoint`](Self::checkpoint)); a failure is logged.
    fn flush(&self) {
        if let Err(error) = self.checkpoint() {
            tracing::error!(
                target: "keygate::audit",
                path = %self.path.display(),
                %error,
                "could not write an audit checkpoint",
            );
        }
    }
}

impl fmt::Debug for JsonLinesSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field("path", &self.path)
            .field("write_errors", &self.write_errors())
            .finish_non_exhaustive()
    }
}

/// The last line of a non-empty file.
struct Tail {
    /// The line without its newline; `None` if longer than [`MAX_LINE_LEN`].
    line: Option<Vec<u8>>,
    /// Whether the file ends with a newline.
    terminated: bool,
}

/// Reads the last line of a file of `len > 0` bytes backwards, in chunks, so that
/// reopening a large file stays cheap.
fn read_last_line(file: &mut File, len: u64) -> io::Result<Tail> {
    const CHUNK: usize = 8 * 1024;

    let mut last = [0_u8; 1];
    file.seek(SeekFrom::Start(len.saturating_sub(1)))?;
    file.read_exact(&mut last)?;
    let terminated = last[0] == b'\n';

    let mut start = if terminated { len - 1 } else { len };
    let mut line = Vec::new();
    while start > 0 {
        let chunk_len = usize::try_from(start).map_or(CHUNK, |start| start.min(CHUNK));
        start -= chunk_len as u64;
        let mut chunk = vec![0_u8; chunk_len];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        let newline = chunk.iter().rposition(|&b| b == b'\n');
        if let Some(at) = newline {
            chunk.drain(..=at);
        }
        chunk.extend_from_slice(&line);
        line = chunk;
        if line.len() > MAX_LINE_LEN {
            return Ok(Tail {
                line: None,
                terminated,
            });
        }
        if newline.is_some() {
            break;
        }
    }
    Ok(Tail {
        line: Some(line),
        terminated,
    })
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use std::sync::Arc;

    use super::super::testing::{TempDir, chain_of, event, record_from_threads};
    use super::super::verify_file;
    use super::*;

    #[test]
    fn reopening_continues_the_chain() {
        let dir = TempDir::new();
        {
            let sink = JsonLinesSink::open(dir.file()).expect("open");
            for i in 0..3 {
                sink.record(event(i));
            }
        }
        let sink = JsonLinesSink::open(dir.file()).expect("reopen");
        assert_eq!(sink.last_seq(), 3);
        for i in 3..5 {
            sink.record(event(i));
        }
        assert_eq!(sink.write_errors(), 0);
        let summary = verify_file(dir.file()).expect("valid chain");
        assert_eq!(summary.lines, 5);
        assert_eq!(summary.last_hash, sink.last_hash());
    }

    #[test]
    fn reopening_a_file_with_long_lines_reads_the_whole_last_line() {
        let dir = TempDir::new();
        {
            let sink = JsonLinesSink::open(dir.file()).expect("open");
            sink.record(event(0).with_user_agent("a".repeat(30_000)));
            sink.record(event(1).with_user_agent("b".repeat(20_000)));
        }
        let sink = JsonLinesSink::open(dir.file()).expect("reopen");
        assert_eq!(sink.last_seq(), 2);
        sink.record(event(2));
        assert_eq!(verify_file(dir.file()).expect("valid").lines, 3);
    }

    #[test]
    fn reopening_a_file_without_final_newline_adds_it() {
        let dir = TempDir::new();
        let (_src, lines) = chain_of(2);
        std::fs::write(dir.file(), lines.join("\n")).expect("write");

        let sink = JsonLinesSink::open(dir.file()).expect("reopen");
        sink.record(event(2));
        assert_eq!(verify_file(dir.file()).expect("valid").lines, 3);
    }

    #[test]
    fn reopening_refuses_a_broken_last_line() {
        let (dir, lines) = chain_of(2);
        let cut = &lines[1][..lines[1].len() / 2];
        std::fs::write(dir.file(), format!("{}\n{cut}", lines[0])).expect("write");

        let err = JsonLinesSink::open(dir.file()).expect_err("broken tail");
        assert!(
            matches!(
                err,
                AuditError::BrokenTail {
                    kind: ChainErrorKind::Unparseable
                }
            ),
            "{err:?}"
        );
        // Nothing was appended.
        let text = std::fs::read_to_string(dir.file()).expect("read");
        assert!(text.ends_with(cut));
    }

    #[test]
    fn reopening_refuses_an_edited_last_line() {
        let (dir, lines) = chain_of(2);
        let edited = lines[1].replace("\"refused\"", "\"admitted\"");
        assert_ne!(edited, lines[1]);
        std::fs::write(dir.file(), format!("{}\n{edited}\n", lines[0])).expect("write");
        let err = JsonLinesSink::open(dir.file()).expect_err("broken tail");
        assert!(
            matches!(
                err,
                AuditError::BrokenTail {
                    kind: ChainErrorKind::HashMismatch
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn concurrent_recording_keeps_the_chain_valid() {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 250;
        let dir = TempDir::new();
        let sink = Arc::new(JsonLinesSink::open(dir.file()).expect("open"));
        record_from_threads(&sink, THREADS, PER_THREAD);
        assert_eq!(sink.write_errors(), 0);
        let summary = verify_file(dir.file()).expect("valid chain");
        assert_eq!(summary.lines, (THREADS * PER_THREAD) as u64);
        assert_eq!(sink.last_seq(), summary.lines);
    }

    #[test]
    fn oversized_event_is_counted_and_not_written() {
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file()).expect("open");
        sink.record(event(0));
        sink.record(event(1).with_user_agent("x".repeat(MAX_LINE_LEN)));
        sink.record(event(2));
        assert_eq!(sink.write_errors(), 1);
        assert_eq!(verify_file(dir.file()).expect("valid").lines, 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn write_failure_is_counted_not_panicked() {
        let (_turn, sink) = super::super::testing::on_dev_full();
        sink.record(event(0));
        sink.record(event(1));
        assert_eq!(sink.write_errors(), 2);
        assert_eq!(sink.last_seq(), 0);
    }

    #[test]
    fn debug_does_not_lock_or_print_events() {
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file()).expect("open");
        sink.record(event(0));
        let debug = format!("{sink:?}");
        assert!(debug.starts_with("JsonLinesSink { path: "), "{debug}");
        assert!(!debug.contains("coordinator"), "{debug}");
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_dropped() {
        let dir = TempDir::new();
        let first = JsonLinesSink::open(dir.file()).expect("open");
        let error = JsonLinesSink::open(dir.file()).expect_err("locked");
        assert!(matches!(error, AuditError::Locked { .. }), "{error:?}");
        assert!(
            error.to_string().contains("in use by another process"),
            "{error}"
        );
        drop(first);
        JsonLinesSink::open(dir.file()).expect("free again");
    }

    fn key(byte: u8) -> CheckpointKey {
        CheckpointKey::from_bytes(&[byte; 32]).expect("key")
    }

    /// A chain of `n` events signed with `key` every `every` records, dropped cleanly.
    fn signed_chain(dir: &TempDir, n: usize, signer: Option<CheckpointKey>) {
        let mut sink = JsonLinesSink::open(dir.file()).expect("open");
        if let Some(signer) = signer {
            sink = sink.with_checkpoints(signer, NonZeroU64::new(10).expect("10"));
        }
        for i in 0..n {
            sink.record(event(i));
        }
    }

    #[test]
    fn checkpoints_vouch_for_the_chain_and_a_clean_drop_leaves_no_unsigned_tail() {
        let dir = TempDir::new();
        signed_chain(&dir, 25, Some(key(1)));
        let summary = super::super::verify_file_signed(dir.file(), &key(1)).expect("valid");
        // 25 events, checkpoints after the 10th and 20th, and one at drop.
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (28, 3, 0)
        );
        // Without the key the chain is still a chain; nothing vouches for it.
        let plain = verify_file(dir.file()).expect("valid");
        assert_eq!(
            (plain.lines, plain.checkpoints, plain.unsigned_tail),
            (28, 0, 28)
        );
        // Reopened, the chain and its checkpoints go on.
        signed_chain(&dir, 5, Some(key(1)));
        let summary = super::super::verify_file_signed(dir.file(), &key(1)).expect("valid");
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (34, 4, 0)
        );
    }

    #[test]
    fn flush_writes_a_checkpoint_when_records_followed_the_last() {
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file())
            .expect("open")
            .with_checkpoints(key(1), NonZeroU64::new(100).expect("100"));
        sink.flush();
        assert_eq!(sink.last_seq(), 0, "nothing to vouch for");
        sink.record(event(0));
        sink.flush();
        sink.flush();
        let summary = super::super::verify_file_signed(dir.file(), &key(1)).expect("valid");
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (2, 1, 0)
        );
    }

    #[test]
    fn a_file_rewritten_without_the_key_is_detected() {
        // Forged with another key: the first checkpoint fails.
        let forged = TempDir::new();
        signed_chain(&forged, 25, Some(key(2)));
        let error = super::super::verify_file_signed(forged.file(), &key(1)).expect_err("forged");
        let AuditError::Chain(error) = error else {
            panic!("{error:?}")
        };
        assert_eq!(error.line, 11);
        assert!(
            matches!(error.kind, ChainErrorKind::BadCheckpoint),
            "{error}"
        );

        // Forged without checkpoints: a valid chain that nothing vouches for.
        let unsigned = TempDir::new();
        signed_chain(&unsigned, 25, None);
        let summary = super::super::verify_file_signed(unsigned.file(), &key(1)).expect("chain");
        assert_eq!((summary.checkpoints, summary.unsigned_tail), (0, 25));
    }

    #[test]
    fn a_cut_tail_shows_as_records_no_checkpoint_vouches_for() {
        let dir = TempDir::new();
        signed_chain(&dir, 25, Some(key(1)));
        // Cut the final checkpoint (the last line) off.
        let text = std::fs::read_to_string(dir.file()).expect("read");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.pop();
        std::fs::write(dir.file(), lines.join("\n") + "\n").expect("write");
        let summary = super::super::verify_file_signed(dir.file(), &key(1)).expect("chain");
        assert_eq!(
            (summary.lines, summary.checkpoints, summary.unsigned_tail),
            (27, 2, 5)
        );
    }
}
