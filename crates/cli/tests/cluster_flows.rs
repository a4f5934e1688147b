//! The single-node flows that make sense for a cluster, run with the clients spread over the
//! nodes of one 3-node midge cluster on a 3-server NATS JetStream cluster (issue 16's
//! "the flow tests that make sense for one node run with clients spread over nodes").
//!
//! A cluster start costs seconds, so each test starts one cluster and runs many flows on
//! it: QoS 0/1/2 in every publish/subscribe combination (delivered at the lower QoS),
//! per-publisher order at QoS 1 and 2, wildcards and `$` topics, overlapping subscriptions
//! (one delivery, every MQTT 5 subscription identifier), no local, unsubscribe, the
//! subscriber's maximum packet size; retained messages set, replaced and cleared from
//! different nodes, retain as published, retain handling 0/1/2, none for a shared
//! subscription, expired ones not sent; persistent sessions resumed on another node with
//! what was queued while offline (MQTT 5 properties and the message expiry counted down on
//! the way), clean start, live messages right after the move once; wills (none after a
//! normal DISCONNECT, once after a dropped connection or DISCONNECT 0x04, retained wills);
//! shared subscriptions with members on every node, and what a member that leaves did not
//! acknowledge going to a member on another node. Clients: the
//! midge client crate, raw sockets, Python paho (3.1.1 and 5), mosquitto_pub/sub, mixed
//! 3.1.1 and 5. Every wait is bounded; nothing asserts on timing. The nextest group
//! `cluster` runs these one at a time (each starts six processes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use midge_client::codec::bytestring::ByteString;
use midge_client::codec::{
    Disconnect, LastWill, Publish, ReasonCode, RetainHandling, SubscriptionOptions, TopicName,
};
use midge_client::{ClientOptions, Event, QoS};
use serde_json::Value;

use crate::common::mq::{How, Mq, V5, msg, runtime};
use crate::common::nats::MidgeCluster;
use crate::common::{ConnectOpts, Proc, Raw, py_dir, run, unique};

