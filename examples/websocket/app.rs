//! The websocket server: job updates over WebSocket, for the workspaces a key allows.
//!
//! Used by `main.rs` and, in process, by `tests/websocket.rs`.
//!
//! | route | who |
//! |---|---|
//! | `GET /ws` | anyone may connect; the connection then authenticates (see below) |
//! | `POST /ws/publish` | the `WS_API_KEY` key, for its workspaces |
//!
//! Every other path needs the key too (deny by default) and is then a JSON 404.
//!
//! # The protocol
//!
//! Every message is a JSON text frame with a `type`.
//!
//! 1. **Authenticate**, once, either
//!    - in the upgrade request: `X-API-Key: <key>`, `Authorization: Bearer <key>`,
//!      `?token=<key>` (percent-encoded), or a `Sec-WebSocket-Protocol` entry
//!      `keygate.key.<key>`, or `keygate.key.b64.<base64url(key), no padding>` for keys
//!      with `/`, `+` or `=` (for browsers, which cannot set headers; the server selects
//!      that entry, as the handshake requires), or
//!    - with none of those, as the first message, within `WS_AUTH_TIMEOUT_MS`:
//!      `{"type":"auth","key":"<key>"}`.
//!
//!    The server answers `{"type":"authenticated","principalId":..,"workspaces":[..]}`.
//!    A refused or malformed key, a first message that is not `auth`, and silence past
//!    the timeout close the connection with code 1008 (policy violation) and the reason
//!    as the close reason (`invalid_credentials`, `auth_timeout`, ...); an
//!    authentication outage closes it with 1013 (try again later). The key never
//!    appears in a close reason or in the audit log.
//! 2. **Join** a workspace: `{"type":"join","workspaceId":"ws-1"}`, answered with
//!    `{"type":"joined","workspaceId":"ws-1"}`, or with
//!    `{"type":"error","reason":"workspace_forbidden",..}` if the key may not use it.
//! 3. **Receive** the job updates of the joined workspaces:
//!    `{"type":"job_update","workspaceId":..,"jobId":..,"status":..}`. A workspace the
//!    key may no longer use (its workspaces were changed while the connection is open)
//!    is left at its next update, with
//!    `{"type":"left","workspaceId":..,"reason":"workspace_forbidden"}`.
//!
//! Errors are `{"type":"error","reason":<machine-readable>,"message":<for humans>}`.
//!
//! An authenticated connection lives as long as its key: it is closed with 1008 and
//! `revoked_credentials` when the key is revoked or deleted (through any route, e.g. the
//! coordinator's `DELETE /admin/keys/{keyId}` on the same key database), and with
//! `expired_credentials` when it expires (e.g. at the end of a rotation's overlap). The
//! key database announces changes where it can: this replica's own changes, and with
//! `REDIS_URL` (or `DATABASE_URL=postgres://…`) every replica's, which close the
//! connections within a second; anything else is found by the periodic check every
//! `WS_SESSION_CHECK_MS` (default 30000). This is keygate's
//! [`Session`](keygate::session::Session).
//!
//! Every frame a client sends costs one message of its principal's budget
//! (`WS_MESSAGES_PER_MINUTE`, shared by all its connections on this replica). A message over budget is
//! answered with `{"type":"error","reason":"rate_limited",..}`; a client that keeps
//! going is disconnected (1008 `rate_limited`): after [`REFUSED_MESSAGES_BEFORE_CLOSE`]
//! such answers in a row, the next refused message closes the connection.
//!
//! An unauthenticated client can send one message of at most [`MAX_MESSAGE_BYTES`], at
//! most [`MAX_PENDING_AUTH`] such connections wait at once, and none creates state
//! beyond its connection: limiter state and workspace channels exist only for
//! authenticated principals and the workspaces they may use.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

/// The example's name: its log lines and default file names start with it.
pub(crate) const NAME: &str = "websocket";

