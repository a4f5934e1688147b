//! The PostgreSQL engine: the same tables as the SQLite engine, in a PostgreSQL database
//! reached by URL. One writer connection behind a mutex and a small pool of read
//! connections, like the SQLite engine; reads run in `REPEATABLE READ` read-only
//! transactions so that every page of a scan sees the same snapshot.
//!
//! The blocking [`postgres`] client runs its own small tokio runtime per connection: it
//! must not be called, created or dropped on a tokio worker thread. Callers use
//! `spawn_blocking` (as for SQLite); dropping the store closes its connections on a thread
//! of its own, so the last `Arc` may go away anywhere.

mod points;
mod rows;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use postgres::error::SqlState;
use postgres::{Client, Config, GenericClient, IsolationLevel, NoTls, Statement, Transaction};
use tracing::{debug, info};

use crate::name::TableName;
use crate::{SeriesError, SeriesOptions, Synchronous};

/// Version of the schema this build writes in PostgreSQL (row `schema_version` of
/// `midge_series_meta`). A database with a larger version is refused.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Key of the advisory lock taken while the schema or a table is created, so that two
/// midge processes creating the same table at once do not collide ("MDGS").
const SCHEMA_LOCK: i64 = 0x4D44_4753;

/// Rows fetched per SQL query while scanning (keyset paging on `(ts, id)`).
const PAGE: i64 = 512;

/// How long a connection may take to answer the liveness check made after an error.
const ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

/// Longest identifier PostgreSQL keeps (longer ones are cut, which could make two tables
/// one).
const MAX_IDENT: usize = 63;

/// Locks `m`; a panic in another thread while it held the lock does not make the store
/// unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether `url` is a PostgreSQL connection URL (`postgres://user:password@host:5432/db`)
/// or `key=value` connection string this build can use; the reason when it is not (without
/// the password). Checks the text only: nothing is connected to.
pub fn check_postgres_url(url: &str) -> Result<(), PostgresUrlError> {
    if url.trim().is_empty() {
        return Err(PostgresUrlError::Empty);
    }
    Config::from_str(url)
        .map(drop)
        .map_err(|e| PostgresUrlError::Invalid {
            url: redact_url(url),
            reason: Box::new(PgError(e)),
        })
}

/// Why [`check_postgres_url`] refuses a connection URL (its password never shown).
#[derive(Debug, thiserror::Error)]
pub enum PostgresUrlError {
    /// Nothing was given.
    #[error("empty")]
    Empty,
    /// Not a URL or connection string the driver understands.
    #[error("{url} is not a PostgreSQL URL: {reason}")]
    Invalid {
        /// The URL as it may be shown ([`redact_url`]).
        url: String,
        /// What the driver found wrong.
        reason: crate::EngineError,
    },
}

/// `url` as it may be shown: the password of the `user:password@` part and any
/// `password=` parameter replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out
            .get(rest_start..)
            .and_then(|r| r.find(['/', '?']))
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out
            .get(rest_start..authority_end)
            .and_then(|a| a.rfind('@'))
            && let Some(colon) = out
                .get(rest_start..rest_start + at)
                .and_then(|u| u.find(':'))
        {
            out.replace_range(rest_start + colon + 1..rest_start + at, "***");
        }
    }
    // `password=...` in a query string or a key=value connection string
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let (head, tail) = rest.split_at(i + "password=".len());
        redacted.push_str(head);
        let end = tail.find(['&', ' ']).unwrap_or(tail.len());
        if end > 0 {
            redacted.push_str("***");
        }
        rest = tail.get(end..).unwrap_or("");
    }
    redacted.push_str(rest);
    redacted
}

/// A postgres error with the server's message in its text (the crate's own `Display` only
/// says "db error").
#[derive(Debug)]
struct PgError(postgres::Error);

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}: {}", db.severity(), db.message()),
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// One connection and the statements prepared on it.
pub(crate) struct Conn {
    pub(crate) client: Client,
    pub(crate) statements: HashMap<String, Statement>,
}

