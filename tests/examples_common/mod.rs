//! What the example tests share: an example's router served in process on a loopback
//! port, a client that counts the requests it makes, and the audit-log check every test
//! ends with.
//!
//! It stands on `support` (the helpers of every test binary) and on the examples' own
//! `common` module: the test file declares `mod common;` (with
//! `#[path = "../examples/common/mod.rs"]`) and `mod support;` before this one.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use axum::Router;
use reqwest::Method;
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

pub(crate) use crate::support::Reply;
#[allow(unused_imports, reason = "not every example test makes keys")]
pub(crate) use crate::support::random_key;

/// The path of the example binary `name`, built now if needed.
///
/// The examples are the `keygate-examples` package (`examples/Cargo.toml`), one binary
/// each, and `cargo test` does not build another package's binaries: so ask cargo to build
/// it (a no-op when it is fresh) and to say where it is, so that no test runs a binary left
/// from an older build.
pub(crate) fn built_example(name: &str) -> PathBuf {
    // The package always has `sqlite`; its other features as this test was built (`api`
    // needs `jwt`).
    let mut features = Vec::new();
    features.extend(cfg!(feature = "redis").then_some("redis"));
    features.extend(cfg!(feature = "postgres").then_some("postgres"));
    features.extend(cfg!(feature = "jwt").then_some("jwt"));
    let features = features.join(",");
    let output = std::process::Command::new(env!("CARGO"))
        .args(["build", "-p", "keygate-examples", "--bin", name])
        .args(["--features", &features])
        .arg("--message-format=json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo build -p keygate-examples --bin {name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == name
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo did not report the `{name}` executable"))
}

/// Runs the built example `name` with an empty environment and asserts that it refuses
/// to start, naming every variable of `missing` in one run, with the helpful text and
/// not an error's `Debug` fields.
pub(crate) fn assert_names_every_missing_variable(name: &str, missing: &[&str]) {
    let output = std::process::Command::new(built_example(name))
        .env_clear()
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_names_every_variable(&stderr, missing);
    assert!(
        !stderr.contains("MissingEnv {") && !stderr.contains("Missing {"),
        "{stderr}"
    );
}

/// Reads an example's configuration with `read` from an environment where `LISTEN_ADDR`
/// and `FAILED_ATTEMPTS_PER_MINUTE` are invalid and nothing else is set, and asserts that
/// the one error names those two and every variable of `missing`.
pub(crate) fn assert_reports_every_invalid_variable<C: std::fmt::Debug, E: std::fmt::Display>(
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<C, E>,
    missing: &[&str],
) {
    let env = Env::default()
        .set("LISTEN_ADDR", "nowhere")
        .set("FAILED_ATTEMPTS_PER_MINUTE", "0");
    let error = read(&env.lookup()).unwrap_err().to_string();
    assert_names_every_variable(&error, &["LISTEN_ADDR", "FAILED_ATTEMPTS_PER_MINUTE"]);
    assert_names_every_variable(&error, missing);
}

/// Asserts that `error` names every variable of `vars`.
pub(crate) fn assert_names_every_variable(error: &str, vars: &[&str]) {
    for var in vars {
        assert!(error.contains(var), "{var} not named in: {error}");
    }
}

/// A fresh path for an audit log under the system temp dir.
pub(crate) fn temp_audit_log(name: &str) -> PathBuf {
    crate::support::temp_path(name, ".jsonl")
}

/// A fresh `DATABASE_URL` for an SQLite file under the system temp dir (never
/// `keygate.db` in the working directory).
pub(crate) fn temp_database_url(name: &str) -> String {
    format!(
        "sqlite://{}",
        crate::support::temp_path(name, ".db").display()
    )
}

/// An environment for `Config::from_lookup`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env(pub(crate) HashMap<String, String>);

impl Env {
    pub(crate) fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub(crate) fn unset(mut self, name: &str) -> Self {
        self.0.remove(name);
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }

    pub(crate) fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |name| self.get(name)
    }
}

