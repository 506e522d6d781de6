//! Live sessions: long-lived connections (WebSocket, server-sent events, streaming RPCs)
//! that end when their credential does (feature `session`).
//!
//! The guard decides once per request; a connection authenticated once may stay open for
//! hours. A [`Session`] holds the connection's [`Principal`](crate::Principal) and
//! completes [`ended`](Session::ended) when its key is revoked, deleted or expires: at
//! once where the registry announces changes ([`KeyLookup::changes`](crate::KeyLookup::changes):
//! the in-memory registry, and Redis and PostgreSQL across replicas), at the key's expiry,
//! and otherwise at the next periodic check. Two more things every such endpoint needs
//! come with it: a deadline and a bounded number of places for connections that have not
//! authenticated yet ([`Sessions::pending`]), and a per-principal message budget
//! ([`Session::spend_message`]).
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//!
//! use keygate::{InMemoryRegistry, KeyGrant, KeyRegistry, Principal, session::{SessionEnd, Sessions}};
//! use time::OffsetDateTime;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Arc::new(InMemoryRegistry::new());
//! let sessions = Sessions::builder(Arc::clone(&registry)).build();
//!
//! // A key that expires in 50 ms; its connection's session ends then.
//! let grant = KeyGrant::new("browser-7").expires_at(OffsetDateTime::now_utc() + Duration::from_millis(50));
//! let issued = registry.issue(grant).await?;
//! let mut session = sessions.start(Principal::new(issued.record));
//! assert_eq!(session.ended().await, SessionEnd::Expired);
//! assert_eq!(session.ended().await.reason(), "expired_credentials");
//! # Ok(()) }
//! ```
//!
//! Memory: a session holds its principal (one `Arc`), a timer and, where the registry
//! announces changes, a receiver on its announcements; nothing is kept per connection in
//! the registry. Every announcement wakes every session once (to compare key ids), which
//! is cheap next to the change itself.

mod end;
mod live;
mod messages;
mod pending;
mod sessions;

pub use self::end::SessionEnd;
pub use self::live::Session;
pub use self::messages::TooManyMessages;
pub use self::pending::{AuthTimedOut, PendingAuth};
pub use self::sessions::{
    DEFAULT_AUTH_DEADLINE, DEFAULT_CHECK_EVERY, DEFAULT_CLOSE_AFTER_REFUSED, DEFAULT_MAX_PENDING,
    Sessions, SessionsBuilder,
};
