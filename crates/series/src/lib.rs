//! # midge-series
//!
//! The time-series table of midge's IoT-hub layer. Rules (`SELECT * FROM 'sensors/#' WHERE
//! temp > 30`) turn device messages into [`Row`]s; this crate stores them durably in one
//! SQLite file and answers the queries of the HTTP API and the dashboard:
//!
//! - [`SeriesStore::insert`]: a batch of rows in one transaction (one fsync for the batch:
//!   the caller batches, group commit);
//! - [`SeriesStore::rows`]: stored rows by topic filter (MQTT wildcards), client id and time
//!   range, newest first by default;
//! - [`SeriesStore::series`]: one numeric JSON field over time, raw or in buckets
//!   (avg, min, max, sum, count, first, last);
//! - [`SeriesStore::tables`] and [`SeriesStore::topics`]: what there is, for pickers;
//! - [`SeriesStore::prune`]: retention, in bounded chunks.
//!
//! Beside the row tables, the same store keeps **datapoints** ([`points`]), the model of
//! hosted IoT hubs' time-series databases: a metric, a field, tags, a timestamp and a value
//! keyed `(metric, tags, field, timestamp)` (writing a key again replaces its value):
//!
//! - [`SeriesStore::write_points`]: a checked batch, all of it or nothing, one transaction;
//! - [`SeriesStore::metrics`], [`SeriesStore::metric_fields`], [`SeriesStore::metric_tags`]:
//!   the catalog;
//! - [`SeriesStore::query_points`]: tag filter, group-by, value filter, chained aggregators
//!   (Avg, Dev, Count, First, Last, Max, Min, Sum, Percentile, LeastSquares over windows
//!   aligned on the epoch; Diff, Div, Multiply, Rate point by point), order, and paging by an
//!   opaque marker that returns every row exactly once;
//! - [`SeriesStore::export_points`]: every point, streamed in bounded pages.
//!
//! The query logic is shared by the engines (it works over a small internal trait that
//! SQLite and PostgreSQL implement), so both answer alike; schema, semantics and measured
//! speed are in `docs/series.md`.
//!
//! Every query returns at most [`SeriesOptions::max_rows_per_query`] rows or buckets;
//! [`SeriesStore::rows_page`] and [`SeriesStore::series_page`] say when an answer was cut
//! and where the next page starts (keyset on `(ts, id)`: every row once).
//!
//! ## Blocking
//!
//! Every method blocks on disk I/O (an insert with [`Synchronous::Full`] waits for an
//! fsync). The store is `Send + Sync` and meant to be shared (`Arc<SeriesStore>`) by
//! several tasks; an async caller runs each call in `tokio::task::spawn_blocking` or on a
//! dedicated thread, never directly on a runtime worker. Writes are serialized on one
//! connection; reads run on a small pool of read-only connections and, thanks to WAL, are
//! not blocked by a write being committed.
//!
//! ## Example
//!
//! ```
//! use midge_series::{Aggregate, Row, RowsQuery, SeriesOptions, SeriesQuery, SeriesStore};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SeriesStore::open(&dir.path().join("series.db"), SeriesOptions::default())?;
//! let data = |t: f64| json!({ "temp": t }).as_object().cloned().unwrap_or_default();
//! store.insert(
//!     "telemetry",
//!     &[
//!         Row::new(1_000, "sensors/a/temp", "dev-a", data(20.0)),
//!         Row::new(2_000, "sensors/a/temp", "dev-a", data(22.0)),
//!     ],
//! )?;
//! let rows = store.rows(&RowsQuery { topic: Some("sensors/+/temp".into()), ..RowsQuery::default() })?;
//! assert_eq!(rows.len(), 2);
//! let avg = store.series(&SeriesQuery {
//!     bucket_ms: 60_000,
//!     aggregate: Aggregate::Avg,
//!     ..SeriesQuery::new("temp")
//! })?;
//! assert_eq!(avg.len(), 1);
//! assert_eq!(avg[0].value, 21.0);
//! # Ok(())
//! # }
//! ```
//!
//! Schema, durability and measurements: `docs/series.md`.

mod aggregate;
mod error;
mod facade;
mod name;
pub mod points;
mod postgres;
mod store;
mod topic;

use std::str::FromStr;
use std::time::Duration;

pub use crate::postgres::{PostgresUrlError, check_postgres_url, redact_url};
pub use error::{EngineError, SeriesError};
pub use facade::SeriesStore;
pub use name::{InvalidTableName, TableName};
pub use store::{APPLICATION_ID, SCHEMA_VERSION};

/// A JSON object, as rules produce them.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// The table rules write to when they name none.
pub const DEFAULT_TABLE: &str = "telemetry";

