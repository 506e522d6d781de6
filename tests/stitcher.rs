//! The stitcher example, driven as a client would: its router served in process on a
//! loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../examples/stitcher/app.rs"]
mod app;
#[path = "../examples/common/mod.rs"]
mod common;
mod examples_common;
mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use examples_common::{Env, Reply, TestServer, actions, random_key, temp_audit_log};
use keygate::{
    limit::Clock,
    webhook::{WebhookSecret, sign},
};
use serde_json::{Value, json};

const NEW_SECRET: &str = "whsec_new_0123456789abcdef";
const OLD_SECRET: &str = "whsec_old_0123456789abcdef";

struct Stitcher {
    server: TestServer,
    key: String,
}

fn env(key: &str) -> Env {
    Env::default()
        .set("STITCHER_API_KEY", key)
        // A rotation in progress: the new secret and the old one.
        .set(
            "STITCHER_WEBHOOK_SECRETS",
            format!("{NEW_SECRET}, {OLD_SECRET}"),
        )
        .set(
            "AUDIT_LOG",
            temp_audit_log("stitcher").display().to_string(),
        )
        .set(
            "DATABASE_URL",
            examples_common::temp_database_url("stitcher"),
        )
        .set("FAILED_ATTEMPTS_PER_MINUTE", "1000")
}

impl Stitcher {
    async fn start() -> Self {
        Self::start_with(|env| env).await
    }

    async fn start_with(change: impl FnOnce(Env) -> Env) -> Self {
        let key = random_key();
        let mut config = app::Config::from_lookup(change(env(&key)).lookup()).unwrap();
        config.server.clock = Clock::manual();
        let audit_log = config.server.audit_log.clone();
        let router = app::router(config).await.unwrap();
        Self {
            server: TestServer::start(router, audit_log).await,
            key,
        }
    }

