//! midge as a cluster (issue 16): three real `nats-server` processes with JetStream and
//! three `midge serve --cluster ... --node nI` processes (`common::nats`), with clients
//! spread over the nodes (the midge client crate, raw sockets for exact bytes and reason
//! codes, Python paho, mosquitto_pub/sub). One topic space across nodes at QoS 0/1/2,
//! wildcards and `$` topics, topic names that NATS would read as wildcards or separators,
//! topic aliases, large messages, retained messages, shared subscriptions, overlapping
//! subscriptions, interest counting, MQTT 5 properties and expiry; sessions that move to
//! another node, takeover (also under load), session expiry and will delay across nodes;
//! acknowledgements never sent for what JetStream could not store; a midge node killed
//! (-9) or paused (SIGSTOP). Every wait is bounded; the nextest group `cluster` runs one of
//! these at a time (each starts six processes).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use midge_client::codec::bytestring::ByteString;
use midge_client::codec::{Publish, TopicName};
use midge_client::{ClientOptions, Event, QoS};
use serde_json::{Value, json};

use crate::common::mq::{How, Mq, runtime};
use crate::common::nats::{MidgeCluster, NatsCluster, is_up};
use crate::common::{ConnectOpts, Raw, Read_, publish_packet, py_dir, run, unique};

// ---------------------------------------------------------------------------------------
// A blocking wrapper of the midge client
// ---------------------------------------------------------------------------------------

fn topic_of(p: &Publish) -> String {
    p.topic.as_str().to_owned()
}

fn qos_num(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// Subscribe `c` (on node `node`) and wait until every node knows the new filter.
fn subscribe_on(cl: &MidgeCluster, node: usize, c: &mut Mq, filter: &str, qos: QoS) {
    let mark = cl.filters(node);
    let rc = c.subscribe(filter, qos);
    assert!(
        rc.iter().all(|r| *r < 0x80),
        "SUBACK for {filter:?} refused: {rc:?}"
    );
    cl.wait_filters(node, mark + 1);
}

/// MQTT 5 CONNECT property: session expiry interval.
fn expiry_prop(secs: u32) -> Vec<u8> {
    let mut p = vec![0x11];
    p.extend_from_slice(&secs.to_be_bytes());
    p
}

// ---------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------

/// The NATS cluster the other tests stand on: three servers with one JetStream meta leader,
/// a stream with 3 replicas spread over all of them, acks that continue after one kill -9
/// and a SIGSTOP, stop without a quorum (two of three killed), and come back when the
/// servers restart. The midge tests below rely on each of these behaviours.
#[test]
fn nats_harness_forms_a_jetstream_cluster_that_needs_a_quorum() {
    let nats = NatsCluster::start();
    let names: BTreeSet<String> = nats.servers.iter().map(|s| s.name.clone()).collect();
    for s in &nats.servers {
        let jsz = s.monitor("/jsz").unwrap();
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{}: {jsz}", s.name);
        let routes = s.monitor("/routez").unwrap();
        assert_eq!(routes["num_routes"], 2, "{}: {routes}", s.name);
    }
    let leader = nats.meta_leader().expect("a meta leader");
    assert!(names.contains(&leader), "leader {leader} of {names:?}");

    let mut c = nats.connect(0);
    let limit = Duration::from_secs(10);
    let created = c
        .js(
            "STREAM.CREATE.HARNESS",
            &json!({"name": "HARNESS", "subjects": ["harness.>"], "num_replicas": 3,
                    "storage": "file"}),
            limit,
        )
        .unwrap();
    let cluster = &created["cluster"];
    let mut peers: BTreeSet<String> = cluster["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    peers.insert(cluster["leader"].as_str().unwrap().to_owned());
    assert_eq!(peers, names, "R3 stream on every server: {created}");
    let ack = c.js_publish("harness.a", b"one", limit).unwrap();
    assert_eq!(
        (ack["stream"].as_str(), ack["seq"].as_u64()),
        (Some("HARNESS"), Some(1))
    );

    // one server killed: a quorum of two still acknowledges (retried while a new stream
    // leader is elected)
    let mut nats = nats;
    nats.servers[2].kill();
    let mut c = nats.connect(0);
    let acked = retry(Duration::from_secs(20), || {
        c.js_publish("harness.b", b"two", Duration::from_secs(2))
    });
    assert!(acked.is_ok(), "one of three servers down: {acked:?}");

    // two killed: nothing is acknowledged
    nats.servers[1].kill();
    let mut c = nats.connect(0);
    for _ in 0..3 {
        let r = c.js_publish("harness.c", b"three", Duration::from_secs(2));
        assert!(r.is_err(), "acknowledged without a quorum: {r:?}");
    }

    // both back: acknowledgements again, and the stream kept what it acknowledged
    nats.servers[1].restart();
    nats.servers[2].restart();
    nats.wait_healthy();
    let mut c = nats.connect(1);
    let acked = retry(Duration::from_secs(30), || {
        c.js_publish("harness.d", b"four", Duration::from_secs(2))
    });
    assert!(
        acked.is_ok(),
        "after the restart: {acked:?}\n{}",
        nats.logs()
    );
    let info = retry(Duration::from_secs(10), || {
        c.js("STREAM.INFO.HARNESS", &json!({}), Duration::from_secs(2))
    })
    .unwrap();
    let kept = info["state"]["messages"].as_u64().unwrap();
    assert!(kept >= 3, "acknowledged messages lost: {info}");

    // a paused server (SIGSTOP) is like a partitioned one: the other two carry on
    nats.servers[0].pause();
    let mut c = nats.connect(2);
    let acked = retry(Duration::from_secs(20), || {
        c.js_publish("harness.e", b"five", Duration::from_secs(2))
    });
    assert!(acked.is_ok(), "one server paused: {acked:?}");
    nats.servers[0].resume();
    nats.wait_healthy();
}

/// Call `f` until it returns `Ok` or `limit` passed; the last result.
fn retry<T>(limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        let r = f();
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// The cluster's shape
// ---------------------------------------------------------------------------------------

/// Every node's `GET /api/v1/cluster` names itself and lists every node as up, exactly one
/// of them `self`; a fourth node configured by a `[cluster]` table (not the command line)
/// joins the same cluster, with the retained messages published before it started.
#[test]
fn every_node_lists_the_cluster_and_a_configured_node_joins() {
    let mut cl = MidgeCluster::start(3);
    for i in 0..3 {
        let v = cl.view(i).unwrap();
        assert_eq!(v["node"], cl.names[i].as_str(), "{v}");
        let nodes = v["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{v}");
        let selves: Vec<&Value> = nodes.iter().filter(|n| n["self"] == true).collect();
        assert_eq!(selves.len(), 1, "{v}");
        assert_eq!(selves[0]["name"], cl.names[i].as_str(), "{v}");
        for n in nodes {
            assert_eq!(
                n["state"], "up",
                "each node entry says \"state\": \"up\" (issue 16's API shape): {v}"
            );
            assert!(n["filters"].is_u64(), "filters is a count: {v}");
        }
    }

    // a retained message from before the fourth node started
    let rt = runtime();
    let mut early = Mq::v5(&rt, cl.port(0), &unique("early"));
    early.publish("joined/retained", b"from before", QoS::AtLeastOnce, true);

    let urls: Vec<String> = cl.nats.servers.iter().map(|s| s.url()).collect();
    let toml = format!(
        "[cluster]\nnode = \"n4\"\nnats = {}\n",
        serde_json::to_string(&urls).unwrap()
    );
    let n4 = crate::common::Midge::serve()
        .config(&toml)
        .http(true)
        .start();
    cl.add(n4, "n4");
    let v = cl.view(3).unwrap();
    assert_eq!(v["node"], "n4", "{v}");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 4, "{v}");
    for i in 0..3 {
        assert_eq!(cl.view(i).unwrap()["nodes"].as_array().unwrap().len(), 4);
    }

    // the node that joined late has the retained message, and its subscriptions are
    // announced and used
    let mut sub = Mq::v311(&rt, cl.port(3), &unique("n4-sub"));
    subscribe_on(&cl, 3, &mut sub, "joined/#", QoS::AtLeastOnce);
    let got = sub.messages(1, Duration::from_secs(5));
    let seen: Vec<(String, Vec<u8>, bool)> = got
        .iter()
        .map(|m| (topic_of(m), m.payload.to_vec(), m.retain))
        .collect();
    assert_eq!(
        seen,
        vec![("joined/retained".to_owned(), b"from before".to_vec(), true)],
        "retained message published before n4 started, on n4"
    );
    let mut publ = Mq::v5(&rt, cl.port(0), &unique("n1-pub"));
    publ.publish("joined/x", b"hello n4", QoS::AtLeastOnce, false);
    let got = sub.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "n4 got nothing\n{}", cl.logs());
    assert_eq!(&got[0].payload[..], b"hello n4");
}

// ---------------------------------------------------------------------------------------
// One topic space
// ---------------------------------------------------------------------------------------

/// A publish on n1 reaches subscribers on n2 and n3 at each QoS, with the QoS the
/// subscription grants (min of both), exactly once, and 200 QoS 1 messages of one publisher
/// arrive complete and in order.
#[test]
fn qos_0_1_2_reach_subscribers_on_other_nodes_once_and_in_order() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut s2 = Mq::v5(&rt, cl.port(1), &unique("s2"));
    subscribe_on(&cl, 1, &mut s2, "q/#", QoS::ExactlyOnce);
    let mut s3 = Mq::v311(&rt, cl.port(2), &unique("s3"));
    subscribe_on(&cl, 2, &mut s3, "q/+", QoS::AtLeastOnce);

    let mut p = Mq::v5(&rt, cl.port(0), &unique("p1"));
    p.publish("q/zero", b"0", QoS::AtMostOnce, false);
    p.publish("q/one", b"1", QoS::AtLeastOnce, false);
    p.publish("q/two", b"\x00two\xff", QoS::ExactlyOnce, false);

    for (s, name, granted) in [(&mut s2, "n2", [0, 1, 2]), (&mut s3, "n3", [0, 1, 1])] {
        let mut got = s.messages(3, Duration::from_secs(10));
        got.extend(s.drain(Duration::from_millis(700)));
        let seen: Vec<(String, Vec<u8>, u8)> = got
            .iter()
            .map(|m| (topic_of(m), m.payload.to_vec(), qos_num(m.qos)))
            .collect();
        let mut want = vec![
            ("q/zero".to_owned(), b"0".to_vec(), granted[0]),
            ("q/one".to_owned(), b"1".to_vec(), granted[1]),
            ("q/two".to_owned(), b"\x00two\xff".to_vec(), granted[2]),
        ];
        let mut sorted = seen.clone();
        sorted.sort();
        want.sort();
        assert_eq!(sorted, want, "subscriber on {name}\n{}", cl.logs());
    }

    // 200 QoS 1 messages from n1: all, once, in publish order, on n2 and n3
    let n = 200;
    for i in 0..n {
        let mut m = Publish::new(TopicName::new("q/seq").unwrap(), format!("{i}"));
        m.qos = QoS::AtLeastOnce;
        let c = p.client.clone();
        rt.block_on(async move { c.publish_packet(m).await.unwrap() });
    }
    let mut acked = 0;
    while acked < n {
        match p.wait(Duration::from_secs(20), |e| {
            matches!(e, Event::Published { .. })
        }) {
            Some(Event::Published { reason, .. }) => {
                assert_eq!(reason.0, 0, "PUBACK reason");
                acked += 1;
            }
            _ => panic!("{acked} of {n} QoS 1 publishes acknowledged within 20 s"),
        }
    }
    for (s, name) in [(&mut s2, "n2"), (&mut s3, "n3")] {
        let mut got = s.messages(n, Duration::from_secs(20));
        got.extend(s.drain(Duration::from_millis(500)));
        let seq: Vec<String> = got
            .iter()
            .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
            .collect();
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(seq.len(), n, "{name}: {} of {n} arrived", seq.len());
        assert_eq!(seq, want, "{name}: order or duplicates");
    }
}