/// How hard SQLite works to make a committed batch durable (`PRAGMA synchronous`, in WAL
/// mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// The write-ahead log is fsynced at every commit: once [`SeriesStore::insert`] returns,
    /// the batch survives a process crash, a kernel crash and a power cut (default).
    #[default]
    Full,
    /// The write-ahead log is fsynced only when it is checkpointed into the database: a
    /// process crash (kill -9) still loses nothing, but a power cut or kernel crash can lose
    /// the batches committed since the last checkpoint (typically the last ~1000 pages
    /// written). The file is never corrupted. Much faster for small batches.
    Normal,
}

/// Settings of the store (plain data; the binary fills it from its configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesOptions {
    /// Durability of each committed batch.
    pub synchronous: Synchronous,
    /// How long a call waits for a lock held by another process (or connection) before it
    /// fails.
    pub busy_timeout: Duration,
    /// Rows older than this are deleted by [`SeriesStore::prune`]; `None` keeps them forever.
    /// A table may have its own ([`SeriesStore::set_table_retention`]).
    pub retention: Option<Duration>,
    /// How often the store runs [`SeriesStore::prune`] itself, on a thread of its own that
    /// ends with the store (the first run one interval after opening); `None`: never (the
    /// owner calls `prune`).
    pub prune_every: Option<Duration>,
    /// Days each named table keeps its rows (0: forever), from the configuration
    /// (`[[series.table]]`); a retention set with [`SeriesStore::set_table_retention`] takes
    /// precedence, and a table named in neither follows [`SeriesOptions::retention`].
    pub table_retention: std::collections::BTreeMap<String, u32>,
    /// Rows or buckets a query returns when it names no limit.
    pub default_rows_per_query: usize,
    /// Most rows or buckets any query returns, whatever limit it names.
    pub max_rows_per_query: usize,
    /// Rows deleted per transaction by [`SeriesStore::prune`] (writers get the lock between
    /// chunks).
    pub prune_chunk_rows: usize,
    /// Read-only connections kept open for queries (more are opened while more queries run
    /// at once, and closed afterwards).
    pub read_connections: usize,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
            retention: None,
            prune_every: Some(Duration::from_secs(600)),
            table_retention: std::collections::BTreeMap::new(),
            default_rows_per_query: 1_000,
            max_rows_per_query: 10_000,
            prune_chunk_rows: 5_000,
            read_connections: 4,
        }
    }
}

/// One row to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Time of the message, in ms since the Unix epoch.
    pub ts: i64,
    /// MQTT topic the message was published to (a topic name: no wildcards).
    pub topic: String,
    /// Client id of the publisher (empty when unknown, e.g. an internal publisher).
    pub client_id: String,
    /// The JSON object the rule produced; stored as JSON text.
    pub data: JsonObject,
}

impl Row {
    /// A row from its parts.
    pub fn new(
        ts: i64,
        topic: impl Into<String>,
        client_id: impl Into<String>,
        data: JsonObject,
    ) -> Row {
        Row {
            ts,
            topic: topic.into(),
            client_id: client_id.into(),
            data,
        }
    }
}

/// A row as stored, with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    /// Row id, unique within its table, increasing in insertion order (ids of the newest rows
    /// may be reused after they are deleted).
    pub id: i64,
    /// Time of the message, in ms since the Unix epoch.
    pub ts: i64,
    /// MQTT topic.
    pub topic: String,
    /// Client id of the publisher (may be empty).
    pub client_id: String,
    /// The stored JSON object.
    pub data: JsonObject,
}

/// Order of returned rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest first (default); the limit keeps the newest rows.
    #[default]
    NewestFirst,
    /// Oldest first; the limit keeps the oldest rows.
    OldestFirst,
}

impl FromStr for Order {
    type Err = SeriesError;
    /// `newest` / `desc` or `oldest` / `asc`, in any case (`ASC` as SQL writes it).
    fn from_str(s: &str) -> Result<Order, SeriesError> {
        match s.to_ascii_lowercase().as_str() {
            "newest" | "desc" => Ok(Order::NewestFirst),
            "oldest" | "asc" => Ok(Order::OldestFirst),
            _ => Err(SeriesError::UnknownOrder(s.to_owned())),
        }
    }
}

/// A query for stored rows. Every filter left `None` does not filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowsQuery {
    /// Table name (default [`DEFAULT_TABLE`]).
    pub table: String,
    /// MQTT topic filter (`sensors/+/temp`, `sensors/#`, or a plain topic).
    pub topic: Option<String>,
    /// Only rows from this client id.
    pub client_id: Option<String>,
    /// Only rows with `ts >= since` (ms).
    pub since: Option<i64>,
    /// Only rows with `ts < until` (ms).
    pub until: Option<i64>,
    /// Most rows to return (default [`SeriesOptions::default_rows_per_query`], never more
    /// than [`SeriesOptions::max_rows_per_query`]).
    pub limit: Option<usize>,
    /// Order of the result and which end the limit keeps.
    pub order: Order,
}

