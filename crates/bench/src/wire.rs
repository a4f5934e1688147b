//! MQTT on the wire for the load generator: CONNECT/SUBSCRIBE through midge-codec, and a
//! hand-rolled PUBLISH encoder/parser for the hot path (checked against the codec in tests).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use midge_codec::{
    Connect, Packet, Protocol, PubAck, QoS, Subscribe, SubscriptionOptions, TopicFilter,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;
use crate::transport::{Stream, Transport};

/// Filters in one SUBSCRIBE (more are sent in several).
pub(crate) const FILTERS_PER_SUBSCRIBE: usize = 100;

/// Largest packet the tool accepts from a broker.
pub(crate) const MAX_PACKET: u32 = 16 * 1024 * 1024;

/// Bytes of the benchmark header at the front of every payload:
/// publisher id (u32), sequence number (u64), send time in ns since the run's clock (u64).
pub const HEADER_LEN: usize = 20;

/// The header carried in every benchmark payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadHeader {
    /// Index of the publisher.
    pub publisher: u32,
    /// Sequence number, from 0, per publisher.
    pub seq: u64,
    /// Send time, ns since the run's start.
    pub sent_ns: u64,
}

impl PayloadHeader {
    /// Parse the header from the front of a payload.
    pub fn parse(mut payload: &[u8]) -> Option<PayloadHeader> {
        if payload.len() < HEADER_LEN {
            return None;
        }
        Some(PayloadHeader {
            publisher: payload.get_u32(),
            seq: payload.get_u64(),
            sent_ns: payload.get_u64(),
        })
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if n == 0 {
            break;
        }
    }
}

/// Append one PUBLISH to `buf`: topic, QoS, packet id (ignored for QoS 0), a payload of
/// `size` bytes (at least [`HEADER_LEN`]) that starts with `header`.
pub fn encode_publish(
    buf: &mut BytesMut,
    protocol: Protocol,
    topic: &[u8],
    qos: QoS,
    packet_id: u16,
    header: PayloadHeader,
    size: usize,
) {
    let size = size.max(HEADER_LEN);
    let body = 2
        + topic.len()
        + if qos == QoS::AtMostOnce { 0 } else { 2 }
        + usize::from(protocol.is_v5())
        + size;
    buf.reserve(1 + varint_len(body) + body);
    buf.put_u8(0x30 | (qos.as_u8() << 1));
    put_varint(buf, body);
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic);
    if qos != QoS::AtMostOnce {
        buf.put_u16(packet_id);
    }
    if protocol.is_v5() {
        buf.put_u8(0);
    }
    buf.put_u32(header.publisher);
    buf.put_u64(header.seq);
    buf.put_u64(header.sent_ns);
    buf.put_bytes(b'x', size - HEADER_LEN);
}

/// A PUBLISH as the subscriber needs it: QoS, packet id and the payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FastPublish {
    pub(crate) qos: u8,
    pub(crate) packet_id: u16,
    pub(crate) header: Option<PayloadHeader>,
}

/// One frame taken from the front of the read buffer (the hot PUBLISH stays unboxed).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum Frame {
    /// A PUBLISH, parsed in place.
    Publish(FastPublish),
    /// Any other packet, decoded by midge-codec.
    Other(Packet),
}

/// Length of the packet at the front of `buf` when its fixed header is there.
pub(crate) fn frame_len(buf: &[u8]) -> Option<usize> {
    match midge_codec::frame_header(buf, MAX_PACKET) {
        Ok(Some(h)) => Some(h.packet_len()),
        _ => None,
    }
}

/// Take one frame from the front of `buf`. `Ok(None)` = need more bytes.
pub(crate) fn next_frame(
    buf: &mut BytesMut,
    protocol: Protocol,
) -> Result<Option<Frame>, BenchError> {
    let Some(h) = midge_codec::frame_header(buf, MAX_PACKET)? else {
        return Ok(None);
    };
    if buf.len() < h.packet_len() {
        return Ok(None);
    }
    if h.first_byte >> 4 == 3 {
        let qos = (h.first_byte >> 1) & 3;
        let body = buf.get(h.header_len..h.packet_len()).unwrap_or(&[]);
        let parsed = parse_publish_body(body, qos, protocol);
        buf.advance(h.packet_len());
        return parsed.map(|p| Some(Frame::Publish(p)));
    }
    let mut frame = buf.split_to(h.packet_len()).freeze();
    let body: Bytes = frame.split_off(h.header_len);
    let p = midge_codec::decode_body(h.first_byte, body, protocol)?;
    Ok(Some(Frame::Other(p)))
}

