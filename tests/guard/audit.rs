//! The audit trail: exactly one event per decision, with what it is about.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
};

use axum::extract::ConnectInfo;
use keygate::{
    ApiKey, ApiKeyGuard, AuditEvent, AuditSink, ClientAddr, InMemoryRegistry, KeyGrant, KeyId,
    KeyRegistry,
    audit::{Background, BackgroundSink, JsonLinesSink, MemorySink, Outcome, WhenFull},
    guard::AuditFailure,
};
use tower::{ServiceBuilder, ServiceExt};

use crate::{
    App, app,
    body_types::{hello, request},
    get,
    support::{CountingRegistry, TempDir, TestServer, oneshot, send},
    tampered, unregistered_key,
};

/// Over the wire: the client address comes from the connection.
#[tokio::test]
async fn every_request_yields_exactly_one_audit_event() {
    let registry = Arc::new(CountingRegistry::default());
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .public_path("/health")
        .audit(audit.clone())
        .client_ip(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .build()
        .unwrap();
    let server = TestServer::start(app(guard)).await;

    let (valid, expired, revoked) =
        crate::valid_expired_revoked(&registry, KeyGrant::new("coordinator-1")).await;
    let valid_key = valid.key.expose_secret();

    // (path, key(s), outcome, reason, principal and key id)
    type Case<'a> = (
        &'a str,
        Vec<String>,
        Outcome,
        Option<&'a str>,
        Option<(&'a str, KeyId)>,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            "/whoami",
            vec![valid_key.to_owned()],
            Outcome::Admitted,
            None,
            Some(("coordinator-1", valid.record.key_id)),
        ),
        (
            "/whoami",
            vec![],
            Outcome::Refused,
            Some("missing_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![valid_key.to_owned(), valid_key.to_owned()],
            Outcome::Refused,
            Some("malformed_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![unregistered_key()],
            Outcome::Refused,
            Some("invalid_credentials"),
            None,
        ),
        (
            "/whoami",
            vec![tampered(valid_key)],
            Outcome::Refused,
            Some("invalid_credentials"),
            None,
        ),
        (
            "/admin/secret",
            vec![expired.key.expose_secret().to_owned()],
            Outcome::Refused,
            Some("expired_credentials"),
            Some(("coordinator-2", expired.record.key_id)),
        ),
        (
            "/whoami",
            vec![revoked.key.expose_secret().to_owned()],
            Outcome::Refused,
            Some("revoked_credentials"),
            Some(("coordinator-3", revoked.record.key_id)),
        ),
        ("/health", vec![], Outcome::Admitted, None, None),
    ];

    for (n, (path, keys, outcome, reason, who)) in cases.into_iter().enumerate() {
        let request_id = format!("req-{n}");
        let user_agent = format!("audit-test/{n}");
        let mut request = server
            .get(path)
            .header("x-request-id", &request_id)
            .header("user-agent", &user_agent);
        for key in &keys {
            request = request.header("x-api-key", key);
        }
        let before = audit.events().len();
        let reply = send(request).await;
        assert_eq!(reply.status == 200, outcome == Outcome::Admitted);
        let events = audit.events();
        assert_eq!(events.len(), before + 1, "case {n}: exactly one event");
        let event = events.last().unwrap();
        assert_eq!(event.action, format!("GET {path}"), "case {n}");
        assert_eq!(event.outcome, outcome, "case {n}");
        if let Some(reason) = reason {
            assert_eq!(event.reason.as_deref(), Some(reason), "case {n}");
        } else if path != "/health" {
            assert_eq!(event.reason, None, "case {n}");
        }
        assert_eq!(event.principal_id.as_deref(), who.map(|w| w.0), "case {n}");
        assert_eq!(event.key_id, who.map(|w| w.1), "case {n}");
        assert_eq!(event.request_id.as_deref(), Some(request_id.as_str()));
        assert_eq!(event.user_agent.as_deref(), Some(user_agent.as_str()));
        assert_eq!(event.client_ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(event.workspace, None);
    }
}

#[tokio::test]
async fn audit_reads_the_client_addr_extension() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let audit = MemorySink::new();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .audit(audit.clone())
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(hello::<String>));
    let ip: IpAddr = "2001:db8::7".parse().unwrap();
    for key in [Some(issued.key.expose_secret()), None] {
        let mut request = request(key, String::new());
        request.extensions_mut().insert(ClientAddr(ip));
        service.clone().oneshot(request).await.unwrap();
    }
    let events = audit.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].outcome, Outcome::Admitted);
    assert_eq!(events[0].principal_id.as_deref(), Some("svc"));
    assert_eq!(events[0].key_id, Some(issued.record.key_id));
    assert_eq!(events[1].outcome, Outcome::Refused);
    assert_eq!(events[1].reason.as_deref(), Some("missing_credentials"));
    for event in &events {
        assert_eq!(event.client_ip, Some(ip));
        assert_eq!(event.user_agent.as_deref(), Some("body-test/1"));
        assert_eq!(event.action, "GET /jobs");
    }
}

