//! The public-route allowlist: exact paths only, everything else denied by default.

use crate::{Fixture, get, unregistered_key};

#[tokio::test]
async fn public_allowlist_matches_exact_paths_only() {
    let f = Fixture::new(|b| b.public_path("/health"));
    assert_eq!(f.send(get("/health")).await.assert_ok(), "ok");
    assert_eq!(f.send(get("/health?verbose=1")).await.assert_ok(), "ok");
    for path in ["/health/", "/healthz", "/whoami", "/admin/secret"] {
        f.send(get(path))
            .await
            .assert_refusal(401, "missing_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn routes_without_configuration_are_denied_by_default() {
    // The guard's configuration names only `/health`; `/admin/secret` was added to the
    // inner service with no thought about authentication.
    let f = Fixture::new(|b| b.public_path("/health"));
    f.send(get("/admin/secret"))
        .await
        .assert_refusal(401, "missing_credentials");
    f.get_with_key("/admin/secret", &unregistered_key())
        .await
        .assert_refusal(401, "invalid_credentials");
    let (key, _) = f.key().await;
    assert_eq!(
        f.get_with_key("/admin/secret", &key).await.assert_ok(),
        "secret"
    );
    // A path no route serves is refused before the inner service says 404.
    f.send(get("/no/such/route"))
        .await
        .assert_refusal(401, "missing_credentials");
    f.get_with_key("/no/such/route", &key)
        .await
        .assert_status(404);
}

#[tokio::test]
async fn empty_allowlist_makes_nothing_public() {
    let f = Fixture::new(|b| b);
    for path in ["/health", "/health/", "/healthz", "/", "/whoami"] {
        f.send(get(path))
            .await
            .assert_refusal(401, "missing_credentials");
    }
    let (key, _) = f.key().await;
    assert_eq!(f.get_with_key("/health", &key).await.assert_ok(), "ok");
}
