//! Property tests: every packet type, valid for each protocol version, survives
//! encode → decode unchanged; `encoded_len` is exact; packets back to back in one buffer
//! decode one after the other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use midge_codec::bytes::{Bytes, BytesMut};
use midge_codec::bytestring::ByteString;
use midge_codec::*;
use proptest::option::of;
use proptest::prelude::*;

const CASES: u32 = 500;

// --- primitives ------------------------------------------------------------------------

fn text() -> impl Strategy<Value = ByteString> {
    // any printable Unicode (never U+0000), including multi-byte characters
    "\\PC{0,12}".prop_map(ByteString::from)
}

fn bin() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_ -]{0,6}",
        1 => "[\\p{L}°€]{1,3}",
        1 => Just("$SYS".to_string()),
    ]
}

fn topic() -> impl Strategy<Value = TopicName> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| {
        let mut t = levels.join("/");
        if t.is_empty() {
            t.push('t');
        }
        TopicName::new(t).expect("generated topic is valid")
    })
}

/// A Response Topic: a topic name (no wildcards, not empty) [MQTT-3.3.2-14].
fn response_topic() -> impl Strategy<Value = ByteString> {
    topic().prop_map(|t| ByteString::from(t.as_str()))
}

fn filter() -> impl Strategy<Value = TopicFilter> {
    let level = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (
        prop::collection::vec(level, 1..5),
        any::<bool>(),
        of("[a-z0-9_-]{1,6}"),
    )
        .prop_map(|(mut levels, hash, share)| {
            if hash {
                levels.push("#".into());
            }
            let mut f = levels.join("/");
            if f.is_empty() {
                f.push('#');
            }
            if let Some(group) = share {
                f = format!("$share/{group}/{f}");
            }
            TopicFilter::new(f.clone()).unwrap_or_else(|e| panic!("{f:?}: {e}"))
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pid() -> impl Strategy<Value = u16> {
    1..=u16::MAX
}

fn reason_for(t: PacketType) -> impl Strategy<Value = ReasonCode> {
    let valid: Vec<ReasonCode> = (0..=255u8)
        .map(ReasonCode)
        .filter(|r| r.valid_for(t))
        .collect();
    prop::sample::select(valid)
}

fn v3_suback_reason() -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(vec![
        ReasonCode::GRANTED_QOS_0,
        ReasonCode::GRANTED_QOS_1,
        ReasonCode::GRANTED_QOS_2,
        ReasonCode::UNSPECIFIED_ERROR,
    ])
}

fn users() -> impl Strategy<Value = Vec<UserProperty>> {
    prop::collection::vec((text(), text()), 0..3)
}

fn flag() -> impl Strategy<Value = Option<u8>> {
    of(0u8..=1)
}

fn nz16() -> impl Strategy<Value = Option<u16>> {
    of(1..=u16::MAX)
}

fn sub_id() -> impl Strategy<Value = u32> {
    1..=MAX_VARINT
}

/// Authentication method and data: data only ever together with a method.
fn auth_pair() -> impl Strategy<Value = (Option<ByteString>, Option<Bytes>)> {
    of((text(), of(bin()))).prop_map(|p| match p {
        Some((m, d)) => (Some(m), d),
        None => (None, None),
    })
}

// --- MQTT 5 property sets ----------------------------------------------------------------

fn connect_props() -> impl Strategy<Value = ConnectProperties> {
    (
        of(any::<u32>()),
        nz16(),
        of(1..=u32::MAX),
        of(any::<u16>()),
        flag(),
        flag(),
        auth_pair(),
        users(),
    )
        .prop_map(
            |(se, rm, mps, tam, rri, rpi, (am, ad), up)| ConnectProperties {
                session_expiry_interval: se,
                receive_maximum: rm,
                maximum_packet_size: mps,
                topic_alias_maximum: tam,
                request_response_information: rri,
                request_problem_information: rpi,
                authentication_method: am,
                authentication_data: ad,
                user_properties: up,
            },
        )
}

/// Will properties, and a payload that matches the payload format indicator.
fn will_props_and_payload() -> impl Strategy<Value = (WillProperties, Bytes)> {
    (
        of(any::<u32>()),
        flag(),
        of(any::<u32>()),
        of(text()),
        of(response_topic()),
        of(bin()),
        users(),
        bin(),
        text(),
    )
        .prop_map(|(wd, pfi, me, ct, rt, cd, up, raw, utf8)| {
            let payload = if pfi == Some(1) {
                utf8.into_bytes()
            } else {
                raw
            };
            let p = WillProperties {
                will_delay_interval: wd,
                payload_format_indicator: pfi,
                message_expiry_interval: me,
                content_type: ct,
                response_topic: rt,
                correlation_data: cd,
                user_properties: up,
            };
            (p, payload)
        })
}

fn connack_props() -> impl Strategy<Value = ConnAckProperties> {
    (
        (
            of(any::<u32>()),
            nz16(),
            flag(),
            flag(),
            of(1..=u32::MAX),
            of(text()),
            of(any::<u16>()),
            of(text()),
        ),
        (
            flag(),
            flag(),
            flag(),
            of(any::<u16>()),
            of(text()),
            of(text()),
            auth_pair(),
            users(),
        ),
    )
        .prop_map(
            |((se, rm, mq, ra, mps, aci, tam, rs), (wsa, sia, ssa, ska, ri, sr, (am, ad), up))| {
                ConnAckProperties::from(ConnAckPropertyValues {
                    session_expiry_interval: se,
                    receive_maximum: rm,
                    maximum_qos: mq,
                    retain_available: ra,
                    maximum_packet_size: mps,
                    assigned_client_identifier: aci,
                    topic_alias_maximum: tam,
                    reason_string: rs,
                    wildcard_subscription_available: wsa,
                    subscription_identifiers_available: sia,
                    shared_subscription_available: ssa,
                    server_keep_alive: ska,
                    response_information: ri,
                    server_reference: sr,
                    authentication_method: am,
                    authentication_data: ad,
                    user_properties: up,
                })
            },
        )
}

fn ack_props() -> impl Strategy<Value = AckProperties> {
    (of(text()), users()).prop_map(|(rs, up)| AckProperties {
        reason_string: rs,
        user_properties: up,
    })
}

// --- packets -------------------------------------------------------------------------------

fn connect(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let will = of((topic(), qos(), any::<bool>(), will_props_and_payload()));
    (
        any::<bool>(),
        any::<u16>(),
        connect_props(),
        text(),
        will,
        of(text()),
        of(bin()),
        any::<bool>(),
    )
        .prop_map(move |(clean, ka, props, id, will, user, pass, bridge)| {
            let will = will.map(|(topic, qos, retain, (props, payload))| LastWill {
                topic,
                payload,
                qos,
                retain,
                properties: if v5 { props } else { Default::default() },
            });
            // [MQTT-3.1.2-22]: no password without a user name before 5.0
            let password = if v5 || user.is_some() { pass } else { None };
            Packet::Connect(Box::new(Connect {
                protocol: v,
                clean_start: clean,
                keep_alive: ka,
                properties: if v5 { props } else { Default::default() },
                client_id: id,
                will,
                username: user,
                password,
                bridge,
            }))
        })
}

fn connack(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        any::<bool>(),
        reason_for(PacketType::ConnAck),
        0u8..=5,
        connack_props(),
    )
        .prop_map(move |(sp, r5, r3, props)| {
            Packet::ConnAck(if v5 {
                ConnAck {
                    session_present: sp,
                    reason: r5,
                    properties: props,
                }
            } else {
                ConnAck {
                    session_present: sp,
                    reason: ReasonCode::from_v3_connack(r3).unwrap(),
                    properties: Default::default(),
                }
            })
        })
}

fn publish(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let props = (
        flag(),
        of(any::<u32>()),
        nz16(),
        of(response_topic()),
        of(bin()),
        of(text()),
        prop::collection::vec(sub_id(), 0..3),
        users(),
    );
    (
        (qos(), any::<bool>(), any::<bool>(), pid()),
        topic(),
        any::<bool>(),
        props,
        bin(),
        text(),
    )
        .prop_map(
            move |((qos, dup, retain, id), topic, alias_only, props, raw, utf8)| {
                let (pfi, me, ta, rt, cd, ct, sids, up) = props;
                let mut p = Publish::new(topic, raw);
                p.qos = qos;
                p.retain = retain;
                if qos != QoS::AtMostOnce {
                    p.dup = dup;
                    p.packet_id = id;
                }
                if v5 {
                    p.properties = PublishProperties::from(PublishPropertyValues {
                        payload_format_indicator: pfi,
                        message_expiry_interval: me,
                        topic_alias: ta,
                        response_topic: rt,
                        correlation_data: cd,
                        content_type: ct,
                        subscription_identifiers: sids,
                        user_properties: up,
                    });
                    if pfi == Some(1) {
                        p.payload = utf8.into_bytes();
                    }
                    if alias_only && ta.is_some() {
                        p.topic = TopicName::empty();
                    }
                }
                Packet::Publish(p)
            },
        )
}

fn pub_ack(v: Protocol, t: PacketType) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (pid(), reason_for(t), ack_props()).prop_map(move |(id, reason, props)| {
        let mut a = PubAck::new(id);
        if v5 {
            a.reason = reason;
            a.properties = props;
        }
        match t {
            PacketType::PubAck => Packet::PubAck(a),
            PacketType::PubRec => Packet::PubRec(a),
            PacketType::PubRel => Packet::PubRel(a),
            _ => Packet::PubComp(a),
        }
    })
}