use axum::{
    Extension, Json, Router,
    extract::{
        Request, State,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code,
            rejection::WebSocketUpgradeRejection,
        },
    },
    http::{self, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures_util::{
    StreamExt,
    stream::{self, BoxStream, SelectAll},
};
use keygate::{
    ApiKey, ApiKeyGuard, AuditEvent, AuditSink, Outcome, Principal, Rejection,
    limit::{InMemoryRateLimit, Quota, Tiers},
    session::{self, PendingAuth, SessionEnd, Sessions},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::common::{
    self, ApiError, ConfigError, JsonBody, Lookup, Problems, RedisUrl, ServerConfig, StartError,
};

/// The principal id of the `WS_API_KEY` key.
pub(crate) const CLIENT: &str = "ws-client";
/// The default time a connection has to authenticate.
pub(crate) const DEFAULT_AUTH_TIMEOUT: Duration = session::DEFAULT_AUTH_DEADLINE;
/// The default longest time between two checks of a connection's key.
pub(crate) const DEFAULT_SESSION_CHECK: Duration = session::DEFAULT_CHECK_EVERY;
/// The longest `WS_SESSION_CHECK_MS` accepted: one hour.
pub(crate) const MAX_SESSION_CHECK_MS: u64 = 3_600_000;
/// The longest `WS_AUTH_TIMEOUT_MS` accepted: an unauthenticated connection holds a socket.
pub(crate) const MAX_AUTH_TIMEOUT_MS: u64 = 60_000;
/// The default message budget of a principal, per minute (the burst is the same).
pub(crate) const DEFAULT_MESSAGES_PER_MINUTE: NonZeroU32 = match NonZeroU32::new(120) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};
/// The largest message (and frame) accepted from a client, in bytes.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// How many connections may be waiting for their first message at once; more are refused
/// with 503 `auth_unavailable` before the upgrade.
pub(crate) const MAX_PENDING_AUTH: usize = session::DEFAULT_MAX_PENDING;
/// How many refused messages in a row are answered with an error before the connection
/// is closed.
pub(crate) const REFUSED_MESSAGES_BEFORE_CLOSE: u32 = session::DEFAULT_CLOSE_AFTER_REFUSED;
/// The close reason of a connection that did not authenticate in time.
pub(crate) const AUTH_TIMEOUT: &str = session::AuthTimedOut.reason();
/// The audit action of a decision on a key in the upgrade request.
pub(crate) const ACTION_HANDSHAKE: &str = "GET /ws";
/// The audit action of a decision on a key in the first message.
pub(crate) const ACTION_AUTH_MESSAGE: &str = "ws.auth";
/// How many job updates per workspace wait for a slow connection before it misses some.
const UPDATE_BUFFER: usize = 64;
/// How long a closing connection waits for the client's answering close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Configuration

/// The websocket server's configuration, from the environment. `Debug` shows no secret
/// (the key prints as `ApiKey([REDACTED])`).
#[derive(Debug)]
pub(crate) struct Config {
    /// `LISTEN_ADDR`, `AUDIT_LOG`, `FAILED_ATTEMPTS_PER_MINUTE`.
    pub(crate) server: ServerConfig,
    /// `WS_API_KEY`: the clients' key.
    pub(crate) key: ApiKey,
    /// `WS_WORKSPACES`: the workspaces that key may join and publish to.
    pub(crate) workspaces: Vec<String>,
    /// `WS_AUTH_TIMEOUT_MS`, default 5000: how long a connection has to authenticate.
    pub(crate) auth_timeout: Duration,
    /// `WS_MESSAGES_PER_MINUTE`, default 120: the message budget of a principal.
    pub(crate) messages_per_minute: NonZeroU32,
    /// `WS_SESSION_CHECK_MS`, default 30000: the longest time between two checks of an
    /// open connection's key.
    pub(crate) session_check: Duration,
    /// `REDIS_URL`: the Redis server on which replicas share keys (and announce their
    /// revocations), instead of `DATABASE_URL`.
    pub(crate) redis_url: Option<RedisUrl>,
}

impl Config {
    /// Reads the configuration through `lookup` (`|name| std::env::var(name).ok()`).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        const WORKSPACES_HOW: &str = "set it to the comma-separated workspace ids the \
                                      WS_API_KEY key may join, e.g. WS_WORKSPACES=ws-1,ws-2";
        const TIMEOUT_HOW: &str = "set it to a number of milliseconds from 1 to 60000, or \
                                   unset it for 5000";
        const MESSAGES_HOW: &str = "set it to a positive whole number, or unset it for 120";
        const CHECK_HOW: &str = "set it to a number of milliseconds from 1 to 3600000, or \
                                 unset it for 30000";

        // Every variable is read, and every problem reported at once.
        let mut problems = Problems::default();
        let auth_timeout = problems.check(match lookup("WS_AUTH_TIMEOUT_MS") {
            None => Ok(DEFAULT_AUTH_TIMEOUT),
            Some(value) => value
                .trim()
                .parse()
                .ok()
                .filter(|ms| (1..=MAX_AUTH_TIMEOUT_MS).contains(ms))
                .map(Duration::from_millis)
                .ok_or_else(|| ConfigError::Invalid {
                    var: "WS_AUTH_TIMEOUT_MS",
                    problem: format!("{value:?} is not a whole number from 1 to 60000"),
                    how: TIMEOUT_HOW,
                }),
        });
        let messages_per_minute = problems.check(match lookup("WS_MESSAGES_PER_MINUTE") {
            None => Ok(DEFAULT_MESSAGES_PER_MINUTE),
            Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                var: "WS_MESSAGES_PER_MINUTE",
                problem: format!("{value:?} is not a whole number from 1 to 4294967295"),
                how: MESSAGES_HOW,
            }),
        });
        let session_check = problems.check(match lookup("WS_SESSION_CHECK_MS") {
            None => Ok(DEFAULT_SESSION_CHECK),
            Some(value) => value
                .trim()
                .parse()
                .ok()
                .filter(|ms| (1..=MAX_SESSION_CHECK_MS).contains(ms))
                .map(Duration::from_millis)
                .ok_or_else(|| ConfigError::Invalid {
                    var: "WS_SESSION_CHECK_MS",
                    problem: format!("{value:?} is not a whole number from 1 to 3600000"),
                    how: CHECK_HOW,
                }),
        });
        let redis_url = problems.check(common::redis_url(lookup));
        let server = problems.check(ServerConfig::from_lookup(NAME, lookup));
        let key = problems.check(common::required_key(lookup, "WS_API_KEY"));
        let workspaces = problems.check(
            common::id_list(lookup, "WS_WORKSPACES", WORKSPACES_HOW).and_then(|ids| {
                ids.ok_or(ConfigError::Missing {
                    var: "WS_WORKSPACES",
                    how: WORKSPACES_HOW,
                })
            }),
        );
        let (
            Some(auth_timeout),
            Some(messages_per_minute),
            Some(session_check),
            Some(redis_url),
            Some(server),
            Some(key),
            Some(workspaces),
        ) = (
            auth_timeout,
            messages_per_minute,
            session_check,
            redis_url,
            server,
            key,
            workspaces,
        )
        else {
            return Err(problems.into_error());
        };
        Ok(Self {
            server,
            key,
            workspaces,
            auth_timeout,
            messages_per_minute,
            session_check,
            redis_url,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The router

/// The websocket server's router: `GET /ws` authenticates its connections itself (the key
/// may arrive as the first message, so the HTTP layer must let it through); everything
/// else is behind the guard. Every decision and action goes to the audit log at
/// `config.server.audit_log`; job updates go through `hub`. The key is registered
/// (idempotently) in the key database of `DATABASE_URL`, or on the Redis server of
/// `REDIS_URL`.
pub(crate) async fn router(config: Config, hub: Hub) -> Result<Router, StartError> {
    let audit: Arc<dyn AuditSink> = common::open_audit_log(&config.server)?;
    let registry =
        common::open_registry(&config.server.database_url, config.redis_url.as_ref()).await?;
    let configured = [common::ConfiguredKey {
        var: "WS_API_KEY",
        key: config.key,
        principal: CLIENT,
        workspaces: config.workspaces,
        scopes: Vec::new(),
    }];
    common::ConfiguredKey::register_all(registry.as_ref(), &configured).await?;
    // Every connection's session: checked in the same registry as the guard's keys.
    let sessions = Sessions::builder(Arc::clone(&registry))
        .check_every(config.session_check)
        .auth_deadline(config.auth_timeout)
        .max_pending(MAX_PENDING_AUTH)
        .messages(InMemoryRateLimit::new(Tiers::new(Quota::per_minute(
            config.messages_per_minute,
        ))))
        .close_after_refused(REFUSED_MESSAGES_BEFORE_CLOSE)
        .build();
    let guard = common::guard_builder(&config.server, Arc::clone(&audit))
        .registry(registry)
        .bearer()
        .query("token")
        .websocket_protocol()
        .build()?;
    let state = AppState {
        guard: guard.clone(),
        hub,
        audit,
        sessions,
    };
    let guarded = Router::new()
        .route("/ws/publish", post(publish))
        .with_state(state.clone());
    // The guard wraps the publish route and the fallback (unknown paths need a key too);
    // `/ws` is merged in beside it.
    let guarded = common::api_defaults(guarded).layer(guard);
    Ok(Router::new()
        .route("/ws", get(upgrade))
        .with_state(state)
        .merge(guarded))
}

#[derive(Clone)]
struct AppState {
    guard: ApiKeyGuard,
    hub: Hub,
    audit: Arc<dyn AuditSink>,
    /// The connections' sessions: the authentication deadline and places, the check of
    /// their keys, and the per-principal message budget (apart from the guard's
    /// per-request limit).
    sessions: Sessions,
}

impl AppState {
    /// Records an authentication refusal that the guard did not decide itself (a
    /// malformed handshake credential, no key in time).
    fn record_refusal(&self, action: &str, client_ip: Option<IpAddr>, reason: &str) {
        let mut event = AuditEvent::new(action, Outcome::Refused).with_reason(reason);
        if let Some(ip) = client_ip {
            event = event.with_client_ip(ip);
        }
        self.audit.record(event);
    }

    /// Records a handler's action.
    fn record(
        &self,
        principal: &Principal,
        action: &str,
        workspace: Option<&str>,
        failure: Option<&str>,
    ) {
        let outcome = match failure {
            None => Outcome::Succeeded,
            Some(_) => Outcome::Failed,
        };
        let mut event = AuditEvent::new(action, outcome).with_principal(principal);
        // Only well-formed ids reach the log: the workspace comes from the client.
        if let Some(workspace) = workspace.filter(|w| common::is_valid_id(w)) {
            event = event.with_workspace(workspace);
        }
        if let Some(reason) = failure {
            event = event.with_reason(reason);
        }
        self.audit.record(event);
    }
}

// ---------------------------------------------------------------------------------------
// Job updates

/// A job's new status, as `POST /ws/publish` takes it and [`Hub::publish`] sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct JobUpdate {
    /// The workspace whose joined connections receive it.
    pub(crate) workspace_id: String,
    /// The job.
    pub(crate) job_id: String,
    /// Its status, e.g. `running`.
    pub(crate) status: String,
}

/// Delivers job updates to the connections joined to their workspace: one broadcast
/// channel per workspace, made when the first connection joins it. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hub {
    workspaces: Arc<Mutex<HashMap<String, broadcast::Sender<Utf8Bytes>>>>,
}

