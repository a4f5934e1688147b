//! midge-client against real brokers: mosquitto processes started by each test (killed and
//! restarted for the reconnect tests), and a scripted server for the DUP redelivery check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
#![allow(clippy::result_large_err)] // tungstenite's handshake callback signature

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_client::codec::{
    ConnAck, ConnAckProperties, Packet, Protocol, PubAck, Publish, ReasonCode, TopicName, decode,
};
use midge_client::{
    Client, ClientError, ClientOptions, Direction, Event, EventLoop, PacketHook, QoS, Reconnect,
    TlsOptions, TlsVersion, Transport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A mosquitto process on a fixed port with its own config and data directory.
struct Broker {
    child: Option<Child>,
    port: u16,
    _dir: Arc<tempfile::TempDir>,
    conf: PathBuf,
}

impl Broker {
    fn start(extra: &str) -> Broker {
        for _ in 0..10 {
            let dir = Arc::new(tempfile::tempdir().unwrap());
            let port = free_port();
            let conf = dir.path().join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nuser root\nallow_anonymous true\n{}",
                    extra.replace("$DIR", dir.path().to_str().unwrap())
                ),
            )
            .unwrap();
            let mut b = Broker {
                child: None,
                port,
                _dir: dir,
                conf,
            };
            if b.spawn() {
                return b;
            }
        }
        panic!("could not start mosquitto");
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().unwrap().is_some() {
                    self.child = None;
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stop with SIGTERM (mosquitto saves its persistence file) and wait for the exit.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Send a signal to our broker process only.
    fn signal(&self, sig: &str) {
        if let Some(c) = self.child.as_ref() {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGKILL: the broker dies without saving anything.
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("mosquitto did not restart on port {}", self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn options(port: u16, id: &str, protocol: Protocol) -> ClientOptions {
    let mut o = ClientOptions::new("127.0.0.1", port, id);
    o.connect.protocol = protocol;
    o.connect_timeout = Duration::from_secs(5);
    o
}

/// Poll until `pick` accepts an event (errors fail the test), within 10 s.
async fn wait_for<T>(
    events: &mut EventLoop,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        match event {
            Ok(e) => {
                if let Some(v) = pick(&e) {
                    return v;
                }
            }
            Err(e) => panic!("error while waiting for {what}: {e}"),
        }
    }
}

async fn connected(events: &mut EventLoop) -> ConnAck {
    wait_for(events, "CONNACK", |e| match e {
        Event::Connected(c) => Some(c.clone()),
        _ => None,
    })
    .await
}

/// Drive an event loop in the background, forwarding its events.
fn drive(mut events: EventLoop) -> tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let e = events.poll().await.map_err(|e| e.to_string());
            let stop = matches!(e, Err(_) | Ok(Event::Closed));
            if tx.send(e).is_err() || stop {
                break;
            }
        }
    });
    rx
}

async fn next_message(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>>,
) -> Publish {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("timed out waiting for a message")
            .expect("event loop ended");
        match e {
            Ok(Event::Message(m)) => return m,
            Ok(_) => {}
            Err(e) => panic!("subscriber error: {e}"),
        }
    }
}

async fn subscribed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Event, String>>) {
    loop {
        match rx.recv().await.expect("event loop ended") {
            Ok(Event::SubAck(_)) => return,
            Ok(_) => {}
            Err(e) => panic!("subscriber error: {e}"),
        }
    }
}

