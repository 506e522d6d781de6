//! Distributed mode (feature `redis`): rate limits and keys shared by every replica.
//!
//! One process keeps its limits and keys in memory. Several replicas behind a load
//! balancer must share them, or three replicas admit three times the quota and a key
//! revoked on one keeps working on the others. This module keeps both on Redis:
//!
//! * [`RedisRateLimit`], a [`RateLimitBackend`](crate::limit::RateLimitBackend): GCRA,
//!   the same algorithm and the same numbers as the in-memory
//!   [`InMemoryRateLimit`](crate::limit::InMemoryRateLimit), run as one atomic Lua script per
//!   check: one round trip, the Redis server's clock, several limits all-or-nothing
//!   ([`RedisRateLimit::check_all`]), and buckets that expire when they are full again.
//! * [`RedisRegistry`], a [`KeyRegistry`](crate::KeyRegistry): records (digests, never
//!   keys) in Redis, lookups served from a bounded local cache, and revocations and
//!   rotations pushed to every replica's cache over pub/sub, with a short cache lifetime
//!   as a safety net.
//!
//! Both talk to Redis over one multiplexed, self-reconnecting
//! [`ConnectionManager`] each, configured from a
//! `redis://` (or `rediss://`, `redis+unix://`) URL. Every round trip and every
//! connection attempt has a timeout ([`DEFAULT_TIMEOUT`], 250 ms, unless configured), so
//! a hung Redis cannot hang requests: a check fails with
//! [`LimitError::Unavailable`](crate::limit::LimitError::Unavailable) and a lookup with
//! [`RegistryError::Unavailable`](crate::RegistryError::Unavailable), and the guard
//! answers 503 `auth_unavailable`, or admits and audits the request when the limit is
//! [`fail_open`](crate::RateLimit::fail_open). Nothing needs restarting when Redis comes
//! back: the next request reconnects.
//!
//! Requires Redis 6 or later (the registry listens with RESP3 pushes), a single server
//! or a primary behind Sentinel or a proxy, not Redis Cluster.
//!
//! # Example
//!
//! ```no_run
//! use axum::{Extension, Router, routing::get};
//! use keygate::{
//!     ApiKeyGuard, KeyGrant, KeyRegistry, Principal, RateLimit,
//!     limit::Tiers,
//!     redis::{RedisRateLimit, RedisRegistry},
//! };
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let url = std::env::var("REDIS_URL")?; // e.g. redis://10.0.0.5:6379/0
//!
//! let registry = RedisRegistry::connect(url.as_str()).await?;
//! // Shown once to its owner; only its digest is stored in Redis.
//! let issued = registry.issue(KeyGrant::new("coordinator-1")).await?;
//!
//! // 100 requests per minute per principal, across all replicas.
//! let limit = RedisRateLimit::connect(url.as_str(), Tiers::default()).await?;
//!
//! let guard = ApiKeyGuard::builder()
//!     .registry(registry)
//!     .rate_limit(RateLimit::new(limit))
//!     .public_path("/health")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/jobs", get(|Extension(p): Extension<Principal>| async move { p.id().to_owned() }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(guard);
//! # let _ = (app, issued); Ok(()) }
//! ```
//!
//! # What is stored
//!
//! With the default prefixes:
//!
//! | key | holds |
//! |---|---|
//! | `keygate:limit:<tier>:<key or principal>` | the bucket's theoretical arrival time (nanoseconds since the Unix epoch); expires when the bucket is full again |
//! | `keygate:registry:key:<key id>` | the key's [`KeyRecord`](crate::KeyRecord) as JSON (SHA-256 digest, never the key) |
//! | `keygate:registry:digest:<digest hex>` | the same record, for opaque keys |
//! | `keygate:registry:principal:<principal id>` | the set of the principal's key ids |
//! | channel `keygate:registry:changes` | `<key id>:<digest hex>` of every revoked, changed or deleted key |

mod rate_limit;
mod registry;

use std::{io::Write as _, time::Duration};

use ::redis::{
    Cmd, ErrorKind, RedisResult, RedisWrite as _, Script, ServerErrorKind, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

pub use self::{
    rate_limit::{CombinedDecision, DEFAULT_LIMIT_PREFIX, RedisRateLimit, RedisRateLimitBuilder},
    registry::{
        DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_REGISTRY_PREFIX, RedisRegistry,
        RedisRegistryBuilder,
    },
};
/// The `redis` crate's error, returned when a connection cannot be set up.
pub use ::redis::RedisError;

/// How long a round trip to Redis, or an attempt to connect, may take unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// The configuration of every connection this module opens: each round trip and each
/// connection attempt bounded by `timeout`, and one connection attempt at a time, never
/// a series of retries with back-off that requests would wait for. A request that finds
/// the connection broken starts the next attempt (see [`send`]).
fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(0)
}

/// Appends one argument made of `parts`, without building it elsewhere first.
fn arg_from_parts(cmd: &mut Cmd, parts: &[&[u8]]) {
    let mut writer = cmd.writer_for_next_arg();
    for part in parts {
        // Writing into the command's own buffer cannot fail.
        let _ = writer.write_all(part);
    }
}

/// Sends `cmd` and turns an error reply into an `Err`.
async fn send(connection: &mut ConnectionManager, cmd: &Cmd) -> RedisResult<Value> {
    let reply = match connection.send_packed_command(cmd).await {
        // A refused connection means the command was never sent. The manager reconnects
        // only when asked, so the refusal may be that of an attempt made long ago, before
        // the server came back: ask once more, on the attempt this request just started.
        // (Never after other errors: a command that may have run must not run twice.)
        Err(error) if error.is_connection_refusal() => connection.send_packed_command(cmd).await,
        other => other,
    };
    match reply? {
        Value::ServerError(error) => Err(error.into()),
        value => Ok(value),
    }
}

/// Bounds a whole exchange (a reconnection, the round trips, a script reload) by
/// `timeout`, on top of the per-round-trip timeout of the connection.
async fn within<T>(
    timeout: Option<Duration>,
    exchange: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match timeout {
        None => exchange.await,
        Some(timeout) => tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the exchange with Redis timed out",
                )
                .into())
            }),
    }
}

/// `EVALSHA` of `script` with `cmd`'s arguments; loads the script first if the server
/// does not know it (any more: a restart, a failover, `SCRIPT FLUSH`).
async fn eval(
    connection: &mut ConnectionManager,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<Value> {
    match send(connection, cmd).await {
        Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            tracing::debug!("keygate: loading a script into Redis");
            script.load_async(connection).await?;
            send(connection, cmd).await
        }
        other => other,
    }
}

/// The start of an `EVALSHA` of `script` with `keys` keys; the caller adds the keys and
/// arguments.
fn evalsha(script: &Script, keys: usize, capacity: (usize, usize)) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + capacity.0, 48 + capacity.1);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys);
    cmd
}
