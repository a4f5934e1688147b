//! Issue 13 item 8: alarms over the HTTP API. A rule added with an `alarm` action raises and
//! clears with hysteresis per source from what devices publish over TCP; `GET
//! /api/v1/alarms`, `/history`, `POST .../ack`, `DELETE` to clear by hand; bad definitions
//! refused on save with a clear message; the alarms survive a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;

use common::*;
use midge_client::QoS;
use serde_json::{Value, json};

async fn service(hub: &Hub, state: &std::path::Path) -> Arc<midge_hub::HubService> {
    midge_hub::HubService::start(
        midge_hub::HubConfig {
            state_dir: Some(state.to_path_buf()),
            ..midge_hub::HubConfig::default()
        },
        hub.deps.connector.clone(),
        Some(hub.store.clone()),
    )
    .await
    .unwrap()
}

/// Active alarms as (source, value) once `ok` holds.
async fn active_until(hub: &Hub, what: &str, ok: impl Fn(&[Value]) -> bool) -> Value {
    eventually(what, || async {
        let r = hub.get("/api/v1/alarms").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        ok(v["alarms"].as_array().unwrap()).then_some(v)
    })
    .await
}

#[tokio::test]
async fn alarms_raise_and_clear_with_hysteresis_and_are_listed_acknowledged_and_cleared() {
    let mut hub = Hub::start(|_, _| {}).await;
    let state = tempfile::tempdir().unwrap();
    let svc = service(&hub, state.path()).await;
    hub.deps.hub = Some(svc.clone());
    hub.restart_http().await;

    // bad definitions are refused on save, naming the problem
    for (alarm, says) in [
        (json!({"name": "hot", "raise": "temp >>"}), "raise"),
        (
            json!({"name": "hot", "raise": "temp > 80", "severity": "bad"}),
            "severity",
        ),
        (
            json!({"name": "hot", "raise": "temp > 80", "topic": "a/+/b"}),
            "wildcards",
        ),
        (json!({"name": "hot", "rise": "temp > 80"}), "rise"),
    ] {
        let r = hub
            .send_json(
                "POST",
                "/api/v1/rules",
                &json!({"name": "boiler", "sql": "SELECT temp FROM 'boiler/+'", "alarm": alarm}),
            )
            .await;
        assert_eq!(r.status, 400, "{alarm}: {}", r.text());
        assert!(r.error().contains(says), "{alarm}: {}", r.text());
    }

    let r = hub
        .send_json(
            "POST",
            "/api/v1/rules",
            &json!({"name": "boiler", "sql": "SELECT temp FROM 'boiler/+'",
                    "alarm": {"name": "boiler-hot", "raise": "temp > 80", "clear": "temp < 75",
                              "severity": "critical"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let listed = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        listed["rules"][0]["actions"],
        json!(["alarm boiler-hot (critical): raise temp > 80, clear temp < 75"])
    );

    let mut watcher = hub.mqtt("alarm-watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    let mut dev = hub.mqtt("boiler-dev").await;
    for t in [79, 81, 78] {
        dev.publish(
            "boiler/1",
            QoS::AtLeastOnce,
            false,
            &format!(r#"{{"temp": {t}}}"#),
        )
        .await;
    }
    let v = active_until(&hub, "boiler/1 raised", |a| a.len() == 1).await;
    let a = &v["alarms"][0];
    assert_eq!(
        (
            &a["name"],
            &a["source"],
            &a["severity"],
            &a["status"],
            &a["value"]
        ),
        (
            &json!("boiler-hot"),
            &json!("boiler/1"),
            &json!("critical"),
            &json!("active"),
            &json!(81)
        )
    );
    assert_eq!(a["since"], a["raised_at"]);
    assert_eq!(v["active"], 1);
    assert_eq!(v["by_severity"]["critical"], 1);
    let id = a["id"].as_u64().unwrap();

    // a # subscriber sees the raise on alarms/boiler-hot
    let m = loop {
        let m = watcher.message().await;
        if m.topic.as_str().starts_with("alarms/") {
            break m;
        }
    };
    assert_eq!(m.topic.as_str(), "alarms/boiler-hot");
    let body: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(
        (body["event"].as_str(), body["id"].as_u64()),
        (Some("raised"), Some(id))
    );

    // a second source is independent; 78 kept boiler/1 active (hysteresis)
    dev.publish("boiler/2", QoS::AtLeastOnce, false, r#"{"temp": 99}"#)
        .await;
    active_until(&hub, "boiler/2 raised too", |a| a.len() == 2).await;
    dev.publish("boiler/1", QoS::AtLeastOnce, false, r#"{"temp": 74}"#)
        .await;
    let v = active_until(&hub, "boiler/1 cleared", |a| {
        a.len() == 1 && a[0]["source"] == "boiler/2"
    })
    .await;
    let other = v["alarms"][0]["id"].as_u64().unwrap();
    let metrics = hub.get("/metrics").await.text();
    assert!(
        metrics.contains("midge_alarms_active{severity=\"critical\"} 1\n"),
        "{metrics}"
    );

    let h = hub.get("/api/v1/alarms/history?limit=10").await.json();
    let first = h["alarms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .unwrap();
    assert_eq!(
        (
            &first["status"],
            &first["value"],
            &first["clear_value"],
            &first["cleared_by"]
        ),
        (&json!("cleared"), &json!(81), &json!(74), &json!("rule"))
    );
    assert!(first["cleared_at"].as_i64().unwrap() >= first["raised_at"].as_i64().unwrap());
    let h1 = hub.get("/api/v1/alarms/history?limit=1").await.json();
    assert_eq!(
        (h1["alarms"].as_array().unwrap().len(), &h1["truncated"]),
        (1, &json!(true))
    );

    // acknowledge, then clear by hand
    let r = hub
        .send_json("POST", &format!("/api/v1/alarms/{other}/ack"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["acknowledged"], true);
    let r = hub
        .send_json("DELETE", &format!("/api/v1/alarms/{other}"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["cleared_by"].as_str()),
        (Some("cleared"), Some("api"))
    );
    active_until(&hub, "none active", <[Value]>::is_empty).await;

    for (method, path, status) in [
        ("DELETE", format!("/api/v1/alarms/{other}"), 409),
        ("DELETE", "/api/v1/alarms/999".to_string(), 404),
        ("POST", "/api/v1/alarms/999/ack".to_string(), 404),
        ("POST", "/api/v1/alarms/abc/ack".to_string(), 400),
        ("GET", "/api/v1/alarms/history?limit=0".to_string(), 400),
        ("GET", "/api/v1/alarms/history?limit=x".to_string(), 400),
    ] {
        let r = hub.send_json(method, &path, &json!({})).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert!(!r.error().is_empty());
    }

    // after a restart of the hub service the history is still there
    svc.stop().await;
    let svc = service(&hub, state.path()).await;
    hub.deps.hub = Some(svc.clone());
    hub.restart_http().await;
    let h = hub.get("/api/v1/alarms/history").await.json();
    assert_eq!(h["alarms"].as_array().unwrap().len(), 2, "{h}");
    svc.stop().await;
}
