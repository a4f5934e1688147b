//! The dashboard's widgets in headless Chromium (see browser.rs for the driver): every widget
//! starts from the last values after a reload, payload filters on a topic carrying several
//! kinds of message, the switch's named states and pending command, the chart's time
//! picker, zoom and big number, and every kind of widget on one page. Set
//! MIDGE_SCREENSHOTS=<dir> to keep a PNG of the page at the end of each test.
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
use serde_json::{Value, json};

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

/// A hub with last values on and these widgets.
async fn hub_with(widgets: Vec<Widget>) -> Hub {
    Hub::start(|c, _| {
        c.last_values_topics = 10_000;
        c.widgets = widgets;
    })
    .await
}

/// The page open, every widget loaded (its last values and history asked for).
async fn open(hub: &Hub, widgets: usize) -> Browser {
    let mut b = Browser::open(&format!("http://{}/", hub.addr)).await;
    loaded(&mut b, widgets).await;
    b
}

async fn loaded(b: &mut Browser, widgets: usize) {
    b.until(
        "the dashboard with every widget loaded",
        "({ready: document.body.dataset.ready, \
           loaded: document.querySelectorAll('[data-widget-id][data-loaded=\"1\"]').length})",
        |v| v["ready"] == "1" && v["loaded"] == widgets,
    )
    .await;
}

/// What each widget shows: its value, state, label and counts.
const SHOWN: &str = "Object.fromEntries([...document.querySelectorAll('[data-widget-id]')].map(w => \
     [w.dataset.widgetId, { value: w.dataset.value, state: w.dataset.state || null, \
       pending: w.dataset.pending || null, \
       text: (w.querySelector('[data-role=value]') || {}).textContent || null, \
       label: (w.querySelector('[data-role=state]') || {}).textContent || null, \
       unknown: !!w.querySelector('[data-role=state].unknown'), \
       markers: w.dataset.markers || null, trail: w.dataset.trail || null, \
       rows: w.dataset.rows || null, updated: w.querySelector('[data-role=updated]').textContent }]))";

