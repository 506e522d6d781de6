//! [`JwtVerifier`]: checks an access token and makes its caller's
//! [`Principal`](crate::Principal).

use std::{fmt, sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{ClaimMapping, HmacSecret, JwtKeySet, TokenKind, VerifyingKey};
use crate::{Malformed, Principal, Rejection, TokenIdentity};

/// A check of verified tokens against a revocation list (see
/// [`JwtVerifierBuilder::revoked`]).
type RevokedFn = dyn Fn(&TokenIdentity) -> bool + Send + Sync;

/// The default clock-skew allowance on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// The default cap on a token's length, in bytes.
pub const DEFAULT_MAX_TOKEN_LEN: usize = 8 * 1024;

/// Every algorithm a key may be for.
const ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Whether `credential` has the shape of a JWT in compact form: three non-empty
/// base64url segments separated by dots. With both API keys and a verifier, the guard
/// sends credentials of this shape to the verifier and the rest to the key registry.
///
/// ```
/// use keygate::jwt::is_jwt_shaped;
///
/// assert!(is_jwt_shaped("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_"));
/// assert!(!is_jwt_shaped("kg_3hTqL0b9XwPz_q2V8cR1mZk4Yp7sN0aB5dF6gH3jK9lM2nQ4rS7tUvW0x1y2z"));
/// assert!(!is_jwt_shaped("a.b"));
/// assert!(!is_jwt_shaped("a..c"));
/// assert!(!is_jwt_shaped("a.b+/=.c"));
/// ```
#[must_use]
pub fn is_jwt_shaped(credential: &str) -> bool {
    let mut segments = 0;
    for segment in credential.split('.') {
        segments += 1;
        if segments > 3
            || segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

/// Verifies JWT access tokens for the guard
/// ([`ApiKeyGuardBuilder::jwt`](crate::ApiKeyGuardBuilder::jwt)), or on its own
/// ([`verify`](Self::verify)).
///
/// A token is admitted when, in this order:
///
/// 1. it is at most [`max_token_len`](JwtVerifierBuilder::max_token_len) bytes (else 401
///    `malformed_credentials`);
/// 2. its header decodes and names a signature algorithm (`alg: none` and unknown
///    algorithms are refused);
/// 3. the key set has a key for it: the key with its `kid`, or without a `kid` the one key
///    for its algorithm; the key must be for exactly the header's algorithm (no HS/RS
///    confusion);
/// 4. the signature verifies;
/// 5. `exp` is present and not past, `nbf` (if present) is not future, both with the
///    leeway (default 30 s); `iss` and `aud` match when configured;
/// 6. the type claim says `access` (a refresh token is refused), and `sub` is present
///    ([`ClaimMapping`]).
///
/// An expired token is 401 `expired_credentials`; every other failure is 401
/// `invalid_credentials` (an undecodable token included). The token's text is never
/// logged, stored or put in an error.
///
/// Cloning is cheap (one `Arc`); clones share the key set.
///
/// ```
/// use keygate::{CredentialKind, Rejection, jwt::{HmacSecret, JwtIssuer, JwtVerifier}};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
/// let issuer = JwtIssuer::hs256(&secret);
/// let verifier = JwtVerifier::hs256(&secret).build();
///
/// let access = issuer.access("user-42", Default::default())?;
/// let principal = verifier.verify(access.expose_secret())?;
/// assert_eq!(principal.id(), "user-42");
/// assert_eq!(principal.credential_kind(), CredentialKind::Jwt);
/// assert_eq!(principal.token_id(), Some(access.token_id.as_str()));
///
/// let refresh = issuer.refresh("user-42", Default::default())?;
/// assert_eq!(
///     verifier.verify(refresh.expose_secret()).unwrap_err(),
///     Rejection::InvalidCredentials
/// );
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the builder was told.
    settings: JwtVerifierBuilder,
    /// One validation per algorithm, made once.
    validations: Vec<(Algorithm, Validation)>,
}

impl JwtVerifier {
    /// Starts configuring a verifier of tokens signed with the keys of `keys`.
    pub fn builder(keys: JwtKeySet) -> JwtVerifierBuilder {
        JwtVerifierBuilder {
            keys,
            claims: ClaimMapping::default(),
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            leeway: DEFAULT_LEEWAY,
            issuers: Vec::new(),
            audiences: Vec::new(),
            revoked: None,
        }
    }

    /// Starts configuring a verifier of HS256 tokens signed with `secret`.
    pub fn hs256(secret: &HmacSecret) -> JwtVerifierBuilder {
        Self::builder(JwtKeySet::new([VerifyingKey::hs256(secret)]))
    }

    /// The cap on a token's length, in bytes.
    #[must_use]
    pub fn max_token_len(&self) -> usize {
        self.inner.settings.max_token_len
    }

    /// The key set (shared: replacing its keys changes what this verifier accepts).
    #[must_use]
    pub fn keys(&self) -> &JwtKeySet {
        &self.inner.settings.keys
    }

    /// Verifies access token `token` and returns its caller (what the guard does).
    ///
    /// # Errors
    ///
    /// 401 [`Rejection::ExpiredCredentials`] for an expired token,
    /// [`Rejection::MalformedCredentials`] for one over the length cap,
    /// [`Rejection::RevokedCredentials`] for one the revocation check refuses, and
    /// [`Rejection::InvalidCredentials`] for every other failure (a refresh token
    /// included).
    pub fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        self.verify_as(token, TokenKind::Access)
            .map(Principal::from_token)
    }

    /// Verifies `token` as a token of `kind` and returns what it says: for a refresh
    /// endpoint, `verify_as(token, TokenKind::Refresh)` (an access token is refused).
    ///
    /// # Errors
    ///
    /// As [`verify`](Self::verify).
    ///
    /// ```
    /// use keygate::{Rejection, jwt::{HmacSecret, JwtIssuer, JwtVerifier, TokenKind}};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
    /// let (issuer, verifier) = (JwtIssuer::hs256(&secret), JwtVerifier::hs256(&secret).build());
    /// let refresh = issuer.refresh("user-42", Default::default())?;
    /// let said = verifier.verify_as(refresh.expose_secret(), TokenKind::Refresh)?;
    /// assert_eq!(said.token_id.as_deref(), Some(refresh.token_id.as_str()));
    /// let access = issuer.access("user-42", Default::default())?;
    /// assert_eq!(
    ///     verifier.verify_as(access.expose_secret(), TokenKind::Refresh).unwrap_err(),
    ///     Rejection::InvalidCredentials
    /// );
    /// # Ok(()) }
    /// ```
    pub fn verify_as(&self, token: &str, kind: TokenKind) -> Result<TokenIdentity, Rejection> {
        let claims = self.claims(token)?;
        let identity = self.inner.settings.claims.identity(&claims, kind)?;
        if let Some(revoked) = &self.inner.settings.revoked
            && revoked(&identity)
        {
            return Err(Rejection::RevokedCredentials);
        }
        Ok(identity)
    }

    /// The claims of a token whose signature, lifetime, issuer and audience verify (its
    /// type and subject not yet checked).
    fn claims(&self, token: &str) -> Result<Map<String, Value>, Rejection> {
        let inner = &*self.inner;
        if token.len() > inner.settings.max_token_len {
            return Err(Rejection::MalformedCredentials(Malformed::TooLong));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Rejection::InvalidCredentials)?;
        let validation = inner
            .validations
            .iter()
            .find(|(algorithm, _)| *algorithm == header.alg)
            .map(|(_, validation)| validation)
            .ok_or(Rejection::InvalidCredentials)?;
        let decoded = inner
            .settings
            .keys
            .with_key(header.kid.as_deref(), header.alg, |key| {
                jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), validation)
            })
            .ok_or(Rejection::InvalidCredentials)?;
        match decoded {
            Ok(data) => Ok(data.claims),
            Err(error) if *error.kind() == ErrorKind::ExpiredSignature => {
                Err(Rejection::ExpiredCredentials)
            }
            Err(_) => Err(Rejection::InvalidCredentials),
        }
    }
}

