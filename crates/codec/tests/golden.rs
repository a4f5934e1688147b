//! Golden byte vectors: captures from a real MQTT 3.1.1 device and packets laid out by hand
//! from the MQTT 3.1, 3.1.1 and 5.0 specifications. Each must decode to exactly the fields
//! written here and re-encode to exactly the same bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use midge_codec::bytes::{Bytes, BytesMut};
use midge_codec::{
    DecodeError, MAX_PACKET_SIZE, Packet, Protocol, QoS, ReasonCode, RetainHandling, TopicFilter,
    decode, frame_header,
};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Decode a golden packet, check that it is the whole buffer, that it re-encodes to the same
/// bytes with the same `encoded_len`, and that feeding it one byte at a time yields `Ok(None)`
/// until the last byte.
fn golden(wire: &str, protocol: Protocol) -> Packet {
    let bytes = hex(wire);
    let mut buf = BytesMut::from(&bytes[..]);
    let packet = decode(&mut buf, protocol, MAX_PACKET_SIZE)
        .unwrap_or_else(|e| panic!("{wire} does not decode: {e}"))
        .expect("a whole packet");
    assert!(buf.is_empty(), "decode left {} bytes", buf.len());

    let mut out = BytesMut::new();
    packet.encode(protocol, &mut out).unwrap();
    assert_eq!(hex_of(&out), hex_of(&bytes), "re-encoding differs");
    assert_eq!(packet.encoded_len(protocol).unwrap(), bytes.len());

    let mut trickle = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        trickle.extend_from_slice(&[*b]);
        let got = decode(&mut trickle, protocol, MAX_PACKET_SIZE).unwrap();
        if i + 1 < bytes.len() {
            assert_eq!(
                got,
                None,
                "decoded early after {} of {} bytes",
                i + 1,
                bytes.len()
            );
        } else {
            assert_eq!(got.as_ref(), Some(&packet));
        }
    }
    assert!(trickle.is_empty());
    packet
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn s(x: &str) -> Option<midge_codec::bytestring::ByteString> {
    Some(x.into())
}

fn pair(
    k: &str,
    v: &str,
) -> (
    midge_codec::bytestring::ByteString,
    midge_codec::bytestring::ByteString,
) {
    (k.into(), v.into())
}

// ---------------------------------------------------------------------------------------
// Captures from a real device (MQTT 3.1.1)
// ---------------------------------------------------------------------------------------

const DEVICE_CONNECT: &str = "106300044d51545404c2003c001144657669636549642d6278396e6476653200167a656e676a662f737a5f6d6f6e69746f725f726f6f6d002c51453042484676466e496b425249614a7450597a6f336d2f363345737635667a7a4d72397459564f73486f3d";
const DEVICE_CONNACK: &str = "20020000";
const DEVICE_PUBLISH: &str =
    "302a0010746573742d696f742d736572766963657b2270696e223a2031372c202276616c7565223a2031307d";

#[test]
fn device_connect_decodes_to_the_captured_fields() {
    let Packet::Connect(c) = golden(DEVICE_CONNECT, Protocol::V311) else {
        panic!("not a CONNECT")
    };
    assert_eq!(c.protocol, Protocol::V311);
    assert_eq!(&*c.client_id, "DeviceId-bx9ndve2");
    assert_eq!(c.username.as_deref(), Some("zengjf/sz_monitor_room"));
    assert_eq!(
        c.password.as_deref(),
        Some(&b"QE0BHFvFnIkBRIaJtPYzo3m/63Esv5fzzMr9tYVOsHo="[..])
    );
    assert_eq!(c.keep_alive, 60);
    assert!(c.clean_start);
    assert!(c.will.is_none());
    assert!(c.properties.is_empty());
}

#[test]
fn device_connect_decodes_whatever_level_the_connection_assumes() {
    // before CONNECT the connection's level is unknown: the packet's own level wins
    for assumed in [Protocol::V31, Protocol::V5] {
        let mut buf = BytesMut::from(&hex(DEVICE_CONNECT)[..]);
        let Some(Packet::Connect(c)) = decode(&mut buf, assumed, MAX_PACKET_SIZE).unwrap() else {
            panic!("not a CONNECT")
        };
        assert_eq!(c.protocol, Protocol::V311);
    }
}

#[test]
fn device_connack_is_accepted_without_session() {
    let Packet::ConnAck(c) = golden(DEVICE_CONNACK, Protocol::V311) else {
        panic!("not a CONNACK")
    };
    assert!(!c.session_present);
    assert_eq!(c.reason, ReasonCode::SUCCESS);
    assert!(c.properties.is_empty());
}

