//! [`verify_chain`] and [`verify_file`]: check a whole chain and report the first broken
//! line.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::format::{GENESIS, parse_line};
use crate::audit::AuditError;

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
        let parsed = parse_line(text).map_err(broken)?;
        if parsed.prev != prev {
            return Err(broken(ChainErrorKind::PrevMismatch));
        }
        if parsed.seq != line {
            return Err(broken(ChainErrorKind::SeqMismatch));
        }
        prev = parsed.hash;
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

    #[test]
    fn verify_file_reports_a_missing_file_as_io() {
        let dir = TempDir::new();
        let err = verify_file(dir.0.join("absent.jsonl")).expect_err("missing");
        assert!(matches!(err, AuditError::Io(_)), "{err:?}");
    }
}
