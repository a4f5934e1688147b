//! The engine-independent part of datapoint queries: series selection, grouping, merging,
//! aggregators, paging (markers) and export, over any [`PointSource`].
//!
//! ## How a query runs
//!
//! The series of the metric that pass the tag filter are put in groups (by the values of
//! the `group_by` keys) and, inside a group, in sub-groups by the values of the query's
//! `tags` keys (so that each row's tag values are those of the series it came from).
//! Each sub-group is a pipeline: a merge of its series' points (one cursor per series and
//! field, read in pages of [`PAGE`] points by keyset) into rows by timestamp, then the
//! aggregators in order. The rows of a group are the merge of its sub-groups' rows, in
//! `(timestamp, sub-group, n)` order (`n` numbers rows with the same timestamp in one
//! sub-group, which happens when two series of it have a value of the same field at the
//! same time). Everything streams: memory holds a page per cursor, not the range.
//!
//! ## Paging
//!
//! A page stops after `limit` rows; the marker names the last row given (group, sub-group,
//! timestamp, n). The next page skips the groups before it and, in its group, the rows up to
//! it. Ascending pages restart reading just where the marker's row needs them (the window
//! holding it, and one point earlier for Diff and Rate); descending aggregated pages
//! recompute the range up to the marker (keeping only the last `limit + 1` rows), so each
//! such page reads the range again.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::source::{MetricInfo, Partial, PartialKind, PointSource, SeriesInfo};
use super::{
    Aggregator, AggregatorKind, CompareOp, DEFAULT_FIELD, Datapoint, FieldType, PointGroup,
    PointOrder, PointQuery, PointResult, PointRow, PointValue, Tags, ValueFilter,
};
use crate::SeriesError;

/// Points fetched per [`PointSource::points`] call.
pub(crate) const PAGE: usize = 2048;

/// Values of some tag keys (`None`: the series lacks the key).
type Key = Vec<Option<String>>;

// ---------------------------------------------------------------------------------------
// Markers

/// Where a page stopped: the last row given.
#[derive(Debug, Clone, PartialEq)]
struct Marker {
    group: Key,
    sub: Key,
    ts: i64,
    n: u64,
}

fn bad_marker() -> SeriesError {
    SeriesError::InvalidQuery(
        "marker: not a next_marker of this store (pass the next_marker of the previous page \
         unchanged)"
            .into(),
    )
}

impl Marker {
    /// Hex of a JSON array `[group, sub, ts, n]`.
    fn encode(&self) -> String {
        let json = serde_json::json!([self.group, self.sub, self.ts, self.n]).to_string();
        let mut out = String::with_capacity(json.len() * 2);
        for b in json.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }

    fn decode(s: &str) -> Result<Marker, SeriesError> {
        if !s.len().is_multiple_of(2) || s.len() > 1 << 20 {
            return Err(bad_marker());
        }
        let bytes = (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(bad_marker)
            })
            .collect::<Result<Vec<u8>, _>>()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad_marker())?;
        let serde_json::Value::Array(parts) = v else {
            return Err(bad_marker());
        };
        let [group, sub, ts, n] = parts.as_slice() else {
            return Err(bad_marker());
        };
        let key = |v: &serde_json::Value| -> Result<Key, SeriesError> {
            let serde_json::Value::Array(items) = v else {
                return Err(bad_marker());
            };
            items
                .iter()
                .map(|i| match i {
                    serde_json::Value::Null => Ok(None),
                    serde_json::Value::String(s) => Ok(Some(s.clone())),
                    _ => Err(bad_marker()),
                })
                .collect()
        };
        Ok(Marker {
            group: key(group)?,
            sub: key(sub)?,
            ts: ts.as_i64().ok_or_else(bad_marker)?,
            n: n.as_u64().ok_or_else(bad_marker)?,
        })
    }
}

/// Which rows of one sub-group of the marker's group come after the marker.
#[derive(Debug, Clone, Copy)]
struct After {
    ts: i64,
    /// Which rows at exactly `ts` come after.
    at_ts: AtTs,
    order: PointOrder,
}

#[derive(Debug, Clone, Copy)]
enum AtTs {
    /// Sub-groups before the marker's: rows at the marker's ts were given.
    None,
    /// The marker's sub-group: rows at its ts with a larger `n`.
    After(u64),
    /// Sub-groups after the marker's: every row at its ts is still to give.
    All,
}

impl After {
    fn passes(&self, ts: i64, n: u64) -> bool {
        let later = match self.order {
            PointOrder::Asc => ts > self.ts,
            PointOrder::Desc => ts < self.ts,
        };
        later
            || (ts == self.ts
                && match self.at_ts {
                    AtTs::None => false,
                    AtTs::After(m) => n > m,
                    AtTs::All => true,
                })
    }
}

// ---------------------------------------------------------------------------------------
// Rows and streams

/// A row inside the pipeline: a timestamp and one value per queried field.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    ts: i64,
    values: Vec<Option<PointValue>>,
}

/// A source of rows in ascending (or, for raw descending scans, descending) time order.
trait Rows {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError>;
}

/// What every pipeline part shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    src: &'a dyn PointSource,
    raw: &'a Cell<u64>,
    filter: Option<&'a ValueFilter>,
    /// Points per read of one cursor ([`page_size`]).
    page: usize,
    /// Whether windowed Avg, Sum, Count, Min and Max are computed by the engine
    /// ([`PartialRows`]).
    pushdown: bool,
}

/// Points held by the cursors of one group at most (about), whatever its series count.
const GROUP_BUDGET: usize = 64 * 1024;
/// Smallest read per cursor.
const MIN_PAGE: usize = 16;

/// Points per read for each of `cursors` cursors read together.
fn page_size(cursors: usize) -> usize {
    (GROUP_BUDGET / cursors.max(1)).clamp(MIN_PAGE, PAGE)
}

fn passes(filter: Option<&ValueFilter>, v: &PointValue) -> bool {
    let Some(f) = filter else { return true };
    let ord = match (v, &f.value) {
        (PointValue::Text(a), PointValue::Text(b)) => a.as_str().cmp(b.as_str()),
        (PointValue::Long(a), PointValue::Long(b)) => a.cmp(b),
        (a, b) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => match a.partial_cmp(&b) {
                Some(o) => o,
                None => return false,
            },
            _ => return false,
        },
    };
    use std::cmp::Ordering::{Equal, Greater, Less};
    match f.op {
        CompareOp::Eq => ord == Equal,
        CompareOp::Ne => ord != Equal,
        CompareOp::Lt => ord == Less,
        CompareOp::Le => ord != Greater,
        CompareOp::Gt => ord == Greater,
        CompareOp::Ge => ord != Less,
    }
}

/// Keyset cursor over one series and field.
struct Cursor {
    series: i64,
    field_id: i64,
    field: usize,
    lo: i64,
    hi: i64,
    buf: VecDeque<(i64, PointValue)>,
    done: bool,
}

