//! Flow tests: the broker driven by fake clients and a fake clock, for 3.1.1 and 5.0.
#![allow(clippy::field_reassign_with_default)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use midge_codec::*;

use crate::{Action, Broker, CloseCause, Config, ConnId};

struct World {
    broker: Broker,
    next: u64,
    now: Instant,
    out: Vec<Action>,
    /// What each connection's CONNECT asked for: its protocol and maximum packet size. Every
    /// packet core sends it is encoded for that and decoded back, as on the wire, so a send
    /// the client could not receive fails the test (not only in production).
    wire: std::collections::HashMap<ConnId, (Protocol, u32)>,
}

impl World {
    fn new() -> World {
        World::with(Config::default())
    }
    fn with(config: Config) -> World {
        World {
            broker: Broker::new(config),
            next: 0,
            now: Instant::now(),
            out: Vec::new(),
            wire: std::collections::HashMap::new(),
        }
    }
    fn open(&mut self) -> ConnId {
        self.next += 1;
        self.broker.open(ConnId(self.next));
        ConnId(self.next)
    }
    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        let mut out = Vec::new();
        self.broker.tick(self.now, &mut out);
        self.out.extend(out);
    }
    fn advance_ms(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let mut out = Vec::new();
        self.broker.handle_timeout(self.now, &mut out);
        self.out.extend(out);
    }
    fn send(&mut self, conn: ConnId, p: Packet) {
        let mut out = Vec::new();
        self.broker.handle(self.now, conn, p, &mut out);
        self.out.extend(out);
    }
    /// Packets sent to `conn` since last asked, and whether it was closed.
    fn take(&mut self, conn: ConnId) -> (Vec<Packet>, bool) {
        let mut packets = Vec::new();
        let mut closed = false;
        let wire = self.wire.get(&conn).copied();
        self.out.retain(|a| match a {
            Action::Send(c, p) if *c == conn => {
                packets.push(match wire {
                    Some((protocol, max)) => on_the_wire(p, protocol, max),
                    None => p.clone(),
                });
                false
            }
            Action::Close(c) if *c == conn => {
                closed = true;
                false
            }
            Action::Connected { conn: c, .. } if *c == conn => false,
            _ => true,
        });
        (packets, closed)
    }
    fn packets(&mut self, conn: ConnId) -> Vec<Packet> {
        self.take(conn).0
    }
    fn connect_with(&mut self, c: Connect) -> (ConnId, ConnAck) {
        let conn = self.open();
        let max = c.properties.maximum_packet_size.unwrap_or(u32::MAX);
        self.wire.insert(conn, (c.protocol, max));
        self.send(conn, Packet::Connect(Box::new(c)));
        let packets = self.packets(conn);
        let Some(Packet::ConnAck(ack)) = packets.first().cloned() else {
            panic!("expected CONNACK, got {packets:?}")
        };
        // anything after the CONNACK (redelivery) goes back for the test to read
        for p in packets.into_iter().skip(1) {
            self.out.push(Action::Send(conn, p));
        }
        (conn, ack)
    }
    /// A client that never goes silent: keep alive 0 (the keep-alive tests ask for one).
    fn connect(&mut self, v: Protocol, id: &str, clean: bool) -> ConnId {
        let mut c = Connect::new(v, id);
        c.keep_alive = 0;
        c.clean_start = clean;
        if v == Protocol::V5 && !clean {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (conn, ack) = self.connect_with(c);
        assert_eq!(ack.reason, ReasonCode::SUCCESS);
        conn
    }
    fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) -> ReasonCode {
        self.subscribe_opts(conn, filter, SubscriptionOptions::qos(qos), None)
    }
    fn subscribe_opts(
        &mut self,
        conn: ConnId,
        filter: &str,
        o: SubscriptionOptions,
        id: Option<u32>,
    ) -> ReasonCode {
        let mut props = SubscribeProperties::default();
        props.subscription_identifier = id;
        self.send(
            conn,
            Packet::Subscribe(Subscribe {
                packet_id: 1,
                properties: props,
                filters: vec![(TopicFilter::new(filter).unwrap(), o)],
            }),
        );
        let packets = self.packets(conn);
        let mut reason = None;
        for p in packets {
            match p {
                Packet::SubAck(s) => reason = Some(s.reasons[0]),
                other => self.out.push(Action::Send(conn, other)),
            }
        }
        reason.expect("SUBACK")
    }
    fn publish(
        &mut self,
        conn: ConnId,
        topic: &str,
        payload: &str,
        qos: QoS,
        retain: bool,
        id: u16,
    ) {
        let mut p = Publish::new(
            TopicName::new(topic).unwrap(),
            Bytes::from(payload.to_owned()),
        );
        p.qos = qos;
        p.retain = retain;
        p.packet_id = id;
        self.send(conn, Packet::Publish(p));
    }
    /// A message published from inside the broker (as `$SYS` is).
    fn publish_internal(&mut self, topic: &str, payload: &str) {
        let msg = crate::Message::new(
            TopicName::new(topic).unwrap(),
            payload.to_owned(),
            QoS::AtMostOnce,
            false,
        );
        let mut out = Vec::new();
        self.broker.publish(self.now, msg, &mut out);
        self.out.extend(out);
    }
    fn close(&mut self, conn: ConnId) {
        let mut out = Vec::new();
        self.broker
            .closed(self.now, conn, CloseCause::Network, &mut out);
        self.out.extend(out);
    }
}

/// `p` as the client receives it: encoded for its protocol, within its maximum packet size,
/// and decoded back.
fn on_the_wire(p: &Packet, protocol: Protocol, max: u32) -> Packet {
    let mut buf = bytes::BytesMut::new();
    if let Err(e) = p.encode(protocol, &mut buf) {
        panic!("core sent a packet that cannot be encoded for {protocol:?}: {e}: {p:?}");
    }
    assert!(
        buf.len() as u64 <= u64::from(max),
        "core sent {} bytes to a client whose maximum packet size is {max}: {p:?}",
        buf.len()
    );
    match decode(&mut buf, protocol, u32::MAX) {
        Ok(Some(back)) if buf.is_empty() => back,
        other => panic!("{p:?} did not decode back as one packet for {protocol:?}: {other:?}"),
    }
}

/// A QoS 0 will on topic `will` with this payload and will delay.
fn will(payload: &'static str, delay: Option<u32>) -> Option<LastWill> {
    let mut properties = WillProperties::default();
    properties.will_delay_interval = delay;
    Some(LastWill {
        topic: TopicName::new("will").unwrap(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    })
}

fn publishes(packets: &[Packet]) -> Vec<Publish> {
    packets
        .iter()
        .filter_map(|p| {
            if let Packet::Publish(p) = p {
                Some(p.clone())
            } else {
                None
            }
        })
        .collect()
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

const BOTH: [Protocol; 2] = [Protocol::V311, Protocol::V5];

#[test]
fn qos0_publish_reaches_wildcard_subscriber_in_both_versions() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", true);
        assert_eq!(
            w.subscribe(sub, "floor-5/+", QoS::AtMostOnce),
            ReasonCode::GRANTED_QOS_0
        );
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "floor-5/temperature", "15", QoS::AtMostOnce, false, 0);
        let got = publishes(&w.packets(sub));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].topic.as_str(), "floor-5/temperature");
        assert_eq!(&got[0].payload[..], b"15");
    }
}

#[test]
fn first_packet_must_be_connect_and_second_connect_is_protocol_error() {
    let mut w = World::new();
    let conn = w.open();
    w.send(conn, Packet::PingReq);
    assert!(w.take(conn).1, "closed");
    let conn = w.connect(Protocol::V5, "c", true);
    w.send(
        conn,
        Packet::Connect(Box::new(Connect::new(Protocol::V5, "c"))),
    );
    let (packets, closed) = w.take(conn);
    assert!(closed);
    // closed without a DISCONNECT: the client is reading for a CONNACK
    assert!(packets.is_empty(), "{packets:?}");
}

#[test]
fn empty_client_id_rules() {
    // v5: assigned
    let mut w = World::new();
    let (_, ack) = w.connect_with(Connect::new(Protocol::V5, ""));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    assert!(ack.properties.assigned_client_identifier.is_some());
    // 3.1.1 clean: accepted
    let (_, ack) = w.connect_with(Connect::new(Protocol::V311, ""));
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    // 3.1.1 not clean: identifier rejected
    let mut c = Connect::new(Protocol::V311, "");
    c.clean_start = false;
    let (_, ack) = w.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(ack.reason.to_v3_connack(), 2);
}

