//! The `[limits]` switches of the configuration file, each seen from the wire: what an MQTT 5
//! client is told in its CONNACK and what it gets when it goes past a limit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::{Duration, Instant};

use common::{
    ConnectOpts, Midge, Raw, assert_healthy, connect_packet, mqtt_str, packet, publish_packet,
    subscribe_packet, unique,
};

const T: Duration = Duration::from_secs(5);

const LIMITS: &str = "
[server]
sys_interval = 0
[limits]
retain_available = false
max_qos = 1
wildcard_subscriptions = false
shared_subscriptions = false
subscription_identifiers = false
max_topic_levels = 3
max_subscriptions_per_client = 2
max_keepalive = 1
max_session_expiry = 10
topic_alias_maximum = 0
";

/// The CONNACK properties as (identifier, value bytes), in order.
fn connack_props(body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let (len, used) = common::read_varint(&body[2..]).unwrap();
    let mut p = &body[2 + used..2 + used + len];
    let mut out = Vec::new();
    while let Some((&id, rest)) = p.split_first() {
        let n = match id {
            0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 => 2,
            0x11 | 0x27 => 4,
            0x12 => 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]])),
            other => panic!("unexpected CONNACK property 0x{other:02x} in {body:02x?}"),
        };
        out.push((id, rest[..n].to_vec()));
        p = &rest[n..];
    }
    out
}

#[test]
fn connack_announces_every_limit_and_the_server_keep_alive_is_enforced() {
    let b = Midge::with_config(LIMITS);
    let mut r = Raw::tcp(b.port);
    r.level = 5;
    r.send(&connect_packet(&ConnectOpts {
        level: 5,
        client_id: &unique("lim"),
        keep_alive: 0,
        props: vec![0x11, 0, 0, 1, 0], // asks for a 256 s session
        ..Default::default()
    }));
    let (_, ack) = r.expect_type(2, T);
    assert_eq!(ack[..2], [0, 0]);
    let mut props = connack_props(&ack);
    props.sort();
    assert_eq!(
        props,
        vec![
            (0x11, vec![0, 0, 0, 10]),   // session expiry capped at 10
            (0x13, vec![0, 1]),          // server keep alive 1 (the client asked 0)
            (0x21, vec![4, 0]),          // receive maximum 1024
            (0x24, vec![1]),             // maximum QoS 1
            (0x25, vec![0]),             // retain not available
            (0x27, vec![0, 0x10, 0, 0]), // maximum packet size 1 MiB
            (0x28, vec![0]),             // no wildcard subscriptions
            (0x29, vec![0]),             // no subscription identifiers
            (0x2A, vec![0]),             // no shared subscriptions
        ]
    );
    // the server keep alive is the one enforced: silence ends the connection
    let started = Instant::now();
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x8D])]);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn subscriptions_past_a_limit_get_the_matching_suback_reason_code() {
    let b = Midge::with_config(LIMITS);
    let mut r = Raw::v5(b.port, &unique("lim-sub"));
    let suback = |r: &mut Raw, id: u16, filter: &str, opts: u8| -> Vec<u8> {
        r.send(&subscribe_packet(id, &[(filter, opts)], true));
        let (_, body) = r.expect_type(9, T);
        assert_eq!(body[..2], id.to_be_bytes());
        body[3..].to_vec()
    };
    assert_eq!(suback(&mut r, 1, "a/+", 1), vec![0xA2], "wildcards off");
    assert_eq!(suback(&mut r, 2, "$share/g/a", 1), vec![0x9E], "shared off");
    assert_eq!(
        suback(&mut r, 3, "q/t", 2),
        vec![0x01],
        "QoS 2 granted as 1"
    );
    assert_eq!(suback(&mut r, 4, "l/1/2/3", 0), vec![0x8F], "4 levels > 3");
    assert_eq!(suback(&mut r, 5, "s1", 0), vec![0x00]);
    assert_eq!(
        suback(&mut r, 6, "s2", 0),
        vec![0x97],
        "third subscription: quota"
    );
    assert_eq!(
        suback(&mut r, 7, "s1", 1),
        vec![0x01],
        "re-subscribing is no new one"
    );
    // 3.1.1 gets 0x80 for each refusal
    let mut r3 = Raw::v311(b.port, &unique("lim-sub3"));
    r3.send(&subscribe_packet(
        1,
        &[("a/+", 1), ("q/t", 2), ("$share/g/a", 0)],
        false,
    ));
    let (_, body) = r3.expect_type(9, T);
    assert_eq!(body, vec![0, 1, 0x80, 0x01, 0x80]);
}

#[test]
fn publishing_past_a_limit_is_refused_with_the_matching_reason_code() {
    let b = Midge::with_config(LIMITS);
    // too many levels: PUBACK 0x90, the connection stays
    let mut r = Raw::v5(b.port, &unique("lim-pub"));
    r.send(&publish_packet(b"l/1/2/3", b"deep", 1, false, 7, Some(&[])));
    assert_eq!(r.expect_type(4, T).1, vec![0, 7, 0x90]);
    // retain when retain is not available: DISCONNECT 0x9A
    r.send(&publish_packet(b"r1", b"x", 0, true, 0, Some(&[])));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x9A])]);
    // QoS 2 above maximum QoS 1: DISCONNECT 0x9B; 3.1.1 is closed
    let mut r = Raw::v5(b.port, &unique("lim-q2"));
    r.send(&publish_packet(b"q/t", b"x", 2, false, 8, Some(&[])));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x9B])]);
    let mut r = Raw::v311(b.port, &unique("lim-q2-311"));
    r.send(&publish_packet(b"q/t", b"x", 2, false, 8, None));
    assert!(r.expect_close(T).is_empty());
    // a topic alias when the maximum is 0: DISCONNECT 0x94
    let mut r = Raw::v5(b.port, &unique("lim-alias"));
    r.send(&publish_packet(
        b"a",
        b"x",
        0,
        false,
        0,
        Some(&[0x23, 0, 1]),
    ));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0x94])]);
    // a subscription identifier when they are off: DISCONNECT 0xA1
    let mut r = Raw::v5(b.port, &unique("lim-subid"));
    let mut body = vec![0, 9, 2, 0x0B, 5];
    mqtt_str(b"t", &mut body);
    body.push(0);
    r.send(&packet(0x82, &body));
    assert_eq!(r.expect_close(T), vec![(0xE0, vec![0xA1])]);
    // a retained will when retain is not available: CONNACK 0x9A
    let mut r = Raw::tcp(b.port);
    r.send(&connect_packet(&ConnectOpts {
        level: 5,
        client_id: "lim-will",
        will: Some(("w", b"p", 0, true)),
        ..Default::default()
    }));
    assert_eq!(r.expect_close(T), vec![(0x20, vec![0, 0x9A, 0])]);
    assert_healthy(b.port);
}
