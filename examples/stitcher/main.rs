//! The stitcher: signed webhooks and job dispatch, guarded by keygate.
//!
//! ```sh
//! STITCHER_API_KEY=$(openssl rand -base64 32) \
//!     STITCHER_WEBHOOK_SECRETS=$(openssl rand -base64 32) cargo run -p keygate-examples --bin stitcher
//! ```
//!
//! Configured only from the environment:
//!
//! | variable | |
//! |---|---|
//! | `STITCHER_API_KEY` | required: the stitcher's key, at least 32 characters |
//! | `STITCHER_WEBHOOK_SECRETS` | required: webhook signing secrets, comma-separated (two during a rotation) |
//! | `STITCHER_WORKSPACES` | optional: the workspaces dispatch may use (any if unset) |
//! | `LISTEN_ADDR` | default `127.0.0.1:8080`; port 0 picks a free port |
//! | `AUDIT_LOG` | default `stitcher-audit.jsonl`: the hash-chained audit trail (locked: one writer per file) |
//! | `AUDIT_AGGREGATE_SECS` | default 10: refusals of unauthenticated callers are counted per client and reason over this many seconds (one record, then one with the count); 0 writes one record each |
//! | `AUDIT_CHECKPOINT_KEY` | optional, at least 32 bytes (`openssl rand -base64 32`): signs a checkpoint in the audit log every 1,000 records and at shutdown; `--verify-audit` with it set checks them |
//! | `FAILED_ATTEMPTS_PER_MINUTE` | default 10, per client address |
//! | `DATABASE_URL` | default `sqlite://keygate.db` (created in the working directory): where the key is registered |
//!
//! `stitcher --verify-audit <file>` checks an audit log's hash chain instead.
//! See `app.rs` for the routes and the signature format.

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
