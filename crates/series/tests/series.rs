//! midge-series against real SQLite files in temporary folders.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use midge_series::{
    APPLICATION_ID, Aggregate, Bucket, JsonObject, Order, Row, RowsQuery, SCHEMA_VERSION,
    SeriesError, SeriesOptions, SeriesQuery, SeriesStore, StoredRow, Synchronous, TableInfo,
    TopicInfo,
};
use proptest::prelude::*;

mod pg;
use serde_json::{Value, json};

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn fast() -> SeriesOptions {
    SeriesOptions {
        synchronous: Synchronous::Normal,
        ..SeriesOptions::default()
    }
}

/// Opens a new, empty store with these options (a new SQLite file, or a new PostgreSQL
/// database).
type Opener<'a> = dyn Fn(SeriesOptions) -> SeriesStore + 'a;

/// Runs `body` on SQLite files in a temporary folder.
fn on_sqlite(body: fn(&Opener)) {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    body(&|options| {
        let i = n.fetch_add(1, AtomicOrdering::SeqCst);
        SeriesStore::open(&dir.path().join(format!("series-{i}.db")), options).unwrap()
    });
}

/// Runs `body` on the PostgreSQL server `pg`, each store in a schema of its own.
fn on_postgres(pg: &pg::PgServer, body: fn(&Opener)) {
    body(&|options| SeriesStore::connect_postgres(&pg.new_schema(), options).unwrap());
}

/// A test that runs on a PostgreSQL server.
type PgTest = dyn Fn(&pg::PgServer);

/// Runs each `(name, test)` on `pg`, every one even after a failure, and fails naming the
/// tests that failed (their panic messages are printed as they happen).
fn run_all_on(pg: &pg::PgServer, tests: &[(&str, &PgTest)]) {
    let mut failed = Vec::new();
    for (name, test) in tests {
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(pg))) {
            Ok(()) => eprintln!("ok {name} ({:?})", started.elapsed()),
            Err(_) => {
                eprintln!("FAILED {name}");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "failed on PostgreSQL: {failed:?}");
}

/// Every test named here runs as `sqlite::<name>`, and all of them (with the tests of
/// `postgres_only`) in `postgres::every_engine_test_on_one_server`: cargo-nextest runs
/// each test in a process of its own, and one PostgreSQL server per test would cost a
/// start-up each.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                super::on_sqlite(super::$name)
            })*
        }
        mod postgres {
            use super::pg::PgServer;

            #[test]
            fn every_engine_test_on_one_server() {
                let pg = PgServer::start();
                super::run_all_on(
                    &pg,
                    &[
                        $((stringify!($name), &|pg: &PgServer| super::on_postgres(pg, super::$name)),)*
                        ("reconnecting_keeps_the_data_and_long_table_names_stay_apart",
                         &super::postgres_only::reconnecting_keeps_the_data_and_long_table_names_stay_apart),
                        ("a_database_from_a_newer_midge_is_refused",
                         &super::postgres_only::a_database_from_a_newer_midge_is_refused),
                        ("errors_name_the_url_without_its_password",
                         &super::postgres_only::errors_name_the_url_without_its_password),
                        ("a_connection_the_server_cut_is_replaced",
                         &super::postgres_only::a_connection_the_server_cut_is_replaced),
                        ("a_role_that_cannot_create_tables_uses_existing_ones",
                         &super::postgres_only::a_role_that_cannot_create_tables_uses_existing_ones),
                    ],
                );
            }
        }
    };
}

on_both_engines!(
    inserted_rows_come_back_newest_first_with_their_data,
    json_key_order_and_types_survive_the_round_trip,
    topic_filters_follow_mqtt_wildcards,
    percent_and_underscore_in_topics_are_not_sql_wildcards,
    time_ranges_include_since_and_exclude_until,
    client_id_filter,
    bucket_aggregates_are_exact_on_known_data,
    series_filters_by_topic_and_time_and_returns_raw_points,
    numeric_strings_count_and_other_values_are_skipped,
    nested_fields_and_array_indexes,
    invalid_table_names_are_refused_everywhere,
    tables_are_created_on_first_use_and_case_insensitive,
    topics_lists_counts_and_newest_ts,
    field_paths_that_try_to_inject_are_refused_or_harmless,
    invalid_topic_filters_and_topics_are_refused,
    limits_have_a_default_and_a_hard_maximum,
    scans_continue_past_a_page_of_rejected_rows_and_ties_on_ts,
    prune_deletes_rows_older_than_the_retention_in_every_table,
    prune_far_in_the_past_or_future_does_not_overflow,
    readers_see_whole_batches_while_a_writer_commits,
    filters_select_exactly_what_mqtt_matching_selects,
    paging_rows_returns_every_row_once_in_both_orders,
    series_pages_say_when_older_points_were_cut,
);

fn row(ts: i64, topic: &str, data: Value) -> Row {
    Row::new(ts, topic, "dev", obj(data))
}

fn topics_of(rows: &[StoredRow]) -> Vec<&str> {
    rows.iter().map(|r| r.topic.as_str()).collect()
}

fn ts_of(rows: &[StoredRow]) -> Vec<i64> {
    rows.iter().map(|r| r.ts).collect()
}

fn query(topic: Option<&str>) -> RowsQuery {
    RowsQuery {
        topic: topic.map(str::to_owned),
        ..RowsQuery::default()
    }
}

fn triples(b: &[Bucket]) -> Vec<(i64, f64, u64)> {
    b.iter().map(|b| (b.start, b.value, b.count)).collect()
}

