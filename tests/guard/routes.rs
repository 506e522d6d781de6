//! Route rules, against a real axum router over a raw TCP connection (so that paths reach
//! the server exactly as written: an HTTP client would normalize `/./` and `..`).

use std::{net::SocketAddr, num::NonZeroU32};

use axum::{Extension, Router, routing::get};
use http::Method;
use keygate::{
    ApiKey, ApiKeyGuard, ApiKeyGuardBuilder, BuildError, KeyGrant, Principal, RateLimit,
    guard::Route,
    limit::{Clock, InMemoryRateLimit, Quota, Tiers},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, random_key};

/// A response read off the wire: its status and body.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: String,
}

/// Sends `method path` as written, with `headers`, on a fresh connection.
async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Raw { status, body }
}

/// Answers who called (or `anonymous`) and which handler ran.
async fn who(principal: Option<Extension<Principal>>) -> String {
    principal.map_or_else(|| "anonymous".to_owned(), |p| p.id().to_owned())
}

fn router() -> Router {
    Router::new()
        .route("/health", get(|| async { "health" }))
        .route("/docs", get(|| async { "docs-index" }))
        .route("/docs/{*rest}", get(|| async { "docs" }))
        .route("/admin", get(|| async { "admin-index" }))
        .route("/admin/{*rest}", get(|| async { "secret" }))
        .route(
            "/feed",
            get(|caller: Option<Extension<Principal>>| async move {
                format!("feed for {}", who(caller).await)
            }),
        )
        .route("/files/{name}", get(|| async { "file" }))
}

/// The guard under test: an admin key and a plain one.
struct Keys {
    admin: String,
    plain: String,
}

fn builder(keys: &Keys) -> ApiKeyGuardBuilder {
    ApiKeyGuard::builder()
        .key(
            ApiKey::new(&keys.admin).unwrap(),
            KeyGrant::new("root").scopes(["admin"]),
        )
        .key(ApiKey::new(&keys.plain).unwrap(), KeyGrant::new("user"))
}

async fn serve(build: impl FnOnce(ApiKeyGuardBuilder) -> ApiKeyGuardBuilder) -> (SocketAddr, Keys) {
    let keys = Keys {
        admin: random_key(),
        plain: random_key(),
    };
    let guard = build(builder(&keys)).build().unwrap();
    let server = TestServer::start(router().layer(guard)).await;
    (server.addr, keys)
}

#[tokio::test]
async fn no_spelling_of_a_path_reaches_a_protected_handler_through_a_public_rule() {
    let (addr, keys) = serve(|b| {
        b.public_path("/health")
            .public_prefix("/docs")
            .route(Route::prefix("/admin").scope("admin"))
    })
    .await;

    // Public, without a key: the path and everything under it.
    for (path, body) in [
        ("/health", "health"),
        ("/docs", "docs-index"),
        ("/docs/openapi.json", "docs"),
        ("/docs/ui/app.js", "docs"),
    ] {
        let reply = raw(addr, "GET", path, &[]).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, body), "{path}");
    }
    // Spellings that are not the public path to the router are not public to the guard:
    // refused without a key, whatever the router would have done.
    for path in [
        "/health/",
        "/healthz",
        "/docsx",
        "/Docs/x",
        "//docs/x",
        "/d%6Fcs/x",
        "/docs%2Fx",
        "/%2Fdocs/x",
    ] {
        let reply = raw(addr, "GET", path, &[]).await;
        assert_eq!(reply.status, 401, "{path}: {reply:?}");
    }
    // Whatever the spelling, the protected handler never answers without the scope.
    let plain = [("x-api-key", keys.plain.as_str())];
    for path in [
        "/admin/secret",
        "//admin/secret",
        "/./admin/secret",
        "/docs/../admin/secret",
        "/docs/..%2Fadmin/secret",
        "/docs%2F..%2Fadmin%2Fsecret",
        "/ADMIN/secret",
        "/admin/secret/",
        "/%61dmin/secret",
        "/admin%2Fsecret",
        "/admin",
    ] {
        for headers in [&[][..], &plain[..]] {
            let reply = raw(addr, "GET", path, headers).await;
            assert!(
                reply.body != "secret" && reply.body != "admin-index",
                "{path} reached the admin handler: {reply:?}"
            );
        }
        let reply = raw(addr, "GET", path, &plain).await;
        assert!(
            matches!(reply.status, 403 | 404 | 200),
            "{path} with a plain key: {reply:?}"
        );
    }
    let reply = raw(addr, "GET", "/admin/secret", &plain).await;
    assert_eq!(reply.status, 403);
    assert!(reply.body.contains("insufficient_scope"), "{reply:?}");
    let admin = [("x-api-key", keys.admin.as_str())];
    let reply = raw(addr, "GET", "/admin/secret", &admin).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "secret"));
}

