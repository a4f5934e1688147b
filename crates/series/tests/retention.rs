//! Retention run by the series store itself (issue 15): the global `retention`, each
//! table's own retention (kept in the store), the store's own pruning thread, and dropping
//! a table; on SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use midge_series::{JsonObject, Order, Row, RowsQuery, SeriesOptions, SeriesStore, Synchronous};
use serde_json::json;

mod pg;

const DAY_MS: i64 = 86_400_000;

fn data() -> JsonObject {
    json!({"v": 1}).as_object().cloned().unwrap()
}

fn options() -> SeriesOptions {
    SeriesOptions {
        synchronous: Synchronous::Normal,
        // the tests call prune themselves unless they test the thread
        prune_every: None,
        ..SeriesOptions::default()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The topics of `table`'s rows, oldest first.
fn topics(store: &SeriesStore, table: &str) -> Vec<String> {
    store
        .rows(&RowsQuery {
            table: table.into(),
            order: Order::OldestFirst,
            ..RowsQuery::default()
        })
        .unwrap()
        .into_iter()
        .map(|r| r.topic)
        .collect()
}

/// Rows 1, 3, 10 and 40 days old (topics d1, d3, d10, d40) and one now (d0).
fn fill(store: &SeriesStore, table: &str, now: i64) {
    let rows: Vec<Row> = [40, 10, 3, 1, 0]
        .iter()
        .map(|d| Row::new(now - d * DAY_MS - 1_000, format!("d{d}"), "c", data()))
        .collect();
    store.insert(table, &rows).unwrap();
}

type Opener<'a> = dyn Fn(SeriesOptions) -> SeriesStore + 'a;

fn per_table_retention_overrides_the_global_one(open: &Opener) {
    let store = open(SeriesOptions {
        retention: Some(Duration::from_secs(7 * 86_400)),
        ..options()
    });
    let now = now_ms();
    for t in ["plain", "forever", "short", "long"] {
        fill(&store, t, now);
    }
    store.set_table_retention("forever", Some(0)).unwrap();
    store.set_table_retention("short", Some(2)).unwrap();
    store.set_table_retention("long", Some(30)).unwrap();
    // set, changed, then removed again: follows the global retention
    store.set_table_retention("plain", Some(1)).unwrap();
    store.set_table_retention("plain", None).unwrap();
    let own = store.table_retentions().unwrap();
    assert_eq!(
        own.into_iter().collect::<Vec<_>>(),
        [
            ("forever".to_owned(), 0),
            ("long".to_owned(), 30),
            ("short".to_owned(), 2)
        ]
    );
    assert_eq!(store.retention_of("forever").unwrap(), None);
    assert_eq!(
        store.retention_of("short").unwrap(),
        Some(Duration::from_secs(2 * 86_400))
    );
    assert_eq!(
        store.retention_of("plain").unwrap(),
        Some(Duration::from_secs(7 * 86_400))
    );

    // 2 (plain) + 0 (forever) + 3 (short) + 1 (long)
    assert_eq!(store.prune(now).unwrap(), 6);
    assert_eq!(topics(&store, "plain"), ["d3", "d1", "d0"]);
    assert_eq!(topics(&store, "forever"), ["d40", "d10", "d3", "d1", "d0"]);
    assert_eq!(topics(&store, "short"), ["d1", "d0"]);
    assert_eq!(topics(&store, "long"), ["d10", "d3", "d1", "d0"]);
    assert_eq!(store.prune(now).unwrap(), 0);
}

fn a_table_retention_works_without_a_global_one(open: &Opener) {
    let store = open(options());
    let now = now_ms();
    fill(&store, "kept", now);
    fill(&store, "trimmed", now);
    assert_eq!(store.prune(now).unwrap(), 0, "no retention anywhere");
    store.set_table_retention("trimmed", Some(5)).unwrap();
    assert_eq!(store.prune(now).unwrap(), 2);
    assert_eq!(topics(&store, "trimmed"), ["d3", "d1", "d0"]);
    assert_eq!(topics(&store, "kept").len(), 5);
}

fn dropping_a_table_removes_its_rows_and_retention(open: &Opener) {
    let store = open(options());
    let now = now_ms();
    fill(&store, "gone", now);
    fill(&store, "stays", now);
    store.set_table_retention("gone", Some(3)).unwrap();
    assert!(store.drop_table("gone").unwrap());
    assert!(!store.has_table("gone").unwrap());
    assert!(!store.drop_table("gone").unwrap(), "dropped twice");
    assert!(store.table_retentions().unwrap().is_empty());
    let names: Vec<String> = store
        .tables()
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["stays"]);
    assert_eq!(topics(&store, "stays").len(), 5);
    // written again: a new, empty table
    store
        .insert("gone", &[Row::new(now, "again", "c", data())])
        .unwrap();
    assert_eq!(topics(&store, "gone"), ["again"]);
    assert!(store.drop_table("Not A Table!").is_err());
}

/// Issue 13 / 15: nobody calls prune (no hub, no rule): the store's own thread does.
fn the_store_prunes_by_itself(open: &Opener) {
    let store = open(SeriesOptions {
        retention: Some(Duration::from_secs(86_400)),
        prune_every: Some(Duration::from_millis(100)),
        ..options()
    });
    let now = now_ms();
    fill(&store, "global", now);
    fill(&store, "own", now);
    store.set_table_retention("own", Some(2)).unwrap();
    let start = Instant::now();
    loop {
        let g = topics(&store, "global");
        let o = topics(&store, "own");
        if g == ["d0"] && o == ["d1", "d0"] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not pruned: {g:?} {o:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn on_sqlite(body: fn(&Opener)) {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    body(&|options| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        SeriesStore::open(&dir.path().join(format!("series-{i}.db")), options).unwrap()
    });
}

macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::on_sqlite(super::$name)
            })*
        }

        /// One server for every test (a server start costs seconds).
        #[test]
        fn postgres_every_retention_test() {
            let pg = pg::PgServer::start();
            $(
                eprintln!("postgres: {}", stringify!($name));
                $name(&|options| SeriesStore::connect_postgres(&pg.new_schema(), options).unwrap());
            )*
        }
    };
}

