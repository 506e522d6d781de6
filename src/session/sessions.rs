//! [`Sessions`] and [`SessionsBuilder`]: the settings every live session of a service
//! shares.

use std::{fmt, sync::Arc, time::Duration};

use tokio::sync::Semaphore;

use super::{PendingAuth, Session, pending::Places};
use crate::{KeyLookup, Principal, Rejection, limit::RateLimitBackend};

/// The default longest time between two checks of a session's key.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The default time a connection has to authenticate.
pub const DEFAULT_AUTH_DEADLINE: Duration = Duration::from_secs(5);
/// The default number of connections that may wait to authenticate at once.
pub const DEFAULT_MAX_PENDING: usize = 1024;
/// The default number of refused messages in a row answered before the connection should
/// be closed.
pub const DEFAULT_CLOSE_AFTER_REFUSED: u32 = 3;
/// The longest check interval or authentication deadline taken: longer ones are this.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// The live sessions of a service: where their keys are checked, how often, the deadline
/// of a connection that has not authenticated yet, and the per-principal message budget.
///
/// Cheap to clone (one `Arc`). Made with [`Sessions::builder`]; a connection then takes a
/// [`pending`](Self::pending) place while it authenticates, and a [`Session`] from
/// [`start`](Self::start) once it has.
///
/// ```
/// use std::time::Duration;
///
/// use keygate::{InMemoryRegistry, KeyGrant, KeyLookup, KeyRegistry, Principal, session::{SessionEnd, Sessions}};
/// use time::OffsetDateTime;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = std::sync::Arc::new(InMemoryRegistry::new());
/// let issued = registry.issue(KeyGrant::new("browser-7")).await?;
/// let sessions = Sessions::builder(registry.clone())
///     .check_every(Duration::from_secs(30))
///     .build();
///
/// // The guard admitted the connection with this principal.
/// let mut session = sessions.start(Principal::new(issued.record.clone()));
/// registry.revoke(&issued.record.key_id, OffsetDateTime::now_utc()).await?;
/// // The in-memory registry announces it: the session ends at once, not in 30 s.
/// assert_eq!(session.ended().await, SessionEnd::Revoked);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Sessions {
    pub(super) shared: Arc<Shared>,
}

/// What every session of a [`Sessions`] reads.
pub(super) struct Shared {
    pub(super) lookup: Arc<dyn KeyLookup>,
    pub(super) check_every: Duration,
    pub(super) auth_deadline: Duration,
    pub(super) places: Places,
    pub(super) messages: Option<Arc<dyn RateLimitBackend>>,
    pub(super) close_after_refused: u32,
}

impl Sessions {
    /// Settings for sessions whose keys are checked in `registry` (the guard's registry,
    /// or any [`KeyLookup`]; an `Arc` of one is accepted).
    pub fn builder(registry: impl KeyLookup) -> SessionsBuilder {
        SessionsBuilder {
            lookup: Arc::new(registry),
            check_every: DEFAULT_CHECK_EVERY,
            auth_deadline: DEFAULT_AUTH_DEADLINE,
            max_pending: DEFAULT_MAX_PENDING,
            messages: None,
            close_after_refused: DEFAULT_CLOSE_AFTER_REFUSED,
        }
    }

    /// A place for a connection that will authenticate after it is open (its key in its
    /// first message), with the deadline to do so. Take it before accepting the
    /// connection (e.g. before a WebSocket upgrade) and keep it until authentication
    /// ends: at most [`max_pending`](SessionsBuilder::max_pending) connections wait at
    /// once, so that unauthenticated clients cannot hold sockets without bound.
    ///
    /// # Errors
    ///
    /// [`Rejection::AuthUnavailable`] (503, retry after 1 s) when every place is taken.
    pub fn pending(&self) -> Result<PendingAuth, Rejection> {
        let place = Arc::clone(&self.shared.places)
            .try_acquire_owned()
            .map_err(|_| Rejection::AuthUnavailable {
                retry_after: Duration::from_secs(1),
            })?;
        let deadline = tokio::time::Instant::now() + self.shared.auth_deadline;
        Ok(PendingAuth::new(place, deadline))
    }

    /// The session of an authenticated connection: it ends when `principal`'s key is
    /// revoked, deleted or expires (a token's: when it expires).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime with its time driver (the session holds a timer).
    #[must_use]
    pub fn start(&self, principal: Principal) -> Session {
        Session::new(Arc::clone(&self.shared), principal)
    }

