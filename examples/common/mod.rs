//! What the example servers (`coordinator`, `stitcher`, `websocket`) share.
//!
//! Include it at the root of an example's `main.rs` with
//! `#[path = "../common/mod.rs"] mod common;` (and from an integration test with
//! `#[path = "../examples/common/mod.rs"] mod common;`); the example's `app.rs` then uses
//! `crate::common::...`. It holds:
//!
//! - **Configuration**: [`ServerConfig`] (`LISTEN_ADDR`, `AUDIT_LOG`,
//!   `FAILED_ATTEMPTS_PER_MINUTE`, `DATABASE_URL`), [`required_key`], [`id_list`],
//!   [`redis_url`] (`REDIS_URL`; URLs are shown with their passwords redacted); every value
//!   is read
//!   through a lookup function (`|name| std::env::var(name).ok()` in `main`, a map in the
//!   tests), and every [`ConfigError`] names the variable and says how to fix it.
//! - **The guard**: [`guard_builder`], an [`ApiKeyGuard`] builder with what every example
//!   wants (client IP from axum's `ConnectInfo`, at most 100 requests in any minute per
//!   principal,
//!   the failed-attempt limiter, the audit sink); the example adds its keys and public
//!   paths. [`guard_builder_with`] takes the request limit from the caller (e.g. one
//!   shared by several replicas on Redis).
//! - **Keys**: [`open_registry`] (the keys in the database of `DATABASE_URL`, or on the
//!   Redis server of `REDIS_URL` when it is set) and [`ConfiguredKey`] (the keys from the
//!   environment, registered idempotently at every start, and again if Redis lost them).
//! - **Errors**: [`ApiError`], every error as the guard's JSON shape
//!   `{"error":{"code":..,"reason":..,"message":..}}`, and the extractors [`JsonBody`] and
//!   [`PathParam`], which refuse bad input with it instead of axum's plain text, and
//!   [`parse_json`] for JSON that arrives otherwise (a raw signed body, a WebSocket message).
//! - **Running**: [`api_defaults`] (JSON 404/405, a 64 KiB body limit), [`open_audit_log`],
//!   [`serve`] / [`bind_and_serve`], and [`main`], the whole of an example's `main` (with
//!   [`init_tracing`]: logs on stderr, `RUST_LOG`, default `info`; [`command_line`],
//!   [`verify_audit`] and [`exit_code`]).

// Each example uses a different part of this module.
#![allow(dead_code)]

use std::{
    borrow::Cow,
    error::Error as _,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    num::{NonZeroU32, NonZeroU64},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex, PoisonError, Weak},
    time::Duration,
};

use axum::{
    Router,
    extract::{
        ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts,
        rejection::{BytesRejection, JsonRejection, PathRejection},
    },
    http::{Extensions, StatusCode, header},
    response::{IntoResponse, Response},
};
use keygate::{
    ApiKey, ApiKeyGuard, ApiKeyGuardBuilder, AuditSink, BuildError, KeyError, KeyGrant, KeyRecord,
    KeyRegistry, KeyStatus, RateLimit, RegistryError, Rejection,
    audit::{AggregatingSink, AuditError, Background, CheckpointKey, JsonLinesSink},
    limit::{Clock, FailedAttemptLimiter, InMemoryRateLimit, Quota, Tiers},
};
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

/// The largest request body accepted, in bytes.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest id (workspace, principal name) accepted.
pub(crate) const MAX_ID_LEN: usize = 64;

// ---------------------------------------------------------------------------------------
// Configuration

/// Reads one configuration variable: `None` when it is not set.
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, as a [`Lookup`].
pub(crate) fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why the configuration was refused. Every message names the variable and says how to
/// fix it; none contains a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// An API key is missing or unusable (keygate's message names the variable).
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A required variable is not set.
    #[error("{var} is not set; {how}")]
    Missing {
        /// The variable.
        var: &'static str,
        /// How to set it.
        how: &'static str,
    },
    /// A variable is set to something unusable.
    #[error("{var} is not valid ({problem}); {how}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong (never the value of a secret).
        problem: String,
        /// How to set it.
        how: &'static str,
    },
    /// A variable is set, but this build cannot do what it asks for.
    #[error("{var} is set, but {problem}; {how}")]
    Unsupported {
        /// The variable.
        var: &'static str,
        /// What this build lacks.
        problem: &'static str,
        /// What to do instead.
        how: &'static str,
    },
    /// Several of the above, all reported at once (one per line), so that a user fixes
    /// every variable in one go rather than one per run.
    #[error("{} configuration problems:{}", .0.len(), bulleted(.0))]
    Several(Vec<ConfigError>),
}

/// Each error on a line of its own, after a newline and a dash.
fn bulleted(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|error| format!("\n  - {error}"))
        .collect()
}

/// The configuration errors found so far: a configuration reads every variable and
/// reports all that are wrong, not only the first.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigError>);

impl Problems {
    /// The value of `result`, or `None` after noting its error(s).
    pub(crate) fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(ConfigError::Several(errors)) => {
                self.0.extend(errors);
                None
            }
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }

    /// Every error noted: the one, or [`ConfigError::Several`].
    pub(crate) fn into_error(mut self) -> ConfigError {
        if self.0.len() == 1
            && let Some(error) = self.0.pop()
        {
            return error;
        }
        ConfigError::Several(self.0)
    }
}

/// Reads the API key in `var`: at least 32 characters (e.g. `openssl rand -base64 32`) or
/// a key generated by keygate. Surrounding whitespace is trimmed.
pub(crate) fn required_key(lookup: Lookup<'_>, var: &'static str) -> Result<ApiKey, ConfigError> {
    Ok(ApiKey::from_var(var, lookup(var))?)
}

