//! The `api` example (feature `jwt`), driven as a client would over real HTTP: its router
//! served in process on a loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../examples/api/app.rs"]
mod app;
#[path = "../examples/common/mod.rs"]
mod common;
mod examples_common;
mod support;

use keygate::{
    jwt::{HmacSecret, JwtIssuer, TokenKind},
    limit::Clock,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use examples_common::{Env, Reply, TestServer, temp_audit_log};

const MISSING: &str = r#"{"error":{"code":401,"message":"Missing authentication token"}}"#;
const INVALID: &str = r#"{"error":{"code":401,"message":"Invalid authentication token"}}"#;
const EXPIRED: &str = r#"{"error":{"code":401,"message":"Authentication token expired"}}"#;

/// A secret of 88 characters, like `openssl rand -base64 64` makes.
fn jwt_secret() -> String {
    let mut secret = support::random_key();
    secret.push_str(&support::random_key()[..24]);
    secret
}

struct Api {
    server: TestServer,
    secret: String,
    admin: String,
}

fn env(secret: &str, admin: &str) -> Env {
    Env::default()
        .set("JWT_SECRET", secret)
        .set("ADMIN_API_KEY", admin)
        .set("AUDIT_LOG", temp_audit_log("api").display().to_string())
        .set("FAILED_ATTEMPTS_PER_MINUTE", "1000")
}

impl Api {
    async fn start() -> Self {
        let (secret, admin) = (jwt_secret(), support::random_key());
        let mut config = app::Config::from_lookup(env(&secret, &admin).lookup()).unwrap();
        config.server.clock = Clock::manual();
        let audit_log = config.server.audit_log.clone();
        let router = app::router(config).await.unwrap();
        Self {
            server: TestServer::start(router, audit_log).await,
            secret,
            admin,
        }
    }

    /// An issuer with the server's secret (to make tokens the server did not hand out).
    fn issuer(&self) -> JwtIssuer {
        JwtIssuer::hs256(&HmacSecret::new(&self.secret).unwrap())
    }

    async fn register(&self, username: &str, password: &str) -> Reply {
        self.server
            .post("/auth/register")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
    }

    async fn login(&self, username: &str, password: &str) -> Reply {
        self.server
            .post("/auth/login")
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await
    }

    /// Registers `username` and logs in: the access and refresh tokens.
    async fn user(&self, username: &str) -> (String, String) {
        self.register(username, "correct horse battery")
            .await
            .assert_status(201);
        let reply = self.login(username, "correct horse battery").await;
        reply.assert_status(200);
        tokens(&reply)
    }

    async fn refresh(&self, refresh_token: &str) -> Reply {
        self.server
            .post("/auth/refresh")
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
    }

    async fn packs(&self, token: &str) -> Reply {
        self.server
            .get("/api/v1/packs")
            .header("authorization", &format!("Bearer {token}"))
            .send()
            .await
    }
}

fn tokens(reply: &Reply) -> (String, String) {
    let data = &reply.body["data"];
    (
        data["access_token"].as_str().unwrap().to_owned(),
        data["refresh_token"].as_str().unwrap().to_owned(),
    )
}

#[track_caller]
fn assert_body(reply: &Reply, status: u16, body: &str) {
    assert_eq!((reply.status, reply.text.as_str()), (status, body));
}

/// Every protected route, with a body that would be valid.
fn protected_routes() -> Vec<(reqwest::Method, &'static str, Option<Value>)> {
    use reqwest::Method;
    vec![
        (Method::GET, "/api/v1/packs", None),
        (Method::POST, "/api/v1/packs", Some(json!({ "name": "p" }))),
        (Method::GET, "/api/v1/packs/pack-1", None),
        (Method::DELETE, "/api/v1/packs/pack-1", None),
        (
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(json!({ "name": "ci" })),
        ),
        (Method::GET, "/api/v1/unknown", None),
        (Method::GET, "/docsx", None),
    ]
}

#[tokio::test]
async fn every_protected_route_refuses_missing_invalid_and_expired_tokens_exactly() {
    let api = Api::start().await;
    let expired = api
        .issuer()
        .issue_at(
            TokenKind::Access,
            "user-x",
            Map::new(),
            OffsetDateTime::now_utc() - time::Duration::hours(1),
        )
        .unwrap();
    let (_, refresh) = api.user("alice").await;
    let forged = JwtIssuer::hs256(&HmacSecret::new(jwt_secret()).unwrap())
        .access("user-x", Map::new())
        .unwrap();
    for (method, path, body) in protected_routes() {
        let call = |auth: Option<String>| {
            let mut call = api.server.call(method.clone(), path);
            if let Some(auth) = auth {
                call = call.header("authorization", &auth);
            }
            if let Some(body) = &body {
                call = call.json(body);
            }
            call.send()
        };
        assert_body(&call(None).await, 401, MISSING);
        for invalid in [
            "Bearer not-a-token",
            "Bearer a.b.c",
            &format!("Bearer {}", forged.expose_secret()),
            &format!("Bearer {refresh}"),
            "Basic YWxpY2U6cGFzcw==",
        ] {
            let reply = call(Some(invalid.to_owned())).await;
            assert_body(&reply, 401, INVALID);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("Bearer realm=\"api\"")
            );
        }
        let reply = call(Some(format!("Bearer {}", expired.expose_secret()))).await;
        assert_body(&reply, 401, EXPIRED);
    }
    api.server.finish().await;
}

