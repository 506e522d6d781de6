//! [`JsonLinesSink`]: a hash-chained JSON-lines file, and its verifier.
//!
//! The format is described in the [module documentation](super#the-chain-format).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{AuditError, AuditEvent, AuditSink};

/// `prev` of the first line: 64 zeros.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What precedes the hash at the end of a line.
const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Hex digits in a SHA-256.
const HASH_HEX_LEN: usize = 64;
/// `,"hash":"<64 hex>"}`: 75 bytes.
const SUFFIX_LEN: usize = HASH_KEY.len() + HASH_HEX_LEN + 2;
/// Longest line the sink writes and reads back on open.
const MAX_LINE_LEN: usize = 1024 * 1024;

/// An [`AuditSink`] that appends each event to a file as one hash-chained JSON line.
///
/// See the [chain format](super#the-chain-format). Each [`record`](AuditSink::record)
/// serializes the event, links it to the previous line and writes the whole line with
/// one `write` to the file before returning, so a line that `record` returned for is in
/// the operating system's hands and survives the process exiting or crashing. (It
/// survives a power loss only once the OS writes it out; call [`sync`](Self::sync) where
/// that matters.) Records from many threads are serialized by a mutex, and line order
/// is sequence order.
///
/// `record` never fails or panics: if an event cannot be written (disk full, a line
/// longer than 1 MiB, …) it is logged with `tracing::error!` (target `keygate::audit`),
/// counted in [`write_errors`](Self::write_errors), and any partial line is cut off
/// again so that the chain stays valid. Alert on that counter: a lost audit event is an
/// incident.
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
}

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
    /// content), not the whole file: use [`verify_file`] for that. A last line without
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
        })
    }

    /// The file's path, as given to [`open`](Self::open).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many events could not be written since the sink was opened.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// `seq` of the last line in the file: the number of records it holds.
    pub fn last_seq(&self) -> u64 {
        self.lock().seq
    }

    /// `hash` of the last line in the file (64 zeros if it is empty). Keep it elsewhere
    /// to detect a rewritten or shortened file later; see
    /// [what the chain proves](super#what-the-chain-proves).
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
        if let Err(err) = self.append(&event) {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                target: "keygate::audit",
                path = %self.path.display(),
                error = %err,
                action = event.action.as_str(),
                outcome = event.outcome.as_str(),
                "could not write audit event; it is lost",
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

/// Builds line `seq` from the event's serialized `fields` (a JSON object) and the
/// previous line's hash. Returns the line, newline included, and its hash.
fn encode_line(seq: u64, prev: &str, fields: &[u8]) -> io::Result<(Vec<u8>, String)> {
    let fields = fields
        .strip_prefix(b"{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .filter(|inner| !inner.is_empty())
        .ok_or_else(|| io::Error::other("audit event did not serialize to a JSON object"))?;

    let mut line = Vec::with_capacity(fields.len() + 200);
    write!(line, "{{\"seq\":{seq},\"prev\":\"{prev}\",")?;
    line.extend_from_slice(fields);
    line.push(b'}');
    let hash = hex::encode(Sha256::digest(&line));

    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// The parts of a line the chain is made of.
#[derive(Debug)]
struct Link {
    seq: u64,
    prev: String,
    hash: String,
}

/// Checks one line (without its newline) on its own: its shape and its hash.
fn parse_line(line: &[u8]) -> Result<Link, ChainErrorKind> {
    use ChainErrorKind::{HashMismatch, Unparseable};

    #[derive(Deserialize)]
    struct Fields {
        seq: u64,
        prev: String,
        hash: String,
    }

    let split = line.len().checked_sub(SUFFIX_LEN).ok_or(Unparseable)?;
    let (content, suffix) = line.split_at(split);
    let hash = suffix
        .strip_prefix(HASH_KEY)
        .and_then(|rest| rest.strip_suffix(b"\"}"))
        .filter(|hex| is_lower_hex(hex))
        .ok_or(Unparseable)?;

    let fields: Fields = serde_json::from_slice(line).map_err(|_| Unparseable)?;
    if fields.hash.as_bytes() != hash || !is_lower_hex(fields.prev.as_bytes()) {
        return Err(Unparseable);
    }

    let mut hasher = Sha256::new();
    hasher.update(content);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()).as_bytes() != hash {
        return Err(HashMismatch);
    }
    Ok(Link {
        seq: fields.seq,
        prev: fields.prev,
        hash: fields.hash,
    })
}

/// 64 lowercase hex digits.
fn is_lower_hex(text: &[u8]) -> bool {
    text.len() == HASH_HEX_LEN && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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
    const CHUNK: u64 = 8 * 1024;

    let mut last = [0_u8; 1];
    file.seek(SeekFrom::Start(len.saturating_sub(1)))?;
    file.read_exact(&mut last)?;
    let terminated = last[0] == b'\n';

    let mut start = if terminated { len - 1 } else { len };
    let mut line = Vec::new();
    while start > 0 {
        let chunk_len = CHUNK.min(start);
        start -= chunk_len;
        // At most `CHUNK` bytes, so the cast cannot truncate.
        let mut chunk = vec![0_u8; chunk_len as usize];
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

/// What [`verify_chain`] found in an unbroken chain.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSummary {
    /// How many records the chain holds.
    pub lines: u64,
    /// `hash` of the last record; 64 zeros if there is none.
    pub last_hash: String,
}

/// Where and how a chain is broken: the first line that fails.
#[derive(Debug)]
pub struct ChainError {
    /// The line, counting from 1.
    pub line: u64,
    /// What is wrong with it.
    pub kind: ChainErrorKind,
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            ChainErrorKind::Io(_) => write!(f, "audit chain unreadable at line {}", self.line),
            kind => write!(f, "audit chain broken at line {}: {kind}", self.line),
        }
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ChainErrorKind::Io(err) => Some(err),
            _ => None,
        }
    }
}