fn options(v5: bool) -> impl Strategy<Value = SubscriptionOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..3).prop_map(move |(qos, nl, rap, rh)| {
        if !v5 {
            return SubscriptionOptions::qos(qos);
        }
        SubscriptionOptions {
            qos,
            no_local: nl,
            retain_as_published: rap,
            retain_handling: match rh {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                _ => RetainHandling::DoNotSend,
            },
        }
    })
}

fn subscribe(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        pid(),
        of(sub_id()),
        users(),
        prop::collection::vec((filter(), options(v5)), 1..5),
    )
        .prop_map(move |(id, sid, up, mut filters)| {
            for (f, o) in &mut filters {
                // [MQTT-3.8.3-4]: no local is a protocol error on a shared subscription
                if f.is_shared() {
                    o.no_local = false;
                }
            }
            Packet::Subscribe(Subscribe {
                packet_id: id,
                properties: if v5 {
                    SubscribeProperties {
                        subscription_identifier: sid,
                        user_properties: up,
                    }
                } else {
                    Default::default()
                },
                filters,
            })
        })
}

fn suback(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    let reason = if v5 {
        reason_for(PacketType::SubAck).boxed()
    } else {
        v3_suback_reason().boxed()
    };
    (pid(), ack_props(), prop::collection::vec(reason, 1..6)).prop_map(
        move |(id, props, reasons)| {
            Packet::SubAck(SubAck {
                packet_id: id,
                properties: if v5 { props } else { Default::default() },
                reasons,
            })
        },
    )
}

