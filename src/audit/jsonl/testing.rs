//! What the chain tests share: a temporary directory, events, and chains of them.

#![allow(clippy::expect_used)] // tests may panic

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ChainError, ChainErrorKind, ChainSummary, JsonLinesSink, verify_chain};
use crate::audit::{AuditEvent, AuditSink, Outcome};

/// A directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> Self {
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

    pub(super) fn file(&self) -> PathBuf {
        self.0.join("audit.jsonl")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn event(n: usize) -> AuditEvent {
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
pub(super) fn chain_of(n: usize) -> (TempDir, Vec<String>) {
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

pub(super) fn verify_lines(lines: &[String]) -> Result<ChainSummary, ChainError> {
    let mut text = lines.join("\n");
    text.push('\n');
    verify_chain(text.as_bytes())
}

pub(super) fn broken_at(lines: &[String]) -> (u64, ChainErrorKind) {
    let err = verify_lines(lines).expect_err("chain must be broken");
    (err.line, err.kind)
}
