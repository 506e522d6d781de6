//! The Redis rate-limit check against the floor of any Redis call: a `PING` on the same
//! multiplexed connection.
//!
//! Starts its own `redis-server` on a free loopback port (no persistence) and stops it
//! afterwards; fails if `redis-server` is not installed.
//!
//! ```text
//! cargo bench --features redis --bench redis
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    hint::black_box,
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    num::NonZeroU32,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keygate::{
    limit::{Quota, RateLimitBackend, Tiers},
    redis::RedisRateLimit,
};

/// A `redis-server` of the benchmark's own; killed on drop.
struct RedisServer {
    port: u16,
    child: Child,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("could not start redis-server (is Redis 6 or later installed?): {error}")
            });
        let server = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis(c: &mut Criterion) {
    let server = RedisServer::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A quota no benchmark exhausts, so every check takes the write path.
    let tiers = Tiers::new(Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())).tier(
        "workspace",
        Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap()),
    );
    let limit = runtime
        .block_on(RedisRateLimit::connect(
            format!("redis://127.0.0.1:{}/", server.port),
            tiers,
        ))
        .unwrap();
    let one = NonZeroU32::MIN;

    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("ping", |b| {
        b.to_async(&runtime).iter(|| {
            let mut connection = limit.connection().clone();
            async move {
                let pong: String = ::redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .unwrap();
                black_box(pong)
            }
        });
    });
    group.bench_function("check", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check(black_box("coordinator-1"), "default", one);
            async move { black_box(check.await.unwrap()) }
        });
    });
    group.bench_function("check_all/2", |b| {
        b.to_async(&runtime).iter(|| {
            let check = limit.check_all(
                black_box(&[("coordinator-1", "default"), ("ws-1", "workspace")]),
                one,
            );
            async move { black_box(check.await.unwrap()) }
        });
    });
    group.finish();
    drop(server);
}

criterion_group!(benches, redis);
criterion_main!(benches);