/// Wait until the last values API has `n` topics under `filter`.
async fn last_values_hold(hub: &Hub, filter: &str, n: usize) {
    eventually("the last values", || async {
        let r = hub
            .get(&format!(
                "/api/v1/last?topic={}",
                filter.replace('#', "%23")
            ))
            .await;
        (r.status == 200 && r.json()["topics"].as_array().is_some_and(|a| a.len() >= n))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn after_a_reload_every_widget_shows_the_last_values_at_once() {
    let hub = hub_with(vec![
        widget("gauge", WidgetKind::Gauge, "sensors/boiler", |w| {
            w.field = "temp".into();
        }),
        widget("value", WidgetKind::Value, "sensors/boiler", |w| {
            w.field = "hum".into();
        }),
        widget("map", WidgetKind::Map, "trucks/+/pos", |_| {}),
        widget("switch", WidgetKind::Switch, "home/lamp", |w| {
            w.command_topic = Some("home/lamp/set".into());
        }),
        widget("led", WidgetKind::Led, "home/door", |w| {
            w.field = "state".into();
            w.on_values = vec!["open".into()];
            w.on_label = Some("Open".into());
            w.off_label = Some("Closed".into());
        }),
    ])
    .await;
    // the truck's track in the series store, then its newest position published
    let now = now_ms();
    let track: Vec<Row> = (0..3)
        .map(|i| {
            let data = obj(json!({"lat": 48.10 + i as f64 * 0.01, "lon": 11.50}));
            Row::new(now - 60_000 + i * 10_000, "trucks/7/pos", "truck", data)
        })
        .collect();
    hub.store.insert("telemetry", &track).unwrap();
    let mut dev = hub.mqtt("devices").await;
    for (topic, payload) in [
        ("sensors/boiler", r#"{"temp": 41.5, "hum": 30}"#),
        ("trucks/7/pos", r#"{"lat": 48.14, "lon": 11.55}"#),
        ("home/lamp", "ON"),
        ("home/door", r#"{"state": "open"}"#),
    ] {
        dev.publish(topic, QoS::AtLeastOnce, false, payload).await;
    }
    last_values_hold(&hub, "#", 4).await;

    let mut b = open(&hub, 5).await;
    // nothing is published while the page is open: all of it comes from the last values
    for round in ["first load", "reload"] {
        let s = b
            .until(&format!("the last values ({round})"), SHOWN, |v| {
                v["gauge"]["text"] == "41.5"
                    && v["value"]["text"] == "30"
                    && v["map"]["markers"] == "1"
                    && v["switch"]["state"] == "on"
                    && v["led"]["state"] == "on"
            })
            .await;
        assert_eq!(s["led"]["label"], "Open", "{round}: {s}");
        assert_eq!(s["switch"]["label"], "ON", "{round}: {s}");
        assert_eq!(s["map"]["value"], "48.14,11.55", "{round}: {s}");
        // the stored track and the last position: the trail survives the reload
        assert_eq!(s["map"]["trail"], "4", "{round}: {s}");
        assert!(
            s["gauge"]["updated"]
                .as_str()
                .is_some_and(|u| !u.contains("waiting")),
            "{round}: {s}"
        );
        if round == "first load" {
            b.eval("location.reload()").await;
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            loaded(&mut b, 5).await;
        }
    }
    b.screenshot("widgets-reloaded").await;
}

#[tokio::test]
async fn a_payload_filter_keeps_each_widget_to_its_own_messages() {
    let hub = hub_with(vec![
        widget("door", WidgetKind::Led, "home/sensors", |w| {
            w.title = "Door".into();
            w.filter = Some("type = 'door'".into());
            w.on_values = vec!["open".into()];
            w.on_label = Some("Open".into());
            w.off_label = Some("Closed".into());
        }),
        widget("temp", WidgetKind::Value, "home/sensors", |w| {
            w.title = "Temperature".into();
            // EMQX's double quotes: text on the right of a comparison
            w.filter = Some(r#"type = "temp" AND value > -50"#.into());
        }),
    ])
    .await;
    let mut b = open(&hub, 2).await;
    let mut dev = hub.mqtt("mixed").await;
    let door = |s: &str| format!(r#"{{"type": "door", "value": "{s}"}}"#);
    let temp = |t: f64| format!(r#"{{"type": "temp", "value": {t}}}"#);

    dev.publish("home/sensors", QoS::AtLeastOnce, false, &door("open"))
        .await;
    dev.publish("home/sensors", QoS::AtLeastOnce, false, &temp(21.5))
        .await;
    let s = b
        .until("the door open and 21.5", SHOWN, |v| {
            v["door"]["state"] == "on" && v["temp"]["text"] == "21.5"
        })
        .await;
    assert_eq!(s["door"]["value"], "open", "not the temperature: {s}");
    assert_eq!(s["door"]["label"], "Open");

    dev.publish("home/sensors", QoS::AtLeastOnce, false, &door("closed"))
        .await;
    dev.publish("home/sensors", QoS::AtLeastOnce, false, &temp(22.0))
        .await;
    let s = b
        .until("the door closed and 22", SHOWN, |v| {
            v["door"]["state"] == "off" && v["temp"]["text"] == "22"
        })
        .await;
    assert_eq!(
        (s["door"]["value"].clone(), s["door"]["label"].clone()),
        (json!("closed"), json!("Closed")),
        "{s}"
    );
    // the topic's last value is a temperature: after a reload the temperature shows it and
    // the door ignores it (it is not a door message)
    b.eval("location.reload()").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    loaded(&mut b, 2).await;
    let s = b.eval(SHOWN).await;
    assert_eq!(s["temp"]["text"], "22", "{s}");
    assert_eq!(s["door"]["state"], "unknown", "{s}");
    assert_eq!(s["door"]["value"], "", "{s}");
    b.screenshot("widgets-filter").await;
}

#[tokio::test]
async fn a_bad_filter_is_refused_when_the_dashboard_is_saved() {
    let mut w = Widget::new(WidgetKind::Led, "home/door");
    w.filter = Some("type = 'door' AND".into());
    let e = midge_http::validate_widgets(vec![w.clone()])
        .unwrap_err()
        .join("\n");
    assert!(
        e.contains("filter \"type = 'door' AND\": SQL syntax error"),
        "{e}"
    );
    w.filter = Some("upper(type) = 'DOOR'".into());
    let e = midge_http::validate_widgets(vec![w])
        .unwrap_err()
        .join("\n");
    assert!(e.contains("functions (upper(...))"), "{e}");
    // and over the API, with the parser's message
    let hub = hub_with(Vec::new()).await;
    let r = hub
        .send_json(
            "PUT",
            "/api/v1/dashboard",
            &json!({"widgets": [{"kind": "value", "topic": "a", "filter": "temp >"}]}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.error().contains("filter \"temp >\": SQL syntax error"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn the_switch_names_its_state_and_waits_for_the_device() {
    let hub = hub_with(vec![
        widget("valve", WidgetKind::Switch, "valve/state", |w| {
            w.field = "value".into();
            w.on = "1".into();
            w.off = "0".into();
            w.on_label = Some("Open".into());
            w.off_label = Some("Closed".into());
            w.command_topic = Some("valve/set".into());
        }),
        widget("fan", WidgetKind::Switch, "fan/state", |w| {
            w.command_topic = Some("fan/set".into());
            w.optimistic = true;
        }),
    ])
    .await;
    let mut b = open(&hub, 2).await;
    let s = b.eval(SHOWN).await;
    assert_eq!(
        (
            s["valve"]["state"].clone(),
            s["valve"]["label"].clone(),
            s["valve"]["unknown"].clone()
        ),
        (json!("unknown"), json!("unknown"), json!(true)),
        "before any state: {s}"
    );
    let mut valve = hub.mqtt("valve").await;
    valve.subscribe("valve/set", QoS::AtLeastOnce).await;
    valve
        .publish(
            "valve/state",
            QoS::AtLeastOnce,
            false,
            r#"{"type": "valve", "value": 0}"#,
        )
        .await;
    let s = b
        .until("Closed", SHOWN, |v| v["valve"]["label"] == "Closed")
        .await;
    assert_eq!(s["valve"]["state"], "off");
    assert_eq!(s["valve"]["value"], "0", "the field, not the raw JSON: {s}");
    assert_eq!(s["valve"]["unknown"], false);

    b.eval("document.querySelector('[data-widget-id=valve] [data-role=toggle]').click()")
        .await;
    let m = valve.message().await;
    assert_eq!(&m.payload[..], b"1");
    // pending until the device says so
    let s = b
        .until("the pending Open", SHOWN, |v| v["valve"]["pending"] == "on")
        .await;
    assert_eq!(s["valve"]["state"], "off", "{s}");
    assert_eq!(s["valve"]["label"], "Open…", "{s}");
    valve
        .publish(
            "valve/state",
            QoS::AtLeastOnce,
            false,
            r#"{"type": "valve", "value": 1}"#,
        )
        .await;
    let s = b
        .until("the confirmed Open", SHOWN, |v| v["valve"]["state"] == "on")
        .await;
    assert_eq!(s["valve"]["pending"], Value::Null, "{s}");
    assert_eq!(s["valve"]["label"], "Open");

    // a device without a state topic: the command is shown at once
    let mut fan = hub.mqtt("fan").await;
    fan.subscribe("fan/set", QoS::AtLeastOnce).await;
    b.eval("document.querySelector('[data-widget-id=fan] [data-role=toggle]').click()")
        .await;
    assert_eq!(&fan.message().await.payload[..], b"ON");
    let s = b
        .until("the fan on", SHOWN, |v| v["fan"]["state"] == "on")
        .await;
    assert_eq!(s["fan"]["pending"], Value::Null, "{s}");
    b.screenshot("widgets-switch").await;
}

/// The chart card's data attributes.
const CHART: &str = "(() => { const c = document.querySelector('[data-widget-id=chart]'); \
     return {range: c.dataset.range, since: Number(c.dataset.since), until: c.dataset.until, \
             query: c.dataset.query, points: Number(c.dataset.points), max: c.dataset.max, \
             loading: c.dataset.loading, value: c.querySelector('[data-role=value]').textContent, \
             band: !!c.querySelector('[data-role=band]'), \
             reset: !c.querySelector('[data-role=reset-zoom]').hidden}; })()";

#[tokio::test]
async fn the_time_picker_and_zoom_change_the_query_and_the_big_number_is_the_last_reading() {
    let hub = hub_with(vec![widget(
        "chart",
        WidgetKind::Chart,
        "plant/temp",
        |w| {
            w.field = "temp".into();
            w.width = 2;
        },
    )])
    .await;
    // 10 minutes of 1 Hz readings around 20 with one spike of 100, stored
    let now = now_ms();
    let rows: Vec<Row> = (0..600)
        .map(|i| {
            let t = if i == 300 {
                100.0
            } else {
                20.0 + (i % 7) as f64 * 0.1
            };
            Row::new(
                now - 600_000 + i * 1000,
                "plant/temp",
                "plant",
                obj(json!({"temp": t})),
            )
        })
        .collect();
    hub.store.insert("telemetry", &rows).unwrap();
    // the newest readings, published: 44 then 49 (their average would be 46.5)
    let mut dev = hub.mqtt("plant").await;
    dev.publish("plant/temp", QoS::AtLeastOnce, false, r#"{"temp": 44}"#)
        .await;
    dev.publish("plant/temp", QoS::AtLeastOnce, false, r#"{"temp": 49}"#)
        .await;
    last_values_hold(&hub, "plant/temp", 1).await;

    let mut b = open(&hub, 1).await;
    let c = b
        .until("the stored hour", CHART, |v| {
            v["points"].as_u64().is_some_and(|p| p > 10) && v["loading"] == ""
        })
        .await;
    assert_eq!(c["value"], "49", "the last reading, not an average: {c}");
    assert_eq!(c["range"], "1h", "{c}");
    let q = c["query"].as_str().unwrap();
    assert!(
        q.contains("/series?") && q.contains("points="),
        "server-side downsampling: {q}"
    );
    assert!(!q.contains("until="), "the last hour follows now: {q}");
    let since = c["since"].as_i64().unwrap();
    assert!((since - (now - 3_600_000)).abs() < 30_000, "{c}");
    // the spike survives the downsampling: the bucket's max, drawn as a band
    assert_eq!(c["max"], "100", "{c}");
    assert_eq!(c["band"], true, "{c}");

    // 7 days
    b.eval(
        "(() => { const s = document.querySelector('[data-widget-id=chart] [data-role=range]'); \
           s.value = '7d'; s.dispatchEvent(new Event('change')); })()",
    )
    .await;
    let c = b
        .until("the 7-day range", CHART, |v| {
            v["range"] == "7d" && v["loading"] == ""
        })
        .await;
    let since = c["since"].as_i64().unwrap();
    assert!((since - (now - 7 * 86_400_000)).abs() < 30_000, "{c}");
    assert!(
        c["query"]
            .as_str()
            .unwrap()
            .contains(&format!("since={since}")),
        "{c}"
    );
    assert_eq!(c["max"], "100", "{c}");

    // a custom range: from 20 to 5 minutes ago, as datetime-local fields
    let from = now - 20 * 60_000;
    let to = now - 5 * 60_000;
    b.eval(&format!(
        "(() => {{ const c = document.querySelector('[data-widget-id=chart]'); \
           const s = c.querySelector('[data-role=range]'); \
           s.value = 'custom'; s.dispatchEvent(new Event('change')); \
           const local = (ms) => {{ const d = new Date(ms - new Date(ms).getTimezoneOffset() * 6e4); \
             return d.toISOString().slice(0, 16); }}; \
           c.querySelector('[data-role=from]').value = local({from}); \
           c.querySelector('[data-role=to]').value = local({to}); \
           c.querySelector('[data-role=apply]').click(); }})()"
    ))
    .await;
    let c = b
        .until("the custom range", CHART, |v| {
            v["range"] == "custom" && v["until"] != "" && v["loading"] == ""
        })
        .await;
    let (since, until): (i64, i64) = (
        c["since"].as_i64().unwrap(),
        c["until"].as_str().unwrap().parse().unwrap(),
    );
    // datetime-local has minute precision
    assert!(
        (since - from).abs() < 60_000 && (until - to).abs() < 60_000,
        "{c}"
    );
    let q = c["query"].as_str().unwrap();
    assert!(
        q.contains(&format!("since={since}")) && q.contains(&format!("until={until}")),
        "{q}"
    );

    // back to an hour, then drag across the plot to zoom in, and reset
    b.eval(
        "(() => { const s = document.querySelector('[data-widget-id=chart] [data-role=range]'); \
           s.value = '1h'; s.dispatchEvent(new Event('change')); })()",
    )
    .await;
    b.until("the hour again", CHART, |v| {
        v["range"] == "1h" && v["loading"] == ""
    })
    .await;
    let r = b
        .eval(
            "(() => { const r = document.querySelector('[data-widget-id=chart] [data-role=chart]')\
               .getBoundingClientRect(); return {x: r.left, y: r.top, w: r.width, h: r.height}; })()",
        )
        .await;
    let (x, y, w, h) = (
        r["x"].as_f64().unwrap(),
        r["y"].as_f64().unwrap(),
        r["w"].as_f64().unwrap(),
        r["h"].as_f64().unwrap(),
    );
    let mid = y + h / 2.0;
    let (x0, x1) = (x + w * 0.6, x + w * 0.9);
    for (kind, px, buttons) in [
        ("mouseMoved", x0, 0),
        ("mousePressed", x0, 1),
        ("mouseMoved", (x0 + x1) / 2.0, 1),
        ("mouseMoved", x1, 1),
        ("mouseReleased", x1, 0),
    ] {
        b.call(
            "Input.dispatchMouseEvent",
            json!({"type": kind, "x": px, "y": mid, "button": "left", "buttons": buttons, "clickCount": 1}),
        )
        .await;
    }
    let c = b
        .until("the zoomed range", CHART, |v| {
            v["range"] == "zoom" && v["loading"] == ""
        })
        .await;
    assert_eq!(c["reset"], true, "{c}");
    let since = c["since"].as_i64().unwrap();
    let until: i64 = c["until"].as_str().unwrap().parse().unwrap();
    assert!(
        since > now - 3_600_000 && until - since < 3_600_000 / 2,
        "{c}"
    );
    assert!(
        c["query"]
            .as_str()
            .unwrap()
            .contains(&format!("until={until}")),
        "{c}"
    );
    b.screenshot("widgets-zoomed").await;
    b.eval("document.querySelector('[data-widget-id=chart] [data-role=reset-zoom]').click()")
        .await;
    let c = b
        .until("the reset zoom", CHART, |v| {
            v["range"] == "1h" && v["loading"] == ""
        })
        .await;
    assert_eq!(c["reset"], false, "{c}");
    assert_eq!(c["value"], "49", "{c}");
}

#[tokio::test]
async fn every_kind_of_widget_on_one_dashboard() {
    let hub = hub_with(vec![
        widget("gauge", WidgetKind::Gauge, "sensors/kitchen", |w| {
            w.title = "Kitchen".into();
            w.field = "temp".into();
            w.unit = Some("°C".into());
            w.max = Some(40.0);
        }),
        widget("value", WidgetKind::Value, "sensors/kitchen", |w| {
            w.title = "Humidity".into();
            w.field = "hum".into();
            w.unit = Some("%".into());
        }),
        widget("door", WidgetKind::Led, "home/events", |w| {
            w.title = "Front door".into();
            w.field = "state".into();
            w.filter = Some("type = 'door'".into());
            w.on_values = vec!["open".into()];
            w.on_label = Some("Open".into());
            w.off_label = Some("Closed".into());
            w.on_color = Some("#dc2626".into());
        }),
        widget("switch", WidgetKind::Switch, "home/lamp", |w| {
            w.title = "Lamp".into();
            w.command_topic = Some("home/lamp/set".into());
        }),
        widget("chart", WidgetKind::Chart, "sensors/kitchen", |w| {
            w.title = "Temperatures".into();
            w.field = "temp".into();
            w.unit = Some("°C".into());
            w.width = 2;
            w.series = vec![
                midge_http::Series {
                    topic: None,
                    field: "temp".into(),
                    label: Some("Kitchen".into()),
                    color: None,
                },
                midge_http::Series {
                    topic: Some("sensors/garden".into()),
                    field: "temp".into(),
                    label: Some("Garden".into()),
                    color: None,
                },
            ];
        }),
        widget("map", WidgetKind::Map, "trucks/+/pos", |w| {
            w.title = "Trucks".into();
        }),
        widget("table", WidgetKind::Table, "home/events", |w| {
            w.title = "Events".into();
            w.columns = vec!["type".into(), "state".into(), "temp".into()];
            w.rows = Some(5);
            w.width = 2;
        }),
    ])
    .await;
    let now = now_ms();
    let mut rows = Vec::new();
    for i in 0..120 {
        let t = now - 3_500_000 + i * 29_000;
        let k = 21.0 + (i as f64 / 10.0).sin() * 2.0;
        let g = 12.0 + (i as f64 / 15.0).cos() * 3.0;
        rows.push(Row::new(
            t,
            "sensors/kitchen",
            "k",
            obj(json!({"temp": k, "hum": 40})),
        ));
        rows.push(Row::new(t, "sensors/garden", "g", obj(json!({"temp": g}))));
    }
    for i in 0..5 {
        let data = obj(json!({"lat": 48.10 + i as f64 * 0.004, "lon": 11.50 + i as f64 * 0.006}));
        rows.push(Row::new(
            now - 300_000 + i * 60_000,
            "trucks/7/pos",
            "t",
            data,
        ));
    }
    hub.store.insert("telemetry", &rows).unwrap();
    let mut dev = hub.mqtt("house").await;
    for (topic, payload) in [
        ("sensors/kitchen", r#"{"temp": 22.4, "hum": 41}"#),
        ("sensors/garden", r#"{"temp": 13.1}"#),
        ("home/events", r#"{"type": "door", "state": "open"}"#),
        ("home/events", r#"{"type": "temp", "temp": 19.5}"#),
        ("home/lamp", "OFF"),
        ("trucks/7/pos", r#"{"lat": 48.121, "lon": 11.531}"#),
        ("trucks/8/pos", r#"{"lat": 48.115, "lon": 11.52}"#),
    ] {
        dev.publish(topic, QoS::AtLeastOnce, false, payload).await;
    }
    last_values_hold(&hub, "#", 5).await;
    let mut b = open(&hub, 7).await;
    let s = b
        .until("every widget showing something", SHOWN, |v| {
            v["gauge"]["text"] == "22.4"
                && v["value"]["text"] == "41"
                && v["switch"]["label"] == "OFF"
                && v["map"]["markers"] == "2"
                && v["table"]["rows"] == "1"
        })
        .await;
    // the door LED: the topic's last message is a temperature; the door's own message
    // arrived live before the page opened and was not stored, so it is unknown until the
    // next door message
    assert_eq!(s["door"]["state"], "unknown", "{s}");
    dev.publish(
        "home/events",
        QoS::AtLeastOnce,
        false,
        r#"{"type": "door", "state": "open"}"#,
    )
    .await;
    let s = b
        .until("the door open and two events", SHOWN, |v| {
            v["door"]["label"] == "Open" && v["table"]["rows"] == "2"
        })
        .await;
    assert_eq!(s["door"]["state"], "on");
    let legend = b
        .eval(
            "[...document.querySelectorAll('[data-widget-id=chart] [data-role=legend] .item')]\
               .map(i => i.textContent)",
        )
        .await;
    assert_eq!(
        legend,
        json!(["Kitchen22.4 °C", "Garden13.1 °C"]),
        "{legend}"
    );
    let lines = b
        .eval("document.querySelectorAll('[data-widget-id=chart] polyline.line').length")
        .await;
    assert_eq!(lines, 2);
    let cells = b
        .eval(
            "[...document.querySelectorAll('[data-widget-id=table] tbody tr')].map(r => \
               [...r.querySelectorAll('td')].slice(1).map(td => td.textContent))",
        )
        .await;
    assert_eq!(
        cells,
        json!([["door", "open", ""], ["temp", "", "19.5"]]),
        "newest first: {cells}"
    );
    b.screenshot("widgets-every-kind").await;
    b.call(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    b.screenshot("widgets-every-kind-dark").await;
}

#[tokio::test]
async fn the_form_makes_a_filtered_led_and_shows_why_a_bad_filter_is_refused() {
    let hub = Hub::start(|c, dir| {
        c.last_values_topics = 10_000;
        // a dashboard saved from the page, so edit mode can change it
        let path = dir.join("dashboard.json");
        let widgets = vec![widget("lamp", WidgetKind::Switch, "home/lamp", |w| {
            w.command_topic = Some("home/lamp/set".into());
        })];
        std::fs::write(&path, json!({ "widgets": widgets }).to_string()).unwrap();
        c.dashboard_file = Some(path);
    })
    .await;
    let mut b = open(&hub, 1).await;
    b.eval(
        "(() => { \
           document.getElementById('edit-toggle').click(); \
           document.getElementById('edit-add').click(); \
           const f = document.getElementById('widget-form'); \
           f.elements.kind.value = 'led'; \
           f.elements.kind.dispatchEvent(new Event('change')); \
           f.elements.title.value = 'Door'; \
           f.elements.topic.value = 'home/events'; \
           f.elements.field.value = 'state'; \
           f.elements.filter.value = \"type = 'door' AND\"; \
           f.elements.on_values.value = 'open, ajar'; \
           f.elements.on_label.value = 'Open'; \
           f.elements.off_label.value = 'Closed'; \
         })()",
    )
    .await;
    let hidden = b
        .eval(
            "(() => { const f = document.getElementById('widget-form'); \
               return ['filter', 'on_values', 'on_label', 'command_topic', 'series', 'columns']\
                 .map(n => [n, f.elements[n].closest('label').hidden]); })()",
        )
        .await;
    assert_eq!(
        hidden,
        json!([
            ["filter", false],
            ["on_values", false],
            ["on_label", false],
            ["command_topic", true],
            ["series", true],
            ["columns", true]
        ]),
        "the LED's fields: {hidden}"
    );
    b.screenshot("widgets-form").await;
    // the page cannot read this filter: refused before the server is asked
    b.eval("document.getElementById('widget-form').requestSubmit()")
        .await;
    b.until(
        "the page's own message",
        "document.getElementById('toast').textContent",
        |v| v.as_str().is_some_and(|t| t.contains("unexpected end")),
    )
    .await;
    // one the page reads but the rules refuse (a number out of range): the server's word
    b.eval(
        "(() => { const f = document.getElementById('widget-form'); \
           f.elements.filter.value = \"type = 'door' AND n < 1e999\"; \
           f.requestSubmit(); \
           document.getElementById('edit-save').click(); })()",
    )
    .await;
    let refused = b
        .until(
            "the server's refusal",
            "(() => { const m = document.getElementById('edit-message'); \
               return m.hidden ? '' : m.textContent; })()",
            |v| v.as_str().is_some_and(|t| !t.is_empty()),
        )
        .await;
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("filter \"type = 'door' AND n < 1e999\": invalid literal 1e999"),
        "{refused}"
    );
    // corrected in the form: edit the new widget again
    let form = b
        .eval(
            "(() => { document.querySelector('[data-kind=led] [data-action=edit]').click(); \
               const f = document.getElementById('widget-form'); \
               return {filter: f.elements.filter.value, on_values: f.elements.on_values.value, \
                       kind: f.elements.kind.value}; })()",
        )
        .await;
    assert_eq!(
        form,
        json!({"filter": "type = 'door' AND n < 1e999", "on_values": "open, ajar", "kind": "led"})
    );
    b.eval(
        "(() => { const f = document.getElementById('widget-form'); \
           f.elements.filter.value = \"type = 'door'\"; \
           f.requestSubmit(); \
           document.getElementById('edit-save').click(); })()",
    )
    .await;
    let led = b
        .until(
            "the saved LED",
            "(() => { const w = document.querySelector('[data-kind=led]'); \
               return w && !document.body.classList.contains('editing') ? \
                 {filter: w.querySelector('[data-role=filter]').textContent, \
                  state: w.dataset.state} : null; })()",
            |v| !v.is_null(),
        )
        .await;
    assert_eq!(led["filter"], "where type = 'door'", "{led}");
    assert_eq!(led["state"], "unknown");
    let mut dev = hub.mqtt("door").await;
    dev.publish(
        "home/events",
        QoS::AtLeastOnce,
        false,
        r#"{"type": "door", "state": "ajar"}"#,
    )
    .await;
    b.until(
        "the door ajar: on",
        "(() => { const w = document.querySelector('[data-kind=led]'); \
           return [w.dataset.state, w.querySelector('[data-role=state]').textContent]; })()",
        |v| v == &json!(["on", "Open"]),
    )
    .await;
}

/// Seven days of 1 Hz readings (604,800 rows) on a chart: the page asks for about one
/// bucket per pixel and draws the min/max band, so the week loads in about the time of one
/// query. Heavy (the rows are written first): run with --ignored.
#[tokio::test]
#[ignore = "writes 604,800 rows; run by hand to measure"]
async fn seven_days_of_one_hertz_data_draw_fast_and_keep_their_spikes() {
    let hub = hub_with(vec![widget(
        "chart",
        WidgetKind::Chart,
        "plant/temp",
        |w| {
            w.field = "temp".into();
            w.window = "7d".into();
            w.width = 2;
        },
    )])
    .await;
    let now = now_ms();
    let start = std::time::Instant::now();
    for day in 0..7i64 {
        let rows: Vec<Row> = (0..86_400i64)
            .map(|s| {
                let i = day * 86_400 + s;
                // one spike of 100 a day, 20..21 otherwise
                let t = if s == 43_200 {
                    100.0
                } else {
                    20.0 + (i % 11) as f64 * 0.1
                };
                Row::new(
                    now - 7 * 86_400_000 + i * 1000,
                    "plant/temp",
                    "plant",
                    obj(json!({"temp": t})),
                )
            })
            .collect();
        hub.store.insert("telemetry", &rows).unwrap();
    }
    eprintln!("wrote 604,800 rows in {:?}", start.elapsed());
    let r = hub
        .get("/api/v1/tables/telemetry/series?field=temp&topic=plant/temp&since=-7d&points=600")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = std::time::Instant::now();
    let r = hub
        .get("/api/v1/tables/telemetry/series?field=temp&topic=plant/temp&since=-7d&points=600")
        .await;
    eprintln!(
        "series points=600 over 7 days: {:?}, {} bytes",
        t.elapsed(),
        r.body.len()
    );
    let t = std::time::Instant::now();
    let mut b = open(&hub, 1).await;
    let c = b
        .until("the week drawn", CHART, |v| {
            v["points"].as_u64().is_some_and(|p| p > 100) && v["loading"] == ""
        })
        .await;
    eprintln!("page open to the week drawn: {:?}: {c}", t.elapsed());
    assert_eq!(c["max"], "100", "the spikes survive: {c}");
    assert_eq!(c["band"], true);
    b.screenshot("widgets-week").await;
}

#[tokio::test]
async fn a_share_link_reads_every_topic_of_its_charts_and_the_rows_of_maps_and_tables() {
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
        c.last_values_topics = 10_000;
        c.widgets = vec![
            widget("chart", WidgetKind::Chart, "plant/a", |w| {
                w.field = "temp".into();
                w.series = vec![
                    midge_http::Series {
                        topic: None,
                        field: "temp".into(),
                        label: None,
                        color: None,
                    },
                    midge_http::Series {
                        topic: Some("plant/b".into()),
                        field: "temp".into(),
                        label: None,
                        color: None,
                    },
                ];
            }),
            widget("map", WidgetKind::Map, "trucks/+/pos", |_| {}),
        ];
    })
    .await;
    let now = now_ms();
    let rows = vec![
        Row::new(now, "plant/b", "p", obj(json!({"temp": 1}))),
        Row::new(now, "trucks/7/pos", "t", obj(json!({"lat": 1, "lon": 2}))),
    ];
    hub.store.insert("telemetry", &rows).unwrap();
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/tokens",
        &[
            ("authorization", &basic),
            ("content-type", "application/json"),
        ],
        Some(b"{}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let bearer = format!("Bearer {}", r.json()["token"].as_str().unwrap());
    let get = |path: &'static str| {
        let bearer = bearer.clone();
        let addr = hub.addr;
        async move { request(addr, "GET", path, &[("authorization", &bearer)], None).await }
    };
    // the chart's second line has its own topic
    let r =
        get("/api/v1/tables/telemetry/series?field=temp&topic=plant/b&since=-1h&points=10").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get("/api/v1/last?topic=plant/b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // the map's trail comes from the rows of its topic
    let r = get("/api/v1/tables/telemetry/rows?topic=trucks/%2B/pos&limit=500").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"].as_array().unwrap().len(), 1);
    // nothing else
    for path in [
        "/api/v1/tables/telemetry/rows?topic=%23",
        "/api/v1/tables/telemetry/rows",
        "/api/v1/tables/telemetry/series?field=temp&topic=plant/c",
    ] {
        assert_eq!(get(path).await.status, 403, "{path}");
    }
}

#[tokio::test]
async fn a_filtered_chart_draws_only_the_stored_rows_that_pass() {
    let hub = hub_with(vec![widget(
        "chart",
        WidgetKind::Chart,
        "home/sensors",
        |w| {
            w.field = "value".into();
            w.filter = Some("type = 'temp'".into());
        },
    )])
    .await;
    let now = now_ms();
    let rows: Vec<Row> = (0..40)
        .map(|i| {
            let data = if i % 2 == 0 {
                json!({"type": "temp", "value": 20 + (i / 2) % 3})
            } else {
                json!({"type": "door", "value": 999})
            };
            Row::new(now - 1_200_000 + i * 30_000, "home/sensors", "s", obj(data))
        })
        .collect();
    hub.store.insert("telemetry", &rows).unwrap();
    let mut b = open(&hub, 1).await;
    let c = b
        .until("the filtered history", CHART, |v| {
            v["points"].as_u64().is_some_and(|p| p > 0) && v["loading"] == ""
        })
        .await;
    // the store cannot apply the filter: rows, filtered in the page, then bucketed
    assert!(c["query"].as_str().unwrap().contains("/rows?"), "{c}");
    assert_eq!(c["max"], "22", "no door reading (999) on the chart: {c}");
    assert_eq!(c["points"], 20, "{c}");
    // the number: the newest stored reading that passes (the newest row is a door's)
    assert_eq!(c["value"], "21", "{c}");
}

/// The page's filter evaluator against the rules crate: the same verdict (TRUE passes,
/// FALSE and unknown do not) for each filter and payload.
#[tokio::test]
async fn the_pages_filters_agree_with_the_rules_crate() {
    use midge_hub::midge_rules::{Input, Rule};
    let filters = [
        "type = 'door'",
        "type = \"door\"",
        "type != 'door'",
        "type <> 'door'",
        "temp > 30",
        "temp >= 30.5",
        "temp < 30 OR type = 'door'",
        "temp > 30 AND room = \"k\"",
        "NOT temp > 30",
        "NOT (temp > 30 OR type = 'door')",
        "n = '5'",
        "n > '40'",
        "s > 'b'",
        "flag = TRUE",
        "flag",
        "flag IS TRUE",
        "flag IS NOT TRUE",
        "missing IS NULL",
        "temp IS NOT NULL",
        "nul IS NULL",
        "a.b = 1",
        "a.c[1] = 'y'",
        "a.c[-1] = 'z'",
        "a['k-1'] = 2",
        "\"k-2\" = 3",
        "state IN ('open', 'ajar')",
        "state NOT IN ('open', 'ajar')",
        "temp BETWEEN 30 AND 32",
        "temp NOT BETWEEN 30 AND 32",
        "type LIKE 'do%'",
        "type LIKE 'd_or'",
        "type NOT LIKE '%o%'",
        "(temp - 32) * 5 / 9 > 0",
        "temp % 2 = 1.5",
        "-temp < -30",
        "type || '!' = 'door!'",
        "value > 10",
        "payload = 'hello'",
        "topic = 'x/y'",
        "missing = 1 OR TRUE",
        "missing = 1 AND FALSE",
        "missing = 1 OR FALSE",
        "obj = obj",
    ];
    let payloads = [
        r#"{"type": "door", "state": "open", "temp": 31.5, "room": "k", "n": 41, "s": "c", "flag": true, "nul": null, "a": {"b": 1, "c": ["x", "y", "z"], "k-1": 2}, "k-2": 3, "obj": {"x": 1}}"#,
        r#"{"type": "temp", "state": "closed", "temp": 20, "room": "b", "n": "5", "s": "a", "flag": false}"#,
        r#"{"type": "doors", "temp": "30.5", "flag": 1}"#,
        "15",
        "hello",
    ];
    let hub = hub_with(Vec::new()).await;
    let mut b = Browser::open(&format!("http://{}/", hub.addr)).await;
    b.until("the page's scripts", "typeof midge.compileFilter", |v| {
        v == "function"
    })
    .await;
    let mut cases = Vec::new();
    for f in filters {
        let rule = Rule::parse(&format!("SELECT * FROM '#' WHERE {f}"))
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        for p in payloads {
            let input = Input {
                topic: "x/y",
                payload: p.as_bytes(),
                ..Input::default()
            };
            cases.push((f, p, rule.apply(&input).is_some()));
        }
    }
    let pairs: Vec<(&str, &str)> = cases.iter().map(|(f, p, _)| (*f, *p)).collect();
    let got = b
        .eval(&format!(
            "{}.map(([f, text]) => {{ let parsed, isJson = true; \
               try {{ parsed = JSON.parse(text); }} catch (_) {{ parsed = text; isJson = false; }} \
               return midge.compileFilter(f)({{topic: 'x/y', text, ts: 0, qos: 0, retain: false}}, parsed, isJson); }})",
            serde_json::to_string(&pairs).unwrap()
        ))
        .await;
    assert_eq!(got.as_array().map(Vec::len), Some(cases.len()), "{got}");
    let mismatches: Vec<String> = cases
        .iter()
        .zip(got.as_array().unwrap())
        .filter(|((_, _, want), got)| *got != want)
        .map(|((f, p, want), got)| format!("{f} on {p}: rules {want}, page {got}"))
        .collect();
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
