//! One MQTT message as the rule language sees it: payload columns plus metadata.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::value::Val;

/// The message a rule is applied to. The payload is borrowed; nothing is copied until the
/// rule's output is built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Input<'a> {
    /// The topic it was published to.
    pub topic: &'a str,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The publishing client's identifier.
    pub client_id: &'a str,
    /// The user name the publisher logged in with, if any.
    pub username: Option<&'a str>,
    /// The QoS it was published with (0, 1 or 2).
    pub qos: u8,
    /// Whether the retain flag was set.
    pub retain: bool,
    /// When the broker received it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Message metadata reachable by name (`topic`) or function (`topic()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Meta {
    /// The whole topic.
    Topic,
    /// The client identifier.
    ClientId,
    /// The user name (NULL when anonymous).
    Username,
    /// The QoS.
    Qos,
    /// The retain flag.
    Retain,
    /// Milliseconds since the epoch.
    Timestamp,
    /// The raw payload as text (base64 when not UTF-8).
    Payload,
}

impl Meta {
    /// The metadata a reserved column name stands for (case-insensitive).
    pub(crate) fn from_name(name: &str) -> Option<Meta> {
        const NAMES: [(&str, Meta); 7] = [
            ("topic", Meta::Topic),
            ("clientid", Meta::ClientId),
            ("username", Meta::Username),
            ("qos", Meta::Qos),
            ("retain", Meta::Retain),
            ("timestamp", Meta::Timestamp),
            ("payload", Meta::Payload),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, m)| *m)
    }
}

/// The payload's columns.
#[derive(Debug)]
enum Body {
    /// The rule never looks at payload columns: the payload was not parsed.
    Skipped,
    /// A JSON object: its fields.
    Object(Map<String, Value>),
    /// A JSON scalar or array: the column `value`.
    Scalar(Value),
    /// Not JSON: the column `payload` (text, or base64 when not UTF-8).
    Text(Value),
}

/// The column name of a JSON scalar or array payload.
pub(crate) const SCALAR_COLUMN: &str = "value";
/// The column name of a payload that is not JSON.
pub(crate) const TEXT_COLUMN: &str = "payload";

/// Beside the `payload` column of `*`, says `"base64"` when the payload was not UTF-8 (so
/// a stored row tells a binary payload from text that happens to look like base64).
pub(crate) const ENCODING_COLUMN: &str = "payload_encoding";

/// A message being evaluated: metadata borrowed from the [`Input`], the payload parsed once.
#[derive(Debug)]
pub(crate) struct Message<'i> {
    input: Input<'i>,
    /// The payload as text, when it is UTF-8.
    text: Option<&'i str>,
    body: Body,
}

impl<'i> Message<'i> {
    /// Parse the payload (when `parse_body`) once for every lookup that follows.
    pub(crate) fn new(input: &Input<'i>, parse_body: bool) -> Message<'i> {
        let text = std::str::from_utf8(input.payload).ok();
        let body = if !parse_body {
            Body::Skipped
        } else {
            match text.map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(map))) => Body::Object(map),
                Some(Ok(other)) => Body::Scalar(other),
                Some(Err(_)) => Body::Text(Value::String(text.unwrap_or_default().to_owned())),
                None => Body::Text(Value::String(base64_of(input.payload))),
            }
        };
        Message {
            input: *input,
            text,
            body,
        }
    }

    /// A payload column.
    pub(crate) fn column(&self, name: &str) -> Option<&Value> {
        match &self.body {
            Body::Skipped => None,
            Body::Object(map) => map.get(name),
            Body::Scalar(v) => (name == SCALAR_COLUMN).then_some(v),
            Body::Text(v) => (name == TEXT_COLUMN).then_some(v),
        }
    }

    /// The parsed JSON payload itself (`payload.a` walks it), when the payload is JSON.
    pub(crate) fn json_root(&self) -> Option<JsonRoot<'_>> {
        match &self.body {
            Body::Object(map) => Some(JsonRoot::Object(map)),
            Body::Scalar(v) => Some(JsonRoot::Value(v)),
            Body::Skipped | Body::Text(_) => None,
        }
    }

    /// A metadata value.
    pub(crate) fn meta(&self, m: Meta) -> Val<'_> {
        let i = &self.input;
        match m {
            Meta::Topic => Val::Str(Cow::Borrowed(i.topic)),
            Meta::ClientId => Val::Str(Cow::Borrowed(i.client_id)),
            Meta::Username => i.username.map_or(Val::Null, |u| Val::Str(Cow::Borrowed(u))),
            Meta::Qos => Val::Int(i64::from(i.qos)),
            Meta::Retain => Val::Bool(i.retain),
            Meta::Timestamp => Val::Int(i.timestamp_ms),
            Meta::Payload => match self.text {
                Some(t) => Val::Str(Cow::Borrowed(t)),
                None => Val::Str(Cow::Owned(base64_of(i.payload))),
            },
        }
    }

    /// The `n`-th topic level, 1-based.
    pub(crate) fn topic_level(&self, n: i64) -> Val<'_> {
        let Some(index) = n.checked_sub(1).and_then(|i| usize::try_from(i).ok()) else {
            return Val::Undefined;
        };
        self.input
            .topic
            .split('/')
            .nth(index)
            .map_or(Val::Undefined, |l| Val::Str(Cow::Borrowed(l)))
    }

    /// All payload columns, moved out (for `SELECT *`).
    pub(crate) fn take_columns(&mut self) -> Map<String, Value> {
        match std::mem::replace(&mut self.body, Body::Skipped) {
            Body::Skipped => Map::new(),
            Body::Object(map) => map,
            Body::Scalar(v) => Map::from_iter([(SCALAR_COLUMN.to_owned(), v)]),
            Body::Text(v) if self.text.is_none() => Map::from_iter([
                (TEXT_COLUMN.to_owned(), v),
                (ENCODING_COLUMN.to_owned(), Value::from("base64")),
            ]),
            Body::Text(v) => Map::from_iter([(TEXT_COLUMN.to_owned(), v)]),
        }
    }
}