impl Hub {
    /// Sends `update` to the connections joined to its workspace, and returns how many
    /// there are.
    pub(crate) fn publish(&self, update: &JobUpdate) -> usize {
        let Some(sender) = self.lock().get(&update.workspace_id).cloned() else {
            return 0;
        };
        let frame = json!({
            "type": "job_update",
            "workspaceId": update.workspace_id,
            "jobId": update.job_id,
            "status": update.status,
        });
        // Serialized once for every receiver; an error means no one is listening.
        sender.send(frame.to_string().into()).unwrap_or(0)
    }

    /// The updates of `workspace`, from now on, each with its workspace.
    fn subscribe(&self, workspace: &str) -> BoxStream<'static, (Arc<str>, Utf8Bytes)> {
        let receiver = self
            .lock()
            .entry(workspace.to_owned())
            .or_insert_with(|| broadcast::channel(UPDATE_BUFFER).0)
            .subscribe();
        let workspace: Arc<str> = workspace.into();
        stream::unfold(receiver, move |mut receiver| {
            let workspace = Arc::clone(&workspace);
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(frame) => return Some(((workspace, frame), receiver)),
                        // A connection too slow to keep up misses the oldest updates; a
                        // job's next update carries its current status anyway.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Utf8Bytes>>> {
        // Each update of the map is one insertion: a poisoned lock is used as it is.
        self.workspaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn publish(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(update): JsonBody<JobUpdate>,
) -> Result<impl IntoResponse, ApiError> {
    let result = principal
        .require_workspace(&update.workspace_id)
        .map_err(ApiError::from)
        .and_then(|()| {
            if common::is_valid_id(&update.job_id) && common::is_valid_id(&update.status) {
                Ok(state.hub.publish(&update))
            } else {
                Err(ApiError::invalid_body(
                    "`jobId` and `status` must be 1 to 64 letters, digits, `-`, `_` or `.`",
                ))
            }
        });
    let failure = result.as_ref().err().map(ApiError::reason);
    state.record(
        &principal,
        "ws.publish",
        Some(&update.workspace_id),
        failure,
    );
    let subscribers = result?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "subscribers": subscribers })),
    ))
}