#[tokio::test]
async fn preflights_pass_only_when_allowed_and_only_as_preflights() {
    let cors = tower_http::cors::CorsLayer::permissive();
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "GET"),
    ];
    for allowed in [false, true] {
        let keys = Keys {
            admin: random_key(),
            plain: random_key(),
        };
        let mut guard = builder(&keys);
        if allowed {
            guard = guard.allow_preflight();
        }
        // The CORS layer inside the guard answers the preflights the guard lets through.
        let app = router().layer(cors.clone()).layer(guard.build().unwrap());
        let addr = TestServer::start(app).await.addr;

        let reply = raw(addr, "OPTIONS", "/files/a", &preflight).await;
        assert_eq!(reply.status, if allowed { 200 } else { 401 }, "{reply:?}");
        // Not a preflight: an OPTIONS without the CORS headers, a GET with them.
        let reply = raw(addr, "OPTIONS", "/files/a", &preflight[..1]).await;
        assert_eq!(reply.status, 401, "{reply:?}");
        let reply = raw(addr, "GET", "/files/a", &preflight).await;
        assert_eq!(reply.status, 401, "{reply:?}");
    }
}

#[tokio::test]
async fn optional_authentication_sees_a_principal_when_there_is_one() {
    let (addr, keys) = serve(|b| b.route(Route::exact("/feed").optional())).await;
    let reply = raw(addr, "GET", "/feed", &[]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "feed for anonymous")
    );
    let reply = raw(addr, "GET", "/feed", &[("x-api-key", &keys.plain)]).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "feed for user"));
    // A bad credential is still refused, and so is a malformed one.
    let reply = raw(addr, "GET", "/feed", &[("x-api-key", &random_key())]).await;
    assert_eq!(reply.status, 401);
    let reply = raw(addr, "GET", "/feed", &[("x-api-key", "")]).await;
    assert_eq!(reply.status, 401);
    // Optional covers that route only.
    assert_eq!(raw(addr, "GET", "/files/a", &[]).await.status, 401);
}

#[tokio::test]
async fn the_most_specific_rule_wins_and_costs_count() {
    let limit = RateLimit::new(
        InMemoryRateLimit::new(Tiers::new(Quota::per_minute(NonZeroU32::new(20).unwrap())))
            .with_clock(Clock::manual()),
    );
    let (addr, keys) = serve(|b| {
        b.rate_limit(limit)
            .route(Route::prefix("/files").scope("admin"))
            .route(Route::exact("/files/readme").public())
            .route(
                Route::exact("/files/big")
                    .method(Method::GET)
                    .cost(NonZeroU32::new(10).unwrap()),
            )
    })
    .await;
    let plain = [("x-api-key", keys.plain.as_str())];
    let admin = [("x-api-key", keys.admin.as_str())];
    // The exact public rule beats the prefix's scope.
    assert_eq!(raw(addr, "GET", "/files/readme", &[]).await.status, 200);
    // The prefix's scope: refused before the limit counts anything.
    for _ in 0..30 {
        assert_eq!(raw(addr, "GET", "/files/a", &plain).await.status, 403);
    }
    assert_eq!(raw(addr, "GET", "/files/a", &admin).await.status, 200);
    // The exact GET rule for `/files/big` (no scope) costs 10: 19 left, so one fits.
    assert_eq!(raw(addr, "GET", "/files/big", &plain).await.status, 200);
    assert_eq!(raw(addr, "GET", "/files/big", &plain).await.status, 200);
    assert_eq!(raw(addr, "GET", "/files/big", &plain).await.status, 429);
}

#[test]
fn malformed_and_conflicting_rules_fail_to_build() {
    let keys = Keys {
        admin: random_key(),
        plain: random_key(),
    };
    let cases: [(Route, Route, &str); 3] = [
        (
            Route::prefix("/docs").public(),
            Route::prefix("/docs").scope("admin"),
            "two prefix rules",
        ),
        (
            Route::exact("/jobs").method(Method::GET).public(),
            Route::exact("/jobs")
                .method(Method::GET)
                .method(Method::POST)
                .optional(),
            "two exact rules",
        ),
        (
            Route::prefix("/docs/").public(),
            Route::exact("/health").public(),
            "must not end with `/`",
        ),
    ];
    for (first, second, message) in cases {
        let error = builder(&keys)
            .route(first)
            .route(second)
            .build()
            .unwrap_err();
        assert!(matches!(error, BuildError::InvalidRoute(_)), "{error:?}");
        assert!(error.to_string().contains(message), "{error}");
    }
    for path in ["docs", "/docs//x", "/docs/../x", "/./x"] {
        let error = builder(&keys)
            .route(Route::prefix(path))
            .build()
            .unwrap_err();
        assert!(
            matches!(error, BuildError::InvalidRoute(_)),
            "{path}: {error:?}"
        );
    }
    // One rule per method is fine; the same rule twice too.
    builder(&keys)
        .route(Route::exact("/jobs").method(Method::GET).public())
        .route(Route::exact("/jobs").method(Method::POST).scope("admin"))
        .public_path("/health")
        .public_path("/health")
        .build()
        .unwrap();
}
