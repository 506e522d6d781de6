//! The coordinator's API: jobs kept in memory and isolated by workspace, and the admin
//! routes that register coordinators and rotate or revoke their keys.
//!
//! Used by `main.rs` and, in process, by `tests/coordinator.rs`.
//!
//! | route | who |
//! |---|---|
//! | `GET /coordinator/health` | anyone (the one public route) |
//! | `POST /coordinator/jobs`, `GET /coordinator/jobs/{id}`, `PATCH /coordinator/jobs/{id}/status` and `/progress`, `POST /coordinator/jobs/{id}/complete`, `/fail`, `/retry` | a coordinator key, for the workspaces it may use |
//! | `POST /admin/coordinators`, `POST /admin/keys/{keyId}/rotate`, `DELETE /admin/keys/{keyId}` | a key with scope `admin` |
//!
//! Workspace isolation: creating a job in a workspace the key may not use is 403
//! `workspace_forbidden`; a job of such a workspace is answered exactly like a job that
//! does not exist (404 `not_found`), so that ids cannot be probed.
//!
//! # One process or several replicas
//!
//! Without `REDIS_URL`, keys live in the database of `DATABASE_URL` (an SQLite file by
//! default, so they survive restarts; on PostgreSQL, shared by every replica, revocations
//! announced with `NOTIFY`) and rate limits in this process's memory. With `REDIS_URL`
//! (and the crate built with `--features redis`), several copies of the coordinator can
//! run behind one address and share, through that Redis server:
//!
//! - **keys** ([`RedisRegistry`](keygate::redis::RedisRegistry)): a coordinator registered,
//!   or a key rotated, through one replica works on every replica at once, and a key
//!   revoked through one is refused by all of them within milliseconds (at the latest
//!   when the local cache entry expires, 10 s, if a replica missed the message);
//! - **the request limit** ([`RedisRateLimit`](keygate::redis::RedisRateLimit)): at
//!   most 100 requests in any 60 seconds per principal across all replicas, not per
//!   replica.
//!
//! The configured keys (`COORDINATOR_API_KEY`, `ADMIN_API_KEY`) are registered by the
//! first replica; the others find them registered and accept them if the registry has
//! them for the same principal (see [`ConfiguredKey`]); on Redis they are registered again
//! every 2 s, in case Redis restarted empty. A revoked configured key stays revoked when a
//! replica restarts.
//!
//! What is **not** shared:
//!
//! - **Jobs** are kept in each process's memory, for the example: a job created through
//!   one replica is unknown to the others. A real service keeps them in a database that
//!   every replica uses. Each workspace keeps at most `MAX_JOBS_PER_WORKSPACE` of
//!   them (per replica; see [`Jobs`]).
//! - **The failed-attempt limiter** stays per process, on purpose: it is a local
//!   brute-force brake, keyed by client address, that answers before any registry lookup.
//!   Kept in memory, it costs nothing per refused request, and a flood of bad keys puts no
//!   load on Redis, which every replica depends on; spread over `n` replicas, an attacker
//!   gets `n` times the allowance, which changes nothing against 256-bit keys.
//! - **The audit log**: each replica writes its own hash chain (give each its own
//!   `AUDIT_LOG`); a real deployment ships them to one store.
//! - **The admin lock**: the admin routes serialize their read-then-write updates within
//!   one replica only, so two replicas asked at the same moment to register the same name
//!   may both succeed. A real service makes the name unique in its database.
//!
//! If Redis cannot be reached, guarded requests are refused with 503 `auth_unavailable`
//! (the limit fails closed) until it answers again; nothing needs restarting.

