//! Keys in a database (features `sqlite` and `postgres`): [`SqlRegistry`], on
//! [`sqlx`](https://docs.rs/sqlx).
//!
//! One type for both databases; the URL's scheme picks one:
//!
//! * **SQLite** (`sqlite://keygate.db`, feature `sqlite`): one file on one host, created
//!   on first start. The embedded default: keys survive restarts without a server. Changes
//!   made through this process drop the record from its cache at once; other processes
//!   writing to the same file are seen when a cached record expires
//!   ([`cache_ttl`](SqlRegistryBuilder::cache_ttl)).
//! * **PostgreSQL** (`postgres://user:password@host/db`, feature `postgres`): shared by
//!   every replica. Each change is committed together with a `NOTIFY` on the registry's
//!   channel; every replica `LISTEN`s and drops the record from its cache when the
//!   notification arrives (typically within milliseconds). While a replica is not
//!   listening (connection lost), its lookups go to the database.
//!
//! Lookups are served from the same bounded, short-lived local cache as the Redis
//! registry's; a cache miss is one indexed `SELECT` (by key id, or by digest for opaque
//! keys). Every database call has a [timeout](SqlRegistryBuilder::timeout); an outage
//! fails lookups with [`RegistryError::Unavailable`](crate::RegistryError::Unavailable),
//! which the guard answers with 503 `auth_unavailable`, never 401. Last use
//! ([`mark_used`](crate::KeyLookup::mark_used)) is noted in memory and written in batches
//! by a background task, one transaction per
//! [interval](SqlRegistryBuilder::last_used_interval), never one write per request.
//!
//! # What is stored
//!
//! The schema ships in the crate (`migrations/sqlite/`, `migrations/postgres/`) and is
//! applied on connect, unless [`migrate(false)`](SqlRegistryBuilder::migrate); the applied
//! versions are kept in `keygate_schema_migrations`, apart from an application's own
//! migrations.
//!
//! | table | holds |
//! |---|---|
//! | `keygate_keys` | one row per key: key id (primary key), SHA-256 digest (unique index; never the key), principal (index), label, workspaces and scopes (JSON arrays), tier, prefix, and UTC timestamps: created, expires, revoked, last used |
//! | `keygate_schema_migrations` | the keygate migrations applied |
//!
//! PostgreSQL channel: `keygate_registry_changes` (configurable), payload
//! `<key id>:<digest hex>` of every revoked, changed or deleted key.
//!
//! # Example
//!
//! ```
//! use keygate::{ApiKeyGuard, KeyGrant, KeyLookup, KeyRegistry, sql::SqlRegistry};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("keygate-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let url = format!("sqlite://{}", dir.join("keys.db").display());
//! // `url` is e.g. "sqlite://keygate.db" or "postgres://keygate@10.0.0.5/app".
//! let registry = std::sync::Arc::new(SqlRegistry::connect(&url).await?);
//! let issued = registry.issue(KeyGrant::new("coordinator-1").workspaces(["ws-1"])).await?;
//! // Show `issued.key.expose_secret()` once; only its digest is in the database.
//! let found = registry.find_by_id(&issued.record.key_id).await?.ok_or("not found")?;
//! assert_eq!(found.principal_id, "coordinator-1");
//!
//! let guard = ApiKeyGuard::builder().registry(std::sync::Arc::clone(&registry)).build()?;
//! # let _ = guard; drop(registry); let _ = std::fs::remove_dir_all(&dir);
//! # Ok(()) }
//! ```

/// Runs `$body` with `$db` bound to the concrete pool of `$pool` (a [`Pool`]): the same
/// code for every database compiled in.
macro_rules! on_pool {
    ($pool:expr, $db:ident => $body:block) => {
        match $pool {
            #[cfg(feature = "sqlite")]
            $crate::sql::Pool::Sqlite($db) => $body,
            #[cfg(feature = "postgres")]
            $crate::sql::Pool::Postgres($db) => $body,
        }
    };
}

mod builder;
mod error;
mod last_used;
#[cfg(feature = "postgres")]
mod listener;
mod registry;
mod row;
mod schema;

use std::time::Duration;

pub use self::{builder::SqlRegistryBuilder, error::SqlError, registry::SqlRegistry};

/// How long one database call may take unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long connecting (and migrating) may take unless configured.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many records the local cache holds unless configured.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// How long a record is served from the local cache unless configured: the longest a
/// replica that missed a notification keeps accepting a revoked key.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(10);

/// How often last use is written unless configured.
pub const DEFAULT_LAST_USED_INTERVAL: Duration = Duration::from_secs(5);

/// The PostgreSQL channel of change notifications unless configured.
pub const DEFAULT_CHANNEL: &str = "keygate_registry_changes";

/// A connection pool to one of the databases compiled in.
#[derive(Clone)]
pub(crate) enum Pool {
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
}

impl Pool {
    /// Whether this is PostgreSQL.
    pub(crate) fn is_postgres(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => true,
        }
    }

    /// The database's name, for `Debug`.
    pub(crate) fn kind(&self) -> &'static str {
        if self.is_postgres() {
            "postgres"
        } else {
            "sqlite"
        }
    }
}
