//! Audit events and where they go.
//!
//! Every authentication decision (a request admitted or refused) and every action a
//! handler reports becomes one [`AuditEvent`]: when, which request, who (principal and
//! [`KeyId`](crate::KeyId), never the secret), in which workspace, what was attempted, how it ended
//! and why, from which address and user agent. An [`AuditSink`] receives the events:
//!
//! - [`MemorySink`] keeps them in memory, for tests and small tools;
//! - [`TracingSink`] turns each one into a `tracing` event with target `keygate::audit`;
//! - [`JsonLinesSink`] appends them to a hash-chained JSON-lines file, which
//!   [`verify_chain`] / [`verify_file`] check afterwards; on its own it writes each event
//!   on the recording thread, and [`JsonLinesSink::background`] makes it a
//!   [`BackgroundSink`] (recommended for servers): the request thread hands the event to
//!   a bounded queue, and a writer thread writes what is queued in batches, one `write`
//!   each (see [`Durability`] for what a crash or a power loss can lose, and [`WhenFull`]
//!   for what happens when the queue is full).
//!
//! A pair of sinks is a sink too: `(TracingSink::new(), file_sink)` records to both. An
//! [`AggregatingSink`] in front of any of them counts the refusals of unauthenticated
//! callers per client and reason instead of writing one record each, so that a flood of
//! bad requests cannot fill the disk.
//!
//! # Examples
//!
//! Collect events in memory:
//!
//! ```
//! use keygate::audit::{AuditEvent, AuditSink, MemorySink, Outcome};
//!
//! let sink = MemorySink::new();
//! sink.record(
//!     AuditEvent::new("POST /coordinator/jobs", Outcome::Refused)
//!         .with_reason("invalid_credentials")
//!         .with_client_ip("203.0.113.7".parse()?),
//! );
//!
//! let events = sink.events();
//! assert_eq!(events.len(), 1);
//! assert_eq!(events[0].outcome, Outcome::Refused);
//! assert_eq!(events[0].reason.as_deref(), Some("invalid_credentials"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Append to a hash-chained file and verify it:
//!
//! ```
//! use keygate::audit::{verify_file, AuditEvent, AuditSink, JsonLinesSink, Outcome};
//!
//! # let dir = std::env::temp_dir().join(format!("keygate-audit-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("audit.jsonl");
//! let sink = JsonLinesSink::open(&path)?;
//! sink.record(AuditEvent::new("job.create", Outcome::Succeeded).with_workspace("render"));
//! sink.record(AuditEvent::new("job.fail", Outcome::Failed).with_reason("timeout"));
//! assert_eq!(sink.write_errors(), 0);
//!
//! let summary = verify_file(&path)?;
//! assert_eq!(summary.lines, 2);
//! # drop(sink);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The chain format
//!
//! [`JsonLinesSink`] writes one JSON object per line (UTF-8, `\n`-terminated):
//!
//! ```text
//! {"seq":1,"prev":"0000…0000","timestamp":"2026-11-23T10:00:00.123456Z",…,"hash":"<64 hex>"}
//! {"seq":2,"prev":"<hash of line 1>","timestamp":…,…,"hash":"<64 hex>"}
//! ```
//!
//! - `seq` is first: the record's number, starting at 1 and growing by one per line.
//! - `prev` is second: the previous line's `hash` (64 lowercase hex digits), or 64 zeros
//!   on the first line.
//! - Then the [`AuditEvent`] fields, in declaration order (see its `Serialize` form).
//! - `hash` is last: the lowercase hex SHA-256 of the line's bytes up to, but excluding,
//!   the suffix `,"hash":"<64 hex>"`, followed by the closing `}`. In other words, the
//!   hash of the same JSON object without its `hash` field, exactly as written.
//!
//! The verifier works on the raw text and never re-serializes: it strips the
//! fixed-length suffix `,"hash":"<64 hex>"}` (75 bytes), hashes the rest plus `}`, and
//! compares. It then checks that `prev` equals the previous line's `hash` and that `seq`
//! is the previous one plus one, and reports the first line that fails (see
//! [`ChainErrorKind`]): an edited line is reported at that line, a removed line at the
//! line after the gap, two swapped lines at the first of them. A final newline is
//! optional; a truncated last line is [`ChainErrorKind::Unparseable`].
//!
//! # What the chain proves
//!
//! The chain makes a file internally consistent: a line cannot be edited, removed,
//! inserted or moved without breaking it, and a file cut short ends at a whole record.
//! On its own it is not a signature. Someone who can rewrite the file can recompute
//! every hash after the point they changed, and can drop records from the end.
//!
//! **Signed checkpoints** close most of that gap: with
//! [`JsonLinesSink::with_checkpoints`], a record with action
//! [`CHECKPOINT_ACTION`] is written every N records and when the sink is dropped; its
//! `target` is `hmac-sha256:<hex>`, an HMAC (keyed with a [`CheckpointKey`] kept away from
//! the file) over its own `seq` and `prev`, so it vouches for every line before it.
//! [`verify_file_signed`] checks each checkpoint and counts the records after the last
//! one ([`ChainSummary::unsigned_tail`]): a file rewritten without the key fails at its
//! first checkpoint or carries none; a cut tail shows as records no checkpoint vouches
//! for (after a clean shutdown there are none). What no in-file mark can show is a file
//! cut exactly after an earlier checkpoint: for that, keep [`ChainSummary::last_hash`]
//! and the line count (or [`JsonLinesSink::last_seq`] and
//! [`last_hash`](JsonLinesSink::last_hash)) somewhere the writer of the file cannot
//! change — another system, a ticket — and compare later.

mod aggregate;
mod error;
mod event;
mod jsonl;
mod memory;
mod request;
mod sink;
mod timestamp;
mod tracing_sink;

pub use self::aggregate::{
    AggregatingSink, DEFAULT_AGGREGATION_CAPACITY, DEFAULT_AGGREGATION_INTERVAL,
};
pub use self::error::AuditError;
pub use self::event::{AuditEvent, Outcome};
pub use self::jsonl::{
    Background, BackgroundSink, CHECKPOINT_ACTION, ChainError, ChainErrorKind, ChainSummary,
    CheckpointKey, CheckpointKeyError, Durability, JsonLinesSink, MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS, MAX_LINE_LEN, MIN_CHECKPOINT_KEY_LEN, WhenFull, verify_chain,
    verify_chain_signed, verify_file, verify_file_signed,
};
pub use self::memory::MemorySink;
pub(crate) use self::request::{MAX_FIELD, RequestFacts, truncate};
pub use self::sink::AuditSink;
pub use self::tracing_sink::TracingSink;
