//! Tests of the SQL the store builds: what results alone cannot show (which rows SQL lets
//! through before the exact MQTT check, which index a query uses).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::JsonObject;

fn store() -> (tempfile::TempDir, Sqlite) {
    let dir = tempfile::tempdir().unwrap();
    let options = SeriesOptions {
        synchronous: Synchronous::Normal,
        ..SeriesOptions::default()
    };
    let store = Sqlite::open(&dir.path().join("s.db"), options).unwrap();
    (dir, store)
}

fn insert_topics(store: &Sqlite, topics: &[&str]) {
    let rows: Vec<Row> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| Row::new(i as i64, *t, "", JsonObject::new()))
        .collect();
    store.insert("t", &rows).unwrap();
}

fn scan<'q>(table: &'q TableName, topic: Option<&'q TopicMatch>) -> Scan<'q> {
    Scan {
        table,
        columns: "",
        condition: None,
        leading: Vec::new(),
        topic,
        client_id: None,
        since: Some(0),
        until: Some(1_000),
        order: Order::NewestFirst,
        after: None,
    }
}

/// Topics the SQL of a scan lets through, before the exact check in Rust.
fn sql_candidates(store: &Sqlite, filter: &str) -> Vec<String> {
    let table = TableName::new("t").unwrap();
    let m = TopicMatch::new(filter).unwrap();
    let (sql, params) = scan(&table, Some(&m)).page(None);
    let w = lock(&store.writer);
    let mut stmt = w.conn.prepare(&sql).unwrap();
    let mut out: Vec<String> = stmt
        .query_map(params_from_iter(params), |r| r.get(2))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    out.sort();
    out
}

#[test]
fn like_metacharacters_in_topics_are_literal_in_sql() {
    let (_dir, store) = store();
    insert_topics(
        &store,
        &[
            "a%b/x", "aXb/x", "a_b/x", "acb/x", "a\\b/x", "ab/x", "a%bc/x",
        ],
    );
    assert_eq!(sql_candidates(&store, "a%b/+"), vec!["a%b/x"]);
    assert_eq!(sql_candidates(&store, "a_b/#"), vec!["a_b/x"]);
    assert_eq!(sql_candidates(&store, "a\\b/+"), vec!["a\\b/x"]);
    // `+` is a SQL `%`: a superset that the exact check narrows.
    assert_eq!(
        sql_candidates(&store, "+/x"),
        vec![
            "a%b/x", "a%bc/x", "aXb/x", "a\\b/x", "a_b/x", "ab/x", "acb/x"
        ]
    );
}

#[test]
fn hash_wildcard_candidates_include_the_parent_level() {
    let (_dir, store) = store();
    insert_topics(&store, &["s", "s/a", "s/a/b", "sa", "t"]);
    // `sa` gets through SQL (prefix `s`) and is dropped by the MQTT check.
    assert_eq!(
        sql_candidates(&store, "s/#"),
        vec!["s", "s/a", "s/a/b", "sa"]
    );
}

fn plan(store: &Sqlite, topic: Option<&str>, order: Order) -> String {
    let table = TableName::new("t").unwrap();
    let m = topic.map(|t| TopicMatch::new(t).unwrap());
    let mut s = scan(&table, m.as_ref());
    s.order = order;
    let (sql, params) = s.page(Some((5, 5)));
    let w = lock(&store.writer);
    let mut stmt = w
        .conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap();
    let lines: Vec<String> = stmt
        .query_map(params_from_iter(params), |r| r.get::<_, String>(3))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    lines.join("; ")
}

