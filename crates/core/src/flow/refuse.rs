//! Refusing what could not be made durable: the choice between MQTT 5's reason code and
//! 3.x's only answer (closing the connection) lives here, not in the server.
//!
//! A QoS 1/2 PUBLISH is acknowledged only once it is on disk. When the store is full, or a
//! batch of writes failed, the acknowledgement becomes a refusal: MQTT 5 sends the same
//! PUBACK/PUBREC with 0x97 Quota exceeded [MQTT-3.4.2.1, MQTT-3.5.2.1] and the client may
//! resend later; MQTT 3.x has no negative acknowledgement, so the connection is closed and
//! the client resends the unacknowledged message when it reconnects [MQTT-4.4.0-1].

use midge_codec::{Packet, PubAck, Publish, QoS, ReasonCode};

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