/// Whether `id` may name a workspace or a principal: 1 to 64 ASCII letters, digits, `-`,
/// `_` or `.`.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads a comma-separated list of ids (see [`is_valid_id`]) from `var`: `Ok(None)` when
/// it is not set, an error for an empty list or entry, or a malformed id.
pub(crate) fn id_list(
    lookup: Lookup<'_>,
    var: &'static str,
    how: &'static str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(value) = lookup(var) else {
        return Ok(None);
    };
    let mut ids = Vec::new();
    for (index, id) in value.split(',').map(str::trim).enumerate() {
        if !is_valid_id(id) {
            return Err(ConfigError::Invalid {
                var,
                problem: format!(
                    "entry {} is not 1 to {MAX_ID_LEN} letters, digits, `-`, `_` or `.`",
                    index + 1
                ),
                how,
            });
        }
        if !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
    }
    Ok(Some(ids))
}

/// How [`SecretUrl`] shows what it hides.
const REDACTED: &str = "[REDACTED]";

/// The URL of a Redis server (`REDIS_URL`), e.g. `redis://:password@10.0.0.5:6379/0`.
pub(crate) type RedisUrl = SecretUrl;

/// The URL of the key database (`DATABASE_URL`), e.g. `sqlite://keygate.db` or
/// `postgres://keygate:password@10.0.0.5/app`.
pub(crate) type DatabaseUrl = SecretUrl;

/// A URL that may carry a password.
///
/// `Debug` and `Display` show it with its password replaced by `[REDACTED]`, so that a
/// configuration can be printed; [`expose`](Self::expose) gives the URL itself, to connect.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`. It is not checked here: connecting reports a malformed URL.
    pub(crate) fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL, password included.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `[REDACTED]`: the password of the user
    /// information (`redis://user:<password>@host`, and all of it when it has no `:`,
    /// which is most likely a password without its colon) and the `pass` or `password`
    /// query parameter (`redis+unix:///run/redis.sock?pass=<password>`). What cannot be
    /// read as a URL is hidden whole. When in doubt it hides too much, never too little:
    /// everything up to the last `@` counts as user information.
    pub(crate) fn redacted(&self) -> String {
        let Some((scheme, rest)) = self.0.split_once("://") else {
            return REDACTED.to_owned();
        };
        let mut shown = String::with_capacity(self.0.len() + REDACTED.len());
        shown.push_str(scheme);
        shown.push_str("://");
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => {
                match userinfo.split_once(':') {
                    // A user name as URLs spell it; anything else may hide a secret.
                    Some((user, _))
                        if user.bytes().all(|b| {
                            b.is_ascii_alphanumeric()
                                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'%')
                        }) =>
                    {
                        shown.push_str(user);
                        shown.push(':');
                        shown.push_str(REDACTED);
                    }
                    _ => shown.push_str(REDACTED),
                }
                shown.push('@');
                rest
            }
            None => rest,
        };
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        shown.push_str(before_query);
        if let Some(query) = query {
            let (query, fragment) = match query.split_once('#') {
                Some((query, fragment)) => (query, Some(fragment)),
                None => (query, None),
            };
            shown.push('?');
            for (index, pair) in query.split('&').enumerate() {
                if index > 0 {
                    shown.push('&');
                }
                match pair.split_once('=') {
                    Some((name, _))
                        if name.eq_ignore_ascii_case("pass")
                            || name.eq_ignore_ascii_case("password") =>
                    {
                        shown.push_str(name);
                        shown.push('=');
                        shown.push_str(REDACTED);
                    }
                    _ => shown.push_str(pair),
                }
            }
            if let Some(fragment) = fragment {
                shown.push('#');
                shown.push_str(fragment);
            }
        }
        shown
    }
}

impl fmt::Debug for SecretUrl {
    /// The URL with its password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for SecretUrl {
    /// The URL with its password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The refusal of `REDIS_URL` by a build without the `redis` feature.
pub(crate) fn redis_unsupported() -> ConfigError {
    ConfigError::Unsupported {
        var: "REDIS_URL",
        problem: "this build has no Redis support",
        how: "build with `--features redis` (e.g. `cargo run -p keygate-examples --features \
              redis --bin coordinator`) to share keys and rate limits between replicas, or unset \
              REDIS_URL to keep them in this process's memory",
    }
}

/// Reads `REDIS_URL`, the Redis server that replicas share keys and rate limits on:
/// `Ok(None)` when it is not set. Refused when it is empty, or when the crate was built
/// without the `redis` feature (the message says to build with `--features redis`).
pub(crate) fn redis_url(lookup: Lookup<'_>) -> Result<Option<RedisUrl>, ConfigError> {
    let Some(value) = lookup("REDIS_URL") else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(ConfigError::Invalid {
            var: "REDIS_URL",
            problem: "it is empty".to_owned(),
            how: "set it to the Redis server's URL, e.g. REDIS_URL=redis://10.0.0.5:6379/0, \
                  or unset it to keep keys and rate limits in memory",
        });
    }
    if cfg!(not(feature = "redis")) {
        return Err(redis_unsupported());
    }
    Ok(Some(RedisUrl::new(value)))
}

/// The default of `DATABASE_URL`: a file in the working directory, created on first start.
pub(crate) const DEFAULT_DATABASE_URL: &str = "sqlite://keygate.db";