fn inserted_rows_come_back_newest_first_with_their_data(open: &Opener) {
    let store = open(fast());
    let rows = vec![
        Row::new(
            1_000,
            "sensors/a/temp",
            "dev-a",
            obj(json!({"temp": 20.5, "unit": "C", "nested": {"x": [1, 2]}})),
        ),
        Row::new(2_000, "sensors/b/temp", "", obj(json!({"temp": 21}))),
        Row::new(3_000, "sensors/a/temp", "dev-a", obj(json!({}))),
    ];
    store.insert("telemetry", &rows).unwrap();

    let got = store.rows(&RowsQuery::default()).unwrap();
    assert_eq!(ts_of(&got), vec![3_000, 2_000, 1_000]);
    let oldest = got.last().unwrap();
    assert_eq!(oldest.topic, "sensors/a/temp");
    assert_eq!(oldest.client_id, "dev-a");
    assert_eq!(oldest.data, rows[0].data);
    assert_eq!(got[1].client_id, "");
    assert!(got[0].id > got[1].id && got[1].id > got[2].id);

    let asc = store
        .rows(&RowsQuery {
            order: Order::OldestFirst,
            ..RowsQuery::default()
        })
        .unwrap();
    assert_eq!(ts_of(&asc), vec![1_000, 2_000, 3_000]);
}

fn json_key_order_and_types_survive_the_round_trip(open: &Opener) {
    let store = open(fast());
    let data = obj(json!({"z": 1, "a": "x", "m": null, "b": true, "big": 9007199254740993_i64}));
    store
        .insert("telemetry", &[Row::new(1, "t", "c", data.clone())])
        .unwrap();
    let got = store.rows(&RowsQuery::default()).unwrap();
    assert_eq!(got[0].data, data);
    let keys: Vec<&String> = got[0].data.keys().collect();
    assert_eq!(keys, ["z", "a", "m", "b", "big"]);
}

fn topic_filters_follow_mqtt_wildcards(open: &Opener) {
    let store = open(fast());
    let topics = [
        "sensors",
        "sensors/a/temp",
        "sensors/b/temp",
        "sensors/a/hum",
        "sensors/a/temp/x",
        "sensorsX/a/temp",
        "Sensors/a/temp",
        "other/a/temp",
        "$SYS/broker/load",
        "sensors//temp",
    ];
    let rows: Vec<Row> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| row(i as i64, t, json!({})))
        .collect();
    store.insert("telemetry", &rows).unwrap();
    let get = |f: &str| {
        let mut t: Vec<String> = store
            .rows(&query(Some(f)))
            .unwrap()
            .into_iter()
            .map(|r| r.topic)
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        get("sensors/+/temp"),
        ["sensors//temp", "sensors/a/temp", "sensors/b/temp"]
    );
    assert_eq!(
        get("sensors/#"),
        [
            "sensors",
            "sensors//temp",
            "sensors/a/hum",
            "sensors/a/temp",
            "sensors/a/temp/x",
            "sensors/b/temp"
        ]
    );
    assert_eq!(get("sensors/a/temp"), ["sensors/a/temp"]);
    assert_eq!(get("+/a/temp").len(), 4);
    assert_eq!(get("#").len(), 9, "# does not match $SYS topics");
    assert_eq!(get("$SYS/#"), ["$SYS/broker/load"]);
    assert!(get("nothing/#").is_empty());
}

fn percent_and_underscore_in_topics_are_not_sql_wildcards(open: &Opener) {
    let store = open(fast());
    let topics = [
        "a%b/x", "aXb/x", "a_b/x", "acb/x", "a\\b/x", "ab/x", "a%/x", "A%B/x",
    ];
    let rows: Vec<Row> = topics.iter().map(|t| row(1, t, json!({}))).collect();
    store.insert("telemetry", &rows).unwrap();
    let get = |f: &str| topics_of(&store.rows(&query(Some(f))).unwrap()).join(" ");
    assert_eq!(get("a%b/x"), "a%b/x");
    assert_eq!(get("a%b/+"), "a%b/x");
    assert_eq!(get("a_b/#"), "a_b/x");
    assert_eq!(get("a\\b/+"), "a\\b/x");
    assert_eq!(get("a%/#"), "a%/x");
    assert_eq!(get("A%B/+"), "A%B/x", "matching is case-sensitive");
}

fn time_ranges_include_since_and_exclude_until(open: &Opener) {
    let store = open(fast());
    let rows: Vec<Row> = (0..10)
        .map(|i| row(i * 100, "t", json!({"v": i})))
        .collect();
    store.insert("telemetry", &rows).unwrap();
    let range = |since: Option<i64>, until: Option<i64>| {
        let mut got = ts_of(
            &store
                .rows(&RowsQuery {
                    since,
                    until,
                    ..RowsQuery::default()
                })
                .unwrap(),
        );
        got.reverse();
        got
    };
    assert_eq!(range(Some(200), Some(500)), vec![200, 300, 400]);
    assert_eq!(range(Some(250), Some(300)), Vec::<i64>::new());
    assert_eq!(range(None, Some(200)), vec![0, 100]);
    assert_eq!(range(Some(800), None), vec![800, 900]);
    assert_eq!(range(Some(500), Some(500)), Vec::<i64>::new());
    assert_eq!(range(Some(600), Some(100)), Vec::<i64>::new());
    assert_eq!(range(None, None).len(), 10);
}

