//! `midge import mosquitto.db` (issue 14): a persistence file written by the real mosquitto
//! 2.0 (retained message, persistent session with a subscription, QoS 1 messages queued
//! while it was offline) is imported; `midge serve` on that data folder gives the retained
//! message to a new subscriber and the session back, with its queue, to the client.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::persistence::{Client, broker};
use common::{MIDGE, Midge, Mosquitto};
use midge_codec::{Packet, Protocol, Publish, QoS};

const T: Duration = Duration::from_secs(10);

fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run mosquitto with persistence in `dir`, make a retained message, a persistent session
/// `keep` subscribed to `a/#` at QoS 1 and three QoS 1 messages queued for it while it is
/// offline, then SIGTERM it so it writes `dir/mosquitto.db`.
fn mosquitto_db(dir: &Path) -> PathBuf {
    let mut m = Mosquitto::start_in(
        dir,
        &format!(
            "persistence true\npersistence_location {}/\n",
            dir.display()
        ),
    );
    let port = m.port;
    let p = port.to_string();
    let base = ["-h", "127.0.0.1", "-p", p.as_str(), "-q", "1"];
    let pubs = |args: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(args);
        run("mosquitto_pub", &a);
    };
    pubs(&["-r", "-t", "r/t", "-m", "retained-hello"]);
    let mut a = base.to_vec();
    a.extend_from_slice(&["-c", "-i", "keep", "-t", "a/#", "-E"]);
    run("mosquitto_sub", &a);
    for i in 1..=3 {
        pubs(&["-t", "a/x", "-m", &format!("q{i}")]);
    }
    m.terminate();
    let db = dir.join("mosquitto.db");
    assert!(db.exists(), "mosquitto wrote no database: {}", m.log());
    db
}

fn next_publish(c: &mut Client) -> Publish {
    loop {
        match c.recv(T) {
            Some(Packet::Publish(p)) => return p,
            Some(_) => continue,
            None => panic!("no PUBLISH"),
        }
    }
}

#[test]
fn mosquitto_db_import_serves_retained_and_sessions_with_queues() {
    let dir = tempfile::tempdir().unwrap();
    let db = mosquitto_db(dir.path());
    let data = dir.path().join("data");

    let out = run(
        MIDGE,
        &[
            "import",
            db.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 retained message"), "{text}");
    assert!(
        text.contains("1 persistent session(s) with 1 subscription"),
        "{text}"
    );
    assert!(text.contains("3 queued message"), "{text}");

    // a second import into the same folder is refused
    let again = Command::new(MIDGE)
        .args(["import", db.to_str().unwrap(), "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a midge store"),
        "{again:?}"
    );

    let b = broker(&data, "");
    // a new subscriber gets the retained message
    let (mut fresh, present) = Client::connect(b.port, Protocol::V311, "fresh", true);
    assert!(!present);
    fresh.subscribe("r/t", QoS::AtLeastOnce, None);
    let r = next_publish(&mut fresh);
    assert_eq!(r.topic.as_str(), "r/t");
    assert_eq!(&r.payload[..], b"retained-hello");
    assert!(r.retain);
    fresh.ack(&r);
    fresh.disconnect();

    // the persistent session comes back with its queue, in order
    let (mut keep, present) = Client::connect(b.port, Protocol::V311, "keep", false);
    assert!(present, "session present expected");
    for i in 1..=3 {
        let p = next_publish(&mut keep);
        assert_eq!(p.topic.as_str(), "a/x");
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(&p.payload[..], format!("q{i}").as_bytes());
        keep.ack(&p);
    }
    keep.disconnect();

    // and its subscription: a new message on a/x reaches it
    let (mut publisher, _) = Client::connect(b.port, Protocol::V311, "pub", true);
    publisher.publish("a/y", b"live", QoS::AtLeastOnce, false, 1);
    publisher.disconnect();
    let (mut keep, present) = Client::connect(b.port, Protocol::V311, "keep", false);
    assert!(present);
    let p = next_publish(&mut keep);
    assert_eq!(p.topic.as_str(), "a/y");
    assert_eq!(&p.payload[..], b"live");
    keep.ack(&p);
    keep.disconnect();
    b.stop();

    // --force adds the import to a store in use: the queue comes back once more, numbered
    // after what the store holds
    let out = run(
        MIDGE,
        &[
            "import",
            db.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--force",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 queued message"));
    let b = broker(&data, "");
    let (mut keep, present) = Client::connect(b.port, Protocol::V311, "keep", false);
    assert!(present);
    for i in 1..=3 {
        let p = next_publish(&mut keep);
        assert_eq!(&p.payload[..], format!("q{i}").as_bytes());
        keep.ack(&p);
    }
    assert!(
        matches!(
            keep.recv(Duration::from_millis(300)),
            None | Some(Packet::PingResp)
        ),
        "nothing more is queued"
    );
    keep.disconnect();
    b.stop();
}

#[test]
fn damaged_mosquitto_db_is_refused_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (name, bytes) in [
        ("garbage.db", b"this is not a mosquitto database".to_vec()),
        (
            "truncated.db",
            b"\x00\xB5\x00mosquitto db\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00\x02\x00\x00\x01\x00"
                .to_vec(),
        ),
    ] {
        let f = dir.path().join(name);
        std::fs::write(&f, bytes).unwrap();
        let out = Command::new(MIDGE)
            .args(["import", f.to_str().unwrap(), "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.starts_with("Error:"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert!(!data.join("midge.store").exists(), "{name}");
    }
}

#[test]
fn first_start_on_a_mosquitto_conf_imports_its_persistence_folder() {
    let dir = tempfile::tempdir().unwrap();
    mosquitto_db(dir.path());
    // the same folder, now run by midge from a mosquitto.conf (its port replaced by -p 0)
    let mut b = Midge::serve()
        .mosquitto_conf(&format!(
            "listener 1883 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
            dir.path().display()
        ))
        .env("RUST_LOG", "info")
        .start();
    let (port, log) = (b.port, b.log());
    let (mut keep, present) = Client::connect(port, Protocol::V311, "keep", false);
    let got: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let p = next_publish(&mut keep);
            keep.ack(&p);
            p.payload.to_vec()
        })
        .collect();
    keep.disconnect();
    let (mut fresh, _) = Client::connect(port, Protocol::V311, "fresh", true);
    fresh.subscribe("r/t", QoS::AtMostOnce, None);
    let r = next_publish(&mut fresh);
    fresh.disconnect();
    b.terminate(T);
    assert!(log.contains("imported"), "{log}");
    assert!(present, "session present expected: {log}");
    assert_eq!(got, vec![b"q1".to_vec(), b"q2".to_vec(), b"q3".to_vec()]);
    assert_eq!(&r.payload[..], b"retained-hello");
    assert!(dir.path().join("midge.store").exists());
}
