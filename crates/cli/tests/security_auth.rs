//! Passwords (mosquitto_passwd files), anonymous access, ACLs with users and %u/%c patterns,
//! `$SYS` only where allowed, and SIGHUP reloads of both files, against a real broker.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::Midge;
use common::security::*;

const NOT_SEEN: Duration = Duration::from_millis(800);

#[test]
fn password_checks_answer_the_exact_connack_codes_for_3_1_1_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "s3cret")]);
    let b = Midge::serve().exact_config(&format!(
        "[security]\npassword_file = \"{pw}\"\n[[listener]]\nport = {{port0}}\n[[listener]]\nport = {{port1}}\nallow_anonymous = true\n"
    )).start();
    let (strict, open) = (b.ports[0], b.ports[1]);
    for (v5, ok, bad, refused) in [(false, 0, 4, 5), (true, 0x00, 0x86, 0x87)] {
        assert_eq!(connack_code(strict, v5, Some("alice"), Some("s3cret")), ok);
        assert_eq!(
            connack_code(strict, v5, Some("alice"), Some("wrong-pw-123")),
            bad
        );
        assert_eq!(
            connack_code(strict, v5, Some("nobody"), Some("s3cret")),
            bad
        );
        assert_eq!(connack_code(strict, v5, Some("alice"), None), bad);
        assert_eq!(connack_code(strict, v5, None, None), refused);
        // anonymous allowed there, but a wrong password is still wrong
        assert_eq!(connack_code(open, v5, None, None), ok);
        assert_eq!(connack_code(open, v5, Some("alice"), Some("nope")), bad);
    }
    let log = b.log();
    assert!(
        log.contains("login failed: bad username or password"),
        "{log}"
    );
    assert!(log.contains("username=alice"), "{log}");
    assert!(!log.contains("wrong-pw-123"), "password in the log:\n{log}");
    assert!(log.contains("anonymous access is off"), "{log}");
}

#[test]
fn mosquitto_clients_log_in_with_a_mosquitto_passwd_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "s3cret"), ("bob", "hunter2")]);
    let b = Midge::serve()
        .exact_config(&format!(
            "[security]\npassword_file = \"{pw}\"\n[[listener]]\nport = {{port0}}\n"
        ))
        .start();
    let p = b.port_str(0);
    let sub = Sub::start(&["-p", &p, "-u", "alice", "-P", "s3cret", "-t", "t", "-v"]);
    let out = mosquitto(
        "mosquitto_pub",
        &[
            "-p", &p, "-u", "bob", "-P", "hunter2", "-t", "t", "-m", "hi",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    sub.wait_for("t hi");
    let out = mosquitto(
        "mosquitto_pub",
        &["-p", &p, "-u", "bob", "-P", "nope", "-t", "t", "-m", "x"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not authorised")
            || text(&out.stderr).contains("bad user name or password"),
        "{}",
        text(&out.stderr)
    );
    let out = mosquitto("mosquitto_pub", &["-p", &p, "-t", "t", "-m", "x"]);
    assert!(
        text(&out.stderr).contains("not authorised"),
        "{}",
        text(&out.stderr)
    );
}

const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic read devices/#
topic read $SYS/#
user bob
topic write alice/inbox
pattern readwrite users/%u/#
pattern write devices/%c/telemetry
";

fn acl_broker(acl: &str) -> (Midge, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "a"), ("bob", "b")]);
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, acl).unwrap();
    let b = Midge::serve().exact_config(&format!(
        "[server]\nsys_interval = 1\n[security]\nallow_anonymous = true\npassword_file = \"{pw}\"\nacl_file = \"{}\"\n[[listener]]\nport = {{port0}}\n",
        acl_path.display()
    )).start();
    (b, dir)
}

