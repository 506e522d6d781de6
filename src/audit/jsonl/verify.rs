//! [`verify_chain`] and [`verify_file`]: check a whole chain and report the first broken
//! line.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::checkpoint::CheckpointKey;
use super::format::{GENESIS, MAX_LINE_LEN, parse_line};
use crate::audit::AuditError;

/// What [`verify_chain`] found in an unbroken chain.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainSummary {
    /// How many records the chain holds, checkpoints included.
    pub lines: u64,
    /// `hash` of the last record; 64 zeros if there is none. Keep it (with `lines`)
    /// somewhere the file's writer cannot change, to detect a shortened file later.
    pub last_hash: String,
    /// How many checkpoints were checked with the key: 0 from [`verify_chain`], which has
    /// no key.
    pub checkpoints: u64,
    /// How many records follow the last checked checkpoint (all of them without one):
    /// records that no signature vouches for. A sink dropped cleanly leaves none; a
    /// crash leaves the records written since its last checkpoint; so does a file cut
    /// short, or rewritten without the key.
    pub unsigned_tail: u64,
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
    /// The line is longer than [`MAX_LINE_LEN`] bytes, its newline included: the sink
    /// never writes such a line. Reading stops there, without holding the line in memory.
    #[error("the line is longer than the longest line the sink writes")]
    TooLong,
    /// A checkpoint whose signature is not the key's: the file was rewritten (or is
    /// checked with the wrong key).
    #[error("the checkpoint's signature does not verify with the key")]
    BadCheckpoint,
    /// The line could not be read.
    #[error("the line could not be read")]
    Io(#[source] io::Error),
}

/// Checks a hash chain written by [`JsonLinesSink`](super::JsonLinesSink), line by line, and reports the
/// first broken line.
///
/// Each line's hash is recomputed from its raw text; then its `prev` must be the
/// previous line's hash (64 zeros on line 1) and its `seq` its line number. An edited
/// line is reported at that line ([`HashMismatch`](ChainErrorKind::HashMismatch)); a
/// removed line at the line after the gap and two swapped lines at the first of them
/// ([`PrevMismatch`](ChainErrorKind::PrevMismatch)). A final newline is optional; an
/// empty input is an empty chain.
///
/// Lines are read in the reader's chunks and held one at a time, at most
/// [`MAX_LINE_LEN`] bytes (newline included, the bound the sink writes under): a longer
/// line is reported as [`TooLong`](ChainErrorKind::TooLong) at that line as soon as the
/// bound is passed, without reading the rest of it, so memory stays bounded whatever the
/// input.
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
pub fn verify_chain(reader: impl BufRead) -> Result<ChainSummary, ChainError> {
    verify(reader, None)
}

/// [`verify_chain`], and every checkpoint's signature checked with `key`
/// ([`JsonLinesSink::with_checkpoints`](super::JsonLinesSink::with_checkpoints)). The
/// summary says how many checkpoints verified and how many records follow the last one
/// ([`unsigned_tail`](ChainSummary::unsigned_tail)): without the key, a rewritten file
/// cannot carry checkpoints that verify.
///
/// # Errors
///
/// As [`verify_chain`], and [`ChainErrorKind::BadCheckpoint`] at the first checkpoint
/// whose signature does not verify.
pub fn verify_chain_signed(
    reader: impl BufRead,
    key: &CheckpointKey,
) -> Result<ChainSummary, ChainError> {
    verify(reader, Some(key))
}

fn verify(
    mut reader: impl BufRead,
    key: Option<&CheckpointKey>,
) -> Result<ChainSummary, ChainError> {
    let mut checkpoints = 0;
    let mut unsigned_tail = 0;
    let mut prev = GENESIS.to_owned();
    let mut lines = 0_u64;
    let mut buf = Vec::new();
    loop {
        let line = lines + 1;
        let broken = |kind| ChainError { line, kind };
        match read_line(&mut reader, &mut buf).map_err(|err| broken(ChainErrorKind::Io(err)))? {
            Read::End => break,
            Read::TooLong => return Err(broken(ChainErrorKind::TooLong)),
            Read::Line => {}
        }
        let parsed = parse_line(&buf).map_err(broken)?;
        if parsed.prev != prev {
            return Err(broken(ChainErrorKind::PrevMismatch));
        }
        if parsed.seq != line {
            return Err(broken(ChainErrorKind::SeqMismatch));
        }
        match (key, &parsed.checkpoint) {
            (Some(key), Some(target)) => {
                if !key.verifies(parsed.seq, &parsed.prev, target) {
                    return Err(broken(ChainErrorKind::BadCheckpoint));
                }
                checkpoints += 1;
                unsigned_tail = 0;
            }
            _ => unsigned_tail += 1,
        }
        prev = parsed.hash;
        lines = line;
    }
    Ok(ChainSummary {
        lines,
        last_hash: prev,
        checkpoints,
        unsigned_tail,
    })
}

/// What [`read_line`] found.
enum Read {
    /// The end of the input: no more lines.
    End,
    /// A line, now in the buffer without its newline.
    Line,
    /// A line longer than [`MAX_LINE_LEN`], newline included.
    TooLong,
}