#[test]
fn qos1_publish_acked_and_delivered_at_subscription_qos() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", true);
        w.subscribe(sub, "a/b", QoS::AtLeastOnce);
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "a/b", "x", QoS::ExactlyOnce, false, 7);
        let acks = w.packets(publ);
        assert!(matches!(&acks[..], [Packet::PubRec(a)] if a.packet_id == 7));
        let got = publishes(&w.packets(sub));
        assert_eq!(
            got[0].qos,
            QoS::AtLeastOnce,
            "downgraded to subscription QoS"
        );
        assert_ne!(got[0].packet_id, 0);
    }
}

#[test]
fn qos2_duplicate_publish_before_pubrel_is_not_delivered_twice() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", true);
        w.subscribe(sub, "t", QoS::ExactlyOnce);
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "t", "once", QoS::ExactlyOnce, false, 3);
        let mut dup = Publish::new(TopicName::new("t").unwrap(), "once");
        dup.qos = QoS::ExactlyOnce;
        dup.packet_id = 3;
        dup.dup = true;
        w.send(publ, Packet::Publish(dup));
        let acks = w.packets(publ);
        assert_eq!(
            acks.iter()
                .filter(|p| matches!(p, Packet::PubRec(a) if a.packet_id == 3))
                .count(),
            2
        );
        assert_eq!(payloads(&w.packets(sub)), vec!["once"]);
        w.send(publ, Packet::PubRel(PubAck::new(3)));
        assert!(
            matches!(&w.packets(publ)[..], [Packet::PubComp(c)] if c.packet_id == 3 && c.reason == ReasonCode::SUCCESS)
        );
        // after PUBREL the id is free again: a new message with it is delivered
        w.publish(publ, "t", "again", QoS::ExactlyOnce, false, 3);
        assert_eq!(payloads(&w.packets(sub)), vec!["again"]);
    }
}

#[test]
fn outbound_qos2_flow_and_out_of_order_acks() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "t", QoS::ExactlyOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    for i in 0..3 {
        w.publish(publ, "t", &i.to_string(), QoS::ExactlyOnce, false, 10 + i);
    }
    let got = publishes(&w.packets(sub));
    assert_eq!(got.len(), 3);
    // acknowledge the last first
    w.send(sub, Packet::PubRec(PubAck::new(got[2].packet_id)));
    assert!(matches!(&w.packets(sub)[..], [Packet::PubRel(r)] if r.packet_id == got[2].packet_id));
    w.send(sub, Packet::PubComp(PubAck::new(got[2].packet_id)));
    w.send(sub, Packet::PubRec(PubAck::new(got[0].packet_id)));
    w.send(sub, Packet::PubComp(PubAck::new(got[0].packet_id)));
    let s = w
        .broker
        .session(w.broker.by_client_id[&bytestring::ByteString::from("sub")])
        .unwrap();
    assert_eq!(s.flow().inflight.len(), 1);
    assert_eq!(s.flow().inflight[0].packet_id, got[1].packet_id);
}

#[test]
fn receive_maximum_limits_inflight_and_queue_drains_on_ack() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "sub");
    c.properties.receive_maximum = Some(2);
    let (sub, _) = w.connect_with(c);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    for i in 0..5 {
        w.publish(publ, "t", &i.to_string(), QoS::AtLeastOnce, false, i + 1);
    }
    let first = publishes(&w.packets(sub));
    assert_eq!(
        first.len(),
        2,
        "never more than the client's Receive Maximum in flight"
    );
    w.send(sub, Packet::PubAck(PubAck::new(first[1].packet_id)));
    let next = publishes(&w.packets(sub));
    assert_eq!(
        payloads(
            &next
                .iter()
                .cloned()
                .map(Packet::Publish)
                .collect::<Vec<_>>()
        ),
        vec!["2"]
    );
}

#[test]
fn persistent_session_queues_offline_and_redelivers_inflight_with_dup() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", false);
        w.subscribe(sub, "t", QoS::AtLeastOnce);
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "t", "inflight", QoS::AtLeastOnce, false, 1);
        assert_eq!(publishes(&w.packets(sub)).len(), 1);
        w.close(sub);
        w.publish(publ, "t", "queued", QoS::AtLeastOnce, false, 2);
        w.publish(publ, "t", "qos0-dropped", QoS::AtMostOnce, false, 0);
        let mut c = Connect::new(v, "sub");
        c.clean_start = false;
        if v == Protocol::V5 {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (sub2, ack) = w.connect_with(c);
        assert!(ack.session_present);
        let got = publishes(&w.packets(sub2));
        assert_eq!(got.len(), 2);
        assert!(got[0].dup && &got[0].payload[..] == b"inflight");
        assert!(!got[1].dup && &got[1].payload[..] == b"queued");
    }
}

/// A session resumed with a smaller Receive Maximum gets only that many of its unacknowledged
/// messages at once [MQTT-3.3.4-9], each with its original packet id [MQTT-4.4.0-1]; the
/// rest follow, in order, as acknowledgements come back, and then the queue.
#[test]
fn resumed_inflight_is_resent_within_the_new_receive_maximum() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", false);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    for i in 0..5u16 {
        w.publish(publ, "t", &format!("m{i}"), QoS::AtLeastOnce, false, i + 1);
    }
    let first = publishes(&w.packets(sub));
    assert_eq!(first.len(), 5);
    w.close(sub);
    w.publish(publ, "t", "queued", QoS::AtLeastOnce, false, 9);
    let mut c = Connect::new(Protocol::V5, "sub");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    c.properties.receive_maximum = Some(2);
    let (sub2, ack) = w.connect_with(c);
    assert!(ack.session_present);
    // ack the oldest outstanding one at a time; never more than 2 unacknowledged
    let mut seen: Vec<(u16, String, bool)> = Vec::new();
    let mut outstanding: Vec<u16> = Vec::new();
    for _ in 0..20 {
        for p in publishes(&w.packets(sub2)) {
            seen.push((
                p.packet_id,
                String::from_utf8_lossy(&p.payload).into(),
                p.dup,
            ));
            outstanding.push(p.packet_id);
        }
        assert!(
            outstanding.len() <= 2,
            "{outstanding:?} past Receive Maximum 2"
        );
        if outstanding.is_empty() {
            break;
        }
        let id = outstanding.remove(0);
        w.send(sub2, Packet::PubAck(PubAck::new(id)));
    }
    let mut unique: Vec<(u16, String, bool)> = Vec::new();
    for s in seen {
        if !unique.iter().any(|u| u.0 == s.0 && u.1 == s.1) {
            unique.push(s);
        }
    }
    let payloads: Vec<&str> = unique.iter().map(|u| u.1.as_str()).collect();
    assert_eq!(payloads, ["m0", "m1", "m2", "m3", "m4", "queued"]);
    for (i, u) in unique.iter().take(5).enumerate() {
        assert_eq!(u.0, first[i].packet_id, "{} kept its packet id", u.1);
        assert!(u.2, "{} re-sent with DUP", u.1);
    }
    assert!(!unique[5].2, "the queued message is a first delivery");
}

