//! The user properties midge's broker adds to the messages it hands its own in-process
//! clients (rules, the HTTP API, bridges): who published the message and when the broker
//! accepted it. Named once here, for core that adds them and for every client that reads or
//! strips them. Not part of MQTT: never sent to network clients.

/// The publisher's client id.
pub const CLIENT_ID: &str = "midge-client-id";
/// The publisher's user name (left out when it had none).
pub const USERNAME: &str = "midge-username";
/// When the broker accepted the message, in decimal ms since the Unix epoch (left out when
/// unknown). A redelivered message carries the same value.
pub const TIME: &str = "midge-time";

/// All of them (what a bridge strips before forwarding).
pub const ALL: [&str; 3] = [CLIENT_ID, USERNAME, TIME];
