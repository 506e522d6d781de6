//! The websocket example, end to end: its server runs in process on an ephemeral loopback
//! port and a real WebSocket client (tokio-tungstenite) drives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/websocket/app.rs"]
mod app;
#[path = "../examples/common/mod.rs"]
mod common;
// The coordinator, whose admin routes revoke and rotate keys in the same key database.
#[path = "../examples/coordinator/app.rs"]
mod coordinator;
mod examples_common;
mod support;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use examples_common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{
        Message, client::IntoClientRequest, handshake::client::Response,
        protocol::frame::coding::CloseCode,
    },
};

/// The key the server accepts (`WS_API_KEY`), for workspaces `ws-1` and `ws-2`.
const KEY: &str = "ws-test-key-0123456789-abcdefghijklmnopqrstuvwxyz";
/// A well-formed key the server does not know.
const WRONG_KEY: &str = "ws-wrong-key-0123456789-abcdefghijklmnopqrstuvwxyz";
/// How long a test waits for anything before it fails.
const WAIT: Duration = Duration::from_secs(5);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

// ---------------------------------------------------------------------------------------
// The server under test

/// The example's server, its hub, and its audit log (in a directory removed when the
/// test ends).
struct WsServer {
    addr: SocketAddr,
    hub: app::Hub,
    audit_log: PathBuf,
    /// The open audit log, to flush before reading it.
    opened_audit_log: common::OpenedAuditLog,
    _dir: TempDir,
}

/// Starts the example's server with `WS_API_KEY=KEY`, `WS_WORKSPACES=ws-1,ws-2`, and
/// `overrides`.
async fn start(overrides: &[(&str, &str)]) -> WsServer {
    let dir = TempDir::new("websocket-test");
    let audit_log = dir.0.join("audit.jsonl");
    let database = format!("sqlite://{}", dir.0.join("keys.db").display());
    let vars: HashMap<String, String> = [
        ("WS_API_KEY", KEY),
        ("WS_WORKSPACES", "ws-1,ws-2"),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("AUDIT_LOG", audit_log.to_str().unwrap()),
        ("DATABASE_URL", database.as_str()),
    ]
    .into_iter()
    .chain(overrides.iter().copied())
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let config = app::Config::from_lookup(|name| vars.get(name).cloned()).unwrap();
    let listener = TcpListener::bind(config.server.listen_addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = app::Hub::default();
    let opened_audit_log = config.server.opened_audit_log.clone();
    let router = app::router(config, hub.clone()).await.unwrap();
    tokio::spawn(async move {
        common::serve(listener, router, std::future::pending())
            .await
            .unwrap();
    });
    WsServer {
        addr,
        hub,
        audit_log,
        opened_audit_log,
        _dir: dir,
    }
}

impl WsServer {
    fn url(&self, scheme: &str, path_and_query: &str) -> String {
        format!("{scheme}://{}{path_and_query}", self.addr)
    }

    /// Opens `/ws` (plus `query`) with `headers`.
    async fn connect(&self, query: &str, headers: &[(&str, &str)]) -> (Client, Response) {
        let mut request = self
            .url("ws", &format!("/ws{query}"))
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            request.headers_mut().insert(name, value.parse().unwrap());
        }
        tokio::time::timeout(WAIT, connect_async(request))
            .await
            .expect("handshake timed out")
            .expect("handshake failed")
    }

    /// Opens `/ws` with the key in `X-API-Key` and waits until it is authenticated.
    async fn authenticated(&self) -> Client {
        let (mut client, _) = self.connect("", &[("x-api-key", KEY)]).await;
        expect_authenticated(&mut client).await;
        client
    }

    /// Opens `/ws` without a key, sends `{"type":"auth","key":key}` first.
    async fn connect_with_auth_message(&self, key: &str) -> Client {
        let (mut client, _) = self.connect("", &[]).await;
        send(&mut client, json!({ "type": "auth", "key": key })).await;
        client
    }

    /// `POST /ws/publish` with `key` (if any) and `body`: the status and the JSON answer.
    async fn publish_over_http(&self, key: Option<&str>, body: Value) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(self.url("http", "/ws/publish"))
            .json(&body);
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// The audit log (flushed: written from a queue), after checking its hash chain.
    fn audit_events(&self) -> Vec<Value> {
        self.opened_audit_log.flush();
        let summary = keygate::audit::verify_file(&self.audit_log).unwrap();
        let events = read_lines(&self.audit_log);
        assert_eq!(summary.lines, events.len() as u64);
        events
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Client helpers

async fn send(client: &mut Client, message: Value) {
    client
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next data message, which must be JSON text.
async fn next_json(client: &mut Client) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no message in time")
            .expect("connection ended")
            .expect("read failed");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a JSON message, got {other:?}"),
        }
    }
}