/// Reads the next line into `buf`, without its newline, in the reader's own chunks:
/// `buf` never holds more than `MAX_LINE_LEN - 1` bytes, however long the line.
fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Read> {
    // The sink's bound counts the newline.
    const MAX_TEXT: usize = MAX_LINE_LEN - 1;
    buf.clear();
    let mut started = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(if started { Read::Line } else { Read::End });
        }
        started = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let text = &available[..newline.unwrap_or(available.len())];
        let len = buf.len() + text.len();
        if len > MAX_TEXT {
            return Ok(Read::TooLong);
        }
        if len > buf.capacity() {
            // Grow geometrically, but never past the bound.
            let capacity = len.max(buf.capacity().saturating_mul(2)).min(MAX_TEXT);
            buf.reserve_exact(capacity - buf.len());
        }
        buf.extend_from_slice(text);
        let used = text.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(Read::Line);
        }
    }
}

/// [`verify_chain`] on the file at `path`.
///
/// A record edited after it was written is found, with its line:
///
/// ```
/// use keygate::audit::{verify_file, AuditError, AuditEvent, AuditSink, ChainErrorKind, JsonLinesSink, Outcome};
///
/// # let dir = std::env::temp_dir().join(format!("keygate-verify-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let path = dir.join("audit.jsonl");
/// let sink = JsonLinesSink::open(&path)?;
/// sink.record(AuditEvent::new("key.revoke", Outcome::Succeeded));
/// sink.record(AuditEvent::new("key.revoke", Outcome::Refused));
/// drop(sink);
/// assert_eq!(verify_file(&path)?.lines, 2);
///
/// let text = std::fs::read_to_string(&path)?;
/// std::fs::write(&path, text.replacen("refused", "succeeded", 1))?;
/// let Err(AuditError::Chain(broken)) = verify_file(&path) else { panic!("an edit goes unseen") };
/// assert_eq!(broken.line, 2);
/// assert!(matches!(broken.kind, ChainErrorKind::HashMismatch));
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`AuditError::Io`] if the file cannot be opened, [`AuditError::Chain`] if the chain
/// is broken or cannot be read.
pub fn verify_file(path: impl AsRef<Path>) -> Result<ChainSummary, AuditError> {
    let file = File::open(path)?;
    Ok(verify_chain(BufReader::new(file))?)
}

/// [`verify_chain_signed`] on the file at `path`.
///
/// # Errors
///
/// As [`verify_file`]; a checkpoint that does not verify is [`AuditError::Chain`] with
/// [`ChainErrorKind::BadCheckpoint`].
pub fn verify_file_signed(
    path: impl AsRef<Path>,
    key: &CheckpointKey,
) -> Result<ChainSummary, AuditError> {
    let file = File::open(path)?;
    Ok(verify_chain_signed(BufReader::new(file), key)?)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use std::io::Read;

    use sha2::{Digest, Sha256};

    use super::super::JsonLinesSink;
    use super::super::format::{SUFFIX_LEN, encode_line};
    use super::super::testing::{TempDir, broken_at, chain_of, event, verify_lines};
    use super::*;
    use crate::audit::AuditSink;

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

    /// A valid single-record chain whose line, newline included, is `len` bytes long.
    fn record_of_len(len: usize) -> Vec<u8> {
        let line = |padding: usize| {
            let fields = serde_json::to_vec(&event(0).with_user_agent("x".repeat(padding)))
                .expect("serialize");
            encode_line(1, GENESIS, &fields).expect("line").0
        };
        let base = line(0).len();
        let record = line(len - base);
        assert_eq!(record.len(), len);
        record
    }

    #[test]
    fn line_at_the_bound_verifies() {
        let record = record_of_len(MAX_LINE_LEN);
        assert_eq!(verify_chain(&record[..]).expect("valid").lines, 1);
        // Without its final newline too.
        let unterminated = &record[..record.len() - 1];
        assert_eq!(verify_chain(unterminated).expect("valid").lines, 1);
    }

    #[test]
    fn line_just_over_the_bound_is_too_long_at_that_line() {
        let (_dir, lines) = chain_of(2);
        let mut text = lines.join("\n").into_bytes();
        text.push(b'\n');
        // One byte over: MAX_LINE_LEN bytes before the newline.
        text.extend(std::iter::repeat_n(b'a', MAX_LINE_LEN));
        text.push(b'\n');
        let err = verify_chain(&text[..]).expect_err("broken");
        assert_eq!(err.line, 3);
        assert!(
            matches!(err.kind, ChainErrorKind::TooLong),
            "{:?}",
            err.kind
        );
        assert_eq!(
            err.to_string(),
            "audit chain broken at line 3: the line is longer than the longest line the sink \
             writes"
        );
        // The same line without a final newline.
        text.pop();
        let err = verify_chain(&text[..]).expect_err("broken");
        assert_eq!(err.line, 3);
        assert!(
            matches!(err.kind, ChainErrorKind::TooLong),
            "{:?}",
            err.kind
        );
    }

    #[test]
    fn huge_line_is_refused_without_being_read_into_memory() {
        // A 1 GiB line, produced lazily: reading it whole would take a gigabyte and
        // seconds; the verifier stops after the bound.
        let (_dir, lines) = chain_of(1);
        let first = format!("{}\n", lines[0]);
        let huge = io::repeat(b'a').take(1 << 30);
        let reader = BufReader::new(first.as_bytes().chain(huge));
        let started = std::time::Instant::now();
        let err = verify_chain(reader).expect_err("broken");
        assert_eq!(err.line, 2);
        assert!(
            matches!(err.kind, ChainErrorKind::TooLong),
            "{:?}",
            err.kind
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn verify_file_reports_a_missing_file_as_io() {
        let dir = TempDir::new();
        let err = verify_file(dir.0.join("absent.jsonl")).expect_err("missing");
        assert!(matches!(err, AuditError::Io(_)), "{err:?}");
    }
}
