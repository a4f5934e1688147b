//! The MQTT web client (`/client`) end to end: a real `midge serve` with a TCP, a WebSocket
//! (ws or wss) and the HTTP listener; headless Chromium opens /client, which finds the
//! WebSocket listener through `GET /api/v1/listeners`, and the test fills its form and
//! clicks its buttons through the DevTools protocol (crates/http/tests/common/browser.rs),
//! reading back what a person sees (ids and data-* attributes). The other side is
//! mosquitto_pub / mosquitto_sub on the TCP listener. `MIDGE_SCREENSHOTS=DIR` keeps
//! screenshots of the page.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::security::*;
use common::{Midge, request};
use serde_json::{Value, json};

/// The page's visible state: status, messages (topic, qos, retain, payload), subscriptions
/// (filter, granted qos) and events (kind, text), newest first.
const STATE: &str = "({
    state: document.body.dataset.state,
    status: document.getElementById('c-status-text').textContent,
    url: document.getElementById('c-url').value,
    messages: Array.from(document.querySelectorAll('#c-messages .c-msg')).map(m => ({
        topic: m.dataset.topic, qos: Number(m.dataset.qos), retain: m.dataset.retain === 'true',
        payload: m.querySelector('.c-payload').textContent,
        format: m.querySelector('.c-payload').dataset.format,
        props: (m.querySelector('.c-props') || {}).textContent || ''})),
    subs: Array.from(document.querySelectorAll('#c-subs .c-sub')).map(s => ({
        filter: s.dataset.filter, qos: Number(s.dataset.qos), options: s.dataset.options})),
    events: Array.from(document.querySelectorAll('#c-events .c-event')).map(e => ({
        kind: e.dataset.kind, text: e.querySelector('.c-text').textContent})),
})";

fn events_text(state: &Value) -> String {
    state["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{}: {}",
                e["kind"].as_str().unwrap(),
                e["text"].as_str().unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_event(state: &Value, kind: &str, needle: &str) -> bool {
    state["events"].as_array().is_some_and(|l| {
        l.iter()
            .any(|e| e["kind"] == kind && e["text"].as_str().is_some_and(|t| t.contains(needle)))
    })
}

/// The page at /client, loaded (its listener lookup done).
async fn open_client(http: u16) -> Browser {
    let mut b = Browser::open(&format!("http://127.0.0.1:{http}/client")).await;
    b.until("the page loaded", "document.body.dataset.ready", |v| {
        v == "1"
    })
    .await;
    b
}

/// Sets form fields (`id` → value; booleans tick checkboxes) as a person would.
async fn fill(b: &mut Browser, fields: Value) {
    let js = format!(
        "(() => {{ const f = {fields};
            for (const [id, v] of Object.entries(f)) {{
                const e = document.getElementById(id);
                if (!e) throw new Error('no field ' + id);
                if (typeof v === 'boolean') e.checked = v; else e.value = String(v);
                e.dispatchEvent(new Event('input', {{bubbles: true}}));
                e.dispatchEvent(new Event('change', {{bubbles: true}}));
            }}
            return true; }})()"
    );
    b.eval(&js).await;
}

async fn click(b: &mut Browser, id: &str) {
    let js = format!(
        "(() => {{ const e = document.getElementById('{id}');
            if (e.disabled) throw new Error('{id} is disabled'); e.click(); return true; }})()"
    );
    b.eval(&js).await;
}

async fn state_until(b: &mut Browser, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    b.until(what, STATE, |v| v.get("thrown").is_none() && done(v))
        .await
}

/// Connects with the form's current settings plus `fields`; waits for the outcome.
async fn connect(b: &mut Browser, fields: Value) -> Value {
    fill(b, fields).await;
    click(b, "c-connect").await;
    state_until(b, "connected or refused", |s| {
        s["state"] == "connected" || s["state"] == "error"
    })
    .await
}

