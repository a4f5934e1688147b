//! The device registry against a real `midge serve`: devices and policies made through the
//! HTTP API (and `midge device`/`midge policy`), devices connecting with the credentials the
//! API gave, held to their policies, cut off live (MQTT 5: DISCONNECT 0x98), narrowed
//! policies dropping subscriptions, the registry surviving a restart, bad input, and the same
//! allow/deny table through an ACL file and through policies.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{MIDGE, Midge, Raw, Read_, mqtt_str, packet, passwd, varint};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin", "admin-pw-123");

/// A `midge serve` in a folder of its own that can be restarted on the same data.
struct Hub {
    midge: Midge,
    mqtt: u16,
    web: u16,
}

impl Hub {
    /// `extra` is added to the `[security]` table.
    fn start(dir: &Path, security_extra: &str) -> Hub {
        let admin_pw = dir.join("admin.passwd");
        if !admin_pw.exists() {
            passwd(&admin_pw, &[ADMIN]);
        }
        let midge = Midge::serve()
            .exact_config(&format!(
                "[security]\nallow_anonymous = false\n{security_extra}\n[http]\npassword_file = \"{}\"\nallow_anonymous = false\n",
                admin_pw.display()
            ))
            .dir(dir)
            .start();
        Hub {
            mqtt: midge.port,
            web: midge.http_port(),
            midge,
        }
    }

    /// SIGKILL and start again on the same data folder and ports.
    fn restart(&mut self) {
        self.midge.restart();
    }

    fn log(&self) -> String {
        self.midge.log()
    }

    fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        http(self.web, method, path, body, Some(ADMIN))
    }

    fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, v) = self.api(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    auth: Option<(&str, &str)>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let (status, text) = common::http(port, method, path, body.as_bytes(), auth);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A CONNECT with a username and password.
fn connect_bytes(level: u8, client_id: &str, user: &str, password: &str) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(level);
    b.push(0x02 | 0x80 | 0x40);
    b.extend_from_slice(&60u16.to_be_bytes());
    if level == 5 {
        varint(0, &mut b);
    }
    mqtt_str(client_id.as_bytes(), &mut b);
    mqtt_str(user.as_bytes(), &mut b);
    mqtt_str(password.as_bytes(), &mut b);
    packet(0x10, &b)
}

