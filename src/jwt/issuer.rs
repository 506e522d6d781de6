//! [`JwtIssuer`]: makes access and refresh tokens for the login side of an application.

use std::{fmt, time::Duration};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::{ACCESS_TYPE, DEFAULT_TYPE_CLAIM, HmacSecret, JwtError, REFRESH_TYPE};

/// The default lifetime of an access token: 15 minutes.
pub const DEFAULT_ACCESS_TTL: Duration = Duration::from_secs(15 * 60);
/// The default lifetime of a refresh token: 7 days.
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// An access token (what protected routes take) or a refresh token (what only a refresh
/// endpoint takes).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// Short-lived; admitted by the guard.
    Access,
    /// Long-lived; refused by the guard, exchanged for a new pair by the application.
    Refresh,
}

impl TokenKind {
    /// The value of the type claim: `access` or `refresh`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenKind::Access => ACCESS_TYPE,
            TokenKind::Refresh => REFRESH_TYPE,
        }
    }
}

/// A token just issued. `Debug` does not show the token.
#[non_exhaustive]
#[derive(Clone)]
pub struct IssuedToken {
    /// The token, to hand to its owner.
    pub token: SecretString,
    /// Its id (`jti`): 22 base64url characters from the OS CSPRNG. Keep it, not the
    /// token, to revoke or to detect reuse.
    pub token_id: String,
    /// Access or refresh.
    pub kind: TokenKind,
    /// `iat`.
    pub issued_at: OffsetDateTime,
    /// `exp`.
    pub expires_at: OffsetDateTime,
}

impl IssuedToken {
    /// The token's text, to hand to its owner.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        self.token.expose_secret()
    }

    /// Seconds from issue to expiry (`expires_in` of an OAuth token response).
    #[must_use]
    pub fn expires_in(&self) -> i64 {
        (self.expires_at - self.issued_at).whole_seconds()
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"[REDACTED]")
            .field("token_id", &self.token_id)
            .field("kind", &self.kind)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The private key (or shared secret) tokens are signed with.
#[derive(Clone)]
pub struct SigningKey {
    algorithm: Algorithm,
    key: EncodingKey,
}

impl SigningKey {
    /// An HMAC secret, for HS256, HS384 or HS512.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if `algorithm` is not an HMAC algorithm.
    pub fn hmac(algorithm: Algorithm, secret: &HmacSecret) -> Result<Self, JwtError> {
        if !matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(JwtError::InvalidKey {
                algorithm,
                source: jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
            });
        }
        Ok(Self {
            algorithm,
            key: EncodingKey::from_secret(secret.expose_secret()),
        })
    }

    /// An RSA private key in PEM, for RS256/384/512 or PS256/384/512.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an RSA private key.
    pub fn rsa_pem(algorithm: Algorithm, pem: &[u8]) -> Result<Self, JwtError> {
        let key = EncodingKey::from_rsa_pem(pem)
            .map_err(|source| JwtError::InvalidKey { algorithm, source })?;
        Ok(Self { algorithm, key })
    }

    /// An ECDSA P-256 private key in PEM (PKCS#8), for ES256.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an EC private key.
    pub fn es256_pem(pem: &[u8]) -> Result<Self, JwtError> {
        let algorithm = Algorithm::ES256;
        let key = EncodingKey::from_ec_pem(pem)
            .map_err(|source| JwtError::InvalidKey { algorithm, source })?;
        Ok(Self { algorithm, key })
    }

    /// An Ed25519 private key in PEM (PKCS#8), for `EdDSA`.
    ///
    /// # Errors
    ///
    /// [`JwtError::InvalidKey`] if the PEM is not an Ed25519 private key.
    pub fn ed25519_pem(pem: &[u8]) -> Result<Self, JwtError> {
        let algorithm = Algorithm::EdDSA;
        let key = EncodingKey::from_ed_pem(pem)
            .map_err(|source| JwtError::InvalidKey { algorithm, source })?;
        Ok(Self { algorithm, key })
    }

    /// The algorithm tokens are signed with.
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Makes access and refresh tokens: `sub`, `iat`, `exp`, `jti` (random), the type claim
/// (`token_type`: `access` or `refresh`), `iss` and `aud` when configured, and the
/// application's own claims (which cannot override those).
///
/// ```
/// use keygate::jwt::{HmacSecret, JwtIssuer, TokenKind};
/// use serde_json::json;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
/// let issuer = JwtIssuer::hs256(&secret).issuer("packs-api");
///
/// let mut claims = serde_json::Map::new();
/// claims.insert("scope".into(), json!("packs:read packs:write"));
/// let access = issuer.access("user-42", claims)?;
/// assert_eq!(access.kind, TokenKind::Access);
/// assert_eq!(access.expires_in(), 900);
/// assert_eq!(access.token_id.len(), 22);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct JwtIssuer {
    key: SigningKey,
    kid: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    type_claim: String,
}

