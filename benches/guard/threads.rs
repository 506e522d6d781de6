//! Across cores: the admitted path driven by 1, 2, ... threads at once, each with its own
//! clone of the service, to show whether the guard scales as the inner service does.
//!
//! - `threads/no_guard/<n>`: the inner service alone, the reference (it shares nothing);
//! - `threads/one_key/<n>`: the guard, the in-memory registry and the per-key limiter,
//!   every thread presenting the same key (its limiter state is shared by nature);
//! - `threads/key_per_thread/<n>`: the same, each thread with a key of its own: nothing
//!   but the configuration needs to be shared, and this row should scale like the first;
//! - `threads/key_per_thread_scoped/<n>`: the same behind a route rule that asks every
//!   key for a scope (the keys hold it): the route's requirement is read by every
//!   request on every thread, and must not be written;
//! - `threads/sqlite_key_per_thread/<n>` (feature `sqlite`): a key each, on an
//!   [`SqlRegistry`](keygate::sql::SqlRegistry) on an SQLite file, its cache warm (no
//!   query): the network registries' cache and last-use notes on the request path.
//!
//! Each iteration is one request on every thread, so criterion's throughput is the
//! requests per second of all threads together. Each thread builds its requests inside
//! the timed loop from static parts (the key's header value too: cloning it shares no
//! reference count), on every row alike; the time of a sample is the longest of the
//! threads' times, measured from a common start. The threads live for the whole
//! benchmark, and samples are few and long (10), so that the scheduler has spread them
//! over the cores before they are timed. After the group, the scaling ratios (throughput with n threads ÷ with one) are
//! printed from criterion's medians.
//!
//! Then, for every scenario whose rows ran, the ratio is measured in pairs: a run of one
//! thread and a run of n threads ([`PAIRED_REQUESTS`] requests on each thread), which goes
//! first alternating, [`PAIRED_ROUNDS`] times; each pair gives a ratio (n × the one
//! thread's time ÷ the n threads' time), and the median of those ratios is printed with
//! their 10th and 90th percentiles. The machine's load drifts over seconds and moves rows
//! measured one after the other (criterion's ratios above range over 1.5–2.1× for an
//! unchanged build), but it hits both runs of a pair alike. The threads of these runs are
//! pinned (`core_affinity`): the n threads one to a core, the single thread on each core
//! in turn, two rounds each; left to the scheduler, the single thread's speed depended on
//! where it landed (0.6 or 0.9 M requests/s from one run to the next).
//!
//! ```text
//! cargo bench --bench guard -- threads                    # 1 and 2 threads
//! KEYGATE_BENCH_THREADS=1,2,4 cargo bench --bench guard -- threads
//! ```

use std::{
    cell::RefCell,
    path::PathBuf,
    sync::{Arc, Barrier, mpsc},
    thread::Scope,
    time::{Duration, Instant},
};

use core_affinity::CoreId;
use criterion::{BenchmarkId, Criterion, Throughput};
use http::{HeaderValue, Request, Response, StatusCode};
use keygate::{ApiKey, InMemoryRegistry, KeyGrant, KeyLookup};
use tower::{Layer as _, Service};

use crate::fixtures::{HEADER, SCOPE, Stages, call, expect_status, generate, guard, inner};

/// The thread counts: `KEYGATE_BENCH_THREADS` (e.g. `1,2,4`), else 1 and 2.
fn thread_counts() -> Vec<usize> {
    std::env::var("KEYGATE_BENCH_THREADS")
        .ok()
        .map(|list| {
            list.split(',')
                .filter_map(|n| n.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect::<Vec<usize>>()
        })
        .filter(|counts| !counts.is_empty())
        .unwrap_or_else(|| vec![1, 2])
}

const GROUP: &str = "threads";
const SCENARIOS: [&str; 5] = [
    "no_guard",
    "one_key",
    "key_per_thread",
    "key_per_thread_scoped",
    "sqlite_key_per_thread",
];

/// A request as [`fixtures::request`](crate::fixtures::request) builds it, from static
/// parts only: what a server has just parsed, without the bench's own copying.
fn request(key: &'static HeaderValue) -> Request<()> {
    Request::get("/coordinator/jobs/0b7f6c1e")
        .header("host", HeaderValue::from_static("coordinator.internal"))
        .header(
            "user-agent",
            HeaderValue::from_static("python-requests/2.32.3"),
        )
        .header("accept", HeaderValue::from_static("application/json"))
        .header(HEADER, key.clone())
        .body(())
        .expect("valid request")
}

/// A key's header value, static (leaked: a few per process) so that cloning it into each
/// request touches no reference count the threads would share.
fn header_value(key: &ApiKey) -> &'static HeaderValue {
    let text: &'static str = Box::leak(key.expose_secret().to_owned().into_boxed_str());
    Box::leak(Box::new(HeaderValue::from_static(text)))
}

