//! `midge pub` and `midge sub` against a real mosquitto broker started by each test, compared
//! with mosquitto_pub / mosquitto_sub where their output must match byte for byte.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{MIDGE, MOSQUITTO, Midge, Mosquitto, free_port};

/// A scratch directory removed on drop (the cli crate has no dev-dependencies to lean on).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("midge-pubsub-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The broker a test runs against: a real mosquitto (logging every packet), or `midge
/// serve` (the same tests, our own broker); killed on drop.
struct Broker {
    port: u16,
    mosquitto: Option<Mosquitto>,
    /// `midge serve` instead of mosquitto.
    midge: Option<Midge>,
}

impl Broker {
    fn start() -> Broker {
        Broker::with_config("")
    }

    /// mosquitto with these configuration lines (anonymous clients allowed before them).
    fn with_config(extra: &str) -> Broker {
        let m = Mosquitto::start(&format!("log_type all\n{extra}"));
        Broker {
            port: m.port,
            mosquitto: Some(m),
            midge: None,
        }
    }

    /// `midge serve` with the embedded defaults.
    fn midge() -> Broker {
        let m = Midge::start();
        Broker {
            port: m.port,
            mosquitto: None,
            midge: Some(m),
        }
    }

    /// Established connections accepted by the broker (server side of /proc/net/tcp).
    fn established(&self) -> usize {
        Broker::established_on(self.port)
    }

    /// Established connections whose local port is `port`.
    fn established_on(port: u16) -> usize {
        let port = format!(":{port:04X} ");
        ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|t| {
                t.lines()
                    .skip(1)
                    .filter(|l| {
                        let cols: Vec<&str> = l.split_whitespace().collect();
                        cols.len() > 3
                            && format!("{} ", cols[1]).ends_with(&port)
                            && cols[3] == "01"
                    })
                    .count()
            })
            .sum()
    }

    fn port(&self) -> String {
        self.port.to_string()
    }

    fn log(&self) -> String {
        self.mosquitto
            .as_ref()
            .map(Mosquitto::log)
            .unwrap_or_default()
    }

    /// A file in the broker's folder.
    fn path(&self, name: &str) -> PathBuf {
        match (&self.mosquitto, &self.midge) {
            (Some(m), _) => m.dir.join(name),
            (_, Some(m)) => m.path(name),
            _ => unreachable!(),
        }
    }

    /// Wait until the broker has acknowledged a subscription of each client id.
    fn wait_subscribed(&self, ids: &[&str]) {
        let start = Instant::now();
        if self.midge.is_some() {
            // midge serve does not log subscriptions: wait for the connections, then give
            // the SUBSCRIBE (sent right after CONNACK) time to land
            while self.established() < ids.len() {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "subscribers {ids:?} never connected"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(500));
            return;
        }
        loop {
            let log = self.log();
            // the whole line: "Sending SUBACK to dsub" is also a prefix of "... to dsub2"
            if ids
                .iter()
                .all(|id| log.contains(&format!("Sending SUBACK to {id}\n")))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "subscribers {ids:?} never subscribed; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A spawned client process, killed on drop if still running.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(program: &str, args: &[&str]) -> Proc {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Proc(Some(child))
    }

    fn wait(mut self) -> Output {
        let child = self.0.take().unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mosquitto_pub(b: &Broker, args: &[&str]) {
    let mut all = vec!["-h", "127.0.0.1", "-p"];
    let port = b.port();
    all.push(&port);
    all.extend_from_slice(args);
    let out = run("mosquitto_pub", &all);
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}",
        text(&out.stderr)
    );
}

fn midge(args: &[&str]) -> Output {
    run(MIDGE, args)
}

