//! Records: the on-disk form of each [`StoreOp`], framed as
//! `len: u32 LE | crc32c: u32 LE | type: u8 | body` where `len` counts type and body and the
//! CRC covers them. Strings are `u16 LE length + UTF-8`, byte strings `u32 LE length +
//! bytes`, optional values a `0`/`1` byte then the value, times are Unix milliseconds
//! (`i64 LE`). Message bodies are MQTT 5 PUBLISH packets and wills MQTT 5 CONNECT packets
//! encoded with midge-codec, so every property survives.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{
    Connect, LastWill, Packet, Protocol, Publish, QoS, RetainHandling, SubscriptionOptions,
};
use midge_core::{DeliveryState, Message, StoreOp};

use crate::crc::crc32c;

/// Bytes before a record's type: length and checksum.
pub(crate) const FRAME: usize = 8;
/// Largest record accepted when reading (a longer length field is corruption).
pub(crate) const MAX_RECORD: usize = 256 * 1024 * 1024;

pub(crate) const T_SESSION: u8 = 1;
pub(crate) const T_SESSION_DELETE: u8 = 2;
pub(crate) const T_SUBSCRIBE: u8 = 3;
pub(crate) const T_UNSUBSCRIBE: u8 = 4;
pub(crate) const T_MESSAGE: u8 = 5;
pub(crate) const T_DELIVERY: u8 = 6;
pub(crate) const T_DELIVERY_DELETE: u8 = 7;
pub(crate) const T_QOS2: u8 = 8;
pub(crate) const T_RETAIN: u8 = 9;

/// A decoded record, with times still in wall-clock milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rec {
    Session {
        client_id: ByteString,
        protocol: Protocol,
        expiry: u32,
        username: Option<ByteString>,
        will_at: Option<i64>,
        disconnected_at: Option<i64>,
        will: Option<LastWill>,
    },
    SessionDelete(ByteString),
    Subscribe {
        client_id: ByteString,
        filter: ByteString,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    },
    Unsubscribe {
        client_id: ByteString,
        filter: ByteString,
    },
    Message {
        id: u64,
        expires_at: Option<i64>,
        msg: Message,
    },
    Delivery {
        client_id: ByteString,
        seq: u64,
        msg: u64,
        qos: QoS,
        retain: bool,
        state: DeliveryState,
        sub_ids: Vec<u32>,
    },
    DeliveryDelete {
        client_id: ByteString,
        seq: u64,
    },
    Qos2 {
        client_id: ByteString,
        packet_id: u16,
        pending: bool,
    },
    Retain {
        topic: ByteString,
        msg: Option<(Option<i64>, Message)>,
    },
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecError {
    /// The body ended early.
    #[error("record body too short")]
    Short,
    /// An unknown record type.
    #[error("unknown record type {0}")]
    Type(u8),
    /// A field held an invalid value.
    #[error("invalid field: {0}")]
    Field(&'static str),
}

fn put_str(b: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let n = bytes.len().min(usize::from(u16::MAX));
    b.put_u16_le(n as u16);
    b.put_slice(bytes.get(..n).unwrap_or_default());
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_u32_le(s.len() as u32);
    b.put_slice(s);
}

fn put_opt_i64(b: &mut BytesMut, v: Option<i64>) {
    match v {
        Some(v) => {
            b.put_u8(1);
            b.put_i64_le(v);
        }
        None => b.put_u8(0),
    }
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos.as_u8()
        | (u8::from(o.no_local) << 2)
        | (u8::from(o.retain_as_published) << 3)
        | ((o.retain_handling as u8) << 4)
}

fn options_from(b: u8) -> Result<SubscriptionOptions, RecError> {
    Ok(SubscriptionOptions {
        qos: QoS::from_bits(b & 3).map_err(|_| RecError::Field("qos"))?,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: match (b >> 4) & 3 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => return Err(RecError::Field("retain handling")),
        },
    })
}

