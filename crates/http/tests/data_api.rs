//! Issue 13: the data routes never cut an answer silently. A cut answer says
//! `"truncated": true` and gives `"next"`, a cursor sent back as `cursor=`; paging returns
//! every row once; charts ask for `points=N` and get min/max per bucket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;

use common::*;
use midge_series::Row;
use serde_json::{Value, json};

/// 23 rows on `p/a` (several sharing a ts) and 6 on `q/x`.
fn insert_rows(hub: &Hub) {
    let mut rows = Vec::new();
    for i in 0..23i64 {
        rows.push(Row::new(1_000 + i / 3, "p/a", "d", obj(json!({ "i": i }))));
        if i % 4 == 0 {
            rows.push(Row::new(1_000 + i / 3, "q/x", "d", obj(json!({ "i": -1 }))));
        }
    }
    hub.store.insert("telemetry", &rows).unwrap();
}

/// Every page of `path` (which has its other parameters), following `next`.
async fn all_pages(hub: &Hub, path: &str, key: &str) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}&cursor={c}"),
            None => path.to_owned(),
        };
        let r = hub.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        let v = r.json();
        pages += 1;
        assert!(pages < 100, "paging does not end: {v}");
        let page = v[key].as_array().unwrap().clone();
        match (&v["truncated"], &v["next"]) {
            (Value::Bool(true), Value::String(n)) => {
                assert!(!page.is_empty(), "{v}");
                if key == "points" {
                    // series pages go back in time: older pages come before
                    let mut p = page;
                    p.extend(out);
                    out = p;
                } else {
                    out.extend(page);
                }
                cursor = Some(n.clone());
            }
            (Value::Bool(false), Value::Null) => {
                if key == "points" {
                    let mut p = page;
                    p.extend(out);
                    out = p;
                } else {
                    out.extend(page);
                }
                return (out, pages);
            }
            other => panic!("truncated/next wrong: {other:?} in {v}"),
        }
    }
}

#[tokio::test]
async fn rows_beyond_the_limit_are_flagged_and_paging_returns_each_once() {
    let hub = Hub::start(|_, _| {}).await;
    insert_rows(&hub);
    for (order, first) in [("desc", 22), ("ASC", 0), ("Newest", 22), ("oldest", 0)] {
        for limit in [1, 5, 7, 100] {
            let path =
                format!("/api/v1/tables/telemetry/rows?topic=p/%23&limit={limit}&order={order}");
            let (rows, pages) = all_pages(&hub, &path, "rows").await;
            let got: Vec<i64> = rows
                .iter()
                .map(|r| r["data"]["i"].as_i64().unwrap())
                .collect();
            let mut want: Vec<i64> = (0..23).collect();
            if first == 22 {
                want.reverse();
            }
            assert_eq!(got, want, "order {order} limit {limit}");
            let ids: BTreeSet<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
            assert_eq!(ids.len(), 23);
            assert_eq!(
                pages,
                23usize.div_ceil(limit).max(1),
                "order {order} limit {limit}"
            );
        }
    }
    // an answer that fits is not flagged
    let v = hub
        .get("/api/v1/tables/telemetry/rows?topic=q/x&limit=6")
        .await
        .json();
    assert_eq!(
        (
            v["rows"].as_array().unwrap().len(),
            &v["truncated"],
            &v["next"]
        ),
        (6, &json!(false), &Value::Null)
    );
    // a cursor of another order or garbage is refused
    let v = hub
        .get("/api/v1/tables/telemetry/rows?limit=2&order=asc")
        .await
        .json();
    let next = v["next"].as_str().unwrap().to_owned();
    for bad in [
        format!("/api/v1/tables/telemetry/rows?limit=2&order=desc&cursor={next}"),
        "/api/v1/tables/telemetry/rows?cursor=nonsense".to_owned(),
        "/api/v1/tables/telemetry/series?field=i&cursor=nonsense".to_owned(),
    ] {
        let r = hub.get(&bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.error().contains("cursor"), "{}", r.error());
    }
}

#[tokio::test]
async fn since_after_until_is_a_400_not_an_empty_answer() {
    let hub = Hub::start(|_, _| {}).await;
    insert_rows(&hub);
    for path in [
        "/api/v1/tables/telemetry/rows?since=2000&until=1000",
        "/api/v1/tables/telemetry/series?field=i&since=-1h&until=-2h",
    ] {
        let r = hub.get(path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.error().contains("since"), "{}", r.error());
    }
    // an empty range is just empty
    let r = hub
        .get("/api/v1/tables/telemetry/rows?since=1000&until=1000")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn raw_series_beyond_the_limit_keep_the_oldest_points_reachable() {
    let hub = Hub::start(|_, _| {}).await;
    insert_rows(&hub);
    // the case: more points than the limit, bucket=0
    let v = hub
        .get("/api/v1/tables/telemetry/series?field=i&topic=p/a&bucket=0&limit=5")
        .await
        .json();
    assert_eq!(v["truncated"], true, "{v}");
    assert!(v["next"].is_string(), "{v}");
    let (points, pages) = all_pages(
        &hub,
        "/api/v1/tables/telemetry/series?field=i&topic=p/a&bucket=0&limit=5",
        "points",
    )
    .await;
    let got: Vec<i64> = points
        .iter()
        .map(|p| p["value"].as_f64().unwrap() as i64)
        .collect();
    assert_eq!(got, (0..23).collect::<Vec<_>>());
    assert!(pages >= 5, "{pages}");
    // buckets too
    let (buckets, _) = all_pages(
        &hub,
        "/api/v1/tables/telemetry/series?field=i&topic=p/a&bucket=2&agg=count&limit=2",
        "points",
    )
    .await;
    let total: f64 = buckets.iter().map(|b| b["value"].as_f64().unwrap()).sum();
    assert_eq!(total, 23.0, "{buckets:?}");
}

#[tokio::test]
async fn points_n_downsamples_on_the_server_and_keeps_spikes() {
    let hub = Hub::start(|_, _| {}).await;
    // 20,000 s of 1 Hz data with one spike up and one down
    let rows: Vec<Row> = (0..20_000i64)
        .map(|i| {
            let v = match i {
                12_345 => 1_000.0,
                777 => -50.0,
                _ => (i % 10) as f64,
            };
            Row::new(1_000_000 + i * 1_000, "s/1", "d", obj(json!({ "v": v })))
        })
        .collect();
    hub.store.insert("telemetry", &rows).unwrap();
    for path in [
        "/api/v1/tables/telemetry/series?field=v&points=200&since=1000000&until=21000000",
        "/api/v1/tables/telemetry/series?field=v&points=200&until=21000000",
    ] {
        let v = hub.get(path).await.json();
        let points = v["points"].as_array().unwrap();
        assert!(
            points.len() <= 201 && points.len() >= 199,
            "{} points",
            points.len()
        );
        assert_eq!(v["truncated"], false, "{path}");
        assert_eq!(v["bucket_ms"], 100_000);
        let max = points
            .iter()
            .map(|p| p["max"].as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let min = points
            .iter()
            .map(|p| p["min"].as_f64().unwrap())
            .fold(f64::MAX, f64::min);
        assert_eq!((min, max), (-50.0, 1_000.0), "{path}");
        let count: u64 = points.iter().map(|p| p["count"].as_u64().unwrap()).sum();
        assert_eq!(count, 20_000);
    }
    for bad in [
        "/api/v1/tables/telemetry/series?field=v&points=0",
        "/api/v1/tables/telemetry/series?field=v&points=10&bucket=1m",
    ] {
        assert_eq!(hub.get(bad).await.status, 400, "{bad}");
    }
}
