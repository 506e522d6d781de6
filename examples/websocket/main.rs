//! The websocket server: job updates over WebSocket, guarded by keygate.
//!
//! ```sh
//! WS_API_KEY=$(openssl rand -base64 32) WS_WORKSPACES=ws-1 cargo run -p keygate-examples --bin websocket
//! ```
//!
//! Configured only from the environment:
//!
//! | variable | |
//! |---|---|
//! | `WS_API_KEY` | required: the clients' key, at least 32 characters |
//! | `WS_WORKSPACES` | required: the workspaces it may join and publish to, comma-separated |
//! | `WS_AUTH_TIMEOUT_MS` | default 5000: how long a connection has to authenticate |
//! | `WS_MESSAGES_PER_MINUTE` | default 120: the messages a principal may send, over all its connections (on this replica) |
//! | `WS_SESSION_CHECK_MS` | default 30000: the longest time between two checks of an open connection's key (revocations the key database announces close it at once) |
//! | `LISTEN_ADDR` | default `127.0.0.1:8080`; port 0 picks a free port |
//! | `AUDIT_LOG` | default `websocket-audit.jsonl`: the hash-chained audit trail (locked: one writer per file) |
//! | `AUDIT_AGGREGATE_SECS` | default 10: refusals of unauthenticated callers are counted per client and reason over this many seconds (one record, then one with the count); 0 writes one record each |
//! | `AUDIT_CHECKPOINT_KEY` | optional, at least 32 bytes (`openssl rand -base64 32`): signs a checkpoint in the audit log every 1,000 records and at shutdown; `--verify-audit` with it set checks them |
//! | `FAILED_ATTEMPTS_PER_MINUTE` | default 10, per client address |
//! | `DATABASE_URL` | default `sqlite://keygate.db` (created in the working directory): where the key is registered |
//! | `REDIS_URL` | optional (build with `--features redis`): keys on this Redis server instead, shared with other replicas, whose revocations close this replica's sockets within a second |
//!
//! `websocket --verify-audit <file>` checks an audit log's hash chain instead.
//! See `app.rs` for the routes and the protocol.

mod app;
#[path = "../common/mod.rs"]
mod common;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::main(
        app::NAME,
        || app::Config::from_lookup(common::env_var),
        |config| &config.server,
        |config| app::router(config, app::Hub::default()),
    )
    .await
}
