//! Hostile and malformed bytes on raw TCP sockets. Each test asserts the broker's exact answer
//! (CONNACK code, MQTT 5 DISCONNECT reason code, or a plain close) and then that a separate,
//! healthy client still publishes and receives through the same broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{
    ConnectOpts, Midge, Raw, Read_, assert_healthy, connect_packet, mqtt_str, packet,
    publish_packet, subscribe_packet, unique, varint,
};

const T: Duration = Duration::from_secs(5);

/// Packets the broker sent before closing.
fn closes_with(r: &mut Raw) -> Vec<(u8, Vec<u8>)> {
    r.expect_close(T)
}

/// The broker must answer an MQTT 5 client with DISCONNECT `reason` and close.
fn assert_v5_disconnect(r: &mut Raw, reason: u8, what: &str) {
    let got = closes_with(r);
    let disconnects: Vec<u8> = got
        .iter()
        .filter(|(f, _)| *f == 0xE0)
        .map(|(_, b)| b.first().copied().unwrap_or(0))
        .collect();
    assert_eq!(
        disconnects,
        vec![reason],
        "{what}: expected DISCONNECT 0x{reason:02x}, got {got:02x?}"
    );
}

/// The broker must close a 3.x client without sending anything (3.x has no DISCONNECT).
fn assert_silent_close(r: &mut Raw, what: &str) {
    let got = closes_with(r);
    assert!(
        got.is_empty(),
        "{what}: expected a plain close, got {got:02x?}"
    );
}

/// Send `bytes` after a valid CONNECT in 3.1.1 (plain close expected) and in 5.0
/// (DISCONNECT `reason` expected), then check a healthy client.
fn after_connect_both(b: &Midge, bytes: &[u8], v5_bytes: &[u8], reason: u8, what: &str) {
    let mut r = Raw::v311(b.port, &unique("bad311"));
    r.send(bytes);
    assert_silent_close(&mut r, what);
    let mut r = Raw::v5(b.port, &unique("bad5"));
    r.send(v5_bytes);
    assert_v5_disconnect(&mut r, reason, what);
    assert_healthy(b.port);
}

#[test]
fn garbage_first_byte_is_closed_without_an_answer() {
    let b = Midge::start();
    for bytes in [&[0x00u8, 0x00][..], &[0xF0, 0x00], &[0xFF; 8]] {
        let mut r = Raw::tcp(b.port);
        r.send(bytes);
        assert_silent_close(&mut r, &format!("{bytes:02x?}"));
    }
    assert_healthy(b.port);
}

#[test]
fn an_http_request_is_closed_at_once_not_after_the_connect_timeout() {
    let b = Midge::start(); // connect_timeout 10 s
    // 'G' = 0x47 reads as PUBACK with reserved flags 0111, 'E' as a 69-byte length: 18
    // bytes are sent, so a broker that waits for the packet waits for the timeout
    let mut r = Raw::tcp(b.port);
    r.send(b"GET / HTTP/1.1\r\n\r\n");
    let got = r.expect_close(Duration::from_secs(3));
    assert!(got.is_empty(), "{got:02x?}");
    assert_healthy(b.port);
}

#[test]
fn a_first_packet_that_is_not_connect_is_closed_without_an_answer() {
    let b = Midge::start();
    for bytes in [
        vec![0xC0, 0x00], // PINGREQ
        publish_packet(b"t", b"x", 0, false, 0, None),
        subscribe_packet(1, &[("t", 0)], false),
    ] {
        let mut r = Raw::tcp(b.port);
        r.send(&bytes);
        assert_silent_close(&mut r, &format!("{bytes:02x?}"));
    }
    assert_healthy(b.port);
}

#[test]
fn connect_with_protocol_level_6_gets_connack_unacceptable_protocol_version_in_3x_format() {
    let b = Midge::start();
    let mut c = connect_packet(&ConnectOpts {
        client_id: "lvl6",
        ..Default::default()
    });
    c[8] = 6; // 10 len 00 04 'M' 'Q' 'T' 'T' level
    let mut r = Raw::tcp(b.port);
    r.send(&c);
    assert_eq!(closes_with(&mut r), vec![(0x20, vec![0x00, 0x01])]);
    assert_healthy(b.port);
}