/// `$midge/...` client ids belong to the server's in-process clients: a network client
/// asking for one is refused (it would take over the hub's session), and the real one is
/// not held to the per-session in-flight cap or message-count queue limit.
#[test]
fn internal_client_ids_are_reserved_and_their_sessions_take_bursts() {
    let mut config = Config::default();
    config.max_inflight_messages = 2;
    config.max_queued_messages = 3;
    let mut w = World::with(config);
    for v in BOTH {
        let (_, ack) = w.connect_with(Connect::new(v, "$midge/hub"));
        assert_eq!(ack.reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "{v:?}");
    }
    let hub_connect = || {
        let mut c = Connect::new(Protocol::V5, "$midge/hub");
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(3600);
        Packet::Connect(Box::new(c))
    };
    let hub = w.open();
    w.broker.set_internal(hub);
    w.send(hub, hub_connect());
    assert!(
        matches!(w.packets(hub).first(), Some(Packet::ConnAck(a)) if a.reason == ReasonCode::SUCCESS)
    );
    w.subscribe(hub, "s/#", QoS::AtLeastOnce);
    let dev = w.connect(Protocol::V5, "dev", true);
    for i in 0..10u16 {
        w.publish(dev, "s/x", &format!("{i}"), QoS::AtLeastOnce, false, i + 1);
    }
    assert_eq!(
        publishes(&w.packets(hub)).len(),
        10,
        "all in flight at once"
    );
    w.close(hub);
    for i in 10..20u16 {
        w.publish(dev, "s/x", &format!("{i}"), QoS::AtLeastOnce, false, i + 1);
    }
    let hub = w.open();
    w.broker.set_internal(hub);
    w.send(hub, hub_connect());
    let got = publishes(&w.packets(hub));
    let payloads: Vec<String> = got
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    let want: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want, "nothing dropped while it was away");
    // QoS 0 to a congested internal client (a live stream) keeps the count limit
    let mut out = Vec::new();
    w.broker.set_writable(w.now, hub, false, &mut out);
    for i in 0..10u16 {
        w.publish(dev, "s/x", &format!("q0-{i}"), QoS::AtMostOnce, false, 0);
    }
    w.broker.set_writable(w.now, hub, true, &mut out);
    w.out.extend(out);
    let q0 = publishes(&w.packets(hub));
    assert_eq!(q0.len(), 3, "max_queued_messages still bounds QoS 0");
}

/// No enhanced authentication method is offered: a CONNECT naming one gets CONNACK 0x8C and
/// is closed [MQTT-4.12.0-1], and no session is made for it.
#[test]
fn a_connect_with_an_authentication_method_is_refused_0x8c() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "scram-client");
    c.properties.authentication_method = Some("SCRAM-SHA-1".into());
    let conn = w.open();
    w.send(conn, Packet::Connect(Box::new(c)));
    let (packets, closed) = w.take(conn);
    assert!(
        matches!(packets.as_slice(), [Packet::ConnAck(a)] if a.reason == ReasonCode::BAD_AUTHENTICATION_METHOD),
        "{packets:?}"
    );
    assert!(closed);
    assert_eq!(w.broker.stats().sessions, 0);
}

#[test]
fn clean_start_discards_session() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V311, "sub", false);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    w.close(sub);
    let (sub, ack) = w.connect_with(Connect::new(Protocol::V311, "sub"));
    assert!(!ack.session_present);
    let publ = w.connect(Protocol::V311, "pub", true);
    w.publish(publ, "t", "x", QoS::AtLeastOnce, false, 1);
    assert!(publishes(&w.packets(sub)).is_empty());
}

#[test]
fn takeover_disconnects_old_connection_with_0x8e() {
    let mut w = World::new();
    let old = w.connect(Protocol::V5, "dev", false);
    let new = w.connect(Protocol::V5, "dev", false);
    let (packets, closed) = w.take(old);
    assert!(closed);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER)
    );
    // the new connection works
    w.subscribe(new, "t", QoS::AtMostOnce);
    w.publish(new, "t", "hi", QoS::AtMostOnce, false, 0);
    assert_eq!(payloads(&w.packets(new)), vec!["hi"]);
}

#[test]
fn retained_message_stored_replaced_cleared_and_sent_with_retain_flag() {
    for v in BOTH {
        let mut w = World::new();
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "r/a", "1", QoS::AtMostOnce, true, 0);
        w.publish(publ, "r/a", "2", QoS::AtMostOnce, true, 0);
        w.publish(publ, "r/b", "b", QoS::AtLeastOnce, true, 1);
        let sub = w.connect(v, "sub", true);
        w.subscribe(sub, "r/#", QoS::AtLeastOnce);
        let got = publishes(&w.packets(sub));
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|p| p.retain));
        assert_eq!(&got[0].payload[..], b"2");
        assert_eq!(got[1].qos, QoS::AtLeastOnce);
        // live messages to an existing subscription carry retain 0 (3.1.1 and v5 without RAP)
        w.publish(publ, "r/a", "3", QoS::AtMostOnce, true, 0);
        assert!(!publishes(&w.packets(sub))[0].retain);
        // an empty retained publish clears it
        w.publish(publ, "r/a", "", QoS::AtMostOnce, true, 0);
        w.packets(sub);
        let sub2 = w.connect(v, "sub2", true);
        w.subscribe(sub2, "r/#", QoS::AtMostOnce);
        assert_eq!(payloads(&w.packets(sub2)), vec!["b"]);
    }
}

#[test]
fn large_retained_set_is_delivered_completely() {
    let mut w = World::with(Config {
        max_queued_messages: 100_000,
        ..Config::default()
    });
    let publ = w.connect(Protocol::V311, "pub", true);
    for i in 0..5000 {
        w.publish(publ, &format!("many/{i}"), "x", QoS::AtMostOnce, true, 0);
    }
    let sub = w.connect(Protocol::V311, "sub", true);
    w.subscribe(sub, "many/+", QoS::AtMostOnce);
    assert_eq!(publishes(&w.packets(sub)).len(), 5000);
}

#[test]
fn retain_handling_options() {
    let mut w = World::new();
    let publ = w.connect(Protocol::V5, "pub", true);
    w.publish(publ, "r", "kept", QoS::AtMostOnce, true, 0);
    let sub = w.connect(Protocol::V5, "sub", true);
    let o = |rh| SubscriptionOptions {
        retain_handling: rh,
        ..Default::default()
    };
    w.subscribe_opts(sub, "r", o(RetainHandling::DoNotSend), None);
    assert!(w.packets(sub).is_empty());
    w.subscribe_opts(sub, "r", o(RetainHandling::SendIfNew), None);
    assert!(w.packets(sub).is_empty(), "subscription already existed");
    w.subscribe_opts(sub, "r/#", o(RetainHandling::SendIfNew), None);
    assert_eq!(payloads(&w.packets(sub)), vec!["kept"]);
    w.subscribe_opts(sub, "r", o(RetainHandling::SendAtSubscribe), None);
    assert_eq!(payloads(&w.packets(sub)), vec!["kept"]);
}

#[test]
fn retain_as_published_and_no_local() {
    let mut w = World::new();
    let c = w.connect(Protocol::V5, "c", true);
    w.subscribe_opts(
        c,
        "rap",
        SubscriptionOptions {
            retain_as_published: true,
            ..Default::default()
        },
        None,
    );
    w.subscribe_opts(
        c,
        "nl",
        SubscriptionOptions {
            no_local: true,
            ..Default::default()
        },
        None,
    );
    w.publish(c, "rap", "r", QoS::AtMostOnce, true, 0);
    assert!(
        publishes(&w.packets(c))[0].retain,
        "RAP keeps the retain flag"
    );
    w.publish(c, "nl", "mine", QoS::AtMostOnce, false, 0);
    assert!(
        w.packets(c).is_empty(),
        "no local: not sent back to the publisher"
    );
    let other = w.connect(Protocol::V5, "o", true);
    w.publish(other, "nl", "theirs", QoS::AtMostOnce, false, 0);
    assert_eq!(payloads(&w.packets(c)), vec!["theirs"]);
}

/// A mosquitto bridge (CONNECT level 0x84: 3.1.1 with the bridge flag) gets No Local and
/// Retain As Published on its subscriptions, as from mosquitto.
#[test]
fn a_bridge_flagged_311_client_gets_no_local_and_retain_as_published() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V311, "bridge");
    c.bridge = true;
    let (bridge, ack) = w.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    w.subscribe(bridge, "#", QoS::AtLeastOnce);
    let other = w.connect(Protocol::V311, "other", true);
    w.subscribe(other, "#", QoS::AtMostOnce);

    w.publish(bridge, "t", "mine", QoS::AtMostOnce, false, 0);
    assert!(
        w.packets(bridge).is_empty(),
        "a bridge's own message is not sent back to it"
    );
    assert_eq!(payloads(&w.packets(other)), vec!["mine"]);

    w.publish(other, "r", "kept", QoS::AtMostOnce, true, 0);
    let got = publishes(&w.packets(bridge));
    assert_eq!(got.len(), 1);
    assert!(got[0].retain, "a bridge gets the retain flag as published");
    let got = publishes(&w.packets(other));
    assert!(!got[0].retain, "a plain 3.1.1 client gets RETAIN 0");

    w.publish(other, "t", "theirs", QoS::AtMostOnce, false, 0);
    let got = publishes(&w.packets(bridge));
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"theirs");
    assert!(!got[0].retain);
}