/// One thread per service, kept for the whole benchmark (threads spawned per sample would
/// start on a busy core and spend part of the sample waiting to be moved).
struct Workers {
    jobs: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<Duration>,
}

impl Workers {
    /// Starts a thread per service in `scope`, each presenting its key, the `i`th pinned
    /// to `cores[i]` when given (and left to the scheduler otherwise).
    fn start<'scope, S, B>(
        scope: &'scope Scope<'scope, '_>,
        services: Vec<S>,
        keys: &[&'static HeaderValue],
        cores: Option<&[CoreId]>,
    ) -> Self
    where
        S: Service<Request<()>, Response = Response<B>> + Send + 'scope,
        S::Error: std::fmt::Debug,
    {
        let start = Arc::new(Barrier::new(services.len()));
        let (report, done) = mpsc::channel();
        let jobs = services
            .into_iter()
            .zip(keys)
            .enumerate()
            .map(|(i, (mut service, &key))| {
                let (job, jobs) = mpsc::channel::<u64>();
                let (start, report) = (Arc::clone(&start), report.clone());
                let core = cores.and_then(|cores| cores.get(i).copied());
                scope.spawn(move || {
                    if let Some(core) = core {
                        assert!(
                            core_affinity::set_for_current(core),
                            "cannot pin a bench thread to core {}",
                            core.id
                        );
                    }
                    while let Ok(iters) = jobs.recv() {
                        start.wait();
                        let began = Instant::now();
                        for _ in 0..iters {
                            drop(call(&mut service, request(key)));
                        }
                        report.send(began.elapsed()).expect("the bench is waiting");
                    }
                });
                job
            })
            .collect();
        Self { jobs, done }
    }

    /// Runs `iters` requests on every thread at once; the longest time.
    fn run(&self, iters: u64) -> Duration {
        for job in &self.jobs {
            job.send(iters).expect("a bench thread stopped");
        }
        (0..self.jobs.len())
            .map(|_| self.done.recv().expect("a bench thread panicked"))
            .max()
            .unwrap_or_default()
    }
}

pub(crate) fn bench(c: &mut Criterion) {
    let counts = thread_counts();
    let most = counts.iter().copied().max().unwrap_or(1);
    let registry = Arc::new(InMemoryRegistry::new());
    let keys: Vec<&'static HeaderValue> = (0..most)
        .map(|i| {
            let key = generate();
            registry
                .insert_key(
                    &key,
                    KeyGrant::new(format!("coordinator-{i}")).scopes([SCOPE]),
                )
                .expect("registration");
            header_value(&key)
        })
        .collect();

    #[cfg(feature = "sqlite")]
    let sqlite = SqliteKeys::new(most);

    // The guarded scenarios on the in-memory registry: thread `i` presents `keys[i]`.
    let one_key = vec![keys[0]; most];
    let scenarios = [
        ("one_key", &one_key[..], Stages::limited()),
        ("key_per_thread", &keys[..], Stages::limited()),
        (
            "key_per_thread_scoped",
            &keys[..],
            Stages::limited().scoped(),
        ),
    ];
    // The scenarios whose rows ran (not filtered out), for the paired measurement.
    let ran = RefCell::new(Vec::new());
    let mut group = c.benchmark_group(GROUP);
    // Few long samples: each is a run of every thread at once.
    group.sample_size(10);
    for &n in &counts {
        group.throughput(Throughput::Elements(n as u64));
        let per_thread = &keys[..n];

        std::thread::scope(|scope| {
            let workers = Workers::start(scope, vec![inner(); n], per_thread, None);
            group.bench_function(BenchmarkId::new("no_guard", n), |b| {
                note_ran(&ran, "no_guard");
                b.iter_custom(|iters| workers.run(iters));
            });
        });

        for (scenario, keys, stages) in &scenarios {
            let (keys, stages) = (&keys[..n], stages.clone());
            guarded(&mut group, &ran, scenario, n, &registry, keys, stages);
        }
        #[cfg(feature = "sqlite")]
        sqlite.warm();
        #[cfg(feature = "sqlite")]
        guarded(
            &mut group,
            &ran,
            "sqlite_key_per_thread",
            n,
            &sqlite.registry,
            &sqlite.keys[..n],
            Stages::limited(),
        );
    }
    group.finish();
    print_scaling(&counts);

    let ran = ran.into_inner();
    if ran.is_empty() {
        return;
    }
    let (rounds, requests) = paired_size();
    println!(
        "\nthreads, paired: {rounds} alternated rounds of {requests} requests per thread; \
         n threads ÷ 1 thread, median of the rounds' ratios (p10–p90)"
    );
    if ran.contains(&"no_guard") {
        paired("no_guard", &inner(), &keys, &counts);
    }
    for (scenario, keys, stages) in &scenarios {
        if ran.contains(scenario) {
            let service = guard(&registry, stages.clone()).layer(inner());
            paired(scenario, &service, keys, &counts);
        }
    }
    #[cfg(feature = "sqlite")]
    if ran.contains(&"sqlite_key_per_thread") {
        sqlite.warm();
        let service = guard(&sqlite.registry, Stages::limited()).layer(inner());
        paired("sqlite_key_per_thread", &service, &sqlite.keys, &counts);
    }
}