fn client_id_filter(open: &Opener) {
    let store = open(fast());
    store
        .insert(
            "telemetry",
            &[
                Row::new(1, "t", "a", JsonObject::new()),
                Row::new(2, "t", "b", JsonObject::new()),
                Row::new(3, "t", "", JsonObject::new()),
            ],
        )
        .unwrap();
    let by = |c: &str| {
        ts_of(
            &store
                .rows(&RowsQuery {
                    client_id: Some(c.into()),
                    ..RowsQuery::default()
                })
                .unwrap(),
        )
    };
    assert_eq!(by("a"), vec![1]);
    assert_eq!(by(""), vec![3]);
    assert!(by("c").is_empty());
}

/// Known data: temp over three 1-second buckets.
fn bucket_data(store: &SeriesStore) {
    let rows = vec![
        row(1_000, "s/a", json!({"temp": 1})),
        row(1_500, "s/b", json!({"temp": 3.0})),
        row(1_999, "s/a", json!({"temp": "2"})),
        row(2_000, "s/a", json!({"temp": 10})),
        row(3_500, "s/b", json!({"temp": -4.5})),
        row(3_600, "s/a", json!({"temp": 0.5})),
    ];
    store.insert("telemetry", &rows).unwrap();
}

fn bucket_aggregates_are_exact_on_known_data(open: &Opener) {
    let store = open(fast());
    bucket_data(&store);
    let cases = [
        (Aggregate::Avg, [2.0, 10.0, -2.0]),
        (Aggregate::Min, [1.0, 10.0, -4.5]),
        (Aggregate::Max, [3.0, 10.0, 0.5]),
        (Aggregate::Sum, [6.0, 10.0, -4.0]),
        (Aggregate::Count, [3.0, 1.0, 2.0]),
        (Aggregate::First, [1.0, 10.0, -4.5]),
        (Aggregate::Last, [2.0, 10.0, 0.5]),
    ];
    for (aggregate, v) in cases {
        let got = store
            .series(&SeriesQuery {
                bucket_ms: 1_000,
                aggregate,
                ..SeriesQuery::new("temp")
            })
            .unwrap();
        assert_eq!(
            triples(&got),
            vec![(1_000, v[0], 3), (2_000, v[1], 1), (3_000, v[2], 2)],
            "{aggregate:?}"
        );
    }
}

fn series_filters_by_topic_and_time_and_returns_raw_points(open: &Opener) {
    let store = open(fast());
    bucket_data(&store);
    let raw = store
        .series(&SeriesQuery {
            topic: Some("s/a".into()),
            ..SeriesQuery::new("temp")
        })
        .unwrap();
    assert_eq!(
        triples(&raw),
        vec![
            (1_000, 1.0, 1),
            (1_999, 2.0, 1),
            (2_000, 10.0, 1),
            (3_600, 0.5, 1)
        ]
    );
    let ranged = store
        .series(&SeriesQuery {
            topic: Some("s/+".into()),
            since: Some(1_500),
            until: Some(3_600),
            bucket_ms: 10_000,
            aggregate: Aggregate::Sum,
            ..SeriesQuery::new("temp")
        })
        .unwrap();
    assert_eq!(triples(&ranged), vec![(0, 10.5, 4)]);
}

fn numeric_strings_count_and_other_values_are_skipped(open: &Opener) {
    let store = open(fast());
    let values = [
        json!({"temp": "31.5"}),
        json!({"temp": " 2 "}),
        json!({"temp": 1e2}),
        json!({"temp": "warm"}),
        json!({"temp": true}),
        json!({"temp": false}),
        json!({"temp": null}),
        json!({"temp": [1]}),
        json!({"temp": {"v": 1}}),
        json!({"temp": "NaN"}),
        json!({"temp": "inf"}),
        json!({"temp": ""}),
        json!({"hum": 40}),
        json!({}),
    ];
    let rows: Vec<Row> = values
        .iter()
        .enumerate()
        .map(|(i, v)| row(i as i64, "t", v.clone()))
        .collect();
    store.insert("telemetry", &rows).unwrap();
    let raw = store.series(&SeriesQuery::new("temp")).unwrap();
    assert_eq!(
        triples(&raw),
        vec![(0, 31.5, 1), (1, 2.0, 1), (2, 100.0, 1)]
    );
    let sum = store
        .series(&SeriesQuery {
            bucket_ms: 1_000,
            aggregate: Aggregate::Sum,
            ..SeriesQuery::new("temp")
        })
        .unwrap();
    assert_eq!(triples(&sum), vec![(0, 133.5, 3)]);
    assert!(
        store
            .series(&SeriesQuery::new("missing"))
            .unwrap()
            .is_empty()
    );
}

fn nested_fields_and_array_indexes(open: &Opener) {
    let store = open(fast());
    store
        .insert(
            "telemetry",
            &[
                row(
                    1,
                    "t",
                    json!({"env": {"temp": 5, "list": [7, "8"]}, "1": 9, "a-b": 3}),
                ),
                row(2, "t", json!({"env": 4})),
            ],
        )
        .unwrap();
    let first = |field: &str| {
        store
            .series(&SeriesQuery::new(field))
            .unwrap()
            .iter()
            .map(|b| b.value)
            .collect::<Vec<_>>()
    };
    assert_eq!(first("env.temp"), vec![5.0]);
    assert_eq!(first("env.list[0]"), vec![7.0]);
    assert_eq!(first("env.list[1]"), vec![8.0]);
    assert_eq!(first("env.list[2]"), Vec::<f64>::new());
    assert_eq!(first("env"), vec![4.0]);
    assert_eq!(first("1"), vec![9.0]);
    assert_eq!(first("a-b"), vec![3.0]);
}

