//! JWT access tokens next to API keys (feature `jwt`, on the `jsonwebtoken` crate with its
//! pure-Rust crypto backend).
//!
//! * [`JwtVerifier`] checks a token (signature, `exp`/`nbf` with a leeway, optional `iss`
//!   and `aud`, the token type) and makes its caller's [`Principal`](crate::Principal);
//!   the guard uses it as a credential scheme ([`ApiKeyGuardBuilder::jwt`]), so scopes,
//!   workspaces, the rate limit (per principal) and the audit trail work the same for
//!   token callers as for API keys.
//! * [`JwtKeySet`] holds the [`VerifyingKey`]s (HS256/384/512 from an [`HmacSecret`], RS*,
//!   PS*, ES256 and `EdDSA` from PEM, or a JWKS document), selected by `kid`, and is
//!   replaced at run time for rotation.
//! * [`ClaimMapping`] says which claims hold the scopes, workspaces, tier and token type.
//! * [`JwtIssuer`] makes access and refresh tokens for the login side of an application.
//!
//! # Refusals
//!
//! | token | refusal |
//! |---|---|
//! | none | 401 `missing_credentials` |
//! | longer than [`max_token_len`](JwtVerifierBuilder::max_token_len) (default 8 KiB) | 401 `malformed_credentials` |
//! | `exp` past (beyond the leeway) | 401 `expired_credentials` |
//! | undecodable, `alg: none` or unknown, unknown `kid`, a key of another algorithm, bad signature, `nbf` in the future, `iss` or `aud` wrong, `exp`/`sub`/type claim missing, a refresh token | 401 `invalid_credentials` |
//!
//! Every refusal but the length cap counts as a failed attempt for the client, like a bad
//! API key. With [`TokenMessageRejection`](crate::TokenMessageRejection) the three 401s
//! read `Missing authentication token`, `Invalid authentication token` and
//! `Authentication token expired`.
//!
//! # With API keys
//!
//! One guard may take API keys, tokens, or either: a credential shaped like a JWT
//! ([`is_jwt_shaped`]) goes to the verifier, anything else to the key registry. An API
//! key must therefore never look like a JWT (keygate's generated keys and `openssl rand
//! -base64 32` keys never do).
//!
//! ```
//! use axum::{Extension, Router, routing::get};
//! use keygate::{
//!     ApiKey, ApiKeyGuard, KeyGrant, Principal, TokenMessageRejection,
//!     jwt::{HmacSecret, JwtVerifier},
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let from_env = |var: &str| HmacSecret::from_var(var, Some("a-secret-of-at-least-32-bytes-for-hs256!".into()));
//! # let _ = HmacSecret::from_env;
//! // `HmacSecret::from_env("JWT_SECRET")` in a real server.
//! let secret = from_env("JWT_SECRET")?;
//! let guard = ApiKeyGuard::builder()
//!     .key(ApiKey::new("a-key-from-openssl-rand-base64-32-xxxxx")?, KeyGrant::new("ci"))
//!     .jwt(JwtVerifier::hs256(&secret).build())
//!     .public_path("/health")
//!     .render_with(TokenMessageRejection)
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/packs", get(|Extension(p): Extension<Principal>| async move { p.id().to_owned() }))
//!     .layer(guard);
//! # let _ = app; Ok(()) }
//! ```
//!
//! [`ApiKeyGuardBuilder::jwt`]: crate::ApiKeyGuardBuilder::jwt

mod claims;
mod error;
mod issuer;
mod keys;
mod verifier;

#[cfg(test)]
mod tests;

pub use jsonwebtoken::{Algorithm, jwk::JwkSet};

pub use self::{
    claims::{ACCESS_TYPE, ClaimMapping, DEFAULT_TYPE_CLAIM, REFRESH_TYPE},
    error::JwtError,
    issuer::{
        DEFAULT_ACCESS_TTL, DEFAULT_REFRESH_TTL, IssuedToken, JwtIssuer, SigningKey, TokenKind,
    },
    keys::{HmacSecret, JwtKeySet, MIN_HMAC_SECRET_LEN, VerifyingKey},
    verifier::{
        DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_LEN, JwtVerifier, JwtVerifierBuilder, is_jwt_shaped,
    },
};
