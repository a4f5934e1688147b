//! Malformed inputs, one table row each: the exact [`DecodeError`] and the reason code a
//! broker answers with. The rows follow the normative statements of MQTT 5.0 (and 3.1.1 where
//! the versions differ).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use midge_codec::bytes::BytesMut;
use midge_codec::{
    DecodeError as E, MAX_PACKET_SIZE, Packet, PacketType as T, Protocol, TopicError, decode,
};

use Protocol::{V5, V31, V311};

/// Concatenate byte slices.
fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Two-byte length prefixed field.
fn lp(b: &[u8]) -> Vec<u8> {
    let mut v = (b.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(b);
    v
}

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut b = (n & 0x7F) as u8;
        n >>= 7;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return out;
        }
    }
}

/// A packet: first byte, remaining length, body.
fn pkt(first: u8, body: &[u8]) -> Vec<u8> {
    cat(&[&[first], &varint(body.len()), body])
}

/// A property block with its length prefix.
fn props(p: &[u8]) -> Vec<u8> {
    cat(&[&varint(p.len()), p])
}

/// CONNECT for the given name/level/flags with a client id "c", then `rest`.
fn connect(name: &[u8], level: u8, flags: u8, props_block: &[u8], rest: &[u8]) -> Vec<u8> {
    pkt(
        0x10,
        &cat(&[
            &lp(name),
            &[level, flags, 0, 60],
            props_block,
            &lp(b"c"),
            rest,
        ]),
    )
}

fn connect311(flags: u8, rest: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 4, flags, &[], rest)
}

fn connect5(flags: u8, p: &[u8], rest: &[u8]) -> Vec<u8> {
    connect(b"MQTT", 5, flags, &props(p), rest)
}

/// v5 PUBLISH QoS 0 to "t" with the given properties and payload.
fn publish5(p: &[u8], payload: &[u8]) -> Vec<u8> {
    pkt(0x30, &cat(&[&lp(b"t"), &props(p), payload]))
}

/// PUBLISH QoS 0 (3.1.1) with a raw topic.
fn publish311(topic: &[u8]) -> Vec<u8> {
    pkt(0x30, &cat(&[&lp(topic), b"x"]))
}

/// v5 SUBSCRIBE id 1, no properties, one filter with options.
fn subscribe5(filter: &[u8], options: u8) -> Vec<u8> {
    pkt(0x82, &cat(&[&[0, 1, 0], &lp(filter), &[options]]))
}

fn subscribe311(filter: &[u8], options: u8) -> Vec<u8> {
    pkt(0x82, &cat(&[&[0, 1], &lp(filter), &[options]]))
}

struct Case {
    name: &'static str,
    protocol: Protocol,
    wire: Vec<u8>,
    err: E,
    code: u8,
}

fn case(name: &'static str, protocol: Protocol, wire: Vec<u8>, err: E, code: u8) -> Case {
    Case {
        name,
        protocol,
        wire,
        err,
        code,
    }
}

fn flags(packet: T, flags: u8) -> E {
    E::InvalidHeaderFlags { packet, flags }
}

fn not_allowed(id: u8, packet: &'static str) -> E {
    E::PropertyNotAllowed { id, packet }
}

fn bad_reason(packet: T, code: u8) -> E {
    E::InvalidReasonCode { packet, code }
}

const MALFORMED: u8 = 0x81;
const PROTOCOL: u8 = 0x82;
const UNSUPPORTED: u8 = 0x84;
const NAME_INVALID: u8 = 0x90;
const ALIAS_INVALID: u8 = 0x94;
const PAYLOAD_FORMAT: u8 = 0x99;

