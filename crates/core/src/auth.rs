//! The authorization hook. Core asks it; the server plugs in password and ACL backends.
//! Calls happen on the router's hot path, so implementations must be cheap (expensive
//! password hashing belongs before the CONNECT reaches core).

use midge_codec::{ReasonCode, TopicFilter};

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User name from CONNECT (or from the client certificate).
    pub username: Option<&'a str>,
    /// The listener the client connected through (as given to [`crate::Broker::open_on`];
    /// 0 for [`crate::Broker::open`]), so a server can apply per-listener rules.
    pub listener: u16,
}

/// Decisions about connecting, publishing and subscribing.
pub trait Authorizer: Send + std::fmt::Debug {
    /// Whether the client may connect; an error is sent as the CONNACK reason.
    fn connect(&self, _client: &ClientInfo<'_>) -> Result<(), ReasonCode> {
        Ok(())
    }
    /// Whether the client may publish to `topic`.
    fn can_publish(&self, _client: &ClientInfo<'_>, _topic: &str) -> bool {
        true
    }
    /// Whether the client may subscribe to `filter`.
    fn can_subscribe(&self, _client: &ClientInfo<'_>, _filter: &TopicFilter) -> bool {
        true
    }
    /// Whether a message on `topic` may be delivered to the client.
    fn can_receive(&self, _client: &ClientInfo<'_>, _topic: &str) -> bool {
        true
    }
    /// Whether [`Authorizer::can_receive`] needs calling at all (false skips it per message).
    fn checks_delivery(&self) -> bool {
        false
    }
}

/// Allows everything (the zero-config default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {}
