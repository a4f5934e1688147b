//! Flow tests of the operator's entry points: cutting clients, re-checking subscriptions
//! against a changed authorizer, listing clients.

use std::sync::{Arc, Mutex};

use super::*;
use crate::{Authorizer, ClientInfo};

/// Allows subscribing only with the filters in the shared list (changed by the test).
#[derive(Debug)]
struct Filters(Arc<Mutex<Vec<String>>>);

impl Authorizer for Filters {
    fn can_subscribe(&self, _client: &ClientInfo<'_>, filter: &TopicFilter) -> bool {
        self.0.lock().unwrap().iter().any(|f| f == filter.as_str())
    }
}

fn connect_as(w: &mut World, v: Protocol, id: &str, user: &str) -> ConnId {
    let mut c = Connect::new(v, id);
    c.username = Some(user.into());
    let (conn, ack) = w.connect_with(c);
    assert_eq!(ack.reason, ReasonCode::SUCCESS);
    conn
}

#[test]
fn an_operator_cut_sends_0x98_to_v5_closes_3_1_1_and_spares_the_others() {
    let mut w = World::new();
    let v5 = connect_as(&mut w, Protocol::V5, "a", "dev1");
    let v3 = connect_as(&mut w, Protocol::V311, "b", "dev1");
    let other = connect_as(&mut w, Protocol::V5, "c", "dev2");
    let mut out = Vec::new();
    let n = w.broker.disconnect_clients(
        w.now,
        |_, u| u == Some("dev1"),
        ReasonCode::ADMINISTRATIVE_ACTION,
        &mut out,
    );
    w.out.extend(out);
    assert_eq!(n, 2);
    let (p, closed) = w.take(v5);
    assert!(closed);
    assert!(
        matches!(p.as_slice(), [Packet::Disconnect(d)] if d.reason == ReasonCode::ADMINISTRATIVE_ACTION),
        "{p:?}"
    );
    let (p, closed) = w.take(v3);
    assert!(closed && p.is_empty(), "{p:?}");
    let (p, closed) = w.take(other);
    assert!(!closed && p.is_empty());
    assert_eq!(w.broker.stats().clients_connected, 1);
    // by client id
    let mut out = Vec::new();
    let n = w.broker.disconnect_clients(
        w.now,
        |c, _| c == "c",
        ReasonCode::ADMINISTRATIVE_ACTION,
        &mut out,
    );
    assert_eq!(n, 1);
}

#[test]
fn a_narrowed_authorizer_drops_the_subscriptions_it_no_longer_allows() {
    let mut w = World::new();
    let allowed = Arc::new(Mutex::new(vec!["a/#".to_string(), "b/#".to_string()]));
    w.broker.set_authorizer(Box::new(Filters(allowed.clone())));
    let sub = connect_as(&mut w, Protocol::V5, "s", "dev1");
    let bystander = connect_as(&mut w, Protocol::V311, "t", "dev2");
    assert_eq!(
        w.subscribe(sub, "a/#", QoS::AtMostOnce),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        w.subscribe(sub, "b/#", QoS::AtMostOnce),
        ReasonCode::SUCCESS
    );
    assert_eq!(
        w.subscribe(bystander, "b/#", QoS::AtMostOnce),
        ReasonCode::SUCCESS
    );
    allowed.lock().unwrap().retain(|f| f == "a/#");
    assert_eq!(w.broker.recheck_subscriptions(|_, u| u == Some("dev1")), 1);
    let publisher = w.connect(Protocol::V311, "p", true);
    w.publish(publisher, "b/x", "1", QoS::AtMostOnce, false, 0);
    w.publish(publisher, "a/x", "2", QoS::AtMostOnce, false, 0);
    let got: Vec<String> = publishes(&w.packets(sub))
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect();
    assert_eq!(got, vec!["a/x".to_string()]);
    // the session the recheck did not select keeps its subscription
    assert_eq!(publishes(&w.packets(bystander)).len(), 1);
    let summary = w
        .broker
        .clients()
        .into_iter()
        .find(|c| c.client_id == "s")
        .unwrap();
    assert_eq!(summary.subscriptions.len(), 1);
    assert_eq!(summary.username.as_deref(), Some("dev1"));
    assert!(summary.connected && !summary.internal);
}

#[test]
fn retained_messages_are_listed_and_cleared_one_or_a_subtree_at_a_time() {
    let mut w = World::new();
    let p = w.connect(Protocol::V311, "p", true);
    for t in ["a/1", "a/2", "a/b/3", "c"] {
        w.publish(p, t, "v", QoS::AtMostOnce, true, 0);
    }
    let all = TopicFilter::new("#").unwrap();
    let topics = |w: &World| -> Vec<String> {
        w.broker
            .retained_matching(&all, w.now, 100)
            .iter()
            .map(|m| m.topic.as_str().to_owned())
            .collect()
    };
    assert_eq!(topics(&w), vec!["a/1", "a/2", "a/b/3", "c"]);
    assert_eq!(w.broker.retained_matching(&all, w.now, 2).len(), 2);
    assert_eq!(
        w.broker
            .clear_retained(&TopicFilter::new("a/1").unwrap(), w.now),
        1
    );
    assert_eq!(
        w.broker
            .clear_retained(&TopicFilter::new("a/#").unwrap(), w.now),
        2
    );
    assert_eq!(topics(&w), vec!["c"]);
    // a new subscriber gets only what is left
    let s = w.connect(Protocol::V311, "s", true);
    w.subscribe(s, "#", QoS::AtMostOnce);
    assert_eq!(publishes(&w.packets(s)).len(), 1);
}

#[test]
fn a_discarded_session_loses_its_subscriptions_and_queue() {
    let mut w = World::new();
    let s = w.connect(Protocol::V5, "keep", false);
    w.subscribe(s, "t", QoS::AtLeastOnce);
    w.close(s);
    let p = w.connect(Protocol::V311, "p", true);
    w.publish(p, "t", "queued", QoS::AtLeastOnce, false, 1);
    let offline = w
        .broker
        .clients()
        .into_iter()
        .find(|c| c.client_id == "keep")
        .unwrap();
    assert!(!offline.connected);
    assert_eq!(offline.queued, 1);
    let mut out = Vec::new();
    assert!(w.broker.discard_session(w.now, "keep", &mut out));
    assert!(!w.broker.discard_session(w.now, "keep", &mut out));
    assert!(w.broker.clients().iter().all(|c| c.client_id != "keep"));
    // back with clean start 0: no session, nothing queued
    let mut c = Connect::new(Protocol::V5, "keep");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(3600);
    let (conn, ack) = w.connect_with(c);
    assert!(!ack.session_present);
    assert!(publishes(&w.packets(conn)).is_empty());
}

#[test]
fn the_counts_keep_internal_clients_and_sys_topics_apart() {
    let mut w = World::new();
    let user = w.connect(Protocol::V311, "user", true);
    let internal = w.open();
    w.broker.set_internal(internal);
    w.send(
        internal,
        Packet::Connect(Box::new(Connect::new(Protocol::V5, "$midge/hub"))),
    );
    w.publish(user, "a", "1", QoS::AtMostOnce, true, 0);
    w.publish_internal("$SYS/broker/uptime", "1");
    let msg = crate::Message::new(
        TopicName::new("$SYS/broker/version").unwrap(),
        "x",
        QoS::AtMostOnce,
        true,
    );
    let mut out = Vec::new();
    w.broker.publish(w.now, msg, &mut out);
    let s = w.broker.stats();
    assert_eq!((s.clients_connected, s.clients_internal), (2, 1));
    assert_eq!((s.retained, s.retained_sys), (2, 1));
}