// ---------------------------------------------------------------------------------------
// The upgrade

/// What the upgrade request said about the caller.
enum Handshake {
    /// It carried a key the guard accepted.
    Admitted(Principal),
    /// It carried a credential that was refused.
    Refused(Rejection),
    /// It carried none: the first message must authenticate. Holds one of the
    /// [`MAX_PENDING_AUTH`] places until then.
    Pending(PendingAuth),
}

async fn upgrade(
    State(state): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    request: Request,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade
            .max_message_size(MAX_MESSAGE_BYTES)
            .max_frame_size(MAX_MESSAGE_BYTES),
        Err(rejection) => {
            let message = rejection.body_text();
            return ApiError::new(rejection.status(), "websocket_required", message)
                .into_response();
        }
    };
    // Only the head matters, and unlike the body it can be shared across an `await`.
    let (head, _body) = request.into_parts();
    let head = http::Request::from_parts(head, ());
    // The address the guard itself would use (through trusted proxies, if configured).
    let client_ip = state.guard.client_ip(&head);
    let (handshake, protocol) = match authenticate_handshake(&state, &head, client_ip).await {
        Ok(authenticated) => authenticated,
        Err(rejection) => return ApiError::from(rejection).into_response(),
    };
    let upgrade = match protocol {
        Some(protocol) => upgrade.protocols([protocol]),
        None => upgrade,
    };
    // A refused connection is upgraded too, and then closed with 1008: a browser sees the
    // close code and reason, never the status of a failed upgrade.
    upgrade.on_upgrade(move |socket| connection(socket, state, handshake, client_ip))
}