impl Cursor {
    fn head(&mut self, ctx: Ctx<'_>, order: PointOrder) -> Result<Option<i64>, SeriesError> {
        if self.buf.is_empty() && !self.done {
            if self.lo > self.hi {
                self.done = true;
                return Ok(None);
            }
            let page = ctx.src.points(
                self.series,
                self.field_id,
                self.lo,
                self.hi,
                order,
                ctx.page,
            )?;
            if page.len() < ctx.page {
                self.done = true;
            }
            if let Some((last, _)) = page.last() {
                match order {
                    PointOrder::Asc => match last.checked_add(1) {
                        Some(l) => self.lo = l,
                        None => self.done = true,
                    },
                    PointOrder::Desc => match last.checked_sub(1) {
                        Some(h) => self.hi = h,
                        None => self.done = true,
                    },
                }
            }
            ctx.raw.set(ctx.raw.get() + page.len() as u64);
            self.buf = page.into();
        }
        Ok(self.buf.front().map(|(ts, _)| *ts))
    }
}

/// The raw points of some series merged into rows by timestamp (a heap over the cursors'
/// heads: log(cursors) per point).
struct RawRows<'a> {
    ctx: Ctx<'a>,
    order: PointOrder,
    fields: usize,
    cursors: Vec<Cursor>,
    /// Each cursor's head: (timestamp in the scan's order, cursor index), smallest first.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    started: bool,
    pending: VecDeque<Row>,
}

impl<'a> RawRows<'a> {
    fn new(
        ctx: Ctx<'a>,
        series: &[&SeriesInfo],
        fields: &[Option<(i64, FieldType)>],
        lo: i64,
        hi: i64,
        order: PointOrder,
    ) -> RawRows<'a> {
        let mut cursors = Vec::new();
        for s in series {
            for (field, f) in fields.iter().enumerate() {
                if let Some((field_id, _)) = f {
                    cursors.push(Cursor {
                        series: s.id,
                        field_id: *field_id,
                        field,
                        lo,
                        hi,
                        buf: VecDeque::new(),
                        done: false,
                    });
                }
            }
        }
        RawRows {
            ctx,
            order,
            fields: fields.len(),
            cursors,
            heap: BinaryHeap::new(),
            started: false,
            pending: VecDeque::new(),
        }
    }

    /// A timestamp as a heap key: itself ascending, its bitwise complement descending (an
    /// order-reversing bijection on i64, no overflow).
    fn key(&self, ts: i64) -> i64 {
        match self.order {
            PointOrder::Asc => ts,
            PointOrder::Desc => !ts,
        }
    }

    /// Pushes cursor `i`'s head (reading its next page if needed).
    fn refill(&mut self, i: usize) -> Result<(), SeriesError> {
        let (ctx, order) = (self.ctx, self.order);
        if let Some(c) = self.cursors.get_mut(i)
            && let Some(ts) = c.head(ctx, order)?
        {
            let k = self.key(ts);
            self.heap.push(Reverse((k, i)));
        }
        Ok(())
    }
}

impl Rows for RawRows<'_> {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        if !self.started {
            self.started = true;
            for i in 0..self.cursors.len() {
                self.refill(i)?;
            }
        }
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Ok(Some(r));
            }
            let Some(Reverse((k, _))) = self.heap.peek().copied() else {
                return Ok(None);
            };
            // Every point at this timestamp, in cursor (series, then field) order, into as
            // few rows as possible.
            let mut at = Vec::new();
            while let Some(Reverse((kk, i))) = self.heap.peek().copied()
                && kk == k
            {
                self.heap.pop();
                at.push(i);
            }
            for i in at {
                let Some(c) = self.cursors.get_mut(i) else {
                    continue;
                };
                let field = c.field;
                let Some((ts, v)) = c.buf.pop_front() else {
                    continue;
                };
                self.refill(i)?;
                if !passes(self.ctx.filter, &v) {
                    continue;
                }
                let slot = self
                    .pending
                    .iter_mut()
                    .find(|r| r.values.get(field).is_some_and(Option::is_none));
                let row = match slot {
                    Some(r) => r,
                    None => {
                        self.pending.push_back(Row {
                            ts,
                            values: vec![None; self.fields],
                        });
                        match self.pending.back_mut() {
                            Some(r) => r,
                            None => continue,
                        }
                    }
                };
                if let Some(slot) = row.values.get_mut(field) {
                    *slot = Some(v);
                }
            }
        }
    }
}

/// First or Last over the whole range by index seeks (no scan; one seek per series and
/// field): the first stage of a pipeline whose first aggregator is First/Last without
/// sampling and no value filter. The row's timestamp is that of the selected point (the
/// earliest of the fields' picks for First, the latest for Last), as a [`Window`] without
/// sampling gives it.
struct EdgeRow<'a> {
    ctx: Ctx<'a>,
    series: Vec<i64>,
    fields: Vec<Option<(i64, FieldType)>>,
    lo: i64,
    hi: i64,
    last: bool,
    done: bool,
}

impl Rows for EdgeRow<'_> {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        let order = if self.last {
            PointOrder::Desc
        } else {
            PointOrder::Asc
        };
        let mut row_ts: Option<i64> = None;
        let mut values = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let mut pick: Option<(i64, PointValue)> = None;
            if let Some((field_id, _)) = f {
                for s in &self.series {
                    let Some((ts, v)) =
                        self.ctx.src.edge(*s, *field_id, self.lo, self.hi, order)?
                    else {
                        continue;
                    };
                    self.ctx.raw.set(self.ctx.raw.get() + 1);
                    // Ties: the row order of a scan (series order) decides.
                    let better = match &pick {
                        None => true,
                        Some((p, _)) if self.last => ts >= *p,
                        Some((p, _)) => ts < *p,
                    };
                    if better {
                        pick = Some((ts, v));
                    }
                }
            }
            if let Some((ts, _)) = &pick {
                row_ts = Some(match row_ts {
                    None => *ts,
                    Some(r) if self.last => r.max(*ts),
                    Some(r) => r.min(*ts),
                });
            }
            values.push(pick.map(|(_, v)| v));
        }
        Ok(row_ts.map(|ts| Row { ts, values }))
    }
}

// ---------------------------------------------------------------------------------------
// Aggregators

fn windowed(kind: AggregatorKind) -> bool {
    !matches!(
        kind,
        AggregatorKind::Diff
            | AggregatorKind::Div
            | AggregatorKind::Multiply
            | AggregatorKind::Rate
    )
}

/// One field's state in one window.
#[derive(Debug, Default)]
struct Acc {
    n: u64,
    sum: f64,
    /// Exact sum of Long values (Sum of whole numbers stays whole when it fits an i64).
    isum: Option<i128>,
    all_long: bool,
    mean: f64,
    m2: f64,
    pick: Option<PointValue>,
    pick_f: f64,
    values: Vec<f64>,
    // least squares over (t - window ts, v)
    st: f64,
    stt: f64,
    stv: f64,
}

