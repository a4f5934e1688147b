//! Encoding into a caller's buffer. A size pass computes the remaining length (no allocation),
//! then the packet is written straight into the buffer, which grows at most once.

use bytes::{BufMut, BytesMut};

use crate::error::EncodeError;
use crate::packet::*;
use crate::properties::{PropertySet, content_len};
use crate::types::{PacketType, Protocol};
use crate::wire::{MAX_VARINT, Writer, check_len, put_binary, put_varint, varint_len};

impl Packet {
    /// Append the encoded packet to `buf` for a connection speaking `protocol`.
    ///
    /// MQTT 5-only fields (properties, reason codes other than the 3.x ones) are left out when
    /// encoding for 3.x. A CONNECT is encoded in its own `protocol` field's version.
    pub fn encode(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let protocol = match self {
            Packet::Connect(c) => c.protocol,
            _ => protocol,
        };
        let body = self.body_len(protocol)?;
        if body > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        buf.reserve(1 + varint_len(body as u32) + body);
        buf.put_u8(self.first_byte());
        put_varint(buf, body as u32);
        self.write_body(protocol, buf, true);
        Ok(())
    }

    /// [`Packet::encode`] without a PUBLISH's payload: the fixed header (whose remaining
    /// length counts the payload), the topic, packet id and properties. The caller sends
    /// the payload right after, from where it is, so that a large payload going to many
    /// subscribers is not copied into each one's buffer. Other packets are encoded whole.
    pub fn encode_head(&self, protocol: Protocol, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let Packet::Publish(p) = self else {
            return self.encode(protocol, buf);
        };
        let body = self.body_len(protocol)?;
        if body > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        buf.reserve(1 + varint_len(body as u32) + body - p.payload.len());
        buf.put_u8(self.first_byte());
        put_varint(buf, body as u32);
        self.write_body(protocol, buf, false);
        Ok(())
    }

    /// The number of bytes [`Packet::encode`] would append (fixed header included).
    pub fn encoded_len(&self, protocol: Protocol) -> Result<usize, EncodeError> {
        let protocol = match self {
            Packet::Connect(c) => c.protocol,
            _ => protocol,
        };
        let body = self.body_len(protocol)?;
        if body > MAX_VARINT as usize {
            return Err(EncodeError::PacketTooLarge(body));
        }
        Ok(1 + varint_len(body as u32) + body)
    }

    fn first_byte(&self) -> u8 {
        let t = (self.packet_type() as u8) << 4;
        match self {
            Packet::Publish(p) => {
                t | (u8::from(p.dup) << 3) | (p.qos.as_u8() << 1) | u8::from(p.retain)
            }
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => t | 0b0010,
            _ => t,
        }
    }

