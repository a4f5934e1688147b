//! What travels between nodes, as bytes: a forwarded message and a moving session.
//!
//! A message is a small header (format version, target, origin node, publisher) followed by
//! the message as an MQTT 5 PUBLISH packet encoded by midge-codec, so that every property
//! survives the hop and the topic never becomes part of a NATS subject: topics with `.`,
//! `*`, `>`, spaces, empty levels or `$` need no escaping, because NATS routes on node
//! names only (`midge.<cluster>.m.<node>`). The Message Expiry Interval sent is what is
//! left of it, rounded up [MQTT-3.3.2-6].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use midge_codec::{Packet, Protocol, Publish, QoS, RetainHandling, SubscriptionOptions, TopicName};
use midge_core::{Message, Origin, SessionState, Target};

/// 2: the origin carries the message's cluster identity.
const VERSION: u8 = 2;

/// A malformed message from another node (a bug or a different version: dropped, logged).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Shorter than its header says.
    #[error("truncated cluster message")]
    Truncated,
    /// Written by a midge whose format this one does not know.
    #[error("cluster message format {0} is not known here")]
    Version(u8),
    /// A string that is not UTF-8.
    #[error("cluster message holds a string that is not UTF-8")]
    Utf8,
    /// The PUBLISH inside does not decode.
    #[error("cluster message holds a bad PUBLISH: {0}")]
    Publish(String),
}

/// A message forwarded by node `node`.
#[derive(Debug)]
pub struct Incoming {
    /// The node it came from.
    pub node: String,
    /// The message, its expiry counted from `now` at decoding.
    pub msg: Message,
    /// Where it goes here.
    pub target: Target,
}

/// Encode a forwarded message; `id` is its cluster identity when its origin has none yet
/// (the first node to forward it gives one, the same to every copy).
pub fn encode_message(node: &str, msg: &Message, target: &Target, now: Instant, id: u64) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + msg.topic.as_str().len() + msg.payload.len());
    b.put_u8(VERSION);
    match target {
        Target::Plain => b.put_u8(0),
        Target::Group(_) => b.put_u8(1),
        Target::Retained => b.put_u8(2),
        Target::Session(_) => b.put_u8(3),
    }
    put_str(&mut b, node);
    match &msg.origin {
        Some(o) => {
            b.put_u8(1);
            put_str(&mut b, &o.client_id);
            match &o.username {
                Some(u) => {
                    b.put_u8(1);
                    put_str(&mut b, u);
                }
                None => b.put_u8(0),
            }
            b.put_i64(o.received_ms);
            b.put_u64(if o.cluster_id != 0 { o.cluster_id } else { id });
        }
        None => b.put_u8(0),
    }
    match target {
        Target::Group(key) => {
            put_str(&mut b, &key.0);
            put_str(&mut b, &key.1);
        }
        Target::Session(client_id) => put_str(&mut b, client_id),
        Target::Plain | Target::Retained => {}
    }
    let mut properties = msg.properties.clone();
    properties.message_expiry_interval = msg.expires_at.map(|at| {
        let left = at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        u32::try_from(secs).unwrap_or(u32::MAX).max(1)
    });
    let publish = Publish {
        dup: false,
        qos: msg.qos,
        retain: msg.retain,
        topic: msg.topic.clone(),
        packet_id: u16::from(msg.qos != QoS::AtMostOnce),
        properties,
        payload: msg.payload.clone(),
    };
    // a message core accepted always encodes (it came in as a PUBLISH)
    if let Err(e) = Packet::Publish(publish).encode(Protocol::V5, &mut b) {
        tracing::warn!("cluster: a message could not be encoded: {e}");
    }
    b.freeze()
}