impl Conn {
    /// `sql` prepared on this connection (cached), usable inside a transaction on it.
    pub(crate) fn prepare(
        statements: &mut HashMap<String, Statement>,
        tx: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(s) = statements.get(sql) {
            return Ok(s.clone());
        }
        let s = tx.prepare(sql)?;
        if statements.len() >= STATEMENT_CACHE {
            statements.clear();
        }
        statements.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

/// Whether `conn` still works, asked after an error (a connection the server closed is
/// only seen closed once the client has read from it again).
fn alive(conn: &mut Conn) -> bool {
    !conn.client.is_closed() && conn.client.is_valid(ALIVE_TIMEOUT).is_ok()
}

/// The series store in PostgreSQL.
pub(crate) struct Postgres {
    /// The URL without its password, for messages.
    describe: String,
    /// The same as a path, for the error variants that name a path.
    label: PathBuf,
    config: Config,
    options: SeriesOptions,
    /// The writing connection (`None` after it broke: reopened on next use).
    writer: Mutex<Option<Conn>>,
    /// Tables this process knows exist, so an insert checks the catalog once per table.
    known: Mutex<HashSet<TableName>>,
    readers: Mutex<Vec<Conn>>,
    /// Datapoint catalog ids known to be committed.
    point_ids: Mutex<points::IdCache>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("url", &self.describe)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Each client owns a runtime that must not be dropped on a tokio worker thread:
        // close them on a thread of their own.
        let mut conns = std::mem::take(
            self.readers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        if let Some(w) = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            conns.push(w);
        }
        if conns.is_empty() {
            return;
        }
        if let Ok(t) = std::thread::Builder::new()
            .name("midge-series-close".into())
            .spawn(move || drop(conns))
        {
            let _ = t.join();
        }
    }
}

/// The physical table of a row table: `series_<name>`, or for names too long for a
/// PostgreSQL identifier a cut name with a hash of the whole one.
pub(crate) fn relation(name: &TableName) -> String {
    let full = name.sql_name();
    if full.len() <= MAX_IDENT {
        return format!("\"{full}\"");
    }
    // FNV-1a, 64 bits: stable across builds and platforms
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let keep = MAX_IDENT - 7 - 1 - 16;
    format!(
        "\"series_{}_{h:016x}\"",
        name.as_str().get(..keep).unwrap_or(name.as_str())
    )
}

impl Postgres {
    /// Connects to the database at `url`, creates midge's catalog tables when missing and
    /// refuses a schema written by a newer midge.
    pub(crate) fn connect(url: &str, options: SeriesOptions) -> Result<Postgres, SeriesError> {
        let describe = redact_url(url);
        let label = PathBuf::from(&describe);
        let open_label = label.clone();
        let open = move |e: postgres::Error| SeriesError::Open {
            path: open_label.clone(),
            source: Box::new(PgError(e)),
        };
        let mut config = Config::from_str(url).map_err(&open)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.busy_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("midge");
        }
        let store = Postgres {
            describe,
            label,
            config,
            options,
            writer: Mutex::new(None),
            known: Mutex::new(HashSet::new()),
            readers: Mutex::new(Vec::new()),
            point_ids: Mutex::new(points::IdCache::default()),
        };
        let mut conn = store.new_conn().map_err(&open)?;
        let version = {
            let mut tx = conn.client.transaction().map_err(&open)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .map_err(&open)?;
            // DDL only when something is missing: a role that may use midge's tables but
            // not create tables (they were made by another role) can still connect
            let complete: bool = tx
                .query_one(
                    "SELECT to_regclass('midge_series_meta') IS NOT NULL \
                        AND to_regclass('midge_series_tables') IS NOT NULL \
                        AND to_regclass('midge_points') IS NOT NULL \
                        AND to_regclass('midge_series_retention') IS NOT NULL",
                    &[],
                )
                .map_err(&open)?
                .get(0);
            if !complete {
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS midge_series_meta (
                         key TEXT PRIMARY KEY,
                         value BIGINT NOT NULL
                     );
                     CREATE TABLE IF NOT EXISTS midge_series_tables (
                         name TEXT COLLATE \"C\" PRIMARY KEY
                     );
                     CREATE TABLE IF NOT EXISTS midge_series_retention (
                         name TEXT COLLATE \"C\" PRIMARY KEY,
                         days INTEGER NOT NULL
                     );",
                )
                .map_err(&open)?;
                tx.batch_execute(points::SCHEMA).map_err(&open)?;
            }
            let found: Option<i64> = tx
                .query_opt(
                    "SELECT value FROM midge_series_meta WHERE key = 'schema_version'",
                    &[],
                )
                .map_err(&open)?
                .map(|r| r.get(0));
            if found.is_none() {
                tx.execute(
                    "INSERT INTO midge_series_meta (key, value) VALUES ('schema_version', $1)",
                    &[&SCHEMA_VERSION],
                )
                .map_err(&open)?;
            }
            if let Some(found) = found.filter(|&v| v > SCHEMA_VERSION) {
                return Err(SeriesError::NewerSchema {
                    path: store.label.clone(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            // Migrations from older schema versions go here when there are any.
            tx.commit().map_err(&open)?;
            found
        };
        info!(
            url = %store.describe,
            created = version.is_none(),
            "series store open (PostgreSQL)"
        );
        *lock(&store.writer) = Some(conn);
        Ok(store)
    }

    /// The URL without its password.
    pub(crate) fn describe(&self) -> &str {
        &self.describe
    }

    /// The URL without its password, as a path (for [`crate::SeriesStore::path`]).
    pub(crate) fn label(&self) -> &Path {
        &self.label
    }

    pub(crate) fn options(&self) -> &SeriesOptions {
        &self.options
    }

    /// Maps a postgres error met while doing `op`.
    pub(crate) fn err(&self, op: &'static str) -> impl Fn(postgres::Error) -> SeriesError + '_ {
        move |e| {
            if e.code() == Some(&SqlState::DISK_FULL) {
                SeriesError::DiskFull {
                    path: self.label.clone(),
                }
            } else {
                SeriesError::Engine {
                    path: self.label.clone(),
                    op,
                    source: Box::new(PgError(e)),
                }
            }
        }
    }

    pub(crate) fn limit(&self, asked: Option<usize>) -> usize {
        asked
            .unwrap_or(self.options.default_rows_per_query)
            .min(self.options.max_rows_per_query)
    }

    /// A new connection with the session settings of the options.
    fn new_conn(&self) -> Result<Conn, postgres::Error> {
        let mut client = self.config.connect(NoTls)?;
        let lock_ms = self.options.busy_timeout.as_millis().max(1);
        let sync = match self.options.synchronous {
            Synchronous::Full => "on",
            // a crash of the server can lose the last commits, never corrupt the database
            Synchronous::Normal => "off",
        };
        // custom plans: a scan's page is planned with its real bounds and topic pattern (a
        // generic plan guesses a LIKE keeps almost nothing and sorts the whole range)
        client.batch_execute(&format!(
            "SET lock_timeout = {lock_ms}; SET synchronous_commit = {sync}; \
             SET plan_cache_mode = force_custom_plan;"
        ))?;
        debug!(url = %self.describe, "series: PostgreSQL connection opened");
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    /// Runs `f` on the writer connection (reconnecting when it broke).
    pub(crate) fn write<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Conn) -> Result<T, SeriesError>,
    ) -> Result<T, SeriesError> {
        let mut guard = lock(&self.writer);
        if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
            *guard = None;
            let conn = self.new_conn().map_err(self.err(op))?;
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(SeriesError::Engine {
                path: self.label.clone(),
                op,
                source: "no connection".into(),
            });
        };
        let out = f(conn);
        if out.is_err() && !alive(conn) {
            // the next call opens a new connection
            *guard = None;
        }
        out
    }

    /// Runs `f` in a read-only `REPEATABLE READ` transaction on a pooled connection.
    pub(crate) fn read<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&mut Transaction<'_>, &mut HashMap<String, Statement>) -> Result<T, SeriesError>,
    ) -> Result<T, SeriesError> {
        let err = self.err(op);
        let pooled = loop {
            match lock(&self.readers).pop() {
                Some(c) if c.client.is_closed() => continue,
                other => break other,
            }
        };
        let mut conn = match pooled {
            Some(c) => c,
            None => self.new_conn().map_err(&err)?,
        };
        let out = {
            let Conn { client, statements } = &mut conn;
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .map_err(&err)?;
            let out = f(&mut tx, statements);
            if out.is_ok() {
                tx.commit().map_err(&err)?;
            }
            out
        };
        if out.is_err() && !alive(&mut conn) {
            return out;
        }
        let mut pool = lock(&self.readers);
        if pool.len() < self.options.read_connections {
            pool.push(conn);
        }
        out
    }