    fn body_len(&self, v: Protocol) -> Result<usize, EncodeError> {
        let v5 = v.is_v5();
        Ok(match self {
            Packet::Connect(c) => connect_len(c)?,
            Packet::ConnAck(c) => 2 + if v5 { props_len(&c.properties)? } else { 0 },
            Packet::Publish(p) => {
                str_len(p.topic.as_str(), "topic name")?
                    + if p.qos.as_u8() > 0 {
                        nonzero(p.packet_id, PacketType::Publish)?
                    } else {
                        0
                    }
                    + if v5 { props_len(&p.properties)? } else { 0 }
                    + p.payload.len()
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                nonzero(a.packet_id, self.packet_type())?;
                if v5 { ack_len(a)? } else { 2 }
            }
            Packet::Subscribe(s) => {
                let mut n = nonzero(s.packet_id, PacketType::Subscribe)?;
                if v5 {
                    n += props_len(&s.properties)?;
                }
                for (f, _) in &s.filters {
                    n += str_len(f.as_str(), "topic filter")? + 1;
                }
                n
            }
            Packet::SubAck(s) => {
                nonzero(s.packet_id, PacketType::SubAck)?
                    + if v5 { props_len(&s.properties)? } else { 0 }
                    + s.reasons.len()
            }
            Packet::Unsubscribe(u) => {
                let mut n = nonzero(u.packet_id, PacketType::Unsubscribe)?;
                if v5 {
                    n += props_len(&u.properties)?;
                }
                for f in &u.filters {
                    n += str_len(f.as_str(), "topic filter")?;
                }
                n
            }
            Packet::UnsubAck(u) => {
                nonzero(u.packet_id, PacketType::UnsubAck)?
                    + if v5 {
                        props_len(&u.properties)? + u.reasons.len()
                    } else {
                        0
                    }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => {
                if !v5 || (d.reason.0 == 0 && d.properties.is_empty()) {
                    0
                } else if d.properties.is_empty() {
                    1
                } else {
                    1 + props_len(&d.properties)?
                }
            }
            Packet::Auth(a) => {
                if !v5 {
                    return Err(EncodeError::PacketNotInVersion(PacketType::Auth));
                }
                if a.reason.0 == 0 && a.properties.is_empty() {
                    0
                } else {
                    1 + props_len(&a.properties)?
                }
            }
        })
    }

    fn write_body(&self, v: Protocol, buf: &mut BytesMut, payload: bool) {
        let v5 = v.is_v5();
        match self {
            Packet::Connect(c) => write_connect(c, buf),
            Packet::ConnAck(c) => {
                buf.put_u8(u8::from(c.session_present));
                if v5 {
                    buf.put_u8(c.reason.0);
                    write_props(&c.properties, buf);
                } else {
                    buf.put_u8(c.reason.to_v3_connack());
                }
            }
            Packet::Publish(p) => {
                put_binary(buf, p.topic.as_str().as_bytes());
                if p.qos.as_u8() > 0 {
                    buf.put_u16(p.packet_id);
                }
                if v5 {
                    write_props(&p.properties, buf);
                }
                if payload {
                    buf.put_slice(&p.payload);
                }
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                buf.put_u16(a.packet_id);
                if v5 && (a.reason.0 != 0 || !a.properties.is_empty()) {
                    buf.put_u8(a.reason.0);
                    if !a.properties.is_empty() {
                        write_props(&a.properties, buf);
                    }
                }
            }
            Packet::Subscribe(s) => {
                buf.put_u16(s.packet_id);
                if v5 {
                    write_props(&s.properties, buf);
                }
                for (f, o) in &s.filters {
                    put_binary(buf, f.as_str().as_bytes());
                    let mut bits = o.qos.as_u8();
                    if v5 {
                        bits |= u8::from(o.no_local) << 2
                            | u8::from(o.retain_as_published) << 3
                            | (o.retain_handling as u8) << 4;
                    }
                    buf.put_u8(bits);
                }
            }
            Packet::SubAck(s) => {
                buf.put_u16(s.packet_id);
                if v5 {
                    write_props(&s.properties, buf);
                    for r in &s.reasons {
                        buf.put_u8(r.0);
                    }
                } else {
                    for r in &s.reasons {
                        buf.put_u8(if r.is_error() { 0x80 } else { r.0 });
                    }
                }
            }
            Packet::Unsubscribe(u) => {
                buf.put_u16(u.packet_id);
                if v5 {
                    write_props(&u.properties, buf);
                }
                for f in &u.filters {
                    put_binary(buf, f.as_str().as_bytes());
                }
            }
            Packet::UnsubAck(u) => {
                buf.put_u16(u.packet_id);
                if v5 {
                    write_props(&u.properties, buf);
                    for r in &u.reasons {
                        buf.put_u8(r.0);
                    }
                }
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => {
                if v5 && (d.reason.0 != 0 || !d.properties.is_empty()) {
                    buf.put_u8(d.reason.0);
                    if !d.properties.is_empty() {
                        write_props(&d.properties, buf);
                    }
                }
            }
            Packet::Auth(a) => {
                if a.reason.0 != 0 || !a.properties.is_empty() {
                    buf.put_u8(a.reason.0);
                    write_props(&a.properties, buf);
                }
            }
        }
    }
}

fn nonzero(id: u16, ptype: PacketType) -> Result<usize, EncodeError> {
    if id == 0 {
        Err(EncodeError::ZeroPacketId(ptype))
    } else {
        Ok(2)
    }
}

fn str_len(s: &str, what: &'static str) -> Result<usize, EncodeError> {
    Ok(2 + check_len(s.len(), what)? as usize)
}

/// Size of a property block including its length prefix.
fn props_len<P: PropertySet>(p: &P) -> Result<usize, EncodeError> {
    let (n, too_long, varint_out_of_range) = content_len(p);
    if let Some(v) = varint_out_of_range {
        return Err(EncodeError::VarIntOutOfRange(v));
    }
    if too_long {
        return Err(EncodeError::FieldTooLong("property"));
    }
    Ok(varint_len(n as u32) + n)
}

fn write_props<P: PropertySet>(p: &P, buf: &mut BytesMut) {
    let (n, _, _) = content_len(p);
    put_varint(buf, n as u32);
    p.write(&mut Writer(buf));
}

fn ack_len(a: &PubAck) -> Result<usize, EncodeError> {
    Ok(if a.properties.is_empty() {
        if a.reason.0 == 0 { 2 } else { 3 }
    } else {
        3 + props_len(&a.properties)?
    })
}

fn connect_len(c: &Connect) -> Result<usize, EncodeError> {
    let v5 = c.protocol.is_v5();
    let mut n = 2 + c.protocol.name().len() + 1 + 1 + 2;
    if v5 {
        n += props_len(&c.properties)?;
    }
    n += str_len(&c.client_id, "client identifier")?;
    if let Some(w) = &c.will {
        if v5 {
            n += props_len(&w.properties)?;
        }
        n += str_len(w.topic.as_str(), "will topic")?;
        n += 2 + check_len(w.payload.len(), "will payload")? as usize;
    }
    if let Some(u) = &c.username {
        n += str_len(u, "user name")?;
    }
    if let Some(p) = &c.password {
        n += 2 + check_len(p.len(), "password")? as usize;
    }
    Ok(n)
}

fn write_connect(c: &Connect, buf: &mut BytesMut) {
    put_binary(buf, c.protocol.name().as_bytes());
    buf.put_u8(c.protocol.level() | if c.bridge { 0x80 } else { 0 });
    let mut flags = 0u8;
    if c.clean_start {
        flags |= 0x02;
    }
    if let Some(w) = &c.will {
        flags |= 0x04 | (w.qos.as_u8() << 3);
        if w.retain {
            flags |= 0x20;
        }
    }
    if c.password.is_some() {
        flags |= 0x40;
    }
    if c.username.is_some() {
        flags |= 0x80;
    }
    buf.put_u8(flags);
    buf.put_u16(c.keep_alive);
    let v5 = c.protocol.is_v5();
    if v5 {
        write_props(&c.properties, buf);
    }
    put_binary(buf, c.client_id.as_bytes());
    if let Some(w) = &c.will {
        if v5 {
            write_props(&w.properties, buf);
        }
        put_binary(buf, w.topic.as_str().as_bytes());
        put_binary(buf, &w.payload);
    }
    if let Some(u) = &c.username {
        put_binary(buf, u.as_bytes());
    }
    if let Some(p) = &c.password {
        put_binary(buf, p);
    }
}
