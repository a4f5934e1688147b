//! Every durable item survives a SIGKILL of the broker, for MQTT 3.1.1 and 5.0: queued
//! messages of offline sessions, subscriptions with their options and identifiers, outbound
//! in-flight QoS 1/2 (PUBLISH with DUP, PUBREL past PUBREC), inbound QoS 2 ids awaiting
//! PUBREL (no second delivery), retained messages, session expiry and delayed wills across
//! the time the broker was down; damaged store files at start.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::Midge;
use common::persistence::{Client, broker};
use midge_codec::{Connect, LastWill, Packet, Protocol, PubAck, QoS, ReasonCode, TopicName};

const BOTH: [Protocol; 2] = [Protocol::V311, Protocol::V5];
const T: Duration = Duration::from_secs(5);

fn next_publish(c: &mut Client) -> midge_codec::Publish {
    loop {
        match c.recv(T) {
            Some(Packet::Publish(p)) => return p,
            Some(_) => continue,
            None => panic!("no PUBLISH"),
        }
    }
}

#[test]
fn queued_messages_and_subscriptions_survive_sigkill() {
    for v in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = broker(&data, "");
        let (mut sub, _) = Client::connect(b.port, v, "sub", false);
        let id = (v == Protocol::V5).then_some(42);
        sub.subscribe("q/#", QoS::ExactlyOnce, id);
        sub.disconnect();
        let (mut publ, _) = Client::connect(b.port, v, "pub", true);
        for i in 1..=5u16 {
            publ.publish(
                "q/1",
                format!("one-{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
                i,
            );
        }
        for i in 6..=8u16 {
            publ.publish(
                "q/2",
                format!("two-{i}").as_bytes(),
                QoS::ExactlyOnce,
                false,
                i,
            );
        }
        b.kill();
        let b = broker(&data, "");
        let (mut sub, present) = Client::connect(b.port, v, "sub", false);
        assert!(present, "{v:?}: session restored");
        let mut got = Vec::new();
        for _ in 0..8 {
            let p = next_publish(&mut sub);
            assert!(!p.dup);
            if v == Protocol::V5 {
                assert_eq!(p.properties.subscription_identifiers, vec![42]);
            }
            got.push((String::from_utf8_lossy(&p.payload).into_owned(), p.qos));
            sub.ack(&p);
        }
        // the three QoS 2 flows finish: a PUBREL for each PUBREC
        let mut rels = 0;
        while let Some(p) = sub.recv(Duration::from_millis(500)) {
            if let Packet::PubRel(r) = p {
                sub.send(&Packet::PubComp(PubAck::new(r.packet_id)));
                rels += 1;
            }
        }
        assert_eq!(rels, 3);
        let want: Vec<(String, QoS)> = (1..=5)
            .map(|i| (format!("one-{i}"), QoS::AtLeastOnce))
            .chain((6..=8).map(|i| (format!("two-{i}"), QoS::ExactlyOnce)))
            .collect();
        assert_eq!(got, want, "{v:?}");
        // the subscription itself came back: a new message is routed
        let (mut publ, _) = Client::connect(b.port, v, "pub2", true);
        publ.publish("q/3", b"live", QoS::AtLeastOnce, false, 1);
        assert_eq!(&next_publish(&mut sub).payload[..], b"live");
    }
}

#[test]
fn inflight_messages_are_resent_with_dup_and_pubrel_after_sigkill() {
    for v in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = broker(&data, "");
        let (mut sub, _) = Client::connect(b.port, v, "sub", false);
        sub.subscribe("f/#", QoS::ExactlyOnce, None);
        let (mut publ, _) = Client::connect(b.port, v, "pub", true);
        publ.publish("f/1", b"unacked", QoS::AtLeastOnce, false, 1);
        publ.publish("f/2", b"received", QoS::ExactlyOnce, false, 2);
        let p1 = next_publish(&mut sub);
        let p2 = next_publish(&mut sub);
        assert_eq!(&p2.payload[..], b"received");
        // PUBREC for the QoS 2 one; the PUBREL that answers it is sent once that is durable
        sub.ack(&p2);
        assert_eq!(sub.recv(T), Some(Packet::PubRel(PubAck::new(p2.packet_id))));
        b.kill();
        let b = broker(&data, "");
        let (mut sub, present) = Client::connect(b.port, v, "sub", false);
        assert!(present);
        let again = next_publish(&mut sub);
        assert!(again.dup, "{v:?}: DUP on redelivery");
        assert_eq!(
            (again.packet_id, &again.payload[..]),
            (p1.packet_id, &b"unacked"[..])
        );
        assert_eq!(
            sub.recv(T),
            Some(Packet::PubRel(PubAck::new(p2.packet_id))),
            "{v:?}"
        );
        sub.send(&Packet::PubAck(PubAck::new(p1.packet_id)));
        sub.send(&Packet::PubComp(PubAck::new(p2.packet_id)));
        // nothing else comes
        assert_eq!(sub.recv(Duration::from_millis(500)), None);
    }
}

