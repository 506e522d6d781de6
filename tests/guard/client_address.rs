//! A failed-attempt limiter that cannot see clients says so: a server started without the
//! peer address (axum's `serve` without `into_make_service_with_connect_info`) gets one
//! warning in the log, not silence.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use keygate::{ApiKey, ApiKeyGuard, KeyGrant, limit::FailedAttemptLimiter};

use crate::{
    secrets::captured_logs,
    support::{client, jobs_app, loopback, random_key, send},
};

const WARNING: &str = "a request had no client address";

#[tokio::test]
async fn requests_without_a_client_address_are_warned_about_once() {
    let logs = captured_logs();
    let guard = ApiKeyGuard::builder()
        .key(
            ApiKey::new(random_key()).unwrap(),
            KeyGrant::new("coordinator"),
        )
        .failed_attempts(FailedAttemptLimiter::default())
        .client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .build()
        .unwrap();
    // Served as axum's quick start does: no `ConnectInfo`.
    let (listener, addr) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, jobs_app(guard)).await.unwrap() });
    let client = client();
    let mark = logs.mark();

    // More bad keys than the limiter allows: none can be counted, so none is 429.
    for _ in 0..25 {
        let request = client
            .get(format!("http://{addr}/jobs"))
            .header("x-api-key", random_key());
        send(request)
            .await
            .assert_refusal(401, "invalid_credentials");
    }

    let logged = logs.since(mark);
    assert_eq!(logged.matches(WARNING).count(), 1, "{logged}");
    assert!(logged.contains("WARN"), "{logged}");
}