/// Authenticates the credential of the upgrade request, if it has one, and returns the
/// `Sec-WebSocket-Protocol` entry to select if the key came in one. `Err` when the
/// connection is not even upgraded: too many connections are waiting for their first
/// message.
async fn authenticate_handshake(
    state: &AppState,
    request: &http::Request<()>,
    client_ip: Option<IpAddr>,
) -> Result<(Handshake, Option<String>), Rejection> {
    let credential = match state.guard.credential(request) {
        Ok(credential) => credential,
        Err(Rejection::MissingCredentials) => {
            // A connection without a key holds a socket for up to the timeout.
            return match state.sessions.pending() {
                Ok(place) => Ok((Handshake::Pending(place), None)),
                Err(busy) => {
                    state.record_refusal(ACTION_HANDSHAKE, client_ip, busy.reason());
                    Err(busy)
                }
            };
        }
        Err(rejection) => {
            // Malformed, ambiguous or duplicated: refused before any lookup.
            state.record_refusal(ACTION_HANDSHAKE, client_ip, rejection.reason());
            return Ok((Handshake::Refused(rejection), None));
        }
    };
    // The entry as the client sent it (`keygate.key.<key>` or `keygate.key.b64.<…>`).
    let protocol = credential.websocket_protocol_entry().map(str::to_owned);
    let handshake = match state
        .guard
        .authenticate(credential.expose_secret(), client_ip, ACTION_HANDSHAKE)
        .await
    {
        Ok(principal) => Handshake::Admitted(principal),
        Err(rejection) => Handshake::Refused(rejection),
    };
    Ok((handshake, protocol))
}