#[test]
fn connect_with_a_bad_protocol_name_gets_connack_0x01_and_is_closed() {
    let b = Midge::start();
    let mut body = Vec::new();
    mqtt_str(b"MQTX", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    mqtt_str(b"badname", &mut body);
    let mut r = Raw::tcp(b.port);
    r.send(&packet(0x10, &body));
    assert_eq!(closes_with(&mut r), vec![(0x20, vec![0x00, 0x01])]);
    assert_healthy(b.port);
}

#[test]
fn an_empty_connect_is_closed_without_an_answer() {
    let b = Midge::start();
    let mut r = Raw::tcp(b.port);
    r.send(&[0x10, 0x00]);
    assert_silent_close(&mut r, "10 00");
    assert_healthy(b.port);
}

#[test]
fn a_five_byte_remaining_length_is_malformed() {
    let b = Midge::start();
    // before CONNECT: closed
    let mut r = Raw::tcp(b.port);
    r.send(&[0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]);
    assert_silent_close(&mut r, "CONNECT with 5-byte length");
    // after CONNECT: 0x81 Malformed Packet for MQTT 5
    let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
    after_connect_both(&b, &bytes, &bytes, 0x81, "PUBLISH with 5-byte length");
}

#[test]
fn a_packet_announced_larger_than_max_packet_size_is_refused_from_its_header_alone() {
    let b = Midge::with_config("[limits]\nmax_packet_size = 1024\n");
    // only the fixed header of a 2000-byte PUBLISH is sent: the broker must not wait for
    // the body to refuse it
    let mut header = vec![0x30];
    varint(2000, &mut header);
    after_connect_both(&b, &header, &header, 0x95, "2000-byte PUBLISH header");
    // a packet that fits still passes
    let mut r = Raw::v5(b.port, &unique("fits"));
    let topic = unique("fits");
    r.subscribe(&topic, 0);
    r.publish(&topic, &[7u8; 900], 0);
    let (_, p, _) = r.next_publish(T);
    assert_eq!(p.len(), 900);
}

#[test]
fn invalid_utf8_and_nul_in_a_topic_are_malformed() {
    let b = Midge::start();
    for topic in [&[b'a', 0xFF, 0xFE][..], b"a\0b", &[0xED, 0xA0, 0x80]] {
        after_connect_both(
            &b,
            &publish_packet(topic, b"x", 0, false, 0, None),
            &publish_packet(topic, b"x", 0, false, 0, Some(&[])),
            0x81,
            &format!("topic {topic:02x?}"),
        );
    }
}

#[test]
fn a_wildcard_in_a_publish_topic_is_refused() {
    let b = Midge::start();
    for topic in ["a/+/b", "a/#", "#"] {
        after_connect_both(
            &b,
            &publish_packet(topic.as_bytes(), b"x", 0, false, 0, None),
            &publish_packet(topic.as_bytes(), b"x", 0, false, 0, Some(&[])),
            0x90, // Topic Name invalid [MQTT-3.3.2-2]
            topic,
        );
    }
}

#[test]
fn an_empty_topic_without_a_topic_alias_is_a_protocol_error() {
    // MQTT 5 §3.3.2.3.4 (DISCONNECT 0x82, not 0x90 which is for a well-formed name the
    // server refuses); 3.1.1 topic names have at least one character [MQTT-4.7.3-1]
    let b = Midge::start();
    after_connect_both(
        &b,
        &publish_packet(b"", b"x", 0, false, 0, None),
        &publish_packet(b"", b"x", 0, false, 0, Some(&[])),
        0x82,
        "empty topic",
    );
}

#[test]
fn qos_3_is_malformed() {
    let b = Midge::start();
    let mut p3 = publish_packet(b"t", b"x", 1, false, 1, None);
    p3[0] = 0x36;
    let mut p5 = publish_packet(b"t", b"x", 1, false, 1, Some(&[]));
    p5[0] = 0x36;
    after_connect_both(&b, &p3, &p5, 0x81, "QoS 3");
}

#[test]
fn reserved_fixed_header_flags_are_malformed() {
    let b = Midge::start();
    // SUBSCRIBE must have flags 0010, PUBREL 0010, PINGREQ 0000 [MQTT-2.2.2-2]
    let mut sub3 = subscribe_packet(1, &[("t", 0)], false);
    sub3[0] = 0x80;
    let mut sub5 = subscribe_packet(1, &[("t", 0)], true);
    sub5[0] = 0x80;
    after_connect_both(&b, &sub3, &sub5, 0x81, "SUBSCRIBE flags 0");
    after_connect_both(
        &b,
        &[0x60, 0x02, 0, 1],
        &[0x60, 0x02, 0, 1],
        0x81,
        "PUBREL flags 0",
    );
    after_connect_both(&b, &[0xC1, 0x00], &[0xC1, 0x00], 0x81, "PINGREQ flags 1");
}

#[test]
fn a_second_connect_is_a_protocol_error_and_closes_without_an_answer() {
    // [MQTT-3.1.0-2]; no DISCONNECT in 5.0 either: the client waits for a CONNACK (the Paho
    // interoperability suite's test client hung on a DISCONNECT here)
    let b = Midge::start();
    for level in [4, 5] {
        let id = unique("again");
        let mut r = Raw::connect(
            b.port,
            &ConnectOpts {
                level,
                client_id: &id,
                ..Default::default()
            },
        );
        r.send(&connect_packet(&ConnectOpts {
            level,
            client_id: &id,
            ..Default::default()
        }));
        assert_silent_close(&mut r, &format!("second CONNECT, level {level}"));
    }
    assert_healthy(b.port);
}

#[test]
fn subscribe_with_no_filters_is_a_protocol_error() {
    let b = Midge::start();
    after_connect_both(
        &b,
        &[0x82, 0x02, 0, 1],
        &[0x82, 0x03, 0, 1, 0],
        0x82,
        "SUBSCRIBE without filters",
    );
}

#[test]
fn topic_alias_0_or_above_the_maximum_is_topic_alias_invalid() {
    let b = Midge::with_config("[limits]\ntopic_alias_maximum = 10\n");
    for alias in [0u16, 11, 0xFFFF] {
        let mut r = Raw::v5(b.port, &unique("alias"));
        let props = [0x23, (alias >> 8) as u8, alias as u8];
        r.send(&publish_packet(b"t/alias", b"x", 0, false, 0, Some(&props)));
        assert_v5_disconnect(&mut r, 0x94, &format!("alias {alias}"));
    }
    // a valid alias works: set it with a topic, then use it with an empty topic
    let topic = unique("aliased");
    let mut sub = Raw::v5(b.port, &unique("alias-sub"));
    sub.subscribe(&topic, 0);
    let mut r = Raw::v5(b.port, &unique("alias-ok"));
    r.send(&publish_packet(
        topic.as_bytes(),
        b"one",
        0,
        false,
        0,
        Some(&[0x23, 0, 10]),
    ));
    r.send(&publish_packet(
        b"",
        b"two",
        0,
        false,
        0,
        Some(&[0x23, 0, 10]),
    ));
    for want in [&b"one"[..], b"two"] {
        let (t, p, _) = sub.next_publish(T);
        assert_eq!((t.as_str(), p.as_slice()), (topic.as_str(), want));
    }
    // an alias never set, used with an empty topic: Protocol Error [MQTT-3.3.2-8]... the
    // alias is in range but unknown
    let mut r = Raw::v5(b.port, &unique("alias-unknown"));
    r.send(&publish_packet(b"", b"x", 0, false, 0, Some(&[0x23, 0, 3])));
    assert_v5_disconnect(&mut r, 0x82, "unknown alias");
    assert_healthy(b.port);
}

#[test]
fn a_client_acknowledging_the_pubrecs_before_disconnect_0x93_gets_the_disconnect_not_a_reset() {
    // the Paho interoperability suite's test_flow_control2: one QoS 2 PUBLISH more than our
    // Receive Maximum, then a PUBREL for each PUBREC read on the way to the DISCONNECT. The
    // broker has closed its side by then; its socket must still take the client's bytes
    // (a closed one answers with a reset: the client's next write fails with EPIPE)
    let b = Midge::with_config("[limits]\nreceive_maximum = 4\n");
    let mut r = Raw::v5(b.port, &unique("flow2"));
    let mut burst = Vec::new();
    for id in 1..=5u16 {
        burst.extend(publish_packet(b"t/flow2", b"m", 2, false, id, Some(&[])));
    }
    r.send(&burst);
    std::thread::sleep(Duration::from_millis(300)); // the broker answers and shuts down
    let mut pubrecs = 0;
    loop {
        match r.read(T) {
            Read_::Packet(0x50, body) => {
                pubrecs += 1;
                r.s.write_all(&packet(0x62, &body[..2]))
                    .unwrap_or_else(|e| panic!("PUBREL after PUBREC {pubrecs}: {e}"));
                std::thread::sleep(Duration::from_millis(50)); // time for a reset to arrive
            }
            Read_::Packet(0xE0, body) => {
                assert_eq!(body.first(), Some(&0x93), "Receive Maximum exceeded");
                break;
            }
            other => panic!("after {pubrecs} PUBRECs: {other:?}"),
        }
    }
    assert_eq!(pubrecs, 4);
    assert_eq!(r.read(T), Read_::Closed);
    assert_healthy(b.port);
}

#[test]
fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives_and_its_will_published() {
    let b = Midge::start();
    for level in [4u8, 5] {
        let will_topic = unique("will-ka");
        let mut watcher = Raw::v311(b.port, &unique("watch"));
        watcher.subscribe(&will_topic, 0);
        let started = Instant::now();
        let mut r = Raw::connect(
            b.port,
            &ConnectOpts {
                level,
                client_id: &unique("silent"),
                keep_alive: 1,
                will: Some((&will_topic, b"gone silent", 0, false)),
                ..Default::default()
            },
        );
        if level == 5 {
            assert_v5_disconnect(&mut r, 0x8D, "keep alive timeout");
        } else {
            assert_silent_close(&mut r, "keep alive timeout");
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1000) && took <= Duration::from_millis(3500),
            "level {level}: closed after {took:?}, expected about 1.5 s"
        );
        let (t, p, _) = watcher.next_publish(T);
        assert_eq!(
            (t.as_str(), p.as_slice()),
            (will_topic.as_str(), &b"gone silent"[..])
        );
    }
    assert_healthy(b.port);
}

