//! Issue 13: the last message of every topic (`GET /api/v1/last`), and live streams that
//! report the real QoS, number their events and resume with `Last-Event-ID`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::Duration;

use common::*;
use midge_client::QoS;
use serde_json::{Value, json};

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
    let hub = Hub::start(|c, _| c.last_values_topics = 10_000).await;
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
    let hub = Hub::start(|c, _| c.last_values_topics = 3).await;
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

    let off = Hub::start(|c, _| c.last_values_topics = 0).await;
    let r = off.get("/api/v1/last").await;
    assert_eq!(r.status, 503, "{}", r.text());
}

#[tokio::test]
async fn live_events_carry_the_real_qos_an_id_and_resume_from_the_last_event_id() {
    let hub = Hub::start(|c, _| c.last_values_topics = 10_000).await;
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