#[tokio::test]
async fn publish_and_receive_every_qos_in_every_protocol_version() {
    let b = Broker::start("");
    for protocol in [Protocol::V31, Protocol::V311, Protocol::V5] {
        let (sub, sub_events) = Client::new(options(b.port, &format!("s-{protocol:?}"), protocol));
        let mut rx = drive(sub_events);
        sub.subscribe("rt/#", QoS::ExactlyOnce).await.unwrap();
        subscribed(&mut rx).await;

        let (publisher, mut events) = Client::new(options(b.port, "p", protocol));
        connected(&mut events).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let topic = format!("rt/{}", qos.as_u8());
            publisher
                .publish(&topic, qos, false, format!("{protocol:?} {qos:?}"))
                .await
                .unwrap();
            let (pid, done_qos, reason) = wait_for(&mut events, "Published", |e| match e {
                Event::Published {
                    packet_id,
                    qos,
                    reason,
                } => Some((*packet_id, *qos, *reason)),
                _ => None,
            })
            .await;
            assert_eq!(done_qos, qos);
            assert_eq!(pid == 0, qos == QoS::AtMostOnce);
            assert!(!reason.is_error());
            let m = next_message(&mut rx).await;
            assert_eq!(m.topic.as_str(), topic);
            assert_eq!(m.qos, qos);
            assert_eq!(&m.payload[..], format!("{protocol:?} {qos:?}").as_bytes());
        }
        publisher.disconnect().await.unwrap();
        wait_for(&mut events, "Closed", |e| {
            matches!(e, Event::Closed).then_some(())
        })
        .await;
        assert!(matches!(events.poll().await, Err(ClientError::Closed)));
    }
}

