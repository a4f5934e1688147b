//! Protocol flows checked byte by byte on raw sockets, where a library client would hide what
//! the broker actually sent: topic matching against a reference matcher, flow control, QoS 2
//! exactly once, takeover, CONNECT validation, queues and limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    ConnectOpts, Midge, Raw, Read_, assert_healthy, connect_packet, mqtt_str, packet,
    publish_packet, read_varint, subscribe_packet, unique, varint,
};

const T: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(400);
const NO_SYS: &str = "[server]\nsys_interval = 0\n";

/// Every packet until `quiet` passes without one.
fn until_quiet(r: &mut Raw, quiet: Duration) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        match r.read(quiet) {
            Read_::Packet(f, b) => out.push((f, b)),
            Read_::Timeout => return out,
            Read_::Closed => panic!("closed; got {out:02x?}"),
        }
    }
}

/// (topic, packet id, properties, payload) of a PUBLISH.
fn parse_publish(first: u8, b: &[u8], v5: bool) -> (String, u16, Vec<u8>, Vec<u8>) {
    let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).unwrap();
    let mut i = 2 + tlen;
    let mut id = 0;
    if (first >> 1) & 3 > 0 {
        id = u16::from_be_bytes([b[i], b[i + 1]]);
        i += 2;
    }
    let mut props = Vec::new();
    if v5 {
        let (n, used) = read_varint(&b[i..]).unwrap();
        props = b[i + used..i + used + n].to_vec();
        i += used + n;
    }
    (topic, id, props, b[i..].to_vec())
}

fn v5_connect(port: u16, id: &str, props: &[u8]) -> Raw {
    Raw::connect(
        port,
        &ConnectOpts {
            level: 5,
            client_id: id,
            props: props.to_vec(),
            ..Default::default()
        },
    )
}

/// The reference: MQTT topic matching as the spec states it (§4.7), `$` topics not matched
/// by a leading wildcard [MQTT-4.7.2-1].
fn matches(filter: &str, topic: &str) -> bool {
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    for (i, level) in f.iter().enumerate() {
        if *level == "#" {
            return true;
        }
        match t.get(i) {
            None => return false,
            Some(tl) if *level != "+" && level != tl => return false,
            _ => {}
        }
    }
    f.len() == t.len()
}

