//! Flow tests for durable state: which flows describe which [`StoreOp`]s, that clean
//! sessions and a broker without persistence describe none, and that a restored session
//! resumes like a disconnected one.

use std::sync::Arc;

use super::*;
use crate::{
    DeliveryState, Message, Restored, RestoredDelivery, RestoredSession, SessionHeader, StoreOp,
};

fn durable() -> World {
    let mut w = World::new();
    w.broker.enable_persistence();
    w
}

fn ops(w: &mut World) -> Vec<StoreOp> {
    let mut v = Vec::new();
    w.broker.take_store_ops(&mut v);
    v
}

#[test]
fn without_persistence_no_op_is_built() {
    let mut w = World::new();
    let sub = w.connect(Protocol::V5, "sub", false);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    w.close(sub);
    let p = w.connect(Protocol::V5, "pub", true);
    w.publish(p, "t", "x", QoS::AtLeastOnce, true, 1);
    assert!(!w.broker.has_store_ops());
    assert!(ops(&mut w).is_empty());
}

#[test]
fn clean_sessions_are_never_written() {
    for v in BOTH {
        let mut w = durable();
        let sub = w.connect(v, "sub", true);
        w.subscribe(sub, "t", QoS::ExactlyOnce);
        let p = w.connect(v, "pub", true);
        w.publish(p, "t", "x", QoS::ExactlyOnce, false, 1);
        w.send(p, Packet::PubRel(PubAck::new(1)));
        assert!(ops(&mut w).is_empty(), "{v:?}");
    }
}

