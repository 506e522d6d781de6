//! The coordinator example, driven as a client would: its router served in process on a
//! loopback port, and once the built binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "../examples/coordinator/app.rs"]
mod app;
#[path = "../examples/common/mod.rs"]
mod common;
mod examples_common;
mod support;

use std::time::Duration;

use keygate::limit::Clock;

use examples_common::{
    Env, Reply, TestServer, actions, random_key, temp_audit_log, temp_database_url,
};
use serde_json::{Value, json};

/// A running coordinator and the keys it was configured with.
struct Coordinator {
    server: TestServer,
    /// The first coordinator's key (`COORDINATOR_API_KEY`), for workspace `ws-a`.
    key: String,
    admin: String,
}

fn env(coordinator_key: &str, admin_key: &str) -> Env {
    Env::default()
        .set("COORDINATOR_API_KEY", coordinator_key)
        .set("COORDINATOR_WORKSPACES", "ws-a")
        .set("ADMIN_API_KEY", admin_key)
        .set(
            "AUDIT_LOG",
            temp_audit_log("coordinator").display().to_string(),
        )
        .set("DATABASE_URL", temp_database_url("coordinator"))
        // The refusal tests fail more often than a real client may; one test keeps the
        // default.
        .set("FAILED_ATTEMPTS_PER_MINUTE", "1000")
}

impl Coordinator {
    async fn start() -> Self {
        Self::start_with(|env| env).await
    }

    async fn start_with(change: impl FnOnce(Env) -> Env) -> Self {
        let (key, admin) = (random_key(), random_key());
        let env = change(env(&key, &admin));
        let mut config = app::Config::from_lookup(env.lookup()).unwrap();
        // Rate limits count in a time that stands still: no test depends on its speed.
        config.server.clock = Clock::manual();
        let audit_log = config.server.audit_log.clone();
        let router = app::router(config).await.unwrap();
        Self {
            server: TestServer::start(router, audit_log).await,
            key,
            admin,
        }
    }

    /// Registers a coordinator for `workspaces`; returns its key and key id.
    async fn register(&self, name: &str, workspaces: &[&str]) -> (String, String) {
        examples_common::register_coordinator(&self.server, &self.admin, name, workspaces).await
    }

    async fn create_job(&self, key: &str, workspace: &str) -> Reply {
        self.server
            .post("/coordinator/jobs")
            .key(key)
            .json(
                &json!({ "workspaceId": workspace, "type": "stitch", "payload": { "frames": 3 } }),
            )
            .send()
            .await
    }

    /// Creates a job and returns its id.
    async fn job(&self, key: &str, workspace: &str) -> String {
        let reply = self.create_job(key, workspace).await;
        reply.assert_status(201);
        reply.body["id"].as_str().unwrap().to_owned()
    }
}

/// Every guarded route, with a body that would be valid.
fn guarded_routes(job: &str) -> Vec<(reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    vec![
        (
            Method::POST,
            "/coordinator/jobs".into(),
            Some(json!({ "workspaceId": "ws-a", "type": "stitch" })),
        ),
        (Method::GET, format!("/coordinator/jobs/{job}"), None),
        (
            Method::PATCH,
            format!("/coordinator/jobs/{job}/status"),
            Some(json!({ "status": "running" })),
        ),
        (
            Method::PATCH,
            format!("/coordinator/jobs/{job}/progress"),
            Some(json!({ "progress": 10 })),
        ),
        (
            Method::POST,
            format!("/coordinator/jobs/{job}/complete"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/coordinator/jobs/{job}/fail"),
            Some(json!({ "error": "boom" })),
        ),
        (Method::POST, format!("/coordinator/jobs/{job}/retry"), None),
        (
            Method::POST,
            "/admin/coordinators".into(),
            Some(json!({ "name": "c2", "workspaces": ["ws-b"] })),
        ),
        (
            Method::POST,
            "/admin/keys/AbCdEf012345/rotate".into(),
            Some(json!({ "overlapSeconds": 60 })),
        ),
        (Method::DELETE, "/admin/keys/AbCdEf012345".into(), None),
        // Unknown routes need a key too: deny by default.
        (Method::GET, "/coordinator/nothing-here".into(), None),
    ]
}

#[tokio::test]
async fn health_is_the_one_public_route() {
    let c = Coordinator::start().await;
    let reply = c.server.get("/coordinator/health").send().await;
    reply.assert_status(200);
    assert_eq!(reply.body, json!({ "status": "ok" }));
    c.server
        .get("/coordinator/health/")
        .send()
        .await
        .assert_error(401, "missing_credentials");
    let events = c.server.finish().await;
    assert_eq!(events[0]["reason"], "public_route");
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_empty_and_foreign_keys() {
    let c = Coordinator::start().await;
    let job = c.job(&c.key, "ws-a").await;
    let stitcher_key = random_key();
    let wrong_key = format!("{}x", &c.key[..c.key.len() - 1]);
    for (method, path, body) in guarded_routes(&job) {
        let cases: [(Option<&str>, &str); 4] = [
            (None, "missing_credentials"),
            (Some(&wrong_key), "invalid_credentials"),
            (Some(""), "malformed_credentials"),
            (Some(&stitcher_key), "invalid_credentials"),
        ];
        for (key, reason) in cases {
            let mut call = c.server.call(method.clone(), &path);
            if let Some(key) = key {
                call = call.key(key);
            }
            if let Some(body) = &body {
                call = call.json(body);
            }
            let reply = call.send().await;
            reply.assert_error(401, reason);
            assert_eq!(
                reply.header("www-authenticate"),
                Some("ApiKey realm=\"api\""),
                "{method} {path}"
            );
            assert!(reply.header("ratelimit").is_none());
        }
    }
    // Nothing was changed by the refused requests.
    let reply = c
        .server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&c.key)
        .send()
        .await;
    assert_eq!(reply.body["status"], "pending");
    c.server.finish().await;
}

#[tokio::test]
async fn a_job_goes_through_its_life_and_impossible_transitions_are_409() {
    let c = Coordinator::start().await;
    let created = c.create_job(&c.key, "ws-a").await;
    created.assert_status(201);
    let job = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(created.body["workspaceId"], "ws-a");
    assert_eq!(created.body["type"], "stitch");
    assert_eq!(created.body["status"], "pending");
    assert_eq!(created.body["progress"], 0);
    assert_eq!(created.body["payload"], json!({ "frames": 3 }));
    assert_eq!(
        created.header("location"),
        Some(&*format!("/coordinator/jobs/{job}"))
    );
    assert_eq!(
        created.header("ratelimit-policy"),
        Some("\"default\";q=100;w=60")
    );

    let path = |suffix: &str| format!("/coordinator/jobs/{job}{suffix}");
    let read = c.server.get(&path("")).key(&c.key).send().await;
    assert_eq!(read.body, created.body);

    let step = |method: reqwest::Method, suffix: &'static str, body: Option<Value>| {
        let mut call = c.server.call(method, &path(suffix)).key(&c.key);
        if let Some(body) = body {
            call = call.json(&body);
        }
        call.send()
    };
    use reqwest::Method;
    let started = step(
        Method::PATCH,
        "/status",
        Some(json!({ "status": "running" })),
    )
    .await;
    assert_eq!(started.body["status"], "running");
    let progressed = step(Method::PATCH, "/progress", Some(json!({ "progress": 40 }))).await;
    assert_eq!(progressed.body["progress"], 40);
    step(
        Method::PATCH,
        "/status",
        Some(json!({ "status": "running" })),
    )
    .await
    .assert_error(409, "invalid_transition");
    let failed = step(
        Method::POST,
        "/fail",
        Some(json!({ "error": "stitcher crashed" })),
    )
    .await;
    assert_eq!(
        (
            failed.body["status"].as_str(),
            failed.body["error"].as_str()
        ),
        (Some("failed"), Some("stitcher crashed"))
    );

    // Completing a failed job is impossible; so is reporting progress on it.
    step(Method::POST, "/complete", Some(json!({ "result": 1 })))
        .await
        .assert_error(409, "invalid_transition");
    step(Method::PATCH, "/progress", Some(json!({ "progress": 50 })))
        .await
        .assert_error(409, "invalid_transition");

    let retried = step(Method::POST, "/retry", None).await;
    assert_eq!(retried.body["status"], "pending");
    assert_eq!(retried.body["progress"], 0);
    assert_eq!(retried.body["attempts"], 2);
    assert_eq!(retried.body["error"], Value::Null);
    step(Method::POST, "/retry", None)
        .await
        .assert_error(409, "invalid_transition");

    let completed = step(
        Method::POST,
        "/complete",
        Some(json!({ "result": { "url": "s3://out" } })),
    )
    .await;
    assert_eq!(completed.body["status"], "completed");
    assert_eq!(completed.body["progress"], 100);
    assert_eq!(completed.body["result"], json!({ "url": "s3://out" }));
    for (method, suffix, body) in [
        (Method::POST, "/complete", Some(json!({}))),
        (Method::POST, "/fail", Some(json!({ "error": "late" }))),
        (Method::POST, "/retry", None),
        (
            Method::PATCH,
            "/status",
            Some(json!({ "status": "cancelled" })),
        ),
    ] {
        step(method, suffix, body)
            .await
            .assert_error(409, "invalid_transition");
    }

    // Cancel, then retry.
    let other = c.job(&c.key, "ws-a").await;
    let cancel = c
        .server
        .patch(&format!("/coordinator/jobs/{other}/status"))
        .key(&c.key)
        .json(&json!({ "status": "cancelled" }))
        .send()
        .await;
    assert_eq!(cancel.body["status"], "cancelled");
    let again = c
        .server
        .post(&format!("/coordinator/jobs/{other}/retry"))
        .key(&c.key)
        .send()
        .await;
    assert_eq!(again.body["status"], "pending");

    let events = c.server.finish().await;
    let created = actions(&events, "job.create").next().unwrap();
    assert_eq!(created["outcome"], "succeeded");
    assert_eq!(created["principal_id"], app::FIRST_COORDINATOR);
    assert_eq!(created["workspace"], "ws-a");
    assert!(created["key_id"].is_string());
    let refused = actions(&events, "job.complete")
        .find(|e| e["outcome"] == "failed")
        .unwrap();
    assert_eq!(refused["reason"], "invalid_transition");
    assert_eq!(actions(&events, "job.retry").count(), 4);
}

