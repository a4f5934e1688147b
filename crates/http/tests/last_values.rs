//! Issue 13: the last message of every topic, kept by the broker (`GET /api/v1/last`,
//! `GET /api/v1/topics`), and live streams that report the real QoS, number their events and
//! resume with `Last-Event-ID`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use midge_client::QoS;
use midge_http::{HttpConfig, HttpDeps, HttpServer};
use midge_series::{SeriesOptions, SeriesStore};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::{Value, json};

/// A broker with `broker` applied to its limits, not yet with its HTTP server.
async fn broker_only(broker: impl FnOnce(&mut midge_core::Config)) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..ServerConfig::default()
    };
    broker(&mut config.broker);
    let server = Server::start(config).await.unwrap();
    let mqtt_port = server.local_addrs()[0].port();
    let store = Arc::new(
        SeriesStore::open(&dir.path().join("series.db"), SeriesOptions::default()).unwrap(),
    );
    let mut deps = HttpDeps::new(&server);
    deps.series = Some(store.clone());
    Hub {
        broker: server,
        mqtt_port,
        store,
        http: None,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        config: HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
        deps,
        dir,
    }
}

/// Start the HTTP server of a [`broker_only`] hub (with the defaults).
async fn start_http(hub: &mut Hub) {
    let http = HttpServer::start(hub.config.clone(), hub.deps.clone())
        .await
        .unwrap();
    hub.addr = http.local_addr();
    hub.http = Some(http);
}