/// User-property keys that carry a stored message's publisher ([`Message::origin`]) inside
/// its PUBLISH. U+0001 starts them: clients should not send it [MQTT-1.5.4], so they do not
/// collide with a client's own properties, and records without them (older ones) read as
/// messages of unknown origin.
const ORIGIN_CLIENT_ID_KEY: &str = "\u{1}midge-origin-client-id";
const ORIGIN_USERNAME_KEY: &str = "\u{1}midge-origin-username";
/// When the broker accepted the message ([`midge_core::Origin::received_ms`], decimal ms
/// since the Unix epoch); records without it (older ones, or time unknown) read as 0.
const ORIGIN_TIME_KEY: &str = "\u{1}midge-origin-time";

fn encode_message(b: &mut BytesMut, msg: &Message) {
    let mut properties = msg.properties.clone();
    properties.message_expiry_interval = None;
    properties.topic_alias = None;
    properties.subscription_identifiers.clear();
    if let Some(o) = &msg.origin {
        properties
            .user_properties
            .push((ORIGIN_CLIENT_ID_KEY.into(), o.client_id.clone()));
        if let Some(u) = &o.username {
            properties
                .user_properties
                .push((ORIGIN_USERNAME_KEY.into(), u.clone()));
        }
        if o.received_ms != 0 {
            properties
                .user_properties
                .push((ORIGIN_TIME_KEY.into(), o.received_ms.to_string().into()));
        }
    }
    let p = Packet::Publish(Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: if msg.qos == QoS::AtMostOnce { 0 } else { 1 },
        properties,
        payload: msg.payload.clone(),
    });
    let mut packet = BytesMut::new();
    // a message core accepted always encodes; an empty body would be refused on reading
    let _ = p.encode(Protocol::V5, &mut packet);
    put_bytes(b, &packet);
}

fn encode_will(b: &mut BytesMut, will: &LastWill) {
    let mut c = Connect::new(Protocol::V5, "w");
    c.will = Some(will.clone());
    let mut packet = BytesMut::new();
    let _ = Packet::Connect(Box::new(c)).encode(Protocol::V5, &mut packet);
    put_bytes(b, &packet);
}

/// Append one framed record for `op` to `buf`. `wall` maps an `Instant` to Unix ms.
pub(crate) fn encode_op(
    buf: &mut BytesMut,
    op: &StoreOp,
    wall: &dyn Fn(std::time::Instant) -> i64,
) {
    let start = buf.len();
    buf.put_u32_le(0);
    buf.put_u32_le(0);
    match op {
        StoreOp::Session(h) => {
            buf.put_u8(T_SESSION);
            put_str(buf, &h.client_id);
            buf.put_u8(h.protocol.level());
            buf.put_u32_le(h.expiry_interval);
            match &h.username {
                Some(u) => {
                    buf.put_u8(1);
                    put_str(buf, u);
                }
                None => buf.put_u8(0),
            }
            put_opt_i64(buf, h.will_at.map(wall));
            put_opt_i64(buf, h.disconnected_at.map(wall));
            match &h.will {
                Some(w) => {
                    buf.put_u8(1);
                    encode_will(buf, w);
                }
                None => buf.put_u8(0),
            }
        }
        StoreOp::SessionDelete(c) => {
            buf.put_u8(T_SESSION_DELETE);
            put_str(buf, c);
        }
        StoreOp::Subscribe {
            client_id,
            filter,
            options,
            identifier,
        } => {
            buf.put_u8(T_SUBSCRIBE);
            put_str(buf, client_id);
            put_str(buf, filter);
            buf.put_u8(options_byte(options));
            match identifier {
                Some(i) => {
                    buf.put_u8(1);
                    buf.put_u32_le(*i);
                }
                None => buf.put_u8(0),
            }
        }
        StoreOp::Unsubscribe { client_id, filter } => {
            buf.put_u8(T_UNSUBSCRIBE);
            put_str(buf, client_id);
            put_str(buf, filter);
        }
        StoreOp::Message { id, msg } => {
            buf.put_u8(T_MESSAGE);
            buf.put_u64_le(*id);
            put_opt_i64(buf, msg.expires_at.map(wall));
            encode_message(buf, msg);
        }
        StoreOp::Delivery {
            client_id,
            seq,
            msg,
            qos,
            retain,
            sub_ids,
            state,
        } => {
            buf.put_u8(T_DELIVERY);
            put_str(buf, client_id);
            buf.put_u64_le(*seq);
            buf.put_u64_le(*msg);
            buf.put_u8(qos.as_u8());
            buf.put_u8(u8::from(*retain));
            let (s, pid) = match state {
                DeliveryState::Queued => (0, 0),
                DeliveryState::AwaitPubAck(p) => (1, *p),
                DeliveryState::AwaitPubRec(p) => (2, *p),
                DeliveryState::AwaitPubComp(p) => (3, *p),
            };
            buf.put_u8(s);
            buf.put_u16_le(pid);
            let n = sub_ids.len().min(usize::from(u16::MAX));
            buf.put_u16_le(n as u16);
            for id in sub_ids.iter().take(n) {
                buf.put_u32_le(*id);
            }
        }
        StoreOp::DeliveryDelete { client_id, seq } => {
            buf.put_u8(T_DELIVERY_DELETE);
            put_str(buf, client_id);
            buf.put_u64_le(*seq);
        }
        StoreOp::InboundQos2 {
            client_id,
            packet_id,
            pending,
        } => {
            buf.put_u8(T_QOS2);
            put_str(buf, client_id);
            buf.put_u16_le(*packet_id);
            buf.put_u8(u8::from(*pending));
        }
        StoreOp::Retain { topic, msg } => {
            buf.put_u8(T_RETAIN);
            put_str(buf, topic);
            match msg {
                Some(m) => {
                    buf.put_u8(1);
                    put_opt_i64(buf, m.expires_at.map(wall));
                    encode_message(buf, m);
                }
                None => buf.put_u8(0),
            }
        }
    }
    finish_frame(buf, start);
}