/// Blank out the time stamp of mosquitto's JSON output: `"tst":"...",`.
fn strip_tst(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("\"tst\":") {
        let start = i + rest[i..].find(":").unwrap() + 1;
        let open = start + rest[start..].find('"').unwrap() + 1;
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        let end = rest.find('"').unwrap();
        // check the shape: 2026-11-25T20:17:44.977182Z+0000
        let stamp = &rest[..end];
        assert_eq!(stamp.len(), 32, "time stamp {stamp:?}");
        assert_eq!(&stamp[26..27], "Z");
        out.push_str("TST");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn sub_output_matches_mosquitto_sub_byte_for_byte() {
    sub_output_matches_mosquitto_sub_byte_for_byte_on(Broker::start());
}

#[test]
fn sub_output_matches_mosquitto_sub_byte_for_byte_against_midge_serve() {
    sub_output_matches_mosquitto_sub_byte_for_byte_on(Broker::midge());
}

fn sub_output_matches_mosquitto_sub_byte_for_byte_on(b: Broker) {
    let port = b.port();
    let modes: &[(&str, &[&str])] = &[
        ("plain", &[]),
        ("verbose", &["-v"]),
        ("noeol", &["-N"]),
        ("format", &["-F", "%t %p"]),
        ("format2", &["-F", "%r %q %l [%-6t] %x @@ 100%% \\t|"]),
        ("json", &["-F", "%j"]),
        ("jsonpretty", &["-F", "%J", "--pretty"]),
        ("verbose-noeol", &["-v", "-N"]),
    ];
    let count = "7";
    let mut procs = Vec::new();
    let mut ids = Vec::new();
    for (name, extra) in modes {
        for tool in ["midge", "mosq"] {
            let id = format!("{tool}-{name}");
            let mut args: Vec<&str> = vec![
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "cmp/#",
                "-q",
                "1",
                "-C",
                count,
            ];
            args.extend_from_slice(&["-W", "20", "-i"]);
            args.push(&id);
            args.extend_from_slice(extra);
            let p = if tool == "midge" {
                let mut a = vec!["sub"];
                a.extend_from_slice(&args);
                Proc::spawn(MIDGE, &a)
            } else {
                Proc::spawn("mosquitto_sub", &args)
            };
            procs.push((name.to_string(), tool, p));
            ids.push(id);
        }
    }
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    b.wait_subscribed(&id_refs);

    mosquitto_pub(&b, &["-t", "cmp/a", "-m", "hello world"]);
    mosquitto_pub(&b, &["-t", "cmp/empty", "-n"]);
    mosquitto_pub(&b, &["-t", "cmp/q1", "-m", "at least once", "-q", "1"]);
    mosquitto_pub(
        &b,
        &[
            "-t",
            "cmp/json",
            "-m",
            "{\"a\": [1, 2], \"b\": \"x\"}",
            "-q",
            "2",
        ],
    );
    mosquitto_pub(&b, &["-t", "cmp/quote", "-m", "say \"hi\"\\ \t tab"]);
    let bin = b.path("bin");
    std::fs::write(&bin, b"\x00\x01\xffbinary\n\xc3\xa4").unwrap();
    mosquitto_pub(&b, &["-t", "cmp/bin", "-f", bin.to_str().unwrap()]);
    mosquitto_pub(&b, &["-t", "cmp/ret", "-m", "retained later", "-r"]);

    let mut outputs = std::collections::HashMap::new();
    for (name, tool, p) in procs {
        let out = p.wait();
        assert!(
            out.status.success(),
            "{tool} {name}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
        outputs.insert((name, tool), out.stdout);
    }
    for (name, _) in modes {
        let m = &outputs[&(name.to_string(), "midge")];
        let q = &outputs[&(name.to_string(), "mosq")];
        if name.starts_with("json") {
            let (m, q) = (strip_tst(&text(m)), strip_tst(&text(q)));
            assert_eq!(m, q, "mode {name}");
            if *name == "json" {
                assert_eq!(m.lines().count(), 7);
            }
        } else {
            assert_eq!(text(m), text(q), "mode {name}");
            assert_eq!(m, q, "mode {name} (bytes)");
        }
        assert!(!m.is_empty());
    }
}

#[test]
fn pub_qos2_debug_shows_the_whole_flow() {
    pub_qos2_debug_shows_the_whole_flow_on(Broker::start());
}

#[test]
fn pub_qos2_debug_shows_the_whole_flow_against_midge_serve() {
    pub_qos2_debug_shows_the_whole_flow_on(Broker::midge());
}

fn pub_qos2_debug_shows_the_whole_flow_on(b: Broker) {
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &b.port(),
        "-t",
        "d/q2",
        "-m",
        "hi",
        "-q",
        "2",
        "-d",
        "-i",
        "dbg",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Client dbg sending CONNECT\n\
         Client dbg received CONNACK (0)\n\
         Client dbg sending PUBLISH (d0, q2, r0, m1, 'd/q2', ... (2 bytes))\n\
         Client dbg received PUBREC (Mid: 1)\n\
         Client dbg sending PUBREL (m1)\n\
         Client dbg received PUBCOMP (Mid: 1, RC:0)\n\
         Client dbg sending DISCONNECT\n"
    );
}

#[test]
fn pub_debug_matches_mosquitto_pub_for_each_qos_and_version() {
    let b = Broker::start();
    let port = b.port();
    for v in ["31", "311", "5"] {
        for q in ["0", "1", "2"] {
            let args = [
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "d/t",
                "-m",
                "payload",
                "-q",
                q,
                "-d",
                "-i",
                "same-id",
                "-V",
                v,
                "-r",
            ];
            let mut margs = vec!["pub"];
            margs.extend_from_slice(&args);
            let m = midge(&margs);
            let q_out = run("mosquitto_pub", &args);
            assert!(m.status.success(), "{}", text(&m.stderr));
            assert_eq!(text(&m.stdout), text(&q_out.stdout), "-V {v} -q {q}");
        }
    }
}

#[test]
fn sub_debug_shows_incoming_qos_flows_like_mosquitto_sub() {
    let b = Broker::start();
    let port = b.port();
    let base = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "dq/#",
        "-q",
        "2",
        "-C",
        "3",
        "-W",
        "20",
        "-d",
    ];
    let mut margs = vec!["sub"];
    margs.extend_from_slice(&base);
    margs.extend_from_slice(&["-i", "dsub"]);
    let mut qargs = base.to_vec();
    qargs.extend_from_slice(&["-i", "dsub2"]);
    let m = Proc::spawn(MIDGE, &margs);
    let q = Proc::spawn("mosquitto_sub", &qargs);
    b.wait_subscribed(&["dsub", "dsub2"]);
    mosquitto_pub(&b, &["-t", "dq/0", "-m", "zero"]);
    mosquitto_pub(&b, &["-t", "dq/1", "-m", "one", "-q", "1"]);
    mosquitto_pub(&b, &["-t", "dq/2", "-m", "two", "-q", "2"]);
    let m = text(&m.wait().stdout).replace("dsub ", "ID ");
    let q = text(&q.wait().stdout).replace("dsub2 ", "ID ");
    assert_eq!(m, q);
    assert!(m.contains("Client ID sending PUBREC (m2, rc0)\n"), "{m}");
    assert!(m.contains("Client ID sending PUBCOMP (m2)\n"), "{m}");
    assert!(m.contains("Subscribed (mid: 1): 2\n"), "{m}");
}

#[test]
fn sub_count_exits_zero_and_timeout_exits_27() {
    sub_count_exits_zero_and_timeout_exits_27_on(Broker::start());
}

#[test]
fn sub_count_exits_zero_and_timeout_exits_27_against_midge_serve() {
    sub_count_exits_zero_and_timeout_exits_27_on(Broker::midge());
}

fn sub_count_exits_zero_and_timeout_exits_27_on(b: Broker) {
    let port = b.port();
    // -W with nothing arriving
    let start = Instant::now();
    let out = midge(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "none",
        "-W",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(27));
    assert_eq!(text(&out.stderr), "Timed out\n");
    assert!(out.stdout.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));

    // -C stops after the count, before -W
    mosquitto_pub(&b, &["-t", "cnt/a", "-m", "r1", "-r"]);
    mosquitto_pub(&b, &["-t", "cnt/b", "-m", "r2", "-r"]);
    let out = midge(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "cnt/#",
        "-C",
        "2",
        "-W",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "r1\nr2\n");

    // -E: exit as soon as subscribed
    let out = midge(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "e",
        "-E",
        "-W",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn sub_filters_retained_and_filtered_topics() {
    sub_filters_retained_and_filtered_topics_on(Broker::start());
}

#[test]
fn sub_filters_retained_and_filtered_topics_against_midge_serve() {
    sub_filters_retained_and_filtered_topics_on(Broker::midge());
}

fn sub_filters_retained_and_filtered_topics_on(b: Broker) {
    let port = b.port();
    mosquitto_pub(&b, &["-t", "f/old", "-m", "stale", "-r"]);
    let p = Proc::spawn(
        MIDGE,
        &[
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "f/#",
            "-R",
            "-T",
            "f/skip/#",
            "-v",
            "-C",
            "1",
            "-W",
            "10",
            "-i",
            "filt",
        ],
    );
    b.wait_subscribed(&["filt"]);
    mosquitto_pub(&b, &["-t", "f/skip/x", "-m", "filtered"]);
    mosquitto_pub(&b, &["-t", "f/new", "-m", "fresh"]);
    let out = p.wait();
    assert_eq!(text(&out.stdout), "f/new fresh\n");
}

#[test]
fn retained_message_is_set_and_cleared_with_r_n() {
    retained_message_is_set_and_cleared_with_r_n_on(Broker::start());
}

#[test]
fn retained_message_is_set_and_cleared_with_r_n_against_midge_serve() {
    retained_message_is_set_and_cleared_with_r_n_on(Broker::midge());
}

fn retained_message_is_set_and_cleared_with_r_n_on(b: Broker) {
    let port = b.port();
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ret/t",
        "-m",
        "kept",
        "-r",
        "-q",
        "1",
    ]);
    assert!(out.status.success());
    let got = run(
        "mosquitto_sub",
        &["-p", &port, "-t", "ret/t", "-C", "1", "-W", "5"],
    );
    assert_eq!(text(&got.stdout), "kept\n");

    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ret/t",
        "-r",
        "-n",
    ]);
    assert!(out.status.success());
    let got = run(
        "mosquitto_sub",
        &["-p", &port, "-t", "ret/t", "-C", "1", "-W", "1"],
    );
    assert_eq!(
        got.status.code(),
        Some(27),
        "retained message should be gone"
    );
    assert!(got.stdout.is_empty());
}