#[test]
fn topic_matching_agrees_with_the_spec_for_every_filter_and_topic_pair() {
    let b = Midge::with_config(NO_SYS);
    let filters = [
        "#", "+", "+/+", "a/#", "a/+", "a/b", "a/b/#", "+/b", "+/b/#", "a/+/c", "+/+/+", "a//c",
        "a/+/+", "/#", "+/#", "a", "/", "//", "/+", "+/", "+/+/c/#", "a/b/c/#", "$x/#", "$x/+",
        "$x", "A/B",
    ];
    let topics = [
        "a", "a/b", "a/b/c", "a/b/c/d", "/a", "a/", "/", "//", "a//c", "b", "b/b", "x/b/c", "$x/y",
        "$x", "a/c/c", "/b", "/b/c", "A/B", "a/B",
    ];
    let mut sub = v5_connect(b.port, &unique("matcher"), &[]);
    for (i, f) in filters.iter().enumerate() {
        let mut body = (i as u16 + 1).to_be_bytes().to_vec();
        let mut props = vec![0x0B];
        varint(i + 1, &mut props);
        varint(props.len(), &mut body);
        body.extend_from_slice(&props);
        mqtt_str(f.as_bytes(), &mut body);
        body.push(0);
        sub.send(&packet(0x82, &body));
        let (_, ack) = sub.expect_type(9, T);
        assert_eq!(ack.last(), Some(&0), "SUBACK for {f}");
    }
    let mut publ = Raw::v5(b.port, &unique("matcher-pub"));
    let mut wrong = Vec::new();
    for t in topics {
        publ.send(&publish_packet(t.as_bytes(), b"x", 0, false, 0, Some(&[])));
        let want: BTreeSet<usize> = (0..filters.len())
            .filter(|&i| matches(filters[i], t))
            .map(|i| i + 1)
            .collect();
        let got_packets = until_quiet(&mut sub, Duration::from_millis(150));
        assert!(
            got_packets.len() <= 1,
            "{t}: one delivery per client, got {got_packets:02x?}"
        );
        let mut got = BTreeSet::new();
        if let Some((f, body)) = got_packets.first() {
            let (topic, _, props, _) = parse_publish(*f, body, true);
            assert_eq!(topic, t);
            let mut i = 0;
            while i < props.len() {
                assert_eq!(
                    props[i], 0x0B,
                    "only subscription identifiers: {props:02x?}"
                );
                let (id, used) = read_varint(&props[i + 1..]).unwrap();
                got.insert(id);
                i += 1 + used;
            }
        }
        if got != want {
            let names =
                |s: &BTreeSet<usize>| -> Vec<&str> { s.iter().map(|i| filters[i - 1]).collect() };
            wrong.push(format!(
                "{t:?}: missing {:?}, extra {:?}",
                names(&want.difference(&got).copied().collect()),
                names(&got.difference(&want).copied().collect())
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_clients_receive_maximum_bounds_unacknowledged_qos1_deliveries() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("rmax");
    let mut sub = v5_connect(b.port, &unique("rmax"), &[0x21, 0, 2]);
    sub.subscribe(&topic, 1);
    let mut publ = Raw::v5(b.port, &unique("rmax-pub"));
    for i in 0..5u8 {
        publ.send(&publish_packet(
            topic.as_bytes(),
            &[b'0' + i],
            1,
            false,
            u16::from(i) + 1,
            Some(&[]),
        ));
    }
    let first = until_quiet(&mut sub, QUIET);
    let payloads = |ps: &[(u8, Vec<u8>)]| -> Vec<(u16, Vec<u8>)> {
        ps.iter()
            .map(|(f, b)| {
                let (_, id, _, p) = parse_publish(*f, b, true);
                (id, p)
            })
            .collect()
    };
    let got = payloads(&first);
    assert_eq!(got.len(), 2, "receive maximum 2: {got:?}");
    assert_eq!(
        (got[0].1.as_slice(), got[1].1.as_slice()),
        (&b"0"[..], &b"1"[..])
    );
    // each PUBACK lets exactly one more through, in order
    let mut seen = vec![b'0', b'1'];
    let mut ids = vec![got[0].0, got[1].0];
    for _ in 0..3 {
        let id = ids.remove(0);
        sub.send(&[0x40, 0x02, (id >> 8) as u8, id as u8]);
        let more = payloads(&until_quiet(&mut sub, QUIET));
        assert_eq!(more.len(), 1, "{more:?}");
        seen.push(more[0].1[0]);
        ids.push(more[0].0);
    }
    assert_eq!(seen, b"01234");
}

#[test]
fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent_to_it() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("mps");
    let mut sub = v5_connect(b.port, &unique("mps"), &[0x27, 0, 0, 0, 64]);
    sub.subscribe(&topic, 0);
    let mut publ = Raw::v5(b.port, &unique("mps-pub"));
    publ.publish(&topic, &[b'x'; 100], 0);
    publ.publish(&topic, b"small", 0);
    let got = until_quiet(&mut sub, QUIET);
    assert_eq!(got.len(), 1, "{got:02x?}");
    let (_, _, _, p) = parse_publish(got[0].0, &got[0].1, true);
    assert_eq!(p, b"small");
}

#[test]
fn qos2_is_delivered_exactly_once_even_when_the_publish_is_retransmitted() {
    let b = Midge::with_config(NO_SYS);
    for level in [4u8, 5] {
        let v5 = level == 5;
        let props: Option<&[u8]> = if v5 { Some(&[]) } else { None };
        let topic = unique("q2");
        let mut sub = Raw::connect(
            b.port,
            &ConnectOpts {
                level,
                client_id: &unique("q2s"),
                ..Default::default()
            },
        );
        sub.subscribe(&topic, 2);
        let mut publ = Raw::connect(
            b.port,
            &ConnectOpts {
                level,
                client_id: &unique("q2p"),
                ..Default::default()
            },
        );
        publ.send(&publish_packet(
            topic.as_bytes(),
            b"once",
            2,
            false,
            9,
            props,
        ));
        assert_eq!(publ.expect_type(5, T).1[..2], [0, 9]);
        let mut dup = publish_packet(topic.as_bytes(), b"once", 2, false, 9, props);
        dup[0] |= 0x08;
        publ.send(&dup);
        assert_eq!(publ.expect_type(5, T).1[..2], [0, 9]);
        publ.send(&[0x62, 0x02, 0, 9]);
        let (_, comp) = publ.expect_type(7, T);
        assert_eq!(comp[..2], [0, 9]);
        if v5 {
            assert!(
                comp.len() == 2 || comp[2] == 0,
                "PUBCOMP success: {comp:02x?}"
            );
        }
        // the id is free again: the same id is a new message
        publ.send(&publish_packet(
            topic.as_bytes(),
            b"next",
            2,
            false,
            9,
            props,
        ));
        publ.expect_type(5, T);
        publ.send(&[0x62, 0x02, 0, 9]);
        publ.expect_type(7, T);
        // the subscriber's side: two PUBLISHes, then PUBREC -> PUBREL, PUBCOMP for each
        let mut got = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (f, body) = sub.expect_type(3, T);
            assert_eq!((f >> 1) & 3, 2);
            let (_, id, _, p) = parse_publish(f, &body, v5);
            ids.push(id);
            got.push(p);
        }
        for id in ids {
            sub.send(&[0x50, 0x02, (id >> 8) as u8, id as u8]);
            let (rf, rel) = sub.expect_type(6, T);
            assert_eq!(rf, 0x62);
            assert_eq!(rel[..2], id.to_be_bytes());
            sub.send(&[0x70, 0x02, (id >> 8) as u8, id as u8]);
        }
        assert_eq!(
            got,
            vec![b"once".to_vec(), b"next".to_vec()],
            "level {level}"
        );
        assert!(
            until_quiet(&mut sub, QUIET).is_empty(),
            "level {level}: duplicate delivery"
        );
    }
}

#[test]
fn a_second_connection_with_the_same_client_id_takes_the_session_over() {
    let b = Midge::with_config(NO_SYS);
    for level in [4u8, 5] {
        let id = unique("takeover");
        let topic = unique("tk");
        let opts = ConnectOpts {
            level,
            client_id: &id,
            clean: false,
            props: if level == 5 {
                vec![0x11, 0, 0, 0, 60]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let mut old = Raw::connect(b.port, &opts);
        old.subscribe(&topic, 1);
        let mut publ = Raw::v311(b.port, &unique("tk-pub"));
        publ.publish(&topic, b"unacked", 1);
        let (_, p, _) = old.next_publish(T);
        assert_eq!(p, b"unacked");
        // the new connection resumes the session: session present, the unacknowledged
        // message again with DUP set [MQTT-4.4.0-1]
        let mut new = Raw::tcp(b.port);
        new.level = level;
        new.send(&connect_packet(&opts));
        let (_, ack) = new.expect_type(2, T);
        assert_eq!(ack[..2], [1, 0], "level {level}: CONNACK session present");
        let (f, body) = new.expect_type(3, T);
        assert_eq!(f & 0x08, 0x08, "DUP");
        assert_eq!(parse_publish(f, &body, level == 5).3, b"unacked");
        let got = old.expect_close(T);
        if level == 5 {
            assert_eq!(
                got,
                vec![(0xE0, vec![0x8E])],
                "DISCONNECT Session taken over"
            );
        } else {
            assert!(got.is_empty(), "{got:02x?}");
        }
    }
    assert_healthy(b.port);
}

#[test]
fn malformed_connect_flags_are_refused() {
    let b = Midge::with_config(NO_SYS);
    let flags_case = |level: u8, flags: u8, extra: &[u8]| {
        let mut body = Vec::new();
        mqtt_str(b"MQTT", &mut body);
        body.extend_from_slice(&[level, flags, 0, 60]);
        if level == 5 {
            body.push(0);
        }
        mqtt_str(b"flags", &mut body);
        body.extend_from_slice(extra);
        packet(0x10, &body)
    };
    let mut will = Vec::new();
    mqtt_str(b"t", &mut will);
    mqtt_str(b"p", &mut will);
    let mut pw = Vec::new();
    mqtt_str(b"secret", &mut pw);
    for (what, bytes) in [
        ("reserved flag [MQTT-3.1.2-3]", flags_case(4, 0x03, &[])),
        ("will QoS 3 [MQTT-3.1.2-14]", flags_case(4, 0x1E, &will)),
        (
            "will retain without will [MQTT-3.1.2-15]",
            flags_case(4, 0x22, &[]),
        ),
        (
            "will QoS without will [MQTT-3.1.2-13]",
            flags_case(4, 0x0A, &[]),
        ),
        (
            "password without username [MQTT-3.1.2-22]",
            flags_case(4, 0x42, &pw),
        ),
    ] {
        let mut r = Raw::tcp(b.port);
        r.send(&bytes);
        assert!(r.expect_close(T).is_empty(), "3.1.1 {what}");
    }
    // MQTT 5: CONNACK 0x81 Malformed Packet, then close
    let mut r = Raw::tcp(b.port);
    r.send(&flags_case(5, 0x03, &[]));
    assert_eq!(r.expect_close(T), vec![(0x20, vec![0, 0x81, 0])]);
    for (what, props) in [
        ("receive maximum 0", vec![0x21, 0, 0]),
        ("maximum packet size 0", vec![0x27, 0, 0, 0, 0]),
        ("property twice", vec![0x11, 0, 0, 0, 5, 0x11, 0, 0, 0, 5]),
    ] {
        let mut r = Raw::tcp(b.port);
        r.send(&connect_packet(&ConnectOpts {
            level: 5,
            client_id: "p",
            props,
            ..Default::default()
        }));
        assert_eq!(r.expect_close(T), vec![(0x20, vec![0, 0x82, 0])], "{what}");
    }
    assert_healthy(b.port);
}

#[test]
fn an_empty_client_id_is_refused_where_the_spec_says_so_and_assigned_elsewhere() {
    let b = Midge::with_config(NO_SYS);
    // 3.1.1 with clean session 0, and 3.1 always: CONNACK 0x02 identifier rejected
    for (level, clean) in [(4u8, false), (3, true)] {
        let mut r = Raw::tcp(b.port);
        r.send(&connect_packet(&ConnectOpts {
            level,
            clean,
            ..Default::default()
        }));
        assert_eq!(
            r.expect_close(T),
            vec![(0x20, vec![0, 0x02])],
            "level {level}"
        );
    }
    // 3.1.1 clean session 1: accepted
    let mut r = Raw::tcp(b.port);
    r.send(&connect_packet(&ConnectOpts::default()));
    assert_eq!(r.read(T), Read_::Packet(0x20, vec![0, 0]));
    // 5.0: accepted with an Assigned Client Identifier
    let mut r = Raw::tcp(b.port);
    r.send(&connect_packet(&ConnectOpts {
        level: 5,
        ..Default::default()
    }));
    let (_, ack) = r.expect_type(2, T);
    assert_eq!(ack[..2], [0, 0]);
    assert!(
        ack.windows(1).any(|w| w[0] == 0x12),
        "no Assigned Client Identifier: {ack:02x?}"
    );
}

#[test]
fn invalid_subscribe_filters_and_options_are_refused() {
    let b = Midge::with_config(NO_SYS);
    for f in [
        "a/#/b",
        "a#",
        "+a",
        "$share/g",
        "$share//t",
        "$share/g+/t",
        "",
        "$share/g/",
    ] {
        let mut r = Raw::v311(b.port, &unique("filt3"));
        r.send(&subscribe_packet(1, &[(f, 1)], false));
        assert!(r.expect_close(T).is_empty(), "3.1.1 {f:?}");
        let mut r = Raw::v5(b.port, &unique("filt5"));
        r.send(&subscribe_packet(1, &[(f, 1)], true));
        assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x81])], "5.0 {f:?}");
    }
    // No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4]
    let mut r = Raw::v5(b.port, &unique("sharenl"));
    r.send(&subscribe_packet(1, &[("$share/g/t", 0x05)], true));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x82])]);
    // subscription identifier 0 is a Protocol Error
    let mut r = Raw::v5(b.port, &unique("sid0"));
    let mut body = vec![0, 1, 2, 0x0B, 0];
    mqtt_str(b"t", &mut body);
    body.push(0);
    r.send(&packet(0x82, &body));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x82])]);
    // packet identifier 0 [MQTT-2.2.1-3]: Malformed Packet, as mosquitto classifies it
    let mut r = Raw::v5(b.port, &unique("pid0"));
    r.send(&publish_packet(b"t", b"x", 1, false, 0, Some(&[])));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x81])]);
    assert_healthy(b.port);
}

