//! [`PointSource`]: what the engine-independent query logic (`query.rs`: grouping, merging,
//! aggregators, paging) needs from an engine. SQLite implements it in `sqlite.rs`;
//! PostgreSQL implements it in `crate::postgres`.
//!
//! An implementation is made for one query (or one export) and should read one consistent
//! snapshot for its whole life (SQLite: one read transaction; PostgreSQL: one
//! `REPEATABLE READ` transaction), since a query calls it many times.
//!
//! Storage model the trait assumes (both engines): a metric has an id and fields (each an
//! id and a [`FieldType`]); a series is a metric plus one set of tags, with an id; a point
//! is keyed `(series id, field id, timestamp)` and holds one [`PointValue`]. Timestamps
//! are ms since the Unix epoch; every time bound of this trait is inclusive.

use std::collections::BTreeMap;

use super::{FieldType, PointOrder, PointValue, Tags};
use crate::SeriesError;

/// A metric as stored: its id and its fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetricInfo {
    /// The metric's id (engine-assigned, stable).
    pub(crate) id: i64,
    /// The metric's name.
    pub(crate) name: String,
    /// Each field's name → (field id, type).
    pub(crate) fields: BTreeMap<String, (i64, FieldType)>,
}

/// One series of a metric: its id and its tags.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SeriesInfo {
    /// The series' id (engine-assigned, stable).
    pub(crate) id: i64,
    /// Its tags.
    pub(crate) tags: Tags,
}

/// What [`PointSource::partial`] must compute (besides the count and the earliest
/// timestamp, which it always gives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PartialKind {
    /// Nothing more (Count).
    Count,
    /// The sum of the values as a float (Avg).
    Sum,
    /// The float sum and, when every value is a whole number, their exact sum (Sum).
    ExactSum,
    /// The smallest value.
    Min,
    /// The largest value.
    Max,
}

/// An aggregate of the points of one series and field in a time range, computed by the
/// engine ([`PointSource::partial`]); partials of several series combine into one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Partial {
    /// How many points (0: none; then nothing else is meaningful).
    pub(crate) count: u64,
    /// The earliest point's timestamp.
    pub(crate) first_ts: i64,
    /// Sum of the values as floats ([`PartialKind::Sum`], [`PartialKind::ExactSum`]).
    pub(crate) sum: f64,
    /// Exact sum of the values when every one is a whole number ([`PartialKind::ExactSum`]).
    pub(crate) int_sum: Option<i128>,
    /// The smallest ([`PartialKind::Min`]) or largest ([`PartialKind::Max`]) value.
    pub(crate) pick: Option<PointValue>,
}

/// Read access to stored datapoints, one snapshot. Every method may be called many times
/// per query; none may load more than it returns.
pub(crate) trait PointSource {
    /// Every metric name, in name order.
    fn metrics(&self) -> Result<Vec<String>, SeriesError>;

    /// The metric called `name` with its fields; `None` when no point of it was ever
    /// written.
    fn metric(&self, name: &str) -> Result<Option<MetricInfo>, SeriesError>;