#[test]
fn remove_retained_and_retained_only() {
    let b = Broker::start();
    let port = b.port();
    mosquitto_pub(&b, &["-t", "rr/1", "-m", "a", "-r"]);
    mosquitto_pub(&b, &["-t", "rr/2", "-m", "b", "-r"]);
    let out = midge(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "rr/#",
        "--remove-retained",
        "--retained-only",
        "-C",
        "2",
        "-W",
        "5",
        "-v",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "rr/1 a\nrr/2 b\n");
    let got = run("mosquitto_sub", &["-p", &port, "-t", "rr/#", "-W", "1"]);
    assert_eq!(got.status.code(), Some(27));
    assert!(got.stdout.is_empty(), "retained messages were removed");
}

#[test]
fn pub_line_mode_sends_one_message_per_line() {
    pub_line_mode_sends_one_message_per_line_on(Broker::start());
}

#[test]
fn pub_line_mode_sends_one_message_per_line_against_midge_serve() {
    pub_line_mode_sends_one_message_per_line_on(Broker::midge());
}

fn pub_line_mode_sends_one_message_per_line_on(b: Broker) {
    let port = b.port();
    let sub = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p", &port, "-t", "lines", "-C", "4", "-W", "10", "-i", "lsub", "-v",
        ],
    );
    b.wait_subscribed(&["lsub"]);
    let out = run_with_stdin(
        MIDGE,
        &[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "lines",
            "-l",
            "-q",
            "1",
        ],
        b"first\n\nthird\nlast without newline",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = sub.wait();
    assert_eq!(
        text(&got.stdout),
        "lines first\nlines (null)\nlines third\nlines last without newline\n"
    );
}