fn invalid_table_names_are_refused_everywhere(open: &Opener) {
    let store = open(fast());
    store
        .insert("telemetry", &[row(1, "t", json!({}))])
        .unwrap();
    for bad in [
        "",
        "1x",
        "tele-metry",
        "telemetry; DROP TABLE series_telemetry",
        "telemetry\" --",
        "x'",
        &"a".repeat(64),
    ] {
        let invalid = |r: Result<(), SeriesError>| {
            assert!(
                matches!(r, Err(SeriesError::InvalidTable { .. })),
                "{bad:?}: {r:?}"
            )
        };
        invalid(store.insert(bad, &[row(1, "t", json!({}))]));
        invalid(store.insert(bad, &[]));
        invalid(
            store
                .rows(&RowsQuery {
                    table: bad.into(),
                    ..RowsQuery::default()
                })
                .map(drop),
        );
        invalid(
            store
                .series(&SeriesQuery {
                    table: bad.into(),
                    ..SeriesQuery::new("temp")
                })
                .map(drop),
        );
        invalid(store.topics(bad).map(drop));
        invalid(store.delete_before(bad, 10).map(drop));
    }
    assert_eq!(store.rows(&RowsQuery::default()).unwrap().len(), 1);
    let err = store.insert("a-b", &[]).unwrap_err().to_string();
    assert!(err.contains("\"a-b\""), "{err}");
}

fn tables_are_created_on_first_use_and_case_insensitive(open: &Opener) {
    let store = open(fast());
    assert!(store.tables().unwrap().is_empty());
    assert!(store.rows(&query(None)).unwrap().is_empty(), "no table yet");
    assert!(store.series(&SeriesQuery::new("temp")).unwrap().is_empty());
    assert!(store.topics("telemetry").unwrap().is_empty());
    assert!(!store.has_table("power").unwrap());
    store
        .insert("Power", &[row(5, "p/1", json!({"w": 1}))])
        .unwrap();
    assert!(store.has_table("power").unwrap());
    assert!(store.has_table("POWER").unwrap());
    assert!(matches!(
        store.has_table("po wer"),
        Err(SeriesError::InvalidTable { .. })
    ));
    store
        .insert("power", &[row(7, "p/2", json!({"w": 2}))])
        .unwrap();
    store
        .insert("telemetry", &[row(1, "t", json!({}))])
        .unwrap();
    store.insert("telemetry", &[]).unwrap();
    assert_eq!(
        store.tables().unwrap(),
        vec![
            TableInfo {
                name: "power".into(),
                rows: 2,
                first_ts: Some(5),
                last_ts: Some(7)
            },
            TableInfo {
                name: "telemetry".into(),
                rows: 1,
                first_ts: Some(1),
                last_ts: Some(1)
            },
        ]
    );
    let power = store
        .rows(&RowsQuery {
            table: "POWER".into(),
            ..RowsQuery::default()
        })
        .unwrap();
    assert_eq!(topics_of(&power), ["p/2", "p/1"]);
}

fn topics_lists_counts_and_newest_ts(open: &Opener) {
    let store = open(fast());
    store
        .insert(
            "telemetry",
            &[
                row(1, "b", json!({})),
                row(9, "a", json!({})),
                row(3, "b", json!({})),
                row(2, "b", json!({})),
            ],
        )
        .unwrap();
    assert_eq!(
        store.topics("telemetry").unwrap(),
        vec![
            TopicInfo {
                topic: "a".into(),
                rows: 1,
                last_ts: 9
            },
            TopicInfo {
                topic: "b".into(),
                rows: 3,
                last_ts: 3
            },
        ]
    );
}

fn field_paths_that_try_to_inject_are_refused_or_harmless(open: &Opener) {
    let store = open(fast());
    store
        .insert("telemetry", &[row(1, "t", json!({"temp": 1, "x": 2}))])
        .unwrap();
    for bad in [
        "temp') OR 1=1 --",
        "temp\"",
        "$.temp",
        "temp; DROP TABLE series_telemetry",
        "temp[0] UNION SELECT 1",
        "",
        "a..b",
    ] {
        let r = store.series(&SeriesQuery::new(bad));
        assert!(
            matches!(r, Err(SeriesError::InvalidField { .. })),
            "{bad:?}: {r:?}"
        );
    }
    // Valid paths are bound as parameters: a key that looks like SQL is just a missing key.
    assert!(store.series(&SeriesQuery::new("OR-1")).unwrap().is_empty());
    assert_eq!(store.rows(&RowsQuery::default()).unwrap().len(), 1);
}

fn invalid_topic_filters_and_topics_are_refused(open: &Opener) {
    let store = open(fast());
    for bad in ["a/#/b", "a+", "", "$share/g/t/#"] {
        let r = store.rows(&query(Some(bad)));
        assert!(
            matches!(r, Err(SeriesError::InvalidFilter { .. })),
            "{bad:?}: {r:?}"
        );
    }
    let batch = vec![
        row(1, "ok", json!({})),
        row(2, "ok/2", json!({})),
        row(3, "bad/+", json!({})),
    ];
    let r = store.insert("telemetry", &batch);
    assert!(
        matches!(r, Err(SeriesError::InvalidTopic { index: 2, .. })),
        "{r:?}"
    );
    assert!(
        store.rows(&query(None)).unwrap().is_empty(),
        "nothing of a refused batch is stored"
    );
}

