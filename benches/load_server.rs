//! The server of the end-to-end load test (`scripts/load.sh`): one axum application
//! served three times on loopback, so that a load generator can compare them in one run.
//!
//! - `plain`: the application alone;
//! - `headers`: the application alone, answering with `RateLimit-Policy` and `RateLimit`
//!   headers as long as keygate's (a control: what sending those headers costs in HTTP);
//! - `stack`: behind tower-http's `ValidateRequestHeaderLayer` comparing the key with `==`
//!   and tower_governor's `GovernorLayer` keyed by it (what users assemble today);
//! - `guarded`: behind keygate as the coordinator example sets it up (in-memory registry,
//!   per-principal rate limit, failed-attempt limiter, client address from `ConnectInfo`),
//!   with a quota no load test uses up, so that every request is admitted;
//! - `audited`: the same, plus a hash-chained JSON-lines audit log written on the request
//!   thread (`JsonLinesSink`: one record and one `write` per request, to a temporary file
//!   removed at exit);
//! - `queued`: the same, with the log written as the coordinator example writes it, from
//!   a queue by a writer thread, in batches (`BackgroundSink`, default options).
//!
//! The application (`support/server.rs`) is one route of the coordinator example,
//! `GET /coordinator/jobs/{id}`, answering a job as JSON from memory. The coordinator
//! example itself cannot serve without its guard (its handlers need the `Principal`) and
//! limits each coordinator to 100 requests a minute, so it cannot be the unguarded side of
//! the comparison.
//!
//! ```text
//! load_server [--workers N] [--seconds S]
//! ```
//!
//! Prints one line, `plain=<url> headers=<url> stack=<url> guarded=<url> audited=<url>
//! queued=<url> key=<key>`, then serves until
//! interrupted or terminated, or for `S` seconds (default 600), whichever comes first. `N` is the number of
//! tokio worker threads (default 1). Not run by `cargo bench` (`bench = false`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use keygate::{ApiKey, KeyPrefix};
use tokio::signal::unix::{SignalKind, signal};

// Not every helper is used by every binary that shares this module.
#[allow(dead_code)]
#[path = "support/server.rs"]
mod server;

use server::{Audit, application, guard, routes, serve, stack};

fn main() {
    let mut workers: usize = 1;
    let mut seconds: u64 = 600;
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|value| value.parse::<u64>().ok());
        match (arg.as_str(), value) {
            ("--workers", Some(n @ 1..=1024)) => workers = n as usize,
            ("--seconds", Some(n @ 1..)) => seconds = n,
            _ => {
                eprintln!("usage: load_server [--workers N] [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");

    let key = ApiKey::generate(&KeyPrefix::default())
        .expect("key generation")
        .0;
    let audit_log =
        std::env::temp_dir().join(format!("keygate-load-audit-{}.jsonl", std::process::id()));
    let queued_log = std::env::temp_dir().join(format!(
        "keygate-load-audit-queued-{}.jsonl",
        std::process::id()
    ));
    runtime.block_on(async {
        let plain = serve(application()).await;
        let headers = serve(routes(true)).await;
        let stack = serve(stack(application(), &key)).await;
        let guarded = serve(application().layer(guard(&key, Audit::None, true))).await;
        let audited = serve(application().layer(guard(&key, Audit::Sync(&audit_log), true))).await;
        let queued =
            serve(application().layer(guard(&key, Audit::Queued(&queued_log), true))).await;
        println!(
            "plain={plain} headers={headers} stack={stack} guarded={guarded} audited={audited} \
             queued={queued} key={}",
            key.expose_secret()
        );
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    });
    let _ = std::fs::remove_file(&audit_log);
    let _ = std::fs::remove_file(&queued_log);
}
