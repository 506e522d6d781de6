//! The registry contract ([`contract`]), run against every registry: in memory, Redis
//! (feature `redis`), SQLite (feature `sqlite`) and PostgreSQL (feature `postgres`), each
//! on a store of its own: a throwaway `redis-server`, a temp file, a throwaway PostgreSQL
//! server. The network registries are also checked for what an outage does
//! (`RegistryError::Unavailable`, 503 `auth_unavailable` from the guard, never 401).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contract;

mod memory {
    //! The in-memory registry.
    use keygate::InMemoryRegistry;

    async fn fresh() -> (InMemoryRegistry, ()) {
        (InMemoryRegistry::new(), ())
    }

    crate::contract::contract_tests!(fresh());
}

#[cfg(feature = "redis")]
#[path = "../support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "redis")]
mod redis {
    //! The Redis registry, each test on a `redis-server` of its own.
    use keygate::redis::RedisRegistry;

    use crate::redis_server::RedisServer;

    async fn fresh() -> (RedisRegistry, RedisServer) {
        let server = RedisServer::start();
        let registry = RedisRegistry::connect(server.url().as_str()).await.unwrap();
        (registry, server)
    }

    crate::contract::contract_tests!(fresh());

    /// Redis down: lookups of uncached keys and changes fail with `Unavailable`.
    #[tokio::test]
    async fn outage_is_unavailable() {
        let (registry, mut server) = fresh().await;
        server.stop();
        crate::contract::unavailable_while_down(&registry).await;
    }
}

#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
#[path = "../support/postgres_server.rs"]
mod postgres_server;

#[cfg(feature = "postgres")]
mod postgres;
