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

/// A CA and a server certificate for 127.0.0.1 signed by it, as `bench/compare` makes
/// them (`rsa`: RSA-2048, `ecdsa`: ECDSA P-256), plus a second CA that signed nothing:
/// `ca.crt`, `server.crt`, `server.key`, `other-ca.crt` in a temporary folder.
fn bench_pki(kind: &str) -> tempfile::TempDir {
    use common::security::openssl;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key: &[&str] = match kind {
        "rsa" => &["-newkey", "rsa:2048"],
        _ => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    };
    for ca in ["ca", "other-ca"] {
        let (k, c, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN=bench {ca}"),
        );
        let args = [
            &["req", "-x509"],
            key,
            &["-nodes", "-days", "2", "-subj", &subj],
        ]
        .concat();
        openssl(d, &[&args[..], &["-keyout", &k, "-out", &c]].concat());
    }
    let csr = [&["req"], key, &["-nodes", "-subj", "/CN=127.0.0.1"]].concat();
    openssl(
        d,
        &[&csr[..], &["-keyout", "server.key", "-out", "server.csr"]].concat(),
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    dir
}

fn pki_path(dir: &tempfile::TempDir, file: &str) -> String {
    dir.path().join(file).display().to_string()
}

/// `midge serve` with one TLS listener on the server certificate of `bench_pki`.
fn midge_tls(pki: &tempfile::TempDir) -> Midge {
    Midge::serve()
        .config(&format!(
            "[[listener]]\nbind = \"127.0.0.1\"\nport = {{port0}}\ncertfile = \"{}\"\nkeyfile = \"{}\"\n",
            pki_path(pki, "server.crt"),
            pki_path(pki, "server.key")
        ))
        .env("RUST_LOG", "warn,midge::serve=info")
        .start()
}

#[test]
fn short_tls_connections_make_full_handshakes_or_resume_sessions() {
    for kind in ["rsa", "ecdsa"] {
        short_tls_connections(kind);
    }
}

fn short_tls_connections(kind: &str) {
    let pki = bench_pki(kind);
    let b = midge_tls(&pki);
    let ca = pki_path(&pki, "ca.crt");
    let short = [
        "conn",
        "--short",
        "--hold",
        "0",
        "--settle",
        "0",
        "--concurrency",
        "1",
        "--cafile",
        &ca,
    ];
    // 130 one after the other: every handshake a full one
    let full = bench(b.port, &[&short[..], &["-c", "130"]].concat());
    assert_eq!(n(&full, "connected"), 130, "{full}");
    assert_eq!(n(&full, "failures"), 0, "{full}");
    assert_eq!(n(&full, "resumed"), 0, "{full}");
    assert_eq!(full["transport"], "tls", "{full}");
    // with --tls-resume the connections after the first 64 (one per session cache) find
    // the session of an earlier one
    let resumed = bench(
        b.port,
        &[&short[..], &["-c", "130", "--tls-resume"]].concat(),
    );
    assert_eq!(n(&resumed, "connected"), 130, "{resumed}");
    assert_eq!(n(&resumed, "failures"), 0, "{resumed}");
    assert!(n(&resumed, "resumed") > 0, "{resumed}");
    assert!(n(&resumed, "resumed") <= 130 - 64, "{resumed}");
    // held connections over TLS stay open
    let held = bench(
        b.port,
        &[
            "conn", "-c", "20", "--hold", "0.2", "--settle", "0.1", "--cafile", &ca,
        ],
    );
    assert_eq!(n(&held, "connected"), 20, "{held}");
    assert_eq!(n(&held, "alive_at_end"), 20, "{held}");
}

#[test]
fn tls_with_a_ca_that_did_not_sign_the_server_connects_nothing() {
    let pki = bench_pki("ecdsa");
    let b = midge_tls(&pki);
    let out = Command::new(MIDGE)
        .args([
            "bench", "conn", "--short", "-c", "3", "--hold", "0", "--settle", "0",
        ])
        .args(["--cafile", &pki_path(&pki, "other-ca.crt"), "--json"])
        .args(["-p", &b.port.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(n(&v, "connected"), 0, "{v}");
    assert_eq!(n(&v, "failures"), 3, "{v}");
}

#[test]
fn fan_in_and_fan_out_over_websocket_through_midge_count_every_message_once() {
    let b = Midge::serve()
        .config("[[listener]]\nbind = \"127.0.0.1\"\nport = {port0}\nprotocol = \"websockets\"\n")
        .env("RUST_LOG", "warn,midge::serve=info")
        .start();
    let v = bench(
        b.port,
        &["fan-in", "--ws", "-P", "4", "-q", "1", "-c", "2000"],
    );
    assert_clean(&v, 2000);
    assert_eq!(n(&v, "acked"), 2000, "{v}");
    assert_eq!(v["transport"], "ws", "{v}");
    let v = bench(
        b.port,
        &["fan-out", "--ws", "-S", "5", "-q", "0", "-c", "300"],
    );
    assert_eq!(n(&v, "expected"), 1500, "{v}");
    assert_eq!(n(&v, "received"), 1500, "{v}");
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    // a path the listener does not serve is refused
    let out = Command::new(MIDGE)
        .args([
            "bench",
            "fan-in",
            "--ws",
            "--ws-path",
            "/nope",
            "-c",
            "10",
            "--json",
        ])
        .args(["-p", &b.port.to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

#[test]
fn qos2_fan_in_completes_every_exchange_and_delivers_all() {
    let b = midge_broker("");
    let v = bench(b.port, &["fan-in", "-P", "4", "-q", "2", "-c", "3000"]);
    assert_clean(&v, 3000);
    // acknowledged = PUBCOMP received: PUBREC answered with PUBREL for every message
    assert_eq!(n(&v, "acked"), 3000, "{v}");
    assert_eq!(n(&v, "qos"), 2, "{v}");
    // with at most 100 messages between the publishers and the subscriber (the publishers
    // wait for deliveries, and still send the PUBRELs the broker needs to deliver)
    let v = bench(
        b.port,
        &[
            "fan-in",
            "-P",
            "4",
            "-q",
            "2",
            "-c",
            "3000",
            "--max-backlog",
            "100",
        ],
    );
    assert_clean(&v, 3000);
    assert_eq!(n(&v, "acked"), 3000, "{v}");
}

#[test]
fn qos2_fan_in_through_mosquitto_delivers_all() {
    // mosquitto 2.0.11 stops sending queued QoS 2 messages with its default 20 in flight
    // (mosquitto_sub gets 492 of 3,000 too); bench/compare's settings:
    let Some(b) = mosquitto_broker("max_queued_messages 1000000\nmax_inflight_messages 256") else {
        return;
    };
    let v = bench(b.port, &["fan-in", "-P", "4", "-q", "2", "-c", "3000"]);
    assert_clean(&v, 3000);
    assert_eq!(n(&v, "acked"), 3000, "{v}");
}

#[test]
fn wildcard_subscriptions_receive_exactly_what_their_filters_match() {
    let b = midge_broker("max_queued_messages = 100000");
    let v = bench(
        b.port,
        &[
            "fan-in",
            "-P",
            "3",
            "-S",
            "5",
            "-q",
            "1",
            "-c",
            "3000",
            "--wildcard-topics",
            "1000",
            "--wildcard-subscriptions",
            "1000",
        ],
    );
    assert_eq!(n(&v, "sent"), 3000, "{v}");
    assert_eq!(n(&v, "topics"), 1000, "{v}");
    assert!(n(&v, "subscriptions") > 900, "{v}");
    // each subscriber gets only what its filters cover: more than one copy of a message in
    // all, fewer than one per subscriber
    let expected = n(&v, "expected");
    assert!(expected > 3000 && expected < 5 * 3000, "{v}");
    assert_eq!(n(&v, "received"), expected, "{v}");
    assert_eq!(n(&v, "unique"), expected, "{v}");
    assert_eq!(n(&v, "lost"), 0, "{v}");
    assert_eq!(n(&v, "duplicates"), 0, "{v}");
    assert_eq!(n(&v, "foreign"), 0, "{v}");
}
