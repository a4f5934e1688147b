//! `POST /v1/datapoint`: `{"datapoints":[...]}`, each datapoint one of
//!
//! ```text
//! {"metric","field","tags","timestamp","value","type"}     one point
//! {"metric","field","tags","values":[[ts,v],...],"type"}   several times of one series
//! {"metric","tags","timestamp","fields":{"f1":v1,...}}     several fields at one time
//! ```
//!
//! `field` defaults to `value`, a missing timestamp is now, a timestamp of 10 digits or
//! fewer is in seconds. `type` is `Long`, `Double`, `String` or `Bytes` (base64 text,
//! stored as given); without it the JSON value decides (whole number: Long). The batch is
//! all or none: when any point is wrong, nothing is stored and the answer (400) names the
//! datapoint's index in the request and why.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use midge_series::SeriesError;
use midge_series::points::{DEFAULT_FIELD, Datapoint, PointValue, Tags, timestamp_ms};
use serde_json::Value;

use super::{TsdbError, blocking, body, store};
use crate::api::AppState;

/// Reads `{"datapoints":[...]}` converting each datapoint as soon as it is parsed, so a
/// large batch is never held as a JSON tree (only as points); the first bad datapoint
/// is kept as the error and the rest of the body is only checked for syntax.
struct BodySeed {
    now: i64,
}

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed {
    type Value = Result<Batch, TsdbError>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed {
    type Value = Result<Batch, TsdbError>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object {\"datapoints\": [...]}")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "datapoints" {
                return Err(serde::de::Error::unknown_field(&key, &["datapoints"]));
            }
            if out.is_some() {
                return Err(serde::de::Error::duplicate_field("datapoints"));
            }
            out = Some(map.next_value_seed(PointsSeed { now: self.now })?);
        }
        out.ok_or_else(|| serde::de::Error::missing_field("datapoints"))
    }
}

struct PointsSeed {
    now: i64,
}

impl<'de> serde::de::DeserializeSeed<'de> for PointsSeed {
    type Value = Result<Batch, TsdbError>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PointsSeed {
    type Value = Result<Batch, TsdbError>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of datapoints")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut b = Batch {
            points: Vec::new(),
            origin: Vec::new(),
        };
        let mut i = 0;
        while let Some(v) = seq.next_element::<Value>()? {
            if let Err(e) = add(&mut b, i, &v, self.now) {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                return Ok(Err(e));
            }
            i += 1;
        }
        Ok(Ok(b))
    }
}

/// The points of one request, and for each the index of the datapoint it came from.
struct Batch {
    points: Vec<Datapoint>,
    origin: Vec<usize>,
}

/// Why one datapoint of a write is refused: the message of the 400 `InappropriateJSON`
/// answer, after `datapoint {i}: `.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum PointError {
    #[error("a datapoint must be an object (found {0})")]
    NotObject(Value),
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    #[error("{0} must be a string (found {1})")]
    NotString(&'static str, Value),
    #[error("metric is missing")]
    NoMetric,
    #[error("tag {0:?} must be a string (found {1})")]
    Tag(String, Value),
    #[error("tags must be an object (found {0})")]
    Tags(Value),
    #[error("give exactly one of value (with timestamp), values or fields")]
    NotExactlyOne,
    #[error("give timestamp with value, not with values")]
    TimestampWithValues,
    #[error("values must be a list of [timestamp, value] pairs")]
    ValuesNotList,
    #[error("values[{0}] must be a [timestamp, value] pair")]
    NotPair(usize),
    #[error("values[{0}]: {1}")]
    InValues(usize, ValueError),
    #[error("give field with value or values, not with fields")]
    FieldWithFields,
    #[error("fields must be an object of field name -> value")]
    FieldsNotObject,
    #[error("fields is empty")]
    NoFields,
    #[error("fields.{0}: {1}")]
    InFields(String, ValueError),
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// Why a timestamp or value is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum ValueError {
    #[error("timestamp must be a whole number (found {0})")]
    Timestamp(Value),
    #[error("value {0} is out of range")]
    OutOfRange(serde_json::Number),
    #[error("value must be a number or a string (found {0})")]
    NotNumberOrString(Value),
    /// The value does not fit the point's `type`: the type and what it needs.
    #[error("type {0} needs {1} (found {2})")]
    NotOfType(&'static str, &'static str, Box<Value>),
    #[error("unknown type {0:?} (expected Long, Double, String or Bytes)")]
    UnknownType(String),
}

fn string<'a>(
    o: &'a serde_json::Map<String, Value>,
    key: &'static str,
) -> Result<Option<&'a str>, PointError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(PointError::NotString(key, other.clone())),
    }
}

fn timestamp(v: &Value, now: i64) -> Result<i64, ValueError> {
    match v {
        Value::Null => Ok(now),
        Value::Number(n) => n
            .as_i64()
            .map(timestamp_ms)
            .ok_or_else(|| ValueError::Timestamp(v.clone())),
        other => Err(ValueError::Timestamp(other.clone())),
    }
}

