//! What the event loop reports to the application.

use midge_codec::{Auth, ConnAck, Disconnect, Publish, QoS, ReasonCode, SubAck, UnsubAck};

use crate::error::ClientError;

/// One thing that happened on the connection.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The server accepted a connection (the first one or a reconnect). The CONNACK carries
    /// Session Present and, in MQTT 5, the server's properties (receive maximum, assigned
    /// client identifier, ...).
    Connected(ConnAck),
    /// A message from the server (already acknowledged as its QoS requires).
    Message(Publish),
    /// An outgoing publish is done: written to the socket (QoS 0, `packet_id` 0), acknowledged
    /// by PUBACK (QoS 1) or by PUBCOMP, or refused by a PUBREC with an error reason (QoS 2).
    Published {
        /// Packet identifier of the flow (0 for QoS 0).
        packet_id: u16,
        /// QoS of the publish.
        qos: QoS,
        /// Reason code of the final acknowledgement (Success for QoS 0 and MQTT 3.x).
        reason: ReasonCode,
    },
    /// SUBACK for a subscribe request.
    SubAck(SubAck),
    /// UNSUBACK for an unsubscribe request.
    UnsubAck(UnsubAck),
    /// The server sent DISCONNECT (MQTT 5); the connection is closed after this event.
    Disconnected(Disconnect),
    /// AUTH from the server (MQTT 5 enhanced authentication).
    Auth(Auth),
    /// The connection was lost and automatic reconnect is on: the next poll reconnects after
    /// the backoff delay.
    ConnectionLost(ClientError),
    /// Our DISCONNECT was written and the connection closed; polling again returns
    /// [`ClientError::Closed`].
    Closed,
}
