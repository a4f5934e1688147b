//! The hub's `tsdb` rule action in a real `midge serve`: the hosted rule engines' example
//! fed by mosquitto_pub and by Python paho becomes one datapoint each; an output the
//! convention cannot use is a failure of the rule, shown by `GET /api/v1/rules`; and under
//! a QoS 1 load with `midge serve` killed by SIGKILL and restarted, every acknowledged
//! message is exactly one datapoint, whether the time is the broker's or the message's own.
//!
//! Points are read from the data folder's `series.db` with [`SeriesStore`] (not the HTTP
//! API), so these tests hold on their own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http_json as http;
use common::persistence::{Client, broker};
use midge_codec::{Packet, Protocol, Publish, QoS, TopicName};
use midge_series::points::{Datapoint, PointValue};
use midge_series::{SeriesOptions, SeriesStore};
use serde_json::{Value, json};

/// The hosted rule engine's example: the device's message and the rule over it.
const EXAMPLE: &str = r#"{"metric":"report","_timestamp":1511995554,"_value":32,"id":"70:00:83:24:38:85","machine":"arm","os":"linux","categories":"data","type":"temperature"}"#;

const EXAMPLE_RULES: &str = r#"
[[rule]]
name = "report"
sql = "SELECT metric, _value AS value, _timestamp AS timestamp, id, machine, os, categories, type FROM 'test-iot-service'"
tsdb = true