/// Wildcards match across nodes as on one broker, and `#`/`+` never match a `$` topic while
/// a filter that names the `$` level does.
#[test]
fn wildcards_match_across_nodes_and_never_dollar_topics() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut all = Mq::v311(&rt, cl.port(1), &unique("all"));
    subscribe_on(&cl, 1, &mut all, "#", QoS::AtLeastOnce);
    let mut plus = Mq::v5(&rt, cl.port(2), &unique("plus"));
    subscribe_on(&cl, 2, &mut plus, "w/+/c", QoS::AtLeastOnce);
    let mut status = Mq::v5(&rt, cl.port(2), &unique("status"));
    subscribe_on(&cl, 2, &mut status, "+/status", QoS::AtLeastOnce);
    let mut dollar = Mq::v311(&rt, cl.port(1), &unique("dollar"));
    subscribe_on(&cl, 1, &mut dollar, "$app/#", QoS::AtLeastOnce);

    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    for t in [
        "w/b/c",
        "w/b/c/d",
        "w/x/y",
        "w/status",
        "$app/status",
        "$app/x/y",
        "w",
    ] {
        p.publish(t, t.as_bytes(), QoS::AtLeastOnce, false);
    }
    let topics = |got: Vec<Publish>| -> BTreeSet<String> { got.iter().map(topic_of).collect() };
    let set = |ts: &[&str]| -> BTreeSet<String> { ts.iter().map(|t| (*t).to_owned()).collect() };

    let mut got = all.messages(5, Duration::from_secs(10));
    got.extend(all.drain(Duration::from_millis(700)));
    let mine: Vec<Publish> = got
        .into_iter()
        .filter(|m| m.topic.as_str().starts_with('w') || m.topic.as_str().starts_with('$'))
        .collect();
    assert_eq!(mine.len(), 5, "'#' on n2 got {:?}", topics(mine.clone()));
    assert_eq!(
        topics(mine),
        set(&["w/b/c", "w/b/c/d", "w/x/y", "w/status", "w"]),
        "'#' on n2"
    );

    let mut got = plus.messages(1, Duration::from_secs(10));
    got.extend(plus.drain(Duration::from_millis(300)));
    assert_eq!(topics(got), set(&["w/b/c"]), "'w/+/c' on n3");

    let mut got = status.messages(1, Duration::from_secs(10));
    got.extend(status.drain(Duration::from_millis(300)));
    assert_eq!(topics(got), set(&["w/status"]), "'+/status' on n3");

    let mut got = dollar.messages(2, Duration::from_secs(10));
    got.extend(dollar.drain(Duration::from_millis(300)));
    assert_eq!(
        topics(got),
        set(&["$app/status", "$app/x/y"]),
        "'$app/#' on n2"
    );
}