fn value(v: &Value, kind: Option<&str>) -> Result<PointValue, ValueError> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        _ => None,
    };
    let needs = |kind, what| ValueError::NotOfType(kind, what, Box::new(v.clone()));
    match kind {
        None => match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(PointValue::Long(i)),
                None => number(v)
                    .map(PointValue::Double)
                    .ok_or_else(|| ValueError::OutOfRange(n.clone())),
            },
            Value::String(s) => Ok(PointValue::Text(s.clone())),
            other => Err(ValueError::NotNumberOrString(other.clone())),
        },
        Some("Long") => v
            .as_i64()
            .map(PointValue::Long)
            .ok_or_else(|| needs("Long", "a whole number")),
        Some("Double") => number(v)
            .map(PointValue::Double)
            .ok_or_else(|| needs("Double", "a number")),
        Some("String") => match v {
            Value::String(s) => Ok(PointValue::Text(s.clone())),
            _ => Err(needs("String", "a string")),
        },
        Some("Bytes") => match v {
            Value::String(s) if base64::engine::general_purpose::STANDARD.decode(s).is_ok() => {
                Ok(PointValue::Text(s.clone()))
            }
            _ => Err(needs("Bytes", "base64 text")),
        },
        Some(t) => Err(ValueError::UnknownType(t.to_owned())),
    }
}

fn tags(o: &serde_json::Map<String, Value>) -> Result<Tags, PointError> {
    let mut out = Tags::new();
    match o.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(PointError::Tag(k.clone(), other.clone())),
                };
                out.insert(k.clone(), text);
            }
        }
        Some(other) => return Err(PointError::Tags(other.clone())),
    }
    Ok(out)
}

/// Adds the points of datapoint `v` to `out`.
fn datapoint(v: &Value, now: i64, out: &mut Vec<Datapoint>) -> Result<(), PointError> {
    let Value::Object(o) = v else {
        return Err(PointError::NotObject(v.clone()));
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "metric" | "field" | "tags" | "timestamp" | "value" | "values" | "fields" | "type"
        ) {
            return Err(PointError::UnknownKey(k.clone()));
        }
    }
    let metric = string(o, "metric")?
        .filter(|m| !m.is_empty())
        .ok_or(PointError::NoMetric)?
        .to_owned();
    let field = string(o, "field")?.unwrap_or(DEFAULT_FIELD).to_owned();
    let kind = string(o, "type")?;
    let tags = tags(o)?;
    let point = |field: String, timestamp: i64, value: PointValue| Datapoint {
        metric: metric.clone(),
        field,
        tags: tags.clone(),
        timestamp,
        value,
    };
    let given = ["value", "values", "fields"]
        .iter()
        .filter(|k| o.get(**k).is_some_and(|v| !v.is_null()))
        .count();
    if given != 1 {
        return Err(PointError::NotExactlyOne);
    }
    if let Some(v) = o.get("value").filter(|v| !v.is_null()) {
        let ts = timestamp(o.get("timestamp").unwrap_or(&Value::Null), now)?;
        out.push(point(field, ts, value(v, kind)?));
    } else if let Some(values) = o.get("values").filter(|v| !v.is_null()) {
        if o.get("timestamp").is_some_and(|t| !t.is_null()) {
            return Err(PointError::TimestampWithValues);
        }
        let Value::Array(rows) = values else {
            return Err(PointError::ValuesNotList);
        };
        for (j, row) in rows.iter().enumerate() {
            match row.as_array().map(Vec::as_slice) {
                Some([ts, v]) => {
                    let ts = timestamp(ts, now).map_err(|e| PointError::InValues(j, e))?;
                    let v = value(v, kind).map_err(|e| PointError::InValues(j, e))?;
                    out.push(point(field.clone(), ts, v));
                }
                _ => return Err(PointError::NotPair(j)),
            }
        }
    } else if let Some(fields) = o.get("fields").filter(|v| !v.is_null()) {
        if o.contains_key("field") {
            return Err(PointError::FieldWithFields);
        }
        let Value::Object(fields) = fields else {
            return Err(PointError::FieldsNotObject);
        };
        if fields.is_empty() {
            return Err(PointError::NoFields);
        }
        let ts = timestamp(o.get("timestamp").unwrap_or(&Value::Null), now)?;
        for (name, v) in fields {
            let v = value(v, kind).map_err(|e| PointError::InFields(name.clone(), e))?;
            out.push(point(name.clone(), ts, v));
        }
    }
    Ok(())
}

