//! No secret leaks: not into responses, logs, the audit trail, `Debug` output or errors.
//! Over the wire, through a whole stack with a logging layer inside the guard, as an
//! application has it.

use std::{
    io,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    Router,
    middleware::{self, Next},
    routing::get,
};
use http::Request;
use keygate::{ApiKey, ApiKeyGuard, InMemoryRegistry, KeyGrant, KeyRegistry, audit::JsonLinesSink};

use crate::{
    app,
    availability::FailingRegistry,
    opaque_key, secret_part,
    support::{TempDir, TestServer, send},
    tampered, unregistered_key,
};

/// What the handler sees of the caller, as an axum handler.
async fn whoami(
    axum::Extension(principal): axum::Extension<keygate::Principal>,
) -> axum::Json<serde_json::Value> {
    axum::Json(crate::whoami(&principal))
}

/// Everything the process logs, at TRACE level.
#[derive(Clone, Default)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Where the log stands now.
    pub(crate) fn mark(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// What was logged since `mark` (by this test, and by any running next to it).
    pub(crate) fn since(&self, mark: usize) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()[mark..]).into_owned()
    }
}

impl io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide log capture, installed on first use as the global subscriber.
///
/// Not a per-thread `set_default` subscriber: while such a subscriber is the only one,
/// tracing-core builds the interest of a callsite first hit on *another* thread from that
/// thread's (empty) default, caches "never", and the test misses the event.
pub(crate) fn captured_logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// A logging layer inside the guard, as an application would have: it logs every
/// request's headers at TRACE (the guard marks credential headers sensitive).
async fn log_headers(request: axum::extract::Request, next: Next) -> axum::response::Response {
    tracing::trace!(headers = ?request.headers(), method = %request.method(), "request reached the app");
    next.run(request).await
}

/// Fails if any secret, or the 32-character secret part of a generated one, is in `text`.
fn assert_no_secret(secrets: &[String], what: &str, text: &str) {
    for secret in secrets {
        assert!(!text.contains(secret.as_str()), "a key leaked into {what}");
        if secret.len() == 54 && secret.starts_with("kg_") {
            let part = secret_part(secret);
            assert!(!text.contains(part), "a secret part leaked into {what}");
        }
    }
}

