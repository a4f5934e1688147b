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

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use midge_client::QoS;
use midge_http::{Widget, WidgetKind};
use midge_series::Row;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium showing one page, driven over the DevTools protocol.
struct Browser {
    _proc: Proc,
    ws: Ws,
    id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (install it with scripts/test-deps.sh)");
        let proc = Proc(child);
        // Chromium writes the port it picked here
        let file = profile.path().join("DevToolsActivePort");
        let port: u16 = eventually("chromium's DevTools port", || async {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.parse().ok()))
        })
        .await;
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let page = eventually("the page target", || async {
            let r = request(devtools, "GET", "/json/list", &[], None).await;
            let list: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            list.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                    .flatten()
            })
        })
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .unwrap();
        Browser {
            _proc: proc,
            ws,
            id: 0,
            _profile: profile,
        }
    }

    /// Call a DevTools method; its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        let req = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::Text(req.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(T, self.ws.next())
                .await
                .expect("DevTools answer in time")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluate a JavaScript expression in the page (promises awaited); its JSON value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until `done` accepts its value (bounded by [`T`]).
    async fn until(&mut self, what: &str, expr: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        // while the page loads, the expression may throw: that is "not yet"
        let guarded = format!(
            "(() => {{ try {{ return ({expr}); }} catch (e) {{ return {{thrown: String(e)}}; }} }})()"
        );
        loop {
            let v = self.eval(&guarded).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "page never showed {what}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keep a screenshot when MIDGE_SCREENSHOTS names a folder.
    async fn screenshot(&mut self, name: &str) {
        let Ok(dir) = std::env::var("MIDGE_SCREENSHOTS") else {
            return;
        };
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}

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
    let hub = Hub::start(|c, _| {
        c.widgets = vec![
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
    // optimistic until the device reports; then what the device says
    b.until("the optimistic on", state, |v| v == "on").await;
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