#[test]
fn a_client_that_pings_within_its_keep_alive_stays_connected() {
    let b = Midge::start();
    let mut r = Raw::connect(
        b.port,
        &ConnectOpts {
            level: 5,
            client_id: &unique("pinger"),
            keep_alive: 1,
            ..Default::default()
        },
    );
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        r.send(&[0xC0, 0x00]);
        assert_eq!(r.read(T), Read_::Packet(0xD0, vec![]));
    }
}

#[test]
fn no_connect_within_the_connect_timeout_closes_the_socket() {
    let b = Midge::with_config("[server]\nconnect_timeout = 1\n");
    let started = Instant::now();
    let mut idle = Raw::tcp(b.port);
    // half a CONNECT, then nothing
    let c = connect_packet(&ConnectOpts {
        client_id: "half",
        ..Default::default()
    });
    let mut half = Raw::tcp(b.port);
    half.send(&c[..c.len() / 2]);
    assert_silent_close(&mut idle, "no CONNECT");
    assert_silent_close(&mut half, "half a CONNECT");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_healthy(b.port);
}

#[test]
fn half_a_packet_after_connect_then_silence_is_ended_by_the_keep_alive() {
    let b = Midge::start();
    let mut r = Raw::connect(
        b.port,
        &ConnectOpts {
            level: 5,
            client_id: &unique("halfpub"),
            keep_alive: 1,
            ..Default::default()
        },
    );
    let p = publish_packet(b"t/half", &[1u8; 100], 0, false, 0, Some(&[]));
    r.send(&p[..40]);
    assert_v5_disconnect(&mut r, 0x8D, "half a PUBLISH");
    assert_healthy(b.port);
}

