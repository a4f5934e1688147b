//! Compatibility with the real mosquitto tools: files written by `mosquitto_passwd` are read
//! and verified by midge, and files written by midge are accepted by the mosquitto broker.
//!
//! Needs Debian's `mosquitto` and `mosquitto-clients` (2.0.x); each test says so and
//! returns early when a binary is missing.

// Test helpers outside #[test] functions may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use midge_auth::{
    HashAlgorithm, PasswdDocument, PasswordFile, PasswordHash, SALT_LEN, write_atomic,
};

const MOSQUITTO_PASSWD: &str = "/usr/bin/mosquitto_passwd";
const MOSQUITTO: &str = "/usr/sbin/mosquitto";
const MOSQUITTO_PUB: &str = "/usr/bin/mosquitto_pub";

fn have(bin: &str) -> bool {
    if Path::new(bin).exists() {
        true
    } else {
        eprintln!("SKIPPED: {bin} is not installed (apt-get install mosquitto mosquitto-clients)");
        false
    }
}

fn mosquitto_passwd(args: &[&str]) {
    let out = Command::new(MOSQUITTO_PASSWD)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_passwd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn reads_mosquitto_passwd_default_pbkdf2_file() {
    if !have(MOSQUITTO_PASSWD) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let p = path_str(&pw);
    mosquitto_passwd(&["-c", "-b", p, "alice", "wonderland"]);
    mosquitto_passwd(&["-b", p, "bob", "b:with colon and spaces "]);
    mosquitto_passwd(&["-b", p, "carol", "ünïcödé-密码"]);
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.contains("alice:$7$"), "{text}");

    let f = PasswordFile::load(&pw).unwrap();
    assert_eq!(f.len(), 3);
    let alice = f.hash_of("alice").unwrap();
    assert_eq!(alice.algorithm(), HashAlgorithm::Sha512Pbkdf2);
    assert_eq!(alice.salt_len(), 12);
    assert!(f.verify("alice", b"wonderland"));
    assert!(!f.verify("alice", b"Wonderland"));
    assert!(f.verify("bob", "b:with colon and spaces ".as_bytes()));
    assert!(!f.verify("bob", b"b:with colon and spaces"));
    assert!(f.verify("carol", "ünïcödé-密码".as_bytes()));
    assert!(!f.verify("dave", b"wonderland"));
}

#[test]
fn reads_mosquitto_passwd_sha512_file() {
    if !have(MOSQUITTO_PASSWD) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let p = path_str(&pw);
    mosquitto_passwd(&["-H", "sha512", "-c", "-b", p, "legacy", "old-school"]);
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("legacy:$6$"), "{text}");
    let f = PasswordFile::load(&pw).unwrap();
    assert_eq!(
        f.hash_of("legacy").unwrap().algorithm(),
        HashAlgorithm::Sha512
    );
    assert!(f.verify("legacy", b"old-school"));
    assert!(!f.verify("legacy", b"new-school"));
}

#[test]
fn honours_iteration_count_written_by_mosquitto_passwd() {
    if !have(MOSQUITTO_PASSWD) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let p = path_str(&pw);
    mosquitto_passwd(&["-I", "3000", "-c", "-b", p, "alice", "pw"]);
    let f = PasswordFile::load(&pw).unwrap();
    assert_eq!(f.hash_of("alice").unwrap().iterations(), Some(3000));
    assert!(f.verify("alice", b"pw"));
    assert!(!f.verify("alice", b"pW"));
}

#[test]
fn follows_mosquitto_passwd_updates_deletes_and_plaintext_upgrade() {
    if !have(MOSQUITTO_PASSWD) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let p = path_str(&pw);
    mosquitto_passwd(&["-c", "-b", p, "alice", "one"]);
    mosquitto_passwd(&["-b", p, "bob", "two"]);
    mosquitto_passwd(&["-b", p, "alice", "three"]);
    mosquitto_passwd(&["-D", p, "bob"]);
    let f = PasswordFile::load(&pw).unwrap();
    assert!(f.verify("alice", b"three"));
    assert!(!f.verify("alice", b"one"));
    assert!(!f.contains_user("bob"));

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "carol:sesame\ndave:open door\n").unwrap();
    mosquitto_passwd(&["-U", path_str(&plain)]);
    let f = PasswordFile::load(&plain).unwrap();
    assert!(f.verify("carol", b"sesame"));
    assert!(f.verify("dave", b"open door"));
}

#[test]
fn mosquitto_passwd_keeps_midge_written_users_intact() {
    if !have(MOSQUITTO_PASSWD) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let mut doc = PasswdDocument::new();
    doc.set(
        "midge-user",
        &PasswordHash::create(b"from midge", HashAlgorithm::Sha512Pbkdf2, 5000).unwrap(),
    );
    write_atomic(&pw, doc.render().as_bytes()).unwrap();
    mosquitto_passwd(&["-b", path_str(&pw), "mosq-user", "from mosquitto"]);
    let f = PasswordFile::load(&pw).unwrap();
    assert!(f.verify("midge-user", b"from midge"));
    assert!(f.verify("mosq-user", b"from mosquitto"));
}

/// A mosquitto broker on a free 127.0.0.1 port, killed (only this process) on drop.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn start_mosquitto(password_file: &Path) -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf: PathBuf = dir.path().join("mosquitto.conf");
    let mut text = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
        password_file.display()
    );
    if running_as_root() {
        // Otherwise mosquitto drops to the `mosquitto` user and cannot read a 0600 file.
        text.push_str("user root\n");
    }
    std::fs::write(&conf, text).unwrap();
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut broker = Broker {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = broker.child.try_wait() {
            panic!("mosquitto exited early: {status}");
        }
        assert!(Instant::now() < deadline, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn mosquitto_pub_ok(port: u16, user: &str, password: &str) -> bool {
    Command::new(MOSQUITTO_PUB)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-u", user, "-P", password, "-t", "midge/test", "-m", "hi"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn mosquitto_broker_accepts_midge_written_password_file() {
    if !have(MOSQUITTO) || !have(MOSQUITTO_PUB) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("passwd");
    let mut doc = PasswdDocument::parse("# written by midge\n");
    // A six-digit iteration count like midge's default (210,000 would take ~10 s to hash
    // in an unoptimised test build; mosquitto parses any count the same way).
    let strong = PasswordHash::create(b"s3cret!", HashAlgorithm::Sha512Pbkdf2, 100_001).unwrap();
    assert_eq!(strong.salt_len(), SALT_LEN);
    doc.set("alice", &strong);
    doc.set(
        "legacy",
        &PasswordHash::create(b"old", HashAlgorithm::Sha512, 0).unwrap(),
    );
    write_atomic(&pw, doc.render().as_bytes()).unwrap();

    let broker = start_mosquitto(&pw);
    assert!(mosquitto_pub_ok(broker.port, "alice", "s3cret!"));
    assert!(!mosquitto_pub_ok(broker.port, "alice", "s3cret?"));
    assert!(mosquitto_pub_ok(broker.port, "legacy", "old"));
    assert!(!mosquitto_pub_ok(broker.port, "nobody", "s3cret!"));
}