/// Reads `DATABASE_URL`, the database that holds the keys (default
/// [`DEFAULT_DATABASE_URL`]). Refused when empty, or when its scheme needs a feature this
/// build lacks (`postgres://` without `--features postgres`).
pub(crate) fn database_url(lookup: Lookup<'_>) -> Result<DatabaseUrl, ConfigError> {
    const HOW: &str = "set it to sqlite://<file> (e.g. DATABASE_URL=sqlite://keygate.db) or, \
                       built with `--features postgres`, to postgres://user:password@host/db; \
                       or unset it for sqlite://keygate.db";
    let Some(value) = lookup("DATABASE_URL") else {
        return Ok(SecretUrl::new(DEFAULT_DATABASE_URL));
    };
    let value = value.trim();
    let scheme = value.split_once(':').map_or("", |(scheme, _)| scheme);
    let problem = match scheme.to_ascii_lowercase().as_str() {
        _ if value.is_empty() => "it is empty",
        "sqlite" => return Ok(SecretUrl::new(value)),
        "postgres" | "postgresql" if cfg!(feature = "postgres") => {
            return Ok(SecretUrl::new(value));
        }
        "postgres" | "postgresql" => "this build has no PostgreSQL support (`--features postgres`)",
        _ => "its scheme is neither sqlite nor postgres",
    };
    Err(ConfigError::Invalid {
        var: "DATABASE_URL",
        problem: problem.to_owned(),
        how: HOW,
    })
}

/// Opens the key registry: on the Redis server of `redis` when it is set (shared by every
/// replica on that server; `DATABASE_URL` is then not used for keys), otherwise in the
/// database of `database`.
pub(crate) async fn open_registry(
    database: &DatabaseUrl,
    redis: Option<&RedisUrl>,
) -> Result<Arc<dyn KeyRegistry>, StartError> {
    if let Some(url) = redis {
        return open_redis_registry(url).await;
    }
    let registry = keygate::sql::SqlRegistry::connect(database.expose())
        .await
        .map_err(|source| StartError::Database {
            url: database.clone(),
            source: source.into(),
        })?;
    Ok(Arc::new(registry))
}

#[cfg(feature = "redis")]
async fn open_redis_registry(url: &RedisUrl) -> Result<Arc<dyn KeyRegistry>, StartError> {
    let registry = keygate::redis::RedisRegistry::connect(url.expose())
        .await
        .map_err(|source| StartError::Redis {
            url: url.clone(),
            source: source.into(),
        })?;
    Ok(Arc::new(registry))
}

#[cfg(not(feature = "redis"))]
async fn open_redis_registry(_: &RedisUrl) -> Result<Arc<dyn KeyRegistry>, StartError> {
    Err(redis_unsupported().into())
}

/// How often the configured keys are registered again on Redis (see
/// [`ConfiguredKey::keep_registered`]).
pub(crate) const REREGISTER_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// A key from the configuration and what it is for.
///
/// Registering it is idempotent: at every start (and, on Redis, again whenever Redis lost
/// it, see [`ConfiguredKey::keep_registered`]) it is registered unless the registry has
/// it, by digest, for the same principal; another replica starting at the same moment may
/// be first. A process refuses to start when the registry has it for another principal,
/// or when another key has its key id. The stored record is what counts: a revoked key
/// stays revoked, and workspaces or scopes configured differently than at its
/// registration are not applied (both are reported on stderr).
#[derive(Clone)]
pub(crate) struct ConfiguredKey {
    /// The variable the key came from.
    pub(crate) var: &'static str,
    pub(crate) key: ApiKey,
    pub(crate) principal: &'static str,
    pub(crate) workspaces: Vec<String>,
    pub(crate) scopes: Vec<&'static str>,
}

