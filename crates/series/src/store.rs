//! The SQLite engine: one file, WAL mode, one writer connection behind a mutex and a small
//! pool of read-only connections.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, TransactionBehavior, params, params_from_iter,
};
use tracing::{debug, info, warn};

use crate::aggregate::Buckets;
use crate::error::{self, engine};
use crate::name::{SQL_PREFIX, TableName, json_path};
use crate::topic::TopicMatch;
use crate::{
    Bucket, JsonObject, Order, Row, RowsQuery, SeriesError, SeriesOptions, SeriesQuery, StoredRow,
    Synchronous, TableInfo, TopicInfo,
};

/// Version of the schema this build writes (`PRAGMA user_version`). A file with a larger
/// version is refused; a smaller one would be migrated on open.
pub const SCHEMA_VERSION: i64 = 1;

/// `PRAGMA application_id` of a midge series file ("MDGS"), so that another program's
/// SQLite file is never mistaken for one.
pub const APPLICATION_ID: i32 = 0x4D44_4753;

/// Rows fetched per SQL query while scanning; a scan goes on with the next page (keyset on
/// `(ts, id)`) inside the same read transaction.
const PAGE: usize = 512;
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;
/// Page cache of the writer connection, in KiB (SQLite's default is 2 MiB; inserts touch
/// the end of the ts index and one place per topic in the topic index).
const WRITER_CACHE_KIB: i64 = 8 * 1024;
/// Page cache of each read connection, in KiB.
const READER_CACHE_KIB: i64 = 8 * 1024;
/// Size the write-ahead log is truncated to after a checkpoint.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;
/// Pause between two prune chunks, so that waiting writers take the lock.
const PRUNE_PAUSE: Duration = Duration::from_millis(1);
/// Most distinct topics looked at when resolving a wildcard filter to the topics it
/// matches (one index seek each); past it the scan filters row by row.
const MAX_TOPIC_CANDIDATES: usize = 1_000;

/// The time-series store: one SQLite file, shared by reference between threads.
///
/// `Send + Sync`; every method blocks (see the crate documentation).
pub(crate) struct Sqlite {
    path: PathBuf,
    options: SeriesOptions,
    pub(crate) writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

/// The one connection that writes.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// Tables this process has already created (or found), so that an insert runs
    /// `CREATE TABLE IF NOT EXISTS` once per table.
    known: HashSet<TableName>,
    /// Ids of datapoint metrics, fields and series (see `points::sqlite`).
    pub(crate) points: crate::points::sqlite::IdCache,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Locks `m`; a panic in another thread while it held the lock does not make the store
/// unusable (a transaction left open by it was rolled back when it was dropped).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the file's header says.
#[derive(Debug, Clone, Copy)]
struct Header {
    application_id: i32,
    user_version: i64,
    objects: i64,
}

fn read_header(conn: &Connection) -> rusqlite::Result<Header> {
    conn.query_row(
        "SELECT (SELECT application_id FROM pragma_application_id), \
                (SELECT user_version FROM pragma_user_version), \
                (SELECT count(*) FROM sqlite_schema)",
        [],
        |r| {
            Ok(Header {
                application_id: r.get(0)?,
                user_version: r.get(1)?,
                objects: r.get(2)?,
            })
        },
    )
}

/// Refuses files that are not (or not yet readable) midge series files. Returns whether
/// the file is new (to be initialized).
fn check_header(path: &Path, h: Header) -> Result<bool, SeriesError> {
    match h.application_id {
        APPLICATION_ID if h.user_version > SCHEMA_VERSION => Err(SeriesError::NewerSchema {
            path: path.to_path_buf(),
            found: h.user_version,
            supported: SCHEMA_VERSION,
        }),
        APPLICATION_ID => Ok(false),
        0 if h.objects == 0 => Ok(true),
        0 => Err(SeriesError::NotSeries {
            path: path.to_path_buf(),
            what: format!(
                "a SQLite database of another program: {} schema objects and no midge \
                 application id",
                h.objects
            ),
        }),
        other => Err(SeriesError::NotSeries {
            path: path.to_path_buf(),
            what: format!("a SQLite database with application id {other:#x}"),
        }),
    }
}

/// Creates the table and its indexes if they do not exist.
fn create_table(conn: &Connection, name: &TableName) -> rusqlite::Result<()> {
    let t = name.quoted();
    let n = name.as_str();
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
             id INTEGER PRIMARY KEY,
             ts INTEGER NOT NULL,
             topic TEXT NOT NULL,
             client_id TEXT NOT NULL,
             data TEXT NOT NULL
         ) STRICT;
         CREATE INDEX IF NOT EXISTS \"idx_topic_ts_{n}\" ON {t} (topic, ts);
         CREATE INDEX IF NOT EXISTS \"idx_ts_{n}\" ON {t} (ts, id, topic);"
    ))
}