    /// The series of `metric` whose tags pass `tag_filter` (for every key of the filter,
    /// the series has that key and its value is one of the listed ones; an empty filter
    /// passes every series), in ascending id order. An engine should use a tag index for
    /// the filter; the caller does not filter again.
    fn series(
        &self,
        metric: &MetricInfo,
        tag_filter: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<SeriesInfo>, SeriesError>;

    /// At most `limit` points of one series and field with `start <= ts <= end`, in
    /// `order` of timestamp (an index range scan on `(series, field, ts)`, `LIMIT`). The
    /// caller pages by keyset: the next call narrows `start` (Asc) or `end` (Desc) past
    /// the last timestamp it got. Returns fewer than `limit` only when no more exist.
    fn points(
        &self,
        series: i64,
        field: i64,
        start: i64,
        end: i64,
        order: PointOrder,
        limit: usize,
    ) -> Result<Vec<(i64, PointValue)>, SeriesError>;

    /// The newest (`PointOrder::Desc`) or oldest (`PointOrder::Asc`) point of one series
    /// and field with `start <= ts <= end`: one index seek (`ORDER BY ts DESC LIMIT 1`).
    /// Used for "last value of each series" and to find the point before a page.
    fn edge(
        &self,
        series: i64,
        field: i64,
        start: i64,
        end: i64,
        order: PointOrder,
    ) -> Result<Option<(i64, PointValue)>, SeriesError> {
        Ok(self
            .points(series, field, start, end, order, 1)?
            .into_iter()
            .next())
    }

    /// Whether [`PointSource::partial`] is computed by the engine itself (then windowed
    /// Avg, Sum, Count, Min and Max read partials instead of points).
    fn aggregates(&self) -> bool {
        false
    }

    /// The [`Partial`] of the points of one series and field with `start <= ts <= end`;
    /// `kind` says which aggregate is needed. An engine that says it [`aggregates`] computes
    /// it in one statement (no point leaves the engine); this default reads the points
    /// (and is the reference for what the engines compute). Only called for fields of
    /// [`FieldType::Number`](super::FieldType::Number).
    ///
    /// [`aggregates`]: PointSource::aggregates
    fn partial(
        &self,
        series: i64,
        field: i64,
        start: i64,
        end: i64,
        kind: PartialKind,
    ) -> Result<Partial, SeriesError> {
        let mut p = Partial {
            int_sum: Some(0),
            ..Partial::default()
        };
        let mut best = 0.0;
        let mut lo = start;
        while lo <= end {
            let page = self.points(series, field, lo, end, PointOrder::Asc, 2048)?;
            let full = page.len() == 2048;
            let next = page.last().and_then(|(t, _)| t.checked_add(1));
            for (ts, v) in page {
                if p.count == 0 {
                    p.first_ts = ts;
                }
                p.count += 1;
                let Some(f) = v.as_f64() else { continue };
                p.sum += f;
                p.int_sum = match (&v, p.int_sum) {
                    (PointValue::Long(i), Some(s)) => s.checked_add(i128::from(*i)),
                    _ => None,
                };
                let better = match (kind, &p.pick) {
                    (PartialKind::Min | PartialKind::Max, None) => true,
                    (PartialKind::Min, Some(_)) => f < best,
                    (PartialKind::Max, Some(_)) => f > best,
                    _ => false,
                };
                if better {
                    p.pick = Some(v);
                    best = f;
                }
            }
            match next {
                Some(n) if full => lo = n,
                _ => break,
            }
        }
        if p.count == 0 || kind != PartialKind::ExactSum {
            p.int_sum = None;
        }
        Ok(p)
    }

    /// The partials of the windows of one series and field with `start <= ts <= end`, in
    /// window order, at most `limit` of them, leaving out empty windows: windows `width` ms
    /// wide aligned on the Unix epoch, keyed by their start (the first one holds `start`
    /// and reads from it), or with `width` `None` one window keyed `i64::MIN`. Fewer than
    /// `limit` only when no more exist. This default makes one [`PointSource::partial`] per
    /// window, and a run of empty windows costs one of those and one
    /// [`PointSource::edge`] seek; an engine for which a statement costs a round trip
    /// computes them all in one.
    #[allow(clippy::too_many_arguments)]
    fn window_partials(
        &self,
        series: i64,
        field: i64,
        start: i64,
        end: i64,
        width: Option<i64>,
        kind: PartialKind,
        limit: usize,
    ) -> Result<Vec<(i64, Partial)>, SeriesError> {
        window_partials_one_by_one(self, series, field, start, end, width, kind, limit)
    }
}

/// [`PointSource::window_partials`] by one [`PointSource::partial`] per window.
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_partials_one_by_one<S: PointSource + ?Sized>(
    src: &S,
    series: i64,
    field: i64,
    start: i64,
    end: i64,
    width: Option<i64>,
    kind: PartialKind,
    limit: usize,
) -> Result<Vec<(i64, Partial)>, SeriesError> {
    let mut out = Vec::new();
    let mut from = (start <= end).then_some(start);
    while let Some(f) = from
        && out.len() < limit
    {
        let (key, to) = match width {
            Some(w) if w > 0 => {
                let ws = f.div_euclid(w).saturating_mul(w);
                (ws, ws.saturating_add(w - 1).min(end))
            }
            _ => (i64::MIN, end),
        };
        let p = src.partial(series, field, f, to, kind)?;
        let next = to.checked_add(1).filter(|n| *n <= end);
        if p.count > 0 {
            out.push((key, p));
            from = next;
        } else {
            from = match next {
                Some(n) => src
                    .edge(series, field, n, end, PointOrder::Asc)?
                    .map(|(t, _)| t),
                None => None,
            };
        }
    }
    Ok(out)
}
