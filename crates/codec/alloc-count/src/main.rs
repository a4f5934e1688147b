//! Heap allocations per decode and per encode of the benchmark's PUBLISH packets, counted with
//! an instrumented global allocator. `cargo run --release` in this directory.

use std::alloc::System;

use midge_codec::bytes::{Bytes, BytesMut};
use midge_codec::{MAX_PACKET_SIZE, Packet, Protocol, Publish, QoS, TopicName, decode};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const N: usize = 10_000;

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

fn count(name: &str, packet: &Packet, protocol: Protocol) {
    let mut wire = BytesMut::new();
    for _ in 0..N {
        packet.encode(protocol, &mut wire).unwrap();
    }
    // decoding N packets back to back from one read buffer, keeping each packet alive until
    // the next is decoded (as a connection task hands them on)
    let region = Region::new(GLOBAL);
    let mut decoded = 0;
    while let Some(p) = decode(&mut wire, protocol, MAX_PACKET_SIZE).unwrap() {
        std::hint::black_box(&p);
        decoded += 1;
    }
    let d = region.change();
    assert_eq!(decoded, N);

    // encoding N packets into one write buffer that already has room
    let mut out = BytesMut::with_capacity(N * packet.encoded_len(protocol).unwrap());
    let region = Region::new(GLOBAL);
    for _ in 0..N {
        packet.encode(protocol, &mut out).unwrap();
    }
    let e = region.change();
    println!(
        "{name}: decode {:.2} allocations/packet ({} in {N}), encode {:.2} allocations/packet ({} in {N})",
        d.allocations as f64 / N as f64,
        d.allocations,
        e.allocations as f64 / N as f64,
        e.allocations,
    );
}

/// Decode every packet in `buf` (the unit measured by `instr` mode).
#[inline(never)]
fn decode_all(buf: &mut BytesMut, protocol: Protocol) -> usize {
    let mut n = 0;
    while let Some(p) = decode(buf, protocol, MAX_PACKET_SIZE).unwrap() {
        std::hint::black_box(&p);
        n += 1;
    }
    n
}

/// Encode `packet` `n` times into `out` (the unit measured by `instr` mode).
#[inline(never)]
fn encode_all(packet: &Packet, protocol: Protocol, out: &mut BytesMut, n: usize) {
    for _ in 0..n {
        std::hint::black_box(packet).encode(protocol, out).unwrap();
    }
}

/// Run decode_all / encode_all over N packets of each kind, for an instruction counter:
/// `valgrind --tool=callgrind target/release/midge-codec-alloc-count instr v311` (or `v5`),
/// then `callgrind_annotate --inclusive=yes` shows each function's instructions; divide by N.
fn instr(kind: &str) {
    let (packet, protocol) = if kind == "v5" {
        (v5_publish(), Protocol::V5)
    } else {
        (v311_publish(), Protocol::V311)
    };
    {
        let mut out = BytesMut::with_capacity(N * packet.encoded_len(protocol).unwrap());
        encode_all(&packet, protocol, &mut out, N);
        assert_eq!(decode_all(&mut out, protocol), N);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("instr") {
        instr(args.get(2).map_or("v311", String::as_str));
        return;
    }
    count(
        "v3.1.1 PUBLISH QoS 1, 64 B",
        &v311_publish(),
        Protocol::V311,
    );
    count(
        "v5 PUBLISH QoS 1, 64 B + 4 properties + 2 user properties",
        &v5_publish(),
        Protocol::V5,
    );
}
