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
//! # What is where
//!
//! One concept per module; the items most services need are re-exported at the root.
//!
//! | module | holds | at the root |
//! |---|---|---|
//! | [`guard`] | the layer and its builder: the request path, stages 1 to 6 | [`ApiKeyGuard`] (the layer), [`ApiKeyGuardBuilder`] (its configuration), [`ApiKeyGuardService`] (the service it makes), [`BuildError`] (what `build()` refuses), [`ClientAddr`] (a peer address handed to the guard) |
//! | [`credential`] | where a key is read from, and what is refused before any lookup | [`CredentialSource`] (header, bearer, query parameter, WebSocket subprotocol) |
//! | [`key`] | the key format and its digest | [`ApiKey`] (a secret key), [`KeyDigest`] (its SHA-256), [`KeyId`] (the public lookup handle), [`KeyPrefix`], [`KeyError`] |
//! | [`registry`] | where keys are looked up, issued, rotated and revoked | [`KeyLookup`] (what the guard asks), [`KeyRegistry`] (management), [`KeyUpdate`], [`InMemoryRegistry`], [`KeyRecord`] (what is stored of a key), [`KeyGrant`] (what a new key may do), [`IssuedKey`] (a new key, shown once), [`KeyStatus`], [`RegistryError`] |
//! | — | who is calling | [`Principal`] (in the request extensions of admitted requests), [`CredentialKind`] (API key or JWT), [`TokenIdentity`] (what a token says) |
//! | `jwt` (feature `jwt`) | JWT access tokens next to API keys: verifier, keys and JWKS, claims mapping, issuer | — |
//! | [`limit`] | per-key rate limits, the failed-attempt limiter, rate-limit headers | [`RateLimit`] (the guard's limit), [`LimitBy`] (per principal or per key) |
//! | [`require`] | checks for sub-routers behind the guard | [`Require`] (the layer), [`RequireScope`], [`RequireWorkspace`], [`RequirePolicy`] (write your own) |
//! | [`audit`] | audit events and sinks, including a hash-chained JSON-lines file | [`AuditEvent`], [`AuditSink`], [`Outcome`] |
//! | [`reject`] | every refusal and how it is rendered | [`Rejection`] (status, reason, headers), [`Malformed`], [`RenderRejection`] (pluggable rendering), [`JsonRejection`] (the default), [`EmptyRejection`], [`TokenMessageRejection`] (the token API's bodies) |
//! | [`webhook`] | HMAC-SHA256 webhook signatures | — |
//! | `session` (feature `session`) | live sessions: long-lived connections that end when their key is revoked or expires, the authentication deadline, a per-principal message budget | — |
//! | `redis` (feature `redis`) | limits and keys shared by the replicas of a service through one Redis server | `RedisRateLimit`, `RedisRegistry` |
//! | `sql` (features `sqlite`, `postgres`) | keys in SQLite (one host) or PostgreSQL (shared by replicas) | `SqlRegistry` |
//! | — | the answer of every backend | [`BackendFuture`] (ready at once in memory, boxed over the network) |
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The pedantic lints hold for the library; tests keep the default set.
#![warn(clippy::pedantic)]
#![cfg_attr(test, allow(clippy::pedantic))]

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
#[cfg(feature = "axum")]
pub mod axum;
mod backend;
pub mod credential;
pub mod guard;
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub mod jwt;
pub mod key;
pub mod limit;
mod principal;
#[cfg(feature = "redis")]
pub mod redis;
pub mod registry;
pub mod reject;
pub mod require;
#[cfg(feature = "session")]
#[cfg_attr(docsrs, doc(cfg(feature = "session")))]
pub mod session;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
pub mod webhook;

#[cfg(feature = "redis")]
pub use crate::redis::{RedisRateLimit, RedisRegistry};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use crate::sql::SqlRegistry;
pub use crate::{
    audit::{AuditEvent, AuditSink, Outcome},
    backend::BackendFuture,
    credential::CredentialSource,
    guard::{ApiKeyGuard, ApiKeyGuardBuilder, ApiKeyGuardService, BuildError, ClientAddr},
    key::{ApiKey, KeyDigest, KeyError, KeyId, KeyPrefix},
    limit::{LimitBy, RateLimit},
    principal::{CredentialKind, Principal, TokenIdentity},
    registry::{
        InMemoryRegistry, IssuedKey, KeyGrant, KeyLookup, KeyRecord, KeyRegistry, KeyStatus,
        KeyUpdate, RegistryError,
    },
    reject::{
        EmptyRejection, JsonRejection, Malformed, Rejection, RenderRejection, TokenMessageRejection,
    },
    require::{Require, RequirePolicy, RequireScope, RequireWorkspace},
};

/// The README's code blocks, compiled as doc tests so that the quick start stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
