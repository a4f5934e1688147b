//! Row tables in PostgreSQL: `series_<name>` (id, ts, topic, client_id, data), the same
//! queries and semantics as the SQLite engine. Topics are `COLLATE "C"` so that ranges
//! and order are byte order, as in SQLite; data is `json`, which keeps the text (and so
//! the key order) as written.

use std::collections::HashMap;
use std::time::Duration;

use postgres::types::ToSql;
use postgres::{GenericClient, Row as PgRow, Statement, Transaction};
use tracing::{debug, info};

use super::{Conn, PAGE, Postgres, SCHEMA_LOCK, relation};
use crate::aggregate::Buckets;
use crate::name::{TableName, json_path};
use crate::topic::TopicMatch;
use crate::{
    Bucket, JsonObject, Order, Row, RowsQuery, SeriesError, SeriesQuery, StoredRow, TableInfo,
    TopicInfo,
};

/// Pause between two prune chunks, so that waiting writers get their turn.
pub(super) const PRUNE_PAUSE: Duration = Duration::from_millis(1);

type Param = Box<dyn ToSql + Sync>;

/// One ordered scan over a table, fetched in pages (keyset on `(ts, id)`).
struct Scan<'q> {
    relation: String,
    /// More columns after `ts, id, topic` (starting with a comma; may use `$1..` of
    /// `leading`).
    columns: &'static str,
    /// Parameters the columns refer to, first in the numbering.
    leading: Vec<String>,
    topic: Option<&'q TopicMatch>,
    client_id: Option<&'q str>,
    since: Option<i64>,
    until: Option<i64>,
    order: Order,
    /// Start after this `(ts, id)` (a page of a longer answer).
    after: Option<(i64, i64)>,
}

impl Scan<'_> {
    fn page(&self, cursor: Option<(i64, i64)>) -> (String, Vec<Param>) {
        let mut params: Vec<Param> = Vec::new();
        for l in &self.leading {
            params.push(Box::new(l.clone()));
        }
        fn bind(v: Param, params: &mut Vec<Param>) -> String {
            params.push(v);
            format!("${}", params.len())
        }
        let mut conds: Vec<String> = Vec::new();
        match self.topic {
            Some(TopicMatch::Exact(t)) => {
                conds.push(format!(
                    "topic = {}",
                    bind(Box::new(t.clone()), &mut params)
                ));
            }
            Some(TopicMatch::Wild {
                lower, upper, like, ..
            }) => {
                if !lower.is_empty() {
                    conds.push(format!(
                        "topic >= {}",
                        bind(Box::new(lower.clone()), &mut params)
                    ));
                }
                if let Some(u) = upper {
                    conds.push(format!(
                        "topic < {}",
                        bind(Box::new(u.clone()), &mut params)
                    ));
                }
                conds.push(format!(
                    "topic LIKE {} ESCAPE '\\'",
                    bind(Box::new(like.clone()), &mut params)
                ));
            }
            None => {}
        }
        if let Some(c) = self.client_id {
            conds.push(format!(
                "client_id = {}",
                bind(Box::new(c.to_owned()), &mut params)
            ));
        }
        if let Some(s) = self.since {
            conds.push(format!("ts >= {}", bind(Box::new(s), &mut params)));
        }
        if let Some(u) = self.until {
            conds.push(format!("ts < {}", bind(Box::new(u), &mut params)));
        }
        let (cmp, dir) = match self.order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some((ts, id)) = cursor {
            let ts = bind(Box::new(ts), &mut params);
            let id = bind(Box::new(id), &mut params);
            conds.push(format!("(ts, id) {cmp} ({ts}, {id})"));
        }
        let mut sql = format!(
            "SELECT ts, id, topic{} FROM {}",
            self.columns, self.relation
        );
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY ts {dir}, id {dir} LIMIT {PAGE}"));
        (sql, params)
    }

    /// Runs the scan, calling `visit` for each row whose topic matches, until it returns
    /// false or the rows run out.
    fn run(
        &self,
        tx: &mut Transaction<'_>,
        statements: &mut HashMap<String, Statement>,
        err: &dyn Fn(postgres::Error) -> SeriesError,
        mut visit: impl FnMut(&PgRow) -> Result<bool, SeriesError>,
    ) -> Result<(), SeriesError> {
        let check = self.topic.filter(|t| t.needs_check());
        let mut cursor = self.after;
        loop {
            let (sql, params) = self.page(cursor);
            let stmt = Conn::prepare(statements, tx, &sql).map_err(err)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            let rows = tx.query(&stmt, &refs).map_err(err)?;
            for row in &rows {
                let ts: i64 = row.try_get(0).map_err(err)?;
                let id: i64 = row.try_get(1).map_err(err)?;
                cursor = Some((ts, id));
                if let Some(m) = check {
                    let topic: &str = row.try_get(2).map_err(err)?;
                    if !m.matches(topic) {
                        continue;
                    }
                }
                if !visit(row)? {
                    return Ok(());
                }
            }
            if rows.len() < PAGE as usize {
                return Ok(());
            }
        }
    }
}

