//! Flow tests of the last values: the last message of every topic, kept by the broker on
//! every publish (not `$` topics), bounded, least recently updated forgotten first.

use super::*;
use crate::LAST_VALUE_MAX_PAYLOAD;

fn all(w: &World, filter: &str) -> Vec<crate::LastValue> {
    let f = TopicFilter::new(filter).unwrap();
    w.broker.last_values(&f, None, usize::MAX).0
}

fn topics(w: &World, filter: &str) -> Vec<String> {
    all(w, filter).iter().map(|v| v.topic.to_string()).collect()
}

fn with_topics(max: usize) -> World {
    let mut c = Config::default();
    c.last_values_topics = max;
    World::with(c)
}

#[test]
fn each_publish_updates_its_topic_with_the_broker_time_qos_retain_and_count() {
    let mut w = World::new();
    w.broker.set_wall_clock(w.now, 1_000_000);
    let dev = w.connect(Protocol::V5, "dev", true);
    w.publish(dev, "s/a", "1", QoS::AtLeastOnce, true, 1);
    w.advance(2);
    w.publish(dev, "s/a", "2", QoS::AtMostOnce, false, 0);
    w.publish(dev, "s/b", "x", QoS::ExactlyOnce, false, 2);
    let a = all(&w, "s/a");
    assert_eq!(a.len(), 1);
    let a = &a[0];
    assert_eq!(a.payload.as_deref(), Some(&b"2"[..]));
    assert_eq!(
        (a.size, a.qos, a.retain, a.ts, a.count),
        (1, QoS::AtMostOnce, false, 1_002_000, 2)
    );
    assert_eq!(a.client_id.as_deref(), Some("dev"));
    assert_eq!(topics(&w, "#"), ["s/a", "s/b"]);
    assert_eq!(topics(&w, "+/b"), ["s/b"]);
    assert_eq!(all(&w, "s/b")[0].qos, QoS::ExactlyOnce);
    // the broker's own messages (rules, bridges) count too
    w.publish_internal("from/inside", "i");
    assert_eq!(all(&w, "from/inside")[0].count, 1);
    assert_eq!(w.broker.stats().last_values, 3);
    // a retained message keeps its flag; published with retain, it is the last value
    w.publish(dev, "s/b", "r", QoS::AtMostOnce, true, 0);
    assert!(all(&w, "s/b")[0].retain);
}

#[test]
fn dollar_topics_are_not_kept() {
    let mut w = World::new();
    let dev = w.connect(Protocol::V5, "dev", true);
    w.publish_internal("$SYS/broker/uptime", "1");
    w.publish(dev, "$app/x", "1", QoS::AtMostOnce, false, 0);
    w.publish(dev, "a", "1", QoS::AtMostOnce, false, 0);
    assert_eq!(topics(&w, "#"), ["a"]);
    assert!(all(&w, "$SYS/#").is_empty());
    assert!(all(&w, "$app/x").is_empty());
    assert_eq!(w.broker.stats().last_values, 1);
}

#[test]
fn the_least_recently_updated_topic_is_forgotten_first_and_counted() {
    let mut w = with_topics(3);
    let dev = w.connect(Protocol::V311, "dev", true);
    for t in ["t/0", "t/1", "t/2"] {
        w.publish(dev, t, "x", QoS::AtMostOnce, false, 0);
    }
    w.publish(dev, "t/0", "y", QoS::AtMostOnce, false, 0);
    w.publish(dev, "t/3", "x", QoS::AtMostOnce, false, 0);
    assert_eq!(topics(&w, "#"), ["t/0", "t/2", "t/3"]);
    assert_eq!(w.broker.stats().last_values_evicted, 1);
    // a forgotten topic starts counting again
    w.publish(dev, "t/1", "x", QoS::AtMostOnce, false, 0);
    assert_eq!(topics(&w, "#"), ["t/0", "t/1", "t/3"]);
    assert_eq!(all(&w, "t/1")[0].count, 1);
    assert_eq!(all(&w, "t/0")[0].count, 2);
    assert_eq!(w.broker.stats().last_values_evicted, 2);
}