fn unsubscribe(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (pid(), users(), prop::collection::vec(filter(), 1..5)).prop_map(move |(id, up, filters)| {
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            properties: if v5 {
                UnsubscribeProperties {
                    user_properties: up,
                }
            } else {
                Default::default()
            },
            filters,
        })
    })
}

fn unsuback(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        pid(),
        ack_props(),
        prop::collection::vec(reason_for(PacketType::UnsubAck), 1..6),
    )
        .prop_map(move |(id, props, reasons)| {
            Packet::UnsubAck(if v5 {
                UnsubAck {
                    packet_id: id,
                    properties: props,
                    reasons,
                }
            } else {
                UnsubAck {
                    packet_id: id,
                    properties: Default::default(),
                    reasons: Vec::new(),
                }
            })
        })
}

fn disconnect(v: Protocol) -> impl Strategy<Value = Packet> {
    let v5 = v.is_v5();
    (
        reason_for(PacketType::Disconnect),
        of(any::<u32>()),
        of(text()),
        of(text()),
        users(),
    )
        .prop_map(move |(reason, se, rs, sr, up)| {
            Packet::Disconnect(if v5 {
                Disconnect {
                    reason,
                    properties: DisconnectProperties::from(DisconnectPropertyValues {
                        session_expiry_interval: se,
                        reason_string: rs,
                        server_reference: sr,
                        user_properties: up,
                    }),
                }
            } else {
                Disconnect::default()
            })
        })
}

fn auth() -> impl Strategy<Value = Packet> {
    (
        reason_for(PacketType::Auth),
        auth_pair(),
        of(text()),
        users(),
    )
        .prop_map(|(reason, (am, ad), rs, up)| {
            Packet::Auth(Auth {
                reason,
                properties: AuthProperties::from(AuthPropertyValues {
                    authentication_method: am,
                    authentication_data: ad,
                    reason_string: rs,
                    user_properties: up,
                }),
            })
        })
}

/// Every packet type that exists in `v`, with only the fields `v` has.
fn packet(v: Protocol) -> BoxedStrategy<Packet> {
    let mut all = vec![
        connect(v).boxed(),
        connack(v).boxed(),
        publish(v).boxed(),
        pub_ack(v, PacketType::PubAck).boxed(),
        pub_ack(v, PacketType::PubRec).boxed(),
        pub_ack(v, PacketType::PubRel).boxed(),
        pub_ack(v, PacketType::PubComp).boxed(),
        subscribe(v).boxed(),
        suback(v).boxed(),
        unsubscribe(v).boxed(),
        unsuback(v).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(v).boxed(),
    ];
    if v.is_v5() {
        all.push(auth().boxed());
    }
    prop::strategy::Union::new(all).boxed()
}

