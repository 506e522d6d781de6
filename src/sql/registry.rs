//! [`SqlRegistry`]: key records in SQLite or PostgreSQL, served through a local cache.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use time::OffsetDateTime;

use super::{
    Pool,
    last_used::Pending,
    row::{self, BoxError},
};
use crate::{
    BackendFuture, KeyDigest, KeyId, KeyLookup, KeyRecord, KeyRegistry, KeyUpdate, RegistryError,
    registry::{
        LookupFuture,
        cache::{Cache, CacheKey, message},
    },
};

/// A [`KeyRegistry`] in an SQL database: SQLite (one host) or PostgreSQL (shared by
/// replicas, changes announced with `NOTIFY`). See the [module docs](super) for what is
/// stored and how the cache is kept fresh.
///
/// Made by [`SqlRegistry::connect`] or [`SqlRegistry::builder`]; needs a Tokio runtime
/// (background tasks write last use and, on PostgreSQL, listen for changes; they stop when
/// the registry is dropped).
///
/// ```
/// use keygate::{KeyGrant, KeyRegistry, KeyUpdate, sql::SqlRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("keygate-doc-reg-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let url = format!("sqlite://{}", dir.join("keys.db").display());
/// let registry = SqlRegistry::connect(&url).await?;
/// let issued = registry.issue(KeyGrant::new("coordinator-1")).await?;
/// let key_id = issued.record.key_id;
///
/// registry.update(&key_id, KeyUpdate::new().scopes(["jobs:write"])).await?;
/// assert_eq!(registry.list_principals().await?, ["coordinator-1"]);
/// registry.revoke(&key_id, time::OffsetDateTime::now_utc()).await?;
/// registry.delete(&key_id).await?;
/// # drop(registry); let _ = std::fs::remove_dir_all(&dir);
/// # Ok(()) }
/// ```
pub struct SqlRegistry {
    pub(super) pool: Pool,
    pub(super) cache: Arc<Cache>,
    pub(super) pending: Arc<Pending>,
    /// PostgreSQL: the channel changes are announced on.
    pub(super) channel: Option<String>,
    pub(super) timeout: Duration,
    /// Dropped with the registry: the background tasks stop.
    pub(super) _stop: tokio::sync::watch::Sender<()>,
}

/// A database error as the registry reports it.
pub(super) fn unavailable(error: impl Into<BoxError>) -> RegistryError {
    RegistryError::Unavailable(error.into())
}

/// Runs `call` within `timeout`.
pub(super) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(unavailable("the database did not answer in time")))
}

/// Reads one record by key id or digest.
async fn fetch(pool: &Pool, key: CacheKey) -> Result<Option<KeyRecord>, RegistryError> {
    on_pool!(pool, db => {
        let found = match key {
            CacheKey::Id(key_id) => {
                sqlx::query(row::SELECT_BY_ID)
                    .bind(key_id.as_str().to_owned())
                    .fetch_optional(db)
                    .await
            }
            CacheKey::Digest(digest) => {
                sqlx::query(row::SELECT_BY_DIGEST)
                    .bind(digest.as_bytes().to_vec())
                    .fetch_optional(db)
                    .await
            }
        }
        .map_err(unavailable)?;
        found.map(|found| row::record(&found)).transpose().map_err(unavailable)
    })
}

/// What a change does to a row.
enum Change {
    Revoke(OffsetDateTime),
    Expiry(Option<OffsetDateTime>),
    Update(KeyUpdate),
    Delete,
}

impl SqlRegistry {
    /// Connects to the database at `url` with the default settings, creating an SQLite
    /// file if it does not exist, and applies keygate's migrations. `sqlite://keygate.db`
    /// (a file in the working directory), `sqlite:///var/lib/app/keys.db`,
    /// `sqlite::memory:`, `postgres://user:password@host:5432/db`.
    ///
    /// # Errors
    ///
    /// The scheme is unsupported or its feature is not compiled in, the URL is invalid,
    /// the database cannot be reached, or the migrations cannot be applied ([`SqlError`](super::SqlError)).
    pub async fn connect(url: &str) -> Result<Self, super::SqlError> {
        Self::builder().connect(url).await
    }

    /// Starts configuring a registry.
    pub fn builder() -> super::SqlRegistryBuilder {
        super::SqlRegistryBuilder::new()
    }