fn qos_num(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// (topic, payload as text, QoS, retain) of each message, for exact comparisons.
fn seen(got: &[Publish]) -> Vec<(String, String, u8, bool)> {
    got.iter()
        .map(|m| {
            (
                m.topic.as_str().to_owned(),
                String::from_utf8_lossy(&m.payload).into_owned(),
                qos_num(m.qos),
                m.retain,
            )
        })
        .collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn row(t: &str, p: &str, q: u8, r: bool) -> (String, String, u8, bool) {
    (t.to_owned(), p.to_owned(), q, r)
}

/// The number of filters `node` announces, once every node's view of it agrees with its
/// own (10 s at most): a mark that an announcement still on its way cannot move.
fn settled_filters(cl: &MidgeCluster, node: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let own = cl.filters_seen(node, node);
        let views: Vec<u64> = (0..cl.nodes.len())
            .map(|a| cl.filters_seen(a, node))
            .collect();
        if views.iter().all(|v| *v == own) {
            return cl.filters(node);
        }
        if Instant::now() >= deadline {
            // on stderr, shown with a failure
            eprintln!(
                "settled_filters: views of {} still differ after 10 s: own {own}, views {views:?}",
                cl.names[node]
            );
            return cl.filters(node);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Subscribe `c` (on node `node`) to a filter no other client of that node holds, and wait
/// until every node knows it (so a publish anywhere reaches it).
fn sub_on(
    cl: &MidgeCluster,
    node: usize,
    c: &mut Mq,
    filter: &str,
    opts: SubscriptionOptions,
    id: Option<u32>,
) {
    let mark = settled_filters(cl, node);
    let rc = c.subscribe_opts(filter, opts, id);
    assert_eq!(
        rc,
        vec![qos_num(opts.qos)],
        "SUBACK for {filter:?} on {}",
        cl.names[node]
    );
    cl.wait_filters(node, mark + 1);
}

fn sub_q(cl: &MidgeCluster, node: usize, c: &mut Mq, filter: &str, qos: QoS) {
    sub_on(cl, node, c, filter, SubscriptionOptions::qos(qos), None);
}

/// What a fresh 3.1.1 client subscribing `filter` on `node` gets as retained messages:
/// retried (10 s at most) until it is `want` (the retained store of a node follows a
/// JetStream stream, so a publish on another node shows up there shortly after its PUBACK).
fn expect_retained(
    cl: &MidgeCluster,
    rt: &tokio::runtime::Runtime,
    node: usize,
    filter: &str,
    want: &[(String, String, u8, bool)],
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = Mq::v311(rt, cl.port(node), &unique("probe"));
        s.subscribe(filter, QoS::AtLeastOnce);
        let mut got = s.messages(want.len(), Duration::from_millis(1500));
        got.extend(s.drain(Duration::from_millis(200)));
        s.disconnect();
        let got = sorted(seen(&got));
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "retained on {} for {filter:?}: got {got:?}, want {want:?}\n{}",
            cl.names[node],
            cl.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn paho(args: &[&str]) -> Value {
    let script = py_dir().join("cluster_flows_paho.py");
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    let done = run("python3", &all, Duration::from_secs(30));
    let last = done.stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "paho {args:?}: exit {:?}\n{}\n{}",
            done.code, done.stdout, done.stderr
        )
    })
}

/// (topic, payload hex, qos, retain) of a paho JSON message list.
fn paho_msgs(v: &Value) -> Vec<(String, String, u64, bool)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a message list: {v}"))
        .iter()
        .map(|m| {
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["payload"].as_str().unwrap().to_owned(),
                m["qos"].as_u64().unwrap(),
                m["retain"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// One topic space
// ---------------------------------------------------------------------------------------

/// Publishers on n1 (MQTT 5 and 3.1.1) and subscribers on n2 (MQTT 5) and n3 (3.1.1):
/// every publish QoS × subscription QoS delivers once at the lower of the two; 100
/// messages of one publisher at QoS 1 and at QoS 2 arrive in publish order; `#` and `+`
/// match across nodes but never a `$` topic; overlapping subscriptions of one client give
/// one delivery at the highest granted QoS with every matching subscription identifier;
/// no local holds for a client whose message also goes to other nodes; an unsubscribe
/// stops delivery while other subscribers keep theirs; paho (3.1.1) and mosquitto_sub
/// subscribers see the same.
#[test]
fn topic_space_flows_with_clients_spread_over_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();

    // --- every publish QoS x subscription QoS ---
    let mut subs: Vec<(String, u8, Mq)> = Vec::new();
    for s in 0..3u8 {
        // qm/# is a new filter on n2 and n3 for the first of each (the others share it)
        let sub = |cl: &MidgeCluster, node: usize, c: &mut Mq| {
            if s == 0 {
                sub_q(cl, node, c, "qm/#", qos_of(s));
            } else {
                assert_eq!(c.subscribe("qm/#", qos_of(s)), vec![s]);
            }
        };
        let mut a = Mq::v5(&rt, cl.port(1), &unique(&format!("q5-{s}")));
        sub(&cl, 1, &mut a);
        subs.push((format!("n2 MQTT 5 sub QoS {s}"), s, a));
        let mut b = Mq::v311(&rt, cl.port(2), &unique(&format!("q3-{s}")));
        sub(&cl, 2, &mut b);
        subs.push((format!("n3 3.1.1 sub QoS {s}"), s, b));
    }
    // paho 3.1.1 on n3 as a persistent subscriber is covered below; here mosquitto_sub (5)
    let mark = cl.filters(2);
    let mosq = Proc::spawn(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &cl.port(2).to_string(),
            "-V",
            "mqttv5",
            "-t",
            "qm/mosq/#",
            "-q",
            "2",
            "-C",
            "3",
            "-W",
            "30",
            "-v",
        ],
    );
    cl.wait_filters(2, mark + 1);

    let mut p5 = Mq::v5(&rt, cl.port(0), &unique("p5"));
    let mut p3 = Mq::v311(&rt, cl.port(0), &unique("p3"));
    for q in 0..3u8 {
        p5.publish(
            &format!("qm/v5/{q}"),
            format!("from v5 at {q}").as_bytes(),
            qos_of(q),
            false,
        );
        p3.publish(
            &format!("qm/v3/{q}"),
            format!("from 3.1.1 at {q}").as_bytes(),
            qos_of(q),
            false,
        );
    }
    for (name, s, c) in &mut subs {
        let got = c.exactly(6, Duration::from_millis(300));
        let mut want = Vec::new();
        for q in 0..3u8 {
            let d = q.min(*s);
            want.push(row(
                &format!("qm/v5/{q}"),
                &format!("from v5 at {q}"),
                d,
                false,
            ));
            want.push(row(
                &format!("qm/v3/{q}"),
                &format!("from 3.1.1 at {q}"),
                d,
                false,
            ));
        }
        assert_eq!(sorted(seen(&got)), sorted(want), "{name}\n{}", cl.logs());
        assert!(
            got.iter().all(|m| !m.dup),
            "{name}: DUP set on a first delivery"
        );
    }
    // mosquitto_pub (3.1.1 and 5) on n1 at each QoS -> mosquitto_sub (5) on n3
    for (q, v) in [("0", "mqttv311"), ("1", "mqttv5"), ("2", "mqttv311")] {
        let done = run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &cl.port(0).to_string(),
                "-V",
                v,
                "-t",
                &format!("qm/mosq/{q}"),
                "-q",
                q,
                "-m",
                &format!("mosquitto {v} {q}"),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(done.code, Some(0), "mosquitto_pub -q {q}: {done:?}");
    }
    let done = mosq.finish(Duration::from_secs(30));
    assert_eq!(
        done.code,
        Some(0),
        "mosquitto_sub on n3: {done:?}\n{}",
        cl.logs()
    );
    assert_eq!(
        sorted(done.stdout.lines().map(str::to_owned).collect()),
        vec![
            "qm/mosq/0 mosquitto mqttv311 0".to_owned(),
            "qm/mosq/1 mosquitto mqttv5 1".to_owned(),
            "qm/mosq/2 mosquitto mqttv311 2".to_owned(),
        ]
    );
    for (name, _, c) in &mut subs {
        // mosquitto's three also matched qm/#
        let got = c.exactly(3, Duration::from_millis(200));
        assert_eq!(
            got.len(),
            3,
            "{name}: mosquitto_pub's messages {:?}",
            seen(&got)
        );
    }

    // --- order per publisher at QoS 1 and 2 (several in flight at once) ---
    let mut o5 = Mq::v5(&rt, cl.port(1), &unique("ord5"));
    sub_q(&cl, 1, &mut o5, "ord/#", QoS::ExactlyOnce);
    let mut o3 = Mq::v311(&rt, cl.port(2), &unique("ord3"));
    sub_q(&cl, 2, &mut o3, "ord/+", QoS::AtLeastOnce);
    let n = 100;
    for (p, topic, qos) in [
        (&mut p5, "ord/one", QoS::AtLeastOnce),
        (&mut p3, "ord/two", QoS::ExactlyOnce),
    ] {
        for i in 0..n {
            let m = msg(topic, format!("{i}").as_bytes(), qos, false);
            let c = p.client.clone();
            rt.block_on(async move { c.publish_packet(m).await.unwrap() });
        }
    }
    for p in [&mut p5, &mut p3] {
        for k in 0..n {
            match p.wait(Duration::from_secs(20), |e| {
                matches!(e, Event::Published { .. })
            }) {
                Some(Event::Published { reason, .. }) => assert!(reason.0 < 0x80, "ack {reason:?}"),
                _ => panic!("{k} of {n} publishes acknowledged within 20 s"),
            }
        }
    }
    for (name, c, q2) in [("n2 MQTT 5", &mut o5, 2u8), ("n3 3.1.1", &mut o3, 1)] {
        let got = c.exactly(2 * n, Duration::from_millis(300));
        for (topic, q) in [("ord/one", 1u8), ("ord/two", 2)] {
            let seq: Vec<String> = got
                .iter()
                .filter(|m| m.topic.as_str() == topic)
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
                .collect();
            let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            assert_eq!(seq, want, "{name}: {topic} complete, once, in order");
            assert!(
                got.iter()
                    .filter(|m| m.topic.as_str() == topic)
                    .all(|m| qos_num(m.qos) == q.min(q2)),
                "{name}: {topic} QoS"
            );
        }
    }

    // --- wildcards and $ topics ---
    let mut all = Mq::v311(&rt, cl.port(1), &unique("all"));
    sub_q(&cl, 1, &mut all, "#", QoS::AtLeastOnce);
    let mut plus = Mq::v5(&rt, cl.port(2), &unique("plus"));
    sub_q(&cl, 2, &mut plus, "+/+/c", QoS::AtLeastOnce);
    let mut dollar = Mq::v5(&rt, cl.port(2), &unique("dollar"));
    sub_q(&cl, 2, &mut dollar, "$app/#", QoS::AtLeastOnce);
    let mut dplus = Mq::v311(&rt, cl.port(1), &unique("dplus"));
    sub_q(&cl, 1, &mut dplus, "$app/+/c", QoS::AtLeastOnce);
    let topics = ["w/b/c", "w/b/c/d", "w/x", "$app/b/c", "$app/x", "w", "wf"];
    for t in topics {
        p5.publish(t, t.as_bytes(), QoS::AtLeastOnce, false);
    }
    let names = |got: &[Publish]| -> Vec<String> {
        sorted(got.iter().map(|m| m.topic.as_str().to_owned()).collect())
    };
    let got = all.until("wf");
    assert_eq!(
        names(&got),
        vec!["w", "w/b/c", "w/b/c/d", "w/x", "wf"],
        "'#' on n2 (no $ topic)"
    );
    let got = plus.exactly(1, Duration::from_millis(300));
    assert_eq!(names(&got), vec!["w/b/c"], "'+/+/c' on n3 (not $app/b/c)");
    let got = dollar.exactly(2, Duration::from_millis(100));
    assert_eq!(names(&got), vec!["$app/b/c", "$app/x"], "'$app/#' on n3");
    let got = dplus.exactly(1, Duration::from_millis(100));
    assert_eq!(names(&got), vec!["$app/b/c"], "'$app/+/c' on n2");

    // --- unsubscribe stops delivery; the others on the same node keep theirs ---
    let mut keep = Mq::v5(&rt, cl.port(1), &unique("keep"));
    sub_q(&cl, 1, &mut keep, "w/#", QoS::AtLeastOnce);
    let before = settled_filters(&cl, 1);
    all.unsubscribe("#");
    let deadline = Instant::now() + Duration::from_secs(15);
    while cl.filters(1) >= before {
        assert!(
            Instant::now() < deadline,
            "n2's filter count did not drop after the unsubscribe of '#'"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sub_q(&cl, 1, &mut all, "fence/all", QoS::AtLeastOnce);
    p5.publish("w/after", b"only keep", QoS::AtLeastOnce, false);
    p5.publish("fence/all", b"fence", QoS::AtLeastOnce, false);
    let got = all.until("fence/all");
    assert_eq!(
        names(&got),
        vec!["fence/all"],
        "'#' unsubscribed on n2 still delivered"
    );
    let got = keep.exactly(1, Duration::from_millis(100));
    assert_eq!(
        seen(&got),
        vec![row("w/after", "only keep", 1, false)],
        "the other n2 subscriber lost its messages when one unsubscribed"
    );

    // --- overlapping subscriptions: one delivery, every subscription identifier ---
    let mut ov = Mq::v5(&rt, cl.port(2), &unique("ov"));
    sub_on(
        &cl,
        2,
        &mut ov,
        "ov/#",
        SubscriptionOptions::qos(QoS::AtMostOnce),
        Some(1),
    );
    sub_on(
        &cl,
        2,
        &mut ov,
        "ov/+/x",
        SubscriptionOptions::qos(QoS::ExactlyOnce),
        Some(2),
    );
    sub_on(
        &cl,
        2,
        &mut ov,
        "ov/a/x",
        SubscriptionOptions::qos(QoS::AtLeastOnce),
        Some(3),
    );
    let mut ov3 = Mq::v311(&rt, cl.port(1), &unique("ov3"));
    sub_q(&cl, 1, &mut ov3, "ov/#", QoS::AtMostOnce);
    sub_q(&cl, 1, &mut ov3, "ov/+/x", QoS::AtLeastOnce);
    let mut m = msg("ov/a/x", b"all three", QoS::ExactlyOnce, false);
    m.properties.user_properties = vec![(ByteString::from("k"), ByteString::from("v"))];
    p5.send(m);
    p5.publish("ov/b/x", b"two", QoS::ExactlyOnce, false);
    p5.publish("ov/c", b"one", QoS::ExactlyOnce, false);
    let got = ov.exactly(3, Duration::from_millis(500));
    let by: BTreeMap<String, (u8, Vec<u32>, usize)> =
        got.iter().fold(BTreeMap::new(), |mut acc, m| {
            let e = acc
                .entry(m.topic.as_str().to_owned())
                .or_insert((0, Vec::new(), 0));
            e.0 = qos_num(m.qos);
            e.1 = sorted(m.properties.subscription_identifiers.clone());
            e.2 += 1;
            acc
        });
    let want: BTreeMap<String, (u8, Vec<u32>, usize)> = [
        ("ov/a/x".to_owned(), (2, vec![1, 2, 3], 1)),
        ("ov/b/x".to_owned(), (2, vec![1, 2], 1)),
        ("ov/c".to_owned(), (0, vec![1], 1)),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        by, want,
        "overlapping subscriptions on n3: (QoS, subscription identifiers, deliveries) per topic"
    );
    let got = ov3.exactly(3, Duration::from_millis(100));
    assert_eq!(
        sorted(seen(&got)),
        vec![
            row("ov/a/x", "all three", 1, false),
            row("ov/b/x", "two", 1, false),
            row("ov/c", "one", 0, false),
        ],
        "overlapping subscriptions of a 3.1.1 client on n2"
    );

    // --- a message larger than the subscriber's maximum packet size is not sent to it ---
    let mut small = Mq::connect_with(&rt, cl.port(1), &unique("mps"), V5, |o| {
        o.connect.properties.maximum_packet_size = Some(64);
    });
    sub_q(&cl, 1, &mut small, "mps/#", QoS::AtLeastOnce);
    p5.publish("mps/big", &[b'x'; 100], QoS::AtLeastOnce, false);
    p5.publish("mps/small", b"small", QoS::AtLeastOnce, false);
    let got = small.until("mps/small");
    assert_eq!(
        seen(&got),
        vec![row("mps/small", "small", 1, false)],
        "maximum packet size 64 on n2: the 100-byte message from n1 is not sent"
    );

    // --- no local, with the message also going to other nodes ---
    let mut nl = Mq::v5(&rt, cl.port(1), &unique("nl"));
    let no_local = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        ..Default::default()
    };
    sub_on(&cl, 1, &mut nl, "nl/#", no_local, None);
    sub_q(&cl, 1, &mut nl, "nlf/#", QoS::AtLeastOnce);
    let mut other = Mq::v311(&rt, cl.port(2), &unique("nl-other"));
    sub_q(&cl, 2, &mut other, "nl/#", QoS::AtLeastOnce);
    p5.publish("nl/from-n1", b"not own", QoS::AtLeastOnce, false);
    let got = nl.messages(1, Duration::from_secs(10));
    assert_eq!(
        seen(&got),
        vec![row("nl/from-n1", "not own", 1, false)],
        "no local on n2: another client's message from n1"
    );
    nl.publish("nl/own", b"own", QoS::AtLeastOnce, false);
    nl.publish("nl/own2", b"own at 2", QoS::ExactlyOnce, false);
    nl.publish("nlf/fence", b"fence", QoS::AtLeastOnce, false);
    let got = nl.until("nlf/fence");
    assert_eq!(
        seen(&got),
        vec![row("nlf/fence", "fence", 1, false)],
        "no local on n2: its own messages must not come back (also not via another node)"
    );
    let got = other.exactly(3, Duration::from_millis(300));
    assert_eq!(
        sorted(seen(&got)),
        vec![
            row("nl/from-n1", "not own", 1, false),
            row("nl/own", "own", 1, false),
            row("nl/own2", "own at 2", 1, false),
        ],
        "n3 gets what the no-local client published on n2"
    );
    assert!(
        nl.drain(Duration::from_millis(200)).is_empty(),
        "no local: late echo"
    );
}

// ---------------------------------------------------------------------------------------
// Retained messages
// ---------------------------------------------------------------------------------------

/// A retained message set on n1 reaches new subscribers on n2 and n3 (with its MQTT 5
/// properties), is replaced from n3 and cleared with an empty payload from n2 for every
/// node; the clearing publish still reaches live subscribers. Retain as published keeps
/// the flag on a live delivery from another node (and only there); retain handling 0, 1 and
/// 2 on a node that did not receive the publish (midge client and paho); mosquitto_pub -r
/// on one node and mosquitto_sub on another.
#[test]
fn retained_flows_with_clients_spread_over_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();

    // live subscribers, retain as published or not
    let rap_opts = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_as_published: true,
        ..Default::default()
    };
    let mut rap = Mq::v5(&rt, cl.port(2), &unique("rap"));
    sub_on(&cl, 2, &mut rap, "rt/#", rap_opts, None);
    let mut plain = Mq::v5(&rt, cl.port(1), &unique("plain"));
    sub_q(&cl, 1, &mut plain, "rt/#", QoS::AtLeastOnce);
    let mut old = Mq::v311(&rt, cl.port(1), &unique("old"));
    assert_eq!(old.subscribe("rt/#", QoS::AtLeastOnce), vec![1]);

    // set on n1, with properties
    let mut p1 = Mq::v5(&rt, cl.port(0), &unique("p1"));
    let mut m = msg("rt/a", b"one", QoS::AtLeastOnce, true);
    m.properties.content_type = Some(ByteString::from("text/plain"));
    m.properties.user_properties = vec![
        (ByteString::from("b"), ByteString::from("2")),
        (ByteString::from("a"), ByteString::from("1")),
    ];
    p1.send(m);
    p1.publish("rt/live", b"not retained", QoS::AtLeastOnce, false);
    let got = rap.exactly(2, Duration::from_millis(200));
    assert_eq!(
        sorted(seen(&got)),
        vec![
            row("rt/a", "one", 1, true),
            row("rt/live", "not retained", 1, false)
        ],
        "retain as published on n3: the flag as the publisher set it"
    );
    for (name, c) in [("n2 MQTT 5", &mut plain), ("n2 3.1.1", &mut old)] {
        let got = c.exactly(2, Duration::from_millis(100));
        assert_eq!(
            sorted(seen(&got)),
            vec![
                row("rt/a", "one", 1, false),
                row("rt/live", "not retained", 1, false)
            ],
            "{name} without retain as published: a live delivery has retain 0"
        );
    }

    // a new subscriber on every node gets it retained, with its properties (on the node
    // that took the publish too)
    for node in [1, 2, 0] {
        expect_retained(&cl, &rt, node, "rt/+", &[row("rt/a", "one", 1, true)]);
    }
    let mut late = Mq::v5(&rt, cl.port(2), &unique("late"));
    late.subscribe("rt/a", QoS::ExactlyOnce);
    let got = late.exactly(1, Duration::from_millis(100));
    assert_eq!(seen(&got), vec![row("rt/a", "one", 1, true)]);
    assert_eq!(
        got[0].properties.content_type.as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        got[0].properties.user_properties[..2],
        [
            (ByteString::from("b"), ByteString::from("2")),
            (ByteString::from("a"), ByteString::from("1")),
        ],
        "user properties of a retained message from another node, in order"
    );

    // retain handling on n2 and n3 (midge client): 0 on every subscribe, 1 only for a new
    // subscription, 2 never
    for node in [1, 2] {
        let rh = |h: RetainHandling| SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            retain_handling: h,
            ..Default::default()
        };
        let mut c0 = Mq::v5(&rt, cl.port(node), &unique("rh0"));
        c0.subscribe_opts("rt/a", rh(RetainHandling::SendAtSubscribe), None);
        c0.subscribe_opts("rt/a", rh(RetainHandling::SendAtSubscribe), None);
        let mut c1 = Mq::v5(&rt, cl.port(node), &unique("rh1"));
        c1.subscribe_opts("rt/a", rh(RetainHandling::SendIfNew), None);
        c1.subscribe_opts("rt/a", rh(RetainHandling::SendIfNew), None);
        let mut c2 = Mq::v5(&rt, cl.port(node), &unique("rh2"));
        c2.subscribe_opts("rt/a", rh(RetainHandling::DoNotSend), None);
        let n0 = c0.exactly(2, Duration::from_millis(400));
        let n1 = c1.drain(Duration::from_millis(100));
        let n2 = c2.drain(Duration::from_millis(100));
        let one = row("rt/a", "one", 1, true);
        assert_eq!(
            (seen(&n0), seen(&n1), seen(&n2)),
            (vec![one.clone(), one.clone()], vec![one], vec![]),
            "retain handling 0 / 1 / 2 on {}",
            cl.names[node]
        );
    }
    // paho on n3
    let v = paho(&["retain-handling", &cl.port(2).to_string(), "rt/a"]);
    let one = ("rt/a".to_owned(), hex(b"one"), 1, true);
    assert_eq!(
        paho_msgs(&v["rh0"]),
        vec![one.clone(), one.clone()],
        "paho rh0: {v}"
    );
    assert_eq!(paho_msgs(&v["rh1_new"]), vec![one], "paho rh1 new: {v}");
    assert_eq!(paho_msgs(&v["rh1_existing"]), vec![], "paho rh1 again: {v}");
    assert_eq!(paho_msgs(&v["rh2"]), vec![], "paho rh2: {v}");

    // replaced from n3 at QoS 2, seen from n1 and n2
    let mut p3 = Mq::v311(&rt, cl.port(2), &unique("p3"));
    p3.publish("rt/a", b"two", QoS::ExactlyOnce, true);
    expect_retained(&cl, &rt, 0, "rt/#", &[row("rt/a", "two", 1, true)]);
    expect_retained(&cl, &rt, 1, "rt/a", &[row("rt/a", "two", 1, true)]);

    // a second retained topic from n2, then rt/a cleared from n2 (empty payload)
    let mut p2 = Mq::v5(&rt, cl.port(1), &unique("p2"));
    p2.publish("rt/b", b"bee", QoS::AtMostOnce, true);
    p2.publish("rt/a", b"", QoS::AtLeastOnce, true);
    for node in [0, 2, 1] {
        expect_retained(&cl, &rt, node, "rt/#", &[row("rt/b", "bee", 0, true)]);
    }
    // live subscribers got the replacement, rt/b and the empty clearing message
    // (QoS 0 and QoS 1 from one publisher take different paths between nodes: any order)
    let got = rap.exactly(3, Duration::from_millis(300));
    assert_eq!(
        sorted(seen(&got)),
        vec![
            row("rt/a", "", 1, true),
            row("rt/a", "two", 1, true),
            row("rt/b", "bee", 0, true)
        ],
        "retain as published on n3: replacement, new topic, clearing message"
    );
    let got = old.exactly(3, Duration::from_millis(100));
    assert_eq!(
        sorted(seen(&got)),
        vec![
            row("rt/a", "", 1, false),
            row("rt/a", "two", 1, false),
            row("rt/b", "bee", 0, false)
        ],
        "3.1.1 on n2"
    );

    // a shared subscription gets no retained message at its subscribe; a plain one does
    p1.publish("rs/a", b"kept", QoS::AtLeastOnce, true);
    expect_retained(&cl, &rt, 2, "rs/#", &[row("rs/a", "kept", 1, true)]);
    let mut member = Mq::v5(&rt, cl.port(2), &unique("rs-member"));
    sub_q(&cl, 2, &mut member, "$share/g/rs/#", QoS::AtLeastOnce);
    p1.publish("rs/fence", b"fence", QoS::AtLeastOnce, false);
    let got = member.until("rs/fence");
    assert_eq!(
        seen(&got),
        vec![row("rs/fence", "fence", 1, false)],
        "a shared subscription on n3 got a retained message"
    );

    // an expired retained message is not sent; another carries what is left of its expiry
    let mut short = msg("rx/short", b"short", QoS::AtLeastOnce, true);
    short.properties.message_expiry_interval = Some(1);
    p1.send(short);
    let mut long = msg("rx/long", b"long", QoS::AtLeastOnce, true);
    long.properties.message_expiry_interval = Some(100);
    p1.send(long);
    // at least 2 s: rx/short expires
    std::thread::sleep(Duration::from_secs(2));
    expect_retained(&cl, &rt, 1, "rx/#", &[row("rx/long", "long", 1, true)]);
    let mut rx = Mq::v5(&rt, cl.port(2), &unique("rx"));
    rx.subscribe("rx/#", QoS::AtLeastOnce);
    let got = rx.exactly(1, Duration::from_millis(300));
    assert_eq!(
        seen(&got),
        vec![row("rx/long", "long", 1, true)],
        "retained on n3"
    );
    let left = got[0]
        .properties
        .message_expiry_interval
        .expect("expiry kept");
    assert!(
        (1..=98).contains(&left),
        "retained expiry counted down: {left}"
    );

    // mosquitto_pub -r on n3, mosquitto_sub on n1 (3.1.1) and n2 (5)
    let done = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &cl.port(2).to_string(),
            "-t",
            "rt/mosq",
            "-q",
            "1",
            "-r",
            "-m",
            "kept",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(done.code, Some(0), "mosquitto_pub -r: {done:?}");
    expect_retained(&cl, &rt, 0, "rt/mosq", &[row("rt/mosq", "kept", 1, true)]);
    expect_retained(&cl, &rt, 1, "rt/mosq", &[row("rt/mosq", "kept", 1, true)]);
    for (node, v) in [(0, "mqttv311"), (1, "mqttv5")] {
        let done = run(
            "mosquitto_sub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &cl.port(node).to_string(),
                "-V",
                v,
                "-t",
                "rt/#",
                "--retained-only",
                "-C",
                "2",
                "-W",
                "10",
                "-v",
                "-q",
                "1",
            ],
            Duration::from_secs(15),
        );
        assert_eq!(
            done.code,
            Some(0),
            "mosquitto_sub on {}: {done:?}",
            cl.names[node]
        );
        assert_eq!(
            sorted(done.stdout.lines().map(str::to_owned).collect()),
            vec!["rt/b bee".to_owned(), "rt/mosq kept".to_owned()],
            "mosquitto_sub --retained-only on {}",
            cl.names[node]
        );
    }
    let done = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &cl.port(1).to_string(),
            "-t",
            "rt/mosq",
            "-q",
            "1",
            "-r",
            "-n",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(done.code, Some(0), "mosquitto_pub -r -n: {done:?}");
    for node in [2, 0] {
        expect_retained(&cl, &rt, node, "rt/#", &[row("rt/b", "bee", 0, true)]);
    }
}