/// Connect; returns the CONNACK's code and the connection.
fn login(port: u16, level: u8, client_id: &str, user: &str, password: &str) -> (u8, Raw) {
    let mut r = Raw::tcp(port);
    r.level = level;
    r.send(&connect_bytes(level, client_id, user, password));
    match r.read(Duration::from_secs(20)) {
        Read_::Packet(0x20, body) => (body[1], r),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn must_login(port: u16, level: u8, client_id: &str, user: &str, password: &str) -> Raw {
    let (code, r) = login(port, level, client_id, user, password);
    assert_eq!(code, 0, "{user} refused");
    r
}

/// PUBLISH QoS 1 and return the PUBACK's reason (v5) or 0 (3.1.1).
fn publish_reason(r: &mut Raw, topic: &str) -> u8 {
    let props: Option<&[u8]> = if r.level == 5 { Some(&[]) } else { None };
    r.send(&common::publish_packet(
        topic.as_bytes(),
        b"x",
        1,
        false,
        9,
        props,
    ));
    let (_, body) = r.expect_type(4, Duration::from_secs(5));
    body.get(2).copied().unwrap_or(0)
}

fn create_own_policy_and_device(h: &Hub, device: &str) -> (String, String) {
    let (status, _) = h.api("GET", "/api/v1/policies/own", None);
    if status == 404 {
        h.ok(
            "POST",
            "/api/v1/policies",
            Some(
                &json!({"name": "own", "publish": ["devices/%u/#"], "subscribe": ["devices/%u/#"]}),
            ),
        );
    }
    let (status, d) = h.api(
        "POST",
        "/api/v1/devices",
        Some(&json!({"name": device, "policies": ["own"]})),
    );
    assert_eq!(status, 201, "{d}");
    (
        d["username"].as_str().unwrap().to_owned(),
        d["secret"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn a_device_made_through_the_api_connects_is_held_to_its_policy_and_is_cut_off_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    let (user, secret) = create_own_policy_and_device(&h, "dev1");
    assert_eq!(user, "dev1");
    assert!(secret.len() >= 24, "{secret}");

    // the device's credentials never open the operator API
    let (status, _) = http(
        h.web,
        "GET",
        "/api/v1/devices",
        None,
        Some(("dev1", &secret)),
    );
    // (403 once the HTTP side knows device credentials: a device is not an operator)
    assert!(status == 401 || status == 403, "{status}");

    // connects at once, for 3.1.1 and 5
    let mut v5 = must_login(h.mqtt, 5, "dev1-a", &user, &secret);
    let mut v3 = must_login(h.mqtt, 4, "dev1-b", &user, &secret);
    assert_eq!(v5.subscribe("devices/dev1/#", 1), vec![1]);
    assert_eq!(v5.subscribe("devices/dev2/#", 1), vec![0x87]);
    assert_eq!(v5.subscribe("#", 0), vec![0x87]);
    assert_eq!(v3.subscribe("devices/dev1/#", 0), vec![0]);
    assert_eq!(publish_reason(&mut v5, "devices/dev1/temp"), 0);
    assert_eq!(publish_reason(&mut v5, "devices/dev2/temp"), 0x87);
    // (v5's own copy may come before its PUBACK: the 3.1.1 connection is the witness)
    let (topic, payload, _) = v3.next_publish(Duration::from_secs(5));
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("devices/dev1/temp", &b"x"[..])
    );
    // a wrong secret is a bad password
    assert_eq!(login(h.mqtt, 5, "dev1-c", &user, "not-the-secret").0, 0x86);

    // the console lists the clients, the device and midge's own apart
    let clients = h.ok("GET", "/api/v1/clients", None);
    let ids: Vec<&str> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"dev1-a") && ids.contains(&"dev1-b"),
        "{clients}"
    );
    assert!(!ids.iter().any(|i| i.starts_with("$midge/")), "{clients}");
    let a = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "dev1-a")
        .unwrap();
    assert_eq!(a["device"], "dev1");
    assert_eq!(a["protocol"], "MQTT 5.0", "{a}");
    assert_eq!(a["keep_alive"], 60, "{a}");
    assert_eq!(a["messages_in"], 2, "{a}");
    assert!(
        a["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{a}"
    );
    assert!(
        a["connected_since"].as_i64().unwrap() > 1_700_000_000_000,
        "{a}"
    );
    assert_eq!(a["subscriptions"][0]["filter"], "devices/dev1/#");
    let shown = h.ok("GET", "/api/v1/devices/dev1", None);
    assert_eq!(shown["connections"], 2, "{shown}");
    assert!(shown["last_seen"].as_i64().unwrap() > 0, "{shown}");
    assert!(shown.get("secret").is_none() && shown.get("secret_hash").is_none());

    // disabled: its live connections are cut (v5 hears 0x98) and it cannot come back
    let patched = h.ok(
        "PATCH",
        "/api/v1/devices/dev1",
        Some(&json!({"enabled": false})),
    );
    assert_eq!(patched["disconnected"], 2, "{patched}");
    let got = v5.expect_close(Duration::from_secs(5));
    assert!(
        got.iter()
            .any(|(f, b)| *f == 0xE0 && b.first() == Some(&0x98)),
        "{got:?}"
    );
    v3.expect_close(Duration::from_secs(5));
    assert_eq!(login(h.mqtt, 5, "dev1-a", &user, &secret).0, 0x87);
    assert_eq!(login(h.mqtt, 4, "dev1-a", &user, &secret).0, 5);

    // enabled again: back in
    h.ok(
        "PATCH",
        "/api/v1/devices/dev1",
        Some(&json!({"enabled": true})),
    );
    let mut again = must_login(h.mqtt, 5, "dev1-a", &user, &secret);
    // DELETE /api/v1/clients/{id} disconnects that client
    h.ok("DELETE", "/api/v1/clients/dev1-a", None);
    let got = again.expect_close(Duration::from_secs(5));
    assert!(
        got.iter()
            .any(|(f, b)| *f == 0xE0 && b.first() == Some(&0x98))
    );
    let (status, _) = h.api("DELETE", "/api/v1/clients/dev1-a", None);
    assert_eq!(status, 404);

    // deleted: cut and unknown (then judged as any unknown user: refused)
    let mut live = must_login(h.mqtt, 5, "dev1-z", &user, &secret);
    h.ok("DELETE", "/api/v1/devices/dev1", None);
    live.expect_close(Duration::from_secs(5));
    assert_ne!(login(h.mqtt, 5, "dev1-z", &user, &secret).0, 0);
}

#[test]
fn rotating_a_secret_refuses_the_old_one_and_cuts_its_connections() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    let (user, old) = create_own_policy_and_device(&h, "rot");
    let mut live = must_login(h.mqtt, 5, "rot-1", &user, &old);
    let r = h.ok("POST", "/api/v1/devices/rot/rotate", None);
    let new = r["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(r["disconnected"], 1, "{r}");
    let got = live.expect_close(Duration::from_secs(5));
    assert!(
        got.iter()
            .any(|(f, b)| *f == 0xE0 && b.first() == Some(&0x98))
    );
    assert_eq!(login(h.mqtt, 5, "rot-1", &user, &old).0, 0x86);
    must_login(h.mqtt, 5, "rot-1", &user, &new);
}

#[test]
fn narrowing_a_policy_drops_the_subscriptions_it_no_longer_allows() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    h.ok(
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "wide", "publish": ["#"], "subscribe": ["a/#", "b/#"]})),
    );
    let d = h.ok(
        "POST",
        "/api/v1/devices",
        Some(&json!({"name": "nar", "policies": ["wide"]})),
    );
    let secret = d["secret"].as_str().unwrap();
    let mut sub = must_login(h.mqtt, 5, "nar-sub", "nar", secret);
    assert_eq!(sub.subscribe("a/#", 0), vec![0]);
    assert_eq!(sub.subscribe("b/#", 0), vec![0]);
    let mut publisher = must_login(h.mqtt, 5, "nar-pub", "nar", secret);
    publisher.publish("b/1", b"before", 1);
    assert_eq!(sub.next_publish(Duration::from_secs(5)).0, "b/1");

    let r = h.ok(
        "PUT",
        "/api/v1/policies/wide",
        Some(&json!({"publish": ["#"], "subscribe": ["a/#"]})),
    );
    assert_eq!(r["subscriptions_dropped"], 1, "{r}");
    publisher.publish("b/2", b"after", 1);
    publisher.publish("a/1", b"still", 1);
    // the first message it gets is a/1: b/2 was not delivered
    assert_eq!(sub.next_publish(Duration::from_secs(5)).0, "a/1");
    let clients = h.ok("GET", "/api/v1/clients/nar-sub", None);
    assert_eq!(
        clients["subscriptions"].as_array().unwrap().len(),
        1,
        "{clients}"
    );
    // and it cannot subscribe there again
    assert_eq!(sub.subscribe("b/#", 0), vec![0x87]);
}