#[test]
fn trickling_bytes_of_one_unfinished_packet_does_not_defeat_the_keep_alive() {
    let b = Midge::start();
    let mut r = Raw::connect(
        b.port,
        &ConnectOpts {
            level: 5,
            client_id: &unique("trickle"),
            keep_alive: 1,
            ..Default::default()
        },
    );
    // a 1000-byte PUBLISH, sent one byte every 400 ms: no whole packet for 400 s
    let p = publish_packet(b"t/trickle", &[1u8; 1000], 0, false, 0, Some(&[]));
    let started = Instant::now();
    for byte in p.iter().take(15) {
        r.send(&[*byte]);
        match r.read(Duration::from_millis(400)) {
            Read_::Timeout => {}
            Read_::Packet(0xE0, body) => {
                assert_eq!(body.first(), Some(&0x8D));
                return;
            }
            Read_::Closed => return,
            other => panic!("{other:?}"),
        }
    }
    panic!(
        "still connected after {:?} with keep alive 1 s and no complete packet",
        started.elapsed()
    );
}

#[test]
fn many_connections_dropped_abruptly_leave_no_connected_clients_behind() {
    let b = Midge::with_config("[server]\nsys_interval = 1\n");
    let mut conns = Vec::new();
    for i in 0..150 {
        let id = format!("abrupt-{i}");
        match i % 3 {
            0 => conns.push(Raw::tcp(b.port)),
            1 => {
                let mut r = Raw::tcp(b.port);
                let c = connect_packet(&ConnectOpts {
                    client_id: &id,
                    ..Default::default()
                });
                r.send(&c[..c.len() - 3]);
                conns.push(r);
            }
            _ => {
                let mut r = Raw::connect(
                    b.port,
                    &ConnectOpts {
                        level: if i % 2 == 0 { 5 } else { 4 },
                        client_id: &id,
                        will: Some(("abrupt/will", b"w", 0, false)),
                        ..Default::default()
                    },
                );
                r.subscribe("abrupt/#", 1);
                conns.push(r);
            }
        }
    }
    drop(conns);
    // the $SYS count converges to just the watcher
    let mut w = Raw::v311(b.port, &unique("sys-watch"));
    w.subscribe("$SYS/broker/clients/connected", 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_, p, _) = w.next_publish(Duration::from_secs(5));
        last = String::from_utf8(p).unwrap();
        if last == "1" {
            break;
        }
    }
    assert_eq!(
        last, "1",
        "connected clients after dropping 150 connections"
    );
    assert_healthy(b.port);
}