#[tokio::test]
async fn public_routes_stay_public_and_only_they() {
    let api = Api::start().await;
    let get = |path: &'static str| api.server.get(path).send();
    assert_eq!(get("/api/v1/health").await.body, json!({ "status": "ok" }));
    get("/docs").await.assert_status(200);
    get("/docs/").await.assert_status(200);
    let spec = get("/docs/openapi.json").await;
    spec.assert_status(200);
    assert_eq!(spec.body["openapi"], "3.1.0");
    // Under /docs, an unknown page is a public 404, not a 401.
    get("/docs/guides/nothing-here")
        .await
        .assert_error(404, "not_found");
    // Look-alikes are protected.
    for path in [
        "/api/v1/health/",
        "/api/v1/healthz",
        "/doc",
        "/auth/login/x",
    ] {
        assert_body(&get(path).await, 401, MISSING);
    }
    // The auth routes answer without a token (with their own errors).
    api.login("nobody", "whatever-password")
        .await
        .assert_error(401, "invalid_login");
    api.refresh("a.b.c").await.assert_status(401);
    api.register("", "x")
        .await
        .assert_error(422, "invalid_body");
    api.server.finish().await;
}

#[tokio::test]
async fn login_answers_tokens_and_the_user_and_bad_passwords_are_refused() {
    let api = Api::start().await;
    let registered = api.register("bob", "correct horse battery").await;
    registered.assert_status(201);
    let id = registered.body["data"]["user"]["id"].as_str().unwrap();
    assert!(!registered.text.contains("correct horse"));
    api.register("bob", "another password")
        .await
        .assert_error(409, "conflict");
    api.register("carol", "short")
        .await
        .assert_error(422, "invalid_body");

    let reply = api.login("bob", "correct horse battery").await;
    reply.assert_status(200);
    let data = &reply.body["data"];
    assert_eq!(data["expires_in"], 900);
    assert_eq!(data["user"], json!({ "id": id, "username": "bob" }));
    let (access, _) = tokens(&reply);
    api.packs(&access).await.assert_status(200);

    api.login("bob", "wrong password!!")
        .await
        .assert_error(401, "invalid_login");
    api.login("nobody", "correct horse battery")
        .await
        .assert_error(401, "invalid_login");
    api.server.finish().await;
}

#[tokio::test]
async fn refresh_tokens_are_single_use_and_reuse_revokes_the_chain() {
    let api = Api::start().await;
    let (access_1, refresh_1) = api.user("dave").await;

    // An access token is not a refresh token.
    assert_body(&api.refresh(&access_1).await, 401, INVALID);

    let second = api.refresh(&refresh_1).await;
    second.assert_status(200);
    let (access_2, refresh_2) = tokens(&second);
    assert_ne!(refresh_1, refresh_2);
    api.packs(&access_2).await.assert_status(200);

    // Reuse of the first refresh token: refused, and the whole chain is revoked.
    assert_body(&api.refresh(&refresh_1).await, 401, INVALID);
    assert_body(&api.refresh(&refresh_2).await, 401, INVALID);
    assert_body(&api.packs(&access_1).await, 401, INVALID);
    assert_body(&api.packs(&access_2).await, 401, INVALID);

    // Another login starts a new chain.
    let (access_3, refresh_3) = tokens(&api.login("dave", "correct horse battery").await);
    api.packs(&access_3).await.assert_status(200);
    api.refresh(&refresh_3).await.assert_status(200);
    let events = api.server.finish().await;
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "auth.refresh" && e["reason"] == "refresh_token_reused"),
        "reuse is audited"
    );
}

