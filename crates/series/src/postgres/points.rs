//! Datapoints in PostgreSQL: the catalog (`midge_metrics`, `midge_fields`,
//! `midge_point_series` with its tags in `midge_series_tags`) and the points
//! (`midge_points`, keyed `(series_id, field_id, ts)`, written with `ON CONFLICT DO
//! UPDATE`). Queries and exports run the engine-independent logic of
//! [`crate::points::query`] over a [`PointSource`] reading one `REPEATABLE READ` snapshot.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use postgres::{Statement, Transaction};
use tracing::debug;

use super::{Conn, Postgres, lock};
use crate::SeriesError;
use crate::points::query::{export, run_query};
use crate::points::source::{MetricInfo, PointSource, SeriesInfo};
use crate::points::validate::{type_conflict, validate_points};
use crate::points::{Datapoint, FieldType, PointOrder, PointQuery, PointResult, PointValue, Tags};

/// Points read per page by an export.
const EXPORT_PAGE: usize = 1_000;

/// Most catalog ids kept in memory (metrics, fields and series together); past it the
/// cache starts over.
const MAX_CACHED_IDS: usize = 100_000;

/// The datapoint tables, created with the schema. Tag sets and tag values are indexed by
/// their md5 (then compared whole): a B-tree entry holds at most ~2.7 KB, and a tag value
/// may be longer (SQLite takes it).
pub(super) const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS midge_metrics (
        id BIGSERIAL PRIMARY KEY,
        name TEXT COLLATE \"C\" NOT NULL UNIQUE
    );
    CREATE TABLE IF NOT EXISTS midge_fields (
        id BIGSERIAL PRIMARY KEY,
        metric_id BIGINT NOT NULL REFERENCES midge_metrics (id),
        name TEXT COLLATE \"C\" NOT NULL,
        type SMALLINT NOT NULL,
        UNIQUE (metric_id, name)
    );
    CREATE TABLE IF NOT EXISTS midge_point_series (
        id BIGSERIAL PRIMARY KEY,
        metric_id BIGINT NOT NULL REFERENCES midge_metrics (id),
        tags TEXT COLLATE \"C\" NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS midge_point_series_tags
        ON midge_point_series (metric_id, md5(tags));
    CREATE TABLE IF NOT EXISTS midge_series_tags (
        metric_id BIGINT NOT NULL,
        key TEXT COLLATE \"C\" NOT NULL,
        value TEXT COLLATE \"C\" NOT NULL,
        series_id BIGINT NOT NULL REFERENCES midge_point_series (id)
    );
    CREATE INDEX IF NOT EXISTS midge_series_tags_value
        ON midge_series_tags (metric_id, key, md5(value));
    CREATE TABLE IF NOT EXISTS midge_points (
        series_id BIGINT NOT NULL,
        field_id BIGINT NOT NULL,
        ts BIGINT NOT NULL,
        long_value BIGINT,
        double_value DOUBLE PRECISION,
        text_value TEXT,
        PRIMARY KEY (series_id, field_id, ts)
    );
    CREATE INDEX IF NOT EXISTS midge_points_ts ON midge_points (ts);
";

/// Catalog ids known to be committed (a catalog row made by a batch that rolled back is
/// never cached).
#[derive(Debug, Default)]
pub(super) struct IdCache {
    metrics: HashMap<String, i64>,
    fields: HashMap<(i64, String), (i64, FieldType)>,
    series: HashMap<(i64, String), i64>,
}

impl IdCache {
    fn len(&self) -> usize {
        self.metrics.len() + self.fields.len() + self.series.len()
    }
}

fn type_code(t: FieldType) -> i16 {
    match t {
        FieldType::Number => 0,
        FieldType::String => 1,
    }
}

fn code_type(c: i16) -> FieldType {
    if c == 1 {
        FieldType::String
    } else {
        FieldType::Number
    }
}

/// The catalog key of a tag set: its JSON text (keys in order, so one text per set).
fn tags_key(tags: &Tags) -> String {
    serde_json::to_string(tags).unwrap_or_default()
}

/// A point's value from its three columns.
fn value_of(long: Option<i64>, double: Option<f64>, text: Option<String>) -> Option<PointValue> {
    match (long, double, text) {
        (Some(v), _, _) => Some(PointValue::Long(v)),
        (None, Some(v), _) => Some(PointValue::Double(v)),
        (None, None, Some(s)) => Some(PointValue::Text(s)),
        (None, None, None) => None,
    }
}

/// `INSERT ... ON CONFLICT DO NOTHING` then the id: two statements, so that a row another
/// transaction committed meanwhile is seen (READ COMMITTED).
fn upsert_id(
    tx: &mut Transaction<'_>,
    statements: &mut HashMap<String, Statement>,
    insert: &str,
    select: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<postgres::Row, postgres::Error> {
    let ins = Conn::prepare(statements, tx, insert)?;
    tx.execute(&ins, params)?;
    let sel = Conn::prepare(statements, tx, select)?;
    tx.query_one(&sel, params)
}

impl Postgres {
    pub(crate) fn write_points(&self, points: &[Datapoint]) -> Result<(), SeriesError> {
        let types = validate_points(points)?;
        if points.is_empty() {
            return Ok(());
        }
        let op = "writing datapoints";
        let err = self.err(op);
        let mut cache = std::mem::take(&mut *lock(&self.point_ids));
        let result = self.write(op, |conn| {
            let Conn { client, statements } = conn;
            let mut tx = client.transaction().map_err(&err)?;
            let mut new = IdCache::default();
            // metrics
            let mut metric_ids: HashMap<&str, i64> = HashMap::new();
            for p in points {
                if metric_ids.contains_key(p.metric.as_str()) {
                    continue;
                }
                let id = match cache.metrics.get(&p.metric) {
                    Some(&id) => id,
                    None => {
                        let r = upsert_id(
                            &mut tx,
                            statements,
                            "INSERT INTO midge_metrics (name) VALUES ($1) ON CONFLICT DO NOTHING",
                            "SELECT id FROM midge_metrics WHERE name = $1",
                            &[&p.metric],
                        )
                        .map_err(&err)?;
                        let id: i64 = r.try_get(0).map_err(&err)?;
                        new.metrics.insert(p.metric.clone(), id);
                        id
                    }
                };
                metric_ids.insert(&p.metric, id);
            }
            // fields, with their stored type checked
            let mut field_ids: HashMap<(&str, &str), i64> = HashMap::new();
            let mut by_index: Vec<_> = types.iter().collect();
            by_index.sort_by_key(|(_, (index, _))| *index);
            for (&(metric, field), &(index, ty)) in by_index {
                let metric_id = metric_ids.get(metric).copied().unwrap_or_default();
                let key = (metric_id, field.to_owned());
                let (id, stored) = match cache.fields.get(&key) {
                    Some(&f) => f,
                    None => {
                        let r = upsert_id(
                            &mut tx,
                            statements,
                            "INSERT INTO midge_fields (metric_id, name, type) VALUES ($1, $2, $3) \
                             ON CONFLICT DO NOTHING",
                            "SELECT id, type FROM midge_fields WHERE metric_id = $1 AND name = $2 \
                             AND $3::smallint IS NOT NULL",
                            &[&metric_id, &field, &type_code(ty)],
                        )
                        .map_err(&err)?;
                        let f = (
                            r.try_get::<_, i64>(0).map_err(&err)?,
                            code_type(r.try_get(1).map_err(&err)?),
                        );
                        new.fields.insert(key, f);
                        f
                    }
                };
                if stored != ty {
                    let p = points.get(index).ok_or_else(|| {
                        SeriesError::InvalidQuery("datapoint index out of range".into())
                    })?;
                    return Err(type_conflict(index, p, stored));
                }
                field_ids.insert((metric, field), id);
            }
            // series (and their tags when new)
            let mut series_ids: HashMap<(i64, String), i64> = HashMap::new();
            let mut rows: HashMap<(i64, i64, i64), usize> = HashMap::new();
            for (i, p) in points.iter().enumerate() {
                let metric_id = metric_ids.get(p.metric.as_str()).copied().unwrap_or_default();
                let key = (metric_id, tags_key(&p.tags));
                let series_id = match series_ids.get(&key).or_else(|| cache.series.get(&key)) {
                    Some(&id) => id,
                    None => {
                        let ins = Conn::prepare(
                            statements,
                            &mut tx,
                            "INSERT INTO midge_point_series (metric_id, tags) VALUES ($1, $2) \
                             ON CONFLICT (metric_id, md5(tags)) DO NOTHING RETURNING id",
                        )
                        .map_err(&err)?;
                        let made = tx.query_opt(&ins, &[&metric_id, &key.1]).map_err(&err)?;
                        let id: i64 = match made {
                            Some(r) => {
                                let id: i64 = r.try_get(0).map_err(&err)?;
                                let tag = Conn::prepare(
                                    statements,
                                    &mut tx,
                                    "INSERT INTO midge_series_tags (metric_id, key, value, series_id) \
                                     VALUES ($1, $2, $3, $4)",
                                )
                                .map_err(&err)?;
                                for (k, v) in &p.tags {
                                    tx.execute(&tag, &[&metric_id, k, v, &id]).map_err(&err)?;
                                }
                                id
                            }
                            None => {
                                let sel = Conn::prepare(
                                    statements,
                                    &mut tx,
                                    "SELECT id FROM midge_point_series WHERE metric_id = $1 \
                                     AND md5(tags) = md5($2) AND tags = $2",
                                )
                                .map_err(&err)?;
                                tx.query_one(&sel, &[&metric_id, &key.1])
                                    .map_err(&err)?
                                    .try_get(0)
                                    .map_err(&err)?
                            }
                        };
                        new.series.insert(key.clone(), id);
                        id
                    }
                };
                series_ids.insert(key, series_id);
                let field_id = field_ids
                    .get(&(p.metric.as_str(), p.field.as_str()))
                    .copied()
                    .unwrap_or_default();
                // the last of several points with one key wins, as if written one by one
                rows.insert((series_id, field_id, p.timestamp), i);
            }
            let mut order: Vec<((i64, i64, i64), usize)> = rows.into_iter().collect();
            order.sort_by_key(|(_, i)| *i);
            let n = order.len();
            let (mut sids, mut fids, mut tss) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut longs, mut doubles, mut texts) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for ((s, f, t), i) in order {
                sids.push(s);
                fids.push(f);
                tss.push(t);
                let (l, d, x) = match points.get(i).map(|p| &p.value) {
                    Some(PointValue::Long(v)) => (Some(*v), None, None),
                    Some(PointValue::Double(v)) => (None, Some(*v), None),
                    Some(PointValue::Text(s)) => (None, None, Some(s.as_str())),
                    None => (None, None, None),
                };
                longs.push(l);
                doubles.push(d);
                texts.push(x);
            }
            let upsert = Conn::prepare(
                statements,
                &mut tx,
                "INSERT INTO midge_points \
                     (series_id, field_id, ts, long_value, double_value, text_value) \
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], \
                                      $5::float8[], $6::text[]) \
                 ON CONFLICT (series_id, field_id, ts) DO UPDATE SET \
                     long_value = EXCLUDED.long_value, \
                     double_value = EXCLUDED.double_value, \
                     text_value = EXCLUDED.text_value",
            )
            .map_err(&err)?;
            tx.execute(&upsert, &[&sids, &fids, &tss, &longs, &doubles, &texts])
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(new)
        });
        if let Ok(new) = &result {
            if cache.len() + new.len() > MAX_CACHED_IDS {
                cache = IdCache::default();
            }
            cache.metrics.extend(new.metrics.clone());
            cache.fields.extend(new.fields.clone());
            cache.series.extend(new.series.clone());
        }
        // another writer may have filled the cache meanwhile: keep the larger one
        let mut shared = lock(&self.point_ids);
        if shared.len() <= cache.len() {
            *shared = cache;
        }
        drop(shared);
        result.map(|_| debug!(points = points.len(), "datapoints written"))
    }

    pub(crate) fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        self.read("listing metrics", |tx, statements| {
            PgSource::new(self, tx, statements).metrics()
        })
    }

    pub(crate) fn metric_fields(
        &self,
        metric: &str,
    ) -> Result<BTreeMap<String, FieldType>, SeriesError> {
        self.read("listing fields", |tx, statements| {
            let src = PgSource::new(self, tx, statements);
            Ok(src
                .metric(metric)?
                .map(|m| m.fields.into_iter().map(|(k, (_, t))| (k, t)).collect())
                .unwrap_or_default())
        })
    }

    pub(crate) fn metric_tags(
        &self,
        metric: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, SeriesError> {
        let err = self.err("listing tags");
        self.read("listing tags", |tx, statements| {
            let stmt = Conn::prepare(
                statements,
                tx,
                "SELECT t.key, t.value FROM midge_series_tags t \
                 JOIN midge_metrics m ON m.id = t.metric_id \
                 WHERE m.name = $1 GROUP BY t.key, t.value ORDER BY t.key, t.value",
            )
            .map_err(&err)?;
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in tx.query(&stmt, &[&metric]).map_err(&err)? {
                out.entry(r.try_get(0).map_err(&err)?)
                    .or_default()
                    .push(r.try_get(1).map_err(&err)?);
            }
            Ok(out)
        })
    }

    pub(crate) fn query_points(&self, q: &PointQuery) -> Result<PointResult, SeriesError> {
        let limit = self.limit(q.limit);
        self.read("querying datapoints", |tx, statements| {
            run_query(&PgSource::new(self, tx, statements), q, limit)
        })
    }

    pub(crate) fn export_points(
        &self,
        metrics: &[String],
        start: i64,
        end: i64,
        each: &mut dyn FnMut(Datapoint) -> bool,
    ) -> Result<u64, SeriesError> {
        self.read("exporting datapoints", |tx, statements| {
            export(
                &PgSource::new(self, tx, statements),
                metrics,
                start,
                end,
                EXPORT_PAGE,
                each,
            )
        })
    }

    /// Deletes the datapoints older than `cutoff`, in chunks; returns how many.
    pub(crate) fn prune_points(&self, cutoff: i64) -> Result<u64, SeriesError> {
        let op = "deleting old datapoints";
        let err = self.err(op);
        let chunk = self.options().prune_chunk_rows.max(1);
        let chunk_param = i64::try_from(chunk).unwrap_or(i64::MAX);
        let mut total = 0u64;
        loop {
            let deleted = self.write(op, |conn| {
                let Conn { client, statements } = conn;
                let stmt = Conn::prepare(
                    statements,
                    client,
                    "DELETE FROM midge_points WHERE ctid IN \
                     (SELECT ctid FROM midge_points WHERE ts < $1 LIMIT $2)",
                )
                .map_err(&err)?;
                client
                    .execute(&stmt, &[&cutoff, &chunk_param])
                    .map_err(&err)
            })?;
            total += deleted;
            if deleted < chunk as u64 {
                return Ok(total);
            }
            std::thread::sleep(super::rows::PRUNE_PAUSE);
        }
    }
}

/// One snapshot of the datapoints, for the shared query logic.
struct PgSource<'s, 't, 'c> {
    store: &'s Postgres,
    tx: RefCell<&'s mut Transaction<'t>>,
    statements: RefCell<&'c mut HashMap<String, Statement>>,
}