// --- properties under test -----------------------------------------------------------------

fn encode(p: &Packet, v: Protocol) -> BytesMut {
    let mut buf = BytesMut::new();
    p.encode(v, &mut buf).unwrap();
    buf
}

fn round_trip(p: &Packet, v: Protocol) -> Result<(), TestCaseError> {
    let mut buf = encode(p, v);
    prop_assert_eq!(p.encoded_len(v).unwrap(), buf.len());
    let wire = buf.clone();
    let got = decode(&mut buf, v, MAX_PACKET_SIZE);
    prop_assert_eq!(got, Ok(Some(p.clone())), "wire {:02x?}", &wire[..]);
    prop_assert!(buf.is_empty());
    Ok(())
}

fn back_to_back(a: &Packet, b: &Packet, v: Protocol) -> Result<(), TestCaseError> {
    // two different packets: the same one twice could hide an off-by-one at the boundary
    let mut buf = encode(a, v);
    b.encode(v, &mut buf).unwrap();
    let total = buf.len();
    prop_assert_eq!(total, a.encoded_len(v).unwrap() + b.encoded_len(v).unwrap());
    prop_assert_eq!(decode(&mut buf, v, MAX_PACKET_SIZE), Ok(Some(a.clone())));
    prop_assert_eq!(decode(&mut buf, v, MAX_PACKET_SIZE), Ok(Some(b.clone())));
    prop_assert_eq!(decode(&mut buf, v, MAX_PACKET_SIZE), Ok(None));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn mqtt31_packets_round_trip(p in packet(Protocol::V31)) {
        round_trip(&p, Protocol::V31)?;
    }

    #[test]
    fn mqtt311_packets_round_trip(p in packet(Protocol::V311)) {
        round_trip(&p, Protocol::V311)?;
    }

    #[test]
    fn mqtt5_packets_round_trip(p in packet(Protocol::V5)) {
        round_trip(&p, Protocol::V5)?;
    }

    /// The head of a PUBLISH followed by its payload is the whole packet, byte for byte.
    #[test]
    fn a_publish_head_and_its_payload_are_the_whole_packet(
        p in prop_oneof![publish(Protocol::V311), publish(Protocol::V5)],
        v5 in any::<bool>(),
    ) {
        let v = if v5 { Protocol::V5 } else { Protocol::V311 };
        let mut whole = BytesMut::new();
        let mut head = BytesMut::new();
        if p.encode(v, &mut whole).is_ok() {
            p.encode_head(v, &mut head).unwrap();
            if let Packet::Publish(pb) = &p {
                head.extend_from_slice(&pb.payload);
            }
            prop_assert_eq!(head, whole);
        }
    }

    #[test]
    fn two_packets_back_to_back_decode_in_order(
        (v, a, b) in prop_oneof![Just(Protocol::V31), Just(Protocol::V311), Just(Protocol::V5)]
            .prop_flat_map(|v| (Just(v), packet(v), packet(v)))
    ) {
        back_to_back(&a, &b, v)?;
    }

    #[test]
    fn any_prefix_of_a_packet_needs_more_bytes(
        (v, p, cut) in prop_oneof![Just(Protocol::V311), Just(Protocol::V5)]
            .prop_flat_map(|v| (Just(v), packet(v), any::<prop::sample::Index>()))
    ) {
        let wire = encode(&p, v);
        let n = cut.index(wire.len());
        let mut partial = BytesMut::from(&wire[..n]);
        prop_assert_eq!(decode(&mut partial, v, MAX_PACKET_SIZE), Ok(None));
        prop_assert_eq!(partial.len(), n);
    }
}

#[test]
fn encoding_refuses_a_subscription_identifier_above_the_varint_range() {
    let mut p = Publish::new(TopicName::new("t").unwrap(), "x");
    p.properties.subscription_identifiers = vec![MAX_VARINT + 1];
    let p = Packet::Publish(p);
    let mut buf = BytesMut::new();
    assert_eq!(
        p.encode(Protocol::V5, &mut buf),
        Err(EncodeError::VarIntOutOfRange(MAX_VARINT + 1))
    );
    assert!(buf.is_empty(), "nothing written on error");
    assert_eq!(
        p.encoded_len(Protocol::V5),
        Err(EncodeError::VarIntOutOfRange(MAX_VARINT + 1))
    );
}
