//! Issue 13 item 9, the Data tab's API: CSV export of a filter (quoting, every row however
//! many pages), paging through the page size, purging old rows, dropping a table, and
//! each table's retention (kept in the series store).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use midge_series::{Row, SeriesOptions, SeriesStore};
use serde_json::{Value, json};

/// A hub whose store answers at most 7 rows per query (so that 25 rows take pages).
async fn small_pages() -> (Hub, Arc<SeriesStore>, tempfile::TempDir) {
    hub_with(SeriesOptions::default()).await
}

async fn hub_with(options: SeriesOptions) -> (Hub, Arc<SeriesStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SeriesStore::open(
            &dir.path().join("small.db"),
            SeriesOptions {
                max_rows_per_query: 7,
                default_rows_per_query: 7,
                ..options
            },
        )
        .unwrap(),
    );
    let s = store.clone();
    let hub = Hub::start_with(|_, _| {}, move |d| d.series = Some(s)).await;
    (hub, store, dir)
}

/// 25 rows at ts 1000.. (two rows share each ts), with awkward text.
fn fill(store: &SeriesStore) {
    let rows: Vec<Row> = (0..25i64)
        .map(|i| {
            let mut data = json!({ "name": format!("a,\"b\"\nc{i}"), "v": i });
            if i == 20 {
                data["extra"] = json!({"k": [1, 2]});
            }
            Row::new(
                1_000 + i / 2,
                if i % 2 == 0 { "s/even" } else { "s/odd" },
                "dev,1",
                obj(data),
            )
        })
        .collect();
    store.insert("telemetry", &rows).unwrap();
}

/// RFC 4180 records (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => record.push(std::mem::take(&mut field)),
                '\r' => {}
                '\n' => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                _ => field.push(c),
            }
        }
    }
    assert!(
        field.is_empty() && record.is_empty(),
        "no line end at the end"
    );
    records
}

#[tokio::test]
async fn csv_export_quotes_fields_and_streams_every_row_past_the_row_limit() {
    let (hub, store, _dir) = small_pages().await;
    fill(&store);
    let r = hub.get("/api/v1/tables/telemetry/rows.csv").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"telemetry.csv\""
    );
    let records = parse_csv(&r.text());
    assert_eq!(
        records[0],
        ["time", "topic", "client_id", "name", "v", "other_fields"]
    );
    let rows = &records[1..];
    assert_eq!(rows.len(), 25, "every row, though a query answers 7");
    for (i, rec) in rows.iter().enumerate() {
        assert_eq!(rec.len(), 6, "{rec:?}");
        assert_eq!(rec[0], format!("1970-01-01T00:00:01.{:03}Z", i / 2));
        assert_eq!(rec[1], if i % 2 == 0 { "s/even" } else { "s/odd" });
        assert_eq!(rec[2], "dev,1");
        assert_eq!(rec[3], format!("a,\"b\"\nc{i}"));
        assert_eq!(rec[4], i.to_string());
    }
    // a field first seen past the first page is kept, as JSON
    assert_eq!(rows[20][5], r#"{"extra":{"k":[1,2]}}"#);
    assert_eq!(rows[4][5], "");

    // the filter of the page: topic and time
    let r = hub
        .get("/api/v1/tables/telemetry/rows.csv?topic=s/odd&since=1003&order=desc")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let recs = parse_csv(&r.text());
    let vs: Vec<&str> = recs[1..].iter().map(|r| r[4].as_str()).collect();
    assert_eq!(vs, ["23", "21", "19", "17", "15", "13", "11", "9", "7"]);

    // errors are JSON, before any CSV
    let r = hub.get("/api/v1/tables/nosuch/rows.csv").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.error().contains("nosuch"), "{}", r.text());
    let r = hub.get("/api/v1/tables/telemetry/rows.csv?limit=3").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = hub
        .get("/api/v1/tables/telemetry/rows.csv?topic=a/%23/b")
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn paging_by_the_page_size_returns_every_row_exactly_once() {
    let (hub, store, _dir) = small_pages().await;
    fill(&store);
    for order in ["desc", "asc"] {
        let mut seen = Vec::new();
        let mut cursor = String::new();
        for page in 0.. {
            assert!(page < 20, "paging does not end");
            let r = hub
                .get(&format!(
                    "/api/v1/tables/telemetry/rows?limit=4&order={order}{cursor}"
                ))
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            let v = r.json();
            let rows = v["rows"].as_array().unwrap();
            assert!(rows.len() <= 4);
            seen.extend(rows.iter().map(|r| r["data"]["v"].as_i64().unwrap()));
            match &v["next"] {
                Value::String(n) => cursor = format!("&cursor={n}"),
                _ => break,
            }
        }
        assert_eq!(seen.len(), 25, "{order}: {seen:?}");
        assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 25, "{seen:?}");
    }
}

