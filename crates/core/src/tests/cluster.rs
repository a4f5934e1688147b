//! Two brokers as two nodes of a cluster (`cluster.rs`), the test moving what one forwards
//! and announces to the other, as `crates/cluster` does over NATS.

use super::*;
use crate::{Forward, Target};

/// A world made a cluster node.
fn node() -> World {
    let mut w = World::new();
    w.broker.set_cluster();
    w
}

/// What `from` announced, applied to `to` (as node `name`).
fn announce(from: &mut World, name: &str, to: &mut World) {
    let mut changes = Vec::new();
    from.broker.take_interest(&mut changes);
    for (filter, added) in changes {
        if added {
            assert!(to.broker.remote_subscribe(name, &filter));
        } else {
            to.broker.remote_unsubscribe(name, &filter);
        }
    }
}

fn forwards(w: &mut World) -> Vec<Forward> {
    let mut v = Vec::new();
    w.broker.take_forwards(&mut v);
    v
}

/// Hand `from`'s forwards to `to` (every one is for `to` in a two-node world).
fn carry(from: &mut World, to: &mut World) -> usize {
    let f = forwards(from);
    for fwd in &f {
        let mut out = Vec::new();
        to.broker
            .publish_remote(to.now, (*fwd.msg).clone(), &fwd.target, &mut out);
        to.out.extend(out);
    }
    f.len()
}

#[test]
fn a_publish_reaches_another_nodes_subscriber_once_however_many_filters_match() {
    let (mut a, mut b) = (node(), node());
    let sub = b.connect(Protocol::V5, "sub", true);
    b.subscribe(sub, "t/+", QoS::AtLeastOnce);
    b.subscribe(sub, "t/#", QoS::AtLeastOnce);
    let other = b.connect(Protocol::V311, "other", true);
    b.subscribe(other, "t/x", QoS::AtMostOnce);
    announce(&mut b, "b", &mut a);
    assert_eq!(a.broker.remote_filters("b"), 3);

    let publisher = a.connect(Protocol::V5, "pub", true);
    a.publish(publisher, "t/x", "hello", QoS::AtLeastOnce, false, 7);
    // acknowledged as delivered: the other node has subscribers (not 0x10)
    let acks = a.packets(publisher);
    assert!(
        matches!(&acks[..], [Packet::PubAck(ack)] if ack.reason == ReasonCode::SUCCESS),
        "{acks:?}"
    );
    assert!(
        a.broker.has_reliable_forwards(),
        "QoS 1 waits for the cluster"
    );
    let f = forwards(&mut a);
    assert_eq!(f.len(), 1, "one copy per node: {f:?}");
    assert_eq!((&*f[0].node, &f[0].target), ("b", &Target::Plain));
    let mut out = Vec::new();
    b.broker
        .publish_remote(b.now, (*f[0].msg).clone(), &f[0].target, &mut out);
    b.out.extend(out);
    let got = publishes(&b.packets(sub));
    assert_eq!(got.len(), 1, "one delivery for two matching filters");
    assert_eq!(
        (&*got[0].payload, got[0].qos),
        (&b"hello"[..], QoS::AtLeastOnce)
    );
    assert_eq!(payloads(&b.packets(other)), ["hello"]);
    // and it does not bounce back: a remote message is never forwarded again
    announce(&mut a, "a", &mut b);
    assert!(forwards(&mut b).is_empty());
}

#[test]
fn sys_topics_and_unmatched_topics_stay_on_their_node() {
    let (mut a, mut b) = (node(), node());
    let sub = b.connect(Protocol::V5, "sub", true);
    b.subscribe(sub, "#", QoS::AtMostOnce);
    b.subscribe(sub, "$SYS/#", QoS::AtMostOnce);
    announce(&mut b, "b", &mut a);
    a.publish_internal("$SYS/broker/uptime", "1");
    let p = a.connect(Protocol::V5, "p", true);
    a.publish(p, "$other/x", "no", QoS::AtMostOnce, false, 0);
    assert!(
        forwards(&mut a).is_empty(),
        "$SYS is per node; # never matches $ topics"
    );
    a.publish(p, "x", "yes", QoS::AtMostOnce, false, 0);
    assert!(!a.broker.has_reliable_forwards());
    assert_eq!(carry(&mut a, &mut b), 1);
    assert_eq!(payloads(&b.packets(sub)), ["yes"]);
}

