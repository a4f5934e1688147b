//! The cluster tests' backbone: a real NATS cluster with JetStream (three `nats-server`
//! processes on free loopback ports, each with its own store folder) that a test can wound
//! (kill -9, restart, SIGSTOP, SIGCONT one server), a minimal NATS protocol client for the
//! JetStream API (to prove what the servers hold), and [`MidgeCluster`]: N `midge serve`
//! nodes on that backbone (`--cluster URLS --node nI`, each with its own folder and HTTP
//! port), returned once every node lists every node in `GET /api/v1/cluster`.
//!
//! Every process here was started by the harness and is killed by its PID on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Midge, free_port, unique};

/// Debian's package puts it on the PATH (`/usr/sbin/nats-server`).
pub const NATS_SERVER: &str = "nats-server";

/// How long a NATS cluster may take to elect a JetStream meta leader on a loaded machine.
const FORM: Duration = Duration::from_secs(30);

/// One `nats-server` of a [`NatsCluster`].
pub struct NatsServer {
    child: Option<Child>,
    /// Its server name (`-n`).
    pub name: String,
    /// Client port.
    pub port: u16,
    /// Route port of the cluster.
    pub cluster_port: u16,
    /// HTTP monitoring port (`/healthz`, `/jsz`, `/routez`).
    pub monitor_port: u16,
    args: Vec<String>,
    dir: PathBuf,
    launches: usize,
    paused: bool,
}

impl NatsServer {
    fn launch(&mut self) {
        self.launches += 1;
        let log = self
            .dir
            .join(format!("{}-{}.log", self.name, self.launches));
        let child = Command::new(NATS_SERVER)
            .args(&self.args)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {NATS_SERVER} (Debian's nats-server): {e}"));
        self.child = Some(child);
        self.paused = false;
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The PID of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (a paused one is).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// kill -9 and reap: no shutdown path, as a machine that dies.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// Start again with the same name, ports and store folder (after [`NatsServer::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// SIGSTOP: the process holds its sockets but answers nothing (a partition stand-in).
    pub fn pause(&mut self) {
        signal(self.pid().expect("server running"), "-STOP");
        self.paused = true;
    }

    /// SIGCONT after [`NatsServer::pause`].
    pub fn resume(&mut self) {
        signal(self.pid().expect("server running"), "-CONT");
        self.paused = false;
    }

    /// The log of every launch so far.
    pub fn log(&self) -> String {
        (1..=self.launches)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("{}-{n}.log", self.name)))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("--- restart ---\n")
    }