/// The close frame the server sends next: its code and reason.
async fn expect_close(client: &mut Client) -> (CloseCode, String) {
    loop {
        let message = tokio::time::timeout(WAIT, client.next())
            .await
            .expect("no close in time")
            .expect("connection ended without a close frame")
            .expect("read failed");
        match message {
            Message::Close(Some(frame)) => return (frame.code, frame.reason.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn expect_authenticated(client: &mut Client) {
    assert_eq!(
        next_json(client).await,
        json!({ "type": "authenticated", "principalId": "ws-client", "workspaces": ["ws-1", "ws-2"] })
    );
}

/// Joins `workspace` and checks the answer.
async fn join(client: &mut Client, workspace: &str) {
    send(client, json!({ "type": "join", "workspaceId": workspace })).await;
    assert_eq!(
        next_json(client).await,
        json!({ "type": "joined", "workspaceId": workspace })
    );
}

fn update(workspace: &str, job: &str, status: &str) -> app::JobUpdate {
    app::JobUpdate {
        workspace_id: workspace.to_owned(),
        job_id: job.to_owned(),
        status: status.to_owned(),
    }
}

fn update_frame(workspace: &str, job: &str, status: &str) -> Value {
    json!({ "type": "job_update", "workspaceId": workspace, "jobId": job, "status": status })
}

/// The authentication decisions in the audit log: action, outcome and reason.
fn decisions(events: &[Value]) -> Vec<(String, String, Option<String>)> {
    events
        .iter()
        .filter(|e| e["action"] == app::ACTION_HANDSHAKE || e["action"] == app::ACTION_AUTH_MESSAGE)
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["outcome"].as_str().unwrap().to_owned(),
                e["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Authentication in the upgrade request

#[tokio::test]
async fn key_in_x_api_key_header_authenticates() {
    let server = start(&[]).await;
    let (mut client, _) = server.connect("", &[("x-api-key", KEY)]).await;
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-1").await;
}

#[tokio::test]
async fn key_as_bearer_token_authenticates() {
    let server = start(&[]).await;
    let bearer = format!("Bearer {KEY}");
    let (mut client, _) = server.connect("", &[("authorization", &bearer)]).await;
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-1").await;
}

#[tokio::test]
async fn key_in_websocket_protocol_authenticates_and_is_echoed() {
    let server = start(&[]).await;
    authenticates_with_protocol(&server, &format!("keygate.key.{KEY}")).await;
}

/// Offers `protocol` next to another subprotocol: the handshake echoes it, and the
/// connection is authenticated.
async fn authenticates_with_protocol(server: &WsServer, protocol: &str) {
    let offered = format!("json, {protocol}");
    let (mut client, response) = server
        .connect("", &[("sec-websocket-protocol", &offered)])
        .await;
    assert_eq!(response.headers()["sec-websocket-protocol"], protocol);
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-1").await;
}

/// An `openssl rand -base64 32` key: `/`, `+` and `=`, which a subprotocol token cannot
/// carry.
const OPENSSL_KEY: &str = "q2V/n+0cM3nMn3WrWWMzRr4m5nN1QIk4YHd0Y2W9Zfk=";

#[tokio::test]
async fn base64url_key_in_websocket_protocol_authenticates_and_is_echoed() {
    use base64::Engine as _;

    let server = start(&[("WS_API_KEY", OPENSSL_KEY)]).await;
    let protocol = format!(
        "keygate.key.b64.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(OPENSSL_KEY)
    );
    authenticates_with_protocol(&server, &protocol).await;
}

#[tokio::test]
async fn bad_base64url_in_websocket_protocol_closes_with_1008() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Raw: a refused entry is not echoed, which a WebSocket client takes as a failed
    // handshake before it reads the close frame.
    let server = start(&[]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: keygate.key.b64.a\r\n\r\n",
        server.addr
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let close = [0x88, 23, 0x03, 0xf0]; // close frame, 1008, then the reason
    let reason = b"malformed_credentials";
    tokio::time::timeout(WAIT, async {
        let mut buf = [0_u8; 1024];
        while !received.windows(reason.len()).any(|w| w == reason) {
            let read = stream.read(&mut buf).await.unwrap();
            assert_ne!(
                read,
                0,
                "closed early: {}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..read]);
        }
    })
    .await
    .expect("no close frame");
    assert!(received.starts_with(b"HTTP/1.1 101 "), "{received:?}");
    let frame: Vec<u8> = close.iter().chain(reason).copied().collect();
    assert!(
        received.windows(frame.len()).any(|w| w == frame.as_slice()),
        "{received:?}"
    );
}

#[tokio::test]
async fn percent_encoded_key_in_token_query_parameter_authenticates() {
    let server = start(&[("WS_API_KEY", OPENSSL_KEY)]).await;
    let encoded = OPENSSL_KEY
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D");
    let (mut client, _) = server.connect(&format!("?token={encoded}"), &[]).await;
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-1").await;
}

#[tokio::test]
async fn key_in_token_query_parameter_authenticates() {
    let server = start(&[]).await;
    let (mut client, _) = server.connect(&format!("?token={KEY}"), &[]).await;
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-1").await;
}

#[tokio::test]
async fn refused_key_in_handshake_closes_with_1008() {
    let server = start(&[]).await;
    let (mut client, _) = server.connect("", &[("x-api-key", WRONG_KEY)]).await;
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, "invalid_credentials".to_owned())
    );
}

#[tokio::test]
async fn malformed_handshake_credential_closes_with_1008() {
    let server = start(&[]).await;
    // A key in two places at once is ambiguous, even when it is the right key.
    let (mut client, _) = server
        .connect(&format!("?token={KEY}"), &[("x-api-key", KEY)])
        .await;
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, "malformed_credentials".to_owned())
    );
}

#[tokio::test]
async fn plain_http_request_to_ws_is_refused_with_json() {
    let server = start(&[]).await;
    let response = reqwest::get(server.url("http", "/ws")).await.unwrap();
    assert!(response.status().is_client_error(), "{}", response.status());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["reason"], "websocket_required");
}

// ---------------------------------------------------------------------------------------
// Authentication with the first message

#[tokio::test]
async fn key_as_first_message_authenticates() {
    let server = start(&[]).await;
    let mut client = server.connect_with_auth_message(KEY).await;
    expect_authenticated(&mut client).await;
    join(&mut client, "ws-2").await;
}

#[tokio::test]
async fn refused_key_as_first_message_closes_with_1008() {
    let server = start(&[]).await;
    let mut client = server.connect_with_auth_message(WRONG_KEY).await;
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, "invalid_credentials".to_owned())
    );
}