fn limits_have_a_default_and_a_hard_maximum(open: &Opener) {
    let options = SeriesOptions {
        default_rows_per_query: 50,
        max_rows_per_query: 700,
        ..fast()
    };
    let store = open(options);
    let rows: Vec<Row> = (0..1_000).map(|i| row(i, "t", json!({"v": i}))).collect();
    store.insert("telemetry", &rows).unwrap();
    let n = |limit: Option<usize>| {
        store
            .rows(&RowsQuery {
                limit,
                ..RowsQuery::default()
            })
            .unwrap()
    };
    assert_eq!(n(None).len(), 50);
    assert_eq!(n(Some(10)).len(), 10);
    assert_eq!(n(Some(0)).len(), 0);
    let capped = n(Some(usize::MAX));
    assert_eq!(capped.len(), 700);
    assert_eq!(capped.first().map(|r| r.ts), Some(999), "newest kept");
    assert_eq!(capped.last().map(|r| r.ts), Some(300));

    let raw = store
        .series(&SeriesQuery {
            limit: Some(usize::MAX),
            ..SeriesQuery::new("v")
        })
        .unwrap();
    assert_eq!(raw.len(), 700);
    assert_eq!(
        (raw.first().map(|b| b.start), raw.last().map(|b| b.start)),
        (Some(300), Some(999)),
        "ascending, newest kept"
    );
    let buckets = store
        .series(&SeriesQuery {
            bucket_ms: 100,
            aggregate: Aggregate::Count,
            limit: Some(3),
            ..SeriesQuery::new("v")
        })
        .unwrap();
    assert_eq!(
        triples(&buckets),
        vec![(700, 100.0, 100), (800, 100.0, 100), (900, 100.0, 100)]
    );
}

fn scans_continue_past_a_page_of_rejected_rows_and_ties_on_ts(open: &Opener) {
    let store = open(fast());
    // 3000 rows at one ts; only every third matches `s/#` (the others pass SQL's prefix).
    let rows: Vec<Row> = (0..3_000)
        .map(|i| row(42, if i % 3 == 0 { "s/x" } else { "sx" }, json!({"v": i})))
        .collect();
    store.insert("telemetry", &rows).unwrap();
    let got = store
        .rows(&RowsQuery {
            topic: Some("s/#".into()),
            limit: Some(5_000),
            ..RowsQuery::default()
        })
        .unwrap();
    assert_eq!(got.len(), 1_000);
    let mut ids: Vec<i64> = got.iter().map(|r| r.id).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "strictly newest first");
    ids.dedup();
    assert_eq!(ids.len(), 1_000);
    let all = store
        .rows(&RowsQuery {
            limit: Some(5_000),
            order: Order::OldestFirst,
            ..RowsQuery::default()
        })
        .unwrap();
    assert_eq!(all.len(), 3_000);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let count = store
        .series(&SeriesQuery {
            topic: Some("s/#".into()),
            bucket_ms: 1_000,
            aggregate: Aggregate::Count,
            ..SeriesQuery::new("v")
        })
        .unwrap();
    assert_eq!(triples(&count), vec![(0, 1_000.0, 1_000)]);
}

fn prune_deletes_rows_older_than_the_retention_in_every_table(open: &Opener) {
    let options = SeriesOptions {
        retention: Some(Duration::from_secs(10)),
        prune_chunk_rows: 7,
        ..fast()
    };
    let store = open(options);
    let rows: Vec<Row> = (0..100).map(|i| row(i * 1_000, "t", json!({}))).collect();
    store.insert("telemetry", &rows).unwrap();
    store.insert("other", &rows[..20]).unwrap();
    // now = 60 s, retention 10 s: keep ts >= 50 s.
    assert_eq!(store.prune(60_000).unwrap(), 50 + 20);
    let left = store
        .rows(&RowsQuery {
            order: Order::OldestFirst,
            ..RowsQuery::default()
        })
        .unwrap();
    assert_eq!(left.first().map(|r| r.ts), Some(50_000));
    assert_eq!(left.len(), 50);
    assert_eq!(store.prune(60_000).unwrap(), 0);
    assert_eq!(store.delete_before("telemetry", 60_000).unwrap(), 10);
    assert_eq!(store.delete_before("never_made", 60_000).unwrap(), 0);
    let tables = store.tables().unwrap();
    assert_eq!(tables[0].rows, 0);
    assert_eq!(tables[0].first_ts, None);

    let keep_all = open(fast());
    keep_all.insert("telemetry", &rows).unwrap();
    assert_eq!(keep_all.prune(i64::MAX).unwrap(), 0, "no retention");
}

fn prune_far_in_the_past_or_future_does_not_overflow(open: &Opener) {
    let options = SeriesOptions {
        retention: Some(Duration::MAX),
        ..fast()
    };
    let store = open(options);
    store
        .insert(
            "telemetry",
            &[row(i64::MIN, "t", json!({})), row(0, "t", json!({}))],
        )
        .unwrap();
    assert_eq!(store.prune(i64::MIN).unwrap(), 0);
    // Keep forever minus nothing: only the row before the epoch is older than MAX - MAX.
    assert_eq!(store.prune(i64::MAX).unwrap(), 1);
}