#[tokio::test]
async fn v5_properties_travel_both_ways() {
    let b = Broker::start("");
    let mut so = options(b.port, "v5sub", Protocol::V5);
    so.connect.properties.session_expiry_interval = Some(30);
    let (sub, mut sub_events) = Client::new(so);
    let connack = connected(&mut sub_events).await;
    // mosquitto tells us its limits in the CONNACK
    assert!(connack.properties.topic_alias_maximum.is_some() || !connack.properties.is_empty());
    let mut rx = drive(sub_events);
    let filter = midge_client::codec::TopicFilter::new("v5/#").unwrap();
    let props = midge_client::codec::SubscribeProperties {
        subscription_identifier: Some(42),
        ..Default::default()
    };
    sub.subscribe_many(
        vec![(
            filter,
            midge_client::codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
        )],
        props,
    )
    .await
    .unwrap();
    subscribed(&mut rx).await;

    let (publisher, mut events, connack) = Client::connect(options(b.port, "v5pub", Protocol::V5))
        .await
        .unwrap();
    assert!(!connack.session_present);
    assert!(!connack.reason.is_error());
    let mut p = Publish::new(TopicName::new("v5/x").unwrap(), "with props");
    p.qos = QoS::AtLeastOnce;
    p.properties.content_type = Some("text/plain".into());
    p.properties.user_properties.push(("k".into(), "v".into()));
    p.properties.message_expiry_interval = Some(60);
    publisher.publish_packet(p).await.unwrap();
    wait_for(&mut events, "Published", |e| {
        matches!(e, Event::Published { .. }).then_some(())
    })
    .await;
    let m = next_message(&mut rx).await;
    assert_eq!(m.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(m.properties.user_properties, vec![("k".into(), "v".into())]);
    assert_eq!(m.properties.subscription_identifiers, vec![42]);
    assert!(m.properties.message_expiry_interval.is_some());
}

#[tokio::test]
async fn server_receive_maximum_limits_messages_in_flight() {
    let b = Broker::start("max_inflight_messages 2\n");
    let inflight = Arc::new(Mutex::new((0i32, 0i32))); // (current, max seen)
    let seen = inflight.clone();
    let mut o = options(b.port, "rm", Protocol::V5);
    o.packet_hook = Some(PacketHook::new(move |dir, packet| {
        let mut s = seen.lock().unwrap();
        match (dir, packet) {
            (Direction::Sent, Packet::Publish(_)) => s.0 += 1,
            (Direction::Received, Packet::PubAck(_)) => s.0 -= 1,
            _ => {}
        }
        s.1 = s.1.max(s.0);
    }));
    let (client, mut events) = Client::new(o);
    let connack = connected(&mut events).await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for i in 0..20 {
        client
            .publish("rm/t", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut done = 0;
    while done < 20 {
        wait_for(&mut events, "Published", |e| {
            matches!(e, Event::Published { .. }).then_some(())
        })
        .await;
        done += 1;
    }
    let (current, max) = *inflight.lock().unwrap();
    assert_eq!(current, 0);
    assert_eq!(
        max, 2,
        "never more than the server's receive maximum in flight"
    );
}

#[tokio::test]
async fn keepalive_sends_pingreq_and_gets_pingresp() {
    let b = Broker::start("");
    let pings = Arc::new(Mutex::new(Vec::new()));
    let seen = pings.clone();
    let mut o = options(b.port, "ka", Protocol::V311);
    o.connect.keep_alive = 1;
    o.packet_hook = Some(PacketHook::new(move |dir, packet| {
        if matches!(packet, Packet::PingReq | Packet::PingResp) {
            seen.lock().unwrap().push((dir, packet.packet_type()));
        }
    }));
    let (_client, mut events) = Client::new(o);
    connected(&mut events).await;
    let _ = tokio::time::timeout(Duration::from_millis(2500), async {
        loop {
            events.poll().await.unwrap();
        }
    })
    .await;
    let pings = pings.lock().unwrap();
    assert!(pings.len() >= 2, "{pings:?}");
    assert_eq!(pings[0].0, Direction::Sent);
    assert_eq!(pings[1].0, Direction::Received);
}

#[tokio::test]
async fn refused_connection_reports_the_reason() {
    let b = Broker::start("");
    // mosquitto refuses an empty client id with clean session off
    let mut o = options(b.port, "", Protocol::V311);
    o.connect.clean_start = false;
    let (_c, mut events) = Client::new(o);
    match events.poll().await {
        Err(ClientError::Refused { reason, .. }) => {
            assert_eq!(reason, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnects_after_broker_restart_and_delivers_queued_messages_to_persistent_session() {
    let mut b = Broker::start("persistence true\npersistence_location $DIR/\n");
    let port = b.port;

    // a persistent subscriber, then gone
    let mut so = options(port, "persistent-sub", Protocol::V311);
    so.connect.clean_start = false;
    let (sub, mut sub_events) = Client::new(so.clone());
    connected(&mut sub_events).await;
    sub.subscribe("persist/#", QoS::AtLeastOnce).await.unwrap();
    wait_for(&mut sub_events, "SUBACK", |e| {
        matches!(e, Event::SubAck(_)).then_some(())
    })
    .await;
    sub.disconnect().await.unwrap();
    wait_for(&mut sub_events, "Closed", |e| {
        matches!(e, Event::Closed).then_some(())
    })
    .await;

    // a publisher with automatic reconnect
    let mut po = options(port, "persistent-pub", Protocol::V311);
    po.connect.clean_start = false;
    po.reconnect = Some(Reconnect {
        min: Duration::from_millis(100),
        max: Duration::from_millis(400),
    });
    let (publisher, mut events) = Client::new(po);
    connected(&mut events).await;
    publisher
        .publish("persist/a", QoS::AtLeastOnce, false, "before")
        .await
        .unwrap();
    wait_for(&mut events, "Published", |e| {
        matches!(e, Event::Published { .. }).then_some(())
    })
    .await;

    b.stop();
    wait_for(&mut events, "ConnectionLost", |e| {
        matches!(e, Event::ConnectionLost(_)).then_some(())
    })
    .await;
    // queued while the broker is down: sent after the reconnect
    publisher
        .publish("persist/b", QoS::AtLeastOnce, false, "during")
        .await
        .unwrap();
    publisher
        .publish("persist/c", QoS::ExactlyOnce, false, "during2")
        .await
        .unwrap();
    let restart = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        b.restart();
        b
    });
    let mut published = 0;
    let mut reconnected = false;
    while published < 2 {
        let e = tokio::time::timeout(Duration::from_secs(15), events.poll())
            .await
            .expect("publisher made no progress")
            .expect("reconnect mode reports losses as events");
        match e {
            Event::Connected(c) => {
                reconnected = true;
                assert!(c.session_present, "mosquitto kept the publisher's session");
            }
            Event::Published { reason, .. } => {
                assert!(!reason.is_error());
                published += 1;
            }
            _ => {}
        }
    }
    assert!(reconnected);
    let _b = restart.join().unwrap();

    // the subscriber's session survived the restart with all three messages
    let (_sub, mut sub_events) = Client::new(so);
    let c = connected(&mut sub_events).await;
    assert!(
        c.session_present,
        "mosquitto restored the subscriber's session"
    );
    let mut rx = drive(sub_events);
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next_message(&mut rx).await;
        got.push(String::from_utf8(m.payload.to_vec()).unwrap());
    }
    assert_eq!(got, ["before", "during", "during2"]);
}

/// Read one packet from a scripted server's socket.
async fn read_packet(sock: &mut tokio::net::TcpStream, buf: &mut BytesMut) -> Packet {
    loop {
        if let Some(p) = decode(buf, Protocol::V311, 1 << 20).unwrap() {
            return p;
        }
        let n = sock.read_buf(buf).await.unwrap();
        assert!(n > 0, "client closed");
    }
}

async fn write_packet(sock: &mut tokio::net::TcpStream, p: Packet) {
    let mut out = BytesMut::new();
    p.encode(Protocol::V311, &mut out).unwrap();
    sock.write_all(&out).await.unwrap();
}

#[tokio::test]
async fn unacknowledged_publish_is_redelivered_with_dup_after_reconnect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let connack = |present| {
            Packet::ConnAck(ConnAck {
                session_present: present,
                reason: ReasonCode::SUCCESS,
                properties: ConnAckProperties::default(),
            })
        };
        // first connection: take the PUBLISH, never acknowledge it, drop the connection
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_packet(&mut s, &mut buf).await,
            Packet::Connect(_)
        ));
        write_packet(&mut s, connack(false)).await;
        let first = match read_packet(&mut s, &mut buf).await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        assert!(!first.dup);
        drop(s);
        // second connection: the session is present, the PUBLISH must come back with DUP
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        match read_packet(&mut s, &mut buf).await {
            Packet::Connect(c) => assert!(!c.clean_start),
            other => panic!("expected CONNECT, got {other:?}"),
        }
        write_packet(&mut s, connack(true)).await;
        let again = match read_packet(&mut s, &mut buf).await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        };
        assert!(again.dup, "redelivery carries DUP");
        assert_eq!(again.packet_id, first.packet_id);
        assert_eq!(again.payload, first.payload);
        write_packet(&mut s, Packet::PubAck(PubAck::new(again.packet_id))).await;
        // keep the socket open until the client disconnects
        let _ = read_packet(&mut s, &mut buf).await;
    });

    let mut o = options(port, "dup", Protocol::V311);
    o.connect.clean_start = false;
    o.reconnect = Some(Reconnect {
        min: Duration::from_millis(50),
        max: Duration::from_millis(50),
    });
    let (client, mut events) = Client::new(o);
    connected(&mut events).await;
    client
        .publish("dup/t", QoS::AtLeastOnce, false, "once")
        .await
        .unwrap();
    wait_for(&mut events, "ConnectionLost", |e| {
        matches!(e, Event::ConnectionLost(_)).then_some(())
    })
    .await;
    let reason = wait_for(&mut events, "Published", |e| match e {
        Event::Published { reason, .. } => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, ReasonCode::SUCCESS);
    client.disconnect().await.unwrap();
    wait_for(&mut events, "Closed", |e| {
        matches!(e, Event::Closed).then_some(())
    })
    .await;
    server.await.unwrap();
}