#[tokio::test]
async fn bad_bodies_get_4xx_in_the_guards_json_shape() {
    let c = Coordinator::start().await;
    let job = c.job(&c.key, "ws-a").await;
    let jobs = "/coordinator/jobs";
    let progress = format!("/coordinator/jobs/{job}/progress");
    let status = format!("/coordinator/jobs/{job}/status");
    let cases: Vec<(&str, String, Value, u16, &str)> = vec![
        // Wrong types, missing and unknown fields, out-of-range values.
        (
            "POST",
            jobs.into(),
            json!({ "workspaceId": 7, "type": "x" }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            jobs.into(),
            json!({ "type": "x" }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            jobs.into(),
            json!({ "workspaceId": "ws-a", "type": "x", "owner": "me" }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            jobs.into(),
            json!({ "workspaceId": "ws-a", "type": "" }),
            422,
            "invalid_body",
        ),
        ("POST", jobs.into(), json!([1, 2]), 422, "invalid_body"),
        (
            "PATCH",
            progress.clone(),
            json!({ "progress": 101 }),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            progress.clone(),
            json!({ "progress": -1 }),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            progress.clone(),
            json!({ "progress": 5000 }),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            progress.clone(),
            json!({ "progress": "50" }),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            status.clone(),
            json!({ "status": "completed" }),
            422,
            "invalid_body",
        ),
        (
            "PATCH",
            status.clone(),
            json!({ "status": "sleeping" }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            format!("/coordinator/jobs/{job}/fail"),
            json!({ "error": "" }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            format!("/coordinator/jobs/{job}/fail"),
            json!({}),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/admin/coordinators".into(),
            json!({ "name": "c 2", "workspaces": ["ws-b"] }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/admin/coordinators".into(),
            json!({ "name": "c2", "workspaces": [] }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/admin/keys/AbCdEf012345/rotate".into(),
            json!({ "overlapSeconds": -5 }),
            422,
            "invalid_body",
        ),
        (
            "POST",
            "/admin/keys/AbCdEf012345/rotate".into(),
            json!({ "overlapSeconds": 999_999_999 }),
            422,
            "invalid_body",
        ),
        // Unknown job ids and keys.
        (
            "PATCH",
            "/coordinator/jobs/job_nope/progress".into(),
            json!({ "progress": 1 }),
            404,
            "not_found",
        ),
        (
            "POST",
            "/admin/keys/AbCdEf012345/rotate".into(),
            json!({ "overlapSeconds": 5 }),
            404,
            "not_found",
        ),
        (
            "POST",
            "/admin/keys/not-a-key-id/rotate".into(),
            json!({ "overlapSeconds": 5 }),
            404,
            "not_found",
        ),
    ];
    for (method, path, body, code, reason) in cases {
        let key = if path.starts_with("/admin") {
            &c.admin
        } else {
            &c.key
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        c.server
            .call(method, &path)
            .key(key)
            .json(&body)
            .send()
            .await
            .assert_error(code, reason);
    }

    let raw = |path: &str, body: &'static str| c.server.post(path).key(&c.key).raw_json(body);
    raw(jobs, "{\"workspaceId\": \"ws-a\",")
        .send()
        .await
        .assert_error(400, "invalid_body");
    raw(jobs, "").send().await.assert_error(400, "invalid_body");
    c.server
        .post(jobs)
        .key(&c.key)
        .body("{}")
        .send()
        .await
        .assert_error(415, "unsupported_media_type");
    let huge = format!(
        "{{\"workspaceId\":\"ws-a\",\"type\":\"x\",\"payload\":\"{}\"}}",
        "a".repeat(70_000)
    );
    c.server
        .post(jobs)
        .key(&c.key)
        .raw_json(huge)
        .send()
        .await
        .assert_error(413, "body_too_large");
    for (method, path, code, reason) in [
        (
            reqwest::Method::GET,
            "/coordinator/jobs/job_nope",
            404,
            "not_found",
        ),
        (
            reqwest::Method::GET,
            "/coordinator/jobs/%FF",
            400,
            "invalid_path",
        ),
        (
            reqwest::Method::GET,
            "/coordinator/elsewhere",
            404,
            "not_found",
        ),
        (reqwest::Method::DELETE, jobs, 405, "method_not_allowed"),
    ] {
        c.server
            .call(method, path)
            .key(&c.key)
            .send()
            .await
            .assert_error(code, reason);
    }

    // The job is untouched.
    let reply = c
        .server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&c.key)
        .send()
        .await;
    assert_eq!(
        (
            reply.body["status"].as_str(),
            reply.body["progress"].as_u64()
        ),
        (Some("pending"), Some(0))
    );
    c.server.finish().await;
}

#[tokio::test]
async fn two_coordinators_cannot_touch_each_others_jobs() {
    let c = Coordinator::start().await;
    let (b_key, _) = c.register("coordinator-b", &["ws-b"]).await;
    let a_job = c.job(&c.key, "ws-a").await;
    let b_job = c.job(&b_key, "ws-b").await;

    for (key, own, foreign_ws, foreign_job) in [
        (&c.key, &a_job, "ws-b", &b_job),
        (&b_key, &b_job, "ws-a", &a_job),
    ] {
        // Creating in the other's workspace: 403.
        c.create_job(key, foreign_ws)
            .await
            .assert_error(403, "workspace_forbidden");
        // Reading or changing the other's job: 404, exactly as for a job that does not exist.
        let missing = c
            .server
            .get("/coordinator/jobs/job_00000000000000000000000000000000")
            .key(key)
            .send()
            .await;
        missing.assert_error(404, "not_found");
        let read = c
            .server
            .get(&format!("/coordinator/jobs/{foreign_job}"))
            .key(key)
            .send()
            .await;
        assert_eq!((read.status, &read.body), (missing.status, &missing.body));
        use reqwest::Method;
        for (method, suffix, body) in [
            (
                Method::PATCH,
                "/status",
                Some(json!({ "status": "cancelled" })),
            ),
            (Method::PATCH, "/progress", Some(json!({ "progress": 99 }))),
            (Method::POST, "/complete", Some(json!({}))),
            (Method::POST, "/fail", Some(json!({ "error": "sabotage" }))),
            (Method::POST, "/retry", None),
        ] {
            let mut call = c
                .server
                .call(method, &format!("/coordinator/jobs/{foreign_job}{suffix}"))
                .key(key);
            if let Some(body) = body {
                call = call.json(&body);
            }
            let reply = call.send().await;
            assert_eq!((reply.status, &reply.body), (missing.status, &missing.body));
        }
        // The own job is still there.
        c.server
            .get(&format!("/coordinator/jobs/{own}"))
            .key(key)
            .send()
            .await
            .assert_status(200);
    }
    // Neither job changed.
    for (key, job) in [(&c.key, &a_job), (&b_key, &b_job)] {
        let reply = c
            .server
            .get(&format!("/coordinator/jobs/{job}"))
            .key(key)
            .send()
            .await;
        assert_eq!(
            (
                reply.body["status"].as_str(),
                reply.body["progress"].as_u64()
            ),
            (Some("pending"), Some(0))
        );
    }

    let events = c.server.finish().await;
    // The audit log tells what the 404 hides.
    let hidden = events
        .iter()
        .filter(|e| e["action"] == "job.complete" && e["reason"] == "workspace_forbidden");
    assert_eq!(hidden.count(), 2);
    let forbidden = actions(&events, "job.create").filter(|e| e["reason"] == "workspace_forbidden");
    assert_eq!(forbidden.count(), 2);
}

#[tokio::test]
async fn the_101st_request_in_a_minute_is_429_for_that_coordinator_only() {
    let c = Coordinator::start().await;
    let (b_key, _) = c.register("coordinator-b", &["ws-b"]).await;
    let job = c.job(&c.key, "ws-a").await;
    let path = format!("/coordinator/jobs/{job}");
    for n in 2..=100 {
        let reply = c.server.get(&path).key(&c.key).send().await;
        reply.assert_status(200).assert_rate_limit(100, 100 - n);
    }
    let limited = c.server.get(&path).key(&c.key).send().await;
    limited.assert_error(429, "rate_limited");
    assert!(limited.retry_after() >= 1);
    limited.assert_rate_limit(100, 0);

    // Another coordinator is unaffected.
    c.server
        .get("/coordinator/jobs/job_nope")
        .key(&b_key)
        .send()
        .await
        .assert_error(404, "not_found");
    c.job(&b_key, "ws-b").await;

    let events = c.server.finish().await;
    let refused = events
        .iter()
        .filter(|e| e["reason"] == "rate_limited")
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["principal_id"], app::FIRST_COORDINATOR);
}

#[tokio::test]
async fn an_admin_registers_a_coordinator_whose_key_works_at_once() {
    let c = Coordinator::start().await;
    let reply = c
        .server
        .post("/admin/coordinators")
        .key(&c.admin)
        .json(&json!({ "name": "coordinator-eu", "workspaces": ["eu-1", "eu-2"] }))
        .send()
        .await;
    reply.assert_status(201);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["principalId"], "coordinator-eu");
    assert_eq!(reply.body["workspaces"], json!(["eu-1", "eu-2"]));
    let key = reply.body["key"].as_str().unwrap();
    let key_id = reply.body["keyId"].as_str().unwrap();
    assert!(
        key.starts_with(&format!("kg_{key_id}_")),
        "a generated key names its key id"
    );

    let job = c.create_job(key, "eu-2").await;
    job.assert_status(201);
    c.create_job(key, "ws-a")
        .await
        .assert_error(403, "workspace_forbidden");

    // One principal per name.
    c.server
        .post("/admin/coordinators")
        .key(&c.admin)
        .json(&json!({ "name": "coordinator-eu", "workspaces": ["eu-3"] }))
        .send()
        .await
        .assert_error(409, "conflict");

    let events = c.server.finish().await;
    let registered = actions(&events, "coordinator.register").collect::<Vec<_>>();
    assert_eq!(registered.len(), 2);
    assert_eq!(registered[0]["outcome"], "succeeded");
    assert_eq!(registered[0]["principal_id"], app::ADMIN);
    assert_eq!(registered[1]["reason"], "conflict");
    // The new key was admitted as itself.
    let admitted = events
        .iter()
        .find(|e| e["action"] == "POST /coordinator/jobs" && e["principal_id"] == "coordinator-eu")
        .unwrap();
    assert_eq!(admitted["key_id"], key_id);
    // No secret is in the log.
    let log = events.iter().map(Value::to_string).collect::<String>();
    assert!(!log.contains(key) && !log.contains(&c.key) && !log.contains(&c.admin));
}

#[tokio::test]
async fn a_coordinator_key_cannot_use_the_admin_routes() {
    let c = Coordinator::start().await;
    let (b_key, b_key_id) = c.register("coordinator-b", &["ws-b"]).await;
    for key in [&c.key, &b_key] {
        c.server
            .post("/admin/coordinators")
            .key(key)
            .json(&json!({ "name": "mallory", "workspaces": ["ws-a", "ws-b"] }))
            .send()
            .await
            .assert_error(403, "insufficient_scope");
        c.server
            .post(&format!("/admin/keys/{b_key_id}/rotate"))
            .key(key)
            .json(&json!({ "overlapSeconds": 60 }))
            .send()
            .await
            .assert_error(403, "insufficient_scope");
        c.server
            .delete(&format!("/admin/keys/{b_key_id}"))
            .key(key)
            .send()
            .await
            .assert_error(403, "insufficient_scope");
    }
    // Nothing happened: b's key still works, and "mallory" does not exist.
    c.job(&b_key, "ws-b").await;
    let (mallory, _) = c.register("mallory", &["ws-m"]).await;
    c.job(&mallory, "ws-m").await;

    let events = c.server.finish().await;
    let scope_refusals = events
        .iter()
        .filter(|e| e["reason"] == "insufficient_scope")
        .count();
    assert_eq!(scope_refusals, 6);
}

#[tokio::test]
async fn a_rotated_key_keeps_working_for_the_overlap_then_expires() {
    let c = Coordinator::start().await;
    let (old_key, old_key_id) = c.register("coordinator-b", &["ws-b"]).await;
    let rotate = |key_id: &str, overlap: u64| {
        c.server
            .post(&format!("/admin/keys/{key_id}/rotate"))
            .key(&c.admin)
            .json(&json!({ "overlapSeconds": overlap }))
            .send()
    };
    let reply = rotate(&old_key_id, 1).await;
    reply.assert_status(201);
    assert_eq!(reply.body["principalId"], "coordinator-b");
    assert_eq!(reply.body["previousKeyId"], old_key_id.as_str());
    assert_eq!(reply.body["workspaces"], json!(["ws-b"]));
    assert!(reply.body["previousKeyExpiresAt"].is_string());
    let new_key = reply.body["key"].as_str().unwrap().to_owned();
    let new_key_id = reply.body["keyId"].as_str().unwrap().to_owned();
    assert_ne!(new_key_id, old_key_id);

    // During the overlap both keys work.
    let job = c.job(&old_key, "ws-b").await;
    c.server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&new_key)
        .send()
        .await
        .assert_status(200);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&old_key)
        .send()
        .await
        .assert_error(401, "expired_credentials");
    c.server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&new_key)
        .send()
        .await
        .assert_status(200);
    // An expired key is not rotated again (that would hand out a working key).
    rotate(&old_key_id, 60).await.assert_error(409, "conflict");

    c.server.finish().await;
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let c = Coordinator::start().await;
    let (key, key_id) = c.register("coordinator-b", &["ws-b"]).await;
    let job = c.job(&key, "ws-b").await;
    let reply = c
        .server
        .delete(&format!("/admin/keys/{key_id}"))
        .key(&c.admin)
        .send()
        .await;
    reply.assert_status(200);
    assert_eq!(reply.body["keyId"], key_id.as_str());
    assert!(reply.body["revokedAt"].is_string());
    c.server
        .get(&format!("/coordinator/jobs/{job}"))
        .key(&key)
        .send()
        .await
        .assert_error(401, "revoked_credentials");
    c.create_job(&key, "ws-b")
        .await
        .assert_error(401, "revoked_credentials");
    // A revoked key cannot be rotated back to life; unknown keys are 404.
    c.server
        .post(&format!("/admin/keys/{key_id}/rotate"))
        .key(&c.admin)
        .json(&json!({ "overlapSeconds": 0 }))
        .send()
        .await
        .assert_error(409, "conflict");
    c.server
        .delete("/admin/keys/AbCdEf012345")
        .key(&c.admin)
        .send()
        .await
        .assert_error(404, "not_found");

    let events = c.server.finish().await;
    let revoked = actions(&events, "key.revoke").collect::<Vec<_>>();
    assert_eq!(revoked.len(), 2);
    assert_eq!(
        (
            revoked[0]["outcome"].as_str(),
            revoked[1]["reason"].as_str()
        ),
        (Some("succeeded"), Some("not_found"))
    );
    let refused = events
        .iter()
        .filter(|e| e["reason"] == "revoked_credentials")
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["key_id"], key_id.as_str());
}

#[tokio::test]
async fn a_client_that_fails_too_often_is_refused_before_any_lookup() {
    let c = Coordinator::start_with(|env| env.unset("FAILED_ATTEMPTS_PER_MINUTE")).await;
    let wrong = random_key();
    for _ in 0..10 {
        c.server
            .get("/coordinator/jobs/x")
            .key(&wrong)
            .send()
            .await
            .assert_error(401, "invalid_credentials");
    }
    let refused = c.server.get("/coordinator/jobs/x").key(&wrong).send().await;
    refused.assert_error(429, "too_many_failed_attempts");
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // From this address even a valid key waits; missing keys and the public route are not
    // failures of a key and still answer as such.
    c.create_job(&c.key, "ws-a")
        .await
        .assert_error(429, "too_many_failed_attempts");
    c.server
        .get("/coordinator/jobs/x")
        .send()
        .await
        .assert_error(401, "missing_credentials");
    c.server
        .get("/coordinator/health")
        .send()
        .await
        .assert_status(200);
    c.server.finish().await;
}

#[test]
fn configuration_errors_name_the_variable_and_the_fix() {
    let (key, admin) = (random_key(), random_key());
    let valid = env(&key, &admin);
    let error = |env: Env| {
        app::Config::from_lookup(env.lookup())
            .unwrap_err()
            .to_string()
    };

    for var in ["COORDINATOR_API_KEY", "ADMIN_API_KEY"] {
        let missing = error(valid.clone().unset(var));
        assert!(
            missing.contains(var) && missing.contains("openssl rand -base64 32"),
            "{missing}"
        );
        let short = error(valid.clone().set(var, "too-short-a-key"));
        assert!(
            short.contains(var)
                && short.contains("32")
                && short.contains("openssl rand -base64 32"),
            "{short}"
        );
        assert!(!short.contains("too-short-a-key"), "{short}");
    }
    let missing = error(valid.clone().unset("COORDINATOR_WORKSPACES"));
    assert!(missing.contains("COORDINATOR_WORKSPACES"), "{missing}");
    let bad = error(valid.clone().set("COORDINATOR_WORKSPACES", "ws-a,,ws-b"));
    assert!(
        bad.contains("COORDINATOR_WORKSPACES") && bad.contains("entry 2"),
        "{bad}"
    );
    let same = error(valid.clone().set("ADMIN_API_KEY", key.clone()));
    assert!(
        same.contains("ADMIN_API_KEY") && same.contains("COORDINATOR_API_KEY"),
        "{same}"
    );
    let bad = error(valid.clone().set("LISTEN_ADDR", "localhost"));
    assert!(bad.contains("LISTEN_ADDR"), "{bad}");

    // Debug shows the configuration, never a key.
    let config = app::Config::from_lookup(valid.lookup()).unwrap();
    let shown = format!("{config:?}");
    assert!(
        shown.contains("ws-a") && shown.contains("REDACTED"),
        "{shown}"
    );
    assert!(!shown.contains(&key) && !shown.contains(&admin), "{shown}");
    assert_eq!(config.server.failed_attempts_per_minute.get(), 1000);
    let defaults = app::Config::from_lookup(
        valid
            .unset("AUDIT_LOG")
            .unset("FAILED_ATTEMPTS_PER_MINUTE")
            .lookup(),
    )
    .unwrap();
    assert_eq!(defaults.server.listen_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(
        defaults.server.audit_log,
        std::path::Path::new("coordinator-audit.jsonl")
    );
    assert_eq!(defaults.server.failed_attempts_per_minute.get(), 10);
}

/// Built without the `redis` feature (`.ci/run` runs this file so too), a set `REDIS_URL`
/// is refused at start rather than ignored: replicas that believe they share their limits
/// and keys, and do not, would each allow the full quota.
#[cfg(not(feature = "redis"))]
#[test]
fn redis_url_without_the_redis_feature_is_refused_with_the_fix() {
    let (key, admin) = (random_key(), random_key());
    let env = env(&key, &admin).set("REDIS_URL", "redis://:hunter2-secret@127.0.0.1:6390/0");
    let error = app::Config::from_lookup(env.lookup())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("REDIS_URL") && error.contains("--features redis"),
        "{error}"
    );
    assert!(!error.contains("hunter2-secret"), "{error}");
}

/// `DATABASE_URL`: default `sqlite://keygate.db`; empty or of an unknown scheme refused;
/// `postgres://` refused without the `postgres` feature, with the fix and without the
/// password; an unreachable database refused at start.
#[tokio::test]
async fn database_url_is_read_and_checked() {
    let (key, admin) = (random_key(), random_key());
    let config =
        app::Config::from_lookup(env(&key, &admin).unset("DATABASE_URL").lookup()).unwrap();
    assert_eq!(config.server.database_url.expose(), "sqlite://keygate.db");
    for bad in ["", "  ", "mysql://u@localhost/db"] {
        let error = app::Config::from_lookup(env(&key, &admin).set("DATABASE_URL", bad).lookup())
            .unwrap_err()
            .to_string();
        assert!(error.contains("DATABASE_URL"), "{error}");
    }
    let postgres = env(&key, &admin).set(
        "DATABASE_URL",
        "postgres://keygate:hunter2-secret@127.0.0.1:1/db",
    );
    let result = app::Config::from_lookup(postgres.lookup());
    #[cfg(feature = "postgres")]
    {
        let config = result.unwrap();
        assert!(!format!("{config:?}").contains("hunter2-secret"));
        // Nothing listens on port 1: refused at start, the password hidden.
        let error = app::router(config).await.err().unwrap().to_string();
        assert!(error.contains("DATABASE_URL"), "{error}");
        assert!(!error.contains("hunter2-secret"), "{error}");
    }
    #[cfg(not(feature = "postgres"))]
    {
        let error = result.unwrap_err().to_string();
        assert!(
            error.contains("DATABASE_URL") && error.contains("--features postgres"),
            "{error}"
        );
        assert!(!error.contains("hunter2-secret"), "{error}");
    }
}

#[tokio::test]
async fn the_built_binary_refuses_bad_keys_serves_and_verifies_its_audit_log() {
    use std::process::{Command, Stdio};

    let binary = examples_common::built_example("coordinator");
    let (key, admin) = (random_key(), random_key());
    let audit_log = temp_audit_log("coordinator-binary");
    let command = |env: &[(&str, &str)]| {
        let mut command = Command::new(&binary);
        command.env_clear().envs(env.iter().copied());
        command
    };

    // A missing key, then a short one: non-zero exit, a message naming the variable.
    for (api_key, says) in [
        (None, "openssl rand -base64 32"),
        (Some("short"), "at least 32"),
    ] {
        let mut env = vec![
            ("ADMIN_API_KEY", admin.as_str()),
            ("COORDINATOR_WORKSPACES", "ws-a"),
        ];
        env.extend(api_key.map(|key| ("COORDINATOR_API_KEY", key)));
        let output = command(&env).output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("COORDINATOR_API_KEY") && stderr.contains(says),
            "{stderr}"
        );
    }

    // Valid configuration on port 0: it prints the bound address, without secrets.
    let audit = audit_log.display().to_string();
    let database = temp_database_url("coordinator-binary");
    let mut child = tokio::process::Command::from(command(&[
        ("COORDINATOR_API_KEY", &key),
        ("ADMIN_API_KEY", &admin),
        ("COORDINATOR_WORKSPACES", "ws-a"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("AUDIT_LOG", &audit),
        ("DATABASE_URL", &database),
    ]))
    .stdout(Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let (addr, printed) = printed_address(&mut child).await;
    assert!(
        printed.contains("REDACTED") && printed.contains("ws-a"),
        "{printed}"
    );
    assert!(
        !printed.contains(&key) && !printed.contains(&admin),
        "{printed}"
    );
    let reply = reqwest::get(format!("http://{addr}/coordinator/health"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let reply = reqwest::Client::new()
        .get(format!("http://{addr}/coordinator/jobs/x"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 404);
    // Ctrl-C: a graceful stop, after which every record is in the log (it is written
    // from a queue, so a killed server may not have written the last ones yet).
    stop_gracefully(&mut child).await;

    // --verify-audit: the log verifies (two requests, two decisions, one action)...
    let output = Command::new(&binary)
        .args(["--verify-audit", &audit])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("verified") && stdout.contains("3 records"),
        "{stdout}"
    );
    examples_common::check_audit_log(&audit_log, 2);
    // ...and an edited line is named.
    let text = std::fs::read_to_string(&audit_log).unwrap();
    std::fs::write(
        &audit_log,
        text.replacen("/coordinator/jobs/x", "/coordinator/jobs/y", 1),
    )
    .unwrap();
    let output = Command::new(&binary)
        .args(["--verify-audit", &audit])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    let _ = std::fs::remove_file(&audit_log);
}

#[tokio::test]
async fn the_built_binary_logs_keygate_errors_with_rust_log_unset() {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};

    // An audit log that cannot be written: every decision's event is lost, and keygate
    // says so through `tracing`, which must reach the terminal without RUST_LOG.
    let binary = examples_common::built_example("coordinator");
    let (key, admin) = (random_key(), random_key());
    let database = temp_database_url("coordinator-binary");
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .envs([
            ("COORDINATOR_API_KEY", key.as_str()),
            ("ADMIN_API_KEY", admin.as_str()),
            ("COORDINATOR_WORKSPACES", "ws-a"),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("AUDIT_LOG", "/dev/full"),
            ("DATABASE_URL", &database),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (addr, _) = printed_address(&mut child).await;
    let reply = reqwest::get(format!("http://{addr}/coordinator/jobs/x"))
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);

    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut printed = String::new();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if line.contains("could not write audit event") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    child.kill().await.unwrap();
    assert!(found, "no audit error on stderr:\n{printed}");
    assert!(printed.contains("ERROR"), "{printed}");
    assert!(printed.contains("keygate::audit"), "{printed}");
    assert!(
        !printed.contains(&key) && !printed.contains(&admin),
        "{printed}"
    );
}

#[test]
fn the_built_binary_names_every_missing_variable_at_once() {
    examples_common::assert_names_every_missing_variable(
        "coordinator",
        &[
            "COORDINATOR_API_KEY",
            "COORDINATOR_WORKSPACES",
            "ADMIN_API_KEY",
        ],
    );
}

#[test]
fn every_invalid_variable_is_reported_at_once() {
    examples_common::assert_reports_every_invalid_variable(
        |lookup| app::Config::from_lookup(lookup),
        &[
            "COORDINATOR_API_KEY",
            "COORDINATOR_WORKSPACES",
            "ADMIN_API_KEY",
        ],
    );
}

#[tokio::test]
async fn a_full_workspace_refuses_new_jobs_with_409_until_one_finishes() {
    let c = Coordinator::start_with(|env| env.set("MAX_JOBS_PER_WORKSPACE", "3")).await;
    let (b_key, _) = c.register("coordinator-b", &["ws-b"]).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(c.job(&c.key, "ws-a").await);
    }
    // Three unfinished jobs: the fourth is refused, in the guard's JSON shape.
    let full = c.create_job(&c.key, "ws-a").await;
    full.assert_error(409, "workspace_job_limit");
    assert!(
        full.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3"),
        "{}",
        full.body
    );
    // Another workspace is unaffected.
    for _ in 0..3 {
        c.job(&b_key, "ws-b").await;
    }
    // A finished job makes room: the oldest finished job is evicted.
    c.server
        .post(&format!("/coordinator/jobs/{}/complete", jobs[1]))
        .key(&c.key)
        .json(&json!({}))
        .send()
        .await
        .assert_status(200);
    c.job(&c.key, "ws-a").await;
    c.server
        .get(&format!("/coordinator/jobs/{}", jobs[1]))
        .key(&c.key)
        .send()
        .await
        .assert_error(404, "not_found");
    for job in [&jobs[0], &jobs[2]] {
        c.server
            .get(&format!("/coordinator/jobs/{job}"))
            .key(&c.key)
            .send()
            .await
            .assert_status(200);
    }
    c.create_job(&c.key, "ws-a")
        .await
        .assert_error(409, "workspace_job_limit");

    let events = c.server.finish().await;
    let refused = actions(&events, "job.create")
        .filter(|e| e["reason"] == "workspace_job_limit" && e["workspace"] == "ws-a");
    assert_eq!(refused.count(), 2);
}

#[tokio::test]
async fn oversized_bodies_on_every_job_route_get_413() {
    let c = Coordinator::start().await;
    let job = c.job(&c.key, "ws-a").await;
    let big = "a".repeat(70_000);
    for (path, body) in [
        (
            "/coordinator/jobs".to_owned(),
            json!({ "workspaceId": "ws-a", "type": "x", "payload": big }),
        ),
        (
            format!("/coordinator/jobs/{job}/complete"),
            json!({ "result": big }),
        ),
        (
            format!("/coordinator/jobs/{job}/fail"),
            json!({ "error": big }),
        ),
    ] {
        c.server
            .post(&path)
            .key(&c.key)
            .json(&body)
            .send()
            .await
            .assert_error(413, "body_too_large");
    }
    // A failure message under the body limit but over its own bound: 422.
    c.server
        .post(&format!("/coordinator/jobs/{job}/fail"))
        .key(&c.key)
        .json(&json!({ "error": "e".repeat(5000) }))
        .send()
        .await
        .assert_error(422, "invalid_body");
    c.server.finish().await;
}

#[test]
fn max_jobs_per_workspace_is_read_and_checked() {
    let (key, admin) = (random_key(), random_key());
    let valid = env(&key, &admin);
    let config = app::Config::from_lookup(valid.lookup()).unwrap();
    assert_eq!(config.max_jobs_per_workspace.get(), 10_000);
    let config =
        app::Config::from_lookup(valid.clone().set("MAX_JOBS_PER_WORKSPACE", " 50 ").lookup())
            .unwrap();
    assert_eq!(config.max_jobs_per_workspace.get(), 50);
    for bad in ["0", "-1", "lots", "", "1000001"] {
        let error = app::Config::from_lookup(
            valid
                .clone()
                .set("MAX_JOBS_PER_WORKSPACE", bad)
                .set("LISTEN_ADDR", "nowhere")
                .lookup(),
        )
        .unwrap_err()
        .to_string();
        // Reported with the other invalid variables.
        examples_common::assert_names_every_variable(
            &error,
            &["MAX_JOBS_PER_WORKSPACE", "LISTEN_ADDR"],
        );
    }
}

// ---------------------------------------------------------------------------------------
// Keys in a database

/// Serves the coordinator configured by `env` (its own audit log), rate limits on a clock
/// that stands still.
async fn serve(env: &Env) -> TestServer {
    let audit_log = temp_audit_log("coordinator-db");
    let env = env
        .clone()
        .set("AUDIT_LOG", audit_log.display().to_string());
    let mut config = app::Config::from_lookup(env.lookup()).unwrap();
    config.server.clock = Clock::manual();
    TestServer::start(app::router(config).await.unwrap(), audit_log).await
}

async fn create_job_with(server: &TestServer, key: &str) -> Reply {
    server
        .post("/coordinator/jobs")
        .key(key)
        .json(&json!({ "workspaceId": "ws-b", "type": "stitch" }))
        .send()
        .await
}

/// Keys live in the database of `DATABASE_URL` (an SQLite file): a coordinator registered
/// through the admin route still works after a restart, and the configured keys are
/// registered again without complaint.
#[tokio::test]
async fn a_registered_coordinator_key_survives_a_restart() {
    let (key, admin) = (random_key(), random_key());
    let env = env(&key, &admin).set("DATABASE_URL", temp_database_url("coordinator-restart"));

    let first = serve(&env).await;
    let (registered, _) =
        examples_common::register_coordinator(&first, &admin, "coordinator-b", &["ws-b"]).await;
    create_job_with(&first, &registered)
        .await
        .assert_status(201);
    first.finish().await;

    let second = serve(&env).await;
    create_job_with(&second, &registered)
        .await
        .assert_status(201);
    // The configured keys work too, and the name is still taken.
    second
        .get("/coordinator/jobs/none")
        .key(&key)
        .send()
        .await
        .assert_error(404, "not_found");
    second
        .post("/admin/coordinators")
        .key(&admin)
        .json(&json!({ "name": "coordinator-b", "workspaces": ["ws-c"] }))
        .send()
        .await
        .assert_error(409, "conflict");
    second.finish().await;
}

#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

/// Two coordinator replicas on one PostgreSQL database: a coordinator registered through
/// one works on the other, and its key revoked through one is refused by the other within
/// a second (`NOTIFY`).
#[cfg(feature = "postgres")]
#[tokio::test]
async fn replicas_on_postgres_see_each_others_revocations_within_a_second() {
    use std::time::Instant;

    let postgres = postgres_server::PostgresServer::start();
    let (key, admin) = (random_key(), random_key());
    let env = env(&key, &admin).set("DATABASE_URL", postgres.url());
    let a = serve(&env).await;
    // The second replica finds the configured keys registered by the first.
    let b = serve(&env).await;

    let (registered, key_id) =
        examples_common::register_coordinator(&a, &admin, "coordinator-b", &["ws-b"]).await;
    // b caches the record.
    create_job_with(&b, &registered).await.assert_status(201);
    create_job_with(&b, &registered).await.assert_status(201);

    a.delete(&format!("/admin/keys/{key_id}"))
        .key(&admin)
        .send()
        .await
        .assert_status(200);
    let started = Instant::now();
    loop {
        let reply = create_job_with(&b, &registered).await;
        if reply.status == 401 {
            reply.assert_error(401, "revoked_credentials");
            break;
        }
        reply.assert_status(201);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "still admitted a second after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.finish().await;
    b.finish().await;
}

/// Slow clients (headers never finished) are cut off after the header-read timeout, and
/// beyond the connection cap new clients wait for a slot instead of piling up: a normal
/// client is served all along.
#[tokio::test]
async fn slow_clients_are_cut_off_while_normal_clients_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (key, admin) = (random_key(), random_key());
    let config = app::Config::from_lookup(env(&key, &admin).lookup()).unwrap();
    let router = app::router(config).await.unwrap();
    let (listener, addr) = support::loopback().await;
    let limits = common::ConnectionLimits {
        header_read_timeout: Duration::from_millis(500),
        max_connections: 4,
    };
    tokio::spawn(common::serve_with(
        listener,
        router,
        limits,
        std::future::pending(),
    ));

    // Four clients take every slot and send half a request each.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /coordinator/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    // A normal client gets its answer once a slot is freed (not after the test's 30 s).
    let served = tokio::time::timeout(
        Duration::from_secs(30),
        support::client()
            .get(format!("http://{addr}/coordinator/health"))
            .send(),
    )
    .await
    .expect("a normal client was not served while slow ones held the server")
    .unwrap();
    assert_eq!(served.status(), 200);
    // Every slow client was cut off: its connection ends (after at most a 408).
    for mut stream in slow {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut rest))
            .await
            .expect("a slow client was never cut off");
        assert!(read.is_ok() || rest.is_empty(), "{read:?}");
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
}

/// Two servers on one audit file would break its chain: the second refuses to start,
/// naming the file.
#[tokio::test]
async fn a_second_server_on_the_same_audit_log_refuses_to_start() {
    let (key, admin) = (random_key(), random_key());
    let config = app::Config::from_lookup(env(&key, &admin).lookup()).unwrap();
    let audit_log = config.server.audit_log.clone();
    let first = common::open_audit_log(&config.server).unwrap();
    let Err(error) = app::router(config).await else {
        panic!("a second writer started");
    };
    let shown = error.to_string();
    assert!(shown.contains(&audit_log.display().to_string()), "{shown}");
    let cause = std::error::Error::source(&error).map(ToString::to_string);
    assert!(
        cause
            .as_deref()
            .is_some_and(|c| c.contains("in use by another process")),
        "{shown}: {cause:?}"
    );
    drop(first);
}

/// With `AUDIT_CHECKPOINT_KEY`, a server stopped with Ctrl-C leaves a log whose last
/// records a signed checkpoint vouches for; `--verify-audit` checks it with the key and
/// prints the head to keep elsewhere.
#[tokio::test]
async fn the_built_binary_signs_its_audit_log_and_verifies_it_with_the_key() {
    use std::process::{Command, Stdio};

    let binary = examples_common::built_example("coordinator");
    let (key, admin, checkpoint_key) = (random_key(), random_key(), random_key());
    let audit_log = temp_audit_log("coordinator-signed");
    let audit = audit_log.display().to_string();
    let database = temp_database_url("coordinator-signed");
    let env = [
        ("COORDINATOR_API_KEY", key.as_str()),
        ("ADMIN_API_KEY", admin.as_str()),
        ("COORDINATOR_WORKSPACES", "ws-a"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("AUDIT_LOG", audit.as_str()),
        ("AUDIT_CHECKPOINT_KEY", checkpoint_key.as_str()),
        ("DATABASE_URL", database.as_str()),
    ];
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (addr, _) = printed_address(&mut child).await;
    for _ in 0..3 {
        let reply = support::client()
            .get(format!("http://{addr}/coordinator/jobs/x"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 404);
    }
    // Ctrl-C: the server stops, and the sink writes its last checkpoint.
    stop_gracefully(&mut child).await;

    let verify = |with_key: bool| {
        let mut command = Command::new(&binary);
        command.env_clear().args(["--verify-audit", &audit]);
        if with_key {
            command.env("AUDIT_CHECKPOINT_KEY", &checkpoint_key);
        }
        let output = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{stdout}");
        stdout
    };
    let signed = verify(true);
    // Fewer than 1,000 records: the one checkpoint is the one written at Ctrl-C, and
    // nothing follows it.
    assert!(
        signed.contains("1 checkpoints verified; 0 records after the last one"),
        "{signed}"
    );
    let head = signed
        .lines()
        .find(|l| l.starts_with("head: "))
        .expect("head");
    let text = std::fs::read_to_string(&audit_log).unwrap();
    assert_eq!(
        head,
        format!("head: {} {}", text.lines().count(), last_hash(&text))
    );
    assert!(verify(false).contains("signed: not checked"));

    // Cut the final checkpoint off: the verifier says what no signature covers.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.pop();
    std::fs::write(&audit_log, lines.join("\n") + "\n").unwrap();
    let cut = verify(true);
    assert!(cut.contains("0 checkpoints verified"), "{cut}");
    assert!(!cut.contains("0 records after the last one"), "{cut}");
    let _ = std::fs::remove_file(&audit_log);
}

/// The `hash` of the last line of an audit log's text.
fn last_hash(text: &str) -> String {
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    last["hash"].as_str().unwrap().to_owned()
}

/// README's walk-through of the coordinator, pasted in order into one shell: its shell
/// blocks run with bash against the built example (on a free port instead of 8080, in a
/// fresh directory), and every `curl -i` answers the status its comment announces.
#[tokio::test]
async fn the_readme_walk_through_works_when_pasted() {
    use std::os::unix::process::CommandExt as _;
    use std::process::{Command, Stdio};

    let readme = include_str!("../README.md");
    let start = readme
        .find("### Walk-through: the coordinator")
        .expect("README has the walk-through");
    let section = &readme[start..];
    // Up to the next heading (`## ` or `### `; shell comments are `# `).
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|heading| section[4..].find(heading))
        .min()
        .map_or(section.len(), |i| i + 4);
    let section = &section[..end];
    let mut script = String::new();
    for block in section.split("```sh\n").skip(1) {
        script.push_str(block.split("```").next().unwrap());
    }

    // Each `curl -i` must answer the status at the start of the comment above it.
    let mut expected = Vec::new();
    let mut announced = None;
    for line in script.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            announced = comment.get(..3).and_then(|code| code.parse::<u16>().ok());
        } else if line.starts_with("curl -i") {
            expected.push(announced.expect("a `curl -i` without its status in a comment"));
        }
    }
    assert!(expected.len() >= 15, "{expected:?}");

    let binary = examples_common::built_example("coordinator");
    let port = support::loopback().await.1.port();
    let script = script.replace("localhost:8080", &format!("localhost:{port}"));
    let mut script = with_binary(&script, &binary.display().to_string());
    script.insert_str(0, &format!("export LISTEN_ADDR=127.0.0.1:{port}\n"));
    let dir = support::TempDir::new("readme-walk-through");

    let mut command = Command::new("bash");
    command
        .args(["-e", "-c", &script])
        .current_dir(&dir.0)
        .env("PATH", std::env::var("PATH").unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = command.spawn().unwrap();
    let group = child.id();
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    // Whatever happened, no server is left behind.
    let _ = Command::new("kill")
        .args(["--", &format!("-{group}")])
        .status();
    let output = output.expect("the walk-through hung").unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    // Status lines, also where a body without a final newline runs into the next one.
    let statuses: Vec<u16> = stdout
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, prefix)| stdout.get(at + prefix.len()..at + prefix.len() + 3))
        .filter_map(|code| code.parse().ok())
        .collect();
    assert_eq!(statuses, expected, "{stdout}");
    assert!(stdout.contains("chain verified"), "{stdout}");
    assert!(stdout.contains("head: "), "{stdout}");
}