#[tokio::test]
async fn no_secret_leaks_into_logs_audit_debug_or_errors() {
    // Every log line from here on, at TRACE level.
    let logs = captured_logs();
    let mark = logs.mark();

    let dir = TempDir::new("guard-leaks");
    let audit_path = dir.0.join("audit.jsonl");

    let registry = Arc::new(InMemoryRegistry::new());
    let builder = ApiKeyGuard::builder()
        .registry(registry.clone())
        .bearer()
        .query("token")
        .websocket_protocol()
        .public_path("/health")
        .audit(JsonLinesSink::open(&audit_path).unwrap());
    let builder_debug = format!("{builder:?}");
    let guard = builder.build().unwrap();
    let router = Router::new()
        .route("/whoami", get(whoami))
        .route("/health", get(|| async { "ok" }))
        .layer(middleware::from_fn(log_headers))
        .layer(guard.clone());
    let server = TestServer::start(router).await;

    let (valid, expired, revoked) =
        crate::valid_expired_revoked(&registry, KeyGrant::new("coordinator-1").workspaces(["w"]))
            .await;
    let opaque = opaque_key();
    let opaque_record = registry
        .insert_key(
            &ApiKey::new(opaque.clone()).unwrap(),
            KeyGrant::new("legacy"),
        )
        .unwrap();
    let (valid_key, expired_key, revoked_key) = (
        valid.key.expose_secret().to_owned(),
        expired.key.expose_secret().to_owned(),
        revoked.key.expose_secret().to_owned(),
    );
    let (wrong, wrong_opaque, garbage) = (unregistered_key(), opaque_key(), tampered(&valid_key));
    let secrets = vec![
        valid_key.clone(),
        expired_key.clone(),
        revoked_key.clone(),
        opaque.clone(),
        wrong.clone(),
        wrong_opaque.clone(),
        garbage.clone(),
    ];

    // A batch of requests: valid through every source, wrong, expired, revoked,
    // malformed, duplicated.
    let requests = vec![
        server.get_with_key("/whoami", &valid_key),
        server
            .get("/whoami")
            .header("authorization", format!("Bearer {valid_key}")),
        server.get(&format!("/whoami?token={valid_key}")),
        server.get("/whoami").header(
            "sec-websocket-protocol",
            format!("json, keygate.key.{valid_key}"),
        ),
        server.get_with_key("/whoami", &opaque),
        server.get_with_key("/whoami", &wrong),
        server.get_with_key("/whoami", &wrong_opaque),
        server.get_with_key("/whoami", &garbage),
        server.get(&format!("/whoami?token={expired_key}")),
        server
            .get("/whoami")
            .header("authorization", format!("Bearer {revoked_key}")),
        server.get_with_key("/whoami", &valid_key.repeat(10)),
        server.get_with_key("/whoami", &format!("{valid_key} {wrong}")),
        server
            .get_with_key("/whoami", &valid_key)
            .header("x-api-key", &wrong),
        server
            .get_with_key("/whoami", &valid_key)
            .header("authorization", format!("Bearer {wrong}")),
        server
            .get("/whoami")
            .header("authorization", format!("Basic {valid_key}")),
    ];
    let sent = requests.len();
    let mut admitted = 0;
    for request in requests {
        let reply = send(request).await;
        admitted += usize::from(reply.status == 200);
        let headers = format!("{:?}", reply.headers);
        assert_no_secret(&secrets, "a response", &format!("{headers}{}", reply.text));
    }
    assert_eq!(admitted, 5);

    // A handler that authenticates by itself (e.g. a WebSocket's first message).
    let principal = guard
        .authenticate(&valid_key, None, "ws.first_message")
        .await
        .unwrap();
    let refused = guard
        .authenticate(&wrong, None, "ws.first_message")
        .await
        .unwrap_err();
    let with_key = Request::get("/")
        .header("x-api-key", &valid_key)
        .body(())
        .unwrap();
    let credential = guard.credential(&with_key).unwrap();
    let credential_debug = format!("{credential:?}");
    let twice = Request::get(format!("/?token={valid_key}"))
        .header("x-api-key", &valid_key)
        .body(())
        .unwrap();
    let ambiguous = guard.credential(&twice).unwrap_err();

    // A registry that is down also logs.
    let failing = ApiKeyGuard::builder()
        .registry(FailingRegistry::default())
        .build()
        .unwrap();
    let failing_server = TestServer::start(app(failing.clone())).await;
    send(failing_server.get_with_key("/whoami", &valid_key))
        .await
        .assert_status(503);

    // Errors of every kind, made from the secrets.
    let mut errors: Vec<Box<dyn std::error::Error>> = vec![
        Box::new(ApiKey::new(garbage.clone()).unwrap_err()),
        Box::new(ApiKey::new(format!("{valid_key}é")).unwrap_err()),
        Box::new(ApiKey::new(format!("{opaque} ")).unwrap_err()),
        Box::new(ApiKey::new(valid_key[..20].to_owned()).unwrap_err()),
        Box::new(ApiKey::from_var("COORDINATOR_API_KEY", Some(garbage.clone())).unwrap_err()),
        Box::new(ApiKey::from_var("COORDINATOR_API_KEY", Some(format!("é{opaque}"))).unwrap_err()),
        Box::new(ApiKeyGuard::builder().build().unwrap_err()),
        Box::new(
            ApiKeyGuard::builder()
                .key(ApiKey::new(opaque.clone()).unwrap(), KeyGrant::new("a"))
                .key(ApiKey::new(opaque.clone()).unwrap(), KeyGrant::new("b"))
                .build()
                .unwrap_err(),
        ),
        Box::new(
            ApiKeyGuard::builder()
                .key_from_env(
                    "KEYGATE_GUARD_TEST_SURELY_UNSET_API_KEY",
                    KeyGrant::new("a"),
                )
                .build()
                .unwrap_err(),
        ),
        Box::new(
            registry
                .register_key(&valid.key, KeyGrant::new("again"))
                .await
                .unwrap_err(),
        ),
        Box::new(
            registry
                .rotate(&revoked.record.key_id, Duration::from_secs(60))
                .await
                .unwrap_err(),
        ),
        Box::new(refused),
        Box::new(ambiguous),
    ];
    errors.push(Box::new(
        registry
            .insert_key(
                &ApiKey::new(opaque.clone()).unwrap(),
                KeyGrant::new("again"),
            )
            .unwrap_err(),
    ));
    for error in &errors {
        let mut text = format!("{error} {error:?}");
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(&format!(" {cause} {cause:?}"));
            source = cause.source();
        }
        assert_no_secret(&secrets, "an error", &text);
    }

    // Debug of everything that holds or saw a secret.
    let debugs = [
        ("the guard", format!("{guard:?}")),
        ("the failing guard", format!("{failing:?}")),
        ("the builder", builder_debug),
        ("an ApiKey", format!("{:?}", valid.key)),
        ("an IssuedKey", format!("{valid:?} {expired:?} {revoked:?}")),
        (
            "a KeyRecord",
            format!("{:?} {:?}", *valid.record, *opaque_record),
        ),
        ("a Principal", format!("{principal:?}")),
        ("a Credential", credential_debug),
        ("the registry", format!("{registry:?}")),
    ];
    for (what, text) in &debugs {
        assert_no_secret(&secrets, what, text);
    }
    assert!(debugs[3].1.contains("REDACTED"), "{}", debugs[3].1);

    // The audit file: one line per decision, none with a secret.
    let audit_text = std::fs::read_to_string(&audit_path).unwrap();
    assert_eq!(audit_text.lines().count(), sent + 2, "{audit_text}");
    assert_no_secret(&secrets, "the audit file", &audit_text);
    assert!(audit_text.contains(valid.record.key_id.as_str()));

    // The logs: the app's header log ran, with the credential headers hidden, and the
    // registry outage was logged.
    let log_text = logs.since(mark);
    assert!(log_text.contains("request reached the app"), "{log_text}");
    assert!(log_text.contains("Sensitive"), "{log_text}");
    assert!(log_text.contains("key registry failed"), "{log_text}");
    assert_no_secret(&secrets, "the logs", &log_text);
}

#[tokio::test]
async fn credentials_sent_to_a_public_path_are_hidden_from_inner_layers() {
    let logs = captured_logs();
    let mark = logs.mark();
    let registry = Arc::new(InMemoryRegistry::new());
    let valid = registry.issue(KeyGrant::new("monitor")).await.unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .bearer()
        .public_path("/health")
        .build()
        .unwrap();
    let router = Router::new()
        .route("/health", get(|| async { "ok" }))
        .layer(middleware::from_fn(log_headers))
        .layer(guard);
    let server = TestServer::start(router).await;

    // Monitoring tools often send their key everywhere, public paths included.
    let (valid_key, wrong) = (valid.key.expose_secret().to_owned(), unregistered_key());
    for request in [
        server.get_with_key("/health", &valid_key),
        server.get_with_key("/health", &wrong),
        server
            .get("/health")
            .header("authorization", format!("Bearer {valid_key}")),
    ] {
        assert_eq!(send(request).await.assert_ok(), "ok");
    }
    let log_text = logs.since(mark);
    assert!(log_text.contains("request reached the app"), "{log_text}");
    assert_no_secret(&[valid_key, wrong], "the logs", &log_text);
}
