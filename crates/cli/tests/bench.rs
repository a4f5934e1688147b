//! `midge bench` counts correctly against real brokers: everything delivered is counted
//! once, and a broker that drops messages shows up as loss. No timing assertions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{MIDGE, MOSQUITTO, Midge, Mosquitto};
use serde_json::Value;

/// `midge serve` on a port from the OS, with extra `[limits]` lines if given; warnings only
/// (and the `ready` lines the launcher reads), so that logging costs nothing under load.
fn midge_broker(limits: &str) -> Midge {
    Midge::serve()
        .config(&format!("[limits]\n{limits}\n"))
        .env("RUST_LOG", "warn,midge::serve=info")
        .start()
}

/// A real mosquitto, when installed.
fn mosquitto_broker(extra: &str) -> Option<Mosquitto> {
    if !Path::new(MOSQUITTO).exists() {
        eprintln!("mosquitto not installed: skipping");
        return None;
    }
    Some(Mosquitto::start(&format!("persistence false\n{extra}\n")))
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
    b.kill();
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