#[test]
fn persistent_session_connect_subscribe_queue_deliver_ack_are_described() {
    for v in BOTH {
        let mut w = durable();
        let sub = w.connect(v, "sub", false);
        let o = ops(&mut w);
        assert!(
            matches!(&o[..], [StoreOp::Session(h)] if h.client_id == "sub" && h.disconnected_at.is_none()),
            "{o:?}"
        );
        w.subscribe(sub, "t/#", QoS::AtLeastOnce);
        let o = ops(&mut w);
        assert!(matches!(&o[..], [StoreOp::Subscribe { filter, .. }] if filter == "t/#"));
        w.close(sub);
        let o = ops(&mut w);
        assert!(matches!(&o[..], [StoreOp::Session(h)] if h.disconnected_at.is_some()));

        // offline: the message is queued durably, its body once
        let p = w.connect(v, "pub", true);
        w.publish(p, "t/1", "hello", QoS::AtLeastOnce, false, 7);
        let o = ops(&mut w);
        assert_eq!(o.len(), 2, "{o:?}");
        let StoreOp::Message { id, msg } = &o[0] else {
            panic!("{o:?}")
        };
        assert_eq!(msg.payload, "hello");
        let StoreOp::Delivery {
            seq, msg: m, state, ..
        } = &o[1]
        else {
            panic!("{o:?}")
        };
        assert_eq!((m, *state), (id, DeliveryState::Queued));
        let seq = *seq;

        // back online: the queued delivery goes in flight, then its PUBACK ends it
        let mut c = Connect::new(v, "sub");
        c.clean_start = false;
        if v == Protocol::V5 {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (sub, ack) = w.connect_with(c);
        assert!(ack.session_present);
        let pubs = publishes(&w.packets(sub));
        assert_eq!(pubs.len(), 1);
        let o = ops(&mut w);
        assert!(
            o.iter().any(|op| matches!(op, StoreOp::Delivery { seq: s, state: DeliveryState::AwaitPubAck(pid), .. } if *s == seq && *pid == pubs[0].packet_id)),
            "{o:?}"
        );
        assert!(
            !o.iter().any(|op| matches!(op, StoreOp::Message { .. })),
            "body not written twice: {o:?}"
        );
        w.send(sub, Packet::PubAck(PubAck::new(pubs[0].packet_id)));
        let o = ops(&mut w);
        assert!(
            matches!(&o[..], [StoreOp::DeliveryDelete { seq: s, .. }] if *s == seq),
            "{o:?}"
        );
    }
}

#[test]
fn one_body_for_many_sessions() {
    let mut w = durable();
    for id in ["a", "b", "c"] {
        let c = w.connect(Protocol::V5, id, false);
        w.subscribe(c, "t", QoS::AtLeastOnce);
        w.close(c);
    }
    ops(&mut w);
    let p = w.connect(Protocol::V5, "pub", true);
    w.publish(p, "t", "x", QoS::AtLeastOnce, false, 1);
    let o = ops(&mut w);
    let bodies = o
        .iter()
        .filter(|op| matches!(op, StoreOp::Message { .. }))
        .count();
    let deliveries = o
        .iter()
        .filter(|op| matches!(op, StoreOp::Delivery { .. }))
        .count();
    assert_eq!((bodies, deliveries), (1, 3));
}

#[test]
fn inbound_qos2_and_outbound_pubrel_state_are_described() {
    let mut w = durable();
    let sub = w.connect(Protocol::V5, "sub", false);
    w.subscribe(sub, "t", QoS::ExactlyOnce);
    let p = w.connect(Protocol::V311, "pub", false);
    ops(&mut w);
    w.publish(p, "t", "x", QoS::ExactlyOnce, false, 9);
    let o = ops(&mut w);
    assert!(o.iter().any(|op| matches!(
        op,
        StoreOp::InboundQos2 {
            packet_id: 9,
            pending: true,
            ..
        }
    )));
    assert!(o.iter().any(|op| matches!(
        op,
        StoreOp::Delivery {
            state: DeliveryState::AwaitPubRec(_),
            ..
        }
    )));
    w.send(p, Packet::PubRel(PubAck::new(9)));
    let o = ops(&mut w);
    assert!(
        matches!(
            &o[..],
            [StoreOp::InboundQos2 {
                packet_id: 9,
                pending: false,
                ..
            }]
        ),
        "{o:?}"
    );
    let pid = publishes(&w.packets(sub))[0].packet_id;
    w.send(sub, Packet::PubRec(PubAck::new(pid)));
    let o = ops(&mut w);
    assert!(
        matches!(&o[..], [StoreOp::Delivery { state: DeliveryState::AwaitPubComp(p), .. }] if *p == pid),
        "{o:?}"
    );
    w.send(sub, Packet::PubComp(PubAck::new(pid)));
    let o = ops(&mut w);
    assert!(matches!(&o[..], [StoreOp::DeliveryDelete { .. }]), "{o:?}");
}

#[test]
fn retained_messages_and_session_end_are_described() {
    let mut w = durable();
    let p = w.connect(Protocol::V5, "pub", true);
    w.publish(p, "r", "on", QoS::AtMostOnce, true, 0);
    w.publish(p, "r", "", QoS::AtMostOnce, true, 0);
    let o = ops(&mut w);
    assert!(
        matches!(
            &o[..],
            [
                StoreOp::Retain { msg: Some(_), .. },
                StoreOp::Retain { msg: None, .. }
            ]
        ),
        "{o:?}"
    );
    // $SYS is regenerated, never stored
    let mut out = Vec::new();
    w.broker.publish(
        w.now,
        Message::new(
            TopicName::new("$SYS/x").unwrap(),
            "1",
            QoS::AtMostOnce,
            true,
        ),
        &mut out,
    );
    assert!(ops(&mut w).is_empty());
    // a session that expires is deleted from the store
    let mut c = Connect::new(Protocol::V5, "short");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(10);
    let (conn, _) = w.connect_with(c);
    w.close(conn);
    ops(&mut w);
    w.advance(11);
    let o = ops(&mut w);
    assert!(
        matches!(&o[..], [StoreOp::SessionDelete(id)] if id == "short"),
        "{o:?}"
    );
}

fn restored_session(v: Protocol) -> Restored {
    let msg = |p: &str| {
        Arc::new(Message::new(
            TopicName::new("t").unwrap(),
            p.to_string(),
            QoS::ExactlyOnce,
            false,
        ))
    };
    let d = |seq: u64, p: &str, qos: QoS, state| RestoredDelivery {
        seq,
        msg_id: seq,
        msg: msg(p),
        qos,
        retain: false,
        sub_ids: Vec::new(),
        state,
    };
    Restored {
        sessions: vec![RestoredSession {
            header: SessionHeader {
                client_id: "dev".into(),
                username: None,
                protocol: v,
                expiry_interval: 3600,
                will: None,
                will_at: None,
                disconnected_at: None,
            },
            subscriptions: vec![("t".into(), SubscriptionOptions::qos(QoS::ExactlyOnce), None)],
            deliveries: vec![
                d(3, "queued", QoS::AtLeastOnce, DeliveryState::Queued),
                d(
                    1,
                    "unacked",
                    QoS::AtLeastOnce,
                    DeliveryState::AwaitPubAck(11),
                ),
                d(
                    2,
                    "received",
                    QoS::ExactlyOnce,
                    DeliveryState::AwaitPubComp(12),
                ),
            ],
            inbound_qos2: vec![5],
        }],
        retained: vec![Message::new(
            TopicName::new("t").unwrap(),
            "ret",
            QoS::AtMostOnce,
            true,
        )],
    }
}

#[test]
fn restored_retained_messages_are_the_last_values_at_once() {
    let mut w = durable();
    w.broker.restore(w.now, restored_session(Protocol::V5));
    let (values, matched) = w
        .broker
        .last_values(&TopicFilter::new("#").unwrap(), None, 10);
    assert_eq!(matched, 1);
    assert_eq!(&values[0].topic[..], "t");
    assert_eq!(values[0].payload.as_deref(), Some(&b"ret"[..]));
    assert!(values[0].retain);
}

#[test]
fn restored_session_resumes_like_a_disconnected_one() {
    for v in BOTH {
        let mut w = durable();
        w.broker.restore(w.now, restored_session(v));
        assert_eq!(w.broker.stats().sessions, 1);
        assert_eq!(w.broker.stats().retained, 1);
        let mut c = Connect::new(v, "dev");
        c.clean_start = false;
        if v == Protocol::V5 {
            c.properties.session_expiry_interval = Some(3600);
        }
        let (conn, ack) = w.connect_with(c);
        assert!(ack.session_present, "{v:?}");
        let packets = w.packets(conn);
        // in flight first, in order: PUBLISH DUP for the unacknowledged one, PUBREL for the
        // one past PUBREC; then the queue
        let Packet::Publish(first) = &packets[0] else {
            panic!("{packets:?}")
        };
        assert!(first.dup);
        assert_eq!((first.packet_id, &first.payload[..]), (11, &b"unacked"[..]));
        assert_eq!(packets[1], Packet::PubRel(PubAck::new(12)));
        let Packet::Publish(third) = &packets[2] else {
            panic!("{packets:?}")
        };
        assert!(!third.dup);
        assert_eq!(&third.payload[..], b"queued");
        assert_ne!(third.packet_id, 11);
        assert_ne!(third.packet_id, 12);
        // the restored subscription routes
        let p = w.connect(v, "pub", true);
        w.publish(p, "t", "live", QoS::AtLeastOnce, false, 1);
        assert_eq!(payloads(&w.packets(conn)), vec!["live"]);
        // a QoS 2 PUBLISH whose id awaited PUBREL before the restart is not delivered again
        w.send(
            conn,
            Packet::Publish({
                let mut p = Publish::new(TopicName::new("t").unwrap(), Bytes::from_static(b"dup"));
                p.qos = QoS::ExactlyOnce;
                p.packet_id = 5;
                p.dup = true;
                p
            }),
        );
        let back = w.packets(conn);
        assert_eq!(payloads(&back), Vec::<String>::new());
        assert!(back.contains(&Packet::PubRec(PubAck::new(5))));
    }
}

#[test]
fn restored_session_expires_and_its_will_goes_out() {
    let mut w = durable();
    let mut r = restored_session(Protocol::V5);
    r.sessions[0].header.expiry_interval = 30;
    r.sessions[0].header.will = Some(LastWill {
        topic: TopicName::new("will").unwrap(),
        payload: Bytes::from_static(b"bye"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(10),
            ..Default::default()
        },
    });
    w.broker.restore(w.now, r);
    let watcher = w.connect(Protocol::V5, "watch", true);
    w.subscribe(watcher, "will", QoS::AtMostOnce);
    w.advance(5);
    assert!(payloads(&w.packets(watcher)).is_empty());
    w.advance(6);
    assert_eq!(payloads(&w.packets(watcher)), vec!["bye"]);
    ops(&mut w);
    w.advance(20);
    assert_eq!(w.broker.stats().sessions, 1); // only the watcher
    let o = ops(&mut w);
    assert!(
        matches!(&o[..], [StoreOp::SessionDelete(id)] if id == "dev"),
        "{o:?}"
    );
}

/// The accept time is part of the stored message, and a message restored from the store
/// keeps the time it was first accepted at (not the time of the redelivery).
#[test]
fn the_accept_time_is_stored_and_kept_through_a_restore() {
    let mut w = durable();
    w.broker.set_wall_clock(w.now, 1_000_000);
    let sub = w.connect(Protocol::V5, "sub", false);
    w.subscribe(sub, "t", QoS::AtLeastOnce);
    w.close(sub);
    w.advance(3);
    let p = w.connect(Protocol::V5, "pub", true);
    w.publish(p, "t", "x", QoS::AtLeastOnce, false, 1);
    let o = ops(&mut w);
    let Some(StoreOp::Message { msg, .. }) =
        o.iter().find(|op| matches!(op, StoreOp::Message { .. }))
    else {
        panic!("{o:?}")
    };
    assert_eq!(msg.origin.as_ref().map(|o| o.received_ms), Some(1_003_000));

    // a broker started later (another anchor) redelivers it with its first time
    let mut r = restored_session(Protocol::V5);
    let mut stored = (**msg).clone();
    stored.qos = QoS::AtLeastOnce;
    r.sessions[0].deliveries = vec![RestoredDelivery {
        seq: 1,
        msg_id: 1,
        msg: Arc::new(stored),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: Vec::new(),
        state: DeliveryState::AwaitPubAck(4),
    }];
    let mut w2 = durable();
    w2.broker.set_wall_clock(w2.now, 9_000_000);
    w2.broker.restore(w2.now, r);
    let hub = w2.open();
    w2.broker.set_internal(hub);
    let mut c = Connect::new(Protocol::V5, "dev");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    w2.send(hub, Packet::Connect(Box::new(c)));
    let got = publishes(&w2.packets(hub));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].dup);
    let time = got[0]
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| &**k == crate::ORIGIN_TIME)
        .map(|(_, v)| v.to_string());
    assert_eq!(time.as_deref(), Some("1003000"));
}