/// Topic names with what NATS reads as separators or wildcards (`.`, `*`, `>`), spaces,
/// empty levels and unicode cross nodes exactly as published, and exact filters with those
/// characters match only themselves.
#[test]
fn topic_names_with_nats_special_characters_cross_nodes_unchanged() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let topics = [
        "s/a.b",
        "s/a/b",
        "s/*",
        "s/>",
        "s/x",
        "s/a.*.>",
        "s/..",
        "s/with space",
        "s/ leading and trailing ",
        "s//double",
        "s/",
        "s/ünï/cødé/日本語",
        "s/_INBOX.x",
        "s/%2E",
    ];
    let mut all = Mq::v5(&rt, cl.port(1), &unique("all"));
    subscribe_on(&cl, 1, &mut all, "s/#", QoS::AtLeastOnce);
    let mut exact: Vec<(String, Mq)> = Vec::new();
    for f in ["s/a.b", "s/*", "s/>", "s//double", "s/ünï/cødé/日本語"] {
        let mut m = Mq::v311(&rt, cl.port(2), &unique("exact"));
        subscribe_on(&cl, 2, &mut m, f, QoS::AtLeastOnce);
        exact.push((f.to_owned(), m));
    }
    let mut plus = Mq::v311(&rt, cl.port(2), &unique("plus"));
    subscribe_on(&cl, 2, &mut plus, "s/+", QoS::AtLeastOnce);

    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    for (i, t) in topics.iter().enumerate() {
        let mut payload = vec![i as u8, 0, 0xff, b'.', b'*', b'>'];
        payload.extend_from_slice(t.as_bytes());
        p.publish(t, &payload, QoS::AtLeastOnce, false);
    }

    let mut got = all.messages(topics.len(), Duration::from_secs(10));
    got.extend(all.drain(Duration::from_millis(700)));
    let seen: BTreeMap<String, Vec<Vec<u8>>> = got.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(topic_of(p)).or_default().push(p.payload.to_vec());
        m
    });
    for (i, t) in topics.iter().enumerate() {
        let mut payload = vec![i as u8, 0, 0xff, b'.', b'*', b'>'];
        payload.extend_from_slice(t.as_bytes());
        assert_eq!(
            seen.get(*t),
            Some(&vec![payload]),
            "'s/#' on n2: topic {t:?} (all seen: {:?})",
            seen.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(got.len(), topics.len(), "extra deliveries: {seen:?}");

    for (f, m) in &mut exact {
        let mut got = m.messages(1, Duration::from_secs(10));
        got.extend(m.drain(Duration::from_millis(300)));
        let ts: Vec<String> = got.iter().map(topic_of).collect();
        assert_eq!(ts, vec![f.clone()], "exact filter {f:?} on n3");
    }

    let want: BTreeSet<String> = topics
        .iter()
        .filter(|t| t.matches('/').count() == 1)
        .map(|t| (*t).to_owned())
        .collect();
    let mut got = plus.messages(want.len(), Duration::from_secs(10));
    got.extend(plus.drain(Duration::from_millis(500)));
    let ts: Vec<String> = got.iter().map(topic_of).collect();
    assert_eq!(ts.len(), want.len(), "'s/+' on n3: {ts:?}");
    assert_eq!(ts.into_iter().collect::<BTreeSet<_>>(), want, "'s/+' on n3");
}

/// A retained message published on one node is delivered to new subscribers on every node,
/// a newer one replaces it everywhere, and an empty retained publish clears it everywhere.
#[test]
fn retained_messages_are_seen_from_every_node() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut p1 = Mq::v5(&rt, cl.port(0), &unique("p1"));
    p1.publish("r/a", b"first", QoS::AtLeastOnce, true);

    // a new subscriber on each node gets it, flagged retained (5 s for it to spread)
    let retained_on = |node: usize, filter: &str| -> Vec<(String, Vec<u8>, bool)> {
        let mut s = Mq::v311(&rt, cl.port(node), &unique("late"));
        s.subscribe(filter, QoS::AtLeastOnce);
        let got = s.drain(Duration::from_millis(500));
        got.iter()
            .map(|m| (topic_of(m), m.payload.to_vec(), m.retain))
            .collect()
    };
    let expect = |node: usize, filter: &str, want: Vec<(String, Vec<u8>, bool)>| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = retained_on(node, filter);
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
    };
    let one = |t: &str, p: &[u8]| vec![(t.to_owned(), p.to_vec(), true)];
    expect(2, "r/a", one("r/a", b"first"));
    expect(1, "r/#", one("r/a", b"first"));
    expect(0, "r/+", one("r/a", b"first"));

    // replaced from n2
    let mut p2 = Mq::v311(&rt, cl.port(1), &unique("p2"));
    p2.publish("r/a", b"second", QoS::ExactlyOnce, true);
    expect(2, "r/#", one("r/a", b"second"));
    expect(0, "r/a", one("r/a", b"second"));

    // a live subscriber on n3 gets the retained publish as a live message (retain 0)
    let mut live = Mq::v311(&rt, cl.port(2), &unique("live"));
    subscribe_on(&cl, 2, &mut live, "r/b", QoS::AtLeastOnce);
    p1.publish("r/b", b"live", QoS::AtLeastOnce, true);
    let got = live.messages(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "live subscriber on n3");
    assert!(
        !got[0].retain,
        "a live delivery is not flagged retained (3.1.1)"
    );
    expect(1, "r/b", one("r/b", b"live"));

    // cleared from n3: nobody gets it any more
    let mut p3 = Mq::v5(&rt, cl.port(2), &unique("p3"));
    p3.publish("r/a", b"", QoS::AtLeastOnce, true);
    expect(0, "r/a", vec![]);
    expect(1, "r/a", vec![]);
    expect(2, "r/+", one("r/b", b"live"));
}

/// `$share/g/sh/#` with one member on each node: every message goes to exactly one member,
/// each member gets some, and a plain subscriber still gets all of them; at QoS 1 and 0.
#[test]
fn shared_subscription_members_on_three_nodes_share_each_message_once() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut members: Vec<Mq> = (0..3)
        .map(|i| {
            let mut m = Mq::v5(&rt, cl.port(i), &unique(&format!("member{i}")));
            subscribe_on(&cl, i, &mut m, "$share/g/sh/#", QoS::AtLeastOnce);
            m
        })
        .collect();
    let mut watcher = Mq::v311(&rt, cl.port(1), &unique("watcher"));
    subscribe_on(&cl, 1, &mut watcher, "sh/#", QoS::AtLeastOnce);

    for (qos, n, from) in [(QoS::AtLeastOnce, 90, 0), (QoS::AtMostOnce, 60, 1)] {
        let mut p = Mq::v5(&rt, cl.port(from), &unique("p"));
        for i in 0..n {
            p.publish(&format!("sh/{i}"), format!("{i}").as_bytes(), qos, false);
        }
        let w = watcher.messages(n, Duration::from_secs(15));
        assert_eq!(w.len(), n, "plain subscriber at {qos:?}");

        // take from every member until all n arrived (15 s at most), then a last look for
        // duplicates
        let mut per: Vec<usize> = vec![0; members.len()];
        let mut all: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut last_look = false;
        loop {
            for (i, m) in members.iter_mut().enumerate() {
                let window = if last_look { 700 } else { 100 };
                let got = m.drain(Duration::from_millis(window));
                per[i] += got.len();
                all.extend(
                    got.iter()
                        .map(|p| String::from_utf8_lossy(&p.payload).into_owned()),
                );
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
            "at {qos:?}: {n} messages, each to one member; per member {per:?}\n{}",
            cl.logs()
        );
        assert!(
            per.iter().all(|k| *k > 0),
            "at {qos:?} every member on every node gets some: {per:?}"
        );
    }
}

/// A topic alias set by an MQTT 5 publisher on n1 is resolved there: the subscriber on n2
/// gets the full topic name for the publish that named it and for the one that only used
/// the alias.
#[test]
fn topic_alias_of_a_publisher_is_resolved_before_the_hop() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut s = Mq::v5(&rt, cl.port(1), &unique("s"));
    subscribe_on(&cl, 1, &mut s, "alias/#", QoS::AtLeastOnce);
    let mut p = Raw::tcp(cl.port(0));
    p.level = 5;
    let id = unique("p");
    p.send(&crate::common::connect_packet(&ConnectOpts {
        level: 5,
        client_id: &id,
        ..Default::default()
    }));
    let (_, connack) = p.expect_type(2, Duration::from_secs(5));
    assert_eq!(connack[1], 0, "CONNACK {connack:?}");
    // Topic Alias Maximum (0x22) in the CONNACK properties
    let (plen, n) = crate::common::read_varint(&connack[2..]).unwrap();
    let props = &connack[2 + n..2 + n + plen];
    let mut i = 0;
    let mut max = 0u16;
    while i < props.len() {
        let id = props[i];
        let len = match id {
            0x22 | 0x21 | 0x13 => 2,
            0x11 | 0x27 => 4,
            0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            0x12 | 0x1a | 0x1c | 0x1f => {
                2 + u16::from_be_bytes([props[i + 1], props[i + 2]]) as usize
            }
            0x26 => {
                let k = u16::from_be_bytes([props[i + 1], props[i + 2]]) as usize;
                let v = u16::from_be_bytes([props[i + 3 + k], props[i + 4 + k]]) as usize;
                4 + k + v
            }
            _ => break,
        };
        if id == 0x22 {
            max = u16::from_be_bytes([props[i + 1], props[i + 2]]);
        }
        i += 1 + len;
    }
    assert!(
        max >= 1,
        "midge accepts topic aliases (Topic Alias Maximum {max})"
    );
    p.send(&publish_packet(
        b"alias/x",
        b"named",
        1,
        false,
        1,
        Some(&[0x23, 0, 1]),
    ));
    p.expect_type(4, Duration::from_secs(10));
    p.send(&publish_packet(
        b"",
        b"by alias",
        1,
        false,
        2,
        Some(&[0x23, 0, 1]),
    ));
    p.expect_type(4, Duration::from_secs(10));
    let got = s.messages(2, Duration::from_secs(10));
    let seen: Vec<(String, Vec<u8>)> = got
        .iter()
        .map(|m| (topic_of(m), m.payload.to_vec()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("alias/x".to_owned(), b"named".to_vec()),
            ("alias/x".to_owned(), b"by alias".to_vec())
        ]
    );
}

/// A client whose subscriptions overlap (`o/#`, `o/+`, `o/b`) gets one copy of a message
/// published on another node, in MQTT 5 and 3.1.1.
#[test]
fn overlapping_subscriptions_of_one_client_give_one_delivery_across_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut a = Mq::v5(&rt, cl.port(1), &unique("a"));
    let mut b = Mq::v311(&rt, cl.port(2), &unique("b"));
    for f in ["o/#", "o/+", "o/b"] {
        subscribe_on(&cl, 1, &mut a, f, QoS::ExactlyOnce);
        subscribe_on(&cl, 2, &mut b, f, QoS::AtLeastOnce);
    }
    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    p.publish("o/b", b"one", QoS::AtLeastOnce, false);
    p.publish("o/b/c", b"deep", QoS::ExactlyOnce, false);
    p.publish("o/x", b"plus", QoS::AtMostOnce, false);
    for (s, name) in [(&mut a, "n2 v5"), (&mut b, "n3 3.1.1")] {
        let mut got = s.messages(3, Duration::from_secs(10));
        got.extend(s.drain(Duration::from_millis(1000)));
        let mut ts: Vec<String> = got.iter().map(topic_of).collect();
        ts.sort();
        assert_eq!(ts, vec!["o/b", "o/b/c", "o/x"], "{name}");
    }
}

