//! Alarms: a rule's `alarm` action raises and clears a named alarm per source (the message's
//! topic or client id) with a threshold and hysteresis, as the hosted hubs' alarm rules do
//! (ThingsBoard: a create condition, a clear condition, a severity; one active alarm per
//! originator and type).
//!
//! ```toml
//! [[rule]]
//! name = "boiler"
//! sql = "SELECT temp FROM 'boiler/+'"
//! alarm = { name = "boiler-hot", raise = "temp > 80", clear = "temp < 75", severity = "major" }
//! ```
//!
//! For each (alarm name, source) there is a state machine: *cleared* → *active* when a row
//! meets `raise`; *active* → *cleared* when a row meets `clear` (without `clear`: when
//! `raise` is false). Between the two (75..80 above) nothing changes: the hysteresis band
//! that keeps a value hovering at the threshold from raising and clearing at every reading.
//! A condition that cannot be decided (a field missing) changes nothing either.
//!
//! Every raise and clear is published as JSON (the alarm record plus `"event": "raised" |
//! "cleared" | "acknowledged"`) to `topic`, by default `alarms/${name}` (a normal topic, so a
//! `#` subscriber sees it; `${source}`, `${severity}`, `${status}` may be used too). The
//! alarms and their history are kept in `<state dir>/alarms.json` and survive a restart.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tracing::warn;

/// File (in the state folder) holding the alarms and their history.
pub const ALARMS_FILE: &str = "alarms.json";

/// Where raise and clear are published unless the alarm says otherwise.
pub const DEFAULT_ALARM_TOPIC: &str = "alarms/${name}";

/// Severities, most severe first (ThingsBoard's).
pub const SEVERITIES: [&str; 5] = ["critical", "major", "minor", "warning", "indeterminate"];

/// Cleared alarms kept in the history (the oldest go first).
const HISTORY_MAX: usize = 1000;

/// What an alarm is raised for: each source has its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlarmSource {
    /// The message's topic (`boiler/1`).
    #[default]
    Topic,
    /// The publishing client's id (the device).
    Clientid,
}

/// Why an alarm's definition is refused (each problem names the alarm).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlarmConfigError {
    /// A name that is empty, too long or holds other characters.
    #[error("alarm name {0:?} must be 1 to 64 letters, digits, '-', '_' or '.'")]
    Name(String),
    /// A severity that is not one of [`SEVERITIES`].
    #[error("alarm {name:?}: severity {severity:?} must be one of {}", SEVERITIES.join(", "))]
    Severity {
        /// The alarm.
        name: String,
        /// The severity given.
        severity: String,
    },
    /// `raise` is not a condition.
    #[error("alarm {name:?}: raise: {problem}")]
    Raise {
        /// The alarm.
        name: String,
        /// Why.
        problem: ConditionError,
    },
    /// `clear` is not a condition.
    #[error("alarm {name:?}: clear: {problem}")]
    Clear {
        /// The alarm.
        name: String,
        /// Why.
        problem: ConditionError,
    },
    /// `topic` cannot make a topic name.
    #[error("alarm {name:?}: topic {topic:?}: {problem}")]
    Topic {
        /// The alarm.
        name: String,
        /// The topic template.
        topic: String,
        /// Why.
        problem: crate::TemplateError,
    },
}

/// Why an alarm's `raise` or `clear` is not a condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    /// Nothing but spaces.
    #[error("empty condition")]
    Empty,
    /// A `;` or a comment: more than one expression.
    #[error("a condition is one expression (no ';' or comments)")]
    NotOneExpression,
    /// Not an expression of the rules' language.
    #[error(transparent)]
    Invalid(#[from] midge_rules::RuleError),
}

/// A rule's `alarm` action as configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmConfig {
    /// The alarm's name (its type): letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The condition that raises it, in the rules' expression language, over the rule's row.
    pub raise: String,
    /// The condition that clears it (without one: `raise` is false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
    /// `critical`, `major` (default), `minor`, `warning` or `indeterminate`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Topic template for the raise and clear messages (default [`DEFAULT_ALARM_TOPIC`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// What the alarm is kept per: `topic` (default) or `clientid`.
    #[serde(default)]
    pub source: AlarmSource,
}