#[test]
fn an_expired_retained_message_is_not_sent_to_new_subscribers() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("rexp");
    let mut p = Raw::v5(b.port, &unique("rexp-pub"));
    p.send(&publish_packet(
        topic.as_bytes(),
        b"short",
        1,
        true,
        1,
        Some(&[0x02, 0, 0, 0, 2]),
    ));
    p.expect_type(4, T);
    let started = Instant::now();
    let mut early = Raw::v5(b.port, &unique("rexp-early"));
    early.subscribe(&topic, 1);
    let (f, body) = early.expect_type(3, T);
    let (_, _, props, payload) = parse_publish(f, &body, true);
    assert_eq!(payload, b"short");
    // the remaining lifetime, rounded down but at least 1 s
    assert!(
        props == vec![0x02, 0, 0, 0, 2] || props == vec![0x02, 0, 0, 0, 1],
        "remaining expiry: {props:02x?}"
    );
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(started.elapsed()));
    let mut late = Raw::v5(b.port, &unique("rexp-late"));
    late.subscribe(&topic, 1);
    assert!(until_quiet(&mut late, QUIET).is_empty());
}

#[test]
fn the_broker_uses_topic_aliases_up_to_the_clients_maximum() {
    let b = Midge::with_config(NO_SYS);
    let root = unique("oal");
    let mut sub = v5_connect(b.port, &unique("oal"), &[0x22, 0, 2]);
    sub.subscribe(&format!("{root}/#"), 0);
    let mut publ = Raw::v5(b.port, &unique("oal-pub"));
    let seq = ["a", "a", "b", "c", "c", "a", "b"];
    for t in seq {
        publ.publish(&format!("{root}/{t}"), t.as_bytes(), 0);
    }
    let got: Vec<(String, Vec<u8>, Vec<u8>)> = until_quiet(&mut sub, QUIET)
        .iter()
        .map(|(f, b)| {
            let (t, _, props, p) = parse_publish(*f, b, true);
            (t, props, p)
        })
        .collect();
    assert_eq!(got.len(), seq.len());
    let a = format!("{root}/a");
    let bb = format!("{root}/b");
    let c = format!("{root}/c");
    let want: Vec<(&str, Vec<u8>)> = vec![
        (&a, vec![0x23, 0, 1]),  // alias 1 set
        ("", vec![0x23, 0, 1]),  // alias 1 used
        (&bb, vec![0x23, 0, 2]), // alias 2 set
        (&c, vec![]),            // no alias left: full topic
        (&c, vec![]),
        ("", vec![0x23, 0, 1]),
        ("", vec![0x23, 0, 2]),
    ];
    for (i, ((t, props, p), (wt, wp))) in got.iter().zip(&want).enumerate() {
        assert_eq!((t.as_str(), props), (*wt, wp), "message {i}");
        assert_eq!(p, seq[i].as_bytes());
    }
}