#[test]
fn inbound_qos2_awaiting_pubrel_is_not_delivered_twice_after_sigkill() {
    for v in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = broker(&data, "");
        let (mut sub, _) = Client::connect(b.port, v, "sub", false);
        sub.subscribe("x", QoS::AtLeastOnce, None);
        let (mut publ, _) = Client::connect(b.port, v, "pub", false);
        publ.publish_packet("x", b"once", QoS::ExactlyOnce, false, 7);
        assert!(matches!(publ.recv(T), Some(Packet::PubRec(_))));
        let p = next_publish(&mut sub);
        sub.ack(&p);
        std::thread::sleep(Duration::from_millis(200));
        b.kill();
        let b = broker(&data, "");
        let (mut sub, _) = Client::connect(b.port, v, "sub", false);
        let (mut publ, present) = Client::connect(b.port, v, "pub", false);
        assert!(present);
        // the publisher did not see PUBCOMP, so it sends the PUBLISH again with DUP
        let mut again = midge_codec::Publish::new(TopicName::new("x").unwrap(), &b"once"[..]);
        again.qos = QoS::ExactlyOnce;
        again.packet_id = 7;
        again.dup = true;
        publ.send(&Packet::Publish(again));
        assert!(matches!(publ.recv(T), Some(Packet::PubRec(_))));
        publ.send(&Packet::PubRel(PubAck::new(7)));
        let comp = publ.recv(T);
        assert!(
            matches!(comp, Some(Packet::PubComp(ref c)) if c.reason == ReasonCode::SUCCESS),
            "{comp:?}"
        );
        assert_eq!(
            sub.recv(Duration::from_millis(700)),
            None,
            "{v:?}: delivered twice"
        );
    }
}

#[test]
fn retained_messages_survive_and_cleared_ones_stay_cleared() {
    for v in BOTH {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = broker(&data, "");
        let (mut publ, _) = Client::connect(b.port, v, "pub", true);
        publ.publish("r/kept", b"on", QoS::AtLeastOnce, true, 1);
        publ.publish("r/gone", b"x", QoS::AtLeastOnce, true, 2);
        publ.publish("r/gone", b"", QoS::AtLeastOnce, true, 3);
        b.kill();
        let b = broker(&data, "");
        let (mut sub, _) = Client::connect(b.port, v, "s", true);
        sub.subscribe("r/#", QoS::AtLeastOnce, None);
        let p = next_publish(&mut sub);
        assert!(p.retain);
        assert_eq!((p.topic.as_str(), &p.payload[..]), ("r/kept", &b"on"[..]));
        assert_eq!(sub.recv(Duration::from_millis(500)), None);
    }
}

#[test]
fn session_expiry_counts_the_time_the_broker_was_down() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, "");
    for (id, expiry) in [("short", 1u32), ("long", 3600)] {
        let mut c = Connect::new(Protocol::V5, id);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(expiry);
        let (cl, _) = Client::connect_with(b.port, c);
        cl.disconnect();
    }
    std::thread::sleep(Duration::from_millis(300));
    b.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let b = broker(&data, "");
    for (id, present) in [("short", false), ("long", true)] {
        let mut c = Connect::new(Protocol::V5, id);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        let (_, p) = Client::connect_with(b.port, c);
        assert_eq!(p, present, "{id}");
    }
}

