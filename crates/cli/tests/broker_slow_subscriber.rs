//! A subscriber that never reads its socket must not hurt anyone else: the broker keeps
//! serving a healthy subscriber in full, drops (and counts) what the slow one cannot take,
//! and its memory stays bounded by the configured limits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Midge, Raw, Read_, publish_packet, unique};

const QOS0_MESSAGES: u64 = 200_000;
const QOS1_EVERY: u64 = 100; // one QoS 1 message after every 100 QoS 0 ones
const PAYLOAD: usize = 1024;
/// The publisher never runs more than this many messages ahead of the healthy subscriber.
/// 500 x ~1 KB stays under the 1 MiB outbound_high_water, so the healthy subscriber is never
/// "slow" in the broker's eyes and must get every QoS 0 message: any loss is a broker bug.
const WINDOW: u64 = 500;

const CONFIG: &str = "
[server]
sys_interval = 1
outbound_high_water = 1048576
[limits]
max_queued_messages = 1000
max_queued_bytes = 2097152
";

/// (packet id, qos, topic, payload) of a PUBLISH body.
fn parse_publish(first: u8, b: &[u8]) -> (u16, u8, String, Vec<u8>) {
    let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).unwrap();
    let qos = (first >> 1) & 3;
    let mut i = 2 + tlen;
    let mut id = 0;
    if qos > 0 {
        id = u16::from_be_bytes([b[i], b[i + 1]]);
        i += 2;
    }
    (id, qos, topic, b[i..].to_vec())
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().unwrap())
}