/// MQTT 5 properties of a message (user properties in order with repeated keys, content
/// type, response topic, correlation data, payload format, message expiry) survive the hop
/// between nodes, from the midge client and from paho.
#[test]
fn mqtt5_message_properties_survive_the_hop() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut s = Mq::v5(&rt, cl.port(1), &unique("s"));
    subscribe_on(&cl, 1, &mut s, "props/#", QoS::AtLeastOnce);
    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    let mut m = Publish::new(TopicName::new("props/a").unwrap(), &b"{\"t\":1}"[..]);
    m.qos = QoS::AtLeastOnce;
    let user = vec![
        (ByteString::from("k"), ByteString::from("1")),
        (ByteString::from("k"), ByteString::from("2")),
        (ByteString::from("ключ"), ByteString::from("значение")),
        (ByteString::from(""), ByteString::from("empty key")),
    ];
    m.properties.user_properties = user.clone();
    m.properties.content_type = Some(ByteString::from("application/json"));
    m.properties.response_topic = Some(ByteString::from("reply/here"));
    m.properties.correlation_data = Some(vec![0u8, 1, 2, 0xff].into());
    m.properties.payload_format_indicator = Some(1);
    m.properties.message_expiry_interval = Some(3600);
    assert_eq!(
        p.publish_within(m, Duration::from_secs(10)),
        Some(0),
        "PUBACK"
    );
    let got = s.messages(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "nothing on n2\n{}", cl.logs());
    let g = &got[0].properties;
    // the broker may add its own origin properties after the publisher's
    let first: Vec<_> = g.user_properties.iter().take(user.len()).cloned().collect();
    assert_eq!(first, user, "user properties: {:?}", g.user_properties);
    assert_eq!(g.content_type.as_deref(), Some("application/json"));
    assert_eq!(g.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(g.correlation_data.as_deref(), Some(&[0u8, 1, 2, 0xff][..]));
    assert_eq!(g.payload_format_indicator, Some(1));
    let left = g.message_expiry_interval.expect("message expiry kept");
    assert!(
        (3590..=3600).contains(&left),
        "expiry counts down, not reset: {left}"
    );
    assert_eq!(&got[0].payload[..], b"{\"t\":1}");

    // paho to paho, n2 -> n3
    let script = py_dir().join("cluster_paho.py");
    let script = script.to_str().unwrap();
    let p3 = cl.port(2).to_string();
    let mark = cl.filters(2);
    let mut sub = crate::common::Proc::spawn("python3", &[script, "sub", &p3, "paho/#", "1"]);
    sub.wait_for("subscribed [1]", Duration::from_secs(10));
    cl.wait_filters(2, mark + 1);
    let done = run(
        "python3",
        &[
            script,
            "pub",
            &cl.port(1).to_string(),
            "paho/x",
            "00ff2e2a3e",
        ],
        Duration::from_secs(20),
    );
    let last = done.stdout.lines().last().unwrap_or("");
    let ack: Value = serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("paho pub: {}\n{}", done.stdout, done.stderr));
    assert_eq!(ack["rc"], 0, "paho PUBACK: {ack}");
    let done = sub.finish(Duration::from_secs(20));
    let last = done.stdout.lines().last().unwrap_or("");
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("paho sub: {}\n{}", done.stdout, done.stderr));
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "paho on n3: {v}");
    let m = &msgs[0];
    assert_eq!(m["topic"], "paho/x");
    assert_eq!(m["payload"], "00ff2e2a3e");
    assert_eq!(
        m["user_properties"].as_array().unwrap()[..3],
        json!([["k1", "v1"], ["k1", "v2"], ["ключ", "значение"]])
            .as_array()
            .unwrap()[..],
        "{m}"
    );
    assert_eq!(m["content_type"], "application/x-midge; charset=utf-8");
    assert_eq!(m["response_topic"], "reply/to/me");
    assert_eq!(m["correlation_data"], "000102ff");
    let left = m["message_expiry"].as_u64().unwrap_or(0);
    assert!((3590..=3600).contains(&left), "paho expiry {m}");
}

/// mosquitto_pub on n1 and mosquitto_sub on n3 see one broker.
#[test]
fn mosquitto_clients_on_different_nodes() {
    let cl = MidgeCluster::start(3);
    let p3 = cl.port(2).to_string();
    let mark = cl.filters(2);
    let sub = crate::common::Proc::spawn(
        "mosquitto_sub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p3,
            "-t",
            "mq/#",
            "-q",
            "2",
            "-C",
            "3",
            "-W",
            "20",
            "-v",
        ],
    );
    cl.wait_filters(2, mark + 1);
    let p1 = cl.port(0).to_string();
    for (i, q) in ["0", "1", "2"].iter().enumerate() {
        let done = run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &p1,
                "-t",
                &format!("mq/{i}"),
                "-q",
                q,
                "-m",
                &format!("hello {q}"),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(done.code, Some(0), "mosquitto_pub -q {q}: {done:?}");
    }
    let done = sub.finish(Duration::from_secs(25));
    assert_eq!(done.code, Some(0), "mosquitto_sub: {done:?}\n{}", cl.logs());
    let mut lines: Vec<&str> = done.stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["mq/0 hello 0", "mq/1 hello 1", "mq/2 hello 2"]);
}

/// A QoS 2 PUBLISH sent again with DUP (the publisher missed the PUBREC) before its PUBREL
/// still reaches a subscriber on another node exactly once.
#[test]
fn qos2_publish_sent_twice_is_delivered_once_across_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut s = Mq::v5(&rt, cl.port(1), &unique("s"));
    subscribe_on(&cl, 1, &mut s, "twice/#", QoS::ExactlyOnce);
    let mut p = Raw::v5(cl.port(0), &unique("p"));
    let first = publish_packet(b"twice/x", b"only once", 2, false, 9, Some(&[]));
    p.send(&first);
    let (f, b) = p.expect_type(5, Duration::from_secs(10));
    assert_eq!((f, &b[..2]), (0x50, &9u16.to_be_bytes()[..]), "PUBREC");
    assert!(b.get(2).is_none_or(|r| *r < 0x80), "PUBREC refused: {b:?}");
    let mut dup = first.clone();
    dup[0] |= 0x08;
    p.send(&dup);
    p.expect_type(5, Duration::from_secs(10));
    p.send(&crate::common::packet(0x62, &9u16.to_be_bytes()));
    let (f, _) = p.expect_type(7, Duration::from_secs(10));
    assert_eq!(f, 0x70, "PUBCOMP");
    let mut got = s.messages(1, Duration::from_secs(10));
    got.extend(s.drain(Duration::from_millis(1000)));
    let payloads: Vec<&[u8]> = got.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, vec![&b"only once"[..]], "\n{}", cl.logs());
}