/// `/dev/full` is one file for every test: a sink on it holds its lock (`flock`) until it
/// is dropped, so the tests that open it take turns.
async fn dev_full() -> tokio::sync::MutexGuard<'static, ()> {
    static DEV_FULL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    DEV_FULL.lock().await
}

/// A guard on one opaque key whose audit log is `/dev/full` (every write fails), reached
/// through a symlink of this guard's own, so that its log lines name a path no other
/// test's sink has (tests run side by side and share the log capture).
fn full_disk_guard(policy: AuditFailure) -> (ApiKeyGuard, String, TempDir) {
    let (guard, _, key, dir) = full_disk_guard_with(policy, Arc::new);
    (guard, key, dir)
}

/// A guard auditing through `sink` (made by `wrap` from a `JsonLinesSink` on `/dev/full`,
/// under a temp dir's path of its own), with `policy`; the sink, the key and the dir too.
fn full_disk_guard_with<S: AuditSink + Clone>(
    policy: AuditFailure,
    wrap: impl FnOnce(JsonLinesSink) -> S,
) -> (ApiKeyGuard, S, String, TempDir) {
    let key = crate::opaque_key();
    let dir = TempDir::new("full-disk");
    let path = dir.0.join("audit.jsonl");
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let sink = wrap(JsonLinesSink::open(&path).expect("/dev/full (Linux) opens for appending"));
    let guard = ApiKeyGuard::builder()
        .key(ApiKey::new(&key).unwrap(), KeyGrant::new("coordinator-1"))
        .audit(sink.clone())
        .audit_failure(policy)
        .build()
        .unwrap();
    (guard, sink, key, dir)
}

/// Sends `n` requests with unknown keys through `service`, each refused with 401.
async fn send_unknown_keys(service: &App, n: usize) {
    for _ in 0..n {
        let bad = get("/whoami").header("x-api-key", crate::opaque_key());
        oneshot(service.clone(), bad)
            .await
            .assert_refusal(401, "invalid_credentials");
    }
}

#[tokio::test]
async fn audit_failure_refuse_answers_503_while_admissions_cannot_be_recorded() {
    let _turn = dev_full().await;
    let (guard, key, _dir) = full_disk_guard(AuditFailure::Refuse);
    let reply = oneshot(app(guard.clone()), get("/whoami").header("x-api-key", &key)).await;
    reply.assert_refusal(503, "auth_unavailable");
    assert!(reply.header("retry-after").is_some());
    // A refusal stays the refusal it is.
    oneshot(
        app(guard),
        get("/whoami").header("x-api-key", crate::opaque_key()),
    )
    .await
    .assert_refusal(401, "invalid_credentials");

    // The default keeps serving.
    let (guard, key, _dir) = full_disk_guard(AuditFailure::KeepServing);
    oneshot(app(guard), get("/whoami").header("x-api-key", &key))
        .await
        .assert_status(200);
}

#[tokio::test]
async fn lost_audit_events_are_logged_once_per_run_not_once_each() {
    let _turn = dev_full().await;
    let logs = crate::secrets::captured_logs();
    let (guard, _, dir) = full_disk_guard(AuditFailure::KeepServing);
    let path = dir.0.join("audit.jsonl").display().to_string();
    let service = app(guard);
    let mark = logs.mark();
    send_unknown_keys(&service, 50).await;
    // This sink's lines only: another test's sink may fail meanwhile.
    let logged = lines_naming(&logs.since(mark), &path);
    assert_eq!(
        logged.matches("could not write audit events").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("lost_in_all=1"), "{logged}");
}

/// [`full_disk_guard`] with the log written from a queue ([`BackgroundSink`]); the sink is
/// returned too, to flush it.
fn full_disk_guard_in_background(
    policy: AuditFailure,
) -> (ApiKeyGuard, Arc<BackgroundSink>, String, TempDir) {
    full_disk_guard_with(policy, |file| {
        Arc::new(file.background(Background::default()).unwrap())
    })
}

