//! `midge passwd` as a process: the mosquitto_passwd interface, round-tripped through
//! midge-auth's reader and (when installed) the real mosquitto broker.

// Test helpers outside #[test] functions may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use common::{MIDGE, MOSQUITTO, Mosquitto};
use midge_auth::{HashAlgorithm, PasswordFile};

/// A scratch directory removed on drop (std only).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "midge-passwd-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn passwd(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(MIDGE)
        .arg("passwd")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str]) {
    let out = passwd(args, None);
    assert!(
        out.status.success(),
        "midge passwd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Exit code 1 and a single `Error: ...` line on stderr.
fn fails(args: &[&str], stdin: Option<&str>) -> String {
    let out = passwd(args, stdin);
    assert_eq!(out.status.code(), Some(1), "midge passwd {args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("Error: "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn load(p: &Path) -> PasswordFile {
    PasswordFile::load(p).unwrap()
}

#[test]
fn create_add_update_delete_round_trip() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    let p = s(&pw);
    ok(&["-I", "1000", "-c", "-b", p, "alice", "one"]);
    assert_eq!(std::fs::metadata(&pw).unwrap().mode() & 0o777, 0o600);
    // A comment added by hand survives later edits.
    let mut text = std::fs::read_to_string(&pw).unwrap();
    text.insert_str(0, "# site users\n");
    std::fs::write(&pw, text).unwrap();

    ok(&["-I", "1000", "-b", p, "bob", "two"]);
    let f = load(&pw);
    assert!(f.verify("alice", b"one"));
    assert!(f.verify("bob", b"two"));
    assert_eq!(f.hash_of("alice").unwrap().iterations(), Some(1000));

    ok(&["-I", "1000", "-b", p, "alice", "three"]);
    let f = load(&pw);
    assert!(f.verify("alice", b"three"));
    assert!(!f.verify("alice", b"one"));
    assert!(f.verify("bob", b"two"));

    ok(&["-D", p, "bob"]);
    let f = load(&pw);
    assert!(!f.contains_user("bob"));
    assert!(f.verify("alice", b"three"));
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("# site users\nalice:$7$1000$"), "{text}");
    assert_eq!(text.lines().count(), 2);

    // -c overwrites.
    ok(&["-I", "1000", "-c", "-b", p, "carol", "four"]);
    let f = load(&pw);
    assert_eq!(f.len(), 1);
    assert!(f.verify("carol", b"four"));
}

#[test]
fn default_is_pbkdf2_with_210000_iterations() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-c", "-b", s(&pw), "alice", "strong"]);
    let f = load(&pw);
    let h = f.hash_of("alice").unwrap();
    assert_eq!(h.algorithm(), HashAlgorithm::Sha512Pbkdf2);
    assert_eq!(h.iterations(), Some(210_000));
    assert_eq!(h.salt_len(), 12);
}

#[test]
fn sha512_algorithm_writes_dollar_6() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-H", "sha512", "-c", "-b", s(&pw), "old", "timer"]);
    assert!(std::fs::read_to_string(&pw).unwrap().starts_with("old:$6$"));
    assert!(load(&pw).verify("old", b"timer"));
}

#[test]
fn password_from_stdin_when_not_a_terminal() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    let p = s(&pw);
    let out = passwd(&["-I", "1000", "-c", p, "alice"], Some("typed\ntyped\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(load(&pw).verify("alice", b"typed"));
    // A single line is enough for scripts.
    let out = passwd(&["-I", "1000", p, "bob"], Some("piped\n"));
    assert!(out.status.success(), "{out:?}");
    assert!(load(&pw).verify("bob", b"piped"));
    // Mismatch, empty input and an empty password are errors, and change nothing.
    let before = std::fs::read(&pw).unwrap();
    fails(&["-I", "1000", p, "alice"], Some("a\nb\n"));
    fails(&["-I", "1000", p, "alice"], Some(""));
    fails(&["-I", "1000", p, "alice"], Some("\n"));
    assert_eq!(std::fs::read(&pw).unwrap(), before);
}

#[test]
fn delete_of_missing_user_is_an_error() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-I", "1000", "-c", "-b", s(&pw), "alice", "x"]);
    let before = std::fs::read(&pw).unwrap();
    let err = fails(&["-D", s(&pw), "bob"], None);
    assert!(err.contains("bob"), "{err}");
    assert_eq!(std::fs::read(&pw).unwrap(), before);
}