/// Notes that `scenario`'s rows ran.
fn note_ran(ran: &RefCell<Vec<&'static str>>, scenario: &'static str) {
    let mut ran = ran.borrow_mut();
    if !ran.contains(&scenario) {
        ran.push(scenario);
    }
}

/// Rounds of the paired measurement.
const PAIRED_ROUNDS: usize = 200;
/// Requests on each thread in each run of the paired measurement (about 8 ms guarded).
const PAIRED_REQUESTS: u64 = 10_000;

/// The rounds and requests of the paired measurement: a token run under `--test` (which
/// only checks that every benchmark works).
fn paired_size() -> (usize, u64) {
    if std::env::args().any(|arg| arg == "--test") {
        (4, 100)
    } else {
        (PAIRED_ROUNDS, PAIRED_REQUESTS)
    }
}

/// The paired measurement of `service`'s scaling (see the module's docs): one thread
/// against each count of `counts` above one, thread `i` presenting `keys[i]`.
fn paired<S, B>(scenario: &str, service: &S, keys: &[&'static HeaderValue], counts: &[usize])
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let (rounds, requests) = paired_size();
    let all_cores = core_affinity::get_core_ids()
        .filter(|cores| !cores.is_empty())
        .expect("the cores this process may run on");
    let mut service = service.clone();
    for &key in keys {
        expect_status(&mut service, request(key), StatusCode::OK);
    }
    for &n in counts.iter().filter(|&&n| n > 1) {
        let (mut ratios, mut many_rate) = (Vec::new(), Vec::new());
        // The single thread's rates, per core.
        let mut one_rate = vec![Vec::new(); all_cores.len()];
        // Thread `i` of the n on core `i`; the single thread on each core in turn.
        let cores: Vec<CoreId> = (0..n).map(|i| all_cores[i % all_cores.len()]).collect();
        std::thread::scope(|scope| {
            let ones: Vec<Workers> = all_cores
                .iter()
                .map(|core| {
                    let core = Some(std::slice::from_ref(core));
                    Workers::start(scope, vec![service.clone()], &keys[..1], core)
                })
                .collect();
            let many = Workers::start(scope, vec![service.clone(); n], &keys[..n], Some(&cores));
            // Warm: the caches fill.
            for one in &ones {
                one.run(requests / 4);
            }
            many.run(requests / 4);
            for round in 0..rounds {
                let on = round / 2 % ones.len();
                let one = &ones[on];
                let (single, all) = if round % 2 == 0 {
                    let single = one.run(requests);
                    (single, many.run(requests))
                } else {
                    let all = many.run(requests);
                    (one.run(requests), all)
                };
                let (single, all) = (single.as_secs_f64(), all.as_secs_f64());
                ratios.push(n as f64 * single / all);
                one_rate[on].push(requests as f64 / single);
                many_rate.push(n as f64 * requests as f64 / all);
            }
        });
        let [p10, median, p90] = percentiles(&mut ratios);
        let one_rate: Vec<String> = one_rate
            .iter_mut()
            .zip(&all_cores)
            .filter(|(rates, _)| !rates.is_empty())
            .map(|(rates, core)| format!("{:.2} on core {}", percentiles(rates)[1] / 1e6, core.id))
            .collect();
        let many_rate = percentiles(&mut many_rate)[1];
        println!(
            "  {scenario:<21} {n}: {median:.2}× ({p10:.2}–{p90:.2})   \
             M requests/s (medians): 1 thread {}; {n} threads {:.2}",
            one_rate.join(", "),
            many_rate / 1e6,
        );
    }
}

/// The 10th percentile, the median and the 90th percentile of `values` (sorted here).
fn percentiles(values: &mut [f64]) -> [f64; 3] {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let last = values.len().saturating_sub(1);
        values
            .get((last as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    [at(0.1), at(0.5), at(0.9)]
}

/// The guard on `registry` with `stages` (one, as a server has one, cloned into every
/// thread), each of the `n` threads presenting its key of `keys`.
fn guarded<R: KeyLookup>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ran: &RefCell<Vec<&'static str>>,
    scenario: &'static str,
    n: usize,
    registry: &Arc<R>,
    keys: &[&'static HeaderValue],
    stages: Stages,
) {
    let mut service = guard(registry, stages).layer(inner());
    for &key in keys {
        expect_status(&mut service, request(key), StatusCode::OK);
    }
    std::thread::scope(|scope| {
        let workers = Workers::start(scope, vec![service; n], keys, None);
        group.bench_function(BenchmarkId::new(scenario, n), |b| {
            note_ran(ran, scenario);
            b.iter_custom(|iters| workers.run(iters));
        });
    });
}

/// `count` keys on an [`SqlRegistry`](keygate::sql::SqlRegistry) on an SQLite file in a
/// temporary directory, the cache warm; the runtime runs its background task (last use).
#[cfg(feature = "sqlite")]
struct SqliteKeys {
    registry: Arc<keygate::sql::SqlRegistry>,
    keys: Vec<&'static HeaderValue>,
    ids: Vec<keygate::KeyId>,
    runtime: tokio::runtime::Runtime,
    dir: PathBuf,
}

#[cfg(feature = "sqlite")]
impl SqliteKeys {
    fn new(count: usize) -> Self {
        use keygate::KeyRegistry as _;

        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let dir = std::env::temp_dir().join(format!("keygate-threads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let url = format!("sqlite://{}", dir.join("keys.db").display());
        let (registry, keys, ids) = runtime.block_on(async {
            let registry = Arc::new(
                keygate::sql::SqlRegistry::connect(&url)
                    .await
                    .expect("SQLite registry"),
            );
            let (mut keys, mut ids) = (Vec::new(), Vec::new());
            for i in 0..count {
                let issued = registry
                    .issue(KeyGrant::new(format!("coordinator-{i}")))
                    .await
                    .expect("issue");
                keys.push(header_value(&issued.key));
                ids.push(issued.record.key_id);
            }
            (registry, keys, ids)
        });
        Self {
            registry,
            keys,
            ids,
            runtime,
            dir,
        }
    }

    /// Caches every key's record, for the next row (the cache keeps them 10 s; a row
    /// takes less, and the guard is called outside the runtime, so a miss would panic).
    fn warm(&self) {
        self.runtime.block_on(async {
            for id in &self.ids {
                self.registry.find_by_id(id).await.expect("lookup");
            }
        });
    }
}

#[cfg(feature = "sqlite")]
impl Drop for SqliteKeys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where criterion keeps its results: `$CRITERION_HOME`, else `criterion` in the target
/// directory.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("criterion")
}

/// The median time of one iteration of a benchmark of this run, in nanoseconds.
fn median_ns(scenario: &str, threads: usize) -> Option<f64> {
    let path = criterion_dir()
        .join(GROUP)
        .join(scenario)
        .join(threads.to_string())
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let estimates: serde_json::Value = serde_json::from_str(&text).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// Prints requests per second (from the medians) and the scaling ratio against one thread.
fn print_scaling(counts: &[usize]) {
    println!("\nthreads: requests/s of all threads together (median), and ÷ 1 thread");
    for scenario in SCENARIOS {
        let rate = |n: usize| median_ns(scenario, n).map(|ns| n as f64 * 1e9 / ns);
        let Some(single) = rate(1) else {
            println!("  {scenario}: run with 1 thread for the ratio (filtered out?)");
            continue;
        };
        let row: Vec<String> = counts
            .iter()
            .filter_map(|&n| {
                rate(n).map(|r| format!("{n}: {:.2} M/s ({:.2}×)", r / 1e6, r / single))
            })
            .collect();
        println!("  {scenario:<21} {}", row.join("   "));
    }
}