    /// A monitoring endpoint's JSON (`None` when it does not answer).
    pub fn monitor(&self, path: &str) -> Option<Value> {
        let (status, body) = http_get(self.monitor_port, path, Duration::from_secs(2))?;
        if status == 0 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Healthy: JetStream is current here (`/healthz` says ok), a meta leader is known,
    /// and it routes to `peers` other servers.
    fn healthy(&self, peers: usize) -> Result<(), String> {
        let h = self.monitor("/healthz").ok_or("no /healthz")?;
        // a stream or consumer still catching up after a restart ("... is not current")
        // is a formed cluster: what the tests need then, they wait for themselves
        let catching_up = h["error"]
            .as_str()
            .is_some_and(|e| e.contains("is not current"));
        if h["status"] != "ok" && !catching_up {
            return Err(format!("/healthz {h}"));
        }
        let routes = self.monitor("/routez").ok_or("no /routez")?;
        let n = routes["num_routes"].as_u64().unwrap_or(0);
        if (n as usize) < peers {
            return Err(format!("{n} routes of {peers}"));
        }
        let jsz = self.monitor("/jsz").ok_or("no /jsz")?;
        let leader = jsz["meta_cluster"]["leader"].as_str().unwrap_or("");
        if leader.is_empty() {
            return Err(format!("no meta leader: {}", jsz["meta_cluster"]));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too
        self.kill();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// A NATS cluster with JetStream: `n` servers named `nats1`..`natsN`, routes between all of
/// them, each storing in its own folder of one temporary directory.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
    /// The cluster's name (`--cluster_name`).
    pub name: String,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Three servers, returned once JetStream has a meta leader and every server is healthy.
    pub fn start() -> NatsCluster {
        NatsCluster::with_servers(3)
    }

    /// `n` servers (ports from the OS: retried with new ones if one was taken meanwhile).
    pub fn with_servers(n: usize) -> NatsCluster {
        let mut last = String::new();
        for _ in 0..5 {
            let c = NatsCluster::spawn(n);
            match c.wait_formed(FORM) {
                Ok(()) => return c,
                Err(e) => {
                    let logs = c.logs();
                    if !logs.contains("address already in use") {
                        panic!("NATS cluster did not form within {FORM:?}: {e}\n{logs}");
                    }
                    last = e;
                }
            }
        }
        panic!("NATS cluster: no free ports after 5 tries ({last})");
    }

    fn spawn(n: usize) -> NatsCluster {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("midge-test");
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let servers = (0..n)
            .map(|i| {
                let (port, cluster_port, monitor_port) = ports[i];
                let server_name = format!("nats{}", i + 1);
                let routes: Vec<String> = ports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, (_, c, _))| format!("nats://127.0.0.1:{c}"))
                    .collect();
                let store = dir.path().join(&server_name);
                let args = vec![
                    "-a".to_owned(),
                    "127.0.0.1".to_owned(),
                    "-p".to_owned(),
                    port.to_string(),
                    "-m".to_owned(),
                    monitor_port.to_string(),
                    "-n".to_owned(),
                    server_name.clone(),
                    "--cluster_name".to_owned(),
                    name.clone(),
                    "-cluster".to_owned(),
                    format!("nats://127.0.0.1:{cluster_port}"),
                    "-routes".to_owned(),
                    routes.join(","),
                    "-js".to_owned(),
                    "-sd".to_owned(),
                    store.display().to_string(),
                ];
                let mut s = NatsServer {
                    child: None,
                    name: server_name,
                    port,
                    cluster_port,
                    monitor_port,
                    args,
                    dir: dir.path().to_owned(),
                    launches: 0,
                    paused: false,
                };
                s.launch();
                s
            })
            .collect();
        NatsCluster {
            servers,
            name,
            _dir: dir,
        }
    }

    /// Wait until every server runs, routes to all others, knows a JetStream meta leader and
    /// reports itself healthy.
    pub fn wait_formed(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let peers = self.servers.len() - 1;
        loop {
            let state: Vec<Result<(), String>> =
                self.servers.iter().map(|s| s.healthy(peers)).collect();
            if state.iter().all(Result::is_ok) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why: Vec<String> = self
                    .servers
                    .iter()
                    .zip(state)
                    .map(|(s, r)| format!("{}: {r:?}", s.name))
                    .collect();
                return Err(why.join("; "));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`NatsCluster::wait_formed`] or panic with the servers' logs.
    pub fn wait_healthy(&self) {
        if let Err(e) = self.wait_formed(FORM) {
            panic!(
                "NATS cluster not healthy within {FORM:?}: {e}\n{}",
                self.logs()
            );
        }
    }

    /// The client URLs, comma-separated (midge's `--cluster` argument).
    pub fn urls(&self) -> String {
        self.servers
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The JetStream meta leader's server name, as the first answering server sees it.
    pub fn meta_leader(&self) -> Option<String> {
        self.servers.iter().find_map(|s| {
            let jsz = s.monitor("/jsz")?;
            let l = jsz["meta_cluster"]["leader"].as_str()?;
            (!l.is_empty()).then(|| l.to_owned())
        })
    }

    /// Every server's logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let log = s.log();
            // the last lines say what went wrong
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            out.push_str(&format!("--- {} (last 30 lines) ---\n{tail}\n", s.name));
        }
        out
    }

    /// A NATS connection to server `i`.
    pub fn connect(&self, i: usize) -> NatsConn {
        NatsConn::connect(self.servers[i].port)
            .unwrap_or_else(|e| panic!("NATS connect to {}: {e}", self.servers[i].name))
    }
}

// ---------------------------------------------------------------------------------------
// A minimal NATS client (the text protocol, https://docs.nats.io/reference/reference-protocols/nats-protocol)
// ---------------------------------------------------------------------------------------

/// One NATS client connection that can make requests (for the JetStream API).
pub struct NatsConn {
    s: TcpStream,
    buf: Vec<u8>,
    inbox: String,
    next: u64,
}

/// A message received: subject, headers block (HMSG), payload.
#[derive(Debug)]
pub struct NatsMsg {
    pub subject: String,
    pub headers: Option<String>,
    pub payload: Vec<u8>,
}

impl NatsConn {
    pub fn connect(port: u16) -> Result<NatsConn, String> {
        let s = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(2),
        )
        .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = NatsConn {
            s,
            buf: Vec::new(),
            inbox: format!("_INBOX.{}", unique("t").replace('-', "_")),
            next: 0,
        };
        let info = c.line(Duration::from_secs(3))?;
        if !info.starts_with("INFO ") {
            return Err(format!("expected INFO, got {info:?}"));
        }
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1,\"name\":\"midge-test\"}}\r\nSUB {}.* 1\r\nPING\r\n",
            c.inbox
        );
        c.send(hello.as_bytes())?;
        loop {
            match c.line(Duration::from_secs(3))?.as_str() {
                "PONG" => return Ok(c),
                l if l.starts_with("-ERR") => return Err(l.to_owned()),
                _ => {}
            }
        }
    }

    fn send(&mut self, b: &[u8]) -> Result<(), String> {
        self.s.write_all(b).map_err(|e| e.to_string())
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timeout".into());
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => Err("connection closed".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timeout".into())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn line(&mut self, limit: Duration) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(l);
            }
            self.fill(deadline)?;
        }
    }

    fn bytes(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>, String> {
        while self.buf.len() < n + 2 {
            self.fill(deadline)?;
        }
        let b = self.buf[..n].to_vec();
        self.buf.drain(..n + 2);
        Ok(b)
    }

    /// The next message (answering the server's PINGs meanwhile).
    pub fn next_msg(&mut self, limit: Duration) -> Result<NatsMsg, String> {
        let deadline = Instant::now() + limit;
        loop {
            let l = self.line(deadline.saturating_duration_since(Instant::now()))?;
            let parts: Vec<&str> = l.split(' ').collect();
            match parts[0] {
                "PING" => self.send(b"PONG\r\n")?,
                "MSG" => {
                    let n: usize = parts.last().unwrap().parse().map_err(|_| l.clone())?;
                    let payload = self.bytes(n, deadline)?;
                    return Ok(NatsMsg {
                        subject: parts[1].to_owned(),
                        headers: None,
                        payload,
                    });
                }
                "HMSG" => {
                    let total: usize = parts[parts.len() - 1].parse().map_err(|_| l.clone())?;
                    let hlen: usize = parts[parts.len() - 2].parse().map_err(|_| l.clone())?;
                    let mut all = self.bytes(total, deadline)?;
                    let payload = all.split_off(hlen.min(all.len()));
                    return Ok(NatsMsg {
                        subject: parts[1].to_owned(),
                        headers: Some(String::from_utf8_lossy(&all).into_owned()),
                        payload,
                    });
                }
                "-ERR" => return Err(l),
                _ => {} // +OK, PONG, INFO
            }
        }
    }

    /// Publish `payload` on `subject` and wait (bounded) for the reply. A "no responders"
    /// status (503) and a timeout are errors.
    pub fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        limit: Duration,
    ) -> Result<Vec<u8>, String> {
        self.next += 1;
        let reply = format!("{}.{}", self.inbox, self.next);
        let mut b = format!("PUB {subject} {reply} {}\r\n", payload.len()).into_bytes();
        b.extend_from_slice(payload);
        b.extend_from_slice(b"\r\n");
        self.send(&b)?;
        let deadline = Instant::now() + limit;
        loop {
            let m = self.next_msg(deadline.saturating_duration_since(Instant::now()))?;
            if m.subject != reply {
                continue; // a late answer to an earlier request
            }
            if let Some(h) = &m.headers {
                if h.starts_with("NATS/1.0 503") {
                    return Err("no responders (503)".into());
                }
                if m.payload.is_empty() {
                    return Err(format!("status {}", h.lines().next().unwrap_or("")));
                }
            }
            return Ok(m.payload);
        }
    }

    /// A JetStream API call (`$JS.API.<api>`) with a JSON body; its JSON answer, or the
    /// API's error / a transport error as `Err`.
    pub fn js(&mut self, api: &str, body: &Value, limit: Duration) -> Result<Value, String> {
        let answer = self.request(
            &format!("$JS.API.{api}"),
            body.to_string().as_bytes(),
            limit,
        )?;
        let v: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        if v.get("error").is_some() {
            return Err(v["error"].to_string());
        }
        Ok(v)
    }

    /// Publish into a stream and wait for JetStream's ack (`{"stream":..,"seq":..}`).
    pub fn js_publish(
        &mut self,
        subject: &str,
        payload: &[u8],
        limit: Duration,
    ) -> Result<Value, String> {
        let answer = self.request(subject, payload, limit)?;
        let v: Value = serde_json::from_slice(&answer).map_err(|e| e.to_string())?;
        if v.get("error").is_some() || v.get("seq").is_none() {
            return Err(v.to_string());
        }
        Ok(v)
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.1, `Connection: close`): (status, body), or
/// `None` when no whole answer comes within `limit`.
pub fn http_get(port: u16, path: &str, limit: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + limit;
    let mut s =
        TcpStream::connect_timeout(&std::net::SocketAddr::from(([127, 0, 0, 1], port)), limit)
            .ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    loop {
        // a whole answer by its Content-Length or chunked end, without waiting for the close
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..i]).to_ascii_lowercase();
            let body = &raw[i + 4..];
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let done = match length {
                Some(n) => body.len() >= n,
                None => head.contains("transfer-encoding: chunked") && body.ends_with(b"0\r\n\r\n"),
            };
            if done {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).ok()?;
        let mut chunk = [0u8; 16384];
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------
// midge nodes on the NATS cluster
// ---------------------------------------------------------------------------------------