/// Issue 13: with more rows than the limit an answer was cut silently. Paging with the
/// cursor returns each row once, ties on ts included, whatever the order.
fn paging_rows_returns_every_row_once_in_both_orders(open: &Opener) {
    let store = open(SeriesOptions {
        max_rows_per_query: 5,
        ..fast()
    });
    // 23 rows, several sharing a ts, one topic that the filter leaves out
    let mut rows = Vec::new();
    for i in 0..23i64 {
        rows.push(row(1_000 + i / 3, "p/a", json!({ "i": i })));
        if i % 4 == 0 {
            rows.push(row(1_000 + i / 3, "q/x", json!({ "i": -1 })));
        }
    }
    store.insert("telemetry", &rows).unwrap();
    for order in [Order::NewestFirst, Order::OldestFirst] {
        for limit in [None, Some(1), Some(4), Some(100)] {
            let q = RowsQuery {
                topic: Some("p/#".into()),
                limit,
                order,
                ..RowsQuery::default()
            };
            let mut seen = Vec::new();
            let mut after = None;
            let mut pages = 0;
            loop {
                let page = store.rows_page(&q, after).unwrap();
                pages += 1;
                assert!(page.rows.len() <= limit.unwrap_or(5).min(5));
                seen.extend(page.rows.iter().map(|r| r.data["i"].as_i64().unwrap()));
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
                assert!(pages < 100);
            }
            let mut want: Vec<i64> = (0..23).collect();
            if order == Order::NewestFirst {
                want.reverse();
            }
            assert_eq!(seen, want, "{order:?} {limit:?}");
        }
    }
    // an answer that fits says so
    let q = RowsQuery {
        topic: Some("q/x".into()),
        ..RowsQuery::default()
    };
    let page = store.rows_page(&q, None).unwrap();
    assert_eq!(page.rows.len(), 5);
    assert!(page.next.is_some());
    let q = RowsQuery {
        topic: Some("q/x".into()),
        since: Some(1_002),
        ..RowsQuery::default()
    };
    let page = store.rows_page(&q, None).unwrap();
    assert_eq!((page.rows.len(), page.next), (4, None));
}

/// Issue 13: `series?bucket=0` dropped the oldest points silently.
fn series_pages_say_when_older_points_were_cut(open: &Opener) {
    let store = open(SeriesOptions {
        max_rows_per_query: 5,
        ..fast()
    });
    // 8 points; ts 1003 twice
    let ts = [1_000, 1_001, 1_002, 1_003, 1_003, 1_004, 1_005, 1_006];
    let rows: Vec<Row> = ts
        .iter()
        .enumerate()
        .map(|(i, t)| row(*t, "s/a", json!({ "v": i })))
        .collect();
    store.insert("telemetry", &rows).unwrap();
    let mut q = SeriesQuery::new("v");
    let mut got = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.series_page(&q).unwrap();
        pages += 1;
        assert!(page.points.len() <= 5);
        let mut vals: Vec<f64> = page.points.iter().map(|b| b.value).collect();
        vals.extend(got);
        got = vals;
        match page.next_until {
            Some(u) => q.until = Some(u),
            None => break,
        }
        assert!(pages < 10);
    }
    // every point once, ties at the cut moved whole to the next page
    assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert!(pages >= 2);
    // buckets: the newest kept, older ones announced; min and max ride along
    let q = SeriesQuery {
        bucket_ms: 2,
        limit: Some(2),
        ..SeriesQuery::new("v")
    };
    let page = store.series_page(&q).unwrap();
    let starts: Vec<i64> = page.points.iter().map(|b| b.start).collect();
    assert_eq!(starts, [1_004, 1_006]);
    assert_eq!(page.next_until, Some(1_004));
    assert_eq!((page.points[0].min, page.points[0].max), (5.0, 6.0));
    let q = SeriesQuery {
        bucket_ms: 100,
        ..SeriesQuery::new("v")
    };
    let page = store.series_page(&q).unwrap();
    assert_eq!(page.next_until, None);
    assert_eq!((page.points[0].min, page.points[0].max), (0.0, 7.0));
}

#[test]
fn reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data/nested/series.db");
    {
        let store = SeriesStore::open(&path, SeriesOptions::default()).unwrap();
        store
            .insert("telemetry", &[row(1, "t", json!({"temp": 4}))])
            .unwrap();
        store.insert("other", &[row(2, "u", json!({}))]).unwrap();
    }
    let store = SeriesStore::open(&path, SeriesOptions::default()).unwrap();
    let got = store.rows(&RowsQuery::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, obj(json!({"temp": 4})));
    assert_eq!(store.tables().unwrap().len(), 2);
    store
        .insert("telemetry", &[row(3, "t", json!({}))])
        .unwrap();
    assert_eq!(store.rows(&RowsQuery::default()).unwrap().len(), 2);
}

#[test]
fn the_file_is_in_wal_mode_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    drop(SeriesStore::open(&path, SeriesOptions::default()).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_file_from_a_newer_midge_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    {
        let store = SeriesStore::open(&path, fast()).unwrap();
        store
            .insert("telemetry", &[row(1, "t", json!({}))])
            .unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = SeriesStore::open(&path, fast()).unwrap_err();
    assert!(
        matches!(err, SeriesError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("s.db") && text.contains("newer midge"),
        "{text}"
    );
}

#[test]
fn another_programs_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE notes (x TEXT); INSERT INTO notes VALUES ('keep');")
        .unwrap();
    drop(conn);
    let err = SeriesStore::open(&path, fast()).unwrap_err();
    assert!(matches!(err, SeriesError::NotSeries { .. }), "{err:?}");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "not switched to WAL");
}