impl fmt::Debug for JwtVerifier {
    /// The settings, as the builder's `Debug` shows them (no key material).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner
            .settings
            .debug_fields(f.debug_struct("JwtVerifier"))
    }
}

/// Configures a [`JwtVerifier`]; made by [`JwtVerifier::builder`] or
/// [`JwtVerifier::hs256`].
///
/// ```
/// use std::time::Duration;
///
/// use keygate::jwt::{ClaimMapping, JwtKeySet, JwtVerifier, VerifyingKey};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let pem = include_bytes!("testdata/ed25519.pub.pem");
/// let keys = JwtKeySet::new([VerifyingKey::ed25519_pem(pem)?.with_kid("2026-12")]);
/// let verifier = JwtVerifier::builder(keys)
///     .issuer("https://auth.example.com")
///     .audience("packs-api")
///     .leeway(Duration::from_secs(10))
///     .claims(ClaimMapping::default().scope_claim("scp"))
///     .build();
/// # let _ = verifier; Ok(()) }
/// ```
#[must_use]
pub struct JwtVerifierBuilder {
    keys: JwtKeySet,
    claims: ClaimMapping,
    max_token_len: usize,
    leeway: Duration,
    issuers: Vec<String>,
    audiences: Vec<String>,
    revoked: Option<Arc<RevokedFn>>,
}