#[test]
fn a_share_group_with_members_on_two_nodes_gives_each_message_to_one_member() {
    let (mut a, mut b) = (node(), node());
    let m1 = a.connect(Protocol::V5, "m1", true);
    a.subscribe(m1, "$share/g/job/+", QoS::AtLeastOnce);
    let m2 = b.connect(Protocol::V5, "m2", true);
    b.subscribe(m2, "$share/g/job/+", QoS::AtLeastOnce);
    // a plain subscriber on b must not get the group's messages twice
    let plain = b.connect(Protocol::V5, "plain", true);
    b.subscribe(plain, "job/+", QoS::AtMostOnce);
    announce(&mut b, "b", &mut a);
    announce(&mut a, "a", &mut b);

    let p = a.connect(Protocol::V5, "p", true);
    for i in 0..6u16 {
        a.publish(p, "job/1", &format!("m{i}"), QoS::AtMostOnce, false, 0);
    }
    let f = forwards(&mut a);
    let groups = f
        .iter()
        .filter(|f| matches!(f.target, Target::Group(_)))
        .count();
    let plain_copies = f.iter().filter(|f| f.target == Target::Plain).count();
    assert_eq!(plain_copies, 6, "b's plain subscriber gets every message");
    let local = payloads(&a.packets(m1)).len();
    assert_eq!(local + groups, 6, "each message to exactly one member");
    assert!(
        local > 0 && groups > 0,
        "both nodes' members get some: {local} {groups}"
    );
    for fwd in &f {
        let mut out = Vec::new();
        b.broker
            .publish_remote(b.now, (*fwd.msg).clone(), &fwd.target, &mut out);
        b.out.extend(out);
    }
    assert_eq!(payloads(&b.packets(m2)).len(), groups);
    assert_eq!(payloads(&b.packets(plain)).len(), 6);
}

#[test]
fn retained_messages_are_stored_on_every_node() {
    let (mut a, mut b) = (node(), node());
    let p = a.connect(Protocol::V5, "p", true);
    a.publish(p, "r/1", "kept", QoS::AtLeastOnce, true, 1);
    let f = forwards(&mut a);
    assert_eq!(f.len(), 1);
    assert_eq!((&*f[0].node, &f[0].target), ("*", &Target::Retained));
    assert!(f[0].reliable());
    let mut out = Vec::new();
    b.broker
        .publish_remote(b.now, (*f[0].msg).clone(), &f[0].target, &mut out);
    assert!(out.is_empty(), "a retained update is delivered to nobody");
    let s = b.connect(Protocol::V311, "late", true);
    b.subscribe(s, "r/#", QoS::AtMostOnce);
    let got = publishes(&b.packets(s));
    assert_eq!(got.len(), 1);
    assert!(got[0].retain && &*got[0].payload == b"kept");
}