fn cases() -> Vec<Case> {
    vec![
        // --- fixed header -------------------------------------------------------------
        case(
            "packet type 0 is reserved",
            V5,
            vec![0x00, 0x00],
            E::ReservedPacketType(0),
            MALFORMED,
        ),
        case(
            "CONNECT flags",
            V311,
            vec![0x11, 0x00],
            flags(T::Connect, 1),
            MALFORMED,
        ),
        case(
            "CONNACK flags",
            V311,
            vec![0x28, 0x02, 0, 0],
            flags(T::ConnAck, 8),
            MALFORMED,
        ),
        case(
            "PUBACK flags",
            V311,
            vec![0x42, 0x02, 0, 1],
            flags(T::PubAck, 2),
            MALFORMED,
        ),
        case(
            "PUBREC flags",
            V5,
            vec![0x51, 0x02, 0, 1],
            flags(T::PubRec, 1),
            MALFORMED,
        ),
        case(
            "PUBREL flags must be 0010",
            V311,
            vec![0x60, 0x02, 0, 1],
            flags(T::PubRel, 0),
            MALFORMED,
        ),
        case(
            "PUBREL flags 0011",
            V5,
            vec![0x63, 0x02, 0, 1],
            flags(T::PubRel, 3),
            MALFORMED,
        ),
        case(
            "PUBCOMP flags",
            V311,
            vec![0x7F, 0x02, 0, 1],
            flags(T::PubComp, 0xF),
            MALFORMED,
        ),
        case(
            "SUBSCRIBE flags 0000",
            V311,
            subscribe311(b"a", 0)
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 0 { 0x80 } else { *b })
                .collect(),
            flags(T::Subscribe, 0),
            MALFORMED,
        ),
        case(
            "SUBSCRIBE flags 1010",
            V5,
            cat(&[&[0x8A], &subscribe5(b"a", 0)[1..]]),
            flags(T::Subscribe, 0xA),
            MALFORMED,
        ),
        case(
            "SUBSCRIBE flags 0100 in 3.1",
            V31,
            cat(&[&[0x84], &subscribe311(b"a", 0)[1..]]),
            flags(T::Subscribe, 4),
            MALFORMED,
        ),
        case(
            "SUBACK flags",
            V311,
            vec![0x91, 0x03, 0, 1, 0],
            flags(T::SubAck, 1),
            MALFORMED,
        ),
        case(
            "UNSUBSCRIBE flags",
            V311,
            pkt(0xA0, &cat(&[&[0, 1], &lp(b"a")])),
            flags(T::Unsubscribe, 0),
            MALFORMED,
        ),
        case(
            "UNSUBACK flags",
            V311,
            vec![0xB4, 0x02, 0, 1],
            flags(T::UnsubAck, 4),
            MALFORMED,
        ),
        case(
            "PINGREQ flags",
            V311,
            vec![0xC1, 0x00],
            flags(T::PingReq, 1),
            MALFORMED,
        ),
        case(
            "PINGRESP flags",
            V311,
            vec![0xD2, 0x00],
            flags(T::PingResp, 2),
            MALFORMED,
        ),
        case(
            "DISCONNECT flags",
            V5,
            vec![0xE8, 0x00],
            flags(T::Disconnect, 8),
            MALFORMED,
        ),
        case(
            "AUTH flags",
            V5,
            vec![0xF1, 0x00],
            flags(T::Auth, 1),
            MALFORMED,
        ),
        case(
            "remaining length of 5 bytes",
            V311,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            E::MalformedRemainingLength,
            MALFORMED,
        ),
        case(
            "remaining length not minimal [MQTT-1.5.5-1]",
            V311,
            vec![0xC0, 0x80, 0x00],
            E::MalformedRemainingLength,
            MALFORMED,
        ),
        case(
            "property length of 5 bytes",
            V5,
            pkt(0x30, &cat(&[&lp(b"t"), &[0xFF, 0xFF, 0xFF, 0xFF, 0x01]])),
            E::MalformedVarInt,
            MALFORMED,
        ),
        case(
            "property length not minimal",
            V5,
            pkt(0x30, &cat(&[&lp(b"t"), &[0x80, 0x00]])),
            E::MalformedVarInt,
            MALFORMED,
        ),
        case(
            "property identifier not minimal",
            V5,
            publish5(&[0x81, 0x00, 0x01], b""),
            E::MalformedVarInt,
            MALFORMED,
        ),
        // --- UTF-8 strings ------------------------------------------------------------
        case(
            "topic with U+0000",
            V311,
            publish311(b"a\0b"),
            E::NullCharacter,
            MALFORMED,
        ),
        case(
            "client id with U+0000",
            V311,
            pkt(0x10, &cat(&[&lp(b"MQTT"), &[4, 2, 0, 60], &lp(b"a\0")])),
            E::NullCharacter,
            MALFORMED,
        ),
        case(
            "topic with encoded surrogate ED A0 80",
            V311,
            publish311(b"a/\xED\xA0\x80"),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "user name with encoded surrogate",
            V311,
            connect311(0x82, &lp(b"\xED\xBF\xBF")),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "overlong encoding C0 AF",
            V311,
            publish311(b"\xC0\xAF"),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "overlong NUL C0 80",
            V5,
            subscribe5(b"a/\xC0\x80", 0),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "lone continuation byte",
            V311,
            publish311(b"a\x80"),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "truncated sequence",
            V311,
            publish311(b"\xE2\x82"),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "code point above U+10FFFF",
            V311,
            publish311(b"\xF4\x90\x80\x80"),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "user property value not UTF-8",
            V5,
            publish5(&cat(&[&[0x26], &lp(b"k"), &lp(b"\xFF")]), b""),
            E::InvalidUtf8,
            MALFORMED,
        ),
        case(
            "payload format 1 with non-UTF-8 payload",
            V5,
            publish5(&[0x01, 0x01], b"\xFF\xFE"),
            E::PayloadFormatInvalid,
            PAYLOAD_FORMAT,
        ),
        case(
            "payload format 1 with surrogate payload",
            V5,
            publish5(&[0x01, 0x01], b"\xED\xA0\x80"),
            E::PayloadFormatInvalid,
            PAYLOAD_FORMAT,
        ),
        case(
            "will payload format 1 with non-UTF-8 will payload",
            V5,
            connect5(
                0x06,
                &[],
                &cat(&[&props(&[0x01, 0x01]), &lp(b"w"), &lp(b"\xC3")]),
            ),
            E::PayloadFormatInvalid,
            PAYLOAD_FORMAT,
        ),
        // --- PUBLISH ------------------------------------------------------------------
        case(
            "QoS 3",
            V311,
            pkt(0x36, &cat(&[&lp(b"t"), &[0, 1]])),
            E::InvalidQoS,
            MALFORMED,
        ),
        case(
            "DUP on QoS 0",
            V311,
            pkt(0x38, &cat(&[&lp(b"t"), b"x"])),
            E::DupWithQoS0,
            MALFORMED,
        ),
        case(
            "packet id 0 in PUBLISH QoS 1",
            V311,
            pkt(0x32, &cat(&[&lp(b"t"), &[0, 0]])),
            E::ZeroPacketId(T::Publish),
            MALFORMED,
        ),
        case(
            "packet id 0 in PUBLISH QoS 2",
            V5,
            pkt(0x34, &cat(&[&lp(b"t"), &[0, 0, 0]])),
            E::ZeroPacketId(T::Publish),
            MALFORMED,
        ),
        case(
            "+ in a topic name",
            V311,
            publish311(b"a/+"),
            E::InvalidTopicName(TopicError::WildcardInName),
            NAME_INVALID,
        ),
        case(
            "# in a topic name",
            V5,
            pkt(0x30, &cat(&[&lp(b"a/#"), &[0]])),
            E::InvalidTopicName(TopicError::WildcardInName),
            NAME_INVALID,
        ),
        case(
            "empty topic in 3.1.1",
            V311,
            publish311(b""),
            E::InvalidTopicName(TopicError::Empty),
            NAME_INVALID,
        ),
        case(
            "empty topic without alias in 5.0",
            V5,
            pkt(0x30, &cat(&[&lp(b""), &[0]])),
            E::EmptyTopicWithoutAlias,
            PROTOCOL,
        ),
        case(
            "topic alias 0",
            V5,
            publish5(&[0x23, 0, 0], b""),
            E::TopicAliasZero,
            ALIAS_INVALID,
        ),
        case(
            "QoS 1 PUBLISH without packet id",
            V311,
            pkt(0x32, &lp(b"t")),
            E::UnexpectedEnd("packet identifier"),
            MALFORMED,
        ),
        // --- packet identifiers in acks and subscriptions -----------------------------
        case(
            "packet id 0 in PUBACK",
            V311,
            vec![0x40, 0x02, 0, 0],
            E::ZeroPacketId(T::PubAck),
            MALFORMED,
        ),
        case(
            "packet id 0 in PUBREC",
            V5,
            vec![0x50, 0x02, 0, 0],
            E::ZeroPacketId(T::PubRec),
            MALFORMED,
        ),
        case(
            "packet id 0 in PUBREL",
            V311,
            vec![0x62, 0x02, 0, 0],
            E::ZeroPacketId(T::PubRel),
            MALFORMED,
        ),
        case(
            "packet id 0 in PUBCOMP",
            V311,
            vec![0x70, 0x02, 0, 0],
            E::ZeroPacketId(T::PubComp),
            MALFORMED,
        ),
        case(
            "packet id 0 in SUBSCRIBE",
            V311,
            pkt(0x82, &cat(&[&[0, 0], &lp(b"a"), &[0]])),
            E::ZeroPacketId(T::Subscribe),
            MALFORMED,
        ),
        case(
            "packet id 0 in SUBACK",
            V311,
            vec![0x90, 0x03, 0, 0, 0],
            E::ZeroPacketId(T::SubAck),
            MALFORMED,
        ),
        case(
            "packet id 0 in UNSUBSCRIBE",
            V5,
            pkt(0xA2, &cat(&[&[0, 0, 0], &lp(b"a")])),
            E::ZeroPacketId(T::Unsubscribe),
            MALFORMED,
        ),
        case(
            "packet id 0 in UNSUBACK",
            V311,
            vec![0xB0, 0x02, 0, 0],
            E::ZeroPacketId(T::UnsubAck),
            MALFORMED,
        ),
        // --- SUBSCRIBE / UNSUBSCRIBE ---------------------------------------------------
        case(
            "SUBSCRIBE with no filters (3.1.1)",
            V311,
            vec![0x82, 0x02, 0, 1],
            E::EmptySubscribe,
            PROTOCOL,
        ),
        case(
            "SUBSCRIBE with no filters (5.0) [MQTT-3.8.3-2]",
            V5,
            vec![0x82, 0x03, 0, 1, 0],
            E::EmptySubscribe,
            PROTOCOL,
        ),
        case(
            "UNSUBSCRIBE with no filters (3.1.1)",
            V311,
            vec![0xA2, 0x02, 0, 1],
            E::EmptyUnsubscribe,
            PROTOCOL,
        ),
        case(
            "UNSUBSCRIBE with no filters (5.0) [MQTT-3.10.3-2]",
            V5,
            vec![0xA2, 0x03, 0, 1, 0],
            E::EmptyUnsubscribe,
            PROTOCOL,
        ),
        case(
            "filter without options byte",
            V311,
            pkt(0x82, &cat(&[&[0, 1], &lp(b"a")])),
            E::UnexpectedEnd("subscription options"),
            MALFORMED,
        ),
        case(
            "empty filter",
            V311,
            subscribe311(b"", 0),
            E::InvalidTopicFilter(TopicError::Empty),
            MALFORMED,
        ),
        case(
            "# not last",
            V311,
            subscribe311(b"a/#/b", 0),
            E::InvalidTopicFilter(TopicError::HashNotLast),
            MALFORMED,
        ),
        case(
            "# not alone in its level",
            V5,
            subscribe5(b"a/b#", 0),
            E::InvalidTopicFilter(TopicError::HashNotLast),
            MALFORMED,
        ),
        case(
            "+ not alone in its level",
            V311,
            subscribe311(b"a/+b/c", 0),
            E::InvalidTopicFilter(TopicError::PlusNotAlone),
            MALFORMED,
        ),
        case(
            "+ not alone in UNSUBSCRIBE",
            V311,
            pkt(0xA2, &cat(&[&[0, 1], &lp(b"x+")])),
            E::InvalidTopicFilter(TopicError::PlusNotAlone),
            MALFORMED,
        ),
        case(
            "U+0000 in a filter",
            V5,
            subscribe5(b"a\0", 0),
            E::NullCharacter,
            MALFORMED,
        ),
        case(
            "$share with empty share name",
            V5,
            subscribe5(b"$share//a", 0),
            E::InvalidTopicFilter(TopicError::InvalidShareName),
            MALFORMED,
        ),
        case(
            "$share with wildcard share name",
            V5,
            subscribe5(b"$share/g+/a", 0),
            E::InvalidTopicFilter(TopicError::InvalidShareName),
            MALFORMED,
        ),
        case(
            "$share without filter",
            V5,
            subscribe5(b"$share/g", 0),
            E::InvalidTopicFilter(TopicError::SharedWithoutFilter),
            MALFORMED,
        ),
        case(
            "$share/g/ with empty filter",
            V311,
            subscribe311(b"$share/g/", 0),
            E::InvalidTopicFilter(TopicError::SharedWithoutFilter),
            MALFORMED,
        ),
        case(
            "no local on a shared subscription [MQTT-3.8.3-4]",
            V5,
            subscribe5(b"$share/g/a", 0x04),
            E::NoLocalOnSharedSubscription,
            PROTOCOL,
        ),
        case(
            "retain handling 3",
            V5,
            subscribe5(b"a", 0x30),
            E::InvalidRetainHandling,
            PROTOCOL,
        ),
        case(
            "subscription option bit 6 (5.0)",
            V5,
            subscribe5(b"a", 0x40),
            E::InvalidSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "subscription option bit 7 (5.0)",
            V5,
            subscribe5(b"a", 0x81),
            E::InvalidSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "subscription option bit 2 (3.1.1)",
            V311,
            subscribe311(b"a", 0x04),
            E::InvalidSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "subscription options beyond QoS (3.1)",
            V31,
            subscribe311(b"a", 0x11),
            E::InvalidSubscriptionOptions,
            MALFORMED,
        ),
        case(
            "subscription QoS 3 (3.1.1)",
            V311,
            subscribe311(b"a", 0x03),
            E::InvalidQoS,
            MALFORMED,
        ),
        case(
            "subscription QoS 3 (5.0)",
            V5,
            subscribe5(b"a", 0x03),
            E::InvalidQoS,
            MALFORMED,
        ),
        // --- properties ---------------------------------------------------------------
        case(
            "unknown property 0x04",
            V5,
            publish5(&[0x04, 0], b""),
            E::UnknownProperty(0x04),
            MALFORMED,
        ),
        case(
            "unknown property 0x00",
            V5,
            publish5(&[0x00, 0], b""),
            E::UnknownProperty(0x00),
            MALFORMED,
        ),
        case(
            "topic alias in CONNECT",
            V5,
            connect5(0x02, &[0x23, 0, 1], &[]),
            not_allowed(0x23, "CONNECT"),
            MALFORMED,
        ),
        case(
            "session expiry in PUBLISH",
            V5,
            publish5(&[0x11, 0, 0, 0, 1], b""),
            not_allowed(0x11, "PUBLISH"),
            MALFORMED,
        ),
        case(
            "subscription identifier in will properties",
            V5,
            connect5(0x06, &[], &cat(&[&props(&[0x0B, 1]), &lp(b"w"), &lp(b"")])),
            not_allowed(0x0B, "will properties"),
            MALFORMED,
        ),
        case(
            "reason string in SUBSCRIBE",
            V5,
            pkt(
                0x82,
                &cat(&[
                    &[0, 1],
                    &props(&cat(&[&[0x1F], &lp(b"r")])),
                    &lp(b"a"),
                    &[0],
                ]),
            ),
            not_allowed(0x1F, "SUBSCRIBE"),
            MALFORMED,
        ),
        case(
            "subscription identifier in UNSUBSCRIBE",
            V5,
            pkt(0xA2, &cat(&[&[0, 1], &props(&[0x0B, 1]), &lp(b"a")])),
            not_allowed(0x0B, "UNSUBSCRIBE"),
            MALFORMED,
        ),
        case(
            "topic alias in PUBACK",
            V5,
            vec![0x40, 0x07, 0, 1, 0, 3, 0x23, 0, 1],
            not_allowed(0x23, "acknowledgement"),
            MALFORMED,
        ),
        case(
            "duplicate session expiry",
            V5,
            connect5(0x02, &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], &[]),
            E::DuplicateProperty(0x11),
            PROTOCOL,
        ),
        case(
            "duplicate content type",
            V5,
            publish5(&cat(&[&[0x03], &lp(b"a"), &[0x03], &lp(b"b")]), b""),
            E::DuplicateProperty(0x03),
            PROTOCOL,
        ),
        case(
            "two subscription identifiers in SUBSCRIBE",
            V5,
            pkt(
                0x82,
                &cat(&[&[0, 1], &props(&[0x0B, 1, 0x0B, 2]), &lp(b"a"), &[0]]),
            ),
            E::DuplicateProperty(0x0B),
            PROTOCOL,
        ),
        case(
            "receive maximum 0",
            V5,
            connect5(0x02, &[0x21, 0, 0], &[]),
            E::InvalidPropertyValue(0x21),
            PROTOCOL,
        ),
        case(
            "maximum packet size 0",
            V5,
            connect5(0x02, &[0x27, 0, 0, 0, 0], &[]),
            E::InvalidPropertyValue(0x27),
            PROTOCOL,
        ),
        case(
            "request problem information 2",
            V5,
            connect5(0x02, &[0x17, 2], &[]),
            E::InvalidPropertyValue(0x17),
            PROTOCOL,
        ),
        case(
            "response topic with + [MQTT-3.3.2-14]",
            V5,
            publish5(&cat(&[&[0x08], &lp(b"reply/+")]), b"x"),
            E::InvalidPropertyValue(0x08),
            PROTOCOL,
        ),
        case(
            "response topic with #",
            V5,
            publish5(&cat(&[&[0x08], &lp(b"#")]), b"x"),
            E::InvalidPropertyValue(0x08),
            PROTOCOL,
        ),
        case(
            "empty response topic",
            V5,
            publish5(&cat(&[&[0x08], &lp(b"")]), b"x"),
            E::InvalidPropertyValue(0x08),
            PROTOCOL,
        ),
        case(
            "subscription identifier 0",
            V5,
            pkt(0x82, &cat(&[&[0, 1], &props(&[0x0B, 0]), &lp(b"a"), &[0]])),
            E::InvalidPropertyValue(0x0B),
            PROTOCOL,
        ),
        case(
            "payload format indicator 2",
            V5,
            publish5(&[0x01, 2], b""),
            E::InvalidPropertyValue(0x01),
            PROTOCOL,
        ),
        case(
            "auth data without method in CONNECT",
            V5,
            connect5(0x02, &cat(&[&[0x16], &lp(b"d")]), &[]),
            E::AuthDataWithoutMethod,
            PROTOCOL,
        ),
        case(
            "auth data without method in AUTH",
            V5,
            pkt(0xF0, &cat(&[&[0x18], &props(&cat(&[&[0x16], &lp(b"d")]))])),
            E::AuthDataWithoutMethod,
            PROTOCOL,
        ),
        case(
            "property block longer than the packet",
            V5,
            publish5(&[], b"")
                .iter()
                .enumerate()
                .map(|(i, b)| if i == 5 { 9 } else { *b })
                .collect(),
            E::UnexpectedEnd("properties"),
            MALFORMED,
        ),
        case(
            "property value cut short",
            V5,
            publish5(&[0x02, 0, 0], b""),
            E::UnexpectedEnd("property value"),
            MALFORMED,
        ),
        case(
            "user property without value",
            V5,
            publish5(&cat(&[&[0x26], &lp(b"k")]), b""),
            E::UnexpectedEnd("user property value"),
            MALFORMED,
        ),
        // --- CONNECT ------------------------------------------------------------------
        case(
            "AUTH in 3.1.1",
            V311,
            vec![0xF0, 0x00],
            E::PacketNotInVersion(T::Auth),
            MALFORMED,
        ),
        case(
            "AUTH in 3.1",
            V31,
            vec![0xF0, 0x00],
            E::PacketNotInVersion(T::Auth),
            MALFORMED,
        ),
        case(
            "protocol level 6",
            V5,
            connect(b"MQTT", 6, 0x02, &[], &[]),
            E::UnsupportedProtocolLevel(6),
            UNSUPPORTED,
        ),
        case(
            "protocol level 6 with the bridge flag",
            V5,
            connect(b"MQTT", 0x86, 0x02, &[], &[]),
            E::UnsupportedProtocolLevel(0x86),
            UNSUPPORTED,
        ),
        case(
            "protocol level 4 with MQIsdp and the bridge flag",
            V311,
            connect(b"MQIsdp", 0x84, 0x02, &[], &[]),
            E::UnsupportedProtocolLevel(0x84),
            UNSUPPORTED,
        ),
        case(
            "protocol level 3 with MQTT",
            V311,
            connect(b"MQTT", 3, 0x02, &[], &[]),
            E::UnsupportedProtocolLevel(3),
            UNSUPPORTED,
        ),
        case(
            "protocol level 4 with MQIsdp",
            V311,
            connect(b"MQIsdp", 4, 0x02, &[], &[]),
            E::UnsupportedProtocolLevel(4),
            UNSUPPORTED,
        ),
        case(
            "bad protocol name",
            V311,
            connect(b"MQTX", 4, 0x02, &[], &[]),
            E::InvalidProtocolName("MQTX".into()),
            UNSUPPORTED,
        ),
        case(
            "lower-case protocol name",
            V311,
            connect(b"mqtt", 4, 0x02, &[], &[]),
            E::InvalidProtocolName("mqtt".into()),
            UNSUPPORTED,
        ),
        case(
            "CONNECT reserved flag",
            V311,
            connect311(0x03, &[]),
            E::ConnectReservedFlag,
            MALFORMED,
        ),
        case(
            "CONNECT reserved flag (5.0)",
            V5,
            connect5(0x01, &[], &[]),
            E::ConnectReservedFlag,
            MALFORMED,
        ),
        case(
            "will retain without will",
            V311,
            connect311(0x22, &[]),
            E::InvalidWillFlags,
            MALFORMED,
        ),
        case(
            "will QoS 1 without will",
            V5,
            connect5(0x0A, &[], &[]),
            E::InvalidWillFlags,
            MALFORMED,
        ),
        case(
            "will QoS 3",
            V311,
            connect311(0x1E, &cat(&[&lp(b"w"), &lp(b"")])),
            E::InvalidWillFlags,
            MALFORMED,
        ),
        case(
            "password without user name (3.1.1)",
            V311,
            connect311(0x42, &lp(b"pw")),
            E::PasswordWithoutUsername,
            MALFORMED,
        ),
        case(
            "password without user name (3.1)",
            V31,
            connect(b"MQIsdp", 3, 0x42, &[], &lp(b"pw")),
            E::PasswordWithoutUsername,
            MALFORMED,
        ),
        case(
            "will topic with wildcard",
            V311,
            connect311(0x06, &cat(&[&lp(b"w/#"), &lp(b"")])),
            E::InvalidTopicName(TopicError::WildcardInName),
            NAME_INVALID,
        ),
        case(
            "empty will topic",
            V311,
            connect311(0x06, &cat(&[&lp(b""), &lp(b"")])),
            E::InvalidTopicName(TopicError::Empty),
            NAME_INVALID,
        ),
        case(
            "will flag without will fields",
            V311,
            connect311(0x06, &[]),
            E::UnexpectedEnd("will topic"),
            MALFORMED,
        ),
        case(
            "user name flag without user name",
            V311,
            connect311(0x82, &[]),
            E::UnexpectedEnd("user name"),
            MALFORMED,
        ),
        // --- trailing and truncated bytes --------------------------------------------
        case(
            "PINGREQ with a body",
            V311,
            vec![0xC0, 0x01, 0x00],
            E::TrailingBytes(1, T::PingReq),
            MALFORMED,
        ),
        case(
            "PUBACK 3.1.1 with a reason code",
            V311,
            vec![0x40, 0x03, 0, 1, 0],
            E::TrailingBytes(1, T::PubAck),
            MALFORMED,
        ),
        case(
            "DISCONNECT 3.1.1 with a body",
            V311,
            vec![0xE0, 0x01, 0x00],
            E::TrailingBytes(1, T::Disconnect),
            MALFORMED,
        ),
        case(
            "UNSUBACK 3.1.1 with reason codes",
            V311,
            vec![0xB0, 0x03, 0, 1, 0],
            E::TrailingBytes(1, T::UnsubAck),
            MALFORMED,
        ),
        case(
            "CONNECT with a byte after the password",
            V311,
            connect311(0xC2, &cat(&[&lp(b"u"), &lp(b"p"), &[0]])),
            E::TrailingBytes(1, T::Connect),
            MALFORMED,
        ),
        case(
            "CONNACK 3.1.1 with a third byte",
            V311,
            vec![0x20, 0x03, 0, 0, 0],
            E::TrailingBytes(1, T::ConnAck),
            MALFORMED,
        ),
        case(
            "PUBACK cut in the packet id",
            V311,
            vec![0x40, 0x01, 0],
            E::UnexpectedEnd("packet identifier"),
            MALFORMED,
        ),
        case(
            "CONNACK cut short",
            V311,
            vec![0x20, 0x01, 0],
            E::UnexpectedEnd("connack code"),
            MALFORMED,
        ),
        case(
            "CONNECT cut in the protocol name",
            V311,
            vec![0x10, 0x03, 0, 4, b'M'],
            E::UnexpectedEnd("protocol name"),
            MALFORMED,
        ),
        case(
            "CONNECT cut before keep alive",
            V311,
            pkt(0x10, &cat(&[&lp(b"MQTT"), &[4, 2, 0]])),
            E::UnexpectedEnd("keep alive"),
            MALFORMED,
        ),
        case(
            "CONNECT cut in the client id",
            V311,
            pkt(0x10, &cat(&[&lp(b"MQTT"), &[4, 2, 0, 60, 0, 5], b"ab"])),
            E::UnexpectedEnd("client identifier"),
            MALFORMED,
        ),
        case(
            "CONNECT 5.0 without property length",
            V5,
            pkt(0x10, &cat(&[&lp(b"MQTT"), &[5, 2, 0, 60]])),
            E::UnexpectedEnd("property length"),
            MALFORMED,
        ),
        case(
            "topic length beyond the packet",
            V311,
            vec![0x30, 0x03, 0, 9, b'a'],
            E::UnexpectedEnd("topic name"),
            MALFORMED,
        ),
        case(
            "SUBACK without reason codes",
            V311,
            vec![0x90, 0x02, 0, 1],
            E::UnexpectedEnd("SUBACK reason codes"),
            MALFORMED,
        ),
        case(
            "UNSUBACK 5.0 without reason codes",
            V5,
            vec![0xB0, 0x03, 0, 1, 0],
            E::UnexpectedEnd("UNSUBACK reason codes"),
            MALFORMED,
        ),
        // --- reason codes per packet ----------------------------------------------------
        case(
            "PUBACK with PUBREL's 0x92",
            V5,
            vec![0x40, 0x03, 0, 1, 0x92],
            bad_reason(T::PubAck, 0x92),
            PROTOCOL,
        ),
        case(
            "PUBREC with 0x01",
            V5,
            vec![0x50, 0x03, 0, 1, 0x01],
            bad_reason(T::PubRec, 0x01),
            PROTOCOL,
        ),
        case(
            "PUBREL with 0x10",
            V5,
            vec![0x62, 0x03, 0, 1, 0x10],
            bad_reason(T::PubRel, 0x10),
            PROTOCOL,
        ),
        case(
            "PUBCOMP with 0x80",
            V5,
            vec![0x70, 0x03, 0, 1, 0x80],
            bad_reason(T::PubComp, 0x80),
            PROTOCOL,
        ),
        case(
            "SUBACK 5.0 with 0x03",
            V5,
            vec![0x90, 0x04, 0, 1, 0, 0x03],
            bad_reason(T::SubAck, 0x03),
            PROTOCOL,
        ),
        case(
            "SUBACK 3.1.1 with 0x87",
            V311,
            vec![0x90, 0x03, 0, 1, 0x87],
            bad_reason(T::SubAck, 0x87),
            PROTOCOL,
        ),
        case(
            "UNSUBACK with 0x01",
            V5,
            vec![0xB0, 0x04, 0, 1, 0, 0x01],
            bad_reason(T::UnsubAck, 0x01),
            PROTOCOL,
        ),
        case(
            "DISCONNECT with 0x18",
            V5,
            vec![0xE0, 0x01, 0x18],
            bad_reason(T::Disconnect, 0x18),
            PROTOCOL,
        ),
        case(
            "AUTH with 0x87",
            V5,
            vec![0xF0, 0x02, 0x87, 0],
            bad_reason(T::Auth, 0x87),
            PROTOCOL,
        ),
        case(
            "CONNACK 5.0 with 0x04",
            V5,
            vec![0x20, 0x03, 0, 0x04, 0],
            bad_reason(T::ConnAck, 0x04),
            PROTOCOL,
        ),
        case(
            "CONNACK 3.1.1 return code 6",
            V311,
            vec![0x20, 0x02, 0, 6],
            bad_reason(T::ConnAck, 6),
            PROTOCOL,
        ),
        case(
            "CONNACK reserved flag bits",
            V311,
            vec![0x20, 0x02, 0x02, 0],
            E::ConnAckReservedFlags,
            MALFORMED,
        ),
    ]
}