#[test]
fn a_pending_delayed_will_is_published_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, "");
    let mut c = Connect::new(Protocol::V5, "dying");
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(600);
    let mut will = LastWill {
        topic: TopicName::new("wills/dying").unwrap(),
        payload: "bye".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    will.properties.will_delay_interval = Some(2);
    c.will = Some(will);
    let (_dying, _) = Client::connect_with(b.port, c);
    let (mut watch, _) = Client::connect(b.port, Protocol::V311, "watch", false);
    watch.subscribe("wills/#", QoS::AtLeastOnce, None);
    watch.disconnect();
    std::thread::sleep(Duration::from_millis(200));
    b.kill();
    let b = broker(&data, "");
    let (mut watch, _) = Client::connect(b.port, Protocol::V311, "watch", false);
    // not before its delay...
    assert_eq!(watch.recv(Duration::from_millis(1000)), None);
    // ...then once
    let p = next_publish(&mut watch);
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("wills/dying", &b"bye"[..])
    );
}

#[test]
fn store_bytes_are_published_in_sys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, "");
    let (mut c, _) = Client::connect(b.port, Protocol::V5, "sys", true);
    c.subscribe("$SYS/broker/store/bytes", QoS::AtMostOnce, None);
    let p = next_publish(&mut c);
    let n: u64 = String::from_utf8_lossy(&p.payload).parse().unwrap();
    assert!(n >= 16, "{n}");
}

#[test]
fn damaged_and_foreign_store_files_are_handled_at_start() {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../store/tests/golden");
    // a torn tail: the broker starts, says what it dropped, keeps the rest
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(golden.join("v1-truncated.store"), data.join("midge.store")).unwrap();
    let b = broker(&data, "");
    let log = b.log();
    assert!(log.contains("damaged tail dropped"), "{log}");
    assert!(log.contains("dropped_bytes"), "{log}");
    let (mut c, present) = Client::connect(b.port, Protocol::V311, "dev-311", false);
    assert!(present);
    // its two in-flight QoS 2 (PUBLISH DUP, PUBREL) and the queued one come back
    let mut kinds = Vec::new();
    while let Some(p) = c.recv(Duration::from_millis(700)) {
        kinds.push(match p {
            Packet::Publish(p) if p.dup => "publish-dup",
            Packet::Publish(_) => "publish",
            Packet::PubRel(_) => "pubrel",
            _ => "other",
        });
    }
    assert_eq!(kinds, vec!["publish-dup", "pubrel", "publish"]);
    b.stop();

    // not a store at all: moved aside, the broker starts empty
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("midge.store"), b"garbage garbage garbage").unwrap();
    let b = broker(&data, "");
    assert!(b.log().contains("moved aside"), "{}", b.log());
    let aside = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("midge.store.unreadable-")
        });
    assert!(aside);
    b.stop();

    // a newer format: refused with a clear message, the file untouched
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut newer = b"MIDGELOG".to_vec();
    newer.extend_from_slice(&9u32.to_le_bytes());
    newer.extend_from_slice(&0u32.to_le_bytes());
    std::fs::write(data.join("midge.store"), &newer).unwrap();
    let (code, err) = Midge::serve()
        .config(&format!("[persistence]\ndir = \"{}\"\n", data.display()))
        .spawn()
        .wait_exit();
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("format version 9"), "{err}");
    assert_eq!(std::fs::read(data.join("midge.store")).unwrap(), newer);
}

#[test]
fn no_persistence_flag_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let b = Midge::serve()
        .dir(dir.path())
        .args(&["--no-persistence"])
        .start();
    let port = b.port;
    let (c, _) = Client::connect(port, Protocol::V5, "p", false);
    c.disconnect();
    b.kill();
    assert!(!dir.path().join("data").exists());
}