#[tokio::test]
async fn purge_deletes_old_rows_and_drop_removes_the_table() {
    let (hub, store, _dir) = small_pages().await;
    fill(&store);
    store
        .insert("other", &[Row::new(5, "t", "c", obj(json!({"v": 1})))])
        .unwrap();

    // rows before ts 1005: 10 of them
    let r = hub
        .send_json(
            "POST",
            "/api/v1/tables/telemetry/purge",
            &json!({"before": 1005}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 10);
    let tables = hub.get("/api/v1/tables").await.json();
    let t = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "telemetry")
        .unwrap()
        .clone();
    assert_eq!(t["rows"], 15);
    assert_eq!(t["first_ts"], 1005);
    // the same as a query, with an RFC 3339 time
    let r = hub
        .send_json(
            "DELETE",
            "/api/v1/tables/telemetry/rows?before=1970-01-01T00:00:01.007Z",
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["deleted"], 4);

    for (body, what) in [
        (json!({}), "before"),
        (json!({"before": "yesterday"}), "before"),
        (json!({"before": 1.5}), "before"),
        (json!({"before": 5, "all": true}), "all"),
        (json!([1]), "before"),
    ] {
        let r = hub
            .send_json("POST", "/api/v1/tables/telemetry/purge", &body)
            .await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(r.error().contains(what), "{body}: {}", r.text());
    }
    let r = hub
        .send_json("POST", "/api/v1/tables/nosuch/purge", &json!({"before": 5}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());

    let r = hub
        .send_json("DELETE", "/api/v1/tables/telemetry", &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["dropped"], true);
    let names: Vec<Value> = hub.get("/api/v1/tables").await.json()["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("other")]);
    let r = hub.get("/api/v1/tables/telemetry/rows").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = hub
        .send_json("DELETE", "/api/v1/tables/telemetry", &json!({}))
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = hub
        .send_json("DELETE", "/api/v1/tables/bad%20name", &json!({}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test]
async fn table_retention_is_set_read_and_checked() {
    let (hub, store, _dir) = small_pages().await;
    fill(&store);
    let path = "/api/v1/tables/telemetry/retention";
    let r = hub.get(path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"table": "telemetry", "days": null, "config_days": null, "default_days": null,
               "effective_days": null, "source": "default"})
    );

    let r = hub.send_json("PUT", path, &json!({"days": 7})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["effective_days"], 7);
    assert_eq!(hub.get(path).await.json()["days"], 7);
    assert_eq!(store.table_retentions().unwrap().get("telemetry"), Some(&7));
    let t = &hub.get("/api/v1/tables").await.json()["tables"][0];
    assert_eq!(t["retention_days"], 7);
    assert_eq!(t["own_retention_days"], 7);

    // 0 keeps forever; null follows the store's default again
    let r = hub.send_json("PUT", path, &json!({"days": 0})).await;
    assert_eq!(r.json()["effective_days"], Value::Null);
    assert_eq!(r.json()["days"], 0);
    let r = hub.send_json("PUT", path, &json!({"days": null})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(store.table_retentions().unwrap().is_empty());

    for body in [
        json!({"days": -1}),
        json!({"days": 1.5}),
        json!({"days": "7"}),
        json!({"days": 40_000}),
        json!({}),
        json!(7),
        json!({"days": 7, "hours": 1}),
    ] {
        let r = hub.send_json("PUT", path, &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert!(!r.error().is_empty());
    }
    let r = hub
        .send_json(
            "PUT",
            "/api/v1/tables/nosuch/retention",
            &json!({"days": 3}),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = hub.get("/api/v1/tables/nosuch/retention").await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = request(
        hub.addr,
        "PUT",
        path,
        &[("content-type", "text/plain")],
        Some(b"{\"days\": 3}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
}

/// `[[series.table]]`'s retention shows as the source until one is set from the API.
#[tokio::test]
async fn configured_table_retention_is_shown_and_overridden() {
    let (hub, store, _dir) = hub_with(SeriesOptions {
        retention: Some(std::time::Duration::from_secs(30 * 86_400)),
        table_retention: [("telemetry".to_owned(), 2)].into(),
        ..SeriesOptions::default()
    })
    .await;
    fill(&store);
    let path = "/api/v1/tables/telemetry/retention";
    let r = hub.get(path).await.json();
    assert_eq!(
        r,
        json!({"table": "telemetry", "days": null, "config_days": 2, "default_days": 30,
               "effective_days": 2, "source": "config"})
    );
    let r = hub.send_json("PUT", path, &json!({"days": 9})).await.json();
    assert_eq!(
        (&r["effective_days"], &r["source"]),
        (&json!(9), &json!("table"))
    );
    let t = &hub.get("/api/v1/tables").await.json()["tables"][0];
    assert_eq!(
        (&t["retention_days"], &t["retention_source"]),
        (&json!(9), &json!("table"))
    );
    let r = hub
        .send_json("PUT", path, &json!({"days": null}))
        .await
        .json();
    assert_eq!(
        (&r["effective_days"], &r["source"]),
        (&json!(2), &json!("config"))
    );
}
