//! Errors of the client.

use midge_codec::{ConnAckProperties, DecodeError, EncodeError, Protocol, ReasonCode};

use crate::state::StateError;

/// Why a connection or request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A socket, TLS or WebSocket I/O error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration could not be built (bad CA file, key, ...).
    #[error("TLS: {0}")]
    Tls(String),
    /// The WebSocket handshake or stream failed.
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// Connecting (TCP + TLS + WebSocket + CONNACK) took longer than the connect timeout.
    #[error("connection timed out")]
    ConnectTimeout,
    /// The server refused the connection in its CONNACK.
    #[error("connection refused: {}", refusal_text(*protocol, *reason))]
    Refused {
        /// Protocol of the attempt (decides how the reason is described).
        protocol: Protocol,
        /// The CONNACK reason code (3.x return codes are mapped onto reason codes).
        reason: ReasonCode,
        /// CONNACK properties (reason string, server reference, ...).
        properties: Box<ConnAckProperties>,
    },
    /// The server closed the connection.
    #[error("connection closed by the server")]
    ConnectionClosed,
    /// The server sent DISCONNECT (MQTT 5) with this reason.
    #[error("disconnected by the server: {0}")]
    ServerDisconnect(ReasonCode),
    /// No PINGRESP within the keep alive interval.
    #[error("keep alive timeout")]
    KeepAliveTimeout,
    /// The server's bytes could not be decoded.
    #[error("malformed packet from the server: {0}")]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded.
    #[error("cannot encode packet: {0}")]
    Encode(#[from] EncodeError),
    /// The server broke the protocol (or a request could not be taken).
    #[error("protocol error: {0}")]
    Protocol(#[from] StateError),
    /// The first packet from the server was not a CONNACK.
    #[error("expected CONNACK, got {0}")]
    NotConnAck(&'static str),
    /// The request queue to the event loop is full (`try_` methods only).
    #[error("request queue full")]
    QueueFull,
    /// The client was disconnected on request, or the event loop is gone.
    #[error("client closed")]
    Closed,
    /// The options are unusable (bad host, missing TLS file, ...).
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// Whether reconnecting could help (a network problem rather than a refusal or misuse).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_)
                | ClientError::WebSocket(_)
                | ClientError::ConnectTimeout
                | ClientError::ConnectionClosed
                | ClientError::ServerDisconnect(_)
                | ClientError::KeepAliveTimeout
        )
    }
}

/// mosquitto's wording for a CONNACK refusal: the MQTT 3.x return code strings, or the MQTT 5
/// reason code's name.
pub fn refusal_text(protocol: Protocol, reason: ReasonCode) -> String {
    if protocol.is_v5() {
        return reason.description().to_string();
    }
    match reason.to_v3_connack() {
        1 => "Connection Refused: unacceptable protocol version.",
        2 => "Connection Refused: identifier rejected.",
        3 => "Connection Refused: broker unavailable.",
        4 => "Connection Refused: bad user name or password.",
        5 => "Connection Refused: not authorised.",
        _ => "Connection Refused: unknown reason.",
    }
    .to_string()
}