impl Default for RowsQuery {
    fn default() -> Self {
        RowsQuery {
            table: DEFAULT_TABLE.to_owned(),
            topic: None,
            client_id: None,
            since: None,
            until: None,
            limit: None,
            order: Order::NewestFirst,
        }
    }
}

/// How the values of one bucket are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// Arithmetic mean (default).
    #[default]
    Avg,
    /// Smallest value.
    Min,
    /// Largest value.
    Max,
    /// Sum of the values.
    Sum,
    /// Number of numeric values (the same as [`Bucket::count`]).
    Count,
    /// Value of the oldest row of the bucket (ties on `ts`: the first inserted).
    First,
    /// Value of the newest row of the bucket (ties on `ts`: the last inserted).
    Last,
}

impl FromStr for Aggregate {
    type Err = SeriesError;
    /// `avg`, `min`, `max`, `sum`, `count`, `first` or `last`.
    fn from_str(s: &str) -> Result<Aggregate, SeriesError> {
        match s {
            "avg" | "mean" => Ok(Aggregate::Avg),
            "min" => Ok(Aggregate::Min),
            "max" => Ok(Aggregate::Max),
            "sum" => Ok(Aggregate::Sum),
            "count" => Ok(Aggregate::Count),
            "first" => Ok(Aggregate::First),
            "last" => Ok(Aggregate::Last),
            _ => Err(SeriesError::UnknownAggregate(s.to_owned())),
        }
    }
}

/// A query for one numeric field over time.
///
/// A row counts when its field is a JSON number or a string that parses as a finite number
/// (`"31.5"`, as devices often send); rows where the field is missing, `null`, a boolean, an
/// object, an array or any other string are skipped. Integers beyond 2^53 lose precision
/// (values are `f64`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Table name (default [`DEFAULT_TABLE`]).
    pub table: String,
    /// Path of the field inside the row's JSON: keys separated by dots, each key
    /// `[A-Za-z0-9_-]{1,64}`, optionally followed by array indexes: `temp`, `env.temp`,
    /// `values[0]`.
    pub field: String,
    /// MQTT topic filter.
    pub topic: Option<String>,
    /// Only rows from this client id.
    pub client_id: Option<String>,
    /// Only rows with `ts >= since` (ms).
    pub since: Option<i64>,
    /// Only rows with `ts < until` (ms).
    pub until: Option<i64>,
    /// Bucket width in ms, buckets aligned on the Unix epoch; 0 returns every value as its
    /// own point (start = the row's ts, count = 1, the aggregate is ignored).
    pub bucket_ms: u64,
    /// How values in a bucket are combined.
    pub aggregate: Aggregate,
    /// Most buckets (or raw points) to return; the newest are kept.
    pub limit: Option<usize>,
}

impl SeriesQuery {
    /// Raw points of `field` in [`DEFAULT_TABLE`], no other filter.
    pub fn new(field: impl Into<String>) -> SeriesQuery {
        SeriesQuery {
            table: DEFAULT_TABLE.to_owned(),
            field: field.into(),
            topic: None,
            client_id: None,
            since: None,
            until: None,
            bucket_ms: 0,
            aggregate: Aggregate::Avg,
            limit: None,
        }
    }
}

/// One bucket (or raw point) of a series, returned in ascending `start` order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Start of the bucket in ms (a multiple of the bucket width); a raw point's own ts.
    pub start: i64,
    /// The aggregate of the bucket's values.
    pub value: f64,
    /// Numeric values in the bucket.
    pub count: u64,
    /// Smallest value in the bucket (whatever the aggregate: a chart drawn from few
    /// buckets keeps its spikes).
    pub min: f64,
    /// Largest value in the bucket.
    pub max: f64,
}

/// One page of [`SeriesStore::rows_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct RowsPage {
    /// The rows, in the query's order.
    pub rows: Vec<StoredRow>,
    /// When more rows match: the `(ts, id)` of the last row, to pass as `after` for the
    /// next page. `None`: this page ends the answer.
    pub next: Option<(i64, i64)>,
}

/// One page of [`SeriesStore::series_page`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPage {
    /// The buckets or raw points, in ascending time order.
    pub points: Vec<Bucket>,
    /// When older values match: the `until` of the next (older) page; `None`: nothing
    /// older was left out.
    pub next_until: Option<i64>,
}

/// A table and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Table name (lower case).
    pub name: String,
    /// Rows in the table.
    pub rows: u64,
    /// Oldest row's ts, `None` when empty.
    pub first_ts: Option<i64>,
    /// Newest row's ts, `None` when empty.
    pub last_ts: Option<i64>,
}

/// A topic seen in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The topic.
    pub topic: String,
    /// Rows with this topic.
    pub rows: u64,
    /// Newest row's ts.
    pub last_ts: i64,
}