impl ConfiguredKey {
    /// Registers `keys`, or accepts them as registered. Checks them all first, so that a
    /// refusal leaves none of them registered.
    pub(crate) async fn register_all(
        registry: &dyn KeyRegistry,
        keys: &[ConfiguredKey],
    ) -> Result<(), StartError> {
        let mut registered = Vec::with_capacity(keys.len());
        for key in keys {
            registered.push(key.registered(registry).await?);
        }
        for (key, registered) in keys.iter().zip(registered) {
            if registered {
                continue;
            }
            match registry.register_key(&key.key, key.grant()).await {
                Ok(_) => {}
                // Another replica, starting at the same moment, was first.
                Err(RegistryError::Duplicate) => {
                    if !key.registered(registry).await? {
                        return Err(key.taken(None));
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Registers `keys` again every `every`, for a registry that can lose them while the
    /// process runs (Redis restarted without persistence): the configured keys work again
    /// as soon as Redis is back, without restarting the replicas. Stops with the runtime.
    pub(crate) fn keep_registered(
        registry: Arc<dyn KeyRegistry>,
        keys: Vec<ConfiguredKey>,
        every: std::time::Duration,
    ) {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(error) = Self::register_all(registry.as_ref(), &keys).await {
                    tracing::warn!(%error, "configured keys not registered again yet");
                }
            }
        });
    }

    fn grant(&self) -> KeyGrant {
        KeyGrant::new(self.principal)
            .workspaces(&self.workspaces)
            .scopes(self.scopes.iter().copied())
            .label(self.var)
    }

    /// Whether the registry has the key for its principal already; an error if it has
    /// it for another one.
    async fn registered(&self, registry: &dyn KeyRegistry) -> Result<bool, StartError> {
        let Some(record) = registry.find_by_digest(&self.key.digest()).await? else {
            return Ok(false);
        };
        if record.principal_id != self.principal {
            return Err(self.taken(Some(record.principal_id.clone())));
        }
        self.report_differences(&record);
        Ok(true)
    }

    fn taken(&self, registered_to: Option<String>) -> StartError {
        StartError::KeyTaken {
            var: self.var,
            principal: self.principal,
            registered_to,
        }
    }

    /// Says on stderr where the registered record, which is what counts, differs from
    /// the configuration.
    fn report_differences(&self, record: &KeyRecord) {
        let var = self.var;
        if record.status_at(time::OffsetDateTime::now_utc()) != KeyStatus::Active {
            eprintln!(
                "warning: {var} is revoked or expired in the key registry and stays refused; \
                 configure a new key"
            );
        }
        if !same_set(
            &record.workspaces,
            self.workspaces.iter().map(String::as_str),
        ) {
            eprintln!(
                "warning: {var} is registered with the workspaces {:?}, which apply, not the \
                 configured {:?} (to change them, configure a new key)",
                record.workspaces, self.workspaces
            );
        }
        if !same_set(&record.scopes, self.scopes.iter().copied()) {
            eprintln!(
                "warning: {var} is registered with the scopes {:?}, which apply, not {:?} \
                 (to change them, configure a new key)",
                record.scopes, self.scopes
            );
        }
    }
}

/// Whether `stored` and `configured` hold the same ids, in any order.
fn same_set<'a>(stored: &[String], configured: impl Iterator<Item = &'a str> + Clone) -> bool {
    configured.clone().all(|id| stored.iter().any(|s| s == id))
        && stored.iter().all(|s| configured.clone().any(|id| id == s))
}

/// Reads `AUDIT_CHECKPOINT_KEY`: unset (no checkpoints), or a key of at least 32 bytes.
pub(crate) fn audit_checkpoint_key(
    lookup: Lookup<'_>,
) -> Result<Option<SecretString>, ConfigError> {
    let Some(value) = lookup("AUDIT_CHECKPOINT_KEY") else {
        return Ok(None);
    };
    let value = SecretString::from(value);
    CheckpointKey::from_bytes(value.expose_secret().as_bytes()).map_err(|_| {
        ConfigError::Invalid {
            var: "AUDIT_CHECKPOINT_KEY",
            problem: "it is shorter than 32 bytes".to_owned(),
            how: "set it to the output of `openssl rand -base64 32`, or unset it for an \
                  audit log without signed checkpoints",
        }
    })?;
    Ok(Some(value))
}

/// The settings every example server has.
#[derive(Clone)]
pub(crate) struct ServerConfig {
    /// `LISTEN_ADDR`, default `127.0.0.1:8080`. Port 0 picks a free port (printed on start).
    pub(crate) listen_addr: SocketAddr,
    /// `AUDIT_LOG`, default `<example>-audit.jsonl` in the working directory: the hash-chained
    /// JSON-lines audit trail.
    pub(crate) audit_log: PathBuf,
    /// `FAILED_ATTEMPTS_PER_MINUTE`, default 10: how many failed authentications a client
    /// address may make per minute (all of them in a row) before it is refused with 429.
    pub(crate) failed_attempts_per_minute: NonZeroU32,
    /// `DATABASE_URL`, default `sqlite://keygate.db` (created in the working directory on
    /// first start): the database that holds the keys, so that they survive restarts.
    pub(crate) database_url: DatabaseUrl,
    /// `AUDIT_CHECKPOINT_KEY`, optional (at least 32 bytes, e.g. `openssl rand -base64
    /// 32`): signs a checkpoint in the audit log every [`CHECKPOINT_EVERY`] records and at
    /// shutdown, so that `--verify-audit` (with the same variable set) detects a rewritten
    /// or cut log.
    pub(crate) audit_checkpoint_key: Option<SecretString>,
    /// `AUDIT_AGGREGATE_SECS`, default 10: the interval over which refusals of
    /// unauthenticated callers are counted per client and reason, one record each (plus
    /// one with the count of the rest); `0` writes one record per refusal.
    pub(crate) audit_aggregate: Duration,
    /// Timeouts and the connection cap of the server (not configurable; tests shorten
    /// them).
    pub(crate) limits: ConnectionLimits,
    /// The clock of the rate limits: the system clock (not configurable; tests stand it
    /// still with `Clock::manual()` so that timing cannot change their outcome).
    pub(crate) clock: Clock,
    /// The audit log once [`open_audit_log`] opened it, for [`main`] to flush at a
    /// graceful stop (shared by the clones of this configuration).
    pub(crate) opened_audit_log: OpenedAuditLog,
}

/// The audit log an example opened, held weakly (it does not keep the file open): what
/// [`main`] flushes when the server stops, and tests before they read the log.
#[derive(Clone, Default)]
pub(crate) struct OpenedAuditLog(Arc<Mutex<Option<Weak<dyn AuditSink>>>>);

impl OpenedAuditLog {
    /// Notes the log that was opened.
    fn set(&self, sink: &Arc<dyn AuditSink>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(sink));
    }

    /// Writes out what is queued for the log, and a signed checkpoint when checkpoints
    /// are on; waits until it is written. Nothing to do when no log is open (a log that
    /// was closed was written out as it closed).
    pub(crate) fn flush(&self) {
        let sink = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        if let Some(sink) = sink {
            sink.flush();
        }
    }
}

impl fmt::Debug for OpenedAuditLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpenedAuditLog")
    }
}

/// How many audit records go between two signed checkpoints.
pub(crate) const CHECKPOINT_EVERY: NonZeroU64 = match NonZeroU64::new(1000) {
    Some(n) => n,
    None => NonZeroU64::MIN,
};

