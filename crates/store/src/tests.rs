//! Engine tests: every op survives a reopen; damaged files; expiry while down; bounds.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytestring::ByteString;
use midge_codec::{LastWill, Protocol, QoS, SubscriptionOptions, TopicName, WillProperties};
use midge_core::{DeliveryState, Message, SessionHeader, StoreOp};

use crate::{LogStore, StoreOptions};

fn opts(dir: &std::path::Path) -> StoreOptions {
    StoreOptions {
        dir: dir.to_path_buf(),
        ..StoreOptions::default()
    }
}

fn msg(topic: &str, payload: &str, qos: QoS) -> Arc<Message> {
    Arc::new(Message::new(
        TopicName::new(topic.to_string()).unwrap(),
        payload.to_string(),
        qos,
        false,
    ))
}

fn m2_origin() -> Option<midge_core::Origin> {
    Some(midge_core::Origin {
        client_id: "dev-1".into(),
        username: Some("maker".into()),
        received_ms: 1_700_000_000_123,
        cluster_id: 0,
    })
}

fn header(id: &str, expiry: u32) -> SessionHeader {
    SessionHeader {
        client_id: ByteString::from(id),
        username: Some(ByteString::from("user")),
        protocol: Protocol::V5,
        expiry_interval: expiry,
        will: None,
        will_at: None,
        disconnected_at: None,
    }
}

fn delivery(id: &str, seq: u64, msg: u64, state: DeliveryState) -> StoreOp {
    StoreOp::Delivery {
        client_id: ByteString::from(id),
        seq,
        msg,
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: vec![7],
        state,
    }
}

#[test]
fn every_op_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(opts(dir.path())).unwrap().store;
    let mut h = header("c1", 3600);
    h.will = Some(LastWill {
        topic: TopicName::new("will/c1").unwrap(),
        payload: "gone".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties {
            will_delay_interval: Some(30),
            ..Default::default()
        },
    });
    let m1 = msg("a/b", "one", QoS::AtLeastOnce);
    // the publisher is kept (the hub's rows name it after a restart); a client's own user
    // properties stay as they were
    let mut m2 = (*msg("a/c", "two", QoS::ExactlyOnce)).clone();
    m2.origin = m2_origin();
    m2.properties.user_properties = vec![("k".into(), "v".into())];
    let m2 = Arc::new(m2);
    let ops = vec![
        StoreOp::Session(Box::new(h.clone())),
        StoreOp::Subscribe {
            client_id: "c1".into(),
            filter: "a/#".into(),
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: midge_codec::RetainHandling::SendIfNew,
            },
            identifier: Some(7),
        },
        StoreOp::Subscribe {
            client_id: "c1".into(),
            filter: "gone/+".into(),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
            identifier: None,
        },
        StoreOp::Unsubscribe {
            client_id: "c1".into(),
            filter: "gone/+".into(),
        },
        StoreOp::Message { id: 1, msg: m1 },
        StoreOp::Message { id: 2, msg: m2 },
        delivery("c1", 1, 1, DeliveryState::AwaitPubAck(5)),
        delivery("c1", 2, 2, DeliveryState::Queued),
        delivery("c1", 2, 2, DeliveryState::AwaitPubComp(6)),
        StoreOp::InboundQos2 {
            client_id: "c1".into(),
            packet_id: 9,
            pending: true,
        },
        StoreOp::InboundQos2 {
            client_id: "c1".into(),
            packet_id: 10,
            pending: true,
        },
        StoreOp::InboundQos2 {
            client_id: "c1".into(),
            packet_id: 10,
            pending: false,
        },
        StoreOp::Retain {
            topic: "r/1".into(),
            msg: Some(msg("r/1", "kept", QoS::AtLeastOnce)),
        },
        StoreOp::Retain {
            topic: "r/2".into(),
            msg: Some(msg("r/2", "cleared", QoS::AtLeastOnce)),
        },
        StoreOp::Retain {
            topic: "r/2".into(),
            msg: None,
        },
        StoreOp::Session(Box::new(header("c2", 60))),
        StoreOp::SessionDelete("c2".into()),
    ];
    s.append(&ops).unwrap();
    s.sync().unwrap();
    drop(s);
    let o = LogStore::open(opts(dir.path())).unwrap();
    let r = o.restored;
    assert_eq!(r.sessions.len(), 1);
    let c1 = &r.sessions[0];
    assert_eq!(c1.header.client_id, "c1");
    assert_eq!(c1.header.will, h.will);
    assert_eq!(c1.header.expiry_interval, 3600);
    assert_eq!(c1.subscriptions.len(), 1);
    assert_eq!(c1.subscriptions[0].0, "a/#");
    assert!(c1.subscriptions[0].1.no_local);
    assert_eq!(c1.subscriptions[0].2, Some(7));
    let mut ds = c1.deliveries.clone();
    ds.sort_by_key(|d| d.seq);
    assert_eq!(ds.len(), 2);
    assert_eq!(ds[0].state, DeliveryState::AwaitPubAck(5));
    assert_eq!(ds[0].msg.payload, "one");
    assert_eq!(ds[0].sub_ids, vec![7]);
    assert_eq!(ds[1].state, DeliveryState::AwaitPubComp(6));
    assert_eq!(ds[1].msg.qos, QoS::ExactlyOnce);
    assert_eq!(ds[1].msg.origin, m2_origin());
    assert_eq!(
        ds[1].msg.properties.user_properties,
        vec![("k".into(), "v".into())]
    );
    assert_eq!(ds[0].msg.origin, None);
    assert_eq!(c1.inbound_qos2, vec![9]);
    assert_eq!(r.retained.len(), 1);
    assert_eq!(r.retained[0].payload, "kept");
    assert!(o.recovery.dropped.is_none());
}

