//! The SQL registry on SQLite, each test on a file of its own in a temp dir.

use std::time::{Duration, SystemTime};

use keygate::{KeyGrant, KeyLookup, KeyRegistry, sql::SqlRegistry};

/// A directory removed when dropped.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "keygate-registry-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub(crate) fn url(&self) -> String {
        format!("sqlite://{}", self.0.join("keys.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fresh() -> (SqlRegistry, TempDir) {
    let dir = TempDir::new();
    let registry = SqlRegistry::connect(&dir.url()).await.unwrap();
    (registry, dir)
}

crate::contract::contract_tests!(fresh());

/// The file keeps the keys: a registry opened again on it (a restart) finds them, and
/// migrating twice is harmless.
#[tokio::test]
async fn keys_survive_reopening_the_file() {
    let dir = TempDir::new();
    let first = SqlRegistry::connect(&dir.url()).await.unwrap();
    let issued = first.issue(KeyGrant::new("p")).await.unwrap();
    drop(first);
    let again = SqlRegistry::connect(&dir.url()).await.unwrap();
    let found = again
        .find_by_digest(&issued.key.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key_id, issued.record.key_id);
}

/// Last use is written in batches: listed at once (from memory), in the file after a
/// flush, and never moved back.
#[tokio::test]
async fn last_use_is_written_in_batches() {
    let dir = TempDir::new();
    let registry = SqlRegistry::builder()
        .last_used_interval(Duration::from_secs(3600))
        .connect(&dir.url())
        .await
        .unwrap();
    let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
    let key_id = issued.record.key_id;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for _ in 0..1000 {
        registry.mark_used(&key_id, at);
    }
    let listed = registry.list_keys("p").await.unwrap();
    assert_eq!(
        listed[0]
            .last_used_at
            .map(time::OffsetDateTime::unix_timestamp),
        Some(1_800_000_000)
    );
    registry.flush_last_used().await.unwrap();
    registry.mark_used(&key_id, at - Duration::from_secs(60));
    registry.flush_last_used().await.unwrap();
    drop(registry);
    let reopened = SqlRegistry::connect(&dir.url()).await.unwrap();
    let listed = reopened.list_keys("p").await.unwrap();
    assert_eq!(
        listed[0]
            .last_used_at
            .map(time::OffsetDateTime::unix_timestamp),
        Some(1_800_000_000)
    );
}

/// A URL of a scheme keygate does not know is refused with a message naming the schemes.
#[tokio::test]
async fn unknown_schemes_are_refused() {
    let error = SqlRegistry::connect("mysql://localhost/db")
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("mysql") && text.contains("sqlite://"),
        "{text}"
    );
    #[cfg(not(feature = "postgres"))]
    {
        let error = SqlRegistry::connect("postgres://u:secret@localhost/db")
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("`postgres` feature"), "{text}");
        assert!(!text.contains("secret"));
    }
}