#[test]
fn the_bound_holds_with_many_new_topics_and_the_oldest_go_in_batches() {
    let mut w = with_topics(64);
    let dev = w.connect(Protocol::V311, "dev", true);
    for i in 0..64 {
        w.publish(dev, &format!("t/{i}"), "x", QoS::AtMostOnce, false, 0);
    }
    // t/0 becomes the most recently updated
    w.publish(dev, "t/0", "y", QoS::AtMostOnce, false, 0);
    w.publish(dev, "new/0", "x", QoS::AtMostOnce, false, 0);
    // a batch of 64 / 32 = 2 went: t/1 and t/2, the least recently updated
    let kept = topics(&w, "#");
    assert_eq!(kept.len(), 63);
    assert!(kept.contains(&"t/0".to_owned()));
    assert!(!kept.contains(&"t/1".to_owned()) && !kept.contains(&"t/2".to_owned()));
    assert!(kept.contains(&"t/3".to_owned()));
    for i in 0..1000 {
        w.publish(dev, &format!("more/{i}"), "x", QoS::AtMostOnce, false, 0);
        assert!(w.broker.stats().last_values <= 64);
    }
    let s = w.broker.stats();
    assert_eq!(s.last_values as u64 + s.last_values_evicted, 64 + 1 + 1000);
    // the newest are kept
    assert_eq!(all(&w, "more/999").len(), 1);
}

#[test]
fn off_keeps_nothing() {
    let mut w = with_topics(0);
    let dev = w.connect(Protocol::V311, "dev", true);
    w.publish(dev, "a", "1", QoS::AtMostOnce, false, 0);
    assert!(all(&w, "#").is_empty());
    assert_eq!(w.broker.stats().last_values, 0);
}

#[test]
fn answers_are_bounded_in_topic_order_and_filtered_by_time() {
    let mut w = World::new();
    w.broker.set_wall_clock(w.now, 1_000_000);
    let dev = w.connect(Protocol::V311, "dev", true);
    for t in ["e", "d", "c"] {
        w.publish(dev, t, "x", QoS::AtMostOnce, false, 0);
    }
    w.advance(1);
    for t in ["b", "a"] {
        w.publish(dev, t, "x", QoS::AtMostOnce, false, 0);
    }
    let f = TopicFilter::new("#").unwrap();
    let (list, matched) = w.broker.last_values(&f, None, 2);
    let names: Vec<&str> = list.iter().map(|v| &*v.topic).collect();
    assert_eq!((names, matched), (vec!["a", "b"], 5));
    let (list, matched) = w.broker.last_values(&f, Some(1_001_000), 10);
    let names: Vec<&str> = list.iter().map(|v| &*v.topic).collect();
    assert_eq!((names, matched), (vec!["a", "b"], 2));
    let (list, matched) = w
        .broker
        .last_values(&TopicFilter::new("c").unwrap(), None, 0);
    assert_eq!((list.len(), matched), (0, 1));
}

#[test]
fn a_quiet_topic_keeps_its_own_copy_and_a_large_payload_only_its_size() {
    let mut w = World::new();
    let dev = w.connect(Protocol::V311, "dev", true);
    let mut p = Publish::new(TopicName::new("quiet").unwrap(), Bytes::from_static(b"v1"));
    p.qos = QoS::AtMostOnce;
    w.send(dev, Packet::Publish(p));
    let big = vec![b'x'; LAST_VALUE_MAX_PAYLOAD + 1];
    w.publish(
        dev,
        "big",
        std::str::from_utf8(&big).unwrap(),
        QoS::AtMostOnce,
        false,
        0,
    );
    let before = all(&w, "quiet")[0].payload.clone().unwrap();
    assert_eq!(before.as_ptr(), b"v1".as_ptr(), "no copy when published");
    let b = &all(&w, "big")[0];
    assert_eq!(
        (b.payload.as_ref(), b.size),
        (None, LAST_VALUE_MAX_PAYLOAD + 1)
    );
    // not replaced for a whole tick: copied out of the buffer it came in
    w.advance(1);
    w.advance(1);
    let after = all(&w, "quiet")[0].clone();
    assert_eq!(after.payload.as_deref(), Some(&b"v1"[..]));
    assert_ne!(after.payload.unwrap().as_ptr(), b"v1".as_ptr());
    assert_eq!(after.count, 1);
    let b = &all(&w, "big")[0];
    assert_eq!(
        (b.payload.as_ref(), b.size),
        (None, LAST_VALUE_MAX_PAYLOAD + 1)
    );
}
