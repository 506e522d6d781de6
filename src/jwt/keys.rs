//! The keys a token may be signed with: [`HmacSecret`], [`VerifyingKey`] (one key, its
//! algorithm and `kid`), and [`JwtKeySet`], the set the verifier picks from, which can be
//! replaced at run time (key rotation, a refreshed JWKS document).

use std::{fmt, sync::Arc};

use arc_swap::ArcSwap;
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use super::JwtError;

/// The shortest HMAC secret accepted, in bytes (RFC 7518 §3.2 asks for at least the
/// hash's size: 32 bytes for HS256).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// A shared secret for HS256, HS384 or HS512: at least [`MIN_HMAC_SECRET_LEN`] bytes,
/// zeroized on drop, `Debug` prints `[REDACTED]`.
///
/// ```
/// use keygate::jwt::{HmacSecret, JwtError};
///
/// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
/// assert_eq!(format!("{secret:?}"), "HmacSecret([REDACTED])");
/// assert!(matches!(HmacSecret::new("short"), Err(JwtError::SecretTooShort { len: 5, min: 32 })));
///
/// // From the environment, failing fast with the variable named.
/// let error = HmacSecret::from_var("JWT_SECRET", None).unwrap_err();
/// assert!(error.to_string().contains("JWT_SECRET"));
/// # Ok::<(), JwtError>(())
/// ```
#[derive(Clone)]
pub struct HmacSecret(SecretSlice<u8>);

impl HmacSecret {
    /// The secret `bytes` (for a text secret, its UTF-8 bytes).
    ///
    /// # Errors
    ///
    /// [`JwtError::SecretTooShort`] below [`MIN_HMAC_SECRET_LEN`] bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, JwtError> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_HMAC_SECRET_LEN {
            return Err(JwtError::SecretTooShort {
                len: bytes.len(),
                min: MIN_HMAC_SECRET_LEN,
            });
        }
        Ok(Self(SecretSlice::from(bytes.to_vec())))
    }

    /// The secret in environment variable `var` (surrounding whitespace trimmed).
    ///
    /// # Errors
    ///
    /// [`JwtError::MissingEnv`] if the variable is not set, [`JwtError::InvalidEnv`] if it
    /// is not Unicode or too short; both name the variable.
    pub fn from_env(var: &str) -> Result<Self, JwtError> {
        match std::env::var(var) {
            Ok(value) => Self::from_var(var, Some(value)),
            Err(std::env::VarError::NotPresent) => Self::from_var(var, None),
            Err(std::env::VarError::NotUnicode(_)) => Err(JwtError::InvalidEnv {
                var: var.to_owned(),
                source: Box::new(JwtError::NotUnicode),
            }),
        }
    }

    /// Like [`from_env`](Self::from_env), for a value read some other way: `value` is the
    /// variable's value, `None` if it is unset.
    ///
    /// # Errors
    ///
    /// [`JwtError::MissingEnv`] for `None`, [`JwtError::InvalidEnv`] for a value that is
    /// too short.
    pub fn from_var(var: &str, value: Option<String>) -> Result<Self, JwtError> {
        let Some(value) = value else {
            return Err(JwtError::MissingEnv {
                var: var.to_owned(),
            });
        };
        let value = SecretString::from(value);
        Self::new(value.expose_secret().trim()).map_err(|source| JwtError::InvalidEnv {
            var: var.to_owned(),
            source: Box::new(source),
        })
    }

    /// The secret's bytes. Call it only to hand them to a signing or verifying key.
    #[must_use]
    pub fn expose_secret(&self) -> &[u8] {
        self.0.expose_secret()
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSecret([REDACTED])")
    }
}

