//! The SQL registry on PostgreSQL: a throwaway server shared by the tests that run at the
//! same time (stopped when the last one is done), a database of its own for each test.

use std::{
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use keygate::{KeyGrant, KeyLookup, KeyRegistry, KeyStatus, sql::SqlRegistry};
use sqlx::Connection as _;

use crate::postgres_server::PostgresServer;

/// The server, while some test holds it.
static SERVER: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());

fn server() -> Arc<PostgresServer> {
    let mut shared = SERVER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(PostgresServer::start());
    *shared = Arc::downgrade(&server);
    server
}

/// A new, empty database on `server`; its URL.
async fn database(server: &PostgresServer) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "kg_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect(&server.url()).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    format!("postgres://postgres@127.0.0.1:{}/{name}", server.port)
}

async fn fresh() -> (SqlRegistry, Arc<PostgresServer>) {
    let server = server();
    let url = database(&server).await;
    let registry = SqlRegistry::connect(&url).await.unwrap();
    assert!(registry.is_listening());
    (registry, server)
}

crate::contract::contract_tests!(fresh());

/// Polls `registry` until the key's lookup says `status`, for at most `limit`; whether it did.
async fn until_status(
    registry: &SqlRegistry,
    key_id: &keygate::KeyId,
    status: KeyStatus,
    limit: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let found = registry.find_by_id(key_id).await.unwrap().unwrap();
        if found.status_at(time::OffsetDateTime::now_utc()) == status {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Two replicas on one database, each with a cache that would serve a stale record for a
/// minute: a revocation, an update or a deletion made through one reaches the other
/// within a second (by `NOTIFY`), also after the server restarted under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_through_one_replica_reach_the_other_within_a_second() {
    let server = server();
    let url = database(&server).await;
    let replica = || {
        SqlRegistry::builder()
            .cache_ttl(Duration::from_secs(60))
            .connect(&url)
    };
    let (a, b) = (replica().await.unwrap(), replica().await.unwrap());
    let issued = a.issue(KeyGrant::new("coordinator-1")).await.unwrap();
    let key_id = issued.record.key_id;
    // Cached by b.
    assert!(until_status(&b, &key_id, KeyStatus::Active, Duration::ZERO).await);
    assert!(b.cached() > 0);

    a.revoke(&key_id, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(
        until_status(&b, &key_id, KeyStatus::Revoked, Duration::from_secs(1)).await,
        "the revocation did not reach the other replica within a second"
    );

    let second = a.issue(KeyGrant::new("coordinator-2")).await.unwrap();
    let second_id = second.record.key_id;
    assert!(b.find_by_id(&second_id).await.unwrap().is_some());
    a.delete(&second_id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    while b.find_by_id(&second_id).await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the deletion did not reach the other replica"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The server going away: lookups of uncached keys and changes fail with `Unavailable`;
/// the replica stops serving its cache (it may miss notifications), and when the server
/// is back it listens again and answers as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_is_unavailable_and_the_registry_recovers() {
    // A server of this test's own: it is stopped.
    let mut server = PostgresServer::start();
    let registry = SqlRegistry::builder()
        .timeout(Duration::from_millis(500))
        .connect(&server.url())
        .await
        .unwrap();
    let issued = registry.issue(KeyGrant::new("p")).await.unwrap();
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry.is_listening() {
        assert!(
            Instant::now() < deadline,
            "the replica did not notice the outage"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    crate::contract::unavailable_while_down(&registry).await;
    // The guard in front of it answers 503 auth_unavailable, never 401.
    let registry = Arc::new(registry);
    let (unknown, _) = keygate::ApiKey::generate(&keygate::KeyPrefix::default()).unwrap();
    assert_eq!(
        guarded_status(&registry, unknown.expose_secret()).await,
        503
    );

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !registry.is_listening() {
        assert!(
            Instant::now() < deadline,
            "the replica did not listen again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let found = registry
        .find_by_digest(&issued.key.digest())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.key_id, issued.record.key_id);
    assert_eq!(
        guarded_status(&registry, issued.key.expose_secret()).await,
        200
    );
}

/// The status a guard on `registry` answers a request with `key`.
async fn guarded_status(registry: &Arc<SqlRegistry>, key: &str) -> u16 {
    use tower::{Layer as _, ServiceExt as _};

    let guard = keygate::ApiKeyGuard::builder()
        .registry(Arc::clone(registry))
        .build()
        .unwrap();
    let inner = tower::service_fn(|_: http::Request<String>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    });
    let request = http::Request::get("/jobs")
        .header("x-api-key", key)
        .body(String::new())
        .unwrap();
    let response = guard.layer(inner).oneshot(request).await.unwrap();
    response.status().as_u16()
}