#[test]
fn the_registry_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = Hub::start(dir.path(), "");
    h.ok(
        "PUT",
        "/api/v1/registry",
        Some(&json!({"hub": "zengjf", "username_template": "{hub}/{device}"})),
    );
    let (user, secret) = create_own_policy_and_device(&h, "sz_monitor_room");
    assert_eq!(user, "zengjf/sz_monitor_room");
    let file = std::fs::read_to_string(dir.path().join("data/devices.json")).unwrap();
    assert!(!file.contains(&secret), "the secret is stored hashed");
    assert!(file.contains("$7$"));
    h.restart();
    let mut c = must_login(h.mqtt, 5, "room", &user, &secret);
    assert_eq!(c.subscribe("devices/zengjf/sz_monitor_room/#", 0), vec![0]);
    assert_eq!(c.subscribe("devices/other/#", 0), vec![0x87]);
    let list = h.ok("GET", "/api/v1/devices", None);
    assert_eq!(list["devices"][0]["name"], "sz_monitor_room");
    assert_eq!(
        h.ok("GET", "/api/v1/policies", None)["policies"][0]["name"],
        "own"
    );
}

#[test]
fn bad_input_is_answered_404_409_400_413() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    create_own_policy_and_device(&h, "dup");
    for (method, path, body, want) in [
        ("GET", "/api/v1/devices/nope", None, 404),
        (
            "PATCH",
            "/api/v1/devices/nope",
            Some(json!({"enabled": false})),
            404,
        ),
        ("DELETE", "/api/v1/devices/nope", None, 404),
        ("POST", "/api/v1/devices/nope/rotate", None, 404),
        ("GET", "/api/v1/policies/nope", None, 404),
        (
            "PUT",
            "/api/v1/policies/nope",
            Some(json!({"publish": ["a"]})),
            404,
        ),
        ("POST", "/api/v1/devices", Some(json!({"name": "dup"})), 409),
        (
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "other", "username": "dup"})),
            409,
        ),
        (
            "POST",
            "/api/v1/policies",
            Some(json!({"name": "own"})),
            409,
        ),
        ("DELETE", "/api/v1/policies/own", None, 409),
        (
            "POST",
            "/api/v1/policies",
            Some(json!({"name": "bad", "publish": ["a/#/b"]})),
            400,
        ),
        (
            "POST",
            "/api/v1/policies",
            Some(json!({"name": "bad", "subscribe": ["a+"]})),
            400,
        ),
        (
            "POST",
            "/api/v1/policies",
            Some(json!({"publish": ["a"]})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "x", "policies": ["missing"]})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "has space"})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "x", "colour": "red"})),
            400,
        ),
        ("DELETE", "/api/v1/clients/nobody", None, 404),
    ] {
        let (status, v) = h.api(method, path, body.as_ref());
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let big = format!(
        "{{\"name\":\"big\",\"description\":\"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let (status, _) = common::http(
        h.web,
        "POST",
        "/api/v1/devices",
        big.as_bytes(),
        Some(ADMIN),
    );
    assert_eq!(status, 413);
    // without credentials: nothing
    let (status, _) = http(h.web, "GET", "/api/v1/devices", None, None);
    assert_eq!(status, 401);
}