impl JwtIssuer {
    /// An issuer signing with `key`.
    #[must_use]
    pub fn new(key: SigningKey) -> Self {
        Self {
            key,
            kid: None,
            issuer: None,
            audience: None,
            access_ttl: DEFAULT_ACCESS_TTL,
            refresh_ttl: DEFAULT_REFRESH_TTL,
            type_claim: DEFAULT_TYPE_CLAIM.to_owned(),
        }
    }

    /// An issuer of HS256 tokens signed with `secret`.
    #[must_use]
    pub fn hs256(secret: &HmacSecret) -> Self {
        Self::new(SigningKey {
            algorithm: Algorithm::HS256,
            key: EncodingKey::from_secret(secret.expose_secret()),
        })
    }

    /// Puts `kid` in every token's header.
    #[must_use]
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// Puts `iss` in every token.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Puts `aud` in every token.
    #[must_use]
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The lifetime of access tokens (default 15 minutes).
    #[must_use]
    pub fn access_ttl(mut self, ttl: Duration) -> Self {
        self.access_ttl = ttl;
        self
    }

    /// The lifetime of refresh tokens (default 7 days).
    #[must_use]
    pub fn refresh_ttl(mut self, ttl: Duration) -> Self {
        self.refresh_ttl = ttl;
        self
    }

    /// The claim carrying the token type (default `token_type`; must match the
    /// verifier's [`ClaimMapping::token_type_claim`](super::ClaimMapping::token_type_claim)).
    #[must_use]
    pub fn token_type_claim(mut self, name: impl Into<String>) -> Self {
        self.type_claim = name.into();
        self
    }

    /// The lifetime of access tokens.
    #[must_use]
    pub fn access_lifetime(&self) -> Duration {
        self.access_ttl
    }

    /// An access token for `subject` with the application's `claims`.
    ///
    /// # Errors
    ///
    /// [`JwtError::Signing`] if signing fails, [`JwtError::Rng`] if the OS CSPRNG does.
    pub fn access(
        &self,
        subject: &str,
        claims: Map<String, Value>,
    ) -> Result<IssuedToken, JwtError> {
        self.issue(TokenKind::Access, subject, claims)
    }

    /// A refresh token for `subject` with the application's `claims`.
    ///
    /// # Errors
    ///
    /// [`JwtError::Signing`] if signing fails, [`JwtError::Rng`] if the OS CSPRNG does.
    pub fn refresh(
        &self,
        subject: &str,
        claims: Map<String, Value>,
    ) -> Result<IssuedToken, JwtError> {
        self.issue(TokenKind::Refresh, subject, claims)
    }

    /// A token of `kind` for `subject` with the application's `claims`, issued now.
    ///
    /// # Errors
    ///
    /// [`JwtError::Signing`] if signing fails, [`JwtError::Rng`] if the OS CSPRNG does,
    /// [`JwtError::LifetimeOutOfRange`] for an absurd lifetime.
    pub fn issue(
        &self,
        kind: TokenKind,
        subject: &str,
        claims: Map<String, Value>,
    ) -> Result<IssuedToken, JwtError> {
        self.issue_at(kind, subject, claims, OffsetDateTime::now_utc())
    }

    /// [`issue`](Self::issue) as if it were `now` (to make expired or not-yet-valid tokens
    /// in tests).
    ///
    /// # Errors
    ///
    /// As [`issue`](Self::issue).
    pub fn issue_at(
        &self,
        kind: TokenKind,
        subject: &str,
        mut claims: Map<String, Value>,
        now: OffsetDateTime,
    ) -> Result<IssuedToken, JwtError> {
        let ttl = match kind {
            TokenKind::Access => self.access_ttl,
            TokenKind::Refresh => self.refresh_ttl,
        };
        let ttl = time::Duration::try_from(ttl).map_err(|_| JwtError::LifetimeOutOfRange)?;
        let issued_at = now.replace_nanosecond(0).unwrap_or(now);
        let expires_at = issued_at
            .checked_add(ttl)
            .ok_or(JwtError::LifetimeOutOfRange)?;
        let token_id = token_id()?;
        claims.insert("sub".into(), subject.into());
        claims.insert("iat".into(), issued_at.unix_timestamp().into());
        claims.insert("exp".into(), expires_at.unix_timestamp().into());
        claims.insert("jti".into(), token_id.clone().into());
        claims.insert(self.type_claim.clone(), kind.as_str().into());
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), issuer.clone().into());
        }
        if let Some(audience) = &self.audience {
            claims.insert("aud".into(), audience.clone().into());
        }
        let mut header = Header::new(self.key.algorithm);
        header.kid.clone_from(&self.kid);
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key.key).map_err(JwtError::Signing)?;
        Ok(IssuedToken {
            token: SecretString::from(token),
            token_id,
            kind,
            issued_at,
            expires_at,
        })
    }
}

/// 128 random bits, base64url without padding.
fn token_id() -> Result<String, JwtError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(JwtError::Rng)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
