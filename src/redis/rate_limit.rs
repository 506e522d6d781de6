//! [`RedisRateLimit`]: GCRA and strict windows on Redis, one atomic Lua script per check.

use std::{collections::HashMap, fmt, num::NonZeroU32, sync::Arc, time::Duration};

use ::redis::{Client, Cmd, IntoConnectionInfo, RedisError, Script, Value, aio::ConnectionManager};

use super::{DEFAULT_TIMEOUT, arg_from_parts, eval, evalsha, manager_config, within};
use crate::{
    BackendFuture,
    limit::{Clock, LimitError, Quota, RateLimitBackend, RateLimitDecision, Tiers},
};

/// The prefix of rate-limit buckets unless another is configured.
pub const DEFAULT_LIMIT_PREFIX: &str = "keygate:limit:";

/// The rate-limit script (see its header for the arguments and the reply).
const LIMITS: &str = include_str!("limits.lua");

/// With a [manual](Clock::manual) clock, the clock's zero is this many seconds after the
/// Unix epoch (any time works: the script only uses differences).
const MANUAL_EPOCH_SECS: u64 = 1_000_000_000;

/// Per-key rate limits on Redis, shared by every replica: a
/// [`RateLimitBackend`] that decides exactly as the in-memory
/// [`InMemoryRateLimit`](crate::limit::InMemoryRateLimit) does.
///
/// Each check is one round trip: one `EVALSHA` of a Lua script that reads the Redis
/// server's clock (`TIME`), applies GCRA (one cell every `window / limit`, at most
/// `burst` cells at once, `cost` cells per request) to the key's bucket, and stores the
/// new theoretical arrival time with an expiry at the moment the bucket is full again,
/// so idle keys take no memory. For a [strict](Quota::strict) quota the key is a sorted
/// set of the admissions within the last window (one member per slot, at most `limit`,
/// scored by the server's time in microseconds): the script drops the members a window
/// old (`ZREMRANGEBYSCORE`), counts the rest (`ZCARD`), and if `cost` more fit, adds
/// them (`ZADD`) and lets the set expire a window later (`PEXPIRE`). It runs atomically, so concurrent checks from any
/// number of replicas are exact; the replicas' clocks play no part. Decisions carry the
/// same fields and numbers as the in-memory backend's, so clients see the same
/// rate-limit headers whichever backend answers.
///
/// The script is loaded when connecting and again whenever Redis answers `NOSCRIPT`
/// (after a restart or a failover). Each round trip and each connection attempt is
/// bounded by the [timeout](RedisRateLimitBuilder::timeout) (250 ms by default): a check
/// waits for at most one connection attempt and one round trip (plus, once after Redis
/// lost its scripts, the reload). When Redis cannot answer, the check fails with
/// [`LimitError::Unavailable`], and the guard refuses with 503 `auth_unavailable`, or
/// admits and audits the request when the limit is
/// [`fail_open`](crate::RateLimit::fail_open). A broken connection is re-established by
/// the next check; nothing needs restarting.
///
/// A check that timed out may still be applied by a Redis that was merely slow: the
/// bucket is then charged for a request the guard answered without its decision.
///
/// Several limits can be checked at once, all or nothing, with
/// [`check_all`](Self::check_all) (e.g. per key and per workspace).
///
/// ```no_run
/// use std::num::NonZeroU32;
/// use keygate::{limit::{Quota, RateLimitBackend, Tiers}, redis::RedisRateLimit};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let per_minute = |n| Quota::per_minute(NonZeroU32::new(n).unwrap());
/// let tiers = Tiers::new(per_minute(100)).tier("gold", per_minute(1000));
/// let limit = RedisRateLimit::builder(tiers)
///     .prefix("coordinator:limit:")
///     .timeout(std::time::Duration::from_millis(100))
///     .connect("redis://127.0.0.1:6379/")
///     .await?;
///
/// let decision = limit.check("coordinator-1", "default", NonZeroU32::MIN).await?;
/// assert!(decision.allowed);
/// assert_eq!(decision.remaining, 99);
///
/// // Per principal and per workspace, all or nothing: if either refuses, neither is charged.
/// let both = limit
///     .check_all(&[("coordinator-1", "default"), ("workspace:ws-1", "gold")], NonZeroU32::MIN)
///     .await?;
/// assert!(both.allowed());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisRateLimit {
    connection: ConnectionManager,
    shared: Arc<Shared>,
    /// A manual clock, whose time the script takes instead of the server's (tests).
    manual_clock: Option<Clock>,
}

