//! The key table's columns and statements, and a [`KeyRecord`] read from a row.

use std::error::Error;

use sqlx::{ColumnIndex, Decode, Row, Type};
use time::OffsetDateTime;

use crate::{KeyDigest, KeyId, KeyPrefix, KeyRecord};

pub(super) type BoxError = Box<dyn Error + Send + Sync>;

/// The columns every statement that returns records selects, in this order.
macro_rules! columns {
    () => {
        "key_id, digest, principal_id, label, workspaces, scopes, tier, prefix, created_at, \
         expires_at, revoked_at, last_used_at"
    };
}

pub(super) const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM keygate_keys WHERE key_id = $1"
);
pub(super) const SELECT_BY_DIGEST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM keygate_keys WHERE digest = $1"
);
pub(super) const SELECT_BY_PRINCIPAL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM keygate_keys WHERE principal_id = $1 ORDER BY created_at, key_id"
);
pub(super) const SELECT_PRINCIPALS: &str = "SELECT DISTINCT principal_id FROM keygate_keys";
pub(super) const INSERT: &str = concat!(
    "INSERT INTO keygate_keys (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
);
/// Revokes at `$2` unless revoked earlier already.
pub(super) const REVOKE: &str = concat!(
    "UPDATE keygate_keys SET revoked_at = $2 WHERE key_id = $1 \
     AND (revoked_at IS NULL OR revoked_at > $2) RETURNING ",
    columns!()
);
pub(super) const SET_EXPIRY: &str = concat!(
    "UPDATE keygate_keys SET expires_at = $2 WHERE key_id = $1 RETURNING ",
    columns!()
);
/// `NULL` leaves a column as it is.
pub(super) const UPDATE: &str = concat!(
    "UPDATE keygate_keys SET scopes = COALESCE($2, scopes), \
     workspaces = COALESCE($3, workspaces), tier = COALESCE($4, tier) \
     WHERE key_id = $1 RETURNING ",
    columns!()
);
pub(super) const DELETE: &str = concat!(
    "DELETE FROM keygate_keys WHERE key_id = $1 RETURNING ",
    columns!()
);
/// Moves last use forward, never back.
pub(super) const MARK_USED: &str = "UPDATE keygate_keys SET last_used_at = $2 \
     WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < $2)";
/// PostgreSQL: tells every listening replica, when the transaction commits.
pub(super) const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// A list of ids as stored: a JSON array of strings.
pub(super) fn list_to_text(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// `at` in UTC, with whole microseconds (what both databases keep), so that a record read
/// back equals the one written.
pub(super) fn utc(at: OffsetDateTime) -> Timestamp {
    let at = at.to_offset(time::UtcOffset::UTC);
    Timestamp(
        at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
            .unwrap_or(at),
    )
}

/// A UTC time as bound to a statement: `timestamptz` on PostgreSQL; on SQLite, RFC 3339
/// text of fixed width (`2026-12-01T10:00:00.000000Z`), so that comparing and sorting
/// the text compares the times.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timestamp(OffsetDateTime);

#[cfg(feature = "sqlite")]
mod sqlite {
    use sqlx::{
        Encode, Sqlite, Type, encode::IsNull, error::BoxDynError, sqlite::SqliteArgumentValue,
        sqlite::SqliteTypeInfo,
    };
    use time::macros::format_description;

    use super::Timestamp;

    impl Type<Sqlite> for Timestamp {
        fn type_info() -> SqliteTypeInfo {
            <String as Type<Sqlite>>::type_info()
        }
    }

    impl<'q> Encode<'q, Sqlite> for Timestamp {
        fn encode_by_ref(
            &self,
            buf: &mut Vec<SqliteArgumentValue<'q>>,
        ) -> Result<IsNull, BoxDynError> {
            let text = self.0.format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
            ))?;
            Encode::<Sqlite>::encode(text, buf)
        }
    }
}

#[cfg(feature = "postgres")]
mod postgres {
    use sqlx::{
        Encode, Postgres, Type, encode::IsNull, error::BoxDynError, postgres::PgArgumentBuffer,
        postgres::PgTypeInfo,
    };
    use time::OffsetDateTime;

    use super::Timestamp;

    impl Type<Postgres> for Timestamp {
        fn type_info() -> PgTypeInfo {
            <OffsetDateTime as Type<Postgres>>::type_info()
        }
    }

    impl Encode<'_, Postgres> for Timestamp {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            Encode::<Postgres>::encode_by_ref(&self.0, buf)
        }
    }
}

/// Reads a record from a row of [`columns!`].
pub(super) fn record<'r, R>(row: &'r R) -> Result<KeyRecord, BoxError>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    OffsetDateTime: Decode<'r, R::Database> + Type<R::Database>,
{
    let key_id: String = row.try_get(0)?;
    let digest: Vec<u8> = row.try_get(1)?;
    let digest: [u8; 32] = digest
        .try_into()
        .map_err(|_| "a stored digest is not 32 bytes")?;
    let workspaces: String = row.try_get(4)?;
    let scopes: String = row.try_get(5)?;
    let prefix: Option<String> = row.try_get(7)?;
    let created_at: OffsetDateTime = row.try_get(8)?;
    let mut record = KeyRecord::new(
        KeyId::parse(&key_id)?,
        KeyDigest::from_bytes(digest),
        row.try_get::<String, _>(2)?,
    );
    record.label = row.try_get(3)?;
    record.workspaces = serde_json::from_str(&workspaces)?;
    record.scopes = serde_json::from_str(&scopes)?;
    record.tier = row.try_get(6)?;
    record.prefix = prefix.as_deref().map(KeyPrefix::new).transpose()?;
    record.created_at = created_at;
    record.expires_at = row.try_get(9)?;
    record.revoked_at = row.try_get(10)?;
    record.last_used_at = row.try_get(11)?;
    Ok(record)
}