fn publish(p: &str, user: Option<(&str, &str)>, id: &str, topic: &str, msg: &str) {
    let mut args = vec!["-p", p, "-i", id, "-t", topic, "-m", msg, "-q", "1"];
    if let Some((u, pw)) = user {
        args.extend(["-u", u, "-P", pw]);
    }
    let out = mosquitto("mosquitto_pub", &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn acl_users_and_patterns_allow_and_deny_publish_and_subscribe() {
    let (b, _d) = acl_broker(ACL);
    let p = b.port_str(0);
    let alice = Sub::start(&[
        "-p",
        &p,
        "-u",
        "alice",
        "-P",
        "a",
        "-t",
        "alice/#",
        "-t",
        "devices/#",
        "-v",
        "-q",
        "1",
    ]);
    // users: alice writes her tree, bob only alice/inbox
    publish(&p, Some(("alice", "a")), "a1", "alice/notes", "mine");
    alice.wait_for("alice/notes mine");
    publish(&p, Some(("bob", "b")), "b1", "alice/inbox", "hello");
    alice.wait_for("alice/inbox hello");
    publish(&p, Some(("bob", "b")), "b1", "alice/notes", "forged");
    // %c: a device writes only its own telemetry
    publish(&p, None, "dev1", "devices/dev1/telemetry", "21.5");
    alice.wait_for("devices/dev1/telemetry 21.5");
    publish(&p, None, "dev1", "devices/dev2/telemetry", "spoofed");
    assert!(!alice.sees_within("forged", NOT_SEEN), "{}", alice.output());
    assert!(!alice.output().contains("spoofed"));

    // %u: bob reads and writes users/bob/#, not users/alice/#
    let bob = Sub::start(&["-p", &p, "-u", "bob", "-P", "b", "-t", "users/bob/#", "-v"]);
    publish(&p, Some(("bob", "b")), "b2", "users/bob/x", "own");
    bob.wait_for("users/bob/x own");
    let denied = mosquitto(
        "mosquitto_sub",
        &[
            "-p",
            &p,
            "-u",
            "bob",
            "-P",
            "b",
            "-t",
            "users/alice/#",
            "-d",
            "-W",
            "2",
        ],
    );
    let out = text(&denied.stdout) + &text(&denied.stderr);
    assert!(
        out.contains("Subscribed (mid: 1): 128") || out.contains("denied"),
        "{out}"
    );
    // anonymous: only public/#
    let denied = mosquitto(
        "mosquitto_sub",
        &["-p", &p, "-t", "alice/#", "-d", "-W", "2"],
    );
    let out = text(&denied.stdout) + &text(&denied.stderr);
    assert!(out.contains("128") || out.contains("denied"), "{out}");
}

#[test]
fn sys_topics_are_readable_only_where_the_acl_allows() {
    let (b, _d) = acl_broker(ACL);
    let p = b.port_str(0);
    let alice = Sub::start(&[
        "-p",
        &p,
        "-u",
        "alice",
        "-P",
        "a",
        "-t",
        "$SYS/broker/uptime",
        "-v",
    ]);
    alice.wait_for("$SYS/broker/uptime ");
    let bob = mosquitto(
        "mosquitto_sub",
        &[
            "-p", &p, "-u", "bob", "-P", "b", "-t", "$SYS/#", "-v", "-d", "-W", "3",
        ],
    );
    let out = text(&bob.stdout) + &text(&bob.stderr);
    assert!(!out.contains("$SYS/broker/uptime "), "{out}");
    assert!(out.contains("128") || out.contains("denied"), "{out}");
}

#[test]
fn sighup_reloads_acl_and_passwords_and_keeps_the_old_files_when_new_ones_are_broken() {
    let (b, dir) = acl_broker(ACL);
    let p = b.port_str(0);
    let acl_path = dir.path().join("acl");
    let alice = Sub::start(&[
        "-p",
        &p,
        "-u",
        "alice",
        "-P",
        "a",
        "-t",
        "alice/#",
        "-v",
        "-q",
        "1",
        "-c",
        "-i",
        "alice-sub",
    ]);
    publish(&p, Some(("alice", "a")), "a1", "alice/one", "1");
    alice.wait_for("alice/one 1");

    // a broken ACL is reported and the old one stays
    std::fs::write(&acl_path, "user alice\ntopic bogus alice/#\nfrobnicate\n").unwrap();
    b.sighup();
    let log = b.log();
    assert!(log.contains("reload: listener #1"), "{log}");
    assert!(
        log.contains("line 2") && log.contains("line 3"),
        "every problem: {log}"
    );
    publish(&p, Some(("alice", "a")), "a1", "alice/two", "2");
    alice.wait_for("alice/two 2");

    // alice loses read access: the existing subscription stops delivering
    std::fs::write(&acl_path, "user alice\ntopic write alice/#\n").unwrap();
    b.sighup();
    publish(&p, Some(("alice", "a")), "a1", "alice/three", "3");
    assert!(
        !alice.sees_within("alice/three", NOT_SEEN),
        "{}",
        alice.output()
    );

    // a new user in the password file can log in after SIGHUP, not before
    let pw = dir.path().join("passwd").display().to_string();
    assert_eq!(connack_code(b.ports[0], false, Some("carol"), Some("c")), 4);
    let out = mosquitto("mosquitto_passwd", &["-b", &pw, "carol", "c"]);
    assert!(out.status.success());
    b.sighup();
    assert_eq!(connack_code(b.ports[0], false, Some("carol"), Some("c")), 0);
}

#[test]
fn a_v5_publish_the_acl_refuses_gets_puback_0x87() {
    let (b, _d) = acl_broker(ACL);
    let out = python(&format!(
        r#"
import paho.mqtt.client as mqtt, threading
from paho.mqtt.properties import Properties
codes = {{}}
done = threading.Event()
def on_publish(c, u, mid, rc, props):
    codes[mid] = rc.value
    if len(codes) == 2: done.set()
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="v5", protocol=mqtt.MQTTv5)
c.username_pw_set("bob", "b")
c.on_publish = on_publish
c.connect("127.0.0.1", {port}, 30)
c.loop_start()
ok = c.publish("alice/inbox", "allowed", qos=1).mid
no = c.publish("alice/notes", "refused", qos=1).mid
done.wait(10)
print(codes.get(ok), codes.get(no))
"#,
        port = b.port_str(0)
    ));
    // allowed: 0x10 "no matching subscribers" (nobody listens); refused: 0x87
    assert_eq!(text(&out.stdout).trim(), "16 135", "{}", text(&out.stderr));
}

#[test]
fn refused_logins_are_counted_in_sys() {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "s3cret")]);
    let b = Midge::serve().exact_config(&format!(
        "[server]\nsys_interval = 1\n[security]\npassword_file = \"{pw}\"\n[[listener]]\nport = {{port0}}\n"
    )).start();
    let port = b.ports[0];
    assert_eq!(
        connack_code(port, false, Some("alice"), Some("wrong-pw-123")),
        4
    );
    assert_eq!(connack_code(port, true, None, None), 0x87);
    // the counter is published every $SYS interval; -R skips the stale retained value
    // from before the refusals and waits for the next publication
    let port_s = port.to_string();
    let out = run_with_timeout(
        std::process::Command::new("mosquitto_sub").args([
            "-p",
            &port_s,
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-t",
            "$SYS/broker/clients/failed logins",
            "-R",
            "-C",
            "1",
            "-W",
            "5",
        ]),
        Duration::from_secs(8),
    );
    let got = text(&out.stdout);
    let n: u64 = got
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a count: {got:?}"));
    assert!(n >= 2, "expected at least the 2 refused logins, got {n}");
}

