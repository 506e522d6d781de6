//! The token API's routes: accounts and tokens (`/auth/*`), packs (`/api/v1/packs`),
//! the admin route that issues API keys, and public docs (`/docs`, `/docs/*`).
//!
//! Used by `main.rs` and, in process, by `tests/api.rs`.
//!
//! | route | who |
//! |---|---|
//! | `GET /api/v1/health`, `POST /auth/register`, `POST /auth/login`, `POST /auth/refresh`, `GET /docs` and everything under `/docs/` | anyone |
//! | `GET /api/v1/packs`, `GET /api/v1/packs/{id}` | a JWT access token or an API key (`X-API-Key`) with scope `packs:read` |
//! | `POST /api/v1/packs`, `DELETE /api/v1/packs/{id}` | the same, with scope `packs:write` |
//! | `POST /api/v1/admin/api-keys` | an API key with scope `admin` (`ADMIN_API_KEY`) |
//!
//! Everything else needs a credential too (deny by default): an unknown path without one
//! is 401, with one 404. Refusals of the guard have the seed API's exact bodies
//! ([`TokenMessageRejection`]): `{"error":{"code":401,"message":"Missing authentication
//! token"}}`, `… "Invalid authentication token"`, `… "Authentication token expired"`. The
//! example's own errors have the same `error.code` and `error.message`, plus a
//! machine-readable `error.reason`.
//!
//! # Tokens
//!
//! A login answers an access token (HS256, 15 minutes, scopes `packs:read packs:write`)
//! and a refresh token (7 days). `POST /auth/refresh` takes a refresh token once: it
//! answers a new pair of the same *chain* and marks the old refresh token used. A refresh
//! token presented a second time means it was stolen (or the client is broken): the whole
//! chain is revoked, every refresh token of it is refused from then on, and so is every
//! access token issued from it (the guard's verifier asks [`RefreshChains::is_revoked`]
//! for each token, see [`JwtVerifierBuilder::revoked`](keygate::jwt::JwtVerifierBuilder::revoked)).
//!
//! # Storage
//!
//! Users ([`Users`]) and refresh chains ([`RefreshChains`]) are kept in this process's
//! memory, for the example: a restart forgets them. Each is a small type with the few
//! operations the routes need, so that a database can take its place without the routes
//! changing. Passwords are stored as argon2id hashes (PHC strings), never in clear, and
//! never logged.
//!
//! # `/docs`
//!
//! keygate's guard knows exact public paths only (prefix routes are another issue), so
//! `/docs` and everything under it are served by a router merged next to the guarded
//! one, and audited here as the guard audits its public routes.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock},
};

