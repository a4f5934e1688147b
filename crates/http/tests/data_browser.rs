//! Issue 13 item 9: the Data tab in headless Chromium: dates on every row, paging through
//! more rows than a page, the CSV link, purge behind a confirmation, each table's
//! retention, and dropping a table. Set MIDGE_SCREENSHOTS=<dir> to keep PNGs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;

use common::browser::Browser;
use common::*;
use midge_series::Row;
use serde_json::{Value, json};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const ROWS: &str = "[...document.querySelectorAll('#data-rows tbody tr[data-row]')]";

async fn table_rows(hub: &Hub, table: &str) -> Value {
    let tables = hub.get("/api/v1/tables").await.json();
    tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .map_or(Value::Null, |t| t["rows"].clone())
}

#[tokio::test]
async fn data_tab_dates_paging_csv_purge_retention_and_drop() {
    let hub = Hub::start(|_, _| {}).await;
    let now = now_ms();
    // 450 rows, one every 10 minutes (75 hours), 5 minutes off the hour marks
    let rows: Vec<Row> = (0..450i64)
        .map(|i| {
            let topic = if i % 3 == 0 { "sensors/b" } else { "sensors/a" };
            let data = obj(json!({"i": i, "note": format!("x,\"y\" {i}")}));
            Row::new(now - i * 600_000 - 300_000, topic, "dev-1", data)
        })
        .collect();
    hub.store.insert("telemetry", &rows).unwrap();
    hub.store
        .insert("scratch", &[Row::new(now, "t", "c", obj(json!({"v": 1})))])
        .unwrap();

    let mut b = Browser::open(&format!("http://{}/#data", hub.addr)).await;
    b.until(
        "the tables",
        "!!document.querySelector('#data-tables [data-table=telemetry]')",
        |v| v == true,
    )
    .await;
    b.eval("document.querySelector('#data-tables [data-table=telemetry]').click()")
        .await;
    let first = b
        .until(
            "the first page with dates",
            &format!(
                "({{n: {ROWS}.length, time: {ROWS}[0].children[0].textContent, \
                   title: {ROWS}[0].children[0].title, count: document.getElementById('data-count').textContent}})"
            ),
            |v| v["n"] == 200,
        )
        .await;
    let time = first["time"].as_str().unwrap();
    // local date and time with ms, the ISO time (UTC) on hover
    assert!(
        time.len() == 23
            && time.as_bytes()[4] == b'-'
            && time.as_bytes()[10] == b' '
            && time.as_bytes()[19] == b'.',
        "{time}"
    );
    assert!(
        first["title"].as_str().unwrap().contains('T')
            && first["title"].as_str().unwrap().contains('Z'),
        "{first}"
    );
    assert_eq!(
        first["count"], "rows 1–200 of about 450, newest first",
        "{first}"
    );
    b.screenshot("data-tab-first-page").await;

    // every row once, page by page
    let mut seen: Vec<i64> = ids(&mut b)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let mut pages = 1;
    while b
        .eval("!document.getElementById('data-older').disabled")
        .await
        == true
    {
        let before = b.eval(&format!("{ROWS}[0].dataset.row")).await;
        b.eval("document.getElementById('data-older').click()")
            .await;
        b.until(
            "the next page",
            &format!("{ROWS}.length > 0 && {ROWS}[0].dataset.row !== {before}"),
            |v| v == true,
        )
        .await;
        pages += 1;
        assert!(pages < 10, "paging does not end");
        seen.extend(
            ids(&mut b)
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap()),
        );
        if pages == 2 {
            let count = b
                .eval("document.getElementById('data-count').textContent")
                .await;
            assert_eq!(count, "rows 201–400 of about 450, newest first");
            b.screenshot("data-tab-second-page").await;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 450);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 450);
    assert_eq!(
        b.eval("document.getElementById('data-count').textContent")
            .await,
        "rows 401–450 of about 450, newest first"
    );
    b.eval("document.getElementById('data-newer').click()")
        .await;
    b.until(
        "back on page 2",
        "document.getElementById('data-count').textContent",
        |v| v == "rows 201–400 of about 450, newest first",
    )
    .await;

    // the CSV link: every row of the filter, quoted
    let csv = b
        .eval(
            "fetch(document.getElementById('data-csv').href).then(async r => \
               ({type: r.headers.get('content-type'), disp: r.headers.get('content-disposition'), \
                 text: await r.text(), download: document.getElementById('data-csv').getAttribute('download')}))",
        )
        .await;
    assert_eq!(csv["type"], "text/csv; charset=utf-8");
    assert_eq!(csv["download"], "telemetry.csv");
    assert!(csv["disp"].as_str().unwrap().starts_with("attachment"));
    let text = csv["text"].as_str().unwrap();
    let lines: Vec<&str> = text.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "time,topic,client_id,i,note,other_fields");
    assert_eq!(lines.len(), 451, "header and every row");
    assert!(
        lines[1].ends_with(",449,\"x,\"\"y\"\" 449\","),
        "{}",
        lines[1]
    );

    // a topic filter and a time range narrow the link too
    b.eval(
        "(() => { const t = document.getElementById('data-topic'); t.value = 'sensors/b'; \
           t.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'})); \
           const s = document.getElementById('data-since'); s.value = '-24h'; \
           s.dispatchEvent(new Event('change')); })()",
    )
    .await;
    let href = b
        .until(
            "the filtered link",
            "document.getElementById('data-csv').getAttribute('href')",
            |v| v.as_str().is_some_and(|h| h.contains("since")),
        )
        .await;
    assert_eq!(
        href,
        "/api/v1/tables/telemetry/rows.csv?topic=sensors%2Fb&since=-24h"
    );
    // 144 rows in the last 24 h, every third on sensors/b
    let filtered = b
        .eval("fetch(document.getElementById('data-csv').href).then(r => r.text())")
        .await;
    assert_eq!(
        filtered.as_str().unwrap().trim_end().split("\r\n").count(),
        1 + 48
    );
    b.eval(
        "(() => { const t = document.getElementById('data-topic'); t.value = ''; \
           const s = document.getElementById('data-since'); s.value = ''; \
           s.dispatchEvent(new Event('change')); })()",
    )
    .await;

    // purge asks first; cancel keeps every row
    b.eval(
        "(() => { document.getElementById('data-purge-age').value = '-1d'; \
           document.getElementById('data-purge').click(); })()",
    )
    .await;
    let ask = b
        .eval(
            "({shown: !document.getElementById('data-confirm').hidden, \
               text: document.getElementById('data-confirm-text').textContent})",
        )
        .await;
    assert_eq!(ask["shown"], true, "{ask}");
    assert!(
        ask["text"].as_str().unwrap().contains("older than 1 day"),
        "{ask}"
    );
    b.screenshot("data-tab-purge-confirm").await;
    b.eval("document.getElementById('data-confirm-no').click()")
        .await;
    assert_eq!(
        b.eval("document.getElementById('data-confirm').hidden")
            .await,
        true
    );
    assert_eq!(table_rows(&hub, "telemetry").await, 450);
    b.eval("document.getElementById('data-purge').click()")
        .await;
    b.eval("document.getElementById('data-confirm-yes').click()")
        .await;
    // rows 0..=143 are younger than a day
    b.until(
        "the purged table",
        "document.getElementById('data-count').textContent",
        |v| v == "rows 1–144 of about 144, newest first",
    )
    .await;
    assert_eq!(table_rows(&hub, "telemetry").await, 144);

    // the table's own retention
    b.eval(
        "(() => { document.getElementById('data-retention-days').value = '-5'; \
           document.getElementById('data-retention-save').click(); })()",
    )
    .await;
    let err = b
        .until(
            "the days error",
            "document.getElementById('data-card-error').textContent",
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    assert!(err.as_str().unwrap().contains("whole number"), "{err}");
    b.eval(
        "(() => { document.getElementById('data-retention-days').value = '3'; \
           document.getElementById('data-retention-save').click(); })()",
    )
    .await;
    b.until(
        "the retention shown",
        "document.getElementById('data-retention-text').textContent",
        |v| v == "3 days (this table's own)",
    )
    .await;
    let r = hub.get("/api/v1/tables/telemetry/retention").await.json();
    assert_eq!(r["days"], 3);
    assert_eq!(
        b.eval("document.getElementById('data-card-error').hidden")
            .await,
        true
    );
    b.screenshot("data-tab-retention").await;

    // drop a table, after confirming
    b.eval("document.querySelector('#data-tables [data-table=scratch]').click()")
        .await;
    b.until(
        "the scratch table's card",
        "document.getElementById('data-card-name').textContent",
        |v| v == "scratch",
    )
    .await;
    b.eval("document.getElementById('data-drop').click()").await;
    let ask = b
        .eval("document.getElementById('data-confirm-text').textContent")
        .await;
    assert!(ask.as_str().unwrap().contains("scratch"), "{ask}");
    assert_eq!(table_rows(&hub, "scratch").await, 1);
    b.eval("document.getElementById('data-confirm-yes').click()")
        .await;
    b.until(
        "the table gone from the list",
        "[...document.querySelectorAll('#data-tables [data-table]')].map(li => li.dataset.table)",
        |v| *v == json!(["telemetry"]),
    )
    .await;
    assert_eq!(table_rows(&hub, "scratch").await, Value::Null);
}

/// The ids of the rows shown.
async fn ids(b: &mut Browser) -> Value {
    b.eval(&format!("{ROWS}.map(r => Number(r.dataset.row))"))
        .await
}