/// Reason codes for one client: SUBACK for each filter, PUBACK for each topic.
fn table(port: u16, client_id: &str, user: &str, pw: &str, me: &str) -> Vec<(String, u8)> {
    let mut c = must_login(port, 5, client_id, user, pw);
    let mut out = Vec::new();
    for f in [
        format!("devices/{me}/#"),
        format!("devices/{me}/a/+"),
        "devices/#".into(),
        "devices/+/x".into(),
        format!("cmd/{client_id}"),
        "cmd/other".into(),
        "$SYS/#".into(),
        "#".into(),
    ] {
        let code = c.subscribe(&f, 1)[0];
        out.push((f.replace(me, "ME").replace(client_id, "CID"), code));
    }
    for t in [
        format!("devices/{me}/t"),
        "devices/other/t".into(),
        format!("cmd/{client_id}"),
        "$SYS/x".into(),
        "x".into(),
    ] {
        let code = publish_reason(&mut c, &t);
        out.push((
            format!("pub {}", t.replace(me, "ME").replace(client_id, "CID")),
            code,
        ));
    }
    out
}

#[test]
fn an_acl_file_and_policies_give_the_same_allow_deny_table() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt.passwd");
    passwd(&pw, &[("alice", "alice-pw-1")]);
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user alice\ntopic write devices/alice/#\ntopic read devices/alice/#\npattern read cmd/%c\n",
    )
    .unwrap();
    let h = Hub::start(
        dir.path(),
        &format!(
            "password_file = \"{}\"\nacl_file = \"{}\"\n",
            pw.display(),
            acl.display()
        ),
    );
    h.ok(
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "p", "publish": ["devices/${device}/#"], "subscribe": ["devices/%u/#", "cmd/%c"]})),
    );
    let d = h.ok(
        "POST",
        "/api/v1/devices",
        Some(&json!({"name": "bob", "policies": ["p"]})),
    );
    let file = table(h.mqtt, "alice-c", "alice", "alice-pw-1", "alice");
    let registry = table(h.mqtt, "bob-c", "bob", d["secret"].as_str().unwrap(), "bob");
    assert_eq!(file, registry);
    // the table is not trivial: some allowed, some refused
    assert!(
        file.iter().any(|(_, c)| *c < 0x80) && file.iter().any(|(_, c)| *c == 0x87),
        "{file:?}"
    );
    // the file user and the device do not see each other's rules
    let mut a = must_login(h.mqtt, 5, "alice-2", "alice", "alice-pw-1");
    assert_eq!(a.subscribe("devices/bob/#", 1), vec![0x87]);
}