#[test]
fn a_body_is_stored_once_and_freed_with_its_last_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(opts(dir.path())).unwrap().store;
    let big = Arc::new(Message::new(
        TopicName::new("t").unwrap(),
        vec![b'x'; 10_000],
        QoS::AtLeastOnce,
        false,
    ));
    let mut ops = vec![StoreOp::Message { id: 1, msg: big }];
    for c in 0..10 {
        let id = format!("c{c}");
        ops.push(StoreOp::Session(Box::new(header(&id, 60))));
        ops.push(delivery(&id, c + 1, 1, DeliveryState::Queued));
    }
    s.append(&ops).unwrap();
    assert!(
        s.live_bytes() < 12_000,
        "body stored once: {}",
        s.live_bytes()
    );
    let dels: Vec<StoreOp> = (0..10)
        .map(|c| StoreOp::DeliveryDelete {
            client_id: format!("c{c}").into(),
            seq: c + 1,
        })
        .collect();
    s.append(&dels).unwrap();
    assert!(s.live_bytes() < 1_000, "body freed: {}", s.live_bytes());
}

#[test]
fn steady_workload_is_compacted_and_does_not_grow() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.compact_min_bytes = 64 * 1024;
    let mut s = LogStore::open(o).unwrap().store;
    s.append(&[StoreOp::Session(Box::new(header("c", 60)))])
        .unwrap();
    let mut max = 0;
    for i in 1..20_000u64 {
        s.append(&[
            StoreOp::Message {
                id: i,
                msg: msg(
                    "t",
                    "0123456789012345678901234567890123456789",
                    QoS::AtLeastOnce,
                ),
            },
            delivery("c", i, i, DeliveryState::AwaitPubAck(1)),
        ])
        .unwrap();
        s.append(&[StoreOp::DeliveryDelete {
            client_id: "c".into(),
            seq: i,
        }])
        .unwrap();
        s.maybe_compact().unwrap();
        max = max.max(s.disk_bytes());
    }
    assert!(max < 200 * 1024, "store grew to {max} bytes");
}

#[test]
fn size_limit_refuses_writes_and_leaves_the_file_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(dir.path());
    o.max_bytes = 4096;
    let mut s = LogStore::open(o.clone()).unwrap().store;
    s.append(&[StoreOp::Session(Box::new(header("c", 60)))])
        .unwrap();
    let mut i = 0;
    let err = loop {
        i += 1;
        let r = s.append(&[
            StoreOp::Message {
                id: i,
                msg: msg("t", &"p".repeat(100), QoS::AtLeastOnce),
            },
            delivery("c", i, i, DeliveryState::Queued),
        ]);
        if let Err(e) = r {
            break e;
        }
        assert!(i < 1000);
    };
    assert!(err.is_full(), "{err}");
    assert!(s.disk_bytes() <= 4096);
    // acknowledgements free space: a full store drains, then takes new messages again
    let n = i - 1;
    s.append(&[StoreOp::DeliveryDelete {
        client_id: "c".into(),
        seq: 1,
    }])
    .unwrap();
    s.append(&[
        StoreOp::Message {
            id: 10_000,
            msg: msg("t", &"p".repeat(100), QoS::AtLeastOnce),
        },
        delivery("c", 10_000, 10_000, DeliveryState::Queued),
    ])
    .unwrap();
    assert!(s.disk_bytes() <= 4096);
    drop(s);
    let r = LogStore::open(o).unwrap();
    assert!(r.recovery.dropped.is_none());
    assert_eq!(r.restored.sessions[0].deliveries.len() as u64, n);
}

