//! Headless Chromium (Debian's `chromium`) showing one page, driven over the DevTools
//! protocol (WebSocket): evaluate JavaScript in the page, wait until it shows something,
//! keep a screenshot when MIDGE_SCREENSHOTS names a folder. Shared by every browser test
//! (the cli crate's tests include this file by path).
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

// the parent module provides these two: `eventually(what, || async { Option })` and
// `request(addr, method, path, headers, body) -> Response` with `.status` and `.json()`.
use super::{eventually, request};

/// Bound on every wait.
const T: Duration = Duration::from_secs(15);

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium showing one page, driven over the DevTools protocol.
pub struct Browser {
    _proc: Proc,
    ws: Ws,
    id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn open(url: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
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
                "--window-size=1400,1000",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (install it with scripts/test-deps.sh)");
        let proc = Proc(child);
        // Chromium writes the port it picked here
        let file = profile.path().join("DevToolsActivePort");
        let port: u16 = eventually("chromium's DevTools port", || async {
            std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.parse().ok()))
        })
        .await;
        let devtools = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let page = eventually("the page target", || async {
            let r = request(devtools, "GET", "/json/list", &[], None).await;
            let list: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            list.as_array().into_iter().flatten().find_map(|t| {
                (t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.starts_with(url)))
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                    .flatten()
            })
        })
        .await;
        let (ws, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .unwrap();
        Browser {
            _proc: proc,
            ws,
            id: 0,
            _profile: profile,
        }
    }

    /// Call a DevTools method; its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let id = self.id;
        let req = json!({"id": id, "method": method, "params": params});
        self.ws.send(Message::Text(req.to_string())).await.unwrap();
        loop {
            let m = tokio::time::timeout(T, self.ws.next())
                .await
                .expect("DevTools answer in time")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluate a JavaScript expression in the page (promises awaited); its JSON value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until `done` accepts its value (bounded by [`T`]).
    pub async fn until(&mut self, what: &str, expr: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + T;
        // while the page loads, the expression may throw: that is "not yet"
        let guarded = format!(
            "(() => {{ try {{ return ({expr}); }} catch (e) {{ return {{thrown: String(e)}}; }} }})()"
        );
        loop {
            let v = self.eval(&guarded).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "page never showed {what}: {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Keep a screenshot when MIDGE_SCREENSHOTS names a folder.
    pub async fn screenshot(&mut self, name: &str) {
        let Ok(dir) = std::env::var("MIDGE_SCREENSHOTS") else {
            return;
        };
        use base64::Engine as _;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }
}
