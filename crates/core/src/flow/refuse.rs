//! Refusals: which reason code answers which cause, and the choice between MQTT 5's
//! reason code and 3.x's answer (a return code, or closing the connection), live here, not
//! in the server. The server names the cause ([`ConnectRefusal`], a [`DecodeError`], a full
//! store, an operator's decision); this module picks the packet.
//!
//! What stays elsewhere, and why: a [`DecodeError`]'s own reason code
//! (`DecodeError::reason_code`) is the codec's, because which code names a malformation is
//! part of the error kind (only the decoder knows it was a zero Topic Alias rather than a
//! bad header); the 3.x CONNACK return code for a reason code (`ReasonCode::to_v3_connack`)
//! is the codec's encoding of the code chosen here for an older wire format. Refusals that
//! need core's state (client identifier, publish and subscribe authorization, topic alias,
//! receive maximum) are chosen in their flows, where the state is.
//!
//! ## Durability
//!
//! A QoS 1/2 PUBLISH is acknowledged only once it is on disk. When the store is full, or a
//! batch of writes failed, the acknowledgement becomes a refusal: MQTT 5 sends the same
//! PUBACK/PUBREC with 0x97 Quota exceeded [MQTT-3.4.2.1, MQTT-3.5.2.1] and the client may
//! resend later; MQTT 3.x has no negative acknowledgement, so the connection is closed and
//! the client resends the unacknowledged message when it reconnects [MQTT-4.4.0-1].

use midge_codec::{
    ConnAck, DecodeError, Disconnect, Packet, Protocol, PubAck, Publish, QoS, ReasonCode,
};

use crate::{Action, Broker, CloseCause, ConnId};
use std::time::Instant;

impl Broker {
    /// The store is full: refuse this QoS 1/2 PUBLISH instead of accepting it (and then
    /// losing it). Returns false, doing nothing, for QoS 0 (which is never stored).
    pub fn refuse_store_full(
        &mut self,
        now: Instant,
        conn: ConnId,
        publish: &Publish,
        out: &mut Vec<Action>,
    ) -> bool {
        let ack = PubAck {
            packet_id: publish.packet_id,
            reason: ReasonCode::QUOTA_EXCEEDED,
            properties: Default::default(),
        };
        let packet = match publish.qos {
            QoS::AtMostOnce => return false,
            QoS::AtLeastOnce => Packet::PubAck(ack),
            QoS::ExactlyOnce => Packet::PubRec(ack),
        };
        self.unstored(now, conn, packet, out);
        true
    }

    /// `packet` was to be sent once the write it depends on was durable, and the write
    /// failed: an acknowledgement becomes a refusal (see the module comment); anything else
    /// (a delivery, a SUBACK) goes out unchanged.
    pub fn unstored(&mut self, now: Instant, conn: ConnId, packet: Packet, out: &mut Vec<Action>) {
        let v5 = self.conns.get(&conn).is_some_and(|c| c.protocol.is_v5());
        let quota = |mut a: PubAck| {
            if !a.reason.is_error() {
                a.reason = ReasonCode::QUOTA_EXCEEDED;
            }
            a
        };
        match packet {
            Packet::PubAck(a) if v5 => out.push(Action::Send(conn, Packet::PubAck(quota(a)))),
            Packet::PubRec(a) if v5 => out.push(Action::Send(conn, Packet::PubRec(quota(a)))),
            Packet::PubAck(_) | Packet::PubRec(_) => {
                if self.conns.contains_key(&conn) {
                    out.push(Action::Close(conn));
                    self.closed(now, conn, CloseCause::ProtocolError, out);
                }
            }
            other => out.push(Action::Send(conn, other)),
        }
    }
}

/// Why the server refuses a decoded CONNECT before core sees it: the checks that need files
/// or a blocking thread (password file, device registry, client certificate). The server
/// names the cause; [`refuse_login`] picks the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefusal {
    /// A wrong username or password (the password file's, or a device's secret).
    BadCredentials,
    /// A client that may not connect however it authenticates: a disabled device, no
    /// certificate identity to use as the username, no username while anonymous access is
    /// off.
    NotAuthorized,
}

/// The CONNACK refusing a CONNECT for `cause`: MQTT 5 0x86 Bad User Name or Password /
/// 0x87 Not authorized [MQTT-3.2.2-8]; encoded for 3.x as return codes 4 / 5. The server
/// closes the connection after it [MQTT-3.2.2-7].
pub fn refuse_login(cause: ConnectRefusal) -> Packet {
    let reason = match cause {
        ConnectRefusal::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        ConnectRefusal::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
    };
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason,
        properties: Default::default(),
    })
}