/// Decode a forwarded message.
pub fn decode_message(mut data: Bytes, now: Instant) -> Result<Incoming, WireError> {
    let version = get_u8(&mut data)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let kind = get_u8(&mut data)?;
    let node = get_str(&mut data)?.to_string();
    let origin = match get_u8(&mut data)? {
        0 => None,
        _ => {
            let client_id = get_str(&mut data)?;
            let username = match get_u8(&mut data)? {
                0 => None,
                _ => Some(get_str(&mut data)?),
            };
            if data.remaining() < 16 {
                return Err(WireError::Truncated);
            }
            let received_ms = data.get_i64();
            if data.remaining() < 8 {
                return Err(WireError::Truncated);
            }
            let cluster_id = data.get_u64();
            Some(Origin {
                client_id,
                username,
                received_ms,
                cluster_id,
            })
        }
    };
    let target = match kind {
        0 => Target::Plain,
        1 => {
            let filter = get_str(&mut data)?;
            let name = get_str(&mut data)?;
            let filter: Box<str> = (*filter).into();
            let name: Box<str> = (*name).into();
            Target::Group(Arc::new((filter, name)))
        }
        3 => Target::Session(get_str(&mut data)?),
        _ => Target::Retained,
    };
    let p = decode_publish(data)?;
    let mut properties = p.properties;
    properties.subscription_identifiers.clear();
    let expires_at = properties
        .message_expiry_interval
        .map(|s| now + Duration::from_secs(u64::from(s)));
    Ok(Incoming {
        node,
        msg: Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin,
        },
        target,
    })
}

fn decode_publish(data: Bytes) -> Result<Publish, WireError> {
    let mut buf = BytesMut::from(&data[..]);
    match midge_codec::decode(&mut buf, Protocol::V5, u32::MAX) {
        Ok(Some(Packet::Publish(p))) => Ok(p),
        Ok(Some(other)) => Err(WireError::Publish(format!("{other:?}"))),
        Ok(None) => Err(WireError::Truncated),
        Err(e) => Err(WireError::Publish(e.to_string())),
    }
}

/// Append one encoded message to a bundle (several messages in one NATS message).
pub fn bundle_push(bundle: &mut BytesMut, message: &[u8]) {
    bundle.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    bundle.put_slice(message);
}

/// The messages of a bundle, in order (a truncated tail is one error).
pub fn decode_bundle(mut data: Bytes, now: Instant) -> Vec<Result<Incoming, WireError>> {
    let mut out = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 4 {
            out.push(Err(WireError::Truncated));
            break;
        }
        let len = data.get_u32() as usize;
        if data.remaining() < len {
            out.push(Err(WireError::Truncated));
            break;
        }
        out.push(decode_message(data.split_to(len), now));
    }
    out
}

/// Encode a session moving to another node.
pub fn encode_session(s: &SessionState) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(VERSION);
    put_str(&mut b, &s.client_id);
    b.put_u32(s.expiry_interval);
    b.put_u32(u32::try_from(s.subscriptions.len()).unwrap_or(u32::MAX));
    for (filter, o, id) in &s.subscriptions {
        put_str(&mut b, filter);
        b.put_u8(options_byte(o));
        b.put_u32(id.unwrap_or(0));
    }
    // each message: its kind (0 queued, 1 in flight, 2 in flight and received: awaiting
    // PUBREL), then the PUBLISH (in flight: with its packet id and DUP)
    let queued = s.messages.iter().map(|p| (0, p));
    let inflight = s
        .inflight
        .iter()
        .map(|(p, released)| (1 + u8::from(*released), p));
    for (kind, p) in inflight.chain(queued) {
        let mut p = p.clone();
        if kind == 0 {
            p.packet_id = u16::from(p.qos != QoS::AtMostOnce);
        }
        let mut one = BytesMut::new();
        if Packet::Publish(p).encode(Protocol::V5, &mut one).is_ok() {
            b.put_u8(kind);
            b.put_u32(u32::try_from(one.len()).unwrap_or(u32::MAX));
            b.put_slice(&one);
        }
    }
    b.freeze()
}

