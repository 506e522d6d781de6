//! What the guard costs per request, next to what it replaces.
//!
//! Every scenario drives a tower service with `ServiceExt::ready` and `Service::call`, with
//! no HTTP server, around an inner service that answers at once, so that the numbers are
//! the layers' own cost. Requests are built outside the timed part (`iter_batched`).
//!
//! | group | measures |
//! |---|---|
//! | `admitted` | a valid key through the guard, the in-memory registry and the per-key limiter (GCRA, and a strict window); variants without the limiter, with the failed-attempt limiter, with an opaque key; the inner service alone |
//! | `refused` | missing key, bad checksum, unknown key, rate-limited, client blocked after failed attempts |
//! | `registry` | the admitted path with 1, 10,000 and 1,000,000 registered keys |
//! | `stack` | side by side: no guard, tower-http + tower_governor (without and with its headers), keygate |
//! | `router` | the same side by side inside an axum `Router` (the issue's harness), like with like: keygate without its headers on admitted responses against the bare stack, with them against the stack with `use_headers`; keygate with 1 and 1,000,000 keys |
//! | `threads` | the admitted path on 1 and 2 threads at once (one key shared, a key per thread, no guard), with the scaling ratio |
//! | `limiter` | `InMemoryRateLimit::check` admitted (GCRA and strict window) and refused, governor's keyed limiter alone, `FailedAttemptLimiter::check` |
//! | `audit` | `record()` of the JSON-lines audit log on the request thread: written there (`JsonLinesSink`) or queued (`BackgroundSink`), and the queued writer's throughput when saturated |
//!
//! ```text
//! cargo bench --bench guard                 # everything, about two minutes
//! cargo bench --bench guard -- stack        # one group
//! cargo bench --bench guard -- threads      # across cores (see threads.rs)
//! ```
//!
//! Short measurements (1 s warm-up, 2 s, 40 samples) keep the whole run to a couple of
//! minutes; criterion's command line (`--measurement-time`, `--sample-size`, ...) overrides
//! them.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{fmt, time::Duration};

use criterion::{
    BatchSize, BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main,
    measurement::WallTime,
};
use http::Response;
use tower::Service;

mod admitted;
mod audit;
#[path = "../support/fixtures.rs"]
mod fixtures;
mod limiter;
mod refused;
mod registry;
mod router;
mod stack;
mod threads;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
}

/// Requests built ahead of each timed batch: few enough that they are still in the CPU
/// cache when they are used, as a request just parsed by a server is, and enough that
/// reading the clock around each batch costs nothing measurable.
const BATCH: u64 = 64;

/// Benchmarks one call of a service per iteration, on a fresh request from `request` each
/// time (built outside the timed part; the responses are dropped outside it too).
///
/// The service is made by `make` when the benchmark runs, not when it is filtered out,
/// so that `cargo bench --bench guard -- stack` does not build a registry of a million
/// keys first.
pub(crate) fn bench_calls<S, B, Req>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    make: impl FnOnce() -> S,
    request: impl Fn() -> Req,
) where
    S: Service<Req, Response = Response<B>>,
    S::Error: fmt::Debug,
{
    let mut make = Some(make);
    let mut service = None;
    group.bench_function(id, |b| {
        let service = match (&mut service, make.take()) {
            (Some(service), _) => service,
            (slot, Some(make)) => slot.insert(make()),
            (None, None) => unreachable!("the service is made on the first run"),
        };
        b.iter_batched(
            &request,
            |request| fixtures::call(service, request),
            BatchSize::NumIterations(BATCH),
        );
    });
}

criterion_group! {
    name = guard;
    config = config();
    targets = admitted::bench, refused::bench, registry::bench, stack::bench, router::bench,
        limiter::bench, audit::bench, threads::bench
}
criterion_main!(guard);
