//! The hub against a real broker (midge-server on 127.0.0.1:0) and a real SQLite store:
//! devices publish over TCP, rules store, republish and post webhooks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use midge_client::{Client, ClientError, ClientOptions, Connector, Event, QoS};
use midge_hub::{ActionConfig, Hub, HubConfig, RuleConfig};
use midge_series::{RowsQuery, SeriesOptions, SeriesStore, StoredRow};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn broker(persist: Option<&std::path::Path>) -> Server {
    let config = ServerConfig {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        persistence: persist.map(|dir| midge_store::StoreOptions {
            dir: dir.to_path_buf(),
            ..midge_store::StoreOptions::default()
        }),
        ..ServerConfig::default()
    };
    Server::start(config).await.unwrap()
}

fn connector(server: &Server) -> Connector {
    let local = server.local_connector();
    Connector::new(move || {
        let local = local.clone();
        async move { local.connect() }
    })
}

fn rule(name: &str, sql: &str, actions: Vec<ActionConfig>) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        sql: sql.into(),
        actions,
    }
}

fn store(table: &str) -> ActionConfig {
    ActionConfig::Store {
        table: table.into(),
    }
}

type Events = mpsc::UnboundedReceiver<Result<Event, ClientError>>;

/// A device or subscriber on the broker's TCP port, its event loop driven in a task.
async fn device(server: &Server, id: &str) -> (Client, Events) {
    let port = server.local_addrs()[0].port();
    let (client, mut events, _) = Client::connect(ClientOptions::new("127.0.0.1", port, id))
        .await
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let e = events.poll().await;
            let end = e.is_err();
            if tx.send(e).is_err() || end {
                return;
            }
        }
    });
    (client, rx)
}

async fn subscribed(client: &Client, events: &mut Events, filter: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    loop {
        match timeout(T, events.recv()).await {
            Ok(Some(Ok(Event::SubAck(_)))) => return,
            Ok(Some(Ok(_))) => {}
            other => panic!("no SUBACK: {other:?}"),
        }
    }
}

async fn message(events: &mut Events) -> midge_client::codec::Publish {
    loop {
        match timeout(T, events.recv()).await {
            Ok(Some(Ok(Event::Message(m)))) => return m,
            Ok(Some(Ok(_))) => {}
            other => panic!("no message: {other:?}"),
        }
    }
}

