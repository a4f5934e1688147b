//! Decode and encode errors. Every decode error names the rule it broke and maps to the
//! MQTT 5 reason code a broker should answer with, in one place ([`DecodeError::reason_code`]).

use crate::reason::ReasonCode;
use crate::topic::TopicError;
use crate::types::PacketType;

/// Why a packet could not be decoded. "Need more bytes" is not an error: the decoder returns
/// `Ok(None)` for that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The remaining length field used more than four bytes, or more bytes than its value
    /// needs.
    #[error("remaining length longer than four bytes or not minimally encoded [MQTT-1.5.5-1]")]
    MalformedRemainingLength,
    /// A variable byte integer inside the packet used more than four bytes, or more bytes than
    /// its value needs.
    #[error("variable byte integer longer than four bytes or not minimally encoded [MQTT-1.5.5-1]")]
    MalformedVarInt,
    /// The whole packet is larger than the maximum packet size in force.
    #[error("packet of {size} bytes exceeds the maximum packet size {max}")]
    PacketTooLarge {
        /// Size of the packet including its fixed header.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// Packet type 0 (or 15 before MQTT 5) is reserved.
    #[error("reserved packet type {0} [MQTT-2.1.2]")]
    ReservedPacketType(u8),
    /// The fixed header's flag bits are not the ones the packet type requires.
    #[error("invalid fixed header flags 0x{flags:X} for {packet} [MQTT-2.1.3-1]")]
    InvalidHeaderFlags {
        /// The packet type.
        packet: PacketType,
        /// The low nibble received.
        flags: u8,
    },
    /// A QoS field held the value 3.
    #[error("QoS 3 is not a valid QoS [MQTT-3.3.1-4]")]
    InvalidQoS,
    /// A QoS 0 PUBLISH had the DUP flag set.
    #[error("DUP flag set on a QoS 0 PUBLISH [MQTT-3.3.1-2]")]
    DupWithQoS0,
    /// The packet ended before a field it announces.
    #[error("packet ended inside {0}")]
    UnexpectedEnd(&'static str),
    /// Bytes were left over after the last field of a packet.
    #[error("{0} unexpected bytes after the end of the {1} packet")]
    TrailingBytes(usize, PacketType),
    /// A UTF-8 string field was not well-formed UTF-8 (this includes encoded surrogates).
    #[error("string is not well-formed UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8,
    /// A UTF-8 string field contained U+0000.
    #[error("string contains the null character U+0000 [MQTT-1.5.4-2]")]
    NullCharacter,
    /// CONNECT carried a protocol name other than `MQTT` / `MQIsdp`.
    #[error("protocol name {0:?} is not MQTT [MQTT-3.1.2-1]")]
    InvalidProtocolName(String),
    /// CONNECT asked for a protocol level midge does not speak.
    #[error("unsupported protocol level {0} [MQTT-3.1.2-2]")]
    UnsupportedProtocolLevel(u8),
    /// The reserved bit of the CONNECT flags was set.
    #[error("CONNECT reserved flag is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain set without the Will flag, or Will QoS 3.
    #[error(
        "will QoS/retain set without a will, or will QoS 3 [MQTT-3.1.2-11] [MQTT-3.1.2-13] [MQTT-3.1.2-14]"
    )]
    InvalidWillFlags,
    /// MQTT 3.1.1 CONNECT with the password flag but not the user name flag.
    #[error("password flag set without user name flag [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// A packet identifier of 0 where a non-zero one is required.
    #[error("packet identifier 0 in {0} [MQTT-2.2.1-3]")]
    ZeroPacketId(PacketType),
    /// SUBSCRIBE with no topic filter (a Protocol Error in MQTT 5).
    #[error("SUBSCRIBE without any topic filter [MQTT-3.8.3-2]")]
    EmptySubscribe,
    /// UNSUBSCRIBE with no topic filter (a Protocol Error in MQTT 5).
    #[error("UNSUBSCRIBE without any topic filter [MQTT-3.10.3-2]")]
    EmptyUnsubscribe,
    /// Reserved bits of the subscription options byte were set.
    #[error("reserved subscription option bits set [MQTT-3.8.3-5]")]
    InvalidSubscriptionOptions,
    /// Retain Handling option 3.
    #[error("retain handling 3 is not valid [MQTT-3.8.3-6]")]
    InvalidRetainHandling,
    /// No Local set on a shared subscription.
    #[error("no local set on a shared subscription [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription,
    /// A topic name broke the topic rules.
    #[error("invalid topic name: {0}")]
    InvalidTopicName(TopicError),
    /// A topic filter broke the topic filter rules.
    #[error("invalid topic filter: {0}")]
    InvalidTopicFilter(TopicError),
    /// PUBLISH with an empty topic and no topic alias.
    #[error("PUBLISH with an empty topic name and no topic alias [MQTT-3.3.2-1]")]
    EmptyTopicWithoutAlias,
    /// Topic alias 0.
    #[error("topic alias 0 is not permitted [MQTT-3.3.2-8]")]
    TopicAliasZero,
    /// A property identifier that does not exist.
    #[error("unknown property identifier 0x{0:02X} [MQTT-2.2.2]")]
    UnknownProperty(u8),
    /// A property that is not allowed in this packet.
    #[error("property 0x{id:02X} is not allowed in {packet} [MQTT-2.2.2]")]
    PropertyNotAllowed {
        /// Property identifier.
        id: u8,
        /// Packet (or "will") it appeared in.
        packet: &'static str,
    },
    /// A property that may appear only once appeared again.
    #[error("property 0x{0:02X} appears more than once")]
    DuplicateProperty(u8),
    /// A property value outside its allowed range (e.g. Receive Maximum 0).
    #[error("property 0x{0:02X} has an invalid value")]
    InvalidPropertyValue(u8),
    /// Authentication data without an authentication method.
    #[error("authentication data without authentication method [MQTT-3.1.2-29]")]
    AuthDataWithoutMethod,
    /// Payload Format Indicator 1 with a payload that is not UTF-8.
    #[error("payload format indicator says UTF-8 but the payload is not [MQTT-3.3.2-4]")]
    PayloadFormatInvalid,
    /// A reason code the spec does not list for this packet.
    #[error("reason code 0x{code:02X} is not valid in {packet}")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code received.
        code: u8,
    },
    /// A packet type that does not exist in the protocol version in use (AUTH before 5.0).
    #[error("{0} does not exist in this protocol version")]
    PacketNotInVersion(PacketType),
    /// CONNACK flags with reserved bits set.
    #[error("CONNACK reserved flags set [MQTT-3.2.2-1]")]
    ConnAckReservedFlags,
}

