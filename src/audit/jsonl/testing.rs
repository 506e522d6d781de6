//! What the chain tests share: a temporary directory, events, and chains of them.

#![allow(clippy::expect_used)] // tests may panic

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ChainError, ChainErrorKind, ChainSummary, JsonLinesSink, verify_chain};
use crate::audit::{AuditEvent, AuditSink, Outcome};

/// Records `per_thread` events (numbered apart) from each of `threads` threads at once,
/// and waits for them all.
pub(super) fn record_from_threads<S: AuditSink>(
    sink: &std::sync::Arc<S>,
    threads: usize,
    per_thread: usize,
) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let sink = std::sync::Arc::clone(sink);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    sink.record(event(t * per_thread + i));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
}

/// A sink on `/dev/full` (every write fails with `ENOSPC`), and this test's turn with it:
/// `/dev/full` is one file for every test, and a sink on it holds its lock (`flock`)
/// until it is dropped, so the tests that open it take turns. Keep the turn until the
/// sink is dropped. Fails the test, rather than passing it, where `/dev/full` cannot be
/// opened.
#[cfg(target_os = "linux")]
pub(super) fn on_dev_full() -> (std::sync::MutexGuard<'static, ()>, JsonLinesSink) {
    static DEV_FULL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let turn = DEV_FULL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let sink = JsonLinesSink::open("/dev/full").expect("/dev/full (Linux) opens for appending");
    (turn, sink)
}

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

/// A named pipe that holds a sink's writer in its `write` until the test lets it go: a
/// sink opened on it (read and write, so opening does not wait) writes into the pipe's
/// buffer (64 KiB), and a line longer than that blocks until [`Pipe::release`] lets a
/// reader drain it. What went through the pipe is returned by [`Pipe::finish`].
#[cfg(unix)]
pub(super) struct Pipe {
    pub(super) path: PathBuf,
    started: Option<std::sync::mpsc::Receiver<()>>,
    release: Option<std::sync::mpsc::Sender<()>>,
    reader: Option<std::thread::JoinHandle<Vec<u8>>>,
}

#[cfg(unix)]
impl Pipe {
    /// Makes the pipe `audit.pipe` in `dir` (with `mkfifo`).
    pub(super) fn new(dir: &TempDir) -> Self {
        let path = dir.0.join("audit.pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .expect("run mkfifo");
        assert!(made.success(), "mkfifo failed");
        Pipe {
            path,
            started: None,
            release: None,
            reader: None,
        }
    }

    /// Starts the reader (call it once a sink holds the pipe open): it reads one chunk
    /// (at most 4 KiB), then waits for [`release`](Self::release).
    pub(super) fn start_reader(&mut self) {
        use std::io::Read;

        let (started, started_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let path = self.path.clone();
        self.reader = Some(std::thread::spawn(move || {
            let mut pipe = std::fs::File::open(path).expect("open the pipe for reading");
            let mut bytes = vec![0_u8; 4096];
            let first = pipe.read(&mut bytes).expect("read the pipe");
            bytes.truncate(first);
            let _ = started.send(());
            let _ = release_rx.recv();
            pipe.read_to_end(&mut bytes).expect("read the pipe");
            bytes
        }));
        self.started = Some(started_rx);
        self.release = Some(release);
    }

    /// Waits until the writer has begun writing: it is now inside its `write`, and stays
    /// there while its batch holds more than the pipe's buffer.
    pub(super) fn wait_for_writer(&mut self) {
        self.started
            .take()
            .expect("start_reader first")
            .recv()
            .expect("the reader read");
    }

    /// Lets the reader drain the pipe (and so the writer go on).
    pub(super) fn release(&mut self) {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
    }

    /// Everything written to the pipe; call it once the sink is dropped (the pipe ends
    /// when its last writer closes it).
    pub(super) fn finish(mut self) -> Vec<u8> {
        self.release();
        self.reader
            .take()
            .expect("start_reader first")
            .join()
            .expect("reader")
    }
}

/// An event whose line is far longer than a pipe's buffer (512 KiB).
#[cfg(unix)]
pub(super) fn huge_event() -> AuditEvent {
    event(0).with_user_agent("h".repeat(512 * 1024))
}