/// Decode a session moving to another node.
pub fn decode_session(mut data: Bytes) -> Result<SessionState, WireError> {
    let version = get_u8(&mut data)?;
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    let client_id = get_str(&mut data)?;
    if data.remaining() < 8 {
        return Err(WireError::Truncated);
    }
    let expiry_interval = data.get_u32();
    let n = data.get_u32();
    let mut subscriptions = Vec::new();
    for _ in 0..n {
        let filter = get_str(&mut data)?;
        if data.remaining() < 5 {
            return Err(WireError::Truncated);
        }
        let o = data.get_u8();
        let id = data.get_u32();
        let options = options_from_byte(o);
        subscriptions.push((filter, options, (id != 0).then_some(id)));
    }
    let mut messages = Vec::new();
    let mut inflight = Vec::new();
    while data.has_remaining() {
        if data.remaining() < 5 {
            return Err(WireError::Truncated);
        }
        let kind = data.get_u8();
        let len = data.get_u32() as usize;
        if data.remaining() < len {
            return Err(WireError::Truncated);
        }
        let mut p = decode_publish(data.split_to(len))?;
        match kind {
            0 => {
                p.packet_id = 0;
                p.dup = false;
                messages.push(p);
            }
            k => inflight.push((p, k == 2)),
        }
    }
    Ok(SessionState {
        client_id,
        expiry_interval,
        subscriptions,
        messages,
        inflight,
    })
}

fn put_str(b: &mut BytesMut, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    b.put_u32(len);
    b.put_slice(s.as_bytes().get(..len as usize).unwrap_or_default());
}

fn get_u8(data: &mut Bytes) -> Result<u8, WireError> {
    if data.has_remaining() {
        Ok(data.get_u8())
    } else {
        Err(WireError::Truncated)
    }
}

fn get_str(data: &mut Bytes) -> Result<ByteString, WireError> {
    if data.remaining() < 4 {
        return Err(WireError::Truncated);
    }
    let len = data.get_u32() as usize;
    if data.remaining() < len {
        return Err(WireError::Truncated);
    }
    ByteString::try_from(data.split_to(len)).map_err(|_| WireError::Utf8)
}

