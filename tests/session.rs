//! Live sessions (feature `session`), black box: a real WebSocket server on loopback
//! (axum, keygate's guard in front of the upgrade, a `Session` per connection) and a real
//! WebSocket client (tokio-tungstenite). A session must close its socket when its key is
//! revoked, deleted or expires: within a second where the registry announces changes (in
//! memory; Redis across two replicas), at the next check where it cannot.
#![cfg(feature = "session")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Extension, Router,
    extract::{
        State,
        ws::{self, CloseFrame, WebSocket, WebSocketUpgrade},
    },
    response::Response,
    routing::get,
};
use futures_util::{SinkExt, StreamExt};
use keygate::{
    ApiKeyGuard, BackendFuture, InMemoryRegistry, KeyDigest, KeyGrant, KeyId, KeyLookup,
    KeyRegistry, Principal, RegistryError,
    limit::{InMemoryRateLimit, Quota, Tiers},
    registry::LookupFuture,
    session::{Session, Sessions},
};
use support::CountingRegistry;
use time::OffsetDateTime;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, protocol::frame::coding::CloseCode},
};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a test waits for anything before it fails.
const WAIT: Duration = Duration::from_secs(5);
/// A check interval no test waits for: only an announcement (or the expiry) can end a
/// session under it.
const NEVER: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// The server under test

/// `GET /ws`: behind the guard (the key in `X-API-Key`); the connection then echoes every
/// text message its principal's budget allows, answers `refused` to the others, and is
/// closed with the session's end.
fn app(guard: ApiKeyGuard, sessions: Sessions) -> Router {
    Router::new()
        .route("/ws", get(upgrade))
        .with_state(sessions)
        .layer(guard)
}

async fn upgrade(
    State(sessions): State<Sessions>,
    Extension(principal): Extension<Principal>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let session = sessions.start(principal);
    upgrade.on_upgrade(move |socket| run(socket, session))
}