use std::{
    collections::{HashMap, VecDeque},
    num::NonZeroUsize,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

/// The example's name: its log lines and default file names start with it.
pub(crate) const NAME: &str = "coordinator";

use axum::{
    Extension, Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{delete, get, patch, post},
};
use keygate::{
    ApiKey, AuditEvent, AuditSink, IssuedKey, KeyGrant, KeyId, KeyRegistry, KeyStatus, Outcome,
    Principal, RateLimit, RegistryError, Rejection, require::RequireScope,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::common::{
    self, ApiError, ConfigError, ConfiguredKey, JsonBody, Lookup, PathParam, Problems, RedisUrl,
    ServerConfig, StartError,
};

/// The principal id of the coordinator whose key is configured in the environment.
pub(crate) const FIRST_COORDINATOR: &str = "coordinator";
/// The principal id of the administrator.
pub(crate) const ADMIN: &str = "admin";
/// The scope of the admin routes.
pub(crate) const ADMIN_SCOPE: &str = "admin";
/// The longest key-rotation overlap accepted: one week.
pub(crate) const MAX_OVERLAP_SECONDS: u64 = 7 * 24 * 3600;
/// The most workspaces one coordinator may be given.
pub(crate) const MAX_WORKSPACES: usize = 100;
/// The longest failure message accepted, in bytes.
pub(crate) const MAX_ERROR_LEN: usize = 4096;
/// The default of `MAX_JOBS_PER_WORKSPACE`.
pub(crate) const DEFAULT_MAX_JOBS_PER_WORKSPACE: NonZeroUsize = match NonZeroUsize::new(10_000) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};
/// The largest `MAX_JOBS_PER_WORKSPACE` accepted.
pub(crate) const MAX_MAX_JOBS_PER_WORKSPACE: usize = 1_000_000;

// ---------------------------------------------------------------------------------------
// Configuration

/// The coordinator's configuration, from the environment. `Debug` shows no secret (keys
/// print as `ApiKey([REDACTED])`, the Redis URL without its password).
#[derive(Debug)]
pub(crate) struct Config {
    /// `LISTEN_ADDR`, `AUDIT_LOG`, `FAILED_ATTEMPTS_PER_MINUTE`.
    pub(crate) server: ServerConfig,
    /// `COORDINATOR_API_KEY`: the key of the first coordinator.
    pub(crate) coordinator_key: ApiKey,
    /// `COORDINATOR_WORKSPACES`: the workspaces the first coordinator may use.
    pub(crate) coordinator_workspaces: Vec<String>,
    /// `ADMIN_API_KEY`: the key with scope `admin`.
    pub(crate) admin_key: ApiKey,
    /// `REDIS_URL`: the Redis server on which replicas share keys and rate limits
    /// (printed with its password redacted); `None` keeps them in memory.
    pub(crate) redis_url: Option<RedisUrl>,
    /// `MAX_JOBS_PER_WORKSPACE`: the most jobs one workspace keeps (default 10,000). At
    /// the cap, a new job evicts the workspace's oldest finished job (completed, failed or
    /// cancelled); with none finished, it is refused with 409 `workspace_job_limit`.
    pub(crate) max_jobs_per_workspace: NonZeroUsize,
}

impl Config {
    /// Reads the configuration through `lookup` (`|name| std::env::var(name).ok()`).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        const WORKSPACES_HOW: &str = "set it to the comma-separated workspace ids the first \
                                      coordinator may use, e.g. COORDINATOR_WORKSPACES=ws-1,ws-2";
        // Every variable is read, and every problem reported at once.
        let mut problems = Problems::default();
        let server = problems.check(ServerConfig::from_lookup(NAME, lookup));
        let coordinator_key = problems.check(common::required_key(lookup, "COORDINATOR_API_KEY"));
        let coordinator_workspaces = problems.check(
            common::id_list(lookup, "COORDINATOR_WORKSPACES", WORKSPACES_HOW).and_then(|ids| {
                ids.ok_or(ConfigError::Missing {
                    var: "COORDINATOR_WORKSPACES",
                    how: WORKSPACES_HOW,
                })
            }),
        );
        let admin_key = problems.check(common::required_key(lookup, "ADMIN_API_KEY"));
        let redis_url = problems.check(common::redis_url(lookup));
        let max_jobs_per_workspace = problems.check(max_jobs_per_workspace(lookup));
        let (
            Some(server),
            Some(coordinator_key),
            Some(coordinator_workspaces),
            Some(admin_key),
            Some(redis_url),
            Some(max_jobs_per_workspace),
        ) = (
            server,
            coordinator_key,
            coordinator_workspaces,
            admin_key,
            redis_url,
            max_jobs_per_workspace,
        )
        else {
            return Err(problems.into_error());
        };
        let config = Self {
            server,
            coordinator_key,
            coordinator_workspaces,
            admin_key,
            redis_url,
            max_jobs_per_workspace,
        };
        if config
            .admin_key
            .digest()
            .ct_eq(&config.coordinator_key.digest())
        {
            return Err(ConfigError::Invalid {
                var: "ADMIN_API_KEY",
                problem: "it is the same key as COORDINATOR_API_KEY".to_owned(),
                how: "give the administrator a key of its own, e.g. from \
                      `openssl rand -base64 32`",
            });
        }
        Ok(config)
    }
}