#[test]
fn a_username_in_both_the_registry_and_the_password_file_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mqtt.passwd");
    passwd(&pw, &[("both", "file-pw-1")]);
    let mut h = Hub::start(
        dir.path(),
        &format!("password_file = \"{}\"\n", pw.display()),
    );
    // before the device exists the file's user logs in
    must_login(h.mqtt, 4, "b1", "both", "file-pw-1");
    let d = h.ok("POST", "/api/v1/devices", Some(&json!({"name": "both"})));
    // the registry decides for its usernames
    assert_eq!(login(h.mqtt, 4, "b1", "both", "file-pw-1").0, 4);
    must_login(h.mqtt, 4, "b1", "both", d["secret"].as_str().unwrap());
    h.restart();
    let log = h.log();
    assert!(
        log.contains("usernames both in the device registry and in the password file")
            && log.contains("both"),
        "{log}"
    );
}

#[test]
fn midge_device_and_policy_commands_work_against_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    let url = format!("http://127.0.0.1:{}", h.web);
    let midge = |args: &[&str]| {
        let out = Command::new(MIDGE)
            .args(args)
            .args(["--url", &url, "-u", ADMIN.0, "-P", ADMIN.1])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = midge(&[
        "policy",
        "add",
        "own",
        "-w",
        "devices/%u/#",
        "-r",
        "devices/%u/#",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = midge(&["device", "add", "cli1", "-p", "own", "-t", "floor2"]);
    assert!(ok, "{out}{err}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let mut c = must_login(h.mqtt, 5, "cli1-c", "cli1", &secret);
    assert_eq!(c.subscribe("devices/cli1/#", 0), vec![0]);
    let (ok, out, _) = midge(&["device", "list"]);
    assert!(
        ok && out.contains("cli1") && out.contains("1 connection"),
        "{out}"
    );
    let (ok, out, _) = midge(&["device", "show", "cli1", "--json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tags"], json!(["floor2"]));
    let (ok, out, _) = midge(&["device", "rotate", "cli1"]);
    assert!(ok && out.contains("secret: "), "{out}");
    c.expect_close(Duration::from_secs(5));
    let (ok, out, _) = midge(&["policy", "list"]);
    assert!(ok && out.contains("own\tpublish=devices/%u/#"), "{out}");
    // errors carry the server's status and message
    let (ok, _, err) = midge(&["device", "add", "cli1"]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, out, _) = midge(&["device", "rm", "cli1"]);
    assert!(ok && out.contains("deleted cli1"), "{out}");
    let (ok, _, err) = midge(&["device", "show", "cli1"]);
    assert!(!ok && err.contains("404"), "{err}");
    // wrong API credentials are refused
    let out = Command::new(MIDGE)
        .args([
            "device", "list", "--url", &url, "-u", "admin", "-P", "wrong",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[test]
fn the_console_lists_sessions_subscriptions_and_retained_messages_and_acts_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    let (user, secret) = create_own_policy_and_device(&h, "con");
    let mut c = must_login(h.mqtt, 4, "con-live", &user, &secret);
    assert_eq!(c.subscribe("devices/con/cmd", 1), vec![1]);
    for (t, p) in [("devices/con/a", "1"), ("devices/con/b/c", "2")] {
        c.send(&common::publish_packet(
            t.as_bytes(),
            p.as_bytes(),
            0,
            true,
            0,
            None,
        ));
    }
    // an offline persistent session with a queued message
    let mut b = connect_bytes(4, "con-away", &user, &secret);
    b[9] = 0xC0; // username, password, clean session off
    let mut away = Raw::tcp(h.mqtt);
    away.send(&b);
    assert!(matches!(
        away.read(Duration::from_secs(20)),
        Read_::Packet(0x20, _)
    ));
    assert_eq!(away.subscribe("devices/con/#", 1), vec![1]);
    drop(away);
    std::thread::sleep(Duration::from_millis(300));
    c.send(&common::publish_packet(
        b"devices/con/x",
        b"q",
        1,
        false,
        5,
        None,
    ));
    c.expect_type(4, Duration::from_secs(5));

    let subs = h.ok("GET", "/api/v1/subscriptions?filter=cmd", None);
    assert_eq!(subs["subscriptions"].as_array().unwrap().len(), 1, "{subs}");
    assert_eq!(subs["subscriptions"][0]["client_id"], "con-live");
    let sessions = h.ok("GET", "/api/v1/sessions", None);
    let s = &sessions["sessions"][0];
    assert_eq!(s["client_id"], "con-away", "{sessions}");
    assert_eq!(s["queued"], 1, "{sessions}");

    let r = h.ok("GET", "/api/v1/retained?filter=devices/%23", None);
    let topics: Vec<&str> = r["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, vec!["devices/con/a", "devices/con/b/c"], "{r}");
    assert_eq!(r["retained"][1]["payload"], "2");
    // `#` leaves $SYS out
    let all = h.ok("GET", "/api/v1/retained", None);
    assert_eq!(all["retained"].as_array().unwrap().len(), 2, "{all}");
    // and so do the header's counts: the user's two retained messages, two clients
    let stats = h.ok("GET", "/api/v1/stats", None);
    assert_eq!(stats["retained_user"], 2, "{stats}");
    assert!(stats["retained_sys"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["clients_user"], 1, "{stats}");
    assert_eq!(
        h.ok("DELETE", "/api/v1/retained?filter=devices/con/b/%23", None)["deleted"],
        1
    );
    assert_eq!(
        h.ok("GET", "/api/v1/retained", None)["retained"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (status, _) = h.api("DELETE", "/api/v1/retained", None);
    assert_eq!(status, 400);
    let (status, _) = h.api("GET", "/api/v1/retained?filter=a/%23/b", None);
    assert_eq!(status, 400);

    h.ok("DELETE", "/api/v1/sessions/con-away", None);
    let (status, _) = h.api("DELETE", "/api/v1/sessions/con-away", None);
    assert_eq!(status, 404);
    assert!(
        h.ok("GET", "/api/v1/sessions", None)["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_device_test_panel_routes_publish_as_the_device_and_are_held_to_its_policy() {
    let dir = tempfile::tempdir().unwrap();
    let h = Hub::start(dir.path(), "");
    h.ok(
        "POST",
        "/api/v1/policies",
        Some(&json!({"name": "mine", "publish": ["devices/%u/#", "c/%c/up"], "subscribe": ["devices/%u/#", "cmd/${device}"]})),
    );
    let (status, d) = h.api(
        "POST",
        "/api/v1/devices",
        Some(&json!({"name": "panel", "policies": ["mine"]})),
    );
    assert_eq!(status, 201, "{d}");
    let secret = d["secret"].as_str().unwrap().to_owned();

    // the filters as the device gets them
    let t = h.ok("GET", "/api/v1/devices/panel/topics", None);
    assert_eq!(t["publish"], json!(["devices/panel/#", "c/%c/up"]));
    assert_eq!(t["subscribe"], json!(["devices/panel/#", "cmd/panel"]));
    let t = h.ok("GET", "/api/v1/devices/panel/topics?client_id=k1", None);
    assert_eq!(t["publish"], json!(["devices/panel/#", "c/k1/up"]));

    // a subscriber (the device itself) sees what is published as it
    let mut sub = must_login(h.mqtt, 5, "panel-sub", "panel", &secret);
    assert_eq!(sub.subscribe("devices/panel/#", 1), vec![1]);
    let r = h.ok(
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "devices/panel/t", "payload": "21.5", "qos": 1})),
    );
    assert_eq!(r["reason_code"], 0, "{r}");
    assert_eq!(r["device"], "panel");
    // no client id given: its live client's, for %c
    assert_eq!(r["client_id"], "panel-sub");
    let (topic, payload, _) = sub.next_publish(Duration::from_secs(10));
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("devices/panel/t", &b"21.5"[..])
    );
    // %c: the given client id decides, as for the device's own PUBLISH
    let (status, _) = h.api(
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "c/k9/up", "payload": "x", "client_id": "k9"})),
    );
    assert_eq!(status, 200);
    let (status, v) = h.api(
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "c/k9/up", "payload": "x", "client_id": "k8"})),
    );
    assert_eq!(status, 403, "{v}");

    // refused: another device's topic, its subscribe-only topic, $SYS
    for topic in ["devices/other/t", "cmd/panel", "$SYS/x"] {
        let (status, v) = h.api(
            "POST",
            "/api/v1/devices/panel/publish",
            Some(&json!({"topic": topic, "payload": "x", "qos": 1})),
        );
        assert_eq!(status, 403, "{topic}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("may not publish"),
            "{v}"
        );
    }
    // and nothing reached the subscriber
    h.ok(
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "devices/panel/after", "payload": "y", "qos": 1})),
    );
    let (topic, _, _) = sub.next_publish(Duration::from_secs(10));
    assert_eq!(topic, "devices/panel/after");

    // bad input
    for (method, path, body, want) in [
        (
            "POST",
            "/api/v1/devices/nobody/publish",
            Some(json!({"topic": "a"})),
            404,
        ),
        ("GET", "/api/v1/devices/nobody/topics", None, 404),
        ("GET", "/api/v1/devices/panel/topics?bogus=1", None, 400),
        (
            "POST",
            "/api/v1/devices/panel/publish",
            Some(json!({"payload": "no topic"})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices/panel/publish",
            Some(json!({"topic": "devices/panel/+"})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices/panel/publish",
            Some(json!({"topic": "devices/panel/t", "qos": 3})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices/panel/publish",
            Some(json!({"topic": "devices/panel/t", "color": "red"})),
            400,
        ),
        (
            "POST",
            "/api/v1/devices/panel/publish",
            Some(json!({"topic": "devices/panel/t", "client_id": 7})),
            400,
        ),
    ] {
        let (status, v) = h.api(method, path, body.as_ref());
        assert_eq!(status, want, "{method} {path} {body:?}: {v}");
        assert!(v["error"].is_string(), "{v}");
    }
    let (status, text) = common::http(
        h.web,
        "POST",
        "/api/v1/devices/panel/publish",
        b"{\"topic\": ",
        Some(ADMIN),
    );
    assert_eq!(status, 400, "{text}");
    let big = format!(
        "{{\"topic\": \"devices/panel/t\", \"payload\": \"{}\"}}",
        "x".repeat(2 << 20)
    );
    let (status, text) = common::http(
        h.web,
        "POST",
        "/api/v1/devices/panel/publish",
        big.as_bytes(),
        Some(ADMIN),
    );
    assert_eq!(status, 413, "{}", &text[..text.len().min(200)]);

    // disabled: refused even on its own topics (and its connection cut)
    h.ok(
        "PATCH",
        "/api/v1/devices/panel",
        Some(&json!({"enabled": false})),
    );
    let (status, v) = h.api(
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "devices/panel/t", "payload": "x"})),
    );
    assert_eq!(status, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("disabled"), "{v}");
    // the device's credentials never open the API
    let (status, _) = http(
        h.web,
        "POST",
        "/api/v1/devices/panel/publish",
        Some(&json!({"topic": "devices/panel/t"})),
        Some(("panel", &secret)),
    );
    assert!(status == 401 || status == 403, "{status}");
}
