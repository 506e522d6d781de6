//! `AuditSink::record` of the JSON-lines audit log, as the request thread pays for it:
//!
//! - `record/sync`: `JsonLinesSink` on its own: serializes, chains and writes the event
//!   (one `write` to the file) before it returns;
//! - `record/queued`: the same file behind `BackgroundSink` (default options) while its
//!   queue has room: the event is moved into the queue, and the writer thread serializes
//!   and writes it meanwhile, on another core. Recorded in bursts of 1,024 (a quarter of
//!   the queue), each followed, outside the timed part, by `flush()`, so that the queue
//!   never fills;
//! - `record/queued_saturated`: recording without pause, so that the queue stays full and
//!   each record waits for room: the writer's batched throughput, what bounds sustained
//!   recording.
//!
//! Each event is what the guard records for an admitted request (principal, key id,
//! workspace, action, client address, user agent), built outside the timed part. The
//! files go to the system temp dir and are removed after each row.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use keygate::{
    AuditEvent, AuditSink, KeyId, Outcome,
    audit::{Background, JsonLinesSink},
};

/// Records per timed burst of `record/queued`.
const BURST: u64 = 1024;

pub(crate) fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audit");
    group.throughput(Throughput::Elements(1));
    let key_id: KeyId = "AbCdEf012345".parse().expect("key id");
    let event = move || {
        AuditEvent::new("POST /coordinator/jobs", Outcome::Admitted)
            .with_request_id("7d0c4bd2-9a51-4cf4-8f57-2b1f43e0a6d3")
            .with_principal_id("coordinator-1")
            .with_key_id(key_id)
            .with_workspace("render")
            .with_client_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)))
            .with_user_agent("python-requests/2.32.3")
    };

    let path = temp_file("sync");
    let sink = JsonLinesSink::open(&path).expect("open");
    group.bench_function(BenchmarkId::new("record", "sync"), |b| {
        b.iter_batched(event, |event| sink.record(event), BatchSize::SmallInput);
    });
    assert_eq!(sink.write_errors(), 0);
    drop(sink);
    let _ = std::fs::remove_file(&path);

    let path = temp_file("queued");
    let sink = JsonLinesSink::open(&path)
        .expect("open")
        .background(Background::default())
        .expect("writer");
    group.bench_function(BenchmarkId::new("record", "queued"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let burst = left.min(BURST);
                let events: Vec<AuditEvent> = (0..burst).map(|_| event()).collect();
                let start = Instant::now();
                for event in events {
                    sink.record(event);
                }
                timed += start.elapsed();
                sink.flush();
                left -= burst;
            }
            timed
        });
    });
    assert_eq!((sink.write_errors(), sink.dropped()), (0, 0));
    drop(sink);
    let _ = std::fs::remove_file(&path);

    let path = temp_file("saturated");
    let sink = JsonLinesSink::open(&path)
        .expect("open")
        .background(Background::default())
        .expect("writer");
    group.bench_function(BenchmarkId::new("record", "queued_saturated"), |b| {
        b.iter_batched(event, |event| sink.record(event), BatchSize::SmallInput);
    });
    assert_eq!((sink.write_errors(), sink.dropped()), (0, 0));
    drop(sink);
    let _ = std::fs::remove_file(&path);

    group.finish();
}

/// A fresh file in the system temp dir for the row `name`.
fn temp_file(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "keygate-bench-audit-{name}-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}
