//! [`JwtError`]: why a JWT key, key set or token could not be made. What a token is
//! refused for is a [`Rejection`](crate::Rejection), not this.

use std::fmt;

/// Why a secret, key, key set or token could not be made. No variant carries secret
/// material (secrets, keys, tokens).
///
/// `Debug` shows the same message as `Display`, so that a `main` returning
/// `Result<(), Box<dyn Error>>` prints what to fix.
#[non_exhaustive]
#[derive(thiserror::Error)]
pub enum JwtError {
    /// An HMAC secret is shorter than [`MIN_HMAC_SECRET_LEN`](super::MIN_HMAC_SECRET_LEN).
    #[error("the HMAC secret is {len} bytes long; at least {min} are required")]
    SecretTooShort {
        /// The length found.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// The environment variable holding a secret is not set.
    #[error(
        "environment variable {var} is not set; generate a secret with `openssl rand -base64 \
         64` and set {var} to it"
    )]
    MissingEnv {
        /// The variable's name.
        var: String,
    },
    /// The environment variable holding a secret is set but unusable.
    #[error(
        "environment variable {var} does not hold a usable secret: {source}; generate one with \
         `openssl rand -base64 64`"
    )]
    InvalidEnv {
        /// The variable's name.
        var: String,
        /// What is wrong with its value (never the value itself).
        #[source]
        source: Box<JwtError>,
    },
    /// The environment variable holding a secret is not valid Unicode.
    #[error("the value is not valid Unicode")]
    NotUnicode,
    /// A key is not usable for its algorithm (a PEM that does not parse, a key of another
    /// family).
    #[error("the key is not usable for {algorithm:?}: {source}")]
    InvalidKey {
        /// The algorithm the key was meant for.
        algorithm: jsonwebtoken::Algorithm,
        /// What the JWT library said (never the key).
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    /// A key of a JWK set cannot be used: its algorithm is not given and cannot be told
    /// from its type, or it is not a signature key.
    #[error("the JWK {} cannot be used: {problem}", kid.as_deref().unwrap_or("without a kid"))]
    UnusableJwk {
        /// The key's `kid`.
        kid: Option<String>,
        /// What is wrong.
        problem: String,
    },
    /// A token could not be signed.
    #[error("the token could not be signed: {0}")]
    Signing(#[source] jsonwebtoken::errors::Error),
    /// A token's lifetime does not fit in a timestamp.
    #[error("the token's lifetime is out of range")]
    LifetimeOutOfRange,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Rng(getrandom::Error),
}

impl fmt::Debug for JwtError {
    /// The message of [`Display`](fmt::Display).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
