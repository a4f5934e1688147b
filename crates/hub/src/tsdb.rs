//! The `tsdb` action: a rule's output turned into datapoints, with the convention of hosted
//! IoT rule engines' TSDB destinations.
//!
//! - `metric` (a string, required) names the metric.
//! - `value` (a number, or a string holding one such as `"31.5"`) is the value of the field
//!   `value`. Without `value` (absent or null), every column holding a JSON number becomes a
//!   field of that name (several fields at the same time); then at least one is needed.
//! - `timestamp` (optional; a number or numeric string): 10 digits or fewer are seconds,
//!   more are ms ([`midge_series::points::timestamp_ms`]); a fraction of a second is kept to
//!   the ms. Without it (absent or null) the point has the message's time: when the broker
//!   accepted it, which a redelivered message keeps, so the point is written once.
//! - Every other column is a tag: strings as they are, numbers (in `value` mode) and booleans
//!   as their text. Nulls, empty strings, objects and arrays are left out.
//!
//! An output the convention cannot turn into points is a failure of the rule, with the
//! reason. The points are checked here with the series store's own check
//! ([`midge_series::points::check`]) so that a bad point never enters a batch, where it
//! would make `write_points` refuse the whole batch.

use midge_series::points::{DEFAULT_FIELD, Datapoint, PointValue, Tags, timestamp_ms};
use serde_json::{Map, Number, Value};

/// Why a rule's row makes no datapoints (counted as a failure of the rule).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PointsError {
    #[error("no `metric` column (the metric's name)")]
    NoMetric,
    #[error("`metric` must be a string, found {0}")]
    MetricType(&'static str),
    #[error("`timestamp` must be a number of seconds or ms since the epoch, found {0}")]
    Timestamp(String),
    #[error("`value` must be a number, found {0}")]
    Value(String),
    #[error("column {column:?}: {number} is not a finite number")]
    NotFinite { column: String, number: String },
    #[error("no numeric value: give a `value` column or at least one number column")]
    NoNumber,
    /// The store would refuse the point (a name too long, an empty tag key, ...).
    #[error("{0}")]
    Invalid(String),
}

/// The points for one output row of a rule; `message_ms` is the message's time (ms since
/// the Unix epoch), used when the row has no `timestamp`. `Err` says why there are none.
pub(crate) fn points(
    row: &Map<String, Value>,
    message_ms: i64,
) -> Result<Vec<Datapoint>, PointsError> {
    let metric = match row.get("metric") {
        Some(Value::String(m)) => m.clone(),
        None | Some(Value::Null) => return Err(PointsError::NoMetric),
        Some(other) => return Err(PointsError::MetricType(type_name(other))),
    };
    let timestamp = match row.get("timestamp") {
        None | Some(Value::Null) => message_ms,
        Some(v) => timestamp_of(v).ok_or_else(|| PointsError::Timestamp(shown(v)))?,
    };
    let single = row.get("value").filter(|v| !v.is_null());
    let mut fields: Vec<(String, PointValue)> = Vec::new();
    let mut tags = Tags::new();
    if let Some(v) = single {
        let value = number(v).ok_or_else(|| PointsError::Value(shown(v)))?;
        fields.push((DEFAULT_FIELD.to_string(), value));
    }
    for (k, v) in row {
        if matches!(k.as_str(), "metric" | "timestamp") || (single.is_some() && k == "value") {
            continue;
        }
        match v {
            Value::Number(n) if single.is_none() => {
                let value = from_number(n).ok_or_else(|| PointsError::NotFinite {
                    column: k.clone(),
                    number: n.to_string(),
                })?;
                fields.push((k.clone(), value));
            }
            Value::Number(n) => {
                tags.insert(k.clone(), n.to_string());
            }
            Value::String(s) if !s.is_empty() => {
                tags.insert(k.clone(), s.clone());
            }
            Value::Bool(b) => {
                tags.insert(k.clone(), b.to_string());
            }
            // nulls, empty strings, objects and arrays are no tags
            _ => {}
        }
    }
    if fields.is_empty() {
        return Err(PointsError::NoNumber);
    }
    fields
        .into_iter()
        .map(|(field, value)| {
            let p = Datapoint {
                metric: metric.clone(),
                field,
                tags: tags.clone(),
                timestamp,
                value,
            };
            midge_series::points::check(&p)
                .map(|()| p)
                .map_err(|e| PointsError::Invalid(e.to_string()))
        })
        .collect()
}

/// A JSON number as a point value: whole numbers stay whole, others must be finite.
fn from_number(n: &Number) -> Option<PointValue> {
    if let Some(i) = n.as_i64() {
        return Some(PointValue::Long(i));
    }
    n.as_f64().filter(|f| f.is_finite()).map(PointValue::Double)
}

/// A number, or a string holding one (`"31.5"`, `" 7 "`).
fn number(v: &Value) -> Option<PointValue> {
    match v {
        Value::Number(n) => from_number(n),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(PointValue::Long(i))
            } else {
                // Rust also parses "NaN" and "inf": only finite numbers count
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(PointValue::Double)
            }
        }
        _ => None,
    }
}