fn default_severity() -> String {
    "major".into()
}

impl AlarmConfig {
    /// From the API's or the configuration file's JSON form (the severity in lower case);
    /// the error names the key (`unknown field `level``, `missing field `name``). Whether
    /// the conditions, name and topic are good is checked when the rule is validated.
    pub fn from_json(v: &Value) -> Result<AlarmConfig, serde_json::Error> {
        let mut a = serde_json::from_value::<AlarmConfig>(v.clone())?;
        a.severity = a.severity.to_ascii_lowercase();
        Ok(a)
    }

    /// One line for the API and logs.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "alarm {} ({}): raise {}",
            self.name, self.severity, self.raise
        );
        if let Some(c) = &self.clear {
            s.push_str(&format!(", clear {c}"));
        }
        s
    }

    /// Check everything that can be checked before a message arrives.
    pub(crate) fn compile(&self) -> Result<CompiledAlarm, Vec<AlarmConfigError>> {
        let mut problems = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let name = || self.name.clone();
        if !name_ok {
            problems.push(AlarmConfigError::Name(name()));
        }
        if !SEVERITIES.contains(&self.severity.as_str()) {
            problems.push(AlarmConfigError::Severity {
                name: name(),
                severity: self.severity.clone(),
            });
        }
        let raise = condition(&self.raise)
            .map_err(|problem| {
                problems.push(AlarmConfigError::Raise {
                    name: name(),
                    problem,
                });
            })
            .ok();
        let clear = match &self.clear {
            None => None,
            Some(c) => condition(c)
                .map_err(|problem| {
                    problems.push(AlarmConfigError::Clear {
                        name: name(),
                        problem,
                    });
                })
                .ok(),
        };
        let topic = self.topic.as_deref().unwrap_or(DEFAULT_ALARM_TOPIC);
        if let Err(problem) = check_topic(topic) {
            problems.push(AlarmConfigError::Topic {
                name: name(),
                topic: topic.to_owned(),
                problem,
            });
        }
        match raise {
            Some(raise) if problems.is_empty() => Ok(CompiledAlarm {
                config: self.clone(),
                raise,
                clear,
                field: first_field(&self.raise),
            }),
            _ => Err(problems),
        }
    }
}

/// A condition as a rule over the row: `SELECT 1 AS hit FROM '#' WHERE <condition>`.
fn condition(text: &str) -> Result<midge_rules::Rule, ConditionError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ConditionError::Empty);
    }
    if text.contains(';') || text.contains("--") || text.contains("/*") {
        return Err(ConditionError::NotOneExpression);
    }
    Ok(midge_rules::Rule::parse(&format!(
        "SELECT 1 AS hit FROM '#' WHERE {text}"
    ))?)
}

const TOPIC_NAMES: [&str; 4] = ["name", "source", "severity", "status"];

fn check_topic(template: &str) -> Result<(), crate::TemplateError> {
    use crate::TemplateError;
    let mut sample = template.to_string();
    let mut rest = template;
    while let Some((_, after)) = rest.split_once("${") {
        let Some((var, tail)) = after.split_once('}') else {
            return Err(TemplateError::Unclosed(template.to_owned()));
        };
        if !TOPIC_NAMES.contains(&var.trim()) {
            return Err(TemplateError::NotAnAlarmName(var.to_owned()));
        }
        rest = tail;
    }
    for n in TOPIC_NAMES {
        sample = sample.replace(&format!("${{{n}}}"), "x");
    }
    if let Some(c) = sample.chars().find(|c| matches!(c, '#' | '+' | '\0')) {
        return Err(TemplateError::Wildcard(c));
    }
    midge_client::codec::TopicName::new(sample)?;
    Ok(())
}

