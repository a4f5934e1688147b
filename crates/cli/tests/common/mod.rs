//! The shared helpers of every process test: the one launcher of `midge serve`
//! ([`Midge`], port 0, addresses read from its `ready` lines), a raw MQTT socket for
//! hand-written bytes, runners for third-party clients (mosquitto_pub/sub, Python paho)
//! with bounded waits, the codec-based client of the persistence tests ([`persistence`]) and
//! the PKI and clients of the security tests ([`security`]).
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
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub mod mq;
pub mod nats;
// the DevTools driver of the browser tests; `eventually` and `request` below are what it
// asks of its parent (see crates/http/tests/common/mod.rs)
#[path = "../../../http/tests/common/browser.rs"]
pub mod browser;
pub mod persistence;
pub mod security;
mod serve;

pub use serve::{MIDGE, Midge};

/// A port that was free a moment ago, for what must name its port before it starts
/// (mosquitto, a port nothing listens on). `midge serve` takes port 0 instead
/// ([`Midge::serve`]).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Removes ANSI colour sequences from log text.
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

// ---------------------------------------------------------------------------------------
// HTTP/1.1 and the files midge reads
// ---------------------------------------------------------------------------------------

/// One HTTP/1.1 request to 127.0.0.1 (`Connection: close`, a JSON content type when there
/// is a body, Basic authentication when `auth` is given); (status, body), a chunked body
/// joined. Status 0 when the connection closed without an answer.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    use base64::Engine as _;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    if let Some((u, p)) = auth {
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
        req.push_str(&format!("Authorization: Basic {b}\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes());
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, rest.to_owned());
    }
    let mut out = String::new();
    let mut s = rest;
    while let Some((size, r)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || r.len() < n {
            break;
        }
        out.push_str(&r[..n]);
        s = r[n..].trim_start_matches("\r\n");
    }
    (status, out)
}

/// `midge passwd -b [-c] FILE USER PASSWORD` for each user (the first creates the file).
pub fn passwd(file: &Path, users: &[(&str, &str)]) {
    for (i, (u, p)) in users.iter().enumerate() {
        let mut args = vec!["passwd", "-b"];
        if i == 0 {
            args.push("-c");
        }
        let f = file.display().to_string();
        args.extend([f.as_str(), u, p]);
        let out = Command::new(MIDGE).args(&args).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// [`http`] with an optional JSON body and no authentication.
pub fn http_json(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    let body = body.map(serde_json::Value::to_string).unwrap_or_default();
    http(port, method, path, body.as_bytes(), None)
}

// ---------------------------------------------------------------------------------------
// A real mosquitto to compare with or bridge to
// ---------------------------------------------------------------------------------------

pub const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A real mosquitto on 127.0.0.1 (anonymous clients allowed unless `extra` says otherwise,
/// its log to `dir/mosquitto-PORT.log`: add `log_type all` for every packet), killed and
/// reaped on drop. mosquitto cannot
/// report a port it chose, so this is where [`free_port`] is needed.
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: PathBuf,
}

impl Mosquitto {
    /// In a temporary folder of its own, with these configuration lines.
    pub fn start(extra: &str) -> Mosquitto {
        let tmp = tempfile::tempdir().unwrap();
        let mut m = Mosquitto::start_in(tmp.path(), extra);
        m._tmp = Some(tmp);
        m
    }

    /// In `dir` (its configuration, log and persistence files stay there).
    pub fn start_in(dir: &Path, extra: &str) -> Mosquitto {
        for _ in 0..10 {
            let mut m = Mosquitto::spawn(dir, free_port(), extra);
            if m.wait_listening() {
                return m;
            }
            // the port was taken between free_port and the bind: try another
        }
        panic!("mosquitto did not start in 10 tries");
    }

    /// On this port (a restart on the port a bridge was told), in `dir`.
    pub fn on_port(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let mut m = Mosquitto::spawn(dir, port, extra);
        assert!(m.wait_listening(), "mosquitto did not start:\n{}", m.log());
        m
    }

    fn spawn(dir: &Path, port: u16, extra: &str) -> Mosquitto {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join(format!("mosquitto-{port}.log"));
        // `user root`: as root, mosquitto would drop to user mosquitto, who cannot read the
        // test's files (it is ignored when not started as root)
        std::fs::write(
            &conf,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n{extra}\n"
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            child: None,
            port,
            dir: dir.to_owned(),
            _tmp: None,
            log,
        };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(self.dir.join(format!("mosquitto-{}.conf", self.port)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .expect("mosquitto is installed (/usr/sbin/mosquitto)");
        self.child = Some(child);
    }

    /// SIGTERM, then start again on the same port and configuration, with a fresh log.
    pub fn restart(&mut self) {
        self.terminate();
        for _ in 0..50 {
            self.launch();
            if self.wait_listening() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "mosquitto did not start again on {}:\n{}",
            self.port,
            self.log()
        );
    }

    /// Whether it listens within 10 s (false: it exited, e.g. the port was taken).
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("mosquitto not listening on {}:\n{}", self.port, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (mosquitto writes its persistence file) and wait up to 10 s for the exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            panic!("mosquitto did not stop within 10 s of SIGTERM");
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// What the DevTools driver (`browser`) needs from its parent
// ---------------------------------------------------------------------------------------

/// Bound on a browser-side wait.
const BROWSER_T: Duration = Duration::from_secs(15);

/// `eventually(what, || async { Some(..) })`: retried until it answers (bounded).
pub(crate) async fn eventually<F, Fut, R>(what: &str, mut f: F) -> R
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<R>>,
{
    let deadline = Instant::now() + BROWSER_T;
    loop {
        if let Some(r) = f().await {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP answer (status 0: no answer).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request on a fresh connection. The body is read by its Content-Length
/// (Chromium's DevTools server keeps the connection open), else to the end (a chunked one
/// joined).
pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let body = body.unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.ok()?;
        s.write_all(&body).await.ok()?;
        let mut data = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let status = text.split(' ').nth(1)?.parse().ok()?;
                let len = text.lines().find_map(|l| {
                    l.strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                });
                if let Some(len) = len
                    && data.len() >= end + 4 + len
                {
                    return Some(Reply {
                        status,
                        body: data[end + 4..end + 4 + len].to_vec(),
                    });
                }
                let n = s.read(&mut buf).await.ok()?;
                if n == 0 {
                    let rest = &data[end + 4..];
                    let body = if text.contains("transfer-encoding: chunked") {
                        dechunk(rest)
                    } else {
                        rest.to_vec()
                    };
                    return Some(Reply { status, body });
                }
                data.extend_from_slice(&buf[..n]);
                continue;
            }
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            data.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(BROWSER_T, work).await {
        Ok(Some(r)) => r,
        _ => Reply {
            status: 0,
            body: Vec::new(),
        },
    }
}

/// A chunked HTTP/1.1 body joined.
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&s[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || s.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&s[eol + 2..eol + 2 + n]);
        s = &s[(eol + 4 + n).min(s.len())..];
    }
    out
}