/// `script` with the example's `cargo run … coordinator [--]` replaced by `binary`.
fn with_binary(script: &str, binary: &str) -> String {
    script
        .lines()
        .map(|line| match line.find("cargo run ") {
            Some(at) => {
                let rest = &line[at..];
                let name_end = rest
                    .find(" coordinator")
                    .expect("cargo run of the coordinator")
                    + " coordinator".len();
                let after = rest[name_end..]
                    .strip_prefix(" --")
                    .unwrap_or(&rest[name_end..]);
                format!("{}{binary}{after}", &line[..at])
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A flood of bad keys from one client writes two records (the first refusal, and one
/// with the count of the rest, at shutdown at the latest), not one each: nothing is lost.
#[tokio::test]
async fn a_flood_of_bad_keys_is_counted_not_written_line_by_line() {
    let c = Coordinator::start().await;
    for _ in 0..50 {
        c.server
            .get("/coordinator/jobs/x")
            .key(&random_key())
            .send()
            .await
            .assert_error(401, "invalid_credentials");
    }
    let events = c.server.finish().await;
    let refusals: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "invalid_credentials")
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    let counted: u64 = refusals
        .iter()
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(counted, 50);
}

/// What a started example printed up to its `listening on http://<addr>` line, and that
/// address (the example may need a while to open its database: 30 s at most).
async fn printed_address(child: &mut tokio::process::Child) -> (String, String) {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            printed.push_str(&line);
            printed.push('\n');
            if let Some(addr) = line.split("listening on http://").nth(1) {
                return addr.to_owned();
            }
        }
        panic!("no address printed:\n{printed}");
    })
    .await
    .unwrap();
    (addr, printed)
}

/// Stops a built example as Ctrl-C does (`SIGINT`) and expects it to exit with success
/// within 30 s.
async fn stop_gracefully(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
