//! Decoding: framing from a growing buffer (check-then-parse), then one function per packet.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::packet::*;
use crate::properties::{self, ConnectProperties, WillProperties};
use crate::reason::ReasonCode;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketType, Protocol, QoS};
use crate::wire::{Reader, VarInt, read_varint, utf8};

/// The fixed header of a packet whose bytes are (at least partly) in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// First byte: packet type and flags.
    pub first_byte: u8,
    /// Length of the fixed header (2 to 5 bytes).
    pub header_len: usize,
    /// Remaining length announced by the fixed header.
    pub remaining_len: usize,
}

impl FrameHeader {
    /// Total size of the packet in bytes.
    pub fn packet_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Read the fixed header from the front of `buf` and check the packet size against
/// `max_packet_size` before any of the body needs to be buffered.
///
/// Returns `Ok(None)` when more bytes are needed to know the header.
pub fn frame_header(buf: &[u8], max_packet_size: u32) -> Result<Option<FrameHeader>, DecodeError> {
    let Some((&first_byte, rest)) = buf.split_first() else {
        return Ok(None);
    };
    match read_varint(rest) {
        VarInt::Incomplete => Ok(None),
        VarInt::TooLong | VarInt::NonMinimal => Err(DecodeError::MalformedRemainingLength),
        VarInt::Value(remaining, n) => {
            let header = FrameHeader {
                first_byte,
                header_len: 1 + n,
                remaining_len: remaining as usize,
            };
            if header.packet_len() > max_packet_size as usize {
                return Err(DecodeError::PacketTooLarge {
                    size: header.packet_len(),
                    max: max_packet_size,
                });
            }
            Ok(Some(header))
        }
    }
}

/// Decode one packet from the front of `buf`.
///
/// * `Ok(Some(packet))`: a packet was decoded and its bytes removed from `buf`.
/// * `Ok(None)`: `buf` does not hold a whole packet yet; read more and call again.
/// * `Err(e)`: the stream is broken; answer with `e.reason_code()` and close.
///
/// `protocol` is the level of the connection; a CONNECT carries its own and is decoded
/// whatever is passed. The payload and strings of the packet share the buffer's memory.
pub fn decode(
    buf: &mut BytesMut,
    protocol: Protocol,
    max_packet_size: u32,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = frame_header(buf, max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.packet_len() {
        return Ok(None);
    }
    // drop the fixed header in place, then take the body: one shared-buffer reference per
    // packet instead of two
    buf.advance(header.header_len);
    let body = buf.split_to(header.remaining_len).freeze();
    decode_body(header.first_byte, body, protocol).map(Some)
}

/// Decode a packet from its first byte and its body (the bytes after the fixed header).
pub fn decode_body(first_byte: u8, body: Bytes, protocol: Protocol) -> Result<Packet, DecodeError> {
    let nibble = first_byte >> 4;
    let flags = first_byte & 0x0F;
    let ptype = PacketType::from_nibble(nibble).ok_or(DecodeError::ReservedPacketType(nibble))?;
    if ptype == PacketType::Auth && !protocol.is_v5() {
        return Err(DecodeError::PacketNotInVersion(ptype));
    }
    check_flags(ptype, flags, protocol)?;
    let mut r = Reader::new(body);
    let packet = match ptype {
        PacketType::Connect => Packet::Connect(Box::new(connect(&mut r)?)),
        PacketType::ConnAck => Packet::ConnAck(connack(&mut r, protocol)?),
        PacketType::Publish => Packet::Publish(publish(&mut r, flags, protocol)?),
        PacketType::PubAck => Packet::PubAck(puback(&mut r, ptype, protocol)?),
        PacketType::PubRec => Packet::PubRec(puback(&mut r, ptype, protocol)?),
        PacketType::PubRel => Packet::PubRel(puback(&mut r, ptype, protocol)?),
        PacketType::PubComp => Packet::PubComp(puback(&mut r, ptype, protocol)?),
        PacketType::Subscribe => Packet::Subscribe(subscribe(&mut r, protocol)?),
        PacketType::SubAck => Packet::SubAck(suback(&mut r, protocol)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(unsubscribe(&mut r, protocol)?),
        PacketType::UnsubAck => Packet::UnsubAck(unsuback(&mut r, protocol)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect => Packet::Disconnect(disconnect(&mut r, protocol)?),
        PacketType::Auth => Packet::Auth(auth(&mut r)?),
    };
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes(r.remaining(), ptype));
    }
    Ok(packet)
}

/// Fixed header flags (§2.1.3): PUBLISH carries DUP/QoS/RETAIN, PUBREL, SUBSCRIBE and
/// UNSUBSCRIBE must carry 0b0010, everything else 0. MQTT 3.1 sent those three with QoS 1 and
/// possibly DUP, so only the QoS bits are checked there (as mosquitto does).
fn check_flags(ptype: PacketType, flags: u8, protocol: Protocol) -> Result<(), DecodeError> {
    let ok = match ptype {
        PacketType::Publish => true,
        PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => {
            if protocol == Protocol::V31 {
                flags & 0b0110 == 0b0010
            } else {
                flags == 0b0010
            }
        }
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags {
            packet: ptype,
            flags,
        })
    }
}

fn packet_id(r: &mut Reader, ptype: PacketType) -> Result<u16, DecodeError> {
    let id = r.u16("packet identifier")?;
    if id == 0 {
        return Err(DecodeError::ZeroPacketId(ptype));
    }
    Ok(id)
}

fn reason(r: &mut Reader, ptype: PacketType) -> Result<ReasonCode, DecodeError> {
    let code = ReasonCode(r.u8("reason code")?);
    if !code.valid_for(ptype) {
        return Err(DecodeError::InvalidReasonCode {
            packet: ptype,
            code: code.0,
        });
    }
    Ok(code)
}

fn check_payload_format(indicator: Option<u8>, payload: &[u8]) -> Result<(), DecodeError> {
    if indicator == Some(1) && std::str::from_utf8(payload).is_err() {
        return Err(DecodeError::PayloadFormatInvalid);
    }
    Ok(())
}

fn connect(r: &mut Reader) -> Result<Connect, DecodeError> {
    let name = r.binary("protocol name")?;
    let level = r.u8("protocol level")?;
    // mosquitto's bridges set bit 0x80 of the level (`try_private`) on the known levels.
    let bridge = level & 0x80 != 0;
    let protocol = match (&name[..], level & 0x7F) {
        (b"MQTT", 4) => Protocol::V311,
        (b"MQTT", 5) => Protocol::V5,
        (b"MQIsdp", 3) => Protocol::V31,
        (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolLevel(level)),
        (other, _) => {
            return Err(DecodeError::InvalidProtocolName(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    let flags = r.u8("connect flags")?;
    if flags & 0x01 != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let clean_start = flags & 0x02 != 0;
    let will_flag = flags & 0x04 != 0;
    let will_qos_bits = (flags >> 3) & 0x03;
    let will_retain = flags & 0x20 != 0;
    let password_flag = flags & 0x40 != 0;
    let username_flag = flags & 0x80 != 0;
    if will_qos_bits == 3 || (!will_flag && (will_qos_bits != 0 || will_retain)) {
        return Err(DecodeError::InvalidWillFlags);
    }
    if password_flag && !username_flag && !protocol.is_v5() {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = r.u16("keep alive")?;
    let properties: ConnectProperties = if protocol.is_v5() {
        properties::decode(r)?
    } else {
        ConnectProperties::default()
    };
    if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    let client_id = r.string("client identifier")?;
    let will = if will_flag {
        let wprops: WillProperties = if protocol.is_v5() {
            properties::decode(r)?
        } else {
            WillProperties::default()
        };
        let topic = r.string("will topic")?;
        let topic = TopicName::new(topic).map_err(DecodeError::InvalidTopicName)?;
        let payload = r.binary("will payload")?;
        check_payload_format(wprops.payload_format_indicator, &payload)?;
        Some(LastWill {
            topic,
            payload,
            qos: QoS::from_bits(will_qos_bits)?,
            retain: will_retain,
            properties: wprops,
        })
    } else {
        None
    };
    let username = if username_flag {
        Some(r.string("user name")?)
    } else {
        None
    };
    let password = if password_flag {
        Some(r.binary("password")?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start,
        keep_alive,
        properties,
        client_id,
        will,
        username,
        password,
        bridge,
    })
}

fn connack(r: &mut Reader, protocol: Protocol) -> Result<ConnAck, DecodeError> {
    let flags = r.u8("connack flags")?;
    if flags & 0xFE != 0 {
        return Err(DecodeError::ConnAckReservedFlags);
    }
    let code = r.u8("connack code")?;
    let (reason, properties) = if protocol.is_v5() {
        let reason = ReasonCode(code);
        if !reason.valid_for(PacketType::ConnAck) {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::ConnAck,
                code,
            });
        }
        let props = if r.is_empty() {
            Default::default()
        } else {
            properties::decode(r)?
        };
        (reason, props)
    } else {
        let reason = ReasonCode::from_v3_connack(code).ok_or(DecodeError::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        })?;
        (reason, Default::default())
    };
    Ok(ConnAck {
        session_present: flags & 0x01 != 0,
        reason,
        properties,
    })
}

fn publish(r: &mut Reader, flags: u8, protocol: Protocol) -> Result<Publish, DecodeError> {
    let dup = flags & 0x08 != 0;
    let qos = QoS::from_bits((flags >> 1) & 0x03)?;
    let retain = flags & 0x01 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(DecodeError::DupWithQoS0);
    }
    let topic = r.string("topic name")?;
    let topic = TopicName::from_wire(topic).map_err(DecodeError::InvalidTopicName)?;
    let packet_id = if qos == QoS::AtMostOnce {
        0
    } else {
        packet_id(r, PacketType::Publish)?
    };
    let properties: crate::properties::PublishProperties = if protocol.is_v5() {
        properties::decode(r)?
    } else {
        Default::default()
    };
    if topic.is_empty() {
        if !protocol.is_v5() {
            return Err(DecodeError::InvalidTopicName(
                crate::topic::TopicError::Empty,
            ));
        }
        if properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicWithoutAlias);
        }
    }
    let payload = r.rest();
    check_payload_format(properties.payload_format_indicator, &payload)?;
    Ok(Publish {
        dup,
        qos,
        retain,
        topic,
        packet_id,
        properties,
        payload,
    })
}

