//! [`KeyChanges`]: a registry's announcements of changed keys, for live sessions.

use tokio::sync::broadcast::{self, error::RecvError};

use crate::KeyId;

/// How many announcements wait for a slow listener before it is told it missed some
/// ([`KeyChange::Missed`]).
const BUFFER: usize = 1024;

/// A change to a key, as a registry announces it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyChange {
    /// The record of this key changed: revoked, given an expiry, updated or deleted.
    Key(KeyId),
    /// Changes may have been missed (the registry reconnected to its store, or the
    /// listener fell behind): whatever a listener holds must be checked again.
    Missed,
}

/// The sending side of a registry's announcements: a registry holds one and calls
/// [`announce`](Self::announce) after each change; [`subscribe`](Self::subscribe) is what
/// its [`KeyLookup::changes`](super::KeyLookup::changes) returns.
///
/// Cheap to clone; announcing with no listener costs a lock and nothing else.
///
/// ```
/// use keygate::{KeyId, registry::{KeyAnnouncer, KeyChange}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), keygate::KeyError> {
/// let announcer = KeyAnnouncer::new();
/// let mut changes = announcer.subscribe();
/// let key_id = KeyId::generate()?;
/// announcer.announce(KeyChange::Key(key_id));
/// assert_eq!(changes.next().await, Some(KeyChange::Key(key_id)));
///
/// drop(announcer);
/// assert_eq!(changes.next().await, None);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KeyAnnouncer {
    sender: broadcast::Sender<KeyChange>,
}

impl KeyAnnouncer {
    /// An announcer with no listener yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BUFFER).0,
        }
    }

    /// Tells every listener about `change`.
    pub fn announce(&self, change: KeyChange) {
        // An error only means that no one is listening.
        let _ = self.sender.send(change);
    }

    /// A listener for the changes announced from now on.
    #[must_use]
    pub fn subscribe(&self) -> KeyChanges {
        KeyChanges {
            receiver: self.sender.subscribe(),
        }
    }
}

impl Default for KeyAnnouncer {
    fn default() -> Self {
        Self::new()
    }
}

/// The changes a registry announces, from the moment this listener was made: what
/// [`KeyLookup::changes`](super::KeyLookup::changes) returns.
#[derive(Debug)]
pub struct KeyChanges {
    receiver: broadcast::Receiver<KeyChange>,
}

impl KeyChanges {
    /// The next change; [`KeyChange::Missed`] if this listener fell behind and lost some,
    /// `None` once the registry is gone.
    ///
    /// Cancel safe: dropping the future before it completes loses no change.
    pub async fn next(&mut self) -> Option<KeyChange> {
        match self.receiver.recv().await {
            Ok(change) => Some(change),
            Err(RecvError::Lagged(_)) => Some(KeyChange::Missed),
            Err(RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_that_falls_behind_is_told_it_missed_changes() {
        let announcer = KeyAnnouncer::new();
        let mut changes = announcer.subscribe();
        let key_id = KeyId::generate().unwrap();
        for _ in 0..=BUFFER {
            announcer.announce(KeyChange::Key(key_id));
        }
        assert_eq!(changes.next().await, Some(KeyChange::Missed));
        // What is still buffered comes after.
        assert_eq!(changes.next().await, Some(KeyChange::Key(key_id)));
    }

    #[tokio::test]
    async fn changes_before_subscribing_are_not_seen() {
        let announcer = KeyAnnouncer::new();
        let first = KeyId::generate().unwrap();
        let second = KeyId::generate().unwrap();
        announcer.announce(KeyChange::Key(first));
        let mut changes = announcer.subscribe();
        announcer.announce(KeyChange::Key(second));
        assert_eq!(changes.next().await, Some(KeyChange::Key(second)));
    }
}