#[test]
fn a_full_store_refuses_qos1_publishes_instead_of_losing_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let b = broker(&data, "max_bytes = 65536\n");
    let (mut sub, _) = Client::connect(b.port, Protocol::V5, "slow", false);
    sub.subscribe("full/#", QoS::AtLeastOnce, None);
    sub.disconnect();
    // MQTT 5: PUBACK 0x97 (Quota exceeded) once the store is full
    let (mut publ, _) = Client::connect(b.port, Protocol::V5, "p5", true);
    let payload = vec![b'x'; 1000];
    let mut accepted = 0u16;
    let mut refused = false;
    for id in 1..=200u16 {
        publ.publish_packet("full/a", &payload, QoS::AtLeastOnce, false, id);
        match publ.recv(T) {
            Some(Packet::PubAck(a)) if a.reason == ReasonCode::SUCCESS => accepted += 1,
            Some(Packet::PubAck(a)) if a.reason == ReasonCode::QUOTA_EXCEEDED => {
                refused = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused, "never refused after {accepted} publishes");
    assert!(accepted > 10, "{accepted}");
    assert!(b.log().contains("store full"), "{}", b.log());
    // MQTT 3.1.1 has no refusal: the connection is closed instead of a PUBACK
    let (mut p3, _) = Client::connect(b.port, Protocol::V311, "p3", true);
    p3.publish_packet("full/b", &payload, QoS::AtLeastOnce, false, 1);
    assert_eq!(p3.recv(T), None);
    assert!(p3.closed);
    // every acknowledged message is there; acknowledging them frees the store
    b.kill();
    let b = broker(&data, "max_bytes = 65536\n");
    let (mut sub, _) = Client::connect(b.port, Protocol::V5, "slow", false);
    let mut got = 0;
    while let Some(p) = sub.recv(Duration::from_millis(1000)) {
        if let Packet::Publish(p) = p {
            got += 1;
            sub.ack(&p);
        }
    }
    assert_eq!(got, accepted);
    std::thread::sleep(Duration::from_millis(300));
    let (mut publ, _) = Client::connect(b.port, Protocol::V5, "p5", true);
    publ.publish("full/a", &payload, QoS::AtLeastOnce, false, 1);
}

#[test]
fn every_sync_mode_keeps_acknowledged_messages_across_sigkill() {
    for mode in [
        "sync = \"always\"\n",
        "sync = \"periodic\"\nsync_interval_ms = 200\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let b = broker(&data, mode);
        let (mut sub, _) = Client::connect(b.port, Protocol::V311, "sub", false);
        sub.subscribe("m", QoS::AtLeastOnce, None);
        sub.disconnect();
        let (mut publ, _) = Client::connect(b.port, Protocol::V5, "pub", true);
        for i in 1..=20u16 {
            publ.publish("m", format!("{i}").as_bytes(), QoS::AtLeastOnce, false, i);
        }
        b.kill();
        let b = broker(&data, mode);
        let (mut sub, present) = Client::connect(b.port, Protocol::V311, "sub", false);
        assert!(present, "{mode}");
        let mut got = Vec::new();
        while let Some(p) = sub.recv(Duration::from_millis(700)) {
            if let Packet::Publish(p) = p {
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
                sub.ack(&p);
            }
        }
        let want: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
        assert_eq!(got, want, "{mode}");
    }
}

/// A real ENOSPC: the data folder on a 256 KiB tmpfs (needs root for `mount`; skipped
/// without it).
#[test]
fn a_real_full_disk_refuses_publishes_and_the_broker_restarts_on_it() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _guard = Mount(mnt.clone());
    // the data folder is the tmpfs; the broker's config and log stay beside it, on real disk
    let data = dir.path().join("data");
    std::os::unix::fs::symlink(&mnt, &data).unwrap();
    let b = broker(&data, "");
    let (mut sub, _) = Client::connect(b.port, Protocol::V5, "slow", false);
    sub.subscribe("full/#", QoS::AtLeastOnce, None);
    sub.disconnect();
    let (mut publ, _) = Client::connect(b.port, Protocol::V5, "p5", true);
    let payload = vec![b'y'; 2000];
    let mut accepted = 0u16;
    let mut refused = false;
    for id in 1..=400u16 {
        publ.publish_packet("full/a", &payload, QoS::AtLeastOnce, false, id);
        match publ.recv(T) {
            Some(Packet::PubAck(a)) if a.reason == ReasonCode::SUCCESS => accepted += 1,
            Some(Packet::PubAck(a)) if a.reason == ReasonCode::QUOTA_EXCEEDED => {
                refused = true;
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused, "never refused after {accepted} publishes");
    assert!(b.log().contains("disk full"), "{}", b.log());
    b.kill();
    // the disk is still full: the broker starts anyway and delivers what it acknowledged
    let b = broker(&data, "");
    assert!(b.log().contains("disk full at start"), "{}", b.log());
    let (mut sub, present) = Client::connect(b.port, Protocol::V5, "slow", false);
    assert!(present);
    let mut got = 0;
    while let Some(p) = sub.recv(Duration::from_millis(1000)) {
        if let Packet::Publish(p) = p {
            got += 1;
            sub.ack(&p);
        }
    }
    assert_eq!(got, accepted);
    b.kill();
}
