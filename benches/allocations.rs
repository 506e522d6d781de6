//! Heap allocations per request, counted by a counting global allocator: the scenarios of
//! the `guard` benchmark, each next to its baseline (the inner service alone, fed the same
//! requests, in the same process), so that the difference is keygate's own; then the load
//! test's application in a real server, bare and behind each contender ([`in_a_server`]).
//!
//! ```text
//! cargo bench --bench allocations              # every scenario, and the servers
//! cargo bench --bench allocations -- refused   # the scenarios whose name contains `refused`
//! cargo bench --bench allocations -- server    # the servers only
//! ```
//!
//! Counts are deterministic, unlike times: the run fails (exit code 1) when keygate's own
//! allocations on the admitted path exceed [`ADMITTED_BOUND`], or in a server
//! [`SERVER_BOUND`].
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    alloc::System, collections::HashMap, hint::black_box, process::ExitCode, sync::Arc,
    time::Duration,
};

use http::{HeaderValue, Response, header};
use keygate::{KeyDigest, KeyId, KeyRecord, Principal, limit::RateLimitDecision};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

// Not every helper is used by every binary that shares these modules.
#[allow(dead_code)]
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/scenarios.rs"]
mod scenarios;
#[allow(dead_code)]
#[path = "support/server.rs"]
mod server;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests counted per scenario, after [`WARM_UP`] uncounted ones (the first request of a
/// key creates its limiter entry; a thread's first check allocates its key buffer).
const REQUESTS: usize = 10_000;
const WARM_UP: usize = 100;

/// The scenario whose own allocations are bounded, and the bound.
const ADMITTED: &str = "admitted/guard+limiter/generated_key";

/// keygate's own allocations per admitted request, at most (see the breakdown this binary
/// prints for where they come from).
const ADMITTED_BOUND: f64 = 6.0;

/// keygate's own allocations per admitted request in a real server, at most: the
/// principal boxed into the request's extensions (`http::Extensions` boxes every value)
/// and the `RateLimit` header value.
const SERVER_BOUND: f64 = 2.0;

/// The audit trail's allocations per admitted request in a real server (its server's count
/// minus the guarded server's), at most: with the log written on the request thread, the
/// record's action and principal id (`AuditEvent` owns its strings), the buffers of its
/// fields and of its line, and one that DHAT does not place in keygate's code; queued, the
/// first two and that one (the writer's buffer is reused).
const AUDIT_BOUNDS: [(&str, f64); 2] = [(AUDITED_SYNC, 5.0), (AUDITED_QUEUED, 3.0)];

/// The audited servers' rows, named once for the server list and the bounds.
const AUDITED_SYNC: &str = "guarded, audit log on the request thread";
const AUDITED_QUEUED: &str = "guarded, audit log queued";

/// Allocations (and reallocations) and bytes per call of `f`, over `calls` calls.
fn count(calls: usize, mut f: impl FnMut()) -> (f64, f64) {
    let region = Region::new(GLOBAL);
    for _ in 0..calls {
        f();
    }
    let stats = region.change();
    let allocations = (stats.allocations + stats.reallocations) as f64 / calls as f64;
    let bytes = stats.bytes_allocated as f64 / calls as f64;
    (allocations, bytes)
}

fn main() -> ExitCode {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .unwrap_or_default();

    println!("Heap allocations per request ({REQUESTS} requests per scenario)\n");
    println!("| scenario | allocations | bytes | keygate's own allocations | own bytes |");
    println!("|---|---:|---:|---:|---:|");
    let mut measured: HashMap<&str, (f64, f64)> = HashMap::new();
    let mut admitted_own = None;
    // The scenarios whose name contains the filter, and their baselines (listed first).
    let selected = scenarios::SCENARIOS.iter().filter(|scenario| {
        scenarios::SCENARIOS.iter().any(|wanted| {
            wanted.name.contains(&filter)
                && (wanted.name == scenario.name || wanted.baseline == scenario.name)
        })
    });
    for scenario in selected {
        let mut run = scenarios::run(scenario.name).expect("every listed scenario runs");
        for _ in 0..WARM_UP {
            run();
        }
        let (allocations, bytes) = count(REQUESTS, &mut *run);
        measured.insert(scenario.name, (allocations, bytes));
        let (base_allocations, base_bytes) = measured[scenario.baseline];
        let own = allocations - base_allocations;
        if scenario.name == ADMITTED {
            admitted_own = Some(own);
        }
        println!(
            "| {} | {allocations:.2} | {bytes:.0} | {} | {} |",
            scenario.name,
            if scenario.name == scenario.baseline {
                "(baseline)".to_owned()
            } else {
                format!("{own:.2}")
            },
            if scenario.name == scenario.baseline {
                String::new()
            } else {
                format!("{:.0}", bytes - base_bytes)
            },
        );
    }

    breakdown();

    let server_own = if "server".contains(&filter) {
        Some(in_a_server())
    } else {
        None
    };
    if let Some(rows) = &server_own {
        let counted = |name: &str| rows.iter().any(|(row, ..)| *row == name);
        if let Some(missing) = ["guarded", AUDITED_SYNC, AUDITED_QUEUED]
            .into_iter()
            .find(|name| !counted(name))
        {
            eprintln!("\nserver/{missing}: a bounded row was not counted");
            return ExitCode::FAILURE;
        }
    }
    for (row, own, bound) in server_own.into_iter().flatten() {
        // NaN: an audited row counted before the guarded one it is measured against.
        if own.is_nan() || own > bound + 0.01 {
            eprintln!(
                "\nserver/{row}: {own:.2} allocations of its own per request, more than the \
                 bound of {bound}"
            );
            return ExitCode::FAILURE;
        }
        println!("server/{row}: {own:.2} of its own per request (bound {bound})");
    }

    match admitted_own {
        Some(own) if own > ADMITTED_BOUND + 0.01 => {
            eprintln!(
                "\n{ADMITTED}: {own:.2} allocations of keygate's own per request, more than \
                 the bound of {ADMITTED_BOUND}"
            );
            ExitCode::FAILURE
        }
        Some(own) => {
            println!(
                "\n{ADMITTED}: {own:.2} of keygate's own per request (bound {ADMITTED_BOUND})"
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::SUCCESS,
    }
}

/// What the admitted path's allocations are: the steps of keygate's admission that
/// allocate, each counted alone through the public API.
fn breakdown() {
    const CALLS: usize = 1000;
    let record = KeyRecord::new(
        KeyId::parse("000000000001").expect("valid key id"),
        KeyDigest::of(b"a key"),
        "coordinator-1",
    );
    let principal = Principal::new(Arc::new(record));
    let decision =
        RateLimitDecision::allow(&fixtures::unlimited(), 4_000_000, Duration::from_nanos(1));

    println!("\nWhere the admitted path's allocations come from (each step alone)\n");
    println!("| step | allocations | bytes |");
    println!("|---|---:|---:|");
    let mut requests: Vec<_> = (0..CALLS).map(|_| fixtures::request(None)).collect();
    let step = |name: &str, (allocations, bytes): (f64, f64)| {
        println!("| {name} | {allocations:.2} | {bytes:.0} |");
    };
    let mut i = 0;
    step(
        "principal into the extensions of a request that has none",
        count(CALLS, || {
            requests[i].extensions_mut().insert(principal.clone());
            i += 1;
        }),
    );
    let mut requests: Vec<_> = (0..CALLS)
        .map(|_| fixtures::request_from_client(None))
        .collect();
    let mut i = 0;
    step(
        "principal into the extensions of a request that has some (as from hyper or axum)",
        count(CALLS, || {
            requests[i].extensions_mut().insert(principal.clone());
            i += 1;
        }),
    );
    let mut made = Vec::with_capacity(CALLS);
    step(
        "`RateLimit` and `RateLimit-Policy` values (`RateLimitDecision::headers`)",
        count(CALLS, || made.push(decision.headers())),
    );
    let mut responses: Vec<_> = (0..CALLS).map(|_| Response::new(())).collect();
    let mut headers = made.into_iter();
    let mut i = 0;
    step(
        "the two headers into a response that has no header",
        count(CALLS, || {
            if let Some(headers) = headers.next() {
                headers.apply(responses[i].headers_mut());
            }
            i += 1;
        }),
    );
    let mut responses: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut response = Response::new(());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        })
        .collect();
    let mut made = (0..CALLS)
        .map(|_| decision.headers())
        .collect::<Vec<_>>()
        .into_iter();
    let mut i = 0;
    step(
        "the two headers into a response that has one (`Content-Type`)",
        count(CALLS, || {
            if let Some(headers) = made.next() {
                headers.apply(responses[i].headers_mut());
            }
            i += 1;
        }),
    );
    black_box((requests, responses));
}

/// The same application served on loopback by hyper (through axum) alone, behind a
/// layer that does nothing, behind the stack users assemble (tower-http +
/// tower_governor) and behind keygate, each asked the same requests over one keep-alive
/// connection by a client that allocates nothing after its first requests, all on one
/// thread. Every allocation of the process is counted. axum boxes a layered route's
/// service and futures whatever the layer, so a layer's own allocations are its server's
/// count minus the do-nothing layer's (`layered`); the stack is two layers, so its count
/// holds axum's wrapping once more. Last, keygate with its audit log on, written on the
/// request thread and queued to a writer thread: the audit trail's own allocations are
/// those servers' counts minus the guarded server's (the writer's are counted too; the
/// records it has not written when the count ends, a batch at most, are not).
///
/// Returns each bounded row with its own allocations per request and its bound:
/// `guarded` ([`SERVER_BOUND`]) and the audited servers ([`AUDIT_BOUNDS`]).
///
/// The requests have two headers (`Host` and the key), as `wrk` sends them.
fn in_a_server() -> Vec<(&'static str, f64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let key = keygate::ApiKey::generate(&keygate::KeyPrefix::default())
        .expect("key generation")
        .0;
    println!("\nIn a server: allocations per request ({REQUESTS} requests over one connection)\n");
    println!("| server | allocations | bytes | the layers' own allocations | own bytes |");
    println!("|---|---:|---:|---:|---:|");
    let log = |name: &str| {
        std::env::temp_dir().join(format!(
            "keygate-allocations-audit-{name}-{}.jsonl",
            std::process::id()
        ))
    };
    let (sync_log, queued_log) = (log("sync"), log("queued"));
    let bounded = runtime.block_on(async {
        let guarded = |audit: server::Audit<'_>, admitted_headers| {
            server::application().layer(server::guard(&key, audit, admitted_headers))
        };
        let servers = [
            ("plain", server::serve(server::application()).await),
            (
                "layered",
                server::serve(
                    server::application().layer(tower::util::MapRequestLayer::new(
                        |request: axum::extract::Request| request,
                    )),
                )
                .await,
            ),
            (
                "stack",
                server::serve(server::stack(server::application(), &key)).await,
            ),
            (
                "guarded",
                server::serve(guarded(server::Audit::None, true)).await,
            ),
            (
                "guarded, no headers on admitted",
                server::serve(guarded(server::Audit::None, false)).await,
            ),
            (
                AUDITED_SYNC,
                server::serve(guarded(server::Audit::Sync(&sync_log), true)).await,
            ),
            (
                AUDITED_QUEUED,
                server::serve(guarded(server::Audit::Queued(&queued_log), true)).await,
            ),
        ];
        let request = format!(
            "GET {} HTTP/1.1\r\nhost: localhost\r\nx-api-key: {}\r\n\r\n",
            server::JOB_PATH,
            key.expose_secret()
        );
        let mut layered = (0.0, 0.0);
        let mut guarded = f64::NAN;
        let mut bounded = Vec::new();
        for (name, url) in servers {
            let mut client = Client::connect(url.trim_start_matches("http://")).await;
            for _ in 0..WARM_UP {
                client.get(request.as_bytes()).await;
            }
            let region = Region::new(GLOBAL);
            for _ in 0..REQUESTS {
                client.get(request.as_bytes()).await;
            }
            let stats = region.change();
            let allocations = (stats.allocations + stats.reallocations) as f64 / REQUESTS as f64;
            let bytes = stats.bytes_allocated as f64 / REQUESTS as f64;
            match name {
                "plain" => println!("| {name} | {allocations:.2} | {bytes:.0} | | |"),
                "layered" => {
                    layered = (allocations, bytes);
                    println!("| {name} | {allocations:.2} | {bytes:.0} | (baseline) | |");
                }
                _ => {
                    let own = allocations - layered.0;
                    if name == "guarded" {
                        guarded = own;
                        bounded.push((name, own, SERVER_BOUND));
                    }
                    if let Some((_, bound)) = AUDIT_BOUNDS.iter().find(|(row, _)| *row == name) {
                        bounded.push((name, allocations - layered.0 - guarded, *bound));
                    }
                    println!(
                        "| {name} | {allocations:.2} | {bytes:.0} | {own:.2} | {:.0} |",
                        bytes - layered.1
                    );
                }
            }
        }
        bounded
    });
    // The servers stop with the runtime, and their logs are removed with it.
    drop(runtime);
    for log in [sync_log, queued_log] {
        let _ = std::fs::remove_file(log);
    }
    bounded
}