/// Runs one upgraded connection: authentication, then the session.
async fn connection(
    mut socket: WebSocket,
    state: AppState,
    handshake: Handshake,
    client_ip: Option<IpAddr>,
) {
    let authenticated = match handshake {
        Handshake::Admitted(principal) => Ok(principal),
        Handshake::Refused(rejection) => Err(Close::refused(&rejection)),
        Handshake::Pending(place) => {
            authenticate_first_message(&mut socket, &state, place, client_ip).await
        }
    };
    match authenticated {
        Ok(principal) => Feed::new(state, principal).run(socket).await,
        Err(close) => close.send(socket).await,
    }
}

/// What a client sends.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    /// `{"type":"auth","key":"..."}`, as the first message.
    Auth {
        #[serde(deserialize_with = "secret")]
        key: SecretString,
    },
    /// `{"type":"join","workspaceId":"..."}`.
    Join {
        #[serde(rename = "workspaceId")]
        workspace_id: String,
    },
}

/// Keeps a key from a message in a [`SecretString`]: redacted `Debug`, zeroized on drop.
fn secret<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SecretString, D::Error> {
    String::deserialize(deserializer).map(SecretString::from)
}

/// Waits for the first message, which must be `{"type":"auth","key":"..."}`, and
/// authenticates its key. Every way this ends is audited: by the guard when a key was
/// presented, here otherwise.
async fn authenticate_first_message(
    socket: &mut WebSocket,
    state: &AppState,
    place: PendingAuth,
    client_ip: Option<IpAddr>,
) -> Result<Principal, Close> {
    let refuse = |reason: &'static str| {
        state.record_refusal(ACTION_AUTH_MESSAGE, client_ip, reason);
        Close::policy(reason)
    };
    let no_key = Rejection::MissingCredentials.reason();
    // The place is given back when the first message is in (or the deadline passed).
    let key = match place.within(socket.recv()).await {
        Err(_timed_out) => return Err(refuse(AUTH_TIMEOUT)),
        Ok(Some(Ok(Message::Text(text)))) => match serde_json::from_str(&text) {
            Ok(ClientMessage::Auth { key }) => key,
            _ => return Err(refuse(no_key)),
        },
        // Any other message first, or the client gone.
        Ok(_) => return Err(refuse(no_key)),
    };
    state
        .guard
        .authenticate(key.expose_secret(), client_ip, ACTION_AUTH_MESSAGE)
        .await
        .map_err(|rejection| Close::refused(&rejection))
}

/// How the server closes a connection.
#[derive(Debug)]
struct Close {
    code: u16,
    reason: &'static str,
}

impl Close {
    /// 1008 (policy violation) with `reason`.
    fn policy(reason: &'static str) -> Self {
        Self {
            code: close_code::POLICY,
            reason,
        }
    }

    /// The end of a session: 1008 when its key was revoked or expired, 1013 when it
    /// could not be checked.
    fn ended(end: SessionEnd) -> Self {
        Self {
            code: end.websocket_close_code(),
            reason: end.reason(),
        }
    }

    /// 1008 with the rejection's reason, or 1013 (try again later) when authentication
    /// is unavailable: an outage never looks like a bad key.
    fn refused(rejection: &Rejection) -> Self {
        let code = if rejection.status() == StatusCode::SERVICE_UNAVAILABLE {
            close_code::AGAIN
        } else {
            close_code::POLICY
        };
        Self {
            code,
            reason: rejection.reason(),
        }
    }