/// What every check needs, shared by clones and by pending checks.
struct Shared {
    tiers: Tiers,
    /// The default tier first, then the named tiers.
    buckets: Box<[Bucket]>,
    by_name: HashMap<Box<str>, usize>,
    script: Script,
    prefix: String,
    timeout: Option<Duration>,
}

/// One tier: its quota, in the terms the script takes.
#[derive(Debug)]
struct Bucket {
    quota: Quota,
    /// `<prefix><tier>:`, with `%` and `:` in the tier name escaped.
    key_prefix: Box<[u8]>,
    /// For a strict quota, its window in microseconds (rounded up); `None` for GCRA.
    window_micros: Option<u64>,
    /// The emission interval T, in nanoseconds (at least 1), as governor computes it.
    interval: u64,
    /// The burst tolerance T * (burst - 1), in nanoseconds.
    tolerance: u64,
}

impl Bucket {
    fn new(prefix: &str, tier: &str, quota: &Quota) -> Self {
        let mut key_prefix = String::with_capacity(prefix.len() + tier.len() + 1);
        key_prefix.push_str(prefix);
        for c in tier.chars() {
            match c {
                '%' => key_prefix.push_str("%25"),
                ':' => key_prefix.push_str("%3A"),
                c => key_prefix.push(c),
            }
        }
        key_prefix.push(':');
        let interval = u64::try_from(quota.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance = interval.saturating_mul(u64::from(quota.burst() - 1));
        let window_micros = quota
            .is_strict()
            .then(|| u64::try_from(quota.window().as_nanos().div_ceil(1000)).unwrap_or(u64::MAX));
        Self {
            quota: quota.clone(),
            key_prefix: key_prefix.into_bytes().into_boxed_slice(),
            window_micros,
            interval,
            tolerance,
        }
    }

    /// The extra weight of a request of `cost` cells: T * (cost - 1).
    fn extra(&self, cost: NonZeroU32) -> u64 {
        self.interval.saturating_mul(u64::from(cost.get() - 1))
    }

    /// Refuses a cost the quota can never admit, as governor does.
    fn admissible(&self, cost: NonZeroU32) -> Result<(), LimitError> {
        let burst = self.quota.burst();
        if cost.get() > burst {
            return Err(LimitError::CostExceedsBurst {
                cost: cost.get(),
                burst,
            });
        }
        Ok(())
    }

    /// Adds this limit's arguments for a request of `cost` to `cmd`.
    fn args(&self, cmd: &mut Cmd, cost: NonZeroU32) {
        match self.window_micros {
            Some(window) => cmd
                .arg("w")
                .arg(window)
                .arg(self.quota.limit())
                .arg(cost.get()),
            None => cmd
                .arg("g")
                .arg(self.interval)
                .arg(self.tolerance)
                .arg(self.extra(cost)),
        };
    }

    /// The decision for this bucket from the script's numbers (`remaining` counts for
    /// strict windows only).
    fn decision(&self, allowed: bool, numbers: Numbers) -> RateLimitDecision {
        let Numbers {
            wait,
            full,
            remaining,
        } = numbers;
        let reset = Duration::from_nanos(full);
        let remaining = if self.window_micros.is_some() {
            u32::try_from(remaining).unwrap_or(0)
        } else {
            // Each missing cell takes one interval to come back, as for governor's
            // snapshots.
            let missing = u32::try_from(full.div_ceil(self.interval)).unwrap_or(u32::MAX);
            self.quota.burst().saturating_sub(missing)
        };
        if allowed {
            RateLimitDecision::allow(&self.quota, remaining, reset)
        } else {
            RateLimitDecision::refuse(&self.quota, remaining, reset, Duration::from_nanos(wait))
        }
    }
}

impl Shared {
    fn index(&self, tier: &str) -> usize {
        self.by_name.get(tier).copied().unwrap_or(0)
    }