fn table_exists(conn: &Connection, name: &TableName) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1")?
        .query_row([name.sql_name()], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
}

/// The series tables in the file, in name order.
fn table_names(conn: &Connection) -> rusqlite::Result<Vec<TableName>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name LIKE 'series\\_%' \
         ESCAPE '\\' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for name in names {
        let name = name?;
        // Only tables this crate could have made (a table made by hand with another
        // spelling is not one of ours).
        if let Some(table) = name
            .strip_prefix(SQL_PREFIX)
            .and_then(|n| TableName::new(n).ok().filter(|t| t.as_str() == n))
        {
            out.push(table);
        }
    }
    Ok(out)
}

/// Narrows a wildcard filter to the topics stored in `table`, walking the distinct topics
/// of its literal prefix through the `(topic, ts)` index (one seek per topic): `Ok(None)`
/// when no stored topic matches, a [`TopicMatch::Exact`] when one does (so the scan reads
/// that topic's index in order), the filter itself when several match or the prefix holds
/// more than [`MAX_TOPIC_CANDIDATES`] topics.
fn resolve_topic(
    conn: &Connection,
    table: &TableName,
    m: TopicMatch,
) -> rusqlite::Result<Option<TopicMatch>> {
    let TopicMatch::Wild { lower, upper, .. } = &m else {
        return Ok(Some(m));
    };
    let t = table.quoted();
    let mut first = conn.prepare_cached(&format!(
        "SELECT topic FROM {t} WHERE topic >= ?1 ORDER BY topic LIMIT 1"
    ))?;
    let mut next = conn.prepare_cached(&format!(
        "SELECT topic FROM {t} WHERE topic > ?1 ORDER BY topic LIMIT 1"
    ))?;
    let mut found: Option<String> = None;
    let mut current: Option<String> = None;
    for _ in 0..MAX_TOPIC_CANDIDATES {
        let candidate: Option<String> = match &current {
            None => first.query_row([lower], |r| r.get(0)).optional()?,
            Some(c) => next.query_row([c], |r| r.get(0)).optional()?,
        };
        let Some(candidate) = candidate else {
            return Ok(found.map(TopicMatch::Exact));
        };
        if upper.as_deref().is_some_and(|u| candidate.as_str() >= u) {
            return Ok(found.map(TopicMatch::Exact));
        }
        if m.matches(&candidate) {
            if found.is_some() {
                return Ok(Some(m));
            }
            found = Some(candidate.clone());
        }
        current = Some(candidate);
    }
    Ok(Some(m))
}

/// Checks that a row's topic is an MQTT topic name.
pub(crate) fn check_topic(index: usize, topic: &str) -> Result<(), SeriesError> {
    let reason = if topic.is_empty() {
        "empty"
    } else if topic.contains(['+', '#']) {
        "holds a wildcard (`+` or `#`)"
    } else if topic.contains('\0') {
        "holds a NUL character"
    } else if topic.len() > usize::from(u16::MAX) {
        "longer than 65,535 bytes"
    } else {
        return Ok(());
    };
    Err(SeriesError::InvalidTopic {
        index,
        topic: topic.to_owned(),
        reason,
    })
}

