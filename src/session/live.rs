//! [`Session`]: one authenticated long-lived connection, and when it ends.

use std::{fmt, num::NonZeroU32, pin::Pin, sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::time::{Instant, Sleep};

use super::{SessionEnd, TooManyMessages, sessions::Shared};
use crate::{
    KeyId, KeyRecord, KeyStatus, Principal, RegistryError,
    registry::{KeyChange, KeyChanges, LookupFuture},
};

/// How soon a check that found the registry unavailable is tried again (at most).
const RETRY: Duration = Duration::from_secs(1);

/// An authenticated long-lived connection (WebSocket, server-sent events, a streaming
/// RPC), from [`Sessions::start`](super::Sessions::start): its [`Principal`], a future that
/// completes when its credential ends, and its principal's message budget.
///
/// [`ended`](Self::ended) completes
/// - at once when the registry announces a change to the key ([`KeyLookup::changes`](crate::KeyLookup::changes):
///   the in-memory registry for its own changes, Redis and PostgreSQL for every
///   replica's) and the key turns out revoked or deleted ([`SessionEnd::Revoked`]) or
///   expired ([`SessionEnd::Expired`]);
/// - at the key's expiry (checked in the registry then, so an extended key goes on);
/// - otherwise at the first check, every [`check_every`](super::SessionsBuilder::check_every),
///   that finds the key revoked, deleted or expired;
/// - with [`SessionEnd::Unavailable`] when the registry could not be asked for a whole
///   check interval (it is tried again every second meanwhile): a session is not kept
///   open on a key that cannot be checked.
///
/// A token's session (a [`Principal`] from a JWT) ends at the token's expiry.
///
/// The principal is refreshed from each check that finds the key active, so that
/// [`principal`](Self::principal) shows changed scopes or workspaces; what the
/// connection was granted under the old ones is the caller's to re-check.
///
/// Use it in the connection's loop, beside the socket:
///
/// ```no_run
/// use axum::extract::ws::{CloseFrame, Message, WebSocket};
/// use keygate::session::Session;
///
/// async fn run(mut socket: WebSocket, mut session: Session) {
///     loop {
///         tokio::select! {
///             end = session.ended() => {
///                 let frame = CloseFrame {
///                     code: end.websocket_close_code(),
///                     reason: end.reason().into(),
///                 };
///                 let _ = socket.send(Message::Close(Some(frame))).await;
///                 return;
///             }
///             message = socket.recv() => match message {
///                 Some(Ok(Message::Text(text))) => {
///                     if let Err(refused) = session.spend_message().await {
///                         if refused.should_close() { return; }
///                         continue;
///                     }
///                     let _ = socket.send(Message::Text(text)).await;
///                 }
///                 Some(Ok(_)) => {}
///                 _ => return,
///             },
///         }
///     }
/// }
/// ```
pub struct Session {
    shared: Arc<Shared>,
    principal: Principal,
    /// The key checked, `None` for a token.
    key_id: Option<KeyId>,
    /// When the credential expires, as last seen.
    expires_at: Option<OffsetDateTime>,
    /// The registry's announcements, while it makes them.
    changes: Option<KeyChanges>,
    /// The next check (or the expiry, if sooner).
    wake: Pin<Box<Sleep>>,
    /// A check under way: kept across cancellations of [`Self::ended`], so that a busy
    /// connection cannot starve it.
    check: Option<LookupFuture>,
    /// Since when checks have found the registry unavailable.
    failing_since: Option<Instant>,
    /// How the session ended, once it has.
    end: Option<SessionEnd>,
    /// Messages refused since the last admitted one.
    refused_in_a_row: u32,
}

impl Session {
    /// # Panics
    ///
    /// Outside a tokio runtime with its time driver.
    pub(super) fn new(shared: Arc<Shared>, principal: Principal) -> Self {
        let (key_id, expires_at) = match principal.record() {
            Some(record) => (Some(record.key_id), record.expires_at),
            None => (None, principal.token().and_then(|token| token.expires_at)),
        };
        let changes = key_id.and_then(|_| shared.lookup.changes());
        let mut session = Self {
            wake: Box::pin(tokio::time::sleep(shared.check_every)),
            shared,
            principal,
            key_id,
            expires_at,
            changes,
            check: None,
            failing_since: None,
            end: None,
            refused_in_a_row: 0,
        };
        session.schedule(session.shared.check_every);
        session
    }

    /// The connection's principal, as of the last check.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// How the session ended, if it has.
    #[must_use]
    pub fn end(&self) -> Option<SessionEnd> {
        self.end
    }

    /// Completes when the session's credential ends, with why (see [`Session`] for
    /// when); at once if it has ended already.
    ///
    /// Cancel safe: in a `select!` loop, a check under way is kept for the next call.
    pub async fn ended(&mut self) -> SessionEnd {
        if let Some(end) = self.end {
            return end;
        }
        let end = match self.key_id {
            Some(key_id) => self.key_ended(key_id).await,
            None => self.token_ended().await,
        };
        self.end = Some(end);
        end
    }

    async fn token_ended(&mut self) -> SessionEnd {
        if self.expires_at.is_none() {
            std::future::pending::<()>().await;
        }
        (&mut self.wake).await;
        SessionEnd::Expired
    }

    async fn key_ended(&mut self, key_id: KeyId) -> SessionEnd {
        loop {
            if self.check.is_none() {
                // A periodic check reads the store itself (a change no announcement
                // brought must be found); an announced change may be read through the
                // cache, which the announcement has just invalidated.
                let periodic = tokio::select! {
                    () = &mut self.wake => true,
                    change = next_change(&mut self.changes) => match change {
                        KeyChange::Key(changed) if changed == key_id => false,
                        KeyChange::Missed => {
                            // Every session hears this at once (the registry reconnected):
                            // their checks are spread over up to a second rather than
                            // sent to the store together.
                            let at = Instant::now() + spread(RETRY.min(self.shared.check_every));
                            // Never later than already due: a stream of these cannot
                            // put the check off.
                            if at < self.wake.deadline() {
                                self.wake.as_mut().reset(at);
                            }
                            continue;
                        }
                        _ => continue,
                    },
                };
                let lookup = &self.shared.lookup;
                self.check = Some(if periodic {
                    lookup.find_by_id_uncached(&key_id)
                } else {
                    lookup.find_by_id(&key_id)
                });
            }
            let Some(check) = self.check.as_mut() else {
                continue;
            };
            let found = check.await;
            self.check = None;
            if let Some(end) = self.judge(key_id, found) {
                return end;
            }
        }
    }

    /// What a check found: the end of the session, or when to check next.
    fn judge(
        &mut self,
        key_id: KeyId,
        found: Result<Option<Arc<KeyRecord>>, RegistryError>,
    ) -> Option<SessionEnd> {
        let now = OffsetDateTime::now_utc();
        match found {
            Ok(Some(record)) if record.key_id == key_id => match record.status_at(now) {
                KeyStatus::Active => {
                    self.expires_at = record.expires_at;
                    self.failing_since = None;
                    self.principal = Principal::new(record);
                    self.schedule(self.shared.check_every);
                    None
                }
                KeyStatus::Expired => Some(SessionEnd::Expired),
                // Revoked, or a status this version does not know: refused either way.
                _ => Some(SessionEnd::Revoked),
            },
            // Deleted: the key is gone for good.
            Ok(_) => Some(SessionEnd::Revoked),
            Err(error) => {
                if self.expires_at.is_some_and(|at| at <= now) {
                    return Some(SessionEnd::Expired);
                }
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.shared.check_every {
                    tracing::warn!(
                        %error,
                        principal = self.principal.id(),
                        "keygate: session ended: its key could not be checked",
                    );
                    return Some(SessionEnd::Unavailable);
                }
                self.schedule(RETRY.min(self.shared.check_every));
                None
            }
        }
    }

    /// Wakes after `after`, or at the expiry if sooner.
    fn schedule(&mut self, after: Duration) {
        let mut after = after;
        if let Some(expires_at) = self.expires_at {
            // Past: at once.
            let left = Duration::try_from(expires_at - OffsetDateTime::now_utc())
                .unwrap_or(Duration::ZERO);
            after = after.min(left);
        }
        self.wake.as_mut().reset(Instant::now() + after);
    }

    /// Spends one message of the principal's budget
    /// ([`messages`](super::SessionsBuilder::messages); without one, every message is
    /// admitted).
    ///
    /// # Errors
    ///
    /// [`TooManyMessages`] when the budget is spent, or its backend could not decide
    /// (refused all the same: fail closed).
    pub async fn spend_message(&mut self) -> Result<(), TooManyMessages> {
        self.spend_messages(NonZeroU32::MIN).await
    }

    /// Spends `cost` messages of the principal's budget at once (see
    /// [`spend_message`](Self::spend_message)).
    ///
    /// # Errors
    ///
    /// [`TooManyMessages`] when the budget has less than `cost` left, or its backend
    /// could not decide.
    pub async fn spend_messages(&mut self, cost: NonZeroU32) -> Result<(), TooManyMessages> {
        let Some(limit) = &self.shared.messages else {
            return Ok(());
        };
        let decided = limit
            .check(self.principal.id(), self.principal.tier(), cost)
            .await;
        let retry_after = match decided {
            Ok(decision) if decision.allowed => {
                self.refused_in_a_row = 0;
                return Ok(());
            }
            Ok(decision) => decision.retry_after,
            Err(error) => {
                tracing::debug!(%error, "keygate: message budget unavailable; message refused");
                None
            }
        };
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        Err(TooManyMessages {
            retry_after,
            refused_in_a_row: self.refused_in_a_row,
            close: self.refused_in_a_row > self.shared.close_after_refused,
        })
    }
}

/// A random part of `over` (all of it if the OS has no randomness to give).
fn spread(over: Duration) -> Duration {
    getrandom::u32().map_or(over, |random| {
        over.mul_f64(f64::from(random) / f64::from(u32::MAX))
    })
}

/// The next announced change; never completes while there is no announcer (or once it is
/// gone).
async fn next_change(changes: &mut Option<KeyChanges>) -> KeyChange {
    if let Some(listener) = changes {
        if let Some(change) = listener.next().await {
            return change;
        }
        *changes = None;
    }
    std::future::pending().await
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("principal", &self.principal)
            .field("expires_at", &self.expires_at)
            .field("announced", &self.changes.is_some())
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InMemoryRegistry, TokenIdentity, session::Sessions};

    fn token(expires_at: Option<OffsetDateTime>) -> Principal {
        Principal::from_token(TokenIdentity {
            subject: "user-42".into(),
            token_id: Some("t-1".into()),
            workspaces: Vec::new(),
            scopes: Vec::new(),
            tier: "default".into(),
            expires_at,
        })
    }

    #[tokio::test]
    async fn a_token_session_ends_at_the_tokens_expiry_and_stays_ended() {
        let sessions = Sessions::builder(InMemoryRegistry::new())
            .check_every(Duration::from_secs(3600))
            .build();
        let expires_at = OffsetDateTime::now_utc() + Duration::from_millis(100);
        let mut session = sessions.start(token(Some(expires_at)));
        assert_eq!(session.end(), None);
        assert_eq!(session.ended().await, SessionEnd::Expired);
        assert!(OffsetDateTime::now_utc() >= expires_at);
        assert_eq!(session.end(), Some(SessionEnd::Expired));
        assert_eq!(session.ended().await, SessionEnd::Expired);
    }

    #[tokio::test]
    async fn a_token_without_expiry_never_ends_by_itself() {
        let sessions = Sessions::builder(InMemoryRegistry::new()).build();
        let mut session = sessions.start(token(None));
        let waited = tokio::time::timeout(Duration::from_millis(50), session.ended()).await;
        assert!(waited.is_err(), "ended: {waited:?}");
    }

    #[tokio::test]
    async fn a_session_whose_key_is_already_gone_ends_at_its_first_check() {
        let registry = std::sync::Arc::new(InMemoryRegistry::new());
        let sessions = Sessions::builder(std::sync::Arc::clone(&registry))
            .check_every(Duration::from_millis(20))
            .build();
        // A principal whose key was never registered (or deleted before the session).
        let record = KeyRecord::new(
            KeyId::generate().unwrap(),
            crate::KeyDigest::of(b"gone"),
            "browser-1",
        );
        let mut session = sessions.start(Principal::new(Arc::new(record)));
        assert_eq!(session.ended().await, SessionEnd::Revoked);
    }

    #[tokio::test]
    async fn the_longest_intervals_and_a_far_expiry_do_not_overflow() {
        let registry = std::sync::Arc::new(InMemoryRegistry::new());
        let sessions = Sessions::builder(std::sync::Arc::clone(&registry))
            .check_every(Duration::MAX)
            .auth_deadline(Duration::MAX)
            .build();
        assert!(sessions.pending().is_ok());
        let far = OffsetDateTime::now_utc() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut session = sessions.start(token(Some(far)));
        let waited = tokio::time::timeout(Duration::from_millis(20), session.ended()).await;
        assert!(waited.is_err(), "ended: {waited:?}");
    }

    /// A store whose announcements the test makes itself.
    #[derive(Debug, Default)]
    struct Announced {
        inner: InMemoryRegistry,
        announcer: crate::registry::KeyAnnouncer,
        lookups: std::sync::atomic::AtomicUsize,
    }

    impl crate::KeyLookup for Announced {
        fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.find_by_id(key_id)
        }

        fn find_by_digest(&self, digest: &crate::KeyDigest) -> LookupFuture {
            self.inner.find_by_digest(digest)
        }

        fn changes(&self) -> Option<KeyChanges> {
            Some(self.announcer.subscribe())
        }
    }

    #[tokio::test]
    async fn missed_changes_are_checked_within_a_second_and_other_keys_changes_are_not() {
        use crate::{KeyGrant, KeyRegistry};

        let store = std::sync::Arc::new(Announced::default());
        let sessions = Sessions::builder(std::sync::Arc::clone(&store))
            .check_every(Duration::from_secs(3600))
            .build();
        let issued = store.inner.issue(KeyGrant::new("browser-1")).await.unwrap();
        let mut session = sessions.start(Principal::new(issued.record.clone()));

        // Another key's change is not this session's business: no lookup.
        store
            .announcer
            .announce(KeyChange::Key(KeyId::generate().unwrap()));
        let waited = tokio::time::timeout(Duration::from_millis(50), session.ended()).await;
        assert!(waited.is_err());
        assert_eq!(store.lookups.load(std::sync::atomic::Ordering::SeqCst), 0);

        // Revoked where no announcement says so, then "changes were missed".
        store
            .inner
            .revoke(&issued.record.key_id, OffsetDateTime::now_utc())
            .await
            .unwrap();
        let missed_at = Instant::now();
        store.announcer.announce(KeyChange::Missed);
        assert_eq!(session.ended().await, SessionEnd::Revoked);
        assert!(missed_at.elapsed() <= Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn without_a_budget_every_message_is_admitted() {
        let sessions = Sessions::builder(InMemoryRegistry::new()).build();
        let mut session = sessions.start(token(None));
        for _ in 0..1000 {
            assert_eq!(session.spend_message().await, Ok(()));
        }
    }
}