fn parse_publish_body(
    mut b: &[u8],
    qos: u8,
    protocol: Protocol,
) -> Result<FastPublish, BenchError> {
    let bad = || BenchError::Protocol("truncated PUBLISH".into());
    if b.len() < 2 {
        return Err(bad());
    }
    let tlen = usize::from(b.get_u16());
    if b.len() < tlen {
        return Err(bad());
    }
    b.advance(tlen);
    let mut packet_id = 0;
    if qos > 0 {
        if b.len() < 2 {
            return Err(bad());
        }
        packet_id = b.get_u16();
    }
    if protocol.is_v5() {
        // Property length (variable byte integer), then skip the properties.
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            if b.is_empty() || shift > 21 {
                return Err(bad());
            }
            let byte = b.get_u8();
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if b.len() < len {
            return Err(bad());
        }
        b.advance(len);
    }
    Ok(FastPublish {
        qos,
        packet_id,
        header: PayloadHeader::parse(b),
    })
}

/// Append a PUBACK for `packet_id`.
pub(crate) fn encode_puback(buf: &mut BytesMut, protocol: Protocol, packet_id: u16) {
    // In MQTT 5 a Success reason with no properties may be omitted: the same 4 bytes.
    let _ = protocol;
    encode_ack(buf, 0x40, packet_id);
}

/// Append a PUBREC/PUBREL/PUBCOMP-style 4-byte ack with the given first byte.
pub(crate) fn encode_ack(buf: &mut BytesMut, first: u8, packet_id: u16) {
    buf.put_u8(first);
    buf.put_u8(2);
    buf.put_u16(packet_id);
}

/// An open MQTT connection: the stream and the bytes read but not yet decoded.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: Stream,
    pub(crate) rbuf: BytesMut,
    pub(crate) protocol: Protocol,
    /// The broker's Receive Maximum (MQTT 5 CONNACK), if it sent one.
    pub(crate) receive_maximum: Option<u16>,
    /// The TLS handshake resumed an earlier session (false without TLS).
    pub(crate) resumed: bool,
}

/// Connect (TCP, TLS or WebSocket), send CONNECT, wait for a successful CONNACK.
pub(crate) async fn connect(
    addr: SocketAddr,
    transport: &Transport,
    protocol: Protocol,
    client_id: &str,
    keep_alive: u16,
    timeout: Duration,
) -> Result<Conn, BenchError> {
    connect_as(
        addr, transport, protocol, client_id, keep_alive, timeout, None,
    )
    .await
}

/// [`connect`] with a username and password in the CONNECT.
pub(crate) async fn connect_as(
    addr: SocketAddr,
    transport: &Transport,
    protocol: Protocol,
    client_id: &str,
    keep_alive: u16,
    timeout: Duration,
    credentials: Option<(&str, &str)>,
) -> Result<Conn, BenchError> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (stream, resumed) = transport.open(tcp, addr).await?;
        let mut c = Conn {
            stream,
            rbuf: BytesMut::with_capacity(256),
            protocol,
            receive_maximum: None,
            resumed,
        };
        let mut connect = Connect::new(protocol, client_id);
        connect.keep_alive = keep_alive;
        if let Some((user, password)) = credentials {
            connect.username = Some(user.into());
            connect.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
        }
        let mut out = BytesMut::with_capacity(64);
        Packet::Connect(Box::new(connect)).encode(protocol, &mut out)?;
        c.stream.write_all(&out).await?;
        c.stream.flush().await?;
        match c.read_packet().await? {
            Packet::ConnAck(ack) if ack.reason.0 == 0 => {
                c.receive_maximum = ack.properties.receive_maximum;
                Ok(c)
            }
            Packet::ConnAck(ack) => Err(BenchError::Refused(ack.reason.0)),
            other => Err(BenchError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(BenchError::Timeout("CONNACK")),
    }
}

