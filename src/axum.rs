//! Glue for [axum](https://docs.rs/axum) (feature `axum`): the connecting peer's address
//! for [`client_ip`](crate::ApiKeyGuardBuilder::client_ip), and [`Rejection`] as a
//! response, so that a handler can `?` one.
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use axum::{Extension, Router, routing::get};
//! use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Principal, Rejection, limit::FailedAttemptLimiter};
//!
//! async fn jobs(Extension(principal): Extension<Principal>) -> Result<&'static str, Rejection> {
//!     principal.require_workspace("ws-1")?; // 403 `workspace_forbidden`, rendered as JSON
//!     Ok("jobs")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let guard = ApiKeyGuard::builder()
//!     .key(
//!         ApiKey::new("a-coordinator-key-of-at-least-32-chars")?,
//!         KeyGrant::new("coordinator").workspaces(["ws-1"]),
//!     )
//!     .failed_attempts(FailedAttemptLimiter::default())
//!     .client_ip(keygate::axum::connect_info)
//!     .build()?;
//! let app = Router::new().route("/jobs", get(jobs)).layer(guard);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>());
//! # drop(server); Ok(()) }
//! ```

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Body,
    extract::ConnectInfo,
    response::{IntoResponse, Response},
};
use http::HeaderValue;

use crate::{JsonRejection, Rejection};

/// The connecting peer's address, from the `ConnectInfo<SocketAddr>` extension that axum
/// inserts when the server is started with
/// `into_make_service_with_connect_info::<SocketAddr>()`: a reader for
/// [`ApiKeyGuardBuilder::client_ip`](crate::ApiKeyGuardBuilder::client_ip).
///
/// ```
/// use std::net::SocketAddr;
///
/// use axum::extract::ConnectInfo;
///
/// let mut extensions = http::Extensions::new();
/// assert_eq!(keygate::axum::connect_info(&extensions), None);
/// extensions.insert(ConnectInfo(SocketAddr::from(([203, 0, 113, 9], 41_000))));
/// assert_eq!(keygate::axum::connect_info(&extensions), Some([203, 0, 113, 9].into()));
/// ```
#[must_use]
pub fn connect_info(extensions: &http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The refusal as the guard renders it by default ([`JsonRejection`]), with the contract's
/// headers; a 401 about credentials carries `WWW-Authenticate: ApiKey realm="api"` (the
/// guard's default challenge).
///
/// ```
/// use axum::response::IntoResponse;
/// use keygate::Rejection;
///
/// let response = Rejection::InvalidCredentials.into_response();
/// assert_eq!(response.status(), 401);
/// assert_eq!(response.headers()["www-authenticate"], r#"ApiKey realm="api""#);
/// ```
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let challenge = HeaderValue::from_static(r#"ApiKey realm="api""#);
        self.to_response::<Body, _>(&JsonRejection, Some(&challenge))
    }
}