#[tokio::test]
async fn will_is_sent_when_the_connection_drops() {
    let b = Broker::start("");
    let (watcher, events) = Client::new(options(b.port, "watcher", Protocol::V5));
    let mut rx = drive(events);
    watcher
        .subscribe("wills/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscribed(&mut rx).await;

    let mut o = options(b.port, "doomed", Protocol::V5);
    o.connect.will = Some(midge_client::codec::LastWill {
        topic: TopicName::new("wills/doomed").unwrap(),
        payload: "offline".into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    });
    let (_doomed, mut events) = Client::new(o);
    connected(&mut events).await;
    drop(events); // the socket closes without DISCONNECT
    let m = next_message(&mut rx).await;
    assert_eq!(m.topic.as_str(), "wills/doomed");
    assert_eq!(&m.payload[..], b"offline");
}

/// Make a CA and a server certificate for 127.0.0.1 with openssl.
fn make_certs(dir: &Path) {
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=midge-test-ca",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
    );
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key -out other.crt -days 2 -subj /CN=other-ca",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key -out client.csr -subj /CN=midge-client",
    );
    // v3 extensions: webpki refuses X.509 v1 certificates
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    sh(concat!(
        "openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial ",
        "-out client.crt -days 2 -extfile client.cnf"
    ));
}

