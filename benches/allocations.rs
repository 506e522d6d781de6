//! Heap allocations per request, counted by a counting global allocator: the scenarios of
//! the `guard` benchmark, each next to its baseline (the inner service alone, fed the same
//! requests, in the same process), so that the difference is keygate's own.
//!
//! ```text
//! cargo bench --bench allocations              # every scenario
//! cargo bench --bench allocations -- refused   # the scenarios whose name contains `refused`
//! ```
//!
//! Counts are deterministic, unlike times: the run fails (exit code 1) when keygate's own
//! allocations on the admitted path exceed [`ADMITTED_BOUND`].
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