    /// The number of records in the local cache.
    #[must_use]
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Whether the local cache is served: always on SQLite; on PostgreSQL, while this
    /// replica listens for change notifications.
    #[must_use]
    pub fn is_listening(&self) -> bool {
        self.cache.is_listening()
    }

    /// Writes the last use noted so far now, rather than at the next interval.
    ///
    /// # Errors
    ///
    /// [`RegistryError::Unavailable`] if the database cannot be written in time (the uses
    /// are kept for the next flush).
    pub async fn flush_last_used(&self) -> Result<(), RegistryError> {
        flush(&self.pool, &self.pending, self.timeout).await
    }

    fn find(&self, key: CacheKey) -> LookupFuture {
        self.cache.lookup(key, || self.fetch(key))
    }

    fn fetch(
        &self,
        key: CacheKey,
    ) -> impl Future<Output = Result<Option<KeyRecord>, RegistryError>> + Send + 'static {
        let (pool, timeout) = (self.pool.clone(), self.timeout);
        async move { within(timeout, fetch(&pool, key)).await }
    }

    /// Applies `change` to the key's row in a transaction that also announces it
    /// (PostgreSQL), then drops the key from this process's cache.
    async fn change(&self, key_id: KeyId, change: Change) -> Result<Arc<KeyRecord>, RegistryError> {
        let channel = self.channel.as_deref();
        let record = within(self.timeout, async {
            on_pool!(&self.pool, db => {
                let mut tx = db.begin().await.map_err(unavailable)?;
                let id = key_id.as_str().to_owned();
                let changed = match &change {
                    Change::Revoke(at) => sqlx::query(row::REVOKE).bind(id.clone()).bind(row::utc(*at)),
                    Change::Expiry(at) => sqlx::query(row::SET_EXPIRY).bind(id.clone()).bind(at.map(row::utc)),
                    Change::Update(update) => sqlx::query(row::UPDATE)
                        .bind(id.clone())
                        .bind(update.scopes.as_deref().map(row::list_to_text))
                        .bind(update.workspaces.as_deref().map(row::list_to_text))
                        .bind(update.tier.clone()),
                    Change::Delete => sqlx::query(row::DELETE).bind(id.clone()),
                }
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
                let found = match (changed, &change) {
                    (Some(found), _) => Some(found),
                    // Revoked earlier already: the row is as it was.
                    (None, Change::Revoke(_)) => sqlx::query(row::SELECT_BY_ID)
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(unavailable)?,
                    (None, _) => None,
                };
                let record = found
                    .map(|found| row::record(&found))
                    .transpose()
                    .map_err(unavailable)?
                    .ok_or(RegistryError::UnknownKey(key_id))?;
                if let Some(channel) = channel {
                    sqlx::query(row::NOTIFY)
                        .bind(channel.to_owned())
                        .bind(message(record.key_id, &record.digest))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                tx.commit().await.map_err(unavailable)?;
                Ok::<_, RegistryError>(record)
            })
        })
        .await?;
        // Other replicas hear of it by notification; this one drops it now.
        self.cache.invalidate(record.key_id, record.digest);
        Ok(Arc::new(record))
    }
}

/// Writes the last use noted in `pending`, in one transaction.
pub(super) async fn flush(
    pool: &Pool,
    pending: &Pending,
    timeout: Duration,
) -> Result<(), RegistryError> {
    let used = pending.snapshot();
    if used.is_empty() {
        return Ok(());
    }
    within(timeout, async {
        on_pool!(pool, db => {
            let mut tx = db.begin().await.map_err(unavailable)?;
            for (key_id, secs) in &used {
                let Ok(at) = OffsetDateTime::from_unix_timestamp(*secs) else {
                    continue;
                };
                sqlx::query(row::MARK_USED)
                    .bind(key_id.as_str().to_owned())
                    .bind(row::utc(at))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
            }
            tx.commit().await.map_err(unavailable)
        })
    })
    .await?;
    pending.written(&used);
    Ok(())
}