/// MQTT users held to an ACL must not step around it through the HTTP API (which publishes
/// and reads anything) with the same password: with [security]'s password file and an ACL,
/// only the users listed in `[http] users` get in (403 for the others, 401 without
/// credentials); without the list an explicit `[http]` is refused, and an implicit one is
/// locked with a warning.
#[test]
fn the_http_api_takes_only_its_listed_users_when_mqtt_users_have_an_acl() {
    let dir = tempfile::tempdir().unwrap();
    let pw = mosquitto_passwd(dir.path(), &[("alice", "a"), ("admin", "root")]);
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite alice/#\n").unwrap();
    let security = format!(
        "[security]\npassword_file = \"{pw}\"\nacl_file = \"{}\"\n[[listener]]\nport = {{port0}}\n",
        acl.display()
    );
    let b = Midge::serve()
        .exact_config(&format!(
            "{security}[http]\nport = {{port1}}\nusers = [\"admin\"]\n"
        ))
        .start();
    let stats = format!("http://127.0.0.1:{}/api/v1/stats", b.port_str(1));
    let status = |user: Option<&str>| {
        let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        if let Some(u) = user {
            args.extend(["-u", u]);
        }
        args.push(&stats);
        curl(&args).1
    };
    assert_eq!(status(Some("admin:root")), "200");
    assert_eq!(
        status(Some("alice:a")),
        "403",
        "an ACL-bound MQTT user got in"
    );
    assert_eq!(status(Some("admin:wrong")), "401");
    assert_eq!(
        status(None),
        "401",
        "anonymous on loopback while passwords are set"
    );
    drop(b);

    let mut b = Midge::serve()
        .exact_config(&format!("{security}[http]\nport = {{port1}}\n"))
        .spawn();
    let (code, log) = b.wait_exit();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("[http] users: must list who may use the HTTP API"),
        "{log}"
    );

    // disabling the API never requires configuring it (issue 14)
    let b = Midge::serve()
        .exact_config(&format!("{security}[http]\nenabled = false\n"))
        .http_as_configured()
        .start();
    assert!(!b.log().contains("HTTP listening"), "{}", b.log());
}