/// Interest is counted per node: when one of two subscribers of a filter on n2 unsubscribes
/// the other still gets messages from n1; when the last one goes, n2's filter count drops
/// and nothing more crosses.
#[test]
fn unsubscribe_on_one_node_keeps_the_other_subscribers_interest() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut a = Mq::v311(&rt, cl.port(1), &unique("a"));
    subscribe_on(&cl, 1, &mut a, "u/#", QoS::AtLeastOnce);
    let with_one = cl.filters(1);
    let mut b = Mq::v5(&rt, cl.port(1), &unique("b"));
    assert_eq!(b.subscribe("u/#", QoS::AtLeastOnce), vec![1]);
    // the same filter again is not a new distinct filter
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        cl.filters(1),
        with_one,
        "a second subscriber of the same filter counted as a new distinct filter"
    );
    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));

    let unsubscribe = |m: &mut Mq| {
        let c = m.client.clone();
        rt.block_on(async move {
            c.unsubscribe_many(
                vec![midge_client::codec::TopicFilter::new("u/#").unwrap()],
                Default::default(),
            )
            .await
            .unwrap();
        });
        assert!(
            m.wait(Duration::from_secs(10), |e| matches!(e, Event::UnsubAck(_)))
                .is_some(),
            "UNSUBACK"
        );
    };
    unsubscribe(&mut a);
    p.publish("u/1", b"still wanted", QoS::AtLeastOnce, false);
    let got = b.messages(1, Duration::from_secs(10));
    assert_eq!(
        got.len(),
        1,
        "b on n2 lost its messages when a unsubscribed the same filter\n{}",
        cl.logs()
    );
    assert!(
        a.drain(Duration::from_millis(300)).is_empty(),
        "a unsubscribed"
    );

    unsubscribe(&mut b);
    let deadline = Instant::now() + Duration::from_secs(15);
    while cl.filters(1) >= with_one {
        assert!(
            Instant::now() < deadline,
            "n2's filter count did not drop after the last unsubscribe ({} >= {with_one})",
            cl.filters(1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p.publish("u/2", b"nobody", QoS::AtLeastOnce, false);
    assert!(b.drain(Duration::from_millis(500)).is_empty());
    assert!(a.drain(Duration::from_millis(100)).is_empty());
}

/// Messages near midge's default packet limit (1 MiB; NATS's default max_payload is 1 MiB
/// too) cross nodes intact, at QoS 0 and 1.
#[test]
fn large_messages_cross_nodes_intact() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut s = Mq::v5(&rt, cl.port(2), &unique("s"));
    subscribe_on(&cl, 2, &mut s, "big/#", QoS::AtLeastOnce);
    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    for (size, qos) in [
        (200_000usize, QoS::AtLeastOnce),
        (1_048_400, QoS::AtMostOnce),
        (1_048_400, QoS::AtLeastOnce),
    ] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let topic = format!("big/{size}/{}", qos_num(qos));
        let mut m = Publish::new(TopicName::new(topic.as_str()).unwrap(), payload.clone());
        m.qos = qos;
        let r = p.publish_within(m, Duration::from_secs(15));
        assert!(
            r.is_some_and(|c| c < 0x80),
            "{size} bytes at {qos:?}: acknowledgement {r:?}"
        );
        let got = s.messages(1, Duration::from_secs(15));
        assert_eq!(
            got.len(),
            1,
            "{size} bytes at {qos:?} accepted on n1 but not delivered on n3\n{}",
            cl.logs()
        );
        assert_eq!(topic_of(&got[0]), topic);
        assert!(
            got[0].payload[..] == payload[..],
            "{size} bytes changed on the way"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------------------

/// A persistent session made on n1 is found on n2 (session present) and its subscription
/// works there; in 3.1.1 (clean session 0) and MQTT 5 (session expiry > 0).
#[test]
fn persistent_session_resumes_on_another_node() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    for (how, name) in [
        (
            How {
                v5: false,
                clean: false,
                expiry: None,
            },
            "3.1.1",
        ),
        (
            How {
                v5: true,
                clean: false,
                expiry: Some(300),
            },
            "5",
        ),
    ] {
        let id = unique("roamer");
        let filter = format!("ps/{}/#", if how.v5 { "v5" } else { "v3" });
        let mut c = Mq::connect(&rt, cl.port(0), &id, how);
        subscribe_on(&cl, 0, &mut c, &filter, QoS::AtLeastOnce);
        c.disconnect();

        let mark = cl.filters(1);
        let mut c = Mq::connect(&rt, cl.port(1), &id, how);
        assert!(
            c.connack.session_present,
            "MQTT {name}: session made on n1 not present on n2\n{}",
            cl.logs()
        );
        cl.wait_filters(1, mark + 1);
        let mut p = Mq::v5(&rt, cl.port(2), &unique("p"));
        let t = filter.replace('#', "x");
        p.publish(&t, b"to the roamer", QoS::AtLeastOnce, false);
        let got = c.messages(1, Duration::from_secs(10));
        assert_eq!(
            got.len(),
            1,
            "MQTT {name}: subscription on n2 after the move"
        );
        assert_eq!(&got[0].payload[..], b"to the roamer");
        c.disconnect();
    }
}

/// QoS 1 messages published while a persistent client was away are delivered, in order,
/// when it comes back on a different node.
#[test]
fn messages_queued_while_away_follow_the_session_to_another_node() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let id = unique("away");
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(300),
    };
    let mut c = Mq::connect(&rt, cl.port(0), &id, how);
    subscribe_on(&cl, 0, &mut c, "away/#", QoS::AtLeastOnce);
    c.disconnect();
    std::thread::sleep(Duration::from_millis(300));

    let mut p = Mq::v311(&rt, cl.port(2), &unique("p"));
    for i in 0..10 {
        p.publish("away/x", format!("{i}").as_bytes(), QoS::AtLeastOnce, false);
    }
    let mut c = Mq::connect(&rt, cl.port(1), &id, how);
    assert!(c.connack.session_present, "session present on n2");
    let mut got = c.messages(10, Duration::from_secs(15));
    got.extend(c.drain(Duration::from_millis(500)));
    let seq: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(seq, want, "queued QoS 1 messages on n2\n{}", cl.logs());
}

/// Message expiry counts while a message published on n1 waits for an offline session of
/// n2, which then resumes on n3: the message whose expiry passed is not delivered, the other
/// arrives with its interval reduced by the wait.
#[test]
fn message_expiry_counts_while_queued_for_another_node() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let id = unique("sleeper");
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(300),
    };
    let mut c = Mq::connect(&rt, cl.port(1), &id, how);
    subscribe_on(&cl, 1, &mut c, "exp/#", QoS::AtLeastOnce);
    c.disconnect();
    std::thread::sleep(Duration::from_millis(300));
    let mut p = Mq::v5(&rt, cl.port(0), &unique("p"));
    for (topic, secs) in [("exp/short", 2u32), ("exp/long", 300)] {
        let mut m = Publish::new(TopicName::new(topic).unwrap(), topic.as_bytes().to_vec());
        m.qos = QoS::AtLeastOnce;
        m.properties.message_expiry_interval = Some(secs);
        let r = p.publish_within(m, Duration::from_secs(10));
        assert!(r.is_some_and(|c| c < 0x80), "{topic}: {r:?}");
    }
    std::thread::sleep(Duration::from_secs(4));
    // back on n3: the queue moves with the session
    let mut c = Mq::connect(&rt, cl.port(2), &id, how);
    assert!(c.connack.session_present);
    let mut got = c.messages(1, Duration::from_secs(10));
    got.extend(c.drain(Duration::from_millis(700)));
    let seen: Vec<(String, Option<u32>)> = got
        .iter()
        .map(|m| (topic_of(m), m.properties.message_expiry_interval))
        .collect();
    assert_eq!(seen.len(), 1, "only exp/long: {seen:?}\n{}", cl.logs());
    assert_eq!(seen[0].0, "exp/long");
    let left = seen[0].1.expect("expiry kept");
    assert!(
        (280..=296).contains(&left),
        "the 4 s wait is taken off the expiry: {left}"
    );
}

/// The same client id connecting on n2 while connected on n1 takes the session over: the
/// n1 connection gets DISCONNECT 0x8E (MQTT 5) or is closed (3.1.1), and the new connection
/// stays up and works.
#[test]
fn same_client_id_on_another_node_takes_over() {
    let cl = MidgeCluster::start(3);
    for v5 in [true, false] {
        let id = unique(if v5 { "taken5" } else { "taken3" });
        let level = if v5 { 5 } else { 4 };
        let props = if v5 { expiry_prop(300) } else { Vec::new() };
        let opts = ConnectOpts {
            level,
            client_id: &id,
            clean: false,
            props,
            ..Default::default()
        };
        let mut first = Raw::connect(cl.port(0), &opts);
        let mut second = Raw::connect(cl.port(1), &opts);
        let got = first.expect_close(Duration::from_secs(10));
        if v5 {
            let disc: Vec<&(u8, Vec<u8>)> = got.iter().filter(|(f, _)| *f == 0xe0).collect();
            assert_eq!(disc.len(), 1, "one DISCONNECT on n1: {got:?}");
            assert_eq!(
                disc[0].1.first(),
                Some(&0x8e),
                "reason 0x8E session taken over: {got:?}"
            );
        } else {
            assert!(
                got.iter().all(|(f, _)| *f != 0xe0),
                "no DISCONNECT to a 3.1.1 client: {got:?}"
            );
        }
        // the new owner is not thrown out in turn, and it works
        assert_eq!(
            second.read(Duration::from_secs(2)),
            Read_::Timeout,
            "MQTT level {level}: the new connection on n2 must stay up"
        );
        let filter = format!("{id}/#");
        let mark = cl.filters(1);
        assert_eq!(second.subscribe(&filter, 1), vec![1]);
        cl.wait_filters(1, mark + 1);
        let mut p = Raw::v5(cl.port(2), &unique("p"));
        p.publish(&format!("{id}/x"), b"after takeover", 1);
        let (t, payload, _) = second.next_publish(Duration::from_secs(10));
        assert_eq!(
            (t, payload),
            (format!("{id}/x"), b"after takeover".to_vec())
        );
    }
}

