//! Real PostgreSQL and Redis servers on 127.0.0.1 for the tests (Debian's `postgresql` and
//! `redis-server`, installed by `cargo xtask setup`), one of each per test binary, stopped
//! when the test process ends (a watchdog shell waits for it).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not start:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Runs `cmd` in the background, killed once this process has exited (and its folder `dir`
/// removed then).
fn spawn_with_watchdog(cmd: &str, dir: &Path, log: &Path) {
    let script = format!(
        "{cmd} >>'{log}' 2>&1 & S=$!; while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $S; sleep 2; kill -9 $S 2>/dev/null; rm -rf '{dir}'",
        log = log.display(),
        dir = dir.display(),
        pid = std::process::id()
    );
    // `setsid -f` forks the watchdog into its own session and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("starting a service");
    assert!(started.success(), "setsid failed");
}

/// The folder of PostgreSQL's server programs (Debian keeps them per major version).
fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed: run `cargo xtask setup`")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no PostgreSQL server program found")
}

/// A running PostgreSQL server.
pub struct Postgres {
    /// Its port.
    pub port: u16,
}

impl Postgres {
    /// The server of this test binary (started on first use).
    pub fn shared() -> &'static Postgres {
        static PG: OnceLock<Postgres> = OnceLock::new();
        PG.get_or_init(Postgres::start)
    }

    fn start() -> Postgres {
        let bin = pg_bin();
        let dir =
            std::env::temp_dir().join(format!("tandem-pg-{}-{}", std::process::id(), free_port()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
        let as_user = if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            "runuser -u postgres -- "
        } else {
            ""
        };
        let init = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{as_user}'{}' -D '{}' -U tandem --auth=trust -E UTF8 --no-sync",
                bin.join("initdb").display(),
                data.display()
            ))
            .output()
            .unwrap();
        assert!(
            init.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        spawn_with_watchdog(
            &format!(
                "{as_user}'{}' -D '{}' -p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
                bin.join("postgres").display(),
                data.display(),
                dir.display()
            ),
            &dir,
            &log,
        );
        wait_for_port(port, "PostgreSQL", &log);
        Postgres { port }
    }

    /// A URL of a fresh, empty database on this server.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let name = format!("t{:016x}", rand::random::<u64>());
        let admin = format!("postgres://tandem@127.0.0.1:{}/postgres", self.port);
        let mut conn = loop {
            match sqlx::PgConnection::connect(&admin).await {
                Ok(c) => break c,
                // Accepting TCP before it accepts logins.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        format!("postgres://tandem@127.0.0.1:{}/{name}", self.port)
    }
}

/// A running Redis server.
pub struct Redis {
    /// Its URL.
    pub url: String,
}

impl Redis {
    /// A new server (each test gets its own, so their limits never meet).
    pub fn start() -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tandem-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        spawn_with_watchdog(
            &format!(
                "redis-server --port {port} --bind 127.0.0.1 --save '' --appendonly no --dir '{}'",
                dir.display()
            ),
            &dir,
            &log,
        );
        wait_for_port(port, "redis-server", &log);
        Redis {
            url: format!("redis://127.0.0.1:{port}"),
        }
    }
}
