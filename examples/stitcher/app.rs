//! The stitcher's API: signed webhooks from the bot, and job dispatch.
//!
//! Used by `main.rs` and, in process, by `tests/stitcher.rs`.
//!
//! | route | who |
//! |---|---|
//! | `GET /stitcher/health` | anyone (the one public route) |
//! | `POST /stitcher/webhook` | the stitcher key **and** a valid `X-Keygate-Signature` |
//! | `POST /stitcher/dispatch` | the stitcher key (for its workspaces, if `STITCHER_WORKSPACES` is set) |
//!
//! The webhook signature is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`
//! with any of the secrets in `STITCHER_WEBHOOK_SECRETS` (several during a rotation),
//! within 300 s of the server's clock. A wrong, missing or malformed signature is 401
//! `invalid_signature`, an old one 401 `stale_signature`, in the guard's JSON shape.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// The example's name: its log lines and default file names start with it.
pub(crate) const NAME: &str = "stitcher";

use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use keygate::{
    ApiKey, AuditEvent, AuditSink, Outcome, Principal, Rejection, webhook::WebhookVerifier,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    self, ApiError, ConfigError, JsonBody, Lookup, Problems, ServerConfig, StartError,
};

/// The stitcher's principal id.
pub(crate) const STITCHER: &str = "stitcher";
/// How many webhook event ids are remembered to acknowledge redeliveries.
pub(crate) const REMEMBERED_EVENTS: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Configuration

/// The stitcher's configuration, from the environment. `Debug` shows no secret (the key
/// prints as `ApiKey([REDACTED])`, the verifier only counts its secrets).
#[derive(Debug)]
pub(crate) struct Config {
    /// `LISTEN_ADDR`, `AUDIT_LOG`, `FAILED_ATTEMPTS_PER_MINUTE`.
    pub(crate) server: ServerConfig,
    /// `STITCHER_API_KEY`.
    pub(crate) stitcher_key: ApiKey,
    /// `STITCHER_WEBHOOK_SECRETS`: the webhook signing secrets, comma-separated.
    pub(crate) webhook: WebhookVerifier,
    /// `STITCHER_WORKSPACES`: the workspaces dispatch may use; any if unset.
    pub(crate) workspaces: Option<Vec<String>>,
}

impl Config {
    /// Reads the configuration through `lookup` (`|name| std::env::var(name).ok()`).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        const SECRETS: &str = "STITCHER_WEBHOOK_SECRETS";
        const SECRETS_HOW: &str = "set it to the webhook signing secret, at least 16 characters \
                                   (e.g. from `openssl rand -base64 32`); during a rotation, \
                                   list the new and the old one separated by a comma";
        // Every variable is read, and every problem reported at once.
        let mut problems = Problems::default();
        let server = problems.check(ServerConfig::from_lookup(NAME, lookup));
        let stitcher_key = problems.check(common::required_key(lookup, "STITCHER_API_KEY"));
        let webhook = problems.check(
            lookup(SECRETS)
                .ok_or(ConfigError::Missing {
                    var: SECRETS,
                    how: SECRETS_HOW,
                })
                .and_then(|secrets| {
                    WebhookVerifier::from_comma_separated(&secrets).map_err(|error| {
                        ConfigError::Invalid {
                            var: SECRETS,
                            problem: error.to_string(),
                            how: SECRETS_HOW,
                        }
                    })
                }),
        );
        let workspaces = problems.check(common::id_list(
            lookup,
            "STITCHER_WORKSPACES",
            "set it to the comma-separated workspace ids dispatch may use, or unset it to \
             allow any",
        ));
        let (Some(server), Some(stitcher_key), Some(webhook), Some(workspaces)) =
            (server, stitcher_key, webhook, workspaces)
        else {
            return Err(problems.into_error());
        };
        Ok(Self {
            server,
            stitcher_key,
            webhook,
            workspaces,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The router

/// The stitcher's router, guarded, auditing every decision and action to
/// `config.server.audit_log`. Its key is registered (idempotently) in the key database of
/// `DATABASE_URL`.
pub(crate) async fn router(config: Config) -> Result<Router, StartError> {
    let audit: Arc<dyn AuditSink> = common::open_audit_log(&config.server)?;
    let restrict_workspaces = config.workspaces.is_some();
    let registry = common::open_registry(&config.server.database_url, None).await?;
    let configured = [common::ConfiguredKey {
        var: "STITCHER_API_KEY",
        key: config.stitcher_key,
        principal: STITCHER,
        workspaces: config.workspaces.unwrap_or_default(),
        scopes: Vec::new(),
    }];
    common::ConfiguredKey::register_all(registry.as_ref(), &configured).await?;
    let guard = common::guard_builder(&config.server, Arc::clone(&audit))
        .registry(registry)
        .public_path("/stitcher/health")
        .build()?;
    let state = AppState {
        webhook: config.webhook,
        restrict_workspaces,
        seen: Arc::default(),
        audit,
    };
    let routes = Router::new()
        .route("/stitcher/health", get(health))
        .route("/stitcher/webhook", post(webhook))
        .route("/stitcher/dispatch", post(dispatch))
        .with_state(state);
    Ok(common::api_defaults(routes).layer(guard))
}

#[derive(Clone)]
struct AppState {
    webhook: WebhookVerifier,
    /// Whether dispatch is limited to the key's workspaces (`STITCHER_WORKSPACES` set).
    restrict_workspaces: bool,
    seen: Arc<Mutex<SeenEvents>>,
    audit: Arc<dyn AuditSink>,
}

impl AppState {
    /// Records a handler's action and passes its result on.
    fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        workspace: Option<&str>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let outcome = if result.is_ok() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        };
        let mut event = AuditEvent::new(action, outcome).with_principal(principal);
        if let Some(workspace) = workspace {
            event = event.with_workspace(workspace);
        }
        if let Err(error) = &result {
            event = event.with_reason(error.reason());
        }
        self.audit.record(event);
        result
    }
}

/// The ids of the last [`REMEMBERED_EVENTS`] webhook events: a sender that retries (or a
/// replay inside the signature's tolerance) is acknowledged without acting twice.
#[derive(Debug, Default)]
struct SeenEvents {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenEvents {
    /// Remembers `id`; `false` if it was seen already.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == REMEMBERED_EVENTS
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_owned());
        self.order.push_back(id.to_owned());
        true
    }
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

// ---------------------------------------------------------------------------------------
// Webhook

/// What the bot posts.
///
/// Fields this receiver does not know are ignored, not refused: a sender may add fields
/// to its events at any time, and a receiver that refused them would break on the
/// sender's next release. A body that is not an object, or lacks `id` or `type`, is
/// still refused (422).
#[derive(Debug, Deserialize)]
struct WebhookEvent {
    /// The sender's id for the event, the same on every delivery of it.
    id: String,
    /// What happened, e.g. `job.ready`.
    #[serde(rename = "type")]
    kind: String,
    /// The event's details (not interpreted by this example).
    #[serde(default)]
    #[expect(dead_code, reason = "a real stitcher would act on it")]
    data: Option<Value>,
}

async fn webhook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let result = body
        .map_err(ApiError::from)
        .and_then(|body| receive(&state, &headers, &body));
    state.audited(&principal, "webhook.receive", None, result)
}

