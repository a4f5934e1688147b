//! `PUT /v1/datapoint?query` (and `GET /v1/datapoint?query=<json>`, the SDK's pre-signed
//! URLs): `{"queries":[...]}`, each query over one metric, answered in order.
//!
//! ```text
//! {"metric", "field" | "fields":[...], "tags":[...],
//!  "filters": {"start", "end", "tags": {"k": ["v1"]}, "value": ">= 10"},
//!  "groupBy": [{"name": "Tag", "tags": ["k"]}],
//!  "aggregators": [{"name": "Avg", "sampling": "10 minutes"}],
//!  "limit", "order": "Asc" | "Desc", "marker"}
//! ```
//!
//! Times are ms or s since the epoch (10 digits or fewer: s), `"now"`, or relative:
//! `"2 hours ago"` (units millisecond, second, minute, hour, day, week; singular or
//! plural). Samplings are durations in the same words: `"10 minutes"`. Aggregators as
//! the API spells them: Avg, Dev, Count, First, Last, Max, Min, Sum, Percentile (its
//! `factor`, 0-100), Diff, Div (its `divisor`), Multiply (its `factor`), Rate (per
//! `timeUnit`, or per `sampling`, default per second), LeastSquares.

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use midge_series::points::{
    Aggregator, AggregatorKind, CompareOp, PointOrder, PointQuery, PointResult, PointValue,
    ValueFilter, timestamp_ms,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{TsdbError, blocking, body, params, store};
use crate::MAX_BODY_BYTES;
use crate::api::{AppState, json_response};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    queries: Vec<Query>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Query {
    metric: String,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    fields: Option<Vec<String>>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    filters: Filters,
    #[serde(default)]
    group_by: Vec<GroupBy>,
    #[serde(default)]
    aggregators: Vec<Agg>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filters {
    start: Value,
    #[serde(default)]
    end: Option<Value>,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupBy {
    name: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Agg {
    name: String,
    #[serde(default)]
    sampling: Option<String>,
    #[serde(default)]
    factor: Option<f64>,
    #[serde(default)]
    percentile: Option<f64>,
    #[serde(default)]
    divisor: Option<f64>,
    #[serde(default)]
    time_unit: Option<String>,
}

/// ms in one `unit` (singular or plural, any case).
fn unit_ms(unit: &str) -> Option<i64> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "millisecond" | "milliseconds" | "ms" => 1,
        "second" | "seconds" | "sec" | "secs" | "s" => 1_000,
        "minute" | "minutes" | "min" | "mins" => 60_000,
        "hour" | "hours" | "h" => 3_600_000,
        "day" | "days" | "d" => 86_400_000,
        "week" | "weeks" | "w" => 604_800_000,
        _ => return None,
    })
}

/// Why a duration (`"10 minutes"`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// Not a whole number and a known unit.
    #[error(
        "bad duration {0:?}: expected a whole number and a unit (millisecond, second, \
         minute, hour, day, week), like \"10 minutes\""
    )]
    Bad(String),
    /// Zero (or less).
    #[error("duration {0:?} must be more than zero")]
    NotPositive(String),
    /// More than about 100 years.
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

/// Why a query time is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TimeError {
    /// A number that is not a whole number (of s or ms).
    #[error("bad time {0}: expected a whole number of s or ms")]
    NotWhole(serde_json::Number),
    /// Text of none of the accepted forms.
    #[error(
        "bad time {0:?}: expected ms or s since the epoch, \"now\" or a relative time like \
         \"2 hours ago\""
    )]
    Unknown(String),
    /// `"<duration> ago"` with a bad duration.
    #[error("bad time {0:?}: {1}")]
    Ago(String, DurationError),
    /// Neither a number nor text.
    #[error("bad time {0}: expected a number or a string")]
    NotNumberOrText(Value),
}

/// Why a query (or one of its parts) is refused: the message of the 400
/// `InappropriateJSON` answer, after `query {i}: `.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("metric is missing")]
    NoMetric,
    #[error("give field or fields, not both")]
    FieldAndFields,
    #[error("fields is empty")]
    NoFields,
    #[error("filters.start: {0}")]
    Start(TimeError),
    #[error("filters.end: {0}")]
    End(TimeError),
    #[error("filters.end is before filters.start")]
    EndBeforeStart,
    #[error("groupBy {0:?} is not supported (midge groups by Tag only)")]
    GroupBy(String),
    #[error("groupBy Tag needs tags")]
    GroupByNoTags,
    #[error("order must be Asc or Desc")]
    Order,
    #[error("limit must be more than 0 (found {0})")]
    Limit(i64),
    #[error("bad value filter {0:?}: expected an operator (>, >=, <, <=, =, !=) and a value")]
    FilterOperator(String),
    #[error("bad value filter {0:?}: no value after the operator")]
    FilterValue(String),
    #[error(
        "unknown aggregator {0:?} (expected Avg, Dev, Count, First, Last, Max, Min, Sum, \
         Percentile, Diff, Div, Multiply, Rate or LeastSquares)"
    )]
    UnknownAggregator(String),
    #[error("aggregator {0}: sampling: {1}")]
    Sampling(String, DurationError),
    #[error("aggregator {0} needs a number {1}")]
    AggregatorNeeds(String, &'static str),
    #[error("aggregator Percentile: factor {0} is not between 0 and 100")]
    Percentile(f64),
    #[error("aggregator Div: divisor must not be 0")]
    DivByZero,
    #[error(
        "aggregator Rate: unknown timeUnit {0:?} (expected millisecond, second, minute, hour, \
         day or week)"
    )]
    TimeUnit(String),
}