/// An HTTP/1.1 client on one keep-alive connection that reuses its buffer, so that it
/// allocates nothing once the buffer has grown to a response's size.
struct Client {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    async fn connect(address: &str) -> Self {
        Self {
            stream: tokio::net::TcpStream::connect(address)
                .await
                .expect("connect to the loopback server"),
            buffer: Vec::with_capacity(4096),
        }
    }

    /// Sends `request` and reads the whole response, which must be a 200.
    async fn get(&mut self, request: &[u8]) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        self.stream.write_all(request).await.expect("request sent");
        self.buffer.clear();
        let mut expected = None;
        loop {
            if let Some(end) = expected
                && self.buffer.len() >= end
            {
                break;
            }
            let filled = self.buffer.len();
            if self.buffer.capacity() == filled {
                self.buffer.reserve(4096);
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .expect("response read");
            assert!(read > 0, "the server closed the connection");
            if expected.is_none() {
                expected = response_length(&self.buffer);
            }
        }
        assert!(
            self.buffer.starts_with(b"HTTP/1.1 200 "),
            "not admitted: {}",
            String::from_utf8_lossy(&self.buffer[..self.buffer.len().min(200)])
        );
    }
}

/// The length of the response whose start is in `buffer` (head and body), once its head
/// is complete.
fn response_length(buffer: &[u8]) -> Option<usize> {
    let head_end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buffer[..head_end]).expect("an ASCII head");
    let length = head
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().expect("a length"))
        })
        .expect("a Content-Length");
    Some(head_end + length)
}