/// What is wrong with the line a [`ChainError`] points at.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ChainErrorKind {
    /// Not a chained record: not JSON, no `seq`/`prev`, no final `"hash"` field, or cut
    /// short.
    #[error("the line is not a chained audit record")]
    Unparseable,
    /// The line was edited: its `hash` is not the hash of its content.
    #[error("hash does not match the line's content")]
    HashMismatch,
    /// The line's `prev` is not the previous line's `hash`: a line before it was
    /// removed, a line was inserted, or lines were reordered.
    #[error("prev does not match the previous line's hash")]
    PrevMismatch,
    /// The line's `seq` is not the previous line's plus one.
    #[error("seq does not follow the previous line's")]
    SeqMismatch,
    /// The line could not be read.
    #[error("the line could not be read")]
    Io(#[source] io::Error),
}

/// Checks a hash chain written by [`JsonLinesSink`], line by line, and reports the
/// first broken line.
///
/// Each line's hash is recomputed from its raw text; then its `prev` must be the
/// previous line's hash (64 zeros on line 1) and its `seq` its line number. An edited
/// line is reported at that line ([`HashMismatch`](ChainErrorKind::HashMismatch)); a
/// removed line at the line after the gap and two swapped lines at the first of them
/// ([`PrevMismatch`](ChainErrorKind::PrevMismatch)). A final newline is optional; an
/// empty input is an empty chain.
///
/// ```
/// use keygate::audit::{verify_chain, ChainErrorKind};
///
/// let summary = verify_chain("".as_bytes())?;
/// assert_eq!(summary.lines, 0);
///
/// let err = verify_chain(r#"{"seq":1}"#.as_bytes()).unwrap_err();
/// assert_eq!(err.line, 1);
/// assert!(matches!(err.kind, ChainErrorKind::Unparseable));
/// # Ok::<(), keygate::audit::ChainError>(())
/// ```
///
/// # Errors
///
/// A [`ChainError`] with the first failing line, counting from 1.
pub fn verify_chain(mut reader: impl BufRead) -> Result<ChainSummary, ChainError> {
    let mut prev = GENESIS.to_owned();
    let mut lines = 0_u64;
    let mut buf = Vec::new();
    loop {
        let line = lines + 1;
        let broken = |kind| ChainError { line, kind };
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|err| broken(ChainErrorKind::Io(err)))?;
        if read == 0 {
            break;
        }
        let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let link = parse_line(text).map_err(broken)?;
        if link.prev != prev {
            return Err(broken(ChainErrorKind::PrevMismatch));
        }
        if link.seq != line {
            return Err(broken(ChainErrorKind::SeqMismatch));
        }
        prev = link.hash;
        lines = line;
    }
    Ok(ChainSummary {
        lines,
        last_hash: prev,
    })
}