    fn bucket(&self, index: usize) -> &Bucket {
        // Indexes come from `index`, so they are in range; the default tier otherwise.
        self.buckets.get(index).unwrap_or(&self.buckets[0])
    }
}

impl RedisRateLimit {
    /// Connects to the Redis server at `url` (e.g. `redis://10.0.0.5:6379/0`) with the
    /// default [prefix](DEFAULT_LIMIT_PREFIX) and [timeout](super::DEFAULT_TIMEOUT), and
    /// loads the script.
    ///
    /// # Errors
    ///
    /// The URL is invalid or the server cannot be reached.
    pub async fn connect(url: impl IntoConnectionInfo, tiers: Tiers) -> Result<Self, RedisError> {
        Self::builder(tiers).connect(url).await
    }

    /// Starts configuring a backend enforcing `tiers`.
    pub fn builder(tiers: Tiers) -> RedisRateLimitBuilder {
        RedisRateLimitBuilder {
            tiers,
            prefix: DEFAULT_LIMIT_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Takes the time from `clock` instead of the Redis server when `clock` is
    /// [manual](Clock::manual), so tests can move time as they do for the in-memory
    /// backend (a system clock changes nothing: production always uses the server's
    /// clock, which all replicas share).
    ///
    /// With a manual clock buckets do not expire, since Redis expires keys by its own
    /// clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.manual_clock = clock.is_manual().then_some(clock);
        self
    }

    /// The tiers this backend enforces.
    #[must_use]
    pub fn tiers(&self) -> &Tiers {
        &self.shared.tiers
    }

    /// The connection the backend uses (clones share it), e.g. to run other commands on
    /// the same multiplexed connection.
    #[must_use]
    pub fn connection(&self) -> &ConnectionManager {
        &self.connection
    }

    /// Checks `cost` cells against every limit in `limits` (pairs of the key a limit
    /// counts against and its tier) at once, all or nothing: the request is admitted
    /// and every bucket charged only if every limit admits it; otherwise no bucket is
    /// touched. One round trip, one atomic script.
    ///
    /// The decisions come back in the order of `limits`; each reports its own limit (its
    /// `retry_after`, when refused, is the time until that limit alone would admit the
    /// request: zero for the limits that did not refuse). Give each limit a distinct
    /// key or tier. An empty `limits` admits the request.
    ///
    /// Fails with [`LimitError::CostExceedsBurst`] (at once, without a round trip) if any
    /// limit's burst is smaller than `cost`.
    pub fn check_all(
        &self,
        limits: &[(&str, &str)],
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<CombinedDecision, LimitError>> {
        let shared = &self.shared;
        let mut indexes = Vec::with_capacity(limits.len());
        for &(_, tier) in limits {
            let index = shared.index(tier);
            if let Err(error) = shared.bucket(index).admissible(cost) {
                return BackendFuture::ready(Err(error));
            }
            indexes.push(index);
        }
        if limits.is_empty() {
            return BackendFuture::ready(Ok(CombinedDecision {
                allowed: true,
                decisions: Vec::new(),
            }));
        }
        let cmd = self.command(
            limits
                .iter()
                .map(|&(key, _)| key)
                .zip(indexes.iter().copied()),
            limits.iter().map(|&(key, _)| key.len()).sum(),
            cost,
        );
        let mut connection = self.connection.clone();
        let shared = Arc::clone(shared);
        BackendFuture::new(async move {
            let reply = within(shared.timeout, eval(&mut connection, &shared.script, &cmd))
                .await
                .map_err(LimitError::unavailable)?;
            let reply = Reply::parse(&reply, indexes.len())?;
            let allowed = reply.allowed();
            let decisions = indexes
                .iter()
                .enumerate()
                .map(|(i, &index)| shared.bucket(index).decision(allowed, reply.limit(i)))
                .collect();
            Ok(CombinedDecision { allowed, decisions })
        })
    }

    /// `EVALSHA <sha> <n> <buckets...> <now> <expire> <kind a b c>...`, written straight
    /// into the command's buffer.
    fn command<'k>(
        &self,
        limits: impl Iterator<Item = (&'k str, usize)> + Clone,
        key_bytes: usize,
        cost: NonZeroU32,
    ) -> Cmd {
        let shared = &self.shared;
        let count = limits.clone().count();
        let prefixes: usize = limits
            .clone()
            .map(|(_, index)| shared.bucket(index).key_prefix.len())
            .sum();
        let mut cmd = evalsha(
            &shared.script,
            count,
            (3 + 5 * count, prefixes + key_bytes + 20 + 62 * count),
        );
        for (key, index) in limits.clone() {
            arg_from_parts(
                &mut cmd,
                &[&shared.bucket(index).key_prefix, key.as_bytes()],
            );
        }
        match &self.manual_clock {
            Some(clock) => {
                let now = clock.elapsed();
                cmd.arg(MANUAL_EPOCH_SECS.saturating_add(now.as_secs()))
                    .arg(now.subsec_nanos())
                    .arg("0");
            }
            None => {
                cmd.arg("").arg(0).arg("1");
            }
        }
        for (_, index) in limits {
            shared.bucket(index).args(&mut cmd, cost);
        }
        cmd
    }
}

impl RateLimitBackend for RedisRateLimit {
    fn check(
        &self,
        key: &str,
        tier: &str,
        cost: NonZeroU32,
    ) -> BackendFuture<'static, Result<RateLimitDecision, LimitError>> {
        let index = self.shared.index(tier);
        if let Err(error) = self.shared.bucket(index).admissible(cost) {
            return BackendFuture::ready(Err(error));
        }
        let cmd = self.command(std::iter::once((key, index)), key.len(), cost);
        let mut connection = self.connection.clone();
        let shared = Arc::clone(&self.shared);
        BackendFuture::new(async move {
            let reply = within(shared.timeout, eval(&mut connection, &shared.script, &cmd))
                .await
                .map_err(LimitError::unavailable)?;
            let reply = Reply::parse(&reply, 1)?;
            Ok(shared
                .bucket(index)
                .decision(reply.allowed(), reply.limit(0)))
        })
    }
}

impl fmt::Debug for RedisRateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connection is left out: its URL may carry a password.
        f.debug_struct("RedisRateLimit")
            .field("tiers", &self.shared.tiers)
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.timeout)
            .field("manual_clock", &self.manual_clock.is_some())
            .finish_non_exhaustive()
    }
}