#[test]
fn a_garbage_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    let junk: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&path, &junk).unwrap();
    let err = SeriesStore::open(&path, fast()).unwrap_err();
    assert!(matches!(err, SeriesError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.db"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        junk,
        "the file is left as it was"
    );

    // A damaged midge file: the header survives, the schema page does not.
    let good = dir.path().join("damaged.db");
    {
        let store = SeriesStore::open(&good, fast()).unwrap();
        store
            .insert("telemetry", &[row(1, "t", json!({}))])
            .unwrap();
    }
    let mut bytes = std::fs::read(&good).unwrap();
    for b in bytes.iter_mut().skip(100).take(3_000) {
        *b = 0xA5;
    }
    std::fs::write(&good, &bytes).unwrap();
    let r = SeriesStore::open(&good, fast()).and_then(|s| s.rows(&RowsQuery::default()));
    let err = r.unwrap_err();
    assert!(err.to_string().contains("damaged.db"), "{err}");

    // A folder where the file should be.
    let err = SeriesStore::open(dir.path(), fast()).unwrap_err();
    assert!(matches!(err, SeriesError::Open { .. }), "{err:?}");
}

#[test]
fn the_store_is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<SeriesStore>();
    check::<SeriesError>();
}

fn readers_see_whole_batches_while_a_writer_commits(open: &Opener) {
    const BATCH: i64 = 100;
    const BATCHES: i64 = 60;
    let options = SeriesOptions {
        max_rows_per_query: 100_000,
        ..SeriesOptions::default()
    };
    let store = Arc::new(open(options));
    store.insert("telemetry", &[]).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for b in 0..BATCHES {
                let rows: Vec<Row> = (0..BATCH)
                    .map(|i| {
                        let n = b * BATCH + i;
                        row(n, &format!("s/{}", n % 4), json!({"v": 1, "n": n}))
                    })
                    .collect();
                store.insert("telemetry", &rows).unwrap();
            }
            done.store(true, AtomicOrdering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut queries = 0;
                loop {
                    let finished = done.load(AtomicOrdering::SeqCst);
                    let sum = store
                        .series(&SeriesQuery {
                            bucket_ms: 1_000_000,
                            aggregate: Aggregate::Sum,
                            limit: Some(10),
                            ..SeriesQuery::new("v")
                        })
                        .unwrap();
                    let count = sum.first().map_or(0, |b| b.count);
                    assert_eq!(
                        count % BATCH as u64,
                        0,
                        "a batch is seen whole or not at all"
                    );
                    assert!(count >= seen, "a later read never sees fewer rows");
                    assert_eq!(sum.first().map_or(0.0, |b| b.value), count as f64);
                    let rows = store
                        .rows(&RowsQuery {
                            topic: Some("s/+".into()),
                            limit: Some(100_000),
                            ..RowsQuery::default()
                        })
                        .unwrap();
                    assert_eq!(rows.len() as u64 % BATCH as u64, 0);
                    assert!(rows.len() as u64 >= count);
                    seen = rows.len() as u64;
                    queries += 1;
                    if finished {
                        return (seen, queries);
                    }
                }
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        let (seen, queries) = r.join().unwrap();
        assert_eq!(seen, (BATCH * BATCHES) as u64);
        assert!(queries >= 1);
    }
}

/// Whatever the topics and the filter, the store returns exactly the rows MQTT matching
/// selects (SQL's LIKE and range are only a superset, and never lose a row).
fn filters_select_exactly_what_mqtt_matching_selects(open: &Opener) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec(topic_strategy(), 1..40),
        filter_strategy(),
    );
    // one store, a new table for each case
    let store = open(fast());
    let cases = std::cell::Cell::new(0);
    runner
        .run(&strategy, |(topics, filter)| {
            let table = format!("case_{}", cases.replace(cases.get() + 1));
            let rows: Vec<Row> = topics
                .iter()
                .enumerate()
                .map(|(i, t)| row(i as i64, t, json!({})))
                .collect();
            store.insert(&table, &rows).unwrap();
            let mut got: Vec<i64> = store
                .rows(&RowsQuery {
                    table: table.clone(),
                    topic: Some(filter.clone()),
                    limit: Some(1_000),
                    ..RowsQuery::default()
                })
                .unwrap()
                .iter()
                .map(|r| r.ts)
                .collect();
            got.sort_unstable();
            let want: Vec<i64> = topics
                .iter()
                .enumerate()
                .filter(|(_, t)| midge_codec::matches_filter(&filter, t))
                .map(|(i, _)| i as i64)
                .collect();
            prop_assert_eq!(got, want, "filter {:?} over {:?}", filter, topics);
            Ok(())
        })
        .unwrap();
}

/// Levels made of characters that are special somewhere: LIKE's `%` `_` `\`, case, `$`,
/// and a multi-byte character.
fn level_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!['a', 'A', 'b', '%', '_', '\\', '$', 'é', '0']),
        0..3,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(level_strategy(), 1..4)
        .prop_map(|l| l.join("/"))
        .prop_filter("a topic is not empty", |t| !t.is_empty())
}

fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop_oneof![
        3 => level_strategy(),
        1 => Just("+".to_owned()),
    ];
    (prop::collection::vec(level, 1..4), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("a filter is not empty", |f| !f.is_empty())
}

/// What only the PostgreSQL engine has: a server that outlives the store, a URL.
mod postgres_only {
    use super::*;