/// The `/api/v1/last` entries for `filter` once `ready` holds for them.
async fn last_when(hub: &Hub, filter: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    eventually("the last values", || async {
        let r = hub.get(&format!("/api/v1/last?topic={filter}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let list = r.json()["topics"].as_array().unwrap().clone();
        ready(&list).then_some(list)
    })
    .await
}

#[tokio::test]
async fn the_last_message_of_each_topic_is_there_at_once_and_sys_is_not() {
    // the defaults: on
    let hub = Hub::start(|_, _| {}).await;
    let mut dev = hub.mqtt("last-dev").await;
    dev.publish("sensors/kept", QoS::AtLeastOnce, true, "7")
        .await;
    dev.publish("sensors/a", QoS::AtLeastOnce, false, r#"{"temp": 1}"#)
        .await;
    dev.publish("sensors/a", QoS::AtLeastOnce, false, r#"{"temp": 2}"#)
        .await;
    dev.client
        .publish("sensors/bin", QoS::AtMostOnce, false, vec![0xffu8, 0x01])
        .await
        .unwrap();
    dev.publish("other/x", QoS::AtMostOnce, false, "no").await;
    let list = last_when(&hub, "sensors/%23", |l| {
        l.len() == 3 && l.iter().any(|e| e["payload"] == r#"{"temp": 2}"#)
    })
    .await;
    let topics: Vec<&str> = list.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["sensors/a", "sensors/bin", "sensors/kept"]);
    assert_eq!(list[0]["qos"], 1, "{list:?}");
    assert_eq!(list[0]["count"], 2, "{list:?}");
    assert!(list[0]["ts"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(
        (list[1]["payload"].clone(), list[1]["encoding"].clone()),
        (json!("/wE="), json!("base64"))
    );
    assert_eq!(list[2]["payload"], "7");

    // `#` leaves out $SYS and midge's own $midge/ topics
    let all = hub.get("/api/v1/last").await.json();
    let all: Vec<&str> = all["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["topic"].as_str().unwrap())
        .collect();
    assert!(all.contains(&"other/x"), "{all:?}");
    assert!(all.iter().all(|t| !t.starts_with('$')), "{all:?}");

    let r = hub.get("/api/v1/last?topic=a/%23/b").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = hub.get("/api/v1/last?nope=1").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let m = hub.get("/metrics").await.text();
    assert!(m.contains("midge_http_last_values_topics "), "{m}");
}

#[tokio::test]
async fn last_values_are_bounded_by_topics_and_can_be_off() {
    let mut hub = broker_only(|b| b.last_values_topics = 3).await;
    start_http(&mut hub).await;
    let mut dev = hub.mqtt("many").await;
    for i in 0..5 {
        dev.publish(&format!("t/{i}"), QoS::AtLeastOnce, false, "x")
            .await;
    }
    let list = last_when(&hub, "t/%23", |l| l.iter().any(|e| e["topic"] == "t/4")).await;
    let topics: Vec<&str> = list.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(
        topics,
        ["t/2", "t/3", "t/4"],
        "the least recently updated go"
    );

    let m = hub.get("/metrics").await.text();
    assert!(m.contains("midge_http_last_values_evicted_total 2"), "{m}");

    let mut off = broker_only(|b| b.last_values_topics = 0).await;
    start_http(&mut off).await;
    for path in ["/api/v1/last", "/api/v1/topics"] {
        let r = off.get(path).await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.text().contains("last_values_topics"), "{}", r.text());
    }
    // the old [http] key set to 0 turns the API's side off too
    let off = Hub::start(|c, _| c.last_values_topics = 0).await;
    let r = off.get("/api/v1/last").await;
    assert_eq!(r.status, 503, "{}", r.text());
}

#[tokio::test]
async fn a_value_published_before_the_page_loads_is_served_at_once() {
    let mut hub = broker_only(|_| {}).await;
    // a device reports once, long before anyone opens the page (or starts the HTTP server)
    let mut dev = hub.mqtt("early-dev").await;
    dev.publish("home/door", QoS::AtLeastOnce, false, r#"{"open": true}"#)
        .await;
    start_http(&mut hub).await;
    let r = hub.get("/api/v1/last?topic=home/%23").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["topics"][0]["topic"], "home/door", "{v}");
    assert_eq!(v["topics"][0]["payload"], r#"{"open": true}"#, "{v}");
    assert_eq!(v["truncated"], false, "{v}");
}

#[tokio::test]
async fn topics_lists_counts_and_last_payloads_bounded_and_without_sys() {
    let hub = Hub::start(|_, _| {}).await;
    let mut dev = hub.mqtt("topics-dev").await;
    for i in 0..3 {
        dev.publish("plant/a", QoS::AtLeastOnce, false, &i.to_string())
            .await;
    }
    dev.publish("plant/b", QoS::AtLeastOnce, true, "b").await;
    dev.publish("plant/c", QoS::AtLeastOnce, false, "c").await;
    let r = hub.get("/api/v1/topics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let list = v["topics"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|e| e["topic"].as_str().unwrap()).collect();
    assert_eq!(names, ["plant/a", "plant/b", "plant/c"], "{v}");
    let a = &list[0];
    assert_eq!(
        (a["count"].clone(), a["payload"].clone()),
        (json!(3), json!("2"))
    );
    assert_eq!(
        (a["qos"].clone(), a["retain"].clone()),
        (json!(1), json!(false))
    );
    assert!(a["ts"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(a["size"], 1);
    assert_eq!(list[1]["retain"], true);
    assert_eq!(
        (v["total"].clone(), v["truncated"].clone()),
        (json!(3), json!(false))
    );

    // a cut answer says so
    let v = hub
        .get("/api/v1/topics?filter=plant/%2B&limit=2")
        .await
        .json();
    assert_eq!(v["topics"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        (v["total"].clone(), v["truncated"].clone()),
        (json!(3), json!(true))
    );
    // counts move with the traffic (the page's rates)
    dev.publish("plant/a", QoS::AtLeastOnce, false, "3").await;
    let v = hub.get("/api/v1/topics?filter=plant/a").await.json();
    assert_eq!(v["topics"][0]["count"], 4, "{v}");

    for bad in [
        "/api/v1/topics?filter=a/%23/b",
        "/api/v1/topics?limit=0",
        "/api/v1/topics?limit=x",
        "/api/v1/topics?nope=1",
    ] {
        let r = hub.get(bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{bad}");
    }
}

#[tokio::test]
async fn live_events_carry_the_real_qos_an_id_and_resume_from_the_last_event_id() {
    let hub = Hub::start(|_, _| {}).await;
    let mut dev = hub.mqtt("resume-dev").await;
    dev.publish("s/old", QoS::AtLeastOnce, true, "retained before")
        .await;
    let mut sse = Sse::open(hub.addr, "/api/v1/live?filter=s/%23", &[]).await;
    assert_eq!(sse.status, 200);
    let kept = sse.next().await.unwrap();
    assert_eq!(kept["topic"], "s/old");
    dev.publish("s/a", QoS::AtLeastOnce, false, "1").await;
    let m = sse.next().await.unwrap();
    assert_eq!(
        (m["topic"].clone(), m["qos"].clone()),
        (json!("s/a"), json!(1))
    );
    let id = sse.last_id.clone().expect("an event id");
    let (ts, n) = id.split_once('-').unwrap();
    assert_eq!(
        ts.parse::<i64>().unwrap(),
        m["ts"].as_i64().unwrap(),
        "{id}"
    );
    assert!(n.parse::<u64>().is_ok(), "{id}");
    dev.client
        .publish("s/q2", QoS::ExactlyOnce, false, "2")
        .await
        .unwrap();
    let m = sse.next().await.unwrap();
    assert_eq!(
        (m["topic"].clone(), m["qos"].clone()),
        (json!("s/q2"), json!(2))
    );
    let id = sse.last_id.clone().unwrap();
    drop(sse);

    // while the browser is away
    tokio::time::sleep(Duration::from_millis(5)).await;
    dev.publish("s/a", QoS::AtLeastOnce, false, "3").await;
    dev.publish("s/b", QoS::AtMostOnce, false, "4").await;
    dev.publish("elsewhere", QoS::AtMostOnce, false, "5").await;
    last_when(&hub, "s/%23", |l| {
        l.iter().any(|e| e["topic"] == "s/b") && l.iter().any(|e| e["payload"] == "3")
    })
    .await;
    let mut sse = Sse::open(
        hub.addr,
        "/api/v1/live?filter=s/%23",
        &[("last-event-id", id.as_str())],
    )
    .await;
    assert_eq!(sse.status, 200);
    let mut replayed = Vec::new();
    loop {
        let m = sse.next().await.unwrap();
        assert_eq!(m["replayed"], true, "{m}");
        assert_ne!(m["topic"], "s/old", "retained messages are not sent again");
        replayed.push((
            m["topic"].as_str().unwrap().to_owned(),
            m["payload"].clone(),
        ));
        if m["topic"] == "s/b" {
            break;
        }
    }
    // the topic of the last event itself may come again (same ms); s/a comes with its news
    assert!(
        replayed.contains(&("s/a".to_owned(), json!("3"))),
        "{replayed:?}"
    );
    // then live again
    dev.publish("s/c", QoS::AtLeastOnce, false, "6").await;
    let m = sse.next().await.unwrap();
    assert_eq!(m["topic"], "s/c");
    assert!(m.get("replayed").is_none());
}