fn puback(r: &mut Reader, ptype: PacketType, protocol: Protocol) -> Result<PubAck, DecodeError> {
    let packet_id = packet_id(r, ptype)?;
    let mut ack = PubAck::new(packet_id);
    if protocol.is_v5() && !r.is_empty() {
        ack.reason = reason(r, ptype)?;
        if !r.is_empty() {
            ack.properties = properties::decode(r)?;
        }
    }
    Ok(ack)
}

fn subscribe(r: &mut Reader, protocol: Protocol) -> Result<Subscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Subscribe)?;
    let properties = if protocol.is_v5() {
        properties::decode(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let raw = r.string("topic filter")?;
        let filter = TopicFilter::new(raw).map_err(DecodeError::InvalidTopicFilter)?;
        let bits = r.u8("subscription options")?;
        let options = if protocol.is_v5() {
            if bits & 0xC0 != 0 {
                return Err(DecodeError::InvalidSubscriptionOptions);
            }
            let retain_handling = match (bits >> 4) & 0x03 {
                0 => RetainHandling::SendAtSubscribe,
                1 => RetainHandling::SendIfNew,
                2 => RetainHandling::DoNotSend,
                _ => return Err(DecodeError::InvalidRetainHandling),
            };
            let no_local = bits & 0x04 != 0;
            if no_local && filter.is_shared() {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            SubscriptionOptions {
                qos: QoS::from_bits(bits & 0x03)?,
                no_local,
                retain_as_published: bits & 0x08 != 0,
                retain_handling,
            }
        } else {
            if bits & 0xFC != 0 {
                return Err(DecodeError::InvalidSubscriptionOptions);
            }
            SubscriptionOptions::qos(QoS::from_bits(bits)?)
        };
        filters.push((filter, options));
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptySubscribe);
    }
    Ok(Subscribe {
        packet_id,
        properties,
        filters,
    })
}