#[tokio::test]
async fn packs_work_with_a_jwt_or_an_api_key_and_both_are_audited() {
    let api = Api::start().await;
    let (access, _) = api.user("erin").await;
    let created = api
        .server
        .post("/api/v1/packs")
        .header("authorization", &format!("Bearer {access}"))
        .json(&json!({ "name": "starter", "description": "first" }))
        .send()
        .await;
    created.assert_status(201);
    let pack = created.body["data"]["id"].as_str().unwrap().to_owned();

    // Only the admin issues API keys.
    api.server
        .post("/api/v1/admin/api-keys")
        .header("authorization", &format!("Bearer {access}"))
        .json(&json!({ "name": "ci" }))
        .send()
        .await
        .assert_status(403);
    let issued = api
        .server
        .post("/api/v1/admin/api-keys")
        .key(&api.admin)
        .json(&json!({ "name": "ci", "scopes": ["packs:read"] }))
        .send()
        .await;
    issued.assert_status(201);
    let key = issued.body["data"]["key"].as_str().unwrap().to_owned();
    let key_id = issued.body["data"]["key_id"].as_str().unwrap().to_owned();

    let listed = api.server.get("/api/v1/packs").key(&key).send().await;
    listed.assert_status(200);
    assert_eq!(listed.body["data"][0]["id"], pack.as_str());
    api.server
        .get(&format!("/api/v1/packs/{pack}"))
        .key(&key)
        .send()
        .await
        .assert_status(200);
    // The key may read, not write.
    api.server
        .delete(&format!("/api/v1/packs/{pack}"))
        .key(&key)
        .send()
        .await
        .assert_error(403, "insufficient_scope");
    api.server
        .delete(&format!("/api/v1/packs/{pack}"))
        .header("authorization", &format!("Bearer {access}"))
        .send()
        .await
        .assert_status(204);
    // A bad API key gets the token API's body too.
    let bad = api
        .server
        .get("/api/v1/packs")
        .key(&support::random_key())
        .send()
        .await;
    assert_body(&bad, 401, INVALID);

    let events = api.server.finish().await;
    let admitted = |credential: &str| {
        events
            .iter()
            .filter(|e| e["outcome"] == "admitted" && e["credential"] == credential)
            .collect::<Vec<_>>()
    };
    let by_token = admitted("jwt");
    assert!(!by_token.is_empty());
    assert!(by_token.iter().all(|e| e["token_id"].is_string()
        && e["key_id"].is_null()
        && e["principal_id"].as_str().unwrap().starts_with("user-")));
    let by_key = admitted("api_key");
    assert!(
        by_key
            .iter()
            .any(|e| e["key_id"] == key_id.as_str() && e["principal_id"] == "ci")
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(&access) && !text.contains(&key));
}

#[test]
fn jwt_secret_is_required_and_at_least_64_characters() {
    let admin = support::random_key();
    let error = app::Config::from_lookup(Env::default().set("ADMIN_API_KEY", &admin).lookup())
        .unwrap_err()
        .to_string();
    assert!(error.contains("JWT_SECRET is not set"), "{error}");
    assert!(error.contains("openssl rand -base64 64"), "{error}");
    let short = "s".repeat(63);
    let error = app::Config::from_lookup(
        Env::default()
            .set("ADMIN_API_KEY", &admin)
            .set("JWT_SECRET", &short)
            .lookup(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("JWT_SECRET"), "{error}");
    assert!(error.contains("at least 64"), "{error}");
    assert!(!error.contains(&short), "{error}");
    // Every missing variable at once.
    let error = app::Config::from_lookup(Env::default().lookup())
        .unwrap_err()
        .to_string();
    examples_common::assert_names_every_variable(&error, &["JWT_SECRET", "ADMIN_API_KEY"]);
    assert!(app::Config::from_lookup(env(&jwt_secret(), &admin).lookup()).is_ok());
}