/// A takeover under QoS 1 load: a persistent subscriber on n1 reconnects on n2 while a
/// publisher on n3 keeps publishing; the n1 connection gets 0x8E, and every message the
/// publisher got a PUBACK for reaches the subscriber on n1 before or on n2 after
/// (duplicates allowed, no loss).
#[test]
fn takeover_under_qos1_load_loses_nothing() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(600),
    };
    let id = unique("mover");
    let mut first = Mq::connect(&rt, cl.port(0), &id, how);
    subscribe_on(&cl, 0, &mut first, "tk/#", QoS::AtLeastOnce);

    let n = 400;
    let acked = std::sync::Mutex::new(Vec::<String>::new());
    let mut p = Mq::v311(&rt, cl.port(2), &unique("p"));
    let mut second = None;
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..n {
                let payload = format!("{i}");
                let mut m = Publish::new(TopicName::new("tk/x").unwrap(), payload.clone());
                m.qos = QoS::AtLeastOnce;
                if p.publish_within(m, Duration::from_secs(10))
                    .is_some_and(|r| r < 0x80)
                {
                    acked.lock().unwrap().push(payload);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().len() < n / 4 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        second = Some(Mq::connect(&rt, cl.port(1), &id, how));
    });
    let mut second = second.unwrap();
    assert!(second.connack.session_present, "session present on n2");
    let acked = acked.into_inner().unwrap();
    assert_eq!(acked.len(), n, "publisher on n3 acknowledgements");

    let mut got: Vec<String> = first
        .drain(Duration::from_millis(500))
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(
        first.disconnect_reason,
        Some(0x8e),
        "the n1 connection: DISCONNECT 0x8E (ended: {:?})",
        first.ended
    );
    let on_first = got.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        got.extend(
            second
                .drain(Duration::from_millis(300))
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
        );
        let missing: Vec<&String> = acked.iter().filter(|a| !got.contains(a)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged messages lost in the takeover: {} missing (first {:?}); {on_first} \
             arrived on n1, {} on n2\n{}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            got.len() - on_first,
            cl.logs()
        );
    }
}

/// The will of a client whose connection drops on n1 reaches a subscriber on n3, once.
#[test]
fn will_of_a_dropped_client_reaches_other_nodes_once() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut w = Mq::v311(&rt, cl.port(2), &unique("w"));
    subscribe_on(&cl, 2, &mut w, "will/#", QoS::AtLeastOnce);
    let id = unique("dying");
    let c = Raw::connect(
        cl.port(0),
        &ConnectOpts {
            client_id: &id,
            will: Some(("will/dying", b"gone", 1, false)),
            ..Default::default()
        },
    );
    c.s.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    let mut got = w.messages(1, Duration::from_secs(10));
    got.extend(w.drain(Duration::from_millis(1000)));
    let seen: Vec<(String, Vec<u8>)> = got
        .iter()
        .map(|m| (topic_of(m), m.payload.to_vec()))
        .collect();
    assert_eq!(
        seen,
        vec![("will/dying".to_owned(), b"gone".to_vec())],
        "\n{}",
        cl.logs()
    );
}

// ---------------------------------------------------------------------------------------
// Honest acknowledgements
// ---------------------------------------------------------------------------------------

/// What a QoS 1 publisher saw within `limit`: the PUBACK's reason code, or why there was
/// none.
#[derive(Debug, PartialEq, Eq)]
enum Ack {
    Reason(u8),
    Closed,
    Disconnect(u8),
    Nothing,
}

fn qos1_ack(r: &mut Raw, topic: &str, id: u16, limit: Duration) -> Ack {
    qos_ack(r, topic, 1, id, limit)
}

/// Publish at QoS 1 or 2 and wait for the PUBACK or PUBREC (the first answer of the flow).
fn qos_ack(r: &mut Raw, topic: &str, qos: u8, id: u16, limit: Duration) -> Ack {
    let props: Option<&[u8]> = if r.level == 5 { Some(&[]) } else { None };
    r.send(&publish_packet(
        topic.as_bytes(),
        b"honest",
        qos,
        false,
        id,
        props,
    ));
    let answer = if qos == 1 { 0x40 } else { 0x50 };
    let deadline = Instant::now() + limit;
    loop {
        match r.read(deadline.saturating_duration_since(Instant::now())) {
            Read_::Packet(f, b) if f == answer && b[..2] == id.to_be_bytes() => {
                return Ack::Reason(b.get(2).copied().unwrap_or(0));
            }
            Read_::Packet(0xe0, b) => return Ack::Disconnect(b.first().copied().unwrap_or(0)),
            Read_::Packet(..) => {}
            Read_::Closed => return Ack::Closed,
            Read_::Timeout => return Ack::Nothing,
        }
    }
}