/// `"10 minutes"` (a whole number and a unit) in ms.
pub(crate) fn duration_ms(s: &str) -> Result<i64, DurationError> {
    let bad = || DurationError::Bad(s.to_owned());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| bad())?;
    let per = unit_ms(unit).ok_or_else(bad)?;
    if n <= 0 {
        return Err(DurationError::NotPositive(s.to_owned()));
    }
    n.checked_mul(per)
        .filter(|ms| *ms <= 100 * 366 * 86_400_000)
        .ok_or_else(|| DurationError::TooLong(s.to_owned()))
}

/// A query time: a number (s or ms), `"now"`, `"<n> <unit> ago"`, or a number as text.
pub(crate) fn time_ms(v: &Value, now: i64) -> Result<i64, TimeError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(timestamp_ms)
            .ok_or_else(|| TimeError::NotWhole(n.clone())),
        Value::String(s) => {
            let t = s.trim();
            if t.eq_ignore_ascii_case("now") {
                return Ok(now);
            }
            if let Ok(n) = t.parse::<i64>() {
                return Ok(timestamp_ms(n));
            }
            let rel = t
                .strip_suffix("ago")
                .filter(|r| r.ends_with(char::is_whitespace))
                .ok_or_else(|| TimeError::Unknown(s.clone()))?;
            let ms = duration_ms(rel).map_err(|e| TimeError::Ago(s.clone(), e))?;
            Ok(now.saturating_sub(ms))
        }
        other => Err(TimeError::NotNumberOrText(other.clone())),
    }
}

/// `">= 10"`, `"= on"`, `"!= 'a b'"`.
fn value_filter(s: &str) -> Result<ValueFilter, QueryError> {
    let t = s.trim();
    let (op, rest) = [
        (">=", CompareOp::Ge),
        ("<=", CompareOp::Le),
        ("!=", CompareOp::Ne),
        ("<>", CompareOp::Ne),
        ("==", CompareOp::Eq),
        ("=", CompareOp::Eq),
        (">", CompareOp::Gt),
        ("<", CompareOp::Lt),
    ]
    .iter()
    .find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r.trim())))
    .ok_or_else(|| QueryError::FilterOperator(s.to_owned()))?;
    if rest.is_empty() {
        return Err(QueryError::FilterValue(s.to_owned()));
    }
    let value = if let Ok(i) = rest.parse::<i64>() {
        PointValue::Long(i)
    } else if let Ok(f) = rest
        .parse::<f64>()
        .map_err(|_| ())
        .and_then(|f| if f.is_finite() { Ok(f) } else { Err(()) })
    {
        PointValue::Double(f)
    } else {
        let unquoted = rest
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
            .unwrap_or(rest);
        PointValue::Text(unquoted.to_owned())
    };
    Ok(ValueFilter { op, value })
}

fn aggregator(a: &Agg) -> Result<Aggregator, QueryError> {
    use AggregatorKind as K;
    let kind = match a.name.to_ascii_lowercase().as_str() {
        "avg" => K::Avg,
        "dev" => K::Dev,
        "count" => K::Count,
        "first" => K::First,
        "last" => K::Last,
        "max" => K::Max,
        "min" => K::Min,
        "sum" => K::Sum,
        "percentile" => K::Percentile,
        "diff" => K::Diff,
        "div" => K::Div,
        "multiply" => K::Multiply,
        "rate" => K::Rate,
        "leastsquares" => K::LeastSquares,
        _ => return Err(QueryError::UnknownAggregator(a.name.clone())),
    };
    let mut sampling_ms = a
        .sampling
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map(duration_ms)
        .transpose()
        .map_err(|e| QueryError::Sampling(a.name.clone(), e))?;
    let need = |what: &'static str, v: Option<f64>| {
        v.filter(|f| f.is_finite())
            .ok_or_else(|| QueryError::AggregatorNeeds(a.name.clone(), what))
    };
    let param = match kind {
        K::Percentile => {
            let p = need("factor (the percentile, 0-100)", a.factor.or(a.percentile))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(QueryError::Percentile(p));
            }
            Some(p)
        }
        K::Div => {
            let d = need("divisor", a.divisor)?;
            if d == 0.0 {
                return Err(QueryError::DivByZero);
            }
            Some(d)
        }
        K::Multiply => Some(need("factor", a.factor)?),
        K::Rate => {
            if let Some(u) = a.time_unit.as_deref() {
                sampling_ms = Some(unit_ms(u).ok_or_else(|| QueryError::TimeUnit(u.to_owned()))?);
            }
            None
        }
        _ => None,
    };
    Ok(Aggregator {
        kind,
        sampling_ms,
        param,
    })
}