impl Acc {
    fn push(&mut self, kind: AggregatorKind, rel_t: f64, v: PointValue) {
        use AggregatorKind as K;
        if self.n == 0 {
            self.all_long = true;
            self.isum = Some(0);
        }
        match kind {
            K::Count => {}
            K::First => {
                if self.pick.is_none() {
                    self.pick = Some(v);
                }
            }
            K::Last => self.pick = Some(v),
            K::Max | K::Min => {
                let Some(f) = v.as_f64() else { return };
                let better = match self.pick {
                    None => true,
                    Some(_) if kind == K::Max => f > self.pick_f,
                    Some(_) => f < self.pick_f,
                };
                if better {
                    self.pick = Some(v);
                    self.pick_f = f;
                }
            }
            K::Sum | K::Avg => {
                let Some(f) = v.as_f64() else { return };
                self.sum += f;
                match v {
                    PointValue::Long(i) => {
                        self.isum = self.isum.and_then(|s| s.checked_add(i128::from(i)));
                    }
                    _ => self.all_long = false,
                }
            }
            K::Dev => {
                let Some(f) = v.as_f64() else { return };
                // Welford
                let n = (self.n + 1) as f64;
                let d = f - self.mean;
                self.mean += d / n;
                self.m2 += d * (f - self.mean);
            }
            K::Percentile => {
                let Some(f) = v.as_f64() else { return };
                self.values.push(f);
            }
            K::LeastSquares => {
                let Some(f) = v.as_f64() else { return };
                self.sum += f;
                self.st += rel_t;
                self.stt += rel_t * rel_t;
                self.stv += rel_t * f;
            }
            K::Diff | K::Div | K::Multiply | K::Rate => return,
        }
        self.n += 1;
    }

    fn finish(self, agg: &Aggregator) -> Option<PointValue> {
        use AggregatorKind as K;
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        match agg.kind {
            K::Count => Some(PointValue::Long(i64::try_from(self.n).unwrap_or(i64::MAX))),
            K::First | K::Last | K::Max | K::Min => self.pick,
            K::Sum => Some(sum_value(
                self.all_long.then_some(self.isum).flatten(),
                self.sum,
            )),
            K::Avg => Some(PointValue::Double(self.sum / n)),
            K::Dev => Some(PointValue::Double(if self.n < 2 {
                0.0
            } else {
                (self.m2 / (n - 1.0)).sqrt()
            })),
            K::Percentile => {
                let mut v = self.values;
                v.sort_by(f64::total_cmp);
                let p = agg.param.unwrap_or(50.0).clamp(0.0, 100.0);
                let rank = p / 100.0 * (v.len().saturating_sub(1)) as f64;
                let lo = rank.floor();
                let frac = rank - lo;
                let lo = lo as usize;
                let a = v.get(lo).copied()?;
                let b = v.get(lo + 1).copied().unwrap_or(a);
                Some(PointValue::Double(a + (b - a) * frac))
            }
            K::LeastSquares => {
                // v = a + b t, evaluated at t = 0 (the row's timestamp)
                let den = n * self.stt - self.st * self.st;
                let a = if den.abs() < f64::EPSILON {
                    self.sum / n
                } else {
                    let b = (n * self.stv - self.st * self.sum) / den;
                    (self.sum - b * self.st) / n
                };
                Some(PointValue::Double(a))
            }
            K::Diff | K::Div | K::Multiply | K::Rate => None,
        }
    }
}

/// A Sum's value: whole when every value was and the exact sum fits an i64.
fn sum_value(exact: Option<i128>, float: f64) -> PointValue {
    match exact.and_then(|i| i64::try_from(i).ok()) {
        Some(i) => PointValue::Long(i),
        None => PointValue::Double(float),
    }
}

/// The partial the engine computes for a windowed aggregator it can compute, if any.
fn partial_kind(kind: AggregatorKind) -> Option<PartialKind> {
    use AggregatorKind as K;
    match kind {
        K::Avg => Some(PartialKind::Sum),
        K::Sum => Some(PartialKind::ExactSum),
        K::Count => Some(PartialKind::Count),
        K::Min => Some(PartialKind::Min),
        K::Max => Some(PartialKind::Max),
        _ => None,
    }
}

/// A field's partials of one window, combined over the series of a sub-group.
#[derive(Debug, Default)]
struct Combined {
    count: u64,
    sum: f64,
    int_sum: Option<i128>,
    all_int: bool,
    pick: Option<(f64, PointValue)>,
}

impl Combined {
    fn add(&mut self, kind: PartialKind, p: Partial) {
        if p.count == 0 {
            return;
        }
        if self.count == 0 {
            self.all_int = true;
            self.int_sum = Some(0);
        }
        self.count += p.count;
        self.sum += p.sum;
        match p.int_sum {
            Some(i) => self.int_sum = self.int_sum.and_then(|s| s.checked_add(i)),
            None => self.all_int = false,
        }
        if let Some(v) = p.pick
            && let Some(f) = v.as_f64()
        {
            // Ties: the earlier series (the scan's order at one timestamp) keeps it.
            let better = match &self.pick {
                None => true,
                Some((b, _)) if kind == PartialKind::Max => f > *b,
                Some((b, _)) => f < *b,
            };
            if better {
                self.pick = Some((f, v));
            }
        }
    }

    fn finish(self, kind: AggregatorKind) -> Option<PointValue> {
        use AggregatorKind as K;
        if self.count == 0 {
            return None;
        }
        match kind {
            K::Count => Some(PointValue::Long(
                i64::try_from(self.count).unwrap_or(i64::MAX),
            )),
            K::Avg => Some(PointValue::Double(self.sum / self.count as f64)),
            K::Sum => Some(sum_value(
                self.all_int.then_some(self.int_sum).flatten(),
                self.sum,
            )),
            K::Min | K::Max => self.pick.map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A windowed Avg, Sum, Count, Min or Max computed by the engine: the partials of each
/// series and field, read window by window ([`PointSource::window_partials`], in pages of
/// [`WINDOW_PAGE`] windows), combined here; the same rows as a [`Window`] over [`RawRows`],
/// without reading the points.
struct PartialRows<'a> {
    ctx: Ctx<'a>,
    cursors: Vec<WindowCursor>,
    fields: usize,
    agg: Aggregator,
    kind: PartialKind,
    hi: i64,
}

/// Windows read per [`PointSource::window_partials`] call.
const WINDOW_PAGE: usize = 512;

/// Keyset cursor over the window partials of one series and field.
struct WindowCursor {
    series: i64,
    field_id: i64,
    field: usize,
    lo: i64,
    buf: VecDeque<(i64, Partial)>,
    done: bool,
}

impl PartialRows<'_> {
    /// The head window key of cursor `i` (reading its next page if needed).
    fn head(&mut self, i: usize) -> Result<Option<i64>, SeriesError> {
        let (ctx, hi, kind, width) = (self.ctx, self.hi, self.kind, self.agg.sampling_ms);
        let Some(c) = self.cursors.get_mut(i) else {
            return Ok(None);
        };
        if c.buf.is_empty() && !c.done {
            let page = ctx.src.window_partials(
                c.series,
                c.field_id,
                c.lo,
                hi,
                width,
                kind,
                WINDOW_PAGE,
            )?;
            let next = match (page.last(), width) {
                (Some((k, _)), Some(w)) if page.len() == WINDOW_PAGE => k.checked_add(w),
                _ => None,
            };
            match next {
                Some(n) if n <= hi => c.lo = n,
                _ => c.done = true,
            }
            c.buf = page.into();
        }
        Ok(c.buf.front().map(|(k, _)| *k))
    }
}

impl Rows for PartialRows<'_> {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        let mut key: Option<i64> = None;
        for i in 0..self.cursors.len() {
            if let Some(k) = self.head(i)? {
                key = Some(key.map_or(k, |m| m.min(k)));
            }
        }
        let Some(key) = key else { return Ok(None) };
        let mut first_ts: Option<i64> = None;
        let mut combined: Vec<Combined> = (0..self.fields).map(|_| Combined::default()).collect();
        for c in &mut self.cursors {
            if c.buf.front().is_some_and(|(k, _)| *k == key)
                && let Some((_, p)) = c.buf.pop_front()
            {
                if p.count > 0 {
                    first_ts = Some(first_ts.map_or(p.first_ts, |f| f.min(p.first_ts)));
                }
                self.ctx.raw.set(self.ctx.raw.get() + p.count);
                if let Some(acc) = combined.get_mut(c.field) {
                    acc.add(self.kind, p);
                }
            }
        }
        let values = combined
            .into_iter()
            .map(|c| c.finish(self.agg.kind))
            .collect();
        let ts = match self.agg.sampling_ms {
            Some(_) => key,
            None => first_ts.unwrap_or(key),
        };
        Ok(Some(Row { ts, values }))
    }
}