/// The sum of every JetStream stream's last sequence number (grows with each message any
/// stream stores).
fn jetstream_writes(nats: &NatsCluster) -> u64 {
    let mut c = nats.connect(0);
    let list = c
        .js("STREAM.LIST", &json!({"offset": 0}), Duration::from_secs(5))
        .unwrap();
    list["streams"]
        .as_array()
        .map(|ss| {
            ss.iter()
                .map(|st| st["state"]["last_seq"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// With one of the three nats-servers killed (-9), QoS 1 across nodes goes on. With two,
/// JetStream has no quorum: a QoS 1 publish that must reach a persistent subscriber on
/// another node is not acknowledged as a success (MQTT 5: an error reason code or nothing;
/// 3.1.1: nothing or closed), nor is a QoS 2 one (no successful PUBREC), while QoS 0
/// between clients of one node still flows. With the quorum, the PUBACK comes after
/// JetStream stored the message. When the servers return, QoS 1 works again.
#[test]
fn qos1_is_not_acknowledged_without_a_jetstream_quorum_and_recovers() {
    let mut cl = MidgeCluster::start(3);
    let rt = runtime();
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(600),
    };
    let sid = unique("durable");
    let mut s = Mq::connect(&rt, cl.port(1), &sid, how);
    subscribe_on(&cl, 1, &mut s, "h/#", QoS::AtLeastOnce);
    let mut local_sub = Raw::v311(cl.port(0), &unique("local-sub"));
    assert_eq!(local_sub.subscribe("local/#", 0), vec![0]);

    // with a quorum: acknowledged once JetStream holds it (a stream grew), and delivered
    let before = jetstream_writes(&cl.nats);
    let mut p5 = Raw::v5(cl.port(0), &unique("p5"));
    let a = qos1_ack(&mut p5, "h/1", 1, Duration::from_secs(10));
    assert_eq!(a, Ack::Reason(0), "with a quorum\n{}", cl.logs());
    let after = jetstream_writes(&cl.nats);
    assert!(
        after > before,
        "a QoS 1 message for another node was acknowledged but no JetStream stream grew \
         (sum of last_seq {before} -> {after})"
    );
    let got = s.messages(1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "h/1 on n2");

    // one nats-server killed: QoS 1 across nodes goes on (a moment for JetStream to elect
    // new leaders: a refusal then is honest, a success must be delivered)
    cl.nats.servers[2].kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 100u16;
    let mut pone = Raw::v5(cl.port(0), &unique("p-one-down"));
    loop {
        let a = qos1_ack(&mut pone, "h/one-down", id, Duration::from_secs(3));
        if a == Ack::Reason(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QoS 1 across nodes not acknowledged 20 s after one of three nats-servers died: \
             {a:?}\n{}",
            cl.logs()
        );
        if matches!(a, Ack::Closed | Ack::Disconnect(_)) {
            pone = Raw::v5(cl.port(0), &unique("p-one-down"));
        }
        id += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !seen.iter().any(|t| t == "h/one-down") && Instant::now() < deadline {
        seen.extend(
            s.messages(1, Duration::from_millis(500))
                .iter()
                .map(topic_of),
        );
    }
    assert!(
        seen.iter().any(|t| t == "h/one-down"),
        "acknowledged with one nats-server down but not delivered on n2: {seen:?}\n{}",
        cl.logs()
    );

    // two killed: no quorum
    cl.nats.servers[1].kill();
    let killed = Instant::now();

    let a5 = qos1_ack(&mut p5, "h/2", 2, Duration::from_secs(5));
    assert!(
        !matches!(a5, Ack::Reason(r) if r < 0x80),
        "MQTT 5 QoS 1 acknowledged as a success without a JetStream quorum: {a5:?}\n{}",
        cl.logs()
    );
    let mut p3 = Raw::v311(cl.port(0), &unique("p3"));
    let a3 = qos1_ack(&mut p3, "h/3", 3, Duration::from_secs(5));
    assert!(
        matches!(a3, Ack::Nothing | Ack::Closed),
        "3.1.1 QoS 1 acknowledged without a JetStream quorum: {a3:?}\n{}",
        cl.logs()
    );

    // nor a PUBREC for QoS 2 (MQTT 5 on a fresh connection: the one above may be closed)
    let mut q2 = Raw::v5(cl.port(0), &unique("q2"));
    let a = qos_ack(&mut q2, "h/qos2", 2, 5, Duration::from_secs(5));
    assert!(
        !matches!(a, Ack::Reason(r) if r < 0x80),
        "QoS 2 PUBREC as a success without a JetStream quorum: {a:?}\n{}",
        cl.logs()
    );

    // QoS 0 between two clients of n1 still flows
    let mut local_pub = Raw::v311(cl.port(0), &unique("local-pub"));
    for i in 0..20u8 {
        local_pub.publish("local/x", &[i], 0);
    }
    let mut local: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        match local_sub.read(Duration::from_secs(5)) {
            Read_::Packet(f, b) if f >> 4 == 3 => {
                local.push(crate::common::decode_publish(f, &b, false).1)
            }
            other => panic!(
                "local QoS 0 on n1 without NATS quorum: {other:?} after {} messages",
                local.len()
            ),
        }
    }
    assert_eq!(local, (0..20u8).map(|i| vec![i]).collect::<Vec<_>>());
    eprintln!(
        "without a quorum: MQTT 5 QoS 1 {a5:?}, 3.1.1 QoS 1 {a3:?}, QoS 2 {a:?}; {:?} since the kill",
        killed.elapsed()
    );

    // the servers return: QoS 1 is acknowledged and delivered again
    cl.nats.servers[1].restart();
    cl.nats.servers[2].restart();
    cl.nats.wait_healthy();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 10u16;
    loop {
        let mut p = Raw::v5(cl.port(0), &unique("p-again"));
        let a = qos1_ack(&mut p, "h/4", attempt, Duration::from_secs(3));
        if a == Ack::Reason(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QoS 1 not acknowledged 30 s after the nats-servers returned: {a:?}\n{}",
            cl.logs()
        );
        attempt += 1;
    }
    // the subscriber's node may take a while to get its JetStream consumer back
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut topics: Vec<String> = Vec::new();
    while !topics.iter().any(|t| t == "h/4") && Instant::now() < deadline {
        topics.extend(
            s.messages(1, Duration::from_millis(500))
                .iter()
                .map(topic_of),
        );
    }
    assert!(
        topics.iter().any(|t| t == "h/4"),
        "h/4 not on n2 within 30 s of its PUBACK after recovery: {topics:?}\n{}",
        cl.logs()
    );
}

// ---------------------------------------------------------------------------------------
// A midge node fails
// ---------------------------------------------------------------------------------------

fn signal_pid(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// kill -9 of node n2 while QoS 1 flows both ways through it: its persistent subscriber
/// comes back on n3 with its session, and every message whose PUBACK a publisher got (on n1,
/// and on n2 before it died) reaches both persistent subscribers (duplicates allowed, no
/// loss). The survivors list n2 as no longer up.
#[test]
fn killed_node_loses_no_acknowledged_qos1_message() {
    let mut cl = MidgeCluster::start(3);
    let rt = runtime();
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(600),
    };
    let id2 = unique("s2");
    let mut s2 = Mq::connect(&rt, cl.port(1), &id2, how);
    subscribe_on(&cl, 1, &mut s2, "load/#", QoS::AtLeastOnce);
    let mut s3 = Mq::connect(&rt, cl.port(2), &unique("s3"), how);
    subscribe_on(&cl, 2, &mut s3, "load/#", QoS::AtLeastOnce);

    let n = 300;
    let acked1 = std::sync::Mutex::new(Vec::<String>::new());
    let acked2 = std::sync::Mutex::new(Vec::<String>::new());
    let mut p1 = Mq::v5(&rt, cl.port(0), &unique("p1"));
    let mut p2 = Mq::v311(&rt, cl.port(1), &unique("p2"));
    let n2_pid = cl.nodes[1].pid();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..n {
                let payload = format!("p1-{i}");
                let mut m = Publish::new(TopicName::new("load/p1").unwrap(), payload.clone());
                m.qos = QoS::AtLeastOnce;
                if p1
                    .publish_within(m, Duration::from_secs(10))
                    .is_some_and(|r| r < 0x80)
                {
                    acked1.lock().unwrap().push(payload);
                }
            }
        });
        scope.spawn(|| {
            for i in 0..n {
                let payload = format!("p2-{i}");
                let mut m = Publish::new(TopicName::new("load/p2").unwrap(), payload.clone());
                m.qos = QoS::AtLeastOnce;
                match p2.publish_within(m, Duration::from_secs(5)) {
                    Some(r) if r < 0x80 => acked2.lock().unwrap().push(payload),
                    _ => return, // its node died
                }
            }
        });
        // kill -9 n2 a third of the way through
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked1.lock().unwrap().len() < n / 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        signal_pid(n2_pid, "-KILL");
    });
    let acked1 = acked1.into_inner().unwrap();
    let acked2 = acked2.into_inner().unwrap();
    assert!(
        acked1.len() == n,
        "the publisher on n1 lost acknowledgements when n2 died: {} of {n}\n{}",
        acked1.len(),
        cl.logs()
    );

    // what s2 got before n2 died, then its session resumed on n3
    let mut got2: Vec<String> = s2
        .drain(Duration::from_millis(200))
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let mut s2 = Mq::connect(&rt, cl.port(2), &id2, how);
    let present = s2.connack.session_present;
    if !present {
        // measured anyway, for the report: what a lost session costs
        s2.subscribe("load/#", QoS::AtLeastOnce);
    }
    let want: BTreeSet<String> = acked1.iter().chain(&acked2).cloned().collect();
    let mut got3: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(if present { 30 } else { 5 });
    let (missing2, missing3) = loop {
        for (s, got) in [(&mut s2, &mut got2), (&mut s3, &mut got3)] {
            got.extend(
                s.drain(Duration::from_millis(200))
                    .iter()
                    .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
            );
        }
        let missing2: Vec<String> = want.iter().filter(|w| !got2.contains(w)).cloned().collect();
        let missing3: Vec<String> = want.iter().filter(|w| !got3.contains(w)).cloned().collect();
        if (missing2.is_empty() && missing3.is_empty()) || Instant::now() >= deadline {
            break (missing2, missing3);
        }
    };
    assert!(
        present && missing2.is_empty() && missing3.is_empty(),
        "after kill -9 of n2 ({} acknowledged on n1, {} on n2): s2's session present on n3: \
         {present}; s2 misses {} (first {:?}), s3 (on n3 all along) misses {} (first {:?})\n{}",
        acked1.len(),
        acked2.len(),
        missing2.len(),
        missing2.iter().take(5).collect::<Vec<_>>(),
        missing3.len(),
        missing3.iter().take(5).collect::<Vec<_>>(),
        cl.logs()
    );

    // the survivors see n2 gone
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // a survivor lists n2 as not up, or no longer lists it
        let entries: Vec<Option<Value>> = [0, 2].iter().map(|at| cl.entry(*at, 1)).collect();
        if entries.iter().all(|e| !e.as_ref().is_some_and(is_up)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "n2 is still up for the survivors 20 s after kill -9: {entries:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cl.nodes[1].sigkill(); // reaped
}

/// kill -9 of the node of a persistent subscriber that stays away longer than the cluster
/// takes to forget that node: a surviving node adopts the session (offline), so QoS 1
/// messages published while the subscriber is away, before and after its node is
/// forgotten, are queued and reach it when it connects again, to the third node (the claim
/// moves the session there from the adopter). Its session is present and nothing is lost.
#[test]
fn sessions_of_a_killed_node_are_adopted_until_their_clients_return() {
    let mut cl = MidgeCluster::start(3);
    let rt = runtime();
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(600),
    };
    let id = unique("away");
    let mut s = Mq::connect(&rt, cl.port(1), &id, how);
    subscribe_on(&cl, 1, &mut s, "away/#", QoS::AtLeastOnce);
    let mut p = Mq::v5(&rt, cl.port(0), &unique("pub"));
    let mut acked = Vec::new();
    let publish = |p: &mut Mq, acked: &mut Vec<String>, cl: &MidgeCluster, i: usize| {
        let payload = format!("m{i}");
        let mut m = Publish::new(TopicName::new("away/t").unwrap(), payload.clone());
        m.qos = QoS::AtLeastOnce;
        match p.publish_within(m, Duration::from_secs(10)) {
            Some(r) if r < 0x80 => acked.push(payload),
            r => panic!("PUBACK {r:?} for {payload}\n{}", cl.logs()),
        }
    };
    publish(&mut p, &mut acked, &cl, 0);
    assert_eq!(
        s.messages(1, Duration::from_secs(10)).len(),
        1,
        "{}",
        cl.logs()
    );
    drop(s);
    cl.nodes[1].sigkill();
    // while n2 is dead but not yet found so, once found so, and once forgotten (3.5 s +
    // 10 s), by the publisher's node
    let started = Instant::now();
    let mut i = 1;
    for at in [0.5, 2.0, 5.0, 9.0, 16.0] {
        while started.elapsed() < Duration::from_secs_f64(at) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..5 {
            publish(&mut p, &mut acked, &cl, i);
            i += 1;
        }
    }
    let mut s = Mq::connect(&rt, cl.port(2), &id, how);
    assert!(
        s.connack.session_present,
        "the session of a client of the killed n2, adopted by a survivor, is present on n3\n{}",
        cl.logs()
    );
    let want: BTreeSet<String> = acked.iter().skip(1).cloned().collect();
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want.is_subset(&got) && Instant::now() < deadline {
        got.extend(
            s.drain(Duration::from_millis(300))
                .iter()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
        );
    }
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "messages acknowledged while the subscriber's node was dead and the subscriber away, \
         missing after it came back on n3: {missing:?} of {}\n{}",
        want.len(),
        cl.logs()
    );
    cl.nodes[1].sigkill(); // reaped
}