#[test]
fn missing_file_without_c_is_an_error() {
    let dir = Scratch::new();
    let pw = dir.file("absent");
    fails(&["-b", s(&pw), "alice", "x"], None);
    fails(&["-D", s(&pw), "alice"], None);
    fails(&["-U", s(&pw)], None);
    assert!(!pw.exists());
}

#[test]
fn update_plaintext_file_in_place() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    std::fs::write(&pw, "# plain\nalice:open sesame\nbob:b:c\n").unwrap();
    ok(&["-I", "1000", "-U", s(&pw)]);
    let text = std::fs::read_to_string(&pw).unwrap();
    assert!(text.starts_with("# plain\nalice:$7$1000$"), "{text}");
    let f = load(&pw);
    assert!(f.verify("alice", b"open sesame"));
    assert!(f.verify("bob", b"b:c"));
    // A second -U does not hash the hashes, and says so.
    let out = passwd(&["-I", "1000", "-U", s(&pw)], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("left unchanged"));
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), text);
}

#[test]
fn world_readable_file_is_reported_and_tightened() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-I", "1000", "-c", "-b", s(&pw), "alice", "x"]);
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = passwd(&["-I", "1000", "-b", s(&pw), "bob", "y"], None);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("world readable"), "{err}");
    assert!(err.contains("0600"), "{err}");
    assert_eq!(std::fs::metadata(&pw).unwrap().mode() & 0o777, 0o600);
    // Already private: nothing to say.
    let out = passwd(&["-I", "1000", "-b", s(&pw), "bob", "z"], None);
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn usage_errors_exit_1_with_one_line() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    let p = s(&pw);
    fails(&[], None);
    fails(&["-c", "-D", p, "u"], None);
    fails(&["-b", "-D", p, "u", "x"], None);
    fails(&["-U", "-b", p], None);
    fails(&["-b", p, "u"], None);
    fails(&["-H", "md5", "-b", "-c", p, "u", "x"], None);
    fails(&["-I", "0", "-b", "-c", p, "u", "x"], None);
    fails(&["-q", p, "u"], None);
    fails(&["-b", "-c", p, "bad:name", "x"], None);
    fails(&["-b", "-c", p, "u", ""], None);
    assert!(!pw.exists());
}

#[test]
fn passwords_may_start_with_a_dash() {
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-I", "1000", "-c", "-b", s(&pw), "alice", "-D"]);
    assert!(load(&pw).verify("alice", b"-D"));
}

#[test]
fn mosquitto_accepts_a_file_written_by_midge_passwd() {
    let mosquitto_pub = "/usr/bin/mosquitto_pub";
    if !Path::new(MOSQUITTO).exists() || !Path::new(mosquitto_pub).exists() {
        eprintln!("SKIPPED: mosquitto or mosquitto_pub is not installed");
        return;
    }
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    ok(&["-I", "20000", "-c", "-b", s(&pw), "alice", "s3cret"]);
    ok(&["-H", "sha512", "-b", s(&pw), "legacy", "old"]);

    let broker = Mosquitto::start(&format!(
        "allow_anonymous false\npassword_file {}\npersistence false\n",
        pw.display()
    ));
    let connect = |user: &str, password: &str| {
        Command::new(mosquitto_pub)
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-u", user, "-P", password, "-t", "t", "-m", "m"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(connect("alice", "s3cret"));
    assert!(!connect("alice", "s3cret!"));
    assert!(connect("legacy", "old"));
    assert!(!connect("bob", "s3cret"));
}

/// The interactive path: stdin is a terminal (a pty from util-linux `script`), so the
/// password is prompted for twice without echo.
#[test]
fn prompts_twice_on_a_terminal() {
    if !Path::new("/usr/bin/script").exists() {
        eprintln!("SKIPPED: /usr/bin/script (util-linux) is not installed");
        return;
    }
    let dir = Scratch::new();
    let pw = dir.file("passwd");
    let on_tty = |args: &str, input: &str| {
        let mut child = Command::new("/usr/bin/script")
            .args([
                "-q",
                "-e",
                "-c",
                &format!("{MIDGE} passwd {args}"),
                "/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = on_tty(
        &format!("-I 1000 -c {} alice", s(&pw)),
        "tty-pass\ntty-pass\n",
    );
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("Password:") && screen.contains("Reenter password:"),
        "{screen}"
    );
    assert!(load(&pw).verify("alice", b"tty-pass"));
    let out = on_tty(&format!("-I 1000 {} alice", s(&pw)), "one\ntwo\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Passwords do not match"));
    assert!(load(&pw).verify("alice", b"tty-pass"));
}
