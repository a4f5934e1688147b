//! # midge-hub
//!
//! The IoT-hub layer: rules such as `SELECT * FROM 'sensors/#' WHERE temp > 30` run over
//! the messages devices publish and feed actions: the time-series store, republishing, HTTP
//! webhooks. The hub is an in-process MQTT client of the broker (a persistent MQTT 5
//! session that acknowledges a message only after its actions are done), so it sees what
//! any subscriber would see and nothing is special-cased in the broker.

mod config;

pub use config::{ActionConfig, HubConfig, RuleConfig};

/// What the HTTP API shows about one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStatus {
    /// The rule's name (unique).
    pub name: String,
    /// Its SQL text.
    pub sql: String,
    /// The topic filters of its FROM clause.
    pub filters: Vec<String>,
    /// Its actions, described in one line each (`store telemetry`, `republish alerts/${topic}`).
    pub actions: Vec<String>,
    /// Messages whose topic matched the FROM clause.
    pub matched: u64,
    /// Messages that passed WHERE and produced a row.
    pub passed: u64,
    /// Messages whose evaluation or actions failed.
    pub failed: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}
