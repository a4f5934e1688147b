//! The HTTP API against a real broker, real MQTT clients over TCP and a real series store.
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
use midge_http::{HttpConfig, HttpDeps, HttpError, HttpServer, Widget, WidgetKind};
use midge_series::Row;
use serde_json::{Value, json};

fn figure(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[tokio::test]
async fn health_stats_and_metrics_follow_real_mqtt_traffic() {
    let hub = Hub::start(|_, _| {}).await;
    let r = hub.get("/api/v1/health").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));

    let before = hub.stats().await;
    let m = hub.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").starts_with("text/plain"), "{m:?}");
    let metrics_before = m.text();

    let mut sub = hub.mqtt("stats-sub").await;
    sub.subscribe("stats/#", QoS::AtLeastOnce).await;
    let mut publ = hub.mqtt("stats-pub").await;
    for i in 0..5 {
        publ.publish("stats/t", QoS::AtLeastOnce, false, &format!("{i}"))
            .await;
    }
    for _ in 0..5 {
        sub.message().await;
    }

    let after = hub.stats().await;
    let grew = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert!(grew("messages_received") >= 5, "{before} -> {after}");
    assert!(grew("messages_sent") >= 5, "{before} -> {after}");
    assert!(grew("bytes_received") > 0, "{before} -> {after}");
    assert_eq!(grew("clients_connected"), 2, "{before} -> {after}");
    assert!(after["subscriptions"].as_u64().unwrap() >= 1, "{after}");
    assert_eq!(after["store_bytes"], Value::Null, "no persistence here");

    let metrics = hub.get("/metrics").await.text();
    for (name, kind) in [
        ("midge_messages_received_total", "counter"),
        ("midge_messages_sent_total", "counter"),
        ("midge_clients_connected", "gauge"),
        ("midge_subscriptions", "gauge"),
        ("midge_http_live_streams", "gauge"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}\n{metrics}"
        );
        assert!(metrics.contains(&format!("# HELP {name} ")), "{metrics}");
    }
    assert!(
        figure(&metrics, "midge_messages_received_total")
            >= figure(&metrics_before, "midge_messages_received_total") + 5
    );
    assert_eq!(
        figure(&metrics, "midge_clients_connected"),
        figure(&metrics_before, "midge_clients_connected") + 2
    );
}