#[test]
fn overlapping_subscriptions_deliver_once_at_highest_qos_with_all_identifiers() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", true);
        let id = |n| if v == Protocol::V5 { Some(n) } else { None };
        w.subscribe_opts(sub, "a/+", SubscriptionOptions::qos(QoS::AtMostOnce), id(1));
        w.subscribe_opts(
            sub,
            "a/#",
            SubscriptionOptions::qos(QoS::AtLeastOnce),
            id(2),
        );
        let publ = w.connect(v, "pub", true);
        w.publish(publ, "a/b", "x", QoS::ExactlyOnce, false, 1);
        let got = publishes(&w.packets(sub));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::AtLeastOnce);
        if v == Protocol::V5 {
            let mut ids = got[0].properties.subscription_identifiers.clone();
            ids.sort_unstable();
            assert_eq!(ids, vec![1, 2]);
        }
    }
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcards() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V311, "sub", true);
    w.subscribe(sub, "#", QoS::AtMostOnce);
    w.subscribe(sub, "+/x", QoS::AtMostOnce);
    w.publish_internal("$SYS/x", "s");
    assert!(w.packets(sub).is_empty());
    w.subscribe(sub, "$SYS/#", QoS::AtMostOnce);
    w.publish_internal("$SYS/x", "s");
    assert_eq!(payloads(&w.packets(sub)), vec!["s"]);
}

#[test]
fn unsubscribe_reason_codes() {
    let mut w = World::new();
    let c = w.connect(Protocol::V5, "c", true);
    w.subscribe(c, "a", QoS::AtMostOnce);
    w.send(
        c,
        Packet::Unsubscribe(Unsubscribe {
            packet_id: 2,
            properties: Default::default(),
            filters: vec![
                TopicFilter::new("a").unwrap(),
                TopicFilter::new("b").unwrap(),
            ],
        }),
    );
    let p = w.packets(c);
    assert!(
        matches!(&p[..], [Packet::UnsubAck(u)] if u.reasons == vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED])
    );
    w.publish(c, "a", "x", QoS::AtMostOnce, false, 0);
    assert!(w.packets(c).is_empty());
}

#[test]
fn shared_subscription_round_robin_and_redistribution_on_drop() {
    let mut w = World::new();
    let a = w.connect(Protocol::V5, "a", true);
    let b = w.connect(Protocol::V5, "b", true);
    w.subscribe(a, "$share/g/jobs/+", QoS::AtLeastOnce);
    w.subscribe(b, "$share/g/jobs/+", QoS::AtLeastOnce);
    let publ = w.connect(Protocol::V5, "p", true);
    for i in 0..4 {
        w.publish(
            publ,
            "jobs/x",
            &i.to_string(),
            QoS::AtLeastOnce,
            false,
            i + 1,
        );
    }
    let got_a = payloads(&w.packets(a));
    let got_b = payloads(&w.packets(b));
    assert_eq!(got_a.len(), 2);
    assert_eq!(got_b.len(), 2);
    // a drops without acknowledging: its in-flight messages go to b
    w.close(a);
    let mut moved = payloads(&w.packets(b));
    moved.sort();
    let mut want = got_a.clone();
    want.sort();
    assert_eq!(moved, want);
}

#[test]
fn will_published_on_abnormal_close_not_on_disconnect() {
    for v in BOTH {
        let mut w = World::new();
        let sub = w.connect(v, "sub", true);
        w.subscribe(sub, "will/#", QoS::AtMostOnce);
        let mut c = Connect::new(v, "dying");
        c.will = Some(LastWill {
            topic: TopicName::new("will/dying").unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        });
        let (conn, _) = w.connect_with(c.clone());
        w.close(conn);
        assert_eq!(payloads(&w.packets(sub)), vec!["gone"]);
        let (conn, _) = w.connect_with(c.clone());
        w.send(conn, Packet::Disconnect(Disconnect::default()));
        assert!(
            w.packets(sub).is_empty(),
            "normal DISCONNECT discards the will"
        );
        if v == Protocol::V5 {
            let (conn, _) = w.connect_with(c);
            w.send(
                conn,
                Packet::Disconnect(Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL)),
            );
            assert_eq!(payloads(&w.packets(sub)), vec!["gone"]);
        }
    }
}

#[test]
fn will_delay_and_session_end() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "will", QoS::AtMostOnce);
    let mut c = Connect::new(Protocol::V5, "d");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(100);
    c.will = will("late", Some(30));
    // reconnect within the delay: no will
    let (conn, _) = w.connect_with(c.clone());
    w.close(conn);
    w.advance(10);
    assert!(w.packets(sub).is_empty());
    let mut resume = c.clone();
    resume.will = None;
    let (conn, _) = w.connect_with(resume);
    w.advance(60);
    assert!(
        w.packets(sub).is_empty(),
        "the new connection cancelled the will"
    );
    w.close(conn);
    // no will now (the resumed CONNECT had none)
    w.advance(60);
    assert!(w.packets(sub).is_empty());
    // will delay passes: published
    let (conn, _) = w.connect_with(c.clone());
    w.close(conn);
    w.advance(29);
    assert!(w.packets(sub).is_empty());
    w.advance(2);
    assert_eq!(payloads(&w.packets(sub)), vec!["late"]);
    // session expiry earlier than the will delay: the will goes when the session ends
    let mut short = c;
    short.properties.session_expiry_interval = Some(5);
    let (conn, _) = w.connect_with(short);
    w.close(conn);
    w.advance(6);
    assert_eq!(payloads(&w.packets(sub)), vec!["late"]);
}

#[test]
fn a_clean_start_reconnect_within_the_will_delay_sends_no_will() {
    // [MQTT-3.1.3-9]: the new connection cancels the delayed will even though its Clean
    // Start ends the old session (the will used to go out at this reconnect)
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "will", QoS::AtMostOnce);
    let mut c = Connect::new(Protocol::V5, "d");
    c.keep_alive = 0;
    c.clean_start = true;
    c.properties.session_expiry_interval = Some(100);
    c.will = will("gone", Some(30));
    let (conn, _) = w.connect_with(c.clone());
    w.close(conn);
    w.advance(5);
    let mut again = c.clone();
    again.will = None;
    let (conn, ack) = w.connect_with(again);
    assert!(!ack.session_present);
    w.advance(60);
    assert!(
        w.packets(sub).is_empty(),
        "no will after a reconnect within the delay"
    );
    // without a reconnect it is still sent when the delay passes
    w.close(conn);
    let (conn, _) = w.connect_with(c);
    w.close(conn);
    w.advance(31);
    assert_eq!(payloads(&w.packets(sub)), vec!["gone"]);
}

#[test]
fn session_expiry_ends_session_after_interval() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "s");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(10);
    let (conn, _) = w.connect_with(c.clone());
    w.subscribe(conn, "t", QoS::AtLeastOnce);
    w.close(conn);
    w.advance(5);
    let (conn, ack) = w.connect_with(c.clone());
    assert!(ack.session_present);
    w.close(conn);
    w.advance(11);
    let (_, ack) = w.connect_with(c);
    assert!(!ack.session_present);
}

#[test]
fn disconnect_cannot_set_expiry_when_connect_had_zero() {
    let mut w = World::new();
    let c = w.connect(Protocol::V5, "z", true);
    let mut d = Disconnect::default();
    d.properties.session_expiry_interval = Some(60);
    w.send(c, Packet::Disconnect(d));
    let (p, closed) = w.take(c);
    assert!(closed);
    assert!(matches!(&p[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::PROTOCOL_ERROR));
}

#[test]
fn message_expiry_counts_down_and_expired_messages_are_not_sent() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "sub");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (sub, _) = w.connect_with(c.clone());
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    w.close(sub);
    let publ = w.connect(Protocol::V5, "pub", true);
    for (payload, expiry) in [("short", 5), ("long", 100)] {
        let mut p = Publish::new(TopicName::new("t").unwrap(), payload);
        p.qos = QoS::AtLeastOnce;
        p.packet_id = expiry as u16;
        p.properties.message_expiry_interval = Some(expiry);
        w.send(publ, Packet::Publish(p));
    }
    w.advance(10);
    let (sub, _) = w.connect_with(c);
    let got = publishes(&w.packets(sub));
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"long");
    assert_eq!(got[0].properties.message_expiry_interval, Some(90));
}