#[test]
fn expired_sessions_and_messages_are_dropped_with_the_wall_time_that_passed() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let w0 = SystemTime::now();
    let mut s = LogStore::open_at(opts(dir.path()), t0, w0).unwrap().store;
    let mut short = header("short", 10);
    short.disconnected_at = Some(Instant::now());
    let mut long = header("long", 3600);
    long.disconnected_at = Some(Instant::now());
    let mut m = Message::new(TopicName::new("t").unwrap(), "x", QoS::AtLeastOnce, false);
    m.expires_at = Some(Instant::now() + Duration::from_secs(20));
    let mut m2 = m.clone();
    m2.expires_at = Some(Instant::now() + Duration::from_secs(600));
    s.append(&[
        StoreOp::Session(Box::new(short)),
        StoreOp::Session(Box::new(long)),
        StoreOp::Message {
            id: 1,
            msg: Arc::new(m),
        },
        StoreOp::Message {
            id: 2,
            msg: Arc::new(m2),
        },
        delivery("long", 1, 1, DeliveryState::Queued),
        delivery("long", 2, 2, DeliveryState::Queued),
    ])
    .unwrap();
    drop(s);
    // the broker comes back 60 s later (wall clock)
    let later = SystemTime::now() + Duration::from_secs(60);
    let now = Instant::now();
    let o = LogStore::open_at(opts(dir.path()), now, later).unwrap();
    assert_eq!(o.recovery.expired_sessions, 1);
    assert_eq!(o.recovery.expired_messages, 1);
    let r = o.restored;
    assert_eq!(r.sessions.len(), 1);
    let long = &r.sessions[0];
    assert_eq!(long.header.client_id, "long");
    assert_eq!(long.deliveries.len(), 1);
    // 600 s expiry, 60 s passed: about 540 s left
    let left = long.deliveries[0]
        .msg
        .expires_at
        .unwrap()
        .duration_since(now);
    assert!(
        left > Duration::from_secs(530) && left <= Duration::from_secs(541),
        "{left:?}"
    );
    // disconnected 60 s before now
    let since = now.duration_since(long.header.disconnected_at.unwrap());
    assert!(since >= Duration::from_secs(59) && since <= Duration::from_secs(61));
}

#[test]
fn torn_tail_is_cut_saved_aside_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(opts(dir.path())).unwrap().store;
    s.append(&[StoreOp::Session(Box::new(header("a", 60)))])
        .unwrap();
    s.append(&[StoreOp::Session(Box::new(header("b", 60)))])
        .unwrap();
    let path = s.path().to_path_buf();
    let full = s.disk_bytes();
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(full - 3).unwrap();
    drop(f);
    let o = LogStore::open(opts(dir.path())).unwrap();
    let d = o.recovery.dropped.clone().unwrap();
    assert!(d.reason.contains("torn"), "{}", d.reason);
    assert!(d.saved_as.exists());
    assert_eq!(o.recovery.records, 1);
    assert_eq!(o.restored.sessions.len(), 1);
    assert_eq!(o.restored.sessions[0].header.client_id, "a");
    drop(o);
    // the file was rewritten whole: a second open finds nothing wrong
    let o = LogStore::open(opts(dir.path())).unwrap();
    assert!(o.recovery.dropped.is_none());
}

#[test]
fn flipped_byte_is_detected_by_the_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(opts(dir.path())).unwrap().store;
    s.append(&[StoreOp::Session(Box::new(header("a", 60)))])
        .unwrap();
    let mid = s.disk_bytes();
    s.append(&[StoreOp::Session(Box::new(header("b", 60)))])
        .unwrap();
    let path = s.path().to_path_buf();
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    let i = mid as usize + 12;
    bytes[i] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let o = LogStore::open(opts(dir.path())).unwrap();
    let d = o.recovery.dropped.unwrap();
    assert_eq!(d.offset, mid);
    assert_eq!(d.reason, "checksum mismatch");
    assert_eq!(o.restored.sessions.len(), 1);
}

