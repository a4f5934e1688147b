//! A throw-away PostgreSQL 15 server for tests: `PgServer::start()` runs `postgres` from
//! a copy of a template cluster (made once per machine with `initdb`, kept in the system
//! temp folder) in a temporary folder, on a free 127.0.0.1 port, as the unprivileged user
//! `midge-pg` (PostgreSQL refuses to run as root; `scripts/test-deps.sh` creates the user,
//! and so does this harness when it runs as root and the user is missing). The server is
//! stopped (SIGQUIT: immediate shutdown) when the `PgServer` is dropped, and also when the
//! thread that started it dies (parent-death signal), so a killed test leaves no server.
//!
//! cargo-nextest runs every test in a process of its own, so one server per test binary
//! cannot be shared across tests; a test starts its own (about half a second: a copy of
//! the template and a start-up, no initdb) and may make several databases in it.
//!
//! Used by other crates' tests with `#[path = ".../series/tests/pg/mod.rs"] mod pg;`; it
//! needs no crate beyond std.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Where Debian's postgresql-15 puts its programs.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The unprivileged user the server runs as.
pub const USER: &str = "midge-pg";

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct PgServer {
    /// Temporary folder: `data/` (the cluster), `sock/` (its Unix socket), `log`.
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    databases: AtomicUsize,
    durable: bool,
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `cmd` run as [`USER`] (no fork: `setpriv` execs it, so its PID is the program's).
fn as_user(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={USER}"),
        &format!("--regid={USER}"),
        "--init-groups",
        "--pdeathsig=QUIT",
        "--",
        program,
    ]);
    c
}

/// Creates [`USER`] when missing (tests run as root).
fn ensure_user() {
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        // another test process may create it at the same moment: check again after
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ])
            .status();
        run(Command::new("id").arg(USER));
    }
}

fn chown(path: &Path) {
    run(Command::new("chown").arg(format!("{USER}:")).arg(path));
}

/// The template cluster, made once (by whichever test process gets there first; the
/// others wait for the rename that publishes it).
fn template() -> PathBuf {
    let root = std::env::temp_dir().join("midge-pg-template-15w1");
    let ready = root.join("data/PG_VERSION");
    if ready.exists() {
        return root.join("data");
    }
    let staging = std::env::temp_dir().join(format!(
        "midge-pg-template-15w1.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    chown(&staging);
    run(as_user(&format!("{BIN}/initdb"))
        .current_dir(&staging)
        .arg("-D")
        .arg(staging.join("data"))
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            // 1 MiB WAL segments: a smaller cluster to copy for every server
            "--wal-segsize=1",
        ]));
    if std::fs::rename(&staging, &root).is_err() {
        // another process published it first
        let _ = std::fs::remove_dir_all(&staging);
    }
    assert!(ready.exists(), "no template cluster at {}", root.display());
    root.join("data")
}

/// Removes the folders of servers whose test process was killed (SIGKILL runs no drop; the
/// server itself died with it: parent-death signal).
fn remove_stale_folders() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix("midge-pg-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

impl PgServer {
    /// Starts a server; panics with its log when it does not come up within 30 s. For
    /// tests: fsync is off (a crash of the machine may lose the cluster).
    pub fn start() -> PgServer {
        PgServer::start_with(false)
    }

    /// Starts a server that fsyncs as PostgreSQL does by default (for measurements).
    pub fn start_durable() -> PgServer {
        PgServer::start_with(true)
    }

    fn start_with(durable: bool) -> PgServer {
        assert!(
            Path::new(BIN).join("postgres").exists(),
            "PostgreSQL 15 is not installed ({BIN}/postgres): run scripts/test-deps.sh"
        );
        ensure_user();
        remove_stale_folders();
        let template = template();
        let dir = std::env::temp_dir().join(format!(
            "midge-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sock")).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(dir.join("data")));
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{USER}:"))
            .arg(&dir));
        let mut server = PgServer {
            dir,
            port: 0,
            child: None,
            databases: AtomicUsize::new(0),
            durable,
        };
        // the free port may be taken between the check and the bind: try a few
        for _ in 0..5 {
            if server.try_start() {
                return server;
            }
        }
        panic!("PostgreSQL did not start: {}", server.log());
    }

    fn try_start(&mut self) -> bool {
        self.stop();
        self.port = free_port();
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let child = as_user(&format!("{BIN}/postgres"))
            .current_dir(&self.dir)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(self.dir.join("sock"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(if self.durable {
                ["-c", "fsync=on", "-c", "full_page_writes=on"]
            } else {
                ["-c", "fsync=off", "-c", "full_page_writes=off"]
            })
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=40"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return false;
            }
            let ready = Command::new(format!("{BIN}/pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (user `postgres`, no password: trust).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs `sql` in database `db` with psql; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = run(Command::new(format!("{BIN}/psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db])
            .args(["-p", &self.port.to_string()])
            .args(["-c", sql]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database; returns its URL.
    pub fn new_database(&self) -> String {
        let name = format!("t_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// A new empty schema in database `postgres`; returns a URL whose connections use it
    /// (`search_path`). Much cheaper than a database (PostgreSQL 15 copies a database
    /// block by block through its log).
    pub fn new_schema(&self) -> String {
        let name = format!("s_{}", self.databases.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE SCHEMA {name}"));
        format!("{}?options=-csearch_path%3D{name}", self.url("postgres"))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