impl fmt::Debug for JwtVerifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.debug_fields(f.debug_struct("JwtVerifierBuilder"))
    }
}

impl JwtVerifierBuilder {
    /// The settings, for the `Debug` of the builder and of the verifier it builds.
    fn debug_fields(&self, mut f: fmt::DebugStruct<'_, '_>) -> fmt::Result {
        f.field("keys", &self.keys)
            .field("claims", &self.claims)
            .field("max_token_len", &self.max_token_len)
            .field("leeway", &self.leeway)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("revocation_check", &self.revoked.is_some())
            .finish()
    }
}

impl JwtVerifierBuilder {
    /// The clock-skew allowance on `exp` and `nbf` (default 30 s), counted in whole
    /// seconds.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires `iss` to be `issuer` (calls add up: any of them).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Requires `aud` to name `audience` (calls add up: any of them).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Which claims make the principal and carry the token type (see [`ClaimMapping`]).
    pub fn claims(mut self, claims: ClaimMapping) -> Self {
        self.claims = claims;
        self
    }

    /// The cap on a token's length, in bytes (default 8 KiB). A guard with a verifier
    /// reads credentials up to this length; API keys stay capped by
    /// [`max_credential_len`](crate::ApiKeyGuardBuilder::max_credential_len).
    pub fn max_token_len(mut self, max: usize) -> Self {
        self.max_token_len = max;
        self
    }

    /// Refuses a verified token for which `revoked` answers `true` (401
    /// `revoked_credentials`), e.g. a token whose `jti` or refresh chain an application
    /// revoked before it expires. Called on every admitted token, inside the request path:
    /// keep it to an in-memory lookup (a set refreshed from a database, not a query).
    ///
    /// ```
    /// use std::{collections::HashSet, sync::{Arc, RwLock}};
    ///
    /// use keygate::{Rejection, jwt::{HmacSecret, JwtIssuer, JwtVerifier}};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let secret = HmacSecret::new("a-secret-of-at-least-32-bytes-for-hs256!")?;
    /// let revoked = Arc::new(RwLock::new(HashSet::<String>::new()));
    /// let list = Arc::clone(&revoked);
    /// let verifier = JwtVerifier::hs256(&secret)
    ///     .revoked(move |token| {
    ///         token.token_id.as_ref().is_some_and(|jti| list.read().unwrap().contains(jti))
    ///     })
    ///     .build();
    /// let access = JwtIssuer::hs256(&secret).access("user-42", Default::default())?;
    /// assert!(verifier.verify(access.expose_secret()).is_ok());
    /// revoked.write().unwrap().insert(access.token_id.clone());
    /// assert_eq!(
    ///     verifier.verify(access.expose_secret()).unwrap_err(),
    ///     Rejection::RevokedCredentials
    /// );
    /// # Ok(()) }
    /// ```
    pub fn revoked(
        mut self,
        revoked: impl Fn(&TokenIdentity) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.revoked = Some(Arc::new(revoked));
        self
    }

    /// The verifier.
    #[must_use]
    pub fn build(self) -> JwtVerifier {
        let validations = ALGORITHMS
            .iter()
            .map(|&algorithm| (algorithm, self.validation(algorithm)))
            .collect();
        JwtVerifier {
            inner: Arc::new(Inner {
                settings: self,
                validations,
            }),
        }
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if self.issuers.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&self.issuers);
            required.push("iss");
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation
    }
}
