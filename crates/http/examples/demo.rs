//! A broker, a series store with an hour of history and the dashboard, fed by simulated
//! devices: `cargo run -p midge-http --example demo -- [HTTP_PORT] [SECONDS]`, then open
//! http://127.0.0.1:HTTP_PORT/. Runs until Ctrl-C, or for SECONDS when given.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use midge_client::{Client, ClientOptions, Event, QoS};
use midge_http::{HttpConfig, HttpDeps, HttpServer, Widget, WidgetKind};
use midge_series::{Row, SeriesOptions, SeriesStore};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::json;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn temp_at(t: f64) -> f64 {
    62.0 + 9.0 * (t / 600_000.0).sin() + 2.0 * (t / 47_000.0).sin()
}

fn widgets() -> Vec<Widget> {
    let mut gauge = Widget::new(WidgetKind::Gauge, "sensors/boiler");
    gauge.title = "Boiler".into();
    gauge.field = "temp".into();
    gauge.unit = Some("°C".into());
    gauge.max = Some(90.0);
    let mut hum = Widget::new(WidgetKind::Value, "sensors/boiler");
    hum.title = "Humidity".into();
    hum.field = "hum".into();
    hum.unit = Some("%".into());
    hum.decimals = Some(0);
    let mut chart = Widget::new(WidgetKind::Chart, "sensors/boiler");
    chart.title = "Boiler temperature".into();
    chart.field = "temp".into();
    chart.unit = Some("°C".into());
    chart.width = 2;
    let mut map = Widget::new(WidgetKind::Map, "trucks/+/pos");
    map.title = "Fleet".into();
    map.label_field = Some("name".into());
    map.width = 2;
    let mut lamp = Widget::new(WidgetKind::Switch, "home/lamp");
    lamp.title = "Porch lamp".into();
    lamp.command_topic = Some("home/lamp/set".into());
    vec![gauge, hum, chart, map, lamp]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8080);
    let seconds: Option<u64> = args.next().and_then(|a| a.parse().ok());
    let dir = tempfile::tempdir().unwrap();
    let broker = Server::start(ServerConfig {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..ServerConfig::default()
    })
    .await
    .unwrap();
    let mqtt = broker.local_addrs()[0].port();
    let store = Arc::new(
        SeriesStore::open(&dir.path().join("series.db"), SeriesOptions::default()).unwrap(),
    );
    let now = now_ms();
    let history: Vec<Row> = (0..360)
        .map(|i| {
            let ts = now - 3_600_000 + i * 10_000;
            let data = json!({"temp": temp_at(ts as f64), "hum": 41});
            Row::new(
                ts,
                "sensors/boiler",
                "boiler-1",
                data.as_object().cloned().unwrap(),
            )
        })
        .collect();
    store.insert("telemetry", &history).unwrap();

    let mut deps = HttpDeps::new(&broker);
    deps.series = Some(store.clone());
    // a real rule: the devices' readings are stored as they arrive
    let hub = midge_hub::HubService::start(
        midge_hub::HubConfig {
            rules: vec![midge_hub::RuleConfig {
                name: "store-boiler".into(),
                sql: "SELECT * FROM 'sensors/#'".into(),
                actions: vec![midge_hub::ActionConfig::Store {
                    table: "telemetry".into(),
                }],
            }],
            ..midge_hub::HubConfig::default()
        },
        deps.connector.clone(),
        Some(store.clone()),
    )
    .await
    .unwrap();
    deps.hub = Some(hub);
    let mut config = HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    config.widgets = widgets();
    config.dashboard_file = Some(dir.path().join("dashboard.json"));
    let http = HttpServer::start(config, deps).await.unwrap();
    println!(
        "dashboard: http://{}/   (MQTT on 127.0.0.1:{mqtt})",
        http.local_addr()
    );

    // the lamp: obeys home/lamp/set, reports home/lamp (retained)
    let (lamp, mut lamp_events, _) = Client::connect(ClientOptions::new("127.0.0.1", mqtt, "lamp"))
        .await
        .unwrap();
    lamp.subscribe("home/lamp/set", QoS::AtLeastOnce)
        .await
        .unwrap();
    lamp.publish("home/lamp", QoS::AtLeastOnce, true, "OFF")
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok(e) = lamp_events.poll().await {
            if let Event::Message(m) = e {
                let _ = lamp
                    .publish("home/lamp", QoS::AtLeastOnce, true, m.payload.clone())
                    .await;
            }
        }
    });

    // the boiler and two trucks
    let (dev, mut dev_events, _) =
        Client::connect(ClientOptions::new("127.0.0.1", mqtt, "devices"))
            .await
            .unwrap();
    tokio::spawn(async move { while dev_events.poll().await.is_ok() {} });
    let store2 = store.clone();
    let sim = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut i = 0u64;
        loop {
            tick.tick().await;
            i += 1;
            let ts = now_ms();
            let temp = (temp_at(ts as f64) * 10.0).round() / 10.0;
            let hum = 40 + (i % 7);
            let payload = json!({"temp": temp, "hum": hum}).to_string();
            let _ = dev
                .publish("sensors/boiler", QoS::AtMostOnce, false, payload.clone())
                .await;
            if i.is_multiple_of(10) {
                let data = json!({"temp": temp, "hum": hum});
                let row = Row::new(
                    ts,
                    "sensors/boiler",
                    "boiler-1",
                    data.as_object().cloned().unwrap(),
                );
                let s = store2.clone();
                let _ = tokio::task::spawn_blocking(move || s.insert("telemetry", &[row])).await;
            }
            for (n, (lat, lon)) in [(1, (48.137, 11.575)), (2, (48.155, 11.54))] {
                let a = i as f64 / 60.0 + n as f64;
                let pos = json!({"lat": lat + 0.01 * a.sin(), "lon": lon + 0.015 * a.cos(), "name": format!("truck {n}")});
                let _ = dev
                    .publish(
                        &format!("trucks/{n}/pos"),
                        QoS::AtMostOnce,
                        false,
                        pos.to_string(),
                    )
                    .await;
            }
        }
    });
    match seconds {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    sim.abort();
    http.shutdown().await;
    broker.shutdown().await;
}