#[test]
fn a_session_moves_to_another_node_with_its_subscriptions_and_messages() {
    let (mut a, mut b) = (node(), node());
    let c = a.connect(Protocol::V5, "mover", false);
    a.subscribe(c, "m/#", QoS::AtLeastOnce);
    a.close(c);
    let p = a.connect(Protocol::V5, "p", true);
    a.publish(p, "m/1", "queued", QoS::AtLeastOnce, false, 1);
    a.packets(p);
    // and one connected at the time it moves: told 0x8E and closed
    let live = a.connect(Protocol::V5, "live", false);
    a.subscribe(live, "l", QoS::AtMostOnce);
    let mut drop = Vec::new();
    a.broker.take_interest(&mut drop);

    let mut out = Vec::new();
    let state = a
        .broker
        .export_session(a.now, "mover", "b", &mut out)
        .expect("session");
    assert_eq!(state.subscriptions.len(), 1);
    assert_eq!(state.messages.len(), 1);
    assert_eq!(&*state.messages[0].payload, b"queued");
    let live_state = a
        .broker
        .export_session(a.now, "live", "b", &mut out)
        .expect("session");
    a.out.extend(out);
    let (packets, closed) = a.take(live);
    assert!(closed);
    assert!(
        matches!(&packets[..], [Packet::Disconnect(d)] if d.reason == ReasonCode::SESSION_TAKEN_OVER),
        "{packets:?}"
    );
    let mut gone = Vec::new();
    a.broker.take_interest(&mut gone);
    assert!(
        gone.is_empty(),
        "still announced while the stubs forward: {gone:?}"
    );
    a.broker.forget_moved("mover");
    a.broker.forget_moved("live");
    a.broker.take_interest(&mut gone);
    gone.sort();
    assert_eq!(gone, [("l".into(), false), ("m/#".into(), false)]);
    assert!(a.broker.clients().iter().all(|c| &*c.client_id == "p"));

    let mut out = Vec::new();
    b.broker.import_session(b.now, state, &mut out);
    b.broker.import_session(b.now, live_state, &mut out);
    assert!(out.is_empty());
    let mut came = Vec::new();
    b.broker.take_interest(&mut came);
    came.sort();
    assert_eq!(came, [("l".into(), true), ("m/#".into(), true)]);
    let mut connect = Connect::new(Protocol::V5, "mover");
    connect.clean_start = false;
    connect.keep_alive = 0;
    connect.properties.session_expiry_interval = Some(3600);
    let (conn, ack) = b.connect_with(connect);
    assert!(ack.session_present);
    assert_eq!(payloads(&b.packets(conn)), ["queued"]);
}

#[test]
fn a_node_made_a_cluster_member_announces_the_filters_it_already_has() {
    let mut w = World::new();
    let c = w.connect(Protocol::V5, "c", false);
    w.subscribe(c, "x/#", QoS::AtMostOnce);
    w.subscribe(c, "$share/g/y", QoS::AtMostOnce);
    let d = w.connect(Protocol::V5, "d", true);
    w.subscribe(d, "x/#", QoS::AtMostOnce);
    w.broker.set_cluster();
    assert_eq!(w.broker.local_filters(), ["$share/g/y", "x/#"]);
    let mut changes = Vec::new();
    w.broker.take_interest(&mut changes);
    assert_eq!(changes.len(), 2);
    // the filter stays while one of its two subscriptions is left
    w.close(d);
    w.broker.take_interest(&mut changes);
    assert_eq!(changes.len(), 2);
    w.broker.remote_subscribe("n2", "z");
    w.broker.remote_forget("n2");
    assert_eq!(w.broker.remote_filters("n2"), 0);
    let p = w.connect(Protocol::V5, "p", true);
    w.publish(p, "z", "x", QoS::AtMostOnce, false, 0);
    assert!(forwards(&mut w).is_empty(), "a forgotten node gets nothing");
}

#[test]
fn a_session_record_holds_what_another_node_needs_and_an_orphan_will_reaches_every_node() {
    let (mut a, mut b) = (node(), node());
    let mut c = Connect::new(Protocol::V5, "dev");
    c.keep_alive = 0;
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    c.will = will("bye", Some(5));
    let (conn, _) = a.connect_with(c);
    a.subscribe(conn, "cmd/#", QoS::AtLeastOnce);
    let r = a.broker.session_record("dev").expect("record");
    assert!(r.connected);
    assert_eq!(r.expiry_interval, 600);
    assert_eq!(r.subscriptions.len(), 1);
    assert_eq!(
        r.will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval),
        Some(5)
    );
    assert!(a.broker.session_record("nobody").is_none());

    // the node of "dev" died: b publishes its will, to b's and a's subscribers
    let local = b.connect(Protocol::V311, "watcher", true);
    b.subscribe(local, "will", QoS::AtMostOnce);
    let remote = a.connect(Protocol::V311, "far", true);
    a.subscribe(remote, "will", QoS::AtMostOnce);
    announce(&mut a, "a", &mut b);
    let mut out = Vec::new();
    let w = r.will.unwrap();
    b.broker.publish_orphan_will(b.now, "dev", w, &mut out);
    b.out.extend(out);
    assert_eq!(payloads(&b.packets(local)), ["bye"]);
    assert_eq!(carry(&mut b, &mut a), 1);
    assert_eq!(payloads(&a.packets(remote)), ["bye"]);
}

