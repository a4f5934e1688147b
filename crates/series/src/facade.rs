//! [`SeriesStore`]: the one type callers hold, whatever engine stands behind it (SQLite
//! embedded by default; PostgreSQL when configured).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::{info, warn};

use crate::points::{Datapoint, FieldType, PointQuery, PointResult};
use crate::postgres::Postgres;
use crate::store::Sqlite;
use crate::{
    Bucket, Row, RowsPage, RowsQuery, SeriesError, SeriesOptions, SeriesPage, SeriesQuery,
    StoredRow, TableInfo, TopicInfo,
};

/// The time-series store, shared by reference between threads.
///
/// `Send + Sync`; every method blocks (see the crate documentation).
#[derive(Debug)]
pub struct SeriesStore {
    engine: Arc<Engine>,
    /// The retention thread's stop signal (dropped with the store: the thread ends).
    _pruner: Option<mpsc::Sender<()>>,
}

// One store per process, behind an Arc: the size of the larger engine costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Engine {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl SeriesStore {
    /// Opens (or creates) the SQLite series database at `path`, creating its folder if
    /// needed.
    ///
    /// The file is put in WAL mode with the options' `synchronous` setting. A new file is
    /// stamped with [`crate::APPLICATION_ID`] and [`crate::SCHEMA_VERSION`]; a file from a
    /// newer midge, another program's database, or a file that is not a database at all is
    /// refused with an error naming the path.
    pub fn open(path: &Path, options: SeriesOptions) -> Result<SeriesStore, SeriesError> {
        Ok(SeriesStore::start(Engine::Sqlite(Sqlite::open(
            path, options,
        )?)))
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:port/db`
    /// or a `key=value` connection string), creating midge's tables in it when missing.
    ///
    /// Row tables are `series_<name>` tables and datapoints live in `midge_*` tables, in the
    /// connection's default schema (set `options=-csearch_path=...` in the URL for another
    /// one). A database whose midge schema is newer than this build's is refused. Errors name
    /// the URL without its password.
    ///
    /// Blocking like every method, and more: the PostgreSQL client must not be used on a
    /// tokio worker thread at all (call this in `spawn_blocking`, as every other method).
    /// [`SeriesOptions::synchronous`] maps to `synchronous_commit` (`Normal`: off),
    /// [`SeriesOptions::busy_timeout`] to `lock_timeout` and the connect timeout.
    pub fn connect_postgres(url: &str, options: SeriesOptions) -> Result<SeriesStore, SeriesError> {
        Ok(SeriesStore::start(Engine::Postgres(Postgres::connect(
            url, options,
        )?)))
    }

    /// The database file (SQLite); for PostgreSQL, the URL without its password (as a path,
    /// the way errors name it). [`SeriesStore::describe`] says which.
    pub fn path(&self) -> &Path {
        match &*self.engine {
            Engine::Sqlite(s) => s.path(),
            Engine::Postgres(p) => p.label(),
        }
    }

    /// Where the data is, for people: `sqlite:<file>` or the PostgreSQL URL without its
    /// password.
    pub fn describe(&self) -> String {
        match &*self.engine {
            Engine::Sqlite(s) => format!("sqlite:{}", s.path().display()),
            Engine::Postgres(p) => p.describe().to_owned(),
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &SeriesOptions {
        match &*self.engine {
            Engine::Sqlite(s) => s.options(),
            Engine::Postgres(p) => p.options(),
        }
    }

    /// Stores `rows` in `table` (created on first use) in one transaction: all of them or,
    /// on error, none. With [`crate::Synchronous::Full`] the batch is on disk when this
    /// returns: one fsync for the whole batch, so callers should batch (group commit).
    pub fn insert(&self, table: &str, rows: &[Row]) -> Result<(), SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.insert(table, rows),
            Engine::Postgres(p) => p.insert(table, rows),
        }
    }

    /// Stored rows matching `q`, at most the query's limit (see [`RowsQuery::limit`]), in
    /// the query's order. A table that does not exist yet holds no rows.
    pub fn rows(&self, q: &RowsQuery) -> Result<Vec<StoredRow>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.rows(q),
            Engine::Postgres(p) => p.rows(q),
        }
    }

    /// [`SeriesStore::rows`] starting after the row `(ts, id)` (in the query's order), and
    /// saying whether more rows match: paging with [`RowsPage::next`] returns every
    /// matching row exactly once (keyset on `(ts, id)`), however many there are. Costs one
    /// more one-row read when the page is full.
    pub fn rows_page(
        &self,
        q: &RowsQuery,
        after: Option<(i64, i64)>,
    ) -> Result<RowsPage, SeriesError> {
        let rows = self.rows_after(q, after)?;
        let limit = self.effective_limit(q.limit);
        let next = match rows.last() {
            Some(last) if rows.len() >= limit => {
                let cursor = (last.ts, last.id);
                let probe = RowsQuery {
                    limit: Some(1),
                    ..q.clone()
                };
                (!self.rows_after(&probe, Some(cursor))?.is_empty()).then_some(cursor)
            }
            _ => None,
        };
        Ok(RowsPage { rows, next })
    }

    fn rows_after(
        &self,
        q: &RowsQuery,
        after: Option<(i64, i64)>,
    ) -> Result<Vec<StoredRow>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.rows_after(q, after),
            Engine::Postgres(p) => p.rows_after(q, after),
        }
    }

    /// The limit a query naming `asked` gets.
    fn effective_limit(&self, asked: Option<usize>) -> usize {
        let o = self.options();
        asked
            .unwrap_or(o.default_rows_per_query)
            .min(o.max_rows_per_query)
    }

    /// [`SeriesStore::series`], saying whether older values were left out by the limit:
    /// then [`SeriesPage::next_until`] is the `until` of the next, older page. Raw points
    /// (`bucket_ms` 0) sharing the oldest timestamp of a cut page are moved to the next
    /// page whole, so paging returns each point once (unless more points than the limit
    /// share one timestamp: then the page is those points and the next starts before it).
    pub fn series_page(&self, q: &SeriesQuery) -> Result<SeriesPage, SeriesError> {
        let mut points = self.series(q)?;
        let limit = self.effective_limit(q.limit);
        let oldest = match points.first() {
            Some(b) if points.len() >= limit => b.start,
            _ => {
                return Ok(SeriesPage {
                    points,
                    next_until: None,
                });
            }
        };
        let raw = SeriesQuery {
            bucket_ms: 0,
            limit: Some(1),
            ..q.clone()
        };
        let older = !self
            .series(&SeriesQuery {
                until: Some(oldest),
                ..raw.clone()
            })?
            .is_empty();
        if q.bucket_ms != 0 {
            return Ok(SeriesPage {
                points,
                next_until: older.then_some(oldest),
            });
        }
        let tied = points.iter().take_while(|b| b.start == oldest).count();
        let cut = older
            || self
                .series(&SeriesQuery {
                    since: Some(oldest),
                    until: Some(oldest.saturating_add(1)),
                    limit: Some(tied.saturating_add(1)),
                    ..raw
                })?
                .len()
                > tied;
        let mut next_until = cut.then_some(oldest);
        if cut && tied < points.len() {
            // the next page ends after the oldest timestamp, so it has all of its points
            points.drain(..tied);
            next_until = Some(oldest.saturating_add(1));
        }
        Ok(SeriesPage { points, next_until })
    }

    /// One numeric field over time: raw points or buckets, in ascending time order; at
    /// most the query's limit of them, the newest kept. Rows whose field is missing or not
    /// numeric are skipped (see [`SeriesQuery`]).
    ///
    /// Memory is bounded by the limit; time grows with the rows in the range, since every
    /// row of an aggregated bucket is read.
    pub fn series(&self, q: &SeriesQuery) -> Result<Vec<Bucket>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.series(q),
            Engine::Postgres(p) => p.series(q),
        }
    }

    /// Every table with its row count and time span, in name order.
    ///
    /// Counting reads each table's smallest index: proportional to its rows.
    pub fn tables(&self) -> Result<Vec<TableInfo>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.tables(),
            Engine::Postgres(p) => p.tables(),
        }
    }

    /// Whether `table` exists (has been written to). Cheap, unlike [`SeriesStore::tables`],
    /// which counts rows.
    pub fn has_table(&self, table: &str) -> Result<bool, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.has_table(table),
            Engine::Postgres(p) => p.has_table(table),
        }
    }

    /// The topics seen in `table` with their row count and newest ts, in topic order; at
    /// most [`SeriesOptions::max_rows_per_query`] of them. Reads the whole `(topic, ts)`
    /// index: proportional to the table's rows.
    pub fn topics(&self, table: &str) -> Result<Vec<TopicInfo>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.topics(table),
            Engine::Postgres(p) => p.topics(table),
        }
    }

    /// Deletes the rows older than their table's retention (its own, set with
    /// [`SeriesStore::set_table_retention`], else [`SeriesOptions::table_retention`]'s, else
    /// [`SeriesOptions::retention`]) and the
    /// datapoints older than [`SeriesOptions::retention`], as seen at `now_ms` (ms since the
    /// Unix epoch), and returns how many. Without any retention it deletes nothing.
    ///
    /// Rows are deleted in chunks of [`SeriesOptions::prune_chunk_rows`], one transaction
    /// each, so inserts are not held up for long by a large delete. The store runs this
    /// itself every [`SeriesOptions::prune_every`]; call it directly only with that off.
    pub fn prune(&self, now_ms: i64) -> Result<u64, SeriesError> {
        self.engine.prune(now_ms)
    }

    /// Deletes the rows of `table` with `ts < before_ms`, in chunks like
    /// [`SeriesStore::prune`], and returns how many.
    pub fn delete_before(&self, table: &str, before_ms: i64) -> Result<u64, SeriesError> {
        self.engine.delete_before(table, before_ms)
    }

    /// Drops `table`: its rows, its indexes and its retention. Returns `false` when there
    /// was no such table. A later insert creates it again, empty.
    pub fn drop_table(&self, table: &str) -> Result<bool, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.drop_table(table),
            Engine::Postgres(p) => p.drop_table(table),
        }
    }

    /// The tables with a retention of their own, in days (0: kept forever), by name.
    /// Stored in the store itself, so it holds across restarts.
    pub fn table_retentions(&self) -> Result<BTreeMap<String, u32>, SeriesError> {
        self.engine.table_retentions()
    }

    /// Gives `table` a retention of its own of `days` days (0: keep its rows forever), or
    /// with `None` removes it (the table follows [`SeriesOptions::retention`] again). The
    /// table need not exist yet.
    pub fn set_table_retention(&self, table: &str, days: Option<u32>) -> Result<(), SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.set_table_retention(table, days),
            Engine::Postgres(p) => p.set_table_retention(table, days),
        }
    }

    /// `name` as the table it names (checked against `[A-Za-z_][A-Za-z0-9_]{0,62}` and
    /// lowercased, as every method does with a table name; see [`crate::TableName`]).
    pub fn table_name(name: &str) -> Result<String, SeriesError> {
        Ok(crate::TableName::new(name)?.into())
    }

    /// How long the rows of `table` are kept (`None`: forever): its own retention, else
    /// the configuration's for it ([`SeriesOptions::table_retention`]), else the store's.
    pub fn retention_of(&self, table: &str) -> Result<Option<Duration>, SeriesError> {
        let table = SeriesStore::table_name(table)?;
        let days = self.engine.merged_retentions()?.get(&table).copied();
        Ok(effective(days, self.options().retention))
    }

    /// Writes `points` in one transaction: every point or, on any error (an invalid name,
    /// a value whose type differs from its field's), none; the error names the point's
    /// index. A point with the same metric, tags, field and timestamp as a stored one
    /// replaces it (so a redelivered message never makes a duplicate).
    pub fn write_points(&self, points: &[Datapoint]) -> Result<(), SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.write_points(points),
            Engine::Postgres(p) => p.write_points(points),
        }
    }

    /// Every metric, in name order.
    pub fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.metrics(),
            Engine::Postgres(p) => p.metrics(),
        }
    }

    /// The fields of `metric` with their types (empty when the metric is unknown).
    pub fn metric_fields(&self, metric: &str) -> Result<BTreeMap<String, FieldType>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.metric_fields(metric),
            Engine::Postgres(p) => p.metric_fields(metric),
        }
    }

    /// Each tag key of `metric` with its values, in order (empty when the metric is unknown).
    pub fn metric_tags(&self, metric: &str) -> Result<BTreeMap<String, Vec<String>>, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.metric_tags(metric),
            Engine::Postgres(p) => p.metric_tags(metric),
        }
    }

    /// Runs one query (see [`PointQuery`]).
    pub fn query_points(&self, q: &PointQuery) -> Result<PointResult, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.query_points(q),
            Engine::Postgres(p) => p.query_points(q),
        }
    }

    /// Hands every point of `metrics` (every metric when empty) with `start <= timestamp
    /// <= end` to `each`, metric by metric, series by series, in time order, reading in
    /// bounded pages (memory does not grow with the data); stops early when `each` returns
    /// `false`. Returns how many points were handed over.
    pub fn export_points(
        &self,
        metrics: &[String],
        start: i64,
        end: i64,
        each: &mut dyn FnMut(Datapoint) -> bool,
    ) -> Result<u64, SeriesError> {
        match &*self.engine {
            Engine::Sqlite(s) => s.export_points(metrics, start, end, each),
            Engine::Postgres(p) => p.export_points(metrics, start, end, each),
        }
    }
}

