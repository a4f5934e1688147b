//! `midge serve` with its time-series store in PostgreSQL (`[series] backend =
//! "postgres"`): a `store` rule and a `tsdb` rule fed by mosquitto_pub write into a real
//! PostgreSQL 15 (started by the test as an unprivileged user, see
//! `crates/series/tests/pg/mod.rs`), the HTTP API reads the rows back, and midge stops
//! cleanly (its PostgreSQL connections are closed off the async runtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;
#[path = "../../series/tests/pg/mod.rs"]
mod pg;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Midge, free_port, http_json};
use midge_series::points::PointValue;
use midge_series::{SeriesOptions, SeriesStore};
use serde_json::{Value, json};

fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-i", "boiler-1", "-q", "1", "-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(st.success(), "mosquitto_pub {topic}");
}

#[test]
fn rules_store_rows_and_points_in_postgres_and_the_api_reads_them_back() {
    let pg = pg::PgServer::start();
    let url = pg.url("postgres");
    let mut b = Midge::with_config(&format!(
        r#"
[series]
backend = "postgres"
url = "{url}"

[http]

[[rule]]
name = "hot"
sql = "SELECT * FROM 'sensors/#' WHERE temp > 30"
store = "telemetry"

[[rule]]
name = "points"
sql = "SELECT metric, value FROM 'probe'"
tsdb = true
"#
    ));
    let web = b.http_port();
    assert!(
        b.log().contains("127.0.0.1") && b.log().contains("time-series store open"),
        "{}",
        b.log()
    );

    // a device's reading, through the rule, into PostgreSQL, out of the API
    let path = "/api/v1/tables/telemetry/rows?topic=sensors/%23";
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        mosquitto_pub(b.port, "sensors/boiler", r#"{"temp": 71.5, "hum": 40}"#);
        let (status, body) = http_json(web, "GET", path, None);
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v["rows"].as_array().is_some_and(|a| !a.is_empty()) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let row = &rows["rows"][0];
    assert_eq!(row["topic"], "sensors/boiler");
    assert_eq!(row["client_id"], "boiler-1");
    assert_eq!(row["data"], json!({"temp": 71.5, "hum": 40}));
    // the rows are in PostgreSQL, not in a SQLite file
    let n: usize = pg
        .psql("postgres", "SELECT count(*) FROM series_telemetry")
        .parse()
        .unwrap();
    assert!(n >= 1, "{n} rows in series_telemetry");
    assert!(!b.path("data/series.db").exists());

    // a datapoint through the tsdb rule
    let store = SeriesStore::connect_postgres(&url, SeriesOptions::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        mosquitto_pub(b.port, "probe", r#"{"metric": "boiler", "value": 3}"#);
        let mut found = Vec::new();
        store
            .export_points(&["boiler".into()], i64::MIN, i64::MAX, &mut |p| {
                found.push(p);
                true
            })
            .unwrap();
        if let Some(p) = found.first() {
            assert_eq!(p.value, PointValue::Long(3));
            break;
        }
        assert!(Instant::now() < deadline, "no datapoint in PostgreSQL");
        std::thread::sleep(Duration::from_millis(100));
    }

    let status = b.terminate(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", b.log());
    assert!(!b.log().contains("panicked"), "{}", b.log());
}

#[test]
fn an_unreachable_postgres_stops_midge_with_the_url_but_not_the_password() {
    let closed = free_port();
    let (code, text) = Midge::serve()
        .config(&format!(
            "[series]\nbackend = \"postgres\"\nurl = \"postgres://midge:hunter2@127.0.0.1:{closed}/iot\"\n\
             [[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 't'\"\nstore = \"t\"\n"
        ))
        .spawn()
        .wait_exit();
    assert_ne!(code, Some(0), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{closed}/iot")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}