impl fmt::Debug for ServerConfig {
    /// The configured settings (the clock is not one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen_addr", &self.listen_addr)
            .field("audit_log", &self.audit_log)
            .field(
                "failed_attempts_per_minute",
                &self.failed_attempts_per_minute,
            )
            .field("database_url", &self.database_url)
            .field(
                "audit_checkpoint_key",
                &self.audit_checkpoint_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("audit_aggregate", &self.audit_aggregate)
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServerConfig {
    /// The port of the default listen address, `127.0.0.1:8080`.
    pub(crate) const DEFAULT_PORT: u16 = 8080;
    /// The default failed-attempt allowance.
    pub(crate) const DEFAULT_FAILED_ATTEMPTS_PER_MINUTE: NonZeroU32 = match NonZeroU32::new(10) {
        Some(ten) => ten,
        None => NonZeroU32::MIN,
    };

    /// Reads `LISTEN_ADDR`, `AUDIT_LOG`, `FAILED_ATTEMPTS_PER_MINUTE` and `DATABASE_URL`.
    /// The default audit log of the example `name`: its own file, `<name>-audit.jsonl`
    /// (two processes cannot share one: the sink locks it).
    pub(crate) fn default_audit_log(name: &str) -> PathBuf {
        PathBuf::from(format!("{name}-audit.jsonl"))
    }

    pub(crate) fn from_lookup(name: &str, lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        let mut problems = Problems::default();
        let listen_addr = problems.check(match lookup("LISTEN_ADDR") {
            None => Ok(SocketAddr::from(([127, 0, 0, 1], Self::DEFAULT_PORT))),
            Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                var: "LISTEN_ADDR",
                problem: format!("{value:?} is not an address and port"),
                how: "set it to an IP address and port, e.g. LISTEN_ADDR=127.0.0.1:8080 \
                      (port 0 picks a free port)",
            }),
        });
        let audit_log = problems.check(match lookup("AUDIT_LOG") {
            Some(path) if !path.trim().is_empty() => Ok(PathBuf::from(path)),
            Some(_) => Err(ConfigError::Invalid {
                var: "AUDIT_LOG",
                problem: "it is empty".to_owned(),
                how: "set it to the path of the audit file, or unset it for <example>-audit.jsonl",
            }),
            None => Ok(Self::default_audit_log(name)),
        });
        let audit_checkpoint_key = problems.check(audit_checkpoint_key(lookup));
        let audit_aggregate = problems.check(match lookup("AUDIT_AGGREGATE_SECS") {
            None => Ok(Duration::from_secs(10)),
            Some(value) => value
                .trim()
                .parse::<u16>()
                .map(|secs| Duration::from_secs(secs.into()))
                .map_err(|_| ConfigError::Invalid {
                    var: "AUDIT_AGGREGATE_SECS",
                    problem: format!("{value:?} is not a whole number of seconds from 0 to 65535"),
                    how: "set it to the seconds over which refusals are counted (0: one \
                          record each), or unset it for 10",
                }),
        });
        let failed_attempts_per_minute =
            problems.check(match lookup("FAILED_ATTEMPTS_PER_MINUTE") {
                None => Ok(Self::DEFAULT_FAILED_ATTEMPTS_PER_MINUTE),
                Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                    var: "FAILED_ATTEMPTS_PER_MINUTE",
                    problem: format!("{value:?} is not a whole number from 1 to 4294967295"),
                    how: "set it to a positive whole number, or unset it for 10",
                }),
            });
        let database_url = problems.check(database_url(lookup));
        let (
            Some(listen_addr),
            Some(audit_log),
            Some(failed_attempts_per_minute),
            Some(database_url),
            Some(audit_checkpoint_key),
            Some(audit_aggregate),
        ) = (
            listen_addr,
            audit_log,
            failed_attempts_per_minute,
            database_url,
            audit_checkpoint_key,
            audit_aggregate,
        )
        else {
            return Err(problems.into_error());
        };
        Ok(Self {
            listen_addr,
            audit_log,
            failed_attempts_per_minute,
            database_url,
            audit_checkpoint_key,
            audit_aggregate,
            limits: ConnectionLimits::default(),
            clock: Clock::system(),
            opened_audit_log: OpenedAuditLog::default(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// The guard and the audit log

/// The client address axum puts into the request extensions when the server runs with
/// `into_make_service_with_connect_info::<SocketAddr>()` (as [`serve`] does).
pub(crate) fn connect_info_ip(extensions: &Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A guard builder with what every example wants: the client address from
/// `ConnectInfo`, at most 100 requests in any minute per principal, the failed-attempt limiter of
/// `server`, and every decision recorded in `audit`. Add keys (or a registry) and public
/// paths, then `build()`.
pub(crate) fn guard_builder(
    server: &ServerConfig,
    audit: Arc<dyn AuditSink>,
) -> ApiKeyGuardBuilder {
    guard_builder_with(server, audit, in_memory_requests(server))
}

/// At most 100 requests in any 60 seconds per principal, counted in this process's memory
/// (with the clock of `server`).
pub(crate) fn in_memory_requests(server: &ServerConfig) -> RateLimit {
    RateLimit::new(InMemoryRateLimit::new(request_tiers()).with_clock(server.clock.clone()))
}

/// The request limit of every example: at most 100 requests in any 60 seconds, a strict
/// window ([`Quota::strict`]), not GCRA's 100 per minute on average with a burst of 100.
pub(crate) fn request_tiers() -> Tiers {
    let hundred = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN);
    // 100 is far below `MAX_STRICT_LIMIT`, so `strict_per_minute` never refuses it.
    Quota::strict_per_minute(hundred).map_or_else(|_| Tiers::default(), Tiers::new)
}

/// [`guard_builder`] with the request limit `requests` instead of the in-memory one, e.g.
/// a limit on Redis that several replicas share. The failed-attempt limiter stays in
/// this process's memory.
pub(crate) fn guard_builder_with(
    server: &ServerConfig,
    audit: Arc<dyn AuditSink>,
    requests: RateLimit,
) -> ApiKeyGuardBuilder {
    let failed_attempts =
        FailedAttemptLimiter::new(Quota::per_minute(server.failed_attempts_per_minute))
            .with_clock(server.clock.clone());
    ApiKeyGuard::builder()
        .client_ip(connect_info_ip)
        .rate_limit(requests)
        .failed_attempts(failed_attempts)
        .audit(audit)
}

/// Opens (or continues) the hash-chained audit log of `server`, locked against a second
/// writer, signed every [`CHECKPOINT_EVERY`] records when `AUDIT_CHECKPOINT_KEY` is set,
/// written off the request threads (a queue of 4,096 records and a writer thread that
/// writes what is queued in batches; a full queue makes requests wait, nothing is lost),
/// behind an [`AggregatingSink`] (unless `AUDIT_AGGREGATE_SECS=0`) so that floods of
/// unauthenticated refusals are counted rather than written one line each. Noted in
/// `server.opened_audit_log`, which [`main`] flushes at a graceful stop.
pub(crate) fn open_audit_log(server: &ServerConfig) -> Result<Arc<dyn AuditSink>, StartError> {
    let path = &server.audit_log;
    let failed = |source| StartError::AuditLog {
        path: path.clone(),
        source,
    };
    let mut file = JsonLinesSink::open(path).map_err(failed)?;
    if let Some(key) = &server.audit_checkpoint_key {
        let key = CheckpointKey::from_bytes(key.expose_secret().as_bytes())
            .map_err(|error| failed(error.into()))?;
        file = file.with_checkpoints(key, CHECKPOINT_EVERY);
    }
    let file = file.background(Background::default()).map_err(failed)?;
    let sink: Arc<dyn AuditSink> = if server.audit_aggregate.is_zero() {
        Arc::new(file)
    } else {
        Arc::new(AggregatingSink::new(file).interval(server.audit_aggregate))
    };
    server.opened_audit_log.set(&sink);
    Ok(sink)
}

/// Why a server could not start (or `--verify-audit` failed).
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The command line was not understood.
    #[error("{0}")]
    Usage(String),
    /// The audit log could not be opened or continued.
    #[error("cannot open the audit log {}; check AUDIT_LOG", path.display())]
    AuditLog {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: AuditError,
    },
    /// The audit log does not verify.
    #[error("{} does not verify", path.display())]
    Verify {
        /// The file.
        path: PathBuf,
        /// Where the chain breaks (or why the file could not be read).
        #[source]
        source: AuditError,
    },
    /// keygate refused the guard's configuration.
    #[error("the API-key guard is misconfigured")]
    Guard(#[from] BuildError),
    /// A configured key could not be registered.
    #[error("cannot register the configured keys")]
    Registry(#[from] RegistryError),
    /// A configured key is registered already, in the key registry (the database or
    /// Redis), for another principal (or its key id is another key's).
    #[error(
        "{var} is registered already in the key registry (DATABASE_URL, or REDIS_URL when \
         set), for {}, not for principal `{principal}`; configure a key of its own for each \
         principal",
        owner(registered_to.as_deref())
    )]
    KeyTaken {
        /// The variable that holds the key.
        var: &'static str,
        /// The principal the configuration gives the key to.
        principal: &'static str,
        /// The principal the shared registry has the key for (`None`: another key has
        /// its key id).
        registered_to: Option<String>,
    },
    /// The key database of `DATABASE_URL` could not be opened.
    #[error("cannot open the key database {url}; check DATABASE_URL")]
    Database {
        /// The URL, shown with its password redacted.
        url: DatabaseUrl,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Redis server of `REDIS_URL` could not be reached.
    #[error("cannot connect to Redis at {url}; check REDIS_URL and that the server is running")]
    Redis {
        /// The URL, shown with its password redacted.
        url: RedisUrl,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}; check LISTEN_ADDR")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// Whom [`StartError::KeyTaken`] found a key registered for.
fn owner(registered_to: Option<&str>) -> String {
    registered_to.map_or_else(
        || "another key with the same key id".to_owned(),
        |principal| format!("principal `{principal}`"),
    )
}

// ---------------------------------------------------------------------------------------
// Errors in the guard's JSON shape

/// An error answered as `{"error":{"code":<status>,"reason":<reason>,"message":<text>}}`,
/// the shape of the guard's refusals, so that a client handles one shape.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// A keygate refusal, rendered by keygate (with its headers).
    Rejected(Rejection),
    /// An error of the example itself.
    Other {
        /// The status, always 4xx for bad input.
        status: StatusCode,
        /// The machine-readable reason, e.g. `invalid_body`.
        reason: &'static str,
        /// A sentence for humans.
        message: Cow<'static, str>,
    },
}

impl ApiError {
    /// An error with this status, reason and message.
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::Other {
            status,
            reason,
            message: message.into(),
        }
    }

    /// 422 `invalid_body`: the body is well-formed JSON of the right shape, but a value is
    /// out of range (the status axum gives wrong types).
    pub(crate) fn invalid_body(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", message)
    }

    /// 404 `not_found`.
    pub(crate) fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`: the request clashes with the current state.
    pub(crate) fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// The status.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            Self::Rejected(rejection) => rejection.status(),
            Self::Other { status, .. } => *status,
        }
    }

    /// The machine-readable reason (also what audit events record).
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Rejected(rejection) => rejection.reason(),
            Self::Other { reason, .. } => reason,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(rejection) => rejection.fmt(f),
            Self::Other {
                reason, message, ..
            } => write!(f, "{message} ({reason})"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(rejection) => rejection.to_response(&keygate::JsonRejection, None),
            Self::Other {
                status,
                reason,
                message,
            } => {
                // keygate renders only its own refusals: the same shape, fields in the same
                // order, for the example's errors (a JSON string escapes what it must).
                let json = format!(
                    r#"{{"error":{{"code":{},"reason":{},"message":{}}}}}"#,
                    status.as_u16(),
                    serde_json::Value::from(reason),
                    serde_json::Value::from(message.into_owned()),
                );
                (status, [(header::CONTENT_TYPE, "application/json")], json).into_response()
            }
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> Self {
        Self::Rejected(rejection)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (status, reason) = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            JsonRejection::BytesRejection(_)
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
            }
            // Malformed JSON (400), wrong types, missing or unknown fields (422), and a body
            // that could not be read.
            _ => (client_error(rejection.status()), "invalid_body"),
        };
        Self::new(status, reason, rejection.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = client_error(rejection.status());
        let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        Self::new(status, reason, rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::new(
            client_error(rejection.status()),
            "invalid_path",
            rejection.body_text(),
        )
    }
}

/// Bad input is the client's error: a status outside 4xx (which axum uses for a body that
/// failed to arrive) becomes 400.
fn client_error(status: StatusCode) -> StatusCode {
    if status.is_client_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// Parses JSON text that arrived some other way than as a request body (a body that had
/// to be checked raw first, such as a signed webhook, or a WebSocket message), with the
/// refusals of [`JsonBody`]: 400 `invalid_body` for malformed JSON, 422 `invalid_body`
/// for wrong types, missing or unknown fields.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(text).map_err(|error| {
        let status = match error.classify() {
            serde_json::error::Category::Data => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(
            status,
            "invalid_body",
            format!("invalid JSON body: {error}"),
        )
    })
}

/// A JSON request body, like `axum::Json`, but refused with an [`ApiError`]: 400 or 422
/// `invalid_body` for malformed JSON, wrong types, missing or unknown fields, 415
/// `unsupported_media_type` without `Content-Type: application/json`, 413
/// `body_too_large` over [`MAX_BODY_BYTES`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct JsonBody<T>(pub(crate) T);

/// A path parameter, like `axum::extract::Path`, but refused with an [`ApiError`] (400
/// `invalid_path`).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct PathParam<T>(pub(crate) T);

/// Adds what every example API has: JSON 404 and 405 answers for unknown routes and
/// methods, and the [`MAX_BODY_BYTES`] body limit. Call it before adding the guard, so that
/// the guard still runs first (unknown paths need a key too: deny by default).
pub(crate) fn api_defaults(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept this method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

// ---------------------------------------------------------------------------------------
// Running

/// What a server holds open for its clients, so that slow or idle ones cannot exhaust it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConnectionLimits {
    /// How long a client may take to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request: then the connection is closed.
    pub(crate) header_read_timeout: Duration,
    /// How many connections are served at once; beyond, new ones wait in the listen
    /// backlog until one closes.
    pub(crate) max_connections: usize,
}

impl Default for ConnectionLimits {
    /// 10 seconds to send the headers (or to start the next request), 1,024 connections.
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// Serves `router` on `listener` with the default [`ConnectionLimits`] until `shutdown`
/// completes.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    serve_with(listener, router, ConnectionLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown` completes: HTTP/1.1 with upgrades
/// (WebSocket), the peer address in each request as `ConnectInfo<SocketAddr>` (which
/// [`connect_info_ip`] reads for the guard), and `limits` on slow, idle and numerous
/// connections. On shutdown it stops accepting and lets open connections finish their
/// requests (for at most `header_read_timeout`).
///
/// `axum::serve` has no timers: a client that sends half a request holds its connection
/// (and a file descriptor) forever, and enough of them stop the server. Hence hyper's own
/// connection builder here, with a timer.
pub(crate) async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    use hyper::server::conn::http1;
    use hyper_util::{
        rt::{TokioIo, TokioTimer},
        service::TowerToHyperService,
    };
    use tokio::sync::{Semaphore, watch};
    use tower::ServiceExt as _;

    let max = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let (stop, stopping) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: beyond the cap, clients wait in the
        // backlog instead of taking a file descriptor each.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.map_err(|_| {
                StartError::Serve(std::io::Error::other("connection slots closed"))
            })?,
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that failed before it was accepted (reset, out of file
                // descriptors): keep serving the others.
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let mut connection = Box::pin(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    connection.as_mut().await
                }
            };
            // The connection (and the app it holds) goes before its slot, so that once
            // every slot is back, no connection holds the app any more.
            drop(connection);
            // An error here is the client's: a timeout, a reset, a malformed request.
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "connection closed");
            }
            drop(slot);
        });
    }
    // Let open connections finish what they are doing, but not forever.
    let _ = stop.send(true);
    let _ = tokio::time::timeout(limits.header_read_timeout, slots.acquire_many(max)).await;
    Ok(())
}