[[rule]]
name = "probe"
sql = "SELECT metric, value FROM 'probe'"
tsdb = true
"#;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every datapoint of `metric` in the broker's series file (none while it does not exist).
fn points(data: &Path, metric: &str) -> Vec<Datapoint> {
    let Ok(store) = SeriesStore::open(&data.join("series.db"), SeriesOptions::default()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let _ = store.export_points(&[metric.to_string()], i64::MIN, i64::MAX, &mut |p| {
        out.push(p);
        true
    });
    out
}

/// The points of `metric` once there are at least `n` (bounded wait).
fn wait_points(data: &Path, metric: &str, n: usize, within: Duration) -> Vec<Datapoint> {
    let deadline = Instant::now() + within;
    loop {
        let got = points(data, metric);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} points of {metric} after {within:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mosquitto_pub(port: u16, id: &str, args: &[&str]) {
    let port = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &port, "-i", id];
    all.extend_from_slice(args);
    let st = Command::new("mosquitto_pub").args(&all).status().unwrap();
    assert!(st.success(), "mosquitto_pub {args:?}");
}

/// Publish probes until the hub wrote one (its subscriptions are in place from then on).
fn hub_ready(port: u16, data: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        mosquitto_pub(
            port,
            "prober",
            &["-t", "probe", "-m", r#"{"metric": "probe", "value": 1}"#],
        );
        std::thread::sleep(Duration::from_millis(100));
        if !points(data, "probe").is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the hub never wrote a probe");
    }
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

#[test]
fn the_hosted_example_from_mosquitto_pub_and_paho_is_one_point_each() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, EXAMPLE_RULES);
    hub_ready(b.port, &data);

    mosquitto_pub(
        b.port,
        "dev-mosquitto",
        &["-t", "test-iot-service", "-m", EXAMPLE, "-q", "1"],
    );
    let got = wait_points(&data, "report", 1, Duration::from_secs(20));
    let want_tags = tags(&[
        ("categories", "data"),
        ("id", "70:00:83:24:38:85"),
        ("machine", "arm"),
        ("os", "linux"),
        ("type", "temperature"),
    ]);
    assert_eq!(
        got,
        [Datapoint {
            metric: "report".into(),
            field: "value".into(),
            tags: want_tags.clone(),
            timestamp: 1_511_995_554_000,
            value: PointValue::Long(32),
        }]
    );

    // the same reading from paho (MQTT 5, QoS 1), one second later, and the very same
    // message again: a second point, and no third (same key: replaced)
    let later = EXAMPLE.replace("1511995554", "1511995555");
    let script = format!(
        r#"
import sys, paho.mqtt.client as mqtt
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dev-paho", protocol=mqtt.MQTTv5)
c.connect("127.0.0.1", {port})
c.loop_start()
for payload in sys.argv[1:]:
    info = c.publish("test-iot-service", payload, qos=1)
    info.wait_for_publish(timeout=10)
    assert info.is_published(), "not acknowledged"
c.disconnect()
c.loop_stop()
print("published")
"#,
        port = b.port
    );
    let out = Command::new("python3")
        .args(["-c", &script, &later, &later])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("published"),
        "paho: {out:?}"
    );
    let got = wait_points(&data, "report", 2, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    let got_after = points(&data, "report");
    assert_eq!(got_after.len(), 2, "{got_after:?}");
    assert_eq!(got[1].timestamp, 1_511_995_555_000);
    assert_eq!(got[1].tags, want_tags);
    assert_eq!(got[1].value, PointValue::Long(32));

    // the points are on disk: they survive a restart
    b.stop();
    assert_eq!(points(&data, "report"), got_after);
    let b = broker(&data, EXAMPLE_RULES);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(points(&data, "report"), got_after);
    b.stop();
}

/// The rule `name` as `GET /api/v1/rules` shows it.
fn rule_status(web: u16, name: &str) -> Value {
    let (status, body) = http(web, "GET", "/api/v1/rules", None);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no rule {name} in {v}"))
}

#[test]
fn an_output_without_metric_or_number_is_a_rule_failure_shown_by_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = format!(
        r#"{EXAMPLE_RULES}
[[rule]]
name = "sloppy"
sql = "SELECT * FROM 'sloppy/+'"
tsdb = true

[http]
bind = "127.0.0.1"
"#
    );
    let b = broker(&data, &rules);
    let web = b.http_port();
    hub_ready(b.port, &data);
    mosquitto_pub(
        b.port,
        "dev-1",
        &[
            "-t",
            "sloppy/a",
            "-m",
            r#"{"value": 3, "room": "k"}"#,
            "-q",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = rule_status(web, "sloppy");
        if r["failed"].as_u64() == Some(1) {
            break r;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(r["actions"], json!(["tsdb"]), "{r}");
    assert_eq!(r["matched"], 1, "{r}");
    assert!(
        r["last_error"]
            .as_str()
            .unwrap()
            .contains("no `metric` column"),
        "{r}"
    );
    mosquitto_pub(
        b.port,
        "dev-1",
        &[
            "-t",
            "sloppy/b",
            "-m",
            r#"{"metric": "m", "room": "k"}"#,
            "-q",
            "1",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        let r = rule_status(web, "sloppy");
        if r["failed"].as_u64() == Some(2) {
            break r;
        }
        assert!(Instant::now() < deadline, "{r}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        r["last_error"]
            .as_str()
            .unwrap()
            .contains("no numeric value"),
        "{r}"
    );
    // a good message on the same rule is written; the failures held nothing up
    mosquitto_pub(
        b.port,
        "dev-1",
        &[
            "-t",
            "sloppy/c",
            "-m",
            r#"{"metric": "sloppy_ok", "value": "31.5", "room": "k"}"#,
            "-q",
            "1",
        ],
    );
    let got = wait_points(&data, "sloppy_ok", 1, Duration::from_secs(20));
    assert_eq!(got[0].value, PointValue::Double(31.5));
    assert_eq!(got[0].tags, tags(&[("room", "k")]));

    // the rules API takes "tsdb": true too, and refuses anything but a boolean
    let (status, body) = http(
        web,
        "POST",
        "/api/v1/rules",
        Some(&json!({"name": "bad", "sql": "SELECT * FROM 'x'", "tsdb": "yes"})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("tsdb: must be true or false"), "{body}");
    let (status, body) = http(
        web,
        "POST",
        "/api/v1/rules",
        Some(&json!({
            "name": "env",
            "sql": "SELECT 'env' AS metric, temp, hum, topic(2) AS room FROM 'env/+'",
            "tsdb": true
        })),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(rule_status(web, "env")["actions"], json!(["tsdb"]));
    let before = unix_ms();
    mosquitto_pub(
        b.port,
        "dev-2",
        &[
            "-t",
            "env/kitchen",
            "-m",
            r#"{"temp": 21.5, "hum": 40}"#,
            "-q",
            "1",
        ],
    );
    let got = wait_points(&data, "env", 2, Duration::from_secs(20));
    let after = unix_ms();
    let fields: BTreeMap<&str, &PointValue> =
        got.iter().map(|p| (p.field.as_str(), &p.value)).collect();
    assert_eq!(
        fields,
        BTreeMap::from([
            ("hum", &PointValue::Long(40)),
            ("temp", &PointValue::Double(21.5))
        ])
    );
    for p in &got {
        assert_eq!(p.tags, tags(&[("room", "kitchen")]));
        // no timestamp column: the time the broker accepted the message
        assert!(
            (before..=after).contains(&p.timestamp),
            "{} not in {before}..={after}",
            p.timestamp
        );
    }
    assert_eq!(got[0].timestamp, got[1].timestamp, "one message, one time");
    b.stop();
}

// --- SIGKILL under load -------------------------------------------------------------------

const LOAD_RULES: &str = r#"
[[rule]]
name = "probe"
sql = "SELECT metric, value FROM 'probe'"
tsdb = true

[[rule]]
name = "broker-time"
sql = "SELECT metric, value, seq FROM 'load/broker'"
tsdb = true

[[rule]]
name = "own-time"
sql = "SELECT metric, value, seq, _ts AS timestamp FROM 'load/own'"
tsdb = true
"#;

/// Messages per variant.
const N: u64 = 20_000;
/// QoS 1 publishes in flight at once.
const WINDOW: usize = 32;
/// The first explicit timestamp (ms); message `seq` has `BASE_MS + seq`.
const BASE_MS: i64 = 1_700_000_000_000;

/// One publisher's state across broker restarts: a client that resends what it had sent
/// but not seen acknowledged when the connection broke.
struct Publisher {
    topic: &'static str,
    metric: &'static str,
    own_time: bool,
    next: u64,
    /// Sent, not acknowledged when the connection broke: sent again first.
    unacked: BTreeSet<u64>,
    /// Acknowledged, with how many times each was sent.
    acked: BTreeMap<u64, u32>,
    sends: HashMap<u64, u32>,
}

impl Publisher {
    fn new(topic: &'static str, metric: &'static str, own_time: bool) -> Publisher {
        Publisher {
            topic,
            metric,
            own_time,
            next: 0,
            unacked: BTreeSet::new(),
            acked: BTreeMap::new(),
            sends: HashMap::new(),
        }
    }

    fn payload(&self, seq: u64) -> Vec<u8> {
        let mut v = json!({"metric": self.metric, "value": seq, "seq": seq});
        if self.own_time {
            v["_ts"] = json!(BASE_MS + seq as i64);
        }
        v.to_string().into_bytes()
    }

    /// Publish (resends first) until all `N` are acknowledged or the connection breaks.
    fn run(&mut self, port: u16, progress: &AtomicU64) {
        let Some((mut c, _)) = Client::try_connect_with(port, {
            let mut k = midge_codec::Connect::new(Protocol::V311, format!("pub-{}", self.metric));
            k.keep_alive = 0;
            k
        }) else {
            return;
        };
        let mut todo: Vec<u64> = std::mem::take(&mut self.unacked).into_iter().collect();
        todo.reverse();
        let mut in_flight: HashMap<u16, u64> = HashMap::new();
        let mut next_id = 1u16;
        loop {
            while in_flight.len() < WINDOW {
                let seq = match todo.pop() {
                    Some(s) => s,
                    None if self.next < N => {
                        self.next += 1;
                        self.next - 1
                    }
                    None => break,
                };
                let id = next_id;
                next_id = if next_id == 60_000 { 1 } else { next_id + 1 };
                let mut p = Publish::new(TopicName::new(self.topic).unwrap(), self.payload(seq));
                p.qos = QoS::AtLeastOnce;
                p.packet_id = id;
                c.send(&Packet::Publish(p));
                *self.sends.entry(seq).or_default() += 1;
                in_flight.insert(id, seq);
            }
            if in_flight.is_empty() {
                c.disconnect();
                return;
            }
            match c.recv(Duration::from_secs(10)) {
                Some(Packet::PubAck(a)) if !a.reason.is_error() => {
                    if let Some(seq) = in_flight.remove(&a.packet_id) {
                        self.acked.insert(seq, self.sends[&seq]);
                        progress.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(_) => {}
                None => {
                    // killed (or stuck): what was in flight is sent again on the next start
                    self.unacked.extend(todo);
                    self.unacked.extend(in_flight.values());
                    return;
                }
            }
        }
    }
}

/// Count the points of one publisher's metric by `seq` tag and check: every acknowledged
/// message is there; one sent once is exactly one point; with its own timestamp even a
/// message sent twice is one point (the same key). Returns (points, messages sent twice
/// that are two points).
fn check_exactly_once(data: &Path, p: &Publisher, started_ms: i64) -> (usize, usize) {
    let got = points(data, p.metric);
    let mut by_seq: BTreeMap<u64, Vec<&Datapoint>> = BTreeMap::new();
    for point in &got {
        let seq: u64 = point.tags["seq"].parse().unwrap();
        assert_eq!(point.value, PointValue::Long(seq as i64), "{point:?}");
        if p.own_time {
            assert_eq!(point.timestamp, BASE_MS + seq as i64, "{point:?}");
        } else {
            assert!(
                point.timestamp >= started_ms && point.timestamp <= unix_ms(),
                "broker time out of range: {point:?}"
            );
        }
        by_seq.entry(seq).or_default().push(point);
    }
    let missing: Vec<u64> = p
        .acked
        .keys()
        .copied()
        .filter(|s| !by_seq.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{}: {} of {} acknowledged messages have no point, e.g. {:?}",
        p.metric,
        missing.len(),
        p.acked.len(),
        &missing[..missing.len().min(10)]
    );
    let mut twice = 0;
    for (seq, points) in &by_seq {
        let sends = p.sends.get(seq).copied().unwrap_or(0);
        assert!(
            sends > 0,
            "{}: a point for a message never sent: {seq}",
            p.metric
        );
        if points.len() == 1 {
            continue;
        }
        // only a message the publisher had to send again may be two points (QoS 1 is at
        // least once: the broker cannot tell a resend from a new message), and only when
        // the time is the broker's; a redelivery by the broker to the hub never makes one
        assert!(
            !p.own_time && sends > 1 && points.len() as u32 <= sends,
            "{}: seq {seq} sent {sends} time(s) is {} points: {points:?}",
            p.metric,
            points.len()
        );
        twice += 1;
    }
    (got.len(), twice)
}

#[test]
fn every_acknowledged_message_is_one_point_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started_ms = unix_ms();
    let mut publishers = [
        Publisher::new("load/broker", "load_broker_time", false),
        Publisher::new("load/own", "load_own_time", true),
    ];
    let kills = [N / 4, N / 2];
    for (round, kill_at) in kills.iter().enumerate() {
        let b = broker(&data, LOAD_RULES);
        if round == 0 {
            hub_ready(b.port, &data);
        }
        let port = b.port;
        let progress = Arc::new(AtomicU64::new(0));
        let acked_before: u64 = publishers.iter().map(|p| p.acked.len() as u64).sum();
        let handles: Vec<_> = std::mem::replace(
            &mut publishers,
            [Publisher::new("", "", false), Publisher::new("", "", false)],
        )
        .into_iter()
        .map(|mut p| {
            let progress = progress.clone();
            std::thread::spawn(move || {
                p.run(port, &progress);
                p
            })
        })
        .collect();
        // kill -9 once the publishers are well into the load (both together)
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked_before + progress.load(Ordering::Relaxed) < 2 * kill_at {
            assert!(Instant::now() < deadline, "round {round}: load too slow");
            std::thread::sleep(Duration::from_millis(2));
        }
        b.kill();
        let done: Vec<Publisher> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        publishers = done.try_into().ok().unwrap();
        let acked: u64 = publishers.iter().map(|p| p.acked.len() as u64).sum();
        assert!(
            acked < 2 * N,
            "round {round}: the load finished before the kill"
        );
    }
    // the last start: the publishers resend what was not acknowledged and finish; the hub's
    // persistent session gets what it had not written
    let b = broker(&data, LOAD_RULES);
    let port = b.port;
    let progress = Arc::new(AtomicU64::new(0));
    for p in &mut publishers {
        p.run(port, &progress);
        assert_eq!(
            p.acked.len() as u64,
            N,
            "{}: not all acknowledged",
            p.metric
        );
    }
    for p in &publishers {
        wait_points(&data, p.metric, N as usize, Duration::from_secs(120));
    }
    // let any late redelivery land before counting
    std::thread::sleep(Duration::from_millis(500));
    let mut counts = Vec::new();
    for p in &publishers {
        counts.push(check_exactly_once(&data, p, started_ms));
    }
    let resent: Vec<usize> = publishers
        .iter()
        .map(|p| p.sends.values().filter(|n| **n > 1).count())
        .collect();
    eprintln!(
        "{N} messages per publisher over {} SIGKILLs: broker time {} points ({} resent by the publisher, {} of them two points), own time {} points ({} resent)",
        kills.len(),
        counts[0].0,
        resent[0],
        counts[0].1,
        counts[1].0,
        resent[1]
    );
    assert_eq!(
        counts[1].0 as u64, N,
        "own time: exactly one point per message"
    );

    // restart survival: the points are all still there, and nothing is written again
    b.stop();
    let before: Vec<usize> = publishers
        .iter()
        .map(|p| points(&data, p.metric).len())
        .collect();
    let b = broker(&data, LOAD_RULES);
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<usize> = publishers
        .iter()
        .map(|p| points(&data, p.metric).len())
        .collect();
    assert_eq!(before, after);
    b.stop();
    for p in &publishers {
        check_exactly_once(&data, p, started_ms);
    }
}
