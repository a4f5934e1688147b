//! `midge serve` as a process: configuration errors, `--print-config` round trip, SIGTERM,
//! and what the first log line tells a person.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::time::Duration;

use common::{MIDGE, Midge, Raw, assert_healthy, run, strip_ansi, unique};

const T: Duration = Duration::from_secs(10);

#[test]
fn a_bad_config_file_exits_non_zero_listing_every_problem_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"colour = "blue"
[server]
max_conections = 5
sys_interval = -1
connect_timeout = "ten"
[[listener]]
bind = "nowhere"
port = 1884
[limits]
max_qos = 3
retain_available = "yes"
"#,
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let d = run(MIDGE, &["serve", "-c", file, "--port", "1"], T);
    assert_eq!(d.code, Some(2), "{d:#?}");
    let err = strip_ansi(&d.stderr);
    for needle in [
        "7 problem(s)".to_owned(),
        format!("{file}: colour: unknown key"),
        format!("{file}: [server] max_conections: unknown key (did you mean `max_connections`?)"),
        format!("{file}: [server] sys_interval: must be between 0 and 86400 (found -1)"),
        format!("{file}: [server] connect_timeout: must be an integer (found string)"),
        format!("{file}: [listener #1] bind: not an IP address: \"nowhere\""),
        format!("{file}: [limits] max_qos: must be between 0 and 2 (found 3)"),
        format!("{file}: [limits] retain_available: must be true or false (found string)"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    // nothing was started: the port in the file was never bound
    assert!(!err.contains("listening"), "{err}");
}

#[test]
fn a_config_file_with_a_syntax_error_or_missing_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "[server\nsys_interval = 1\n").unwrap();
    let file = path.to_str().unwrap();
    let d = run(MIDGE, &["serve", "-c", file], T);
    assert_eq!(d.code, Some(2), "{d:#?}");
    assert!(strip_ansi(&d.stderr).contains(file), "{d:#?}");

    let missing = dir.path().join("nope.toml");
    let d = run(MIDGE, &["serve", "-c", missing.to_str().unwrap()], T);
    assert_ne!(d.code, Some(0), "{d:#?}");
    assert!(d.code.is_some(), "still running: {d:#?}");
    assert!(
        strip_ansi(&d.stderr).contains(missing.to_str().unwrap()),
        "{d:#?}"
    );
}

#[test]
fn print_config_output_is_a_valid_config_that_serves() {
    let d = run(MIDGE, &["serve", "--print-config"], T);
    assert_eq!(d.code, Some(0));
    for key in [
        "[server]",
        "max_connections",
        "connect_timeout",
        "sys_interval",
        "outbound_high_water",
        "[[listener]]",
        "[limits]",
        "max_packet_size",
        "max_queued_messages",
        "topic_alias_maximum",
        "max_retained_messages",
    ] {
        assert!(d.stdout.contains(key), "--print-config lacks {key}");
    }
    // started with it (the port overridden so tests never touch 1883)
    let b = Midge::serve().exact_config(&d.stdout).start();
    assert!(
        b.log().contains(&format!("127.0.0.1:{}", b.port)),
        "{}",
        b.log()
    );
    // it serves the local-only default: anonymous clients on 127.0.0.1
    assert_healthy(b.port);
}

#[test]
fn sigterm_sends_v5_clients_disconnect_0x8b_and_exits_0() {
    let mut b = Midge::start();
    let mut v5 = Raw::v5(b.port, &unique("term5"));
    let mut v3 = Raw::v311(b.port, &unique("term3"));
    // make sure both are fully connected and routed
    let topic = unique("term");
    v5.subscribe(&topic, 1);
    v3.publish(&topic, b"before", 1);
    assert_eq!(v5.next_publish(T).1, b"before");
    let status = b.terminate(T);
    assert_eq!(status.code(), Some(0), "{}", b.log());
    let got = v5.expect_close(T);
    let disconnects: Vec<&(u8, Vec<u8>)> = got.iter().filter(|(f, _)| *f == 0xE0).collect();
    assert_eq!(disconnects.len(), 1, "{got:02x?}");
    assert_eq!(disconnects[0].1.first(), Some(&0x8B), "{got:02x?}");
    // 3.1.1 has no DISCONNECT from the server: just a close
    let got = v3.expect_close(T);
    assert!(got.is_empty(), "{got:02x?}");
}

#[test]
fn the_first_log_line_of_a_config_less_serve_says_local_only_and_anonymous() {
    let b = Midge::start();
    let log = b.log();
    let first = log.lines().next().unwrap();
    assert!(first.contains("local-only"), "{first}");
    assert!(first.contains("anonymous clients allowed"), "{first}");
    // started with port 0: the line names the configured address, the `ready` line the port
    assert!(first.contains("listening on 127.0.0.1:0 "), "{first}");
    assert!(
        log.contains(&format!("ready addr=127.0.0.1:{}", b.port)),
        "{log}"
    );
}

#[test]
fn a_port_already_in_use_makes_serve_exit_1_naming_the_address() {
    let b = Midge::start();
    let port = b.port.to_string();
    let d = run(MIDGE, &["serve", "--port", &port], T);
    assert_eq!(d.code, Some(1), "{d:#?}");
    let err = strip_ansi(&d.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert_healthy(b.port);
}
