//! [`RuleSpec`]: a rule as written by people, the one shape the configuration file's
//! `[[rule]]` tables (TOML) and the HTTP API (JSON) both take, with the one
//! [`RuleSpec::check`] that holds its limits. The file and the API differ only in how they
//! say where a problem is (`[rule #2.republish] qos: ...` against `republish.qos: ...`); the
//! problem ([`SpecProblem`]) is the same.

use std::time::Duration;

use midge_codec::QoS;
use serde::de::{self, DeserializeOwned, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{ActionConfig, RuleConfig};

/// Longest webhook timeout, in seconds.
pub(crate) const MAX_WEBHOOK_TIMEOUT: u64 = 600;

/// Webhook timeout when none is given, in seconds.
pub(crate) const DEFAULT_WEBHOOK_TIMEOUT: u64 = 5;

/// A rule as the configuration file and the API take and give it: `{"name", "sql",
/// "store": "telemetry" | true, "tsdb": true, "republish": {..} | [..], "webhook": {..} |
/// [..], "alarm": {..} | [..], "enabled"}`. The actions are kept as given (one or a list)
/// so that what was saved is given back unchanged; [`RuleSpec::check`] reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name (may be left out of `PUT /api/v1/rules/{name}`, which names it).
    #[serde(default)]
    pub name: String,
    /// `SELECT ... FROM 'filter' [WHERE ...]`.
    pub sql: String,
    /// Table to append rows to (`true` = `telemetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<Value>,
    /// Write the row as datapoints (`true`; see [`ActionConfig::Tsdb`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsdb: Option<Value>,
    /// One republish action (`{"topic", "payload", "qos", "retain"}`) or a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub republish: Option<Value>,
    /// One webhook action (`{"url", "headers", "timeout"}`) or a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<Value>,
    /// One alarm action or a list of them (`{"name", "raise", "clear", "severity", "topic",
    /// "source"}`; see [`crate::alarm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<Value>,
    /// Whether the rule runs (a disabled rule is kept, with its counts, and runs again once
    /// enabled).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// One problem of a [`RuleSpec`]: where (`at`: the action, like `republish`, or empty for
/// the rule itself; `key`: the key in there, or empty) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", location(at, key))]
pub struct SpecProblem {
    /// The action the key is in (`republish`, `webhook`, `alarm`), or empty.
    pub at: String,
    /// The key, or empty when the problem is the whole table.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn location(at: &str, key: &str) -> String {
    match (at.is_empty(), key.is_empty()) {
        (true, true) => String::new(),
        (true, false) => format!("{key}: "),
        (false, true) => format!("{at}: "),
        (false, false) => format!("{at}.{key}: "),
    }
}

impl SpecProblem {
    fn new(at: &str, key: &str, message: impl Into<String>) -> SpecProblem {
        SpecProblem {
            at: at.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The problems of one rule, every one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(.0))]
pub struct SpecProblems(pub Vec<SpecProblem>);

fn join(problems: &[SpecProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SpecProblems {
    /// Each problem as one line of text.
    pub fn lines(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// The name of a JSON value's type, in the words of the configuration file's errors.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "table",
    }
}

/// The field names of a struct deriving [`Deserialize`]: the keys it knows, taken from the
/// type itself so that no list of them is kept by hand (the configuration file's sections
/// read through serde use it too). Empty for a type that is not a plain struct.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Capture<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field names captured"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

/// "Did you mean": a known key within two edits of `key` (the configuration file's hints
/// use it too).
pub fn did_you_mean<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().copied().find(|k| edit_distance(k, key) <= 2)
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(usize::MAX)
}

fn unknown_key(at: &str, key: &str, known: &[&str]) -> SpecProblem {
    let hint = did_you_mean(key, known)
        .map(|k| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default();
    SpecProblem::new(at, key, format!("unknown key{hint}"))
}

/// The keys of one action table, read once each; what was never asked for is unknown.
struct Table<'v> {
    at: &'static str,
    map: &'v Map<String, Value>,
    asked: Vec<&'static str>,
}

impl<'v> Table<'v> {
    fn get(&mut self, key: &'static str) -> Option<&'v Value> {
        self.asked.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &'static str, problems: &mut Vec<SpecProblem>) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                problems.push(SpecProblem::new(
                    self.at,
                    key,
                    format!("must be a string (found {})", type_name(other)),
                ));
                None
            }
        }
    }

    fn int(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        problems: &mut Vec<SpecProblem>,
    ) -> Option<u64> {
        let v = self.get(key)?;
        match v.as_u64() {
            Some(i) if range.contains(&i) => Some(i),
            _ if v.is_number() => {
                problems.push(SpecProblem::new(
                    self.at,
                    key,
                    format!(
                        "must be between {} and {} (found {v})",
                        range.start(),
                        range.end()
                    ),
                ));
                None
            }
            _ => {
                problems.push(SpecProblem::new(
                    self.at,
                    key,
                    format!("must be an integer (found {})", type_name(v)),
                ));
                None
            }
        }
    }

    fn boolean(&mut self, key: &'static str, problems: &mut Vec<SpecProblem>) -> Option<bool> {
        let v = self.get(key)?;
        if v.as_bool().is_none() {
            problems.push(SpecProblem::new(
                self.at,
                key,
                format!("must be true or false (found {})", type_name(v)),
            ));
        }
        v.as_bool()
    }

    /// Every key present that was not asked for.
    fn unknown(&self, problems: &mut Vec<SpecProblem>) {
        for k in self.map.keys() {
            if !self.asked.contains(&k.as_str()) {
                problems.push(unknown_key(self.at, k, &self.asked));
            }
        }
    }
}