/// A numeric value of a JSON field as `json_extract` returns it: numbers as they are,
/// strings when they parse as a finite number.
fn numeric(v: ValueRef<'_>) -> Option<f64> {
    let f = match v {
        ValueRef::Integer(i) => i as f64,
        ValueRef::Real(f) => f,
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse::<f64>().ok()?,
        ValueRef::Null | ValueRef::Blob(_) => return None,
    };
    f.is_finite().then_some(f)
}

/// Whether `[since, until)` is empty.
fn empty_range(since: Option<i64>, until: Option<i64>) -> bool {
    since.zip(until).is_some_and(|(s, u)| s >= u)
}

/// One ordered scan over a table: `SELECT ts, id, topic <columns> FROM table WHERE ...
/// ORDER BY ts, id`, fetched in pages.
struct Scan<'q> {
    table: &'q TableName,
    /// More columns after `ts, id, topic` (starting with a comma); may use `?1..` of
    /// `leading`.
    columns: &'static str,
    /// A further condition; may use `?1..` of `leading`.
    condition: Option<&'static str>,
    /// Parameters the columns and the condition refer to, first in the numbering.
    leading: Vec<SqlValue>,
    topic: Option<&'q TopicMatch>,
    client_id: Option<&'q str>,
    since: Option<i64>,
    until: Option<i64>,
    order: Order,
    /// Start after this `(ts, id)` (a page of a longer answer).
    after: Option<(i64, i64)>,
}