/// Reads `MAX_JOBS_PER_WORKSPACE`: a whole number from 1 to 1,000,000, 10,000 if unset.
fn max_jobs_per_workspace(lookup: Lookup<'_>) -> Result<NonZeroUsize, ConfigError> {
    let Some(value) = lookup("MAX_JOBS_PER_WORKSPACE") else {
        return Ok(DEFAULT_MAX_JOBS_PER_WORKSPACE);
    };
    value
        .trim()
        .parse::<NonZeroUsize>()
        .ok()
        .filter(|n| n.get() <= MAX_MAX_JOBS_PER_WORKSPACE)
        .ok_or_else(|| ConfigError::Invalid {
            var: "MAX_JOBS_PER_WORKSPACE",
            problem: format!("{value:?} is not a whole number from 1 to 1000000"),
            how: "set it to the most jobs one workspace may keep, or unset it for 10000",
        })
}

// ---------------------------------------------------------------------------------------
// The router

/// The coordinator's router, guarded: keys in the database of `DATABASE_URL` and rate
/// limits in memory, or both on the Redis server of `config.redis_url`, shared with the
/// other replicas (see the module docs).
/// The configured keys are registered (or, on Redis, found registered by another
/// replica), the admin routes add to the registry, and every decision and action goes
/// to the audit log at `config.server.audit_log`.
pub(crate) async fn router(config: Config) -> Result<Router, StartError> {
    let audit: Arc<dyn AuditSink> = common::open_audit_log(&config.server)?;
    let registry =
        common::open_registry(&config.server.database_url, config.redis_url.as_ref()).await?;
    let requests = request_limit(&config).await?;
    let configured = vec![
        ConfiguredKey {
            var: "COORDINATOR_API_KEY",
            key: config.coordinator_key.clone(),
            principal: FIRST_COORDINATOR,
            workspaces: config.coordinator_workspaces.clone(),
            scopes: Vec::new(),
        },
        ConfiguredKey {
            var: "ADMIN_API_KEY",
            key: config.admin_key.clone(),
            principal: ADMIN,
            workspaces: Vec::new(),
            scopes: vec![ADMIN_SCOPE],
        },
    ];
    ConfiguredKey::register_all(registry.as_ref(), &configured).await?;
    if config.redis_url.is_some() {
        // Redis runs without persistence here: if it restarts empty, the configured keys
        // come back within seconds.
        ConfiguredKey::keep_registered(
            Arc::clone(&registry),
            configured,
            common::REREGISTER_INTERVAL,
        );
    }

    let guard = common::guard_builder_with(&config.server, Arc::clone(&audit), requests)
        .registry(Arc::clone(&registry))
        .public_path("/coordinator/health")
        .build()?;

    let state = AppState {
        jobs: Arc::new(Mutex::new(Jobs::new(config.max_jobs_per_workspace))),
        registry,
        audit: Arc::clone(&audit),
        admin: Arc::default(),
    };
    let jobs = Router::new()
        .route("/coordinator/health", get(health))
        .route("/coordinator/jobs", post(create_job))
        .route("/coordinator/jobs/{id}", get(get_job))
        .route("/coordinator/jobs/{id}/status", patch(set_status))
        .route("/coordinator/jobs/{id}/progress", patch(set_progress))
        .route("/coordinator/jobs/{id}/complete", post(complete_job))
        .route("/coordinator/jobs/{id}/fail", post(fail_job))
        .route("/coordinator/jobs/{id}/retry", post(retry_job));
    let admin = Router::new()
        .route("/admin/coordinators", post(register_coordinator))
        .route("/admin/keys/{key_id}/rotate", post(rotate_key))
        .route("/admin/keys/{key_id}", delete(revoke_key))
        // Only matched routes: an unknown /admin path is a plain 404.
        .route_layer(RequireScope::new(ADMIN_SCOPE).audit(audit));
    Ok(common::api_defaults(jobs.merge(admin).with_state(state)).layer(guard))
}