/// A windowed aggregator over an ascending row stream.
struct Window<'a> {
    input: Box<dyn Rows + 'a>,
    agg: Aggregator,
    fields: usize,
    /// The current window's timestamp and accumulators.
    cur: Option<(i64, i64, Vec<Acc>)>,
    done: bool,
}

impl Window<'_> {
    fn start_of(&self, ts: i64) -> i64 {
        match self.agg.sampling_ms {
            Some(s) if s > 0 => ts.div_euclid(s).saturating_mul(s),
            _ => i64::MIN,
        }
    }
}

impl Rows for Window<'_> {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        while !self.done {
            let Some(row) = self.input.next_row()? else {
                self.done = true;
                break;
            };
            let key = self.start_of(row.ts);
            let emit = match &self.cur {
                Some((k, _, _)) if *k == key => None,
                _ => {
                    let ts = if self.agg.sampling_ms.is_some() {
                        key
                    } else {
                        row.ts
                    };
                    let fresh = (key, ts, (0..self.fields).map(|_| Acc::default()).collect());
                    self.cur.replace(fresh)
                }
            };
            if let Some((_, ts, accs)) = &mut self.cur {
                let rel = row.ts.saturating_sub(*ts) as f64;
                if self.agg.sampling_ms.is_none() && self.agg.kind == AggregatorKind::Last {
                    // The whole range's Last: the time of the last point.
                    *ts = row.ts;
                }
                for (acc, v) in accs.iter_mut().zip(row.values) {
                    if let Some(v) = v {
                        acc.push(self.agg.kind, rel, v);
                    }
                }
            }
            if let Some(out) = emit.and_then(|(_, ts, accs)| self.finish(ts, accs)) {
                return Ok(Some(out));
            }
        }
        match self.cur.take() {
            Some((_, ts, accs)) => Ok(self.finish(ts, accs)),
            None => Ok(None),
        }
    }
}

impl Window<'_> {
    fn finish(&self, ts: i64, accs: Vec<Acc>) -> Option<Row> {
        let values: Vec<Option<PointValue>> =
            accs.into_iter().map(|a| a.finish(&self.agg)).collect();
        values
            .iter()
            .any(Option::is_some)
            .then_some(Row { ts, values })
    }
}

/// A point-wise aggregator (Diff, Div, Multiply, Rate) over an ascending row stream.
struct PointWise<'a> {
    input: Box<dyn Rows + 'a>,
    agg: Aggregator,
    /// Per field: the previous input value and its timestamp.
    prev: Vec<Option<(i64, PointValue)>>,
}

impl Rows for PointWise<'_> {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        use AggregatorKind as K;
        let param = self.agg.param.unwrap_or(1.0);
        while let Some(row) = self.input.next_row()? {
            let ts = row.ts;
            let mut values = Vec::with_capacity(row.values.len());
            for (i, v) in row.values.into_iter().enumerate() {
                let Some(v) = v else {
                    values.push(None);
                    continue;
                };
                let out = match self.agg.kind {
                    K::Div => v.as_f64().map(|f| PointValue::Double(f / param)),
                    K::Multiply => v.as_f64().map(|f| PointValue::Double(f * param)),
                    _ => {
                        let prev = self
                            .prev
                            .get_mut(i)
                            .and_then(|p| p.replace((ts, v.clone())));
                        match prev {
                            None => None,
                            Some((pts, pv)) => {
                                let diff = match (&v, &pv) {
                                    (PointValue::Long(a), PointValue::Long(b)) => {
                                        a.checked_sub(*b).map(PointValue::Long)
                                    }
                                    _ => None,
                                }
                                .or_else(|| Some(PointValue::Double(v.as_f64()? - pv.as_f64()?)));
                                if self.agg.kind == K::Diff {
                                    diff
                                } else if ts == pts {
                                    None
                                } else {
                                    let unit = self.agg.sampling_ms.unwrap_or(1000) as f64;
                                    diff.and_then(|d| d.as_f64()).map(|d| {
                                        PointValue::Double(d / ts.saturating_sub(pts) as f64 * unit)
                                    })
                                }
                            }
                        }
                    }
                };
                values.push(out);
            }
            if values.iter().any(Option::is_some) {
                return Ok(Some(Row { ts, values }));
            }
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Pipelines

/// One sub-group: its series and the values of the query's `tags` keys.
struct Sub<'s> {
    key: Key,
    series: Vec<&'s SeriesInfo>,
}

