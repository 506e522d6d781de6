//! [`JsonLinesSink`]: appends events to a file as chained lines.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::ChainErrorKind;
use super::format::{GENESIS, MAX_LINE_LEN, encode_line, parse_line};
use crate::audit::{AuditError, AuditEvent, AuditSink};

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
/// One sink per file: two writers, in one process or several, break the chain.
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
}

/// The rate limit on failure logs: one line per [`REPORT_EVERY`] at most.
#[derive(Default)]
struct Report {
    at: Option<Instant>,
    unreported: u64,
}

/// How often a run of write failures is logged: the first at once, then a summary at
/// most every 10 seconds.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The end of the chain, as written so far.
struct ChainState {
    file: File,
    /// `seq` of the last line; 0 for an empty file.
    seq: u64,
    /// `hash` of the last line; [`GENESIS`] for an empty file.
    hash: String,
    /// File length after the last whole line, to cut off a partial write.
    len: u64,
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
        let mut len = file.metadata()?.len();

        let (seq, hash) = if len == 0 {
            (0, GENESIS.to_owned())
        } else {
            let tail = read_last_line(&mut file, len)?;
            let record = tail
                .line
                .ok_or(ChainErrorKind::Unparseable)
                .and_then(|line| parse_line(&line))
                .map_err(|kind| AuditError::BrokenTail { kind })?;
            if !tail.terminated {
                file.write_all(b"\n")?;
                len += 1;
            }
            (record.seq, record.hash)
        };

        Ok(JsonLinesSink {
            path,
            state: Mutex::new(ChainState {
                file,
                seq,
                hash,
                len,
            }),
            write_errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            reported: Mutex::new(Report::default()),
        })
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
        self.lock().hash.clone()
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

    /// Writes `event` as the next line.
    fn append(&self, event: &AuditEvent) -> io::Result<()> {
        // Serialize outside the lock; only linking and writing are serialized.
        let fields = serde_json::to_vec(event)?;
        let mut state = self.lock();
        let seq = state
            .seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("audit sequence number overflow"))?;
        let (line, hash) = encode_line(seq, &state.hash, &fields)?;
        if line.len() > MAX_LINE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "audit line longer than 1 MiB",
            ));
        }
        if let Err(err) = state
            .file
            .write_all(&line)
            .and_then(|()| state.file.flush())
        {
            // A partial line would break the chain for every line after it.
            let len = state.len;
            if let Err(truncate) = state.file.set_len(len) {
                tracing::error!(
                    target: "keygate::audit",
                    path = %self.path.display(),
                    error = %truncate,
                    "could not cut off a partial audit line; the chain may be broken here",
                );
            }
            return Err(err);
        }
        state.seq = seq;
        state.hash = hash;
        state.len += line.len() as u64;
        Ok(())
    }
}

impl AuditSink for JsonLinesSink {
    fn record(&self, event: AuditEvent) {
        match self.append(&event) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "keygate::audit",
                        path = %self.path.display(),
                        lost = self.write_errors(),
                        "audit events are written again",
                    );
                }
            }
            Err(err) => {
                let lost = self.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
                self.failing.store(true, Ordering::Relaxed);
                self.report(&err, &event, lost);
            }
        }
    }

    fn healthy(&self) -> bool {
        !self.failing.load(Ordering::Relaxed)
    }
}

impl JsonLinesSink {
    /// Logs a write failure: the first of a run at once, then at most one line per
    /// [`REPORT_EVERY`] with the number lost meanwhile, so that a full disk under a flood
    /// does not become a flood of log lines.
    fn report(&self, err: &io::Error, event: &AuditEvent, lost: u64) {
        let mut report = self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if report
            .at
            .is_some_and(|at| now.duration_since(at) < REPORT_EVERY)
        {
            report.unreported += 1;
            return;
        }
        let unreported = std::mem::take(&mut report.unreported);
        report.at = Some(now);
        drop(report);
        tracing::error!(
            target: "keygate::audit",
            path = %self.path.display(),
            error = %err,
            action = event.action.as_str(),
            outcome = event.outcome.as_str(),
            lost_since_last_report = unreported + 1,
            lost_in_all = lost,
            "could not write audit events; they are lost",
        );
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

    use super::super::testing::{TempDir, chain_of, event};
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
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    for i in 0..PER_THREAD {
                        sink.record(event(t * PER_THREAD + i));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("thread");
        }
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
        let Ok(sink) = JsonLinesSink::open("/dev/full") else {
            return; // no /dev/full here
        };
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
}
