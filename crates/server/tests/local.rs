//! In-process connections ([`midge_server::LocalConnector`]): internal clients speak MQTT to
//! the broker over a pipe, are trusted (no password, no listener ACL), and do not keep a
//! stopped server alive.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::net::SocketAddr;
use std::time::Duration;

use midge_client::{Client, ClientError, ClientOptions, Connector, Event, QoS, Transport};
use midge_server::{ListenerConfig, LocalConnector, Server, ServerConfig};
use tokio::sync::mpsc;
use tokio::time::timeout;

fn local_options(local: &LocalConnector, id: &str) -> ClientOptions {
    let local = local.clone();
    let mut o = ClientOptions::new("local", 0, id);
    o.transport = Transport::Custom(Connector::new(move || {
        let local = local.clone();
        async move { local.connect() }
    }));
    o
}

type Events = mpsc::UnboundedReceiver<Result<Event, ClientError>>;

/// Connect, then drive the event loop in its own task, forwarding every event.
async fn start(options: ClientOptions) -> (Client, Events) {
    let (client, mut events, _) = Client::connect(options).await.unwrap();
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

async fn next(events: &mut Events, what: &str, pick: impl Fn(&Event) -> bool) -> Event {
    loop {
        match timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(Ok(e))) if pick(&e) => return e,
            Ok(Some(Ok(_))) => {}
            other => panic!("no {what}: {other:?}"),
        }
    }
}

async fn message(events: &mut Events) -> midge_client::codec::Publish {
    match next(events, "message", |e| matches!(e, Event::Message(_))).await {
        Event::Message(m) => m,
        _ => unreachable!(),
    }
}

async fn suback(events: &mut Events) {
    next(events, "SUBACK", |e| matches!(e, Event::SubAck(_))).await;
}

#[tokio::test]
async fn in_process_clients_exchange_messages_with_network_clients_past_the_listener_acl() {
    // the network listener lets anonymous clients in, but its ACL lets them only write
    let acl = std::env::temp_dir().join(format!("midge-local-acl-{}", std::process::id()));
    std::fs::write(
        &acl,
        "topic write sensors/#\nuser maker\ntopic write sensors/#\n",
    )
    .unwrap();
    let mut l = ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)));
    l.auth.acl_file = Some(acl.clone());
    let config = ServerConfig {
        listeners: vec![l],
        ..ServerConfig::default()
    };
    let server = Server::start(config).await.unwrap();
    let port = server.local_addrs()[0].port();
    let local = server.local_connector();

    let (inside, mut inside_events) = start(local_options(&local, "rules")).await;
    inside
        .subscribe("sensors/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    suback(&mut inside_events).await;

    // a network client's publish reaches the in-process subscriber
    let (net, mut net_events) = start(ClientOptions::new("127.0.0.1", port, "device")).await;
    net.subscribe("alerts/#", QoS::AtMostOnce).await.unwrap();
    let refused = next(&mut net_events, "SUBACK", |e| matches!(e, Event::SubAck(_))).await;
    assert!(
        matches!(&refused, Event::SubAck(a) if a.reasons[0].is_error()),
        "the network client may not read: {refused:?}"
    );
    net.publish("sensors/a", QoS::AtLeastOnce, false, "{\"temp\": 31}")
        .await
        .unwrap();
    let m = message(&mut inside_events).await;
    assert_eq!(m.topic.as_str(), "sensors/a");
    assert_eq!(&m.payload[..], b"{\"temp\": 31}");
    // an MQTT 3.1.1 in-process client gets no properties at all
    assert!(m.properties.user_properties.is_empty());

    // in-process clients are not bound by the listener's ACL: they read and write anywhere
    let (watch, mut watch_events) = start(local_options(&local, "watch")).await;
    watch.subscribe("alerts/#", QoS::AtMostOnce).await.unwrap();
    suback(&mut watch_events).await;
    inside
        .publish("alerts/hot", QoS::AtMostOnce, false, "31")
        .await
        .unwrap();
    let m = message(&mut watch_events).await;
    assert_eq!(m.topic.as_str(), "alerts/hot");
    assert_eq!(&m.payload[..], b"31");

    // MQTT 5 in-process clients are told who published (network clients never are)
    let mut v5 = local_options(&local, "rules5");
    v5.connect = midge_client::codec::Connect::new(midge_client::Protocol::V5, "rules5");
    let (rules5, mut rules5_events) = start(v5).await;
    rules5
        .subscribe("sensors/#", QoS::AtMostOnce)
        .await
        .unwrap();
    suback(&mut rules5_events).await;
    let mut v5net = ClientOptions::new("127.0.0.1", port, "device5");
    v5net.connect = midge_client::codec::Connect::new(midge_client::Protocol::V5, "device5");
    v5net.connect.username = Some("maker".into());
    let (net5, _net5_events) = start(v5net).await;
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let before = unix_ms();
    net5.publish("sensors/b", QoS::AtMostOnce, false, "1")
        .await
        .unwrap();
    let m = message(&mut rules5_events).await;
    let after = unix_ms();
    let props: Vec<(&str, &str)> = m
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    assert_eq!(
        props[..2],
        [("midge-client-id", "device5"), ("midge-username", "maker")]
    );
    // ... and when the broker accepted the message (wall-clock ms)
    assert_eq!(props.len(), 3, "{props:?}");
    assert_eq!(props[2].0, "midge-time");
    let time: i64 = props[2].1.parse().unwrap();
    assert!(
        (before - 5..=after + 5).contains(&time),
        "{time} not in {before}..={after}"
    );

    let stats = server.stats().await.unwrap();
    assert_eq!(stats.broker.clients_connected, 5, "{stats:?}");
    assert_eq!(stats.connections, 5, "{stats:?}");
    assert!(stats.broker.messages_received >= 2, "{stats:?}");

    // stopping the server is not held up by in-process connections, and they end
    drop(net);
    drop(net5);
    timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown with in-process connections open");
    let ended = timeout(Duration::from_secs(10), async {
        loop {
            match inside_events.recv().await {
                Some(Ok(_)) => {}
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(ended, Some(Err(_))), "{ended:?}");
    assert!(
        local.connect().is_err(),
        "a stopped server refuses new in-process connections"
    );
    let _ = std::fs::remove_file(acl);
}