/// The ascending pipeline of one sub-group over `[lo, hi]`.
fn pipeline<'a>(
    ctx: Ctx<'a>,
    series: &[&SeriesInfo],
    fields: &[Option<(i64, FieldType)>],
    aggs: &[Aggregator],
    lo: i64,
    hi: i64,
) -> Box<dyn Rows + 'a> {
    let edge = aggs.first().filter(|a| {
        matches!(a.kind, AggregatorKind::First | AggregatorKind::Last)
            && a.sampling_ms.is_none()
            && ctx.filter.is_none()
    });
    // Avg, Sum, Count, Min or Max of numbers, raw values unfiltered, and windows whose
    // starts are all representable: the engine computes them.
    let pushed = aggs.first().and_then(|a| {
        let kind = partial_kind(a.kind)?;
        let aligned = match a.sampling_ms {
            Some(w) if w > 0 => lo.div_euclid(w).checked_mul(w).is_some(),
            Some(_) => false,
            None => true,
        };
        let numbers = fields
            .iter()
            .flatten()
            .all(|(_, t)| *t == FieldType::Number);
        (ctx.pushdown && ctx.filter.is_none() && aligned && numbers).then_some((a, kind))
    });
    let (mut stream, rest): (Box<dyn Rows + 'a>, &[Aggregator]) = match (edge, pushed) {
        (_, Some((a, kind))) => (
            Box::new(PartialRows {
                ctx,
                cursors: series
                    .iter()
                    .flat_map(|s| {
                        fields.iter().enumerate().filter_map(|(field, f)| {
                            f.map(|(field_id, _)| WindowCursor {
                                series: s.id,
                                field_id,
                                field,
                                lo,
                                buf: VecDeque::new(),
                                done: lo > hi,
                            })
                        })
                    })
                    .collect(),
                fields: fields.len(),
                agg: a.clone(),
                kind,
                hi,
            }),
            aggs.get(1..).unwrap_or(&[]),
        ),
        (Some(a), None) => (
            Box::new(EdgeRow {
                ctx,
                series: series.iter().map(|s| s.id).collect(),
                fields: fields.to_vec(),
                lo,
                hi,
                last: a.kind == AggregatorKind::Last,
                done: false,
            }),
            aggs.get(1..).unwrap_or(&[]),
        ),
        (None, None) => (
            Box::new(RawRows::new(ctx, series, fields, lo, hi, PointOrder::Asc)),
            aggs,
        ),
    };
    for a in rest {
        stream = if windowed(a.kind) {
            Box::new(Window {
                input: stream,
                agg: a.clone(),
                fields: fields.len(),
                cur: None,
                done: false,
            })
        } else {
            Box::new(PointWise {
                input: stream,
                agg: a.clone(),
                prev: vec![None; fields.len()],
            })
        };
    }
    stream
}

/// The earliest raw timestamp an ascending page resuming after a row at `ts` must read
/// from, so that the rows after it come out as in an unpaged query: the window holding
/// it for windowed aggregators, and the point before for Diff and Rate.
fn resume_start(
    ctx: Ctx<'_>,
    series: &[&SeriesInfo],
    fields: &[Option<(i64, FieldType)>],
    aggs: &[Aggregator],
    start: i64,
    ts: i64,
) -> Result<i64, SeriesError> {
    /// `c` taken down through the windows of `aggs` (last first); `None`: a window
    /// spanning the whole range.
    fn floor(aggs: &[Aggregator], mut c: i64) -> Option<i64> {
        for a in aggs.iter().rev() {
            if windowed(a.kind) {
                match a.sampling_ms {
                    Some(s) if s > 0 => c = c.div_euclid(s).saturating_mul(s),
                    _ => return None,
                }
            }
        }
        Some(c)
    }
    let mut c = ts;
    for i in (0..aggs.len()).rev() {
        let Some(a) = aggs.get(i) else { continue };
        let before = aggs.get(..i).unwrap_or(&[]);
        if windowed(a.kind) {
            match a.sampling_ms {
                Some(s) if s > 0 => c = c.div_euclid(s).saturating_mul(s),
                _ => return Ok(start),
            }
        } else if matches!(a.kind, AggregatorKind::Diff | AggregatorKind::Rate) {
            let Some(raw) = floor(before, c) else {
                return Ok(start);
            };
            // The point before `raw` of each field (the latest one passing the filter),
            // and the earliest of those.
            let mut earliest: Option<i64> = None;
            for f in fields {
                let Some((field_id, _)) = f else { continue };
                let mut latest: Option<i64> = None;
                for s in series {
                    let mut hi = raw.saturating_sub(1);
                    // Without a filter the first point is the one.
                    let step = if ctx.filter.is_some() { ctx.page } else { 1 };
                    'pages: while hi >= start {
                        let page =
                            ctx.src
                                .points(s.id, *field_id, start, hi, PointOrder::Desc, step)?;
                        ctx.raw.set(ctx.raw.get() + page.len() as u64);
                        for (t, v) in &page {
                            if passes(ctx.filter, v) {
                                latest = Some(latest.map_or(*t, |l| l.max(*t)));
                                break 'pages;
                            }
                        }
                        match page.last() {
                            Some((t, _)) if page.len() == step => hi = t.saturating_sub(1),
                            _ => break,
                        }
                    }
                }
                if let Some(l) = latest {
                    earliest = Some(earliest.map_or(l, |e| e.min(l)));
                }
            }
            c = earliest.unwrap_or(raw);
        }
    }
    Ok(c.max(start))
}

/// The latest raw timestamp the rows up to one at `ts` depend on (for descending pages):
/// the end of the window holding it, through every windowed aggregator.
fn resume_end(aggs: &[Aggregator], end: i64, ts: i64) -> i64 {
    let mut c = ts;
    for a in aggs.iter().rev() {
        if windowed(a.kind) {
            match a.sampling_ms {
                Some(s) if s > 0 => c = c.div_euclid(s).saturating_mul(s).saturating_add(s - 1),
                _ => return end,
            }
        }
    }
    c.min(end)
}

/// A sub-group's rows in the query's order, numbered, after the marker.
struct SubStream<'a> {
    rows: Box<dyn Rows + 'a>,
    /// Rows computed and numbered already (descending aggregated pages), instead of `rows`.
    numbered: Option<VecDeque<(Row, u64)>>,
    after: Option<After>,
    last_ts: Option<i64>,
    n: u64,
}

impl SubStream<'_> {
    fn next(&mut self) -> Result<Option<(Row, u64)>, SeriesError> {
        if let Some(rows) = &mut self.numbered {
            return Ok(rows.pop_front());
        }
        while let Some(row) = self.rows.next_row()? {
            if self.last_ts == Some(row.ts) {
                self.n += 1;
            } else {
                self.last_ts = Some(row.ts);
                self.n = 0;
            }
            if self.after.is_none_or(|a| a.passes(row.ts, self.n)) {
                return Ok(Some((row, self.n)));
            }
        }
        Ok(None)
    }
}

/// No rows.
struct NoRows;

impl Rows for NoRows {
    fn next_row(&mut self) -> Result<Option<Row>, SeriesError> {
        Ok(None)
    }
}

/// A sub-group being merged into its group: the stream and its next row.
type Merging<'s, 'a> = (Sub<'s>, SubStream<'a>, Option<(Row, u64)>);

/// Everything a group's streams need.
struct Plan<'q> {
    fields: Vec<Option<(i64, FieldType)>>,
    aggs: &'q [Aggregator],
    start: i64,
    end: i64,
    order: PointOrder,
}