#[test]
fn every_malformed_input_gives_its_exact_error_and_reason_code() {
    let mut failures = Vec::new();
    let all = cases();
    for c in &all {
        let mut buf = BytesMut::from(&c.wire[..]);
        match decode(&mut buf, c.protocol, MAX_PACKET_SIZE) {
            Err(e) if e == c.err && e.reason_code().0 == c.code => {}
            other => failures.push(format!(
                "{} ({:02x?}): got {other:?}, want Err({:?}) with reason 0x{:02X}",
                c.name, c.wire, c.err, c.code
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn a_malformed_packet_is_an_error_even_when_more_bytes_follow() {
    // the error must not depend on what else is buffered after the packet
    for c in cases() {
        let mut wire = c.wire.clone();
        wire.extend_from_slice(&[0xC0, 0x00]);
        let mut buf = BytesMut::from(&wire[..]);
        let got = decode(&mut buf, c.protocol, MAX_PACKET_SIZE);
        assert_eq!(got, Err(c.err.clone()), "{}", c.name);
    }
}

/// Near misses of the rows above that the spec allows: they must decode.
#[test]
fn the_valid_neighbours_of_malformed_rows_decode() {
    let ok: Vec<(&str, Protocol, Vec<u8>)> = vec![
        (
            "password without user name is allowed in 5.0",
            V5,
            connect5(0x42, &[], &lp(b"pw")),
        ),
        (
            "3.1 SUBSCRIBE with DUP flag (as mosquitto accepts)",
            V31,
            cat(&[&[0x8A], &subscribe311(b"a", 0)[1..]]),
        ),
        (
            "empty topic with alias",
            V5,
            pkt(0x30, &cat(&[&lp(b""), &props(&[0x23, 0, 1])])),
        ),
        (
            "payload format 0 with binary payload",
            V5,
            publish5(&[0x01, 0], b"\xFF"),
        ),
        (
            "payload format 1 with UTF-8 payload",
            V5,
            publish5(&[0x01, 1], "°C".as_bytes()),
        ),
        (
            "two subscription identifiers in PUBLISH",
            V5,
            publish5(&[0x0B, 1, 0x0B, 2], b""),
        ),
        (
            "repeated user properties",
            V5,
            publish5(
                &cat(&[&[0x26], &lp(b"k"), &lp(b"v"), &[0x26], &lp(b"k"), &lp(b"v")]),
                b"",
            ),
        ),
        (
            "no local on a non-shared subscription",
            V5,
            subscribe5(b"a/+", 0x04),
        ),
        ("$share in 3.1.1", V311, subscribe311(b"$share/g/a/#", 1)),
        (
            "PUBACK 5.0 with reason and empty property block",
            V5,
            vec![0x40, 0x04, 0, 1, 0x10, 0],
        ),
        (
            "CONNACK 5.0 without property length",
            V5,
            vec![0x20, 0x02, 0, 0],
        ),
        (
            "remaining length 128 in two bytes",
            V311,
            pkt(0x30, &cat(&[&lp(b"t"), &[b'x'; 125]])),
        ),
        (
            "empty client id",
            V311,
            pkt(0x10, &cat(&[&lp(b"MQTT"), &[4, 2, 0, 60], &lp(b"")])),
        ),
        (
            "topic with U+FEFF and non-characters (SHOULD NOT, not MUST NOT)",
            V311,
            publish311("a/\u{FEFF}\u{FFFF}".as_bytes()),
        ),
    ];
    for (name, protocol, wire) in ok {
        let mut buf = BytesMut::from(&wire[..]);
        match decode(&mut buf, protocol, MAX_PACKET_SIZE) {
            Ok(Some(_)) if buf.is_empty() => {}
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// mosquitto's bridges set bit 0x80 of the protocol level (`try_private`): 0x83, 0x84 and
/// 0x85 decode as 3.1, 3.1.1 and 5.0 with `bridge` set, and encode back to the same bytes.
#[test]
fn the_bridge_flag_on_a_known_level_decodes_as_that_protocol_and_round_trips() {
    for (name, level, props_block, want) in [
        (&b"MQIsdp"[..], 0x83u8, vec![], V31),
        (&b"MQTT"[..], 0x84, vec![], V311),
        (&b"MQTT"[..], 0x85, props(&[]), V5),
    ] {
        let wire = connect(name, level, 0x02, &props_block, &[]);
        let mut buf = BytesMut::from(&wire[..]);
        let got = decode(&mut buf, want, MAX_PACKET_SIZE);
        let Ok(Some(Packet::Connect(c))) = got else {
            panic!("level 0x{level:02X}: {got:?}");
        };
        assert_eq!(c.protocol, want);
        assert!(c.bridge, "level 0x{level:02X}");
        let mut out = BytesMut::new();
        Packet::Connect(c.clone()).encode(want, &mut out).unwrap();
        assert_eq!(&out[..], &wire[..], "level 0x{level:02X} round trip");
        // and the plain level has no bridge flag
        let plain = connect(name, level & 0x7F, 0x02, &props_block, &[]);
        let mut buf = BytesMut::from(&plain[..]);
        let Ok(Some(Packet::Connect(c))) = decode(&mut buf, want, MAX_PACKET_SIZE) else {
            panic!("level 0x{:02X}", level & 0x7F);
        };
        assert!(!c.bridge);
    }
}