/// Binds `addr`, prints `<name>: listening on http://<bound address>` (so that port 0
/// shows the port it got), and serves `router` until Ctrl-C.
pub(crate) async fn bind_and_serve(
    name: &str,
    addr: SocketAddr,
    limits: ConnectionLimits,
    router: Router,
) -> Result<(), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    println!("{name}: listening on http://{bound}");
    serve_with(listener, router, limits, async {
        // If the signal handler cannot be installed, serve until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// The whole of an example's `main`: `<name> --verify-audit <file>` checks an audit log;
/// otherwise `config` reads the configuration (from the environment), which is printed
/// (secrets redacted), `router` builds the app from it, and the app is served on the
/// `LISTEN_ADDR` of its `server` settings until Ctrl-C, after which the audit log is
/// flushed (see [`OpenedAuditLog`]). Any error is printed with its causes, and fails the
/// process.
pub(crate) async fn main<C, R>(
    name: &str,
    config: impl FnOnce() -> Result<C, ConfigError>,
    server: impl FnOnce(&C) -> &ServerConfig,
    router: impl FnOnce(C) -> R,
) -> ExitCode
where
    C: fmt::Debug,
    R: Future<Output = Result<Router, StartError>>,
{
    init_tracing();
    let run = async {
        if let Command::VerifyAudit(file) = command_line(name, std::env::args().skip(1))? {
            return verify_audit(&file);
        }
        let config = config()?;
        println!("{name}: starting with {config:#?}");
        let settings = server(&config);
        let (listen_addr, limits) = (settings.listen_addr, settings.limits);
        let audit_log = settings.opened_audit_log.clone();
        let router = router(config).await?;
        let served = bind_and_serve(name, listen_addr, limits, router).await;
        // A graceful stop: what is still queued for the audit log is written, with its
        // last signed checkpoint, before the process exits.
        audit_log.flush();
        served
    };
    exit_code(run.await)
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` (default
/// `info`, also when `RUST_LOG` does not parse), so that keygate's warnings and errors
/// (a failing registry or rate-limit backend, audit events that cannot be written) are
/// seen. Nothing keygate logs holds a secret.
pub(crate) fn init_tracing() {
    use tracing_subscriber::EnvFilter;

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which then stays.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What `main` was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// Run the server.
    Serve,
    /// `--verify-audit <file>`: check the audit log's hash chain and exit.
    VerifyAudit(PathBuf),
}

/// Parses the command line (without the program name): nothing, or
/// `--verify-audit <file>`.
pub(crate) fn command_line(
    name: &str,
    mut args: impl Iterator<Item = String>,
) -> Result<Command, StartError> {
    let usage = || {
        StartError::Usage(format!(
            "usage: {name} [--verify-audit <file>] (everything else is configured from the \
             environment)"
        ))
    };
    let command = match args.next().as_deref() {
        None => Command::Serve,
        Some("--verify-audit") => Command::VerifyAudit(args.next().ok_or_else(usage)?.into()),
        Some(_) => return Err(usage()),
    };
    match args.next() {
        None => Ok(command),
        Some(_) => Err(usage()),
    }
}

/// Verifies the audit log at `path` and prints a summary line.
pub(crate) fn verify_audit(path: &Path) -> Result<(), StartError> {
    let lookup = |var: &str| std::env::var(var).ok();
    let key = audit_checkpoint_key(&lookup)
        .map_err(StartError::Config)?
        .map(|key| CheckpointKey::from_bytes(key.expose_secret().as_bytes()))
        .transpose()
        .map_err(|error| StartError::Verify {
            path: path.to_owned(),
            source: error.into(),
        })?;
    let summary = match &key {
        Some(key) => keygate::audit::verify_file_signed(path, key),
        None => keygate::audit::verify_file(path),
    }
    .map_err(|source| StartError::Verify {
        path: path.to_owned(),
        source,
    })?;
    println!(
        "{}: chain verified: {} records, last hash {}",
        path.display(),
        summary.lines,
        summary.last_hash
    );
    // The head, to keep somewhere the log's writer cannot change and compare later.
    println!("head: {} {}", summary.lines, summary.last_hash);
    if key.is_some() {
        println!(
            "signed: {} checkpoints verified; {} records after the last one",
            summary.checkpoints, summary.unsigned_tail
        );
    } else {
        println!("signed: not checked (set AUDIT_CHECKPOINT_KEY to check the checkpoints)");
    }
    Ok(())
}

/// Success, or the error with its causes on stderr and a failure exit code.
pub(crate) fn exit_code(result: Result<(), StartError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut message = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                // Some messages quote their cause already.
                let text = cause.to_string();
                if !message.contains(&text) {
                    message.push_str(": ");
                    message.push_str(&text);
                }
                source = cause.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// JWT (the `api` example)

/// The shortest `JWT_SECRET` the `api` example accepts, in characters.
#[cfg(feature = "jwt")]
pub(crate) const MIN_JWT_SECRET_CHARS: usize = 64;

/// Reads the HS256 signing secret in `var`: required, at least [`MIN_JWT_SECRET_CHARS`]
/// characters (e.g. `openssl rand -base64 64`). The message names the variable and never
/// shows the value.
#[cfg(feature = "jwt")]
pub(crate) fn required_jwt_secret(
    lookup: Lookup<'_>,
    var: &'static str,
) -> Result<keygate::jwt::HmacSecret, ConfigError> {
    const HOW: &str = "generate one with `openssl rand -base64 64` and set the variable to it";
    let value = lookup(var).ok_or(ConfigError::Missing { var, how: HOW })?;
    let value = secrecy::SecretString::from(value);
    let text = secrecy::ExposeSecret::expose_secret(&value).trim();
    let chars = text.chars().count();
    if chars < MIN_JWT_SECRET_CHARS {
        return Err(ConfigError::Invalid {
            var,
            problem: format!(
                "it is {chars} characters long; at least {MIN_JWT_SECRET_CHARS} are required"
            ),
            how: HOW,
        });
    }
    keygate::jwt::HmacSecret::new(text).map_err(|error| ConfigError::Invalid {
        var,
        problem: error.to_string(),
        how: HOW,
    })
}