impl Conn {
    /// Read until one whole packet is decoded (codec path; not for the hot loop).
    pub(crate) async fn read_packet(&mut self) -> Result<Packet, BenchError> {
        loop {
            if let Some(p) = midge_codec::decode(&mut self.rbuf, self.protocol, MAX_PACKET)? {
                return Ok(p);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BenchError::Closed);
            }
        }
    }

    /// Subscribe to `filters` at `qos` (SUBSCRIBEs of at most [`FILTERS_PER_SUBSCRIBE`]
    /// filters, one after the other) and wait for each SUBACK; refuses a failure code.
    pub(crate) async fn subscribe(
        &mut self,
        filters: &[String],
        qos: QoS,
    ) -> Result<(), BenchError> {
        for (i, chunk) in filters.chunks(FILTERS_PER_SUBSCRIBE).enumerate() {
            self.subscribe_one((i % 65_535 + 1) as u16, chunk, qos)
                .await?;
        }
        Ok(())
    }

    async fn subscribe_one(
        &mut self,
        packet_id: u16,
        filters: &[String],
        qos: QoS,
    ) -> Result<(), BenchError> {
        let mut list = Vec::with_capacity(filters.len());
        for f in filters {
            let tf = TopicFilter::new(f.as_str())
                .map_err(|e| BenchError::Config(format!("bad filter {f:?}: {e}")))?;
            list.push((tf, SubscriptionOptions::qos(qos)));
        }
        let sub = Subscribe {
            packet_id,
            properties: Default::default(),
            filters: list,
        };
        let mut out = BytesMut::new();
        Packet::Subscribe(sub).encode(self.protocol, &mut out)?;
        self.stream.write_all(&out).await?;
        self.stream.flush().await?;
        loop {
            match self.read_packet().await? {
                Packet::SubAck(ack) => {
                    if ack.reasons.iter().any(|r| r.0 >= 0x80) {
                        return Err(BenchError::Protocol(format!(
                            "subscription refused: {:?}",
                            ack.reasons
                        )));
                    }
                    return Ok(());
                }
                Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
                    // A retained message arriving before the SUBACK: acknowledge it.
                    let mut b = BytesMut::new();
                    Packet::PubAck(PubAck::new(p.packet_id)).encode(self.protocol, &mut b)?;
                    self.stream.write_all(&b).await?;
                    self.stream.flush().await?;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_codec::{Publish, TopicName};

    fn codec_publish(protocol: Protocol, qos: QoS, id: u16, payload: Vec<u8>) -> BytesMut {
        let mut p = Publish::new(TopicName::new("bench/3").unwrap(), payload);
        p.qos = qos;
        p.packet_id = if qos == QoS::AtMostOnce { 0 } else { id };
        let mut b = BytesMut::new();
        Packet::Publish(p).encode(protocol, &mut b).unwrap();
        b
    }

    #[test]
    fn hand_encoded_publish_matches_the_codec_byte_for_byte() {
        let h = PayloadHeader {
            publisher: 3,
            seq: 77,
            sent_ns: 123_456,
        };
        for protocol in [Protocol::V311, Protocol::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
                for size in [0, 20, 64, 200, 20_000] {
                    let mut mine = BytesMut::new();
                    encode_publish(&mut mine, protocol, b"bench/3", qos, 9, h, size);
                    let mut payload = Vec::new();
                    payload.extend_from_slice(&3u32.to_be_bytes());
                    payload.extend_from_slice(&77u64.to_be_bytes());
                    payload.extend_from_slice(&123_456u64.to_be_bytes());
                    payload.resize(size.max(HEADER_LEN), b'x');
                    assert_eq!(mine, codec_publish(protocol, qos, 9, payload));
                    match next_frame(&mut mine, protocol).unwrap() {
                        Some(Frame::Publish(fp)) => {
                            assert_eq!(fp.header, Some(h));
                            assert_eq!(fp.qos, qos.as_u8());
                            if qos == QoS::AtLeastOnce {
                                assert_eq!(fp.packet_id, 9);
                            }
                        }
                        other => panic!("{other:?}"),
                    }
                    assert!(mine.is_empty());
                }
            }
        }
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let mut b = BytesMut::new();
        let h = PayloadHeader {
            publisher: 0,
            seq: 1,
            sent_ns: 2,
        };
        encode_publish(&mut b, Protocol::V311, b"t", QoS::AtLeastOnce, 1, h, 64);
        let mut part = BytesMut::from(&b[..10]);
        assert!(next_frame(&mut part, Protocol::V311).unwrap().is_none());
    }

    #[test]
    fn puback_decodes_with_the_codec() {
        for protocol in [Protocol::V311, Protocol::V5] {
            let mut b = BytesMut::new();
            encode_puback(&mut b, protocol, 513);
            match midge_codec::decode(&mut b, protocol, MAX_PACKET).unwrap() {
                Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, 513),
                other => panic!("{other:?}"),
            }
        }
    }
}