/// Whether a node entry of `GET /api/v1/cluster` says it is up: `"state": "up"` (also
/// `"up": true`, so that the harness waits the same way if the field's spelling changes; the
/// API's shape itself is asserted by `cluster::every_node_lists_the_cluster...`).
pub fn is_up(entry: &Value) -> bool {
    entry["state"] == "up" || entry["up"] == true
}

/// How long the nodes may take to see each other.
const JOIN: Duration = Duration::from_secs(30);

/// `n` `midge serve` nodes named `n1`..`nN` on a [`NatsCluster`], each with its own folder,
/// MQTT port and HTTP port.
pub struct MidgeCluster {
    pub nodes: Vec<Midge>,
    /// Node names, in order (`n1`, `n2`, ...).
    pub names: Vec<String>,
    // dropped after the nodes: they must not see their backbone vanish first
    pub nats: NatsCluster,
}

impl MidgeCluster {
    /// Three NATS servers and `n` midge nodes.
    pub fn start(n: usize) -> MidgeCluster {
        MidgeCluster::on(NatsCluster::start(), n)
    }

    /// `n` midge nodes on `nats`, returned once every node lists all of them as up.
    pub fn on(nats: NatsCluster, n: usize) -> MidgeCluster {
        let urls = nats.urls();
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let nodes = names
            .iter()
            .map(|name| {
                Midge::serve()
                    .args(&["--cluster", &urls, "--node", name])
                    .http(true)
                    .start()
            })
            .collect();
        let c = MidgeCluster { nodes, names, nats };
        c.wait_joined();
        c.wait_jetstream_usable();
        c
    }

