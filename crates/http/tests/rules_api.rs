//! Issue 13: rules people can edit: change in place, enable/disable, a dry run, templates
//! checked on save, per-rule counts in `/metrics`, counts kept across restarts.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use midge_client::QoS;
use serde_json::{Value, json};

async fn service(hub: &Hub, state: &std::path::Path) -> Arc<midge_hub::HubService> {
    midge_hub::HubService::start(
        midge_hub::HubConfig {
            rules: vec![midge_hub::RuleConfig {
                name: "from-file".into(),
                sql: "SELECT * FROM 'file/#'".into(),
                actions: vec![midge_hub::ActionConfig::Store {
                    table: "telemetry".into(),
                }],
            }],
            state_dir: Some(state.to_path_buf()),
            ..midge_hub::HubConfig::default()
        },
        hub.deps.connector.clone(),
        Some(hub.store.clone()),
    )
    .await
    .unwrap()
}

fn rule<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {list}"))
}

fn metric(text: &str, line_start: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn rules_are_changed_in_place_disabled_enabled_and_keep_their_counts_across_restarts() {
    let mut hub = Hub::start(|_, _| {}).await;
    let state = tempfile::tempdir().unwrap();
    let svc = service(&hub, state.path()).await;
    hub.deps.hub = Some(svc.clone());
    hub.restart_http().await;

    let r = hub
        .send_json(
            "POST",
            "/api/v1/rules",
            &json!({"name": "r1", "sql": "SELECT temp FROM 'dev/+/t' WHERE temp > 30", "store": "alerts"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    // change in place (the name may be left out of the body)
    let r = hub
        .send_json(
            "PUT",
            "/api/v1/rules/r1",
            &json!({"sql": "SELECT temp FROM 'dev/+/t' WHERE temp > 10", "store": "alerts"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        rule(&list, "r1")["sql"],
        "SELECT temp FROM 'dev/+/t' WHERE temp > 10"
    );
    assert_eq!(rule(&list, "r1")["enabled"], true);

    // what cannot be changed, and topics and templates checked on save
    for (method, path, body, status, says) in [
        (
            "PUT",
            "/api/v1/rules/r1",
            json!({"name": "r2", "sql": "SELECT * FROM 'a'", "store": true}),
            400,
            "renaming",
        ),
        (
            "PUT",
            "/api/v1/rules/from-file",
            json!({"sql": "SELECT * FROM 'a'", "store": true}),
            409,
            "configuration file",
        ),
        (
            "PUT",
            "/api/v1/rules/nope",
            json!({"sql": "SELECT * FROM 'a'", "store": true}),
            404,
            "no rule",
        ),
        (
            "PUT",
            "/api/v1/rules/r1",
            json!({"sql": "SELECT * FROM 'a'", "republish": {"topic": "a/#/b"}}),
            400,
            "wildcard",
        ),
        (
            "PUT",
            "/api/v1/rules/r1",
            json!({"sql": "SELECT temp FROM 'a'", "republish": {"topic": "out/${nosuch}/x"}}),
            400,
            "nosuch",
        ),
        (
            "POST",
            "/api/v1/rules",
            json!({"name": "r3", "sql": "SELECT temp FROM 'a'", "republish": {"topic": "out/${nosuch}"}}),
            400,
            "nosuch",
        ),
        (
            "PATCH",
            "/api/v1/rules/from-file",
            json!({"enabled": false}),
            409,
            "configuration file",
        ),
        (
            "PATCH",
            "/api/v1/rules/r1",
            json!({"enabled": "no"}),
            400,
            "boolean",
        ),
        (
            "PATCH",
            "/api/v1/rules/r1",
            json!({"enabled": false, "sql": "x"}),
            400,
            "sql",
        ),
    ] {
        let r = hub.send_json(method, path, &body).await;
        assert_eq!(r.status, status, "{method} {path} {body}: {}", r.text());
        assert!(r.text().contains(says), "{method} {path}: {}", r.text());
    }
    // the failed changes changed nothing
    let list = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        rule(&list, "r1")["sql"],
        "SELECT temp FROM 'dev/+/t' WHERE temp > 10"
    );

    let mut dev = hub.mqtt("rules-dev").await;
    let counts = |hub: &Hub| {
        let addr = hub.addr;
        async move {
            let l = request(addr, "GET", "/api/v1/rules", &[], None)
                .await
                .json();
            let r = rule(&l, "r1");
            (
                r["matched"].as_u64().unwrap(),
                r["passed"].as_u64().unwrap(),
            )
        }
    };
    eventually("the rule to count a message", || async {
        dev.client
            .publish("dev/1/t", QoS::AtLeastOnce, false, r#"{"temp": 20}"#)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        (counts(&hub).await.1 > 0).then_some(())
    })
    .await;
    // let the last publishes land
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (matched, passed) = counts(&hub).await;
    assert_eq!(matched, passed);
    let m = hub.get("/metrics").await.text();
    assert_eq!(
        metric(&m, "midge_rule_passed_total{rule=\"r1\"}"),
        Some(passed),
        "{m}"
    );
    assert_eq!(
        metric(&m, "midge_rule_matched_total{rule=\"from-file\"}"),
        Some(0),
        "{m}"
    );

    // disabled: listed with its counts, counts nothing more
    let r = hub
        .send_json("PATCH", "/api/v1/rules/r1", &json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = hub.get("/api/v1/rules").await.json();
    assert_eq!(rule(&list, "r1")["enabled"], false, "{list}");
    assert_eq!(rule(&list, "r1")["passed"], passed, "{list}");
    assert_eq!(rule(&list, "r1")["filters"], json!(["dev/+/t"]));
    dev.publish("dev/1/t", QoS::AtLeastOnce, false, r#"{"temp": 21}"#)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts(&hub).await.1, passed);
    let m = hub.get("/metrics").await.text();
    assert_eq!(
        metric(&m, "midge_rule_passed_total{rule=\"r1\"}"),
        Some(passed),
        "{m}"
    );
    // enabled again: the counts go on
    let r = hub
        .send_json("PATCH", "/api/v1/rules/r1", &json!({"enabled": true}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(counts(&hub).await.1, passed);

    // a restart of midge (the service stops and starts on the same folder)
    svc.stop().await;
    let saved = std::fs::read_to_string(state.path().join(midge_hub::COUNTS_FILE)).unwrap();
    assert!(saved.contains("\"r1\""), "{saved}");
    let svc = service(&hub, state.path()).await;
    hub.deps.hub = Some(svc.clone());
    hub.restart_http().await;
    assert_eq!(counts(&hub).await, (matched, passed));
    let list = hub.get("/api/v1/rules").await.json();
    assert_eq!(rule(&list, "r1")["enabled"], true);
    // a disabled rule stays disabled across the restart
    let r = hub
        .send_json("PATCH", "/api/v1/rules/r1", &json!({"enabled": false}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    svc.stop().await;
    let svc = service(&hub, state.path()).await;
    hub.deps.hub = Some(svc.clone());
    hub.restart_http().await;
    let list = hub.get("/api/v1/rules").await.json();
    assert_eq!(rule(&list, "r1")["enabled"], false, "{list}");
    assert_eq!(rule(&list, "r1")["passed"], passed, "{list}");
    svc.stop().await;
}

#[tokio::test]
async fn a_dry_run_gives_the_row_or_why_there_is_none() {
    let hub = Hub::start(|_, _| {}).await;
    let test = |body: Value| {
        let addr = hub.addr;
        async move {
            request(
                addr,
                "POST",
                "/api/v1/rules/test",
                &[("content-type", "application/json")],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let sql =
        "SELECT temp, topic(2) AS device FROM 'sensors/+/t' WHERE type = \"door\" OR temp > 30";
    let r = test(json!({"sql": sql, "topic": "sensors/k/t", "payload": {"temp": 31}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"matched": true, "row": {"temp": 31, "device": "k"}, "filters": ["sensors/+/t"]})
    );
    let r = test(
        json!({"sql": sql, "topic": "sensors/k/t", "payload": "{\"type\": \"door\", \"temp\": 1}"}),
    )
    .await;
    assert_eq!(r.json()["matched"], true, "{}", r.text());
    for (topic, payload, says) in [
        ("other/k/t", json!({"temp": 31}), "FROM"),
        ("sensors/k/t", json!({"type": "window", "temp": 3}), "false"),
        ("sensors/k/t", json!({"hum": 3}), "unknown"),
    ] {
        let r = test(json!({"sql": sql, "topic": topic, "payload": payload})).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(
            (v["matched"].clone(), v["row"].clone()),
            (json!(false), Value::Null)
        );
        assert!(v["reason"].as_str().unwrap().contains(says), "{v}");
    }
    let r = test(json!({"sql": "SELECT * FROM 'b'", "topic": "b", "payload_base64": "/wA="})).await;
    assert_eq!(
        r.json()["row"],
        json!({"payload": "/wA=", "payload_encoding": "base64"})
    );
    for bad in [
        json!({"sql": "SELECT * FROM", "topic": "a"}),
        json!({"sql": "SELECT * FROM 'a'", "topic": "a/#"}),
        json!({"sql": "SELECT * FROM 'a'", "topic": "a", "nope": 1}),
        json!({"sql": "SELECT * FROM 'a'", "topic": "a", "payload": "x", "payload_base64": "eA=="}),
    ] {
        let r = test(bad.clone()).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
}