async fn subscribe(b: &mut Browser, filter: &str, qos: u8) -> Value {
    fill(b, json!({"c-sub-filter": filter, "c-sub-qos": qos})).await;
    click(b, "c-subscribe").await;
    let f = filter.to_owned();
    state_until(b, "the subscription listed", move |s| {
        s["subs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["filter"] == f.as_str())
    })
    .await
}

fn pub_tcp(port: &str, args: &[&str]) {
    let mut all = vec!["-h", "127.0.0.1", "-p", port];
    all.extend_from_slice(args);
    let out = mosquitto("mosquitto_pub", &all);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn wait_line(sub: &Sub, line: &str) {
    let start = Instant::now();
    while !sub.output().lines().any(|l| l == line) {
        assert!(
            start.elapsed() < T,
            "mosquitto_sub never printed {line:?}:\n{}",
            sub.output()
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A broker with a TCP listener (port 0), a WebSocket one (port 1) and HTTP (port 2);
/// `ws_extra` goes into the WebSocket listener's table, `top` before everything.
fn broker(top: &str, ws_extra: &str) -> Midge {
    Midge::serve().exact_config(&format!(
        "{top}\n[[listener]]\nbind = \"127.0.0.1\"\nport = {{port0}}\n\
         [[listener]]\nbind = \"127.0.0.1\"\nport = {{port1}}\nprotocol = \"websockets\"\n{ws_extra}\n\
         [http]\nbind = \"127.0.0.1\"\nport = {{port2}}\nallow_anonymous = true\n"
    )).start()
}

/// Connect with `version`, subscribe, receive mosquitto_pub's messages (retained and not),
/// publish QoS 1 and 2 to mosquitto_sub, unsubscribe, disconnect.
async fn round_trip(version: u8) {
    let b = broker("[security]\nallow_anonymous = true", "");
    let (tcp, ws, http) = (b.port_str(0), b.ports[1], b.ports[2]);
    // a retained message waiting before the page subscribes
    pub_tcp(&tcp, &["-t", "web/retained", "-m", "kept", "-q", "1", "-r"]);

    let mut page = open_client(http).await;
    let s = page.eval(STATE).await;
    assert_eq!(
        s["url"],
        format!("ws://127.0.0.1:{ws}/mqtt"),
        "the URL defaults to the ws listener"
    );
    let id = format!("web-client-v{version}");
    let s = connect(
        &mut page,
        json!({"c-version": version, "c-client-id": id, "c-keepalive": 30, "c-clean": true}),
    )
    .await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
    assert!(
        has_event(&s, "connack", "CONNACK 0x00"),
        "{}",
        events_text(&s)
    );
    assert!(
        s["status"].as_str().unwrap().contains(&id),
        "{}",
        s["status"]
    );

    let s = subscribe(&mut page, "web/#", 2).await;
    assert_eq!(s["subs"][0]["qos"], 2, "{s}");
    assert!(has_event(&s, "suback", "0x02"), "{}", events_text(&s));
    // the retained message comes first, flagged
    let s = state_until(&mut page, "the retained message", |s| {
        !s["messages"].as_array().unwrap().is_empty()
    })
    .await;
    let m = &s["messages"][0];
    assert_eq!(m["topic"], "web/retained", "{s}");
    assert_eq!(m["retain"], true, "{s}");
    assert_eq!(m["qos"], 1, "{s}");
    assert_eq!(m["payload"], "kept", "{s}");

    // a live message at QoS 2, and a binary one shown as hex
    pub_tcp(
        &tcp,
        &[
            "-V",
            "mqttv5",
            "-t",
            "web/in",
            "-m",
            "hello from mosquitto_pub",
            "-q",
            "2",
            "-D",
            "publish",
            "user-property",
            "origin",
            "test",
            "-D",
            "publish",
            "content-type",
            "text/plain",
        ],
    );
    let bin = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bin.path(), [0x00u8, 0xff, 0x10]).unwrap();
    pub_tcp(
        &tcp,
        &["-t", "web/bin", "-f", &bin.path().display().to_string()],
    );
    let s = state_until(&mut page, "the live messages", |s| {
        s["messages"].as_array().unwrap().len() >= 3
    })
    .await;
    let m = &s["messages"][1];
    assert_eq!(m["topic"], "web/in", "{s}");
    assert_eq!(m["qos"], 2, "{s}");
    assert_eq!(m["retain"], false, "{s}");
    assert_eq!(m["payload"], "hello from mosquitto_pub", "{s}");
    let m = &s["messages"][0];
    assert_eq!(m["topic"], "web/bin", "{s}");
    assert_eq!(m["qos"], 0, "{s}");
    assert_eq!(m["format"], "hex", "{s}");
    assert_eq!(m["payload"], "00 ff 10", "{s}");
    // MQTT 5 properties are shown (a 3.1.1 connection gets none)
    let props = s["messages"][1]["props"].as_str().unwrap();
    if version == 5 {
        assert!(props.contains("content type: text/plain"), "{s}");
        assert!(props.contains("origin = test"), "{s}");
    } else {
        assert_eq!(props, "", "{s}");
    }
    // JSON shown indented on request
    pub_tcp(&tcp, &["-t", "web/json", "-m", r#"{"a":[1,2]}"#]);
    state_until(&mut page, "the JSON message", |s| {
        s["messages"].as_array().unwrap().len() >= 4
    })
    .await;
    fill(&mut page, json!({"c-format": "json"})).await;
    let s = page.eval(STATE).await;
    assert_eq!(s["messages"][0]["format"], "json", "{s}");
    assert_eq!(
        s["messages"][0]["payload"], "{\n  \"a\": [\n    1,\n    2\n  ]\n}",
        "{s}"
    );
    assert_eq!(s["messages"][1]["format"], "hex", "{s}");
    fill(&mut page, json!({"c-format": "auto"})).await;

    // the page publishes at QoS 1 and 2; mosquitto_sub receives both
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &tcp,
        "-t",
        "out/#",
        "-q",
        "2",
        "-v",
    ]);
    for (qos, ack) in [(1, "puback"), (2, "pubcomp")] {
        fill(
            &mut page,
            json!({"c-pub-topic": format!("out/q{qos}"), "c-pub-qos": qos,
                   "c-pub-payload": format!("qos {qos} from the page"), "c-pub-retain": false}),
        )
        .await;
        click(&mut page, "c-publish").await;
        let topic = format!("(out/q{qos})");
        let s = state_until(&mut page, ack, |s| has_event(s, ack, &topic)).await;
        assert!(has_event(&s, ack, "0x00"), "{}", events_text(&s));
        wait_line(&sub, &format!("out/q{qos} qos {qos} from the page"));
    }
    let s = page.eval(STATE).await;
    assert!(has_event(&s, "pubrec", "PUBREC"), "{}", events_text(&s));
    assert!(has_event(&s, "pubrel", "PUBREL"), "{}", events_text(&s));
    page.screenshot(&format!("web-client-v{version}")).await;

    if version == 5 {
        mqtt5_options(&mut page).await;
    }

    // unsubscribe: the list empties and new messages no longer show
    page.eval("document.querySelector('#c-subs [data-unsub=\"web/#\"]').click()")
        .await;
    let s = state_until(&mut page, "the subscription gone", |s| {
        !s["subs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["filter"] == "web/#")
    })
    .await;
    assert!(has_event(&s, "unsuback", "web/#"), "{}", events_text(&s));
    let before = s["messages"].as_array().unwrap().len();
    pub_tcp(&tcp, &["-t", "web/in", "-m", "after unsubscribe"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = page.eval(STATE).await;
    assert_eq!(s["messages"].as_array().unwrap().len(), before, "{s}");

    click(&mut page, "c-disconnect").await;
    let s = state_until(&mut page, "disconnected", |s| s["state"] == "disconnected").await;
    assert!(
        has_event(&s, "disconnect", "DISCONNECT sent"),
        "{}",
        events_text(&s)
    );
}

/// MQTT 5 from the page: a publish with properties comes back with them, and a No Local
/// subscription does not bring back the page's own message.
async fn mqtt5_options(page: &mut Browser) {
    fill(page, json!({"c-sub-nl": false})).await;
    subscribe(page, "echo/#", 1).await;
    fill(page, json!({"c-sub-nl": true})).await;
    let s = subscribe(page, "quiet/#", 1).await;
    let quiet = s["subs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["filter"] == "quiet/#")
        .unwrap()
        .clone();
    assert_eq!(quiet["options"], "no local", "{s}");
    fill(
        page,
        json!({"c-pub-topic": "quiet/1", "c-pub-qos": 1, "c-pub-payload": "not for me",
               "c-pub-content-type": "", "c-pub-user-props": "", "c-pub-response-topic": "",
               "c-pub-expiry": ""}),
    )
    .await;
    click(page, "c-publish").await;
    state_until(page, "PUBACK of quiet/1", |s| {
        has_event(s, "puback", "(quiet/1)")
    })
    .await;
    fill(
        page,
        json!({"c-pub-topic": "echo/1", "c-pub-qos": 1, "c-pub-payload": "with properties",
               "c-pub-content-type": "text/plain", "c-pub-response-topic": "reply/here",
               "c-pub-expiry": "60", "c-pub-user-props": "origin=browser\nk = v"}),
    )
    .await;
    click(page, "c-publish").await;
    let s = state_until(page, "the echo", |s| {
        s["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["topic"] == "echo/1")
    })
    .await;
    let msgs = s["messages"].as_array().unwrap();
    let echo = msgs.iter().find(|m| m["topic"] == "echo/1").unwrap();
    let props = echo["props"].as_str().unwrap();
    for want in [
        "content type: text/plain",
        "response topic: reply/here",
        "expires in: ",
        "origin = browser",
        "k = v",
    ] {
        assert!(props.contains(want), "{want:?} in {props:?}");
    }
    page.eval("document.getElementById('c-sub-v5').open = document.getElementById('c-pub-v5').open = true")
        .await;
    page.screenshot("web-client-v5-options").await;
    // sent before the echo, on the same connection: it would have come first
    assert!(
        !msgs.iter().any(|m| m["topic"] == "quiet/1"),
        "No Local let the page's own message back: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_subscribes_receives_and_publishes_qos_1_and_2() {
    round_trip(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_3_1_1_subscribes_receives_and_publishes_qos_1_and_2() {
    round_trip(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_is_published_when_the_browser_dies_and_not_on_disconnect() {
    let b = broker("[security]\nallow_anonymous = true", "");
    let (tcp, http) = (b.port_str(0), b.ports[2]);
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &tcp,
        "-t",
        "will/#",
        "-q",
        "1",
        "-v",
    ]);
    let will = json!({"c-will-topic": "will/web", "c-will-message": "the page is gone",
                      "c-will-qos": 1, "c-will-retain": false});

    // a normal Disconnect: no will
    let mut page = open_client(http).await;
    let mut fields = will.clone();
    fields["c-client-id"] = json!("polite");
    let s = connect(&mut page, fields).await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
    click(&mut page, "c-disconnect").await;
    state_until(&mut page, "disconnected", |s| s["state"] == "disconnected").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !sub.output().contains("the page is gone"),
        "{}",
        sub.output()
    );

    // Drop connection: the socket closed without DISCONNECT
    let mut fields = will.clone();
    fields["c-client-id"] = json!("dropper");
    fields["c-will-message"] = json!("dropped by the button");
    let s = connect(&mut page, fields).await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
    click(&mut page, "c-drop").await;
    wait_line(&sub, "will/web dropped by the button");
    let s = state_until(&mut page, "dropped", |s| s["state"] == "disconnected").await;
    assert!(
        has_event(&s, "close", "without DISCONNECT"),
        "{}",
        events_text(&s)
    );

    // the browser killed while connected: the broker publishes the will
    for version in [5, 4] {
        let mut fields = will.clone();
        fields["c-client-id"] = json!(format!("doomed-{version}"));
        fields["c-version"] = json!(version);
        fields["c-will-message"] = json!(format!("the page is gone ({version})"));
        let mut page = open_client(http).await;
        let s = connect(&mut page, fields).await;
        assert_eq!(s["state"], "connected", "{}", events_text(&s));
        drop(page); // kills Chromium: the socket closes without DISCONNECT
        wait_line(&sub, &format!("will/web the page is gone ({version})"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_the_connack_refusal_for_5_and_3_1_1() {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "s3cret")]);
    let b = broker(
        &format!("[security]\nallow_anonymous = false\npassword_file = \"{pw}\""),
        "",
    );
    let http = b.ports[2];
    let mut page = open_client(http).await;
    let note = page
        .eval("document.getElementById('c-url-note').textContent")
        .await;
    assert!(
        note.as_str()
            .unwrap()
            .contains("needs a username and password"),
        "{note}"
    );
    for (version, code) in [
        (5, "0x86 Bad User Name or Password"),
        (4, "0x04 Bad user name or password"),
    ] {
        let s = connect(
            &mut page,
            json!({"c-version": version, "c-username": "alice", "c-password": "wrong"}),
        )
        .await;
        assert_eq!(s["state"], "error", "{}", events_text(&s));
        assert!(has_event(&s, "connack", code), "{}", events_text(&s));
        assert!(
            s["status"].as_str().unwrap().contains(code),
            "{}",
            s["status"]
        );
        let shown = page
            .eval("document.getElementById('c-connect-error').textContent")
            .await;
        assert!(shown.as_str().unwrap().contains(code), "{shown}");
    }
    page.screenshot("web-client-refused").await;
    // a reload keeps the settings but never the password
    page.eval("window.beforeReload = true").await;
    page.call("Page.reload", json!({})).await;
    let expr = "window.beforeReload ? 'old page' : document.body.dataset.ready";
    page.until("the page reloaded", expr, |v| v == "1").await;
    let kept = page
        .eval("[document.getElementById('c-username').value, document.getElementById('c-password').value, document.getElementById('c-version').value]")
        .await;
    assert_eq!(kept, json!(["alice", "", "4"]));
    let s = connect(
        &mut page,
        json!({"c-version": 5, "c-username": "alice", "c-password": "s3cret"}),
    )
    .await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_connects_subscribes_and_publishes() {
    let pki = Pki::new();
    let b = broker(
        "[security]\nallow_anonymous = true",
        &format!(
            "certfile = \"{}\"\nkeyfile = \"{}\"",
            pki.path("server.crt"),
            pki.path("server.key")
        ),
    );
    let (tcp, ws, http) = (b.port_str(0), b.ports[1], b.ports[2]);
    let mut page = open_client(http).await;
    // the test CA is not in Chromium's trust store; the broker still does a full handshake
    page.call(
        "Security.setIgnoreCertificateErrors",
        json!({"ignore": true}),
    )
    .await;
    let s = page.eval(STATE).await;
    assert_eq!(s["url"], format!("wss://127.0.0.1:{ws}/mqtt"), "{s}");
    let s = connect(&mut page, json!({"c-client-id": "over-tls"})).await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
    subscribe(&mut page, "tls/#", 1).await;
    pub_tcp(&tcp, &["-t", "tls/in", "-m", "secret", "-q", "1"]);
    let s = state_until(&mut page, "the message over wss", |s| {
        !s["messages"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(s["messages"][0]["topic"], "tls/in", "{s}");
    assert_eq!(s["messages"][0]["qos"], 1, "{s}");
    let sub = Sub::start(&["-h", "127.0.0.1", "-p", &tcp, "-t", "tls/out", "-v"]);
    fill(
        &mut page,
        json!({"c-pub-topic": "tls/out", "c-pub-qos": 1, "c-pub-payload": "from wss"}),
    )
    .await;
    click(&mut page, "c-publish").await;
    wait_line(&sub, "tls/out from wss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_websocket_listener_the_page_says_what_to_add() {
    let b = Midge::serve().exact_config(
        "[security]\nallow_anonymous = true\n[[listener]]\nbind = \"127.0.0.1\"\nport = {port0}\n\
         [http]\nbind = \"127.0.0.1\"\nport = {port1}\nallow_anonymous = true\n",
    ).start();
    let http = b.ports[1];
    let listeners = request(
        SocketAddr::from(([127, 0, 0, 1], http)),
        "GET",
        "/api/v1/listeners",
        &[],
        None,
    )
    .await;
    assert_eq!(listeners.status, 200);
    let v: Value = serde_json::from_slice(&listeners.body).unwrap();
    assert_eq!(
        v,
        json!({"listeners": [{"kind": "tcp", "address": "127.0.0.1", "port": b.ports[0],
                              "path": null, "allow_anonymous": true}]})
    );
    let mut page = open_client(http).await;
    let shown = page
        .until(
            "the missing-listener message",
            "document.getElementById('c-no-listener').hidden ? '' : document.getElementById('c-no-listener').textContent",
            |v| v.as_str().is_some_and(|s| !s.is_empty()),
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(shown.contains("no WebSocket listener"), "{shown}");
    assert!(shown.contains("[[listener]]"), "{shown}");
    assert!(shown.contains("protocol = \"websockets\""), "{shown}");
    page.screenshot("web-client-no-listener").await;
}

/// The page's MQTT codec checked by node without a browser: exact bytes of CONNECT (3.1.1
/// and 5.0 with a will), PUBLISH, SUBSCRIBE, acks and DISCONNECT, remaining-length
/// boundaries, packets split across and packed into WebSocket messages, and a clear error
/// for each malformed packet a server could send (tests/web_client/mqtt_js_check.js).
#[test]
fn mqtt_js_encodes_exact_bytes_and_refuses_malformed_packets() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_with_timeout(
        std::process::Command::new("node")
            .arg(dir.join("tests/web_client/mqtt_js_check.js"))
            .arg(dir.join("../http/assets/mqtt.js")),
        T,
    );
    assert!(
        out.status.success() && text(&out.stdout) == "ok\n",
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The server cutting the page off (an operator's DELETE /api/v1/clients/{id}) shows as
/// DISCONNECT 0x98 Administrative action, in the events and the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_disconnect_shows_its_reason() {
    let b = broker("[security]\nallow_anonymous = true", "");
    let http = b.ports[2];
    let mut page = open_client(http).await;
    let s = connect(&mut page, json!({"c-client-id": "kicked", "c-version": 5})).await;
    assert_eq!(s["state"], "connected", "{}", events_text(&s));
    let r = request(
        SocketAddr::from(([127, 0, 0, 1], http)),
        "DELETE",
        "/api/v1/clients/kicked",
        &[],
        None,
    )
    .await;
    assert!(r.status < 300, "{} {}", r.status, text(&r.body));
    let s = state_until(&mut page, "the server's DISCONNECT", |s| {
        s["state"] == "error"
    })
    .await;
    assert!(
        has_event(&s, "disconnect", "0x98 Administrative action"),
        "{}",
        events_text(&s)
    );
    assert!(
        s["status"]
            .as_str()
            .unwrap()
            .contains("Disconnected by the server (0x98 Administrative action"),
        "{}",
        s["status"]
    );
}
