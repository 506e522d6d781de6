//! Why a signature is refused ([`SignatureError`]) and why a verifier cannot be built
//! ([`WebhookConfigError`]).

use super::MIN_SECRET_LEN;

/// Why a webhook signature was refused.
///
/// The messages say what was wrong with the header, never what it contained.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The request has no signature header.
    #[error("webhook signature is missing")]
    Missing,
    /// The signature header is not of the form `t=<digits>,v1=<64 hex digits>[,...]`,
    /// is too long, or is present more than once.
    #[error("webhook signature is malformed")]
    Malformed,
    /// No `v1` signature matches the body under any configured secret.
    #[error("webhook signature does not match")]
    Mismatch,
    /// The signed timestamp is outside the tolerance.
    #[error("webhook signature timestamp is outside the tolerance")]
    Stale,
}

impl SignatureError {
    /// The machine-readable reason of the rejection: `"stale_signature"` for
    /// [`Stale`](Self::Stale), `"invalid_signature"` otherwise. Either way the status is
    /// `401 Unauthorized`.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Stale => "stale_signature",
            Self::Missing | Self::Malformed | Self::Mismatch => "invalid_signature",
        }
    }
}

/// Why a [`WebhookSecret`](super::WebhookSecret) or [`WebhookVerifier`](super::WebhookVerifier) could not be built.
///
/// A server should refuse to start on any of these.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    /// No secret was configured.
    #[error("no webhook secret configured")]
    NoSecrets,
    /// A secret is shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("webhook secret {index} is shorter than {min} bytes", min = MIN_SECRET_LEN)]
    SecretTooShort {
        /// Zero-based position of the secret in its list (0 for a secret built alone).
        index: usize,
    },
    /// An entry of a comma-separated list of secrets is empty.
    #[error("webhook secret {index} is empty")]
    EmptySecret {
        /// Zero-based position of the entry in the list.
        index: usize,
    },
}

/// are `stale_signature`, anything else `invalid_signature`.
impl From<SignatureError> for crate::Rejection {
    fn from(error: SignatureError) -> Self {
        match error {
            SignatureError::Stale => crate::Rejection::StaleSignature,
            _ => crate::Rejection::InvalidSignature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_rejection_table() {
        assert_eq!(SignatureError::Missing.reason(), "invalid_signature");
        assert_eq!(SignatureError::Malformed.reason(), "invalid_signature");
        assert_eq!(SignatureError::Mismatch.reason(), "invalid_signature");
        assert_eq!(SignatureError::Stale.reason(), "stale_signature");
    }

    #[test]
    fn error_messages_are_lowercase() {
        for err in [
            SignatureError::Missing,
            SignatureError::Malformed,
            SignatureError::Mismatch,
            SignatureError::Stale,
        ] {
            let message = err.to_string();
            assert_eq!(message, message.to_lowercase());
            assert!(!message.ends_with('.'));
        }
        assert_eq!(
            WebhookConfigError::SecretTooShort { index: 2 }.to_string(),
            "webhook secret 2 is shorter than 16 bytes"
        );
    }
}
