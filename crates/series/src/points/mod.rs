//! Datapoints: the data model of hosted IoT hubs' time-series databases (Baidu TSDB,
//! OpenTSDB, InfluxDB). A point is a metric, a field (default [`DEFAULT_FIELD`]), tags
//! (string key/values), a timestamp in ms and a value. Metric + tags + field + timestamp
//! is the point's key: writing the same key again replaces the value, so a message
//! redelivered after a crash never makes a duplicate.
//!
//! Written with [`crate::SeriesStore::write_points`], listed with
//! [`crate::SeriesStore::metrics`] / [`crate::SeriesStore::metric_fields`] /
//! [`crate::SeriesStore::metric_tags`], queried with [`crate::SeriesStore::query_points`]
//! (filters, group-by, aggregators, paging), exported with
//! [`crate::SeriesStore::export_points`].

pub(crate) mod query;
pub(crate) mod source;
pub(crate) mod sqlite;
pub(crate) mod validate;

use std::collections::BTreeMap;

/// For tests: whether the queries run by this thread let the engine compute windowed Avg,
/// Sum, Count, Min and Max itself (the default, `true`) or read every point and aggregate
/// them here (`false`); both give the same rows.
#[doc(hidden)]
pub fn set_engine_aggregation(on: bool) {
    query::set_pushdown(on);
}

/// The field a point has when it names none.
pub const DEFAULT_FIELD: &str = "value";

/// Tags of a point: key → value, in key order.
pub type Tags = BTreeMap<String, String>;

/// The value of one point.
#[derive(Debug, Clone, PartialEq)]
pub enum PointValue {
    /// A whole number.
    Long(i64),
    /// A floating-point number (finite).
    Double(f64),
    /// Text.
    Text(String),
}

impl PointValue {
    /// The value as a number (`None` for text).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            // i64 → f64 beyond 2^53 rounds, as every TSDB's aggregation does
            #[allow(clippy::cast_precision_loss)]
            PointValue::Long(v) => Some(*v as f64),
            PointValue::Double(v) => Some(*v),
            PointValue::Text(_) => None,
        }
    }

    /// The type of field this value belongs to.
    pub fn field_type(&self) -> FieldType {
        match self {
            PointValue::Long(_) | PointValue::Double(_) => FieldType::Number,
            PointValue::Text(_) => FieldType::String,
        }
    }

    /// The value as JSON (a number or a string).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PointValue::Long(v) => serde_json::Value::from(*v),
            PointValue::Double(v) => serde_json::Number::from_f64(*v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            PointValue::Text(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// The type of a field: every value a field holds has the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FieldType {
    /// Long or Double values.
    Number,
    /// Text values.
    String,
}

impl FieldType {
    /// `"Number"` or `"String"`, as the TSDB API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Number => "Number",
            FieldType::String => "String",
        }
    }
}

/// One datapoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Datapoint {
    /// Metric name.
    pub metric: String,
    /// Field name ([`DEFAULT_FIELD`] when the writer names none).
    pub field: String,
    /// Tags.
    pub tags: Tags,
    /// Time in ms since the Unix epoch (see [`timestamp_ms`] for inputs in seconds).
    pub timestamp: i64,
    /// The value.
    pub value: PointValue,
}

/// Why `point` cannot be stored by [`crate::SeriesStore::write_points`] on its own (a
/// name empty, longer than 255 bytes or with a control character, an empty tag value, a
/// value that is not a finite number), if it cannot; the type of its field against other
/// points and the stored ones is checked when it is written. For callers that build points
/// and must keep a bad one out of a batch.
pub fn check(point: &Datapoint) -> Result<(), PointError> {
    validate::check_point(point)
}

/// Why a datapoint cannot be stored on its own ([`check`]); in a batch the store answers
/// [`SeriesError::InvalidPoint`](crate::SeriesError::InvalidPoint) with this as the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PointError {
    /// The metric, field or a tag key (named) is empty.
    #[error("{0} is empty")]
    EmptyName(&'static str),
    /// The metric, field or a tag key is longer than 255 bytes.
    #[error("{what} is {len} bytes long (at most {max})", max = validate::MAX_NAME_BYTES)]
    LongName {
        /// `metric`, `field` or `tag key`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The metric, field or a tag key holds a control character.
    #[error("{what} {name:?} holds a control character")]
    ControlCharacter {
        /// `metric`, `field` or `tag key`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// The tag (named) has an empty value.
    #[error("tag {0:?} has an empty value")]
    EmptyTagValue(String),
    /// A Double that is NaN or infinite.
    #[error("value {0} is not a finite number")]
    NotFinite(f64),
}

/// A timestamp as TSDB APIs take it: a value of 10 digits or fewer is in seconds (× 1000),
/// a longer one in ms.
pub fn timestamp_ms(ts: i64) -> i64 {
    if ts.unsigned_abs() < 10_000_000_000 {
        ts.saturating_mul(1000)
    } else {
        ts
    }
}

/// Comparison of a value filter (`">= 10"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A filter on raw values (`"value": ">= 10"` in a query): points whose value does not
/// pass are not read (numbers compare as numbers, text as text).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueFilter {
    /// The comparison.
    pub op: CompareOp,
    /// The value compared with.
    pub value: PointValue,
}

/// An aggregator's function (the TSDB API's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregatorKind {
    /// Mean of each sampling window.
    Avg,
    /// Standard deviation of each window.
    Dev,
    /// Number of points in each window.
    Count,
    /// First value of each window.
    First,
    /// Last value of each window.
    Last,
    /// Largest value of each window.
    Max,
    /// Smallest value of each window.
    Min,
    /// Sum of each window.
    Sum,
    /// The `param` percentile (0–100) of each window.
    Percentile,
    /// Difference between each value and the one before it.
    Diff,
    /// Each value divided by `param`.
    Div,
    /// Each value multiplied by `param`.
    Multiply,
    /// Rate of change per `sampling` (per second when none) between each value and the one
    /// before it.
    Rate,
    /// Each window's value from a least-squares line through the window's points.
    LeastSquares,
}

