//! Datapoints in the SQLite engine.
//!
//! ## Schema (created on the first write, in the same file as the row tables)
//!
//! ```sql
//! tsdb_metric (id INTEGER PRIMARY KEY, name TEXT UNIQUE)
//! tsdb_field  (id INTEGER PRIMARY KEY, metric_id, name, type, UNIQUE (metric_id, name))
//! tsdb_series (id INTEGER PRIMARY KEY, metric_id, tags TEXT, UNIQUE (metric_id, tags))
//! tsdb_tag    (metric_id, key, value, series_id, PRIMARY KEY (all four)) WITHOUT ROWID
//! tsdb_point  (series_id, field_id, ts, value ANY, PRIMARY KEY (series_id, field_id, ts))
//!             WITHOUT ROWID
//! ```
//!
//! `tags` is the canonical JSON of the tag map (keys in order). A point is one row of
//! `tsdb_point`: its key is the clustered B-tree's key, so a series' field is one
//! contiguous range read in time order, and "the last point" is one seek. Values keep
//! their type (`STRICT` table, `ANY` column): INTEGER, REAL or TEXT.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tracing::debug;

use super::query::{self, PAGE};
use super::source::{MetricInfo, Partial, PartialKind, PointSource, SeriesInfo};
use super::validate::{type_conflict, validate_points};
use super::{Datapoint, FieldType, PointOrder, PointQuery, PointResult, PointValue, Tags};
use crate::SeriesError;
use crate::store::{Sqlite, lock};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tsdb_metric (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
CREATE TABLE IF NOT EXISTS tsdb_field (
    id INTEGER PRIMARY KEY,
    metric_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    type INTEGER NOT NULL,
    UNIQUE (metric_id, name)
) STRICT;
CREATE TABLE IF NOT EXISTS tsdb_series (
    id INTEGER PRIMARY KEY,
    metric_id INTEGER NOT NULL,
    tags TEXT NOT NULL,
    UNIQUE (metric_id, tags)
) STRICT;
CREATE TABLE IF NOT EXISTS tsdb_tag (
    metric_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    series_id INTEGER NOT NULL,
    PRIMARY KEY (metric_id, key, value, series_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tsdb_point (
    series_id INTEGER NOT NULL,
    field_id INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    value ANY NOT NULL,
    PRIMARY KEY (series_id, field_id, ts)
) STRICT, WITHOUT ROWID;
";

/// Series ids the writer keeps per metric; past it the metric's cache starts over.
const MAX_CACHED_SERIES: usize = 100_000;

/// Ids the writer has looked up or made, so that a batch does not look them up per point.
/// Cleared when a write fails (its transaction, and the ids it made, were rolled back).
#[derive(Debug, Default)]
pub(crate) struct IdCache {
    /// Whether the datapoint tables exist.
    schema: bool,
    metrics: HashMap<String, MetricIds>,
}

#[derive(Debug)]
struct MetricIds {
    id: i64,
    fields: HashMap<String, (i64, FieldType)>,
    /// Canonical tags → series id.
    series: HashMap<String, i64>,
}

fn type_code(t: FieldType) -> i64 {
    match t {
        FieldType::Number => 0,
        FieldType::String => 1,
    }
}

fn type_of(code: i64) -> FieldType {
    if code == 1 {
        FieldType::String
    } else {
        FieldType::Number
    }
}

/// The canonical text of a tag set (JSON object, keys in order).
fn canonical(tags: &Tags) -> String {
    serde_json::to_string(tags).unwrap_or_default()
}

fn value_of(v: ValueRef<'_>) -> rusqlite::Result<PointValue> {
    Ok(match v {
        ValueRef::Integer(i) => PointValue::Long(i),
        ValueRef::Real(f) => PointValue::Double(f),
        ValueRef::Text(t) => PointValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Null | ValueRef::Blob(_) => {
            return Err(rusqlite::Error::InvalidColumnType(
                0,
                "value".into(),
                v.data_type(),
            ));
        }
    })
}

fn schema_exists(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'tsdb_point'",
    )?
    .query_row([], |r| r.get::<_, i64>(0))
    .map(|n| n > 0)
}

/// The ids of a point's metric, field and series, made when missing. Returns the stored
/// type of the field when it differs from the value's.
fn ids(
    conn: &Connection,
    cache: &mut IdCache,
    p: &Datapoint,
) -> rusqlite::Result<Result<(i64, i64), FieldType>> {
    if !cache.metrics.contains_key(&p.metric) {
        let id: Option<i64> = conn
            .prepare_cached("SELECT id FROM tsdb_metric WHERE name = ?1")?
            .query_row([&p.metric], |r| r.get(0))
            .optional()?;
        let id = match id {
            Some(id) => id,
            None => conn
                .prepare_cached("INSERT INTO tsdb_metric (name) VALUES (?1) RETURNING id")?
                .query_row([&p.metric], |r| r.get(0))?,
        };
        let mut fields = HashMap::new();
        let mut stmt =
            conn.prepare_cached("SELECT name, id, type FROM tsdb_field WHERE metric_id = ?1")?;
        let rows = stmt.query_map([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (name, fid, ty) = row?;
            fields.insert(name, (fid, type_of(ty)));
        }
        cache.metrics.insert(
            p.metric.clone(),
            MetricIds {
                id,
                fields,
                series: HashMap::new(),
            },
        );
    }
    let Some(m) = cache.metrics.get_mut(&p.metric) else {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    };
    let ty = p.value.field_type();
    let field_id = match m.fields.get(&p.field) {
        Some((_, stored)) if *stored != ty => return Ok(Err(*stored)),
        Some((id, _)) => *id,
        None => {
            let id: i64 = conn
                .prepare_cached(
                    "INSERT INTO tsdb_field (metric_id, name, type) VALUES (?1, ?2, ?3) RETURNING id",
                )?
                .query_row(params![m.id, p.field, type_code(ty)], |r| r.get(0))?;
            m.fields.insert(p.field.clone(), (id, ty));
            id
        }
    };
    let tags = canonical(&p.tags);
    let series_id = match m.series.get(&tags) {
        Some(id) => *id,
        None => {
            let found: Option<i64> = conn
                .prepare_cached("SELECT id FROM tsdb_series WHERE metric_id = ?1 AND tags = ?2")?
                .query_row(params![m.id, tags], |r| r.get(0))
                .optional()?;
            let id = match found {
                Some(id) => id,
                None => {
                    let id: i64 = conn
                        .prepare_cached(
                            "INSERT INTO tsdb_series (metric_id, tags) VALUES (?1, ?2) RETURNING id",
                        )?
                        .query_row(params![m.id, tags], |r| r.get(0))?;
                    let mut stmt = conn.prepare_cached(
                        "INSERT OR IGNORE INTO tsdb_tag (metric_id, key, value, series_id) \
                         VALUES (?1, ?2, ?3, ?4)",
                    )?;
                    for (k, v) in &p.tags {
                        stmt.execute(params![m.id, k, v, id])?;
                    }
                    id
                }
            };
            if m.series.len() >= MAX_CACHED_SERIES {
                // Bounded memory for metrics with very many series: start over.
                m.series.clear();
            }
            m.series.insert(tags, id);
            id
        }
    };
    Ok(Ok((series_id, field_id)))
}

/// [`PointSource`] over one SQLite connection inside a read transaction.
struct Source<'c> {
    conn: &'c Connection,
    store: &'c Sqlite,
    /// Whether the datapoint tables exist (none do before the first write).
    ready: bool,
}

impl Source<'_> {
    fn err(&self) -> impl Fn(rusqlite::Error) -> SeriesError + '_ {
        self.store.err("reading datapoints")
    }
}