/// The first word of `raise` that looks like a field: its value is the alarm's `value`.
fn first_field(raise: &str) -> Option<String> {
    raise
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .find(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && !matches!(
                    w.to_ascii_uppercase().as_str(),
                    "AND" | "OR" | "NOT" | "IS" | "NULL" | "TRUE" | "FALSE" | "IN" | "LIKE"
                )
        })
        .map(str::to_owned)
}

/// An alarm action ready to run.
#[derive(Debug)]
pub(crate) struct CompiledAlarm {
    pub(crate) config: AlarmConfig,
    raise: midge_rules::Rule,
    clear: Option<midge_rules::Rule>,
    field: Option<String>,
}

/// `Some(true|false)`, or `None` when the condition cannot be decided for this row.
fn eval(
    rule: &midge_rules::Rule,
    row: &Map<String, Value>,
    client_id: &str,
    ts: i64,
) -> Option<bool> {
    let payload = Value::Object(row.clone()).to_string();
    let input = midge_rules::Input {
        topic: "row",
        payload: payload.as_bytes(),
        client_id,
        username: None,
        qos: 0,
        retain: false,
        timestamp_ms: ts,
    };
    match rule.test(&input) {
        Ok(_) => Some(true),
        Err(midge_rules::NoMatch::ConditionFalse) => Some(false),
        Err(_) => None,
    }
}

/// Active or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmStatus {
    /// Raised and not cleared.
    Active,
    /// Cleared (by its rule or by hand).
    Cleared,
}

/// One alarm: from its raise to its clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// Unique, increasing.
    pub id: u64,
    /// The alarm's name.
    pub name: String,
    /// The topic or client id it was raised for.
    pub source: String,
    /// The rule that raised it.
    pub rule: String,
    /// Its severity.
    pub severity: String,
    /// Active or cleared.
    pub status: AlarmStatus,
    /// When it was raised (ms since the epoch).
    pub raised_at: i64,
    /// The value that raised it (the first field `raise` reads), if any.
    pub value: Option<Value>,
    /// The row that raised it.
    pub row: Value,
    /// When it was cleared.
    #[serde(default)]
    pub cleared_at: Option<i64>,
    /// `rule` or `api` (by hand).
    #[serde(default)]
    pub cleared_by: Option<String>,
    /// The value that cleared it.
    #[serde(default)]
    pub clear_value: Option<Value>,
    /// Acknowledged by someone.
    #[serde(default)]
    pub acknowledged: bool,
    /// When.
    #[serde(default)]
    pub acknowledged_at: Option<i64>,
    /// How many times this name and source has been raised, this one included.
    pub count: u64,
    /// Where its raise and clear are published.
    pub topic: String,
}

impl AlarmRecord {
    fn message(&self, event: &str) -> (String, Bytes) {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.insert("event".into(), json!(event));
        }
        (self.topic.clone(), Bytes::from(v.to_string()))
    }
}

/// Why an alarm could not be acknowledged or cleared.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// No alarm has that id.
    #[error("no alarm with id {0}")]
    NotFound(u64),
    /// It is cleared already.
    #[error("alarm {0} is cleared already")]
    Cleared(u64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    next_id: u64,
    /// Times each `name\nsource` was raised.
    #[serde(default)]
    counts: BTreeMap<String, u64>,
    /// Active alarms and the history, oldest first.
    #[serde(default)]
    alarms: VecDeque<AlarmRecord>,
}

#[derive(Debug, Default)]
struct Inner {
    saved: Saved,
    /// Messages for the hub to publish (raised and cleared through the API).
    outbox: Vec<(String, Bytes)>,
    /// Changed since the last save.
    dirty: bool,
}

/// Every alarm, active and past; shared by the hub (which raises and clears them) and the
/// HTTP API. Kept in [`ALARMS_FILE`] when there is a state folder.
#[derive(Debug)]
pub struct Alarms {
    inner: Mutex<Inner>,
    dir: Option<PathBuf>,
    /// The hub publishes the outbox when woken.
    pub(crate) wake: Notify,
    /// The saver saves when woken.
    changed: Notify,
}

