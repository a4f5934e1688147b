//! Shared helpers of the `broker_*` integration tests: a real `midge serve` on a free
//! 127.0.0.1 port (killed and reaped on drop), a raw MQTT socket for hand-written bytes, and
//! runners for third-party clients (mosquitto_pub/sub, Python paho) with bounded waits.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const MIDGE: &str = env!("CARGO_BIN_EXE_midge");

/// A running `midge serve`, killed and waited for on drop.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Removes ANSI colour sequences from log text.
/// `midge serve --port MQTT -c CONF` in `dir` (its log in `dir/midge.log`), returned once it
/// logged `ready addr=` and its HTTP API answers on `web`.
#[allow(clippy::zombie_processes)] // the caller owns the child (and kills and waits on drop)
pub fn serve_with_http(dir: &Path, conf: &Path, mqtt: u16, web: u16) -> Child {
    let log = dir.join("midge.log");
    let mut child = Command::new(MIDGE)
        .args(["serve", "--port", &mqtt.to_string(), "-c"])
        .arg(conf)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(" ready addr=") && TcpStream::connect(("127.0.0.1", web)).is_ok() {
            return child;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("midge serve did not start:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(30));
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Broker {
    /// A broker with the embedded defaults.
    pub fn start() -> Broker {
        Broker::launch(None)
    }

    /// A broker with this TOML configuration (its listener port is set by `--port`).
    /// Anonymous clients are allowed unless the text has its own `[security]` table (with a
    /// configuration file midge refuses them by default, as mosquitto 2 does).
    pub fn with_config(toml: &str) -> Broker {
        if toml.contains("[security]") {
            Broker::launch(Some(toml))
        } else {
            Broker::launch(Some(&format!(
                "{toml}\n[security]\nallow_anonymous = true\n"
            )))
        }
    }

    /// A broker with exactly this TOML configuration.
    pub fn with_exact_config(toml: &str) -> Broker {
        Broker::launch(Some(toml))
    }

    /// The embedded defaults, with extra environment variables for the broker process.
    pub fn start_with_env(env: &[(&str, &str)]) -> Broker {
        Broker::launch_with(None, env)
    }

    fn launch(toml: Option<&str>) -> Broker {
        Broker::launch_with(toml, &[])
    }

    fn launch_with(toml: Option<&str>, env: &[(&str, &str)]) -> Broker {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("midge.log");
            let port = free_port();
            let mut cmd = Command::new(MIDGE);
            cmd.arg("serve").arg("--port").arg(port.to_string());
            // each broker keeps its default data folder (./data) in its own temp dir
            cmd.current_dir(dir.path());
            if let Some(t) = toml {
                let conf = dir.path().join("midge.toml");
                std::fs::write(&conf, t).unwrap();
                cmd.arg("-c").arg(conf);
            }
            for (k, v) in env {
                cmd.env(k, v);
            }
            // the data folder (./data) goes into the test's own directory
            let child = cmd
                .current_dir(dir.path())
                .env("NO_COLOR", "1")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut b = Broker {
                child: Some(child),
                port,
                dir,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                // not just "ready": "Address already in use" contains it too
                if b.log().contains(" ready addr=") {
                    // our process logged it: the listener is bound
                    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
                    return b;
                }
                if b.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                    break; // port taken in the meantime: try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = b.log();
            if !log.contains("Address already in use") {
                panic!("midge serve did not start:\n{log}");
            }
        }
        panic!("no free port after 10 tries");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The broker's log so far, colour codes removed.
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Resident set size in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size in KiB (from /proc).
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Send SIGTERM and wait (bounded) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.pid();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "midge did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A unique-per-process name, for topics and client ids.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------------------
// Raw MQTT over a TCP socket
// ---------------------------------------------------------------------------------------

pub fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

pub fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet from its first byte and body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// Options of a hand-built CONNECT.
#[derive(Clone, Debug)]
pub struct ConnectOpts<'a> {
    /// Protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub level: u8,
    pub client_id: &'a str,
    pub keep_alive: u16,
    pub clean: bool,
    /// (topic, payload, qos, retain)
    pub will: Option<(&'a str, &'a [u8], u8, bool)>,
    /// Raw MQTT 5 CONNECT properties.
    pub props: Vec<u8>,
}

impl Default for ConnectOpts<'_> {
    fn default() -> Self {
        ConnectOpts {
            level: 4,
            client_id: "",
            keep_alive: 60,
            clean: true,
            will: None,
            props: Vec::new(),
        }
    }
}

pub fn connect_packet(o: &ConnectOpts<'_>) -> Vec<u8> {
    let mut b = Vec::new();
    if o.level == 3 {
        mqtt_str(b"MQIsdp", &mut b);
    } else {
        mqtt_str(b"MQTT", &mut b);
    }
    b.push(o.level);
    let mut flags = 0u8;
    if o.clean {
        flags |= 0x02;
    }
    if let Some((_, _, q, r)) = o.will {
        flags |= 0x04 | (q << 3);
        if r {
            flags |= 0x20;
        }
    }
    b.push(flags);
    b.extend_from_slice(&o.keep_alive.to_be_bytes());
    if o.level == 5 {
        varint(o.props.len(), &mut b);
        b.extend_from_slice(&o.props);
    }
    mqtt_str(o.client_id.as_bytes(), &mut b);
    if let Some((t, p, _, _)) = o.will {
        if o.level == 5 {
            b.push(0); // will properties
        }
        mqtt_str(t.as_bytes(), &mut b);
        mqtt_str(p, &mut b);
    }
    packet(0x10, &b)
}

/// PUBLISH bytes (`props` only for v5, `None` for 3.x).
pub fn publish_packet(
    topic: &[u8],
    payload: &[u8],
    qos: u8,
    retain: bool,
    id: u16,
    props: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(topic, &mut b);
    if qos > 0 {
        b.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = props {
        varint(p.len(), &mut b);
        b.extend_from_slice(p);
    }
    b.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &b)
}

pub fn subscribe_packet(id: u16, filters: &[(&str, u8)], v5: bool) -> Vec<u8> {
    let mut b = id.to_be_bytes().to_vec();
    if v5 {
        b.push(0);
    }
    for (f, opts) in filters {
        mqtt_str(f.as_bytes(), &mut b);
        b.push(*opts);
    }
    packet(0x82, &b)
}

/// What a raw read came back with.
#[derive(Debug, PartialEq, Eq)]
pub enum Read_ {
    /// (first byte, body)
    Packet(u8, Vec<u8>),
    /// The broker closed the connection (EOF or reset).
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

/// A raw MQTT connection.
pub struct Raw {
    pub s: TcpStream,
    buf: Vec<u8>,
    pub level: u8,
}

impl Raw {
    /// Just the TCP connection.
    pub fn tcp(port: u16) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            buf: Vec::new(),
            level: 4,
        }
    }

    /// Connect and check for CONNACK success.
    pub fn connect(port: u16, o: &ConnectOpts<'_>) -> Raw {
        let mut r = Raw::tcp(port);
        r.level = o.level;
        r.send(&connect_packet(o));
        match r.read(Duration::from_secs(5)) {
            Read_::Packet(0x20, body) => {
                // byte 1 is the return code (3.x) or reason code (5.0)
                assert_eq!(body[1], 0, "CONNACK refused: {body:?}");
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        r
    }

    pub fn v311(port: u16, client_id: &str) -> Raw {
        Raw::connect(
            port,
            &ConnectOpts {
                client_id,
                ..Default::default()
            },
        )
    }

    pub fn v5(port: u16, client_id: &str) -> Raw {
        Raw::connect(
            port,
            &ConnectOpts {
                level: 5,
                client_id,
                ..Default::default()
            },
        )
    }

    /// Write bytes; a broker that already closed may make this fail, which is ignored.
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes);
    }

    /// Read one packet, bounded by `timeout`.
    pub fn read(&mut self, timeout: Duration) -> Read_ {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((first, body, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                return Read_::Packet(first, body);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read_::Timeout;
            }
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 65536];
            match self.s.read(&mut chunk) {
                Ok(0) => return Read_::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Read_::Timeout;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Read_::Closed,
            }
        }
    }

    /// Read until the broker closes, returning the packets that came first. Panics if the
    /// connection is still open after `timeout`.
    pub fn expect_close(&mut self, timeout: Duration) -> Vec<(u8, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Read_::Packet(f, b) => got.push((f, b)),
                Read_::Closed => return got,
                Read_::Timeout => panic!("connection still open after {timeout:?}; got {got:?}"),
            }
        }
    }

    /// Read packets until one whose type (high nibble) is `ty`, skipping others.
    pub fn expect_type(&mut self, ty: u8, timeout: Duration) -> (u8, Vec<u8>) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Read_::Packet(f, b) if f >> 4 == ty => return (f, b),
                Read_::Packet(..) => {}
                other => panic!("waiting for packet type {ty}: {other:?}"),
            }
        }
    }

    /// SUBSCRIBE and wait for the SUBACK; returns its reason codes.
    pub fn subscribe(&mut self, filter: &str, opts: u8) -> Vec<u8> {
        let v5 = self.level == 5;
        self.send(&subscribe_packet(7, &[(filter, opts)], v5));
        let (_, body) = self.expect_type(9, Duration::from_secs(5));
        let skip = if v5 { 2 + 1 + body[2] as usize } else { 2 };
        body[skip..].to_vec()
    }

    /// PUBLISH (QoS 0 or 1; QoS 1 waits for the PUBACK).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: u8) {
        let props: Option<&[u8]> = if self.level == 5 { Some(&[]) } else { None };
        self.send(&publish_packet(
            topic.as_bytes(),
            payload,
            qos,
            false,
            1,
            props,
        ));
        if qos == 1 {
            self.expect_type(4, Duration::from_secs(5));
        }
    }

    /// The next PUBLISH: (topic, payload, first byte).
    pub fn next_publish(&mut self, timeout: Duration) -> (String, Vec<u8>, u8) {
        let (f, b) = self.expect_type(3, timeout);
        let v5 = self.level == 5;
        decode_publish(f, &b, v5)
    }
}