impl<'s, 't, 'c> PgSource<'s, 't, 'c> {
    fn new(
        store: &'s Postgres,
        tx: &'s mut Transaction<'t>,
        statements: &'c mut HashMap<String, Statement>,
    ) -> Self {
        PgSource {
            store,
            tx: RefCell::new(tx),
            statements: RefCell::new(statements),
        }
    }

    fn query(
        &self,
        op: &'static str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>, SeriesError> {
        let err = self.store.err(op);
        let mut tx = self.tx.borrow_mut();
        let mut statements = self.statements.borrow_mut();
        let stmt = Conn::prepare(&mut statements, &mut **tx, sql).map_err(&err)?;
        tx.query(&stmt, params).map_err(&err)
    }
}

impl PointSource for PgSource<'_, '_, '_> {
    fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        let err = self.store.err("listing metrics");
        self.query(
            "listing metrics",
            "SELECT name FROM midge_metrics ORDER BY name",
            &[],
        )?
        .iter()
        .map(|r| r.try_get(0).map_err(&err))
        .collect()
    }

    fn metric(&self, name: &str) -> Result<Option<MetricInfo>, SeriesError> {
        let op = "reading a metric";
        let err = self.store.err(op);
        let rows = self.query(
            op,
            "SELECT m.id, f.name, f.id, f.type FROM midge_metrics m \
             LEFT JOIN midge_fields f ON f.metric_id = m.id WHERE m.name = $1",
            &[&name],
        )?;
        let mut info: Option<MetricInfo> = None;
        for r in &rows {
            let m = info.get_or_insert_with(|| MetricInfo {
                id: r.try_get(0).unwrap_or_default(),
                name: name.to_owned(),
                fields: BTreeMap::new(),
            });
            let field: Option<String> = r.try_get(1).map_err(&err)?;
            if let Some(field) = field {
                let id: i64 = r.try_get(2).map_err(&err)?;
                let ty: i16 = r.try_get(3).map_err(&err)?;
                m.fields.insert(field, (id, code_type(ty)));
            }
        }
        Ok(info)
    }

    fn series(
        &self,
        metric: &MetricInfo,
        tag_filter: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<SeriesInfo>, SeriesError> {
        let op = "listing series";
        let err = self.store.err(op);
        let mut sql =
            String::from("SELECT s.id, s.tags FROM midge_point_series s WHERE s.metric_id = $1");
        let mut params: Vec<Box<dyn postgres::types::ToSql + Sync>> = vec![Box::new(metric.id)];
        for (key, values) in tag_filter {
            params.push(Box::new(key.clone()));
            let k = params.len();
            params.push(Box::new(values.clone()));
            let v = params.len();
            sql.push_str(&format!(
                " AND s.id IN (SELECT series_id FROM midge_series_tags \
                 WHERE metric_id = $1 AND key = ${k}::text \
                 AND md5(value) = ANY(ARRAY(SELECT md5(x) FROM unnest(${v}::text[]) x)) \
                 AND value = ANY(${v}::text[]))"
            ));
        }
        sql.push_str(" ORDER BY s.id");
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| &**p as _).collect();
        let mut out = Vec::new();
        for r in self.query(op, &sql, &refs)? {
            let tags: &str = r.try_get(1).map_err(&err)?;
            out.push(SeriesInfo {
                id: r.try_get(0).map_err(&err)?,
                tags: serde_json::from_str(tags).map_err(|e| SeriesError::Engine {
                    path: self.store.label().to_path_buf(),
                    op,
                    source: Box::new(e),
                })?,
            });
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
        let op = "reading datapoints";
        let err = self.store.err(op);
        let sql = match order {
            PointOrder::Asc => {
                "SELECT ts, long_value, double_value, text_value FROM midge_points \
                 WHERE series_id = $1 AND field_id = $2 AND ts >= $3 AND ts <= $4 \
                 ORDER BY ts ASC LIMIT $5"
            }
            PointOrder::Desc => {
                "SELECT ts, long_value, double_value, text_value FROM midge_points \
                 WHERE series_id = $1 AND field_id = $2 AND ts >= $3 AND ts <= $4 \
                 ORDER BY ts DESC LIMIT $5"
            }
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        for r in self.query(op, sql, &[&series, &field, &start, &end, &limit])? {
            let value = value_of(
                r.try_get(1).map_err(&err)?,
                r.try_get(2).map_err(&err)?,
                r.try_get(3).map_err(&err)?,
            );
            if let Some(v) = value {
                out.push((r.try_get(0).map_err(&err)?, v));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_back_from_their_column() {
        assert_eq!(value_of(Some(3), None, None), Some(PointValue::Long(3)));
        assert_eq!(
            value_of(None, Some(0.5), None),
            Some(PointValue::Double(0.5))
        );
        assert_eq!(
            value_of(None, None, Some("x".into())),
            Some(PointValue::Text("x".into()))
        );
        assert_eq!(value_of(None, None, None), None);
        assert_eq!(code_type(type_code(FieldType::String)), FieldType::String);
        assert_eq!(code_type(type_code(FieldType::Number)), FieldType::Number);
    }

    #[test]
    fn a_tag_set_has_one_key_whatever_the_order_it_was_built_in() {
        let a: Tags = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(tags_key(&a), r#"{"a":"1","b":"2"}"#);
        assert_eq!(tags_key(&Tags::new()), "{}");
    }
}