async fn run(mut socket: WebSocket, mut session: Session) {
    loop {
        tokio::select! {
            end = session.ended() => {
                let frame = CloseFrame {
                    code: end.websocket_close_code(),
                    reason: end.reason().into(),
                };
                let _ = socket.send(ws::Message::Close(Some(frame))).await;
                return;
            }
            message = socket.recv() => match message {
                Some(Ok(ws::Message::Text(text))) => {
                    let answer = match session.spend_message().await {
                        Ok(()) => text,
                        Err(refused) if refused.should_close() => {
                            let frame = CloseFrame {
                                code: refused.websocket_close_code(),
                                reason: refused.reason().into(),
                            };
                            let _ = socket.send(ws::Message::Close(Some(frame))).await;
                            return;
                        }
                        Err(refused) => format!("refused {}", refused.refused_in_a_row()).into(),
                    };
                    if socket.send(ws::Message::Text(answer)).await.is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// Serves `app` on a loopback port.
async fn serve(app: Router) -> SocketAddr {
    let (listener, addr) = support::loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Opens `/ws` on `addr` with `key`.
async fn connect(addr: SocketAddr, key: &str) -> Client {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    let (client, _) = tokio::time::timeout(WAIT, connect_async(request))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    client
}

/// Sends `text` and returns the answer.
async fn echo(client: &mut Client, text: &str) -> String {
    client.send(Message::text(text)).await.unwrap();
    match tokio::time::timeout(WAIT, client.next()).await {
        Ok(Some(Ok(Message::Text(answer)))) => answer.to_string(),
        other => panic!("expected an answer to {text:?}, got {other:?}"),
    }
}

/// Waits for the server's close frame; returns its code, reason, and when it came.
async fn closed(client: &mut Client) -> (CloseCode, String, Instant) {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (frame.code, frame.reason.to_string(), Instant::now());
            }
            Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected message {text}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Issues a key for `principal` in `registry`; returns the key and its id.
async fn issue(registry: &impl KeyRegistry, grant: KeyGrant) -> (String, KeyId) {
    let issued = registry.issue(grant).await.unwrap();
    (issued.key.expose_secret().to_owned(), issued.record.key_id)
}

fn guard_on(registry: impl KeyLookup) -> ApiKeyGuard {
    ApiKeyGuard::builder().registry(registry).build().unwrap()
}

/// An in-memory registry and the server on it, with a check interval no test waits for.
async fn in_memory_server() -> (Arc<InMemoryRegistry>, SocketAddr) {
    let registry = Arc::new(InMemoryRegistry::new());
    let sessions = Sessions::builder(Arc::clone(&registry))
        .check_every(NEVER)
        .build();
    let addr = serve(app(guard_on(Arc::clone(&registry)), sessions)).await;
    (registry, addr)
}

/// Expects `client` to be closed with 1008 `revoked_credentials` within a second of
/// `since`.
async fn expect_revoked_within_a_second(client: &mut Client, since: Instant) {
    let (code, reason, at) = closed(client).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "revoked_credentials")
    );
    assert!(
        at - since < Duration::from_secs(1),
        "closed {:?} after the revocation",
        at - since
    );
}

/// Expects `client` to be closed with 1008 `expired_credentials` at `expires_at`: not
/// before, and within a second after.
async fn expect_expired_at(client: &mut Client, expires_at: OffsetDateTime) {
    let (code, reason, _) = closed(client).await;
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "expired_credentials")
    );
    assert!(now >= expires_at, "closed {} early", expires_at - now);
    assert!(
        now - expires_at < Duration::from_secs(1),
        "closed {} after the expiry",
        now - expires_at
    );
}

// ---------------------------------------------------------------------------------------
// In memory: the registry announces its own changes

#[tokio::test]
async fn revoking_a_key_closes_every_socket_of_that_key_within_a_second_and_no_other() {
    let (registry, addr) = in_memory_server().await;
    let (revoked_key, revoked_id) = issue(&*registry, KeyGrant::new("browser-1")).await;
    let (other_key, _) = issue(&*registry, KeyGrant::new("browser-2")).await;

    let mut first = connect(addr, &revoked_key).await;
    let mut second = connect(addr, &revoked_key).await;
    let mut other = connect(addr, &other_key).await;
    assert_eq!(echo(&mut first, "hello").await, "hello");
    assert_eq!(echo(&mut second, "hello").await, "hello");

    let revoked_at = Instant::now();
    registry
        .revoke(&revoked_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    for client in [&mut first, &mut second] {
        expect_revoked_within_a_second(client, revoked_at).await;
    }
    // The other key's connection goes on, and the revoked key cannot open a new one.
    assert_eq!(echo(&mut other, "still here").await, "still here");
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("x-api-key", revoked_key.parse().unwrap());
    let refused = connect_async(request).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
}

#[tokio::test]
async fn deleting_a_key_closes_its_sockets_as_revoked_but_an_update_does_not() {
    let (registry, addr) = in_memory_server().await;
    let (key, key_id) = issue(&*registry, KeyGrant::new("browser-1").workspaces(["ws-1"])).await;
    let mut client = connect(addr, &key).await;

    // A change that leaves the key active is checked and the connection goes on.
    registry
        .update(
            &key_id,
            keygate::KeyUpdate::new().workspaces(["ws-1", "ws-2"]),
        )
        .await
        .unwrap();
    assert_eq!(echo(&mut client, "after update").await, "after update");

    let deleted_at = Instant::now();
    registry.delete(&key_id).await.unwrap();
    expect_revoked_within_a_second(&mut client, deleted_at).await;
}

#[tokio::test]
async fn an_expiring_key_closes_its_sockets_at_expiry_not_before() {
    let (registry, addr) = in_memory_server().await;
    let expires_at = OffsetDateTime::now_utc() + Duration::from_millis(1500);
    let (key, _) = issue(
        &*registry,
        KeyGrant::new("browser-1").expires_at(expires_at),
    )
    .await;
    let mut client = connect(addr, &key).await;

    assert_eq!(echo(&mut client, "before").await, "before");
    expect_expired_at(&mut client, expires_at).await;
}

#[tokio::test]
async fn an_expiry_set_on_an_open_session_ends_it_then_and_an_extension_keeps_it() {
    let (registry, addr) = in_memory_server().await;
    let (key, key_id) = issue(&*registry, KeyGrant::new("browser-1")).await;
    let mut client = connect(addr, &key).await;
    assert_eq!(echo(&mut client, "open").await, "open");

    // An expiry in 300 ms, then (before it) moved to 1.3 s: the session follows.
    let soon = OffsetDateTime::now_utc() + Duration::from_millis(300);
    registry.set_expiry(&key_id, Some(soon)).await.unwrap();
    let later = OffsetDateTime::now_utc() + Duration::from_millis(1300);
    registry.set_expiry(&key_id, Some(later)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(echo(&mut client, "still open").await, "still open");

    expect_expired_at(&mut client, later).await;
}

// ---------------------------------------------------------------------------------------
// A registry that cannot announce: checked every interval

#[tokio::test]
async fn without_announcements_a_revocation_is_found_by_the_periodic_check() {
    // `CountingRegistry` forwards lookups to an in-memory registry, but not its
    // announcements.
    let registry = Arc::new(CountingRegistry::default());
    assert!(registry.changes().is_none());
    let sessions = Sessions::builder(Arc::clone(&registry))
        .check_every(Duration::from_millis(200))
        .build();
    let addr = serve(app(guard_on(Arc::clone(&registry)), sessions)).await;
    let (key, key_id) = issue(&registry.inner, KeyGrant::new("browser-1")).await;
    let mut client = connect(addr, &key).await;

    let lookups = registry.lookups_by_id();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let checks = registry.lookups_by_id() - lookups;
    assert!(
        (2..=5).contains(&checks),
        "{checks} checks in 700 ms at one per 200 ms"
    );
    assert_eq!(echo(&mut client, "open").await, "open");

    registry
        .revoke(&key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let (code, reason, _) = closed(&mut client).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "revoked_credentials")
    );
}

/// An in-memory registry whose lookups can be made to fail, as a store that is down.
#[derive(Debug, Default)]
struct FlakyRegistry {
    inner: InMemoryRegistry,
    down: AtomicBool,
}

impl KeyLookup for FlakyRegistry {
    fn find_by_id(&self, key_id: &KeyId) -> LookupFuture {
        if self.down.load(Ordering::SeqCst) {
            return BackendFuture::ready(Err(RegistryError::Unavailable("down".into())));
        }
        self.inner.find_by_id(key_id)
    }

    fn find_by_digest(&self, digest: &KeyDigest) -> LookupFuture {
        if self.down.load(Ordering::SeqCst) {
            return BackendFuture::ready(Err(RegistryError::Unavailable("down".into())));
        }
        self.inner.find_by_digest(digest)
    }
}

#[tokio::test]
async fn a_key_that_cannot_be_checked_for_a_whole_interval_ends_the_session_with_1013() {
    let registry = Arc::new(FlakyRegistry::default());
    let sessions = Sessions::builder(Arc::clone(&registry))
        .check_every(Duration::from_millis(300))
        .build();
    let addr = serve(app(guard_on(Arc::clone(&registry)), sessions)).await;
    let (key, _) = issue(&registry.inner, KeyGrant::new("browser-1")).await;
    let mut client = connect(addr, &key).await;
    assert_eq!(echo(&mut client, "open").await, "open");

    registry.down.store(true, Ordering::SeqCst);
    let down_at = Instant::now();
    let (code, reason, at) = closed(&mut client).await;
    assert_eq!(code, CloseCode::Again);
    assert_eq!(reason, "auth_unavailable");
    // Not at the first failed check: only after failing for a whole interval.
    assert!(
        at - down_at >= Duration::from_millis(300),
        "closed {:?} after the outage began",
        at - down_at
    );
}

// ---------------------------------------------------------------------------------------
// The message budget and the authentication deadline

#[tokio::test]
async fn the_message_budget_is_per_principal_and_a_client_that_keeps_going_is_closed() {
    let registry = Arc::new(InMemoryRegistry::new());
    let three = NonZeroU32::new(3).unwrap();
    let sessions = Sessions::builder(Arc::clone(&registry))
        .messages(InMemoryRateLimit::new(Tiers::new(Quota::per_minute(three))))
        .close_after_refused(2)
        .build();
    let addr = serve(app(guard_on(Arc::clone(&registry)), sessions)).await;
    let (key, _) = issue(&*registry, KeyGrant::new("browser-1")).await;
    let (other_key, _) = issue(&*registry, KeyGrant::new("browser-2")).await;

    // Two connections of one principal share its budget of 3.
    let mut first = connect(addr, &key).await;
    let mut second = connect(addr, &key).await;
    assert_eq!(echo(&mut first, "1").await, "1");
    assert_eq!(echo(&mut second, "2").await, "2");
    assert_eq!(echo(&mut first, "3").await, "3");
    assert_eq!(echo(&mut second, "4").await, "refused 1");
    assert_eq!(echo(&mut second, "5").await, "refused 2");
    // The third refusal in a row is past `close_after_refused(2)`.
    second.send(Message::text("6")).await.unwrap();
    let (code, reason, _) = closed(&mut second).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Policy, "rate_limited"));
    // Another principal has a budget of its own.
    let mut other = connect(addr, &other_key).await;
    assert_eq!(echo(&mut other, "a").await, "a");
}

#[tokio::test]
async fn a_connection_that_does_not_authenticate_in_time_loses_its_place() {
    let sessions = Sessions::builder(InMemoryRegistry::new())
        .auth_deadline(Duration::from_millis(200))
        .max_pending(1)
        .build();
    let place = sessions.pending().unwrap();
    let deadline = place.deadline();
    // The only place is taken: the next connection is refused before it is accepted.
    assert_eq!(sessions.pending().unwrap_err().reason(), "auth_unavailable");

    let (mut server_side, mut client_side) = tokio::io::duplex(64);
    let read_first_message = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0_u8; 16];
        server_side.read(&mut buf).await
    };
    let timed_out = place.within(read_first_message).await.unwrap_err();
    assert!(tokio::time::Instant::now() >= deadline);
    assert_eq!(timed_out.reason(), "auth_timeout");
    assert_eq!(timed_out.websocket_close_code(), 1008);
    // The place is free again, and a client that answers in time is let through.
    let place = sessions.pending().unwrap();
    use tokio::io::AsyncWriteExt;
    client_side.write_all(b"key").await.unwrap();
    let mut buf = [0_u8; 16];
    let read = place
        .within(async {
            use tokio::io::AsyncReadExt;
            server_side.read(&mut buf).await
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..read], b"key");
}