/// One aggregator of a query; a query's aggregators apply in order, each to the output of
/// the one before.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregator {
    /// The function.
    pub kind: AggregatorKind,
    /// Width of a sampling window in ms (> 0; windows aligned on the Unix epoch and
    /// timestamped with their start, like InfluxDB's `GROUP BY time`); `None`: one window
    /// for the whole range, timestamped with its first point, except Last's: with the time
    /// of its last point (so First and Last carry the time of the point they select, as
    /// InfluxDB's `first()` and `last()` do; with several fields, the earliest of the
    /// selected points for First and the latest for Last). For Rate: the unit of time of
    /// the rate (`None`: per second).
    pub sampling_ms: Option<i64>,
    /// The percentile (Percentile, 0–100), divisor (Div, not 0) or factor (Multiply);
    /// required by those three, ignored by the others.
    pub param: Option<f64>,
}

/// Order of the values of each group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PointOrder {
    /// Oldest first (default).
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A query over one metric.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointQuery {
    /// The metric.
    pub metric: String,
    /// The fields to read (empty: [`DEFAULT_FIELD`]); each value row holds one value per
    /// field, in this order.
    pub fields: Vec<String>,
    /// Tag keys whose values are appended to each value row (the API's `tags`). Series of
    /// a group whose values of these keys differ are not merged into one row: each row's
    /// tag values are those of the series it came from.
    pub tags: Vec<String>,
    /// Only points with `timestamp >= start` (ms).
    pub start: i64,
    /// Only points with `timestamp <= end` (ms).
    pub end: i64,
    /// Only series whose tag `key` has one of the listed values.
    pub tag_filter: BTreeMap<String, Vec<String>>,
    /// Only raw values that pass this filter (applied before the aggregators).
    pub value_filter: Option<ValueFilter>,
    /// Tag keys to group series by (one group per distinct combination; none: one group).
    pub group_by: Vec<String>,
    /// Aggregators, applied in order, each to the output of the one before, field by
    /// field. Only Count, First and Last take String fields (others: `InvalidQuery`).
    pub aggregators: Vec<Aggregator>,
    /// Most value rows to return (all groups together); `None`: the store's default;
    /// never more than [`crate::SeriesOptions::max_rows_per_query`].
    pub limit: Option<usize>,
    /// Order of each group's values.
    pub order: PointOrder,
    /// Where to go on from: the `next_marker` of the previous page.
    pub marker: Option<String>,
}

/// One value row: a timestamp, one value per queried field (`None` where that field has
/// no value at this time), then the values of the queried tags.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRow {
    /// Time in ms (the window's start for sampled aggregators; see
    /// [`Aggregator::sampling_ms`]).
    pub timestamp: i64,
    /// One value per field of the query.
    pub values: Vec<Option<PointValue>>,
    /// One value per tag key of the query.
    pub tags: Vec<Option<String>>,
}

/// The values of one group (a group with no row in this page is not listed).
#[derive(Debug, Clone, PartialEq)]
pub struct PointGroup {
    /// The group-by tags' values of this group (empty without group-by).
    pub tags: Tags,
    /// Its value rows.
    pub values: Vec<PointRow>,
}

/// What a query found.
#[derive(Debug, Clone, PartialEq)]
pub struct PointResult {
    /// The metric.
    pub metric: String,
    /// The fields, in the order of each row's values.
    pub fields: Vec<String>,
    /// The groups, in order of their tags.
    pub groups: Vec<PointGroup>,
    /// Raw points read from storage to make this page.
    pub raw_count: u64,
    /// Whether more rows matched than were returned; then `next_marker` continues.
    pub truncated: bool,
    /// Pass as [`PointQuery::marker`] (with the same query otherwise) to get the next page;
    /// opaque.
    pub next_marker: Option<String>,
}