/// The stream of one sub-group, resuming after the marker when `after` is given;
/// `keep` bounds what a descending aggregated stream holds.
fn sub_stream<'a>(
    ctx: Ctx<'a>,
    plan: &Plan<'_>,
    sub: &Sub<'_>,
    after: Option<After>,
    keep: usize,
) -> Result<SubStream<'a>, SeriesError> {
    let fields = plan.fields.as_slice();
    let rows: Box<dyn Rows + 'a> = match (plan.order, plan.aggs.is_empty()) {
        (PointOrder::Asc, _) => {
            let lo = match after {
                Some(a) => resume_start(ctx, &sub.series, fields, plan.aggs, plan.start, a.ts)?,
                None => plan.start,
            };
            pipeline(ctx, &sub.series, fields, plan.aggs, lo, plan.end)
        }
        (PointOrder::Desc, true) => {
            let hi = after.map_or(plan.end, |a| a.ts.min(plan.end));
            Box::new(RawRows::new(
                ctx,
                &sub.series,
                fields,
                plan.start,
                hi,
                PointOrder::Desc,
            ))
        }
        (PointOrder::Desc, false) => {
            // Compute ascending, keep the newest `keep` rows after the marker (in the
            // descending order), hand them out newest first.
            let hi = match after {
                Some(a) => resume_end(plan.aggs, plan.end, a.ts),
                None => plan.end,
            };
            let mut asc = pipeline(ctx, &sub.series, fields, plan.aggs, plan.start, hi);
            let mut kept: VecDeque<(Row, u64)> = VecDeque::new();
            let mut same: Vec<Row> = Vec::new();
            // `kept` is the descending order reversed: ascending by ts, and rows of one ts
            // from the last numbered to the first (so the front is what goes first).
            let flush = |same: &mut Vec<Row>, kept: &mut VecDeque<(Row, u64)>| {
                let count = same.len();
                for (i, row) in same.drain(..).enumerate() {
                    // numbered in descending order: the last computed is 0
                    let n = (count - 1 - i) as u64;
                    if after.is_none_or(|a| a.passes(row.ts, n)) {
                        kept.push_back((row, n));
                        if kept.len() > keep {
                            kept.pop_front();
                        }
                    }
                }
            };
            while let Some(row) = asc.next_row()? {
                if same.last().is_some_and(|r| r.ts != row.ts) {
                    flush(&mut same, &mut kept);
                }
                same.push(row);
            }
            flush(&mut same, &mut kept);
            let out: VecDeque<(Row, u64)> = kept.into_iter().rev().collect();
            return Ok(SubStream {
                rows: Box::new(NoRows),
                numbered: Some(out),
                after: None,
                last_ts: None,
                n: 0,
            });
        }
    };
    Ok(SubStream {
        rows,
        numbered: None,
        after,
        last_ts: None,
        n: 0,
    })
}

fn key_of(tags: &Tags, keys: &[String]) -> Key {
    keys.iter().map(|k| tags.get(k).cloned()).collect()
}

fn check_aggregators(
    q: &PointQuery,
    fields: &[String],
    metric: Option<&MetricInfo>,
) -> Result<(), SeriesError> {
    use AggregatorKind as K;
    for a in &q.aggregators {
        if let Some(s) = a.sampling_ms
            && s <= 0
        {
            return Err(SeriesError::InvalidQuery(format!(
                "aggregator {:?}: sampling must be a positive number of ms, not {s}",
                a.kind
            )));
        }
        match a.kind {
            K::Percentile => match a.param {
                Some(p) if (0.0..=100.0).contains(&p) => {}
                _ => {
                    return Err(SeriesError::InvalidQuery(
                        "aggregator Percentile needs a percentile between 0 and 100".into(),
                    ));
                }
            },
            K::Div => match a.param {
                Some(p) if p != 0.0 && p.is_finite() => {}
                _ => {
                    return Err(SeriesError::InvalidQuery(
                        "aggregator Div needs a non-zero divisor".into(),
                    ));
                }
            },
            K::Multiply => match a.param {
                Some(p) if p.is_finite() => {}
                _ => {
                    return Err(SeriesError::InvalidQuery(
                        "aggregator Multiply needs a factor".into(),
                    ));
                }
            },
            _ => {}
        }
    }
    // Text values only go through Count, First and Last (Count makes numbers of them).
    let Some(metric) = metric else { return Ok(()) };
    for name in fields {
        let Some((_, mut ty)) = metric.fields.get(name).copied() else {
            continue;
        };
        for a in &q.aggregators {
            ty = match (a.kind, ty) {
                (K::Count, _) => FieldType::Number,
                (K::First | K::Last, t) => t,
                (_, FieldType::Number) => FieldType::Number,
                (kind, FieldType::String) => {
                    return Err(SeriesError::InvalidQuery(format!(
                        "aggregator {kind:?} needs numbers, but field {name:?} of metric {:?} \
                         holds strings (only Count, First and Last take strings)",
                        q.metric
                    )));
                }
            };
        }
    }
    Ok(())
}

/// Runs `q` over `src`, returning at most `limit` value rows (all groups together; the
/// caller has applied its default and maximum; 0 is taken as 1).
pub(crate) fn run_query(
    src: &dyn PointSource,
    q: &PointQuery,
    limit: usize,
) -> Result<PointResult, SeriesError> {
    run_query_with(src, q, limit, src.aggregates() && pushdown_enabled())
}

thread_local! {
    static PUSHDOWN: Cell<bool> = const { Cell::new(true) };
}

fn pushdown_enabled() -> bool {
    PUSHDOWN.with(Cell::get)
}

/// Turns off (or on again) the engines' own aggregation ([`PointSource::partial`]) for
/// the queries this thread runs, so that tests can compare it with the scan.
pub(crate) fn set_pushdown(on: bool) {
    PUSHDOWN.with(|p| p.set(on));
}

