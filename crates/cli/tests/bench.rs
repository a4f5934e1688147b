//! `midge bench` counts correctly against real brokers: everything delivered is counted
//! once, and a broker that drops messages shows up as loss. No timing assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const MIDGE: &str = env!("CARGO_BIN_EXE_midge");

struct Broker {
    child: Child,
    port: u16,
    _dir: Option<PathBuf>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self._dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(port: u16, child: &mut Child) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("broker exited early: {status}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "broker not listening on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("midge-bench-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `midge serve` on a free port, with extra `[limits]` lines if given.
fn midge_broker(limits: &str) -> Broker {
    let port = free_port();
    let dir = scratch_dir(&format!("midge{port}"));
    let cfg = dir.join("midge.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlog_level = \"warn\"\n[security]\nallow_anonymous = true\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port}\n[limits]\n{limits}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(MIDGE)
        .args(["serve", "-c"])
        .arg(&cfg)
        .current_dir(&dir) // its data folder (./data) stays in its scratch dir
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    Broker {
        child,
        port,
        _dir: Some(dir),
    }
}

fn mosquitto_broker(extra: &str) -> Option<Broker> {
    let bin = Path::new("/usr/sbin/mosquitto");
    if !bin.exists() {
        eprintln!("mosquitto not installed: skipping");
        return None;
    }
    let port = free_port();
    let dir = scratch_dir(&format!("mosq{port}"));
    let cfg = dir.join("mosquitto.conf");
    std::fs::write(
        &cfg,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}\n"),
    )
    .unwrap();
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port, &mut child);
    Some(Broker {
        child,
        port,
        _dir: Some(dir),
    })
}

fn bench(port: u16, args: &[&str]) -> Value {
    let out = Command::new(MIDGE)
        .arg("bench")
        .args(args)
        .args(["-p", &port.to_string(), "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "midge bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    serde_json::from_str(line).unwrap()
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

fn assert_clean(v: &Value, expected: u64) {
    assert_eq!(n(v, "sent"), expected, "{v}");
    assert_eq!(n(v, "received"), expected, "{v}");
    assert_eq!(n(v, "unique"), expected, "{v}");
    assert_eq!(n(v, "lost"), 0, "{v}");
    assert_eq!(n(v, "duplicates"), 0, "{v}");
    assert_eq!(n(v, "out_of_order"), 0, "{v}");
    assert_eq!(n(v, "foreign"), 0, "{v}");
}

#[test]
fn fan_in_qos1_through_midge_counts_every_message_once() {
    let b = midge_broker("");
    let v = bench(b.port, &["fan-in", "-P", "4", "-q", "1", "-c", "2000"]);
    assert_clean(&v, 2000);
    assert_eq!(n(&v, "acked"), 2000, "{v}");
    assert_eq!(n(&v, "publishers"), 4);
}

#[test]
fn fan_out_through_midge_expects_one_copy_per_subscriber() {
    let b = midge_broker("");
    let v = bench(
        b.port,
        &["fan-out", "-S", "5", "-q", "1", "-c", "300", "-V", "5"],
    );
    assert_eq!(n(&v, "expected"), 1500, "{v}");
    assert_eq!(n(&v, "received"), 1500, "{v}");
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    assert_eq!(n(&v, "out_of_order"), 0, "{v}");
}

#[test]
fn fan_in_qos1_through_mosquitto_counts_every_message_once() {
    let Some(b) = mosquitto_broker("max_queued_messages 100000") else {
        return;
    };
    let v = bench(b.port, &["fan-in", "-P", "4", "-q", "1", "-c", "2000"]);
    assert_clean(&v, 2000);
}

#[test]
fn a_broker_with_a_tiny_queue_shows_up_as_loss() {
    // 20 messages fit in flight + queue; the subscriber does not read for a second while
    // 2000 QoS 1 messages arrive, so the broker has to drop most of them.
    let b = midge_broker("max_inflight_messages = 10\nmax_queued_messages = 10");
    let v = bench(
        b.port,
        &[
            "fan-in",
            "-P",
            "4",
            "-q",
            "1",
            "-c",
            "2000",
            "--sub-pause",
            "1",
            "--drain-timeout",
            "1",
        ],
    );
    assert_eq!(n(&v, "sent"), 2000, "{v}");
    assert!(n(&v, "lost") > 0, "{v}");
    assert_eq!(n(&v, "lost") + n(&v, "unique"), 2000, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
}

#[test]
fn qos0_to_a_broker_that_dies_mid_run_shows_up_as_loss() {
    let Some(mut b) = mosquitto_broker("") else {
        return;
    };
    let port = b.port;
    let run = std::thread::spawn(move || {
        Command::new(MIDGE)
            .args([
                "bench", "fan-in", "-q", "0", "-r", "2000", "-d", "3", "--json",
            ])
            .args(["-p", &port.to_string(), "--drain-timeout", "1"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(1500));
    b.child.kill().unwrap();
    let out = run.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: Value = serde_json::from_str(line).unwrap();
    assert!(n(&v, "sent") > 0, "{v}");
    assert!(n(&v, "lost") > 0, "{v}");
    assert!(!v["errors"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn conn_counts_connections_and_sink_reports_a_ceiling() {
    let b = midge_broker("");
    let v = bench(
        b.port,
        &["conn", "-c", "50", "--hold", "0.2", "--settle", "0.1"],
    );
    assert_eq!(n(&v, "connected"), 50, "{v}");
    assert_eq!(n(&v, "failures"), 0, "{v}");
    assert_eq!(n(&v, "alive_at_end"), 50, "{v}");
    let s = bench(b.port, &["sink", "-c", "20000"]);
    assert_eq!(n(&s, "pub_sent"), 20000, "{s}");
    assert_eq!(n(&s, "sub_received"), 20000, "{s}");
}

#[test]
fn sub_and_pub_run_as_separate_processes() {
    let b = midge_broker("");
    let port = b.port.to_string();
    let sub = Command::new(MIDGE)
        .args([
            "bench", "sub", "-q", "1", "-c", "1000", "-d", "60", "--json", "-p", &port,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // no readiness signal across processes: give the subscriber time to subscribe
    std::thread::sleep(Duration::from_millis(1500));
    let p = bench(b.port, &["pub", "-P", "2", "-q", "1", "-c", "1000"]);
    assert_eq!(n(&p, "sent"), 1000, "{p}");
    assert_eq!(n(&p, "acked"), 1000, "{p}");
    let out = sub.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(n(&v, "received"), 1000, "{v}");
    assert_eq!(n(&v, "unique"), 1000, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    assert_eq!(n(&v, "out_of_order"), 0, "{v}");
}