/// Fill in the length and checksum of the record that starts at `start`.
pub(crate) fn finish_frame(buf: &mut BytesMut, start: usize) {
    let body_len = buf.len() - start - FRAME;
    let crc = buf.get(start + FRAME..).map_or(0, crc32c);
    if let Some(h) = buf.get_mut(start..start + FRAME) {
        h.copy_from_slice(&[0; FRAME]);
        let (l, c) = h.split_at_mut(4);
        l.copy_from_slice(&(body_len as u32).to_le_bytes());
        c.copy_from_slice(&crc.to_le_bytes());
    }
}

struct R(Bytes);

impl R {
    fn need(&self, n: usize) -> Result<(), RecError> {
        if self.0.remaining() < n {
            Err(RecError::Short)
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, RecError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, RecError> {
        self.need(2)?;
        Ok(self.0.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, RecError> {
        self.need(4)?;
        Ok(self.0.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, RecError> {
        self.need(8)?;
        Ok(self.0.get_u64_le())
    }
    fn i64(&mut self) -> Result<i64, RecError> {
        self.need(8)?;
        Ok(self.0.get_i64_le())
    }
    fn bool(&mut self) -> Result<bool, RecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RecError::Field("flag")),
        }
    }
    fn str(&mut self) -> Result<ByteString, RecError> {
        let n = usize::from(self.u16()?);
        self.need(n)?;
        let b = self.0.split_to(n);
        ByteString::try_from(b).map_err(|_| RecError::Field("utf-8"))
    }
    fn bytes(&mut self) -> Result<Bytes, RecError> {
        let n = self.u32()? as usize;
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, RecError> {
        if self.bool()? {
            Ok(Some(self.i64()?))
        } else {
            Ok(None)
        }
    }
    fn message(&mut self) -> Result<Message, RecError> {
        let packet = self.bytes()?;
        let mut b = BytesMut::from(&packet[..]);
        match midge_codec::decode(&mut b, Protocol::V5, u32::MAX) {
            Ok(Some(Packet::Publish(mut p))) => {
                let mut client_id = None;
                let mut username = None;
                let mut received_ms = 0;
                p.properties
                    .user_properties
                    .retain(|(k, v)| match k.as_ref() {
                        ORIGIN_CLIENT_ID_KEY => {
                            client_id = Some(v.clone());
                            false
                        }
                        ORIGIN_USERNAME_KEY => {
                            username = Some(v.clone());
                            false
                        }
                        ORIGIN_TIME_KEY => {
                            received_ms = v.parse().unwrap_or(0);
                            false
                        }
                        _ => true,
                    });
                Ok(Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: p.qos,
                    retain: p.retain,
                    properties: p.properties,
                    expires_at: None,
                    origin: client_id.map(|client_id| midge_core::Origin {
                        client_id,
                        username,
                        received_ms,
                        cluster_id: 0,
                    }),
                })
            }
            _ => Err(RecError::Field("message")),
        }
    }
}

fn state_from(s: u8, pid: u16) -> Result<DeliveryState, RecError> {
    Ok(match s {
        0 => DeliveryState::Queued,
        1 => DeliveryState::AwaitPubAck(pid),
        2 => DeliveryState::AwaitPubRec(pid),
        3 => DeliveryState::AwaitPubComp(pid),
        _ => return Err(RecError::Field("delivery state")),
    })
}

/// Decode a record's type and body (the bytes after the frame).
pub(crate) fn decode(body: Bytes) -> Result<Rec, RecError> {
    let mut r = R(body);
    let t = r.u8()?;
    let rec = match t {
        T_SESSION => {
            let client_id = r.str()?;
            let protocol = Protocol::from_level(r.u8()?).ok_or(RecError::Field("protocol"))?;
            let expiry = r.u32()?;
            let username = if r.bool()? { Some(r.str()?) } else { None };
            let will_at = r.opt_i64()?;
            let disconnected_at = r.opt_i64()?;
            let will = if r.bool()? {
                let packet = r.bytes()?;
                let mut b = BytesMut::from(&packet[..]);
                match midge_codec::decode(&mut b, Protocol::V5, u32::MAX) {
                    Ok(Some(Packet::Connect(c))) => c.will,
                    _ => return Err(RecError::Field("will")),
                }
            } else {
                None
            };
            Rec::Session {
                client_id,
                protocol,
                expiry,
                username,
                will_at,
                disconnected_at,
                will,
            }
        }
        T_SESSION_DELETE => Rec::SessionDelete(r.str()?),
        T_SUBSCRIBE => {
            let client_id = r.str()?;
            let filter = r.str()?;
            let options = options_from(r.u8()?)?;
            let identifier = if r.bool()? { Some(r.u32()?) } else { None };
            Rec::Subscribe {
                client_id,
                filter,
                options,
                identifier,
            }
        }
        T_UNSUBSCRIBE => Rec::Unsubscribe {
            client_id: r.str()?,
            filter: r.str()?,
        },
        T_MESSAGE => {
            let id = r.u64()?;
            let expires_at = r.opt_i64()?;
            let msg = r.message()?;
            Rec::Message {
                id,
                expires_at,
                msg,
            }
        }
        T_DELIVERY => {
            let client_id = r.str()?;
            let seq = r.u64()?;
            let msg = r.u64()?;
            let qos = QoS::from_bits(r.u8()?).map_err(|_| RecError::Field("qos"))?;
            let retain = r.bool()?;
            let s = r.u8()?;
            let pid = r.u16()?;
            let state = state_from(s, pid)?;
            let n = r.u16()?;
            let mut sub_ids = Vec::with_capacity(usize::from(n));
            for _ in 0..n {
                sub_ids.push(r.u32()?);
            }
            Rec::Delivery {
                client_id,
                seq,
                msg,
                qos,
                retain,
                state,
                sub_ids,
            }
        }
        T_DELIVERY_DELETE => Rec::DeliveryDelete {
            client_id: r.str()?,
            seq: r.u64()?,
        },
        T_QOS2 => Rec::Qos2 {
            client_id: r.str()?,
            packet_id: r.u16()?,
            pending: r.bool()?,
        },
        T_RETAIN => {
            let topic = r.str()?;
            let msg = if r.bool()? {
                let expires = r.opt_i64()?;
                Some((expires, r.message()?))
            } else {
                None
            };
            Rec::Retain { topic, msg }
        }
        other => return Err(RecError::Type(other)),
    };
    if r.0.has_remaining() {
        return Err(RecError::Field("trailing bytes"));
    }
    Ok(rec)
}