/// [`run_query`], with windowed Avg, Sum, Count, Min and Max computed by the engine when
/// `pushdown` (which the engine must support) and by reading the points otherwise.
pub(crate) fn run_query_with(
    src: &dyn PointSource,
    q: &PointQuery,
    limit: usize,
    pushdown: bool,
) -> Result<PointResult, SeriesError> {
    if q.start > q.end {
        return Err(SeriesError::InvalidQuery(format!(
            "start ({}) is after end ({})",
            q.start, q.end
        )));
    }
    let limit = limit.max(1);
    let marker = q.marker.as_deref().map(Marker::decode).transpose()?;
    if let Some(m) = &marker
        && (m.group.len() != q.group_by.len() || m.sub.len() != q.tags.len())
    {
        return Err(bad_marker());
    }
    let fields: Vec<String> = if q.fields.is_empty() {
        vec![DEFAULT_FIELD.to_owned()]
    } else {
        q.fields.clone()
    };
    let metric = src.metric(&q.metric)?;
    check_aggregators(q, &fields, metric.as_ref())?;
    let mut result = PointResult {
        metric: q.metric.clone(),
        fields: fields.clone(),
        groups: Vec::new(),
        raw_count: 0,
        truncated: false,
        next_marker: None,
    };
    let Some(metric) = metric else {
        return Ok(result);
    };
    let field_ids: Vec<Option<(i64, FieldType)>> = fields
        .iter()
        .map(|f| metric.fields.get(f).copied())
        .collect();
    if field_ids.iter().all(Option::is_none) {
        return Ok(result);
    }
    let all = src.series(&metric, &q.tag_filter)?;
    let mut groups: BTreeMap<Key, BTreeMap<Key, Vec<&SeriesInfo>>> = BTreeMap::new();
    for s in &all {
        groups
            .entry(key_of(&s.tags, &q.group_by))
            .or_default()
            .entry(key_of(&s.tags, &q.tags))
            .or_default()
            .push(s);
    }
    let raw = Cell::new(0u64);
    let base = Ctx {
        src,
        raw: &raw,
        filter: q.value_filter.as_ref(),
        page: PAGE,
        pushdown,
    };
    let known_fields = field_ids.iter().filter(|f| f.is_some()).count();
    let plan = Plan {
        fields: field_ids,
        aggs: &q.aggregators,
        start: q.start,
        end: q.end,
        order: q.order,
    };
    let mut given = 0usize;
    let mut last: Option<Marker> = None;
    'groups: for (gkey, subs) in &groups {
        let in_marker_group = match &marker {
            Some(m) if *gkey < m.group => continue,
            Some(m) => *gkey == m.group,
            None => false,
        };
        let series_in_group: usize = subs.values().map(Vec::len).sum();
        let ctx = Ctx {
            page: page_size(series_in_group.saturating_mul(known_fields)),
            ..base
        };
        let mut streams: Vec<Merging<'_, '_>> = Vec::new();
        for (skey, series) in subs {
            let after = match &marker {
                Some(m) if in_marker_group => Some(After {
                    ts: m.ts,
                    at_ts: match skey.cmp(&m.sub) {
                        std::cmp::Ordering::Less => AtTs::None,
                        std::cmp::Ordering::Equal => AtTs::After(m.n),
                        std::cmp::Ordering::Greater => AtTs::All,
                    },
                    order: q.order,
                }),
                _ => None,
            };
            let sub = Sub {
                key: skey.clone(),
                series: series.clone(),
            };
            let mut stream = sub_stream(ctx, &plan, &sub, after, limit - given + 1)?;
            let head = stream.next()?;
            streams.push((sub, stream, head));
        }
        let gtags: Tags = q
            .group_by
            .iter()
            .zip(gkey)
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        let mut group = PointGroup {
            tags: gtags,
            values: Vec::new(),
        };
        loop {
            // The stream whose head comes first: timestamp in the query's order, then
            // sub-group order (streams are in sub-group order).
            let mut best: Option<(usize, i64)> = None;
            for (i, (_, _, head)) in streams.iter().enumerate() {
                if let Some((row, _)) = head {
                    let better = match (best, q.order) {
                        (None, _) => true,
                        (Some((_, b)), PointOrder::Asc) => row.ts < b,
                        (Some((_, b)), PointOrder::Desc) => row.ts > b,
                    };
                    if better {
                        best = Some((i, row.ts));
                    }
                }
            }
            let Some((i, _)) = best else { break };
            if given == limit {
                result.truncated = true;
                break;
            }
            let Some((sub, stream, head)) = streams.get_mut(i) else {
                break;
            };
            let Some((row, n)) = head.take() else { break };
            *head = stream.next()?;
            last = Some(Marker {
                group: gkey.clone(),
                sub: sub.key.clone(),
                ts: row.ts,
                n,
            });
            group.values.push(PointRow {
                timestamp: row.ts,
                values: row.values,
                tags: sub.key.clone(),
            });
            given += 1;
        }
        if !group.values.is_empty() {
            result.groups.push(group);
        }
        if result.truncated {
            break 'groups;
        }
        if given == limit {
            // Any row in a later group?
            let later = groups.range::<Key, _>((
                std::ops::Bound::Excluded(gkey.clone()),
                std::ops::Bound::Unbounded,
            ));
            for (_, subs) in later {
                for series in subs.values() {
                    let sub = Sub {
                        key: Vec::new(),
                        series: series.clone(),
                    };
                    let ctx = Ctx {
                        page: page_size(series.len().saturating_mul(known_fields)),
                        ..base
                    };
                    if sub_stream(ctx, &plan, &sub, None, 1)?.next()?.is_some() {
                        result.truncated = true;
                        break 'groups;
                    }
                }
            }
            break 'groups;
        }
    }
    if result.truncated {
        result.next_marker = last.map(|m| m.encode());
    }
    result.raw_count = raw.get();
    Ok(result)
}