    pub(super) fn reconnecting_keeps_the_data_and_long_table_names_stay_apart(pg: &pg::PgServer) {
        let url = pg.new_database();
        let long_a = format!("{}_a", "x".repeat(60));
        let long_b = format!("{}_b", "x".repeat(60));
        {
            let store = SeriesStore::connect_postgres(&url, SeriesOptions::default()).unwrap();
            store
                .insert("telemetry", &[row(1, "t", json!({"temp": 4}))])
                .unwrap();
            store.insert(&long_a, &[row(2, "a", json!({}))]).unwrap();
            store.insert(&long_b, &[row(3, "b", json!({}))]).unwrap();
        }
        let store = SeriesStore::connect_postgres(&url, SeriesOptions::default()).unwrap();
        let got = store.rows(&RowsQuery::default()).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, obj(json!({"temp": 4})));
        let names: Vec<String> = store
            .tables()
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, ["telemetry".into(), long_a.clone(), long_b.clone()]);
        let topic_of = |table: &str| {
            let q = RowsQuery {
                table: table.into(),
                ..RowsQuery::default()
            };
            topics_of(&store.rows(&q).unwrap()).join(",")
        };
        assert_eq!(topic_of(&long_a), "a");
        assert_eq!(topic_of(&long_b), "b");
        store
            .insert("telemetry", &[row(3, "t", json!({}))])
            .unwrap();
        assert_eq!(store.rows(&RowsQuery::default()).unwrap().len(), 2);
        // the tables are plain SQL tables a person can read
        assert_eq!(
            pg.psql(
                url.rsplit('/').next().unwrap(),
                "SELECT data->>'temp' FROM series_telemetry WHERE ts = 1"
            ),
            "4"
        );
    }

    pub(super) fn a_connection_the_server_cut_is_replaced(pg: &pg::PgServer) {
        let url = pg.new_database();
        let db = url.rsplit('/').next().unwrap().to_owned();
        let store = SeriesStore::connect_postgres(&url, fast()).unwrap();
        store
            .insert("telemetry", &[row(1, "t", json!({}))])
            .unwrap();
        assert_eq!(store.rows(&RowsQuery::default()).unwrap().len(), 1);
        // every connection of the store is cut
        pg.psql(
            "postgres",
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            ),
        );
        // the first call on a cut connection may fail; the store then reconnects
        let _ = store.insert("telemetry", &[row(2, "t", json!({}))]);
        let _ = store.rows(&RowsQuery::default());
        store
            .insert("telemetry", &[row(3, "t", json!({}))])
            .unwrap();
        let ts = ts_of(&store.rows(&RowsQuery::default()).unwrap());
        assert!(ts.contains(&1) && ts.contains(&3), "{ts:?}");
    }

    pub(super) fn a_database_from_a_newer_midge_is_refused(pg: &pg::PgServer) {
        let url = pg.new_database();
        drop(SeriesStore::connect_postgres(&url, fast()).unwrap());
        let db = url.rsplit('/').next().unwrap();
        pg.psql(
            db,
            "UPDATE midge_series_meta SET value = value + 1 WHERE key = 'schema_version'",
        );
        let err = SeriesStore::connect_postgres(&url, fast()).unwrap_err();
        assert!(matches!(err, SeriesError::NewerSchema { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("newer midge") && text.contains(db), "{text}");
    }

    pub(super) fn errors_name_the_url_without_its_password(pg: &pg::PgServer) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://midge:s3cret-pw@127.0.0.1:{port}/iot");
        let options = SeriesOptions {
            busy_timeout: Duration::from_secs(2),
            ..fast()
        };
        let err = SeriesStore::connect_postgres(&url, options.clone()).unwrap_err();
        assert!(matches!(err, SeriesError::Open { .. }), "{err:?}");
        let text = format!("{err} / {err:?}");
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}/iot")), "{text}");
        let err =
            SeriesStore::connect_postgres("postgres://a:pw@host:notaport/x", options).unwrap_err();
        assert!(!err.to_string().contains(":pw@"), "{err}");
        // the store says where it is, without the password
        let with_password = pg
            .new_database()
            .replace("postgres@", "postgres:unused-pw@");
        let store = SeriesStore::connect_postgres(&with_password, fast()).unwrap();
        assert!(
            !store.describe().contains("unused-pw"),
            "{}",
            store.describe()
        );
        assert!(
            store.describe().contains("127.0.0.1"),
            "{}",
            store.describe()
        );
    }

    pub(super) fn a_role_that_cannot_create_tables_uses_existing_ones(pg: &pg::PgServer) {
        let url = pg.new_database();
        let db = url.rsplit('/').next().unwrap().to_owned();
        {
            let owner = SeriesStore::connect_postgres(&url, fast()).unwrap();
            owner
                .insert("telemetry", &[row(1, "t", json!({}))])
                .unwrap();
        }
        // PostgreSQL 15 lets only the owner create tables in `public`
        pg.psql(
            &db,
            "CREATE ROLE app LOGIN; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app; \
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;",
        );
        let app_url = url.replace("postgres@", "app@");
        let app = SeriesStore::connect_postgres(&app_url, fast()).unwrap();
        app.insert("telemetry", &[row(2, "t", json!({}))]).unwrap();
        assert_eq!(ts_of(&app.rows(&RowsQuery::default()).unwrap()), [2, 1]);
        let err = app.insert("other", &[row(3, "t", json!({}))]).unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}