/// One limit's numbers in the script's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Numbers {
    /// Nanoseconds until the limit would admit the request.
    wait: u64,
    /// Nanoseconds until full (GCRA) or until the next slot frees (strict window).
    full: u64,
    /// Strict window: the slots left.
    remaining: u64,
}

/// The script's reply: `{allowed, wait_1, full_1, remaining_1, ...}`, checked.
struct Reply<'a>(&'a [Value]);

impl<'a> Reply<'a> {
    fn parse(value: &'a Value, limits: usize) -> Result<Self, LimitError> {
        match value {
            Value::Array(items)
                if items.len() == 1 + 3 * limits
                    && items.iter().all(|item| matches!(item, Value::Int(_))) =>
            {
                Ok(Self(items))
            }
            _ => Err(LimitError::unavailable(
                "unexpected reply from the rate-limit script",
            )),
        }
    }

    fn int(&self, at: usize) -> u64 {
        match self.0.get(at) {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        }
    }

    fn allowed(&self) -> bool {
        self.int(0) == 1
    }

    /// The numbers of limit `i` (from 0).
    fn limit(&self, i: usize) -> Numbers {
        Numbers {
            wait: self.int(1 + 3 * i),
            full: self.int(2 + 3 * i),
            remaining: self.int(3 + 3 * i),
        }
    }
}

/// Configures a [`RedisRateLimit`]; made by [`RedisRateLimit::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct RedisRateLimitBuilder {
    tiers: Tiers,
    prefix: String,
    timeout: Duration,
}