// ---------------------------------------------------------------------------------------
// Two replicas on one store that announces every replica's changes (Redis, PostgreSQL)

/// Serves `app` for each of two replicas, each on its own connection to one shared store,
/// with a check interval no test waits for; revokes a key through `a` and expects every
/// socket of that key, on both replicas, to close within a second, and another key's
/// socket to stay open; then sets that key's expiry through `a` and expects its socket
/// on `b` to close at that time.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn revocations_on_one_replica_close_sockets_on_both<R: KeyRegistry>(a: Arc<R>, b: Arc<R>) {
    let mut addrs = Vec::new();
    for registry in [&a, &b] {
        let sessions = Sessions::builder(Arc::clone(registry))
            .check_every(NEVER)
            .build();
        addrs.push(serve(app(guard_on(Arc::clone(registry)), sessions)).await);
    }
    let (key, key_id) = issue(&*a, KeyGrant::new("browser-1")).await;
    let (other_key, other_id) = issue(&*a, KeyGrant::new("browser-2")).await;
    let mut on_a = connect(addrs[0], &key).await;
    let mut on_b = connect(addrs[1], &key).await;
    let mut other_on_b = connect(addrs[1], &other_key).await;
    assert_eq!(echo(&mut on_b, "open").await, "open");

    let revoked_at = Instant::now();
    a.revoke(&key_id, OffsetDateTime::now_utc()).await.unwrap();
    for client in [&mut on_b, &mut on_a] {
        expect_revoked_within_a_second(client, revoked_at).await;
    }
    assert_eq!(echo(&mut other_on_b, "still here").await, "still here");

    // An expiry set through replica a ends the other key's session on b at that time.
    let expires_at = OffsetDateTime::now_utc() + Duration::from_millis(800);
    a.set_expiry(&other_id, Some(expires_at)).await.unwrap();
    expect_expired_at(&mut other_on_b, expires_at).await;
}

