//! The hub's settings (plain data; the binary builds them from its TOML file).

use std::time::Duration;

use midge_codec::QoS;

/// Every rule and how the hub runs them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HubConfig {
    /// The rules, in the order they are evaluated.
    pub rules: Vec<RuleConfig>,
}

/// One rule: a SQL statement and what to do with the rows it produces.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    /// Unique name (shown in the API and logs).
    pub name: String,
    /// `SELECT ... FROM 'filter' [WHERE ...]`.
    pub sql: String,
    /// What to do with each row (at least one).
    pub actions: Vec<ActionConfig>,
}

/// What a rule does with a row.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionConfig {
    /// Append it to a table of the time-series store.
    Store {
        /// Table name (`telemetry` by default).
        table: String,
    },
    /// Publish it: `topic` and `payload` are templates where `${name}` is a column of the
    /// row or `topic`, `clientid`, `timestamp`; without a payload template the row is sent
    /// as JSON.
    Republish {
        /// Topic template.
        topic: String,
        /// Payload template (`None`: the row as JSON).
        payload: Option<String>,
        /// QoS of the publish.
        qos: QoS,
        /// Retain flag of the publish.
        retain: bool,
    },
    /// POST the row as JSON to an HTTP(S) URL.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Time allowed for one request.
        timeout: Duration,
    },
}

impl ActionConfig {
    /// One line describing the action (for the API and logs).
    pub fn describe(&self) -> String {
        match self {
            ActionConfig::Store { table } => format!("store {table}"),
            ActionConfig::Republish { topic, .. } => format!("republish {topic}"),
            ActionConfig::Webhook { url, .. } => format!("webhook {url}"),
        }
    }
}