/// Hands every point of `metrics` (all when empty) with `start <= ts <= end` to `each`,
/// metric by metric, series by series (id order), field by field (name order), in time
/// order, reading `page` points at a time; stops when `each` returns false. Returns how
/// many were handed over.
pub(crate) fn export(
    src: &dyn PointSource,
    metrics: &[String],
    start: i64,
    end: i64,
    page: usize,
    each: &mut dyn FnMut(Datapoint) -> bool,
) -> Result<u64, SeriesError> {
    let page = page.max(1);
    let names = if metrics.is_empty() {
        src.metrics()?
    } else {
        metrics.to_vec()
    };
    let mut count = 0u64;
    for name in names {
        let Some(metric) = src.metric(&name)? else {
            continue;
        };
        for series in src.series(&metric, &BTreeMap::new())? {
            for (field, (field_id, _)) in &metric.fields {
                let mut lo = start;
                while lo <= end {
                    let points =
                        src.points(series.id, *field_id, lo, end, PointOrder::Asc, page)?;
                    let full = points.len() == page;
                    let mut next = None;
                    for (ts, value) in points {
                        next = ts.checked_add(1);
                        count += 1;
                        let go = each(Datapoint {
                            metric: metric.name.clone(),
                            field: field.clone(),
                            tags: series.tags.clone(),
                            timestamp: ts,
                            value,
                        });
                        if !go {
                            return Ok(count);
                        }
                    }
                    match next {
                        Some(n) if full => lo = n,
                        _ => break,
                    }
                }
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;
    use std::cell::RefCell;

    /// An in-memory [`PointSource`] (the reference for the trait's contract) that counts
    /// the calls made to it and the points it hands out.
    struct Mem {
        metric: MetricInfo,
        series: Vec<SeriesInfo>,
        /// (series, field) → points in time order
        points: BTreeMap<(i64, i64), Vec<(i64, PointValue)>>,
        calls: RefCell<Vec<(i64, usize, usize)>>,
        /// What [`PointSource::aggregates`] answers (its partials are the default's).
        aggregates: bool,
    }

    impl Mem {
        /// `n` series (`dev` = d0, d1, ...) of `per` points each, 1 s apart, value = index.
        fn new(n: i64, per: i64) -> Mem {
            let metric = MetricInfo {
                id: 1,
                name: "m".into(),
                fields: BTreeMap::from([(DEFAULT_FIELD.to_owned(), (7, FieldType::Number))]),
            };
            let series = (0..n)
                .map(|id| SeriesInfo {
                    id,
                    tags: Tags::from([("dev".to_owned(), format!("d{id}"))]),
                })
                .collect();
            let points = (0..n)
                .map(|id| {
                    let pts = (0..per).map(|i| (i * 1_000, PointValue::Long(i))).collect();
                    ((id, 7), pts)
                })
                .collect();
            Mem {
                metric,
                series,
                points,
                calls: RefCell::new(Vec::new()),
                aggregates: false,
            }
        }

        fn handed_out(&self) -> usize {
            self.calls.borrow().iter().map(|c| c.2).sum()
        }
    }

    impl PointSource for Mem {
        fn aggregates(&self) -> bool {
            self.aggregates
        }
        fn metrics(&self) -> Result<Vec<String>, SeriesError> {
            Ok(vec![self.metric.name.clone()])
        }
        fn metric(&self, name: &str) -> Result<Option<MetricInfo>, SeriesError> {
            Ok((name == self.metric.name).then(|| self.metric.clone()))
        }
        fn series(
            &self,
            _metric: &MetricInfo,
            tag_filter: &BTreeMap<String, Vec<String>>,
        ) -> Result<Vec<SeriesInfo>, SeriesError> {
            Ok(self
                .series
                .iter()
                .filter(|s| {
                    tag_filter
                        .iter()
                        .all(|(k, vs)| s.tags.get(k).is_some_and(|v| vs.contains(v)))
                })
                .cloned()
                .collect())
        }
        fn points(
            &self,
            series: i64,
            field: i64,
            start: i64,
            end: i64,
            order: PointOrder,
            limit: usize,
        ) -> Result<Vec<(i64, PointValue)>, SeriesError> {
            let all = self
                .points
                .get(&(series, field))
                .cloned()
                .unwrap_or_default();
            let inside = all.into_iter().filter(|(t, _)| *t >= start && *t <= end);
            let out: Vec<_> = match order {
                PointOrder::Asc => inside.take(limit).collect(),
                PointOrder::Desc => {
                    let mut v: Vec<_> = inside.collect();
                    v.reverse();
                    v.truncate(limit);
                    v
                }
            };
            self.calls.borrow_mut().push((series, limit, out.len()));
            Ok(out)
        }
    }

    fn q() -> PointQuery {
        PointQuery {
            metric: "m".into(),
            start: 0,
            end: i64::MAX,
            ..PointQuery::default()
        }
    }

    #[test]
    fn a_small_page_reads_a_bounded_number_of_points() {
        let src = Mem::new(1, 100_000);
        let r = run_query(
            &src,
            &PointQuery {
                limit: Some(10),
                ..q()
            },
            10,
        )
        .unwrap();
        assert!(r.truncated);
        assert_eq!(r.groups[0].values.len(), 10);
        // One read of one page, not the series.
        assert!(src.handed_out() <= PAGE, "{}", src.handed_out());
        assert_eq!(r.raw_count as usize, src.handed_out());
    }

    #[test]
    fn many_series_in_one_group_read_small_pages() {
        let src = Mem::new(1_000, 200);
        let r = run_query(&src, &q(), 100).unwrap();
        assert_eq!(r.groups[0].values.len(), 100);
        // Every cursor reads at most a share of the group budget.
        assert!(src.calls.borrow().iter().all(|c| c.1 <= page_size(1_000)));
        assert!(src.handed_out() <= GROUP_BUDGET + 1_000 * MIN_PAGE);
    }

    #[test]
    fn last_of_each_series_is_seeks_not_scans() {
        let src = Mem::new(50, 1_000);
        let query = PointQuery {
            group_by: vec!["dev".into()],
            aggregators: vec![Aggregator {
                kind: AggregatorKind::Last,
                sampling_ms: None,
                param: None,
            }],
            ..q()
        };
        let r = run_query(&src, &query, 1_000).unwrap();
        assert_eq!(r.groups.len(), 50);
        // The value and the time of each series' last point.
        assert!(r.groups.iter().all(|g| g.values[0].timestamp == 999_000
            && g.values[0].values[0] == Some(PointValue::Long(999))));
        // One one-point read per series.
        assert!(src.calls.borrow().iter().all(|c| c.1 == 1));
        assert_eq!(src.handed_out(), 50);
    }

    #[test]
    fn engine_aggregation_does_not_read_per_empty_window() {
        // 3 series of 50 points 1 s apart; windows of 10 ms: 50 full ones, 99 empty
        // between each two.
        let mut src = Mem::new(3, 50);
        src.aggregates = true;
        let query = PointQuery {
            aggregators: vec![Aggregator {
                kind: AggregatorKind::Sum,
                sampling_ms: Some(10),
                param: None,
            }],
            ..q()
        };
        let pushed = run_query(&src, &query, 1_000).unwrap();
        let rows = &pushed.groups[0].values;
        assert_eq!(rows.len(), 50);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(i, r)| r.timestamp == i as i64 * 1_000
                    && r.values[0] == Some(PointValue::Long(3 * i as i64)))
        );
        // Per series: 4 windows one by one (a partial each, and a seek over the empty
        // ones after it), which find 1 point a window; then the rest from one read of
        // points. Not a read per window, nor per empty window.
        assert!(
            src.calls.borrow().len() <= 3 * 11,
            "{}",
            src.calls.borrow().len()
        );
        let scanned = run_query_with(&src, &query, 1_000, false).unwrap();
        assert_eq!(pushed.groups, scanned.groups);
    }

    #[test]
    fn a_diff_page_starts_one_point_before_the_marker() {
        let src = Mem::new(1, 10_000);
        let mut query = PointQuery {
            aggregators: vec![Aggregator {
                kind: AggregatorKind::Diff,
                sampling_ms: None,
                param: None,
            }],
            limit: Some(100),
            ..q()
        };
        let first = run_query(&src, &query, 100).unwrap();
        query.marker = first.next_marker;
        src.calls.borrow_mut().clear();
        let second = run_query(&src, &query, 100).unwrap();
        let rows = &second.groups[0].values;
        // Diff of consecutive values is 1 from the first row of the page on.
        assert_eq!(rows[0].timestamp, 101_000);
        assert!(
            rows.iter()
                .all(|r| r.values[0] == Some(PointValue::Long(1)))
        );
        // Not read from the start of the range again.
        assert!(src.handed_out() <= PAGE + 1, "{}", src.handed_out());
    }

    #[test]
    fn markers_round_trip_and_garbage_is_refused() {
        let m = Marker {
            group: vec![Some("a".into()), None],
            sub: vec![],
            ts: -5,
            n: 3,
        };
        assert_eq!(Marker::decode(&m.encode()).unwrap(), m);
        for bad in [
            "",
            "zz",
            "abc",
            "7b7d",
            "5b315d",
            "5b5b5d2c5b5d2c312c2d315d",
        ] {
            assert!(
                matches!(Marker::decode(bad), Err(SeriesError::InvalidQuery(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn percentile_interpolates_between_ranks() {
        let agg = Aggregator {
            kind: AggregatorKind::Percentile,
            sampling_ms: None,
            param: Some(50.0),
        };
        let mut acc = Acc::default();
        for v in [4, 1, 3, 2] {
            acc.push(agg.kind, 0.0, PointValue::Long(v));
        }
        assert_eq!(acc.finish(&agg), Some(PointValue::Double(2.5)));
    }

    #[test]
    fn least_squares_evaluates_the_line_at_the_window_start() {
        let agg = Aggregator {
            kind: AggregatorKind::LeastSquares,
            sampling_ms: Some(10),
            param: None,
        };
        let mut acc = Acc::default();
        // v = 5 + 2t
        for t in [1.0, 2.0, 4.0] {
            acc.push(agg.kind, t, PointValue::Double(5.0 + 2.0 * t));
        }
        match acc.finish(&agg) {
            Some(PointValue::Double(v)) => assert!((v - 5.0).abs() < 1e-9, "{v}"),
            other => panic!("{other:?}"),
        }
    }
}
