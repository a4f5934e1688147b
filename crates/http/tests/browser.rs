//! The dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! scripts/test-deps.sh) loads the page from the HTTP server; the test drives it over the
//! DevTools protocol (WebSocket) and reads the DOM with Runtime.evaluate while real MQTT
//! clients over TCP publish and subscribe. Set MIDGE_SCREENSHOTS=<dir> to keep a PNG of the
//! page at the end of each test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use common::browser::Browser;
use common::*;
use midge_client::QoS;
use midge_http::{Widget, WidgetKind};
use midge_series::Row;
use serde_json::json;

fn widget(id: &str, kind: WidgetKind, topic: &str, tweak: impl FnOnce(&mut Widget)) -> Widget {
    let mut w = Widget::new(kind, topic);
    w.id = id.into();
    w.title = id.to_uppercase();
    tweak(&mut w);
    w
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn dashboard() -> (Hub, Browser) {
    let hub = Hub::start(|c, dir| {
        let widgets = vec![
            widget("gauge", WidgetKind::Gauge, "sensors/boiler", |w| {
                w.field = "temp".into();
                w.unit = Some("°C".into());
            }),
            widget("map", WidgetKind::Map, "trucks/+/pos", |_| {}),
            widget("lamp", WidgetKind::Switch, "home/lamp", |w| {
                w.command_topic = Some("home/lamp/set".into());
            }),
            widget("chart", WidgetKind::Chart, "history/temp", |w| {
                w.field = "temp".into();
                w.window = "1h".into();
            }),
        ];
        // a dashboard saved from the page (the older one-dashboard file), so edit mode can
        // change it (the configuration's widgets are a read-only dashboard)
        let path = dir.join("dashboard.json");
        std::fs::write(&path, json!({ "widgets": widgets }).to_string()).unwrap();
        c.dashboard_file = Some(path);
    })
    .await;
    let now = now_ms();
    let rows: Vec<Row> = (1..=5)
        .map(|i| {
            let data = obj(json!({"temp": 20.0 + i as f64}));
            Row::new(now - 3_000_000 + i * 500_000, "history/temp", "dev", data)
        })
        .collect();
    hub.store.insert("telemetry", &rows).unwrap();
    let browser = Browser::open(&format!("http://{}/", hub.addr)).await;
    let mut b = browser;
    b.until(
        "the loaded dashboard with its live stream open",
        "({ready: document.body.dataset.ready, live: document.body.dataset.live, \
           widgets: document.querySelectorAll('[data-widget-id]').length})",
        |v| v["ready"] == "1" && v["live"] == "open" && v["widgets"] == 4,
    )
    .await;
    (hub, b)
}

#[tokio::test]
async fn gauge_map_and_chart_show_what_devices_publish_and_what_is_stored() {
    let (hub, mut b) = dashboard().await;
    // history from the series store, drawn as a line
    let chart = b
        .until(
            "the chart's stored points",
            "(() => { const c = document.querySelector('[data-widget-id=chart]'); \
               const line = c.querySelector('[data-role=line]'); \
               return {points: c.dataset.points, \
                       drawn: line ? line.getAttribute('points').trim().split(/\\s+/).length : 0, \
                       value: c.querySelector('[data-role=value]').textContent}; })()",
            |v| v["points"] == "5" && v["drawn"] == 5,
        )
        .await;
    assert_eq!(chart["value"], "25", "the newest stored value: {chart}");

    let mut dev = hub.mqtt("browser-dev").await;
    dev.publish(
        "sensors/boiler",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 31.5}"#,
    )
    .await;
    let gauge = b
        .until(
            "31.5 on the gauge",
            "(() => { const g = document.querySelector('[data-widget-id=gauge]'); \
               return {text: g.querySelector('[data-role=value]').textContent, \
                       value: g.dataset.value, fraction: g.dataset.fraction}; })()",
            |v| v["text"] == "31.5",
        )
        .await;
    assert_eq!(gauge["value"], "31.5");
    assert_eq!(gauge["fraction"], "0.315", "31.5 on a 0..100 dial: {gauge}");

    dev.publish(
        "trucks/7/pos",
        QoS::AtLeastOnce,
        false,
        r#"{"lat": 48.137, "lon": 11.575}"#,
    )
    .await;
    let markers = b
        .until(
            "a marker on the map",
            "[...document.querySelectorAll('[data-widget-id=map] [data-role=marker]')]\
               .map(m => ({topic: m.dataset.topic, lat: m.dataset.lat, lon: m.dataset.lon, \
                           label: m.textContent}))",
            |v| v.as_array().is_some_and(|a| a.len() == 1),
        )
        .await;
    assert_eq!(markers[0]["topic"], "trucks/7/pos");
    assert_eq!(
        (markers[0]["lat"].clone(), markers[0]["lon"].clone()),
        (json!("48.137"), json!("11.575"))
    );
    // a second truck: two markers, each labelled
    dev.publish(
        "trucks/8/pos",
        QoS::AtLeastOnce,
        false,
        r#"{"lat": 48.2, "lon": 11.6}"#,
    )
    .await;
    b.until(
        "two markers",
        "document.querySelectorAll('[data-widget-id=map] [data-role=marker]').length",
        |v| v == 2,
    )
    .await;
    // a live point joins the chart
    dev.publish("history/temp", QoS::AtLeastOnce, false, r#"{"temp": 30}"#)
        .await;
    b.until(
        "the live point on the chart",
        "document.querySelector('[data-widget-id=chart]').dataset.points",
        |v| v == "6",
    )
    .await;
    b.screenshot("dashboard").await;
}

#[tokio::test]
async fn clicking_the_switch_publishes_its_command_and_the_state_follows_the_device() {
    let (hub, mut b) = dashboard().await;
    let mut lamp = hub.mqtt("lamp").await;
    lamp.subscribe("home/lamp/set", QoS::AtLeastOnce).await;
    let state = "document.querySelector('[data-widget-id=lamp]').dataset.state";
    assert_eq!(b.eval(state).await, "unknown");

    b.eval("document.querySelector('[data-widget-id=lamp] [data-role=toggle]').click()")
        .await;
    let m = lamp.message().await;
    assert_eq!(m.topic.as_str(), "home/lamp/set");
    assert_eq!(&m.payload[..], b"ON");
    // pending until the device reports; then what the device says
    b.until(
        "the pending on",
        "document.querySelector('[data-widget-id=lamp]').dataset.pending",
        |v| v == "on",
    )
    .await;
    assert_eq!(
        b.eval(state).await,
        "unknown",
        "not assumed before the device says so"
    );
    lamp.publish("home/lamp", QoS::AtLeastOnce, true, "OFF")
        .await;
    b.until("the device's off", state, |v| v == "off").await;
    b.eval("document.querySelector('[data-widget-id=lamp] [data-role=toggle]').click()")
        .await;
    let m = lamp.message().await;
    assert_eq!(&m.payload[..], b"ON", "off -> on again");
    lamp.publish("home/lamp", QoS::AtLeastOnce, true, "ON")
        .await;
    b.until("the device's on", state, |v| v == "on").await;
    b.eval("document.querySelector('[data-widget-id=lamp] [data-role=toggle]').click()")
        .await;
    let m = lamp.message().await;
    assert_eq!(&m.payload[..], b"OFF");
}

#[tokio::test]
async fn a_widget_added_in_edit_mode_is_saved_and_shows_live_values() {
    let (hub, mut b) = dashboard().await;
    b.eval(
        "(() => { \
           document.getElementById('edit-toggle').click(); \
           document.getElementById('edit-add').click(); \
           const f = document.getElementById('widget-form'); \
           f.elements.kind.value = 'value'; \
           f.elements.kind.dispatchEvent(new Event('change')); \
           f.elements.title.value = 'Humidity'; \
           f.elements.topic.value = 'sensors/hum'; \
           f.elements.field.value = 'hum'; \
           f.elements.unit.value = '%'; \
           f.requestSubmit(); \
           document.getElementById('edit-save').click(); \
         })()",
    )
    .await;
    let saved = eventually("the saved widget", || async {
        let d = hub.get("/api/v1/dashboard").await.json();
        let w = d["widgets"].as_array().unwrap().clone();
        (w.len() == 5).then_some(w)
    })
    .await;
    let added = &saved[4];
    assert_eq!(
        (
            added["kind"].clone(),
            added["title"].clone(),
            added["topic"].clone(),
            added["field"].clone(),
            added["unit"].clone()
        ),
        (
            json!("value"),
            json!("Humidity"),
            json!("sensors/hum"),
            json!("hum"),
            json!("%")
        )
    );
    let id = added["id"].as_str().unwrap().to_owned();
    b.until(
        "edit mode closed and the live stream reopened",
        "({editing: document.body.classList.contains('editing'), live: document.body.dataset.live})",
        |v| v["editing"] == false && v["live"] == "open",
    )
    .await;
    let mut dev = hub.mqtt("hum-dev").await;
    dev.publish("sensors/hum", QoS::AtLeastOnce, false, r#"{"hum": 47}"#)
        .await;
    b.until(
        "47 % on the new widget",
        &format!(
            "document.querySelector('[data-widget-id=\"{id}\"] [data-role=value]').textContent"
        ),
        |v| v == "47",
    )
    .await;
    // removing it in edit mode and saving takes it away
    b.eval(&format!(
        "(() => {{ document.getElementById('edit-toggle').click(); \
           document.querySelector('[data-widget-id=\"{id}\"] [data-action=remove]').click(); \
           document.getElementById('edit-save').click(); }})()"
    ))
    .await;
    eventually("the widget removed", || async {
        let d = hub.get("/api/v1/dashboard").await.json();
        (d["widgets"].as_array().unwrap().len() == 4).then_some(())
    })
    .await;
    b.screenshot("edited").await;
}

/// A hub service running one rule of the configuration file, the HTTP server on it, and the
/// page open on the Rules tab showing that rule.
async fn rules_page() -> (
    Hub,
    std::sync::Arc<midge_hub::HubService>,
    tempfile::TempDir,
    Browser,
) {
    let mut hub = Hub::start(|_, _| {}).await;
    let state = tempfile::tempdir().unwrap();
    let service = midge_hub::HubService::start(
        midge_hub::HubConfig {
            rules: vec![midge_hub::RuleConfig {
                name: "hot".into(),
                sql: "SELECT * FROM 'sensors/#' WHERE temp > 30".into(),
                actions: vec![midge_hub::ActionConfig::Store {
                    table: "telemetry".into(),
                }],
            }],
            state_dir: Some(state.path().to_path_buf()),
            ..midge_hub::HubConfig::default()
        },
        hub.deps.connector.clone(),
        Some(hub.store.clone()),
    )
    .await
    .unwrap();
    hub.deps.hub = Some(service.clone());
    hub.restart_http().await;
    let mut b = Browser::open(&format!("http://{}/#rules", hub.addr)).await;
    b.until(
        "the Rules tab with the configuration's rule",
        &format!("{RULE_ROWS}.map(r => r.name)"),
        |v| v == &json!(["hot"]),
    )
    .await;
    (hub, service, state, b)
}

/// The rules table as the page shows it.
const RULE_ROWS: &str = "[...document.querySelectorAll('#rules-table tbody tr')].map(r => ({ \
       name: r.dataset.rule, source: r.dataset.source, \
       deletable: !!r.querySelector('[data-action=delete-rule]'), \
       badge: (r.querySelector('[data-role=config]') || {}).textContent || null, \
       counts: ['matched', 'passed', 'failed'].map(k => r.querySelector('[data-role=' + k + ']').textContent) }))";

/// Open the New rule form and type into it (empty strings leave a field as it is).
async fn fill_rule_form(b: &mut Browser, fields: &[(&str, &str)]) {
    let mut js = String::from(
        "(() => { if (document.getElementById('rule-form').hidden) \
           document.getElementById('rule-new').click(); ",
    );
    for (id, value) in fields {
        let v = serde_json::to_string(value).unwrap();
        js.push_str(&format!(
            "{{ const e = document.getElementById('{id}'); \
               if (e.type === 'checkbox') e.checked = {v} === 'true'; else e.value = {v}; \
               e.dispatchEvent(new Event('input')); }} "
        ));
    }
    js.push_str("})()");
    b.eval(&js).await;
}

#[tokio::test]
async fn a_rule_added_in_the_form_runs_shows_its_counts_and_its_delete_button_removes_it() {
    let (hub, service, _state, mut b) = rules_page().await;
    let shown = b.eval(RULE_ROWS).await;
    assert_eq!(
        shown,
        json!([{"name": "hot", "source": "config", "deletable": false, "badge": "config file",
                "counts": ["0", "0", "0"]}]),
        "a rule of the configuration file says so and cannot be deleted here"
    );
    let mut alerts = hub.mqtt("alert-watcher").await;
    alerts.subscribe("alerts/#", QoS::AtLeastOnce).await;

    let sql = "SELECT temp, topic(2) AS device FROM 'dev/+/t' WHERE temp > 35";
    fill_rule_form(
        &mut b,
        &[
            ("rule-name", "too-hot"),
            ("rule-sql", sql),
            ("rule-store", "alerts"),
            ("rule-republish-topic", "alerts/${device}"),
            ("rule-republish-payload", "${temp} is too hot"),
            ("rule-republish-qos", "1"),
        ],
    )
    .await;
    b.eval("document.getElementById('rule-submit').click()")
        .await;
    let added = b
        .until(
            "the new rule in the table",
            &format!(
                "({{rows: {RULE_ROWS}, form: document.getElementById('rule-form').dataset.state, \
                   open: !document.getElementById('rule-form').hidden}})"
            ),
            |v| v["rows"].as_array().is_some_and(|r| r.len() == 2),
        )
        .await;
    assert_eq!(added["form"], "added", "{added}");
    assert_eq!(added["open"], false, "the form closes once the rule is in");
    assert_eq!(
        added["rows"][1],
        json!({"name": "too-hot", "source": "api", "deletable": true, "badge": null,
               "counts": ["0", "0", "0"]})
    );
    // what the form sent is what the server keeps
    let listed = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        listed["rules"][1]["spec"],
        json!({"name": "too-hot", "sql": sql, "store": "alerts",
               "republish": {"topic": "alerts/${device}", "payload": "${temp} is too hot",
                             "qos": 1, "retain": false}})
    );

    // a device over TCP: one reading the rule drops, one it keeps
    let mut dev = hub.mqtt("boiler-dev").await;
    dev.publish("dev/boiler/t", QoS::AtLeastOnce, false, r#"{"temp": 20}"#)
        .await;
    dev.publish("dev/boiler/t", QoS::AtLeastOnce, false, r#"{"temp": 40}"#)
        .await;
    let m = alerts.message().await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("alerts/boiler", &b"40 is too hot"[..]),
        "the form's republish action"
    );
    eventually("the stored row", || async {
        let r = hub.get("/api/v1/tables/alerts/rows").await;
        (r.status == 200 && r.json()["rows"].as_array().is_some_and(|a| a.len() == 1)).then_some(())
    })
    .await;

    // the row in the Data tab
    b.eval("document.getElementById('tab-data').click()").await;
    b.until(
        "the alerts table in the Data tab",
        "!!document.querySelector('#data-tables [data-table=alerts]')",
        |v| v == true,
    )
    .await;
    b.eval("document.querySelector('#data-tables [data-table=alerts]').click()")
        .await;
    let rows = b
        .until(
            "the rule's row in the Data tab",
            "[...document.querySelectorAll('#data-rows tbody tr')].map(r => \
               [...r.children].slice(1).map(td => td.textContent))",
            |v| {
                v.as_array()
                    .is_some_and(|a| a.len() == 1 && a[0][0] == "dev/boiler/t")
            },
        )
        .await;
    assert_eq!(
        rows[0],
        json!([
            "dev/boiler/t",
            "boiler-dev",
            r#"{"temp":40,"device":"boiler"}"#
        ])
    );

    // its counts in the Rules tab: two readings matched the filter, one passed WHERE
    b.eval("document.getElementById('tab-rules').click()").await;
    b.until(
        "the rule's counts",
        &format!("{RULE_ROWS}.find(r => r.name === 'too-hot').counts"),
        |v| v == &json!(["2", "1", "0"]),
    )
    .await;
    b.screenshot("rules").await;

    // the first click only arms the button; the second deletes
    b.eval("document.querySelector('[data-rule=too-hot] [data-action=delete-rule]').click()")
        .await;
    let armed = b
        .eval("document.querySelector('[data-rule=too-hot] [data-action=delete-rule]').textContent")
        .await;
    assert_eq!(armed, "Delete?");
    assert_eq!(
        hub.get("/api/v1/rules").await.json()["rules"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "one click deletes nothing"
    );
    b.eval("document.querySelector('[data-rule=too-hot] [data-action=delete-rule]').click()")
        .await;
    b.until(
        "the rule gone from the table",
        &format!("{RULE_ROWS}.map(r => r.name)"),
        |v| v == &json!(["hot"]),
    )
    .await;
    let listed = hub.get("/api/v1/rules").await.json();
    let names: Vec<&str> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hot"]);
    service.stop().await;
}

#[tokio::test]
async fn a_bad_rule_shows_every_problem_the_server_names_next_to_the_form() {
    let (hub, service, _state, mut b) = rules_page().await;
    fill_rule_form(
        &mut b,
        &[
            ("rule-name", "broken"),
            ("rule-sql", "SELECT * FROM"),
            ("rule-webhook-url", "ftp://x/"),
        ],
    )
    .await;
    b.eval("document.getElementById('rule-submit').click()")
        .await;
    let problems = "({state: document.getElementById('rule-form').dataset.state, \
                      shown: !document.getElementById('rule-problems').hidden, \
                      open: !document.getElementById('rule-form').hidden, \
                      sql: document.getElementById('rule-sql').value, \
                      problems: [...document.querySelectorAll('#rule-problems-list [data-role=problem]')] \
                        .map(li => li.textContent)})";
    let page = b
        .until("the server's problems", problems, |v| {
            v["state"] == "refused"
        })
        .await;
    // the same rule sent straight to the API: the page lists exactly what it answers
    let r = hub
        .send_json(
            "POST",
            "/api/v1/rules",
            &json!({"name": "broken", "sql": "SELECT * FROM", "store": "telemetry",
                    "webhook": {"url": "ftp://x/"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let server = r.json()["problems"].clone();
    assert_eq!(server.as_array().unwrap().len(), 2, "{server}");
    assert_eq!(page["problems"], server, "{page}");
    assert!(
        page["problems"][0].as_str().unwrap().contains("SQL"),
        "{page}"
    );
    assert_eq!(
        (
            page["shown"].clone(),
            page["open"].clone(),
            page["sql"].clone()
        ),
        (json!(true), json!(true), json!("SELECT * FROM")),
        "the form stays open with what was typed"
    );
    b.screenshot("rule-problems").await;

    // a name that is taken: the server's 409 message
    fill_rule_form(
        &mut b,
        &[
            ("rule-name", "hot"),
            ("rule-sql", "SELECT * FROM 'x/#'"),
            ("rule-webhook-url", ""),
        ],
    )
    .await;
    b.eval(
        "document.getElementById('rule-problems').hidden = true; \
            document.getElementById('rule-submit').click()",
    )
    .await;
    let page = b
        .until("the conflict", problems, |v| {
            v["shown"] == true && v["state"] == "refused"
        })
        .await;
    assert_eq!(
        page["problems"],
        json!([r#"a rule named "hot" exists"#]),
        "{page}"
    );
    let listed = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        listed["rules"].as_array().unwrap().len(),
        1,
        "nothing added"
    );
    service.stop().await;
}