/// Rows of `table` once there are at least `n` (bounded wait).
async fn rows(series: &Arc<SeriesStore>, table: &str, n: usize) -> Vec<StoredRow> {
    let start = Instant::now();
    loop {
        let s = series.clone();
        let q = RowsQuery {
            table: table.into(),
            order: midge_series::Order::OldestFirst,
            ..RowsQuery::default()
        };
        let got = tokio::task::spawn_blocking(move || s.rows(&q))
            .await
            .unwrap()
            .unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < T,
            "only {} of {n} rows in {table}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn open_series(dir: &tempfile::TempDir) -> Arc<SeriesStore> {
    Arc::new(SeriesStore::open(&dir.path().join("series.db"), SeriesOptions::default()).unwrap())
}

/// Wait until the hub's subscriptions are in place: publish probes on `topic` until the
/// rule `name` has matched one.
async fn hub_ready(hub: &Hub, dev: &Client, name: &str, topic: &str) -> u64 {
    let start = Instant::now();
    loop {
        dev.publish(topic, QoS::AtMostOnce, false, "{\"probe\": true}")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = hub.status();
        let m = s.iter().find(|s| s.name == name).unwrap().matched;
        if m > 0 {
            return m;
        }
        assert!(start.elapsed() < T, "the hub never subscribed");
    }
}

#[tokio::test]
async fn the_missions_rule_stores_hot_readings_with_their_publisher_and_nothing_else() {
    let server = broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let series = open_series(&dir);
    let config = HubConfig {
        rules: vec![rule(
            "hot",
            "SELECT * FROM 'sensors/#' WHERE temp > 30",
            vec![store("telemetry")],
        )],
        ..HubConfig::default()
    };
    let hub = Hub::start(config, connector(&server), Some(series.clone()))
        .await
        .unwrap();
    let (dev, _e) = device(&server, "dev-1").await;
    let probes = hub_ready(&hub, &dev, "hot", "sensors/probe").await;

    dev.publish(
        "sensors/a",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 31.5, "hum": 40}"#,
    )
    .await
    .unwrap();
    dev.publish("sensors/b", QoS::AtMostOnce, false, r#"{"temp": 20}"#)
        .await
        .unwrap();
    dev.publish("other/x", QoS::AtMostOnce, false, r#"{"temp": 99}"#)
        .await
        .unwrap();
    dev.publish("sensors/c", QoS::ExactlyOnce, false, r#"{"temp": "30.5"}"#)
        .await
        .unwrap();
    let got = rows(&series, "telemetry", 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].topic, "sensors/a");
    assert_eq!(got[0].client_id, "dev-1");
    assert_eq!(
        serde_json::Value::Object(got[0].data.clone()),
        json!({"temp": 31.5, "hum": 40})
    );
    assert_eq!(got[1].topic, "sensors/c");
    let status = hub.status();
    assert_eq!(status[0].filters, ["sensors/#"]);
    assert_eq!(status[0].actions, ["store telemetry"]);
    // probes, a, b and c matched; a and c passed
    let deadline = Instant::now() + T;
    while hub.status()[0].matched < probes + 3 {
        assert!(Instant::now() < deadline, "{:?}", hub.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hub.status()[0].passed, 2, "{:?}", hub.status());
    assert_eq!(hub.status()[0].failed, 0);
    hub.stop().await;
    server.shutdown().await;
}

#[tokio::test]
async fn republish_fills_templates_and_the_hub_never_feeds_itself() {
    let server = broker(None).await;
    let config = HubConfig {
        rules: vec![
            rule(
                "alert",
                "SELECT temp, topic(2) AS device FROM 'sensors/+/temp' WHERE temp > 30",
                vec![ActionConfig::Republish {
                    topic: "alerts/${device}".into(),
                    payload: Some("${temp} is too hot on ${topic}".into()),
                    qos: QoS::AtLeastOnce,
                    retain: false,
                }],
            ),
            // would loop forever if the hub received its own publishes
            rule(
                "echo",
                "SELECT * FROM '#'",
                vec![ActionConfig::Republish {
                    topic: "echo/${topic}".into(),
                    payload: None,
                    qos: QoS::AtMostOnce,
                    retain: false,
                }],
            ),
        ],
        ..HubConfig::default()
    };
    let hub = Hub::start(config, connector(&server), None).await.unwrap();
    let (sub, mut events) = device(&server, "watcher").await;
    subscribed(&sub, &mut events, "alerts/#").await;
    let (echo, mut echoes) = device(&server, "echo-watcher").await;
    subscribed(&echo, &mut echoes, "echo/#").await;
    let (dev, _e) = device(&server, "dev-2").await;
    hub_ready(&hub, &dev, "echo", "probe").await;
    // drain echoes of the probes
    tokio::time::sleep(Duration::from_millis(200)).await;
    while echoes.try_recv().is_ok() {}

    dev.publish(
        "sensors/dev-2/temp",
        QoS::AtLeastOnce,
        false,
        r#"{"temp": 31.5}"#,
    )
    .await
    .unwrap();
    let m = message(&mut events).await;
    assert_eq!(m.topic.as_str(), "alerts/dev-2");
    assert_eq!(&m.payload[..], b"31.5 is too hot on sensors/dev-2/temp");
    // the echo rule saw the device's message once, and not the hub's own alert or echo
    let first = message(&mut echoes).await;
    assert_eq!(first.topic.as_str(), "echo/sensors/dev-2/temp");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&first.payload).unwrap(),
        json!({"temp": 31.5})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut more = Vec::new();
    while let Ok(Ok(Event::Message(m))) = echoes.try_recv() {
        more.push(m.topic.to_string());
    }
    assert!(more.is_empty(), "the hub fed itself: {more:?}");
    hub.stop().await;
    server.shutdown().await;
}

fn republish(topic: &str) -> ActionConfig {
    ActionConfig::Republish {
        topic: topic.into(),
        payload: None,
        qos: QoS::AtMostOnce,
        retain: false,
    }
}

/// Issue 13: `a/#/b` was accepted and failed on every message; `out/${nosuch}/x` published
/// to `out//x` and counted as a success.
#[tokio::test]
async fn republish_topics_are_checked_on_save_and_a_missing_value_is_a_failure() {
    let refused = |sql: &str, topic: &str| {
        let config = HubConfig {
            rules: vec![rule("r", sql, vec![republish(topic)])],
            ..HubConfig::default()
        };
        midge_hub::validate(&config, false)
            .err()
            .map(|p| midge_hub::HubError::Invalid(p).to_string())
    };
    let e = refused("SELECT * FROM 'a'", "a/#/b").unwrap();
    assert!(
        e.contains("republish topic") && e.contains("wildcard"),
        "{e}"
    );
    assert!(refused("SELECT * FROM 'a'", "a/+").is_some());
    let e = refused("SELECT temp FROM 'a'", "out/${nosuch}/x").unwrap();
    assert!(e.contains("nosuch"), "{e}");
    assert_eq!(
        refused("SELECT temp FROM 'a'", "out/${temp}/${topic}"),
        None
    );
    // with * the columns are known only when a message comes
    assert_eq!(refused("SELECT * FROM 'a'", "out/${nosuch}/x"), None);

    let server = broker(None).await;
    let config = HubConfig {
        rules: vec![rule(
            "out",
            "SELECT * FROM 'in/#'",
            vec![republish("out/${id}/x")],
        )],
        ..HubConfig::default()
    };
    let hub = Hub::start(config, connector(&server), None).await.unwrap();
    let (sub, mut events) = device(&server, "watcher").await;
    subscribed(&sub, &mut events, "out/#").await;
    let (dev, _e) = device(&server, "dev-1").await;
    hub_ready(&hub, &dev, "out", "in/probe").await;
    dev.publish("in/a", QoS::AtLeastOnce, false, r#"{"id": "d7"}"#)
        .await
        .unwrap();
    // the probes (no id either) came before on the same connection: all handled by now
    let m = message(&mut events).await;
    assert_eq!(m.topic.as_str(), "out/d7/x");
    let failed = |hub: &Hub| hub.status().into_iter().find(|s| s.name == "out").unwrap();
    let before = failed(&hub).failed;
    dev.publish("in/b", QoS::AtLeastOnce, false, r#"{"temp": 1}"#)
        .await
        .unwrap();
    let start = Instant::now();
    let status = loop {
        let s = failed(&hub);
        if s.failed == before + 1 {
            break s;
        }
        assert!(start.elapsed() < T, "no failure counted: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.last_error.as_deref().unwrap_or("").contains("${id}"),
        "{status:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(e) = events.try_recv() {
        if let Ok(Event::Message(m)) = e {
            assert_ne!(m.topic.as_str(), "out//x");
            assert!(m.topic.as_str() == "out/d7/x", "{:?}", m.topic);
        }
    }
    hub.stop().await;
    server.shutdown().await;
}

/// Issue 13: `retention_days` was applied inside the rules' loop, so never while no rule
/// existed. Issue 15: the store runs its retention itself, so a hub with no rule at all
/// (or no hub) does not stop it.
#[tokio::test]
async fn retention_prunes_with_no_rule_at_all() {
    let server = broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let series = Arc::new(
        SeriesStore::open(
            &dir.path().join("series.db"),
            SeriesOptions {
                retention: Some(Duration::from_secs(86_400)),
                prune_every: Some(Duration::from_millis(200)),
                ..SeriesOptions::default()
            },
        )
        .unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let data = json!({"v": 1}).as_object().cloned().unwrap();
    series
        .insert(
            "telemetry",
            &[
                midge_series::Row::new(now - 3 * 86_400_000, "old", "d", data.clone()),
                midge_series::Row::new(now - 1_000, "new", "d", data),
            ],
        )
        .unwrap();
    let config = HubConfig::default();
    assert!(config.rules.is_empty());
    let service = midge_hub::HubService::start(config, connector(&server), Some(series.clone()))
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let s = series.clone();
        let left = tokio::task::spawn_blocking(move || s.rows(&RowsQuery::default()))
            .await
            .unwrap()
            .unwrap();
        let topics: Vec<&str> = left.iter().map(|r| r.topic.as_str()).collect();
        if topics == ["new"] {
            break;
        }
        assert!(start.elapsed() < T, "not pruned: {topics:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.stop().await;
    server.shutdown().await;
}

/// A one-request HTTP endpoint: returns the request head and body.
async fn endpoint(status: u16) -> (u16, tokio::task::JoinHandle<(String, String)>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let (head, body_start) = loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request cut short");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break (String::from_utf8_lossy(&buf[..i]).to_string(), i + 4);
            }
        };
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < body_start + len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = String::from_utf8_lossy(&buf[body_start..body_start + len]).to_string();
        let reply =
            format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        s.write_all(reply.as_bytes()).await.unwrap();
        (head, body)
    });
    (port, task)
}

#[tokio::test]
async fn webhooks_post_the_row_and_failures_are_counted_on_the_rule() {
    let server = broker(None).await;
    let (port, request) = endpoint(200).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead); // nothing listens there now
    let hook = |port: u16| ActionConfig::Webhook {
        url: format!("http://127.0.0.1:{port}/hook?x=1"),
        headers: vec![("X-Token".into(), "s3cret".into())],
        timeout: Duration::from_secs(2),
    };
    let config = HubConfig {
        rules: vec![
            rule(
                "hook",
                "SELECT temp, clientid() AS who FROM 'sensors/#' WHERE temp > 30",
                vec![hook(port)],
            ),
            rule("dead", "SELECT * FROM 'dead/#'", vec![hook(dead_port)]),
        ],
        ..HubConfig::default()
    };
    let hub = Hub::start(config, connector(&server), None).await.unwrap();
    let (dev, _e) = device(&server, "dev-3").await;
    hub_ready(&hub, &dev, "dead", "dead/probe").await;
    dev.publish("sensors/x", QoS::AtLeastOnce, false, r#"{"temp": 40}"#)
        .await
        .unwrap();
    let (head, body) = timeout(T, request).await.unwrap().unwrap();
    assert!(head.starts_with("POST /hook?x=1 HTTP/1.1"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("x-token: s3cret"), "{head}");
    assert!(lower.contains("content-type: application/json"), "{head}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"temp": 40, "who": "dev-3"})
    );
    // the dead endpoint: three attempts, then counted as a failure with the reason
    let deadline = Instant::now() + T;
    loop {
        let s = hub.status();
        let d = s.iter().find(|s| s.name == "dead").unwrap();
        if d.failed > 0 {
            let e = d.last_error.clone().unwrap();
            assert!(
                e.contains("webhook") && e.contains(&dead_port.to_string()),
                "{e}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.stop().await;
    server.shutdown().await;
}

#[tokio::test]
async fn messages_for_a_stopped_hub_wait_in_its_persistent_session_and_removed_rules_unsubscribe() {
    let data = tempfile::tempdir().unwrap();
    let server = broker(Some(data.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let series = open_series(&dir);
    let config = |sql: &str| HubConfig {
        rules: vec![rule("r", sql, vec![store("telemetry")])],
        state_dir: Some(data.path().to_path_buf()),
        ..HubConfig::default()
    };
    let hub = Hub::start(
        config("SELECT * FROM 'a/#'"),
        connector(&server),
        Some(series.clone()),
    )
    .await
    .unwrap();
    let (dev, _e) = device(&server, "dev-4").await;
    hub_ready(&hub, &dev, "r", "a/probe").await;
    hub.stop().await;
    // the hub is away: its session keeps the QoS 1 messages for it
    for i in 0..20 {
        dev.publish(
            "a/while-away",
            QoS::AtLeastOnce,
            false,
            format!("{{\"i\": {i}}}"),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rows(&series, "telemetry", 0).await.len();
    // back: the queued messages are stored (the session held them)
    let hub = Hub::start(
        config("SELECT * FROM 'a/#'"),
        connector(&server),
        Some(series.clone()),
    )
    .await
    .unwrap();
    let got = rows(&series, "telemetry", before + 20).await;
    let away: Vec<i64> = got
        .iter()
        .filter(|r| r.topic == "a/while-away")
        .map(|r| r.data["i"].as_i64().unwrap())
        .collect();
    assert_eq!(away, (0..20).collect::<Vec<_>>());
    hub.stop().await;
    // back with a different rule: the old filter is dropped from the session
    let hub = Hub::start(
        config("SELECT * FROM 'b/#'"),
        connector(&server),
        Some(series.clone()),
    )
    .await
    .unwrap();
    hub_ready(&hub, &dev, "r", "b/probe").await;
    dev.publish("a/after", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    dev.publish("b/after", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    let got = rows(&series, "telemetry", before + 21).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = rows(&series, "telemetry", got.len()).await;
    assert!(got_after.iter().any(|r| r.topic == "b/after"));
    assert!(
        !got_after.iter().any(|r| r.topic == "a/after"),
        "a removed rule's filter is still subscribed"
    );
    hub.stop().await;
    server.shutdown().await;
}

#[test]
fn every_bad_rule_is_reported_at_once() {
    let config = HubConfig {
        rules: vec![
            rule("a", "SELECT * FROM", vec![store("t")]),
            rule("a", "SELECT * FROM 'x'", vec![store("no-dashes")]),
            rule("b", "SELECT * FROM 'x'", vec![]),
            rule(
                "c",
                "SELECT * FROM 'x'",
                vec![
                    ActionConfig::Republish {
                        topic: "alerts/${x".into(),
                        payload: None,
                        qos: QoS::AtMostOnce,
                        retain: false,
                    },
                    ActionConfig::Webhook {
                        url: "ftp://example.invalid/".into(),
                        headers: vec![],
                        timeout: Duration::from_secs(1),
                    },
                ],
            ),
        ],
        ..HubConfig::default()
    };
    let problems = midge_hub::validate(&config, false).unwrap_err();
    assert!(
        problems.iter().any(|p| matches!(
            p,
            midge_hub::RuleProblem::NeedsStore {
                action: "store",
                ..
            }
        )),
        "{problems:?}"
    );
    let count = problems.len();
    let text = midge_hub::HubError::Invalid(problems).to_string();
    for want in [
        "rule \"a\": ",
        "the name is used twice",
        "no-dashes",
        "needs the time-series store",
        "rule \"b\": no action",
        "unclosed ${",
        "http:// or https://",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(count >= 7, "{text}");
}

#[tokio::test]
async fn rules_added_through_the_service_run_at_once_are_saved_and_can_be_removed() {
    use midge_hub::{HubService, RuleChangeError, RuleSource, RuleSpec};
    let data = tempfile::tempdir().unwrap();
    let server = broker(Some(data.path())).await;
    let dir = tempfile::tempdir().unwrap();
    let series = open_series(&dir);
    let config = HubConfig {
        rules: vec![rule(
            "from-file",
            "SELECT * FROM 'file/#'",
            vec![store("telemetry")],
        )],
        state_dir: Some(data.path().to_path_buf()),
        ..HubConfig::default()
    };
    let service = HubService::start(config.clone(), connector(&server), Some(series.clone()))
        .await
        .unwrap();
    // the file's rule counts a message; the count survives the restart an added rule causes
    let (early, _early_events) = device(&server, "dev-5-early").await;
    let deadline = Instant::now() + T;
    while service.status()[0].0.matched == 0 {
        early
            .publish("file/x", QoS::AtMostOnce, false, "{}")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(Instant::now() < deadline, "the file's rule never matched");
    }
    let counted = service.status()[0].0.matched;
    let spec: RuleSpec = serde_json::from_value(json!({
        "name": "api",
        "sql": "SELECT temp FROM 'api/#' WHERE temp > 1",
        "store": "apitable"
    }))
    .unwrap();
    service.add(spec.clone()).await.unwrap();
    let status = service.status();
    assert!(status[0].0.matched >= counted, "{status:?}");
    assert_eq!(
        status
            .iter()
            .map(|(s, src)| (s.name.as_str(), *src))
            .collect::<Vec<_>>(),
        [("from-file", RuleSource::Config), ("api", RuleSource::Api)]
    );
    assert!(matches!(
        service.add(spec.clone()).await,
        Err(RuleChangeError::Exists(_))
    ));
    let bad: RuleSpec =
        serde_json::from_value(json!({"name": "bad", "sql": "SELECT FROM", "store": true}))
            .unwrap();
    let e = service.add(bad).await.unwrap_err();
    assert!(matches!(e, RuleChangeError::Invalid(_)), "{e}");
    // the API's body goes through the same check as a [[rule]] of the file: the same message
    let bad: RuleSpec = serde_json::from_value(json!({
        "name": "bad", "sql": "SELECT * FROM 'x'",
        "republish": {"topic": "y", "qos": 3}, "webhook": {"url": "http://h/", "timout": 5}
    }))
    .unwrap();
    match service.add(bad).await {
        Err(RuleChangeError::Invalid(p)) => assert_eq!(
            p,
            [
                "republish.qos: must be between 0 and 2 (found 3)",
                "webhook.timout: unknown key (did you mean `timeout`?)"
            ]
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        service.remove("from-file").await,
        Err(RuleChangeError::FromConfig(_))
    ));
    assert!(matches!(
        service.remove("nope").await,
        Err(RuleChangeError::NotFound(_))
    ));

    let (dev, _e) = device(&server, "dev-5").await;
    let deadline = Instant::now() + T;
    loop {
        dev.publish(
            "api/x",
            QoS::AtLeastOnce,
            false,
            r#"{"temp": 5, "other": 1}"#,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = series.clone();
        let n = tokio::task::spawn_blocking(move || {
            s.rows(&RowsQuery {
                table: "apitable".into(),
                ..RowsQuery::default()
            })
            .map(|r| r.len())
            .unwrap_or(0)
        })
        .await
        .unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the added rule never stored");
    }
    let got = rows(&series, "apitable", 1).await;
    assert_eq!(
        serde_json::Value::Object(got[0].data.clone()),
        json!({"temp": 5})
    );
    service.stop().await;

    // saved: a new service (a restarted midge) runs it again
    let service = HubService::start(config, connector(&server), Some(series.clone()))
        .await
        .unwrap();
    assert_eq!(service.api_rules().await, [spec]);
    service.remove("api").await.unwrap();
    assert_eq!(service.status().len(), 1);
    assert!(service.api_rules().await.is_empty());
    let saved = std::fs::read_to_string(data.path().join(midge_hub::RULES_FILE)).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&saved).unwrap(),
        json!([])
    );
    service.stop().await;
    server.shutdown().await;
}

/// A burst far larger than the broker's per-session queue and in-flight limits is stored
/// whole: the hub's session is bounded by bytes only and takes a whole batch in flight
/// (`midge_core::INTERNAL_CLIENT_ID_PREFIX`), and acknowledging a batch never waits on the
/// event loop (which once deadlocked the hub once 1,024 events were waiting). Before, with
/// these limits, most of the burst was dropped from the hub's queue.
#[tokio::test]
async fn a_burst_beyond_the_queue_limits_is_stored_whole() {
    let mut config = ServerConfig {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
        ..ServerConfig::default()
    };
    config.broker.max_queued_messages = 100;
    config.broker.max_inflight_messages = 20;
    let server = Server::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let series = open_series(&dir);
    let hub = Hub::start(
        HubConfig {
            rules: vec![rule("all", "SELECT * FROM 'burst/#'", vec![store("burst")])],
            ..HubConfig::default()
        },
        connector(&server),
        Some(series.clone()),
    )
    .await
    .unwrap();
    let (dev, _e) = device(&server, "burster").await;
    let probes = hub_ready(&hub, &dev, "all", "burst/probe").await;
    const N: u64 = 10_000;
    for i in 0..N {
        dev.publish(
            "burst/x",
            QoS::AtLeastOnce,
            false,
            format!("{{\"i\": {i}}}"),
        )
        .await
        .unwrap();
    }
    let start = Instant::now();
    let count = || {
        series
            .tables()
            .unwrap()
            .iter()
            .find(|t| t.name == "burst")
            .map_or(0, |t| t.rows)
    };
    while count() < probes + N {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} of {} rows stored; hub {:?}",
            count(),
            probes + N,
            hub.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count(), probes + N);
    assert_eq!(server.stats().await.unwrap().broker.messages_dropped, 0);
    hub.stop().await;
    server.shutdown().await;
}

/// A point the store refuses (its field holds text, written through the API) is a failure
/// of its rule; the rest of the batch (other points, rows) is written and acknowledged.
#[tokio::test]
async fn a_point_the_store_refuses_is_a_rule_failure_and_holds_up_nothing() {
    use midge_series::points::{Datapoint, PointValue};
    let server = broker(None).await;
    let dir = tempfile::tempdir().unwrap();
    let series = open_series(&dir);
    let text = Datapoint {
        metric: "m".into(),
        field: "value".into(),
        tags: Default::default(),
        timestamp: 1,
        value: PointValue::Text("words".into()),
    };
    series.write_points(std::slice::from_ref(&text)).unwrap();
    let config = HubConfig {
        rules: vec![
            rule("probe", "SELECT * FROM 'probe/#'", vec![store("probes")]),
            rule(
                "points",
                "SELECT * FROM 'd/#'",
                vec![ActionConfig::Tsdb, store("rows")],
            ),
        ],
        ..HubConfig::default()
    };
    let hub = Hub::start(config, connector(&server), Some(series.clone()))
        .await
        .unwrap();
    let (dev, _e) = device(&server, "dev-1").await;
    hub_ready(&hub, &dev, "probe", "probe/x").await;
    for payload in [
        r#"{"metric": "m", "value": 1}"#,
        r#"{"metric": "ok", "value": 2, "room": "k"}"#,
        r#"{"metric": "m", "value": 3}"#,
    ] {
        dev.publish("d/1", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // every row is written: the refused points held nothing up
    assert_eq!(rows(&series, "rows", 3).await.len(), 3);
    let export = |metric: &str| {
        let mut out = Vec::new();
        series
            .export_points(&[metric.to_string()], i64::MIN, i64::MAX, &mut |p| {
                out.push(p);
                true
            })
            .unwrap();
        out
    };
    let ok = export("ok");
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0].value, PointValue::Long(2));
    assert_eq!(export("m"), [text]);
    // the failures are counted once the batch's result is back (just after its commit)
    let deadline = Instant::now() + T;
    let r = loop {
        let s = hub.status();
        let r = s.iter().find(|s| s.name == "points").unwrap().clone();
        if r.failed >= 2 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.actions, ["tsdb", "store rows"]);
    assert_eq!(r.failed, 2, "{r:?}");
    assert!(
        r.last_error.as_deref().unwrap().contains("holds String"),
        "{r:?}"
    );
    hub.stop().await;
    server.shutdown().await;
}
