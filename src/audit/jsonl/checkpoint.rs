//! Signed checkpoints: a line in the chain that vouches, with an HMAC, for the chain's
//! head at that point, so that a file rewritten without the key is detected.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

use crate::audit::{AuditEvent, Outcome};

/// The `action` of a checkpoint record.
pub const CHECKPOINT_ACTION: &str = "audit.checkpoint";

/// What precedes the MAC's hex digits in a checkpoint's `target`.
const MAC_PREFIX: &str = "hmac-sha256:";

/// The shortest key accepted, in bytes.
pub const MIN_CHECKPOINT_KEY_LEN: usize = 32;

/// Why a [`CheckpointKey`] could not be made. Never contains key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    /// The key is shorter than [`MIN_CHECKPOINT_KEY_LEN`] bytes.
    #[error(
        "the audit checkpoint key{} must be at least 32 bytes: make one with \
         `openssl rand -base64 32`",
        var.as_deref().map(|var| format!(" in {var}")).unwrap_or_default()
    )]
    TooShort {
        /// The environment variable it came from, if any.
        var: Option<String>,
    },
    /// The environment variable is unset (or not UTF-8).
    #[error("{var} is not set: set it to the output of `openssl rand -base64 32`")]
    MissingEnv {
        /// The variable.
        var: String,
    },
}

/// The secret that signs and checks the chain's checkpoints (HMAC-SHA256), at least 32
/// bytes. Keep it away from the audit file: whoever holds it can forge checkpoints.
///
/// `Debug` prints `[REDACTED]`; the bytes are zeroized on drop.
///
/// ```
/// use keygate::audit::CheckpointKey;
///
/// let key = CheckpointKey::from_bytes(b"an-audit-checkpoint-key-of-32-bytes")?;
/// assert_eq!(format!("{key:?}"), "CheckpointKey([REDACTED])");
/// assert!(CheckpointKey::from_bytes(b"short").is_err());
/// # Ok::<(), keygate::audit::CheckpointKeyError>(())
/// ```
pub struct CheckpointKey(SecretBox<[u8]>);

impl CheckpointKey {
    /// A key from its bytes.
    ///
    /// # Errors
    ///
    /// [`CheckpointKeyError::TooShort`] under [`MIN_CHECKPOINT_KEY_LEN`] bytes.
    pub fn from_bytes(key: &[u8]) -> Result<Self, CheckpointKeyError> {
        if key.len() < MIN_CHECKPOINT_KEY_LEN {
            return Err(CheckpointKeyError::TooShort { var: None });
        }
        Ok(Self(SecretBox::new(key.into())))
    }

    /// The key in environment variable `var` (its text, used as it is).
    ///
    /// # Errors
    ///
    /// [`CheckpointKeyError::MissingEnv`] when unset, [`CheckpointKeyError::TooShort`]
    /// (naming `var`) under [`MIN_CHECKPOINT_KEY_LEN`] bytes.
    pub fn from_env(var: &str) -> Result<Self, CheckpointKeyError> {
        let value = std::env::var(var).map_err(|_| CheckpointKeyError::MissingEnv {
            var: var.to_owned(),
        })?;
        let value = secrecy::SecretString::from(value);
        Self::from_bytes(value.expose_secret().as_bytes()).map_err(|_| {
            CheckpointKeyError::TooShort {
                var: Some(var.to_owned()),
            }
        })
    }

    /// The MAC over a checkpoint's place in the chain: its `seq` and its `prev` (the
    /// hash of the last line it vouches for).
    fn mac(&self, seq: u64, prev: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        #[allow(clippy::expect_used)]
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC accepts any key length");
        mac.update(b"keygate-audit-checkpoint\n");
        mac.update(seq.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(prev.as_bytes());
        mac
    }

    /// The checkpoint record to write as line `seq`, after the line whose hash is `prev`.
    pub(super) fn record(&self, seq: u64, prev: &str) -> AuditEvent {
        let tag = self.mac(seq, prev).finalize().into_bytes();
        AuditEvent::new(CHECKPOINT_ACTION, Outcome::Succeeded)
            .with_target(format!("{MAC_PREFIX}{}", hex::encode(tag)))
    }

    /// Whether `target` is the MAC of a checkpoint at `seq` after `prev` (in constant
    /// time).
    pub(super) fn verifies(&self, seq: u64, prev: &str, target: &str) -> bool {
        let Some(tag) = target
            .strip_prefix(MAC_PREFIX)
            .and_then(|hex_text| hex::decode(hex_text).ok())
        else {
            return false;
        };
        self.mac(seq, prev).verify_slice(&tag).is_ok()
    }
}

impl fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CheckpointKey([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_its_own_place_and_key() {
        let key = CheckpointKey::from_bytes(&[7; 32]).unwrap();
        let other = CheckpointKey::from_bytes(&[8; 32]).unwrap();
        let prev = "ab".repeat(32);
        let target = key.record(10, &prev).target.unwrap();
        assert!(key.verifies(10, &prev, &target));
        assert!(!key.verifies(11, &prev, &target));
        assert!(!key.verifies(10, &"cd".repeat(32), &target));
        assert!(!other.verifies(10, &prev, &target));
        assert!(!key.verifies(10, &prev, "hmac-sha256:zz"));
        assert!(!key.verifies(10, &prev, &target.replace("hmac-sha256:", "")));
    }

    #[test]
    fn errors_name_the_variable_and_never_the_key() {
        let error = CheckpointKeyError::TooShort {
            var: Some("AUDIT_CHECKPOINT_KEY".to_owned()),
        };
        assert!(error.to_string().contains("in AUDIT_CHECKPOINT_KEY"), "{error}");
        assert!(error.to_string().contains("openssl rand -base64 32"), "{error}");
    }
}