fn configured_table_retention_yields_to_one_set_in_the_store(open: &Opener) {
    let store = open(SeriesOptions {
        retention: Some(Duration::from_secs(30 * 86_400)),
        table_retention: [("cfg".to_owned(), 2), ("both".to_owned(), 2)].into(),
        ..options()
    });
    let now = now_ms();
    for t in ["cfg", "both", "plain"] {
        fill(&store, t, now);
    }
    store.set_table_retention("both", Some(0)).unwrap();
    assert_eq!(
        store.retention_of("cfg").unwrap(),
        Some(Duration::from_secs(2 * 86_400))
    );
    assert_eq!(store.retention_of("both").unwrap(), None);
    // 3 (cfg: 40, 10, 3 days) + 0 (both: forever) + 1 (plain: 40 days)
    assert_eq!(store.prune(now).unwrap(), 4);
    assert_eq!(topics(&store, "cfg"), ["d1", "d0"]);
    assert_eq!(topics(&store, "both").len(), 5);
    assert_eq!(topics(&store, "plain"), ["d10", "d3", "d1", "d0"]);
    // the configuration's is not stored: removing the store's own falls back to it
    store.set_table_retention("both", None).unwrap();
    assert!(store.table_retentions().unwrap().is_empty());
    assert_eq!(store.prune(now).unwrap(), 3);
}

on_both_engines!(
    configured_table_retention_yields_to_one_set_in_the_store,
    per_table_retention_overrides_the_global_one,
    a_table_retention_works_without_a_global_one,
    dropping_a_table_removes_its_rows_and_retention,
    the_store_prunes_by_itself,
);

/// Each table's retention is in the file: it holds after a restart.
#[test]
fn table_retention_survives_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.db");
    {
        let store = SeriesStore::open(&path, options()).unwrap();
        store.set_table_retention("telemetry", Some(9)).unwrap();
    }
    let store = SeriesStore::open(&path, options()).unwrap();
    assert_eq!(
        store.table_retentions().unwrap().get("telemetry").copied(),
        Some(9)
    );
}

/// A store dropped while its thread waits: the thread ends (the store is not kept alive).
#[test]
fn dropping_the_store_ends_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.db");
    let threads = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
            .filter(|c| c.trim().starts_with("midge-series"))
            .count()
    };
    let before = threads();
    let store = SeriesStore::open(
        &path,
        SeriesOptions {
            prune_every: Some(Duration::from_millis(50)),
            ..options()
        },
    )
    .unwrap();
    let start = Instant::now();
    while threads() == before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no thread started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(store);
    let start = Instant::now();
    while threads() > before {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "thread still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
