//! Store files of every format version, checked in: a normal one, one with a torn tail, one
//! with a flipped byte. Loading them must keep working in every later midge.
//!
//! Regenerate (only when adding a new format version!) with
//! `MIDGE_WRITE_GOLDEN=1 cargo test -p midge-store --test golden`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytestring::ByteString;
use midge_codec::{Protocol, QoS, SubscriptionOptions, TopicName};
use midge_core::{DeliveryState, Message, SessionHeader, StoreOp};
use midge_store::{LogStore, StoreOptions};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn ops() -> Vec<StoreOp> {
    let mut ops = Vec::new();
    for (i, (id, protocol)) in [("dev-311", Protocol::V311), ("dev-v5", Protocol::V5)]
        .into_iter()
        .enumerate()
    {
        ops.push(StoreOp::Session(Box::new(SessionHeader {
            client_id: id.into(),
            username: None,
            protocol,
            expiry_interval: u32::MAX,
            will: None,
            will_at: None,
            disconnected_at: None,
        })));
        ops.push(StoreOp::Subscribe {
            client_id: id.into(),
            filter: "sensors/#".into(),
            options: SubscriptionOptions::qos(QoS::ExactlyOnce),
            identifier: (protocol == Protocol::V5).then_some(3),
        });
        let n = i as u64 * 10;
        for k in 1..=3u64 {
            ops.push(StoreOp::Message {
                id: n + k,
                msg: Arc::new(Message::new(
                    TopicName::new(format!("sensors/{k}")).unwrap(),
                    format!("{id} reading {k}"),
                    QoS::ExactlyOnce,
                    false,
                )),
            });
            let state = match k {
                1 => DeliveryState::AwaitPubRec(1),
                2 => DeliveryState::AwaitPubComp(2),
                _ => DeliveryState::Queued,
            };
            ops.push(StoreOp::Delivery {
                client_id: id.into(),
                seq: n + k,
                msg: n + k,
                qos: QoS::ExactlyOnce,
                retain: false,
                sub_ids: Vec::new(),
                state,
            });
        }
        ops.push(StoreOp::InboundQos2 {
            client_id: ByteString::from(id),
            packet_id: 42,
            pending: true,
        });
    }
    ops.push(StoreOp::Retain {
        topic: "status".into(),
        msg: Some(Arc::new(Message::new(
            TopicName::new("status").unwrap(),
            "online",
            QoS::AtLeastOnce,
            true,
        ))),
    });
    ops
}

fn open_copy(name: &str) -> (tempfile::TempDir, midge_store::Opened) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(golden(name), dir.path().join(midge_store::FILE_NAME)).unwrap();
    let o = LogStore::open(StoreOptions {
        dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    })
    .unwrap();
    (dir, o)
}

#[test]
fn write_golden_files_when_asked() {
    if std::env::var_os("MIDGE_WRITE_GOLDEN").is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = LogStore::open(StoreOptions {
        dir: dir.path().to_path_buf(),
        ..StoreOptions::default()
    })
    .unwrap()
    .store;
    // one op per append, as a running broker would leave them (not compacted)
    for op in ops() {
        s.append(std::slice::from_ref(&op)).unwrap();
    }
    s.sync().unwrap();
    let bytes = std::fs::read(s.path()).unwrap();
    std::fs::write(golden("v1-normal.store"), &bytes).unwrap();
    std::fs::write(golden("v1-truncated.store"), &bytes[..bytes.len() - 7]).unwrap();
    let mut corrupt = bytes.clone();
    let i = bytes.len() * 2 / 3;
    corrupt[i] ^= 0x01;
    std::fs::write(golden("v1-corrupt.store"), &corrupt).unwrap();
}

#[test]
fn v1_normal_loads_completely() {
    let (_d, o) = open_copy("v1-normal.store");
    assert!(o.recovery.dropped.is_none());
    assert_eq!(o.recovery.records as usize, ops().len());
    let r = o.restored;
    assert_eq!(r.sessions.len(), 2);
    let v3 = &r.sessions[0];
    assert_eq!(v3.header.client_id, "dev-311");
    assert_eq!(v3.header.protocol, Protocol::V311);
    assert_eq!(v3.deliveries.len(), 3);
    assert_eq!(v3.inbound_qos2, vec![42]);
    let v5 = &r.sessions[1];
    assert_eq!(v5.subscriptions[0].2, Some(3));
    let mut ds = v5.deliveries.clone();
    ds.sort_by_key(|d| d.seq);
    assert_eq!(ds[0].state, DeliveryState::AwaitPubRec(1));
    assert_eq!(ds[1].state, DeliveryState::AwaitPubComp(2));
    assert_eq!(ds[2].state, DeliveryState::Queued);
    assert_eq!(ds[2].msg.payload, "dev-v5 reading 3");
    assert_eq!(r.retained.len(), 1);
    assert_eq!(r.retained[0].payload, "online");
}

#[test]
fn v1_truncated_recovers_all_but_the_torn_record() {
    let (_d, o) = open_copy("v1-truncated.store");
    let dropped = o.recovery.dropped.clone().expect("a torn tail");
    assert!(
        dropped.reason.starts_with("torn record"),
        "{}",
        dropped.reason
    );
    assert_eq!(o.recovery.records as usize, ops().len() - 1);
    // the last record (the retained message) is the one lost
    assert!(o.restored.retained.is_empty());
    assert_eq!(o.restored.sessions.len(), 2);
    assert!(dropped.saved_as.exists());
}

#[test]
fn v1_corrupt_stops_at_the_bad_record_and_keeps_the_rest_aside() {
    let (_d, o) = open_copy("v1-corrupt.store");
    let dropped = o.recovery.dropped.clone().expect("a corrupt record");
    assert_eq!(dropped.reason, "checksum mismatch");
    assert!(o.recovery.records > 0 && (o.recovery.records as usize) < ops().len());
    let saved = std::fs::read(&dropped.saved_as).unwrap();
    assert_eq!(saved.len() as u64, dropped.bytes);
    // dev-311 came first and is whole
    assert_eq!(o.restored.sessions[0].header.client_id, "dev-311");
    assert_eq!(o.restored.sessions[0].deliveries.len(), 3);
}