#[test]
fn unreadable_file_is_moved_aside_and_the_store_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(crate::FILE_NAME), b"this is not a store").unwrap();
    let o = LogStore::open(opts(dir.path())).unwrap();
    let aside = o.recovery.moved_aside.unwrap();
    assert_eq!(std::fs::read(aside).unwrap(), b"this is not a store");
    assert!(o.restored.sessions.is_empty());
}

#[test]
fn a_data_folder_is_used_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = LogStore::open(opts(dir.path())).unwrap();
    let err = LogStore::open(opts(dir.path())).unwrap_err();
    assert!(err.to_string().contains("in use by another midge"), "{err}");
    drop(a);
    let b = LogStore::open(opts(dir.path())).unwrap();
    drop(b);
    // a lock left by a killed broker (its process is gone) is taken over
    std::fs::write(dir.path().join(crate::log::LOCK_NAME), "4194303999").unwrap();
    LogStore::open(opts(dir.path())).unwrap();
}

#[test]
fn newer_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Vec::from(&crate::MAGIC[..]);
    h.extend_from_slice(&2u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    std::fs::write(dir.path().join(crate::FILE_NAME), &h).unwrap();
    let err = LogStore::open(opts(dir.path())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("format version 2"), "{text}");
    assert!(text.contains("up to version 1"), "{text}");
    // the file is left alone
    assert_eq!(std::fs::read(dir.path().join(crate::FILE_NAME)).unwrap(), h);
}

/// The time the broker accepted a message is kept with it (the hub stores it as the row's
/// and datapoint's time, so a redelivery after a restart makes no second point); a record
/// without it (written by an older midge, or time unknown) reads as 0, and the internal
/// property never leaks into the message's own user properties.
#[test]
fn the_accept_time_round_trips_and_records_without_it_read_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(opts(dir.path())).unwrap().store;
    let with_origin = |payload: &str, received_ms: i64, username: Option<&str>| {
        let mut m = (*msg("t", payload, QoS::AtLeastOnce)).clone();
        m.origin = Some(midge_core::Origin {
            client_id: "dev".into(),
            username: username.map(Into::into),
            received_ms,
            cluster_id: 0,
        });
        m.properties.user_properties = vec![("own".into(), "x".into())];
        Arc::new(m)
    };
    let ops = vec![
        StoreOp::Session(Box::new(header("hub", 3600))),
        StoreOp::Message {
            id: 1,
            msg: with_origin("timed", 1_765_000_000_042, None),
        },
        StoreOp::Message {
            id: 2,
            msg: with_origin("untimed", 0, Some("u")),
        },
        delivery("hub", 1, 1, DeliveryState::AwaitPubAck(1)),
        delivery("hub", 2, 2, DeliveryState::Queued),
        StoreOp::Retain {
            topic: "t".into(),
            msg: Some({
                let mut m = (*with_origin("kept", 1_765_000_000_099, None)).clone();
                m.retain = true;
                Arc::new(m)
            }),
        },
    ];
    s.append(&ops).unwrap();
    s.sync().unwrap();
    drop(s);
    let r = LogStore::open(opts(dir.path())).unwrap().restored;
    let mut ds = r.sessions[0].deliveries.clone();
    ds.sort_by_key(|d| d.seq);
    let origin = |m: &Message| m.origin.clone().unwrap();
    assert_eq!(ds[0].msg.payload, "timed");
    assert_eq!(origin(&ds[0].msg).received_ms, 1_765_000_000_042);
    assert_eq!(origin(&ds[0].msg).username, None);
    assert_eq!(ds[1].msg.payload, "untimed");
    assert_eq!(origin(&ds[1].msg).received_ms, 0);
    assert_eq!(origin(&ds[1].msg).username.as_deref(), Some("u"));
    for d in &ds {
        assert_eq!(
            d.msg.properties.user_properties,
            vec![("own".into(), "x".into())]
        );
    }
    assert_eq!(origin(&r.retained[0]).received_ms, 1_765_000_000_099);
}