impl PointSource for Source<'_> {
    fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        if !self.ready {
            return Ok(Vec::new());
        }
        let err = self.err();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM tsdb_metric ORDER BY name")
            .map_err(&err)?;
        stmt.query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(&err)
    }

    fn metric(&self, name: &str) -> Result<Option<MetricInfo>, SeriesError> {
        if !self.ready {
            return Ok(None);
        }
        let err = self.err();
        let id: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM tsdb_metric WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(&err)?;
        let Some(id) = id else { return Ok(None) };
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, id, type FROM tsdb_field WHERE metric_id = ?1")
            .map_err(&err)?;
        let fields = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, i64>(1)?, type_of(r.get::<_, i64>(2)?)),
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
            .map_err(&err)?;
        Ok(Some(MetricInfo {
            id,
            name: name.to_owned(),
            fields,
        }))
    }

    fn series(
        &self,
        metric: &MetricInfo,
        tag_filter: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<SeriesInfo>, SeriesError> {
        if !self.ready {
            return Ok(Vec::new());
        }
        let err = self.err();
        let parse = |id: i64, tags: &str| -> Result<SeriesInfo, SeriesError> {
            let tags: Tags = serde_json::from_str(tags).map_err(|e| SeriesError::Engine {
                path: self.store.path().to_path_buf(),
                op: "reading a series' tags",
                source: Box::new(e),
            })?;
            Ok(SeriesInfo { id, tags })
        };
        if tag_filter.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id, tags FROM tsdb_series WHERE metric_id = ?1 ORDER BY id")
                .map_err(&err)?;
            let rows = stmt
                .query_map([metric.id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&err)?;
            return rows.iter().map(|(id, tags)| parse(*id, tags)).collect();
        }
        // The tag index: the series of each key's values, intersected.
        let mut ids: Option<BTreeSet<i64>> = None;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT series_id FROM tsdb_tag WHERE metric_id = ?1 AND key = ?2 AND value = ?3",
            )
            .map_err(&err)?;
        for (key, values) in tag_filter {
            let mut these = BTreeSet::new();
            for v in values {
                let found = stmt
                    .query_map(params![metric.id, key, v], |r| r.get::<_, i64>(0))
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(&err)?;
                these.extend(found);
            }
            let next: BTreeSet<i64> = match ids {
                None => these,
                Some(prev) => prev.intersection(&these).copied().collect(),
            };
            if next.is_empty() {
                return Ok(Vec::new());
            }
            ids = Some(next);
        }
        let mut get = self
            .conn
            .prepare_cached("SELECT tags FROM tsdb_series WHERE id = ?1")
            .map_err(&err)?;
        let mut out = Vec::new();
        for id in ids.unwrap_or_default() {
            let tags: String = get.query_row([id], |r| r.get(0)).map_err(&err)?;
            out.push(parse(id, &tags)?);
        }
        Ok(out)
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
        if !self.ready || start > end || limit == 0 {
            return Ok(Vec::new());
        }
        let err = self.err();
        let sql = match order {
            PointOrder::Asc => {
                "SELECT ts, value FROM tsdb_point WHERE series_id = ?1 AND field_id = ?2 \
                 AND ts >= ?3 AND ts <= ?4 ORDER BY ts ASC LIMIT ?5"
            }
            PointOrder::Desc => {
                "SELECT ts, value FROM tsdb_point WHERE series_id = ?1 AND field_id = ?2 \
                 AND ts >= ?3 AND ts <= ?4 ORDER BY ts DESC LIMIT ?5"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        let mut rows = stmt
            .query(params![series, field, start, end, limit])
            .map_err(&err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(&err)? {
            let ts: i64 = row.get(0).map_err(&err)?;
            let v = row.get_ref(1).and_then(value_of).map_err(&err)?;
            out.push((ts, v));
        }
        Ok(out)
    }

    fn aggregates(&self) -> bool {
        true
    }

    fn partial(
        &self,
        series: i64,
        field: i64,
        start: i64,
        end: i64,
        kind: PartialKind,
    ) -> Result<Partial, SeriesError> {
        if !self.ready || start > end {
            return Ok(Partial::default());
        }
        let err = self.err();
        // One range of the primary key, aggregated by SQLite. Exact sums of whole numbers
        // are summed as their high and low 32 bits (neither can overflow below 2^31 points).
        let sql = match kind {
            PartialKind::Count => {
                "SELECT count(*), min(ts) FROM tsdb_point \
                 WHERE series_id = ?1 AND field_id = ?2 AND ts >= ?3 AND ts <= ?4"
            }
            PartialKind::Sum => {
                "SELECT count(*), min(ts), total(value) FROM tsdb_point \
                 WHERE series_id = ?1 AND field_id = ?2 AND ts >= ?3 AND ts <= ?4"
            }
            PartialKind::ExactSum => {
                "SELECT count(*), min(ts), total(value), \
                 sum(typeof(value) = 'integer'), \
                 sum(CASE WHEN typeof(value) = 'integer' THEN value >> 32 END), \
                 sum(CASE WHEN typeof(value) = 'integer' THEN value & 4294967295 END) \
                 FROM tsdb_point \
                 WHERE series_id = ?1 AND field_id = ?2 AND ts >= ?3 AND ts <= ?4"
            }
            PartialKind::Min => {
                "SELECT count(*), min(ts), min(value) FROM tsdb_point \
                 WHERE series_id = ?1 AND field_id = ?2 AND ts >= ?3 AND ts <= ?4"
            }
            PartialKind::Max => {
                "SELECT count(*), min(ts), max(value) FROM tsdb_point \
                 WHERE series_id = ?1 AND field_id = ?2 AND ts >= ?3 AND ts <= ?4"
            }
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(&err)?;
        stmt.query_row(params![series, field, start, end], |r| {
            let count: i64 = r.get(0)?;
            let mut p = Partial {
                count: u64::try_from(count).unwrap_or(0),
                ..Partial::default()
            };
            if p.count == 0 {
                return Ok(p);
            }
            p.first_ts = r.get(1)?;
            match kind {
                PartialKind::Count => {}
                PartialKind::Sum => p.sum = r.get(2)?,
                PartialKind::ExactSum => {
                    p.sum = r.get(2)?;
                    let ints: i64 = r.get(3)?;
                    if ints == count {
                        let hi: i64 = r.get(4)?;
                        let lo: i64 = r.get(5)?;
                        p.int_sum = Some(i128::from(hi) * (1i128 << 32) + i128::from(lo));
                    }
                }
                PartialKind::Min | PartialKind::Max => {
                    p.pick = Some(r.get_ref(2).and_then(value_of)?);
                }
            }
            Ok(p)
        })
        .map_err(&err)
    }
}

impl Sqlite {
    /// Runs `f` over a [`PointSource`] reading one snapshot.
    fn with_source<T>(
        &self,
        f: impl FnOnce(&dyn PointSource) -> Result<T, SeriesError>,
    ) -> Result<T, SeriesError> {
        let err = self.err("reading datapoints");
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(&err)?;
            let ready = schema_exists(&tx).map_err(&err)?;
            let src = Source {
                conn: &tx,
                store: self,
                ready,
            };
            let out = f(&src)?;
            tx.commit().map_err(&err)?;
            Ok(out)
        })
    }

    pub(crate) fn write_points(&self, points: &[Datapoint]) -> Result<(), SeriesError> {
        validate_points(points)?;
        if points.is_empty() {
            return Ok(());
        }
        let err = self.err("writing datapoints");
        let mut guard = lock(&self.writer);
        let w = &mut *guard;
        let tx = w
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let cache = &mut w.points;
        let written = (|| -> Result<(), SeriesError> {
            if !cache.schema {
                tx.execute_batch(SCHEMA).map_err(&err)?;
            }
            cache.schema = true;
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO tsdb_point (series_id, field_id, ts, value) \
                     VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(&err)?;
            for (index, p) in points.iter().enumerate() {
                let (series, field) = match ids(&tx, cache, p).map_err(&err)? {
                    Ok(ids) => ids,
                    Err(stored) => return Err(type_conflict(index, p, stored)),
                };
                match &p.value {
                    PointValue::Long(v) => insert.execute(params![series, field, p.timestamp, v]),
                    PointValue::Double(v) => insert.execute(params![series, field, p.timestamp, v]),
                    PointValue::Text(v) => insert.execute(params![series, field, p.timestamp, v]),
                }
                .map_err(&err)?;
            }
            Ok(())
        })();
        let committed = written.and_then(|()| tx.commit().map_err(&err));
        if committed.is_err() {
            // The ids made by this batch were rolled back with it.
            *cache = IdCache::default();
        }
        committed?;
        debug!(points = points.len(), "datapoints written");
        Ok(())
    }

    pub(crate) fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        self.with_source(|s| s.metrics())
    }

    pub(crate) fn metric_fields(
        &self,
        metric: &str,
    ) -> Result<BTreeMap<String, FieldType>, SeriesError> {
        self.with_source(|s| {
            Ok(s.metric(metric)?
                .map(|m| m.fields.into_iter().map(|(k, (_, t))| (k, t)).collect())
                .unwrap_or_default())
        })
    }

    pub(crate) fn metric_tags(
        &self,
        metric: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, SeriesError> {
        let err = self.err("listing tags");
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(&err)?;
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            if schema_exists(&tx).map_err(&err)? {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT DISTINCT t.key, t.value FROM tsdb_tag t \
                         JOIN tsdb_metric m ON m.id = t.metric_id WHERE m.name = ?1 \
                         ORDER BY t.key, t.value",
                    )
                    .map_err(&err)?;
                let rows = stmt
                    .query_map([metric], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                    .map_err(&err)?;
                for (k, v) in rows {
                    out.entry(k).or_default().push(v);
                }
            }
            tx.commit().map_err(&err)?;
            Ok(out)
        })
    }

    pub(crate) fn query_points(&self, q: &PointQuery) -> Result<PointResult, SeriesError> {
        let limit = self.limit(q.limit);
        self.with_source(|s| query::run_query(s, q, limit))
    }

    pub(crate) fn export_points(
        &self,
        metrics: &[String],
        start: i64,
        end: i64,
        each: &mut dyn FnMut(Datapoint) -> bool,
    ) -> Result<u64, SeriesError> {
        self.with_source(|s| query::export(s, metrics, start, end, PAGE, each))
    }

    /// Deletes the datapoints with `ts < before_ms`, series by series and field by field
    /// (a range of the primary key each), in chunks of `chunk` points per transaction.
    pub(crate) fn delete_points_before(
        &self,
        before_ms: i64,
        chunk: usize,
    ) -> Result<u64, SeriesError> {
        let err = self.err("deleting old datapoints");
        let pairs: Vec<(i64, i64)> = self.read(|conn| {
            if !schema_exists(conn).map_err(&err)? {
                return Ok(Vec::new());
            }
            let mut stmt = conn
                .prepare_cached(
                    "SELECT s.id, f.id FROM tsdb_series s JOIN tsdb_field f \
                     ON f.metric_id = s.metric_id ORDER BY s.id, f.id",
                )
                .map_err(&err)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&err)
        })?;
        let chunk = chunk.max(1);
        let chunk_param = i64::try_from(chunk).unwrap_or(i64::MAX);
        let mut total = 0u64;
        for (series, field) in pairs {
            loop {
                let deleted = {
                    let guard = lock(&self.writer);
                    guard
                        .conn
                        .prepare_cached(
                            "DELETE FROM tsdb_point WHERE series_id = ?1 AND field_id = ?2 \
                             AND ts < (SELECT coalesce(max(ts) + 1, ?3) FROM \
                             (SELECT ts FROM tsdb_point WHERE series_id = ?1 AND field_id = ?2 \
                              AND ts < ?3 ORDER BY ts LIMIT ?4))",
                        )
                        .and_then(|mut s| s.execute(params![series, field, before_ms, chunk_param]))
                        .map_err(&err)?
                };
                total += deleted as u64;
                if deleted < chunk {
                    break;
                }
            }
        }
        Ok(total)
    }
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

    #[test]
    fn canonical_tags_do_not_depend_on_insertion_order() {
        let mut a = Tags::new();
        a.insert("b".into(), "2".into());
        a.insert("a".into(), "1".into());
        let mut b = Tags::new();
        b.insert("a".into(), "1".into());
        b.insert("b".into(), "2".into());
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":"1","b":"2"}"#);
    }
}