/// A table or a list of tables (`republish = {..}` or `republish = [{..}, {..}]`).
fn tables<'v>(at: &'static str, v: &'v Value, problems: &mut Vec<SpecProblem>) -> Vec<Table<'v>> {
    let one = |v: &'v Value, problems: &mut Vec<SpecProblem>| match v {
        Value::Object(map) => Some(Table {
            at,
            map,
            asked: Vec::new(),
        }),
        other => {
            problems.push(SpecProblem::new(
                at,
                "",
                format!(
                    "must be a table or an array of tables (found {})",
                    type_name(other)
                ),
            ));
            None
        }
    };
    match v {
        Value::Null => Vec::new(),
        Value::Array(list) => list.iter().filter_map(|v| one(v, problems)).collect(),
        other => one(other, problems).into_iter().collect(),
    }
}

impl RuleSpec {
    /// A rule from a table of the configuration file (or any JSON object): every problem of
    /// its keys at once (unknown ones with a "did you mean", missing and mistyped ones),
    /// then those of [`RuleSpec::check`].
    pub fn from_value(v: &Value) -> Result<RuleSpec, SpecProblems> {
        match RuleSpec::read(v) {
            (Some(spec), problems) if problems.is_empty() => Ok(spec),
            (_, problems) => Err(SpecProblems(problems)),
        }
    }