    /// The longest time between two checks of a session's key.
    #[must_use]
    pub fn check_every(&self) -> Duration {
        self.shared.check_every
    }

    /// The time a connection has to authenticate.
    #[must_use]
    pub fn auth_deadline(&self) -> Duration {
        self.shared.auth_deadline
    }
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("lookup", &self.shared.lookup)
            .field("check_every", &self.shared.check_every)
            .field("auth_deadline", &self.shared.auth_deadline)
            .field(
                "pending_places_free",
                &self.shared.places.available_permits(),
            )
            .field("messages", &self.shared.messages)
            .field("close_after_refused", &self.shared.close_after_refused)
            .finish()
    }
}

/// The settings of [`Sessions`], from [`Sessions::builder`].
///
/// ```
/// use std::{num::NonZeroU32, time::Duration};
///
/// use keygate::{InMemoryRegistry, limit::{InMemoryRateLimit, Quota, Tiers}, session::Sessions};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let per_minute = NonZeroU32::new(120).unwrap();
/// let sessions = Sessions::builder(InMemoryRegistry::new())
///     .check_every(Duration::from_secs(10))
///     .auth_deadline(Duration::from_secs(5))
///     .max_pending(1024)
///     .messages(InMemoryRateLimit::new(Tiers::new(Quota::per_minute(per_minute))))
///     .close_after_refused(3)
///     .build();
/// assert_eq!(sessions.check_every(), Duration::from_secs(10));
/// # }
/// ```
#[must_use]
pub struct SessionsBuilder {
    lookup: Arc<dyn KeyLookup>,
    check_every: Duration,
    auth_deadline: Duration,
    max_pending: usize,
    messages: Option<Arc<dyn RateLimitBackend>>,
    close_after_refused: u32,
}

impl SessionsBuilder {
    /// The longest time between two checks of a session's key in the registry (default
    /// 30 s). A registry that announces changes ([`KeyLookup::changes`]) ends sessions at
    /// once; this interval bounds how long a change it could not announce (another
    /// process on the same SQLite file, a lost connection to Redis or PostgreSQL) goes
    /// unnoticed. A session also ends at its key's expiry, whatever the interval.
    /// Intervals over a year are taken as a year.
    ///
    /// # Panics
    ///
    /// If `every` is zero.
    pub fn check_every(mut self, every: Duration) -> Self {
        assert!(
            !every.is_zero(),
            "the session check interval must not be zero"
        );
        self.check_every = every.min(MAX_WAIT);
        self
    }

    /// How long a connection has to authenticate after it opened (default 5 s; at most a
    /// year).
    ///
    /// # Panics
    ///
    /// If `deadline` is zero.
    pub fn auth_deadline(mut self, deadline: Duration) -> Self {
        assert!(
            !deadline.is_zero(),
            "the authentication deadline must not be zero"
        );
        self.auth_deadline = deadline.min(MAX_WAIT);
        self
    }

    /// How many connections may wait to authenticate at once (default 1024); 0 refuses
    /// every connection that does not authenticate as it opens.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.min(Semaphore::MAX_PERMITS);
        self
    }

    /// The message budget of a principal, shared by all its sessions (and, on a shared
    /// backend such as Redis, by all replicas): [`Session::spend_message`] checks it under
    /// the principal's id and tier. None by default: every message is admitted.
    pub fn messages(mut self, limit: impl RateLimitBackend) -> Self {
        self.messages = Some(Arc::new(limit));
        self
    }

    /// How many refused messages in a row a client gets an answer to before
    /// [`TooManyMessages::should_close`](super::TooManyMessages::should_close) says to
    /// close its connection (default 3).
    pub fn close_after_refused(mut self, refusals: u32) -> Self {
        self.close_after_refused = refusals;
        self
    }

    /// The sessions.
    #[must_use]
    pub fn build(self) -> Sessions {
        Sessions {
            shared: Arc::new(Shared {
                lookup: self.lookup,
                check_every: self.check_every,
                auth_deadline: self.auth_deadline,
                places: Arc::new(Semaphore::new(self.max_pending)),
                messages: self.messages,
                close_after_refused: self.close_after_refused,
            }),
        }
    }
}

impl fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("lookup", &self.lookup)
            .field("check_every", &self.check_every)
            .field("auth_deadline", &self.auth_deadline)
            .field("max_pending", &self.max_pending)
            .field("messages", &self.messages)
            .field("close_after_refused", &self.close_after_refused)
            .finish()
    }
}