// ---------------------------------------------------------------------------------------
// Sessions, wills, shared subscriptions
// ---------------------------------------------------------------------------------------

/// Persistent sessions made on one node resume on another with what was published while
/// they were offline (MQTT 5 midge client with every message property and the expiry
/// counted down; paho 3.1.1; mosquitto_sub -c), clean start drops the session; wills: none
/// after a normal DISCONNECT, once on other nodes after a dropped connection (raw 3.1.1,
/// paho 5) or DISCONNECT 0x04, a retained will seen from every node; a shared subscription
/// with members on the three nodes and two groups gives each message once per group.
#[test]
fn session_will_and_shared_flows_with_clients_spread_over_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();

    // --- persistent sessions, offline queue, properties, expiry ---
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(300),
    };
    let id5 = unique("roam5");
    let mut s = Mq::connect(&rt, cl.port(0), &id5, how);
    assert!(!s.connack.session_present, "a new session");
    sub_q(&cl, 0, &mut s, "sq/#", QoS::ExactlyOnce);
    s.disconnect();
    let id3 = unique("roam3");
    let mark = settled_filters(&cl, 1);
    let v = paho(&["session", &cl.port(1).to_string(), &id3, "sq/#", "1"]);
    assert_eq!(v["present"], false, "paho: {v}");
    assert_eq!(v["suback"], serde_json::json!([1]), "paho: {v}");
    cl.wait_filters(1, mark + 1);
    let idm = unique("roamm");
    let mark = settled_filters(&cl, 2);
    let done = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &cl.port(2).to_string(),
            "-V",
            "mqttv5",
            "-x",
            "300",
            "-c",
            "-i",
            &idm,
            "-t",
            "sq/#",
            "-q",
            "1",
            "-E",
        ],
        Duration::from_secs(15),
    );
    assert_eq!(done.code, Some(0), "mosquitto_sub -c -E: {done:?}");
    // the offline sessions' filters stay announced
    cl.wait_filters(2, mark + 1);

    let mut pb = Mq::v5(&rt, cl.port(1), &unique("pb"));
    for i in 0..5 {
        pb.publish(
            "sq/x",
            format!("q1-{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
    }
    pb.publish("sq/y", b"q2", QoS::ExactlyOnce, false);
    let mut m = msg("sq/props", b"{\"v\":1}", QoS::AtLeastOnce, false);
    let user = vec![
        (ByteString::from("z"), ByteString::from("1")),
        (ByteString::from("a"), ByteString::from("2")),
        (ByteString::from("z"), ByteString::from("3")),
    ];
    m.properties.user_properties = user.clone();
    m.properties.content_type = Some(ByteString::from("application/json"));
    m.properties.correlation_data = Some(vec![0u8, 0xff, 7].into());
    m.properties.response_topic = Some(ByteString::from("sq/reply"));
    m.properties.payload_format_indicator = Some(1);
    m.properties.message_expiry_interval = Some(100);
    pb.send(m);
    let mut short = msg("sq/short", b"expires", QoS::AtLeastOnce, false);
    short.properties.message_expiry_interval = Some(1);
    pb.send(short);
    // offline for at least 2 s: the expiry counts down, the 1 s message expires
    std::thread::sleep(Duration::from_secs(2));

    // MQTT 5 back on n3 (made on n1)
    let mut s = Mq::connect(&rt, cl.port(2), &id5, how);
    assert!(
        s.connack.session_present,
        "MQTT 5 session made on n1 present on n3\n{}",
        cl.logs()
    );
    let got = s.exactly(7, Duration::from_millis(500));
    let mut want: Vec<(String, String, u8, bool)> = (0..5)
        .map(|i| row("sq/x", &format!("q1-{i}"), 1, false))
        .collect();
    want.push(row("sq/y", "q2", 2, false));
    want.push(row("sq/props", "{\"v\":1}", 1, false));
    assert_eq!(
        seen(&got),
        want,
        "queued for MQTT 5 while offline, in order, on n3\n{}",
        cl.logs()
    );
    let g = &got[6].properties;
    assert_eq!(g.user_properties[..3], user[..], "user properties in order");
    assert_eq!(g.content_type.as_deref(), Some("application/json"));
    assert_eq!(g.correlation_data.as_deref(), Some(&[0u8, 0xff, 7][..]));
    assert_eq!(g.response_topic.as_deref(), Some("sq/reply"));
    assert_eq!(g.payload_format_indicator, Some(1));
    let left = g.message_expiry_interval.expect("message expiry kept");
    assert!(
        (1..=98).contains(&left),
        "expiry counted down over the 2 s offline: {left}"
    );
    // (a live message right after the move: see
    // a_session_resumed_on_another_node_gets_each_live_message_once)
    s.disconnect();
    let mut pa = Mq::v311(&rt, cl.port(0), &unique("pa"));
    pa.publish("sq/live", b"live", QoS::AtLeastOnce, false);

    // paho 3.1.1 back on n3 (made on n2); mosquitto_sub back on n1 (made on n3)
    let v = paho(&["resume", &cl.port(2).to_string(), &id3, "8"]);
    assert_eq!(
        v["present"], true,
        "paho session made on n2 present on n3: {v}"
    );
    let mut want: Vec<(String, String, u64, bool)> = (0..5)
        .map(|i| {
            (
                "sq/x".to_owned(),
                hex(format!("q1-{i}").as_bytes()),
                1,
                false,
            )
        })
        .collect();
    want.push(("sq/y".to_owned(), hex(b"q2"), 1, false));
    want.push(("sq/props".to_owned(), hex(b"{\"v\":1}"), 1, false));
    want.push(("sq/live".to_owned(), hex(b"live"), 1, false));
    assert_eq!(
        paho_msgs(&v["messages"]),
        want,
        "paho 3.1.1 queue on n3: {v}"
    );
    let done = run(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &cl.port(0).to_string(),
            "-V",
            "mqttv5",
            "-x",
            "300",
            "-c",
            "-i",
            &idm,
            "-t",
            "sq/#",
            "-q",
            "1",
            "-C",
            "8",
            "-W",
            "15",
            "-v",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        done.code,
        Some(0),
        "mosquitto_sub -c resumed on n1: {done:?}\n{}",
        cl.logs()
    );
    let mut want: Vec<String> = (0..5).map(|i| format!("sq/x q1-{i}")).collect();
    want.extend(["sq/y q2", "sq/props {\"v\":1}", "sq/live live"].map(str::to_owned));
    assert_eq!(
        done.stdout.lines().collect::<Vec<_>>(),
        want,
        "mosquitto_sub's queue on n1"
    );

    // clean start on n2: the session made on n1 and resumed on n3 is gone
    let mut s = Mq::connect(
        &rt,
        cl.port(1),
        &id5,
        How {
            v5: true,
            clean: true,
            expiry: Some(300),
        },
    );
    assert!(
        !s.connack.session_present,
        "clean start on n2: no session present"
    );
    sub_q(&cl, 1, &mut s, "sqf/fence", QoS::AtLeastOnce);
    pa.publish("sq/gone", b"no subscription", QoS::AtLeastOnce, false);
    pa.publish("sqf/fence", b"fence", QoS::AtLeastOnce, false);
    let got = s.until("sqf/fence");
    assert_eq!(
        seen(&got),
        vec![row("sqf/fence", "fence", 1, false)],
        "clean start on n2 kept the old subscription"
    );
    s.disconnect();

    // --- wills ---
    let mut w5 = Mq::v5(&rt, cl.port(1), &unique("watch5"));
    sub_q(&cl, 1, &mut w5, "will/#", QoS::ExactlyOnce);
    let mut w3 = Mq::v311(&rt, cl.port(2), &unique("watch3"));
    sub_q(&cl, 2, &mut w3, "will/#", QoS::AtMostOnce);
    let mut w1 = Mq::v311(&rt, cl.port(0), &unique("watch1"));
    sub_q(&cl, 0, &mut w1, "will/#", QoS::AtLeastOnce);
    let with_will = |topic: &str, payload: &[u8]| {
        let topic = topic.to_owned();
        let payload = payload.to_vec();
        move |o: &mut ClientOptions| {
            o.connect.will = Some(LastWill {
                topic: TopicName::new(topic.as_str()).unwrap(),
                payload: payload.into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Default::default(),
            });
        }
    };
    // a normal DISCONNECT: no will
    let c = Mq::connect_with(
        &rt,
        cl.port(0),
        &unique("polite"),
        V5,
        with_will("will/polite", b"no"),
    );
    c.disconnect();
    // DISCONNECT 0x04 (with will) on n2
    let c = Mq::connect_with(
        &rt,
        cl.port(1),
        &unique("with-will"),
        V5,
        with_will("will/d04", b"asked"),
    );
    c.disconnect_with(Disconnect::new(ReasonCode(0x04)));
    // a dropped 3.1.1 connection on n1
    let id = unique("dropped");
    let r = Raw::connect(
        cl.port(0),
        &ConnectOpts {
            client_id: &id,
            will: Some(("will/dropped", b"gone", 2, false)),
            ..Default::default()
        },
    );
    r.s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(r);
    // paho 5 dropped on n3
    paho(&["will-abort", &cl.port(2).to_string(), "will/paho"]);
    // a retained will, dropped on n2
    let id = unique("dropped-retained");
    let r = Raw::connect(
        cl.port(1),
        &ConnectOpts {
            level: 5,
            client_id: &id,
            will: Some(("will/kept", b"retained will", 1, true)),
            ..Default::default()
        },
    );
    r.s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(r);
    let want_wills = |q: u8, retain_flag: bool| {
        sorted(vec![
            row("will/d04", "asked", q.min(1), false),
            row("will/dropped", "gone", q, false),
            row("will/paho", "paho dropped", q.min(1), false),
            row("will/kept", "retained will", q.min(1), retain_flag),
        ])
    };
    for (name, c, q) in [
        ("n2 MQTT 5", &mut w5, 2u8),
        ("n3 3.1.1", &mut w3, 0),
        ("n1 3.1.1", &mut w1, 1),
    ] {
        let got = c.exactly(4, Duration::from_millis(700));
        assert_eq!(
            sorted(seen(&got)),
            want_wills(q, false),
            "wills on {name} (none for the normal DISCONNECT, each once)\n{}",
            cl.logs()
        );
    }
    for node in [0, 2, 1] {
        expect_retained(
            &cl,
            &rt,
            node,
            "will/#",
            &[row("will/kept", "retained will", 1, true)],
        );
    }

    // --- shared subscriptions: members on every node, two groups, one plain subscriber ---
    let mut g: Vec<(String, Mq)> = Vec::new();
    for node in 0..3 {
        let mut m = if node == 1 {
            Mq::v311(&rt, cl.port(node), &unique("g"))
        } else {
            Mq::v5(&rt, cl.port(node), &unique("g"))
        };
        sub_q(&cl, node, &mut m, "$share/g/sh/#", QoS::AtLeastOnce);
        g.push((format!("g on {}", cl.names[node]), m));
    }
    let mut h: Vec<(String, Mq)> = Vec::new();
    for node in [1, 2] {
        let mut m = Mq::v5(&rt, cl.port(node), &unique("h"));
        sub_q(&cl, node, &mut m, "$share/h/sh/+", QoS::ExactlyOnce);
        h.push((format!("h on {}", cl.names[node]), m));
    }
    let mut plain = Mq::v311(&rt, cl.port(2), &unique("sh-plain"));
    sub_q(&cl, 2, &mut plain, "sh/#", QoS::AtLeastOnce);
    let n = 60;
    for i in 0..n {
        let (p, q) = if i % 2 == 0 {
            (&mut pa, QoS::AtLeastOnce)
        } else {
            (&mut pb, QoS::ExactlyOnce)
        };
        p.publish(&format!("sh/{i}"), format!("{i}").as_bytes(), q, false);
    }
    let got = plain.exactly(n, Duration::from_millis(300));
    let mut payloads: Vec<String> = got
        .iter()
        .map(|m| {
            format!(
                "{}@{}{}",
                String::from_utf8_lossy(&m.payload),
                qos_num(m.qos),
                if m.dup { " dup" } else { "" }
            )
        })
        .collect();
    payloads.sort();
    assert_eq!(
        got.len(),
        n,
        "the plain subscriber on n3 gets every message once: {payloads:?}\n{}",
        cl.logs()
    );
    for (group, members) in [("g", &mut g), ("h", &mut h)] {
        let mut per = Vec::new();
        let mut all: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last_look = false;
        loop {
            for (_, m) in members.iter_mut() {
                let got = m.drain(Duration::from_millis(if last_look { 500 } else { 100 }));
                all.extend(
                    got.iter()
                        .map(|p| String::from_utf8_lossy(&p.payload).into_owned()),
                );
                per.push(got.len());
            }
            if last_look {
                break;
            }
            last_look = all.len() >= n || Instant::now() >= deadline;
        }
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(
            (all.len(), distinct.len()),
            (n, n),
            "group {group}: each of {n} messages to exactly one member\n{}",
            cl.logs()
        );
        let per_member: Vec<usize> = (0..members.len())
            .map(|i| per.iter().skip(i).step_by(members.len()).sum())
            .collect();
        assert!(
            per_member.iter().all(|k| *k > 0),
            "group {group}: every member gets some: {per_member:?} ({:?})",
            members.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
        );
    }
}

/// What a client has not acknowledged is not lost or doubled when it goes elsewhere, as on
/// one node: a persistent session made on n1 and resumed on n3 gets each message published
/// right after the move once, with its subscription identifier, and its subscriptions count
/// as existing there (retain handling 1 sends nothing); a session that moves keeps its
/// in-flight flows (a QoS 2
/// message the client already has, PUBREC sent and PUBCOMP not, is finished with PUBREL, not
/// sent again; an unacknowledged QoS 1 message comes again with DUP set and its packet
/// identifier [MQTT-4.4.0-1]; MQTT 5 and 3.1.1), and the messages a shared-subscription
/// member leaves unacknowledged go to a member of the group on another node.
#[test]
fn a_moving_session_and_a_leaving_share_member_lose_and_double_nothing() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut problems = Vec::new();
    // a live message right after the move (published on the old node or on the third),
    // at QoS 1 and 2: once (the old node's stub that passes on what still arrives there
    // must not add a second copy)
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(300),
    };
    for (qos, from) in [
        (QoS::AtLeastOnce, 0usize),
        (QoS::ExactlyOnce, 0),
        (QoS::AtLeastOnce, 1),
        (QoS::ExactlyOnce, 1),
    ] {
        let id = unique("moved");
        let topic = format!("{id}/x");
        let mut s = Mq::connect(&rt, cl.port(0), &id, how);
        sub_on(
            &cl,
            0,
            &mut s,
            &format!("{id}/#"),
            SubscriptionOptions::qos(QoS::ExactlyOnce),
            Some(42),
        );
        s.disconnect();
        let mut s = Mq::connect(&rt, cl.port(2), &id, how);
        assert!(
            s.connack.session_present,
            "session made on n1 present on n3"
        );
        let mut p = Mq::v5(&rt, cl.port(from), &unique("p"));
        p.publish(&topic, b"live", qos, false);
        let got = s.exactly(1, Duration::from_millis(700));
        let want = vec![row(&topic, "live", qos_num(qos), false)];
        let ids: Vec<Vec<u32>> = got
            .iter()
            .map(|m| m.properties.subscription_identifiers.clone())
            .collect();
        if seen(&got) != want || ids != vec![vec![42]] {
            problems.push(format!(
                "QoS {} published on {}: got {:?}, subscription identifiers {ids:?} (want [[42]])",
                qos_num(qos),
                cl.names[from],
                seen(&got)
            ));
        }
        s.disconnect();
    }
    // retain handling 1 after a move: the subscription came along, so re-subscribing on
    // the new node sends no retained message (0 does)
    let id = unique("rh-moved");
    let mut s = Mq::connect(&rt, cl.port(0), &id, how);
    sub_q(&cl, 0, &mut s, "rhm/#", QoS::AtLeastOnce);
    s.disconnect();
    let mut p = Mq::v5(&rt, cl.port(1), &unique("rhm-p"));
    p.publish("rhm/a", b"kept", QoS::AtLeastOnce, true);
    expect_retained(&cl, &rt, 2, "rhm/#", &[row("rhm/a", "kept", 1, true)]);
    let mut s = Mq::connect(&rt, cl.port(2), &id, how);
    assert!(s.connack.session_present, "rhm session present on n3");
    // what was queued while offline: the retained publish, live then
    let got = s.exactly(1, Duration::from_millis(300));
    if seen(&got) != vec![row("rhm/a", "kept", 1, false)] {
        problems.push(format!(
            "queued while offline, moved n1 -> n3: got {:?}",
            seen(&got)
        ));
    }
    let rh = |h: RetainHandling| SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_handling: h,
        ..Default::default()
    };
    s.subscribe_opts("rhm/#", rh(RetainHandling::SendIfNew), None);
    let got = s.drain(Duration::from_millis(500));
    if !got.is_empty() {
        problems.push(format!(
            "retain handling 1 on n3 for a subscription that moved from n1: got {:?}",
            seen(&got)
        ));
    }
    s.subscribe_opts("rhm/#", rh(RetainHandling::SendAtSubscribe), None);
    let got = s.exactly(1, Duration::from_millis(200));
    if seen(&got) != vec![row("rhm/a", "kept", 1, true)] {
        problems.push(format!(
            "retain handling 0 on n3 after the move: got {:?}",
            seen(&got)
        ));
    }
    s.disconnect();

    for v5 in [true, false] {
        let id = unique(if v5 { "inflight5" } else { "inflight3" });
        let level = if v5 { 5 } else { 4 };
        let props = if v5 {
            vec![0x11, 0, 0, 1, 0x2c]
        } else {
            Vec::new()
        };
        let opts = ConnectOpts {
            level,
            client_id: &id,
            clean: false,
            props,
            ..Default::default()
        };
        let filter = format!("{id}/#");
        let mut r = Raw::connect(cl.port(0), &opts);
        let mark = settled_filters(&cl, 0);
        assert_eq!(r.subscribe(&filter, 2), vec![2]);
        cl.wait_filters(0, mark + 1);
        let mut p = Mq::v5(&rt, cl.port(1), &unique("p"));
        p.publish(
            &format!("{id}/two"),
            b"exactly once",
            QoS::ExactlyOnce,
            false,
        );
        let (f, b) = r.expect_type(3, Duration::from_secs(10));
        let (t, payload, _) = crate::common::decode_publish(f, &b, v5);
        assert_eq!(
            (t.as_str(), payload.as_slice(), (f >> 1) & 3),
            (format!("{id}/two").as_str(), &b"exactly once"[..], 2)
        );
        let two_id = u16::from_be_bytes([b[2 + t.len()], b[3 + t.len()]]);
        r.send(&crate::common::packet(0x50, &two_id.to_be_bytes()));
        let (f, b) = r.expect_type(6, Duration::from_secs(10));
        assert_eq!((f, &b[..2]), (0x62, &two_id.to_be_bytes()[..]), "PUBREL");
        p.publish(
            &format!("{id}/one"),
            b"at least once",
            QoS::AtLeastOnce,
            false,
        );
        let (f, b) = r.expect_type(3, Duration::from_secs(10));
        let (t, _, _) = crate::common::decode_publish(f, &b, v5);
        assert_eq!(t, format!("{id}/one"));
        let one_id = u16::from_be_bytes([b[2 + t.len()], b[3 + t.len()]]);
        r.s.shutdown(std::net::Shutdown::Both).unwrap();
        drop(r);

        let mut r = Raw::tcp(cl.port(1));
        r.level = level;
        r.send(&crate::common::connect_packet(&opts));
        let (_, ack) = r.expect_type(2, Duration::from_secs(10));
        assert_eq!(
            &ack[..2],
            &[1, 0],
            "MQTT level {level}: session present on n2"
        );
        let mut got = Vec::new();
        while let crate::common::Read_::Packet(f, b) = r.read(Duration::from_millis(1500)) {
            match f >> 4 {
                3 => {
                    let (t, payload, _) = crate::common::decode_publish(f, &b, v5);
                    let pid = u16::from_be_bytes([b[2 + t.len()], b[3 + t.len()]]);
                    let was = if t.ends_with("/one") { one_id } else { two_id };
                    got.push(format!(
                        "PUBLISH {t} {:?} qos {} dup {} id {}",
                        String::from_utf8_lossy(&payload),
                        (f >> 1) & 3,
                        (f >> 3) & 1,
                        if pid == was {
                            "same".to_owned()
                        } else {
                            format!("{pid} (was {was})")
                        }
                    ));
                    if (f >> 1) & 3 == 1 {
                        r.send(&crate::common::packet(0x40, &pid.to_be_bytes()));
                    } else {
                        r.send(&crate::common::packet(0x50, &pid.to_be_bytes()));
                    }
                }
                6 => {
                    let pid = u16::from_be_bytes([b[0], b[1]]);
                    got.push(format!(
                        "PUBREL id {}",
                        if pid == two_id {
                            "same".to_owned()
                        } else {
                            format!("{pid} (was {two_id})")
                        }
                    ));
                    r.send(&crate::common::packet(0x70, &pid.to_be_bytes()));
                }
                _ => got.push(format!("packet {f:#04x}")),
            }
        }
        let want = vec![
            "PUBREL id same".to_owned(),
            format!("PUBLISH {id}/one \"at least once\" qos 1 dup 1 id same"),
        ];
        if got != want {
            problems.push(format!(
                "MQTT level {level}, in flight on n1, resumed on n2: got {got:?}, want {want:?}"
            ));
        }
    }
    // the messages a shared-subscription member leaves unacknowledged (its connection
    // drops) go to another member of the group, here on another node, as on one node
    let mut p = Mq::v311(&rt, cl.port(0), &unique("shared-p"));
    let mut stay = Mq::v5(&rt, cl.port(2), &unique("su-stay"));
    sub_q(&cl, 2, &mut stay, "$share/su/su/#", QoS::AtLeastOnce);
    let mut leaver = Raw::v5(cl.port(1), &unique("su-leaver"));
    let mark = settled_filters(&cl, 1);
    assert_eq!(leaver.subscribe("$share/su/su/#", 1), vec![1]);
    cl.wait_filters(1, mark + 1);
    let n = 12;
    for i in 0..n {
        p.publish(
            &format!("su/{i}"),
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            false,
        );
    }
    let mut taken = Vec::new();
    let mut on_stay: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken.len() + on_stay.len() < n && Instant::now() < deadline {
        if let crate::common::Read_::Packet(f, b) = leaver.read(Duration::from_millis(100))
            && f >> 4 == 3
        {
            // never acknowledged
            let (_, payload, _) = crate::common::decode_publish(f, &b, true);
            taken.push(String::from_utf8_lossy(&payload).into_owned());
        }
        on_stay.extend(
            stay.drain(Duration::from_millis(100))
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
        );
    }
    assert_eq!(
        taken.len() + on_stay.len(),
        n,
        "the group got every message once"
    );
    assert!(
        !taken.is_empty(),
        "the member on n2 got none of {n} (balance across nodes)"
    );
    leaver.s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(leaver);
    let mut again = stay.messages(taken.len(), Duration::from_secs(10));
    again.extend(stay.drain(Duration::from_millis(300)));
    let mut all: Vec<String> = on_stay;
    all.extend(
        again
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
    );
    all.sort_by_key(|p| p.parse::<u32>().unwrap_or(u32::MAX));
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(
        all,
        want,
        "the {} messages the member on n2 left unacknowledged ({taken:?}) must reach the member on n3\n{}",
        taken.len(),
        cl.logs()
    );
    assert!(
        problems.is_empty(),
        "sessions that moved between nodes:\n{}",
        problems.join("\n")
    );
}
