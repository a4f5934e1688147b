//! Decode and encode throughput of the two PUBLISH shapes a broker sees most: a plain
//! MQTT 3.1.1 QoS 1 PUBLISH with a 64-byte payload, and an MQTT 5 PUBLISH carrying the
//! request/response properties. Each iteration handles a batch of `BATCH` packets back to
//! back in one buffer, as a connection's read and write paths do.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use midge_codec::bytes::{Bytes, BytesMut};
use midge_codec::{MAX_PACKET_SIZE, Packet, Protocol, Publish, QoS, TopicName, decode};

const BATCH: usize = 100;

fn v311_publish() -> Packet {
    let mut p = Publish::new(
        TopicName::new("building-7/floor-3/room-12/temperature").unwrap(),
        Bytes::from(vec![b'x'; 64]),
    );
    p.qos = QoS::AtLeastOnce;
    p.packet_id = 4711;
    Packet::Publish(p)
}

fn v5_publish() -> Packet {
    let Packet::Publish(mut p) = v311_publish() else {
        unreachable!()
    };
    p.properties.message_expiry_interval = Some(3600);
    p.properties.content_type = Some("application/json".into());
    p.properties.response_topic = Some("replies/room-12".into());
    p.properties.correlation_data = Some(Bytes::from_static(b"req-0001"));
    p.properties.user_properties = vec![
        ("site".into(), "berlin".into()),
        ("unit".into(), "celsius".into()),
    ];
    Packet::Publish(p)
}

fn bench_packet(c: &mut Criterion, name: &str, packet: &Packet, protocol: Protocol) {
    let len = packet.encoded_len(protocol).unwrap();
    let mut wire = BytesMut::new();
    for _ in 0..BATCH {
        packet.encode(protocol, &mut wire).unwrap();
    }
    let wire = wire.freeze();

    let mut group = c.benchmark_group(format!("{name} ({len} bytes)"));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("decode", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                while let Some(p) = decode(&mut buf, protocol, MAX_PACKET_SIZE).unwrap() {
                    black_box(p);
                }
            },
            BatchSize::SmallInput,
        );
    });
    let mut out = BytesMut::with_capacity(wire.len());
    group.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            for _ in 0..BATCH {
                black_box(packet).encode(protocol, &mut out).unwrap();
            }
            black_box(&out);
        });
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_packet(
        c,
        "v3.1.1 PUBLISH QoS 1, 64 B payload",
        &v311_publish(),
        Protocol::V311,
    );
    bench_packet(
        c,
        "v5 PUBLISH QoS 1, 64 B payload + properties",
        &v5_publish(),
        Protocol::V5,
    );
}

criterion_group!(codec, benches);
criterion_main!(codec);