/// Written from a queue, lost events are counted, logged once per run, and make the sink
/// unhealthy, as when written on the request thread.
#[tokio::test]
async fn lost_audit_events_written_in_background_are_counted_and_logged_once_per_run() {
    let _turn = dev_full().await;
    let logs = crate::secrets::captured_logs();
    let (guard, sink, _, dir) = full_disk_guard_in_background(AuditFailure::KeepServing);
    let path = dir.0.join("audit.jsonl").display().to_string();
    let service = app(guard);
    let mark = logs.mark();
    send_unknown_keys(&service, 50).await;
    sink.flush();
    assert_eq!(sink.write_errors(), 50);
    assert!(!sink.healthy());
    let logged = lines_naming(&logs.since(mark), &path);
    assert_eq!(
        logged.matches("could not write audit events").count(),
        1,
        "{logged}"
    );
    assert!(logged.contains("lost_in_all="), "{logged}");
    drop((service, sink));

    // With `AuditFailure::Refuse`, admissions that cannot be recorded are refused.
    let (guard, sink, key, _dir) = full_disk_guard_in_background(AuditFailure::Refuse);
    sink.record(AuditEvent::new("job.create", Outcome::Succeeded));
    sink.flush();
    oneshot(app(guard), get("/whoami").header("x-api-key", &key))
        .await
        .assert_refusal(503, "auth_unavailable");
}

/// A reader of a named pipe that reads its first bytes, then waits to be let go before it
/// reads the rest: a sink writing a line longer than the pipe's buffer stays inside its
/// `write` meanwhile.
struct PipeReader {
    release: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl PipeReader {
    /// Starts reading `pipe` and returns once the first bytes arrived.
    fn start(pipe: std::path::PathBuf) -> impl FnOnce() -> Self {
        use std::io::Read;
        let (started, started_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut file = std::fs::File::open(pipe).unwrap();
            let mut bytes = vec![0_u8; 4096];
            let first = file.read(&mut bytes).unwrap();
            bytes.truncate(first);
            started.send(()).unwrap();
            let _ = release_rx.recv();
            file.read_to_end(&mut bytes).unwrap();
            bytes
        });
        move || {
            started_rx.recv().unwrap();
            Self { release, reader }
        }
    }

    /// Lets the writer go on.
    fn release(&self) {
        let _ = self.release.send(());
    }

    /// Everything written to the pipe, once its writer closed it.
    fn finish(self) -> Vec<u8> {
        self.release();
        self.reader.join().unwrap()
    }
}

/// Black box: with `WhenFull::Refuse`, a guard built with `AuditFailure::Refuse` answers
/// 503 while the audit queue is full (its writer held inside a `write` on a named pipe
/// nobody drains), and serves again once the queue has drained.
#[tokio::test]
async fn a_full_audit_queue_with_refuse_answers_503_until_it_drains() {
    let key = crate::opaque_key();
    let dir = TempDir::new("full-queue");
    let pipe = dir.0.join("audit.pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let sink = JsonLinesSink::open(&pipe)
        .unwrap()
        .background(
            Background::default()
                .capacity(1)
                .when_full(WhenFull::Refuse),
        )
        .unwrap();
    let sink = Arc::new(sink);
    let guard = ApiKeyGuard::builder()
        .key(ApiKey::new(&key).unwrap(), KeyGrant::new("coordinator-1"))
        .audit(Arc::clone(&sink))
        .audit_failure(AuditFailure::Refuse)
        .build()
        .unwrap();
    let admitted = || get("/whoami").header("x-api-key", &key);

    // Hold the writer: a record longer than the pipe's buffer, of which the reader reads
    // only the first bytes.
    let reading = PipeReader::start(pipe);
    sink.record(AuditEvent::new("held", Outcome::Succeeded).with_user_agent("h".repeat(512 << 10)));
    let reader = reading();

    // The first admission's record fills the queue (capacity 1)...
    oneshot(app(guard.clone()), admitted())
        .await
        .assert_status(200);
    assert!(sink.healthy());
    // ...the next one's finds it full: refused, since it cannot be recorded.
    let reply = oneshot(app(guard.clone()), admitted()).await;
    reply.assert_refusal(503, "auth_unavailable");
    assert!(reply.header("retry-after").is_some());
    assert_eq!(sink.dropped(), 1);
    assert!(!sink.healthy());

    // Drained: served again.
    reader.release();
    sink.flush();
    assert!(sink.healthy());
    oneshot(app(guard.clone()), admitted())
        .await
        .assert_status(200);

    drop(guard);
    let sink = Arc::into_inner(sink).expect("the last handle");
    assert_eq!(sink.write_errors(), 0);
    drop(sink);
    let bytes = reader.finish();
    let summary = keygate::audit::verify_chain(&bytes[..]).expect("a valid chain");
    // The held record and the two admissions recorded; the refused one was not.
    assert_eq!(summary.lines, 3);
}

/// The lines of `logged` that name `path`.
fn lines_naming(logged: &str, path: &str) -> String {
    logged
        .lines()
        .filter(|line| line.contains(path))
        .collect::<Vec<_>>()
        .join("\n")
}