#[test]
fn an_offline_session_queue_keeps_the_first_messages_up_to_max_queued_messages() {
    let b = Midge::with_config("[server]\nsys_interval = 0\n[limits]\nmax_queued_messages = 5\n");
    let id = unique("q5");
    let topic = unique("q5t");
    let opts = ConnectOpts {
        client_id: &id,
        clean: false,
        ..Default::default()
    };
    let mut s = Raw::connect(b.port, &opts);
    s.subscribe(&topic, 1);
    drop(s);
    let mut publ = Raw::v5(b.port, &unique("q5p"));
    for i in 0..8u8 {
        publ.publish(&topic, &[b'0' + i], 1);
    }
    let mut s = Raw::connect(b.port, &opts);
    let got: Vec<Vec<u8>> = until_quiet(&mut s, QUIET)
        .iter()
        .map(|(f, b)| parse_publish(*f, b, false).3)
        .collect();
    assert_eq!(
        got,
        vec![
            b"0".to_vec(),
            b"1".to_vec(),
            b"2".to_vec(),
            b"3".to_vec(),
            b"4".to_vec()
        ]
    );
}

#[test]
fn shared_messages_unacknowledged_by_a_member_that_leaves_go_to_another_member() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("shr");
    let filter = format!("$share/g/{topic}");
    let mut a = Raw::v5(b.port, &unique("shr-a"));
    a.subscribe(&filter, 1);
    let mut m = Raw::v5(b.port, &unique("shr-b"));
    m.subscribe(&filter, 1);
    let mut publ = Raw::v5(b.port, &unique("shr-p"));
    for i in 0..6u8 {
        publ.send(&publish_packet(
            topic.as_bytes(),
            &[b'0' + i],
            1,
            false,
            u16::from(i) + 1,
            Some(&[]),
        ));
    }
    let got_a = until_quiet(&mut a, QUIET);
    let got_b = until_quiet(&mut m, QUIET);
    assert_eq!(got_a.len() + got_b.len(), 6);
    assert!(!got_a.is_empty() && !got_b.is_empty());
    let mut all: Vec<u8> = Vec::new();
    for (f, body) in &got_b {
        let (_, id, _, p) = parse_publish(*f, body, true);
        m.send(&[0x40, 0x02, (id >> 8) as u8, id as u8]);
        all.extend(p);
    }
    drop(a); // leaves with its messages unacknowledged
    for (f, body) in until_quiet(&mut m, Duration::from_millis(800)) {
        let (_, id, _, p) = parse_publish(f, &body, true);
        m.send(&[0x40, 0x02, (id >> 8) as u8, id as u8]);
        all.extend(p);
    }
    all.sort_unstable();
    assert_eq!(all, b"012345", "every message reached the group once");
}

