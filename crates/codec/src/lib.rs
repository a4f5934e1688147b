//! # midge-codec
//!
//! The MQTT wire format for MQTT 3.1 (`MQIsdp`, level 3), 3.1.1 (level 4) and 5.0 (level 5):
//! every control packet including AUTH, every MQTT 5 property with the per-packet rules of
//! which may appear and which may repeat, every reason code, and validated topic names and
//! filters. No I/O and no async runtime: bytes in, packets out.
//!
//! ```
//! use bytes::BytesMut;
//! use midge_codec::{decode, Packet, Protocol, Publish, QoS, TopicName};
//!
//! let mut publish = Publish::new(TopicName::new("floor-5/temperature").unwrap(), "15");
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = 1;
//!
//! let mut buf = BytesMut::new();
//! Packet::Publish(publish.clone()).encode(Protocol::V311, &mut buf).unwrap();
//!
//! // A growing buffer: a partial packet is "need more bytes", not an error.
//! let mut partial = BytesMut::from(&buf[..5]);
//! assert_eq!(decode(&mut partial, Protocol::V311, 1024).unwrap(), None);
//!
//! let decoded = decode(&mut buf, Protocol::V311, 1024).unwrap();
//! assert_eq!(decoded, Some(Packet::Publish(publish)));
//! ```
//!
//! Malformed input gives a [`DecodeError`] naming the rule it broke; its
//! [`DecodeError::reason_code`] is the reason code to answer with.

mod decode;
mod encode;
mod error;
pub mod origin;
mod packet;
pub mod properties;
mod reason;
mod topic;
mod types;
mod wire;

pub use bytes;
pub use bytestring;

pub use decode::{FrameHeader, decode, decode_body, frame_header, validate_utf8};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    Auth, ConnAck, Connect, Disconnect, LastWill, Packet, PubAck, Publish, RetainHandling, SubAck,
    Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use properties::{
    AckProperties, AuthProperties, AuthPropertyValues, ConnAckProperties, ConnAckPropertyValues,
    ConnectProperties, DisconnectProperties, DisconnectPropertyValues, PublishProperties,
    PublishPropertyValues, SubscribeProperties, UnsubscribeProperties, UserProperty,
    WillProperties,
};
pub use reason::ReasonCode;
pub use topic::{TopicError, TopicFilter, TopicName, matches_filter};
pub use types::{PacketType, Protocol, QoS};
pub use wire::MAX_VARINT;

/// Largest packet MQTT can express: 268,435,455 bytes of remaining length plus the header.
pub const MAX_PACKET_SIZE: u32 = MAX_VARINT + 5;
