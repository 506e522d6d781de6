//! A statistical timing check of secret comparisons, after dudect (Reparaz, Balasch and
//! Verbauwhede, "Dude, is my code constant time?", 2017): two classes of inputs, measured
//! interleaved at random, compared with Welch's t-test. Not a test (timings are never
//! asserted in tests on these shared machines): run it by hand,
//!
//! ```sh
//! cargo bench --bench timing            # 200,000 samples per class and check
//! cargo bench --bench timing -- 1000000 # more samples: more power
//! ```
//!
//! It prints |t| for each check and exits with status 1 when a check that must not leak
//! exceeds 4.5 (dudect's threshold), or the positive control does not.
//!
//! Checks, each "secret differs from the stored one in its first byte" against "... in
//! its last byte" (an early-exit comparison is faster for the first):
//! * `KeyDigest::ct_eq` on the stored and the presented digest;
//! * the whole guard refusing an opaque key (hash, lookup by digest, refusal);
//! * null control: both classes the same input; |t| must stay small;
//! * positive control: `==` on 4 KiB slices, which exits at the first differing byte;
//!   |t| must be large, or the check has no power on this machine.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    pin::pin,
    process::ExitCode,
    task::{Context, Poll, Waker},
    time::Instant,
};

use http::{Request, Response};
use keygate::{ApiKey, ApiKeyGuard, KeyDigest, KeyGrant};
use tower::{Layer, Service, service_fn};

/// dudect's threshold: above it, the two classes' timings differ.
const THRESHOLD: f64 = 4.5;
/// Calls per sample: enough that one sample is well above the clock's resolution.
const BATCH: usize = 32;

/// Running mean and variance (Welford), for Welch's t.
#[derive(Default)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }

    fn variance(&self) -> f64 {
        self.m2 / (self.n - 1.0)
    }
}

/// Welch's t of two classes.
fn welch_t(a: &Moments, b: &Moments) -> f64 {
    (a.mean - b.mean) / (a.variance() / a.n + b.variance() / b.n).sqrt()
}

/// Measures `run` on the two classes, interleaved at random, and returns |t| over the
/// samples below the 90th percentile (dudect crops the long tail that interrupts and
/// other tenants add).
fn check(samples: usize, rng: &mut fastrand::Rng, mut run: impl FnMut(bool)) -> f64 {
    let mut timings: Vec<(bool, f64)> = Vec::with_capacity(2 * samples);
    for _ in 0..2 * samples {
        let class = rng.bool();
        let start = Instant::now();
        for _ in 0..BATCH {
            run(class);
        }
        #[allow(clippy::cast_precision_loss)]
        timings.push((class, start.elapsed().as_nanos() as f64));
    }
    let mut sorted: Vec<f64> = timings.iter().map(|&(_, t)| t).collect();
    sorted.sort_by(f64::total_cmp);
    let crop = sorted[sorted.len() * 9 / 10];
    let (mut first, mut last) = (Moments::default(), Moments::default());
    for (class, t) in timings.into_iter().filter(|&(_, t)| t <= crop) {
        if class { &mut first } else { &mut last }.push(t);
    }
    welch_t(&first, &last).abs()
}

/// `digest` with one byte flipped: the first or the last.
fn flipped(digest: &KeyDigest, first: bool) -> KeyDigest {
    let mut bytes = *digest.as_bytes();
    let at = if first { 0 } else { bytes.len() - 1 };
    bytes[at] ^= 0x01;
    KeyDigest::from_bytes(bytes)
}

/// The stored key, and presented keys that differ from it in the first or last
/// character.
const KEY: &str = "q2V/n+0cM3nMn3WrWWMzRr4m5nN1QIk4YHd0Y2W9Zfk=";

fn presented(first: bool) -> String {
    let mut key = KEY.as_bytes().to_vec();
    let at = if first { 0 } else { key.len() - 2 };
    key[at] = if key[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(key).expect("ASCII")
}

fn main() -> ExitCode {
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(200_000);
    let mut rng = fastrand::Rng::with_seed(0x6b65_7967);
    let mut failed = false;
    let mut report = |name: &str, t: f64, must_leak: bool| {
        let verdict = match (t > THRESHOLD, must_leak) {
            (false, false) => "ok: no difference found",
            (true, true) => "ok: the control's leak is found",
            (true, false) => {
                failed = true;
                "LEAK SUSPECTED"
            }
            (false, true) => {
                failed = true;
                "NO POWER: the control's leak was not found"
            }
        };
        println!("{name:<40} |t| = {t:>8.2}  {verdict}");
    };
    println!("{samples} samples per class, {BATCH} calls per sample, threshold {THRESHOLD}");

    let stored = KeyDigest::of(KEY.as_bytes());
    let classes = [flipped(&stored, true), flipped(&stored, false)];
    let t = check(samples, &mut rng, |first| {
        black_box(stored.ct_eq(black_box(&classes[usize::from(first)])));
    });
    report("KeyDigest::ct_eq, first vs last byte", t, false);

    let guard = ApiKeyGuard::builder()
        .key(ApiKey::new(KEY).expect("key"), KeyGrant::new("timing"))
        .build()
        .expect("guard");
    let inner =
        service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) });
    let mut service = guard.layer(inner);
    let keys = [presented(false), presented(true)];
    let t = check(samples / 4, &mut rng, |first| {
        let request = Request::get("/jobs")
            .header("x-api-key", keys[usize::from(first)].as_str())
            .body(())
            .expect("request");
        let mut call = pin!(service.call(request));
        let Poll::Ready(response) = call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("an in-memory guard decides on its first poll");
        };
        assert_eq!(response.expect("infallible").status(), 401);
    });
    report("guard, opaque key, first vs last char", t, false);

    let t = check(samples, &mut rng, |_| {
        black_box(stored.ct_eq(black_box(&classes[0])));
    });
    report("null control (same input in both)", t, false);

    let stored = vec![0x5a_u8; 4096];
    let leaky: [Vec<u8>; 2] = [true, false].map(|first| {
        let mut other = stored.clone();
        let at = if first { 0 } else { other.len() - 1 };
        other[at] ^= 1;
        other
    });
    let t = check(samples, &mut rng, |first| {
        black_box(black_box(&stored) == black_box(&leaky[usize::from(first)]));
    });
    report("positive control: `==` on 4 KiB", t, true);

    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