#[tokio::test]
async fn first_message_other_than_auth_closes_with_1008() {
    let server = start(&[]).await;
    let (mut client, _) = server.connect("", &[]).await;
    send(
        &mut client,
        json!({ "type": "join", "workspaceId": "ws-1" }),
    )
    .await;
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, "missing_credentials".to_owned())
    );
}

#[tokio::test]
async fn no_key_within_the_timeout_closes_with_1008() {
    let server = start(&[("WS_AUTH_TIMEOUT_MS", "200")]).await;
    let started = Instant::now();
    let (mut client, _) = server.connect("", &[]).await;
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, app::AUTH_TIMEOUT.to_owned())
    );
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(200)..Duration::from_secs(3)).contains(&waited),
        "closed after {waited:?}"
    );
}

#[tokio::test]
async fn second_auth_message_is_refused_without_closing() {
    let server = start(&[]).await;
    let mut client = server.connect_with_auth_message(KEY).await;
    expect_authenticated(&mut client).await;
    send(&mut client, json!({ "type": "auth", "key": KEY })).await;
    assert_eq!(
        next_json(&mut client).await["reason"],
        "already_authenticated"
    );
    join(&mut client, "ws-1").await;
}

// ---------------------------------------------------------------------------------------
// Workspaces and job updates

