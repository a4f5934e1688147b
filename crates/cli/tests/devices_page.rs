//! The Devices and Clients tabs of the page in headless Chromium, against a real
//! `midge serve`: a device made in the page, its shown credentials used by a real paho-mqtt
//! client, its message on the device page, the test panel publishing as the device (allowed
//! and refused), disabling it in the page cutting the client off (MQTT 5: 0x98) for good; and
//! the console listing a client, disconnecting it, discarding its session, and deleting a
//! retained message.
//!
//! Screenshots: set MIDGE_SCREENSHOTS to a folder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::{Midge, request};
use serde_json::{Value, json};

/// Bound on every wait.
const T: Duration = Duration::from_secs(15);

// ---------- a midge serve ----------

/// `midge serve` with a TCP listener and the HTTP server.
struct Hub {
    midge: Midge,
    mqtt: u16,
    web: SocketAddr,
}

impl Hub {
    fn start(security: &str) -> Hub {
        let midge = Midge::serve()
            .exact_config(&format!("{security}\n[http]\n"))
            .start();
        Hub {
            mqtt: midge.port,
            web: SocketAddr::from(([127, 0, 0, 1], midge.http_port())),
            midge,
        }
    }

    async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let r = request(
            self.web,
            method,
            path,
            headers,
            body.map(|b| b.to_string().into_bytes()),
        )
        .await;
        (r.status, r.json())
    }

    fn url(&self, hash: &str) -> String {
        format!("http://{}/{hash}", self.web)
    }

    fn log(&self) -> String {
        self.midge.log()
    }
}

// ---------- a paho-mqtt device ----------