#[test]
fn message_expiry_forwarded_is_the_received_value_minus_the_time_waited_not_rounded_down() {
    // [MQTT-3.3.2-6]: 4 s, waited a few ms, is forwarded as 4 (it was 3); waited 1.5 s: 3
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "t", QoS::AtMostOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    let mut p = Publish::new(TopicName::new("t").unwrap(), "x");
    p.properties.message_expiry_interval = Some(4);
    w.send(publ, Packet::Publish(p.clone()));
    let got = publishes(&w.packets(sub));
    assert_eq!(got[0].properties.message_expiry_interval, Some(4));
    // a persistent subscriber offline for 5 ms and for 1.5 s
    let mut c = Connect::new(Protocol::V5, "later");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(60);
    let (later, _) = w.connect_with(c.clone());
    w.subscribe(later, "t", QoS::AtLeastOnce);
    w.close(later);
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 1;
    w.send(publ, Packet::Publish(p));
    w.now += Duration::from_millis(5);
    let (later, _) = w.connect_with(c.clone());
    let got = publishes(&w.packets(later));
    assert_eq!(got[0].properties.message_expiry_interval, Some(4));
    w.close(later);
    let mut p = Publish::new(TopicName::new("t").unwrap(), "y");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 2;
    p.properties.message_expiry_interval = Some(4);
    w.send(publ, Packet::Publish(p));
    w.now += Duration::from_millis(1500);
    let (later, _) = w.connect_with(c);
    let got = publishes(&w.packets(later));
    let y: Vec<_> = got.iter().filter(|p| &p.payload[..] == b"y").collect();
    assert_eq!(y[0].properties.message_expiry_interval, Some(3));
}

#[test]
fn topic_alias_inbound_and_invalid_alias() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "long/topic/name", QoS::AtMostOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    let mut p = Publish::new(TopicName::new("long/topic/name").unwrap(), "1");
    p.properties.topic_alias = Some(1);
    w.send(publ, Packet::Publish(p));
    let mut p = Publish::new(TopicName::empty(), "2");
    p.properties.topic_alias = Some(1);
    w.send(publ, Packet::Publish(p));
    assert_eq!(payloads(&w.packets(sub)), vec!["1", "2"]);
    let mut p = Publish::new(TopicName::empty(), "3");
    p.properties.topic_alias = Some(1000);
    w.send(publ, Packet::Publish(p));
    let (packets, closed) = w.take(publ);
    assert!(closed);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::TOPIC_ALIAS_INVALID)
    );
}

#[test]
fn outbound_topic_alias_used_when_client_allows() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "sub");
    c.properties.topic_alias_maximum = Some(5);
    let (sub, _) = w.connect_with(c);
    w.subscribe(sub, "t/#", QoS::AtMostOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    w.publish(publ, "t/a", "1", QoS::AtMostOnce, false, 0);
    w.publish(publ, "t/a", "2", QoS::AtMostOnce, false, 0);
    let got = publishes(&w.packets(sub));
    assert_eq!(got[0].topic.as_str(), "t/a");
    assert_eq!(got[0].properties.topic_alias, Some(1));
    assert!(got[1].topic.is_empty());
    assert_eq!(got[1].properties.topic_alias, Some(1));
}

#[test]
fn max_packet_size_of_client_is_never_exceeded() {
    let mut w = World::new();
    let mut c = Connect::new(Protocol::V5, "small");
    c.properties.maximum_packet_size = Some(64);
    let (sub, _) = w.connect_with(c);
    w.subscribe(sub, "t", QoS::AtMostOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    w.publish(publ, "t", &"x".repeat(100), QoS::AtMostOnce, false, 0);
    w.publish(publ, "t", "fits", QoS::AtMostOnce, false, 0);
    assert_eq!(payloads(&w.packets(sub)), vec!["fits"]);
    assert_eq!(w.broker.stats().messages_dropped, 1);
}

#[test]
fn inbound_receive_maximum_exceeded_disconnects_0x93() {
    let mut w = World::with(Config {
        receive_maximum: 2,
        ..Config::default()
    });
    let publ = w.connect(Protocol::V5, "pub", true);
    for id in 1..=3 {
        w.publish(publ, "t", "x", QoS::ExactlyOnce, false, id);
    }
    let (packets, closed) = w.take(publ);
    assert!(closed);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
    );
}

#[test]
fn slow_subscriber_queue_is_bounded_and_qos0_dropped_first() {
    let mut w = World::with(Config {
        max_queued_messages: 10,
        ..Config::default()
    });
    let sub = w.connect(Protocol::V311, "slow", true);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    let mut out = Vec::new();
    w.broker.set_writable(w.now, sub, false, &mut out);
    let publ = w.connect(Protocol::V311, "pub", true);
    for i in 0..100u16 {
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        w.publish(
            publ,
            "t",
            "x",
            qos,
            false,
            if qos == QoS::AtMostOnce { 0 } else { i },
        );
    }
    assert!(w.packets(sub).is_empty());
    let stats = w.broker.stats();
    assert_eq!(stats.queued, 10);
    assert_eq!(stats.messages_dropped, 90);
    // draining resumes delivery of the queued messages: QoS 0 made room for QoS 1
    let mut out = Vec::new();
    w.broker.set_writable(w.now, sub, true, &mut out);
    w.out.extend(out);
    let got = publishes(&w.packets(sub));
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce));
}

#[test]
fn qos0_to_a_briefly_slow_subscriber_waits_in_its_queue_in_order() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "slow", true);
    w.subscribe(sub, "t", QoS::AtMostOnce);
    let publ = w.connect(Protocol::V5, "pub", true);
    w.publish(publ, "t", "0", QoS::AtMostOnce, false, 0);
    let mut out = Vec::new();
    w.broker.set_writable(w.now, sub, false, &mut out);
    for i in 1..5 {
        w.publish(publ, "t", &i.to_string(), QoS::AtMostOnce, false, 0);
    }
    assert_eq!(payloads(&w.packets(sub)), vec!["0"]);
    let mut out = Vec::new();
    w.broker.set_writable(w.now, sub, true, &mut out);
    w.out.extend(out);
    w.publish(publ, "t", "5", QoS::AtMostOnce, false, 0);
    assert_eq!(payloads(&w.packets(sub)), vec!["1", "2", "3", "4", "5"]);
    assert_eq!(w.broker.stats().messages_dropped, 0);
}

#[test]
fn authorizer_refuses_subscription_per_filter() {
    #[derive(Debug)]
    struct NoSecrets;
    impl crate::Authorizer for NoSecrets {
        fn can_subscribe(&self, _c: &crate::ClientInfo<'_>, f: &TopicFilter) -> bool {
            !f.filter().starts_with("secret")
        }
    }
    for v in BOTH {
        let mut w = World::new();
        w.broker.set_authorizer(Box::new(NoSecrets));
        let c = w.connect(v, "c", true);
        w.send(
            c,
            Packet::Subscribe(Subscribe {
                packet_id: 5,
                properties: Default::default(),
                filters: vec![
                    (
                        TopicFilter::new("open").unwrap(),
                        SubscriptionOptions::qos(QoS::AtLeastOnce),
                    ),
                    (
                        TopicFilter::new("secret/#").unwrap(),
                        SubscriptionOptions::qos(QoS::AtLeastOnce),
                    ),
                ],
            }),
        );
        let p = w.packets(c);
        let Packet::SubAck(ack) = &p[0] else { panic!() };
        let refused = if v == Protocol::V5 {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::UNSPECIFIED_ERROR
        };
        assert_eq!(ack.reasons, vec![ReasonCode::GRANTED_QOS_1, refused]);
    }
}