/// The store's query for one query of the request.
fn point_query(q: Query, now: i64) -> Result<(PointQuery, bool), QueryError> {
    if q.metric.is_empty() {
        return Err(QueryError::NoMetric);
    }
    let multi = q.fields.is_some();
    let fields = match (q.field, q.fields) {
        (Some(_), Some(_)) => return Err(QueryError::FieldAndFields),
        (Some(f), None) => vec![f],
        (None, Some(f)) if f.is_empty() => return Err(QueryError::NoFields),
        (None, Some(f)) => f,
        (None, None) => Vec::new(),
    };
    let start = time_ms(&q.filters.start, now).map_err(QueryError::Start)?;
    let end = match &q.filters.end {
        None | Some(Value::Null) => now,
        Some(v) => time_ms(v, now).map_err(QueryError::End)?,
    };
    if end < start {
        return Err(QueryError::EndBeforeStart);
    }
    let mut group_by = Vec::new();
    for g in q.group_by {
        if !g.name.eq_ignore_ascii_case("tag") {
            return Err(QueryError::GroupBy(g.name));
        }
        if g.tags.is_empty() {
            return Err(QueryError::GroupByNoTags);
        }
        group_by.extend(g.tags);
    }
    let aggregators = q
        .aggregators
        .iter()
        .map(aggregator)
        .collect::<Result<Vec<_>, _>>()?;
    let order = match q.order.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => PointOrder::Asc,
        Some("desc") => PointOrder::Desc,
        Some(_) => return Err(QueryError::Order),
    };
    let limit = match q.limit {
        None => None,
        Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        Some(n) => return Err(QueryError::Limit(n)),
    };
    let value_filter = q.filters.value.as_deref().map(value_filter).transpose()?;
    Ok((
        PointQuery {
            metric: q.metric,
            fields,
            tags: q.tags.unwrap_or_default(),
            start,
            end,
            tag_filter: q.filters.tags,
            value_filter,
            group_by,
            aggregators,
            limit,
            order,
            marker: q.marker.filter(|m| !m.is_empty()),
        },
        multi,
    ))
}

/// One result as the API answers it.
fn result_json(r: PointResult, multi: bool, grouped: bool, tags: &[String]) -> Value {
    let groups: Vec<Value> = r
        .groups
        .into_iter()
        .map(|g| {
            let infos = if grouped {
                json!([{ "name": "Tag", "tags": g.tags }])
            } else {
                json!([])
            };
            let values: Vec<Value> = g
                .values
                .into_iter()
                .map(|row| {
                    let mut out = Vec::with_capacity(1 + row.values.len() + row.tags.len());
                    out.push(Value::from(row.timestamp));
                    out.extend(
                        row.values
                            .into_iter()
                            .map(|v| v.map_or(Value::Null, |v| v.to_json())),
                    );
                    out.extend(
                        row.tags
                            .into_iter()
                            .map(|t| t.map_or(Value::Null, Value::String)),
                    );
                    Value::Array(out)
                })
                .collect();
            json!({ "groupInfos": infos, "values": values })
        })
        .collect();
    let mut o = serde_json::Map::new();
    o.insert("metric".into(), Value::String(r.metric));
    if multi {
        o.insert("fields".into(), json!(r.fields));
    } else {
        let field = r
            .fields
            .into_iter()
            .next()
            .unwrap_or_else(|| midge_series::points::DEFAULT_FIELD.to_owned());
        o.insert("field".into(), Value::String(field));
    }
    if !tags.is_empty() {
        // the keys whose values end each row, in order
        o.insert("tags".into(), json!(tags));
    }
    o.insert("groups".into(), Value::Array(groups));
    o.insert("rawCount".into(), Value::from(r.raw_count));
    o.insert("truncated".into(), Value::Bool(r.truncated));
    if let Some(m) = r.next_marker.filter(|_| r.truncated) {
        o.insert("nextMarker".into(), Value::String(m));
    }
    Value::Object(o)
}

