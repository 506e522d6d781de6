//! The coordinator: a job API guarded by keygate.
//!
//! ```sh
//! COORDINATOR_API_KEY=$(openssl rand -base64 32) ADMIN_API_KEY=$(openssl rand -base64 32) \
//!     COORDINATOR_WORKSPACES=ws-1 cargo run -p keygate-examples --bin coordinator
//! ```
//!
//! Configured only from the environment:
//!
//! | variable | |
//! |---|---|
//! | `COORDINATOR_API_KEY` | required: the first coordinator's key, at least 32 characters |
//! | `COORDINATOR_WORKSPACES` | required: the workspaces it may use, comma-separated |
//! | `ADMIN_API_KEY` | required: the administrator's key (scope `admin`) |
//! | `LISTEN_ADDR` | default `127.0.0.1:8080`; port 0 picks a free port |
//! | `AUDIT_LOG` | default `coordinator-audit.jsonl`: the hash-chained audit trail (locked: one writer per file) |
//! | `AUDIT_AGGREGATE_SECS` | default 10: refusals of unauthenticated callers are counted per client and reason over this many seconds (one record, then one with the count); 0 writes one record each |
//! | `AUDIT_CHECKPOINT_KEY` | optional, at least 32 bytes (`openssl rand -base64 32`): signs a checkpoint in the audit log every 1,000 records and at shutdown; `--verify-audit` with it set checks them |
//! | `FAILED_ATTEMPTS_PER_MINUTE` | default 10, per client address (per replica) |
//! | `DATABASE_URL` | default `sqlite://keygate.db` (created in the working directory): the keys, kept across restarts; `postgres://user:password@host/db` (needs `--features postgres`): shared with every replica on that database |
//! | `REDIS_URL` | unset: rate limits in memory, keys in `DATABASE_URL`; set (e.g. `redis://:password@10.0.0.5:6379/0`, needs `--features redis`): keys and rate limits shared with every replica using the same Redis (`DATABASE_URL` is then not used) |
//!
//! `coordinator --verify-audit <file>` checks an audit log's hash chain instead.
//! See `app.rs` for the routes.
//!
//! # Several replicas
//!
//! With a `postgres://` `DATABASE_URL`, copies of the coordinator behind one address share
//! their keys; with `REDIS_URL`, they share their keys and the limit of 100 requests per
//! minute per principal; jobs stay in each process's
//! memory (a real service keeps them in a database), and each writes its own audit log.
//! Two replicas on one machine, sharing a throwaway Redis (Redis 6 or later):
//!
//! ```sh
//! redis-server --port 6390 --save "" --appendonly no &
//! cargo build -p keygate-examples --features redis --bin coordinator
//! export REDIS_URL=redis://127.0.0.1:6390/ COORDINATOR_WORKSPACES=ws-1 \
//!     COORDINATOR_API_KEY=$(openssl rand -base64 32) ADMIN_API_KEY=$(openssl rand -base64 32)
//! LISTEN_ADDR=127.0.0.1:8081 AUDIT_LOG=audit-1.jsonl target/debug/coordinator &
//! LISTEN_ADDR=127.0.0.1:8082 AUDIT_LOG=audit-2.jsonl target/debug/coordinator &
//! ```
//!
//! Every replica gets the same keys: the first registers them, the others find them
//! registered (and on Redis they are registered again if Redis loses them). Built without
//! `--features redis`, a set `REDIS_URL` is refused at start.

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