/// A `timestamp` column in ms: 10 digits or fewer are seconds, more are ms.
fn timestamp_of(v: &Value) -> Option<i64> {
    match number(v)? {
        PointValue::Long(i) => Some(timestamp_ms(i)),
        PointValue::Double(f) => {
            let ms = if f.abs() < 10_000_000_000.0 {
                f * 1000.0
            } else {
                f
            };
            let ms = ms.round();
            // within i64 (a float cast saturates, but say so rather than store a wrong time)
            #[allow(clippy::cast_possible_truncation)]
            (ms.abs() < 9.0e18).then_some(ms as i64)
        }
        PointValue::Text(_) => None,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value for an error message: short ones as JSON, long ones by their type.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= 64 {
        text
    } else {
        type_name(v).to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use serde_json::json;

    fn row(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    const NOW: i64 = 1_765_000_000_123;

    #[test]
    fn the_hosted_example_gives_one_point_with_its_tags() {
        let out = row(json!({
            "metric": "report", "value": 32, "timestamp": 1511995554,
            "id": "70:00:83:24:38:85", "machine": "arm", "os": "linux",
            "categories": "data", "type": "temperature"
        }));
        assert_eq!(
            points(&out, NOW),
            Ok(vec![Datapoint {
                metric: "report".into(),
                field: "value".into(),
                tags: tags(&[
                    ("categories", "data"),
                    ("id", "70:00:83:24:38:85"),
                    ("machine", "arm"),
                    ("os", "linux"),
                    ("type", "temperature"),
                ]),
                timestamp: 1_511_995_554_000,
                value: PointValue::Long(32),
            }])
        );
    }

    #[test]
    fn value_may_be_a_numeric_string_and_numbers_and_booleans_become_tag_text() {
        let out = row(json!({"metric": "m", "value": "31.5", "n": 7, "f": 1.5, "ok": true}));
        let p = points(&out, NOW).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].value, PointValue::Double(31.5));
        assert_eq!(p[0].tags, tags(&[("f", "1.5"), ("n", "7"), ("ok", "true")]));
        assert_eq!(
            p[0].timestamp, NOW,
            "no timestamp column: the message's time"
        );
    }

    #[test]
    fn without_value_each_number_column_is_a_field() {
        let out = row(json!({
            "metric": "env", "temp": 21.5, "hum": 40, "room": "kitchen", "code": "12",
            "timestamp": 1_765_000_000_000_i64
        }));
        let p = points(&out, NOW).unwrap();
        let got: Vec<(&str, &PointValue)> =
            p.iter().map(|p| (p.field.as_str(), &p.value)).collect();
        assert_eq!(
            got,
            [
                ("temp", &PointValue::Double(21.5)),
                ("hum", &PointValue::Long(40))
            ]
        );
        for point in &p {
            // numeric strings stay tags when fields are the number columns
            assert_eq!(point.tags, tags(&[("code", "12"), ("room", "kitchen")]));
            assert_eq!(point.timestamp, 1_765_000_000_000, "13 digits: ms");
        }
    }

    #[test]
    fn timestamps_in_seconds_ms_fractions_and_strings() {
        let ts = |v: Value| {
            points(
                &row(json!({"metric": "m", "value": 1, "timestamp": v})),
                NOW,
            )
            .map(|p| p[0].timestamp)
        };
        assert_eq!(ts(json!(1_511_995_554)), Ok(1_511_995_554_000));
        assert_eq!(ts(json!(9_999_999_999_i64)), Ok(9_999_999_999_000));
        assert_eq!(ts(json!(10_000_000_000_i64)), Ok(10_000_000_000));
        assert_eq!(ts(json!(1_511_995_554.25)), Ok(1_511_995_554_250));
        assert_eq!(ts(json!("1511995554")), Ok(1_511_995_554_000));
        assert_eq!(ts(json!(null)), Ok(NOW));
        assert!(
            ts(json!("yesterday"))
                .unwrap_err()
                .to_string()
                .contains("`timestamp`")
        );
        assert!(ts(json!(true)).is_err());
    }

    #[test]
    fn nulls_empty_strings_objects_and_arrays_are_not_tags() {
        let out = row(json!({
            "metric": "m", "value": 1, "z": null, "e": "", "o": {"a": 1}, "a": [1], "t": "x"
        }));
        assert_eq!(points(&out, NOW).unwrap()[0].tags, tags(&[("t", "x")]));
    }

    #[test]
    fn outputs_that_make_no_point_say_why() {
        let cases = [
            (json!({"value": 1}), "no `metric`"),
            (
                json!({"metric": 5, "value": 1}),
                "`metric` must be a string",
            ),
            (json!({"metric": "", "value": 1}), "metric is empty"),
            (
                json!({"metric": "m", "value": "abc"}),
                "`value` must be a number",
            ),
            (
                json!({"metric": "m", "value": "NaN"}),
                "`value` must be a number",
            ),
            (
                json!({"metric": "m", "value": {"x": 1}}),
                "`value` must be a number",
            ),
            (json!({"metric": "m", "room": "k"}), "no numeric value"),
            (json!({"metric": "m\u{1}", "value": 1}), "control character"),
            (
                json!({"metric": "m", "value": 1, "": "x"}),
                "tag key is empty",
            ),
        ];
        for (out, want) in cases {
            let got = points(&row(out.clone()), NOW);
            assert!(
                matches!(&got, Err(e) if e.to_string().contains(want)),
                "{out}: {got:?}, wanted {want:?}"
            );
        }
        let long = "k".repeat(256);
        let got = points(&row(json!({"metric": "m", "value": 1, long: "x"})), NOW);
        assert!(
            matches!(&got, Err(e) if e.to_string().contains("256 bytes")),
            "{got:?}"
        );
    }
}