#[test]
fn max_connections_refuses_the_connection_over_the_limit() {
    let b = Midge::with_config("[server]\nsys_interval = 0\nmax_connections = 3\n");
    let mut held: Vec<Raw> = (0..3)
        .map(|i| Raw::v311(b.port, &format!("held-{i}")))
        .collect();
    let mut over = Raw::tcp(b.port);
    over.send(&connect_packet(&ConnectOpts {
        client_id: "over",
        ..Default::default()
    }));
    assert!(over.expect_close(T).is_empty());
    // one leaves: room for one more
    drop(held.pop());
    let deadline = Instant::now() + T;
    loop {
        let mut r = Raw::tcp(b.port);
        r.send(&connect_packet(&ConnectOpts {
            client_id: "late",
            ..Default::default()
        }));
        match r.read(T) {
            Read_::Packet(0x20, body) => {
                assert_eq!(body, vec![0, 0]);
                break;
            }
            other => assert!(Instant::now() < deadline, "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sys_clients_maximum_remembers_the_highest_count() {
    let b = Midge::with_config("[server]\nsys_interval = 1\n");
    let three: Vec<Raw> = (0..3)
        .map(|i| Raw::v311(b.port, &format!("max-{i}")))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    drop(three);
    let mut w = Raw::v311(b.port, &unique("max-watch"));
    w.subscribe("$SYS/broker/clients/maximum", 0);
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut values = Vec::new();
    while Instant::now() < deadline
        && !values
            .iter()
            .any(|v: &String| v.parse::<u32>().unwrap() >= 3)
    {
        if let Read_::Packet(f, body) = w.read(Duration::from_millis(500))
            && f >> 4 == 3
        {
            values.push(String::from_utf8(parse_publish(f, &body, false).3).unwrap());
        }
    }
    assert!(
        values.iter().any(|v| v.parse::<u32>().unwrap() >= 3),
        "{values:?}"
    );
}

#[test]
fn retained_messages_match_wildcards_but_not_dollar_topics_for_a_leading_wildcard() {
    let b = Midge::with_config(NO_SYS);
    let mut p = Raw::v5(b.port, &unique("ret-pub"));
    for (t, v) in [("rt/a", "1"), ("rt/b/c", "2"), ("$rt/x", "3"), ("rt", "4")] {
        p.send(&publish_packet(
            t.as_bytes(),
            v.as_bytes(),
            1,
            true,
            1,
            Some(&[]),
        ));
        p.expect_type(4, T);
    }
    let retained = |r: &mut Raw| -> Vec<(String, Vec<u8>, u8)> {
        let mut got: Vec<(String, Vec<u8>, u8)> = until_quiet(r, QUIET)
            .into_iter()
            .filter(|(f, _)| f >> 4 == 3)
            .map(|(f, body)| {
                let (t, _, _, p) = parse_publish(f, &body, false);
                (t, p, f & 1)
            })
            .collect();
        got.sort();
        got
    };
    let mut all = Raw::v311(b.port, &unique("ret-all"));
    all.send(&subscribe_packet(1, &[("#", 0)], false));
    let r = |t: &str, v: &str| (t.to_owned(), v.as_bytes().to_vec(), 1u8);
    assert_eq!(
        retained(&mut all),
        vec![r("rt", "4"), r("rt/a", "1"), r("rt/b/c", "2")]
    );
    let mut some = Raw::v311(b.port, &unique("ret-some"));
    some.send(&subscribe_packet(1, &[("rt/+", 0), ("$rt/#", 0)], false));
    assert_eq!(retained(&mut some), vec![r("$rt/x", "3"), r("rt/a", "1")]);
}

#[test]
fn acknowledgements_for_unknown_packet_ids_are_answered_and_harmless() {
    let b = Midge::with_config(NO_SYS);
    // PUBACK 99: ignored; PUBREL 100 -> PUBCOMP; PUBREC 101 -> PUBREL; PUBCOMP 102: ignored
    let acks = [
        0x40, 2, 0, 99, 0x62, 2, 0, 100, 0x50, 2, 0, 101, 0x70, 2, 0, 102,
    ];
    let mut r = Raw::v5(b.port, &unique("acks5"));
    r.send(&acks);
    // 0x92 Packet Identifier not found
    assert_eq!(
        until_quiet(&mut r, QUIET),
        vec![(0x70, vec![0, 100, 0x92]), (0x62, vec![0, 101, 0x92])]
    );
    let mut r = Raw::v311(b.port, &unique("acks3"));
    r.send(&acks);
    assert_eq!(
        until_quiet(&mut r, QUIET),
        vec![(0x70, vec![0, 100]), (0x62, vec![0, 101])]
    );
    assert_healthy(b.port);
}

#[test]
fn a_packet_of_exactly_max_packet_size_reaches_every_subscriber_intact() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("big");
    let mut subs: Vec<Raw> = (0..3)
        .map(|i| {
            let mut s = Raw::v311(b.port, &format!("{}-{i}", unique("big-sub")));
            s.subscribe(&topic, 1);
            s
        })
        .collect();
    let mut p = Raw::v5(b.port, &unique("big-pub"));
    // exactly the 1 MiB limit: type byte 1 + 3-byte remaining length + topic length 2 +
    // topic + packet id 2 + properties length 1 + payload
    let payload: Vec<u8> = (0..(1024 * 1024 - 4 - 2 - topic.len() - 2 - 1))
        .map(|i| (i % 251) as u8)
        .collect();
    p.send(&publish_packet(
        topic.as_bytes(),
        &payload,
        1,
        false,
        5,
        Some(&[]),
    ));
    assert_eq!(p.expect_type(4, T).1[..2], [0, 5]);
    for s in &mut subs {
        let (t, got, _) = s.next_publish(T);
        assert_eq!(t, topic);
        assert!(got == payload, "payload corrupted ({} bytes)", got.len());
    }
    // one byte more is refused: DISCONNECT 0x95 Packet too large
    let mut bigger = payload.clone();
    bigger.push(0);
    p.send(&publish_packet(
        topic.as_bytes(),
        &bigger,
        1,
        false,
        6,
        Some(&[]),
    ));
    assert_eq!(p.expect_close(T), vec![(0xE0, vec![0x95])]);
}

/// Large payloads are written from the message itself, after their encoded head, and small
/// packets from the connection's buffer: mixed in one burst, every subscriber still gets
/// every message intact and in order (MQTT 5 and 3.1.1 subscribers: their heads differ).
#[test]
fn large_and_small_messages_in_one_burst_arrive_intact_and_in_order() {
    let b = Midge::with_config(NO_SYS);
    let topic = unique("mixed");
    let mut subs = vec![
        Raw::v311(b.port, &unique("mixed-sub3")),
        Raw::v5(b.port, &unique("mixed-sub5")),
    ];
    for s in &mut subs {
        s.subscribe(&topic, 1);
    }
    let mut p = Raw::v5(b.port, &unique("mixed-pub"));
    let sizes = [10, 200_000, 3, 16 * 1024, 16 * 1024 - 1, 500_000, 0, 40_000];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(k, n)| (0..*n).map(|i| ((i * 7 + k) % 253) as u8).collect())
        .collect();
    // all at once, so that the subscribers' connections write them in one batch
    let mut burst = Vec::new();
    for (k, payload) in payloads.iter().enumerate() {
        burst.extend(publish_packet(
            topic.as_bytes(),
            payload,
            1,
            false,
            10 + k as u16,
            Some(&[]),
        ));
    }
    p.send(&burst);
    for s in &mut subs {
        for (k, want) in payloads.iter().enumerate() {
            let (t, got, _) = s.next_publish(T);
            assert_eq!(t, topic);
            assert!(
                got == *want,
                "message {k}: {} bytes, want {} (corrupted or out of order)",
                got.len(),
                want.len()
            );
        }
    }
}

/// Paho's interop suite subscribes client B and, without waiting for B's SUBACK, publishes
/// from client A. No rule orders two connections, but a broker should handle packets in
/// the order they arrived: with tokio's LIFO slot, of two sockets that became ready
/// together the later one ran first and B missed the message. One worker thread makes that
/// reversal happen every time the two packets are read in one wake-up, so this fails without
/// the scheduler setting of `midge serve`.
#[test]
fn a_subscribe_that_arrives_before_another_clients_publish_gets_it() {
    let b = Midge::serve().env("TOKIO_WORKER_THREADS", "1").start();
    let mut publisher = Raw::v311(b.port, &unique("order-a"));
    let mut missed = Vec::new();
    for i in 0..30 {
        let topic = format!("order/{i}");
        let mut sub = Raw::v311(b.port, &unique("order-b"));
        sub.send(&subscribe_packet(1, &[(topic.as_str(), 0)], false));
        publisher.send(&publish_packet(
            topic.as_bytes(),
            b"hello",
            0,
            false,
            0,
            None,
        ));
        // the SUBACK, then the PUBLISH (or nothing)
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut got = false;
        while !got && Instant::now() < deadline {
            match sub.read(Duration::from_millis(100)) {
                Read_::Packet(f, _) if f & 0xF0 == 0x30 => got = true,
                _ => {}
            }
        }
        if !got {
            missed.push(i);
        }
    }
    assert!(missed.is_empty(), "the subscriber missed rounds {missed:?}");
}