#[test]
fn device_publish_qos0_carries_topic_and_json_payload() {
    let Packet::Publish(p) = golden(DEVICE_PUBLISH, Protocol::V311) else {
        panic!("not a PUBLISH")
    };
    assert_eq!(p.topic.as_str(), "test-iot-service");
    assert_eq!(&p.payload[..], br#"{"pin": 17, "value": 10}"#);
    assert_eq!(p.qos, QoS::AtMostOnce);
    assert!(!p.dup && !p.retain);
    assert_eq!(p.packet_id, 0);
}

#[test]
fn empty_connect_is_malformed() {
    let mut buf = BytesMut::from(&[0x10u8, 0x00][..]);
    let err = decode(&mut buf, Protocol::V311, MAX_PACKET_SIZE).unwrap_err();
    assert_eq!(err, DecodeError::UnexpectedEnd("protocol name"));
    assert_eq!(err.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(err.reason_code().0, 0x81);
}

#[test]
fn device_session_back_to_back_in_one_buffer() {
    let mut all = hex(DEVICE_CONNECT);
    all.extend(hex(DEVICE_PUBLISH));
    all.extend(hex("c000e000"));
    let mut buf = BytesMut::from(&all[..]);
    let mut types = Vec::new();
    while let Some(p) = decode(&mut buf, Protocol::V311, MAX_PACKET_SIZE).unwrap() {
        types.push(p.packet_type().name());
    }
    assert_eq!(types, ["CONNECT", "PUBLISH", "PINGREQ", "DISCONNECT"]);
    assert!(buf.is_empty());
}

// ---------------------------------------------------------------------------------------
// Specification layouts
// ---------------------------------------------------------------------------------------

#[test]
fn mqtt31_mqisdp_connect() {
    let Packet::Connect(c) = golden("101200064d51497364700302003c000474657374", Protocol::V31)
    else {
        panic!()
    };
    assert_eq!(c.protocol, Protocol::V31);
    assert_eq!(&*c.client_id, "test");
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 60);
    assert!(c.username.is_none() && c.password.is_none() && c.will.is_none());
}

#[test]
fn mqtt311_connect_with_will_user_and_binary_password() {
    let Packet::Connect(c) = golden(
        "103f00044d51545404ee000a0008636c69656e742d31000f7374617475732f636c69656e742d3100076f66666c696e650005616c69636500080001736563726574",
        Protocol::V311,
    ) else {
        panic!()
    };
    assert_eq!(c.protocol, Protocol::V311);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(&*c.client_id, "client-1");
    let w = c.will.as_ref().unwrap();
    assert_eq!(w.topic.as_str(), "status/client-1");
    assert_eq!(&w.payload[..], b"offline");
    assert_eq!(w.qos, QoS::AtLeastOnce);
    assert!(w.retain);
    assert_eq!(c.username.as_deref(), Some("alice"));
    assert_eq!(c.password.as_deref(), Some(&b"\x00\x01secret"[..]));
}

#[test]
fn mqtt5_connect_with_properties_and_will_properties() {
    let Packet::Connect(c) = golden(
        "10a70100044d5154540596001e441100000e10210014270010000022000a1901170015000d534352414d2d5348412d323536160003010203260006726567696f6e00026575260006726567696f6e00027573000973656e736f722d343231180000001e0101020000007803000a746578742f706c61696e0800097265706c6965732f78090002dead2600016b000176000e77696c6c2f73656e736f722d34320004676f6e650003626f62",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(c.protocol, Protocol::V5);
    assert!(c.clean_start);
    assert_eq!(c.keep_alive, 30);
    assert_eq!(&*c.client_id, "sensor-42");
    let p = &c.properties;
    assert_eq!(p.session_expiry_interval, Some(3600));
    assert_eq!(p.receive_maximum, Some(20));
    assert_eq!(p.maximum_packet_size, Some(1_048_576));
    assert_eq!(p.topic_alias_maximum, Some(10));
    assert_eq!(p.request_response_information, Some(1));
    assert_eq!(p.request_problem_information, Some(0));
    assert_eq!(p.authentication_method, s("SCRAM-SHA-256"));
    assert_eq!(p.authentication_data.as_deref(), Some(&[1u8, 2, 3][..]));
    assert_eq!(
        p.user_properties,
        vec![pair("region", "eu"), pair("region", "us")]
    );
    let w = c.will.as_ref().unwrap();
    assert_eq!(w.qos, QoS::ExactlyOnce);
    assert!(!w.retain);
    assert_eq!(w.topic.as_str(), "will/sensor-42");
    assert_eq!(&w.payload[..], b"gone");
    assert_eq!(w.properties.will_delay_interval, Some(30));
    assert_eq!(w.properties.payload_format_indicator, Some(1));
    assert_eq!(w.properties.message_expiry_interval, Some(120));
    assert_eq!(w.properties.content_type, s("text/plain"));
    assert_eq!(w.properties.response_topic, s("replies/x"));
    assert_eq!(
        w.properties.correlation_data,
        Some(Bytes::from_static(b"\xde\xad"))
    );
    assert_eq!(w.properties.user_properties, vec![pair("k", "v")]);
    assert_eq!(c.username, s("bob"));
    assert_eq!(c.password, None);
}

#[test]
fn mqtt5_connack_with_every_property() {
    let Packet::ConnAck(c) = golden(
        "204b0100481100001c202100642401250027000100001200096175746f2d376633612200051f000777656c636f6d65280129002a011300781a0005726573702f1c000a6f746865723a31383833",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert!(c.session_present);
    assert_eq!(c.reason, ReasonCode::SUCCESS);
    let p = &c.properties;
    assert_eq!(p.session_expiry_interval, Some(7200));
    assert_eq!(p.receive_maximum, Some(100));
    assert_eq!(p.maximum_qos, Some(1));
    assert_eq!(p.retain_available, Some(0));
    assert_eq!(p.maximum_packet_size, Some(65536));
    assert_eq!(p.assigned_client_identifier, s("auto-7f3a"));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.reason_string, s("welcome"));
    assert_eq!(p.wildcard_subscription_available, Some(1));
    assert_eq!(p.subscription_identifiers_available, Some(0));
    assert_eq!(p.shared_subscription_available, Some(1));
    assert_eq!(p.server_keep_alive, Some(120));
    assert_eq!(p.response_information, s("resp/"));
    assert_eq!(p.server_reference, s("other:1883"));
    assert!(p.authentication_method.is_none() && p.user_properties.is_empty());
}

#[test]
fn mqtt5_connack_refused_not_authorized() {
    let Packet::ConnAck(c) = golden("2003008700", Protocol::V5) else {
        panic!()
    };
    assert!(!c.session_present);
    assert_eq!(c.reason, ReasonCode::NOT_AUTHORIZED);
}

#[test]
fn mqtt311_connack_return_codes_map_to_reason_codes() {
    let cases = [
        ("20020001", ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        ("20020002", ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        ("20020003", ReasonCode::SERVER_UNAVAILABLE),
        ("20020004", ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        ("20020005", ReasonCode::NOT_AUTHORIZED),
        ("20020100", ReasonCode::SUCCESS),
    ];
    for (wire, want) in cases {
        let Packet::ConnAck(c) = golden(wire, Protocol::V311) else {
            panic!()
        };
        assert_eq!(c.reason, want, "{wire}");
    }
}

#[test]
fn mqtt5_publish_with_every_publish_property() {
    let Packet::Publish(p) = golden(
        "335a000a73656e736f72732f7431000a410101020000003c230003080006726573702f310900030001020300106170706c69636174696f6e2f6a736f6e0b010bffffff7f26000161000131260001610001327b2274223a32312e357d",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(p.qos, QoS::AtLeastOnce);
    assert!(p.retain && !p.dup);
    assert_eq!(p.topic.as_str(), "sensors/t1");
    assert_eq!(p.packet_id, 10);
    let pr = &p.properties;
    assert_eq!(pr.payload_format_indicator, Some(1));
    assert_eq!(pr.message_expiry_interval, Some(60));
    assert_eq!(pr.topic_alias, Some(3));
    assert_eq!(pr.response_topic, s("resp/1"));
    assert_eq!(pr.correlation_data.as_deref(), Some(&[0u8, 1, 2][..]));
    assert_eq!(pr.content_type, s("application/json"));
    assert_eq!(pr.subscription_identifiers, vec![1, 268_435_455]);
    assert_eq!(pr.user_properties, vec![pair("a", "1"), pair("a", "2")]);
    assert_eq!(&p.payload[..], br#"{"t":21.5}"#);
}

#[test]
fn mqtt5_publish_with_topic_alias_and_empty_topic() {
    let Packet::Publish(p) = golden("300700000323000378", Protocol::V5) else {
        panic!()
    };
    assert!(p.topic.is_empty());
    assert_eq!(p.properties.topic_alias, Some(3));
    assert_eq!(&p.payload[..], b"x");
}

#[test]
fn mqtt311_publish_qos2_with_dup() {
    let Packet::Publish(p) = golden("3c090003612f6212346869", Protocol::V311) else {
        panic!()
    };
    assert_eq!(p.qos, QoS::ExactlyOnce);
    assert!(p.dup && !p.retain);
    assert_eq!(p.packet_id, 0x1234);
    assert_eq!(p.topic.as_str(), "a/b");
    assert_eq!(&p.payload[..], b"hi");
}

#[test]
fn mqtt5_subscribe_with_options_and_shared_subscription() {
    let Packet::Subscribe(sub) = golden(
        "823f00070a0bac0226000178000179000e73706f72742f74656e6e69732f232d00182473686172652f67312f73656e736f72732f2b2f74656d70120003612f6200",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(sub.packet_id, 7);
    assert_eq!(sub.properties.subscription_identifier, Some(300));
    assert_eq!(sub.properties.user_properties, vec![pair("x", "y")]);
    assert_eq!(sub.filters.len(), 3);
    let (f, o) = &sub.filters[0];
    assert_eq!(f.as_str(), "sport/tennis/#");
    assert_eq!(o.qos, QoS::AtLeastOnce);
    assert!(o.no_local && o.retain_as_published);
    assert_eq!(o.retain_handling, RetainHandling::DoNotSend);
    let (f, o) = &sub.filters[1];
    assert!(f.is_shared());
    assert_eq!(f.share_group(), Some("g1"));
    assert_eq!(f.filter(), "sensors/+/temp");
    assert_eq!(o.qos, QoS::ExactlyOnce);
    assert!(!o.no_local && !o.retain_as_published);
    assert_eq!(o.retain_handling, RetainHandling::SendIfNew);
    let (f, o) = &sub.filters[2];
    assert_eq!(*f, TopicFilter::new("a/b").unwrap());
    assert_eq!(o.qos, QoS::AtMostOnce);
    assert_eq!(o.retain_handling, RetainHandling::SendAtSubscribe);
}

#[test]
fn mqtt311_subscribe_suback_unsubscribe_unsuback() {
    let Packet::Subscribe(sub) = golden("820e00010005612f2b2f630100012302", Protocol::V311) else {
        panic!()
    };
    assert_eq!(sub.packet_id, 1);
    let got: Vec<_> = sub
        .filters
        .iter()
        .map(|(f, o)| (f.as_str(), o.qos))
        .collect();
    assert_eq!(got, [("a/+/c", QoS::AtLeastOnce), ("#", QoS::ExactlyOnce)]);

    let Packet::SubAck(ack) = golden("900400010180", Protocol::V311) else {
        panic!()
    };
    assert_eq!(ack.packet_id, 1);
    assert_eq!(
        ack.reasons,
        [ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR]
    );

    let Packet::Unsubscribe(u) = golden("a20c00020005612f2b2f63000123", Protocol::V311) else {
        panic!()
    };
    assert_eq!(u.packet_id, 2);
    let got: Vec<_> = u.filters.iter().map(TopicFilter::as_str).collect();
    assert_eq!(got, ["a/+/c", "#"]);

    let Packet::UnsubAck(ua) = golden("b0020002", Protocol::V311) else {
        panic!()
    };
    assert_eq!(ua.packet_id, 2);
    assert!(ua.reasons.is_empty());
}

#[test]
fn mqtt5_suback_unsubscribe_unsuback() {
    let Packet::SubAck(ack) = golden("90100007091f0006706172746c790102009e", Protocol::V5) else {
        panic!()
    };
    assert_eq!(ack.packet_id, 7);
    assert_eq!(ack.properties.reason_string, s("partly"));
    assert_eq!(
        ack.reasons,
        [
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        ]
    );
    let Packet::Unsubscribe(u) = golden(
        "a2160002072600016b000176000a2473686172652f672f61",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(u.properties.user_properties, vec![pair("k", "v")]);
    assert_eq!(u.filters[0].share_group(), Some("g"));
    let Packet::UnsubAck(ua) = golden("b0050002000011", Protocol::V5) else {
        panic!()
    };
    assert_eq!(
        ua.reasons,
        [ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
    );
}

#[test]
fn mqtt5_puback_with_reason_code_and_no_properties() {
    let Packet::PubAck(a) = golden("4003000110", Protocol::V5) else {
        panic!()
    };
    assert_eq!(a.packet_id, 1);
    assert_eq!(a.reason, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    assert!(a.properties.is_empty());
}

#[test]
fn mqtt5_puback_short_form_means_success() {
    // [MQTT-3.4.2.1]: the reason code and property length can be omitted for Success
    let Packet::PubAck(a) = golden("40020001", Protocol::V5) else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

#[test]
fn mqtt5_pubrec_pubrel_pubcomp() {
    let Packet::PubRec(a) = golden("50130002970f1f000571756f74612600016b000176", Protocol::V5)
    else {
        panic!()
    };
    assert_eq!(a.packet_id, 2);
    assert_eq!(a.reason, ReasonCode::QUOTA_EXCEEDED);
    assert_eq!(a.properties.reason_string, s("quota"));
    assert_eq!(a.properties.user_properties, vec![pair("k", "v")]);
    let Packet::PubRel(a) = golden("6203000392", Protocol::V5) else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
    let Packet::PubComp(a) = golden("70020004", Protocol::V5) else {
        panic!()
    };
    assert_eq!((a.packet_id, a.reason), (4, ReasonCode::SUCCESS));
}

#[test]
fn mqtt311_acks_pings_and_disconnect() {
    for (wire, want) in [
        ("40020001", "PUBACK"),
        ("50020001", "PUBREC"),
        ("62020001", "PUBREL"),
        ("70020001", "PUBCOMP"),
        ("c000", "PINGREQ"),
        ("d000", "PINGRESP"),
        ("e000", "DISCONNECT"),
    ] {
        assert_eq!(golden(wire, Protocol::V311).packet_type().name(), want);
    }
}

#[test]
fn mqtt5_disconnect_with_reason_and_properties() {
    let Packet::Disconnect(d) = golden(
        "e016041411000000001f00036279651c0006623a31383833",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(d.reason, ReasonCode::DISCONNECT_WITH_WILL);
    assert_eq!(d.properties.session_expiry_interval, Some(0));
    assert_eq!(d.properties.reason_string, s("bye"));
    assert_eq!(d.properties.server_reference, s("b:1883"));
    let Packet::Disconnect(d) = golden("e0018e", Protocol::V5) else {
        panic!()
    };
    assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER);
    assert!(d.properties.is_empty());
    let Packet::Disconnect(d) = golden("e000", Protocol::V5) else {
        panic!()
    };
    assert_eq!(d.reason, ReasonCode::NORMAL_DISCONNECTION);
}

#[test]
fn mqtt5_auth_continue_and_empty() {
    let Packet::Auth(a) = golden(
        "f027182515000b534352414d2d5348412d3116000c636c69656e742d66697273741f0005676f206f6e",
        Protocol::V5,
    ) else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::CONTINUE_AUTHENTICATION);
    assert_eq!(a.properties.authentication_method, s("SCRAM-SHA-1"));
    assert_eq!(
        a.properties.authentication_data.as_deref(),
        Some(&b"client-first"[..])
    );
    assert_eq!(a.properties.reason_string, s("go on"));
    let Packet::Auth(a) = golden("f000", Protocol::V5) else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::SUCCESS);
}

// ---------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------

#[test]
fn max_packet_size_is_enforced_from_the_fixed_header_alone() {
    // PUBLISH announcing 268,435,455 bytes: only the 5 header bytes are buffered
    let mut buf = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0x7F][..]);
    let err = decode(&mut buf, Protocol::V311, 1024).unwrap_err();
    assert_eq!(
        err,
        DecodeError::PacketTooLarge {
            size: 268_435_455 + 5,
            max: 1024
        }
    );
    assert_eq!(err.reason_code(), ReasonCode::PACKET_TOO_LARGE);
    assert_eq!(buf.len(), 5, "nothing consumed");

    // the limit counts the whole packet: 2 header bytes + 98 = 100 passes, 101 does not
    let mut ok = BytesMut::from(&[0x30u8, 98][..]);
    assert_eq!(decode(&mut ok, Protocol::V311, 100).unwrap(), None);
    let mut big = BytesMut::from(&[0x30u8, 99][..]);
    assert_eq!(
        decode(&mut big, Protocol::V311, 100).unwrap_err(),
        DecodeError::PacketTooLarge {
            size: 101,
            max: 100
        }
    );
    let h = frame_header(&[0x30, 0x80, 0x01], MAX_PACKET_SIZE)
        .unwrap()
        .unwrap();
    assert_eq!(
        (h.header_len, h.remaining_len, h.packet_len()),
        (3, 128, 131)
    );
}

#[test]
fn header_bytes_alone_are_not_an_error() {
    for partial in [&[][..], &[0x30], &[0x30, 0xFF], &[0x30, 0xFF, 0xFF, 0xFF]] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(
            decode(&mut buf, Protocol::V5, MAX_PACKET_SIZE).unwrap(),
            None
        );
        assert_eq!(buf.len(), partial.len());
    }
}