    /// [`RuleSpec::from_value`] that keeps what it could read: the rule (`None` without
    /// `sql`) and every problem, so that a configuration file's rule can still be checked
    /// further ([`crate::validate`]) and all its problems reported at once.
    pub fn read(v: &Value) -> (Option<RuleSpec>, Vec<SpecProblem>) {
        let Value::Object(map) = v else {
            let problem =
                SpecProblem::new("", "", format!("must be a table (found {})", type_name(v)));
            return (None, vec![problem]);
        };
        let known = field_names::<RuleSpec>();
        let mut problems: Vec<SpecProblem> = map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| unknown_key("", k, known))
            .collect();
        let string = |key: &str, problems: &mut Vec<SpecProblem>| match map.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(SpecProblem::new(
                    "",
                    key,
                    format!("must be a string (found {})", type_name(other)),
                ));
                None
            }
        };
        let name = string("name", &mut problems).unwrap_or_default();
        let sql = string("sql", &mut problems);
        if sql.is_none() && !map.contains_key("sql") {
            problems.push(SpecProblem::new(
                "",
                "sql",
                "missing: SELECT ... FROM 'topic/#' [WHERE ...]",
            ));
        }
        let enabled = match map.get("enabled") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(SpecProblem::new(
                    "",
                    "enabled",
                    format!("must be true or false (found {})", type_name(other)),
                ));
                true
            }
        };
        let Some(sql) = sql else {
            return (None, problems);
        };
        let action = |k: &str| map.get(k).cloned();
        let spec = RuleSpec {
            name,
            sql,
            store: action("store"),
            tsdb: action("tsdb"),
            republish: action("republish"),
            webhook: action("webhook"),
            alarm: action("alarm"),
            enabled,
        };
        let (_, more) = spec.check();
        problems.extend(more);
        (Some(spec), problems)
    }

    /// The rule's settings with every shape problem of its actions (types, unknown keys,
    /// missing ones, the limits: qos 0 to 2, a webhook's timeout 1 to 600 s, headers as
    /// strings). The settings hold the actions that were read without a problem, so that
    /// [`crate::validate`] can still report what is wrong beyond them (the SQL, templates,
    /// a rule left without any action).
    pub fn check(&self) -> (RuleConfig, Vec<SpecProblem>) {
        let mut problems = Vec::new();
        let mut actions = Vec::new();
        match &self.store {
            None | Some(Value::Bool(false) | Value::Null) => {}
            Some(Value::Bool(true)) => actions.push(ActionConfig::Store {
                table: midge_series::DEFAULT_TABLE.into(),
            }),
            Some(Value::String(t)) => actions.push(ActionConfig::Store { table: t.clone() }),
            Some(other) => problems.push(SpecProblem::new(
                "",
                "store",
                format!("must be a table name or true (found {})", type_name(other)),
            )),
        }
        match &self.tsdb {
            None | Some(Value::Bool(false) | Value::Null) => {}
            Some(Value::Bool(true)) => actions.push(ActionConfig::Tsdb),
            Some(other) => problems.push(SpecProblem::new(
                "",
                "tsdb",
                format!("must be true or false (found {})", type_name(other)),
            )),
        }
        let found = self
            .republish
            .iter()
            .flat_map(|v| tables("republish", v, &mut problems))
            .collect::<Vec<_>>();
        for mut t in found {
            let topic = t.string("topic", &mut problems);
            let payload = t.string("payload", &mut problems);
            let qos = t.int("qos", 0..=2, &mut problems).unwrap_or(0);
            let retain = t.boolean("retain", &mut problems).unwrap_or(false);
            t.unknown(&mut problems);
            let Some(topic) = topic else {
                if t.map.get("topic").is_none_or(Value::is_null) {
                    problems.push(SpecProblem::new("republish", "topic", "missing"));
                }
                continue;
            };
            actions.push(ActionConfig::Republish {
                topic,
                payload,
                qos: QoS::from_bits(qos as u8).unwrap_or(QoS::AtMostOnce),
                retain,
            });
        }
        let found = self
            .webhook
            .iter()
            .flat_map(|v| tables("webhook", v, &mut problems))
            .collect::<Vec<_>>();
        for mut t in found {
            let url = t.string("url", &mut problems);
            let timeout = t
                .int("timeout", 1..=MAX_WEBHOOK_TIMEOUT, &mut problems)
                .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
            let mut headers = Vec::new();
            match t.get("headers") {
                None => {}
                Some(Value::Object(h)) => {
                    for (k, v) in h {
                        match v {
                            Value::String(v) => headers.push((k.clone(), v.clone())),
                            other => problems.push(SpecProblem::new(
                                "webhook",
                                &format!("headers.{k}"),
                                format!("must be a string (found {})", type_name(other)),
                            )),
                        }
                    }
                }
                Some(other) => problems.push(SpecProblem::new(
                    "webhook",
                    "headers",
                    format!("must be a table of strings (found {})", type_name(other)),
                )),
            }
            t.unknown(&mut problems);
            let Some(url) = url else {
                if t.map.get("url").is_none_or(Value::is_null) {
                    problems.push(SpecProblem::new("webhook", "url", "missing"));
                }
                continue;
            };
            actions.push(ActionConfig::Webhook {
                url,
                headers,
                timeout: Duration::from_secs(timeout),
            });
        }
        let alarms = match &self.alarm {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            Some(other) => {
                problems.push(SpecProblem::new(
                    "alarm",
                    "",
                    format!(
                        "must be a table or an array of tables (found {})",
                        type_name(other)
                    ),
                ));
                Vec::new()
            }
        };
        for v in alarms {
            match crate::AlarmConfig::from_json(&v) {
                Ok(a) => actions.push(ActionConfig::Alarm(a)),
                Err(e) => problems.push(SpecProblem::new("alarm", "", e.to_string())),
            }
        }
        let config = RuleConfig {
            name: self.name.clone(),
            sql: self.sql.clone(),
            actions,
        };
        (config, problems)
    }

    /// The rule's settings, or every shape problem (not the SQL: [`crate::validate`] checks
    /// that).
    pub fn to_config(&self) -> Result<RuleConfig, SpecProblems> {
        match self.check() {
            (config, problems) if problems.is_empty() => Ok(config),
            (_, problems) => Err(SpecProblems(problems)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    #[test]
    fn the_keys_come_from_the_type() {
        assert_eq!(
            field_names::<RuleSpec>(),
            [
                "name",
                "sql",
                "store",
                "tsdb",
                "republish",
                "webhook",
                "alarm",
                "enabled"
            ]
        );
    }

    #[test]
    fn every_problem_of_a_rule_is_reported_with_its_key() {
        let e = RuleSpec::from_value(&json!({
            "name": "r",
            "sql": "SELECT * FROM 'x'",
            "stor": "t",
            "tsdb": "yes",
            "republish": [{"topik": "y"}, {"topic": "z", "qos": 3}],
            "webhook": {"url": "http://h/", "timeout": 0, "headers": {"a": 1}},
        }))
        .unwrap_err();
        assert_eq!(
            e.lines(),
            [
                "stor: unknown key (did you mean `store`?)",
                "tsdb: must be true or false (found string)",
                "republish.topik: unknown key (did you mean `topic`?)",
                "republish.topic: missing",
                "republish.qos: must be between 0 and 2 (found 3)",
                "webhook.timeout: must be between 1 and 600 (found 0)",
                "webhook.headers.a: must be a string (found integer)",
            ]
        );
        let e = RuleSpec::from_value(&json!({"name": 1})).unwrap_err();
        assert_eq!(
            e.lines(),
            [
                "name: must be a string (found integer)",
                "sql: missing: SELECT ... FROM 'topic/#' [WHERE ...]"
            ]
        );
    }

    #[test]
    fn a_good_rule_reads_the_same_from_json_and_through_serde() {
        let v = json!({
            "name": "r",
            "sql": "SELECT * FROM 'x'",
            "store": true,
            "republish": {"topic": "y/${topic}", "qos": 1},
            "webhook": [{"url": "http://h/", "headers": {"X-A": "b"}}],
        });
        let a = RuleSpec::from_value(&v).unwrap();
        let b: RuleSpec = serde_json::from_value(v).unwrap();
        assert_eq!(a, b);
        let c = a.to_config().unwrap();
        assert_eq!(
            c.actions,
            [
                ActionConfig::Store {
                    table: "telemetry".into()
                },
                ActionConfig::Republish {
                    topic: "y/${topic}".into(),
                    payload: None,
                    qos: QoS::AtLeastOnce,
                    retain: false
                },
                ActionConfig::Webhook {
                    url: "http://h/".into(),
                    headers: vec![("X-A".into(), "b".into())],
                    timeout: Duration::from_secs(DEFAULT_WEBHOOK_TIMEOUT)
                }
            ]
        );
    }
}
