//! Deny-by-default API-key authentication, per-key rate limiting and audit trails, as
//! tower layers for any tower service (axum, hyper, tonic).
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Principal, audit::MemorySink};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let audit = MemorySink::new();
//! let guard = ApiKeyGuard::builder()
//!     .key(
//!         ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?,
//!         KeyGrant::new("coordinator").workspaces(["ws-1"]).scopes(["jobs"]),
//!     )
//!     .public_path("/health")
//!     .audit(audit.clone())
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/jobs", get(|Extension(p): Extension<Principal>| async move { p.id().to_owned() }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(guard);
//! # let _ = app; Ok(()) }
//! ```
//!
//! The pieces, one concept per module:
//!
//! * [`guard`]: [`ApiKeyGuard`], the layer, and its builder;
//! * [`credential`]: where a key is read from, and what is refused before any lookup;
//! * [`key`]: [`ApiKey`], the key format, [`KeyDigest`];
//! * [`registry`]: the [`KeyRegistry`] trait, [`KeyRecord`], [`InMemoryRegistry`];
//! * [`Principal`]: who is calling, in the request extensions;
//! * [`limit`]: per-key rate limits and the failed-attempt limiter;
//! * [`audit`]: audit events and sinks, including a hash-chained JSON-lines file;
//! * [`reject`]: every refusal and how it is rendered;
//! * [`scope`] and [`workspace`]: layers for sub-routers;
//! * [`webhook`]: HMAC webhook signatures;
//! * `redis` (feature `redis`): `RedisRateLimit` and `RedisRegistry`, which share limits
//!   and keys between the replicas of a service through one Redis server.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `get_ref`, `get_mut` and `into_inner` for a middleware service whose wrapped service
/// is its `inner` field (as tower-http's middleware have them).
macro_rules! inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}

pub mod audit;
mod backend;
pub mod credential;
pub mod guard;
pub mod key;
pub mod limit;
mod principal;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod reject;
pub mod require;
// TODO(issue-14): remove after merge (moved to `require`)
pub mod scope;
pub mod webhook;
// TODO(issue-14): remove after merge (moved to `require`)
pub mod workspace;

#[cfg(feature = "redis")]
pub use crate::redis::{RedisRateLimit, RedisRegistry};
pub use crate::{
    audit::{AuditEvent, AuditSink, Outcome},
    backend::BackendFuture,
    credential::CredentialSource,
    guard::{ApiKeyGuard, ApiKeyGuardBuilder, ApiKeyGuardService, BuildError, ClientAddr},
    key::{ApiKey, KeyDigest, KeyError, KeyId, KeyPrefix},
    limit::{LimitBy, RateLimit},
    principal::Principal,
    registry::{
        InMemoryRegistry, IssuedKey, KeyGrant, KeyRecord, KeyRegistry, KeyStatus, RegistryError,
    },
    reject::{EmptyRejection, JsonRejection, Malformed, Rejection, RenderRejection},
};

/// The response future of the [`require`] layers.
// TODO(issue-14): remove alias after merge
pub use crate::require::ResponseFuture as GateFuture;

/// The README's code blocks, compiled as doc tests so that the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
