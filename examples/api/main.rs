//! The token API: deny by default, short-lived JWT access tokens from a login, refresh
//! tokens that are single-use, and API keys as an alternative, all through one keygate
//! guard (feature `jwt`).
//!
//! ```sh
//! JWT_SECRET="$(openssl rand -base64 64)" ADMIN_API_KEY="$(openssl rand -base64 32)" \
//!     cargo run -p keygate-examples --features jwt --bin api
//! ```
//!
//! Configured only from the environment:
//!
//! | variable | |
//! |---|---|
//! | `JWT_SECRET` | required: the HS256 secret tokens are signed with, at least 64 characters (`openssl rand -base64 64`) |
//! | `ADMIN_API_KEY` | required: the administrator's API key (scope `admin`), at least 32 characters |
//! | `LISTEN_ADDR` | default `127.0.0.1:8080`; port 0 picks a free port |
//! | `AUDIT_LOG` | default `api-audit.jsonl`: the hash-chained audit trail (locked: one writer per file) |
//! | `AUDIT_AGGREGATE_SECS` | default 10: refusals of unauthenticated callers are counted per client and reason over this many seconds (one record, then one with the count); 0 writes one record each |
//! | `AUDIT_CHECKPOINT_KEY` | optional, at least 32 bytes (`openssl rand -base64 32`): signs a checkpoint in the audit log every 1,000 records and at shutdown; `--verify-audit` with it set checks them |
//! | `FAILED_ATTEMPTS_PER_MINUTE` | default 10, per client address |
//!
//! `api --verify-audit <file>` checks an audit log's hash chain instead.
//! See `app.rs` for the routes, and the README for a walk-through with curl.

mod app;
#[path = "../common/mod.rs"]
mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::main(
        app::NAME,
        || app::Config::from_lookup(common::env_var),
        |config| &config.server,
        app::router,
    )
    .await
}