    /// Sends the close frame and waits briefly for the client's answer.
    async fn send(self, mut socket: WebSocket) {
        let frame = CloseFrame {
            code: self.code,
            reason: Utf8Bytes::from_static(self.reason),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Whatever the client still sends is discarded.
            let drain = async { while let Some(Ok(_)) = socket.recv().await {} };
            let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The feed

/// An authenticated connection: its session (which ends with its key) and the job
/// updates of the workspaces it joined.
struct Feed {
    state: AppState,
    session: session::Session,
    /// The workspaces whose updates are delivered.
    joined: Vec<String>,
    /// The workspaces subscribed to (joined once; a workspace left stays subscribed, and
    /// its updates are dropped).
    subscribed: Vec<String>,
    /// The updates of every subscribed workspace, merged.
    updates: SelectAll<BoxStream<'static, (Arc<str>, Utf8Bytes)>>,
}

/// What the feed does after a client's message.
enum Reply {
    Nothing,
    Send(Value),
    /// A job update, as published.
    Forward(Utf8Bytes),
    Close(Close),
}

impl Reply {
    fn error(reason: &str, message: &str) -> Self {
        Self::Send(json!({ "type": "error", "reason": reason, "message": message }))
    }
}

impl Feed {
    fn new(state: AppState, principal: Principal) -> Self {
        Self {
            session: state.sessions.start(principal),
            state,
            joined: Vec::new(),
            subscribed: Vec::new(),
            updates: SelectAll::new(),
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        let principal = self.session.principal();
        let hello = json!({
            "type": "authenticated",
            "principalId": principal.id(),
            "workspaces": principal.workspaces(),
        });
        if socket.send(text(&hello)).await.is_err() {
            return;
        }
        loop {
            let reply = tokio::select! {
                end = self.session.ended() => {
                    let reason = end.reason();
                    self.state.record(self.session.principal(), "ws.close", None, Some(reason));
                    Reply::Close(Close::ended(end))
                }
                received = socket.recv() => match received {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(message)) => self.on_message(message).await,
                },
                Some((workspace, update)) = self.updates.next() => self.deliver(&workspace, update),
            };
            match reply {
                Reply::Nothing => {}
                Reply::Forward(update) => {
                    if socket.send(Message::Text(update)).await.is_err() {
                        return;
                    }
                }
                Reply::Send(value) => {
                    if socket.send(text(&value)).await.is_err() {
                        return;
                    }
                }
                Reply::Close(close) => return close.send(socket).await,
            }
        }
    }

    async fn on_message(&mut self, message: Message) -> Reply {
        if let Err(refused) = self.session.spend_message().await {
            let reason = refused.reason();
            if refused.should_close() {
                self.state
                    .record(self.session.principal(), "ws.close", None, Some(reason));
                return Reply::Close(Close::policy(reason));
            }
            return Reply::error(reason, "too many messages; slow down");
        }
        match message {
            Message::Text(text) => match serde_json::from_str(&text) {
                Ok(ClientMessage::Join { workspace_id }) => self.join(workspace_id),
                Ok(ClientMessage::Auth { .. }) => Reply::error(
                    "already_authenticated",
                    "this connection is authenticated already",
                ),
                Err(_) => Reply::error(
                    "invalid_message",
                    r#"expected {"type":"join","workspaceId":"..."}"#,
                ),
            },
            Message::Binary(_) => Reply::error("invalid_message", "messages are JSON text"),
            // Pings are answered by the WebSocket layer itself; pongs need no answer.
            _ => Reply::Nothing,
        }
    }

    fn join(&mut self, workspace: String) -> Reply {
        if !common::is_valid_id(&workspace) {
            return Reply::error(
                "invalid_message",
                "`workspaceId` must be 1 to 64 letters, digits, `-`, `_` or `.`",
            );
        }
        let principal = self.session.principal();
        if let Err(rejection) = principal.require_workspace(&workspace) {
            let reason = rejection.reason();
            self.state
                .record(principal, "ws.join", Some(&workspace), Some(reason));
            return Reply::error(reason, &rejection.message());
        }
        if !self.joined.contains(&workspace) {
            if !self.subscribed.contains(&workspace) {
                self.updates.push(self.state.hub.subscribe(&workspace));
                self.subscribed.push(workspace.clone());
            }
            self.state
                .record(principal, "ws.join", Some(&workspace), None);
            self.joined.push(workspace.clone());
        }
        Reply::Send(json!({ "type": "joined", "workspaceId": workspace }))
    }

    /// An update of `workspace`: forwarded if the connection joined it and its key may
    /// still use it (the session refreshes the principal when the key changes); a
    /// workspace the key may no longer use is left.
    fn deliver(&mut self, workspace: &str, update: Utf8Bytes) -> Reply {
        let Some(index) = self.joined.iter().position(|joined| joined == workspace) else {
            return Reply::Nothing;
        };
        let principal = self.session.principal();
        if principal.may_use_workspace(workspace) {
            return Reply::Forward(update);
        }
        self.joined.swap_remove(index);
        let reason = Rejection::WorkspaceForbidden.reason();
        self.state
            .record(principal, "ws.leave", Some(workspace), Some(reason));
        Reply::Send(json!({ "type": "left", "workspaceId": workspace, "reason": reason }))
    }
}

fn text(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}