    /// Posts `body` to the webhook with the API key and `signature`.
    async fn webhook(&self, body: &str, signature: Option<&str>) -> Reply {
        let mut call = self
            .server
            .post("/stitcher/webhook")
            .key(&self.key)
            .raw_json(body.to_owned());
        if let Some(signature) = signature {
            call = call.header("x-keygate-signature", signature);
        }
        call.send().await
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(secret: &str, timestamp: u64, body: &str) -> String {
    sign(
        &WebhookSecret::try_from(secret).unwrap(),
        timestamp,
        body.as_bytes(),
    )
}

const EVENT: &str = r#"{"id":"evt_1","type":"job.ready","data":{"jobId":"job_42"}}"#;

#[tokio::test]
async fn health_is_the_one_public_route() {
    let s = Stitcher::start().await;
    let reply = s.server.get("/stitcher/health").send().await;
    reply.assert_status(200);
    assert_eq!(reply.body, json!({ "status": "ok" }));
    s.server.finish().await;
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_empty_and_foreign_keys() {
    let s = Stitcher::start().await;
    let coordinator_key = random_key();
    let wrong_key = format!("{}x", &s.key[..s.key.len() - 1]);
    let signature = signed(NEW_SECRET, now(), EVENT);
    let routes = [
        ("/stitcher/webhook", EVENT.to_owned()),
        (
            "/stitcher/dispatch",
            json!({ "workspaceId": "ws-a" }).to_string(),
        ),
        ("/stitcher/elsewhere", "{}".to_owned()),
    ];
    for (path, body) in routes {
        let cases: [(Option<&str>, &str); 4] = [
            (None, "missing_credentials"),
            (Some(&wrong_key), "invalid_credentials"),
            (Some(""), "malformed_credentials"),
            (Some(&coordinator_key), "invalid_credentials"),
        ];
        for (key, reason) in cases {
            // A valid signature does not replace the key.
            let mut call = s
                .server
                .post(path)
                .header("x-keygate-signature", &signature)
                .raw_json(body.clone());
            if let Some(key) = key {
                call = call.key(key);
            }
            let reply = call.send().await;
            reply.assert_error(401, reason);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("ApiKey realm=\"api\"")
            );
        }
    }
    let events = s.server.finish().await;
    assert_eq!(actions(&events, "webhook.receive").count(), 0);
}

#[tokio::test]
async fn a_signed_webhook_is_accepted_once_and_acknowledged_again() {
    let s = Stitcher::start().await;
    let reply = s
        .webhook(EVENT, Some(&signed(NEW_SECRET, now(), EVENT)))
        .await;
    reply.assert_status(202);
    assert_eq!(
        reply.body,
        json!({ "received": "evt_1", "type": "job.ready", "duplicate": false })
    );
    assert!(reply.header("ratelimit").is_some());

    // The sender retries: acknowledged, not acted on twice.
    let again = s
        .webhook(EVENT, Some(&signed(NEW_SECRET, now(), EVENT)))
        .await;
    again.assert_status(200);
    assert_eq!(again.body["duplicate"], true);

    let events = s.server.finish().await;
    let received = actions(&events, "webhook.receive").collect::<Vec<_>>();
    assert_eq!(received.len(), 2);
    assert_eq!(received[0]["outcome"], "succeeded");
    assert_eq!(received[0]["principal_id"], app::STITCHER);
    assert!(received[0]["key_id"].is_string());
}

#[tokio::test]
async fn the_old_secret_works_during_a_rotation() {
    let s = Stitcher::start().await;
    let old = s
        .webhook(EVENT, Some(&signed(OLD_SECRET, now(), EVENT)))
        .await;
    old.assert_status(202);
    let body = r#"{"id":"evt_2","type":"job.ready"}"#;
    s.webhook(body, Some(&signed(NEW_SECRET, now(), body)))
        .await
        .assert_status(202);
    // Once the old secret is dropped from the list, its signatures are refused.
    let s2 = Stitcher::start_with(|env| env.set("STITCHER_WEBHOOK_SECRETS", NEW_SECRET)).await;
    s2.webhook(EVENT, Some(&signed(OLD_SECRET, now(), EVENT)))
        .await
        .assert_error(401, "invalid_signature");
    s.server.finish().await;
    s2.server.finish().await;
}

#[tokio::test]
async fn bad_signatures_are_401_in_the_guards_shape() {
    let s = Stitcher::start().await;
    let t = now();
    let good = signed(NEW_SECRET, t, EVENT);
    let tampered = EVENT.replace("job_42", "job_43");
    let cases: Vec<(String, Option<String>, &str)> = vec![
        // Signed with a secret the stitcher does not know.
        (
            EVENT.into(),
            Some(signed("whsec_attacker_0123456789", t, EVENT)),
            "invalid_signature",
        ),
        // The body changed after signing.
        (tampered, Some(good.clone()), "invalid_signature"),
        // No signature, or not one.
        (EVENT.into(), None, "invalid_signature"),
        (EVENT.into(), Some("t=1,v1=abc".into()), "invalid_signature"),
        (
            EVENT.into(),
            Some(good.replace("v1=", "v2=")),
            "invalid_signature",
        ),
        (EVENT.into(), Some(format!("t={t}")), "invalid_signature"),
        // More than 300 s off, either way.
        (
            EVENT.into(),
            Some(signed(NEW_SECRET, t - 301, EVENT)),
            "stale_signature",
        ),
        (
            EVENT.into(),
            Some(signed(NEW_SECRET, t + 301, EVENT)),
            "stale_signature",
        ),
        (
            EVENT.into(),
            Some(signed(NEW_SECRET, 0, EVENT)),
            "stale_signature",
        ),
    ];
    for (body, signature, reason) in cases {
        let reply = s.webhook(&body, signature.as_deref()).await;
        reply.assert_error(401, reason);
        // Not a credential failure: no WWW-Authenticate challenge.
        assert_eq!(reply.header("www-authenticate"), None);
    }
    // The signature header given twice is refused too.
    s.server
        .post("/stitcher/webhook")
        .key(&s.key)
        .header("x-keygate-signature", &good)
        .header("x-keygate-signature", &good)
        .raw_json(EVENT)
        .send()
        .await
        .assert_error(401, "invalid_signature");

    let events = s.server.finish().await;
    let failed = actions(&events, "webhook.receive").collect::<Vec<_>>();
    assert_eq!(failed.len(), 10);
    assert!(failed.iter().all(|e| e["outcome"] == "failed"));
    assert_eq!(
        failed
            .iter()
            .filter(|e| e["reason"] == "stale_signature")
            .count(),
        3
    );
}

#[tokio::test]
async fn signed_bodies_are_still_validated() {
    let s = Stitcher::start().await;
    let cases: [(&str, u16); 7] = [
        ("{\"id\":", 400),
        ("", 400),
        ("{\"id\":\"evt_1\"}", 422),
        ("{\"type\":\"x\",\"extra\":1}", 422),
        ("{\"id\":\"evt_1\",\"type\":null,\"extra\":1}", 422),
        ("{\"id\":7,\"type\":\"x\"}", 422),
        ("{\"id\":\"evt 1\",\"type\":\"x\"}", 422),
    ];
    for (body, status) in cases {
        s.webhook(body, Some(&signed(NEW_SECRET, now(), body)))
            .await
            .assert_error(status, "invalid_body");
    }
    let huge = format!(
        r#"{{"id":"evt_9","type":"x","data":"{}"}}"#,
        "a".repeat(70_000)
    );
    s.webhook(&huge, Some(&signed(NEW_SECRET, now(), &huge)))
        .await
        .assert_error(413, "body_too_large");
    s.server.finish().await;
}

#[tokio::test]
async fn webhook_bodies_with_fields_added_later_are_accepted() {
    let s = Stitcher::start().await;
    // A sender may add fields at any time: the receiver ignores what it does not know.
    let body = r#"{"id":"evt_new","type":"job.ready","data":{"a":1},"createdAt":"2026-01-01T00:00:00Z","attempt":2}"#;
    let reply = s
        .webhook(body, Some(&signed(NEW_SECRET, now(), body)))
        .await;
    reply.assert_status(202);
    assert_eq!(
        reply.body,
        json!({ "received": "evt_new", "type": "job.ready", "duplicate": false })
    );
    s.server.finish().await;
}

#[tokio::test]
async fn dispatch_takes_any_workspace_unless_the_key_is_limited() {
    let s = Stitcher::start().await;
    for workspace in ["ws-a", "ws-z"] {
        let reply = s
            .server
            .post("/stitcher/dispatch")
            .key(&s.key)
            .json(&json!({ "workspaceId": workspace, "jobId": "job_42" }))
            .send()
            .await;
        reply.assert_status(202);
        assert_eq!(reply.body["workspaceId"], workspace);
        assert_eq!(reply.body["jobId"], "job_42");
        assert!(
            reply.body["dispatchId"]
                .as_str()
                .unwrap()
                .starts_with("dsp_")
        );
    }
    let bad: [(Value, u16); 5] = [
        (json!({}), 422),
        (json!({ "workspaceId": "ws a" }), 422),
        (json!({ "workspaceId": "ws-a", "jobId": 42 }), 422),
        (json!({ "workspaceId": "ws-a", "priority": 1 }), 422),
        (json!("ws-a"), 422),
    ];
    for (body, status) in bad {
        s.server
            .post("/stitcher/dispatch")
            .key(&s.key)
            .json(&body)
            .send()
            .await
            .assert_error(status, "invalid_body");
    }

    let limited = Stitcher::start_with(|env| env.set("STITCHER_WORKSPACES", "ws-a, ws-b")).await;
    let dispatch = |workspace: &str| {
        limited
            .server
            .post("/stitcher/dispatch")
            .key(&limited.key)
            .json(&json!({ "workspaceId": workspace }))
            .send()
    };
    dispatch("ws-b").await.assert_status(202);
    dispatch("ws-z")
        .await
        .assert_error(403, "workspace_forbidden");

    s.server.finish().await;
    let events = limited.server.finish().await;
    let dispatched = actions(&events, "job.dispatch").collect::<Vec<_>>();
    assert_eq!(dispatched.len(), 2);
    assert_eq!(
        (
            dispatched[1]["workspace"].as_str(),
            dispatched[1]["reason"].as_str()
        ),
        (Some("ws-z"), Some("workspace_forbidden"))
    );
}

#[test]
fn configuration_errors_name_the_variable_and_the_fix() {
    let key = random_key();
    let valid = env(&key);
    let error = |env: Env| {
        app::Config::from_lookup(env.lookup())
            .unwrap_err()
            .to_string()
    };

    let missing = error(valid.clone().unset("STITCHER_API_KEY"));
    assert!(
        missing.contains("STITCHER_API_KEY") && missing.contains("openssl rand -base64 32"),
        "{missing}"
    );
    let short = error(valid.clone().set("STITCHER_API_KEY", "0123456789"));
    assert!(
        short.contains("STITCHER_API_KEY") && short.contains("at least 32"),
        "{short}"
    );
    let missing = error(valid.clone().unset("STITCHER_WEBHOOK_SECRETS"));
    assert!(
        missing.contains("STITCHER_WEBHOOK_SECRETS") && missing.contains("openssl rand"),
        "{missing}"
    );
    let short = error(
        valid
            .clone()
            .set("STITCHER_WEBHOOK_SECRETS", format!("{NEW_SECRET},tiny")),
    );
    assert!(
        short.contains("STITCHER_WEBHOOK_SECRETS") && short.contains("16"),
        "{short}"
    );
    assert!(
        !short.contains(NEW_SECRET) && !short.contains("tiny"),
        "{short}"
    );

    let config = app::Config::from_lookup(valid.lookup()).unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains("REDACTED") && shown.contains("secrets: 2"),
        "{shown}"
    );
    assert!(
        !shown.contains(&key) && !shown.contains(NEW_SECRET) && !shown.contains(OLD_SECRET),
        "{shown}"
    );
    assert!(config.workspaces.is_none());
}

#[test]
fn the_built_binary_refuses_to_start_without_webhook_secrets() {
    let binary = examples_common::built_example("stitcher");
    let output = std::process::Command::new(binary)
        .env_clear()
        .env("STITCHER_API_KEY", random_key())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("STITCHER_WEBHOOK_SECRETS"), "{stderr}");
}

#[test]
fn the_built_binary_names_every_missing_variable_at_once() {
    examples_common::assert_names_every_missing_variable(
        "stitcher",
        &["STITCHER_API_KEY", "STITCHER_WEBHOOK_SECRETS"],
    );
}

#[test]
fn every_invalid_variable_is_reported_at_once() {
    examples_common::assert_reports_every_invalid_variable(
        |lookup| app::Config::from_lookup(lookup),
        &["STITCHER_API_KEY", "STITCHER_WEBHOOK_SECRETS"],
    );
}
