//! The same allow/deny table through an ACL file and through registry policies (issue 12):
//! one `midge serve` with a password file and a mosquitto-format ACL file (`pattern` lines
//! with `%u` and `%c`, a `user` block), another with the same users as devices of the
//! registry holding policies written the same way; every row (user, client id, subscribe
//! or publish, filter or topic) is tried over MQTT 5 on both brokers, and both must give the
//! expected answer (SUBACK / PUBACK reason code: granted or 0x87 Not authorized).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::{Midge, Raw, Read_, http, mqtt_str, packet, passwd, varint};
use serde_json::{Value, json};

const ADMIN: (&str, &str) = ("admin", "admin-pw-123");

/// The users (same names on both sides) and their client ids.
const USERS: &[(&str, &str)] = &[("alice", "alice-pw-1"), ("bob", "bob-pw-22")];

/// The ACL file (mosquitto's format).
const ACL: &str = "\
# every user: its own uplink, its own downlink, its client id's command topics
pattern write devices/%u/up/#
pattern read devices/%u/down/#
pattern readwrite clients/%c/#
# alice alone may read the fleet
user alice
topic read fleet/#
";

/// The same rules as policies: `own` for everyone, `fleet` for alice.
fn policies() -> Vec<Value> {
    vec![
        json!({"name": "own",
               "publish": ["devices/%u/up/#", "clients/%c/#"],
               "subscribe": ["devices/%u/down/#", "clients/%c/#"]}),
        json!({"name": "fleet", "subscribe": ["fleet/#"]}),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Sub,
    Pub,
}

/// (user, client id, operation, filter or topic, allowed?)
const TABLE: &[(&str, &str, Op, &str, bool)] = &[
    // %u: one's own subtree, in the direction granted
    ("alice", "a1", Op::Pub, "devices/alice/up/temp", true),
    ("alice", "a1", Op::Pub, "devices/alice/up", true),
    ("alice", "a1", Op::Pub, "devices/alice/down/x", false),
    ("alice", "a1", Op::Pub, "devices/bob/up/temp", false),
    ("alice", "a1", Op::Sub, "devices/alice/down/#", true),
    ("alice", "a1", Op::Sub, "devices/alice/down/+/x", true),
    ("alice", "a1", Op::Sub, "devices/alice/up/#", false),
    ("alice", "a1", Op::Sub, "devices/bob/down/#", false),
    ("alice", "a1", Op::Sub, "devices/+/down/#", false),
    ("alice", "a1", Op::Sub, "devices/#", false),
    ("bob", "b7", Op::Pub, "devices/bob/up/x/y", true),
    ("bob", "b7", Op::Pub, "devices/alice/up/x", false),
    ("bob", "b7", Op::Sub, "devices/bob/down/cmd", true),
    // %c: the client id's topics, both ways; another client id's are not
    ("alice", "a1", Op::Pub, "clients/a1/status", true),
    ("alice", "a1", Op::Sub, "clients/a1/#", true),
    ("alice", "a1", Op::Pub, "clients/b7/status", false),
    ("alice", "a1", Op::Sub, "clients/b7/#", false),
    ("alice", "a2", Op::Pub, "clients/a2/status", true),
    ("alice", "a2", Op::Pub, "clients/a1/status", false),
    ("bob", "b7", Op::Sub, "clients/b7/+", true),
    ("bob", "b7", Op::Sub, "clients/+/status", false),
    // a client id holding a wildcard gets nothing from a %c rule (clients/b+/# would be
    // an invalid filter: the rule must not turn into clients/+/#)
    ("bob", "b+", Op::Sub, "clients/#", false),
    ("bob", "b+", Op::Sub, "clients/x/y", false),
    ("bob", "b+", Op::Pub, "clients/x/y", false),
    // a user block: alice reads the fleet, bob does not, nobody writes it
    ("alice", "a1", Op::Sub, "fleet/#", true),
    ("alice", "a1", Op::Sub, "fleet/truck1/pos", true),
    ("alice", "a1", Op::Pub, "fleet/truck1/pos", false),
    ("bob", "b7", Op::Sub, "fleet/#", false),
    // nothing else: other topics, everything, $SYS
    ("alice", "a1", Op::Pub, "other", false),
    ("alice", "a1", Op::Sub, "#", false),
    ("alice", "a1", Op::Sub, "$SYS/#", false),
    ("alice", "a1", Op::Pub, "$SYS/x", false),
];

/// A `midge serve` in a folder of its own.
struct Serve {
    _midge: Midge,
    mqtt: u16,
    web: u16,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(security: &str, prepare: impl FnOnce(&Path) -> String) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let admin = dir.path().join("admin.passwd");
        passwd(&admin, &[ADMIN]);
        let extra = prepare(dir.path());
        let midge = Midge::serve()
            .exact_config(&format!(
                "[security]\nallow_anonymous = false\n{security}{extra}\n[http]\npassword_file = \"{}\"\nallow_anonymous = false\n",
                admin.display()
            ))
            .dir(dir.path())
            .start();
        Serve {
            mqtt: midge.port,
            web: midge.http_port(),
            _midge: midge,
            _dir: dir,
        }
    }

    /// An API call as the operator: status and JSON.
    fn api(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = http(
            self.web,
            method,
            path,
            body.to_string().as_bytes(),
            Some(ADMIN),
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// Connect over MQTT 5 with a username and password (the CONNACK must accept it).
fn login(port: u16, client_id: &str, user: &str, password: &str) -> Raw {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(5);
    b.push(0x02 | 0x80 | 0x40);
    b.extend_from_slice(&60u16.to_be_bytes());
    varint(0, &mut b);
    mqtt_str(client_id.as_bytes(), &mut b);
    mqtt_str(user.as_bytes(), &mut b);
    mqtt_str(password.as_bytes(), &mut b);
    let mut r = Raw::tcp(port);
    r.level = 5;
    r.send(&packet(0x10, &b));
    match r.read(Duration::from_secs(20)) {
        Read_::Packet(0x20, body) => assert_eq!(body[1], 0, "{user}/{client_id} refused"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    r
}

/// Every row of the table on one broker: whether it was granted (reason code < 0x80).
fn run(port: u16, passwords: &[(&str, String)]) -> Vec<bool> {
    let mut out = Vec::new();
    let mut conns: Vec<((String, String), Raw)> = Vec::new();
    for (user, client_id, op, topic, _) in TABLE {
        let key = (user.to_string(), client_id.to_string());
        let i = match conns.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                let pw = &passwords.iter().find(|(u, _)| u == user).unwrap().1;
                conns.push((key, login(port, client_id, user, pw)));
                conns.len() - 1
            }
        };
        let c = &mut conns[i].1;
        let code = match op {
            Op::Sub => c.subscribe(topic, 1)[0],
            Op::Pub => {
                c.send(&common::publish_packet(
                    topic.as_bytes(),
                    b"x",
                    1,
                    false,
                    9,
                    Some(&[]),
                ));
                let (_, body) = c.expect_type(4, Duration::from_secs(5));
                body.get(2).copied().unwrap_or(0)
            }
        };
        assert!(
            code < 0x80 || code == 0x87,
            "{user}/{client_id} {op:?} {topic}: reason 0x{code:02X}"
        );
        out.push(code < 0x80);
    }
    out
}

#[test]
fn an_acl_file_and_registry_policies_give_the_same_allow_deny_table() {
    // (a) password file + ACL file
    let files = Serve::start("", |dir| {
        let pw = dir.join("mqtt.passwd");
        passwd(&pw, USERS);
        let acl = dir.join("acl");
        std::fs::write(&acl, ACL).unwrap();
        format!(
            "password_file = \"{}\"\nacl_file = \"{}\"\n",
            pw.display(),
            acl.display()
        )
    });
    let file_passwords: Vec<(&str, String)> =
        USERS.iter().map(|(u, p)| (*u, (*p).to_owned())).collect();

    // (b) the same users as devices, the same rules as policies
    let reg = Serve::start("", |_| String::new());
    for p in policies() {
        let (status, v) = reg.api("POST", "/api/v1/policies", &p);
        assert_eq!(status, 201, "{v}");
    }
    let mut device_secrets = Vec::new();
    for (user, _) in USERS {
        let mut held = vec!["own"];
        if *user == "alice" {
            held.push("fleet");
        }
        let (status, d) = reg.api(
            "POST",
            "/api/v1/devices",
            &json!({"name": user, "policies": held}),
        );
        assert_eq!(status, 201, "{d}");
        assert_eq!(d["username"], *user);
        device_secrets.push((*user, d["secret"].as_str().unwrap().to_owned()));
    }

    let through_file = run(files.mqtt, &file_passwords);
    let through_policies = run(reg.mqtt, &device_secrets);
    let mut wrong = Vec::new();
    for (i, (user, cid, op, topic, expected)) in TABLE.iter().enumerate() {
        if through_file[i] != *expected || through_policies[i] != *expected {
            wrong.push(format!(
                "{user}/{cid} {op:?} {topic}: expected {expected}, ACL file {}, policies {}",
                through_file[i], through_policies[i]
            ));
        }
    }
    assert!(wrong.is_empty(), "rows that differ:\n{}", wrong.join("\n"));
    assert_eq!(through_file, through_policies);
}