/// The request limit: in this process's memory without `REDIS_URL`; with it, on its
/// Redis server, shared by every replica. It counts in the Redis server's time, or in
/// `server.clock` when that is a manual clock (tests).
async fn request_limit(config: &Config) -> Result<RateLimit, StartError> {
    match &config.redis_url {
        None => Ok(common::in_memory_requests(&config.server)),
        Some(url) => redis_limit(url, &config.server).await,
    }
}

#[cfg(feature = "redis")]
async fn redis_limit(url: &RedisUrl, server: &ServerConfig) -> Result<RateLimit, StartError> {
    use keygate::redis::RedisRateLimit;
    let requests = RedisRateLimit::connect(url.expose(), common::request_tiers())
        .await
        .map_err(|source| StartError::Redis {
            url: url.clone(),
            source: source.into(),
        })?
        .with_clock(server.clock.clone());
    Ok(RateLimit::new(requests))
}

/// Without the `redis` feature, a configuration cannot name a Redis server
/// ([`Config::from_lookup`] refuses `REDIS_URL`).
#[cfg(not(feature = "redis"))]
async fn redis_limit(_: &RedisUrl, _: &ServerConfig) -> Result<RateLimit, StartError> {
    Err(common::redis_unsupported().into())
}

#[derive(Clone)]
struct AppState {
    /// The jobs, kept in memory for the example (a real service keeps them in a
    /// database), at most `MAX_JOBS_PER_WORKSPACE` per workspace.
    jobs: Arc<Mutex<Jobs>>,
    /// In the database of `DATABASE_URL`, or on Redis; shared with the other replicas
    /// (PostgreSQL or Redis).
    registry: Arc<dyn KeyRegistry>,
    audit: Arc<dyn AuditSink>,
    /// Serializes the admin routes' read-then-write registry updates (within this
    /// replica: see the module docs).
    admin: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        // Nothing that changes a job can panic, so a poisoned lock still guards whole
        // jobs: use it as it is.
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a handler's action with who did it, in which workspace and on what (a job
    /// id, a key id), and passes its result on.
    fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        workspace: Option<&str>,
        target: Option<&str>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let reason = result.as_ref().err().map(ApiError::reason);
        self.record(principal, action, workspace, target, reason);
        result
    }

    fn record(
        &self,
        principal: &Principal,
        action: &'static str,
        workspace: Option<&str>,
        target: Option<&str>,
        refused_because: Option<&str>,
    ) {
        let outcome = match refused_because {
            None => Outcome::Succeeded,
            Some(_) => Outcome::Failed,
        };
        let mut event = AuditEvent::new(action, outcome).with_principal(principal);
        if let Some(workspace) = workspace {
            event = event.with_workspace(workspace);
        }
        if let Some(target) = target {
            event = event.with_target(target);
        }
        if let Some(reason) = refused_because {
            event = event.with_reason(reason);
        }
        self.audit.record(event);
    }

    /// Applies `change` to job `id` if `principal` may see it, records the action, and
    /// answers with the job as it is afterwards.
    fn change_job(
        &self,
        principal: &Principal,
        id: &str,
        action: &'static str,
        change: impl FnOnce(&mut Job) -> Result<(), ApiError>,
    ) -> Result<Json<Job>, ApiError> {
        let mut jobs = self.jobs();
        let (workspace, result) = match jobs.get_mut(id) {
            Some(job) if principal.may_use_workspace(&job.workspace_id) => {
                let result = change(job).map(|()| Json(job.clone()));
                (Some(job.workspace_id.clone()), result)
            }
            Some(job) => {
                // Another workspace's job: answered exactly as a missing one, but audited
                // as what it is.
                let workspace = job.workspace_id.clone();
                drop(jobs);
                self.record(
                    principal,
                    action,
                    Some(&workspace),
                    Some(id),
                    Some("workspace_forbidden"),
                );
                return Err(no_such_job());
            }
            None => (None, Err(no_such_job())),
        };
        drop(jobs);
        self.audited(principal, action, workspace.as_deref(), Some(id), result)
    }
}