impl RedisRateLimitBuilder {
    /// The prefix of the buckets' keys (default [`DEFAULT_LIMIT_PREFIX`],
    /// `keygate:limit:`); a bucket is `<prefix><tier>:<key>`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.prefix);
        self
    }

    /// How long one round trip, or one connection attempt, may take (default
    /// [`DEFAULT_TIMEOUT`](super::DEFAULT_TIMEOUT), 250 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to the Redis server at `url` and loads the script.
    ///
    /// # Errors
    ///
    /// The URL is invalid or the server cannot be reached in time.
    pub async fn connect(self, url: impl IntoConnectionInfo) -> Result<RedisRateLimit, RedisError> {
        let client = Client::open(url)?;
        let timeout = self.timeout;
        let connection = client
            .get_connection_manager_with_config(manager_config(timeout))
            .await?;
        let limit = self.build(connection, Some(timeout));
        limit
            .shared
            .script
            .load_async(&mut limit.connection.clone())
            .await?;
        Ok(limit)
    }

    /// A backend on a connection the application already has (clones share one
    /// multiplexed connection). Its own timeouts apply, not [`timeout`](Self::timeout);
    /// the script is loaded by the first check.
    #[must_use]
    pub fn with_connection(self, connection: ConnectionManager) -> RedisRateLimit {
        self.build(connection, None)
    }

    fn build(self, connection: ConnectionManager, timeout: Option<Duration>) -> RedisRateLimit {
        let mut buckets = Vec::new();
        let mut by_name = HashMap::new();
        // The default tier comes first.
        for (index, (name, quota)) in self.tiers.iter().enumerate() {
            if index > 0 {
                by_name.insert(Box::from(name), index);
            }
            buckets.push(Bucket::new(&self.prefix, name, quota));
        }
        RedisRateLimit {
            connection,
            shared: Arc::new(Shared {
                tiers: self.tiers,
                buckets: buckets.into_boxed_slice(),
                by_name,
                script: Script::new(LIMITS),
                prefix: self.prefix,
                timeout,
            }),
            manual_clock: None,
        }
    }
}

/// The outcome of [`RedisRateLimit::check_all`]: one decision per limit, in the order
/// the limits were given, all admitted or all refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CombinedDecision {
    allowed: bool,
    decisions: Vec<RateLimitDecision>,
}

impl CombinedDecision {
    /// Whether the request was admitted (and every limit charged).
    #[must_use]
    pub fn allowed(&self) -> bool {
        self.allowed
    }

    /// Each limit's decision, in the order the limits were given.
    #[must_use]
    pub fn decisions(&self) -> &[RateLimitDecision] {
        &self.decisions
    }

    /// The decision to report in the response's rate-limit headers: when refused, the
    /// limit that keeps the caller waiting longest; when admitted, the one with the
    /// fewest requests left (the longest time to full capacity among equals). `None`
    /// when no limit was checked.
    #[must_use]
    pub fn binding(&self) -> Option<&RateLimitDecision> {
        if self.allowed {
            self.decisions
                .iter()
                .min_by_key(|d| (d.remaining, std::cmp::Reverse(d.reset)))
        } else {
            self.decisions.iter().max_by_key(|d| d.retry_after)
        }
    }