    /// Whether midge's JetStream streams and durable consumers are usable: every stream and
    /// every durable consumer has a leader and all its replicas are current (caught up),
    /// and every node has its queue consumer. A node logs `ready` once
    /// its streams exist, but an R3 stream just made may still be electing its leader or
    /// catching up a replica, and a node makes its queue consumer (`node-<name>`) after it
    /// is ready: a QoS 1 publish then may wait past midge's JetStream timeout and be
    /// refused (0x97).
    pub fn jetstream_usable(&self) -> Result<(), String> {
        let limit = Duration::from_secs(3);
        let mut c = NatsConn::connect(self.nats.servers[0].port)?;
        let list = c.js("STREAM.LIST", &serde_json::json!({"offset": 0}), limit)?;
        let streams = list["streams"].as_array().cloned().unwrap_or_default();
        if streams.is_empty() {
            return Err("no JetStream stream yet".into());
        }
        let settled = |what: &str, v: &Value, replicas: u64| -> Result<(), String> {
            let cluster = &v["cluster"];
            if cluster["leader"].as_str().unwrap_or("").is_empty() {
                return Err(format!("{what}: no leader ({cluster})"));
            }
            let peers = cluster["replicas"].as_array().cloned().unwrap_or_default();
            if (peers.len() as u64) + 1 < replicas {
                return Err(format!(
                    "{what}: {} of {replicas} peers ({cluster})",
                    peers.len() + 1
                ));
            }
            if let Some(p) = peers.iter().find(|p| p["current"] != true) {
                return Err(format!(
                    "{what}: replica {} not current ({cluster})",
                    p["name"]
                ));
            }
            Ok(())
        };
        let mut durables: Vec<String> = Vec::new();
        for st in &streams {
            let name = st["config"]["name"].as_str().unwrap_or("").to_owned();
            let replicas = st["config"]["num_replicas"].as_u64().unwrap_or(1);
            settled(&format!("stream {name}"), st, replicas)?;
            let consumers = c.js(
                &format!("CONSUMER.LIST.{name}"),
                &serde_json::json!({"offset": 0}),
                limit,
            )?;
            let durable: Vec<&Value> = consumers["consumers"]
                .as_array()
                .map(|cs| {
                    cs.iter()
                        .filter(|c| c["config"]["durable_name"].is_string())
                        .collect()
                })
                .unwrap_or_default();
            for d in &durable {
                let cname = d["name"].as_str().unwrap_or("");
                let creplicas = match d["config"]["num_replicas"].as_u64() {
                    Some(0) | None => replicas,
                    Some(n) => n,
                };
                settled(&format!("consumer {name} > {cname}"), d, creplicas)?;
            }
            durables.extend(
                durable
                    .iter()
                    .filter_map(|d| d["name"].as_str().map(str::to_owned)),
            );
        }
        // each node's queue consumer (`node-<name>`, made once the node runs)
        if durables.iter().any(|d| d.starts_with("node-")) {
            for n in &self.names {
                if !durables.contains(&format!("node-{n}")) {
                    return Err(format!(
                        "no queue consumer node-{n} yet (have {durables:?})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Wait until [`MidgeCluster::jetstream_usable`] (30 s at most).
    pub fn wait_jetstream_usable(&self) {
        let start = Instant::now();
        let deadline = start + JOIN;
        let mut first: Option<String> = None;
        loop {
            match self.jetstream_usable() {
                Ok(()) => {
                    // on stderr, shown with a failure: what the wait was for
                    if let Some(why) = first {
                        eprintln!(
                            "cluster harness: JetStream usable {:?} after the join (was: {why})",
                            start.elapsed()
                        );
                    }
                    return;
                }
                Err(e) if first.is_none() => {
                    first = Some(e);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) if Instant::now() >= deadline => panic!(
                    "midge's JetStream streams not usable within {JOIN:?}: {e}\n{}\n{}",
                    self.logs(),
                    self.nats.logs()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A node started by the caller (e.g. from a configuration file) joins this cluster's
    /// bookkeeping under `name`; waits until every node lists all nodes.
    pub fn add(&mut self, node: Midge, name: &str) {
        self.nodes.push(node);
        self.names.push(name.to_owned());
        self.wait_joined();
        self.wait_jetstream_usable();
    }

    /// MQTT port of node `i` (0-based).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// `GET /api/v1/cluster` of node `i`: (status, body).
    pub fn cluster_api(&self, i: usize) -> Option<(u16, String)> {
        http_get(
            self.nodes[i].http_port(),
            "/api/v1/cluster",
            Duration::from_secs(3),
        )
    }

    /// `GET /api/v1/cluster` of node `i` as JSON (`None` if it does not answer 200 JSON).
    pub fn view(&self, i: usize) -> Option<Value> {
        let (status, body) = self.cluster_api(i)?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// Node `of`'s entry in node `at`'s view.
    pub fn entry(&self, at: usize, of: usize) -> Option<Value> {
        let v = self.view(at)?;
        v["nodes"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == self.names[of].as_str())
            .cloned()
    }

    /// Whether every node lists every node as up.
    fn joined(&self) -> Result<(), String> {
        for (i, name) in self.names.iter().enumerate() {
            let (status, body) = self
                .cluster_api(i)
                .ok_or_else(|| format!("{name}: /api/v1/cluster does not answer"))?;
            if status != 200 {
                return Err(format!("{name}: /api/v1/cluster answered {status}: {body}"));
            }
            let v: Value =
                serde_json::from_str(&body).map_err(|e| format!("{name}: {e}: {body}"))?;
            for other in &self.names {
                let up = v["nodes"]
                    .as_array()
                    .is_some_and(|ns| ns.iter().any(|e| e["name"] == other.as_str() && is_up(e)));
                if !up {
                    return Err(format!("{name} does not list {other} as up: {body}"));
                }
            }
        }
        Ok(())
    }

    /// Wait until every node lists every node as up.
    pub fn wait_joined(&self) {
        let deadline = Instant::now() + JOIN;
        loop {
            match self.joined() {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "the nodes did not join within {JOIN:?}: {e}\n{}",
                        self.logs()
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The number of filters node `of` announced, as node `at` sees it.
    pub fn filters_seen(&self, at: usize, of: usize) -> u64 {
        self.entry(at, of)
            .and_then(|e| e["filters"].as_u64())
            .unwrap_or(0)
    }

    /// The count of node `of`'s filters, the highest over every node's view (a mark for
    /// [`MidgeCluster::wait_filters`]: a view that lags must not make a later wait end
    /// before the new filter is known).
    pub fn filters(&self, of: usize) -> u64 {
        self.filters_among(of, &self.all())
    }

    /// [`MidgeCluster::filters`] over the views of the nodes `at` only (the others may be
    /// paused or dead).
    pub fn filters_among(&self, of: usize, at: &[usize]) -> u64 {
        at.iter()
            .map(|a| self.filters_seen(*a, of))
            .max()
            .unwrap_or(0)
    }

    fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Wait until every node sees at least `want` filters announced by node `of` (so a
    /// publish anywhere reaches the subscriptions just made there).
    pub fn wait_filters(&self, of: usize, want: u64) {
        self.wait_filters_among(of, want, &self.all());
    }

    /// [`MidgeCluster::wait_filters`] for the views of the nodes `at` only.
    pub fn wait_filters_among(&self, of: usize, want: u64, at: &[usize]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen: Vec<u64> = at.iter().map(|a| self.filters_seen(*a, of)).collect();
            if seen.iter().all(|n| *n >= want) {
                return;
            }
            if Instant::now() >= deadline {
                let views: Vec<String> = at
                    .iter()
                    .map(|i| format!("{}: {:?}", self.names[*i], self.cluster_api(*i)))
                    .collect();
                panic!(
                    "{} announced fewer than {want} filters within 15 s (seen {seen:?}):\n{}",
                    self.names[of],
                    views.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every node's log, for failure messages (the last 40 lines of each).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (m, name) in self.nodes.iter().zip(&self.names) {
            let log = m.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            out.push_str(&format!("--- midge {name} (last 40 lines) ---\n{tail}\n"));
        }
        out
    }
}
