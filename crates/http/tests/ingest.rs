//! HTTP ingestion for devices (`POST /topics/{topic}`, AWS IoT's HTTPS publish shape):
//! a device of the registry posts with its own credentials, is held to its policies, and
//! its message reaches real MQTT subscribers with the device as the publisher; device
//! credentials never open the operator API.
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

use common::{Mqtt, Reply, T, request};
use midge_auth::{NewDevice, Policy, Registry};
use midge_client::{ClientOptions, Event, Protocol, QoS};
use midge_http::{HttpConfig, HttpDeps, HttpServer};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::Value;
use tokio::time::timeout;

/// Broker with a device registry, and the HTTP listener locked to operator `alice`.
struct Setup {
    broker: Server,
    http: HttpServer,
    addr: SocketAddr,
    mqtt_port: u16,
    registry: Arc<Registry>,
    /// dev1's secret (policy `own`: publish and subscribe `devices/%u/#`).
    secret: String,
    _dir: tempfile::TempDir,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn write_password(dir: &std::path::Path) -> std::path::PathBuf {
    let hash =
        midge_auth::PasswordHash::create(b"s3cret", midge_auth::HashAlgorithm::Sha512Pbkdf2, 1_000)
            .unwrap();
    let path = dir.join("passwd");
    std::fs::write(&path, format!("alice:{}\n", hash.encode())).unwrap();
    path
}

impl Setup {
    async fn start(anonymous: bool, max_packet_size: u32) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let registry = Arc::new(Registry::open(&dir.path().join("devices.json")).unwrap());
        registry
            .add_policy(Policy {
                name: "own".into(),
                publish: vec!["devices/%u/#".into()],
                subscribe: vec!["devices/%u/#".into()],
                description: String::new(),
            })
            .unwrap();
        let (_, secret) = registry
            .add_device(NewDevice {
                name: "dev1".into(),
                policies: vec!["own".into()],
                ..NewDevice::default()
            })
            .unwrap();
        let mut config = ServerConfig {
            listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
            ..ServerConfig::default()
        };
        config.broker.max_packet_size = max_packet_size;
        let broker = Server::start_with_registry(config, Some(registry.clone()))
            .await
            .unwrap();
        let mqtt_port = broker.local_addrs()[0].port();
        let mut http_config = HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        http_config.allow_anonymous = anonymous;
        http_config.password_file = Some(write_password(dir.path()));
        let http = HttpServer::start(http_config, HttpDeps::new(&broker))
            .await
            .unwrap();
        Setup {
            addr: http.local_addr(),
            broker,
            http,
            mqtt_port,
            registry,
            secret: secret.unwrap(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: &[u8]) -> Reply {
        self.post_with(path, auth, &[("content-type", "application/json")], body)
            .await
    }

    async fn post_with(
        &self,
        path: &str,
        auth: Option<&str>,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        request(self.addr, "POST", path, &headers, Some(body.to_vec())).await
    }

    fn device(&self) -> String {
        basic("dev1", &self.secret)
    }

    /// A real MQTT 5 subscriber over TCP (anonymous: not a device, no ACL).
    async fn subscriber(&self, filter: &str) -> Mqtt {
        let id = format!("watch-{}", filter.len());
        let mut o = ClientOptions::new("127.0.0.1", self.mqtt_port, &id);
        o.connect = midge_client::codec::Connect::new(Protocol::V5, id.as_str());
        let mut m = Mqtt::start(o).await;
        m.subscribe(filter, QoS::AtLeastOnce).await;
        m
    }

    /// An in-process subscriber: it sees who published (the properties rules read).
    async fn local_subscriber(&self, filter: &str) -> Mqtt {
        let connector = midge_http::connector(self.broker.local_connector());
        let mut o = ClientOptions::new("local", 0, "origin-watch");
        o.transport = midge_client::Transport::Custom(connector);
        o.connect = midge_client::codec::Connect::new(Protocol::V5, "origin-watch");
        let mut m = Mqtt::start(o).await;
        m.subscribe(filter, QoS::AtLeastOnce).await;
        m
    }
}

/// Whether a message arrives within a short while (for "nothing was published").
async fn quiet(m: &mut Mqtt) -> bool {
    let wait = timeout(Duration::from_millis(400), async {
        loop {
            match m.events.recv().await {
                Some(Ok(Event::Message(p))) => return p,
                Some(_) => {}
                None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
    match wait {
        Ok(p) => panic!("unexpected message on {}: {:?}", p.topic, p.payload),
        Err(_) => true,
    }
}

fn property<'a>(p: &'a midge_client::codec::Publish, name: &str) -> Option<&'a str> {
    p.properties
        .user_properties
        .iter()
        .rev()
        .find(|(k, _)| &**k == name)
        .map(|(_, v)| &**v)
}

#[tokio::test]
async fn a_device_posts_and_subscribers_get_it_from_the_device() {
    let s = Setup::start(false, 1024 * 1024).await;
    let mut sub = s.subscriber("devices/#").await;
    let mut origin = s.local_subscriber("devices/#").await;

    let r = s
        .post(
            "/topics/devices/dev1/temp?qos=1",
            Some(&s.device()),
            br#"{"t":21.5}"#,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["message"], "OK");
    assert_eq!(j["topic"], "devices/dev1/temp");
    assert_eq!(j["qos"], 1);
    assert_eq!(j["username"], "dev1");
    assert_eq!(j["client_id"], "dev1@http");
    assert_eq!(j["bytes"], 10);

    let m = sub.message().await;
    assert_eq!(m.topic.as_str(), "devices/dev1/temp");
    assert_eq!(&m.payload[..], br#"{"t":21.5}"#);
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert_eq!(m.properties.payload_format_indicator, Some(1));
    // what rules see: the device published it
    let m = origin.message().await;
    assert_eq!(property(&m, "midge-username"), Some("dev1"));
    assert_eq!(property(&m, "midge-client-id"), Some("dev1@http"));

    // binary bodies pass as they are, and gzip is inflated
    let raw: Vec<u8> = (0..=255u8).collect();
    let r = s
        .post_with(
            "/topics/devices/dev1/blob",
            Some(&s.device()),
            &[("content-type", "application/octet-stream")],
            &raw,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = sub.message().await;
    assert_eq!(&m.payload[..], &raw[..]);
    assert_eq!(m.properties.payload_format_indicator, None);
    let gz = {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"zipped reading").unwrap();
        e.finish().unwrap()
    };
    let r = s
        .post_with(
            "/topics/devices/dev1/zipped",
            Some(&s.device()),
            &[("content-type", "text/plain"), ("content-encoding", "gzip")],
            &gz,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(&sub.message().await.payload[..], b"zipped reading");

    // retain: a subscriber arriving later gets it
    let r = s
        .post(
            "/topics/devices/dev1/state?retain=true&qos=1",
            Some(&s.device()),
            b"on",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = sub.message().await;
    let mut late = s.subscriber("devices/dev1/state").await;
    let m = late.message().await;
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"on");

    // a device's live MQTT connection is not taken over by its HTTP posts
    let mut o = ClientOptions::new("127.0.0.1", s.mqtt_port, "dev1");
    o.connect = midge_client::codec::Connect::new(Protocol::V5, "dev1");
    o.connect.username = Some("dev1".into());
    o.connect.password = Some(s.secret.clone().into_bytes().into());
    let mut live = Mqtt::start(o).await;
    live.subscribe("devices/dev1/#", QoS::AtLeastOnce).await;
    let r = s
        .post("/topics/devices/dev1/temp", Some(&s.device()), b"22")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut m = live.message().await;
    while m.retain {
        m = live.message().await; // the retained "state" first
    }
    assert_eq!(&m.payload[..], b"22");
    live.publish("devices/dev1/mqtt", QoS::AtLeastOnce, false, "still here")
        .await;
}

#[tokio::test]
async fn bad_credentials_topics_and_bodies_are_refused_and_publish_nothing() {
    let s = Setup::start(false, 4096).await;
    let mut sub = s.subscriber("#").await;
    let dev = s.device();

    // credentials: none, wrong, an operator's (not a device), malformed
    for (auth, why) in [
        (None, "no credentials"),
        (Some(basic("dev1", "wrong")), "wrong secret"),
        (Some(basic("nobody", "x")), "unknown device"),
        (
            Some(basic("alice", "s3cret")),
            "an operator is not a device",
        ),
        (Some("Basic !!!".to_owned()), "malformed Basic"),
    ] {
        let r = s
            .post("/topics/devices/dev1/temp", auth.as_deref(), b"1")
            .await;
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        assert!(
            r.header("www-authenticate").starts_with("Basic "),
            "{why}: {:?}",
            r.headers
        );
        assert!(!r.error().is_empty());
    }

    // topics the policy does not grant
    for topic in ["devices/dev2/temp", "other", "$SYS/broker/x"] {
        let r = s.post(&format!("/topics/{topic}"), Some(&dev), b"1").await;
        assert_eq!(r.status, 403, "{topic}: {}", r.text());
        assert!(r.error().contains(topic), "{topic}: {}", r.error());
    }
    // malformed topics and options
    for (path, needle) in [
        ("/topics/devices/dev1/%2B", "topic"),
        ("/topics/devices/dev1/a?qos=5", "qos"),
        ("/topics/devices/dev1/a?retain=maybe", "retain"),
        ("/topics/devices/dev1/a?qso=1", "unknown parameter"),
    ] {
        let r = s.post(path, Some(&dev), b"1").await;
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert!(r.error().contains(needle), "{path}: {}", r.error());
    }
    let r = s
        .post_with(
            "/topics/devices/dev1/a",
            Some(&dev),
            &[("content-encoding", "gzip")],
            b"not gzip",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s
        .post_with(
            "/topics/devices/dev1/a",
            Some(&dev),
            &[("content-encoding", "br")],
            b"x",
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text());

    // larger than the broker's maximum packet size (4096 here), and than the HTTP limit
    let r = s
        .post("/topics/devices/dev1/big", Some(&dev), &vec![b'x'; 5000])
        .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.error().contains("maximum packet size"), "{}", r.error());
    let r = s
        .post(
            "/topics/devices/dev1/big",
            Some(&dev),
            &vec![b'x'; midge_http::MAX_BODY_BYTES + 1],
        )
        .await;
    assert_eq!(r.status, 413, "{}", r.text());

    // a disabled device
    s.registry
        .patch_device(
            "dev1",
            midge_auth::DevicePatch {
                enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    let r = s.post("/topics/devices/dev1/temp", Some(&dev), b"1").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.error().contains("disabled"), "{}", r.error());

    assert!(quiet(&mut sub).await);

    // and a good one still goes through once enabled again
    s.registry
        .patch_device(
            "dev1",
            midge_auth::DevicePatch {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    let r = s.post("/topics/devices/dev1/ok", Some(&dev), b"1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = sub.message().await;
    assert_eq!(m.topic.as_str(), "devices/dev1/ok");
}

/// Every operator route with a device's right credentials: 401 or 403, never served.
async fn assert_device_is_refused_everywhere(s: &Setup) {
    let paths = [
        "/api/v1/stats",
        "/api/v1/session",
        "/api/v1/listeners",
        "/api/v1/rules",
        "/api/v1/rules/test",
        "/api/v1/rules/r1",
        "/api/v1/tables",
        "/api/v1/tables/t/topics",
        "/api/v1/tables/t/rows",
        "/api/v1/tables/t/series",
        "/api/v1/publish",
        "/api/v1/live?filter=%23",
        "/api/v1/last?topic=%23",
        "/api/v1/tokens",
        "/api/v1/tokens/x",
        "/api/v1/dashboard",
        "/api/v1/dashboards",
        "/api/v1/dashboards/x",
        "/api/v1/dashboards/x/export",
        "/api/v1/access-keys",
        "/api/v1/access-keys/x",
        "/api/v1/devices",
        "/api/v1/devices/dev1",
        "/api/v1/devices/dev1/rotate",
        "/api/v1/devices/dev1/publish",
        "/api/v1/devices/dev1/topics",
        "/api/v1/policies",
        "/api/v1/policies/own",
        "/api/v1/groups",
        "/api/v1/groups/g",
        "/api/v1/registry",
        "/api/v1/clients",
        "/api/v1/clients/dev1",
        "/api/v1/sessions",
        "/api/v1/sessions/dev1",
        "/api/v1/subscriptions",
        "/api/v1/retained",
        "/api/v1/alarms",
        "/api/v1/alarms/history",
        "/api/v1/alarms/x",
        "/api/v1/alarms/x/ack",
        "/metrics",
        "/v1/metric",
        "/",
    ];
    let dev = s.device();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            let r = request(
                s.addr,
                method,
                path,
                &[
                    ("authorization", dev.as_str()),
                    ("content-type", "application/json"),
                ],
                Some(
                    br#"{"name":"x","policies":["own"],"topic":"devices/dev1/x","payload":"1"}"#
                        .to_vec(),
                ),
            )
            .await;
            assert!(
                r.status == 401 || r.status == 403,
                "{method} {path} with device credentials answered {}: {}",
                r.status,
                r.text()
            );
        }
    }
    // nor does the login form start a session for it
    let body = format!(
        "username=dev1&password={}&next=%2F",
        form_urlencoded_encode(&s.secret)
    );
    let r = request(
        s.addr,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(body.into_bytes()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.header("set-cookie").is_empty());
}

/// One request with this `Host` (the common client always names the address); its status.
async fn raw_status(addr: SocketAddr, method: &str, path: &str, host: &str, auth: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = if auth.is_empty() {
        String::new()
    } else {
        format!("Authorization: {auth}\r\n")
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: 1\r\nConnection: close\r\n\r\n1"
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    timeout(T, c.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn form_urlencoded_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn device_credentials_never_open_the_operator_api() {
    let s = Setup::start(false, 1024 * 1024).await;
    assert_device_is_refused_everywhere(&s).await;
    // the operator's own credentials do open it (the refusals above are about the device)
    let alice = basic("alice", "s3cret");
    let r = request(
        s.addr,
        "GET",
        "/api/v1/devices",
        &[("authorization", alice.as_str())],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let names: Vec<Value> = r.json()["devices"].as_array().cloned().unwrap_or_default();
    assert!(names.iter().any(|d| d["name"] == "dev1"), "{}", r.text());
}

#[tokio::test]
async fn device_credentials_are_refused_even_on_an_anonymous_listener() {
    let s = Setup::start(true, 1024 * 1024).await;
    // anonymous callers are served...
    let r = request(s.addr, "GET", "/api/v1/stats", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // ...but a request carrying a device's credentials is the device's, and refused
    assert_device_is_refused_everywhere(&s).await;
    // a device posting to a host name: not held to the DNS-rebinding check of anonymous
    // listeners (which still refuses the operator API under that name)
    let mut sub = s.subscriber("devices/#").await;
    let dev = s.device();
    let status = raw_status(
        s.addr,
        "POST",
        "/topics/devices/dev1/named",
        "midge.example",
        &dev,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sub.message().await.topic.as_str(), "devices/dev1/named");
    let status = raw_status(s.addr, "GET", "/api/v1/stats", "midge.example", "").await;
    assert_eq!(status, 421);
    let _ = timeout(T, s.http.shutdown()).await;
}