    /// Whether `table` is in midge's catalog.
    pub(crate) fn table_known(
        tx: &mut impl GenericClient,
        statements: &mut HashMap<String, Statement>,
        name: &TableName,
    ) -> Result<bool, postgres::Error> {
        let s = Conn::prepare(
            statements,
            tx,
            "SELECT 1 FROM midge_series_tables WHERE name = $1",
        )?;
        Ok(tx.query_opt(&s, &[&name.as_str()])?.is_some())
    }

    /// The row tables in midge's catalog, in name order.
    pub(crate) fn table_names(
        tx: &mut impl GenericClient,
    ) -> Result<Vec<TableName>, postgres::Error> {
        let rows = tx.query("SELECT name FROM midge_series_tables ORDER BY name", &[])?;
        Ok(rows
            .iter()
            .filter_map(|r| TableName::new(r.get::<_, &str>(0)).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        let cases = [
            (
                "postgres://midge:s3cret@db.example:5432/iot",
                "postgres://midge:***@db.example:5432/iot",
            ),
            (
                "postgresql://midge:p@ss@host/db",
                "postgresql://midge:***@host/db",
            ),
            ("postgres://midge@host/db", "postgres://midge@host/db"),
            (
                "postgres://host/db?user=a&password=x&sslmode=disable",
                "postgres://host/db?user=a&password=***&sslmode=disable",
            ),
            (
                "host=/tmp user=a password=secret dbname=x",
                "host=/tmp user=a password=*** dbname=x",
            ),
            ("postgres://host:5432/db", "postgres://host:5432/db"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn long_table_names_get_distinct_relations_that_fit() {
        let a = TableName::new(&format!("{}a", "x".repeat(62))).ok();
        let b = TableName::new(&format!("{}b", "x".repeat(62))).ok();
        let (Some(a), Some(b)) = (a, b) else {
            panic!("valid names")
        };
        let (ra, rb) = (relation(&a), relation(&b));
        assert_ne!(ra, rb);
        assert!(ra.len() - 2 <= MAX_IDENT, "{ra}");
        let short = TableName::new("telemetry").ok();
        assert_eq!(
            short.map(|t| relation(&t)).as_deref(),
            Some("\"series_telemetry\"")
        );
    }
}