impl Alarms {
    /// Load the saved alarms (none without a folder or file; an unreadable file is reported
    /// and kept aside as `alarms.json.bad`).
    pub fn open(dir: Option<&Path>) -> Arc<Alarms> {
        let mut saved = Saved {
            next_id: 1,
            ..Saved::default()
        };
        if let Some(dir) = dir {
            let path = dir.join(ALARMS_FILE);
            if let Ok(b) = std::fs::read(&path) {
                match serde_json::from_slice::<Saved>(&b) {
                    Ok(s) => saved = s,
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "saved alarms unreadable; starting without them");
                        let _ = std::fs::rename(&path, dir.join(format!("{ALARMS_FILE}.bad")));
                    }
                }
            }
        }
        saved.next_id = saved
            .next_id
            .max(saved.alarms.iter().map(|a| a.id + 1).max().unwrap_or(1));
        Arc::new(Alarms {
            inner: Mutex::new(Inner {
                saved,
                ..Inner::default()
            }),
            dir: dir.map(Path::to_path_buf),
            wake: Notify::new(),
            changed: Notify::new(),
        })
    }

    /// Save in the background shortly after every change (call once, inside a runtime; abort
    /// the task to stop it, then [`Alarms::save`] what is left).
    pub fn start_saver(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        self.dir.as_ref()?;
        let me = self.clone();
        Some(tokio::spawn(async move {
            loop {
                me.changed.notified().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                me.save().await;
            }
        }))
    }

    /// Save now if anything changed.
    pub async fn save(&self) {
        let Some(dir) = self.dir.clone() else { return };
        let text = {
            let Ok(mut inner) = self.inner.lock() else {
                return;
            };
            if !inner.dirty {
                return;
            }
            inner.dirty = false;
            serde_json::to_vec_pretty(&inner.saved).unwrap_or_default()
        };
        let write = tokio::task::spawn_blocking(move || {
            crate::service::write_atomically(&dir, ALARMS_FILE, &text)
        });
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(error = %e, "cannot save the alarms");
                if let Ok(mut inner) = self.inner.lock() {
                    inner.dirty = true;
                }
            }
            Err(e) => warn!(error = %e, "saving the alarms failed"),
        }
    }

    fn changed(&self, inner: &mut Inner) {
        inner.dirty = true;
        self.changed.notify_one();
    }

    /// Run an alarm action on a rule's row: the message to publish if it raised or cleared.
    pub(crate) fn evaluate(
        &self,
        alarm: &CompiledAlarm,
        rule: &str,
        row: &Map<String, Value>,
        topic: &str,
        client_id: &str,
        ts: i64,
    ) -> Option<(String, Bytes)> {
        let a = &alarm.config;
        let source = match a.source {
            AlarmSource::Clientid if !client_id.is_empty() => client_id,
            _ => topic,
        };
        let mut inner = self.inner.lock().ok()?;
        let active = inner.saved.alarms.iter().rposition(|r| {
            r.status == AlarmStatus::Active && r.name == a.name && r.source == source
        });
        let value = alarm.field.as_deref().and_then(|f| row.get(f).cloned());
        match active {
            None => {
                if eval(&alarm.raise, row, client_id, ts) != Some(true) {
                    return None;
                }
                let key = format!("{}\n{source}", a.name);
                let count = {
                    let c = inner.saved.counts.entry(key).or_insert(0);
                    *c += 1;
                    *c
                };
                let id = inner.saved.next_id;
                inner.saved.next_id += 1;
                let record = AlarmRecord {
                    id,
                    name: a.name.clone(),
                    source: source.to_owned(),
                    rule: rule.to_owned(),
                    severity: a.severity.clone(),
                    status: AlarmStatus::Active,
                    raised_at: ts,
                    value,
                    row: Value::Object(row.clone()),
                    cleared_at: None,
                    cleared_by: None,
                    clear_value: None,
                    acknowledged: false,
                    acknowledged_at: None,
                    count,
                    topic: render_topic(
                        a.topic.as_deref().unwrap_or(DEFAULT_ALARM_TOPIC),
                        &a.name,
                        source,
                        &a.severity,
                        "active",
                    ),
                };
                let msg = record.message("raised");
                inner.saved.alarms.push_back(record);
                trim(&mut inner.saved.alarms);
                self.changed(&mut inner);
                Some(msg)
            }
            Some(i) => {
                let clear = match &alarm.clear {
                    Some(c) => eval(c, row, client_id, ts) == Some(true),
                    None => eval(&alarm.raise, row, client_id, ts) == Some(false),
                };
                if !clear {
                    return None;
                }
                let r = inner.saved.alarms.get_mut(i)?;
                r.status = AlarmStatus::Cleared;
                r.cleared_at = Some(ts);
                r.cleared_by = Some("rule".into());
                r.clear_value = value;
                r.topic = render_topic(
                    a.topic.as_deref().unwrap_or(DEFAULT_ALARM_TOPIC),
                    &r.name,
                    &r.source,
                    &r.severity,
                    "cleared",
                );
                let msg = r.message("cleared");
                self.changed(&mut inner);
                Some(msg)
            }
        }
    }

    /// Active alarms, most severe then newest first.
    pub fn active(&self) -> Vec<AlarmRecord> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut v: Vec<AlarmRecord> = inner
            .saved
            .alarms
            .iter()
            .filter(|r| r.status == AlarmStatus::Active)
            .cloned()
            .collect();
        let rank = |s: &str| {
            SEVERITIES
                .iter()
                .position(|x| *x == s)
                .unwrap_or(SEVERITIES.len())
        };
        v.sort_by(|a, b| {
            rank(&a.severity)
                .cmp(&rank(&b.severity))
                .then(b.raised_at.cmp(&a.raised_at))
                .then(b.id.cmp(&a.id))
        });
        v
    }

    /// Every alarm, active and cleared, newest first, at most `limit`; and whether there
    /// were more.
    pub fn history(&self, limit: usize) -> (Vec<AlarmRecord>, bool) {
        let Ok(inner) = self.inner.lock() else {
            return (Vec::new(), false);
        };
        let all = &inner.saved.alarms;
        let v = all.iter().rev().take(limit).cloned().collect();
        (v, all.len() > limit)
    }

    /// One alarm by id.
    pub fn get(&self, id: u64) -> Option<AlarmRecord> {
        let inner = self.inner.lock().ok()?;
        inner.saved.alarms.iter().find(|r| r.id == id).cloned()
    }

    /// Acknowledge an alarm (active or cleared): published as `"event": "acknowledged"`.
    pub fn ack(&self, id: u64, now: i64) -> Result<AlarmRecord, AlarmError> {
        let mut inner = self.inner.lock().map_err(|_| AlarmError::NotFound(id))?;
        let r = inner
            .saved
            .alarms
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(AlarmError::NotFound(id))?;
        if r.acknowledged {
            return Ok(r.clone());
        }
        r.acknowledged = true;
        r.acknowledged_at = Some(now);
        let record = r.clone();
        inner.outbox.push(record.message("acknowledged"));
        self.changed(&mut inner);
        drop(inner);
        self.wake.notify_one();
        Ok(record)
    }

    /// Clear an active alarm by hand: published as a clear.
    pub fn clear(&self, id: u64, now: i64) -> Result<AlarmRecord, AlarmError> {
        let mut inner = self.inner.lock().map_err(|_| AlarmError::NotFound(id))?;
        let r = inner
            .saved
            .alarms
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(AlarmError::NotFound(id))?;
        if r.status == AlarmStatus::Cleared {
            return Err(AlarmError::Cleared(id));
        }
        r.status = AlarmStatus::Cleared;
        r.cleared_at = Some(now);
        r.cleared_by = Some("api".into());
        let record = r.clone();
        inner.outbox.push(record.message("cleared"));
        self.changed(&mut inner);
        drop(inner);
        self.wake.notify_one();
        Ok(record)
    }

    /// The messages the API's changes left for the hub to publish.
    pub(crate) fn take_outbox(&self) -> Vec<(String, Bytes)> {
        self.inner
            .lock()
            .map(|mut i| std::mem::take(&mut i.outbox))
            .unwrap_or_default()
    }
}

