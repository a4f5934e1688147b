//! Issue 13 items 5, 6 and 11 in a real browser (headless Chromium over DevTools): the
//! dashboard selector switches between dashboards and makes, renames, imports and deletes
//! them; the configuration's dashboard is marked read-only; a share link opens the chosen
//! dashboard logged out; and a dashboard without widgets lists the topics flowing, one click
//! making a widget that shows the value. Set MIDGE_SCREENSHOTS=<dir> to keep PNGs.
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
use serde_json::{Value, json};

/// The page's state: the tabs (ids), the open one, the widgets shown, whether it is ready.
const PAGE: &str = "({ready: document.body.dataset.ready, \
    tabs: [...document.querySelectorAll('#dash-tabs [data-dashboard-id]')].map(t => t.dataset.dashboardId), \
    names: [...document.querySelectorAll('#dash-tabs [data-dashboard-id]')].map(t => t.textContent), \
    active: (document.querySelector('#dash-tabs .active') || {dataset: {}}).dataset.dashboardId, \
    widgets: [...document.querySelectorAll('#grid [data-widget-id]')].map(w => w.dataset.widgetId), \
    search: location.search})";

async fn make(hub: &Hub, body: Value, auth: Option<&str>) -> Value {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/dashboards",
        &headers,
        Some(body.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

fn two_dashboards() -> [Value; 2] {
    [
        json!({"name": "Garden", "widgets": [
            {"id": "g-temp", "kind": "value", "title": "Garden temp", "topic": "garden/temp", "field": "temp", "unit": "°C"}
        ]}),
        json!({"name": "Cellar", "widgets": [
            {"id": "c-hum", "kind": "gauge", "title": "Cellar humidity", "topic": "cellar/hum", "field": "hum", "unit": "%"}
        ]}),
    ]
}

/// Click the element `selector`.
async fn click(b: &mut Browser, selector: &str) {
    b.eval(&format!(
        "document.querySelector({}).click()",
        json!(selector)
    ))
    .await;
}

#[tokio::test]
async fn the_selector_switches_dashboards_and_makes_renames_imports_and_deletes_them() {
    let hub = Hub::start(|c, dir| {
        c.dashboard_file = Some(dir.join("dashboard.json"));
        let mut w = Widget::new(WidgetKind::Value, "cfg/x");
        w.id = "cfg".into();
        c.widgets = vec![w];
    })
    .await;
    for d in two_dashboards() {
        make(&hub, d, None).await;
    }
    // the URL names the one to open
    let mut b = Browser::open(&format!("http://{}/?d=cellar", hub.addr)).await;
    let v = b
        .until("the Cellar dashboard", PAGE, |v| {
            v["ready"] == "1" && v["active"] == "cellar" && v["widgets"] == json!(["c-hum"])
        })
        .await;
    assert_eq!(v["tabs"], json!(["garden", "cellar", "config"]));
    // switching shows the other's widgets and remembers it in the URL
    click(&mut b, "#dash-tabs [data-dashboard-id=garden]").await;
    b.until("the Garden dashboard", PAGE, |v| {
        v["active"] == "garden" && v["widgets"] == json!(["g-temp"]) && v["search"] == "?d=garden"
    })
    .await;
    b.until(
        "the live stream of the garden's topics",
        "document.body.dataset.live",
        |v| v == "open",
    )
    .await;
    let mut dev = hub.mqtt("garden-dev").await;
    dev.publish("garden/temp", QoS::AtLeastOnce, false, r#"{"temp": 12.5}"#)
        .await;
    b.until(
        "12.5 on the garden's widget",
        "document.querySelector('[data-widget-id=\"g-temp\"]').dataset.value",
        |v| v == "12.5",
    )
    .await;
    b.screenshot("dashboards-selector").await;

    // the configuration's dashboard: shown, marked, not editable in the page
    click(&mut b, "#dash-tabs [data-dashboard-id=config]").await;
    let v = b
        .until(
            "the configured dashboard, read-only",
            "({widgets: [...document.querySelectorAll('#grid [data-widget-id]')].map(w => w.dataset.widgetId), \
              note: document.getElementById('dash-note').textContent, \
              edit: document.getElementById('edit-toggle').hidden, \
              del: document.getElementById('dash-delete').hidden, \
              copy: document.getElementById('dash-copy').hidden})",
            |v| v["widgets"] == json!(["cfg"]),
        )
        .await;
    assert!(v["note"].as_str().unwrap().contains("midge.toml"), "{v}");
    assert_eq!(
        (&v["edit"], &v["del"], &v["copy"]),
        (&json!(true), &json!(true), &json!(false))
    );
    b.screenshot("dashboards-config").await;

    // New: named in the toolbar, opened, empty
    click(&mut b, "#dash-new").await;
    b.eval(
        "(() => { document.getElementById('dash-name-input').value = 'Attic'; \
           document.getElementById('dash-name-form').requestSubmit(); })()",
    )
    .await;
    b.until("the new Attic dashboard", PAGE, |v| {
        v["active"] == "attic" && v["widgets"] == json!([])
    })
    .await;
    // Rename
    click(&mut b, "#dash-rename").await;
    b.eval(
        "(() => { document.getElementById('dash-name-input').value = 'Loft'; \
           document.getElementById('dash-name-form').requestSubmit(); })()",
    )
    .await;
    b.until("the renamed tab", PAGE, |v| {
        v["names"] == json!(["Garden", "Cellar", "Loft", "Configured"])
    })
    .await;
    assert_eq!(
        hub.get("/api/v1/dashboards/attic").await.json()["name"],
        "Loft"
    );

    // Import: the garden's export, through the file picker, becomes a new dashboard
    let export = hub.get("/api/v1/dashboards/garden/export").await;
    assert_eq!(export.status, 200);
    let file = hub.dir.path().join("garden-export.json");
    std::fs::write(&file, &export.body).unwrap();
    let doc = b.call("DOM.getDocument", json!({})).await;
    let node = b
        .call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#dash-import-file"}),
        )
        .await;
    b.call(
        "DOM.setFileInputFiles",
        json!({"nodeId": node["nodeId"], "files": [file.display().to_string()]}),
    )
    .await;
    b.until("the imported dashboard, open", PAGE, |v| {
        v["active"] == "garden-2" && v["widgets"] == json!(["g-temp"])
    })
    .await;
    b.screenshot("dashboards-imported").await;
    let imported = hub.get("/api/v1/dashboards/garden-2").await.json();
    assert_eq!(
        imported["widgets"],
        hub.get("/api/v1/dashboards/garden").await.json()["widgets"]
    );

    // Delete asks again on the button; the second click deletes
    click(&mut b, "#dash-delete").await;
    let asked = b
        .eval("document.getElementById('dash-delete').textContent")
        .await;
    assert!(asked.as_str().unwrap().contains("Garden"), "{asked}");
    assert_eq!(
        hub.get("/api/v1/dashboards/garden-2").await.status,
        200,
        "one click does not delete"
    );
    click(&mut b, "#dash-delete").await;
    b.until("the dashboard gone", PAGE, |v| {
        v["tabs"] == json!(["garden", "cellar", "attic", "config"]) && v["active"] == "garden"
    })
    .await;
    assert_eq!(hub.get("/api/v1/dashboards/garden-2").await.status, 404);
}

#[tokio::test]
async fn a_share_link_opens_the_chosen_dashboard_logged_out() {
    let hub = Hub::start(|c, dir| {
        let hash = midge_auth::PasswordHash::create(
            b"s3cret",
            midge_auth::HashAlgorithm::Sha512Pbkdf2,
            1_000,
        )
        .unwrap();
        let path = dir.join("passwd");
        std::fs::write(&path, format!("alice:{}\n", hash.encode())).unwrap();
        c.allow_anonymous = false;
        c.password_file = Some(path);
        c.dashboard_file = Some(dir.join("dashboard.json"));
    })
    .await;
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    for d in two_dashboards() {
        make(&hub, d, Some(&basic)).await;
    }
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/tokens",
        &[
            ("authorization", basic.as_str()),
            ("content-type", "application/json"),
        ],
        Some(
            json!({"ttl": 600, "dashboard": "cellar"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let path = r.json()["path"].as_str().unwrap().to_owned();

    // a browser with no login at all
    let mut b = Browser::open(&format!("http://{}{path}", hub.addr)).await;
    let v = b
        .until("the shared Cellar dashboard", PAGE, |v| {
            v["ready"] == "1" && v["widgets"] == json!(["c-hum"])
        })
        .await;
    assert_eq!(v["tabs"], json!(["cellar"]), "{v}");
    let chrome = b
        .eval(
            "({manage: document.getElementById('dash-manage').hidden, \
              edit: document.getElementById('edit-toggle').hidden})",
        )
        .await;
    assert_eq!(chrome, json!({"manage": true, "edit": true}));
    b.until(
        "the live stream of the cellar's topics",
        "document.body.dataset.live",
        |v| v == "open",
    )
    .await;
    let mut dev = hub.mqtt("cellar-dev").await;
    dev.publish("cellar/hum", QoS::AtLeastOnce, false, r#"{"hum": 55}"#)
        .await;
    b.until(
        "55 % on the shared widget",
        "document.querySelector('[data-widget-id=\"c-hum\"]').dataset.value",
        |v| v == "55",
    )
    .await;
    b.screenshot("dashboards-shared").await;
    // the other dashboard is not reachable with this link, even by URL
    let other = b
        .eval("fetch('/api/v1/dashboards/garden').then(r => r.status)")
        .await;
    assert_eq!(other, 403);
}

#[tokio::test]
async fn a_dashboard_without_widgets_lists_the_topics_flowing_and_one_click_makes_a_widget() {
    let hub = Hub::start(|c, dir| {
        c.dashboard_file = Some(dir.join("dashboard.json"));
        c.last_values_topics = 10_000;
    })
    .await;
    let mut b = Browser::open(&format!("http://{}/", hub.addr)).await;
    b.until(
        "the first-run list, empty",
        "({ready: document.body.dataset.ready, \
          shown: !document.getElementById('first-run').hidden && !document.getElementById('empty').hidden, \
          none: !document.getElementById('first-run-none').hidden})",
        |v| v["ready"] == "1" && v["shown"] == true && v["none"] == true,
    )
    .await;
    b.screenshot("first-run-empty").await;

    // a device publishes: a number in JSON, an ON/OFF state, a position
    let mut dev = hub.mqtt("first-dev").await;
    dev.publish(
        "sensors/demo",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 21.5, "hum": 40}"#,
    )
    .await;
    dev.publish("home/door", QoS::AtLeastOnce, false, "OFF")
        .await;
    dev.publish(
        "trucks/1/pos",
        QoS::AtLeastOnce,
        false,
        r#"{"lat": 52.52, "lon": 13.4}"#,
    )
    .await;
    let rows = "[...document.querySelectorAll('#first-run-topics tr[data-topic]')].map(r => ({\
        topic: r.dataset.topic, \
        payload: r.querySelector('[data-role=payload]').textContent, \
        rate: r.querySelector('[data-role=rate]').dataset.rate, \
        kind: r.querySelector('[data-action=make-widget]').dataset.kind, \
        fields: [...r.querySelectorAll('[data-role=field] option')].map(o => o.value)}))";
    let v = b
        .until("the three topics listed", rows, |v| {
            v.as_array().is_some_and(|a| a.len() == 3)
        })
        .await;
    assert_eq!(v[0]["topic"], "home/door");
    assert_eq!(v[0]["payload"], "OFF");
    assert!(
        v[0]["kind"] == "led" || v[0]["kind"] == "value",
        "an ON/OFF topic: {v}"
    );
    assert_eq!(v[1]["topic"], "sensors/demo");
    assert_eq!(v[1]["payload"], r#"{"temp": 21.5, "hum": 40}"#);
    assert_eq!(v[1]["kind"], "gauge");
    assert_eq!(v[1]["fields"], json!(["temp", "hum"]));
    assert_eq!(v[2]["topic"], "trucks/1/pos");
    assert_eq!(v[2]["kind"], "map");

    // a steady topic gets a rate
    for i in 0..12 {
        dev.publish(
            "sensors/demo",
            QoS::AtLeastOnce,
            false,
            &format!(r#"{{"temp": {}, "hum": 40}}"#, 21.5 + f64::from(i) / 10.0),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    dev.publish(
        "sensors/demo",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 23.5, "hum": 40}"#,
    )
    .await;
    let v = b
        .until("a rate on sensors/demo", rows, |v| {
            v[1]["rate"]
                .as_str()
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|r| r > 0.5)
                && v[1]["payload"] == r#"{"temp": 23.5, "hum": 40}"#
        })
        .await;
    assert!(
        !v.as_array()
            .unwrap()
            .iter()
            .any(|r| r["topic"].as_str().unwrap().starts_with('$')),
        "no $SYS or $midge topics: {v}"
    );
    b.screenshot("first-run-topics").await;

    // one click: a gauge of temp on this dashboard, showing the value at once
    click(
        &mut b,
        "#first-run-topics tr[data-topic=\"sensors/demo\"] [data-action=make-widget]",
    )
    .await;
    let v = b
        .until(
            "the new gauge with the value",
            "[...document.querySelectorAll('#grid [data-widget-id]')].map(w => ({kind: w.dataset.kind, value: w.dataset.value}))",
            |v| v == &json!([{"kind": "gauge", "value": "23.5"}]),
        )
        .await;
    assert_eq!(v[0]["kind"], "gauge");
    assert_eq!(
        b.eval("document.getElementById('empty').hidden").await,
        true,
        "the list gives way to the widget"
    );
    let saved = hub.get("/api/v1/dashboards/main").await.json();
    assert_eq!(saved["widgets"][0]["topic"], "sensors/demo");
    assert_eq!(saved["widgets"][0]["field"], "temp");
    assert_eq!(saved["widgets"][0]["kind"], "gauge");
    // and it goes on live
    dev.publish(
        "sensors/demo",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 30, "hum": 40}"#,
    )
    .await;
    b.until(
        "the live value",
        "document.querySelector('#grid [data-widget-id]').dataset.value",
        |v| v == "30",
    )
    .await;
    b.screenshot("first-run-widget").await;
}

#[tokio::test]
async fn the_share_button_makes_a_link_that_opens_the_open_dashboard_alone() {
    let hub = Hub::start(|c, dir| {
        c.dashboard_file = Some(dir.join("dashboard.json"));
    })
    .await;
    for d in two_dashboards() {
        make(&hub, d, None).await;
    }
    let mut b = Browser::open(&format!("http://{}/?d=cellar", hub.addr)).await;
    b.until("the Cellar dashboard", PAGE, |v| {
        v["ready"] == "1" && v["active"] == "cellar"
    })
    .await;
    click(&mut b, "#dash-share").await;
    b.eval(
        "(() => { document.getElementById('dash-share-ttl').value = '3600'; \
           document.getElementById('dash-share-box').requestSubmit(); })()",
    )
    .await;
    let url = b
        .until(
            "the share link",
            "document.getElementById('dash-share-result').hidden ? '' : document.getElementById('dash-share-url').value",
            |v| v.as_str().is_some_and(|u| u.contains("/?token=")),
        )
        .await;
    b.screenshot("dashboards-share-button").await;
    let url = url.as_str().unwrap().to_owned();
    let tokens = hub.get("/api/v1/tokens").await.json();
    assert_eq!(tokens["tokens"][0]["dashboard"], "cellar");
    let life = tokens["tokens"][0]["expires"].as_i64().unwrap()
        - tokens["tokens"][0]["created"].as_i64().unwrap();
    assert_eq!(life, 3_600_000, "the chosen validity");

    // another browser with the link sees that dashboard and no other
    let mut visitor = Browser::open(&url).await;
    let v = visitor
        .until("the shared dashboard", PAGE, |v| {
            v["ready"] == "1" && v["widgets"] == json!(["c-hum"])
        })
        .await;
    assert_eq!(v["tabs"], json!(["cellar"]));
}