/// tests/py/device_client.py: its events as JSON lines.
struct Paho {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Paho {
    #[allow(clippy::too_many_arguments)]
    fn start(
        port: u16,
        client_id: &str,
        user: &str,
        password: &str,
        subscribe: &str,
        publish: &str,
        payload: &str,
        expiry: u32,
    ) -> Paho {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/device_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args([
                &port.to_string(),
                client_id,
                user,
                password,
                subscribe,
                publish,
                payload,
                &expiry.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 with paho-mqtt");
        let out = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        Paho {
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Wait for an event of this kind; it.
    fn wait(&mut self, event: &str) -> Value {
        if let Some(v) = self.seen.iter().find(|v| v["event"] == event) {
            return v.clone();
        }
        let deadline = Instant::now() + T;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("paho never reported {event}; saw {:?}", self.seen));
            self.seen.push(v.clone());
            if v["event"] == event {
                return v;
            }
        }
    }

    fn publish(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"publish\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Paho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set an input's value as typing would (the page reads them from the form).
async fn fill(b: &mut Browser, id: &str, value: &str) {
    let v = serde_json::to_string(value).unwrap();
    b.eval(&format!(
        "(() => {{ const e = document.getElementById('{id}'); e.value = {v}; e.dispatchEvent(new Event('input', {{bubbles: true}})); return true; }})()"
    ))
    .await;
}

async fn click(b: &mut Browser, selector: &str) {
    let s = serde_json::to_string(selector).unwrap();
    let v = b
        .until(&format!("{selector} to click"), &format!("(() => {{ const e = document.querySelector({s}); if (!e) return false; e.click(); return true; }})()"), |v| v == &json!(true))
        .await;
    assert_eq!(v, json!(true));
}

async fn text_of(b: &mut Browser, selector: &str) -> String {
    let s = serde_json::to_string(selector).unwrap();
    b.until(
        &format!("text in {selector}"),
        &format!("(document.querySelector({s}) || {{}}).textContent || ''"),
        |v| v.as_str().is_some_and(|t| !t.is_empty()),
    )
    .await
    .as_str()
    .unwrap()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_made_in_the_page_connects_shows_its_messages_is_tested_and_is_cut_off_from_the_page()
 {
    let hub = Hub::start("[security]\nallow_anonymous = false\n");
    let mut b = Browser::open(&hub.url("#devices")).await;
    b.until(
        "the devices tab",
        "!!document.getElementById('device-new')",
        |v| v == &json!(true),
    )
    .await;
    // confirmations are answered yes (the page asks before disabling)
    b.eval("window.confirm = () => true").await;

    // a policy, made in the page
    click(&mut b, "#policy-new").await;
    fill(&mut b, "policy-name", "own").await;
    fill(&mut b, "policy-publish", "devices/%u/#").await;
    fill(&mut b, "policy-subscribe", "devices/%u/#\ncmd/${device}").await;
    b.screenshot("devices-policy-form").await;
    click(&mut b, "#policy-save").await;
    b.until(
        "the policy in the list",
        "!!document.querySelector('#policies-table tr[data-policy=\"own\"]')",
        |v| v == &json!(true),
    )
    .await;

    // a device, made in the page: its secret shown once
    click(&mut b, "#device-new").await;
    // (the only policy is ticked already; make sure)
    b.eval("document.querySelector('#device-policies input[data-policy=\"own\"]').checked = true")
        .await;
    fill(&mut b, "device-name", "sensor-1").await;
    fill(&mut b, "device-description", "Boiler room sensor").await;
    fill(&mut b, "device-tags", "basement, heating").await;
    b.screenshot("devices-device-form").await;
    click(&mut b, "#device-create").await;
    let username = text_of(&mut b, "#secret-username").await;
    let secret = text_of(&mut b, "#secret-value").await;
    let command = text_of(&mut b, "#secret-command").await;
    assert_eq!(username, "sensor-1");
    assert!(secret.len() >= 20, "{secret}");
    assert!(
        command.contains(&format!("-p {}", hub.mqtt)) && command.contains(&secret),
        "the hint names the broker's port and the secret: {command}"
    );
    b.until(
        "the device in the list",
        "!!document.querySelector('#devices-table tr[data-device=\"sensor-1\"]')",
        |v| v == &json!(true),
    )
    .await;
    b.screenshot("devices-new-secret").await;
    click(&mut b, "#secret-done").await;
    b.screenshot("devices-list").await;
    // the registry holds it with the policy the form attached
    let (status, d) = hub.api("GET", "/api/v1/devices/sensor-1", None).await;
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["policies"], json!(["own"]));
    assert_eq!(d["tags"], json!(["basement", "heating"]));

    // its page, watching its topics live
    click(
        &mut b,
        "#devices-table tr[data-device=\"sensor-1\"] a.device-link",
    )
    .await;
    b.until(
        "the device page, live",
        "document.getElementById('device-live').dataset.state",
        |v| v == &json!("live"),
    )
    .await;
    assert_eq!(b.eval("location.hash").await, json!("#devices/sensor-1"));
    let filters = b
        .eval("document.getElementById('device-publish-filters').textContent")
        .await;
    assert_eq!(
        filters,
        json!("devices/sensor-1/#"),
        "the page shows the filters resolved for the device"
    );

    // a real paho client with the shown credentials
    let mut paho = Paho::start(
        hub.mqtt,
        "sensor-1-paho",
        &username,
        &secret,
        "cmd/sensor-1,devices/sensor-1/set",
        "devices/sensor-1/temp",
        "{\"temp\": 21.5}",
        0,
    );
    assert_eq!(
        paho.wait("connack")["rc"],
        0,
        "the shown credentials log in"
    );
    assert_eq!(paho.wait("suback")["rcs"], json!([1, 1]));
    paho.publish();
    assert_eq!(paho.wait("published")["rc"], 0);
    b.until(
        "the paho message on the device page",
        "[...document.querySelectorAll('#device-messages-table tbody tr[data-topic=\"devices/sensor-1/temp\"]')].map(r => r.textContent).join('|')",
        |v| v.as_str().is_some_and(|t| t.contains("21.5") && t.contains("from device")),
    )
    .await;
    b.until(
        "the device online with its client id",
        "(document.getElementById('device-clients') || {}).textContent || ''",
        |v| v.as_str().is_some_and(|t| t.contains("sensor-1-paho")),
    )
    .await;

    // the test panel, as the device: an allowed topic reaches a subscriber (the device)
    fill(&mut b, "test-topic", "devices/sensor-1/set").await;
    fill(&mut b, "test-payload", "on").await;
    click(&mut b, "#test-publish").await;
    b.until(
        "the publish accepted",
        "document.getElementById('test-result').dataset.result",
        |v| v == &json!("ok"),
    )
    .await;
    let m = paho.wait("message");
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("devices/sensor-1/set"), Some("on"))
    );
    // to the device, as the hub: a command on its subscribe topic
    b.eval("(() => { const s = document.getElementById('test-as'); s.value = 'hub'; s.dispatchEvent(new Event('change')); return true; })()").await;
    fill(&mut b, "test-topic", "cmd/sensor-1").await;
    fill(&mut b, "test-payload", "reboot").await;
    b.eval("document.getElementById('test-result').dataset.result = ''")
        .await;
    click(&mut b, "#test-publish").await;
    b.until(
        "the command sent",
        "document.getElementById('test-result').dataset.result",
        |v| v == &json!("ok"),
    )
    .await;
    paho.seen.clear();
    let m = paho.wait("message");
    assert_eq!(
        (m["topic"].as_str(), m["payload"].as_str()),
        (Some("cmd/sensor-1"), Some("reboot"))
    );
    b.until(
        "the command on the device page",
        "[...document.querySelectorAll('#device-messages-table tbody tr[data-topic=\"cmd/sensor-1\"]')].map(r => r.textContent).join('|')",
        |v| v.as_str().is_some_and(|t| t.contains("reboot") && t.contains("to device")),
    )
    .await;
    // as the device, a topic its policy does not grant is refused, in the page
    b.eval("(() => { const s = document.getElementById('test-as'); s.value = 'device'; s.dispatchEvent(new Event('change')); return true; })()").await;
    fill(&mut b, "test-topic", "devices/other/temp").await;
    click(&mut b, "#test-publish").await;
    b.until(
        "the refusal",
        "document.getElementById('test-result').dataset.result",
        |v| v == &json!("refused"),
    )
    .await;
    let why = b
        .eval("document.getElementById('test-result').textContent")
        .await;
    assert!(why.as_str().unwrap().contains("may not publish"), "{why}");
    b.screenshot("device-page").await;

    // disabled in the page: cut off now (0x98) and refused after
    click(&mut b, "#device-toggle[data-enabled=\"1\"]").await;
    assert_eq!(
        paho.wait("disconnect")["rc"],
        0x98,
        "MQTT 5 Administrative action"
    );
    let again = paho.wait("reconnect")["rc"].as_i64().unwrap();
    assert!(
        again > 0,
        "a disabled device's CONNECT is refused, got {again}"
    );
    b.until(
        "the device disabled on its page",
        "(document.querySelector('#device-badge [data-status]') || {dataset: {}}).dataset.status",
        |v| v == &json!("disabled"),
    )
    .await;
    let (_, d) = hub.api("GET", "/api/v1/devices/sensor-1", None).await;
    assert_eq!(d["enabled"], false);
    assert_eq!(d["connections"], 0, "{}", hub.log());

    // a new secret, shown once on the device page; the old one no longer logs in
    click(&mut b, "#device-rotate").await;
    let rotated = text_of(&mut b, "#device-secret #secret-value").await;
    assert!(rotated.len() >= 20 && rotated != secret, "{rotated}");
    b.screenshot("device-page-rotated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_lists_a_client_disconnects_it_discards_its_session_and_deletes_retained_messages()
 {
    let hub = Hub::start("");
    // a retained message to keep and one to delete
    for (topic, payload) in [("keep/a", "one"), ("keep/b", "two")] {
        let out = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &hub.mqtt.to_string(),
                "-r",
                "-q",
                "1",
            ])
            .args(["-t", topic, "-m", payload])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    // a client with a persistent session and a subscription
    let mut paho = Paho::start(hub.mqtt, "console-victim", "", "", "jobs/#", "-", "", 300);
    assert_eq!(paho.wait("connack")["rc"], 0);
    paho.wait("suback");

    let mut b = Browser::open(&hub.url("#console")).await;
    let row = "#console-clients tr[data-client=\"console-victim\"]";
    let text = b
        .until(
            "the client in the console",
            &format!("(document.querySelector('{row}') || {{}}).textContent || ''"),
            |v| v.as_str().is_some_and(|t| t.contains("console-victim")),
        )
        .await;
    assert!(
        text.as_str().unwrap().contains("127.0.0.1"),
        "its address: {text}"
    );
    // confirmations are answered yes, once the page is loaded (set earlier, the loading
    // document would replace it)
    b.eval("window.confirm = () => true").await;
    // midge's own clients (the page's) are apart
    let own = b.eval("[...document.querySelectorAll('#console-clients tbody tr[data-client]')].some(r => r.dataset.client.startsWith('$midge/'))").await;
    assert_eq!(own, json!(false));
    // ... and listed apart when asked for (the API's publisher is one)
    let (status, v) = hub
        .api(
            "POST",
            "/api/v1/publish",
            Some(&json!({"topic": "jobs/1", "payload": "x"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    click(&mut b, "#console-internal").await;
    b.until(
        "midge's own clients, apart",
        "[...document.querySelectorAll('#console-internal-clients tbody tr[data-client]')].map(r => r.dataset.client).join(' ')",
        |v| v.as_str().is_some_and(|t| t.contains("$midge/http/")),
    )
    .await;
    click(&mut b, "#console-internal").await;
    // its subscriptions, expanded
    click(&mut b, row).await;
    b.until("its subscriptions", "(document.querySelector('tr[data-client-detail=\"console-victim\"]') || {}).textContent || ''", |v| v.as_str().is_some_and(|t| t.contains("jobs/#"))).await;
    b.screenshot("console-clients").await;

    // subscriptions, searchable
    click(&mut b, "#console-tab-subscriptions").await;
    fill(&mut b, "subs-filter", "jobs").await;
    b.until("the subscription found", "document.querySelectorAll('#console-subscriptions tbody tr[data-client=\"console-victim\"]').length", |v| v == &json!(1)).await;
    b.screenshot("console-subscriptions").await;
    fill(&mut b, "subs-filter", "nothing-like-this").await;
    b.until(
        "no match",
        "document.querySelectorAll('#console-subscriptions tbody tr').length",
        |v| v == &json!(0),
    )
    .await;

    // Disconnect: the client gets 0x98 and its session stays, offline
    click(&mut b, "#console-tab-clients").await;
    click(&mut b, &format!("{row} button[data-action=\"disconnect\"]")).await;
    assert_eq!(paho.wait("disconnect")["rc"], 0x98);
    b.until(
        "the client gone from the list",
        &format!("!document.querySelector('{row}')"),
        |v| v == &json!(true),
    )
    .await;
    // (it may log in again: disconnecting is not banning; let it go)
    assert_eq!(paho.wait("reconnect")["rc"], 0);
    drop(paho);
    click(&mut b, "#console-tab-sessions").await;
    let session = "#console-sessions tr[data-session=\"console-victim\"]";
    b.until(
        "the offline session",
        &format!("!!document.querySelector('{session}')"),
        |v| v == &json!(true),
    )
    .await;
    b.screenshot("console-sessions").await;
    click(
        &mut b,
        &format!("{session} button[data-action=\"discard\"]"),
    )
    .await;
    b.until(
        "the session discarded",
        &format!("!document.querySelector('{session}')"),
        |v| v == &json!(true),
    )
    .await;
    let (_, s) = hub.api("GET", "/api/v1/sessions", None).await;
    assert!(!s.to_string().contains("console-victim"), "{s}");

    // Retained: view a payload, delete one
    click(&mut b, "#console-tab-retained").await;
    let a = "#console-retained tr[data-topic=\"keep/a\"]";
    b.until("the retained messages", &format!("!!document.querySelector('{a}') && !!document.querySelector('#console-retained tr[data-topic=\"keep/b\"]')"), |v| v == &json!(true)).await;
    click(&mut b, &format!("{a} button[data-action=\"view\"]")).await;
    assert_eq!(text_of(&mut b, "#retained-payload-text").await, "one");
    click(&mut b, "#retained-payload button[data-as=\"hex\"]").await;
    b.until(
        "the payload in hex",
        "document.getElementById('retained-payload-text').textContent",
        |v| v == &json!("6f 6e 65"),
    )
    .await;
    b.screenshot("console-retained").await;
    click(&mut b, &format!("{a} button[data-action=\"delete\"]")).await;
    b.until(
        "keep/a gone",
        &format!("!document.querySelector('{a}')"),
        |v| v == &json!(true),
    )
    .await;
    let (_, r) = hub
        .api("GET", "/api/v1/retained?filter=keep/%23", None)
        .await;
    let topics: Vec<_> = r["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].clone())
        .collect();
    assert_eq!(topics, vec![json!("keep/b")]);
    // a new subscriber gets keep/b but no longer keep/a
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &hub.mqtt.to_string(),
            "-t",
            "keep/#",
            "-v",
            "-W",
            "2",
        ])
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(got.trim(), "keep/b two", "{got}");
}
