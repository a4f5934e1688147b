//! midge serve against Debian's mosquitto_pub / mosquitto_sub (2.0.x): what a mosquitto user
//! types must work the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::{Midge, Proc, run, unique};

const PUB: &str = "mosquitto_pub";
const SUB: &str = "mosquitto_sub";
const T: Duration = Duration::from_secs(10);

/// mosquitto_sub with `-d`, returned once its SUBACK arrived (so publishing is safe).
fn sub_ready(port: u16, args: &[&str]) -> Proc {
    let p = port.to_string();
    // stdout is a file: line buffering (stdbuf) makes the -d lines visible as they happen
    let mut all = vec!["-oL", SUB, "-h", "127.0.0.1", "-p", &p, "-d"];
    all.extend_from_slice(args);
    let mut proc = Proc::spawn("stdbuf", &all);
    proc.wait_for("received SUBACK", T);
    proc
}

/// The lines of mosquitto_sub -d output that are messages (not `Client ...` debug lines).
fn messages(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid"))
        .map(str::to_owned)
        .collect()
}

fn publish(port: u16, args: &[&str]) -> common::Done {
    let p = port.to_string();
    let mut all = vec!["-h", "127.0.0.1", "-p", &p];
    all.extend_from_slice(args);
    let d = run(PUB, &all, T);
    assert_eq!(d.code, Some(0), "mosquitto_pub {args:?} failed: {d:?}");
    d
}

const VERSIONS: [&str; 3] = ["mqttv31", "mqttv311", "mqttv5"];

#[test]
fn sub_receives_the_temperature_published_by_pub_in_every_protocol_version() {
    let b = Midge::start();
    for sv in VERSIONS {
        for pv in VERSIONS {
            let s = sub_ready(b.port, &["-V", sv, "-t", "floor-5/temperature", "-C", "1"]);
            publish(b.port, &["-V", pv, "-t", "floor-5/temperature", "-m", "15"]);
            let d = s.finish(T);
            assert_eq!(d.code, Some(0), "sub {sv} / pub {pv}: {d:?}");
            assert_eq!(messages(&d.stdout), vec!["15"], "sub {sv} / pub {pv}");
        }
    }
}

#[test]
fn qos2_publish_shows_the_full_pubrec_pubrel_pubcomp_exchange() {
    let b = Midge::start();
    for v in ["mqttv311", "mqttv5"] {
        let topic = unique("q2");
        let s = sub_ready(b.port, &["-V", v, "-q", "2", "-t", &topic, "-C", "1"]);
        let d = publish(
            b.port,
            &["-V", v, "-q", "2", "-d", "-t", &topic, "-m", "x2"],
        );
        let lines: Vec<&str> = d.stdout.lines().collect();
        let want = [
            "sending CONNECT",
            "received CONNACK (0)",
            "sending PUBLISH (d0, q2, r0, m1, '",
            "received PUBREC (Mid: 1)",
            "sending PUBREL (m1)",
            "received PUBCOMP (Mid: 1, RC:0)",
            "sending DISCONNECT",
        ];
        assert_eq!(lines.len(), want.len(), "{v}: {}", d.stdout);
        for (l, w) in lines.iter().zip(want) {
            assert!(l.contains(w), "{v}: {l:?} lacks {w:?}\n{}", d.stdout);
        }
        // the subscriber's side of QoS 2, exactly once
        let d = s.finish(T);
        assert_eq!(messages(&d.stdout), vec!["x2"], "{v}");
        for w in [
            "received PUBLISH (d0, q2, r0, m",
            "sending PUBREC (m",
            "received PUBREL (Mid:",
            "sending PUBCOMP (m",
        ] {
            assert_eq!(
                d.stdout.matches(w).count(),
                1,
                "{v}: {w:?} in\n{}",
                d.stdout
            );
        }
    }
}

#[test]
fn retained_message_reaches_a_later_subscriber_with_retain_flag_and_is_cleared_by_empty_payload() {
    let b = Midge::start();
    let p = b.port.to_string();
    for (v, clear) in [("mqttv311", "-n"), ("mqttv5", "-n"), ("mqttv311", "")] {
        let topic = unique("kept");
        publish(b.port, &["-V", v, "-r", "-t", &topic, "-m", "kept"]);
        let d = run(
            SUB,
            &["-p", &p, "-V", v, "-t", &topic, "-C", "1", "-v", "-W", "5"],
            T,
        );
        assert_eq!(d.stdout, format!("{topic} kept\n"), "{v}");
        let d = run(
            SUB,
            &[
                "-p", &p, "-V", v, "-t", &topic, "-C", "1", "-F", "%r %t %p", "-W", "5",
            ],
            T,
        );
        assert_eq!(d.stdout, format!("1 {topic} kept\n"), "{v}");
        // clear: -r -n, or -r -m ''
        if clear == "-n" {
            publish(b.port, &["-V", v, "-r", "-t", &topic, "-n"]);
        } else {
            publish(b.port, &["-V", v, "-r", "-t", &topic, "-m", ""]);
        }
        let d = run(SUB, &["-p", &p, "-V", v, "-t", &topic, "-W", "1"], T);
        assert_eq!(d.stdout, "", "{v}: retained message not cleared");
        assert_eq!(d.code, Some(27), "mosquitto_sub's timeout exit code: {d:?}");
    }
}