#[test]
fn shutdown_sends_0x8b_to_v5_clients_only() {
    let mut w = World::new();
    let a = w.connect(Protocol::V5, "a", true);
    let b = w.connect(Protocol::V311, "b", true);
    let mut out = Vec::new();
    w.broker.shutdown(w.now, &mut out);
    w.out.extend(out);
    let (pa, ca) = w.take(a);
    let (pb, cb) = w.take(b);
    assert!(ca && cb);
    assert!(
        matches!(&pa[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::SERVER_SHUTTING_DOWN)
    );
    assert!(pb.is_empty());
}

// durable state: ops described by the flows, restore
#[path = "persist_tests.rs"]
mod persist_tests;

#[test]
fn connected_count_follows_connects_closes_and_takeovers() {
    let mut w = World::new();
    let a = w.connect(Protocol::V5, "a", false);
    let _b = w.connect(Protocol::V311, "b", true);
    assert_eq!(w.broker.stats().clients_connected, 2);
    let _a2 = w.connect(Protocol::V5, "a", false); // takeover: still two
    assert_eq!(w.broker.stats().clients_connected, 2);
    w.close(a); // the old connection is already gone
    assert_eq!(w.broker.stats().clients_connected, 2);
    let c = w.connect(Protocol::V5, "c", true);
    w.send(c, Packet::Disconnect(Disconnect::default()));
    assert_eq!(w.broker.stats().clients_connected, 2);
    assert_eq!(w.broker.stats().clients_maximum, 3);
}

/// The user property `name` of a PUBLISH, if present.
fn user_property<'a>(p: &'a Publish, name: &str) -> Option<&'a str> {
    p.properties
        .user_properties
        .iter()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| &**v)
}