#[tokio::test]
async fn joining_a_forbidden_workspace_is_refused() {
    let server = start(&[]).await;
    let mut client = server.authenticated().await;
    send(
        &mut client,
        json!({ "type": "join", "workspaceId": "ws-3" }),
    )
    .await;
    let error = next_json(&mut client).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["reason"], "workspace_forbidden");
    // The connection stays usable for the workspaces the key allows.
    join(&mut client, "ws-1").await;
    // And nothing of ws-3 reaches it.
    assert_eq!(server.hub.publish(&update("ws-3", "job-3", "running")), 0);
    assert_eq!(server.hub.publish(&update("ws-1", "job-1", "running")), 1);
    assert_eq!(
        next_json(&mut client).await,
        update_frame("ws-1", "job-1", "running")
    );

    let events = server.audit_events();
    let forbidden = events
        .iter()
        .find(|e| e["action"] == "ws.join" && e["outcome"] == "failed")
        .expect("the refused join is audited");
    assert_eq!(forbidden["workspace"], "ws-3");
    assert_eq!(forbidden["reason"], "workspace_forbidden");
}

#[tokio::test]
async fn updates_reach_only_the_clients_joined_to_their_workspace() {
    let server = start(&[]).await;
    let mut first = server.authenticated().await;
    join(&mut first, "ws-1").await;
    let mut second = server.connect_with_auth_message(KEY).await;
    expect_authenticated(&mut second).await;
    join(&mut second, "ws-2").await;

    // In process.
    assert_eq!(server.hub.publish(&update("ws-1", "job-1", "running")), 1);
    assert_eq!(server.hub.publish(&update("ws-2", "job-2", "pending")), 1);
    // Over HTTP, with the same key and workspace check.
    let (status, answer) = server
        .publish_over_http(
            Some(KEY),
            json!({ "workspaceId": "ws-2", "jobId": "job-3", "status": "completed" }),
        )
        .await;
    assert_eq!((status, answer), (202, json!({ "subscribers": 1 })));
    assert_eq!(server.hub.publish(&update("ws-1", "job-4", "failed")), 1);

    // Each client sees exactly its workspace's updates, in order: the other workspace's
    // would have come between them.
    assert_eq!(
        next_json(&mut first).await,
        update_frame("ws-1", "job-1", "running")
    );
    assert_eq!(
        next_json(&mut first).await,
        update_frame("ws-1", "job-4", "failed")
    );
    assert_eq!(
        next_json(&mut second).await,
        update_frame("ws-2", "job-2", "pending")
    );
    assert_eq!(
        next_json(&mut second).await,
        update_frame("ws-2", "job-3", "completed")
    );
}

#[tokio::test]
async fn publish_route_needs_the_key_and_the_workspace() {
    let server = start(&[]).await;
    let body = json!({ "workspaceId": "ws-1", "jobId": "job-1", "status": "running" });

    let (status, answer) = server.publish_over_http(None, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["reason"], "missing_credentials");

    let (status, answer) = server
        .publish_over_http(Some(WRONG_KEY), body.clone())
        .await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"]["reason"], "invalid_credentials");

    let forbidden = json!({ "workspaceId": "ws-3", "jobId": "job-1", "status": "running" });
    let (status, answer) = server.publish_over_http(Some(KEY), forbidden).await;
    assert_eq!(status, 403);
    assert_eq!(answer["error"]["reason"], "workspace_forbidden");

    let bad_job = json!({ "workspaceId": "ws-1", "jobId": "job 1", "status": "running" });
    let (status, answer) = server.publish_over_http(Some(KEY), bad_job).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["reason"], "invalid_body");

    let (status, answer) = server.publish_over_http(Some(KEY), body).await;
    assert_eq!((status, answer), (202, json!({ "subscribers": 0 })));

    // Deny by default: an unknown path needs the key too.
    let response = reqwest::get(server.url("http", "/ws/unknown"))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

// ---------------------------------------------------------------------------------------
// Rate limiting