/// Whether `[since, until)` is empty.
fn empty_range(since: Option<i64>, until: Option<i64>) -> bool {
    since.zip(until).is_some_and(|(s, u)| s >= u)
}

/// Creates the table of `name` and registers it in the catalog, unless it is there.
fn ensure_table(tx: &mut impl GenericClient, name: &TableName) -> Result<bool, postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])?;
    let mut none = HashMap::new();
    if Postgres::table_known(tx, &mut none, name)? {
        return Ok(false);
    }
    let t = relation(name);
    tx.batch_execute(&format!(
        "CREATE TABLE {t} (
             id BIGSERIAL PRIMARY KEY,
             ts BIGINT NOT NULL,
             topic TEXT COLLATE \"C\" NOT NULL,
             client_id TEXT COLLATE \"C\" NOT NULL,
             data JSON NOT NULL
         );
         CREATE INDEX ON {t} (topic, ts);
         CREATE INDEX ON {t} (ts, id);"
    ))?;
    tx.execute(
        "INSERT INTO midge_series_tables (name) VALUES ($1)",
        &[&name.as_str()],
    )?;
    Ok(true)
}

impl Postgres {
    pub(crate) fn insert(&self, table: &str, rows: &[Row]) -> Result<(), SeriesError> {
        let name = TableName::new(table)?;
        for (index, row) in rows.iter().enumerate() {
            crate::store::check_topic(index, &row.topic)?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut data = Vec::with_capacity(rows.len());
        for row in rows {
            data.push(
                serde_json::to_string(&row.data).map_err(|e| SeriesError::Engine {
                    path: self.label().to_path_buf(),
                    op: "encoding a row as JSON",
                    source: Box::new(e),
                })?,
            );
        }
        let ts: Vec<i64> = rows.iter().map(|r| r.ts).collect();
        let topics: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
        let clients: Vec<&str> = rows.iter().map(|r| r.client_id.as_str()).collect();
        let sql = format!(
            "INSERT INTO {} (ts, topic, client_id, data) \
             SELECT ts, topic, client_id, data::json \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) \
                  WITH ORDINALITY AS r(ts, topic, client_id, data, n) \
             ORDER BY n",
            relation(&name)
        );
        let op = "inserting rows";
        let err = self.err(op);
        let known = super::lock(&self.known).contains(&name);
        let created = self.write(op, |conn| {
            let Conn { client, statements } = conn;
            let mut tx = client.transaction().map_err(&err)?;
            let created = if known {
                false
            } else {
                ensure_table(&mut tx, &name).map_err(&err)?
            };
            let stmt = Conn::prepare(statements, &mut tx, &sql).map_err(&err)?;
            tx.execute(&stmt, &[&ts, &topics, &clients, &data])
                .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(created)
        })?;
        if !known {
            if created {
                info!(table = name.as_str(), "series table created");
            }
            super::lock(&self.known).insert(name);
        }
        debug!(table, rows = rows.len(), "series rows inserted");
        Ok(())
    }

    pub(crate) fn rows(&self, q: &RowsQuery) -> Result<Vec<StoredRow>, SeriesError> {
        self.rows_after(q, None)
    }

    /// [`Self::rows`] starting after the row `(ts, id)` in the query's order.
    pub(crate) fn rows_after(
        &self,
        q: &RowsQuery,
        after: Option<(i64, i64)>,
    ) -> Result<Vec<StoredRow>, SeriesError> {
        let name = TableName::new(&q.table)?;
        let topic = q.topic.as_deref().map(TopicMatch::new).transpose()?;
        let limit = self.limit(q.limit);
        if limit == 0 || empty_range(q.since, q.until) {
            return Ok(Vec::new());
        }
        let err = self.err("querying rows");
        self.read("querying rows", |tx, statements| {
            if !Self::table_known(tx, statements, &name).map_err(&err)? {
                return Ok(Vec::new());
            }
            let scan = Scan {
                relation: relation(&name),
                columns: ", client_id, data::text",
                leading: Vec::new(),
                topic: topic.as_ref(),
                client_id: q.client_id.as_deref(),
                since: q.since,
                until: q.until,
                order: q.order,
                after,
            };
            let mut out = Vec::new();
            scan.run(tx, statements, &err, |row| {
                let id: i64 = row.try_get(1).map_err(&err)?;
                let text: &str = row.try_get(4).map_err(&err)?;
                let data: JsonObject =
                    serde_json::from_str(text).map_err(|e| SeriesError::CorruptRow {
                        path: self.label().to_path_buf(),
                        table: name.as_str().to_owned(),
                        id,
                        reason: e.to_string(),
                    })?;
                out.push(StoredRow {
                    id,
                    ts: row.try_get(0).map_err(&err)?,
                    topic: row.try_get(2).map_err(&err)?,
                    client_id: row.try_get(3).map_err(&err)?,
                    data,
                });
                Ok(out.len() < limit)
            })?;
            Ok(out)
        })
    }

    pub(crate) fn series(&self, q: &SeriesQuery) -> Result<Vec<Bucket>, SeriesError> {
        let name = TableName::new(&q.table)?;
        // SQLite's JSON path is also a SQL/JSON path; strict: a key on an array or an index
        // on an object finds nothing, as in SQLite.
        let path = format!("strict {}", json_path(&q.field)?);
        let topic = q.topic.as_deref().map(TopicMatch::new).transpose()?;
        let limit = self.limit(q.limit);
        let mut buckets = Buckets::new(q.bucket_ms, q.aggregate, limit);
        if limit == 0 || empty_range(q.since, q.until) {
            return Ok(buckets.finish());
        }
        let err = self.err("querying a series");
        self.read("querying a series", |tx, statements| {
            if !Self::table_known(tx, statements, &name).map_err(&err)? {
                return Ok(());
            }
            let scan = Scan {
                relation: relation(&name),
                // the value's text, read only for the rows of the page (a condition on it
                // would make the planner sort the whole range for every page); JSON null,
                // booleans, objects, arrays and other strings do not parse as a number
                columns: ", jsonb_path_query_first(data::jsonb, $1::text::jsonpath, \
                          '{}'::jsonb, true) #>> '{}'",
                leading: vec![path],
                topic: topic.as_ref(),
                client_id: q.client_id.as_deref(),
                since: q.since,
                until: q.until,
                order: Order::NewestFirst,
                after: None,
            };
            scan.run(tx, statements, &err, |row| {
                let ts: i64 = row.try_get(0).map_err(&err)?;
                let text: Option<&str> = row.try_get(3).map_err(&err)?;
                // numbers as they are, strings when they parse as a finite number
                match text
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .filter(|v| v.is_finite())
                {
                    Some(v) => Ok(buckets.push(ts, v)),
                    None => Ok(true),
                }
            })
        })?;
        Ok(buckets.finish())
    }

    pub(crate) fn tables(&self) -> Result<Vec<TableInfo>, SeriesError> {
        let err = self.err("listing tables");
        self.read("listing tables", |tx, statements| {
            let mut out = Vec::new();
            for name in Self::table_names(tx).map_err(&err)? {
                let sql = format!("SELECT count(*), min(ts), max(ts) FROM {}", relation(&name));
                let stmt = Conn::prepare(statements, tx, &sql).map_err(&err)?;
                let r = tx.query_one(&stmt, &[]).map_err(&err)?;
                out.push(TableInfo {
                    name: name.as_str().to_owned(),
                    rows: u64::try_from(r.try_get::<_, i64>(0).map_err(&err)?).unwrap_or(0),
                    first_ts: r.try_get(1).map_err(&err)?,
                    last_ts: r.try_get(2).map_err(&err)?,
                });
            }
            Ok(out)
        })
    }

    pub(crate) fn has_table(&self, table: &str) -> Result<bool, SeriesError> {
        let name = TableName::new(table)?;
        let err = self.err("looking up a table");
        self.read("looking up a table", |tx, statements| {
            Self::table_known(tx, statements, &name).map_err(&err)
        })
    }

    pub(crate) fn topics(&self, table: &str) -> Result<Vec<TopicInfo>, SeriesError> {
        let name = TableName::new(table)?;
        let max = i64::try_from(self.options().max_rows_per_query).unwrap_or(i64::MAX);
        let err = self.err("listing topics");
        self.read("listing topics", |tx, statements| {
            if !Self::table_known(tx, statements, &name).map_err(&err)? {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT topic, count(*), max(ts) FROM {} GROUP BY topic ORDER BY topic LIMIT $1",
                relation(&name)
            );
            let stmt = Conn::prepare(statements, tx, &sql).map_err(&err)?;
            let mut out = Vec::new();
            for r in tx.query(&stmt, &[&max]).map_err(&err)? {
                out.push(TopicInfo {
                    topic: r.try_get(0).map_err(&err)?,
                    rows: u64::try_from(r.try_get::<_, i64>(1).map_err(&err)?).unwrap_or(0),
                    last_ts: r.try_get(2).map_err(&err)?,
                });
            }
            Ok(out)
        })
    }

    /// The row tables in midge's catalog, in name order.
    pub(crate) fn table_list(&self) -> Result<Vec<String>, SeriesError> {
        let err = self.err("listing tables");
        let names = self.read("listing tables", |tx, _| {
            Self::table_names(tx).map_err(&err)
        })?;
        Ok(names.into_iter().map(|n| n.as_str().to_owned()).collect())
    }

    /// Drops `table` and its retention; `false` when there was no such table.
    pub(crate) fn drop_table(&self, table: &str) -> Result<bool, SeriesError> {
        let name = TableName::new(table)?;
        let op = "dropping a table";
        let err = self.err(op);
        let dropped = self.write(op, |conn| {
            let mut tx = conn.client.transaction().map_err(&err)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .map_err(&err)?;
            let mut none = HashMap::new();
            if !Self::table_known(&mut tx, &mut none, &name).map_err(&err)? {
                return Ok(false);
            }
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", relation(&name)))
                .map_err(&err)?;
            tx.execute(
                "DELETE FROM midge_series_tables WHERE name = $1",
                &[&name.as_str()],
            )
            .map_err(&err)?;
            tx.execute(
                "DELETE FROM midge_series_retention WHERE name = $1",
                &[&name.as_str()],
            )
            .map_err(&err)?;
            tx.commit().map_err(&err)?;
            Ok(true)
        })?;
        super::lock(&self.known).remove(&name);
        if dropped {
            info!(table = name.as_str(), "series table dropped");
        }
        Ok(dropped)
    }

    /// The per-table retentions, in days (0: kept forever), by table name.
    pub(crate) fn table_retentions(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u32>, SeriesError> {
        let err = self.err("reading table retentions");
        self.read("reading table retentions", |tx, _| {
            let rows = tx
                .query("SELECT name, days FROM midge_series_retention", &[])
                .map_err(&err)?;
            Ok(rows
                .iter()
                .map(|r| {
                    let days: i32 = r.get(1);
                    (r.get::<_, String>(0), u32::try_from(days).unwrap_or(0))
                })
                .collect())
        })
    }

    /// Sets (`Some`) or removes (`None`) the retention of `table`, in days (0: forever).
    pub(crate) fn set_table_retention(
        &self,
        table: &str,
        days: Option<u32>,
    ) -> Result<(), SeriesError> {
        let name = TableName::new(table)?;
        let op = "setting a table retention";
        let err = self.err(op);
        self.write(op, |conn| {
            match days {
                Some(d) => conn.client.execute(
                    "INSERT INTO midge_series_retention (name, days) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET days = excluded.days",
                    &[&name.as_str(), &i32::try_from(d).unwrap_or(i32::MAX)],
                ),
                None => conn.client.execute(
                    "DELETE FROM midge_series_retention WHERE name = $1",
                    &[&name.as_str()],
                ),
            }
            .map(drop)
            .map_err(&err)
        })
    }

    pub(crate) fn delete_before(&self, table: &str, before_ms: i64) -> Result<u64, SeriesError> {
        let name = TableName::new(table)?;
        self.delete_older(&name, before_ms)
    }

    fn delete_older(&self, name: &TableName, before_ms: i64) -> Result<u64, SeriesError> {
        let op = "deleting old rows";
        let err = self.err(op);
        let chunk = self.options().prune_chunk_rows.max(1);
        let chunk_param = i64::try_from(chunk).unwrap_or(i64::MAX);
        let t = relation(name);
        let sql = format!(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE ts < $1 ORDER BY ts LIMIT $2)"
        );
        let mut total = 0u64;
        loop {
            let deleted = self.write(op, |conn| {
                let Conn { client, statements } = conn;
                if !Self::table_known(client, statements, name).map_err(&err)? {
                    return Ok(None);
                }
                // autocommit: each chunk is its own transaction
                let stmt = Conn::prepare(statements, client, &sql).map_err(&err)?;
                client
                    .execute(&stmt, &[&before_ms, &chunk_param])
                    .map(Some)
                    .map_err(&err)
            })?;
            let Some(deleted) = deleted else {
                return Ok(total);
            };
            total += deleted;
            if deleted < chunk as u64 {
                debug!(
                    table = name.as_str(),
                    deleted = total,
                    "series rows deleted"
                );
                return Ok(total);
            }
            std::thread::sleep(PRUNE_PAUSE);
        }
    }
}