/// Adds datapoint `i` of the request to `b`.
fn add(b: &mut Batch, i: usize, v: &Value, now: i64) -> Result<(), TsdbError> {
    datapoint(v, now, &mut b.points).map_err(|reason| {
        TsdbError::inappropriate(format!(
            "datapoint {i}: {reason} (nothing of the batch was stored)"
        ))
    })?;
    b.origin.resize(b.points.len(), i);
    Ok(())
}

#[cfg(test)]
fn batch(datapoints: &[Value], now: i64) -> Result<Batch, TsdbError> {
    let mut b = Batch {
        points: Vec::new(),
        origin: Vec::new(),
    };
    for (i, v) in datapoints.iter().enumerate() {
        add(&mut b, i, v, now)?;
    }
    Ok(b)
}

pub(crate) async fn handler(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
) -> Result<Response, TsdbError> {
    let store = store(&state)?;
    let bytes = body::read(req, body::MAX_WRITE_BYTES).await?;
    let seed = BodySeed {
        now: crate::time::now_ms(),
    };
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    let parsed = serde::de::DeserializeSeed::deserialize(seed, &mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| TsdbError::malformed(format!("bad JSON body: {e}")))?;
    drop(bytes);
    let Batch { points, origin } = parsed?;
    blocking(store, move |s| {
        s.write_points(&points).map_err(|e| match e {
            // the index in the request, not in the expanded points
            SeriesError::InvalidPoint { index, reason } => SeriesError::InvalidPoint {
                index: origin.get(index).copied().unwrap_or(index),
                reason: format!("{reason} (nothing of the batch was stored)"),
            },
            other => other,
        })
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_forms_expand_to_points() {
        let d = vec![
            json!({"metric":"m","tags":{"h":"a"},"timestamp":1_700_000_000,"value":1}),
            json!({"metric":"m","field":"f","values":[[1_700_000_000_123i64, 2.5],[1_700_000_001, 3]]}),
            json!({"metric":"m","timestamp":5,"fields":{"x":1,"y":"s"}}),
        ];
        let b = batch(&d, 42).unwrap();
        assert_eq!(b.points.len(), 5);
        assert_eq!(b.origin, vec![0, 1, 1, 2, 2]);
        assert_eq!(b.points[0].timestamp, 1_700_000_000_000);
        assert_eq!(b.points[0].field, DEFAULT_FIELD);
        assert_eq!(b.points[1].value, PointValue::Double(2.5));
        assert_eq!(b.points[2].value, PointValue::Long(3));
        assert_eq!(b.points[3].timestamp, 5000);
        assert_eq!(b.points[4].value, PointValue::Text("s".into()));
        let now = batch(&[json!({"metric":"m","value":1})], 42).unwrap();
        assert_eq!(now.points[0].timestamp, 42);
    }

    fn read(text: &str) -> Result<Result<Batch, TsdbError>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let r = serde::de::DeserializeSeed::deserialize(BodySeed { now: 7 }, &mut de)?;
        de.end().map(|()| r)
    }

    #[test]
    fn the_body_is_converted_point_by_point() {
        let b = read(
            r#"{"datapoints":[{"metric":"m","value":1},{"metric":"m","values":[[1,2],[3,4]]}]}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(b.origin, vec![0, 1, 1]);
        assert_eq!(b.points[0].timestamp, 7);
        // the first bad point is the answer, and the rest is still checked for syntax
        let e = read(r#"{"datapoints":[{"metric":"m","value":1},{"value":1},{"x":[1,2]}]}"#)
            .unwrap()
            .err()
            .unwrap();
        assert!(
            e.message.starts_with("datapoint 1: metric is missing"),
            "{}",
            e.message
        );
        assert!(read(r#"{"datapoints":[{"value":1},{"x":"#).is_err());
        assert!(read(r#"{"datapoints":[],"other":1}"#).is_err());
        assert!(read(r#"{}"#).is_err());
        assert!(read(r#"{"datapoints":[]} x"#).is_err());
    }

    #[test]
    fn bad_points_name_their_index() {
        for (bad, why) in [
            (json!({"value":1}), "metric is missing"),
            (json!({"metric":"m","value":1.5,"type":"Long"}), "type Long"),
            (
                json!({"metric":"m","value":"x","type":"Nope"}),
                "unknown type",
            ),
            (json!({"metric":"m"}), "exactly one"),
            (json!({"metric":"m","value":1,"values":[]}), "exactly one"),
            (json!({"metric":"m","values":[[1]]}), "values[0]"),
            (json!({"metric":"m","value":1,"tags":[]}), "tags must be"),
            (json!({"metric":"m","value":1,"timestamp":"x"}), "timestamp"),
            (json!({"metric":"m","value":1,"extra":1}), "unknown key"),
        ] {
            let d = vec![json!({"metric":"ok","value":1}), bad];
            let e = batch(&d, 0).err().unwrap();
            assert!(e.message.starts_with("datapoint 1: "), "{}", e.message);
            assert!(e.message.contains(why), "{why}: {}", e.message);
        }
    }
}