/// One key a token may be verified with: the key, the one algorithm it is used with, and
/// its `kid` (if any).
///
/// A key is used with exactly its algorithm: a token whose header names another one is
/// refused, so an RSA public key can never be used as an HMAC secret (algorithm
/// confusion), and `alg: none` never verifies.
///
/// ```
/// use keygate::jwt::{Algorithm, HmacSecret, VerifyingKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
/// let key = VerifyingKey::hmac(Algorithm::HS256, &secret)?.with_kid("2026-12");
/// assert_eq!(key.algorithm(), Algorithm::HS256);
/// assert_eq!(key.kid(), Some("2026-12"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl VerifyingKey {
    /// An HMAC key (HS256, HS384 or HS512).
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if `algorithm` is not an HMAC algorithm.
    pub fn hmac(algorithm: Algorithm, secret: &HmacSecret) -> Result<Self, JwtError> {
        if !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid(
                algorithm,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
            ));
        }
        Ok(Self::new(
            algorithm,
            DecodingKey::from_secret(secret.expose_secret()),
        ))
    }

    /// An RSA public key in PEM (RS256, RS384, RS512, PS256, PS384, PS512).
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an RSA public key, or `algorithm` is
    /// not an RSA algorithm.
    pub fn rsa_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, JwtError> {
        if !matches!(
            algorithm,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) {
            return Err(invalid(
                algorithm,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
            ));
        }
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| invalid(algorithm, e))?;
        Ok(Self::new(algorithm, key))
    }

    /// An ECDSA P-256 public key in PEM, for ES256.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an EC public key.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, JwtError> {
        let key = DecodingKey::from_ec_pem(pem).map_err(|e| invalid(Algorithm::ES256, e))?;
        Ok(Self::new(Algorithm::ES256, key))
    }

    /// An Ed25519 public key in PEM, for `EdDSA`.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an Ed25519 public key.
    pub fn ed25519_pem(pem: &[u8]) -> Result<Self, JwtError> {
        let key = DecodingKey::from_ed_pem(pem).map_err(|e| invalid(Algorithm::EdDSA, e))?;
        Ok(Self::new(Algorithm::EdDSA, key))
    }

    /// A key of a JWK set, with its `kid`. Its algorithm is the JWK's `alg`, or, when
    /// absent, told from its type: RSA → RS256, EC P-256 → ES256, OKP Ed25519 → `EdDSA`.
    ///
    /// # Errors
    ///
    /// [`JwtError::UnusableJwk`] if the algorithm cannot be told or is not a signature
    /// algorithm, [`JwtError::InvalidKey`] if the key does not parse.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, JwtError> {
        let kid = jwk.common.key_id.clone();
        let unusable = |problem: &str| JwtError::UnusableJwk {
            kid: kid.clone(),
            problem: problem.to_owned(),
        };
        let algorithm = match jwk.common.key_algorithm {
            Some(named) => signature_algorithm(named)
                .ok_or_else(|| unusable("its `alg` is not a signature algorithm"))?,
            None => match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                _ => return Err(unusable("it has no `alg` and its type names none")),
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(algorithm, e))?;
        let key = Self::new(algorithm, key);
        Ok(match kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        })
    }

    /// An HS256 key (always usable).
    pub(super) fn hs256(secret: &HmacSecret) -> Self {
        Self::new(
            Algorithm::HS256,
            DecodingKey::from_secret(secret.expose_secret()),
        )
    }

    fn new(algorithm: Algorithm, key: DecodingKey) -> Self {
        Self {
            kid: None,
            algorithm,
            key,
        }
    }

    /// Names the key: a token whose header has this `kid` is verified with it.
    #[must_use]
    pub fn with_kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The key's `kid`.
    #[must_use]
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The one algorithm the key is used with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub(super) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

fn invalid(algorithm: Algorithm, source: jsonwebtoken::errors::Error) -> JwtError {
    JwtError::InvalidKey { algorithm, source }
}