// ---------------------------------------------------------------------------------------
// Jobs

/// The job store: jobs by id, and each workspace's job ids in creation order, at most
/// `max_per_workspace` of them. Each job is bounded too: the request body limit (64 KiB)
/// bounds `payload` and `result`, and `error` is at most [`MAX_ERROR_LEN`] bytes. So the
/// store holds at most about `max_per_workspace` × 64 KiB per workspace.
struct Jobs {
    by_id: HashMap<String, Job>,
    by_workspace: HashMap<String, VecDeque<String>>,
    max_per_workspace: NonZeroUsize,
}

impl Jobs {
    fn new(max_per_workspace: NonZeroUsize) -> Self {
        Self {
            by_id: HashMap::new(),
            by_workspace: HashMap::new(),
            max_per_workspace,
        }
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Job> {
        self.by_id.get_mut(id)
    }

    /// Adds `job`. A full workspace first evicts its oldest finished job (completed,
    /// failed or cancelled: a rolling window of history); if all its jobs are unfinished,
    /// `job` is refused with 409 `workspace_job_limit`.
    fn insert(&mut self, job: Job) -> Result<(), ApiError> {
        let max = self.max_per_workspace.get();
        let ids = self
            .by_workspace
            .entry(job.workspace_id.clone())
            .or_default();
        if ids.len() >= max {
            let by_id = &self.by_id;
            let finished = ids
                .iter()
                .position(|id| by_id.get(id).is_none_or(|job| !job.status.is_active()));
            let Some(finished) = finished else {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "workspace_job_limit",
                    format!(
                        "the workspace holds {max} unfinished jobs, its limit: complete, fail \
                         or cancel one first"
                    ),
                ));
            };
            if let Some(evicted) = ids.remove(finished) {
                self.by_id.remove(&evicted);
            }
        }
        ids.push_back(job.id.clone());
        self.by_id.insert(job.id.clone(), job);
        Ok(())
    }
}