#[test]
fn pub_stdin_file_repeat_and_v5_properties() {
    let b = Broker::start();
    let port = b.port();
    let sub = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p",
            &port,
            "-t",
            "props",
            "-C",
            "3",
            "-W",
            "10",
            "-i",
            "psub",
            "-V",
            "5",
            "-F",
            "%t|%p|%P|%C|%q",
        ],
    );
    b.wait_subscribed(&["psub"]);
    let out = run_with_stdin(
        MIDGE,
        &[
            "pub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "props",
            "-s",
            "-V",
            "mqttv5",
            "-q",
            "1",
            "--repeat",
            "3",
            "--repeat-delay",
            "0.05",
            "-D",
            "publish",
            "user-property",
            "k",
            "v",
            "-D",
            "publish",
            "content-type",
            "text/plain",
            "-D",
            "connect",
            "session-expiry-interval",
            "10",
        ],
        b"whole\nstdin",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = sub.wait();
    assert_eq!(
        text(&got.stdout),
        "props|whole\nstdin|k:v|text/plain|0\n".repeat(3)
    );
}

#[test]
fn url_option_gives_host_port_and_topic() {
    let b = Broker::start();
    let port = b.port();
    let sub = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p",
            &port,
            "-t",
            "url/topic",
            "-C",
            "1",
            "-W",
            "10",
            "-i",
            "usub",
            "-v",
        ],
    );
    b.wait_subscribed(&["usub"]);
    let url = format!("mqtt://someone:secret@127.0.0.1:{port}/url/topic");
    let out = midge(&["pub", "-L", &url, "-m", "via url"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&sub.wait().stdout), "url/topic via url\n");
}