fn suback(r: &mut Reader, protocol: Protocol) -> Result<SubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::SubAck)?;
    let properties = if protocol.is_v5() {
        properties::decode(r)?
    } else {
        Default::default()
    };
    let mut reasons = Vec::with_capacity(r.remaining());
    while !r.is_empty() {
        let code = r.u8("suback reason code")?;
        let ok = if protocol.is_v5() {
            ReasonCode(code).valid_for(PacketType::SubAck)
        } else {
            matches!(code, 0 | 1 | 2 | 0x80)
        };
        if !ok {
            return Err(DecodeError::InvalidReasonCode {
                packet: PacketType::SubAck,
                code,
            });
        }
        reasons.push(ReasonCode(code));
    }
    if reasons.is_empty() {
        return Err(DecodeError::UnexpectedEnd("SUBACK reason codes"));
    }
    Ok(SubAck {
        packet_id,
        properties,
        reasons,
    })
}

fn unsubscribe(r: &mut Reader, protocol: Protocol) -> Result<Unsubscribe, DecodeError> {
    let packet_id = packet_id(r, PacketType::Unsubscribe)?;
    let properties = if protocol.is_v5() {
        properties::decode(r)?
    } else {
        Default::default()
    };
    let mut filters = Vec::new();
    while !r.is_empty() {
        let raw = r.string("topic filter")?;
        filters.push(TopicFilter::new(raw).map_err(DecodeError::InvalidTopicFilter)?);
    }
    if filters.is_empty() {
        return Err(DecodeError::EmptyUnsubscribe);
    }
    Ok(Unsubscribe {
        packet_id,
        properties,
        filters,
    })
}