/// With a wall-clock anchor, every accepted PUBLISH and will is stamped with the time the
/// fake clock stands for; in-process clients see it as `midge-time` (with the publisher),
/// network clients never do.
#[test]
fn accepted_messages_carry_the_wall_clock_time_to_in_process_clients() {
    let mut w = World::new();
    const ANCHOR_MS: i64 = 1_700_000_000_000;
    w.broker.set_wall_clock(w.now, ANCHOR_MS);
    let hub = w.open();
    w.broker.set_internal(hub);
    w.send(
        hub,
        Packet::Connect(Box::new(Connect::new(Protocol::V5, "$midge/hub"))),
    );
    assert!(matches!(w.packets(hub).first(), Some(Packet::ConnAck(_))));
    w.subscribe(hub, "#", QoS::AtLeastOnce);
    let net = w.connect(Protocol::V5, "watcher", true);
    w.subscribe(net, "#", QoS::AtLeastOnce);

    let mut c = Connect::new(Protocol::V5, "dev");
    c.will = Some(LastWill {
        topic: TopicName::new("will/dev").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (dev, _) = w.connect_with(c);
    w.advance(5);
    w.publish(dev, "s/1", "a", QoS::AtLeastOnce, false, 1);
    w.advance(2);
    w.publish(dev, "s/1", "b", QoS::AtMostOnce, false, 0);
    w.advance(1);
    w.close(dev); // abnormal close: the will goes out now

    let got = publishes(&w.packets(hub));
    let times: Vec<(String, Option<&str>, Option<&str>)> = got
        .iter()
        .map(|p| {
            (
                String::from_utf8_lossy(&p.payload).into_owned(),
                user_property(p, crate::ORIGIN_TIME),
                user_property(p, crate::ORIGIN_CLIENT_ID),
            )
        })
        .collect();
    assert_eq!(
        times,
        vec![
            ("a".into(), Some("1700000005000"), Some("dev")),
            ("b".into(), Some("1700000007000"), Some("dev")),
            ("gone".into(), Some("1700000008000"), Some("dev")),
        ]
    );
    for p in publishes(&w.packets(net)) {
        assert_eq!(user_property(&p, crate::ORIGIN_TIME), None, "{p:?}");
        assert_eq!(user_property(&p, crate::ORIGIN_CLIENT_ID), None, "{p:?}");
    }
}

/// Without an anchor the time is unknown (0) and no `midge-time` property is sent; the
/// wall-clock arithmetic also holds for instants before the anchor.
#[test]
fn without_a_wall_clock_no_time_is_sent() {
    let mut w = World::new();
    assert_eq!(w.broker.wall_ms(w.now), 0);
    let hub = w.open();
    w.broker.set_internal(hub);
    w.send(
        hub,
        Packet::Connect(Box::new(Connect::new(Protocol::V5, "$midge/hub"))),
    );
    w.packets(hub);
    w.subscribe(hub, "#", QoS::AtLeastOnce);
    let dev = w.connect(Protocol::V5, "dev", true);
    w.publish(dev, "s/1", "a", QoS::AtLeastOnce, false, 1);
    let got = publishes(&w.packets(hub));
    assert_eq!(got.len(), 1);
    assert_eq!(user_property(&got[0], crate::ORIGIN_TIME), None);
    assert_eq!(user_property(&got[0], crate::ORIGIN_CLIENT_ID), Some("dev"));

    let later = w.now + Duration::from_secs(10);
    w.broker.set_wall_clock(later, 50_000);
    assert_eq!(w.broker.wall_ms(w.now), 40_000);
    assert_eq!(w.broker.wall_ms(later + Duration::from_millis(1)), 50_001);
}

#[path = "admin_tests.rs"]
mod admin_tests;

#[path = "last_tests.rs"]
mod last_tests;

// ---------- keep alive, owned by core's timers (it was the server's wheel) ----------

fn connect_ka(w: &mut World, v: Protocol, id: &str, keep_alive: u16, with_will: bool) -> ConnId {
    let mut c = Connect::new(v, id);
    c.keep_alive = keep_alive;
    if with_will {
        c.will = will("silent", None);
    }
    let (conn, ack) = w.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    conn
}

#[test]
fn a_silent_v5_client_is_told_0x8d_and_closed_after_one_and_a_half_keep_alives_and_its_will_goes() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "will", QoS::AtMostOnce);
    let c = connect_ka(&mut w, Protocol::V5, "quiet", 10, true);
    // the broker asks to be woken at the deadline, not every 500 ms
    assert_eq!(
        w.broker.poll_timeout(),
        Some(w.now + Duration::from_millis(500))
    );
    w.advance_ms(14_999);
    let (p, closed) = w.take(c);
    assert!(p.is_empty() && !closed, "still within 1.5 x keep alive");
    assert!(w.packets(sub).is_empty());
    w.advance_ms(1);
    let (p, closed) = w.take(c);
    assert!(closed, "closed at 15 s");
    assert!(
        matches!(&p[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{p:?}"
    );
    assert_eq!(
        payloads(&w.packets(sub)),
        vec!["silent"],
        "the will is published"
    );
    // nothing more about that connection later
    w.advance(60);
    assert_eq!(w.take(c), (vec![], false));
}

#[test]
fn any_whole_packet_postpones_the_keep_alive_deadline() {
    let mut w = World::new();
    let c = connect_ka(&mut w, Protocol::V311, "pinger", 10, false);
    w.advance(10);
    w.send(c, Packet::PingReq);
    assert_eq!(w.take(c), (vec![Packet::PingResp], false));
    w.advance_ms(14_999); // 24.999 s after CONNECT, 14.999 s after the ping
    assert_eq!(w.take(c), (vec![], false));
    w.advance_ms(1);
    let (p, closed) = w.take(c);
    assert!(closed, "closed 15 s after its last packet");
    assert!(
        p.is_empty(),
        "3.1.1: no DISCONNECT, the connection is closed: {p:?}"
    );
}

#[test]
fn keep_alive_zero_is_never_enforced_and_the_server_keep_alive_overrides_the_client() {
    let mut w = World::new();
    let forever = connect_ka(&mut w, Protocol::V311, "forever", 0, false);
    w.advance(100_000);
    assert_eq!(w.take(forever), (vec![], false));

    let mut config = Config::default();
    config.max_keepalive = 20;
    let mut w = World::with(config);
    let mut c = Connect::new(Protocol::V5, "asks-none");
    c.keep_alive = 0;
    let (conn, ack) = w.connect_with(c);
    assert_eq!(ack.properties.server_keep_alive, Some(20));
    w.advance_ms(29_999);
    assert_eq!(w.take(conn), (vec![], false));
    w.advance_ms(1);
    assert!(w.take(conn).1, "closed at 1.5 x the server's keep alive");
}

#[test]
fn poll_timeout_names_the_earliest_deadline_of_every_kind() {
    let mut w = World::new();
    assert_eq!(
        w.broker.poll_timeout(),
        None,
        "nothing armed on a new broker"
    );
    let mut c = Connect::new(Protocol::V5, "d");
    c.keep_alive = 0;
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(100);
    c.will = will("late", Some(30));
    let (conn, _) = w.connect_with(c);
    w.advance(1); // housekeeping ran; none re-armed while no last value is kept
    let t = w.now;
    w.close(conn);
    assert_eq!(
        w.broker.poll_timeout(),
        Some(t + Duration::from_secs(30)),
        "the will delay"
    );
    w.advance(30);
    assert_eq!(
        w.broker.poll_timeout(),
        Some(t + Duration::from_secs(100)),
        "then the session expiry"
    );
}

// ---------- refusing what could not be made durable (flow/refuse.rs) ----------

#[test]
fn a_full_store_refuses_v5_with_0x97_and_closes_a_311_client_whose_will_then_goes() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", true);
    w.subscribe(sub, "will", QoS::AtMostOnce);
    let v5 = w.connect(Protocol::V5, "five", true);
    let mut p = Publish::new(TopicName::new("t").unwrap(), "x");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 7;
    let mut out = Vec::new();
    assert!(w.broker.refuse_store_full(w.now, v5, &p, &mut out));
    w.out.extend(out);
    let (got, closed) = w.take(v5);
    assert!(!closed);
    assert!(
        matches!(&got[..], [Packet::PubAck(a)] if a.packet_id == 7 && a.reason == ReasonCode::QUOTA_EXCEEDED),
        "{got:?}"
    );
    // QoS 2: PUBREC 0x97; QoS 0: nothing to refuse
    p.qos = QoS::ExactlyOnce;
    let mut out = Vec::new();
    assert!(w.broker.refuse_store_full(w.now, v5, &p, &mut out));
    assert!(
        matches!(&out[..], [Action::Send(_, Packet::PubRec(a))] if a.reason == ReasonCode::QUOTA_EXCEEDED)
    );
    p.qos = QoS::AtMostOnce;
    assert!(!w.broker.refuse_store_full(w.now, v5, &p, &mut Vec::new()));

    // 3.1.1 cannot refuse: closed, and as an abnormal end its will is published
    let mut c = Connect::new(Protocol::V311, "three");
    c.keep_alive = 0;
    c.will = will("cut", None);
    let (old, _) = w.connect_with(c);
    let mut out = Vec::new();
    let ack = PubAck::new(3);
    w.broker.unstored(w.now, old, Packet::PubAck(ack), &mut out);
    w.out.extend(out);
    let (got, closed) = w.take(old);
    assert!(closed && got.is_empty(), "{got:?}");
    assert_eq!(payloads(&w.packets(sub)), vec!["cut"]);
    // a delivery held for a failed batch still goes out unchanged
    let mut out = Vec::new();
    w.broker.unstored(w.now, v5, Packet::PingResp, &mut out);
    assert_eq!(out, vec![Action::Send(v5, Packet::PingResp)]);
}

#[test]
fn shutdown_acts_on_connections_in_a_fixed_order_whatever_the_hash_seed() {
    let mut w = World::new();
    let conns: Vec<ConnId> = (0..20)
        .map(|i| w.connect(Protocol::V5, &format!("c{i}"), true))
        .collect();
    let mut out = Vec::new();
    w.broker.shutdown(w.now, &mut out);
    let closed: Vec<ConnId> = out
        .iter()
        .filter_map(|a| match a {
            Action::Close(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(closed, conns, "by connection id");
}

// ---------- random operation sequences (a property test over the whole state machine) ----

mod sequences {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    const TOPICS: [&str; 4] = ["a", "a/b", "b/b", "c"];
    const FILTERS: [&str; 5] = ["a", "a/#", "+/b", "#", "$share/g/a/#"];

    #[derive(Debug, Clone)]
    enum Op {
        Connect {
            client: usize,
            v5: bool,
            clean: bool,
            receive_max: u16,
        },
        Subscribe {
            client: usize,
            filter: usize,
            qos: u8,
        },
        Publish {
            client: usize,
            topic: usize,
            qos: u8,
            retain: bool,
        },
        /// Acknowledge one delivery the client holds, the oldest or the newest.
        Ack {
            client: usize,
            newest: bool,
        },
        Close {
            client: usize,
        },
        Disconnect {
            client: usize,
        },
        Advance {
            ms: u32,
        },
        Writable {
            client: usize,
            on: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let c = 0..4usize;
        prop_oneof![
            2 => (c.clone(), any::<bool>(), any::<bool>(), 1..4u16).prop_map(
                |(client, v5, clean, receive_max)| Op::Connect {
                    client,
                    v5,
                    clean,
                    receive_max
                }
            ),
            2 => (c.clone(), 0..FILTERS.len(), 0..3u8).prop_map(|(client, filter, qos)| Op::Subscribe {
                client,
                filter,
                qos
            }),
            4 => (c.clone(), 0..TOPICS.len(), 0..3u8, any::<bool>()).prop_map(
                |(client, topic, qos, retain)| Op::Publish {
                    client,
                    topic,
                    qos,
                    retain
                }
            ),
            3 => (c.clone(), any::<bool>()).prop_map(|(client, newest)| Op::Ack { client, newest }),
            1 => c.clone().prop_map(|client| Op::Close { client }),
            1 => c.clone().prop_map(|client| Op::Disconnect { client }),
            1 => (0..200_000u32).prop_map(|ms| Op::Advance { ms }),
            1 => (c, any::<bool>()).prop_map(|(client, on)| Op::Writable { client, on }),
        ]
    }

    /// What the test knows of one client.
    #[derive(Default)]
    struct Client {
        conn: Option<ConnId>,
        v5: bool,
        receive_max: u16,
        /// Deliveries of QoS 1/2 it holds unacknowledged: (packet id, qos, released).
        holding: Vec<(u16, QoS, bool)>,
        next_id: u16,
        /// The session outlives its connections: 3.x without Clean Session, or MQTT 5
        /// without Clean Start (with a 60 s Session Expiry Interval).
        persistent: bool,
        /// When the session's last connection ended, for its expiry (MQTT 5 only).
        closed_at: Option<Instant>,
        /// The session's subscriptions as the test made them: filter -> QoS.
        subs: HashMap<&'static str, QoS>,
        /// Payloads of every PUBLISH sent to it.
        received: HashSet<bytes::Bytes>,
        /// Acknowledged QoS 1 messages its session must receive (payloads), until the
        /// session ends (Clean Start, expiry).
        owed: HashSet<bytes::Bytes>,
    }

    /// MQTT 5 sessions without Clean Start ask for this expiry.
    const EXPIRY: Duration = Duration::from_secs(60);

    struct Run {
        w: World,
        clients: Vec<Client>,
        closed: HashSet<ConnId>,
        /// QoS 1 PUBLISHes awaiting their PUBACK: (publisher, packet id) -> (topic, payload).
        unacked: HashMap<(usize, u16), (&'static str, bytes::Bytes)>,
        /// Payloads are numbered, so that each message can be followed.
        published: u64,
    }

    impl Run {
        fn client_of(&self, conn: ConnId) -> Option<usize> {
            self.clients.iter().position(|c| c.conn == Some(conn))
        }

        /// The session of client `i` ended: it owes nothing and subscribes to nothing.
        fn session_ended(&mut self, i: usize) {
            let c = &mut self.clients[i];
            c.subs.clear();
            c.owed.clear();
        }

        /// Client `i`'s connection ended (by the client, core or the network).
        fn connection_ended(&mut self, i: usize) {
            let c = &mut self.clients[i];
            c.conn = None;
            c.closed_at = Some(self.w.now);
            if !c.persistent {
                self.session_ended(i);
            }
        }

        /// The publisher got a PUBACK for a QoS 1 message: every persistent session with a
        /// non-shared QoS 1/2 subscription matching its topic is owed it.
        fn acknowledged(&mut self, topic: &str, payload: bytes::Bytes) {
            for c in &mut self.clients {
                let matching = c.subs.iter().any(|(f, q)| {
                    *q != QoS::AtMostOnce
                        && !f.starts_with("$share/")
                        && midge_codec::matches_filter(f, topic)
                });
                if c.persistent && matching && !c.received.contains(&payload) {
                    c.owed.insert(payload.clone());
                }
            }
        }

        /// Play every action core produced, checking the invariants on each.
        fn settle(&mut self) {
            let mut replies = Vec::new();
            let out = std::mem::take(&mut self.w.out);
            for a in out {
                match a {
                    Action::Send(conn, p) => {
                        assert!(!self.closed.contains(&conn), "sent after close: {p:?}");
                        let Some(i) = self.client_of(conn) else {
                            continue;
                        };
                        let (protocol, max) = self.w.wire[&conn];
                        let p = on_the_wire(&p, protocol, max);
                        if let Packet::PubAck(a) = &p {
                            let acked = self.unacked.remove(&(i, a.packet_id));
                            if let Some((topic, payload)) = acked.filter(|_| !a.reason.is_error()) {
                                self.acknowledged(topic, payload);
                            }
                        }
                        let c = &mut self.clients[i];
                        if let Packet::Publish(p) = &p {
                            c.owed.remove(&p.payload);
                            c.received.insert(p.payload.clone());
                        }
                        match p {
                            Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
                                // a resend after reconnecting (DUP) is held by the new
                                // connection too
                                if !c.holding.iter().any(|h| h.0 == p.packet_id) {
                                    c.holding.push((p.packet_id, p.qos, false));
                                }
                                let limit = if c.v5 { c.receive_max } else { 256 };
                                assert!(
                                    c.holding.len() <= usize::from(limit),
                                    "{} in flight to a client with receive maximum {limit}",
                                    c.holding.len()
                                );
                            }
                            Packet::PubRec(a) => {
                                replies.push((conn, Packet::PubRel(PubAck::new(a.packet_id))))
                            }
                            Packet::PubRel(a) => {
                                // our PUBREC was answered: complete it
                                c.holding.retain(|h| h.0 != a.packet_id);
                                replies.push((conn, Packet::PubComp(PubAck::new(a.packet_id))));
                            }
                            _ => {}
                        }
                    }
                    Action::Close(conn) => {
                        self.closed.insert(conn);
                        if let Some(i) = self.client_of(conn) {
                            self.connection_ended(i);
                        }
                    }
                    Action::Connected { .. } => {}
                }
            }
            for (conn, p) in replies {
                if !self.closed.contains(&conn) {
                    self.w.send(conn, p);
                }
            }
            if !self.w.out.is_empty() {
                self.settle();
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Connect {
                    client,
                    v5,
                    clean,
                    receive_max,
                } => {
                    let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
                    let mut c = Connect::new(protocol, format!("c{client}"));
                    c.keep_alive = 0;
                    c.clean_start = clean;
                    if v5 {
                        c.properties.receive_maximum = Some(receive_max);
                        if !clean {
                            c.properties.session_expiry_interval = Some(60);
                        }
                    }
                    let (conn, ack) = self.w.connect_with(c);
                    assert_eq!(ack.reason, ReasonCode::SUCCESS);
                    self.expire();
                    // Clean Start ends the old session; so does taking over a connection
                    // whose session was to end with it
                    if clean || !self.clients[client].persistent {
                        self.session_ended(client);
                    }
                    let cl = &mut self.clients[client];
                    // a resumed session resends what the old connection held
                    *cl = Client {
                        conn: Some(conn),
                        v5,
                        receive_max,
                        holding: Vec::new(),
                        next_id: cl.next_id,
                        persistent: !clean,
                        closed_at: None,
                        subs: std::mem::take(&mut cl.subs),
                        received: std::mem::take(&mut cl.received),
                        owed: std::mem::take(&mut cl.owed),
                    };
                }
                Op::Subscribe {
                    client,
                    filter,
                    qos,
                } => {
                    let Some(conn) = self.clients[client].conn else {
                        return;
                    };
                    let qos = QoS::try_from(qos).unwrap();
                    if !self.w.subscribe(conn, FILTERS[filter], qos).is_error() {
                        self.clients[client].subs.insert(FILTERS[filter], qos);
                    }
                }
                Op::Publish {
                    client,
                    topic,
                    qos,
                    retain,
                } => {
                    let c = &mut self.clients[client];
                    let Some(conn) = c.conn else { return };
                    self.published += 1;
                    let payload = bytes::Bytes::from(format!("m{}", self.published));
                    let mut p =
                        Publish::new(TopicName::new(TOPICS[topic]).unwrap(), payload.clone());
                    p.qos = QoS::try_from(qos).unwrap();
                    p.retain = retain;
                    if p.qos != QoS::AtMostOnce {
                        c.next_id = c.next_id % 60_000 + 1;
                        p.packet_id = c.next_id;
                    }
                    if p.qos == QoS::AtLeastOnce {
                        self.unacked
                            .insert((client, p.packet_id), (TOPICS[topic], payload));
                    }
                    self.w.send(conn, Packet::Publish(p));
                }
                Op::Ack { client, newest } => {
                    let c = &mut self.clients[client];
                    let Some(conn) = c.conn else { return };
                    let pick = if newest {
                        c.holding.iter().rposition(|h| !h.2)
                    } else {
                        c.holding.iter().position(|h| !h.2)
                    };
                    let Some(i) = pick else { return };
                    let (id, qos, _) = c.holding[i];
                    if qos == QoS::AtLeastOnce {
                        c.holding.remove(i);
                        self.w.send(conn, Packet::PubAck(PubAck::new(id)));
                    } else {
                        c.holding[i].2 = true;
                        self.w.send(conn, Packet::PubRec(PubAck::new(id)));
                    }
                }
                Op::Close { client } => {
                    if let Some(conn) = self.clients[client].conn {
                        self.w.close(conn);
                        self.closed.insert(conn);
                        self.connection_ended(client);
                    }
                }
                Op::Disconnect { client } => {
                    if let Some(conn) = self.clients[client].conn {
                        self.w.send(conn, Packet::Disconnect(Disconnect::default()));
                    }
                }
                Op::Advance { ms } => {
                    self.w.advance_ms(u64::from(ms));
                    self.expire();
                }
                Op::Writable { client, on } => {
                    if let Some(conn) = self.clients[client].conn {
                        let mut out = Vec::new();
                        self.w.broker.set_writable(self.w.now, conn, on, &mut out);
                        self.w.out.extend(out);
                    }
                }
            }
            self.settle();
        }

        /// MQTT 5 sessions closed for their expiry interval are gone (owing nothing). A 3.x
        /// session without Clean Session never expires.
        fn expire(&mut self) {
            for i in 0..self.clients.len() {
                let c = &self.clients[i];
                let expired = c.v5
                    && c.conn.is_none()
                    && c.closed_at.is_some_and(|t| self.w.now >= t + EXPIRY);
                if expired {
                    self.clients[i].persistent = false;
                    self.session_ended(i);
                }
            }
        }

        /// The end: every client still owed a message reconnects without Clean Start (or
        /// stays), becomes writable and acknowledges everything until nothing more comes;
        /// then every acknowledged QoS 1 message has reached each matching persistent
        /// session.
        fn finish(&mut self) {
            for client in 0..self.clients.len() {
                if self.clients[client].owed.is_empty() {
                    continue;
                }
                if self.clients[client].conn.is_none() {
                    let v5 = self.clients[client].v5;
                    self.apply(Op::Connect {
                        client,
                        v5,
                        clean: false,
                        receive_max: 3,
                    });
                }
                self.apply(Op::Writable { client, on: true });
                for _ in 0..100_000 {
                    if self.clients[client].holding.iter().all(|h| h.2) {
                        break;
                    }
                    self.apply(Op::Ack {
                        client,
                        newest: false,
                    });
                }
                let c = &self.clients[client];
                assert!(
                    c.owed.is_empty(),
                    "acknowledged QoS 1 messages {:?} never reached client {client}'s session",
                    c.owed
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// Any sequence of connects, subscriptions, publishes at every QoS, acknowledgements
        /// in and out of order, closes, disconnects, time and congestion: no panic, nothing
        /// sent on a closed connection, never more in flight than the client's Receive
        /// Maximum, every packet encodable for its client, and every QoS 1 message the
        /// publisher got a PUBACK for reaches each matching persistent session (sent to it,
        /// or once it reconnects at the end).
        #[test]
        fn random_operation_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..80)) {
            let mut run = Run {
                w: World::new(),
                clients: (0..4).map(|_| Client::default()).collect(),
                closed: HashSet::new(),
                unacked: HashMap::new(),
                published: 0,
            };
            for op in ops {
                run.apply(op);
            }
            run.finish();
        }
    }
}

#[cfg(test)]
mod cluster;
