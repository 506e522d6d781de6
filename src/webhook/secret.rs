//! [`WebhookSecret`]: a shared signing secret, kept in the block-sized form HMAC uses.

use std::fmt;
use std::str::FromStr;

use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox};
use sha2::{Digest, Sha256};

use super::{MIN_SECRET_LEN, WebhookConfigError};

/// SHA-256's block size: the length of the HMAC key once it has been normalized.
const BLOCK_LEN: usize = 64;

/// HMAC-SHA256, the MAC of the signature scheme.
pub(super) type HmacSha256 = Hmac<Sha256>;

/// A shared webhook signing secret.
///
/// Built from a string or bytes of at least [`MIN_SECRET_LEN`] bytes, which are used
/// verbatim as the HMAC key (a `whsec_...` string is used as it is, not base64-decoded).
///
/// The secret is stored in a [`SecretBox`] (zeroized on drop) in the block-sized form
/// HMAC works with (RFC 2104: padded with zeros, or first hashed when longer than a
/// block), so it never has to be re-derived or re-validated. The owned `String` and
/// `Vec<u8>` conversions zeroize their input. `Debug` prints `[REDACTED]`.
///
/// ```
/// use keygate::webhook::{WebhookConfigError, WebhookSecret};
///
/// # fn main() -> Result<(), WebhookConfigError> {
/// let secret: WebhookSecret = "whsec_0123456789abcdef".parse()?;
/// assert_eq!(format!("{secret:?}"), "WebhookSecret([REDACTED])");
/// assert!(WebhookSecret::try_from("too short").is_err());
/// # Ok(())
/// # }
/// ```
pub struct WebhookSecret(SecretBox<[u8; BLOCK_LEN]>);

impl WebhookSecret {
    /// Builds a secret from raw bytes.
    ///
    /// # Errors
    ///
    /// [`WebhookConfigError::SecretTooShort`] (with `index` 0) when `secret` is shorter
    /// than [`MIN_SECRET_LEN`] bytes.
    pub fn from_bytes(secret: &[u8]) -> Result<Self, WebhookConfigError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(WebhookConfigError::SecretTooShort { index: 0 });
        }
        let mut key = SecretBox::new(Box::new([0_u8; BLOCK_LEN]));
        let block = key.expose_secret_mut();
        if secret.len() <= BLOCK_LEN {
            block[..secret.len()].copy_from_slice(secret);
        } else {
            let mut digest = Sha256::digest(secret);
            block[..digest.len()].copy_from_slice(&digest);
            digest.as_mut_slice().zeroize();
        }
        Ok(Self(key))
    }

    /// A MAC keyed with this secret, ready for input.
    pub(super) fn mac(&self) -> HmacSha256 {
        let key: &Key<HmacSha256> = self.0.expose_secret().into();
        HmacSha256::new(key)
    }

    /// The HMAC-SHA256 tag of `"<timestamp>.<body>"`, `timestamp` as written in the header.
    pub(super) fn tag(&self, timestamp: &[u8], body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(timestamp);
        mac.update(b".");
        mac.update(body);
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl TryFrom<&[u8]> for WebhookSecret {
    type Error = WebhookConfigError;

    fn try_from(secret: &[u8]) -> Result<Self, Self::Error> {
        Self::from_bytes(secret)
    }
}

impl TryFrom<&str> for WebhookSecret {
    type Error = WebhookConfigError;

    fn try_from(secret: &str) -> Result<Self, Self::Error> {
        Self::from_bytes(secret.as_bytes())
    }
}

impl TryFrom<Vec<u8>> for WebhookSecret {
    type Error = WebhookConfigError;

    /// Builds a secret from owned bytes, then zeroizes them.
    fn try_from(mut secret: Vec<u8>) -> Result<Self, Self::Error> {
        let result = Self::from_bytes(&secret);
        secret.zeroize();
        result
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = WebhookConfigError;

    /// Builds a secret from an owned string, then zeroizes it.
    fn try_from(mut secret: String) -> Result<Self, Self::Error> {
        let result = Self::from_bytes(secret.as_bytes());
        secret.zeroize();
        result
    }
}

impl FromStr for WebhookSecret {
    type Err = WebhookConfigError;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Self::from_bytes(secret.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};

    use super::super::testing::{BODY, TestResult};
    use super::*;

    #[test]
    fn key_normalization_matches_rfc_4231() -> TestResult {
        // Test case 1 (key shorter than a block) and 6 (key longer than a block).
        let cases: [(Vec<u8>, &[u8], &str); 2] = [
            (
                vec![0x0b; 20],
                b"Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, data, expected) in cases {
            let mac = WebhookSecret::from_bytes(&key)?.mac().chain_update(data);
            assert_eq!(hex::encode(mac.finalize().into_bytes()), expected);
        }
        Ok(())
    }

    #[test]
    fn key_normalization_matches_hmac_for_every_length() -> TestResult {
        for len in MIN_SECRET_LEN..=3 * BLOCK_LEN {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let ours = WebhookSecret::from_bytes(&key)?.mac().chain_update(BODY);
            let reference = HmacSha256::new_from_slice(&key)?.chain_update(BODY);
            assert_eq!(
                ours.finalize().into_bytes(),
                reference.finalize().into_bytes(),
                "key length {len}"
            );
        }
        Ok(())
    }

    #[test]
    fn secret_shorter_than_16_bytes_is_refused() {
        assert!(matches!(
            WebhookSecret::try_from("0123456789abcde"),
            Err(WebhookConfigError::SecretTooShort { index: 0 })
        ));
        assert!(WebhookSecret::try_from("0123456789abcdef").is_ok());
        assert!(WebhookSecret::try_from(String::new()).is_err());
        assert!(WebhookSecret::try_from(vec![0_u8; 16]).is_ok());
        assert!(WebhookSecret::try_from(&[0_u8; 15][..]).is_err());
        assert!("0123456789abcdef".parse::<WebhookSecret>().is_ok());
    }
}