impl KeyLookup for SqlRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        self.find(CacheKey::Id(*key_id))
    }

    fn find_by_id_uncached(&self, key_id: &KeyId) -> LookupFuture {
        let key = CacheKey::Id(*key_id);
        self.cache.refresh(key, || self.fetch(key))
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        self.find(CacheKey::Digest(*digest))
    }

    fn mark_used(&self, key_id: &KeyId, at: std::time::SystemTime) {
        self.pending.note(key_id, at);
    }

    #[cfg(feature = "session")]
    fn changes(&self) -> Option<crate::registry::KeyChanges> {
        Some(self.cache.changes())
    }
}

impl KeyRegistry for SqlRegistry {
    fn register(&self, record: KeyRecord) -> BackendFuture<'_, Result<(), RegistryError>> {
        BackendFuture::new(within(self.timeout, async move {
            let inserted = on_pool!(&self.pool, db => {
                sqlx::query(row::INSERT)
                    .bind(record.key_id.as_str().to_owned())
                    .bind(record.digest.as_bytes().to_vec())
                    .bind(record.principal_id.clone())
                    .bind(record.label.clone())
                    .bind(row::list_to_text(&record.workspaces))
                    .bind(row::list_to_text(&record.scopes))
                    .bind(record.tier.clone())
                    .bind(record.prefix.as_ref().map(|p| p.as_str().to_owned()))
                    .bind(row::utc(record.created_at))
                    .bind(record.expires_at.map(row::utc))
                    .bind(record.revoked_at.map(row::utc))
                    .bind(record.last_used_at.map(row::utc))
                    .execute(db)
                    .await
                    .map(drop)
            });
            match inserted {
                Ok(()) => Ok(()),
                Err(error)
                    if error
                        .as_database_error()
                        .is_some_and(sqlx::error::DatabaseError::is_unique_violation) =>
                {
                    Err(RegistryError::Duplicate)
                }
                Err(error) => Err(unavailable(error)),
            }
        }))
    }

    fn revoke(
        &self,
        key_id: &KeyId,
        at: OffsetDateTime,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::new(self.change(*key_id, Change::Revoke(at)))
    }

    fn set_expiry(
        &self,
        key_id: &KeyId,
        expires_at: Option<OffsetDateTime>,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::new(self.change(*key_id, Change::Expiry(expires_at)))
    }

    fn update(
        &self,
        key_id: &KeyId,
        change: KeyUpdate,
    ) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::new(self.change(*key_id, Change::Update(change)))
    }

    fn delete(&self, key_id: &KeyId) -> BackendFuture<'_, Result<Arc<KeyRecord>, RegistryError>> {
        BackendFuture::new(self.change(*key_id, Change::Delete))
    }

    fn list_keys(
        &self,
        principal_id: &str,
    ) -> BackendFuture<'_, Result<Vec<Arc<KeyRecord>>, RegistryError>> {
        let principal_id = principal_id.to_owned();
        BackendFuture::new(within(self.timeout, async move {
            on_pool!(&self.pool, db => {
                let rows = sqlx::query(row::SELECT_BY_PRINCIPAL)
                    .bind(principal_id)
                    .fetch_all(db)
                    .await
                    .map_err(unavailable)?;
                rows.iter()
                    .map(|found| {
                        let mut record = row::record(found).map_err(unavailable)?;
                        // Uses not written yet.
                        if let Some(at) = self.pending.latest(&record.key_id)
                            && record.last_used_at.is_none_or(|known| known < at)
                        {
                            record.last_used_at = Some(at);
                        }
                        Ok(Arc::new(record))
                    })
                    .collect()
            })
        }))
    }

    fn list_principals(&self) -> BackendFuture<'_, Result<Vec<String>, RegistryError>> {
        BackendFuture::new(within(self.timeout, async move {
            let mut principals: Vec<String> = on_pool!(&self.pool, db => {
                sqlx::query_scalar(row::SELECT_PRINCIPALS)
                    .fetch_all(db)
                    .await
                    .map_err(unavailable)?
            });
            // Byte order, whatever the database's collation.
            principals.sort_unstable();
            principals.dedup();
            Ok(principals)
        }))
    }
}

impl fmt::Debug for SqlRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool is left out: its options may carry a password.
        f.debug_struct("SqlRegistry")
            .field("database", &self.pool.kind())
            .field("timeout", &self.timeout)
            .field("cached", &self.cache.len())
            .field("cache_capacity", &self.cache.capacity())
            .field("cache_ttl", &self.cache.ttl())
            .field("listening", &self.cache.is_listening())
            .finish_non_exhaustive()
    }
}