/// Where `payload.x` starts walking.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JsonRoot<'a> {
    /// An object payload.
    Object(&'a Map<String, Value>),
    /// A scalar or array payload.
    Value(&'a Value),
}

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(payload: &[u8]) -> Input<'_> {
        Input {
            topic: "a/b/c",
            payload,
            client_id: "dev1",
            ..Input::default()
        }
    }

    #[test]
    fn object_payload_fields_are_columns() {
        let m = Message::new(&input(br#"{"temp": 31.5}"#), true);
        assert_eq!(m.column("temp"), Some(&serde_json::json!(31.5)));
        assert_eq!(m.column("value"), None);
    }

    #[test]
    fn scalar_payload_is_the_value_column() {
        let mut m = Message::new(&input(b"15"), true);
        assert_eq!(m.column("value"), Some(&serde_json::json!(15)));
        assert_eq!(
            m.take_columns(),
            serde_json::json!({"value": 15})
                .as_object()
                .cloned()
                .unwrap_or_default()
        );
    }

    #[test]
    fn text_payload_is_the_payload_column() {
        let m = Message::new(&input(b"on"), true);
        assert_eq!(m.column("payload"), Some(&serde_json::json!("on")));
        assert_eq!(m.meta(Meta::Payload), Val::Str(Cow::Borrowed("on")));
    }

    #[test]
    fn binary_payload_is_base64() {
        let m = Message::new(&input(&[0xff, 0x00, 0x01]), true);
        assert_eq!(m.column("payload"), Some(&serde_json::json!("/wAB")));
        assert_eq!(m.meta(Meta::Payload), Val::Str(Cow::Owned("/wAB".into())));
    }

    #[test]
    fn unparsed_body_has_no_columns_but_keeps_metadata() {
        let m = Message::new(&input(br#"{"temp": 1}"#), false);
        assert_eq!(m.column("temp"), None);
        assert_eq!(
            m.meta(Meta::Payload),
            Val::Str(Cow::Borrowed(r#"{"temp": 1}"#))
        );
    }

    #[test]
    fn topic_levels_are_one_based() {
        let m = Message::new(&input(b""), false);
        assert_eq!(m.topic_level(1), Val::Str(Cow::Borrowed("a")));
        assert_eq!(m.topic_level(3), Val::Str(Cow::Borrowed("c")));
        assert_eq!(m.topic_level(4), Val::Undefined);
        assert_eq!(m.topic_level(0), Val::Undefined);
        assert_eq!(m.topic_level(i64::MIN), Val::Undefined);
    }

    #[test]
    fn reserved_names_are_case_insensitive() {
        assert_eq!(Meta::from_name("ClientId"), Some(Meta::ClientId));
        assert_eq!(Meta::from_name("temp"), None);
    }
}
