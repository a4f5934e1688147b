//! MQTT 5 properties (§2.2.2). Each packet has its own property struct holding only the
//! properties the spec allows there; decoding any other identifier is a Malformed Packet, and
//! repeating a property that may appear once is a Protocol Error. One macro generates each
//! struct's decode, size and write code so the three cannot disagree.

use bytes::Bytes;
use bytestring::ByteString;

use crate::error::DecodeError;
use crate::wire::{Reader, Sink};

/// Property identifiers (§2.2.2.2).
#[allow(missing_docs)]
pub mod id {
    pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub const CONTENT_TYPE: u8 = 0x03;
    pub const RESPONSE_TOPIC: u8 = 0x08;
    pub const CORRELATION_DATA: u8 = 0x09;
    pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub const AUTHENTICATION_METHOD: u8 = 0x15;
    pub const AUTHENTICATION_DATA: u8 = 0x16;
    pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub const RESPONSE_INFORMATION: u8 = 0x1A;
    pub const SERVER_REFERENCE: u8 = 0x1C;
    pub const REASON_STRING: u8 = 0x1F;
    pub const RECEIVE_MAXIMUM: u8 = 0x21;
    pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub const TOPIC_ALIAS: u8 = 0x23;
    pub const MAXIMUM_QOS: u8 = 0x24;
    pub const RETAIN_AVAILABLE: u8 = 0x25;
    pub const USER_PROPERTY: u8 = 0x26;
    pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// A user property: a UTF-8 name/value pair; order and repeats are preserved.
pub type UserProperty = (ByteString, ByteString);

/// A decoded property value, typed by its identifier.
#[derive(Debug)]
pub(crate) enum Value {
    Byte(u8),
    U16(u16),
    U32(u32),
    VarInt(u32),
    Str(ByteString),
    Bin(Bytes),
    Pair(ByteString, ByteString),
}

/// Read one property (identifier and value), checking the value's range.
fn read_property(r: &mut Reader) -> Result<(u8, Value), DecodeError> {
    use id::*;
    let raw_id = r.varint("property identifier")?;
    let pid = u8::try_from(raw_id).map_err(|_| DecodeError::UnknownProperty(0xFF))?;
    let value = match pid {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => {
            let v = r.u8("property value")?;
            if v > 1 {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            Value::Byte(v)
        }
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => {
            let v = r.u16("property value")?;
            if v == 0 && pid == RECEIVE_MAXIMUM {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            if v == 0 && pid == TOPIC_ALIAS {
                return Err(DecodeError::TopicAliasZero);
            }
            Value::U16(v)
        }
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => {
            let v = r.u32("property value")?;
            if v == 0 && pid == MAXIMUM_PACKET_SIZE {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            Value::U32(v)
        }
        SUBSCRIPTION_IDENTIFIER => {
            let v = r.varint("subscription identifier")?;
            if v == 0 {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            Value::VarInt(v)
        }
        RESPONSE_TOPIC => {
            // a topic name: not empty, no wildcards [MQTT-3.3.2-14] (a Protocol Error, as
            // mosquitto classifies it)
            let v = r.string("response topic")?;
            if v.is_empty() || v.contains(['+', '#']) {
                return Err(DecodeError::InvalidPropertyValue(pid));
            }
            Value::Str(v)
        }
        CONTENT_TYPE
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => Value::Str(r.string("property string")?),
        CORRELATION_DATA | AUTHENTICATION_DATA => Value::Bin(r.binary("property binary")?),
        USER_PROPERTY => {
            let k = r.string("user property name")?;
            let v = r.string("user property value")?;
            Value::Pair(k, v)
        }
        other => return Err(DecodeError::UnknownProperty(other)),
    };
    Ok((pid, value))
}

/// Decode a property block (length prefix included) into the packet's property struct.
pub(crate) fn decode<P: PropertySet>(r: &mut Reader) -> Result<P, DecodeError> {
    let len = r.varint("property length")? as usize;
    let mut block = r.sub(len, "properties")?;
    let mut props = P::default();
    let mut seen: u64 = 0;
    while !block.is_empty() {
        let (pid, value) = read_property(&mut block)?;
        if !P::repeatable(pid) {
            let bit = 1u64 << (pid & 63);
            if seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(pid));
            }
            seen |= bit;
        }
        props.set(pid, value)?;
    }
    Ok(props)
}

/// The common interface of the per-packet property structs.
pub(crate) trait PropertySet: Default {
    fn set(&mut self, pid: u8, value: Value) -> Result<(), DecodeError>;
    fn repeatable(pid: u8) -> bool;
    fn write<S: Sink>(&self, s: &mut S);
}

/// Size of a property block's content (without its length prefix), whether a field is too
/// long to encode, and the first variable byte integer value too large to encode.
pub(crate) fn content_len<P: PropertySet>(p: &P) -> (usize, bool, Option<u32>) {
    let mut c = crate::wire::Counter::default();
    p.write(&mut c);
    (c.len, c.too_long, c.varint_out_of_range)
}

macro_rules! put {
    (Byte, $s:expr, $id:expr, $v:expr) => {
        $s.byte($id, *$v)
    };
    (U16, $s:expr, $id:expr, $v:expr) => {
        $s.u16($id, *$v)
    };
    (U32, $s:expr, $id:expr, $v:expr) => {
        $s.u32($id, *$v)
    };
    (VarInt, $s:expr, $id:expr, $v:expr) => {
        $s.varint($id, *$v)
    };
    (Str, $s:expr, $id:expr, $v:expr) => {
        $s.binary($id, $v.as_bytes())
    };
    (Bin, $s:expr, $id:expr, $v:expr) => {
        $s.binary($id, &$v[..])
    };
}

macro_rules! ty {
    (Byte) => {
        u8
    };
    (U16) => {
        u16
    };
    (U32) => {
        u32
    };
    (VarInt) => {
        u32
    };
    (Str) => {
        ByteString
    };
    (Bin) => {
        Bytes
    };
}

macro_rules! property_set {
    (
        $(#[$meta:meta])*
        $name:ident, $ctx:expr,
        { $( $(#[$fmeta:meta])* $field:ident : $kind:ident = $pid:path ),* $(,)? }
        $( multi { $(#[$mmeta:meta])* $mfield:ident = $mid:path } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<ty!($kind)>, )*
            $( $(#[$mmeta])* pub $mfield: Vec<u32>, )?
            /// User properties, in the order received.
            pub user_properties: Vec<UserProperty>,
        }

        impl $name {
            /// No property set (what a packet without properties has).
            pub const EMPTY: $name = $name {
                $( $field: None, )*
                $( $mfield: Vec::new(), )?
                user_properties: Vec::new(),
            };

            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )* $( && self.$mfield.is_empty() )?
                    && self.user_properties.is_empty()
            }
        }

        impl PropertySet for $name {
            fn set(&mut self, pid: u8, value: Value) -> Result<(), DecodeError> {
                match (pid, value) {
                    $( ($pid, Value::$kind(v)) => self.$field = Some(v), )*
                    $( ($mid, Value::VarInt(v)) => self.$mfield.push(v), )?
                    (id::USER_PROPERTY, Value::Pair(k, v)) => self.user_properties.push((k, v)),
                    _ => return Err(DecodeError::PropertyNotAllowed { id: pid, packet: $ctx }),
                }
                Ok(())
            }

            fn repeatable(pid: u8) -> bool {
                pid == id::USER_PROPERTY $( || pid == $mid )?
            }

            fn write<S: Sink>(&self, s: &mut S) {
                $( if let Some(v) = &self.$field { put!($kind, s, $pid, v); } )*
                $( for v in &self.$mfield { s.varint($mid, *v); } )?
                for (k, v) in &self.user_properties {
                    s.pair(id::USER_PROPERTY, k, v);
                }
            }
        }
    };
}

/// A property block kept behind a box, and only when there is one: most PUBLISH, CONNACK,
/// DISCONNECT and AUTH packets carry no properties, and the packets move through the broker by
/// value several times each, so the block costs one pointer instead of up to 160 bytes.
/// Reading a property goes through `Deref` (an absent block reads as
/// [`PublishPropertyValues::EMPTY`] and so on); `DerefMut` allocates the block on first use.
/// Two handles are equal when their properties are, whether or not a block is allocated.
macro_rules! boxed_properties {
    ($(#[$meta:meta])* $name:ident => $values:ident) => {
        $(#[$meta])*
        #[derive(Clone, Default)]
        pub struct $name(Option<Box<$values>>);

        impl $name {
            /// The properties by value (an empty set when there is no block).
            pub fn into_values(self) -> $values {
                self.0.map_or_else($values::default, |b| *b)
            }
        }

        impl std::ops::Deref for $name {
            type Target = $values;
            fn deref(&self) -> &$values {
                static EMPTY: $values = $values::EMPTY;
                match &self.0 {
                    Some(b) => b,
                    None => &EMPTY,
                }
            }
        }

        impl std::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $values {
                self.0.get_or_insert_with(Default::default)
            }
        }

        impl From<$values> for $name {
            fn from(v: $values) -> $name {
                if v.is_empty() { $name(None) } else { $name(Some(Box::new(v))) }
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&**self, f)
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &$name) -> bool {
                **self == **other
            }
        }

        impl Eq for $name {}

        impl PropertySet for $name {
            fn set(&mut self, pid: u8, value: Value) -> Result<(), DecodeError> {
                (**self).set(pid, value)
            }

            fn repeatable(pid: u8) -> bool {
                $values::repeatable(pid)
            }

            fn write<S: Sink>(&self, s: &mut S) {
                if let Some(b) = &self.0 {
                    b.write(s);
                }
            }
        }
    };
}

property_set! {
    /// Properties of CONNECT (§3.1.2.11).
    ConnectProperties, "CONNECT", {
        /// Session Expiry Interval in seconds (0 or absent: session ends with the connection).
        session_expiry_interval: U32 = id::SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum: QoS 1/2 publishes the client accepts concurrently.
        receive_maximum: U16 = id::RECEIVE_MAXIMUM,
        /// Maximum Packet Size the client accepts.
        maximum_packet_size: U32 = id::MAXIMUM_PACKET_SIZE,
        /// Topic Alias Maximum the client accepts.
        topic_alias_maximum: U16 = id::TOPIC_ALIAS_MAXIMUM,
        /// Request Response Information (0 or 1).
        request_response_information: Byte = id::REQUEST_RESPONSE_INFORMATION,
        /// Request Problem Information (0 or 1).
        request_problem_information: Byte = id::REQUEST_PROBLEM_INFORMATION,
        /// Authentication Method for extended authentication.
        authentication_method: Str = id::AUTHENTICATION_METHOD,
        /// Authentication Data.
        authentication_data: Bin = id::AUTHENTICATION_DATA,
    }
}

property_set! {
    /// Properties of the will message in CONNECT (§3.1.3.2).
    WillProperties, "will properties", {
        /// Will Delay Interval in seconds.
        will_delay_interval: U32 = id::WILL_DELAY_INTERVAL,
        /// Payload Format Indicator (1 = UTF-8).
        payload_format_indicator: Byte = id::PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval in seconds.
        message_expiry_interval: U32 = id::MESSAGE_EXPIRY_INTERVAL,
        /// Content Type.
        content_type: Str = id::CONTENT_TYPE,
        /// Response Topic.
        response_topic: Str = id::RESPONSE_TOPIC,
        /// Correlation Data.
        correlation_data: Bin = id::CORRELATION_DATA,
    }
}

property_set! {
    /// Properties of CONNACK (§3.2.2.3).
    ConnAckPropertyValues, "CONNACK", {
        /// Session Expiry Interval the server uses.
        session_expiry_interval: U32 = id::SESSION_EXPIRY_INTERVAL,
        /// Receive Maximum of the server.
        receive_maximum: U16 = id::RECEIVE_MAXIMUM,
        /// Maximum QoS the server supports (0 or 1; absent means 2).
        maximum_qos: Byte = id::MAXIMUM_QOS,
        /// Retain Available (absent means 1).
        retain_available: Byte = id::RETAIN_AVAILABLE,
        /// Maximum Packet Size the server accepts.
        maximum_packet_size: U32 = id::MAXIMUM_PACKET_SIZE,
        /// Client identifier assigned by the server.
        assigned_client_identifier: Str = id::ASSIGNED_CLIENT_IDENTIFIER,
        /// Topic Alias Maximum the server accepts.
        topic_alias_maximum: U16 = id::TOPIC_ALIAS_MAXIMUM,
        /// Reason String.
        reason_string: Str = id::REASON_STRING,
        /// Wildcard Subscription Available.
        wildcard_subscription_available: Byte = id::WILDCARD_SUBSCRIPTION_AVAILABLE,
        /// Subscription Identifiers Available.
        subscription_identifiers_available: Byte = id::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        /// Shared Subscription Available.
        shared_subscription_available: Byte = id::SHARED_SUBSCRIPTION_AVAILABLE,
        /// Server Keep Alive the client must use.
        server_keep_alive: U16 = id::SERVER_KEEP_ALIVE,
        /// Response Information.
        response_information: Str = id::RESPONSE_INFORMATION,
        /// Server Reference.
        server_reference: Str = id::SERVER_REFERENCE,
        /// Authentication Method.
        authentication_method: Str = id::AUTHENTICATION_METHOD,
        /// Authentication Data.
        authentication_data: Bin = id::AUTHENTICATION_DATA,
    }
}

boxed_properties! {
    /// The properties of a CONNACK (see [`ConnAckPropertyValues`]), boxed when present.
    ConnAckProperties => ConnAckPropertyValues
}

property_set! {
    /// Properties of PUBLISH (§3.3.2.3).
    PublishPropertyValues, "PUBLISH", {
        /// Payload Format Indicator (1 = UTF-8).
        payload_format_indicator: Byte = id::PAYLOAD_FORMAT_INDICATOR,
        /// Message Expiry Interval in seconds.
        message_expiry_interval: U32 = id::MESSAGE_EXPIRY_INTERVAL,
        /// Topic Alias.
        topic_alias: U16 = id::TOPIC_ALIAS,
        /// Response Topic.
        response_topic: Str = id::RESPONSE_TOPIC,
        /// Correlation Data.
        correlation_data: Bin = id::CORRELATION_DATA,
        /// Content Type.
        content_type: Str = id::CONTENT_TYPE,
    }
    multi {
        /// Subscription Identifiers of the matching subscriptions (server to client).
        subscription_identifiers = id::SUBSCRIPTION_IDENTIFIER
    }
}

boxed_properties! {
    /// The properties of a PUBLISH (see [`PublishPropertyValues`]), boxed when present.
    PublishProperties => PublishPropertyValues
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties, "acknowledgement", {
        /// Reason String.
        reason_string: Str = id::REASON_STRING,
    }
}

property_set! {
    /// Properties of SUBSCRIBE (§3.8.2.1).
    SubscribeProperties, "SUBSCRIBE", {
        /// Subscription Identifier (1 to 268,435,455).
        subscription_identifier: VarInt = id::SUBSCRIPTION_IDENTIFIER,
    }
}

property_set! {
    /// Properties of UNSUBSCRIBE (§3.10.2.1): user properties only.
    UnsubscribeProperties, "UNSUBSCRIBE", {}
}

property_set! {
    /// Properties of DISCONNECT (§3.14.2.2).
    DisconnectPropertyValues, "DISCONNECT", {
        /// Session Expiry Interval (client to server only).
        session_expiry_interval: U32 = id::SESSION_EXPIRY_INTERVAL,
        /// Reason String.
        reason_string: Str = id::REASON_STRING,
        /// Server Reference.
        server_reference: Str = id::SERVER_REFERENCE,
    }
}

boxed_properties! {
    /// The properties of a DISCONNECT (see [`DisconnectPropertyValues`]), boxed when present.
    DisconnectProperties => DisconnectPropertyValues
}

property_set! {
    /// Properties of AUTH (§3.15.2.2).
    AuthPropertyValues, "AUTH", {
        /// Authentication Method.
        authentication_method: Str = id::AUTHENTICATION_METHOD,
        /// Authentication Data.
        authentication_data: Bin = id::AUTHENTICATION_DATA,
        /// Reason String.
        reason_string: Str = id::REASON_STRING,
    }
}

boxed_properties! {
    /// The properties of a AUTH (see [`AuthPropertyValues`]), boxed when present.
    AuthProperties => AuthPropertyValues
}