#[tokio::test]
async fn publish_endpoint_delivers_to_a_tcp_subscriber_at_every_qos() {
    // without the last values' subscriber to `#`, so that nobody listens to nobody/here
    let hub = Hub::start(|c, _| c.last_values_topics = 0).await;
    let mut sub = hub.mqtt("cmd-sub").await;
    sub.subscribe("cmd/#", QoS::ExactlyOnce).await;
    for (qos, body, want) in [
        (
            0,
            json!({"topic": "cmd/a", "payload": "zero", "qos": 0}),
            "zero",
        ),
        (
            1,
            json!({"topic": "cmd/b", "payload": "one", "qos": 1}),
            "one",
        ),
        (
            2,
            json!({"topic": "cmd/c", "json": {"on": true, "level": 3}, "qos": 2}),
            r#"{"on":true,"level":3}"#,
        ),
    ] {
        let r = hub.send_json("POST", "/api/v1/publish", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = r.json();
        assert_eq!(answer["qos"], qos);
        assert_eq!(answer["reason"], "Success", "{answer}");
        let m = sub.message().await;
        assert_eq!(m.topic.as_str(), body["topic"].as_str().unwrap());
        assert_eq!(std::str::from_utf8(&m.payload).unwrap(), want);
        assert_eq!(m.qos as u8, qos, "delivered at the publish's QoS");
        assert!(!m.retain);
    }
    // binary payloads, and retained messages reach later subscribers
    let r = hub
        .send_json(
            "POST",
            "/api/v1/publish",
            &json!({"topic": "cmd/bin", "payload_base64": "/wA=", "qos": 1, "retain": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&sub.message().await.payload[..], &[0xff, 0x00]);
    let mut late = hub.mqtt("cmd-late").await;
    late.subscribe("cmd/bin", QoS::AtLeastOnce).await;
    let m = late.message().await;
    assert!(m.retain, "retained: {m:?}");
    assert_eq!(&m.payload[..], &[0xff, 0x00]);

    // nobody listening is not an error
    let r = hub
        .send_json(
            "POST",
            "/api/v1/publish",
            &json!({"topic": "nobody/here", "payload": "x", "qos": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["reason"], "No matching subscribers");
}

#[tokio::test]
async fn bad_publishes_are_refused_with_a_message() {
    let hub = Hub::start(|_, _| {}).await;
    let post = |body: Value| {
        let hub = &hub;
        async move { hub.send_json("POST", "/api/v1/publish", &body).await }
    };
    for (body, status, words) in [
        (json!({"topic": "a/#", "payload": "x"}), 400, "wildcard"),
        (json!({"topic": "a/+/b", "payload": "x"}), 400, "a/+/b"),
        (json!({"topic": "", "payload": "x"}), 400, "topic"),
        (
            json!({"topic": "a", "payload": "x", "qos": 3}),
            400,
            "qos 3",
        ),
        (
            json!({"topic": "a", "payload": "x", "json": 1}),
            400,
            "once",
        ),
        (
            json!({"topic": "a", "payload": "x", "colour": 1}),
            400,
            "colour",
        ),
        (json!({"payload": "x"}), 400, "topic"),
        (
            json!({"topic": "a", "payload_base64": "!!"}),
            400,
            "payload_base64",
        ),
        (
            json!({"topic": "$SYS/broker/x", "payload": "x", "qos": 1}),
            403,
            "Not authorized",
        ),
        (
            json!({"topic": "$SYS/broker/x", "payload": "x"}),
            403,
            "$SYS",
        ),
    ] {
        let r = post(body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = r.error();
        assert!(e.contains(words), "{body}: {e}");
    }
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/publish",
        &[("content-type", "application/json")],
        Some(b"{\"topic\": ".to_vec()),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("bad JSON"), "{}", r.text());
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/publish",
        &[("content-type", "text/plain")],
        Some(b"{\"topic\": \"a\"}".to_vec()),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());
    assert!(r.error().contains("application/json"));
    let big = json!({"topic": "a", "payload": "x".repeat(2 * 1024 * 1024)});
    let r = post(big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("larger than"), "{}", r.text());
    // still serving afterwards
    let r = post(json!({"topic": "a", "payload": "x", "qos": 1})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors_and_the_page_is_served() {
    let hub = Hub::start(|_, _| {}).await;
    let r = hub.get("/api/v1/nope").await;
    assert_eq!(r.status, 404);
    assert!(r.error().contains("/api/v1/nope"));
    let r = request(hub.addr, "DELETE", "/api/v1/stats", &[], None).await;
    assert_eq!(r.status, 405);
    assert!(r.error().contains("DELETE"));
    let r = hub.get("/").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").starts_with("text/html"));
    assert!(
        r.header("content-security-policy")
            .contains("script-src 'self'")
    );
    assert!(r.text().contains("/assets/app.js"), "{}", r.text());
    for (path, ty) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
    ] {
        let r = hub.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").starts_with(ty), "{path}");
        assert!(r.body.len() > 1000, "{path} is the real file");
    }
    assert_eq!(hub.get("/assets/../Cargo.toml").await.status, 404);
}

#[tokio::test]
async fn live_stream_gets_what_a_tcp_client_publishes_and_ends_when_the_browser_leaves() {
    let hub = Hub::start(|_, _| {}).await;
    let mut dev = hub.mqtt("live-dev").await;
    dev.publish("sensors/kept", QoS::AtLeastOnce, true, "7")
        .await;
    let subs_before = hub.stats().await["subscriptions"].as_u64().unwrap();

    let mut sse = Sse::open(
        hub.addr,
        "/api/v1/live?filter=sensors/%23&filter=alarms/%2B",
        &[],
    )
    .await;
    assert_eq!(sse.status, 200);
    assert!(
        sse.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // the retained message first, flagged
    let kept = sse.next().await.unwrap();
    assert_eq!(kept["topic"], "sensors/kept");
    assert_eq!(kept["payload"], "7");
    assert_eq!(kept["retain"], true);
    let stats = hub.stats().await;
    assert_eq!(stats["live_streams"], 1, "{stats}");
    assert_eq!(
        stats["subscriptions"].as_u64().unwrap(),
        subs_before + 2,
        "{stats}"
    );

    dev.publish("sensors/a", QoS::AtLeastOnce, false, r#"{"temp": 31.5}"#)
        .await;
    dev.publish("elsewhere/x", QoS::AtMostOnce, false, "no")
        .await;
    dev.client
        .publish("alarms/door", QoS::AtMostOnce, false, vec![0xffu8, 0x01])
        .await
        .unwrap();
    let m = sse.next().await.unwrap();
    assert_eq!(m["topic"], "sensors/a");
    assert_eq!(m["payload"], r#"{"temp": 31.5}"#);
    // issue 13: the QoS the message was published with (was always 0)
    assert_eq!(
        (m["qos"].clone(), m["retain"].clone()),
        (json!(1), json!(false))
    );
    assert!(m["ts"].as_i64().unwrap() > 1_600_000_000_000, "{m}");
    let m = sse.next().await.unwrap();
    assert_eq!(m["topic"], "alarms/door", "elsewhere/x is not subscribed");
    assert_eq!(
        (m["payload"].clone(), m["encoding"].clone()),
        (json!("/wE="), json!("base64"))
    );

    // the browser goes away: its subscription goes too
    drop(sse);
    eventually("the live subscription to end", || async {
        let s = hub.stats().await;
        (s["live_streams"] == 0 && s["subscriptions"].as_u64() == Some(subs_before)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn live_streams_are_bounded_and_refuse_bad_filters() {
    let hub = Hub::start(|c, _| c.max_live_streams = 1).await;
    for (q, words) in [
        ("", "filter: missing"),
        ("?filter=a/%23/b", "a/#/b"),
        ("?filter=%24share/g/a", "shared"),
        ("?topic=a", "unknown parameter"),
    ] {
        let sse = Sse::open(hub.addr, &format!("/api/v1/live{q}"), &[]).await;
        assert_eq!(sse.status, 400, "{q}");
        let body = sse.rest().await;
        assert!(body.contains(words), "{q}: {body}");
    }
    let first = Sse::open(hub.addr, "/api/v1/live?filter=a", &[]).await;
    assert_eq!(first.status, 200);
    let second = Sse::open(hub.addr, "/api/v1/live?filter=b", &[]).await;
    assert_eq!(second.status, 503);
    assert!(second.rest().await.contains("too many live streams"));
    drop(first);
    eventually("a free live stream slot", || async {
        let s = Sse::open(hub.addr, "/api/v1/live?filter=b", &[]).await;
        (s.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_live_stream_that_cannot_keep_up_loses_messages_and_counts_them() {
    let hub = Hub::start(|c, _| c.live_buffer = 4).await;
    // opened and never read: the socket fills, then the stream's buffer
    let slow = Sse::open(hub.addr, "/api/v1/live?filter=flood/%23", &[]).await;
    assert_eq!(slow.status, 200);
    let mut dev = hub.mqtt("flooder").await;
    let payload = "x".repeat(64 * 1024);
    for _ in 0..400 {
        dev.client
            .publish("flood/a", QoS::AtMostOnce, false, payload.clone())
            .await
            .unwrap();
    }
    dev.publish("flood/a", QoS::AtLeastOnce, false, "last")
        .await;
    let dropped = eventually("dropped live messages counted", || async {
        let m = hub.get("/metrics").await.text();
        let d = figure(&m, "midge_http_live_dropped_total");
        (d > 0).then_some(d)
    })
    .await;
    assert!(dropped < 401, "{dropped}");
    // the broker and the API are unaffected
    let mut fast = Sse::open(hub.addr, "/api/v1/live?filter=flood/b", &[]).await;
    dev.publish("flood/b", QoS::AtLeastOnce, false, "fine")
        .await;
    let m = fast.next().await.unwrap();
    assert_eq!(m["payload"], "fine");
    drop(slow);
}

fn rows() -> Vec<Row> {
    vec![
        Row::new(1_000, "sensors/a/temp", "dev-a", obj(json!({"temp": 20.0}))),
        Row::new(2_000, "sensors/a/temp", "dev-a", obj(json!({"temp": 22.0}))),
        Row::new(
            61_000,
            "sensors/b/temp",
            "dev-b",
            obj(json!({"temp": 30.0, "hum": 40})),
        ),
        Row::new(
            62_000,
            "sensors/a/temp",
            "dev-a",
            obj(json!({"temp": "24"})),
        ),
        Row::new(125_000, "other/x", "dev-c", obj(json!({"state": "on"}))),
    ]
}

#[tokio::test]
async fn rows_and_series_return_exactly_what_was_inserted() {
    let hub = Hub::start(|_, _| {}).await;
    hub.store.insert("telemetry", &rows()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    hub.store
        .insert(
            "recent",
            &[
                Row::new(now - 600_000, "r/a", "d", obj(json!({"v": 1}))),
                Row::new(now - 60_000, "r/a", "d", obj(json!({"v": 2}))),
            ],
        )
        .unwrap();

    let t = hub.get("/api/v1/tables").await.json();
    let tables: Vec<_> = t["tables"].as_array().unwrap().iter().collect();
    assert_eq!(tables.len(), 2, "{t}");
    assert_eq!(tables[1]["name"], "telemetry");
    assert_eq!(tables[1]["rows"], 5);
    assert_eq!(
        (tables[1]["first_ts"].clone(), tables[1]["last_ts"].clone()),
        (json!(1000), json!(125_000))
    );

    let t = hub.get("/api/v1/tables/telemetry/topics").await.json();
    assert_eq!(
        t["topics"],
        json!([
            {"topic": "other/x", "rows": 1, "last_ts": 125_000},
            {"topic": "sensors/a/temp", "rows": 3, "last_ts": 62_000},
            {"topic": "sensors/b/temp", "rows": 1, "last_ts": 61_000},
        ])
    );

    // every row, newest first, exactly as stored
    let all = hub.get("/api/v1/tables/telemetry/rows").await.json();
    let got: Vec<(i64, String, String, Value)> = all["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["ts"].as_i64().unwrap(),
                r["topic"].as_str().unwrap().to_owned(),
                r["client_id"].as_str().unwrap().to_owned(),
                r["data"].clone(),
            )
        })
        .collect();
    let mut want: Vec<_> = rows()
        .into_iter()
        .map(|r| (r.ts, r.topic, r.client_id, Value::Object(r.data)))
        .collect();
    want.reverse();
    assert_eq!(got, want);

    let ts = |path: &str| {
        let path = path.to_owned();
        let hub = &hub;
        async move {
            let r = hub.get(&path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            r.json()["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["ts"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ts("/api/v1/tables/telemetry/rows?topic=sensors/%2B/temp&order=oldest").await,
        [1_000, 2_000, 61_000, 62_000]
    );
    assert_eq!(
        ts("/api/v1/tables/telemetry/rows?since=2000&until=62000").await,
        [61_000, 2_000]
    );
    assert_eq!(
        ts("/api/v1/tables/telemetry/rows?client_id=dev-a&limit=2").await,
        [62_000, 2_000]
    );
    assert_eq!(
        ts("/api/v1/tables/telemetry/rows?since=1970-01-01T00:01:00Z&order=asc&limit=1").await,
        [61_000]
    );
    let recent = ts("/api/v1/tables/recent/rows?since=-15m").await;
    assert_eq!(recent, [now - 60_000, now - 600_000]);
    assert_eq!(
        ts("/api/v1/tables/recent/rows?since=-5m").await,
        [now - 60_000]
    );
    assert_eq!(
        ts("/api/v1/tables/recent/rows?until=-1h").await,
        Vec::<i64>::new()
    );

    // buckets of a minute: the string "24" counts as a number
    let s = hub
        .get("/api/v1/tables/telemetry/series?field=temp&topic=sensors/%23&bucket=1m&agg=avg")
        .await;
    assert_eq!(s.status, 200, "{}", s.text());
    assert_eq!(
        s.json()["points"],
        json!([
            {"ts": 0, "value": 21.0, "count": 2, "min": 20.0, "max": 22.0},
            {"ts": 60_000, "value": 27.0, "count": 2, "min": 24.0, "max": 30.0},
        ])
    );
    let s = hub
        .get("/api/v1/tables/telemetry/series?field=temp&bucket=60000&agg=max&since=0&until=120000")
        .await
        .json();
    assert_eq!(s["bucket_ms"], 60_000);
    assert_eq!(
        s["points"],
        json!([
            {"ts": 0, "value": 22.0, "count": 2, "min": 20.0, "max": 22.0},
            {"ts": 60_000, "value": 30.0, "count": 2, "min": 24.0, "max": 30.0},
        ])
    );
    // raw points (no bucket) of one topic
    let s = hub
        .get("/api/v1/tables/telemetry/series?field=temp&topic=sensors/a/temp")
        .await
        .json();
    let points: Vec<(i64, f64)> = s["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["ts"].as_i64().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(points, [(1_000, 20.0), (2_000, 22.0), (62_000, 24.0)]);
}

#[tokio::test]
async fn bad_data_queries_get_4xx_with_a_message() {
    let hub = Hub::start(|_, _| {}).await;
    hub.store.insert("telemetry", &rows()).unwrap();
    for (path, status, words) in [
        ("/api/v1/tables/nosuch/rows", 404, "nosuch"),
        ("/api/v1/tables/nosuch/topics", 404, "nosuch"),
        ("/api/v1/tables/nosuch/series?field=temp", 404, "nosuch"),
        ("/api/v1/tables/bad-name/rows", 400, "invalid table name"),
        (
            "/api/v1/tables/telemetry/rows?since=yesterday",
            400,
            "since",
        ),
        (
            "/api/v1/tables/telemetry/rows?until=-5parsecs",
            400,
            "until",
        ),
        ("/api/v1/tables/telemetry/rows?limit=many", 400, "limit"),
        ("/api/v1/tables/telemetry/rows?order=sideways", 400, "order"),
        ("/api/v1/tables/telemetry/rows?topic=a/%23/b", 400, "a/#/b"),
        (
            "/api/v1/tables/telemetry/rows?sinse=0",
            400,
            "unknown parameter \"sinse\"",
        ),
        (
            "/api/v1/tables/telemetry/rows?since=0&since=1",
            400,
            "more than once",
        ),
        ("/api/v1/tables/telemetry/series", 400, "field: missing"),
        ("/api/v1/tables/telemetry/series?field=a..b", 400, "field"),
        (
            "/api/v1/tables/telemetry/series?field=temp&bucket=soon",
            400,
            "bucket",
        ),
        (
            "/api/v1/tables/telemetry/series?field=temp&agg=median",
            400,
            "median",
        ),
    ] {
        let r = hub.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let e = r.error();
        assert!(e.contains(words), "{path}: {e}");
    }
    // an existing table with nothing in range is not a 404
    let r = hub
        .get("/api/v1/tables/telemetry/rows?since=999999999")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rows"], json!([]));

    let without = Hub::start_with(|_, _| {}, |d| d.series = None).await;
    let r = without.get("/api/v1/tables").await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("no series store"));
}

fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    write_password(dir, "s3cret")
}

fn write_password(dir: &std::path::Path, password: &str) -> std::path::PathBuf {
    let hash = midge_auth::PasswordHash::create(
        password.as_bytes(),
        midge_auth::HashAlgorithm::Sha512Pbkdf2,
        // a real $7$ PBKDF2 hash, with fewer rounds than the default to keep the test quick
        1_000,
    )
    .unwrap();
    let path = dir.join("passwd");
    std::fs::write(&path, format!("alice:{}\n", hash.encode())).unwrap();
    path
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_refuses_wrong_credentials_and_accepts_right_ones() {
    let hub = Hub::start(|c, dir| {
        c.allow_anonymous = false;
        c.password_file = Some(password_file(dir));
    })
    .await;
    let good = basic("alice", "s3cret");
    let get = |path: &'static str, auth: Option<String>| {
        let addr = hub.addr;
        async move {
            let headers: Vec<(&str, &str)> = match &auth {
                Some(a) => vec![("authorization", a.as_str())],
                None => vec![],
            };
            request(addr, "GET", path, &headers, None).await
        }
    };
    for path in [
        "/api/v1/stats",
        "/metrics",
        "/",
        "/api/v1/dashboard",
        "/assets/app.js",
    ] {
        let r = get(path, None).await;
        assert_eq!(r.status, 401, "{path}");
        assert!(
            r.header("www-authenticate").starts_with("Basic realm="),
            "{r:?}"
        );
        assert_eq!(r.error(), "credentials required");
    }
    for bad in [
        basic("alice", "wrong"),
        basic("mallory", "s3cret"),
        "Basic !!!".to_owned(),
        "Bearer x".to_owned(),
    ] {
        let r = get("/api/v1/stats", Some(bad.clone())).await;
        assert_eq!(r.status, 401, "{bad}");
    }
    let r = get("/api/v1/health", None).await;
    assert_eq!(r.status, 200, "the health check needs no password");
    for _ in 0..2 {
        let r = get("/api/v1/stats", Some(good.clone())).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = get("/", Some(good.clone())).await;
    assert_eq!(r.status, 200);
    let sse = Sse::open(
        hub.addr,
        "/api/v1/live?filter=a",
        &[("authorization", good.as_str())],
    )
    .await;
    assert_eq!(sse.status, 200);
    let m = get("/metrics", Some(good.clone())).await.text();
    assert_eq!(figure(&m, "midge_http_auth_failures_total"), 9);

    // a changed password file takes effect on reload; a broken one keeps the last good one
    write_password(hub.dir.path(), "n3w");
    let http = hub.http.as_ref().unwrap();
    assert_eq!(http.reload().await, Vec::<String>::new());
    assert_eq!(get("/api/v1/stats", Some(good.clone())).await.status, 401);
    let new = basic("alice", "n3w");
    assert_eq!(get("/api/v1/stats", Some(new.clone())).await.status, 200);
    std::fs::write(hub.dir.path().join("passwd"), "alice:not-a-hash\n").unwrap();
    let problems = http.reload().await;
    assert!(
        problems.len() == 1 && problems[0].contains("line 1"),
        "{problems:?}"
    );
    assert_eq!(get("/api/v1/stats", Some(new.clone())).await.status, 200);

    // anonymous on, password file given: no credentials is fine, wrong ones are not
    let open = Hub::start(|c, dir| c.password_file = Some(password_file(dir))).await;
    let r = open.get("/api/v1/stats").await;
    assert_eq!(r.status, 200);
    let bad = basic("alice", "nope");
    let r = request(
        open.addr,
        "GET",
        "/api/v1/stats",
        &[("authorization", bad.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_server_nobody_could_log_in_to_is_refused_at_start() {
    let broker = midge_server::Server::start(midge_server::ServerConfig {
        listeners: vec![],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.allow_anonymous = false;
    let e = HttpServer::start(config.clone(), HttpDeps::new(&broker))
        .await
        .unwrap_err();
    assert!(matches!(e, HttpError::NoPasswordFile), "{e}");
    config.password_file = Some("/nonexistent/passwd".into());
    let e = HttpServer::start(config, HttpDeps::new(&broker))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/passwd"), "{e}");
    let mut config = HttpConfig::new("127.0.0.1:0".parse().unwrap());
    config.widgets = vec![Widget::new(WidgetKind::Switch, "lamp")];
    let e = HttpServer::start(config, HttpDeps::new(&broker))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("command_topic: missing"), "{e}");
}

#[tokio::test]
async fn dashboard_put_then_get_round_trips_and_survives_a_restart() {
    let mut configured = Widget::new(WidgetKind::Gauge, "sensors/boiler");
    configured.title = "Boiler".into();
    configured.field = "temp".into();
    let mut hub = Hub::start(move |c, dir| {
        c.widgets = vec![configured];
        c.dashboard_file = Some(dir.join("ui").join("dashboard.json"));
    })
    .await;
    let d = hub.get("/api/v1/dashboard").await.json();
    assert_eq!(d["source"], "config");
    assert_eq!(d["persistent"], true);
    assert_eq!(d["widgets"][0]["title"], "Boiler");
    assert_eq!(d["widgets"][0]["id"], "w1");
    assert_eq!(d["widgets"][0]["field"], "temp");

    let new = json!({"widgets": [
        {"kind": "chart", "title": "Temp history", "topic": "sensors/+/temp", "field": "temp", "window": "6h"},
        {"kind": "switch", "title": "Lamp", "topic": "home/lamp", "command_topic": "home/lamp/set", "on": "1", "off": "0", "qos": 1},
        {"id": "map", "kind": "map", "topic": "trucks/+/pos", "width": 2},
    ]});
    let r = hub.send_json("PUT", "/api/v1/dashboard", &new).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let saved = r.json();
    assert_eq!(saved["source"], "file");
    let ids: Vec<_> = saved["widgets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["w1", "w2", "map"]);
    assert_eq!(hub.get("/api/v1/dashboard").await.json(), saved);
    let file = hub.dir.path().join("ui").join("dashboard.json");
    let on_disk: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // the file holds every dashboard; this one is the first
    assert_eq!(on_disk["dashboards"][0]["widgets"], saved["widgets"]);

    // a bad dashboard is refused whole, every problem named; the saved one stays
    let bad = json!({"widgets": [
        {"kind": "gauge", "topic": "a/#/b"},
        {"kind": "switch", "title": "Fan", "topic": "fan"},
        {"kind": "dial", "topic": "x"},
    ]});
    let r = hub.send_json("PUT", "/api/v1/dashboard", &bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.error().contains("dial"), "{}", r.error());
    let bad = json!({"widgets": [
        {"kind": "gauge", "topic": "a/#/b"},
        {"kind": "switch", "title": "Fan", "topic": "fan"},
    ]});
    let r = hub.send_json("PUT", "/api/v1/dashboard", &bad).await;
    assert_eq!(r.status, 400);
    let e = r.error();
    assert!(e.contains("widget 1 (Gauge): topic \"a/#/b\""), "{e}");
    assert!(
        e.contains("widget 2 (\"Fan\"): command_topic: missing"),
        "{e}"
    );
    assert_eq!(hub.get("/api/v1/dashboard").await.json(), saved);

    hub.restart_http().await;
    assert_eq!(hub.get("/api/v1/dashboard").await.json(), saved);

    // a damaged file stops the next start with the file named
    std::fs::write(&file, "{not json").unwrap();
    let e = HttpServer::start(hub.config.clone(), hub.deps.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("dashboard.json"), "{e}");
}

#[tokio::test]
async fn rules_are_listed_added_run_and_removed_through_the_api() {
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

    let r = hub.get("/api/v1/rules").await.json();
    assert_eq!(
        r,
        json!({"rules": [{
            "name": "hot",
            "sql": "SELECT * FROM 'sensors/#' WHERE temp > 30",
            "filters": ["sensors/#"],
            "actions": ["store telemetry"],
            "matched": 0, "passed": 0, "failed": 0,
            "last_error": null,
            "source": "config",
            "enabled": true,
            "spec": null,
        }]})
    );

    let rule = json!({
        "name": "too-hot",
        "sql": "SELECT temp, topic(2) AS device FROM 'dev/+/t' WHERE temp > 35",
        "store": "alerts"
    });
    let r = hub.send_json("POST", "/api/v1/rules", &rule).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = hub.send_json("POST", "/api/v1/rules", &rule).await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.error().contains("exists"), "{}", r.error());
    let r = hub
        .send_json(
            "POST",
            "/api/v1/rules",
            &json!({"name": "bad", "sql": "SELECT * FROM", "webhook": {"url": "ftp://x/"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["problems"].as_array().unwrap().len(),
        2,
        "{}",
        r.text()
    );
    let r = hub
        .send_json("POST", "/api/v1/rules", &json!({"name": "x", "sqll": "y"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = request(
        hub.addr,
        "POST",
        "/api/v1/rules",
        &[],
        Some(rule.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 415, "{}", r.text());

    // the new rule runs at once: a device's reading lands in its table
    let mut dev = hub.mqtt("dev-9").await;
    let deadline = std::time::Instant::now() + T;
    loop {
        dev.publish(
            "dev/boiler/t",
            QoS::AtLeastOnce,
            false,
            r#"{"temp": 40, "x": 1}"#,
        )
        .await;
        let r = hub.get("/api/v1/tables/alerts/rows").await;
        if r.status == 200 && !r.json()["rows"].as_array().unwrap().is_empty() {
            let row = &r.json()["rows"][0];
            assert_eq!(row["topic"], "dev/boiler/t");
            assert_eq!(row["client_id"], "dev-9");
            assert_eq!(row["data"], json!({"temp": 40, "device": "boiler"}));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = hub.get("/api/v1/rules").await.json();
    let added = &r["rules"][1];
    assert_eq!(added["source"], "api");
    assert_eq!(added["spec"], rule);
    assert!(added["passed"].as_u64().unwrap() >= 1, "{r}");

    let r = request(hub.addr, "DELETE", "/api/v1/rules/hot", &[], None).await;
    assert_eq!(r.status, 409, "{}", r.text());
    let r = request(hub.addr, "DELETE", "/api/v1/rules/too-hot", &[], None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = request(hub.addr, "DELETE", "/api/v1/rules/too-hot", &[], None).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = hub.get("/api/v1/rules").await.json();
    assert_eq!(r["rules"].as_array().unwrap().len(), 1);
    service.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_live_streams_and_stops_listening() {
    let hub = Hub::start(|_, _| {}).await;
    let mut hub = hub;
    let mut sse = Sse::open(hub.addr, "/api/v1/live?filter=%23", &[]).await;
    assert_eq!(sse.status, 200);
    let addr = hub.addr;
    let http = hub.http.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), http.shutdown())
        .await
        .expect("shutdown with a live stream open");
    assert_eq!(sse.next().await, None, "the stream ended");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// One HTTP/1.1 request written by hand on a fresh connection (`Connection: close`), read to
/// the end: the status code (0 when the server closed without answering) and the text.
async fn raw_request(addr: std::net::SocketAddr, head: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // a reset after (or instead of) an answer ends the reading too
    let _ = tokio::time::timeout(T, s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|t| t.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get_with_host(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// How long until the server closes `s` (it may answer something first, e.g. a 408).
async fn closed_after(s: &mut tokio::net::TcpStream, bound: Duration) -> (Duration, String) {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(bound, s.read(&mut buf)).await {
            Err(_) => panic!(
                "connection still open after {bound:?} (read so far: {:?})",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (start.elapsed(), String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_read_timeout_but_live_streams_last() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TIMEOUT: Duration = Duration::from_millis(300);
    let hub = Hub::start(|c, _| c.header_read_timeout = TIMEOUT).await;

    // slowloris: the request line and one header, never the blank line
    let mut slow = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    slow.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    let (took, said) = closed_after(&mut slow, Duration::from_secs(5)).await;
    assert!(
        took >= TIMEOUT - Duration::from_millis(50) && took < Duration::from_secs(3),
        "closed after {took:?}, the timeout is {TIMEOUT:?}"
    );
    assert!(!said.contains("200 OK"), "{said}");

    // a connection that sends nothing at all
    let mut silent = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let (took, _) = closed_after(&mut silent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // a whole head in time is answered; the idle keep-alive connection then closes too
    let mut quick = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    quick
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, quick.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (took, _) = closed_after(&mut quick, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // a live stream is an answer in progress: it outlives the timeout many times over
    let mut sse = Sse::open(hub.addr, "/api/v1/live?filter=slow/%23", &[]).await;
    assert_eq!(sse.status, 200);
    tokio::time::sleep(TIMEOUT * 5).await;
    let mut dev = hub.mqtt("slow-dev").await;
    dev.publish("slow/t", QoS::AtLeastOnce, false, "still here")
        .await;
    let e = sse.next().await.expect("the stream is still open");
    assert_eq!(
        (e["topic"].clone(), e["payload"].clone()),
        (json!("slow/t"), json!("still here"))
    );
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_served_again_when_one_ends() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = Hub::start(|c, _| c.max_connections = 2).await;
    let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    // two keep-alive connections, each answered once (so both are held by the server)
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(ask("/api/v1/health").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(T, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // a third: closed at once, a 503 at most
    let start = std::time::Instant::now();
    let (status, text) = raw_request(hub.addr, &get_with_host("/api/v1/health", "127.0.0.1")).await;
    assert!(status == 0 || status == 503, "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    if status == 503 {
        assert!(text.contains("too many HTTP connections"), "{text}");
    }
    // the figures, asked on a held connection
    held[0].write_all(ask("/metrics").as_bytes()).await.unwrap();
    let mut metrics = String::new();
    let mut buf = vec![0u8; 16384];
    while !metrics.contains("midge_http_host_refused_total ") {
        let n = tokio::time::timeout(T, held[0].read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{metrics}");
        metrics.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let body = metrics.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(figure(body, "midge_http_connections"), 2, "{body}");
    assert_eq!(
        figure(body, "midge_http_connections_refused_total"),
        1,
        "{body}"
    );

    // one closes: a new connection is served again
    held.pop();
    eventually("a connection served again", || async {
        let (status, _) =
            raw_request(hub.addr, &get_with_host("/api/v1/health", "127.0.0.1")).await;
        (status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_anonymous_listener_refuses_a_host_that_is_not_an_ip_localhost_or_allowed() {
    let hub = Hub::start(|c, _| c.allowed_hosts = vec!["midge.lan".into()]).await;
    let port = hub.addr.port();
    // what a page on a domain rebound to 127.0.0.1 sends
    for path in ["/", "/api/v1/health", "/api/v1/stats", "/assets/app.js"] {
        let (status, text) = raw_request(
            hub.addr,
            &get_with_host(path, &format!("evil.example:{port}")),
        )
        .await;
        assert_eq!(status, 421, "{path}: {text}");
        assert!(
            text.contains(r#"Host \"evil.example:"#) && text.contains("allowed_hosts"),
            "{text}"
        );
    }
    let rule = json!({"name": "x", "sql": "SELECT * FROM '#'", "store": "telemetry"}).to_string();
    let post = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: attacker.example\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{rule}",
        rule.len()
    );
    assert_eq!(raw_request(hub.addr, &post).await.0, 421);
    // an absolute request target naming another host
    let absolute = format!(
        "GET http://evil.example/api/v1/stats HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_request(hub.addr, &absolute).await.0, 421);
    for host in [
        "".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        let (status, text) = raw_request(hub.addr, &get_with_host("/api/v1/stats", &host)).await;
        assert!(status == 421 || status == 400, "{host:?}: {text}");
    }

    // IP addresses, localhost and the allowed name are served
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        format!("midge.lan:{port}"),
        "MIDGE.LAN".to_owned(),
    ] {
        let (status, text) = raw_request(hub.addr, &get_with_host("/api/v1/stats", &host)).await;
        assert_eq!(status, 200, "{host}: {text}");
    }
    // so is a request without Host (HTTP/1.0 tools; browsers always send one)
    let (status, text) = raw_request(hub.addr, "GET /api/v1/health HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    // and the ordinary client (Host 127.0.0.1:port)
    let m = hub.get("/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(
        figure(&m.text(), "midge_http_host_refused_total"),
        9,
        "{}",
        m.text()
    );

    // a listener that needs credentials does not look at Host (a rebound page has none)
    let locked = Hub::start(|c, dir| {
        c.allow_anonymous = false;
        c.password_file = Some(password_file(dir));
    })
    .await;
    let head = format!(
        "GET /api/v1/stats HTTP/1.1\r\nHost: dashboard.example.com\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        basic("alice", "s3cret")
    );
    let (status, text) = raw_request(locked.addr, &head).await;
    assert_eq!(status, 200, "{text}");
    let (status, _) =
        raw_request(locked.addr, &get_with_host("/api/v1/stats", "evil.example")).await;
    assert_eq!(status, 401, "credentials are what it checks");
}
