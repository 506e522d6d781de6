//! The key table's migrations, shipped in the crate (`migrations/<database>/`), and how
//! they are applied: in a table of keygate's own (`keygate_schema_migrations`), so that an
//! application's own migrations in the same database are never mixed up with keygate's.

use super::{Pool, SqlError};

/// One migration: its version and its SQL for each database.
struct Migration {
    version: i64,
    #[cfg(feature = "sqlite")]
    sqlite: &'static str,
    #[cfg(feature = "postgres")]
    postgres: &'static str,
}

/// Every migration, oldest first.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    #[cfg(feature = "sqlite")]
    sqlite: include_str!("../../migrations/sqlite/0001_keys.sql"),
    #[cfg(feature = "postgres")]
    postgres: include_str!("../../migrations/postgres/0001_keys.sql"),
}];

/// The table of applied versions.
const CREATE_VERSIONS: &str = "CREATE TABLE IF NOT EXISTS keygate_schema_migrations (\
     version BIGINT NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)";

/// PostgreSQL: an advisory lock (an arbitrary constant) that keeps two replicas starting
/// at once from migrating at the same time; released at the end of the transaction.
const LOCK: &str = "SELECT pg_advisory_xact_lock(7738124612716340529)";

impl Migration {
    /// The migration's SQL for `pool`'s database.
    fn sql(&self, pool: &Pool) -> &'static str {
        match pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(_) => self.sqlite,
            #[cfg(feature = "postgres")]
            Pool::Postgres(_) => self.postgres,
        }
    }
}

/// Applies the migrations the database lacks, each in a transaction of its own.
pub(super) async fn migrate(pool: &Pool) -> Result<(), SqlError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    for migration in MIGRATIONS {
        let error = |source| SqlError::Migrate {
            version: migration.version,
            source,
        };
        let sql = migration.sql(pool);
        let lock = pool.is_postgres().then_some(LOCK);
        on_pool!(pool, db => {
            let mut tx = db.begin().await.map_err(error)?;
            if let Some(lock) = lock {
                sqlx::query(lock).execute(&mut *tx).await.map_err(error)?;
            }
            sqlx::raw_sql(CREATE_VERSIONS)
                .execute(&mut *tx)
                .await
                .map_err(error)?;
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM keygate_schema_migrations")
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(error)?;
            let newest = newest.unwrap_or(0);
            if newest > known {
                return Err(SqlError::SchemaTooNew { found: newest, known });
            }
            if newest < migration.version {
                sqlx::raw_sql(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(error)?;
                sqlx::query(
                    "INSERT INTO keygate_schema_migrations (version, applied_at) VALUES ($1, $2)",
                )
                .bind(migration.version)
                .bind(now_text())
                .execute(&mut *tx)
                .await
                .map_err(error)?;
            }
            tx.commit().await.map_err(error)?;
        });
    }
    Ok(())
}

/// Now, as RFC 3339 text in UTC.
fn now_text() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
