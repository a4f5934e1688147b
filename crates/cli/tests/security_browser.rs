//! A real browser on midge's WebSocket listeners: headless Chromium loads a page (served
//! from `tests/browser/` by `python3 -m http.server`) that uses mqtt.js over ws:// and
//! wss://, shows in a `<meter>` the temperature `mosquitto_pub` sent, and publishes a
//! message that `midge sub` receives. The test reads the page's DOM through the DevTools
//! protocol. For wss:// Chromium runs with `--ignore-certificate-errors` (the test CA is
//! not in its trust store); the broker still does a full TLS handshake with its server
//! certificate. Needs `chromium`, `python3` and `npm ci` in tests/browser
//! (scripts/test-deps.sh installs them).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::security::*;
use common::{MIDGE, Midge, free_port};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < T, "nothing listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn static_server() -> (Proc, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(browser_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_port(port);
    (p, port)
}

/// Headless Chromium on `url` with a fresh profile; returns it and its DevTools port.
fn chromium(url: &str, profile: &std::path::Path) -> (Proc, u16) {
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // wss:// to the test CA's certificate (see the module doc)
            "--ignore-certificate-errors",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (install it with scripts/test-deps.sh)");
    let p = Proc(child);
    let file = profile.join("DevToolsActivePort");
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(&file)
            && let Some(port) = s.lines().next().and_then(|l| l.parse().ok())
        {
            return (p, port);
        }
        assert!(
            start.elapsed() < T,
            "chromium did not open its DevTools port"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The body of an HTTP/1.1 GET (Chromium keeps the connection open: read Content-Length).
fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                return body.to_owned();
            }
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            return text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default();
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// The page target's DevTools WebSocket URL.
fn page_target(devtools: u16) -> String {
    let start = Instant::now();
    loop {
        let body = http_get(devtools, "/json/list");
        let json = body.as_str();
        let list: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        if let Some(url) = list.as_array().into_iter().flatten().find_map(|t| {
            (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains("index.html")))
                .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                .flatten()
        }) {
            return url;
        }
        assert!(start.elapsed() < T, "no page target in {json}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The page's state as JSON (`state`, `value`, `reading`, `log`), read with
/// Runtime.evaluate until `done` says so (bounded).
async fn page_until(ws_url: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let expr = "JSON.stringify({state: document.body.dataset.state, \
                value: String(document.getElementById('temperature').value), \
                reading: document.getElementById('reading').textContent, \
                log: document.getElementById('log').textContent})";
    let start = Instant::now();
    let mut id = 0;
    loop {
        id += 1;
        let req = serde_json::json!({"id": id, "method": "Runtime.evaluate",
                                     "params": {"expression": expr, "returnByValue": true}});
        ws.send(Message::Text(req.to_string())).await.unwrap();
        let state = loop {
            let m = tokio::time::timeout(T, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    let s = v["result"]["result"]["value"]
                        .as_str()
                        .unwrap_or("{}")
                        .to_owned();
                    break serde_json::from_str::<serde_json::Value>(&s).unwrap_or_default();
                }
            }
        };
        if done(&state) {
            return state;
        }
        assert!(start.elapsed() < T, "page never got there: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn browser_round_trip(scheme: &str) {
    assert!(
        browser_dir()
            .join("node_modules/mqtt/dist/mqtt.min.js")
            .exists(),
        "mqtt.js missing: run scripts/test-deps.sh (npm ci in crates/cli/tests/browser)"
    );
    let pki = Pki::new();
    let tls = if scheme == "wss" {
        format!(
            "certfile = \"{}\"\nkeyfile = \"{}\"\n",
            pki.path("server.crt"),
            pki.path("server.key")
        )
    } else {
        String::new()
    };
    let b = Midge::serve()
        .exact_config(&format!(
            "[security]\nallow_anonymous = true\n[[listener]]\nport = {{port0}}\n\
         [[listener]]\nport = {{port1}}\nprotocol = \"websockets\"\n{tls}"
        ))
        .start();
    let (mqtt, ws) = (b.port_str(0), b.ports[1]);
    let (_http, http) = static_server();
    // midge sub waits for the page's message
    let sub = std::thread::spawn({
        let mqtt = mqtt.clone();
        move || {
            run_with_timeout(
                Command::new(MIDGE).args([
                    "sub",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &mqtt,
                    "-t",
                    "browser/out",
                    "-C",
                    "1",
                    "-W",
                    "20",
                ]),
                Duration::from_secs(25),
            )
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{http}/index.html?url={scheme}://localhost:{ws}/mqtt");
    let (_chromium, devtools) = chromium(&url, profile.path());
    let target = page_target(devtools);
    let state = page_until(&target, |s| {
        s["state"] == "subscribed" || s["state"] == "error"
    })
    .await;
    assert_eq!(state["state"], "subscribed", "{state}");

    let out = mosquitto(
        "mosquitto_pub",
        &["-p", &mqtt, "-t", "floor-5/temperature", "-m", "42"],
    );
    assert!(out.status.success());
    let state = page_until(&target, |s| s["state"] == "received").await;
    assert_eq!(state["value"], "42", "{state}");
    assert_eq!(state["reading"], "42", "{state}");

    let got = sub.join().unwrap();
    assert_eq!(
        text(&got.stdout),
        "hello from the browser\n",
        "{}",
        text(&got.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_mqtt_js_over_ws_shows_the_published_temperature_and_publishes_back() {
    browser_round_trip("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_with_mqtt_js_over_wss_shows_the_published_temperature_and_publishes_back() {
    browser_round_trip("wss").await;
}