impl DecodeError {
    /// The MQTT 5 reason code a receiver should send (in CONNACK before a session exists,
    /// in DISCONNECT after) when this error closes the connection.
    ///
    /// This mapping is the codec's, not a policy: the code names the kind of malformation,
    /// which only the decoder knows (a zero Topic Alias, a duplicate property, a packet over
    /// the maximum size), and the spec fixes it per kind. Whether and how it is sent (a v5
    /// CONNACK or DISCONNECT, a 3.x return code, or a plain close) is chosen in core
    /// (`midge_core::refuse_bad_connect`, `refuse_bad_packet`).
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match self {
            PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            UnsupportedProtocolLevel(_) | InvalidProtocolName(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            InvalidTopicName(_) => ReasonCode::TOPIC_NAME_INVALID,
            TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            // MQTT 5 §3.3.2.3.4: a zero length Topic Name without a Topic Alias is a
            // Protocol Error (0x90 Topic Name invalid is for a well-formed name refused)
            EmptyTopicWithoutAlias
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | AuthDataWithoutMethod
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode { .. }
            | EmptySubscribe
            | EmptyUnsubscribe => ReasonCode::PROTOCOL_ERROR,
            MalformedRemainingLength
            | MalformedVarInt
            | ReservedPacketType(_)
            | InvalidHeaderFlags { .. }
            | InvalidQoS
            | DupWithQoS0
            | UnexpectedEnd(_)
            | TrailingBytes(..)
            | InvalidUtf8
            | NullCharacter
            | ConnectReservedFlag
            | InvalidWillFlags
            | PasswordWithoutUsername
            | InvalidSubscriptionOptions
            | UnknownProperty(_)
            | PropertyNotAllowed { .. }
            | PacketNotInVersion(_)
            | ConnAckReservedFlags
            // a filter that breaks the topic grammar (empty, `#` not last, `+` not alone, a
            // bad share name) is not "correctly formed": 0x8F Topic Filter invalid is for a
            // well-formed filter the server refuses [MQTT-4.7.1-1, MQTT-4.7.3-1]; and a zero
            // packet identifier [MQTT-2.2.1-3] — both as mosquitto classifies them
            | InvalidTopicFilter(_)
            | ZeroPacketId(_) => ReasonCode::MALFORMED_PACKET,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet would exceed the largest remaining length MQTT can express (256 MiB).
    #[error("packet remaining length {0} exceeds 268435455 bytes")]
    PacketTooLarge(usize),
    /// A string or binary field longer than 65535 bytes.
    #[error("{0} is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// The packet does not exist in the target protocol version (AUTH before 5.0).
    #[error("{0} cannot be sent in this protocol version")]
    PacketNotInVersion(PacketType),
    /// A QoS 1/2 PUBLISH, SUBSCRIBE, ... with packet identifier 0.
    #[error("packet identifier 0 in {0}")]
    ZeroPacketId(PacketType),
    /// A variable byte integer property (a Subscription Identifier) above 268,435,455.
    #[error("variable byte integer value {0} exceeds 268435455")]
    VarIntOutOfRange(u32),
}