/// Decode a PUBLISH body: (topic, payload, first byte).
pub fn decode_publish(first: u8, b: &[u8], v5: bool) -> (String, Vec<u8>, u8) {
    let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).unwrap();
    let mut i = 2 + tlen;
    if (first >> 1) & 3 > 0 {
        i += 2;
    }
    if v5 {
        let (plen, n) = read_varint(&b[i..]).unwrap();
        i += n + plen;
    }
    (topic, b[i..].to_vec(), first)
}

pub fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut n = 0usize;
    let mut mult = 1usize;
    for (i, byte) in b.iter().enumerate().take(4) {
        n += usize::from(byte & 0x7f) * mult;
        if byte & 0x80 == 0 {
            return Some((n, i + 1));
        }
        mult *= 128;
    }
    None
}

/// One whole frame at the front of `buf`: (first byte, body, bytes used).
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    let first = *buf.first()?;
    let (len, n) = read_varint(buf.get(1..)?)?;
    let end = 1 + n + len;
    if buf.len() < end {
        return None;
    }
    Some((first, buf[1 + n..end].to_vec(), end))
}

/// Proves the broker still routes: a fresh subscriber gets a fresh publisher's QoS 1 message.
pub fn assert_healthy(port: u16) {
    let topic = unique("health");
    let mut sub = Raw::v311(port, &unique("health-sub"));
    assert_eq!(sub.subscribe(&topic, 1), vec![1]);
    let mut publ = Raw::v5(port, &unique("health-pub"));
    publ.publish(&topic, b"still alive", 1);
    let (t, p, _) = sub.next_publish(Duration::from_secs(5));
    assert_eq!(
        (t.as_str(), p.as_slice()),
        (topic.as_str(), &b"still alive"[..])
    );
}

// ---------------------------------------------------------------------------------------
// Processes with bounded waits
// ---------------------------------------------------------------------------------------

/// A child whose stdout and stderr go to files; killed and reaped on drop.
pub struct Proc {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

/// The end of a process: status (None if it was killed on timeout), stdout, stderr.
#[derive(Debug)]
pub struct Done {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Proc {
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stdout");
        let err = dir.path().join("stderr");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        Proc {
            child: Some(child),
            out,
            err,
            _dir: dir,
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Wait until stdout contains `needle`; panics after `timeout` or if the process ends
    /// first without it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap().is_some();
            if exited && !self.stdout().contains(needle) {
                panic!(
                    "process ended without printing {needle:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait for the exit (killing it after `timeout`).
    pub fn finish(mut self, timeout: Duration) -> Done {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        let code = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Done {
            code,
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run to completion within `timeout`.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> Done {
    Proc::spawn(program, args).finish(timeout)
}

/// The directory of the Python helper scripts.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}