/// A topic as one NATS subject token: its SHA-256 in hex (a topic holds characters NATS
/// treats specially and may be longer than a subject may be).
pub fn topic_token(topic: &TopicName) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(topic.as_str().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A will as an MQTT 5 PUBLISH (its delay kept apart, in the session record).
pub fn encode_will(w: &midge_codec::LastWill) -> Bytes {
    let properties = midge_codec::PublishPropertyValues {
        payload_format_indicator: w.properties.payload_format_indicator,
        message_expiry_interval: w.properties.message_expiry_interval,
        content_type: w.properties.content_type.clone(),
        response_topic: w.properties.response_topic.clone(),
        correlation_data: w.properties.correlation_data.clone(),
        user_properties: w.properties.user_properties.clone(),
        ..Default::default()
    }
    .into();
    let p = Publish {
        dup: false,
        qos: w.qos,
        retain: w.retain,
        topic: w.topic.clone(),
        packet_id: u16::from(w.qos != QoS::AtMostOnce),
        properties,
        payload: w.payload.clone(),
    };
    let mut b = BytesMut::new();
    let _ = Packet::Publish(p).encode(Protocol::V5, &mut b);
    b.freeze()
}

/// A will back from [`encode_will`], with its delay.
pub fn decode_will(data: Bytes, delay: u32) -> Result<midge_codec::LastWill, WireError> {
    let p = decode_publish(data)?;
    let props = p.properties.into_values();
    let properties = midge_codec::WillProperties {
        will_delay_interval: (delay > 0).then_some(delay),
        payload_format_indicator: props.payload_format_indicator,
        message_expiry_interval: props.message_expiry_interval,
        content_type: props.content_type,
        response_topic: props.response_topic,
        correlation_data: props.correlation_data,
        user_properties: props.user_properties,
    };
    Ok(midge_codec::LastWill {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        properties,
    })
}

/// Subscription options as one byte (MQTT 5's layout).
pub fn options_byte(o: &SubscriptionOptions) -> u8 {
    o.qos.as_u8()
        | u8::from(o.no_local) << 2
        | u8::from(o.retain_as_published) << 3
        | (o.retain_handling as u8) << 4
}

/// Subscription options from [`options_byte`].
pub fn options_from_byte(o: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::try_from(o & 3).unwrap_or(QoS::AtMostOnce),
        no_local: o & 4 != 0,
        retain_as_published: o & 8 != 0,
        retain_handling: match (o >> 4) & 3 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNew,
            _ => RetainHandling::DoNotSend,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str) -> Message {
        let mut m = Message::new(
            TopicName::new(topic).unwrap(),
            "payload",
            QoS::AtLeastOnce,
            true,
        );
        m.properties.user_properties = vec![("k".into(), "v".into())];
        m.properties.content_type = Some("text/plain".into());
        m.properties.correlation_data = Some(Bytes::from_static(b"\x00\x01"));
        m.properties.response_topic = Some("reply/here".into());
        m.origin = Some(Origin {
            client_id: "dev-1".into(),
            username: Some("alice".into()),
            received_ms: 1_765_000_000_123,
            cluster_id: 0,
        });
        m
    }

    #[test]
    fn topics_nats_treats_specially_and_every_property_survive_the_hop() {
        let now = Instant::now();
        for topic in [
            "a.b",
            "*",
            ">",
            "a b/c",
            "a//b",
            "/",
            "$x/y",
            "ünï/cödé",
            "a/ ./>.*",
        ] {
            let mut m = msg(topic);
            m.expires_at = Some(now + Duration::from_millis(3_200));
            let key = Arc::new(("$share/g/a".into(), "g".into()));
            for target in [
                Target::Plain,
                Target::Group(key.clone()),
                Target::Retained,
                Target::Session("c/1 .>".into()),
            ] {
                let data = encode_message("n1", &m, &target, now, 77);
                let got = decode_message(data, now).unwrap();
                assert_eq!(got.node, "n1");
                assert_eq!(got.target, target);
                // the identity given by the first node to forward it, then kept
                assert_eq!(got.msg.origin.as_ref().map(|o| o.cluster_id), Some(77));
                let again = encode_message("n2", &got.msg, &target, now, 99);
                let again = decode_message(again, now).unwrap();
                assert_eq!(again.msg.origin.as_ref().map(|o| o.cluster_id), Some(77));
                let mut got = got;
                if let Some(o) = got.msg.origin.as_mut() {
                    o.cluster_id = 0;
                }
                assert_eq!(got.msg.topic.as_str(), topic);
                assert_eq!(
                    (&*got.msg.payload, got.msg.qos, got.msg.retain),
                    (&b"payload"[..], QoS::AtLeastOnce, true)
                );
                assert_eq!(got.msg.origin, m.origin);
                assert_eq!(
                    got.msg.properties.user_properties,
                    m.properties.user_properties
                );
                assert_eq!(got.msg.properties.content_type, m.properties.content_type);
                assert_eq!(
                    got.msg.properties.correlation_data,
                    m.properties.correlation_data
                );
                assert_eq!(
                    got.msg.properties.response_topic,
                    m.properties.response_topic
                );
                // 3.2 s left is sent as 4, not 3 [MQTT-3.3.2-6]
                assert_eq!(got.msg.properties.message_expiry_interval, Some(4));
            }
        }
    }

    #[test]
    fn truncated_or_foreign_data_is_an_error_not_a_panic() {
        let now = Instant::now();
        let data = encode_message("n1", &msg("t"), &Target::Plain, now, 1);
        for len in 0..data.len() {
            assert!(decode_message(data.slice(..len), now).is_err(), "{len}");
        }
        let mut other = BytesMut::from(&data[..]);
        other[0] = 9;
        assert!(matches!(
            decode_message(other.freeze(), now),
            Err(WireError::Version(9))
        ));
        assert!(decode_session(Bytes::from_static(b"\x01\xff\xff\xff\xff")).is_err());
    }

    #[test]
    fn a_session_round_trips() {
        let mut p = Publish::new(TopicName::new("m/1").unwrap(), Bytes::from_static(b"q"));
        p.qos = QoS::ExactlyOnce;
        p.properties.subscription_identifiers = vec![7];
        let s = SessionState {
            client_id: "c".into(),
            expiry_interval: 3600,
            subscriptions: vec![
                (
                    "m/#".into(),
                    SubscriptionOptions {
                        qos: QoS::ExactlyOnce,
                        no_local: true,
                        retain_as_published: true,
                        retain_handling: RetainHandling::DoNotSend,
                    },
                    Some(7),
                ),
                (
                    "$share/g/x".into(),
                    SubscriptionOptions::qos(QoS::AtMostOnce),
                    None,
                ),
            ],
            messages: vec![p.clone()],
            inflight: vec![
                (
                    Publish {
                        packet_id: 9,
                        dup: true,
                        qos: QoS::AtLeastOnce,
                        ..p.clone()
                    },
                    false,
                ),
                (
                    Publish {
                        packet_id: 10,
                        ..p.clone()
                    },
                    true,
                ),
            ],
        };
        let back = decode_session(encode_session(&s)).unwrap();
        let flows: Vec<(u16, bool, QoS, bool)> = back
            .inflight
            .iter()
            .map(|(p, released)| (p.packet_id, p.dup, p.qos, *released))
            .collect();
        assert_eq!(
            flows,
            vec![
                (9, true, QoS::AtLeastOnce, false),
                (10, false, QoS::ExactlyOnce, true)
            ],
            "in flight: packet ids, DUP and states kept"
        );
        assert_eq!(back.client_id, s.client_id);
        assert_eq!(back.expiry_interval, 3600);
        assert_eq!(back.subscriptions, s.subscriptions);
        assert_eq!(back.messages.len(), 1);
        assert_eq!(back.messages[0].qos, QoS::ExactlyOnce);
        assert_eq!(
            back.messages[0].properties.subscription_identifiers,
            vec![7]
        );
    }

    #[test]
    fn topic_tokens_are_valid_subject_tokens() {
        let t = topic_token(&TopicName::new("a.b c/*/>").unwrap());
        assert_eq!(t.len(), 64);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn a_will_round_trips_with_its_delay_and_properties() {
        let properties = midge_codec::WillProperties {
            will_delay_interval: Some(5),
            content_type: Some("text/plain".into()),
            user_properties: vec![("k".into(), "v".into())],
            ..Default::default()
        };
        let w = midge_codec::LastWill {
            topic: TopicName::new("w/x").unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties,
        };
        let back = decode_will(encode_will(&w), 5).unwrap();
        assert_eq!(back, w);
        for o in 0..=0x2f_u8 {
            let o = o & 0x3f;
            if (o & 3) == 3 || (o >> 4) == 3 {
                continue;
            }
            assert_eq!(options_byte(&options_from_byte(o)), o);
        }
    }

    #[test]
    fn a_bundle_holds_messages_in_order_and_a_torn_one_is_an_error() {
        let now = Instant::now();
        let mut b = BytesMut::new();
        for topic in ["a", "b/c", "d"] {
            bundle_push(
                &mut b,
                &encode_message("n1", &msg(topic), &Target::Plain, now, 1),
            );
        }
        let b = b.freeze();
        let topics: Vec<String> = decode_bundle(b.clone(), now)
            .into_iter()
            .map(|r| r.unwrap().msg.topic.as_str().to_owned())
            .collect();
        assert_eq!(topics, ["a", "b/c", "d"]);
        let torn = decode_bundle(b.slice(..b.len() - 1), now);
        assert_eq!(torn.len(), 3);
        assert!(torn[2].is_err() && torn[1].is_ok());
    }
}