impl Scan<'_> {
    /// The SQL text and parameters of the page after `cursor` (the last `(ts, id)` seen).
    fn page(&self, cursor: Option<(i64, i64)>) -> (String, Vec<SqlValue>) {
        let mut params = self.leading.clone();
        let mut conds: Vec<String> = Vec::new();
        fn bind(v: SqlValue, params: &mut Vec<SqlValue>) -> String {
            params.push(v);
            format!("?{}", params.len())
        }
        if let Some(c) = self.condition {
            conds.push(c.to_owned());
        }
        match self.topic {
            Some(TopicMatch::Exact(t)) => {
                conds.push(format!("topic = {}", bind(t.clone().into(), &mut params)));
            }
            Some(TopicMatch::Wild {
                lower, upper, like, ..
            }) => {
                // `+topic`: these terms filter rows but must not make SQLite pick the
                // (topic, ts) index, which cannot give rows in ts order for a range of
                // topics (it would sort the whole range for every page). The (ts, id, topic)
                // index serves the order and lets the topic be checked before the row is
                // read.
                if !lower.is_empty() {
                    conds.push(format!(
                        "+topic >= {}",
                        bind(lower.clone().into(), &mut params)
                    ));
                }
                if let Some(u) = upper {
                    conds.push(format!("+topic < {}", bind(u.clone().into(), &mut params)));
                }
                conds.push(format!(
                    "topic LIKE {} ESCAPE '\\'",
                    bind(like.clone().into(), &mut params)
                ));
            }
            None => {}
        }
        if let Some(c) = self.client_id {
            conds.push(format!(
                "client_id = {}",
                bind(c.to_owned().into(), &mut params)
            ));
        }
        if let Some(s) = self.since {
            conds.push(format!("ts >= {}", bind(s.into(), &mut params)));
        }
        if let Some(u) = self.until {
            conds.push(format!("ts < {}", bind(u.into(), &mut params)));
        }
        let (cmp, dir) = match self.order {
            Order::NewestFirst => ("<", "DESC"),
            Order::OldestFirst => (">", "ASC"),
        };
        if let Some((ts, id)) = cursor {
            let ts = bind(ts.into(), &mut params);
            let id = bind(id.into(), &mut params);
            conds.push(format!("(ts, id) {cmp} ({ts}, {id})"));
        }
        let mut sql = format!(
            "SELECT ts, id, topic{} FROM {}",
            self.columns,
            self.table.quoted()
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
        conn: &Connection,
        err: &dyn Fn(rusqlite::Error) -> SeriesError,
        mut visit: impl FnMut(&rusqlite::Row<'_>) -> Result<bool, SeriesError>,
    ) -> Result<(), SeriesError> {
        let check = self.topic.filter(|t| t.needs_check());
        let mut cursor = self.after;
        loop {
            let (sql, params) = self.page(cursor);
            let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
            let mut rows = stmt.query(params_from_iter(params)).map_err(err)?;
            let mut fetched = 0usize;
            while let Some(row) = rows.next().map_err(err)? {
                fetched += 1;
                let ts: i64 = row.get(0).map_err(err)?;
                let id: i64 = row.get(1).map_err(err)?;
                cursor = Some((ts, id));
                if let Some(m) = check {
                    let topic = row.get_ref(2).and_then(|v| Ok(v.as_str()?)).map_err(err)?;
                    if !m.matches(topic) {
                        continue;
                    }
                }
                if !visit(row)? {
                    return Ok(());
                }
            }
            if fetched < PAGE {
                return Ok(());
            }
        }
    }
}

impl Sqlite {
    /// Opens (or creates) the series database at `path`, creating its folder if needed.
    ///
    /// The file is put in WAL mode with the options' `synchronous` setting. A new file is
    /// stamped with [`APPLICATION_ID`] and [`SCHEMA_VERSION`]; a file from a newer midge,
    /// another program's database, or a file that is not a database at all is refused
    /// with an error naming the path.
    pub(crate) fn open(path: &Path, options: SeriesOptions) -> Result<Sqlite, SeriesError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| SeriesError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let fail = error::open(path);
        let mut conn = Connection::open_with_flags(path, flags).map_err(&fail)?;
        conn.busy_timeout(options.busy_timeout).map_err(&fail)?;
        // The first read of the file: a file that is not a database fails here.
        check_header(path, read_header(&conn).map_err(&fail)?)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0))
            .map_err(&fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(path = %path.display(), mode, "series database could not be put in WAL mode; readers will wait for writers");
        }
        let sync = match options.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(&fail)?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .map_err(&fail)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
            .map_err(&fail)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);

        // Stamp a new file; checked again under the write lock in case another process
        // opened the same new file at the same moment.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&fail)?;
        let created = check_header(path, read_header(&tx).map_err(&fail)?)?;
        if created {
            tx.pragma_update(None, "application_id", APPLICATION_ID)
                .map_err(&fail)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(&fail)?;
        }
        // Migrations from older schema versions go here when there are any.
        // Per-table retention (an older file gets it here; an older midge ignores it).
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS midge_table_retention (
                 name TEXT PRIMARY KEY,
                 days INTEGER NOT NULL
             ) STRICT;",
        )
        .map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        let known = table_names(&conn)
            .map_err(&fail)?
            .into_iter()
            .collect::<HashSet<_>>();
        info!(
            path = %path.display(),
            created,
            tables = known.len(),
            synchronous = sync,
            "series store open"
        );
        Ok(Sqlite {
            path: path.to_path_buf(),
            options,
            writer: Mutex::new(Writer {
                conn,
                known,
                points: crate::points::sqlite::IdCache::default(),
            }),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The options the store was opened with.
    pub(crate) fn options(&self) -> &SeriesOptions {
        &self.options
    }

    pub(crate) fn err(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> SeriesError + '_ {
        engine(&self.path, op)
    }

    pub(crate) fn limit(&self, asked: Option<usize>) -> usize {
        asked
            .unwrap_or(self.options.default_rows_per_query)
            .min(self.options.max_rows_per_query)
    }

    fn open_reader(&self) -> Result<Connection, SeriesError> {
        let err = self.err("opening a read connection");
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(&err)?;
        conn.busy_timeout(self.options.busy_timeout).map_err(&err)?;
        conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)
            .map_err(&err)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `f` on a read-only connection from the pool (opening one if none is free).
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, SeriesError>,
    ) -> Result<T, SeriesError> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => self.open_reader()?,
        };
        let out = f(&conn);
        let mut pool = lock(&self.readers);
        if pool.len() < self.options.read_connections {
            pool.push(conn);
        }
        out
    }

    /// Stores `rows` in `table` (created on first use) in one transaction: all of them or,
    /// on error, none. With [`Synchronous::Full`] the batch is on disk when this returns:
    /// one fsync for the whole batch, so callers should batch (group commit).
    pub(crate) fn insert(&self, table: &str, rows: &[Row]) -> Result<(), SeriesError> {
        let name = TableName::new(table)?;
        for (index, row) in rows.iter().enumerate() {
            check_topic(index, &row.topic)?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let err = self.err("inserting rows");
        let sql = format!(
            "INSERT INTO {} (ts, topic, client_id, data) VALUES (?1, ?2, ?3, ?4)",
            name.quoted()
        );
        let mut guard = lock(&self.writer);
        let Writer { conn, known, .. } = &mut *guard;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let new_table = !known.contains(&name);
        if new_table {
            create_table(&tx, &name).map_err(&err)?;
        }
        {
            let mut stmt = tx.prepare_cached(&sql).map_err(&err)?;
            for row in rows {
                let json = serde_json::to_string(&row.data).map_err(|e| SeriesError::Engine {
                    path: self.path.clone(),
                    op: "encoding a row as JSON",
                    source: Box::new(e),
                })?;
                stmt.execute(params![row.ts, row.topic, row.client_id, json])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        if new_table {
            info!(table = name.as_str(), "series table created");
            known.insert(name);
        }
        debug!(table, rows = rows.len(), "series rows inserted");
        Ok(())
    }

    /// Stored rows matching `q`, at most the query's limit (see [`RowsQuery::limit`]), in
    /// the query's order. A table that does not exist yet holds no rows.
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
        self.read(|conn| {
            // One read transaction: every page sees the same snapshot.
            let tx = conn.unchecked_transaction().map_err(&err)?;
            if !table_exists(&tx, &name).map_err(&err)? {
                return Ok(Vec::new());
            }
            let topic = match topic {
                Some(m) => match resolve_topic(&tx, &name, m).map_err(&err)? {
                    Some(m) => Some(m),
                    None => return Ok(Vec::new()),
                },
                None => None,
            };
            let scan = Scan {
                table: &name,
                columns: ", client_id, data",
                condition: None,
                leading: Vec::new(),
                topic: topic.as_ref(),
                client_id: q.client_id.as_deref(),
                since: q.since,
                until: q.until,
                order: q.order,
                after,
            };
            let mut out = Vec::new();
            scan.run(&tx, &err, |row| {
                let ts: i64 = row.get(0).map_err(&err)?;
                let id: i64 = row.get(1).map_err(&err)?;
                let topic: String = row.get(2).map_err(&err)?;
                let client_id: String = row.get(3).map_err(&err)?;
                let text = row.get_ref(4).and_then(|v| Ok(v.as_str()?)).map_err(&err)?;
                let data: JsonObject =
                    serde_json::from_str(text).map_err(|e| SeriesError::CorruptRow {
                        path: self.path.clone(),
                        table: name.as_str().to_owned(),
                        id,
                        reason: e.to_string(),
                    })?;
                out.push(StoredRow {
                    id,
                    ts,
                    topic,
                    client_id,
                    data,
                });
                Ok(out.len() < limit)
            })?;
            tx.commit().map_err(&err)?;
            Ok(out)
        })
    }

    /// One numeric field over time: raw points or buckets, in ascending time order; at
    /// most the query's limit of them, the newest kept. Rows whose field is missing or not
    /// numeric are skipped (see [`SeriesQuery`]).
    ///
    /// Memory is bounded by the limit; time grows with the rows in the range, since every
    /// row of an aggregated bucket is read.
    pub(crate) fn series(&self, q: &SeriesQuery) -> Result<Vec<Bucket>, SeriesError> {
        let name = TableName::new(&q.table)?;
        let path = json_path(&q.field)?;
        let topic = q.topic.as_deref().map(TopicMatch::new).transpose()?;
        let limit = self.limit(q.limit);
        let mut buckets = Buckets::new(q.bucket_ms, q.aggregate, limit);
        if limit == 0 || empty_range(q.since, q.until) {
            return Ok(buckets.finish());
        }
        let err = self.err("querying a series");
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(&err)?;
            if !table_exists(&tx, &name).map_err(&err)? {
                return Ok(());
            }
            let topic = match topic {
                Some(m) => match resolve_topic(&tx, &name, m).map_err(&err)? {
                    Some(m) => Some(m),
                    None => return Ok(()),
                },
                None => None,
            };
            let scan = Scan {
                table: &name,
                columns: ", json_extract(data, ?1)",
                condition: Some("json_type(data, ?1) IN ('integer', 'real', 'text')"),
                leading: vec![SqlValue::Text(path)],
                topic: topic.as_ref(),
                client_id: q.client_id.as_deref(),
                since: q.since,
                until: q.until,
                order: Order::NewestFirst,
                after: None,
            };
            scan.run(&tx, &err, |row| {
                let ts: i64 = row.get(0).map_err(&err)?;
                match numeric(row.get_ref(3).map_err(&err)?) {
                    Some(v) => Ok(buckets.push(ts, v)),
                    None => Ok(true),
                }
            })?;
            tx.commit().map_err(&err)
        })?;
        Ok(buckets.finish())
    }

    /// Every table with its row count and time span, in name order.
    ///
    /// Counting reads each table's smallest index: proportional to its rows.
    pub(crate) fn tables(&self) -> Result<Vec<TableInfo>, SeriesError> {
        let err = self.err("listing tables");
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(&err)?;
            let mut out = Vec::new();
            for name in table_names(&tx).map_err(&err)? {
                let sql = format!("SELECT count(*), min(ts), max(ts) FROM {}", name.quoted());
                let (rows, first_ts, last_ts) = tx
                    .prepare_cached(&sql)
                    .and_then(|mut s| {
                        s.query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)))
                    })
                    .map_err(&err)?;
                out.push(TableInfo {
                    name: name.as_str().to_owned(),
                    rows: u64::try_from(rows).unwrap_or(0),
                    first_ts,
                    last_ts,
                });
            }
            tx.commit().map_err(&err)?;
            Ok(out)
        })
    }

    /// Whether `table` exists (has been written to). Cheap, unlike [`SeriesStore::tables`],
    /// which counts rows.
    pub(crate) fn has_table(&self, table: &str) -> Result<bool, SeriesError> {
        let name = TableName::new(table)?;
        let err = self.err("looking up a table");
        self.read(|conn| table_exists(conn, &name).map_err(&err))
    }

    /// The topics seen in `table` with their row count and newest ts, in topic order; at
    /// most [`SeriesOptions::max_rows_per_query`] of them. Reads the whole `(topic, ts)`
    /// index: proportional to the table's rows.
    pub(crate) fn topics(&self, table: &str) -> Result<Vec<TopicInfo>, SeriesError> {
        let name = TableName::new(table)?;
        let max = i64::try_from(self.options.max_rows_per_query).unwrap_or(i64::MAX);
        let err = self.err("listing topics");
        self.read(|conn| {
            let tx = conn.unchecked_transaction().map_err(&err)?;
            if !table_exists(&tx, &name).map_err(&err)? {
                return Ok(Vec::new());
            }
            let sql = format!(
                "SELECT topic, count(*), max(ts) FROM {} GROUP BY topic ORDER BY topic LIMIT ?1",
                name.quoted()
            );
            let mut stmt = tx.prepare_cached(&sql).map_err(&err)?;
            let found = stmt
                .query_map([max], |r| {
                    Ok(TopicInfo {
                        topic: r.get(0)?,
                        rows: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                        last_ts: r.get(2)?,
                    })
                })
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(&err)?;
            drop(stmt);
            tx.commit().map_err(&err)?;
            Ok(found)
        })
    }

    /// The row tables in the file, in name order.
    pub(crate) fn table_list(&self) -> Result<Vec<String>, SeriesError> {
        let names = self.read(|conn| table_names(conn).map_err(self.err("listing tables")))?;
        Ok(names.into_iter().map(|n| n.as_str().to_owned()).collect())
    }

    /// Deletes the datapoints with `ts < cutoff` (for the retention).
    pub(crate) fn prune_points(&self, cutoff: i64) -> Result<u64, SeriesError> {
        self.delete_points_before(cutoff, self.options.prune_chunk_rows)
    }

    /// Drops `table` (its rows and indexes) and its retention; `false` when there was no
    /// such table.
    pub(crate) fn drop_table(&self, table: &str) -> Result<bool, SeriesError> {
        let name = TableName::new(table)?;
        let err = self.err("dropping a table");
        let mut guard = lock(&self.writer);
        let Writer { conn, known, .. } = &mut *guard;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        if !table_exists(&tx, &name).map_err(&err)? {
            return Ok(false);
        }
        tx.execute_batch(&format!("DROP TABLE {}", name.quoted()))
            .map_err(&err)?;
        tx.execute(
            "DELETE FROM midge_table_retention WHERE name = ?1",
            [name.as_str()],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        known.remove(&name);
        info!(table = name.as_str(), "series table dropped");
        Ok(true)
    }

    /// The per-table retentions, in days (0: kept forever), by table name.
    pub(crate) fn table_retentions(
        &self,
    ) -> Result<std::collections::BTreeMap<String, u32>, SeriesError> {
        let err = self.err("reading table retentions");
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, days FROM midge_table_retention")
                .map_err(&err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(&err)?;
            let mut out = std::collections::BTreeMap::new();
            for row in rows {
                let (name, days) = row.map_err(&err)?;
                out.insert(name, u32::try_from(days).unwrap_or(u32::MAX));
            }
            Ok(out)
        })
    }

    /// Sets (`Some`) or removes (`None`) the retention of `table`, in days (0: forever).
    pub(crate) fn set_table_retention(
        &self,
        table: &str,
        days: Option<u32>,
    ) -> Result<(), SeriesError> {
        let name = TableName::new(table)?;
        let err = self.err("setting a table retention");
        let guard = lock(&self.writer);
        match days {
            Some(d) => guard.conn.execute(
                "INSERT INTO midge_table_retention (name, days) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET days = excluded.days",
                params![name.as_str(), i64::from(d)],
            ),
            None => guard.conn.execute(
                "DELETE FROM midge_table_retention WHERE name = ?1",
                [name.as_str()],
            ),
        }
        .map_err(&err)?;
        Ok(())
    }

    /// Deletes the rows of `table` with `ts < before_ms`, in chunks like
    /// [`SeriesStore::prune`], and returns how many.
    pub(crate) fn delete_before(&self, table: &str, before_ms: i64) -> Result<u64, SeriesError> {
        let name = TableName::new(table)?;
        self.delete_older(&name, before_ms)
    }

    fn delete_older(&self, name: &TableName, before_ms: i64) -> Result<u64, SeriesError> {
        let err = self.err("deleting old rows");
        let chunk = self.options.prune_chunk_rows.max(1);
        let chunk_param = i64::try_from(chunk).unwrap_or(i64::MAX);
        let t = name.quoted();
        let sql = format!(
            "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE ts < ?1 ORDER BY ts LIMIT ?2)"
        );
        let mut total = 0u64;
        loop {
            let deleted = {
                let guard = lock(&self.writer);
                if !table_exists(&guard.conn, name).map_err(&err)? {
                    return Ok(total);
                }
                // Autocommit: each chunk is its own transaction.
                guard
                    .conn
                    .prepare_cached(&sql)
                    .and_then(|mut s| s.execute(params![before_ms, chunk_param]))
                    .map_err(&err)?
            };
            total += deleted as u64;
            if deleted < chunk {
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

#[cfg(test)]
mod tests;