/// Where a job is in its life, and the routes that move it (anything else is 409
/// `invalid_transition`):
///
/// ```text
/// from \ to   running        completed      failed     cancelled      pending
/// pending     PATCH /status  POST /complete POST /fail PATCH /status  -
/// running     -              POST /complete POST /fail PATCH /status  -
/// failed      -              -              -          -              POST /retry
/// cancelled   -              -              -          -              POST /retry
/// completed   (final)
/// ```
///
/// Progress may be reported while the job is `pending` or `running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum JobStatus {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job is still to be done (so it may start, progress, end or be cancelled).
    fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    id: String,
    workspace_id: String,
    #[serde(rename = "type")]
    kind: String,
    status: JobStatus,
    /// 0 to 100.
    progress: u8,
    payload: Option<Value>,
    result: Option<Value>,
    error: Option<String>,
    /// 1 when created, one more for each retry.
    attempts: u32,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl Job {
    /// A pending job, if `principal` may use its workspace (else 403 `workspace_forbidden`).
    fn new(principal: &Principal, new: NewJob) -> Result<Self, ApiError> {
        principal.require_workspace(&new.workspace_id)?;
        if !common::is_valid_id(&new.kind) {
            return Err(ApiError::invalid_body(
                "`type` must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        let now = OffsetDateTime::now_utc();
        Ok(Self {
            id: new_job_id()?,
            workspace_id: new.workspace_id,
            kind: new.kind,
            status: JobStatus::Pending,
            progress: 0,
            payload: new.payload,
            result: None,
            error: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
        })
    }

    /// Moves the job to `next` if `allowed`, else 409 `invalid_transition`.
    fn transition(&mut self, allowed: bool, verb: &str, next: JobStatus) -> Result<(), ApiError> {
        if !allowed {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                format!("the job is {}; it cannot be {verb}", self.status.as_str()),
            ));
        }
        self.status = next;
        self.updated_at = OffsetDateTime::now_utc();
        Ok(())
    }
}

fn no_such_job() -> ApiError {
    ApiError::not_found("no such job")
}

/// A new random job id: `job_` and 32 hex digits.
fn new_job_id() -> Result<String, ApiError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| {
        ApiError::Rejected(Rejection::AuthUnavailable {
            retry_after: Duration::from_secs(1),
        })
    })?;
    Ok(format!("job_{}", hex::encode(bytes)))
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewJob {
    workspace_id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
}

async fn create_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    JsonBody(new): JsonBody<NewJob>,
) -> Result<impl IntoResponse, ApiError> {
    let workspace = new.workspace_id.clone();
    let result =
        Job::new(&principal, new).and_then(|job| state.jobs().insert(job.clone()).map(|()| job));
    let id = result.as_ref().ok().map(|job| job.id.clone());
    let job = state.audited(
        &principal,
        "job.create",
        Some(&workspace),
        id.as_deref(),
        result,
    )?;
    let location = format!("/coordinator/jobs/{}", job.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(job),
    ))
}

async fn get_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Job>, ApiError> {
    state.change_job(&principal, &id, "job.read", |_| Ok(()))
}

/// The statuses `PATCH .../status` may set; the others have their own routes
/// (`complete`, `fail`, `retry`), which carry what they need.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StatusChange {
    Running,
    Cancelled,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    status: StatusChange,
}