/// The example's name: its log lines and default file names start with it.
pub(crate) const NAME: &str = "api";

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use keygate::{
    ApiKey, AuditEvent, AuditSink, InMemoryRegistry, KeyGrant, KeyRegistry, Outcome, Principal,
    Rejection, TokenMessageRejection,
    jwt::{HmacSecret, IssuedToken, JwtIssuer, JwtVerifier, TokenKind},
    require::RequireScope,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::common::{
    self, ApiError, ConfigError, JsonBody, Lookup, PathParam, Problems, ServerConfig, StartError,
};

/// The scope of the admin route.
pub(crate) const ADMIN_SCOPE: &str = "admin";
/// The principal id of the administrator (`ADMIN_API_KEY`).
pub(crate) const ADMIN: &str = "admin";
/// Reading packs.
pub(crate) const READ_SCOPE: &str = "packs:read";
/// Creating and deleting packs.
pub(crate) const WRITE_SCOPE: &str = "packs:write";
/// The shortest password accepted.
pub(crate) const MIN_PASSWORD_LEN: usize = 8;
/// The longest password accepted (argon2 takes any length; this bounds the work).
pub(crate) const MAX_PASSWORD_LEN: usize = 128;
/// The longest pack name accepted.
pub(crate) const MAX_PACK_NAME_LEN: usize = 100;
/// The exact public paths; `/docs/*` is served next to the guard.
pub(crate) const PUBLIC_PATHS: [&str; 5] = [
    "/api/v1/health",
    "/auth/login",
    "/auth/register",
    "/auth/refresh",
    "/docs",
];

// ---------------------------------------------------------------------------------------
// Configuration

/// The API's configuration, from the environment. `Debug` shows no secret.
#[derive(Debug)]
pub(crate) struct Config {
    /// `LISTEN_ADDR`, `AUDIT_LOG`, `FAILED_ATTEMPTS_PER_MINUTE`.
    pub(crate) server: ServerConfig,
    /// `JWT_SECRET`: the HS256 secret, at least 64 characters.
    pub(crate) jwt_secret: HmacSecret,
    /// `ADMIN_API_KEY`: the key with scope `admin`.
    pub(crate) admin_key: ApiKey,
}

impl Config {
    /// Reads the configuration through `lookup` (`|name| std::env::var(name).ok()`),
    /// reporting every problem at once.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let lookup: Lookup<'_> = &lookup;
        let mut problems = Problems::default();
        let server = problems.check(ServerConfig::from_lookup(NAME, lookup));
        let jwt_secret = problems.check(common::required_jwt_secret(lookup, "JWT_SECRET"));
        let admin_key = problems.check(common::required_key(lookup, "ADMIN_API_KEY"));
        let (Some(server), Some(jwt_secret), Some(admin_key)) = (server, jwt_secret, admin_key)
        else {
            return Err(problems.into_error());
        };
        Ok(Self {
            server,
            jwt_secret,
            admin_key,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The router

/// The API's router: the guarded routes (JWT or API key), the public ones, and `/docs`.
pub(crate) async fn router(config: Config) -> Result<Router, StartError> {
    let audit: Arc<dyn AuditSink> = common::open_audit_log(&config.server)?;
    let registry = Arc::new(InMemoryRegistry::new());
    registry
        .register_key(
            &config.admin_key,
            KeyGrant::new(ADMIN)
                .scopes([ADMIN_SCOPE])
                .label("ADMIN_API_KEY"),
        )
        .await?;

    let chains = Arc::new(RefreshChains::default());
    let revoked = Arc::clone(&chains);
    let verifier = JwtVerifier::hs256(&config.jwt_secret)
        .revoked(move |token| revoked.is_revoked(token.token_id.as_deref()))
        .build();
    let mut guard = common::guard_builder(&config.server, Arc::clone(&audit))
        .registry(Arc::clone(&registry))
        .jwt(verifier.clone());
    for path in PUBLIC_PATHS {
        guard = guard.public_path(path);
    }
    let guard = guard.render_with(TokenMessageRejection).build()?;

    let state = AppState {
        users: Arc::default(),
        chains,
        packs: Arc::default(),
        issuer: JwtIssuer::hs256(&config.jwt_secret),
        verifier,
        registry,
        audit: Arc::clone(&audit),
    };
    let open = Router::new()
        .route("/api/v1/health", get(health))
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/refresh", post(refresh))
        .route("/docs", get(docs_index));
    let packs = Router::new()
        .route("/api/v1/packs", get(list_packs).post(create_pack))
        .route("/api/v1/packs/{id}", get(get_pack).delete(delete_pack));
    let admin = Router::new()
        .route("/api/v1/admin/api-keys", post(issue_api_key))
        .route_layer(
            RequireScope::new(ADMIN_SCOPE)
                .render_with(TokenMessageRejection)
                .audit(Arc::clone(&audit)),
        );
    let guarded =
        common::api_defaults(open.merge(packs).merge(admin).with_state(state)).layer(guard);
    // `/docs/*`: public, next to the guard (see the module docs).
    let docs = Router::new()
        .route("/docs/", get(docs_index))
        .route("/docs/{*page}", get(docs_page))
        .layer(middleware::from_fn_with_state(audit, audit_public));
    Ok(guarded.merge(docs))
}

#[derive(Clone)]
struct AppState {
    users: Arc<Users>,
    chains: Arc<RefreshChains>,
    packs: Arc<Mutex<Packs>>,
    issuer: JwtIssuer,
    verifier: JwtVerifier,
    registry: Arc<InMemoryRegistry>,
    audit: Arc<dyn AuditSink>,
}

impl AppState {
    fn packs(&self) -> MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a handler's action.
    fn record(
        &self,
        principal: Option<&Principal>,
        action: &str,
        target: Option<&str>,
        failed: Option<&str>,
    ) {
        let outcome = if failed.is_some() {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        let mut event = AuditEvent::new(action, outcome);
        if let Some(principal) = principal {
            event = event.with_principal(principal);
        }
        if let Some(target) = target {
            event = event.with_target(target);
        }
        if let Some(reason) = failed {
            event = event.with_reason(reason);
        }
        self.audit.record(event);
    }
}

/// The guard's audit record for a public route, for the `/docs/*` pages it does not see.
async fn audit_public(
    State(audit): State<Arc<dyn AuditSink>>,
    request: Request,
    next: Next,
) -> Response {
    let mut event = AuditEvent::new(
        format!("{} {}", request.method(), request.uri().path()),
        Outcome::Admitted,
    )
    .with_reason("public_route");
    if let Some(ConnectInfo(addr)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        event = event.with_client_ip(addr.ip());
    }
    if let Some(agent) = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        event = event.with_user_agent(agent.chars().take(256).collect::<String>());
    }
    audit.record(event);
    next.run(request).await
}

// ---------------------------------------------------------------------------------------
// Storage (in memory; see the module docs)

/// A registered user. Holds the password's argon2id hash, never the password.
#[derive(Clone)]
struct User {
    id: String,
    username: String,
    /// The PHC string of the argon2id hash.
    password_hash: String,
}

/// The users, by username.
#[derive(Default)]
pub(crate) struct Users(Mutex<HashMap<String, User>>);

impl Users {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, User>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `user` unless its username is taken.
    fn insert(&self, user: User) -> bool {
        let mut users = self.lock();
        if users.contains_key(&user.username) {
            return false;
        }
        users.insert(user.username.clone(), user);
        true
    }

    fn find(&self, username: &str) -> Option<User> {
        self.lock().get(username).cloned()
    }
}

/// The refresh-token chains: each login starts one; each refresh adds a link.
#[derive(Default)]
pub(crate) struct RefreshChains {
    state: RwLock<ChainState>,
}

#[derive(Default)]
struct ChainState {
    /// Refresh token id (`jti`) → its chain and whether it was used.
    refresh: HashMap<String, RefreshLink>,
    /// Token id (`jti`, access and refresh) → chain.
    chain_of: HashMap<String, u64>,
    /// Revoked chains.
    revoked: HashSet<u64>,
    next_chain: u64,
}

struct RefreshLink {
    chain: u64,
    user: String,
    used: bool,
}

/// What presenting a refresh token found.
enum Exchange {
    /// The first use: the chain and user to issue a new pair for.
    Fresh { chain: u64, user: String },
    /// A second use: the chain is now revoked.
    Reused,
    /// Unknown or of a revoked chain.
    Refused,
}

impl RefreshChains {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ChainState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new chain.
    fn start(&self) -> u64 {
        let mut state = self.write();
        state.next_chain += 1;
        state.next_chain
    }

    /// Adds a pair issued for `user` to `chain`.
    fn add(&self, chain: u64, user: &str, access: &IssuedToken, refresh: &IssuedToken) {
        let mut state = self.write();
        state.chain_of.insert(access.token_id.clone(), chain);
        state.chain_of.insert(refresh.token_id.clone(), chain);
        state.refresh.insert(
            refresh.token_id.clone(),
            RefreshLink {
                chain,
                user: user.to_owned(),
                used: false,
            },
        );
    }

    /// Uses refresh token `jti`: once only; the second time revokes its chain.
    fn exchange(&self, jti: &str) -> Exchange {
        let mut state = self.write();
        let Some(link) = state.refresh.get_mut(jti) else {
            return Exchange::Refused;
        };
        let (chain, user, reused) = (link.chain, link.user.clone(), link.used);
        link.used = true;
        if state.revoked.contains(&chain) {
            return Exchange::Refused;
        }
        if reused {
            state.revoked.insert(chain);
            return Exchange::Reused;
        }
        Exchange::Fresh { chain, user }
    }

    /// Whether the token with id `jti` belongs to a revoked chain (the guard asks for
    /// every access token).
    pub(crate) fn is_revoked(&self, jti: Option<&str>) -> bool {
        let Some(jti) = jti else { return false };
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .chain_of
            .get(jti)
            .is_some_and(|chain| state.revoked.contains(chain))
    }
}

/// A pack: what the protected routes manage.
#[derive(Clone, Debug, Serialize)]
struct Pack {
    id: String,
    name: String,
    description: String,
    /// The principal that created it.
    owner: String,
}

#[derive(Default)]
struct Packs {
    by_id: HashMap<String, Pack>,
    next: u64,
}

// ---------------------------------------------------------------------------------------
// Handlers: public

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn docs_index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<!doctype html><title>API docs</title><h1>API docs</h1>\
         <p>See <a href=\"/docs/openapi.json\">/docs/openapi.json</a>.</p>",
    )
}

async fn docs_page(PathParam(page): PathParam<String>) -> Result<Json<Value>, ApiError> {
    match page.as_str() {
        "openapi.json" => Ok(Json(json!({
            "openapi": "3.1.0",
            "info": { "title": "packs API (keygate example)", "version": "1" },
            "paths": {
                "/auth/register": {}, "/auth/login": {}, "/auth/refresh": {},
                "/api/v1/health": {}, "/api/v1/packs": {}, "/api/v1/packs/{id}": {},
                "/api/v1/admin/api-keys": {}
            }
        }))),
        _ => Err(ApiError::not_found("no such page")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// 401 `invalid_login`, the same for an unknown user and a wrong password.
fn invalid_login() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_login",
        "invalid username or password",
    )
}

async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<impl IntoResponse, ApiError> {
    if !common::is_valid_id(&body.username) {
        return Err(ApiError::invalid_body(
            "`username` must be 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    let length = body.password.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&length) {
        return Err(ApiError::invalid_body(format!(
            "`password` must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    let password = body.password;
    let password_hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|_| internal())??;
    let user = User {
        id: format!("user-{}", random_hex()?),
        username: body.username,
        password_hash,
    };
    let answer = json!({ "data": { "user": user_json(&user) } });
    let (id, name) = (user.id.clone(), user.username.clone());
    if !state.users.insert(user) {
        state.record(None, "auth.register", Some(&name), Some("conflict"));
        return Err(ApiError::conflict("this username is taken"));
    }
    state.record(None, "auth.register", Some(&id), None);
    Ok((StatusCode::CREATED, Json(answer)))
}

async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Credentials>,
) -> Result<Json<Value>, ApiError> {
    let user = state.users.find(&body.username);
    // An unknown user costs the same hash as a known one (no timing oracle).
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let password = body.password;
    let matches = tokio::task::spawn_blocking(move || {
        verify_password(&password, stored.as_deref().unwrap_or(&DUMMY_HASH))
    })
    .await
    .map_err(|_| internal())?;
    let Some(user) = user.filter(|_| matches) else {
        state.record(None, "auth.login", None, Some("invalid_login"));
        return Err(invalid_login());
    };
    let chain = state.chains.start();
    let answer = issue_pair(&state, chain, &user.id, &user.username)?;
    state.record(None, "auth.login", Some(&user.id), None);
    Ok(answer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// Exchanges a refresh token for a new pair. A refused refresh token is answered as the
/// guard answers a refused access token (`Invalid authentication token`, or
/// `Authentication token expired`).
async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Result<Json<Value>, Response> {
    let refuse = |rejection: Rejection, subject: Option<&str>, why: &str| {
        state.record(None, "auth.refresh", subject, Some(why));
        rejection.to_response(&TokenMessageRejection, None)
    };
    let said = match state
        .verifier
        .verify_as(&body.refresh_token, TokenKind::Refresh)
    {
        Ok(said) => said,
        Err(rejection) => return Err(refuse(rejection.clone(), None, rejection.reason())),
    };
    let jti = said.token_id.as_deref().unwrap_or_default();
    match state.chains.exchange(jti) {
        Exchange::Fresh { chain, user } => {
            let answer = issue_pair(&state, chain, &user, &name_of(&state, &user))
                .map_err(IntoResponse::into_response)?;
            state.record(None, "auth.refresh", Some(&user), None);
            Ok(answer)
        }
        Exchange::Reused => Err(refuse(
            Rejection::RevokedCredentials,
            Some(&said.subject),
            "refresh_token_reused",
        )),
        Exchange::Refused => Err(refuse(
            Rejection::RevokedCredentials,
            Some(&said.subject),
            "revoked_credentials",
        )),
    }
}

/// The username of user `id` (for the login answer's `user`).
fn name_of(state: &AppState, id: &str) -> String {
    state
        .users
        .lock()
        .values()
        .find(|user| user.id == id)
        .map(|user| user.username.clone())
        .unwrap_or_default()
}

/// A new access and refresh token of `chain` for user `id`, as the login answer.
fn issue_pair(
    state: &AppState,
    chain: u64,
    id: &str,
    username: &str,
) -> Result<Json<Value>, ApiError> {
    let mut claims = Map::new();
    claims.insert("scope".into(), format!("{READ_SCOPE} {WRITE_SCOPE}").into());
    claims.insert("username".into(), username.into());
    let access = state.issuer.access(id, claims).map_err(|_| internal())?;
    let refresh = state
        .issuer
        .refresh(id, Map::new())
        .map_err(|_| internal())?;
    state.chains.add(chain, id, &access, &refresh);
    Ok(Json(json!({
        "data": {
            "access_token": access.expose_secret(),
            "refresh_token": refresh.expose_secret(),
            "token_type": "Bearer",
            "expires_in": access.expires_in(),
            "user": { "id": id, "username": username },
        }
    })))
}

fn user_json(user: &User) -> Value {
    json!({ "id": user.id, "username": user.username })
}

// ---------------------------------------------------------------------------------------
// Handlers: packs (JWT or API key)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPack {
    name: String,
    #[serde(default)]
    description: String,
}

async fn list_packs(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    caller.require_scope(READ_SCOPE)?;
    let mut packs: Vec<Pack> = state.packs().by_id.values().cloned().collect();
    packs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(json!({ "data": packs })))
}

async fn get_pack(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_scope(READ_SCOPE)?;
    let pack = state.packs().by_id.get(&id).cloned();
    pack.map(|pack| Json(json!({ "data": pack })))
        .ok_or_else(|| ApiError::not_found("no such pack"))
}

async fn create_pack(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    JsonBody(new): JsonBody<NewPack>,
) -> Result<impl IntoResponse, ApiError> {
    let result = (|| {
        caller.require_scope(WRITE_SCOPE)?;
        let name = new.name.trim();
        if name.is_empty() || name.chars().count() > MAX_PACK_NAME_LEN {
            return Err(ApiError::invalid_body(format!(
                "`name` must be 1 to {MAX_PACK_NAME_LEN} characters"
            )));
        }
        let mut packs = state.packs();
        packs.next += 1;
        let pack = Pack {
            id: format!("pack-{}", packs.next),
            name: name.to_owned(),
            description: new.description.chars().take(1000).collect(),
            owner: caller.id().to_owned(),
        };
        packs.by_id.insert(pack.id.clone(), pack.clone());
        Ok(pack)
    })();
    let target = result.as_ref().ok().map(|pack| pack.id.clone());
    state.record(
        Some(&caller),
        "pack.create",
        target.as_deref(),
        result.as_ref().err().map(ApiError::reason),
    );
    Ok((StatusCode::CREATED, Json(json!({ "data": result? }))))
}

async fn delete_pack(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    let result = caller
        .require_scope(WRITE_SCOPE)
        .map_err(ApiError::from)
        .and_then(|()| {
            state
                .packs()
                .by_id
                .remove(&id)
                .map(|_| ())
                .ok_or_else(|| ApiError::not_found("no such pack"))
        });
    state.record(
        Some(&caller),
        "pack.delete",
        Some(&id),
        result.as_ref().err().map(ApiError::reason),
    );
    result.map(|()| StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------
// Handlers: admin

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    /// The principal the key is for.
    name: String,
    /// Its scopes (default: read and write packs).
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

async fn issue_api_key(
    State(state): State<AppState>,
    Extension(admin): Extension<Principal>,
    JsonBody(new): JsonBody<NewApiKey>,
) -> Result<impl IntoResponse, ApiError> {
    let scopes = new
        .scopes
        .unwrap_or_else(|| vec![READ_SCOPE.to_owned(), WRITE_SCOPE.to_owned()]);
    if !common::is_valid_id(&new.name)
        || scopes.len() > 10
        || !scopes
            .iter()
            .all(|s| [READ_SCOPE, WRITE_SCOPE].contains(&s.as_str()))
    {
        state.record(Some(&admin), "api_key.issue", None, Some("invalid_body"));
        return Err(ApiError::invalid_body(
            "`name` must be an id of 1 to 64 letters, digits, `-`, `_` or `.`; `scopes` may \
             hold `packs:read` and `packs:write`",
        ));
    }
    let grant = KeyGrant::new(new.name.clone())
        .scopes(scopes.clone())
        .label(format!("issued by {}", admin.id()));
    let issued = state.registry.issue(grant).await.map_err(|_| internal())?;
    state.record(
        Some(&admin),
        "api_key.issue",
        Some(issued.record.key_id.as_str()),
        None,
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "data": {
                "key": issued.key.expose_secret(),
                "key_id": issued.record.key_id.as_str(),
                "principal": new.name,
                "scopes": scopes,
            }
        })),
    ))
}

// ---------------------------------------------------------------------------------------
// Passwords and small helpers

/// The argon2id hash (PHC string) of `password`, with a fresh salt.
fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|_| internal())
}

/// Whether `password` matches the PHC string `stored`.
fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// The hash an unknown username is checked against, so that it costs as much as a known
/// one.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password("not the password of anybody at all").unwrap_or_default()
});

/// 16 random hex digits.
fn random_hex() -> Result<String, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|_| internal())?;
    Ok(hex::encode(bytes))
}

/// 500: something that cannot fail did (the message says nothing more).
fn internal() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal error",
    )
}