#[tokio::test]
async fn message_flood_gets_errors_then_a_1008_close() {
    let budget = 5;
    let server = start(&[("WS_MESSAGES_PER_MINUTE", &budget.to_string())]).await;
    let mut client = server.authenticated().await;
    let refused = app::REFUSED_MESSAGES_BEFORE_CLOSE as usize;
    for _ in 0..budget + refused + 1 + 3 {
        send(
            &mut client,
            json!({ "type": "join", "workspaceId": "ws-1" }),
        )
        .await;
    }
    for _ in 0..budget {
        assert_eq!(next_json(&mut client).await["type"], "joined");
    }
    for _ in 0..refused {
        let error = next_json(&mut client).await;
        assert_eq!(
            (&error["type"], &error["reason"]),
            (&json!("error"), &json!("rate_limited"))
        );
    }
    assert_eq!(
        expect_close(&mut client).await,
        (CloseCode::Policy, "rate_limited".to_owned())
    );

    // The budget is the principal's, not the connection's: a new connection with the
    // same key is limited at once.
    let mut again = server.authenticated().await;
    send(&mut again, json!({ "type": "join", "workspaceId": "ws-1" })).await;
    assert_eq!(next_json(&mut again).await["reason"], "rate_limited");

    let events = server.audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["action"] == "ws.close" && e["reason"] == "rate_limited"),
        "the disconnection is audited"
    );
}

// ---------------------------------------------------------------------------------------
// Audit