async fn set_status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<SetStatus>,
) -> Result<Json<Job>, ApiError> {
    state.change_job(&principal, &id, "job.status", |job| match body.status {
        StatusChange::Running => {
            let allowed = job.status == JobStatus::Pending;
            job.transition(allowed, "started", JobStatus::Running)
        }
        StatusChange::Cancelled => {
            let allowed = job.status.is_active();
            job.transition(allowed, "cancelled", JobStatus::Cancelled)
        }
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetProgress {
    progress: u8,
}

async fn set_progress(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<SetProgress>,
) -> Result<Json<Job>, ApiError> {
    if body.progress > 100 {
        let error = ApiError::invalid_body("`progress` must be from 0 to 100");
        return state.audited(&principal, "job.progress", None, Some(&id), Err(error));
    }
    state.change_job(&principal, &id, "job.progress", |job| {
        let status = job.status;
        job.transition(status.is_active(), "given progress", status)?;
        job.progress = body.progress;
        Ok(())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Complete {
    #[serde(default)]
    result: Option<Value>,
}

async fn complete_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<Complete>,
) -> Result<Json<Job>, ApiError> {
    state.change_job(&principal, &id, "job.complete", |job| {
        let allowed = job.status.is_active();
        job.transition(allowed, "completed", JobStatus::Completed)?;
        job.progress = 100;
        job.result = body.result;
        Ok(())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fail {
    error: String,
}

async fn fail_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<Fail>,
) -> Result<Json<Job>, ApiError> {
    if body.error.trim().is_empty() || body.error.len() > MAX_ERROR_LEN {
        let error =
            ApiError::invalid_body("`error` must be a non-empty text of at most 4096 bytes");
        return state.audited(&principal, "job.fail", None, Some(&id), Err(error));
    }
    state.change_job(&principal, &id, "job.fail", |job| {
        let allowed = job.status.is_active();
        job.transition(allowed, "failed", JobStatus::Failed)?;
        job.error = Some(body.error);
        Ok(())
    })
}

async fn retry_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Job>, ApiError> {
    state.change_job(&principal, &id, "job.retry", |job| {
        let allowed = matches!(job.status, JobStatus::Failed | JobStatus::Cancelled);
        job.transition(allowed, "retried", JobStatus::Pending)?;
        job.progress = 0;
        job.result = None;
        job.error = None;
        job.attempts = job.attempts.saturating_add(1);
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// Admin

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCoordinator {
    name: String,
    workspaces: Vec<String>,
}

/// A key just issued, shown this once (in the response body only: its `Debug` shows
/// `[REDACTED]` in place of the key).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedKeyBody {
    principal_id: String,
    key_id: KeyId,
    /// The key itself. Never stored: only its digest is.
    key: String,
    workspaces: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_key_id: Option<KeyId>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    previous_key_expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for IssuedKeyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKeyBody")
            .field("principal_id", &self.principal_id)
            .field("key_id", &self.key_id)
            .field("key", &format_args!("[REDACTED]"))
            .field("workspaces", &self.workspaces)
            .field("previous_key_id", &self.previous_key_id)
            .field("previous_key_expires_at", &self.previous_key_expires_at)
            .finish()
    }
}

impl IssuedKeyBody {
    fn new(issued: &IssuedKey) -> Self {
        Self {
            principal_id: issued.record.principal_id.clone(),
            key_id: issued.record.key_id,
            key: issued.key.expose_secret().to_owned(),
            workspaces: issued.record.workspaces.clone(),
            previous_key_id: None,
            previous_key_expires_at: None,
        }
    }

    /// 201 with the body, kept out of caches: it holds a key.
    fn created(self) -> impl IntoResponse {
        (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            Json(self),
        )
    }
}

/// A registry failure as an answer: an unknown key is 404, an outage 503.
fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::UnknownKey(_) => no_such_key(),
        RegistryError::Duplicate => ApiError::conflict("the key is registered already"),
        _ => ApiError::Rejected(Rejection::AuthUnavailable {
            retry_after: Duration::from_secs(5),
        }),
    }
}

fn no_such_key() -> ApiError {
    ApiError::not_found("no such key")
}

async fn register_coordinator(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    JsonBody(new): JsonBody<NewCoordinator>,
) -> Result<impl IntoResponse, ApiError> {
    let result = async {
        if !common::is_valid_id(&new.name) {
            return Err(ApiError::invalid_body(
                "`name` must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        if new.workspaces.is_empty()
            || new.workspaces.len() > MAX_WORKSPACES
            || !new.workspaces.iter().all(|ws| common::is_valid_id(ws))
        {
            return Err(ApiError::invalid_body(
                "`workspaces` must list 1 to 100 ids of 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
        }
        let _serialized = state.admin.lock().await;
        let existing = state
            .registry
            .list_keys(&new.name)
            .await
            .map_err(registry_error)?;
        if !existing.is_empty() {
            return Err(ApiError::conflict(format!(
                "a principal named `{}` exists already",
                new.name
            )));
        }
        let grant = KeyGrant::new(new.name)
            .workspaces(new.workspaces)
            .label(format!("registered by {}", admin.id()));
        state.registry.issue(grant).await.map_err(registry_error)
    }
    .await;
    let new_key = result.as_ref().ok().map(|issued| issued.record.key_id);
    let issued = state.audited(
        &admin,
        "coordinator.register",
        None,
        new_key.as_ref().map(KeyId::as_str),
        result,
    )?;
    Ok(IssuedKeyBody::new(&issued).created())
}

/// The key `text` names, if it is registered and still works: 404 for an unknown key,
/// 409 for a revoked or expired one.
async fn active_key(state: &AppState, text: &str) -> Result<KeyId, ApiError> {
    let key_id = KeyId::parse(text).map_err(|_| no_such_key())?;
    let record = state
        .registry
        .find_by_id(&key_id)
        .await
        .map_err(registry_error)?
        .ok_or_else(no_such_key)?;
    match record.status_at(OffsetDateTime::now_utc()) {
        KeyStatus::Active => Ok(key_id),
        _ => Err(ApiError::conflict("the key is revoked or expired")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rotate {
    /// How long the old key keeps working.
    overlap_seconds: u64,
}

async fn rotate_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    PathParam(key_id): PathParam<String>,
    JsonBody(body): JsonBody<Rotate>,
) -> Result<impl IntoResponse, ApiError> {
    let result = async {
        if body.overlap_seconds > MAX_OVERLAP_SECONDS {
            return Err(ApiError::invalid_body(
                "`overlapSeconds` must be from 0 to 604800 (one week)",
            ));
        }
        let _serialized = state.admin.lock().await;
        // keygate's `rotate` refuses a revoked or expired key too
        // (`RegistryError::InactiveKey`); looking the key up first gives this API its own
        // answers: 404 for an unknown key, 409 for one that no longer works.
        let key_id = active_key(&state, &key_id).await?;
        let overlap = Duration::from_secs(body.overlap_seconds);
        let issued = state
            .registry
            .rotate(&key_id, overlap)
            .await
            .map_err(registry_error)?;
        let old = state
            .registry
            .find_by_id(&key_id)
            .await
            .map_err(registry_error)?;
        Ok(IssuedKeyBody {
            previous_key_id: Some(key_id),
            previous_key_expires_at: old.and_then(|record| record.expires_at),
            ..IssuedKeyBody::new(&issued)
        })
    }
    .await;
    let body = state.audited(&admin, "key.rotate", None, Some(&key_id), result)?;
    Ok(body.created())
}

async fn revoke_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    PathParam(key_id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let key_id = KeyId::parse(&key_id).map_err(|_| no_such_key())?;
        let record = state
            .registry
            .revoke(&key_id, OffsetDateTime::now_utc())
            .await
            .map_err(registry_error)?;
        let revoked_at = record.revoked_at.and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
        Ok(json!({
            "keyId": record.key_id,
            "principalId": record.principal_id,
            "revokedAt": revoked_at,
        }))
    }
    .await;
    state
        .audited(&admin, "key.revoke", None, Some(&key_id), result)
        .map(Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_key_body_never_shows_its_key_in_debug() {
        let key = "kg_0123456789abcdef_secretsecretsecretsecretsecret";
        let body = IssuedKeyBody {
            principal_id: "coordinator-1".to_owned(),
            key_id: KeyId::parse("0123456789ab").unwrap(),
            key: key.to_owned(),
            workspaces: vec!["ws-1".to_owned()],
            previous_key_id: None,
            previous_key_expires_at: None,
        };
        let shown = format!("{body:?}");
        assert!(!shown.contains(key), "{shown}");
        assert!(!shown.contains("secretsecret"), "{shown}");
        assert!(
            shown.contains("coordinator-1") && shown.contains("[REDACTED]"),
            "{shown}"
        );
        // The response body still carries the key: it is shown this once.
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["key"], key);
    }
}