#[test]
fn scans_read_an_index_in_order_without_sorting() {
    let (_dir, store) = store();
    insert_topics(&store, &["a/b"]);
    for order in [Order::NewestFirst, Order::OldestFirst] {
        let exact = plan(&store, Some("a/b"), order);
        assert!(exact.contains("idx_topic_ts_t"), "{exact}");
        assert!(!exact.contains("TEMP B-TREE"), "{exact}");
        let wild = plan(&store, Some("a/+"), order);
        assert!(wild.contains("idx_ts_t"), "{wild}");
        assert!(!wild.contains("TEMP B-TREE"), "{wild}");
        let all = plan(&store, None, order);
        assert!(all.contains("idx_ts_t"), "{all}");
        assert!(!all.contains("TEMP B-TREE"), "{all}");
    }
}

#[test]
fn numeric_accepts_numbers_and_numeric_strings_only() {
    assert_eq!(numeric(ValueRef::Integer(3)), Some(3.0));
    assert_eq!(numeric(ValueRef::Real(-1.5)), Some(-1.5));
    assert_eq!(numeric(ValueRef::Text(b"31.5")), Some(31.5));
    assert_eq!(numeric(ValueRef::Text(b" 7 ")), Some(7.0));
    assert_eq!(numeric(ValueRef::Text(b"1e3")), Some(1000.0));
    for bad in [
        &b"warm"[..],
        b"",
        b"NaN",
        b"inf",
        b"-infinity",
        b"31.5C",
        b"\xff",
    ] {
        assert_eq!(numeric(ValueRef::Text(bad)), None, "{bad:?}");
    }
    assert_eq!(numeric(ValueRef::Real(f64::INFINITY)), None);
    assert_eq!(numeric(ValueRef::Null), None);
    assert_eq!(numeric(ValueRef::Blob(b"1")), None);
}

#[test]
fn row_topics_must_be_topic_names() {
    assert!(check_topic(0, "a/b").is_ok());
    for bad in ["", "a/+", "a/#", "a\0b"] {
        assert!(matches!(
            check_topic(3, bad),
            Err(SeriesError::InvalidTopic { index: 3, .. })
        ));
    }
    assert!(check_topic(0, &"a".repeat(65_536)).is_err());
}

fn resolved(store: &Sqlite, filter: &str) -> Option<TopicMatch> {
    let table = TableName::new("t").unwrap();
    let w = lock(&store.writer);
    resolve_topic(&w.conn, &table, TopicMatch::new(filter).unwrap()).unwrap()
}

#[test]
fn wildcards_resolve_to_the_stored_topics_they_match() {
    let (_dir, store) = store();
    insert_topics(&store, &["s/a", "s/b", "t/a", "t/a/b", "$SYS/x"]);
    let wild = TopicMatch::new("s/+").unwrap();
    assert_eq!(resolved(&store, "s/+"), Some(wild));
    assert_eq!(
        resolved(&store, "t/+"),
        Some(TopicMatch::Exact("t/a".into()))
    );
    assert_eq!(
        resolved(&store, "t/+/b"),
        Some(TopicMatch::Exact("t/a/b".into()))
    );
    assert_eq!(resolved(&store, "u/#"), None);
    assert_eq!(resolved(&store, "s/a/+"), None);
    assert_eq!(resolved(&store, "+/x"), None, "`+` does not match `$SYS`");
    assert_eq!(
        resolved(&store, "$SYS/+"),
        Some(TopicMatch::Exact("$SYS/x".into()))
    );
    assert_eq!(
        resolved(&store, "s/a"),
        Some(TopicMatch::Exact("s/a".into()))
    );
}

#[test]
fn resolving_stops_after_the_candidate_limit() {
    let (_dir, store) = store();
    let topics: Vec<String> = (0..=MAX_TOPIC_CANDIDATES)
        .map(|i| format!("p/{i}"))
        .collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    insert_topics(&store, &refs);
    // No topic matches, but there are too many candidates to look at all of them.
    let filter = TopicMatch::new("p/+/z").unwrap();
    assert_eq!(resolved(&store, "p/+/z"), Some(filter));
    assert!(
        store
            .rows(&RowsQuery {
                table: "t".into(),
                topic: Some("p/+/z".into()),
                ..RowsQuery::default()
            })
            .unwrap()
            .is_empty()
    );
}
