//! A real broker (TCP listener on 127.0.0.1:0), a series store in a temporary folder and the
//! HTTP server on 127.0.0.1:0, plus small HTTP, SSE and MQTT clients for driving them.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

pub mod browser;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use midge_client::{Client, ClientError, ClientOptions, Event, Protocol, QoS};
use midge_http::{HttpConfig, HttpDeps, HttpServer};
use midge_series::{SeriesOptions, SeriesStore};
use midge_server::{ListenerConfig, Server, ServerConfig};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Bound on every wait.
pub const T: Duration = Duration::from_secs(15);

/// Broker + store + HTTP server.
pub struct Hub {
    pub broker: Server,
    pub mqtt_port: u16,
    pub store: Arc<SeriesStore>,
    pub http: Option<HttpServer>,
    pub addr: SocketAddr,
    pub config: HttpConfig,
    pub deps: HttpDeps,
    pub dir: tempfile::TempDir,
}

impl Hub {
    /// Start everything; `tweak` adjusts the HTTP configuration (the temp folder is given
    /// for files).
    pub async fn start(tweak: impl FnOnce(&mut HttpConfig, &std::path::Path)) -> Hub {
        Hub::start_with(tweak, |_| {}).await
    }

    pub async fn start_with(
        tweak: impl FnOnce(&mut HttpConfig, &std::path::Path),
        deps_tweak: impl FnOnce(&mut HttpDeps),
    ) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
            ..ServerConfig::default()
        };
        let broker = Server::start(config).await.unwrap();
        let mqtt_port = broker.local_addrs()[0].port();
        let store = Arc::new(
            SeriesStore::open(&dir.path().join("series.db"), SeriesOptions::default()).unwrap(),
        );
        let mut deps = HttpDeps::new(&broker);
        deps.series = Some(store.clone());
        deps_tweak(&mut deps);
        let mut config = HttpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        tweak(&mut config, dir.path());
        let http = HttpServer::start(config.clone(), deps.clone())
            .await
            .unwrap();
        let addr = http.local_addr();
        Hub {
            broker,
            mqtt_port,
            store,
            http: Some(http),
            addr,
            config,
            deps,
            dir,
        }
    }

    /// Stop the HTTP server and start a new one with the same configuration and broker.
    pub async fn restart_http(&mut self) {
        if let Some(h) = self.http.take() {
            timeout(T, h.shutdown()).await.expect("HTTP shutdown");
        }
        let http = HttpServer::start(self.config.clone(), self.deps.clone())
            .await
            .unwrap();
        self.addr = http.local_addr();
        self.http = Some(http);
    }

    /// An MQTT 5 client over TCP, its events forwarded to a channel.
    pub async fn mqtt(&self, id: &str) -> Mqtt {
        let mut o = ClientOptions::new("127.0.0.1", self.mqtt_port, id);
        o.connect = midge_client::codec::Connect::new(Protocol::V5, id);
        Mqtt::start(o).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], None).await
    }

    pub async fn send_json(&self, method: &str, path: &str, body: &Value) -> Reply {
        request(
            self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    /// The broker's figures over the API.
    pub async fn stats(&self) -> Value {
        let r = self.get("/api/v1/stats").await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }

    /// The `error` message of a JSON error answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.text()))
            .to_owned()
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> hyper::Response<Incoming> {
    let stream = timeout(T, TcpStream::connect(addr)).await.unwrap().unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    timeout(T, sender.send_request(req))
        .await
        .expect("HTTP answer in time")
        .unwrap()
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let resp = send(addr, method, path, headers, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = timeout(T, resp.into_body().collect())
        .await
        .expect("HTTP body in time")
        .unwrap()
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A server-sent events stream being read.
pub struct Sse {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    body: Incoming,
    buf: String,
    /// The `id:` of the last event [`Sse::next`] returned (`None` if it had none).
    pub last_id: Option<String>,
}

impl Sse {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sse {
        let resp = send(addr, "GET", path, headers, None).await;
        Sse {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.into_body(),
            buf: String::new(),
            last_id: None,
        }
    }

    /// The body of an answer that is not a stream (an error).
    pub async fn rest(mut self) -> String {
        while let Ok(Some(Ok(f))) = timeout(T, self.body.frame()).await {
            if let Ok(d) = f.into_data() {
                self.buf.push_str(&String::from_utf8_lossy(&d));
            }
        }
        self.buf
    }

    /// The next `data:` event as JSON (comments and keep-alives skipped); `None` when the
    /// stream ended. Panics after [`T`].
    pub async fn next(&mut self) -> Option<Value> {
        let deadline = Instant::now() + T;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    self.last_id = event
                        .lines()
                        .find_map(|l| l.strip_prefix("id:"))
                        .map(|d| d.trim().to_owned());
                    return Some(serde_json::from_str(&data.join("\n")).unwrap());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.body.frame()).await {
                Err(_) => panic!("no server-sent event within {T:?}"),
                Ok(None) => return None,
                Ok(Some(Err(e))) => panic!("stream failed: {e}"),
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&d));
                    }
                }
            }
        }
    }
}

pub type Events = mpsc::UnboundedReceiver<Result<Event, ClientError>>;

/// An MQTT client whose event loop runs in a task.
pub struct Mqtt {
    pub client: Client,
    pub events: Events,
}

impl Mqtt {
    pub async fn start(options: ClientOptions) -> Mqtt {
        let (client, mut events, _) = timeout(T, Client::connect(options))
            .await
            .expect("CONNACK in time")
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
        Mqtt { client, events: rx }
    }

    pub async fn next(&mut self, what: &str, pick: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.events.recv()).await {
                Ok(Some(Ok(e))) if pick(&e) => return e,
                Ok(Some(Ok(_))) => {}
                other => panic!("no {what}: {other:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        let ack = self.next("SUBACK", |e| matches!(e, Event::SubAck(_))).await;
        assert!(
            matches!(&ack, Event::SubAck(a) if !a.reasons[0].is_error()),
            "{ack:?}"
        );
    }

    pub async fn message(&mut self) -> midge_client::codec::Publish {
        match self
            .next("message", |e| matches!(e, Event::Message(_)))
            .await
        {
            Event::Message(m) => m,
            _ => unreachable!(),
        }
    }

    /// Publish and wait until it is done (written for QoS 0, acknowledged otherwise).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, Bytes::from(payload.to_owned()))
            .await
            .unwrap();
        // QoS 0 publishes written earlier report too: wait for one of this QoS
        self.next(
            "publish done",
            |e| matches!(e, Event::Published { qos: q, .. } if *q == qos),
        )
        .await;
    }
}

/// Poll `f` until it returns `Some` (bounded by [`T`]).
pub async fn eventually<F, Fut, R>(what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JSON object for a series row.
pub fn obj(v: Value) -> midge_series::JsonObject {
    v.as_object().cloned().unwrap()
}
