//! Alarms (issue 13 item 8) against a real broker: a rule's `alarm` action raises and clears
//! with hysteresis per source, the raise and clear reach a real MQTT subscriber, and the
//! alarms and their history survive a restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use midge_client::{Client, ClientError, ClientOptions, Connector, Event, QoS};
use midge_hub::{
    ActionConfig, AlarmConfig, AlarmStatus, HubConfig, HubService, RuleChangeError, RuleConfig,
    RuleSpec,
};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn broker() -> Server {
    let config = ServerConfig {
        listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
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

type Events = mpsc::UnboundedReceiver<Result<Event, ClientError>>;

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

/// The next message, or `None` after `wait`.
async fn next_message(events: &mut Events, wait: Duration) -> Option<(String, Value)> {
    let end = Instant::now() + wait;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, events.recv()).await {
            Ok(Some(Ok(Event::Message(m)))) => {
                return Some((
                    m.topic.as_str().to_string(),
                    serde_json::from_slice(&m.payload).unwrap(),
                ));
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("subscriber ended: {other:?}"),
            Err(_) => return None,
        }
    }
}

fn boiler_rule() -> RuleConfig {
    RuleConfig {
        name: "boiler".into(),
        sql: "SELECT temp FROM 'boiler/+'".into(),
        actions: vec![ActionConfig::Alarm(
            AlarmConfig::from_json(&json!({
                "name": "boiler-hot", "raise": "temp > 80", "clear": "temp < 75", "severity": "major"
            }))
            .unwrap(),
        )],
    }
}

async fn start(server: &Server, dir: &std::path::Path) -> std::sync::Arc<HubService> {
    let config = HubConfig {
        rules: vec![boiler_rule()],
        state_dir: Some(dir.to_path_buf()),
        ..HubConfig::default()
    };
    HubService::start(config, connector(server), None)
        .await
        .unwrap()
}

async fn temp(dev: &Client, topic: &str, t: f64) {
    dev.publish(
        topic,
        QoS::AtLeastOnce,
        false,
        json!({ "temp": t }).to_string(),
    )
    .await
    .unwrap();
}

/// Wait until the service's active alarms satisfy `ok`.
async fn until_active(
    svc: &HubService,
    what: &str,
    ok: impl Fn(&[midge_hub::AlarmRecord]) -> bool,
) {
    let start = Instant::now();
    loop {
        let a = svc.alarms().active();
        if ok(&a) {
            return;
        }
        assert!(start.elapsed() < T, "{what}: active alarms {a:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_alarm_is_raised_and_cleared_with_hysteresis_per_source_published_and_kept_across_restarts()
 {
    let server = broker().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&server, dir.path()).await;
    let (watcher, mut seen) = device(&server, "watcher").await;
    subscribed(&watcher, &mut seen, "alarms/#").await;
    let (dev, _ev) = device(&server, "boiler-1").await;

    temp(&dev, "boiler/1", 79.0).await;
    assert_eq!(
        next_message(&mut seen, Duration::from_millis(500)).await,
        None,
        "79 is below the raise threshold"
    );
    assert!(svc.alarms().active().is_empty());

    temp(&dev, "boiler/1", 81.0).await;
    let (topic, raised) = next_message(&mut seen, T)
        .await
        .expect("the raise is published");
    assert_eq!(topic, "alarms/boiler-hot");
    assert_eq!(raised["event"], "raised");
    assert_eq!(raised["status"], "active");
    assert_eq!(raised["source"], "boiler/1");
    assert_eq!(raised["severity"], "major");
    assert_eq!(raised["value"], 81.0);
    let id = raised["id"].as_u64().unwrap();

    // 78 is in the band: still active, nothing published
    temp(&dev, "boiler/1", 78.0).await;
    // a second source is independent: 50 raises nothing there, 90 raises its own alarm
    temp(&dev, "boiler/2", 50.0).await;
    temp(&dev, "boiler/2", 90.0).await;
    let (_, other) = next_message(&mut seen, T).await.expect("boiler/2 raised");
    assert_eq!(
        other["source"], "boiler/2",
        "78 on boiler/1 published nothing: {other}"
    );
    until_active(&svc, "two active", |a| a.len() == 2).await;

    temp(&dev, "boiler/1", 74.0).await;
    let (_, cleared) = next_message(&mut seen, T)
        .await
        .expect("the clear is published");
    assert_eq!(cleared["event"], "cleared");
    assert_eq!(cleared["id"].as_u64(), Some(id));
    assert_eq!(cleared["source"], "boiler/1");
    assert_eq!(cleared["clear_value"], 74.0);
    until_active(&svc, "boiler/2 only", |a| {
        a.len() == 1 && a[0].source == "boiler/2"
    })
    .await;

    // restart: the active alarm and the history are still there, and the state machine
    // goes on from them (a reading in the band does not raise boiler/2 a second time)
    svc.stop().await;
    drop(svc);
    let svc = start(&server, dir.path()).await;
    let active = svc.alarms().active();
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0].source, "boiler/2");
    let (history, _) = svc.alarms().history(10);
    assert_eq!(history.len(), 2);
    let old = history.iter().find(|h| h.id == id).unwrap();
    assert_eq!(old.status, AlarmStatus::Cleared);
    assert_eq!(old.value, Some(json!(81.0)));

    temp(&dev, "boiler/2", 85.0).await;
    temp(&dev, "boiler/2", 70.0).await;
    let (_, c2) = next_message(&mut seen, T)
        .await
        .expect("boiler/2 cleared after the restart");
    assert_eq!(c2["event"], "cleared", "85 raised nothing again: {c2}");
    assert_eq!(c2["source"], "boiler/2");
    until_active(&svc, "none", <[_]>::is_empty).await;

    // raised again later: a new alarm, counted
    temp(&dev, "boiler/1", 95.0).await;
    let (_, again) = next_message(&mut seen, T).await.unwrap();
    assert_eq!(again["count"], 2, "{again}");
    assert_ne!(again["id"].as_u64(), Some(id));

    // acknowledged and cleared by hand: both published
    let new_id = again["id"].as_u64().unwrap();
    svc.alarms().ack(new_id, 1).unwrap();
    let (_, acked) = next_message(&mut seen, T).await.unwrap();
    assert_eq!(acked["event"], "acknowledged");
    svc.alarms().clear(new_id, 2).unwrap();
    let (_, by_hand) = next_message(&mut seen, T).await.unwrap();
    assert_eq!(
        (by_hand["event"].as_str(), by_hand["cleared_by"].as_str()),
        (Some("cleared"), Some("api"))
    );
    assert!(matches!(
        svc.alarms().clear(new_id, 3),
        Err(midge_hub::AlarmError::Cleared(_))
    ));
    svc.stop().await;
}

#[tokio::test]
async fn bad_alarm_definitions_are_refused_on_save_with_a_clear_message() {
    let server = broker().await;
    let dir = tempfile::tempdir().unwrap();
    let svc = start(&server, dir.path()).await;
    let spec = |alarm: Value| RuleSpec {
        name: "bad".into(),
        sql: "SELECT temp FROM 'x/+'".into(),
        store: None,
        tsdb: None,
        republish: None,
        webhook: None,
        alarm: Some(alarm),
        enabled: true,
    };
    for (alarm, expect) in [
        (json!({"name": "hot", "raise": "temp >"}), "raise"),
        (
            json!({"name": "hot", "raise": "temp > 1", "clear": "temp <<< 2"}),
            "clear",
        ),
        (
            json!({"name": "hot", "raise": "temp > 1", "severity": "terrible"}),
            "severity \"terrible\" must be one of critical",
        ),
        (
            json!({"name": "hot stuff", "raise": "temp > 1"}),
            "alarm name",
        ),
        (
            json!({"name": "hot", "raise": "temp > 1", "topic": "alarms/#"}),
            "wildcards",
        ),
        (json!({"raise": "temp > 1"}), "missing field `name`"),
    ] {
        match svc.add(spec(alarm.clone())).await {
            Err(RuleChangeError::Invalid(p)) => {
                let text = p.join("; ");
                assert!(text.contains(expect), "{alarm}: {text}");
            }
            other => panic!("{alarm} accepted: {other:?}"),
        }
    }
    svc.add(spec(json!({"name": "hot", "raise": "temp > 1"})))
        .await
        .unwrap();
    svc.stop().await;
}