/// The signature algorithm a JWK's `alg` names, if it names one.
fn signature_algorithm(named: KeyAlgorithm) -> Option<Algorithm> {
    Some(match named {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The keys tokens may be signed with, shared by every clone and replaceable at run time.
///
/// A verifier reads the current set on every token, without a lock
/// ([`arc_swap::ArcSwap`]: a read is an atomic load, so a request never waits for a
/// rotation, and a rotation never waits for requests); [`replace`](Self::replace) and
/// [`replace_jwks`](Self::replace_jwks) swap in a whole new set at once, so a token is
/// always checked against one consistent set, the old or the new.
///
/// Fetching a JWKS document over HTTP is left to the application: fetch it with any client
/// (on a timer, or when a token names an unknown `kid`), parse it as a
/// [`JwkSet`](jsonwebtoken::jwk::JwkSet) and call [`replace_jwks`](Self::replace_jwks).
///
/// ```
/// use keygate::jwt::{Algorithm, HmacSecret, JwkSet, JwtKeySet, VerifyingKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let old = HmacSecret::new("the-old-secret-of-at-least-32-bytes!!")?;
/// let keys = JwtKeySet::new([VerifyingKey::hmac(Algorithm::HS256, &old)?.with_kid("old")]);
/// assert_eq!(keys.len(), 1);
///
/// // Rotation: the new set replaces the old one for every verifier sharing it.
/// let jwks: JwkSet = serde_json::from_str(r#"{"keys":[{
///     "kty":"OKP","crv":"Ed25519","kid":"2026-12","alg":"EdDSA",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#)?;
/// keys.replace_jwks(&jwks)?;
/// assert_eq!(keys.kids(), [Some("2026-12".to_owned())]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtKeySet {
    keys: Arc<ArcSwap<Vec<VerifyingKey>>>,
}

impl JwtKeySet {
    /// A set of `keys`.
    #[must_use]
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: Arc::new(ArcSwap::from_pointee(keys.into_iter().collect())),
        }
    }

    /// The keys of a JWK set document.
    ///
    /// # Errors
    ///
    /// The first key that cannot be used (see [`VerifyingKey::from_jwk`]).
    pub fn from_jwks(jwks: &JwkSet) -> Result<Self, JwtError> {
        Ok(Self::new(convert(jwks)?))
    }

    /// Replaces every key at once.
    pub fn replace(&self, keys: impl IntoIterator<Item = VerifyingKey>) {
        self.keys.store(Arc::new(keys.into_iter().collect()));
    }

    /// Replaces every key at once with those of a JWK set document. Nothing changes if
    /// one of them cannot be used.
    ///
    /// # Errors
    ///
    /// The first key that cannot be used (see [`VerifyingKey::from_jwk`]).
    pub fn replace_jwks(&self, jwks: &JwkSet) -> Result<(), JwtError> {
        let keys = convert(jwks)?;
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// How many keys the set holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// Whether the set holds no key (every token is refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    /// The `kid` of each key, in order.
    #[must_use]
    pub fn kids(&self) -> Vec<Option<String>> {
        self.keys.load().iter().map(|k| k.kid.clone()).collect()
    }

    /// The key for a token whose header names `kid` and `algorithm`: the key with that
    /// `kid` (which must be for that algorithm), or, for a token without a `kid`, the one
    /// key for that algorithm (`None` if there are several: the token must say which).
    /// Calls `verify` with it, without copying the key.
    pub(super) fn with_key<R>(
        &self,
        kid: Option<&str>,
        algorithm: Algorithm,
        verify: impl FnOnce(&VerifyingKey) -> R,
    ) -> Option<R> {
        let keys = self.keys.load();
        let found = if let Some(kid) = kid {
            keys.iter().find(|k| k.kid.as_deref() == Some(kid))?
        } else {
            let mut matching = keys.iter().filter(|k| k.algorithm == algorithm);
            let first = matching.next()?;
            if matching.next().is_some() {
                return None;
            }
            first
        };
        (found.algorithm == algorithm).then(|| verify(found))
    }
}

impl fmt::Debug for JwtKeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.load().iter()).finish()
    }
}

fn convert(jwks: &JwkSet) -> Result<Vec<VerifyingKey>, JwtError> {
    jwks.keys.iter().map(VerifyingKey::from_jwk).collect()
}