#[test]
fn a_subscriber_that_never_reads_does_not_slow_or_starve_a_healthy_one_and_memory_stays_bounded() {
    let b = Midge::with_config(CONFIG);
    let q0 = unique("flood/q0");
    let q1 = unique("flood/q1");

    // the slow subscriber: subscribes QoS 0 and QoS 1, then never reads its socket
    let mut slow = Raw::v311(b.port, &unique("slow"));
    assert_eq!(slow.subscribe(&q0, 0), vec![0]);
    assert_eq!(slow.subscribe(&q1, 1), vec![1]);

    let mut healthy = Raw::v311(b.port, &unique("healthy"));
    assert_eq!(healthy.subscribe(&q0, 0), vec![0]);
    assert_eq!(healthy.subscribe(&q1, 1), vec![1]);
    let baseline_kib = b.rss_kib();

    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        let (q0, q1) = (q0.clone(), q1.clone());
        std::thread::spawn(move || {
            let mut next0 = 0u64;
            let mut next1 = 0u64;
            let total1 = QOS0_MESSAGES / QOS1_EVERY;
            while next0 < QOS0_MESSAGES || next1 < total1 {
                match healthy.read(Duration::from_secs(20)) {
                    Read_::Packet(first, body) if first >> 4 == 3 => {
                        let (id, qos, topic, payload) = parse_publish(first, &body);
                        let seq = seq_of(&payload);
                        assert_eq!(payload.len(), PAYLOAD);
                        if topic == q0 {
                            assert_eq!(qos, 0);
                            assert_eq!(
                                seq, next0,
                                "healthy subscriber: QoS 0 message lost or reordered"
                            );
                            next0 += 1;
                        } else {
                            assert_eq!(topic, q1);
                            assert_eq!(qos, 1);
                            assert_eq!(
                                seq, next1,
                                "healthy subscriber: QoS 1 message lost or reordered"
                            );
                            next1 += 1;
                            healthy.send(&[0x40, 0x02, (id >> 8) as u8, id as u8]);
                        }
                        received.store(next0, Ordering::SeqCst);
                    }
                    Read_::Packet(..) => {}
                    other => panic!(
                        "healthy subscriber: {other:?} after {next0} QoS 0 and {next1} QoS 1 messages"
                    ),
                }
            }
            (next0, next1)
        })
    };

    // the publisher
    let mut publ = Raw::v311(b.port, &unique("flooder"));
    let started = Instant::now();
    let mut batch = Vec::with_capacity(64 * (PAYLOAD + 64));
    let mut payload = vec![0x5Au8; PAYLOAD];
    let mut id1 = 0u16;
    let mut seq1 = 0u64;
    let mut peak_kib = 0;
    for i in 0..QOS0_MESSAGES {
        payload[..8].copy_from_slice(&i.to_be_bytes());
        batch.extend_from_slice(&publish_packet(q0.as_bytes(), &payload, 0, false, 0, None));
        if i % QOS1_EVERY == QOS1_EVERY - 1 {
            payload[..8].copy_from_slice(&seq1.to_be_bytes());
            id1 = id1.checked_add(1).unwrap_or(1);
            seq1 += 1;
            batch.extend_from_slice(&publish_packet(
                q1.as_bytes(),
                &payload,
                1,
                false,
                id1,
                None,
            ));
        }
        if batch.len() >= 32 * PAYLOAD {
            publ.s.write_all(&batch).unwrap();
            batch.clear();
            // stay within WINDOW of the healthy subscriber
            let deadline = Instant::now() + Duration::from_secs(20);
            while i + 1 > received.load(Ordering::SeqCst) + WINDOW {
                assert!(
                    Instant::now() < deadline,
                    "healthy subscriber stuck at {} of {i}",
                    received.load(Ordering::SeqCst)
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            // drain the publisher's PUBACKs
            while let Read_::Packet(..) = publ.read(Duration::ZERO) {}
        }
        if i % 20_000 == 0 {
            peak_kib = peak_kib.max(b.rss_kib());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "flood took too long"
        );
    }
    publ.s.write_all(&batch).unwrap();

    let (got0, got1) = reader.join().unwrap();
    assert_eq!(got0, QOS0_MESSAGES);
    assert_eq!(got1, QOS0_MESSAGES / QOS1_EVERY);

    // memory: everything the slow subscriber could not take was dropped or bounded. The
    // limits allow 1 MiB of outbound queue (outbound_high_water) + 2 MiB of session queue
    // (max_queued_bytes) for it, the healthy subscriber's window is ~0.5 MiB, the router's
    // inbound channel holds up to 1024 packets (~1 MiB), read/write buffers a few hundred KiB.
    // 200 MiB went through; 24 MiB over the idle baseline leaves room for allocator slack
    // while failing loudly if the flood were being buffered.
    let peak = b.peak_rss_kib().max(peak_kib);
    eprintln!("baseline RSS {baseline_kib} KiB, peak {peak} KiB");
    assert!(
        peak < baseline_kib + 24 * 1024,
        "peak RSS {peak} KiB vs baseline {baseline_kib} KiB"
    );

    // the broker counted what it dropped for the slow subscriber
    let mut watch = Raw::v311(b.port, &unique("sys"));
    watch.subscribe("$SYS/broker/publish/messages/dropped", 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut dropped = 0u64;
    while dropped == 0 && Instant::now() < deadline {
        let (_, p, _) = watch.next_publish(Duration::from_secs(3));
        dropped = String::from_utf8(p).unwrap().parse().unwrap();
    }
    assert!(dropped > 0, "$SYS/broker/publish/messages/dropped stayed 0");

    // the slow subscriber, reading at last, gets a clean stream: QoS 1 messages unique and in
    // order (some may have been dropped once its queue was full), QoS 0 in order
    let mut last0: Option<u64> = None;
    let mut last1: Option<u64> = None;
    let mut n1 = 0;
    loop {
        match slow.read(Duration::from_secs(2)) {
            Read_::Packet(first, body) if first >> 4 == 3 => {
                let (id, qos, topic, payload) = parse_publish(first, &body);
                let seq = seq_of(&payload);
                let last = if topic == q0 { &mut last0 } else { &mut last1 };
                assert!(
                    last.is_none_or(|l| seq > l),
                    "{topic}: {seq} after {last:?}"
                );
                *last = Some(seq);
                if qos == 1 {
                    n1 += 1;
                    slow.send(&[0x40, 0x02, (id >> 8) as u8, id as u8]);
                }
            }
            Read_::Packet(..) => {}
            Read_::Timeout => break,
            Read_::Closed => panic!("slow subscriber was disconnected"),
        }
    }
    eprintln!("dropped {dropped}; slow subscriber got {n1} QoS 1, last QoS 0 {last0:?}");
    assert!(n1 > 0, "the slow subscriber's QoS 1 messages were all lost");
}