    /// The decisions, in the order the limits were given.
    #[must_use]
    pub fn into_decisions(self) -> Vec<RateLimitDecision> {
        self.decisions
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn tier_names_cannot_collide_in_bucket_keys() {
        let quota = Quota::per_minute(nz(1));
        let plain = Bucket::new("kg:", "gold", &quota);
        assert_eq!(&*plain.key_prefix, b"kg:gold:");
        // `a:b` + `c` and `a` + `b:c` would both be `a:b:c` without escaping.
        let colon = Bucket::new("kg:", "a:b", &quota);
        assert_eq!(&*colon.key_prefix, b"kg:a%3Ab:");
        let percent = Bucket::new("kg:", "a%3Ab", &quota);
        assert_eq!(&*percent.key_prefix, b"kg:a%253Ab:");
    }

    #[test]
    fn script_parameters_are_governors() {
        // 100 per minute, burst 5: T = 600 ms, tau = 4 T.
        let bucket = Bucket::new("", "t", &Quota::per_minute(nz(100)).with_burst(nz(5)));
        assert_eq!(bucket.interval, 600_000_000);
        assert_eq!(bucket.tolerance, 2_400_000_000);
        assert_eq!(bucket.extra(nz(3)), 1_200_000_000);
        assert!(bucket.admissible(nz(5)).is_ok());
        assert!(matches!(
            bucket.admissible(nz(6)),
            Err(LimitError::CostExceedsBurst { cost: 6, burst: 5 })
        ));
        // A third of a second is not a whole number of microseconds.
        let third = Bucket::new("", "t", &Quota::per_second(nz(3)));
        assert_eq!(third.interval, 333_333_333);
    }

    fn numbers(wait: u64, full: u64, remaining: u64) -> Numbers {
        Numbers {
            wait,
            full,
            remaining,
        }
    }

    #[test]
    fn strict_windows_take_their_own_arguments_and_numbers() {
        // Microseconds, rounded up.
        let odd = Quota::strict(nz(20), Duration::new(2, 1)).unwrap();
        assert_eq!(Bucket::new("", "t", &odd).window_micros, Some(2_000_001));
        let strict = Quota::strict(nz(20), Duration::from_secs(2)).unwrap();
        let bucket = Bucket::new("", "t", &strict);
        assert_eq!(bucket.window_micros, Some(2_000_000));
        assert!(bucket.admissible(nz(20)).is_ok());
        assert!(bucket.admissible(nz(21)).is_err());
        let mut cmd = Cmd::new();
        bucket.args(&mut cmd, nz(3));
        let args: Vec<_> = cmd.args_iter().collect();
        assert_eq!(args.len(), 4);
        assert!(matches!(args[0], redis::Arg::Simple(b"w")));
        // The script's remaining, its time to the next free slot, its wait.
        let refused = bucket.decision(false, numbers(700_000_000, 300_000_000, 2));
        assert_eq!(
            (refused.allowed, refused.remaining, refused.reset),
            (false, 2, Duration::from_millis(300))
        );
        assert_eq!(refused.retry_after, Some(Duration::from_millis(700)));
        assert_eq!(refused.headers().policy(), r#""default";q=20;w=2"#);
        let gcra = Bucket::new("", "t", &Quota::per_minute(nz(20)));
        assert_eq!(gcra.window_micros, None);
        let mut cmd = Cmd::new();
        gcra.args(&mut cmd, nz(1));
        assert!(matches!(
            cmd.args_iter().next(),
            Some(redis::Arg::Simple(b"g"))
        ));
    }

    #[test]
    fn decisions_count_remaining_cells_like_governor() {
        let bucket = Bucket::new("", "t", &Quota::per_second(nz(10)));
        // One request of cost 4 on a full bucket: full again in 400 ms, 6 left.
        let allowed = bucket.decision(true, numbers(0, 400_000_000, 0));
        assert_eq!(
            (allowed.allowed, allowed.remaining, allowed.reset),
            (true, 6, Duration::from_millis(400))
        );
        assert_eq!(allowed.retry_after, None);
        // A partial cell does not count.
        let refused = bucket.decision(false, numbers(100_000_000, 800_000_001, 0));
        assert_eq!(refused.remaining, 1);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(bucket.decision(true, numbers(0, 0, 0)).remaining, 10);
    }

    #[test]
    fn binding_decision_is_the_most_restrictive() {
        let quota = Quota::per_minute(nz(100));
        let admitted = CombinedDecision {
            allowed: true,
            decisions: vec![
                RateLimitDecision::allow(&quota, 50, Duration::from_secs(30)),
                RateLimitDecision::allow(&quota, 5, Duration::from_secs(57)),
                RateLimitDecision::allow(&quota, 5, Duration::from_secs(58)),
            ],
        };
        assert_eq!(admitted.binding().unwrap().reset, Duration::from_secs(58));
        let refused = CombinedDecision {
            allowed: false,
            decisions: vec![
                RateLimitDecision::refuse(&quota, 3, Duration::from_secs(1), Duration::ZERO),
                RateLimitDecision::refuse(
                    &quota,
                    0,
                    Duration::from_secs(60),
                    Duration::from_secs(2),
                ),
            ],
        };
        assert_eq!(
            refused.binding().unwrap().retry_after,
            Some(Duration::from_secs(2))
        );
        let empty = CombinedDecision {
            allowed: true,
            decisions: Vec::new(),
        };
        assert!(empty.binding().is_none());
    }

    #[test]
    fn replies_of_the_wrong_shape_are_errors() {
        let good = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            Value::Int(600),
            Value::Int(7),
        ]);
        let reply = Reply::parse(&good, 1).unwrap();
        assert!(reply.allowed());
        assert_eq!(reply.limit(0), numbers(0, 600, 7));
        assert!(Reply::parse(&good, 2).is_err());
        assert!(Reply::parse(&Value::Okay, 1).is_err());
        let text = Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"0".to_vec()),
            Value::Int(600),
            Value::Int(0),
        ]);
        assert!(Reply::parse(&text, 1).is_err());
    }
}