/// Waits until `listening` says the replica receives the store's announcements.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn until_listening(listening: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !listening() {
        assert!(Instant::now() < deadline, "the replica never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(feature = "redis")]
#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_key_revoked_on_one_redis_replica_closes_its_sockets_on_the_other_within_a_second() {
    use keygate::redis::RedisRegistry;

    let redis = redis_server::RedisServer::start();
    let a = Arc::new(RedisRegistry::connect(redis.url()).await.unwrap());
    let b = Arc::new(RedisRegistry::connect(redis.url()).await.unwrap());
    until_listening(|| a.is_listening() && b.is_listening()).await;
    revocations_on_one_replica_close_sockets_on_both(a, b).await;
}

#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_key_revoked_on_one_postgres_replica_closes_its_sockets_on_the_other_within_a_second() {
    use keygate::SqlRegistry;

    let postgres = postgres_server::PostgresServer::start();
    let a = Arc::new(SqlRegistry::connect(&postgres.url()).await.unwrap());
    let b = Arc::new(SqlRegistry::connect(&postgres.url()).await.unwrap());
    until_listening(|| a.is_listening() && b.is_listening()).await;
    revocations_on_one_replica_close_sockets_on_both(a, b).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn on_a_shared_sqlite_file_another_process_change_is_found_by_the_periodic_check() {
    use keygate::SqlRegistry;

    // Two registries on one file: as two processes, neither hears the other's changes,
    // and each serves lookups from its cache for up to its lifetime (10 s). The periodic
    // check reads the file itself.
    let dir = support::TempDir::new("session-sqlite");
    let url = format!("sqlite://{}", dir.0.join("keys.db").display());
    let a = Arc::new(SqlRegistry::connect(&url).await.unwrap());
    let b = Arc::new(SqlRegistry::connect(&url).await.unwrap());
    let sessions = Sessions::builder(Arc::clone(&b))
        .check_every(Duration::from_millis(200))
        .build();
    let addr = serve(app(guard_on(Arc::clone(&b)), sessions)).await;
    let (key, key_id) = issue(&*a, KeyGrant::new("browser-1")).await;
    let mut client = connect(addr, &key).await;
    assert_eq!(echo(&mut client, "open").await, "open");

    let revoked_at = Instant::now();
    a.revoke(&key_id, OffsetDateTime::now_utc()).await.unwrap();
    expect_revoked_within_a_second(&mut client, revoked_at).await;
}