async fn run(state: AppState, body: &[u8]) -> Result<Response, TsdbError> {
    let store = store(&state)?;
    let parsed: QueryBody = body::parse(body)?;
    let now = crate::time::now_ms();
    let mut queries = Vec::with_capacity(parsed.queries.len());
    for (i, q) in parsed.queries.into_iter().enumerate() {
        let (pq, multi) =
            point_query(q, now).map_err(|e| TsdbError::inappropriate(format!("query {i}: {e}")))?;
        queries.push((pq, multi));
    }
    let results = blocking(store, move |s| {
        queries
            .into_iter()
            .enumerate()
            .map(|(i, (q, multi))| {
                let grouped = !q.group_by.is_empty();
                s.query_points(&q)
                    .map(|r| result_json(r, multi, grouped, &q.tags))
                    .map_err(|e| match e {
                        midge_series::SeriesError::InvalidQuery(m) => {
                            midge_series::SeriesError::InvalidQuery(format!("query {i}: {m}"))
                        }
                        other => other,
                    })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "results": results }),
    ))
}

/// `PUT /v1/datapoint?query`.
pub(crate) async fn put_handler(state: AppState, req: Request) -> Result<Response, TsdbError> {
    let bytes = body::read(req, MAX_BODY_BYTES).await?;
    run(state, &bytes).await
}

/// `GET /v1/datapoint?query=<json>`.
pub(crate) async fn get_handler(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, TsdbError> {
    let p = params(&req);
    let q = p
        .iter()
        .find(|(k, _)| k == "query")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            TsdbError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHTTPRequest",
                "GET /v1/datapoint needs ?query=<the queries as JSON>",
            )
        })?;
    run(state, q.as_bytes()).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations() {
        let now = 10_000_000_000_000;
        assert_eq!(time_ms(&json!(1_700_000_000), now), Ok(1_700_000_000_000));
        assert_eq!(
            time_ms(&json!(1_700_000_000_123i64), now),
            Ok(1_700_000_000_123)
        );
        assert_eq!(time_ms(&json!("now"), now), Ok(now));
        assert_eq!(time_ms(&json!("1 hour ago"), now), Ok(now - 3_600_000));
        assert_eq!(
            time_ms(&json!("72 hours ago"), now),
            Ok(now - 72 * 3_600_000)
        );
        assert_eq!(
            time_ms(&json!("2 weeks ago"), now),
            Ok(now - 14 * 86_400_000)
        );
        assert_eq!(time_ms(&json!("1700000000"), now), Ok(1_700_000_000_000));
        for bad in [
            "yesterday",
            "1 hour",
            "ago",
            "x hours ago",
            "1 fortnight ago",
            "-1 hour ago",
        ] {
            assert!(time_ms(&json!(bad), now).is_err(), "{bad}");
        }
        assert_eq!(duration_ms("10 minutes"), Ok(600_000));
        assert_eq!(duration_ms("1 minute"), Ok(60_000));
        assert_eq!(duration_ms("30 seconds"), Ok(30_000));
        assert_eq!(duration_ms("1day"), Ok(86_400_000));
        assert!(duration_ms("0 seconds").is_err());
        assert!(duration_ms("ten minutes").is_err());
    }

    #[test]
    fn value_filters() {
        let f = value_filter(">= 10").unwrap();
        assert_eq!((f.op, f.value), (CompareOp::Ge, PointValue::Long(10)));
        let f = value_filter("<1.5").unwrap();
        assert_eq!((f.op, f.value), (CompareOp::Lt, PointValue::Double(1.5)));
        let f = value_filter("= 'on'").unwrap();
        assert_eq!(
            (f.op, f.value),
            (CompareOp::Eq, PointValue::Text("on".into()))
        );
        assert!(value_filter("~ 1").is_err());
        assert!(value_filter(">=").is_err());
    }

    #[test]
    fn aggregators_by_their_api_names() {
        let a = |v: Value| aggregator(&serde_json::from_value(v).unwrap());
        let avg = a(json!({"name":"Avg","sampling":"10 minutes"})).unwrap();
        assert_eq!(
            (avg.kind, avg.sampling_ms),
            (AggregatorKind::Avg, Some(600_000))
        );
        let p = a(json!({"name":"Percentile","factor":99})).unwrap();
        assert_eq!((p.kind, p.param), (AggregatorKind::Percentile, Some(99.0)));
        let r = a(json!({"name":"Rate","timeUnit":"minute"})).unwrap();
        assert_eq!(r.sampling_ms, Some(60_000));
        assert!(
            a(json!({"name":"Median"}))
                .unwrap_err()
                .to_string()
                .contains("unknown aggregator")
        );
        assert!(a(json!({"name":"Div"})).is_err());
        assert!(a(json!({"name":"Div","divisor":0})).is_err());
        assert!(a(json!({"name":"Percentile","factor":101})).is_err());
    }
}