#[tokio::test]
async fn audit_log_verifies_and_holds_a_decision_for_every_connection() {
    // One record per refusal, read while the server runs.
    let server = start(&[("WS_AUTH_TIMEOUT_MS", "300"), ("AUDIT_AGGREGATE_SECS", "0")]).await;

    let (mut client, _) = server.connect("", &[("x-api-key", KEY)]).await;
    expect_authenticated(&mut client).await;
    let protocol = format!("keygate.key.{KEY}");
    let (mut client, _) = server
        .connect("", &[("sec-websocket-protocol", &protocol)])
        .await;
    expect_authenticated(&mut client).await;
    let mut client = server.connect_with_auth_message(KEY).await;
    expect_authenticated(&mut client).await;
    let (mut client, _) = server.connect("", &[("x-api-key", WRONG_KEY)]).await;
    expect_close(&mut client).await;
    let mut client = server.connect_with_auth_message(WRONG_KEY).await;
    expect_close(&mut client).await;
    let (mut client, _) = server
        .connect(
            &format!("?token={KEY}"),
            &[("authorization", &format!("Bearer {KEY}"))],
        )
        .await;
    expect_close(&mut client).await;
    let (mut client, _) = server.connect("", &[]).await;
    expect_close(&mut client).await;
    let (mut client, _) = server.connect("", &[]).await;
    send(&mut client, json!({ "type": "hello" })).await;
    expect_close(&mut client).await;

    let events = server.audit_events();
    let (handshake, message) = (app::ACTION_HANDSHAKE, app::ACTION_AUTH_MESSAGE);
    let expected = [
        (handshake, "admitted", None),
        (handshake, "admitted", None),
        (message, "admitted", None),
        (handshake, "refused", Some("invalid_credentials")),
        (message, "refused", Some("invalid_credentials")),
        (handshake, "refused", Some("malformed_credentials")),
        (message, "refused", Some(app::AUTH_TIMEOUT)),
        (message, "refused", Some("missing_credentials")),
    ]
    .map(|(action, outcome, reason)| {
        (
            action.to_owned(),
            outcome.to_owned(),
            reason.map(str::to_owned),
        )
    });
    assert_eq!(decisions(&events), expected);
    for event in &events {
        assert_eq!(event["client_ip"], "127.0.0.1", "{event}");
        if event["outcome"] == "admitted" {
            assert_eq!(event["principal_id"], "ws-client", "{event}");
            assert!(event["key_id"].is_string(), "{event}");
        }
    }
    let log = std::fs::read_to_string(&server.audit_log).unwrap();
    assert!(
        !log.contains(KEY) && !log.contains(WRONG_KEY),
        "a key leaked"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration

#[test]
fn a_missing_or_short_key_refuses_to_start_and_says_how_to_fix_it() {
    let config = |key: Option<&str>, workspaces: Option<&str>| {
        let vars: HashMap<&str, &str> = [("WS_API_KEY", key), ("WS_WORKSPACES", workspaces)]
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect();
        app::Config::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
    };
    for key in [None, Some("too-short-0123456789")] {
        let message = error_chain(&config(key, Some("ws-1")).unwrap_err());
        assert!(message.contains("WS_API_KEY"), "{message}");
        assert!(message.contains("openssl rand -base64 32"), "{message}");
        assert!(
            !message.contains("too-short"),
            "the key is printed: {message}"
        );
    }
    let error = config(Some(KEY), None).unwrap_err().to_string();
    assert!(error.contains("WS_WORKSPACES"), "{error}");
    let error = config(Some(KEY), Some("ws-1,")).unwrap_err().to_string();
    assert!(error.contains("WS_WORKSPACES"), "{error}");

    let config = config(Some(KEY), Some("ws-1")).unwrap();
    assert_eq!(config.auth_timeout, app::DEFAULT_AUTH_TIMEOUT);
    let printed = format!("{config:?}");
    assert!(!printed.contains(KEY), "the key is printed: {printed}");
}

/// The error's message with all its causes.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[test]
fn the_built_binary_names_every_missing_variable_at_once() {
    examples_common::assert_names_every_missing_variable(
        "websocket",
        &["WS_API_KEY", "WS_WORKSPACES"],
    );
}

#[test]
fn every_invalid_variable_is_reported_at_once() {
    examples_common::assert_reports_every_invalid_variable(
        |lookup| app::Config::from_lookup(lookup),
        &["WS_API_KEY", "WS_WORKSPACES"],
    );
}

// ---------------------------------------------------------------------------------------
// A connection lives as long as its key

/// The coordinator example on the key database of `database` (`DATABASE_URL`, or with
/// `redis`, `REDIS_URL`), in process; returns it and its `ADMIN_API_KEY`.
async fn coordinator_on(database: &str, redis: Option<&str>) -> (TestServer, String) {
    let admin = examples_common::random_key();
    let audit_log = examples_common::temp_audit_log("ws-coordinator");
    let mut env = examples_common::Env::default()
        .set("COORDINATOR_API_KEY", examples_common::random_key())
        .set("COORDINATOR_WORKSPACES", "ws-1")
        .set("ADMIN_API_KEY", &admin)
        .set("DATABASE_URL", database)
        .set("AUDIT_LOG", audit_log.display().to_string());
    if let Some(url) = redis {
        env = env.set("REDIS_URL", url);
    }
    let config = coordinator::Config::from_lookup(env.lookup()).unwrap();
    let router = coordinator::router(config).await.unwrap();
    (TestServer::start(router, audit_log).await, admin)
}

/// Opens `/ws` on `server` with `key` (a coordinator's, for `ws-1`) and joins `ws-1`.
async fn coordinator_socket(server: &WsServer, key: &str, principal: &str) -> Client {
    let (mut client, _) = server.connect("", &[("x-api-key", key)]).await;
    assert_eq!(
        next_json(&mut client).await,
        json!({ "type": "authenticated", "principalId": principal, "workspaces": ["ws-1"] })
    );
    join(&mut client, "ws-1").await;
    client
}

/// Revokes `key_id` through the coordinator's `DELETE /admin/keys/{keyId}` and expects
/// each of `clients` to be closed with 1008 `revoked_credentials` within a second.
async fn revoke_and_expect_closes(
    coordinator: &TestServer,
    admin: &str,
    key_id: &str,
    clients: [&mut Client; 2],
) {
    let revoked_at = Instant::now();
    coordinator
        .delete(&format!("/admin/keys/{key_id}"))
        .key(admin)
        .send()
        .await
        .assert_status(200);
    for client in clients {
        let close = expect_close(client).await;
        let after = revoked_at.elapsed();
        assert_eq!(close, (CloseCode::Policy, "revoked_credentials".to_owned()));
        assert!(
            after < Duration::from_secs(1),
            "closed {after:?} after the revocation"
        );
    }
}

/// Rotates `key_id` through the coordinator with `overlap_seconds`; returns the
/// successor's key and the old key's expiry.
async fn rotate(
    coordinator: &TestServer,
    admin: &str,
    key_id: &str,
    overlap_seconds: u64,
) -> (String, time::OffsetDateTime) {
    let rotated = coordinator
        .post(&format!("/admin/keys/{key_id}/rotate"))
        .key(admin)
        .json(&json!({ "overlapSeconds": overlap_seconds }))
        .send()
        .await;
    rotated.assert_status(201);
    let expires_at = time::OffsetDateTime::parse(
        rotated.body["previousKeyExpiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    (rotated.body["key"].as_str().unwrap().to_owned(), expires_at)
}

/// Expects `client` to be closed with 1008 `expired_credentials` at `expires_at`: not
/// before, and within a second after.
async fn expect_closed_at_expiry(client: &mut Client, expires_at: time::OffsetDateTime) {
    let close = expect_close(client).await;
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(close, (CloseCode::Policy, "expired_credentials".to_owned()));
    assert!(
        now >= expires_at,
        "closed {} before the expiry",
        expires_at - now
    );
    assert!(
        now - expires_at < Duration::from_secs(1),
        "closed {} after the expiry",
        now - expires_at
    );
}

/// The coordinator and the websocket server on one SQLite key database, the websocket
/// server checking open connections every `check_ms`, and a key the coordinator
/// registered for `coordinator-7` in `ws-1`.
struct SharedKeys {
    coordinator: TestServer,
    admin: String,
    server: WsServer,
    database: String,
    key: String,
    key_id: String,
    _dir: TempDir,
}

impl SharedKeys {
    async fn start(check_ms: &str) -> Self {
        let dir = TempDir::new("websocket-shared-keys");
        let database = format!("sqlite://{}", dir.0.join("keys.db").display());
        let (coordinator, admin) = coordinator_on(&database, None).await;
        let server = start(&[
            ("DATABASE_URL", database.as_str()),
            ("WS_SESSION_CHECK_MS", check_ms),
        ])
        .await;
        let (key, key_id) =
            examples_common::register_coordinator(&coordinator, &admin, "coordinator-7", &["ws-1"])
                .await;
        Self {
            coordinator,
            admin,
            server,
            database,
            key,
            key_id,
            _dir: dir,
        }
    }

    /// A socket with the registered key, joined to `ws-1`.
    async fn socket(&self) -> Client {
        coordinator_socket(&self.server, &self.key, "coordinator-7").await
    }
}

#[tokio::test]
async fn a_key_revoked_through_the_coordinator_closes_its_sockets_within_a_second() {
    // Another process on the same SQLite file announces nothing: the check every 250 ms
    // finds the revocation.
    let shared = SharedKeys::start("250").await;
    let mut first = shared.socket().await;
    let mut second = shared.socket().await;
    let SharedKeys {
        coordinator,
        admin,
        server,
        key_id,
        ..
    } = shared;
    let mut other = server.authenticated().await;

    revoke_and_expect_closes(&coordinator, &admin, &key_id, [&mut first, &mut second]).await;
    // The other key's connection goes on.
    join(&mut other, "ws-2").await;
    // Each end is in the audit log, with its reason.
    let closes: Vec<Value> = server
        .audit_events()
        .into_iter()
        .filter(|e| e["action"] == "ws.close")
        .collect();
    assert_eq!(closes.len(), 2, "{closes:?}");
    for close in &closes {
        assert_eq!(close["principal_id"], "coordinator-7");
        assert_eq!(close["reason"], "revoked_credentials");
    }
    coordinator.finish().await;
}

#[tokio::test]
async fn a_rotated_keys_sockets_close_with_expired_credentials_when_the_overlap_ends() {
    let shared = SharedKeys::start("250").await;
    let mut client = shared.socket().await;
    let SharedKeys {
        coordinator,
        admin,
        server,
        key_id,
        ..
    } = shared;

    let (new_key, expires_at) = rotate(&coordinator, &admin, &key_id, 2).await;
    // The new key works meanwhile, on a connection of its own.
    let mut successor = coordinator_socket(&server, &new_key, "coordinator-7").await;
    expect_closed_at_expiry(&mut client, expires_at).await;
    join(&mut successor, "ws-1").await;
    coordinator.finish().await;
}

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_key_revoked_on_redis_closes_its_sockets_on_every_replica_within_a_second() {
    let redis = redis_server::RedisServer::start();
    let dir = TempDir::new("websocket-redis");
    let unused = format!("sqlite://{}", dir.0.join("unused.db").display());
    let (coordinator, admin) = coordinator_on(&unused, Some(&redis.url())).await;
    // Two websocket replicas on the same Redis, with the default check interval (30 s):
    // only the announcement can close their sockets within a second.
    let a = start(&[("REDIS_URL", redis.url().as_str())]).await;
    let b = start(&[("REDIS_URL", redis.url().as_str())]).await;
    let (key, key_id) =
        examples_common::register_coordinator(&coordinator, &admin, "coordinator-7", &["ws-1"])
            .await;
    let mut on_a = coordinator_socket(&a, &key, "coordinator-7").await;
    let mut on_b = coordinator_socket(&b, &key, "coordinator-7").await;
    let mut other_on_b = b.authenticated().await;

    revoke_and_expect_closes(&coordinator, &admin, &key_id, [&mut on_a, &mut on_b]).await;
    join(&mut other_on_b, "ws-2").await;

    // A rotation through the coordinator: the old key's socket closes when it expires.
    let (key, key_id) =
        examples_common::register_coordinator(&coordinator, &admin, "coordinator-8", &["ws-1"])
            .await;
    let mut on_b = coordinator_socket(&b, &key, "coordinator-8").await;
    let (_, expires_at) = rotate(&coordinator, &admin, &key_id, 1).await;
    expect_closed_at_expiry(&mut on_b, expires_at).await;
    coordinator.finish().await;
}

#[tokio::test]
async fn a_workspace_taken_from_an_open_connections_key_is_left_at_its_next_update() {
    use keygate::{KeyId, KeyRegistry, KeyUpdate, SqlRegistry};

    let shared = SharedKeys::start("100").await;
    let mut client = shared.socket().await;
    let SharedKeys {
        coordinator,
        server,
        database,
        key_id,
        ..
    } = shared;
    server.hub.publish(&update("ws-1", "job-1", "running"));
    assert_eq!(
        next_json(&mut client).await,
        update_frame("ws-1", "job-1", "running")
    );

    // Another process (here: another registry on the same file) moves the key to ws-2.
    let registry = SqlRegistry::connect(&database).await.unwrap();
    let key_id = KeyId::parse(&key_id).unwrap();
    registry
        .update(&key_id, KeyUpdate::new().workspaces(["ws-2"]))
        .await
        .unwrap();
    // Updates published until the connection's next check still arrive; the first one
    // after it is replaced by the notice that the workspace was left.
    let deadline = Instant::now() + WAIT;
    let left = loop {
        assert!(Instant::now() < deadline, "ws-1 was never left");
        server.hub.publish(&update("ws-1", "job-1", "running"));
        let message = next_json(&mut client).await;
        if message["type"] == "left" {
            break message;
        }
        assert_eq!(message, update_frame("ws-1", "job-1", "running"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        left,
        json!({ "type": "left", "workspaceId": "ws-1", "reason": "workspace_forbidden" })
    );
    // Nothing more of ws-1; it cannot be joined again; ws-2 can.
    server.hub.publish(&update("ws-1", "job-1", "completed"));
    send(
        &mut client,
        json!({ "type": "join", "workspaceId": "ws-1" }),
    )
    .await;
    let refused = next_json(&mut client).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["reason"], "workspace_forbidden");
    join(&mut client, "ws-2").await;
    server.hub.publish(&update("ws-2", "job-2", "running"));
    assert_eq!(
        next_json(&mut client).await,
        update_frame("ws-2", "job-2", "running")
    );
    let leaves: Vec<Value> = server
        .audit_events()
        .into_iter()
        .filter(|e| e["action"] == "ws.leave")
        .collect();
    assert_eq!(leaves.len(), 1, "{leaves:?}");
    assert_eq!(leaves[0]["workspace"], "ws-1");
    assert_eq!(leaves[0]["reason"], "workspace_forbidden");
    coordinator.finish().await;
}