#[test]
fn will_is_published_when_the_client_dies() {
    will_is_published_when_the_client_dies_on(Broker::start());
}

#[test]
fn will_is_published_when_the_client_dies_against_midge_serve() {
    will_is_published_when_the_client_dies_on(Broker::midge());
}

fn will_is_published_when_the_client_dies_on(b: Broker) {
    let port = b.port();
    let watcher = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p", &port, "-t", "will/#", "-C", "1", "-W", "10", "-i", "wsub", "-v",
        ],
    );
    b.wait_subscribed(&["wsub"]);
    let mut dying = Proc::spawn(
        MIDGE,
        &[
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "nothing",
            "-i",
            "dying",
            "--will-topic",
            "will/dying",
            "--will-payload",
            "gone",
            "--will-qos",
            "1",
        ],
    );
    b.wait_subscribed(&["dying"]);
    if let Some(c) = dying.0.as_mut() {
        c.kill().unwrap(); // no DISCONNECT: the broker must send the will
    }
    assert_eq!(text(&watcher.wait().stdout), "will/dying gone\n");
}

#[test]
fn connection_errors_are_one_line_with_mosquitto_exit_codes() {
    // nothing listening
    let port = free_port().to_string();
    let out = midge(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "Error: Connection refused\n");
    let out = midge(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "t"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "Error: Connection refused\n");

    // bad credentials
    let b = Broker::with_config("allow_anonymous false\n");
    let port = b.port();
    let out = midge(&["pub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(
        text(&out.stderr),
        "Connection error: Connection Refused: not authorised.\n"
    );
    let out = midge(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-V", "5"]);
    assert_eq!(out.status.code(), Some(135));
    assert_eq!(text(&out.stderr), "Connection error: Not authorized\n");
    let out = midge(&["sub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "--quiet"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(out.stderr.is_empty());
}

#[test]
fn usage_errors_explain_themselves() {
    let out = midge(&["pub", "-t", "a/#", "-m", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .starts_with("Error: Invalid publish topic 'a/#', does it contain '+' or '#'?\n")
    );
    let out = midge(&["pub", "-t", "a", "-m", "x", "-q", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: Invalid QoS given: 3\n"));
    let out = midge(&["pub", "-t", "a"]);
    assert!(text(&out.stderr).starts_with("Error: Both topic and message must be supplied."));
    let out = midge(&["sub", "-p", "1"]);
    assert!(text(&out.stderr).starts_with("Error: You must specify a topic to subscribe to."));
    let out = midge(&["pub", "-t", "a", "-m", "x", "--psk", "abcd"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: --psk/--psk-identity: TLS-PSK is not supported"));
    let out = midge(&["pub", "--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--will-topic"));
}

#[test]
fn completions_are_generated_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = midge(&["completions", shell]);
        assert!(out.status.success());
        let s = text(&out.stdout);
        assert!(s.contains("midge"), "{shell}");
        assert!(
            s.contains("will-topic"),
            "{shell}: flags of pub/sub are completed"
        );
    }
}

#[test]
fn paths_exist() {
    assert!(
        Path::new(MOSQUITTO).exists(),
        "mosquitto broker is installed"
    );
}

#[test]
fn v5_publish_refused_by_the_broker_reports_the_reason() {
    let dir = TempDir::new();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read #\ntopic readwrite ok/#\n").unwrap();
    let b = Broker::with_config(&format!(
        "allow_anonymous true\nacl_file {}\n",
        acl.display()
    ));
    let port = b.port();
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "denied/x",
        "-m",
        "m",
        "-q",
        "1",
        "-V",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(135));
    assert_eq!(
        text(&out.stderr),
        "Warning: Publish 1 failed: Not authorized.\n"
    );
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "ok/x",
        "-m",
        "m",
        "-q",
        "1",
        "-V",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// Make a CA and a server certificate for 127.0.0.1 with openssl, in `dir`.
fn make_certs(dir: &Path) {
    let sh = |cmd: &str| {
        let st = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=midge-test-ca",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf",
    );
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other.key -out other.crt -days 2 -subj /CN=other-ca",
    );
}

#[test]
fn tls_with_cafile_insecure_and_mqtts_url() {
    let certs = TempDir::new();
    make_certs(certs.path());
    let d = certs.path().display().to_string();
    let b = Broker::with_config(&format!(
        "allow_anonymous true\ncafile {d}/ca.crt\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n"
    ));
    let port = b.port();
    let sub = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p",
            &port,
            "-t",
            "tls/#",
            "-C",
            "4",
            "-W",
            "10",
            "-i",
            "tsub",
            "-v",
            "--cafile",
            &format!("{d}/ca.crt"),
        ],
    );
    b.wait_subscribed(&["tsub"]);
    let ca = format!("{d}/ca.crt");
    let other = format!("{d}/other.crt");
    let ok = |args: &[&str]| {
        let mut a = vec!["pub", "-h", "127.0.0.1", "-p", &port];
        a.extend_from_slice(args);
        let out = midge(&a);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ok(&["-t", "tls/1", "-m", "cafile", "--cafile", &ca, "-q", "1"]);
    ok(&[
        "-t",
        "tls/2",
        "-m",
        "insecure",
        "--cafile",
        &other,
        "--insecure",
    ]);
    ok(&[
        "-t",
        "tls/3",
        "-m",
        "tls1.2",
        "--cafile",
        &ca,
        "--tls-version",
        "tlsv1.2",
    ]);
    let url = format!("mqtts://127.0.0.1:{port}/tls/4");
    let out = midge(&["pub", "-L", &url, "-m", "url", "--cafile", &ca]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // an untrusted server certificate is a one-line error
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-t",
        "tls/x",
        "-m",
        "no",
        "--cafile",
        &other,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Error: ") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(
        text(&sub.wait().stdout),
        "tls/1 cafile\ntls/2 insecure\ntls/3 tls1.2\ntls/4 url\n"
    );
}

#[test]
fn sub_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut b = Broker::start();
    let port = b.port();
    let sub = Proc::spawn(
        MIDGE,
        &[
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "rc/#",
            "-C",
            "2",
            // -W is a total budget: broker restart plus reconnect backoff on a loaded CI
            // machine took all of 20 s once
            "-W",
            "60",
            "-v",
            "-i",
            "rsub",
        ],
    );
    b.wait_subscribed(&["rsub"]);
    mosquitto_pub(&b, &["-t", "rc/1", "-m", "before"]);
    // restart on the same port with a fresh log
    b.mosquitto.as_mut().unwrap().restart();
    b.wait_subscribed(&["rsub"]);
    mosquitto_pub(&b, &["-t", "rc/2", "-m", "after"]);
    let out = sub.wait();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "rc/1 before\nrc/2 after\n");
}

#[test]
fn unix_socket_and_bind_address() {
    let dir = TempDir::new();
    let sock = dir.path().join("mqtt.sock");
    let b = Broker::with_config(&format!(
        "allow_anonymous true\nlistener 0 {}\n",
        sock.display()
    ));
    let port = b.port();
    let sub = Proc::spawn(
        "mosquitto_sub",
        &[
            "-p", &port, "-t", "ux/#", "-C", "2", "-W", "10", "-i", "usub2", "-v",
        ],
    );
    b.wait_subscribed(&["usub2"]);
    let s = sock.display().to_string();
    let out = midge(&["pub", "--unix", &s, "-t", "ux/1", "-m", "unix"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = midge(&[
        "pub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-A",
        "127.0.0.1",
        "-t",
        "ux/2",
        "-m",
        "bound",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&sub.wait().stdout), "ux/1 unix\nux/2 bound\n");
}

#[test]
fn persistent_session_with_c_keeps_messages_and_u_unsubscribes() {
    let b = Broker::start();
    let port = b.port();
    let sub = |extra: &[&str]| {
        let mut a = vec![
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "-i",
            "keeper",
            "-q",
            "1",
        ];
        a.extend_from_slice(extra);
        midge(&a)
    };
    // subscribe and leave at once; the session stays
    let out = sub(&["-t", "keep/#", "-E"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    mosquitto_pub(&b, &["-t", "keep/1", "-m", "while away", "-q", "1"]);
    let out = sub(&["-t", "keep/#", "-C", "1", "-W", "5", "-v"]);
    assert_eq!(text(&out.stdout), "keep/1 while away\n");
    // -U removes the subscription from the session
    let out = sub(&["-U", "keep/#", "-W", "1"]);
    assert_eq!(out.status.code(), Some(27));
    mosquitto_pub(&b, &["-t", "keep/2", "-m", "not kept", "-q", "1"]);
    let out = sub(&["-U", "keep/#", "-W", "1"]);
    assert_eq!(out.status.code(), Some(27));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    // -c needs a client id
    let out = midge(&["sub", "-p", &port, "-c", "-t", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("Error: You must provide a client id"));
}

#[test]
fn websocket_and_tls_transports_against_midge_serve() {
    let dir = TempDir::new();
    make_certs(dir.path());
    let d = dir.path().display().to_string();
    let b = Midge::serve()
        .exact_config(&format!(
            "[security]\nallow_anonymous = true\n\n\
             [[listener]]\nbind = \"127.0.0.1\"\nport = {{port0}}\n\n\
             [[listener]]\nbind = \"127.0.0.1\"\nport = {{port1}}\nprotocol = \"websockets\"\n\n\
             [[listener]]\nbind = \"127.0.0.1\"\nport = {{port2}}\nprotocol = \"websockets\"\n\
             certfile = \"{d}/server.crt\"\nkeyfile = \"{d}/server.key\"\n\n\
             [[listener]]\nbind = \"127.0.0.1\"\nport = {{port3}}\n\
             certfile = \"{d}/server.crt\"\nkeyfile = \"{d}/server.key\"\n"
        ))
        .start();
    let ports = &b.ports;
    let tcp = ports[0].to_string();
    let ca = format!("{d}/ca.crt");
    let ws_url = format!("ws://127.0.0.1:{}/mqtt", ports[1]);
    let wss_url = format!("wss://127.0.0.1:{}/mqtt", ports[2]);
    let tls = ports[3].to_string();
    // a subscriber over wss, another over plain TCP with mosquitto_sub
    let wss_sub = Proc::spawn(
        MIDGE,
        &[
            "sub", "-L", &wss_url, "--cafile", &ca, "-t", "tr/#", "-v", "-C", "3", "-W", "15",
            "-q", "2",
        ],
    );
    let tcp_sub = Proc::spawn(
        "mosquitto_sub",
        &["-p", &tcp, "-t", "tr/#", "-v", "-C", "3", "-W", "15"],
    );
    let start = Instant::now();
    while Broker::established_on(ports[2]) + Broker::established_on(ports[0]) < 2 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    for (args, what) in [
        (vec!["-L", &ws_url, "-t", "tr/ws", "-q", "1"], "ws"),
        (
            vec!["-L", &wss_url, "--cafile", &ca, "-t", "tr/wss", "-q", "2"],
            "wss",
        ),
        (
            vec![
                "-h",
                "127.0.0.1",
                "-p",
                &tls,
                "--cafile",
                &ca,
                "-t",
                "tr/tls",
            ],
            "tls",
        ),
    ] {
        let mut a = vec!["pub", "-m", what];
        a.extend_from_slice(&args);
        let out = midge(&a);
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
    }
    let expected = "tr/ws ws\ntr/wss wss\ntr/tls tls\n";
    assert_eq!(text(&wss_sub.wait().stdout), expected);
    assert_eq!(text(&tcp_sub.wait().stdout), expected);
}
