//! Decode arbitrary bytes as every protocol version: never panic, and every packet that
//! decodes re-encodes (for that version) to bytes that decode to an equal packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use midge_codec::bytes::BytesMut;
use midge_codec::{MAX_PACKET_SIZE, Packet, Protocol, decode};

fn check(data: &[u8], protocol: Protocol) {
    let mut buf = BytesMut::from(data);
    // a small limit as well as the largest, so both framing paths are exercised
    for max in [MAX_PACKET_SIZE, 64] {
        buf.clear();
        buf.extend_from_slice(data);
        loop {
            match decode(&mut buf, protocol, max) {
                Ok(Some(packet)) => round_trip(&packet, protocol),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

fn round_trip(packet: &Packet, protocol: Protocol) {
    let mut out = BytesMut::new();
    packet
        .encode(protocol, &mut out)
        .unwrap_or_else(|e| panic!("decoded packet does not encode: {e}: {packet:?}"));
    assert_eq!(
        packet.encoded_len(protocol).ok(),
        Some(out.len()),
        "encoded_len disagrees with encode for {packet:?}"
    );
    let wire = out.clone();
    let again = decode(&mut out, protocol, MAX_PACKET_SIZE).unwrap_or_else(|e| {
        panic!("re-encoded packet does not decode: {e}: {packet:?} as {wire:02x?}")
    });
    assert_eq!(
        again.as_ref(),
        Some(packet),
        "round trip changed the packet, wire {wire:02x?}"
    );
    assert!(out.is_empty(), "re-encoded packet left bytes behind");
}

fuzz_target!(|data: &[u8]| {
    for protocol in [Protocol::V31, Protocol::V311, Protocol::V5] {
        check(data, protocol);
    }
});