#[tokio::test]
async fn tls_with_ca_file_insecure_mode_and_version_pinning() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().display().to_string();
    let b = Broker::start(&format!(
        "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
    ));
    let tls = |ca: Option<&str>, insecure: bool, version: Option<TlsVersion>| TlsOptions {
        ca_file: ca.map(|f| dir.path().join(f)),
        insecure,
        version,
        ..Default::default()
    };
    for (name, t, ok) in [
        ("ca file", tls(Some("ca.crt"), false, None), true),
        (
            "tls 1.2",
            tls(Some("ca.crt"), false, Some(TlsVersion::Tls12)),
            true,
        ),
        (
            "tls 1.3",
            tls(Some("ca.crt"), false, Some(TlsVersion::Tls13)),
            true,
        ),
        ("wrong ca", tls(Some("other.crt"), false, None), false),
        ("insecure", tls(Some("other.crt"), true, None), true),
    ] {
        let mut o = options(b.port, "tls", Protocol::V311);
        o.transport = Transport::Tls(t);
        let (client, mut events) = Client::new(o);
        let result = events.poll().await;
        assert_eq!(result.is_ok(), ok, "{name}: {result:?}");
        if ok {
            client
                .publish("tls/t", QoS::AtLeastOnce, false, "secret")
                .await
                .unwrap();
            wait_for(&mut events, "Published", |e| {
                matches!(e, Event::Published { .. }).then_some(())
            })
            .await;
        }
    }
}

/// A WebSocket-to-TCP bridge in front of mosquitto (Debian's mosquitto here cannot open a
/// websockets listener): checks the `mqtt` subprotocol and binary frames, forwards bytes.
async fn ws_bridge(target: u16) -> (u16, tokio::sync::oneshot::Receiver<String>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut protocol = String::new();
        let ws = tokio_tungstenite::accept_hdr_async(sock, |req: &Request, mut resp: Response| {
            protocol = req
                .headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
            Ok(resp)
        })
        .await
        .unwrap();
        let _ = tx.send(protocol);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", target))
            .await
            .unwrap();
        let (mut tr, mut tw) = tcp.into_split();
        let (mut wsw, mut wsr) = ws.split();
        let up = async move {
            while let Some(Ok(msg)) = wsr.next().await {
                match msg {
                    Message::Binary(b) => tw.write_all(&b).await.unwrap(),
                    Message::Close(_) => break,
                    Message::Text(_) => panic!("MQTT over WebSocket must use binary frames"),
                    _ => {}
                }
            }
        };
        let down = async move {
            let mut buf = vec![0u8; 8192];
            loop {
                let n = tr.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                if wsw.send(Message::Binary(buf[..n].to_vec())).await.is_err() {
                    break;
                }
            }
        };
        tokio::join!(up, down);
    });
    (port, rx)
}

#[tokio::test]
async fn websocket_transport_speaks_binary_frames_with_mqtt_subprotocol() {
    let b = Broker::start("");
    let (sub, events) = Client::new(options(b.port, "ws-watch", Protocol::V311));
    let mut rx = drive(events);
    sub.subscribe("ws/#", QoS::AtMostOnce).await.unwrap();
    subscribed(&mut rx).await;

    let (ws_port, protocol) = ws_bridge(b.port).await;
    let mut o = options(ws_port, "ws-client", Protocol::V5);
    o.transport = Transport::Ws("/mqtt".into());
    let (client, mut events) = Client::new(o);
    connected(&mut events).await;
    assert_eq!(protocol.await.unwrap(), "mqtt");
    client
        .publish("ws/t", QoS::ExactlyOnce, false, "over websocket")
        .await
        .unwrap();
    wait_for(&mut events, "Published", |e| {
        matches!(e, Event::Published { .. }).then_some(())
    })
    .await;
    let m = next_message(&mut rx).await;
    assert_eq!(&m.payload[..], b"over websocket");
}