/// xorshift64*: a small seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn two_thousand_random_and_mutated_packets_do_not_hurt_the_broker() {
    let mut b = Midge::with_config("[limits]\nmax_packet_size = 4096\n");
    let topic = unique("fuzz-health");
    let mut healthy_sub = Raw::v5(b.port, &unique("fuzz-sub"));
    healthy_sub.subscribe(&topic, 1);
    let mut healthy_pub = Raw::v311(b.port, &unique("fuzz-pub"));

    let seeds: Vec<Vec<u8>> = vec![
        publish_packet(b"fuzz/a", b"payload", 0, false, 0, None),
        publish_packet(b"fuzz/b", b"payload", 1, true, 5, None),
        publish_packet(b"fuzz/c", b"payload", 2, false, 6, None),
        subscribe_packet(3, &[("fuzz/#", 2), ("$share/g/fuzz/+", 1)], false),
        vec![0xA2, 0x08, 0, 4, 0, 4, b'f', b'u', b'z', b'z'], // UNSUBSCRIBE
        vec![0x40, 0x02, 0, 1],                               // PUBACK
        vec![0x50, 0x02, 0, 6],                               // PUBREC
        vec![0x62, 0x02, 0, 6],                               // PUBREL
        vec![0x70, 0x02, 0, 6],                               // PUBCOMP
        vec![0xC0, 0x00],                                     // PINGREQ
        vec![0xE0, 0x00],                                     // DISCONNECT
    ];
    let seeds5: Vec<Vec<u8>> = vec![
        publish_packet(b"fuzz/a", b"p", 1, false, 9, Some(&[0x01, 1, 0x23, 0, 2])),
        publish_packet(
            b"fuzz/a",
            b"p",
            0,
            false,
            0,
            Some(&[0x26, 0, 1, b'k', 0, 1, b'v']),
        ),
        subscribe_packet(3, &[("fuzz/#", 0x2E)], true),
        vec![0xE0, 0x02, 0x04, 0x00], // DISCONNECT with will
        vec![0xF0, 0x02, 0x18, 0x00], // AUTH
    ];

    let mut rng = Rng(0x5EED_F0F0_2222);
    let mut sent = 0usize;
    let mut connections = 0usize;
    let mut health_checks = 0usize;
    while sent < 2000 {
        let v5 = rng.below(2) == 0;
        let mut r = Raw::connect(
            b.port,
            &ConnectOpts {
                level: if v5 { 5 } else { 4 },
                client_id: &format!("fuzz-{connections}"),
                will: Some(("fuzz/will", b"w", 1, false)),
                ..Default::default()
            },
        );
        connections += 1;
        // up to 100 packets on this connection, or until the broker closes it
        for _ in 0..100 {
            let pool = if v5 && rng.below(2) == 0 {
                &seeds5
            } else {
                &seeds
            };
            let mut p = pool[rng.below(pool.len())].clone();
            match rng.below(6) {
                0 => {
                    // random bytes
                    let n = rng.below(40);
                    p = (0..n).map(|_| rng.next() as u8).collect();
                }
                1 => {
                    let i = rng.below(p.len());
                    p[i] ^= 1 << rng.below(8);
                }
                2 => {
                    let i = rng.below(p.len());
                    p[i] = rng.next() as u8;
                }
                3 => {
                    let n = rng.below(p.len());
                    p.truncate(n.max(1));
                }
                4 => {
                    let i = rng.below(p.len() + 1);
                    p.insert(i, rng.next() as u8);
                }
                _ => {} // valid
            }
            r.send(&p);
            sent += 1;
            // drain anything the broker sent, and stop on a close
            if let Read_::Closed = r.read(Duration::from_millis(1)) {
                break;
            }
            while let Read_::Packet(..) = r.read(Duration::from_millis(0)) {}
        }
        drop(r);
        // the healthy pair keeps working throughout
        if connections.is_multiple_of(5) {
            health_checks += 1;
            let payload = format!("ok-{connections}");
            healthy_pub.publish(&topic, payload.as_bytes(), 1);
            let (t, p, _) = healthy_sub.next_publish(T);
            assert_eq!(
                (t.as_str(), p.as_slice()),
                (topic.as_str(), payload.as_bytes())
            );
            healthy_sub.send(&[0x40, 0x02, 0, 1]); // PUBACK (ids restart per flow; harmless)
        }
        assert!(b.alive(), "broker died after {sent} packets\n{}", b.log());
    }
    assert!(health_checks >= 3, "only {health_checks} health checks");
    healthy_sub.send(&[0xC0, 0x00]);
    assert_eq!(healthy_sub.expect_type(0xD, T).0, 0xD0);
    assert!(b.alive(), "broker died\n{}", b.log());
    assert_healthy(b.port);
}