/// Checks the signature over the raw body, then the event: 202 for a new event, 200 for
/// one delivered before.
fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(StatusCode, Json<Value>), ApiError> {
    // The raw bytes, exactly as received, before anything parses them.
    state
        .webhook
        .verify_headers(headers, body)
        .map_err(|error| ApiError::Rejected(error.into()))?;
    let event: WebhookEvent = common::parse_json(body)?;
    if !common::is_valid_id(&event.id) || !common::is_valid_id(&event.kind) {
        return Err(ApiError::invalid_body(
            "`id` and `type` must be 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let first = state
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(&event.id);
    // A real stitcher would queue the work the event describes here, once per event id.
    let status = if first {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let answer = json!({ "received": event.id, "type": event.kind, "duplicate": !first });
    Ok((status, Json(answer)))
}

// ---------------------------------------------------------------------------------------
// Dispatch

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Dispatch {
    workspace_id: String,
    #[serde(default)]
    job_id: Option<String>,
}

async fn dispatch(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<Dispatch>,
) -> Result<impl IntoResponse, ApiError> {
    let workspace = request.workspace_id.clone();
    let result = dispatch_job(&state, &principal, request);
    state.audited(&principal, "job.dispatch", Some(&workspace), result)
}

/// Hands a job to a worker (here: makes up a dispatch id) after the workspace check.
fn dispatch_job(
    state: &AppState,
    principal: &Principal,
    request: Dispatch,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if state.restrict_workspaces {
        principal.require_workspace(&request.workspace_id)?;
    }
    let ids_valid = common::is_valid_id(&request.workspace_id)
        && request.job_id.as_deref().is_none_or(common::is_valid_id);
    if !ids_valid {
        return Err(ApiError::invalid_body(
            "`workspaceId` and `jobId` must be 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let mut id = [0_u8; 8];
    getrandom::fill(&mut id).map_err(|_| {
        ApiError::Rejected(Rejection::AuthUnavailable {
            retry_after: Duration::from_secs(1),
        })
    })?;
    let answer = json!({
        "dispatchId": format!("dsp_{}", hex::encode(id)),
        "workspaceId": request.workspace_id,
        "jobId": request.job_id,
    });
    Ok((StatusCode::ACCEPTED, Json(answer)))
}
