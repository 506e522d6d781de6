//! [`SqlRegistryBuilder`]: configures and connects an [`SqlRegistry`].

use std::{sync::Arc, time::Duration};

use super::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_TTL, DEFAULT_CHANNEL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_LAST_USED_INTERVAL, DEFAULT_TIMEOUT, Pool, SqlError, SqlRegistry, last_used::Pending,
    registry::flush, schema,
};
use crate::{limit::Clock, registry::cache::Cache};

/// Configures an [`SqlRegistry`]; made by [`SqlRegistry::builder`].
///
/// ```
/// use std::time::Duration;
/// use keygate::sql::SqlRegistry;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = SqlRegistry::builder()
///     .timeout(Duration::from_millis(500))
///     .cache_capacity(50_000)
///     .cache_ttl(Duration::from_secs(5))
///     .last_used_interval(Duration::from_secs(10))
///     .connect("sqlite::memory:")
///     .await?;
/// assert!(registry.is_listening());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct SqlRegistryBuilder {
    timeout: Duration,
    connect_timeout: Duration,
    cache_capacity: usize,
    cache_ttl: Duration,
    last_used_interval: Duration,
    channel: String,
    max_connections: u32,
    migrate: bool,
}

impl SqlRegistryBuilder {
    pub(super) fn new() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_ttl: DEFAULT_CACHE_TTL,
            last_used_interval: DEFAULT_LAST_USED_INTERVAL,
            channel: DEFAULT_CHANNEL.to_owned(),
            max_connections: 10,
            migrate: true,
        }
    }

    /// How long one database call may take (default [`DEFAULT_TIMEOUT`], 1 s); then it
    /// fails with [`RegistryError::Unavailable`](crate::RegistryError::Unavailable).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting and migrating may take (default [`DEFAULT_CONNECT_TIMEOUT`],
    /// 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The most records the local cache holds (default [`DEFAULT_CACHE_CAPACITY`]); `0`
    /// turns the cache off, so every lookup is a query.
    pub fn cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// How long a record is served from the local cache (default [`DEFAULT_CACHE_TTL`],
    /// 10 s): the bound on how long a replica that missed a notification, or an SQLite
    /// process that did not make a change, keeps a stale record.
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// How often last use is written (default [`DEFAULT_LAST_USED_INTERVAL`], 5 s): one
    /// transaction per interval, whatever the traffic.
    pub fn last_used_interval(mut self, interval: Duration) -> Self {
        self.last_used_interval = interval;
        self
    }

    /// The PostgreSQL channel changes are announced on (default [`DEFAULT_CHANNEL`]).
    /// Every replica must use the same.
    pub fn channel(mut self, channel: &str) -> Self {
        channel.clone_into(&mut self.channel);
        self
    }

    /// The most connections in the pool (default 10; an in-memory SQLite database always
    /// has exactly one).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Whether keygate's migrations are applied on connect (default `true`). Turn it off
    /// when the schema is managed elsewhere (the SQL is in the crate's `migrations/`).
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Connects to the database at `url`, whose scheme picks SQLite (`sqlite:`) or
    /// PostgreSQL (`postgres:` or `postgresql:`), applies the migrations (unless turned
    /// off), and starts the background tasks. An SQLite file is created if missing.
    ///
    /// # Errors
    ///
    /// The scheme is unsupported or its feature is not compiled in, the URL is invalid,
    /// the database cannot be reached in time, or the migrations cannot be applied.
    pub async fn connect(self, url: &str) -> Result<SqlRegistry, SqlError> {
        let scheme = url
            .split_once(':')
            .map_or("", |(scheme, _)| scheme)
            .to_ascii_lowercase();
        let pool = match scheme.as_str() {
            "sqlite" => self.sqlite(url)?,
            "postgres" | "postgresql" => self.postgres(url)?,
            _ => return Err(SqlError::UnsupportedScheme(scheme)),
        };
        let connected = async {
            // One connection now, so that an unreachable database fails here.
            on_pool!(&pool, db => {
                drop(db.acquire().await.map_err(SqlError::Connect)?);
            });
            if self.migrate {
                schema::migrate(&pool).await?;
            }
            Ok(())
        };
        tokio::time::timeout(self.connect_timeout, connected)
            .await
            .unwrap_or_else(|_| {
                Err(SqlError::Connect(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting to the database timed out",
                ))))
            })?;

        let cache = Arc::new(Cache::new(
            self.cache_capacity,
            self.cache_ttl,
            Clock::system(),
        ));
        let (stop, stopped) = tokio::sync::watch::channel(());
        let channel = if pool.is_postgres() {
            #[cfg(feature = "postgres")]
            #[allow(irrefutable_let_patterns, reason = "one variant without `sqlite`")]
            if let Pool::Postgres(db) = &pool {
                let listener = super::listener::listen(db, &self.channel)
                    .await
                    .map_err(SqlError::Connect)?;
                cache.subscribed();
                tokio::spawn(super::listener::run(
                    db.clone(),
                    listener,
                    self.channel.clone(),
                    Arc::downgrade(&cache),
                    stopped.clone(),
                ));
            }
            Some(self.channel)
        } else {
            // Every change to an SQLite file is made through a registry; this process's
            // own changes drop their records at once.
            cache.subscribed();
            None
        };
        let pending = Arc::new(Pending::default());
        tokio::spawn(write_last_used(
            pool.clone(),
            Arc::clone(&pending),
            self.last_used_interval,
            self.timeout,
            stopped,
        ));
        Ok(SqlRegistry {
            pool,
            cache,
            pending,
            channel,
            timeout: self.timeout,
            _stop: stop,
        })
    }

    #[cfg(feature = "sqlite")]
    fn sqlite(&self, url: &str) -> Result<Pool, SqlError> {
        use std::str::FromStr as _;

        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

        let options = SqliteConnectOptions::from_str(url)
            .map_err(SqlError::InvalidUrl)?
            .create_if_missing(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = if in_memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        let pool = if in_memory {
            // Each connection to `:memory:` is a database of its own: one connection, kept.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(self.max_connections)
        }
        .acquire_timeout(self.timeout)
        .connect_lazy_with(options);
        Ok(Pool::Sqlite(pool))
    }

    #[cfg(not(feature = "sqlite"))]
    #[allow(clippy::unused_self)]
    fn sqlite(&self, _: &str) -> Result<Pool, SqlError> {
        Err(SqlError::FeatureMissing {
            scheme: "sqlite".to_owned(),
            feature: "sqlite",
        })
    }

    #[cfg(feature = "postgres")]
    fn postgres(&self, url: &str) -> Result<Pool, SqlError> {
        use std::str::FromStr as _;

        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

        let options = PgConnectOptions::from_str(url).map_err(SqlError::InvalidUrl)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.timeout)
            .connect_lazy_with(options);
        Ok(Pool::Postgres(pool))
    }

    #[cfg(not(feature = "postgres"))]
    #[allow(clippy::unused_self)]
    fn postgres(&self, _: &str) -> Result<Pool, SqlError> {
        Err(SqlError::FeatureMissing {
            scheme: "postgres".to_owned(),
            feature: "postgres",
        })
    }
}

/// Writes last use every `interval`, and once more when the registry is dropped.
async fn write_last_used(
    pool: Pool,
    pending: Arc<Pending>,
    interval: Duration,
    timeout: Duration,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = ticks.tick() => false,
            _ = stopped.changed() => true,
        };
        if let Err(error) = flush(&pool, &pending, timeout).await {
            tracing::warn!(%error, "keygate: last use of keys not written");
        }
        if stop {
            return;
        }
    }
}
