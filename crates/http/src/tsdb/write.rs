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

fn string<'a>(o: &'a serde_json::Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!("{key} must be a string (found {other})")),
    }
}

fn timestamp(v: &Value, now: i64) -> Result<i64, String> {
    match v {
        Value::Null => Ok(now),
        Value::Number(n) => n
            .as_i64()
            .map(timestamp_ms)
            .ok_or_else(|| format!("timestamp must be a whole number (found {n})")),
        other => Err(format!("timestamp must be a whole number (found {other})")),
    }
}

fn value(v: &Value, kind: Option<&str>) -> Result<PointValue, String> {
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        _ => None,
    };
    match kind {
        None => match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(PointValue::Long(i)),
                None => number(v)
                    .map(PointValue::Double)
                    .ok_or_else(|| format!("value {n} is out of range")),
            },
            Value::String(s) => Ok(PointValue::Text(s.clone())),
            other => Err(format!(
                "value must be a number or a string (found {other})"
            )),
        },
        Some("Long") => match v {
            Value::Number(n) => n
                .as_i64()
                .map(PointValue::Long)
                .ok_or_else(|| format!("type Long needs a whole number (found {n})")),
            other => Err(format!("type Long needs a whole number (found {other})")),
        },
        Some("Double") => number(v)
            .map(PointValue::Double)
            .ok_or_else(|| format!("type Double needs a number (found {v})")),
        Some("String") => match v {
            Value::String(s) => Ok(PointValue::Text(s.clone())),
            other => Err(format!("type String needs a string (found {other})")),
        },
        Some("Bytes") => match v {
            Value::String(s) if base64::engine::general_purpose::STANDARD.decode(s).is_ok() => {
                Ok(PointValue::Text(s.clone()))
            }
            other => Err(format!("type Bytes needs base64 text (found {other})")),
        },
        Some(t) => Err(format!(
            "unknown type {t:?} (expected Long, Double, String or Bytes)"
        )),
    }
}

fn tags(o: &serde_json::Map<String, Value>) -> Result<Tags, String> {
    let mut out = Tags::new();
    match o.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(format!("tag {k:?} must be a string (found {other})")),
                };
                out.insert(k.clone(), text);
            }
        }
        Some(other) => return Err(format!("tags must be an object (found {other})")),
    }
    Ok(out)
}

/// Adds the points of datapoint `v` to `out`.
fn datapoint(v: &Value, now: i64, out: &mut Vec<Datapoint>) -> Result<(), String> {
    let Value::Object(o) = v else {
        return Err(format!("a datapoint must be an object (found {v})"));
    };
    for k in o.keys() {
        if !matches!(
            k.as_str(),
            "metric" | "field" | "tags" | "timestamp" | "value" | "values" | "fields" | "type"
        ) {
            return Err(format!("unknown key {k:?}"));
        }
    }
    let metric = string(o, "metric")?
        .filter(|m| !m.is_empty())
        .ok_or("metric is missing")?
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
        return Err("give exactly one of value (with timestamp), values or fields".into());
    }
    if let Some(v) = o.get("value").filter(|v| !v.is_null()) {
        let ts = timestamp(o.get("timestamp").unwrap_or(&Value::Null), now)?;
        out.push(point(field, ts, value(v, kind)?));
    } else if let Some(values) = o.get("values").filter(|v| !v.is_null()) {
        if o.get("timestamp").is_some_and(|t| !t.is_null()) {
            return Err("give timestamp with value, not with values".into());
        }
        let Value::Array(rows) = values else {
            return Err("values must be a list of [timestamp, value] pairs".into());
        };
        for (j, row) in rows.iter().enumerate() {
            match row.as_array().map(Vec::as_slice) {
                Some([ts, v]) => {
                    let ts = timestamp(ts, now).map_err(|e| format!("values[{j}]: {e}"))?;
                    let v = value(v, kind).map_err(|e| format!("values[{j}]: {e}"))?;
                    out.push(point(field.clone(), ts, v));
                }
                _ => return Err(format!("values[{j}] must be a [timestamp, value] pair")),
            }
        }
    } else if let Some(fields) = o.get("fields").filter(|v| !v.is_null()) {
        if o.contains_key("field") {
            return Err("give field with value or values, not with fields".into());
        }
        let Value::Object(fields) = fields else {
            return Err("fields must be an object of field name -> value".into());
        };
        if fields.is_empty() {
            return Err("fields is empty".into());
        }
        let ts = timestamp(o.get("timestamp").unwrap_or(&Value::Null), now)?;
        for (name, v) in fields {
            let v = value(v, kind).map_err(|e| format!("fields.{name}: {e}"))?;
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
    match blocking(store, move |s| {
        s.write_points(&points).map_err(|e| match e {
            SeriesError::InvalidPoint { index, reason } => SeriesError::InvalidPoint {
                index: origin.get(index).copied().unwrap_or(index),
                reason,
            },
            other => other,
        })
    })
    .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(mut e) => {
            if e.code == "InappropriateJSON" {
                e.message.push_str(" (nothing of the batch was stored)");
            }
            Err(e)
        }
    }
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
