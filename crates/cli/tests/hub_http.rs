//! `midge serve` with its HTTP listener: the dashboard page, the REST API over data that
//! rules stored from mosquitto_pub, rules added over HTTP, `/metrics`, and configuration
//! problems of `[http]` and `[[dashboard.widget]]` reported with the rest.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Midge, http_json as http};
use serde_json::{Value, json};

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn mosquitto_pub(port: u16, topic: &str, payload: &str) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "boiler-1",
            "-q",
            "1",
        ])
        .args(["-t", topic, "-m", payload])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Wait until `path` answers a JSON array at `key` with at least `n` entries.
fn wait_rows(port: u16, path: &str, key: &str, n: usize, mut poke: impl FnMut()) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        poke();
        let (status, body) = http(port, "GET", path, None);
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            if v[key].as_array().is_some_and(|a| a.len() >= n) {
                return v;
            }
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_dashboard_and_api_show_what_rules_stored_from_mosquitto_pub() {
    let b = Midge::with_config(
        r#"
[http]

[[rule]]
name = "hot"
sql = "SELECT * FROM 'sensors/#' WHERE temp > 30"
store = "telemetry"

[[dashboard.widget]]
kind = "gauge"
title = "Boiler"
topic = "sensors/boiler"
field = "temp"
unit = "°C"
max = 100
"#,
    );
    let web = b.http_port();
    // the page and its widgets
    let (status, page) = http(web, "GET", "/", None);
    assert_eq!(status, 200);
    assert!(page.contains("<html") && page.contains("midge"), "{page}");
    let dash = get_json(web, "/api/v1/dashboard");
    assert_eq!(dash["widgets"][0]["kind"], "gauge", "{dash}");
    assert_eq!(dash["widgets"][0]["topic"], "sensors/boiler");

    // a device's reading, through the rule, into the table, out of the API
    let rows = wait_rows(
        web,
        "/api/v1/tables/telemetry/rows?topic=sensors/%23",
        "rows",
        1,
        || mosquitto_pub(b.port, "sensors/boiler", r#"{"temp": 71.5, "hum": 40}"#),
    );
    let row = &rows["rows"][0];
    assert_eq!(row["topic"], "sensors/boiler");
    assert_eq!(row["client_id"], "boiler-1");
    assert_eq!(row["data"], json!({"temp": 71.5, "hum": 40}));
    let series = get_json(
        web,
        "/api/v1/tables/telemetry/series?field=temp&since=-1h&bucket=1h&agg=max",
    );
    assert_eq!(series["points"][0]["value"], 71.5, "{series}");

    // a rule added over HTTP runs at once; the file's rule cannot be removed there
    let (status, body) = http(
        web,
        "POST",
        "/api/v1/rules",
        Some(
            &json!({"name": "cold", "sql": "SELECT temp FROM 'sensors/#' WHERE temp < 5", "store": "cold"}),
        ),
    );
    assert_eq!(status, 201, "{body}");
    wait_rows(web, "/api/v1/tables/cold/rows", "rows", 1, || {
        mosquitto_pub(b.port, "sensors/cellar", r#"{"temp": 2}"#)
    });
    let (status, _) = http(web, "DELETE", "/api/v1/rules/hot", None);
    assert_eq!(status, 409);
    let rules = get_json(web, "/api/v1/rules");
    let names: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hot", "cold"]);

    // figures for Prometheus
    let (status, metrics) = http(web, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        metrics.contains("# TYPE midge_messages_received_total counter"),
        "{metrics}"
    );
    let stats = get_json(web, "/api/v1/stats");
    assert!(stats["messages_received"].as_u64().unwrap() >= 2, "{stats}");
}

#[test]
fn http_and_dashboard_problems_are_reported_with_the_rest() {
    let (code, err) = Midge::serve()
        .exact_config(
            r#"
[http]
bind = "0.0.0.0"
prot = 8080

[[dashboard.widget]]
kind = "speedometer"
topic = "a"

[[dashboard.widget]]
kind = "switch"
topic = "lamp/#"
"#,
        )
        .spawn()
        .wait_exit();
    assert_eq!(code, Some(2));
    for needle in [
        "[http] prot: unknown key (did you mean `port`?)",
        "[http] allow_anonymous: is false and there is no password_file",
        "[dashboard.widget #1]",
        "speedometer",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}