/// Keep every active alarm and the newest [`HISTORY_MAX`] cleared ones.
fn trim(alarms: &mut VecDeque<AlarmRecord>) {
    let cleared = alarms
        .iter()
        .filter(|r| r.status == AlarmStatus::Cleared)
        .count();
    let mut extra = cleared.saturating_sub(HISTORY_MAX);
    if extra == 0 {
        return;
    }
    alarms.retain(|r| {
        if extra > 0 && r.status == AlarmStatus::Cleared {
            extra -= 1;
            false
        } else {
            true
        }
    });
}

/// The topic of an alarm's messages: `+`, `#` and NUL of the source become `_`.
fn render_topic(template: &str, name: &str, source: &str, severity: &str, status: &str) -> String {
    let source: String = source
        .chars()
        .map(|c| {
            if matches!(c, '+' | '#' | '\0') {
                '_'
            } else {
                c
            }
        })
        .collect();
    template
        .replace("${name}", name)
        .replace("${source}", &source)
        .replace("${severity}", severity)
        .replace("${status}", status)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn alarm() -> CompiledAlarm {
        AlarmConfig::from_json(
            &json!({"name": "boiler-hot", "raise": "temp > 80", "clear": "temp < 75"}),
        )
        .unwrap()
        .compile()
        .unwrap()
    }

    fn row(t: f64) -> Map<String, Value> {
        json!({ "temp": t }).as_object().unwrap().clone()
    }

    #[test]
    fn hysteresis_per_source() {
        let book = Alarms::open(None);
        let a = alarm();
        let ev = |t: f64, src: &str| book.evaluate(&a, "r", &row(t), src, "c", 1).map(|m| m.0);
        assert_eq!(ev(79.0, "b/1"), None);
        assert_eq!(ev(81.0, "b/1").as_deref(), Some("alarms/boiler-hot"));
        assert_eq!(ev(82.0, "b/1"), None, "already active");
        assert_eq!(ev(78.0, "b/1"), None, "in the band");
        assert_eq!(book.active().len(), 1);
        assert_eq!(ev(50.0, "b/2"), None, "another source is independent");
        assert_eq!(ev(74.0, "b/1").as_deref(), Some("alarms/boiler-hot"));
        assert!(book.active().is_empty());
        let (h, _) = book.history(10);
        assert_eq!(h[0].status, AlarmStatus::Cleared);
        assert_eq!(h[0].value, Some(json!(81.0)));
        assert_eq!(h[0].clear_value, Some(json!(74.0)));
    }

    #[test]
    fn bad_definitions_are_refused() {
        let bad = |v: Value| match AlarmConfig::from_json(&v) {
            Err(e) => e.to_string(),
            Ok(a) => a
                .compile()
                .unwrap_err()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        };
        assert!(bad(json!({"name": "x", "raise": "temp >"})).contains("raise"));
        assert!(
            bad(json!({"name": "x", "raise": "t > 1", "severity": "huge"})).contains("severity")
        );
        assert!(bad(json!({"name": "a b", "raise": "t > 1"})).contains("alarm name"));
        assert!(bad(json!({"name": "x", "raise": "t > 1", "topic": "a/#"})).contains("topic"));
        assert!(bad(json!({"name": "x", "raise": "t > 1", "topic": "a/${nope}"})).contains("nope"));
        assert!(bad(json!({"name": "x", "raise": "t > 1", "colour": 1})).contains("colour"));
    }
}