#[tokio::test]
async fn in_flight_publish_is_redelivered_with_dup_after_the_broker_crashes() {
    let mut b = Broker::start("persistence true\npersistence_location $DIR/\n");
    let port = b.port;

    // a persistent subscriber, saved to disk by a clean broker restart
    let mut so = options(port, "crash-sub", Protocol::V311);
    so.connect.clean_start = false;
    let (sub, mut sub_events, _) = Client::connect(so.clone()).await.unwrap();
    sub.subscribe("crash/#", QoS::AtLeastOnce).await.unwrap();
    wait_for(&mut sub_events, "SUBACK", |e| {
        matches!(e, Event::SubAck(_)).then_some(())
    })
    .await;
    sub.disconnect().await.unwrap();
    wait_for(&mut sub_events, "Closed", |e| {
        matches!(e, Event::Closed).then_some(())
    })
    .await;
    b.stop();
    b.restart();

    // the publisher's PUBLISH reaches a frozen broker, which then dies without acking
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    let mut po = options(port, "crash-pub", Protocol::V311);
    po.connect.clean_start = false;
    po.reconnect = Some(Reconnect {
        min: Duration::from_millis(100),
        max: Duration::from_millis(300),
    });
    po.packet_hook = Some(PacketHook::new(move |dir, packet| {
        if let (Direction::Sent, Packet::Publish(p)) = (dir, packet) {
            seen.lock().unwrap().push((p.dup, p.packet_id));
        }
    }));
    let (publisher, events, _) = Client::connect(po).await.unwrap();
    let mut rx = drive(events);
    b.signal("STOP");
    publisher
        .publish("crash/t", QoS::AtLeastOnce, false, "in flight")
        .await
        .unwrap();
    let start = Instant::now();
    while sent.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "PUBLISH never written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.crash(); // SIGKILL works on a stopped process: the PUBLISH is never handled
    b.restart();

    // reconnect, redeliver with DUP, get the PUBACK
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let e = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("no PUBACK after the restart")
            .expect("event loop ended");
        match e {
            Ok(Event::Published { reason, .. }) => {
                assert!(!reason.is_error());
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("publisher error: {e}"),
        }
    }
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], (false, 1));
    assert_eq!(
        sent[1],
        (true, 1),
        "the redelivery carries DUP and the same packet id"
    );

    // and the subscriber's restored session got the message
    let (_sub, sub_events) = Client::new(so);
    let mut rx = drive(sub_events);
    let m = next_message(&mut rx).await;
    assert_eq!(&m.payload[..], b"in flight");
}

#[tokio::test]
async fn tls_client_certificate_is_presented_when_required() {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let d = dir.path().display().to_string();
    let b = Broker::start(&format!(
        "cafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\nrequire_certificate true\n"
    ));
    let connect = |with_cert: bool| {
        let mut o = options(b.port, "certified", Protocol::V5);
        o.transport = Transport::Tls(TlsOptions {
            ca_file: Some(dir.path().join("ca.crt")),
            client_cert: with_cert.then(|| dir.path().join("client.crt")),
            client_key: with_cert.then(|| dir.path().join("client.key")),
            ..Default::default()
        });
        Client::connect(o)
    };
    assert!(
        connect(false).await.is_err(),
        "the broker wants a certificate"
    );
    let (client, mut events, _) = connect(true).await.unwrap();
    client
        .publish("cert/t", QoS::AtLeastOnce, false, "signed")
        .await
        .unwrap();
    wait_for(&mut events, "Published", |e| {
        matches!(e, Event::Published { .. }).then_some(())
    })
    .await;
    // a certificate without its key is a configuration error, reported before connecting
    let mut o = options(b.port, "half", Protocol::V5);
    o.transport = Transport::Tls(TlsOptions {
        ca_file: Some(dir.path().join("ca.crt")),
        client_cert: Some(dir.path().join("client.crt")),
        ..Default::default()
    });
    assert!(matches!(Client::connect(o).await, Err(ClientError::Tls(_))));
}