/// An example's router, served on `127.0.0.1:<ephemeral port>` exactly as `main` serves
/// it (with the peer address for the guard).
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) audit_log: PathBuf,
    client: reqwest::Client,
    requests: AtomicUsize,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub(crate) async fn start(router: Router, audit_log: PathBuf) -> Self {
        let (listener, addr) = crate::support::loopback().await;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            crate::common::serve(listener, router, async {
                let _ = stop.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            audit_log,
            client: crate::support::client(),
            requests: AtomicUsize::new(0),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// A request to `path`.
    pub(crate) fn call(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            server: self,
            builder: self
                .client
                .request(method, format!("http://{}{path}", self.addr)),
        }
    }

    pub(crate) fn get(&self, path: &str) -> Call<'_> {
        self.call(Method::GET, path)
    }

    pub(crate) fn post(&self, path: &str) -> Call<'_> {
        self.call(Method::POST, path)
    }

    pub(crate) fn patch(&self, path: &str) -> Call<'_> {
        self.call(Method::PATCH, path)
    }

    pub(crate) fn delete(&self, path: &str) -> Call<'_> {
        self.call(Method::DELETE, path)
    }

    /// How many requests were sent.
    pub(crate) fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Stops the server and checks its audit log: the chain verifies, and it holds exactly
    /// one guard decision per request made (see [`guard_decisions`]).
    pub(crate) async fn finish(mut self) -> Vec<Value> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        let events = check_audit_log(&self.audit_log, self.requests());
        let _ = std::fs::remove_file(&self.audit_log);
        events
    }
}

/// Registers a coordinator named `name` for `workspaces` through the coordinator
/// example's admin API (`admin` is the administrator's key); returns its key and key id.
pub(crate) async fn register_coordinator(
    server: &TestServer,
    admin: &str,
    name: &str,
    workspaces: &[&str],
) -> (String, String) {
    let reply = server
        .post("/admin/coordinators")
        .key(admin)
        .json(&serde_json::json!({ "name": name, "workspaces": workspaces }))
        .send()
        .await;
    reply.assert_status(201);
    (
        reply.body["key"].as_str().unwrap().to_owned(),
        reply.body["keyId"].as_str().unwrap().to_owned(),
    )
}

/// Checks the audit log at `path`: the chain verifies, and it holds one guard decision for
/// each of `requests` (an aggregated record counting as its `count`). Returns the events.
pub(crate) fn check_audit_log(path: &Path, requests: usize) -> Vec<Value> {
    let summary = keygate::audit::verify_file(path).expect("the audit chain verifies");
    let events: Vec<Value> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(summary.lines, events.len() as u64);
    // Refusals of unauthenticated callers may be aggregated: a record with a `count`
    // stands for that many decisions.
    let decisions: u64 = guard_decisions(&events)
        .map(|event| event["count"].as_u64().unwrap_or(1))
        .sum();
    assert_eq!(decisions, requests as u64, "one guard decision per request");
    events
}

/// The guard's decisions among audit `events`: `admitted` or `refused`, with the action
/// `"<METHOD> <path>"`. The `RequireScope` layer of the admin routes records its refusals
/// (`insufficient_scope`) in the same form, after the guard admitted the request: those are
/// not counted.
pub(crate) fn guard_decisions(events: &[Value]) -> impl Iterator<Item = &Value> {
    events.iter().filter(|event| {
        let action = event["action"].as_str().unwrap_or_default();
        let is_request = action.split_once(' ').is_some_and(|(method, path)| {
            Method::from_bytes(method.as_bytes()).is_ok() && path.starts_with('/')
        });
        let decision = match event["outcome"].as_str() {
            Some("admitted") => true,
            Some("refused") => event["reason"] != "insufficient_scope",
            _ => false,
        };
        is_request && decision
    })
}

/// Handler actions (`succeeded` or `failed`) named `action` among audit `events`.
pub(crate) fn actions<'a>(events: &'a [Value], action: &'a str) -> impl Iterator<Item = &'a Value> {
    events.iter().filter(move |event| {
        event["action"] == action
            && matches!(event["outcome"].as_str(), Some("succeeded" | "failed"))
    })
}

/// A request being built.
pub(crate) struct Call<'a> {
    server: &'a TestServer,
    builder: reqwest::RequestBuilder,
}

impl Call<'_> {
    /// Sends `X-API-Key: <key>`.
    pub(crate) fn key(self, key: &str) -> Self {
        self.header("x-api-key", key)
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    pub(crate) fn json(mut self, body: &Value) -> Self {
        self.builder = self.builder.json(body);
        self
    }

    /// A raw body with `Content-Type: application/json`.
    pub(crate) fn raw_json(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self
            .builder
            .header("content-type", "application/json")
            .body(body);
        self
    }

    pub(crate) fn body(mut self, body: impl Into<reqwest::Body>) -> Self {
        self.builder = self.builder.body(body);
        self
    }

    pub(crate) async fn send(self) -> Reply {
        self.server.requests.fetch_add(1, Ordering::Relaxed);
        crate::support::send(self.builder).await
    }
}