/// A table's retention: its own (`Some(0)`: forever) or else the store's.
fn effective(own: Option<u32>, global: Option<Duration>) -> Option<Duration> {
    match own {
        Some(0) => None,
        Some(days) => Some(Duration::from_secs(u64::from(days) * 86_400)),
        None => global,
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

impl SeriesStore {
    /// The store around `engine`, with its retention thread when
    /// [`SeriesOptions::prune_every`] is set.
    fn start(engine: Engine) -> SeriesStore {
        let engine = Arc::new(engine);
        let pruner = engine.options().prune_every.and_then(|every| {
            let (tx, rx) = mpsc::channel::<()>();
            let weak = Arc::downgrade(&engine);
            std::thread::Builder::new()
                .name("midge-series-retention".into())
                .spawn(move || retention_loop(&weak, &rx, every))
                .map_err(|e| warn!(error = %e, "series retention thread not started"))
                .ok()
                .map(|_| tx)
        });
        SeriesStore {
            engine,
            _pruner: pruner,
        }
    }
}

/// Prunes every `every` until the store is dropped (the sender goes away).
fn retention_loop(engine: &Weak<Engine>, stop: &mpsc::Receiver<()>, every: Duration) {
    loop {
        match stop.recv_timeout(every.max(Duration::from_millis(10))) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match engine.prune(now_ms()) {
            Ok(n) if n > 0 => info!(
                rows = n,
                "series retention: deleted rows past the retention"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "series retention: pruning failed"),
        }
    }
}

impl Engine {
    fn options(&self) -> &SeriesOptions {
        match self {
            Engine::Sqlite(s) => s.options(),
            Engine::Postgres(p) => p.options(),
        }
    }

    fn table_retentions(&self) -> Result<BTreeMap<String, u32>, SeriesError> {
        match self {
            Engine::Sqlite(s) => s.table_retentions(),
            Engine::Postgres(p) => p.table_retentions(),
        }
    }

    fn delete_before(&self, table: &str, before_ms: i64) -> Result<u64, SeriesError> {
        match self {
            Engine::Sqlite(s) => s.delete_before(table, before_ms),
            Engine::Postgres(p) => p.delete_before(table, before_ms),
        }
    }

    /// Each table's days: the configuration's, overridden by those set in the store.
    fn merged_retentions(&self) -> Result<BTreeMap<String, u32>, SeriesError> {
        let mut days = self.options().table_retention.clone();
        days.extend(self.table_retentions()?);
        Ok(days)
    }

    /// See [`SeriesStore::prune`].
    fn prune(&self, now_ms: i64) -> Result<u64, SeriesError> {
        let global = self.options().retention;
        let own = self.merged_retentions()?;
        if global.is_none() && own.values().all(|d| *d == 0) {
            return Ok(0);
        }
        let tables = match self {
            Engine::Sqlite(s) => s.table_list()?,
            Engine::Postgres(p) => p.table_list()?,
        };
        let mut total = 0u64;
        for table in tables {
            if let Some(keep) = effective(own.get(&table).copied(), global) {
                total += self.delete_before(&table, now_ms.saturating_sub(millis(keep)))?;
            }
        }
        if let Some(keep) = global {
            let cutoff = now_ms.saturating_sub(millis(keep));
            total += match self {
                Engine::Sqlite(s) => s.prune_points(cutoff)?,
                Engine::Postgres(p) => p.prune_points(cutoff)?,
            };
        }
        if total > 0 {
            info!(deleted = total, "series retention: old rows deleted");
        }
        Ok(total)
    }
}
