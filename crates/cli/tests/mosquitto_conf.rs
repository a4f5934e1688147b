//! `midge serve -c mosquitto.conf` and `midge config convert`: mosquitto's own
//! configuration format, with Debian's file and its conf.d, listeners (MQTT and
//! WebSockets), a password file and an ACL from mosquitto_passwd, and every unsupported key
//! named with its file and line.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::security::*;
use common::{MIDGE, Midge};

fn convert(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = run_with_timeout(
        Command::new(MIDGE).args(["config", "convert"]).arg(path),
        Duration::from_secs(15),
    );
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn debians_mosquitto_conf_converts_with_its_differences_named() {
    // Debian's file as the package installs it (read from the package when installed)
    let debian = std::fs::read_to_string("/etc/mosquitto/mosquitto.conf").unwrap_or_else(|_| {
        "pid_file /run/mosquitto/mosquitto.pid\n\npersistence true\npersistence_location /var/lib/mosquitto/\n\n\
         log_dest file /var/log/mosquitto/mosquitto.log\n\ninclude_dir /etc/mosquitto/conf.d\n"
            .into()
    });
    let dir = tempfile::tempdir().unwrap();
    let confd = dir.path().join("conf.d");
    std::fs::create_dir(&confd).unwrap();
    std::fs::write(confd.join("README"), "not a .conf file: not read\n").unwrap();
    std::fs::write(
        confd.join("local.conf"),
        "listener 1883\nallow_anonymous true\nmax_queued_messages 500\n",
    )
    .unwrap();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        debian.replace("/etc/mosquitto/conf.d", &confd.display().to_string()),
    )
    .unwrap();
    let (code, out, err) = convert(&conf);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pid_file: not needed"), "{out}");
    assert!(out.contains("log_dest"), "{out}");
    assert!(out.contains("dir = \"/var/lib/mosquitto/\""), "{out}");
    assert!(
        out.contains("[[listener]]\nbind = \"0.0.0.0\"\nport = 1883"),
        "{out}"
    );
    assert!(out.contains("max_queued_messages = 500"), "{out}");
    assert!(out.contains("allow_anonymous = true"), "{out}");
}

#[test]
fn serve_reads_a_mosquitto_conf_with_passwords_acl_and_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    let out = run_with_timeout(
        Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&passwd)
            .args(["alice", "secret"]),
        Duration::from_secs(15),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "user alice\ntopic readwrite home/#\n").unwrap();
    let b = Midge::serve()
        .mosquitto_conf(&format!(
            "# mosquitto.conf\nper_listener_settings false\nallow_anonymous false\n\
         password_file {}\nacl_file {}\n\nlistener {{port0}} 127.0.0.1\n\n\
         listener {{port1}} 127.0.0.1\nprotocol websockets\n\npersistence true\n\
         persistence_location {{dir}}/data/\nautosave_interval 1800\nsys_interval 5\n\
         log_dest syslog\nmax_inflight_messages 20\n",
            passwd.display(),
            acl.display()
        ))
        .start();
    let p = b.port_str(0);
    let sub = Sub::start(&[
        "-h",
        "127.0.0.1",
        "-p",
        &p,
        "-u",
        "alice",
        "-P",
        "secret",
        "-t",
        "home/#",
        "-v",
    ]);
    let ok = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-u",
            "alice",
            "-P",
            "secret",
            "-t",
            "home/t",
            "-m",
            "21",
        ],
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    sub.wait_for("home/t 21");
    // the ACL from the mosquitto.conf holds: alice may not write outside home/#
    let _ = mosquitto(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-u",
            "alice",
            "-P",
            "secret",
            "-t",
            "other/t",
            "-m",
            "x",
        ],
    );
    // anonymous is refused, as the file says
    let anon = mosquitto(
        "mosquitto_pub",
        &["-h", "127.0.0.1", "-p", &p, "-t", "home/t", "-m", "anon"],
    );
    assert!(!anon.status.success(), "anonymous publish was accepted");
    assert!(!sub.sees_within("anon", Duration::from_millis(300)));
    // the WebSocket listener answers an upgrade
    let (_, body) = curl(&[
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "-H",
        "Sec-WebSocket-Protocol: mqtt",
        &format!("http://127.0.0.1:{}/mqtt", b.port_str(1)),
    ]);
    assert!(body.starts_with("HTTP/1.1 101"), "{body}");
    // what midge does differently is logged with file and line
    let log = b.log();
    assert!(log.contains("read as a mosquitto.conf"), "{log}");
    assert!(log.contains("midge.toml:14: autosave_interval"), "{log}");
    assert!(log.contains("midge.toml:16: log_dest"), "{log}");
}

#[test]
fn a_bad_value_in_a_mosquitto_conf_stops_the_start_with_its_line() {
    let mut b = Midge::serve()
        .mosquitto_conf("listener {port0}\nallow_anonymous perhaps\nmax_qos 7\n")
        .spawn();
    let (code, log) = b.wait_exit();
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("midge.toml:2: allow_anonymous: must be true or false"),
        "{log}"
    );
}