/// Session expiry holds across nodes: a session whose expiry passed while its client was
/// away is not present on another node, one within its expiry is.
#[test]
fn session_expiry_holds_across_nodes() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let short = How {
        v5: true,
        clean: false,
        expiry: Some(2),
    };
    let long = How {
        expiry: Some(120),
        ..short
    };
    let gone = unique("short");
    let kept = unique("long");
    for (id, how) in [(&gone, short), (&kept, long)] {
        let mut c = Mq::connect(&rt, cl.port(0), id, how);
        c.subscribe(&format!("{id}/#"), QoS::AtLeastOnce);
        c.disconnect();
    }
    std::thread::sleep(Duration::from_secs(4));
    let c = Mq::connect(&rt, cl.port(1), &gone, short);
    assert!(
        !c.connack.session_present,
        "a session expired 2 s after its disconnect on n1 is present on n2 4 s later"
    );
    let c = Mq::connect(&rt, cl.port(2), &kept, long);
    assert!(
        c.connack.session_present,
        "a session with 120 s expiry made on n1 is not present on n3\n{}",
        cl.logs()
    );
}

/// A will with a delay is not published when its client resumes the session on another
/// node within the delay; without the resumption it is published after the delay, once.
#[test]
fn will_delay_holds_when_the_client_moves_to_another_node() {
    let cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut w = Mq::v311(&rt, cl.port(2), &unique("w"));
    subscribe_on(&cl, 2, &mut w, "delayed/#", QoS::AtLeastOnce);
    let how = How {
        v5: true,
        clean: false,
        expiry: Some(60),
    };
    let with_will = |topic: &str| {
        let topic = topic.to_owned();
        move |o: &mut ClientOptions| {
            let props = midge_client::codec::WillProperties {
                will_delay_interval: Some(3),
                ..Default::default()
            };
            o.connect.will = Some(midge_client::codec::LastWill {
                topic: TopicName::new(topic.as_str()).unwrap(),
                payload: b"late".to_vec().into(),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: props,
            });
        }
    };
    // the client's connection on n1 drops (no DISCONNECT) and it is back on n2 at once
    let mover = unique("mover");
    let c = Mq::connect_with(&rt, cl.port(0), &mover, how, with_will("delayed/mover"));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let back = Mq::connect(&rt, cl.port(1), &mover, how);
    assert!(back.connack.session_present, "session present on n2");
    // a client that does not come back: its will after 3 s
    let gone = unique("gone");
    let c = Mq::connect_with(&rt, cl.port(0), &gone, how, with_will("delayed/gone"));
    drop(c);
    let mut got = w.messages(1, Duration::from_secs(10));
    got.extend(w.drain(Duration::from_secs(2)));
    let topics: Vec<String> = got.iter().map(topic_of).collect();
    assert_eq!(
        topics,
        vec!["delayed/gone"],
        "only the will of the client that did not come back\n{}",
        cl.logs()
    );
    drop(back);
}

/// The wills of the clients of a node killed (-9) are published by the survivors once (for
/// a clean session as for a persistent one): a subscriber on each surviving node gets each
/// exactly once.
#[test]
fn will_of_a_client_on_a_killed_node_is_published_once() {
    let mut cl = MidgeCluster::start(3);
    let rt = runtime();
    let mut w1 = Mq::v311(&rt, cl.port(0), &unique("w1"));
    subscribe_on(&cl, 0, &mut w1, "lastwill/#", QoS::AtLeastOnce);
    let mut w3 = Mq::v5(&rt, cl.port(2), &unique("w3"));
    subscribe_on(&cl, 2, &mut w3, "lastwill/#", QoS::AtLeastOnce);
    // one client with a persistent session and one with a clean session, both on n2
    let persistent = unique("persistent-on-n2");
    let _p = Raw::connect(
        cl.port(1),
        &ConnectOpts {
            client_id: &persistent,
            clean: false,
            will: Some(("lastwill/persistent", b"node died", 1, false)),
            ..Default::default()
        },
    );
    let clean = unique("clean-on-n2");
    let _c = Raw::connect(
        cl.port(1),
        &ConnectOpts {
            client_id: &clean,
            will: Some(("lastwill/clean", b"node died", 1, false)),
            ..Default::default()
        },
    );
    cl.nodes[1].sigkill();
    for (w, name) in [(&mut w1, "n1"), (&mut w3, "n3")] {
        let mut got = w.messages(2, Duration::from_secs(20));
        got.extend(w.drain(Duration::from_millis(1500)));
        let mut seen: Vec<(String, Vec<u8>)> = got
            .iter()
            .map(|m| (topic_of(m), m.payload.to_vec()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("lastwill/clean".to_owned(), b"node died".to_vec()),
                ("lastwill/persistent".to_owned(), b"node died".to_vec()),
            ],
            "the wills of the clients (clean and persistent session) of the killed n2, on \
             {name}\n{}",
            cl.logs()
        );
    }
}

/// SIGSTOP of node n1 (a partition stand-in) while a persistent client is connected there:
/// the client connects to n2 (with or without its session: the paused node cannot hand it
/// over); when n1 wakes up (SIGCONT) it does not take the client back: its old connection is
/// closed, the n2 connection stays up and gets messages published on n3, once each.
#[test]
fn paused_node_does_not_take_a_session_back() {
    let cl = MidgeCluster::start(3);
    let id = unique("split");
    let opts = ConnectOpts {
        level: 5,
        client_id: &id,
        clean: false,
        props: expiry_prop(600),
        ..Default::default()
    };
    let mut old = Raw::connect(cl.port(0), &opts);
    let filter = format!("{id}/#");
    let mark = cl.filters(0);
    assert_eq!(old.subscribe(&filter, 1), vec![1]);
    cl.wait_filters(0, mark + 1);

    let n1 = cl.nodes[0].pid();
    signal_pid(n1, "-STOP");
    // whatever happens, n1 runs again before the handles are dropped
    struct Cont(u32);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    let cont = Cont(n1);

    // the client moves to n2 (bounded: a paused node must not block the takeover forever)
    let started = Instant::now();
    let mut new = Raw::tcp(cl.port(1));
    new.level = 5;
    new.send(&crate::common::connect_packet(&opts));
    // the session may stay behind on the paused node (present 0): then the client subscribes
    // again, as a client must when its session is not present
    let present = match new.read(Duration::from_secs(30)) {
        Read_::Packet(0x20, body) => {
            assert_eq!(body[1], 0, "CONNACK on n2 while n1 is paused: {body:?}");
            body[0] & 1 == 1
        }
        other => panic!(
            "no CONNACK on n2 within 30 s while n1 is paused: {other:?}\n{}",
            cl.logs()
        ),
    };
    eprintln!(
        "takeover from a paused node took {:?}, session present {present}",
        started.elapsed()
    );
    if !present {
        // n1 is paused: only n2 and n3 answer
        let mark = cl.filters_among(1, &[1, 2]);
        assert_eq!(new.subscribe(&filter, 1), vec![1]);
        cl.wait_filters_among(1, mark + 1, &[1, 2]);
    }

    drop(cont); // SIGCONT
    // the old connection on n1 is closed once n1 runs again
    old.expect_close(Duration::from_secs(15));
    // the new connection stays
    assert_eq!(
        new.read(Duration::from_secs(3)),
        Read_::Timeout,
        "n1 woke up and threw the client out of n2\n{}",
        cl.logs()
    );
    let mut p = Raw::v5(cl.port(2), &unique("p"));
    p.publish(&format!("{id}/x"), b"after the pause", 1);
    let (t, payload, _) = new.next_publish(Duration::from_secs(10));
    assert_eq!(
        (t, payload),
        (format!("{id}/x"), b"after the pause".to_vec())
    );
    // QoS 1 is at least once: right after a takeover from a node that was paused, a second
    // copy can come through the old node (seen about once in three loaded runs; what this
    // test guards is that the client stays on n2, above). Reported, not failed.
    if matches!(new.read(Duration::from_secs(1)), Read_::Packet(f, _) if f >> 4 == 3) {
        eprintln!("a QoS 1 duplicate after the takeover from the paused node");
    }
}
