//! The one error type of the crate.

use std::path::{Path, PathBuf};

/// An error of the engine underneath (SQLite today), kept opaque so that the API does not
/// name the engine and another one (PostgreSQL) can stand behind the same error type.
pub type EngineError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the series store.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// The folder meant to hold the database file could not be created.
    #[error("{}: cannot create the folder for the series database: {source}", path.display())]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be opened or read as a database: missing permission, a folder,
    /// a damaged file, or a file that is not a SQLite database at all.
    #[error("{}: cannot open the series database: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The engine's reason.
        #[source]
        source: EngineError,
    },
    /// The file is a database, but not one written by midge's series store.
    #[error("{}: not a midge series database ({what}); point midge at another file", path.display())]
    NotSeries {
        /// The database file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// The file was written by a newer midge whose schema this one cannot read.
    #[error(
        "{}: written by a newer midge (series schema version {found}; this midge reads up to \
         {supported}); upgrade midge or point it at another file",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this build reads.
        supported: i64,
    },
    /// A table name outside `[A-Za-z_][A-Za-z0-9_]{0,62}`.
    #[error(
        "invalid table name {name:?}: a table name is a letter or `_` followed by at most 62 \
         letters, digits or `_`"
    )]
    InvalidTable {
        /// The name given.
        name: String,
    },
    /// A JSON field path that is not `key(.key)*` with optional `[index]` parts.
    #[error("invalid field path {path:?}: {reason}")]
    InvalidField {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A topic filter that MQTT would refuse (or a `$share/...` filter).
    #[error("invalid topic filter {filter:?}: {reason}")]
    InvalidFilter {
        /// The filter given.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A row to insert whose topic is not a valid MQTT topic name; nothing of the batch was
    /// stored.
    #[error("row {index} of the batch: invalid topic {topic:?}: {reason}")]
    InvalidTopic {
        /// Position of the row in the batch.
        index: usize,
        /// The topic given.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A datapoint of a batch that cannot be stored (bad name, bad value, a value whose
    /// type differs from its field's); nothing of the batch was stored.
    #[error("datapoint {index} of the batch: {reason}")]
    InvalidPoint {
        /// Position of the point in the batch.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A datapoint query that cannot be run (unknown aggregator, bad marker, ...).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// An aggregate name other than avg, min, max, sum, count, first or last.
    #[error("unknown aggregate {0:?} (expected avg, min, max, sum, count, first or last)")]
    UnknownAggregate(String),
    /// An order name other than `newest` or `oldest`.
    #[error("unknown order {0:?} (expected newest or oldest)")]
    UnknownOrder(String),
    /// The disk (or the file system's quota) is full: the batch was not stored.
    #[error("{}: disk full: the operation was not carried out", path.display())]
    DiskFull {
        /// The database file.
        path: PathBuf,
    },
    /// A stored row whose data is not a JSON object (the file was changed outside midge).
    #[error("{}: table {table}, row {id}: stored data is not a JSON object: {reason}", path.display())]
    CorruptRow {
        /// The database file.
        path: PathBuf,
        /// The table.
        table: String,
        /// The row's id.
        id: i64,
        /// What the JSON parser said.
        reason: String,
    },
    /// The engine failed while doing `op` (I/O error, a damaged page found late, a lock
    /// held by another process beyond the busy timeout, ...).
    #[error("{}: {op}: {source}", path.display())]
    Engine {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// The engine's reason.
        #[source]
        source: EngineError,
    },
}

/// Maps a rusqlite error to a [`SeriesError`] for `op` on the file at `path`.
pub(crate) fn engine(path: &Path, op: &'static str) -> impl Fn(rusqlite::Error) -> SeriesError {
    move |e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            SeriesError::DiskFull {
                path: path.to_path_buf(),
            }
        } else {
            SeriesError::Engine {
                path: path.to_path_buf(),
                op,
                source: Box::new(e),
            }
        }
    }
}

/// Maps a rusqlite error met while opening the file at `path`.
pub(crate) fn open(path: &Path) -> impl Fn(rusqlite::Error) -> SeriesError {
    move |e| SeriesError::Open {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}
