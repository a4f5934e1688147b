//! The control packets of MQTT 3.1, 3.1.1 and 5.0. One struct per packet; fields that do not
//! exist in older versions are simply empty there (properties, reason codes).

use bytes::Bytes;
use bytestring::ByteString;

use crate::properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PublishProperties, SubscribeProperties, UnsubscribeProperties, WillProperties,
};
use crate::reason::ReasonCode;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketType, Protocol, QoS};

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT (boxed: large and rare).
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK (QoS 1 acknowledgement).
    PubAck(PubAck),
    /// PUBREC (QoS 2, part 1).
    PubRec(PubAck),
    /// PUBREL (QoS 2, part 2).
    PubRel(PubAck),
    /// PUBCOMP (QoS 2, part 3).
    PubComp(PubAck),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol level requested.
    pub protocol: Protocol,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds (0 disables it).
    pub keep_alive: u16,
    /// MQTT 5 properties.
    pub properties: ConnectProperties,
    /// Client identifier (may be empty).
    pub client_id: ByteString,
    /// The will message, if any.
    pub will: Option<LastWill>,
    /// User name.
    pub username: Option<ByteString>,
    /// Password (binary data).
    pub password: Option<Bytes>,
    /// mosquitto's bridge flag: the protocol level had bit 0x80 set (a mosquitto bridge's
    /// `try_private`). Encoding writes the bit back.
    pub bridge: bool,
}

impl Connect {
    /// A CONNECT with defaults: clean start, keep alive 60 s, no credentials.
    pub fn new(protocol: Protocol, client_id: impl Into<ByteString>) -> Connect {
        Connect {
            protocol,
            clean_start: true,
            keep_alive: 60,
            properties: ConnectProperties::default(),
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            bridge: false,
        }
    }
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Will topic.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// MQTT 5 will properties.
    pub properties: WillProperties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Reason code; in MQTT 3.x the return codes 0..=5 map onto
    /// [`ReasonCode::from_v3_connack`].
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: ConnAckProperties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag (redelivery).
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (empty only with a topic alias in MQTT 5).
    pub topic: TopicName,
    /// Packet identifier (0 for QoS 0, non-zero otherwise).
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: PublishProperties,
    /// Application payload; shared, never copied by the decoder.
    pub payload: Bytes,
}

impl Publish {
    /// A QoS 0 publish with no properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            packet_id: 0,
            properties: PublishProperties::default(),
            payload: payload.into(),
        }
    }
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP share one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    /// Packet identifier being acknowledged.
    pub packet_id: u16,
    /// Reason code (always Success in 3.x).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: AckProperties,
}

impl PubAck {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: u16) -> PubAck {
        PubAck {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: AckProperties::default(),
        }
    }
}

/// What to do with retained messages when a subscription is made (MQTT 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription did not exist.
    SendIfNew = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

/// Subscription options (§3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local: do not forward messages published by this client (MQTT 5).
    pub no_local: bool,
    /// Retain As Published (MQTT 5).
    pub retain_as_published: bool,
    /// Retain Handling (MQTT 5).
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with the given QoS and MQTT 5 defaults for the rest.
    pub fn qos(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..Default::default()
        }
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// MQTT 5 properties (subscription identifier, user properties).
    pub properties: SubscribeProperties,
    /// Filters and their options, in order.
    pub filters: Vec<(TopicFilter, SubscriptionOptions)>,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: AckProperties,
    /// One reason code per filter, in order (3.x: 0, 1, 2 or 0x80).
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: UnsubscribeProperties,
    /// Filters to remove.
    pub filters: Vec<TopicFilter>,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier.
    pub packet_id: u16,
    /// MQTT 5 properties.
    pub properties: AckProperties,
    /// One reason code per filter (MQTT 5); empty in 3.x, which has no payload.
    pub reasons: Vec<ReasonCode>,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// Reason code (MQTT 5; Normal disconnection in 3.x).
    pub reason: ReasonCode,
    /// MQTT 5 properties.
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with the given reason and no properties.
    pub fn new(reason: ReasonCode) -> Disconnect {
        Disconnect {
            reason,
            properties: DisconnectProperties::default(),
        }
    }
}

/// AUTH (MQTT 5 enhanced authentication).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// Reason code: Success, Continue authentication or Re-authenticate.
    pub reason: ReasonCode,
    /// Properties.
    pub properties: AuthProperties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        ReasonCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packet moves by value several times on its way through the broker (decoder, router
    /// channel, core, action, outbox): properties are boxed so it stays small.
    #[test]
    fn a_packet_stays_small() {
        let (packet, publish) = (size_of::<Packet>(), size_of::<Publish>());
        assert!(packet <= 96, "Packet is {packet} B");
        assert!(publish <= 80, "Publish is {publish} B");
    }
}
