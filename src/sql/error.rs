//! [`SqlError`]: why an [`SqlRegistry`](super::SqlRegistry) could not be set up.

/// Why an [`SqlRegistry`](super::SqlRegistry) could not be set up. Never contains the
/// database URL (it may carry a password).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The URL's scheme names no database keygate supports.
    #[error(
        "unsupported database URL scheme `{0}`: use sqlite:// (feature `sqlite`) or \
         postgres:// (feature `postgres`)"
    )]
    UnsupportedScheme(String),
    /// The URL names a database whose feature this build of keygate lacks.
    #[error("database URL scheme `{scheme}` needs keygate's `{feature}` feature")]
    FeatureMissing {
        /// The URL's scheme, e.g. `postgres`.
        scheme: String,
        /// The feature to enable, e.g. `postgres`.
        feature: &'static str,
    },
    /// The URL could not be parsed.
    #[error("invalid database URL")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database could not be reached or opened in time.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// The key table could not be created or migrated.
    #[error("cannot apply keygate's migration {version} to the database")]
    Migrate {
        /// The migration's version.
        version: i64,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The database holds keygate migrations newer than this build knows.
    #[error(
        "the database's keygate schema is at version {found}, newer than this build's \
         {known}; upgrade keygate"
    )]
    SchemaTooNew {
        /// The newest version applied to the database.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
}
