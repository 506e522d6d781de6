//! A throwaway PostgreSQL server on a free loopback port, for the tests of the `postgres`
//! feature: `initdb` (trust authentication) and `pg_ctl` in a temp dir, listening on
//! 127.0.0.1 only, its socket in the temp dir. The tools are looked up on `PATH`, then in
//! `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so as root they run as the
//! `postgres` user (`runuser -u postgres --`). When it cannot start a server it panics
//! with a clear message: nothing that needs PostgreSQL ever passes silently without it.
#![allow(dead_code)] // each user takes what it needs

use std::{
    net::{Ipv4Addr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A PostgreSQL server of this test's own; stopped (and its files removed) on drop.
pub(crate) struct PostgresServer {
    pub(crate) port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versioned.sort();
    versioned.reverse();
    on_path
        .into_iter()
        .chain(versioned)
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL's initdb and pg_ctl were found neither on PATH nor in \
                 /usr/lib/postgresql/*/bin: the `postgres` feature's tests start a throwaway \
                 server with them (e.g. `apt-get install postgresql`)"
            )
        })
}

/// A fresh directory name under the system temp dir.
fn temp_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!(
        "keygate-postgres-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

impl PostgresServer {
    /// Initialises a cluster in a fresh temp dir and starts it.
    pub(crate) fn start() -> Self {
        let bin = find_bin();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("no free loopback port")
            .port();
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown is needed to give the temp dir to the postgres user");
            assert!(
                status.success(),
                "cannot give {} to the `postgres` user (running as root, initdb must run as \
                 another user): is there a `postgres` user?",
                dir.display()
            );
        }
        let mut server = Self {
            port,
            dir,
            bin,
            as_postgres,
            running: false,
        };
        let out = server.run(
            "initdb",
            &[
                "-D",
                &server.data().display().to_string(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        server.restart();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program);
            command
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()))
    }

    /// Starts the server (again, on the same port and data) and waits until it accepts
    /// connections.
    pub(crate) fn restart(&mut self) {
        assert!(!self.running, "postgres is already running");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log").display().to_string();
        let data = self.data().display().to_string();
        let out = self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "30", "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(Path::new(&log)).unwrap_or_default()
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not come up on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections drop.
    pub(crate) fn stop(&mut self) {
        if self.running {
            let data = self.data().display().to_string();
            let _ = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
            self.running = false;
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
