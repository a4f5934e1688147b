//! The hub's settings (plain data; the binary builds them from its TOML file).

use std::path::PathBuf;
use std::time::Duration;

use midge_codec::QoS;

/// Every rule and how the hub runs them.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// The rules, in the order they are evaluated.
    pub rules: Vec<RuleConfig>,
    /// Client identifier of the hub's in-process MQTT session.
    pub client_id: String,
    /// Where the hub keeps what it needs across restarts (the filters it subscribed to).
    /// With it the hub's session is persistent (messages that arrive while a batch is being
    /// stored, or that were not yet stored when the broker stopped, are delivered again);
    /// without it (a memory-only broker) the session starts clean.
    pub state_dir: Option<PathBuf>,
    /// Most rows waiting to be stored before the hub stops taking messages (the broker
    /// then queues them in the hub's session).
    pub max_pending_rows: usize,
    /// Webhook requests queued before new ones are dropped (and counted as failures).
    pub webhook_queue: usize,
    /// Webhook requests in flight at once.
    pub webhook_concurrency: usize,
    /// In a cluster: the share group every node's hub subscribes through
    /// (`$share/<group>/<filter>`), so each message runs the rules once in the whole
    /// cluster, on one node, not once per node. `None`: plain subscriptions.
    pub share_group: Option<String>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            rules: Vec::new(),
            client_id: "$midge/hub".into(),
            state_dir: None,
            max_pending_rows: 50_000,
            webhook_queue: 1024,
            webhook_concurrency: 4,
            share_group: None,
        }
    }
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
    /// as JSON. The hub does not receive its own publishes (MQTT 5 No Local), so a rule
    /// cannot feed itself in a loop.
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
    /// Write the row as datapoints of the time-series store (`tsdb = true`), with the hosted
    /// rule engines' convention: `metric` (string) names the metric, `value` (a number or
    /// numeric string) is its value, or without `value` every number column is a field;
    /// `timestamp` (optional: seconds if 10 digits or fewer, else ms) or the time the
    /// broker accepted the message; every other column is a tag. A row that makes no point
    /// counts as a failure of the rule.
    Tsdb,
    /// POST the row as JSON to an HTTP(S) URL.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
        /// Time allowed for one request.
        timeout: Duration,
    },
    /// Raise and clear a named alarm per source, with hysteresis (see [`crate::alarm`]).
    Alarm(crate::AlarmConfig),
}

impl ActionConfig {
    /// Whether the action writes to the time-series store (`store`, `tsdb`), which must then
    /// be open.
    pub fn needs_series(&self) -> bool {
        matches!(self, ActionConfig::Store { .. } | ActionConfig::Tsdb)
    }

    /// One line describing the action (for the API and logs).
    pub fn describe(&self) -> String {
        match self {
            ActionConfig::Store { table } => format!("store {table}"),
            ActionConfig::Tsdb => "tsdb".to_string(),
            ActionConfig::Republish { topic, .. } => format!("republish {topic}"),
            ActionConfig::Webhook { url, .. } => format!("webhook {url}"),
            ActionConfig::Alarm(a) => a.describe(),
        }
    }
}