#[test]
fn what_still_comes_for_a_moved_session_follows_it_to_that_client_only() {
    let (mut a, mut b) = (node(), node());
    let c = a.connect(Protocol::V5, "mover", false);
    a.subscribe(c, "m/#", QoS::AtLeastOnce);
    let mut out = Vec::new();
    let state = a
        .broker
        .export_session(a.now, "mover", "b", &mut out)
        .unwrap();
    b.broker.import_session(b.now, state, &mut out);
    let mut connect = Connect::new(Protocol::V5, "mover");
    connect.clean_start = false;
    connect.keep_alive = 0;
    connect.properties.session_expiry_interval = Some(3600);
    let (moved, _) = b.connect_with(connect);
    // another client of b on the same filter must not get a second copy
    let other = b.connect(Protocol::V5, "other", true);
    b.subscribe(other, "m/#", QoS::AtLeastOnce);

    // a node that did not yet hear where the session went still forwards to a
    let p = a.connect(Protocol::V5, "p", true);
    a.publish(p, "m/1", "late", QoS::AtLeastOnce, false, 1);
    let f = forwards(&mut a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].target, Target::Session("mover".into()));
    assert_eq!(&*f[0].node, "b");
    let mut out = Vec::new();
    b.broker
        .publish_remote(b.now, (*f[0].msg).clone(), &f[0].target, &mut out);
    b.out.extend(out);
    assert_eq!(payloads(&b.packets(moved)), ["late"]);
    assert!(payloads(&b.packets(other)).is_empty());
    assert!(a.broker.clients().iter().all(|c| &*c.client_id != "mover"));

    // and so does what a third node forwarded to a by the routes it knew
    let mut out = Vec::new();
    let mut third = (*f[0].msg).clone();
    third.payload = bytes::Bytes::from_static(b"via a");
    a.broker
        .publish_remote(a.now, third, &Target::Plain, &mut out);
    let f = forwards(&mut a);
    assert_eq!(f.len(), 1, "a stub passes on messages from other nodes");
    assert_eq!(f[0].target, Target::Session("mover".into()));

    a.broker.forget_moved("mover");
    a.publish(p, "m/2", "after", QoS::AtLeastOnce, false, 2);
    assert!(forwards(&mut a).is_empty());
}

#[test]
fn a_message_that_overtakes_the_session_it_follows_waits_for_it() {
    let (mut a, mut b) = (node(), node());
    let c = a.connect(Protocol::V5, "mover", false);
    a.subscribe(c, "m/#", QoS::AtLeastOnce);
    let mut out = Vec::new();
    let state = a
        .broker
        .export_session(a.now, "mover", "b", &mut out)
        .unwrap();
    let p = a.connect(Protocol::V5, "p", true);
    a.publish(p, "m/1", "early", QoS::AtLeastOnce, false, 1);
    // the forward reaches b before the session does
    assert_eq!(carry(&mut a, &mut b), 1);
    let mut out = Vec::new();
    b.broker.import_session(b.now, state, &mut out);
    b.out.extend(out);
    let mut connect = Connect::new(Protocol::V5, "mover");
    connect.clean_start = false;
    connect.keep_alive = 0;
    connect.properties.session_expiry_interval = Some(3600);
    let (conn, ack) = b.connect_with(connect);
    assert!(ack.session_present);
    assert_eq!(payloads(&b.packets(conn)), ["early"]);
}

