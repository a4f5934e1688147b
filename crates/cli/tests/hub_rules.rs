//! The IoT hub in `midge serve`: `[[rule]]`s from the configuration file store what real
//! clients (mosquitto_pub) publish into the SQLite time-series file, and a message the
//! broker acknowledged reaches the table even when midge is killed with SIGKILL before the
//! rule stored it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::persistence::{Client, broker};
use midge_codec::{Protocol, QoS};
use midge_series::{Order, RowsQuery, SeriesOptions, SeriesStore, StoredRow};

const RULES: &str = r#"
[[rule]]
name = "hot"
sql = "SELECT * FROM 'sensors/#' WHERE temp > 30"
store = "telemetry"

[[rule]]
name = "floor"
sql = "SELECT value AS celsius, topic(1) AS floor FROM 'floor-5/#'"
store = "floors"
"#;

/// Rows of `table` in the broker's series file once there are `n` (bounded wait).
fn rows(data: &Path, table: &str, n: usize) -> Vec<StoredRow> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = SeriesStore::open(&data.join("series.db"), SeriesOptions::default())
            .and_then(|s| {
                s.rows(&RowsQuery {
                    table: table.into(),
                    order: Order::OldestFirst,
                    limit: Some(10_000),
                    ..RowsQuery::default()
                })
            })
            .unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} rows in {table}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-i", "sensor-7"];
    all.extend_from_slice(args);
    let st = Command::new("mosquitto_pub").args(&all).status().unwrap();
    assert!(st.success(), "mosquitto_pub {args:?}");
}

/// Publish probes until the hub stored one (its subscription is in place from then on).
fn hub_ready(port: u16, data: &Path, topic: &str, payload: &str, table: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        mosquitto_pub(port, &["-t", topic, "-m", payload]);
        std::thread::sleep(Duration::from_millis(100));
        let n = rows(data, table, 0).len();
        if n > 0 {
            return n;
        }
        assert!(Instant::now() < deadline, "the hub never stored a probe");
    }
}

#[test]
fn rules_store_what_mosquitto_pub_publishes_with_its_client_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, RULES);
    let probes = hub_ready(
        b.port,
        &data,
        "sensors/probe",
        "{\"temp\": 99}",
        "telemetry",
    );

    mosquitto_pub(
        b.port,
        &[
            "-t",
            "sensors/room1",
            "-m",
            r#"{"temp": 31.5, "hum": 40}"#,
            "-q",
            "1",
        ],
    );
    mosquitto_pub(
        b.port,
        &["-t", "sensors/room2", "-m", r#"{"temp": 21}"#, "-q", "1"],
    );
    mosquitto_pub(b.port, &["-t", "elsewhere/room3", "-m", r#"{"temp": 50}"#]);
    mosquitto_pub(
        b.port,
        &["-t", "floor-5/temperature", "-m", "15", "-q", "2"],
    );

    let floors = rows(&data, "floors", 1);
    assert_eq!(floors[0].topic, "floor-5/temperature");
    assert_eq!(
        serde_json::Value::Object(floors[0].data.clone()),
        serde_json::json!({"celsius": 15, "floor": "floor-5"})
    );
    let hot = rows(&data, "telemetry", probes + 1);
    let last = hot.last().unwrap();
    assert_eq!(last.topic, "sensors/room1");
    assert_eq!(last.client_id, "sensor-7");
    assert_eq!(
        serde_json::Value::Object(last.data.clone()),
        serde_json::json!({"temp": 31.5, "hum": 40})
    );
    // nothing cooler, nothing elsewhere
    std::thread::sleep(Duration::from_millis(300));
    let hot = rows(&data, "telemetry", 0);
    assert!(
        hot.iter().all(|r| r.data["temp"].as_f64().unwrap() > 30.0),
        "{hot:?}"
    );
    assert!(hot.iter().all(|r| r.topic.starts_with("sensors/")));
    b.stop();
}

/// Publish `{"seq": n}` at QoS 1 from `from` on, each after the previous PUBACK, until the
/// connection breaks; returns the sequence numbers acknowledged.
fn publish_until_killed(port: u16, from: u64, upto: u64) -> Vec<u64> {
    let (mut c, _) = Client::connect(port, Protocol::V311, "crash-pub", true);
    let mut acked = Vec::new();
    for seq in from..upto {
        let id = (seq % 60_000 + 1) as u16;
        c.publish_packet(
            "sensors/crash",
            format!("{{\"temp\": 40, \"seq\": {seq}}}").as_bytes(),
            QoS::AtLeastOnce,
            false,
            id,
        );
        match c.recv(Duration::from_secs(10)) {
            Some(midge_codec::Packet::PubAck(a)) if a.packet_id == id => acked.push(seq),
            _ => break,
        }
    }
    acked
}

#[test]
fn every_acknowledged_message_is_stored_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let rounds = 3;
    for round in 0..rounds {
        let b = broker(&data, RULES);
        if round == 0 {
            hub_ready(
                b.port,
                &data,
                "sensors/probe",
                "{\"temp\": 99}",
                "telemetry",
            );
        }
        let port = b.port;
        let upto = next + 100_000;
        let publisher = std::thread::spawn(move || publish_until_killed(port, next, upto));
        // kill at a moment that varies from round to round, under load
        std::thread::sleep(Duration::from_millis(300 + 250 * round as u64));
        b.kill();
        let got = publisher.join().unwrap();
        assert!(!got.is_empty(), "round {round}: nothing was acknowledged");
        next = got.last().unwrap() + 1;
        acked.extend(got);
    }
    // a last start: the hub's persistent session gets what it had not stored
    let b = broker(&data, RULES);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (stored, missing) = loop {
        let rows = rows(&data, "telemetry", 0);
        let mut stored: BTreeMap<u64, usize> = BTreeMap::new();
        for r in &rows {
            if let Some(seq) = r.data.get("seq").and_then(serde_json::Value::as_u64) {
                *stored.entry(seq).or_default() += 1;
                // redelivered after a restart or not, the row names its publisher
                assert_eq!(r.client_id, "crash-pub", "{r:?}");
            }
        }
        let missing: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|s| !stored.contains_key(s))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (stored, missing);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages never stored, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    let duplicates: usize = stored.values().map(|n| n - 1).sum();
    eprintln!(
        "{} acknowledged over {rounds} SIGKILLs, all stored ({duplicates} stored twice: at least once)",
        acked.len()
    );
    b.stop();
}