/// The answer to a first packet that failed to decode as a CONNECT, where `level` is its
/// protocol level byte if that much could be read: the protocol to encode a CONNACK in and
/// the CONNACK, or `None` to close without answering.
///
/// - an unknown protocol level or name: CONNACK return code 1 (3.1.1's form, which every
///   version can read) [MQTT-3.1.2-2];
/// - a malformed MQTT 5 CONNECT: CONNACK with the error's reason code [MQTT-4.13.1-1];
/// - a malformed 3.x CONNECT: no CONNACK code means it, so just close [MQTT-4.8.0-1].
pub fn refuse_bad_connect(e: &DecodeError, level: Option<u8>) -> Option<(Protocol, Packet)> {
    let (protocol, reason) = match e {
        DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName(_) => {
            (Protocol::V311, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
        }
        _ if level == Some(Protocol::V5.level()) => (Protocol::V5, e.reason_code()),
        _ => return None,
    };
    let ack = ConnAck {
        session_present: false,
        reason,
        properties: Default::default(),
    };
    Some((protocol, Packet::ConnAck(ack)))
}

/// A packet after CONNECT failed to decode: an MQTT 5 client is told why with a DISCONNECT
/// carrying the error's reason code [MQTT-4.13.1-1]; 3.x has no such packet (`None`: just
/// close). Either way the server then reports a protocol error close (the will goes out).
pub fn refuse_bad_packet(protocol: Protocol, e: &DecodeError) -> Option<Packet> {
    protocol
        .is_v5()
        .then(|| Packet::Disconnect(Disconnect::new(e.reason_code())))
}

impl Broker {
    /// An operator cuts the connected clients `select(client_id, username)` holds for:
    /// MQTT 5 clients get DISCONNECT 0x98 Administrative action. Returns how many.
    pub fn disconnect_by_operator(
        &mut self,
        now: Instant,
        select: impl Fn(&str, Option<&str>) -> bool,
        out: &mut Vec<Action>,
    ) -> usize {
        self.disconnect_clients(now, select, ReasonCode::ADMINISTRATIVE_ACTION, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    /// The bytes a refusal puts on the wire for `protocol`.
    fn wire(p: &Packet, protocol: Protocol) -> Vec<u8> {
        let mut b = BytesMut::new();
        p.encode(protocol, &mut b).unwrap();
        b.to_vec()
    }

    fn reason(p: &Packet) -> ReasonCode {
        match p {
            Packet::ConnAck(a) => a.reason,
            Packet::Disconnect(d) => d.reason,
            other => panic!("not a refusal: {other:?}"),
        }
    }

    #[test]
    fn a_refused_login_gets_0x86_or_0x87_and_3x_return_codes_4_or_5() {
        let bad = refuse_login(ConnectRefusal::BadCredentials);
        let denied = refuse_login(ConnectRefusal::NotAuthorized);
        assert_eq!(reason(&bad), ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        assert_eq!(reason(&denied), ReasonCode::NOT_AUTHORIZED);
        // CONNACK: type 0x20, length 2, flags 0, return code
        for v3 in [Protocol::V31, Protocol::V311] {
            assert_eq!(wire(&bad, v3), [0x20, 2, 0, 4]);
            assert_eq!(wire(&denied, v3), [0x20, 2, 0, 5]);
        }
        assert_eq!(wire(&bad, Protocol::V5)[..4], [0x20, 3, 0, 0x86]);
        assert_eq!(wire(&denied, Protocol::V5)[..4], [0x20, 3, 0, 0x87]);
    }

    #[test]
    fn an_unknown_protocol_gets_return_code_1_whatever_its_level() {
        for (e, level) in [
            (DecodeError::UnsupportedProtocolLevel(6), Some(6)),
            (DecodeError::UnsupportedProtocolLevel(2), Some(2)),
            (DecodeError::InvalidProtocolName("MQTX".into()), Some(5)),
        ] {
            let (protocol, ack) = refuse_bad_connect(&e, level).unwrap();
            assert_eq!(protocol, Protocol::V311);
            assert_eq!(wire(&ack, protocol), [0x20, 2, 0, 1], "{e}");
        }
    }

    #[test]
    fn a_malformed_connect_gets_its_reason_code_in_v5_and_a_close_in_3x() {
        let e = DecodeError::InvalidUtf8;
        let (protocol, ack) = refuse_bad_connect(&e, Some(5)).unwrap();
        assert_eq!(protocol, Protocol::V5);
        assert_eq!(reason(&ack), e.reason_code());
        assert_eq!(reason(&ack), ReasonCode::MALFORMED_PACKET);
        let e = DecodeError::DuplicateProperty(0x11);
        let (_, ack) = refuse_bad_connect(&e, Some(5)).unwrap();
        assert_eq!(reason(&ack), ReasonCode::PROTOCOL_ERROR);
        assert_eq!(refuse_bad_connect(&DecodeError::InvalidUtf8, Some(4)), None);
        assert_eq!(refuse_bad_connect(&DecodeError::InvalidUtf8, Some(3)), None);
        assert_eq!(refuse_bad_connect(&DecodeError::InvalidUtf8, None), None);
    }

    #[test]
    fn a_bad_packet_after_connect_gets_disconnect_in_v5_only() {
        let e = DecodeError::TopicAliasZero;
        let d = refuse_bad_packet(Protocol::V5, &e).unwrap();
        assert_eq!(reason(&d), ReasonCode::TOPIC_ALIAS_INVALID);
        assert_eq!(wire(&d, Protocol::V5)[..3], [0xE0, 1, 0x94]);
        assert_eq!(refuse_bad_packet(Protocol::V311, &e), None);
        assert_eq!(refuse_bad_packet(Protocol::V31, &e), None);
    }
}
