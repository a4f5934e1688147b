//! Broker limits and feature switches. Plain data; the binary fills it from TOML.

use midge_codec::QoS;

/// Limits and protocol options of the broker. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest packet accepted from clients, in bytes (also sent as Maximum Packet Size).
    pub max_packet_size: u32,
    /// Outgoing QoS 1/2 messages in flight per session (capped by the client's Receive
    /// Maximum).
    pub max_inflight_messages: u16,
    /// Incoming QoS 2 messages awaiting PUBREL per client (our Receive Maximum).
    pub receive_maximum: u16,
    /// Messages queued per session beyond the in-flight window (offline or slow clients;
    /// 0 = no limit).
    pub max_queued_messages: usize,
    /// Bytes of payload queued per session (0 = no byte limit).
    pub max_queued_bytes: usize,
    /// Whether QoS 0 messages are queued for offline persistent sessions.
    pub queue_qos0_offline: bool,
    /// Topic aliases accepted per connection (MQTT 5 Topic Alias Maximum; 0 disables).
    pub topic_alias_maximum: u16,
    /// Maximum keep alive in seconds; MQTT 5 clients asking for more (or 0) are told this
    /// value as Server Keep Alive. 0 = no limit.
    pub max_keepalive: u16,
    /// Maximum session expiry interval granted, in seconds (`u32::MAX` = never expire).
    pub max_session_expiry: u32,
    /// Highest QoS the broker accepts and grants.
    pub max_qos: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Whether wildcard subscriptions are allowed.
    pub wildcard_subscriptions: bool,
    /// Whether subscription identifiers are supported.
    pub subscription_identifiers: bool,
    /// Whether shared subscriptions are supported.
    pub shared_subscriptions: bool,
    /// Maximum number of levels in a topic name or filter (0 = no limit).
    pub max_topic_levels: usize,
    /// Maximum subscriptions per client (0 = no limit).
    pub max_subscriptions_per_client: usize,
    /// Maximum retained messages held (0 = no limit).
    pub max_retained_messages: usize,
    /// Topics whose last message is kept for [`crate::Broker::last_values`] (the least
    /// recently updated are forgotten first; 0 = none kept).
    pub last_values_topics: usize,
    /// Prefix of server-assigned client identifiers.
    pub assigned_id_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_packet_size: 1024 * 1024,
            max_inflight_messages: 256,
            receive_maximum: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            queue_qos0_offline: false,
            topic_alias_maximum: 64,
            max_keepalive: 0,
            max_session_expiry: u32::MAX,
            max_qos: QoS::ExactlyOnce,
            retain_available: true,
            wildcard_subscriptions: true,
            subscription_identifiers: true,
            shared_subscriptions: true,
            max_topic_levels: 128,
            max_subscriptions_per_client: 0,
            max_retained_messages: 0,
            last_values_topics: 10_000,
            assigned_id_prefix: "auto-".into(),
        }
    }
}