/// [`verify_chain`] on the file at `path`.
///
/// # Errors
///
/// [`AuditError::Io`] if the file cannot be opened, [`AuditError::Chain`] if the chain
/// is broken or cannot be read.
pub fn verify_file(path: impl AsRef<Path>) -> Result<ChainSummary, AuditError> {
    let file = File::open(path)?;
    Ok(verify_chain(BufReader::new(file))?)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use crate::audit::Outcome;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "keygate-audit-test-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
            ));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        fn file(&self) -> PathBuf {
            self.0.join("audit.jsonl")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn event(n: usize) -> AuditEvent {
        let outcome = if n.is_multiple_of(2) {
            Outcome::Admitted
        } else {
            Outcome::Refused
        };
        AuditEvent::new(format!("POST /coordinator/jobs/{n}"), outcome)
            .with_key_id("AbCdEf012345".parse().expect("key id"))
            .with_workspace("render")
    }

    /// A file holding `n` chained events, and its lines.
    fn chain_of(n: usize) -> (TempDir, Vec<String>) {
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file()).expect("open");
        for i in 0..n {
            sink.record(event(i));
        }
        assert_eq!(sink.write_errors(), 0);
        let text = std::fs::read_to_string(dir.file()).expect("read");
        let lines = text.lines().map(str::to_owned).collect();
        (dir, lines)
    }

    fn verify_lines(lines: &[String]) -> Result<ChainSummary, ChainError> {
        let mut text = lines.join("\n");
        text.push('\n');
        verify_chain(text.as_bytes())
    }

    fn broken_at(lines: &[String]) -> (u64, ChainErrorKind) {
        let err = verify_lines(lines).expect_err("chain must be broken");
        (err.line, err.kind)
    }

    #[test]
    fn chain_of_n_events_verifies() {
        let dir = TempDir::new();
        let sink = JsonLinesSink::open(dir.file()).expect("open");
        for i in 0..100 {
            sink.record(event(i));
        }
        assert_eq!(sink.write_errors(), 0);
        assert_eq!(sink.last_seq(), 100);

        let summary = verify_file(dir.file()).expect("valid chain");
        assert_eq!(summary.lines, 100);
        assert_eq!(summary.last_hash, sink.last_hash());
    }

    #[test]
    fn line_layout_matches_the_documented_format() {
        let (_dir, lines) = chain_of(2);
        let first = &lines[0];
        assert!(
            first.starts_with(&format!(
                "{{\"seq\":1,\"prev\":\"{GENESIS}\",\"timestamp\":\""
            )),
            "{first}"
        );
        assert!(first.contains(r#""key_id":"AbCdEf012345""#), "{first}");

        // hash = SHA-256 of the line without `,"hash":"…"`, closed with `}`.
        let (content, suffix) = first.split_at(first.len() - SUFFIX_LEN);
        let hash = &suffix[HASH_KEY.len()..HASH_KEY.len() + 64];
        assert_eq!(suffix, format!(",\"hash\":\"{hash}\"}}"));
        assert_eq!(hex::encode(Sha256::digest(format!("{content}}}"))), hash);

        // The rest of the line is the event, as serialized on its own.
        let event: AuditEvent = serde_json::from_str(first).expect("line is an event");
        assert_eq!(event.action, "POST /coordinator/jobs/0");

        assert!(
            lines[1].starts_with(&format!("{{\"seq\":2,\"prev\":\"{hash}\",")),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn empty_input_is_an_empty_chain() {
        let summary = verify_chain(&b""[..]).expect("empty chain");
        assert_eq!(summary.lines, 0);
        assert_eq!(summary.last_hash, GENESIS);
    }

    #[test]
    fn missing_final_newline_is_fine() {
        let (_dir, lines) = chain_of(3);
        let text = lines.join("\n");
        assert_eq!(verify_chain(text.as_bytes()).expect("valid").lines, 3);
    }

    #[test]
    fn edited_line_is_reported_at_that_line() {
        let (_dir, mut lines) = chain_of(10);
        let edited = lines[6].replace("\"admitted\"", "\"refused\"");
        assert_ne!(edited, lines[6]);
        lines[6] = edited;
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 7);
        assert!(matches!(kind, ChainErrorKind::HashMismatch), "{kind:?}");

        let err = verify_lines(&lines).expect_err("broken");
        assert_eq!(
            err.to_string(),
            "audit chain broken at line 7: hash does not match the line's content"
        );
    }

    #[test]
    fn edited_line_with_recomputed_hash_is_reported_at_the_next_line() {
        let (_dir, mut lines) = chain_of(10);
        let edited = lines[3].replace("\"refused\"", "\"admitted\"");
        assert_ne!(edited, lines[3]);
        let content = &edited[..edited.len() - SUFFIX_LEN];
        let hash = hex::encode(Sha256::digest(format!("{content}}}")));
        lines[3] = format!("{content},\"hash\":\"{hash}\"}}");
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 5);
        assert!(matches!(kind, ChainErrorKind::PrevMismatch), "{kind:?}");
    }

    #[test]
    fn deleted_line_is_reported_at_the_line_after_the_gap() {
        let (_dir, mut lines) = chain_of(10);
        lines.remove(4);
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 5);
        assert!(matches!(kind, ChainErrorKind::PrevMismatch), "{kind:?}");
    }

    #[test]
    fn deleted_first_line_is_reported_at_line_one() {
        let (_dir, mut lines) = chain_of(3);
        lines.remove(0);
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 1);
        assert!(matches!(kind, ChainErrorKind::PrevMismatch), "{kind:?}");
    }

    #[test]
    fn swapped_lines_are_reported_at_the_first_swapped_position() {
        let (_dir, mut lines) = chain_of(10);
        lines.swap(2, 3);
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 3);
        assert!(matches!(kind, ChainErrorKind::PrevMismatch), "{kind:?}");
    }

    #[test]
    fn inserted_line_is_reported_at_that_line() {
        let (_dir, mut lines) = chain_of(5);
        let copy = lines[1].clone();
        lines.insert(3, copy);
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 4);
        assert!(matches!(kind, ChainErrorKind::PrevMismatch), "{kind:?}");
    }

    #[test]
    fn truncated_last_line_is_unparseable_at_that_line() {
        let (_dir, mut lines) = chain_of(4);
        let last = lines.pop().expect("line");
        lines.push(last[..last.len() - 10].to_owned());
        let text = lines.join("\n");
        let err = verify_chain(text.as_bytes()).expect_err("broken");
        assert_eq!(err.line, 4);
        assert!(
            matches!(err.kind, ChainErrorKind::Unparseable),
            "{:?}",
            err.kind
        );
    }

    #[test]
    fn blank_line_is_unparseable() {
        let (_dir, mut lines) = chain_of(3);
        lines.insert(1, String::new());
        let (line, kind) = broken_at(&lines);
        assert_eq!(line, 2);
        assert!(matches!(kind, ChainErrorKind::Unparseable), "{kind:?}");
    }

    #[test]
    fn wrong_seq_with_valid_links_is_a_seq_mismatch() {
        let fields = serde_json::to_vec(&event(0)).expect("serialize");
        let (first, hash) = encode_line(1, GENESIS, &fields).expect("line 1");
        let (second, _) = encode_line(3, &hash, &fields).expect("line 2");
        let text = [first, second].concat();
        let err = verify_chain(&text[..]).expect_err("broken");
        assert_eq!(err.line, 2);
        assert!(
            matches!(err.kind, ChainErrorKind::SeqMismatch),
            "{:?}",
            err.kind
        );
    }

    #[test]
    fn read_failure_is_reported_with_its_source() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk on fire"))
            }
        }
        let err = verify_chain(BufReader::new(Failing)).expect_err("unreadable");
        assert_eq!(err.line, 1);
        assert_eq!(err.to_string(), "audit chain unreadable at line 1");
        let source = std::error::Error::source(&err).expect("source");
        assert_eq!(source.to_string(), "disk on fire");
    }

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
    fn verify_file_reports_a_missing_file_as_io() {
        let dir = TempDir::new();
        let err = verify_file(dir.0.join("absent.jsonl")).expect_err("missing");
        assert!(matches!(err, AuditError::Io(_)), "{err:?}");
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