fn unsuback(r: &mut Reader, protocol: Protocol) -> Result<UnsubAck, DecodeError> {
    let packet_id = packet_id(r, PacketType::UnsubAck)?;
    let mut ack = UnsubAck {
        packet_id,
        properties: Default::default(),
        reasons: Vec::new(),
    };
    if protocol.is_v5() {
        ack.properties = properties::decode(r)?;
        while !r.is_empty() {
            ack.reasons.push(reason(r, PacketType::UnsubAck)?);
        }
        if ack.reasons.is_empty() {
            return Err(DecodeError::UnexpectedEnd("UNSUBACK reason codes"));
        }
    }
    Ok(ack)
}

fn disconnect(r: &mut Reader, protocol: Protocol) -> Result<Disconnect, DecodeError> {
    let mut d = Disconnect::default();
    if protocol.is_v5() && !r.is_empty() {
        d.reason = reason(r, PacketType::Disconnect)?;
        if !r.is_empty() {
            d.properties = properties::decode(r)?;
        }
    }
    Ok(d)
}

fn auth(r: &mut Reader) -> Result<Auth, DecodeError> {
    let mut a = Auth::default();
    if !r.is_empty() {
        a.reason = reason(r, PacketType::Auth)?;
        if !r.is_empty() {
            a.properties = properties::decode(r)?;
        }
    }
    if a.properties.authentication_data.is_some() && a.properties.authentication_method.is_none() {
        return Err(DecodeError::AuthDataWithoutMethod);
    }
    Ok(a)
}

/// Validate raw bytes as an MQTT UTF-8 string (well-formed, no U+0000).
pub fn validate_utf8(raw: Bytes) -> Result<bytestring::ByteString, DecodeError> {
    utf8(raw)
}
