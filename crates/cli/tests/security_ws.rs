//! MQTT over WebSockets: raw frames with tokio-tungstenite (subprotocol negotiation, a
//! packet split over frames, several packets in one frame, ping/pong, close, paths), and
//! Python paho with `transport="websockets"` over ws:// and wss://.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use common::Midge;
use common::security::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};

fn ws_broker(extra: &str) -> Midge {
    Midge::serve().exact_config(&format!(
        "[[listener]]\nport = {{port0}}\nprotocol = \"websockets\"\nallow_anonymous = true\n{extra}\n"
    )).start()
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Open a WebSocket offering `protocols`; the negotiated subprotocol, or the HTTP error.
async fn open(port: u16, path: &str, protocols: &str) -> Result<(Ws, Option<String>), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    if !protocols.is_empty() {
        req.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_str(protocols).unwrap(),
        );
    }
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            let p = resp
                .headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, p))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Read binary messages until `n` bytes arrived (bounded).
async fn read_bytes(ws: &mut Ws, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("timeout")
            .unwrap()
            .unwrap();
        match m {
            Message::Binary(b) => got.extend(b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

fn subscribe(topic: &str) -> Vec<u8> {
    let mut body = vec![0, 1, 0, topic.len() as u8];
    body.extend_from_slice(topic.as_bytes());
    body.push(0);
    let mut p = vec![0x82, body.len() as u8];
    p.extend(body);
    p
}

fn publish(topic: &str, payload: &str) -> Vec<u8> {
    let mut body = vec![0, topic.len() as u8];
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload.as_bytes());
    let mut p = vec![0x30, body.len() as u8];
    p.extend(body);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_is_negotiated_and_unknown_paths_or_protocols_are_refused() {
    let b = ws_broker("");
    let port = b.ports[0];
    for (offer, want) in [
        ("mqtt", Some("mqtt")),
        ("mqttv3.1", Some("mqttv3.1")),
        ("foo,mqttv3.1,mqtt", Some("mqttv3.1")),
        ("", None),
    ] {
        let (_, got) = open(port, "/mqtt", offer).await.unwrap();
        assert_eq!(got.as_deref(), want, "offered {offer:?}");
    }
    assert!(open(port, "/", "mqtt").await.is_ok());
    let e = open(port, "/nope", "mqtt").await.err().unwrap();
    assert!(e.contains("404"), "{e}");
    let e = open(port, "/mqtt", "chat").await.err().unwrap();
    assert!(e.contains("400"), "{e}");

    let b = ws_broker("path = \"/ws\"");
    assert!(open(b.ports[0], "/ws", "mqtt").await.is_ok());
    assert!(open(b.ports[0], "/mqtt", "mqtt").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_split_over_frames_and_batched_in_one_frame_work_with_ping_and_close() {
    let b = ws_broker("");
    let (mut ws, _) = open(b.ports[0], "/mqtt", "mqtt").await.unwrap();
    // CONNECT in three binary messages
    let connect = connect_packet(false, "ws-raw", None, None);
    for part in [&connect[..1], &connect[1..5], &connect[5..]] {
        ws.send(Message::Binary(part.to_vec())).await.unwrap();
    }
    assert_eq!(read_bytes(&mut ws, 4).await, [0x20, 2, 0, 0]);
    // SUBSCRIBE and two PUBLISHes to it in one message
    let mut batch = subscribe("w/t");
    batch.extend(publish("w/t", "one"));
    batch.extend(publish("w/t", "two"));
    ws.send(Message::Binary(batch)).await.unwrap();
    let mut want = vec![0x90, 3, 0, 1, 0];
    want.extend(publish("w/t", "one"));
    want.extend(publish("w/t", "two"));
    assert_eq!(read_bytes(&mut ws, want.len()).await, want);
    // ping is answered with pong carrying the same data
    ws.send(Message::Ping(b"are you there".to_vec()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"are you there".to_vec()));
    // MQTT PINGREQ works too
    ws.send(Message::Binary(vec![0xC0, 0])).await.unwrap();
    assert_eq!(read_bytes(&mut ws, 2).await, [0xD0, 0]);
    // clean close: the broker answers the close frame
    ws.close(None).await.unwrap();
    let end = tokio::time::timeout(T, ws.next()).await.unwrap();
    assert!(matches!(end, Some(Ok(Message::Close(_)))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frames_are_refused() {
    let b = ws_broker("");
    let (mut ws, _) = open(b.ports[0], "/mqtt", "mqtt").await.unwrap();
    ws.send(Message::Text("hello".into())).await.unwrap();
    let end = tokio::time::timeout(T, ws.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(Message::Binary(_)))), "{end:?}");
}

fn paho_roundtrip(port: u16, tls_ca: Option<&str>) -> String {
    let tls = tls_ca
        .map(|ca| format!("c.tls_set(ca_certs={ca:?})\n    s.tls_set(ca_certs={ca:?})"))
        .unwrap_or_default();
    let out = python(&format!(
        r#"
import paho.mqtt.client as mqtt, threading, sys
got = threading.Event()
box = []
def on_message(c, u, m):
    box.append(m.payload.decode()); got.set()
def on_subscribe(c, u, mid, rc, props): subbed.set()
subbed = threading.Event()
s = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-sub", transport="websockets")
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-ws-pub", transport="websockets")
if True:
    pass
    {tls}
s.on_message = on_message
s.on_subscribe = on_subscribe
s.connect("localhost", {port}, 30)
s.loop_start()
s.subscribe("paho/ws", qos=1)
subbed.wait(10)
c.connect("localhost", {port}, 30)
c.loop_start()
c.publish("paho/ws", "over websockets", qos=1).wait_for_publish(10)
got.wait(10)
print(box[0] if box else "nothing")
"#
    ));
    let stdout = text(&out.stdout).trim().to_owned();
    if stdout.is_empty() {
        eprintln!("paho stderr: {}", text(&out.stderr));
    }
    stdout
}

#[test]
fn paho_talks_over_ws_and_wss() {
    let b = ws_broker("");
    assert_eq!(paho_roundtrip(b.ports[0], None), "over websockets");
    let pki = Pki::new();
    let b = ws_broker(&format!(
        "certfile = \"{}\"\nkeyfile = \"{}\"",
        pki.path("server.crt"),
        pki.path("server.key")
    ));
    assert_eq!(
        paho_roundtrip(b.ports[0], Some(&pki.path("ca.crt"))),
        "over websockets"
    );
}
