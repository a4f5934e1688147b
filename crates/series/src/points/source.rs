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
        let mut acc = PartialAcc::default();
        let mut lo = start;
        while lo <= end {
            let page = self.points(series, field, lo, end, PointOrder::Asc, READ_PAGE)?;
            let full = page.len() == READ_PAGE;
            let next = page.last().and_then(|(t, _)| t.checked_add(1));
            for (ts, v) in page {
                acc.push(kind, ts, v);
            }
            match next {
                Some(n) if full => lo = n,
                _ => break,
            }
        }
        Ok(acc.finish(kind))
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
        let Some(w) = width.filter(|w| *w > 0) else {
            return window_partials_one_by_one(self, series, field, start, end, width, kind, limit);
        };
        // A few windows one by one tell how many points a window holds; below
        // SPARSE_WINDOW a statement per window costs more than reading the points.
        let mut out = window_partials_one_by_one(
            self,
            series,
            field,
            start,
            end,
            width,
            kind,
            limit.min(PROBE),
        )?;
        let next = match out.last() {
            Some((k, _)) if out.len() == PROBE && out.len() < limit => k.checked_add(w),
            _ => None,
        };
        let Some(next) = next.filter(|n| *n <= end) else {
            return Ok(out);
        };
        let points: u64 = out.iter().map(|(_, p)| p.count).sum();
        let rest = limit - out.len();
        let more = if points < SPARSE_WINDOW * PROBE as u64 {
            // Read about as many points as the windows asked for hold.
            let page = usize::try_from(points / PROBE as u64 + 1)
                .unwrap_or(1)
                .saturating_mul(rest)
                .clamp(16, READ_PAGE);
            window_partials_from_points(self, series, field, next, end, w, kind, rest, page)?
        } else {
            window_partials_one_by_one(self, series, field, next, end, width, kind, rest)?
        };
        out.extend(more);
        Ok(out)
    }
}

/// Points per [`PointSource::points`] call of the defaults here.
const READ_PAGE: usize = 2048;
/// Windows [`PointSource::window_partials`] computes one by one before choosing.
const PROBE: usize = 4;
/// Fewer points than this a window on average: windows are computed from the points.
const SPARSE_WINDOW: u64 = 16;

/// A [`Partial`] being computed from points in time order.
#[derive(Debug, Default)]
struct PartialAcc {
    p: Partial,
    /// Whether every value so far is a whole number, and their exact sum.
    ints: Option<i128>,
    best: f64,
}

impl PartialAcc {
    fn push(&mut self, kind: PartialKind, ts: i64, v: PointValue) {
        if self.p.count == 0 {
            self.p.first_ts = ts;
            self.ints = Some(0);
        }
        self.p.count += 1;
        let Some(f) = v.as_f64() else { return };
        self.p.sum += f;
        self.ints = match (&v, self.ints) {
            (PointValue::Long(i), Some(s)) => s.checked_add(i128::from(*i)),
            _ => None,
        };
        let better = match (kind, &self.p.pick) {
            (PartialKind::Min | PartialKind::Max, None) => true,
            (PartialKind::Min, Some(_)) => f < self.best,
            (PartialKind::Max, Some(_)) => f > self.best,
            _ => false,
        };
        if better {
            self.p.pick = Some(v);
            self.best = f;
        }
    }

    fn finish(self, kind: PartialKind) -> Partial {
        Partial {
            int_sum: if kind == PartialKind::ExactSum {
                self.ints
            } else {
                None
            },
            ..self.p
        }
    }
}

/// [`PointSource::window_partials`] with windows `width` wide, from the points (read in
/// pages of `page`; a page's points past the `limit`th window are read again by the next
/// call).
#[allow(clippy::too_many_arguments)]
pub(crate) fn window_partials_from_points<S: PointSource + ?Sized>(
    src: &S,
    series: i64,
    field: i64,
    start: i64,
    end: i64,
    width: i64,
    kind: PartialKind,
    limit: usize,
    page: usize,
) -> Result<Vec<(i64, Partial)>, SeriesError> {
    let page_size = page.max(1);
    let mut out = Vec::new();
    let mut cur: Option<(i64, PartialAcc)> = None;
    let mut lo = start;
    'read: while lo <= end && limit > 0 {
        let page = src.points(series, field, lo, end, PointOrder::Asc, page_size)?;
        let full = page.len() == page_size;
        let next = page.last().and_then(|(t, _)| t.checked_add(1));
        for (ts, v) in page {
            let key = ts.div_euclid(width).saturating_mul(width);
            if cur.as_ref().is_none_or(|(k, _)| *k != key) {
                if let Some((k, acc)) = cur.take() {
                    out.push((k, acc.finish(kind)));
                    if out.len() == limit {
                        break 'read;
                    }
                }
                cur = Some((key, PartialAcc::default()));
            }
            if let Some((_, acc)) = &mut cur {
                acc.push(kind, ts, v);
            }
        }
        match next {
            Some(n) if full => lo = n,
            _ => break,
        }
    }
    if out.len() < limit
        && let Some((k, acc)) = cur
    {
        out.push((k, acc.finish(kind)));
    }
    Ok(out)
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