/// The queue mark: the oldest queue position a session here still holds a message from,
/// so that another node replaying this node's queue from there (should it die) misses
/// nothing a client has not acknowledged. A message no session keeps does not hold it.
#[test]
fn the_queue_mark_is_the_oldest_position_a_session_still_holds() {
    let (mut a, mut b) = (node(), node());
    let sub = b.connect(Protocol::V5, "sub", false);
    b.subscribe(sub, "q/#", QoS::AtLeastOnce);
    announce(&mut b, "b", &mut a);
    let publisher = a.connect(Protocol::V5, "pub", true);
    assert_eq!(
        b.broker.queue_mark(),
        None,
        "nothing taken from the queue yet"
    );

    let take = |a: &mut World, b: &mut World, topic: &str, seq: u64| {
        a.publish(publisher, topic, "x", QoS::AtLeastOnce, false, 1);
        let _ = a.packets(publisher);
        for f in forwards(a) {
            let mut out = Vec::new();
            b.broker
                .publish_remote_at(b.now, (*f.msg).clone(), &f.target, seq, &mut out);
            b.out.extend(out);
        }
    };
    take(&mut a, &mut b, "q/1", 5);
    take(&mut a, &mut b, "q/2", 6);
    let ids: Vec<u16> = publishes(&b.packets(sub))
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(b.broker.queue_mark(), Some(5), "both in flight");
    b.send(sub, Packet::PubAck(PubAck::new(ids[0])));
    assert_eq!(b.broker.queue_mark(), Some(6), "the first acknowledged");
    b.send(sub, Packet::PubAck(PubAck::new(ids[1])));
    assert_eq!(b.broker.queue_mark(), None, "both acknowledged");

    // offline: queued messages hold the mark until the client is back and acknowledges
    b.close(sub);
    take(&mut a, &mut b, "q/3", 9);
    assert_eq!(
        b.broker.queue_mark(),
        Some(9),
        "queued for the offline session"
    );
    let sub = b.connect(Protocol::V5, "sub", false);
    let ids: Vec<u16> = publishes(&b.packets(sub))
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(ids.len(), 1, "resumed and sent");
    assert_eq!(b.broker.queue_mark(), Some(9), "in flight");
    b.send(sub, Packet::PubAck(PubAck::new(ids[0])));
    assert_eq!(b.broker.queue_mark(), None);
}

/// A QoS 1 message comes twice from another node (fast over core NATS, and from the
/// JetStream queue), in either order: delivered once, and the queue position of the second
/// copy is held while the subscriber has the first.
#[test]
fn a_qos1_message_that_comes_two_ways_is_delivered_once_and_holds_its_queue_position() {
    let (mut a, mut b) = (node(), node());
    let sub = b.connect(Protocol::V5, "sub", false);
    b.subscribe(sub, "two/#", QoS::AtLeastOnce);
    announce(&mut b, "b", &mut a);
    let publisher = a.connect(Protocol::V5, "pub", true);
    for (i, fast_first) in [true, false].into_iter().enumerate() {
        a.publish(publisher, "two/x", "m", QoS::AtLeastOnce, false, 1);
        let _ = a.packets(publisher);
        let f = forwards(&mut a).remove(0);
        let mut msg = (*f.msg).clone();
        if let Some(o) = msg.origin.as_mut() {
            o.cluster_id = 100 + i as u64; // given by the sending node
        }
        let seq = 40 + i as u64;
        let order = if fast_first { [0, seq] } else { [seq, 0] };
        for at in order {
            let mut out = Vec::new();
            b.broker
                .publish_remote_at(b.now, msg.clone(), &f.target, at, &mut out);
            b.out.extend(out);
        }
        let got = publishes(&b.packets(sub));
        assert_eq!(got.len(), 1, "once (fast first: {fast_first})");
        assert_eq!(b.broker.queue_mark(), Some(seq), "held until acknowledged");
        b.send(sub, Packet::PubAck(PubAck::new(got[0].packet_id)));
        assert_eq!(b.broker.queue_mark(), None);
    }
}

/// One message can come for a node's plain subscribers and for one of its share group
/// members (same identity, two targets): both get it.
#[test]
fn one_message_for_plain_subscribers_and_a_share_group_reaches_both() {
    let mut b = node();
    let plain = b.connect(Protocol::V5, "plain", true);
    b.subscribe(plain, "g/#", QoS::AtLeastOnce);
    let member = b.connect(Protocol::V5, "member", true);
    b.subscribe(member, "$share/g/g/#", QoS::AtLeastOnce);
    let mut msg = crate::Message::new(TopicName::new("g/1").unwrap(), "x", QoS::AtLeastOnce, false);
    msg.origin = Some(crate::Origin {
        client_id: "p".into(),
        username: None,
        received_ms: 0,
        cluster_id: 7,
    });
    let group = Target::Group(std::sync::Arc::new(("g/#".into(), "g".into())));
    for target in [Target::Plain, group] {
        let mut out = Vec::new();
        b.broker
            .publish_remote_at(b.now, msg.clone(), &target, 0, &mut out);
        b.out.extend(out);
    }
    assert_eq!(publishes(&b.packets(plain)).len(), 1);
    assert_eq!(publishes(&b.packets(member)).len(), 1);
}