#[test]
fn a_live_message_carries_retain_flag_0_and_a_retained_one_flag_1() {
    let b = Midge::start();
    for v in ["mqttv311", "mqttv5"] {
        let topic = unique("flag");
        let s = sub_ready(b.port, &["-V", v, "-t", &topic, "-C", "1", "-F", "%r %p"]);
        // published with retain while a subscriber is connected: forwarded with RETAIN 0
        // in 3.1.1 [MQTT-3.3.1-9] and in 5.0 without retain-as-published
        publish(b.port, &["-V", v, "-r", "-t", &topic, "-m", "live"]);
        let d = s.finish(T);
        assert_eq!(messages(&d.stdout), vec!["0 live"], "{v}");
    }
}

#[test]
fn plus_and_hash_wildcards_match_the_right_levels() {
    let b = Midge::start();
    for v in ["mqttv311", "mqttv5"] {
        let root = unique("wild");
        let plus = format!("{root}/+/temp");
        let hash = format!("{root}/#");
        let sp = sub_ready(b.port, &["-V", v, "-t", &plus, "-v", "-C", "2"]);
        let sh = sub_ready(b.port, &["-V", v, "-t", &hash, "-v", "-C", "4"]);
        for (t, m) in [
            (format!("{root}/a/b/temp"), "deep"),
            (format!("{root}/a/temp"), "one"),
            (format!("{root}/hum"), "h"),
            (format!("{root}/b/temp"), "two"),
        ] {
            publish(b.port, &["-V", v, "-q", "1", "-t", &t, "-m", m]);
        }
        let dp = sp.finish(T);
        assert_eq!(
            messages(&dp.stdout),
            vec![format!("{root}/a/temp one"), format!("{root}/b/temp two")],
            "{v} +"
        );
        let dh = sh.finish(T);
        assert_eq!(
            messages(&dh.stdout),
            vec![
                format!("{root}/a/b/temp deep"),
                format!("{root}/a/temp one"),
                format!("{root}/hum h"),
                format!("{root}/b/temp two"),
            ],
            "{v} #"
        );
        // '#' also matches the parent level itself [MQTT-4.7.1-2]
        let sh = sub_ready(b.port, &["-V", v, "-t", &hash, "-v", "-C", "1"]);
        publish(b.port, &["-V", v, "-t", &root, "-m", "parent"]);
        assert_eq!(
            messages(&sh.finish(T).stdout),
            vec![format!("{root} parent")]
        );
    }
}

#[test]
fn sys_topics_report_uptime_and_connected_clients() {
    let b = Midge::with_config("[server]\nsys_interval = 1\n");
    let p = b.port.to_string();
    let mut s = Proc::spawn(
        "stdbuf",
        &["-oL", SUB, "-p", &p, "-t", "$SYS/#", "-v", "-W", "8"],
    );
    // the subscriber itself is the one connected client
    s.wait_for("$SYS/broker/clients/connected 1\n", T);
    s.wait_for("$SYS/broker/uptime ", T);
    let out = s.stdout();
    let uptime = out
        .lines()
        .filter_map(|l| l.strip_prefix("$SYS/broker/uptime "))
        .next_back()
        .unwrap();
    let secs: u64 = uptime
        .strip_suffix(" seconds")
        .unwrap_or_else(|| panic!("uptime {uptime:?} is not 'N seconds'"))
        .parse()
        .unwrap();
    assert!(secs < 60, "{secs}");
    // '#' alone does not match $SYS topics [MQTT-4.7.2-1]
    let d = run(SUB, &["-p", &p, "-t", "#", "-v", "-W", "2"], T);
    assert!(!d.stdout.contains("$SYS"), "{}", d.stdout);
}

#[test]
fn persistent_session_gets_qos1_messages_published_while_it_was_away() {
    let b = Midge::start();
    let p = b.port.to_string();
    for v in ["mqttv311", "mqttv5"] {
        let id = unique("persist");
        let topic = unique("away");
        // -x: session expiry (needed by MQTT 5 for the session to outlive the connection)
        let mut base = vec!["-p", &p, "-V", v, "-c", "-i", &id, "-q", "1", "-t", &topic];
        if v == "mqttv5" {
            base.extend_from_slice(&["-x", "60"]);
        }
        let mut first = base.clone();
        first.push("-E"); // exit once subscribed
        let d = run(SUB, &first, T);
        assert_eq!(d.code, Some(0), "{d:?}");
        publish(
            b.port,
            &["-V", v, "-q", "1", "-t", &topic, "-m", "while-away-1"],
        );
        // QoS 0 is not queued for an offline session (mosquitto's default too)
        publish(
            b.port,
            &["-V", v, "-q", "0", "-t", &topic, "-m", "qos0-lost"],
        );
        publish(
            b.port,
            &["-V", v, "-q", "1", "-t", &topic, "-m", "while-away-2"],
        );
        let mut again = base.clone();
        again.extend_from_slice(&["-C", "2", "-W", "5"]);
        let d = run(SUB, &again, T);
        assert_eq!(d.stdout, "while-away-1\nwhile-away-2\n", "{v}: {d:?}");
        // and the session was kept: nothing is delivered twice
        let mut third = base.clone();
        third.extend_from_slice(&["-W", "1"]);
        let d = run(SUB, &third, T);
        assert_eq!(d.stdout, "", "{v}");
    }
}
