//! Throughput of durable QoS 1 to a persistent session (measured, not asserted; ignored by
//! default): 4 publishers -> 1 persistent subscriber, 64-byte payloads, against midge with
//! persistence (group commit), midge memory-only and mosquitto (not durable) on the same
//! machine in the same run.
//!
//! `cargo test --release -p midge --test it persistence_perf:: -- --ignored --nocapture`
//! (`MIDGE_PERF_COUNT` = messages per publisher, default 50,000).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Mosquitto;
use common::persistence::{Client, broker};
use midge_codec::bytes::BytesMut;
use midge_codec::{Packet, Protocol, PubAck, Publish, QoS, TopicName};

const PUBLISHERS: usize = 4;
const WINDOW: usize = 256;

fn publisher(port: u16, idx: usize, count: usize) {
    let (c, _) = Client::connect(port, Protocol::V311, &format!("perf-pub-{idx}"), true);
    let mut s: TcpStream = c.stream;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let topic = TopicName::new(format!("perf/{idx}")).unwrap();
    let payload = vec![b'x'; 64];
    let (mut sent, mut acked, mut id) = (0usize, 0usize, 0u16);
    let mut out = BytesMut::new();
    let mut inb = BytesMut::new();
    let mut tmp = vec![0u8; 65536];
    while acked < count {
        out.clear();
        while sent < count && sent - acked < WINDOW {
            id = if id == u16::MAX { 1 } else { id + 1 };
            let mut p = Publish::new(topic.clone(), payload.clone());
            p.qos = QoS::AtLeastOnce;
            p.packet_id = id;
            Packet::Publish(p).encode(Protocol::V311, &mut out).unwrap();
            sent += 1;
        }
        if !out.is_empty() {
            s.write_all(&out).unwrap();
        }
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "broker closed");
        inb.extend_from_slice(&tmp[..n]);
        while let Ok(Some(p)) = midge_codec::decode(&mut inb, Protocol::V311, u32::MAX) {
            if let Packet::PubAck(_) = p {
                acked += 1;
            }
        }
    }
}

/// Count `total` PUBLISHes, acknowledging them in batches; returns when all arrived.
fn subscriber(mut c: Client, total: usize) -> Instant {
    let mut s = c.stream.try_clone().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut inb = BytesMut::new();
    let mut out = BytesMut::new();
    let mut tmp = vec![0u8; 65536];
    let mut got = 0;
    c.closed = false;
    while got < total {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "broker closed after {got}");
        inb.extend_from_slice(&tmp[..n]);
        out.clear();
        while let Ok(Some(p)) = midge_codec::decode(&mut inb, Protocol::V311, u32::MAX) {
            if let Packet::Publish(p) = p {
                got += 1;
                Packet::PubAck(PubAck::new(p.packet_id))
                    .encode(Protocol::V311, &mut out)
                    .unwrap();
            }
        }
        s.write_all(&out).unwrap();
    }
    Instant::now()
}

fn run(port: u16, count: usize) -> f64 {
    let (mut sub, _) = Client::connect(port, Protocol::V311, "perf-sub", false);
    sub.subscribe("perf/#", QoS::AtLeastOnce, None);
    let total = count * PUBLISHERS;
    let start = Instant::now();
    let sub_t = std::thread::spawn(move || subscriber(sub, total));
    let pubs: Vec<_> = (0..PUBLISHERS)
        .map(|i| std::thread::spawn(move || publisher(port, i, count)))
        .collect();
    for p in pubs {
        p.join().unwrap();
    }
    let end = sub_t.join().unwrap();
    total as f64 / end.duration_since(start).as_secs_f64()
}

#[test]
#[ignore]
fn durable_qos1_fan_in_against_memory_only_and_mosquitto() {
    let count: usize = std::env::var("MIDGE_PERF_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let dir = tempfile::tempdir().unwrap();
    let limits = "[limits]\nmax_queued_messages = 10000000\nmax_queued_bytes = 0\n";
    let mut rows = Vec::new();

    let data = dir.path().join("durable");
    let mut b = broker(&data, limits);
    let rate = run(b.port, count);
    b.terminate(Duration::from_secs(60));
    rows.push(("midge, durable (sync = batch)", rate));
    // group commit at a glance: the store thread's writes and fsyncs
    let text = b.log();
    if let Some(line) = text.lines().find(|l| l.contains("store closed")) {
        eprintln!("durable run: {line}");
    }

    let data = dir.path().join("memory");
    let b = broker(&data, &format!("enabled = false\n{limits}"));
    let rate = run(b.port, count);
    b.stop();
    rows.push(("midge, memory only", rate));

    let m =
        Mosquitto::start("max_queued_messages 0\nmax_inflight_messages 256\npersistence false\n");
    let rate = run(m.port, count);
    drop(m);
    rows.push(("mosquitto 2.0, QoS 1, not durable", rate));

    eprintln!("\n4 publishers -> 1 persistent subscriber, QoS 1, 64 B, {count} msgs each:");
    for (name, rate) in rows {
        eprintln!("  {name:<40} {rate:>10.0} msg/s");
    }
}
