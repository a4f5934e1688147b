//! Several `midge serve` nodes as one broker, over NATS (`docs/cluster.md`).
//!
//! - **Interest.** Core reports the distinct filters of this node's clients; each change is
//!   announced on `midge.<cluster>.routes.<node>` with a sequence number, and a full list is
//!   answered on `midge.<cluster>.sync.<node>` (asked for by a node that starts, or that
//!   missed a change). The other nodes' filters become remote sessions in core
//!   (`midge_core::cluster`), so a publish is matched once, locally, and goes once to each
//!   node with a matching client.
//! - **Messages.** QoS 0 goes over core NATS to `midge.<cluster>.m.<node>`, and so does a
//!   fast copy of each QoS 1 message (delivered if it comes first). QoS 1/2 goes
//!   through the replicated JetStream stream `MIDGE_<CLUSTER>_QUEUE` (subject
//!   `midge.<cluster>.fq.<node>`, one durable consumer per node); the publisher's
//!   PUBACK/PUBREC waits until JetStream holds it, and becomes a refusal when JetStream
//!   cannot (no quorum). The topic never becomes part of a subject ([`wire`]).
//! - **A node's queue outlives it.** The stream keeps what a node took from its queue
//!   until no session there holds it any more: every second the node writes its *mark*
//!   (the oldest queue position a session of its still holds, stream
//!   `MIDGE_<CLUSTER>_MARKS`) and purges its queue below it. When a node dies, the others
//!   keep sending to its queue for [`DEAD_GRACE`], and a node that resumes one of its
//!   sessions from the session's record replays the queue from the mark for it.
//! - **Retained.** Stream `MIDGE_<CLUSTER>_RETAIN`, one message per topic (subject from the
//!   topic's hash): read whole at start, then followed.
//! - **Sessions.** A CONNECT first asks the other nodes (`midge.<cluster>.claim`) for the
//!   client's session: a node that has it closes its connection (0x8E) and sends the
//!   subscriptions and queued messages.
//! - **Nodes.** Each node sends a heartbeat every second; a node silent for 3.5 s is gone
//!   and its filters are forgotten.

pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer, stream};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::StreamExt;
use midge_core::{Message, Target};
use midge_server::cluster::{Claim, ClusterIn, ClusterLink, ClusterOut, ClusterPort, NodeInfo};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a node counts as gone.
const DEAD_AFTER: Duration = Duration::from_millis(3_500);
/// How long after a node is gone the others still send its clients' messages to its queue
/// (from where a node that resumes one of its sessions replays them), so that nothing
/// falls between its end and the new subscriptions becoming known everywhere.
const DEAD_GRACE: Duration = Duration::from_secs(10);
/// How often a node writes its queue mark.
const MARK_EVERY: Duration = Duration::from_secs(1);
/// Longest replay of a dead node's queue.
const REPLAY_MAX: Duration = Duration::from_secs(120);
/// How long a CONNECT waits for the other nodes to hand over the client's session.
const CLAIM_WAIT: Duration = Duration::from_millis(1_000);
/// How long a node that handed a session over still forwards what matches it to its new
/// node (other nodes learn the new node's subscriptions within milliseconds).
const MOVED_GRACE: Duration = Duration::from_secs(10);
/// How long a QoS 1/2 forward may wait for JetStream before it is refused.
const JS_TIMEOUT: Duration = Duration::from_secs(3);
/// Heartbeats between two `$SYS/broker/cluster/...` publications.
const SYS_EVERY: u64 = 10;
/// Most bytes of messages bundled into one NATS message (NATS's default max_payload is 1 MiB;
/// a larger message goes alone).
const BUNDLE_BYTES: usize = 512 * 1024;
/// NATS messages (each a bundle of MQTT messages) taken at once.
const BUNDLES: usize = 16;
/// Messages handed to the router at once.
const BATCH: usize = 256;

/// `[cluster]` of the configuration.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name: letters, digits, `-` and `_`; unique in the cluster.
    pub node: String,
    /// The cluster's name (nodes with the same NATS and name form one broker).
    pub name: String,
    /// NATS server URLs.
    pub nats: Vec<String>,
    /// NATS user and password.
    pub user: Option<String>,
    /// NATS password.
    pub password: Option<String>,
    /// NATS token.
    pub token: Option<String>,
    /// NATS credentials file (JWT + nkey seed).
    pub creds: Option<PathBuf>,
    /// CA file to verify the NATS servers with (TLS).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key for NATS (TLS).
    pub tls_cert: Option<PathBuf>,
    /// Client key for NATS.
    pub tls_key: Option<PathBuf>,
    /// JetStream replicas of midge's streams (0: 3 with three or more NATS URLs, else 1).
    pub replicas: usize,
}

impl ClusterConfig {
    /// A node `node` of cluster `midge` on these NATS servers.
    pub fn new(node: &str, nats: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            node: node.into(),
            name: "midge".into(),
            nats,
            user: None,
            password: None,
            token: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            replicas: 0,
        }
    }

    /// Check names: they become NATS subject tokens and stream names.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !ok(&self.node) {
            return Err(ClusterError::Config(format!(
                "node name `{}`: use 1-64 letters, digits, `-` or `_`",
                self.node
            )));
        }
        if !ok(&self.name) {
            return Err(ClusterError::Config(format!(
                "cluster name `{}`: use 1-64 letters, digits, `-` or `_`",
                self.name
            )));
        }
        if self.nats.is_empty() {
            return Err(ClusterError::Config(
                "no NATS server: set `nats = [\"nats://host:4222\"]` or --cluster URL".into(),
            ));
        }
        Ok(())
    }

    fn replicas(&self) -> usize {
        match self.replicas {
            0 if self.nats.len() >= 3 => 3,
            0 => 1,
            n => n,
        }
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad `[cluster]` settings.
    #[error("[cluster]: {0}")]
    Config(String),
    /// NATS unreachable or refused us.
    #[error("cluster: cannot connect to NATS ({urls}): {source}")]
    Connect {
        /// The URLs tried.
        urls: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// JetStream refused to create or open midge's streams.
    #[error("cluster: JetStream stream {stream}: {message}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        message: String,
    },
    /// A file named in `[cluster]` could not be read.
    #[error("cluster: {0}")]
    Io(#[from] std::io::Error),
}

/// A node's view of another.
#[derive(Debug, Clone)]
struct Peer {
    epoch: u64,
    last_seen: Instant,
    /// Sequence of the last interest change applied.
    seq: u64,
    filters: usize,
    up: bool,
    /// When it was found gone (its queue is replayed until `DEAD_GRACE` after).
    gone_at: Option<Instant>,
}

/// What this node announces.
#[derive(Debug, Default)]
struct Local {
    seq: u64,
    filters: BTreeSet<ByteString>,
}

#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    epoch: u64,
    seq: u64,
    filters: usize,
}

#[derive(Serialize, Deserialize)]
struct Delta {
    node: String,
    epoch: u64,
    seq: u64,
    changes: Vec<(String, bool)>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    epoch: u64,
    seq: u64,
    filters: Vec<String>,
}

/// A client's session as the cluster keeps it (stream `MIDGE_<CLUSTER>_SESSIONS`, the
/// last one per client): which node has it, its subscriptions and its will.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    client_id: String,
    node: String,
    epoch: u64,
    connected: bool,
    /// When it was written (ms since the Unix epoch).
    at_ms: i64,
    expiry: u32,
    subs: Vec<(String, u8, u32)>,
    /// The will as an MQTT 5 PUBLISH, hex.
    will: Option<String>,
    will_delay: u32,
}

impl Record {
    fn new(inner: &Inner, client_id: &str, r: &midge_core::SessionRecord) -> Record {
        Record {
            client_id: client_id.into(),
            node: inner.cfg.node.clone(),
            epoch: inner.epoch,
            connected: r.connected,
            at_ms: now_ms(),
            expiry: r.expiry_interval,
            subs: r
                .subscriptions
                .iter()
                .map(|(f, o, id)| (f.to_string(), wire::options_byte(o), id.unwrap_or(0)))
                .collect(),
            will: r.will.as_ref().map(|w| hex(&wire::encode_will(w))),
            will_delay: r
                .will
                .as_ref()
                .and_then(|w| w.properties.will_delay_interval)
                .unwrap_or(0),
        }
    }

    fn will(&self) -> Option<midge_codec::LastWill> {
        let bytes = unhex(self.will.as_deref()?)?;
        wire::decode_will(bytes.into(), self.will_delay).ok()
    }

    fn state(&self) -> midge_core::SessionState {
        midge_core::SessionState {
            client_id: self.client_id.as_str().into(),
            expiry_interval: self.expiry,
            subscriptions: self
                .subs
                .iter()
                .map(|(f, o, id)| {
                    (
                        f.as_str().into(),
                        wire::options_from_byte(*o),
                        (*id != 0).then_some(*id),
                    )
                })
                .collect(),
            messages: Vec::new(),
            inflight: Vec::new(),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A client id as one subject token (it may hold any character).
fn client_token(client_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(client_id.as_bytes());
    hex(&digest)
}

#[derive(Serialize, Deserialize)]
struct ClaimRequest {
    node: String,
    client_id: String,
}

struct Inner {
    cfg: ClusterConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    epoch: u64,
    port: std::sync::OnceLock<ClusterPort>,
    peers: Mutex<BTreeMap<String, Peer>>,
    local: Mutex<Local>,
    /// Requests for a node's full filter list in progress (one at a time per node).
    syncing: Mutex<BTreeSet<String>>,
    /// The highest position in this node's queue acknowledged (0: none this run).
    queue_done: std::sync::atomic::AtomicU64,
    /// Cluster identities of messages: `id_base` + a counter.
    id_base: u64,
    ids: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.cfg.node)
            .finish()
    }
}

impl Inner {
    fn subject(&self, kind: &str, tail: &str) -> String {
        format!("midge.{}.{kind}.{tail}", self.cfg.name)
    }

    fn stream_name(&self, what: &str) -> String {
        format!("MIDGE_{}_{what}", self.cfg.name.to_uppercase())
    }

    async fn to_router(&self, msg: ClusterIn) -> bool {
        match self.port.get() {
            Some(p) => p.send(msg).await,
            None => false,
        }
    }

    /// A new cluster identity for a message: this run's random-looking base plus a
    /// counter, so that no two nodes (or runs) give the same one in practice.
    fn new_message_id(&self) -> u64 {
        let n = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.id_base.wrapping_add(n).max(1)
    }

    fn live_peers(&self) -> usize {
        self.peers
            .lock()
            .map(|p| p.values().filter(|p| p.up).count())
            .unwrap_or(0)
    }
}

/// A node connected to NATS, not yet running (see [`Cluster::run`]).
#[derive(Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
    out_tx: mpsc::UnboundedSender<ClusterOut>,
    out_rx: mpsc::UnboundedReceiver<ClusterOut>,
}

/// A running node: what the HTTP API shows.
#[derive(Clone, Debug)]
pub struct ClusterHandle {
    inner: Arc<Inner>,
}

impl Cluster {
    /// Connect to NATS and make sure midge's streams exist.
    pub async fn connect(cfg: ClusterConfig) -> Result<Cluster, ClusterError> {
        cfg.validate()?;
        let mut opts = async_nats::ConnectOptions::new()
            .name(format!("midge {} {}", cfg.name, cfg.node))
            .ping_interval(Duration::from_secs(1))
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(65_536)
            .event_callback(|event| async move {
                // the client drops what a full subscription buffer cannot take (QoS 0
                // bundles from other nodes): said, never silent
                if let async_nats::Event::SlowConsumer(sid) = event {
                    warn!(subscription = sid, "cluster: messages from other nodes dropped: this node reads them slower than they come (QoS 0 only; QoS 1/2 wait in JetStream)");
                }
            })
            .retry_on_initial_connect();
        if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &cfg.token {
            opts = opts.token(t.clone());
        }
        if let Some(c) = &cfg.creds {
            opts = opts.credentials_file(c).await?;
        }
        if let Some(ca) = &cfg.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
        }
        let urls = cfg.nats.join(",");
        let mut addrs = Vec::new();
        for u in &cfg.nats {
            let addr: async_nats::ServerAddr = u
                .parse()
                .map_err(|e| ClusterError::Config(format!("NATS URL `{u}`: {e}")))?;
            addrs.push(addr);
        }
        let client = tokio::time::timeout(Duration::from_secs(30), opts.connect(addrs))
            .await
            .map_err(|_| ClusterError::Config(format!("NATS at {urls} did not answer in 30 s")))?
            .map_err(|source| ClusterError::Connect {
                urls: urls.clone(),
                source,
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(JS_TIMEOUT);
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let cfg_node = cfg.node.clone();
        let inner = Arc::new(Inner {
            cfg,
            client,
            js,
            epoch,
            port: std::sync::OnceLock::new(),
            peers: Mutex::new(BTreeMap::new()),
            local: Mutex::new(Local::default()),
            syncing: Mutex::new(BTreeSet::new()),
            queue_done: std::sync::atomic::AtomicU64::new(0),
            id_base: {
                use sha2::Digest;
                let d = sha2::Sha256::digest(format!("{} {epoch}", cfg_node).as_bytes());
                d.iter()
                    .take(8)
                    .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            },
            ids: std::sync::atomic::AtomicU64::new(0),
        });
        ensure_streams(&inner).await?;
        info!(node = %inner.cfg.node, cluster = %inner.cfg.name, nats = %urls, "cluster: connected to NATS");
        Ok(Cluster {
            inner,
            out_tx,
            out_rx,
        })
    }

    /// What the server needs: where to send forwards, and the CONNECT claim.
    pub fn link(&self) -> ClusterLink {
        ClusterLink {
            out: self.out_tx.clone(),
            claim: Arc::new(Claimer {
                inner: self.inner.clone(),
            }),
        }
    }

    /// Start the node's tasks against the running server.
    pub async fn run(self, port: ClusterPort) -> Result<ClusterHandle, ClusterError> {
        let inner = self.inner;
        let _ = inner.port.set(port);
        let sub = |s: String| {
            let client = inner.client.clone();
            async move { client.subscribe(s).await }
        };
        let nats_err =
            |e: async_nats::SubscribeError| ClusterError::Config(format!("NATS subscribe: {e}"));
        let hb = sub(inner.subject("hb", "all")).await.map_err(nats_err)?;
        let routes = sub(inner.subject("routes", "*")).await.map_err(nats_err)?;
        let sync = sub(inner.subject("sync", &inner.cfg.node))
            .await
            .map_err(nats_err)?;
        let claims = sub(inner.subject("claim", "all")).await.map_err(nats_err)?;
        let direct = sub(inner.subject("m", &inner.cfg.node))
            .await
            .map_err(nats_err)?;
        let _ = inner.client.flush().await;
        tokio::spawn(outbound(inner.clone(), self.out_rx));
        tokio::spawn(heartbeats(inner.clone()));
        tokio::spawn(watch_heartbeats(inner.clone(), hb));
        tokio::spawn(watch_routes(inner.clone(), routes));
        tokio::spawn(answer_sync(inner.clone(), sync));
        tokio::spawn(answer_claims(inner.clone(), claims));
        tokio::spawn(inbound_direct(inner.clone(), direct));
        tokio::spawn(inbound_queue(inner.clone()));
        tokio::spawn(queue_marks(inner.clone()));
        tokio::spawn(inbound_retained(inner.clone()));
        Ok(ClusterHandle { inner })
    }
}

impl ClusterHandle {
    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.cfg.node
    }

    /// Every node known, this one first.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let connected =
            self.inner.client.connection_state() == async_nats::connection::State::Connected;
        let mut v = vec![NodeInfo {
            name: self.inner.cfg.node.clone(),
            this: true,
            up: connected,
            state: if connected { "up" } else { "down" },
            filters: self.inner.local.lock().map_or(0, |l| l.filters.len()),
            last_seen_ms: 0,
        }];
        if let Ok(peers) = self.inner.peers.lock() {
            for (name, p) in peers.iter() {
                v.push(NodeInfo {
                    name: name.clone(),
                    this: false,
                    up: p.up,
                    state: if p.up { "up" } else { "down" },
                    filters: p.filters,
                    last_seen_ms: u64::try_from(p.last_seen.elapsed().as_millis())
                        .unwrap_or(u64::MAX),
                });
            }
        }
        v
    }
}

impl midge_server::cluster::ClusterView for ClusterHandle {
    fn node(&self) -> String {
        self.inner.cfg.node.clone()
    }
    fn nodes(&self) -> Vec<NodeInfo> {
        ClusterHandle::nodes(self)
    }
}

async fn ensure_streams(inner: &Inner) -> Result<(), ClusterError> {
    // every stream: replicated, on disk, kept by limits
    let stream = |what: &str, kind: &str| stream::Config {
        name: inner.stream_name(what),
        subjects: vec![inner.subject(kind, "*")],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: inner.cfg.replicas(),
        ..Default::default()
    };
    // not a work queue: what a node took stays until its mark passes it (it purges its
    // own subject), so that another node can replay it should this one die
    let queue = stream::Config {
        // messages for a node that never comes back do not stay forever
        max_age: Duration::from_secs(24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..stream("QUEUE", "fq")
    };
    // the last one per subject: a node's mark, a topic's retained message, a client's
    // session record
    let marks = stream::Config {
        max_messages_per_subject: 1,
        ..stream("MARKS", "mark")
    };
    let retained = stream::Config {
        max_messages_per_subject: 1,
        ..stream("RETAIN", "r")
    };
    let sessions = stream::Config {
        max_messages_per_subject: 1,
        ..stream("SESSIONS", "s")
    };
    for config in [queue, marks, retained, sessions] {
        let name = config.name.clone();
        let mut last = String::new();
        // a JetStream cluster that just started may have no meta leader yet
        for _ in 0..30 {
            match inner.js.get_or_create_stream(config.clone()).await {
                Ok(_) => {
                    last.clear();
                    break;
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if !last.is_empty() {
            return Err(ClusterError::Stream {
                stream: name,
                message: last,
            });
        }
    }
    jetstream_ready(inner).await;
    Ok(())
}

/// This node's durable consumer of its queue.
fn queue_consumer(inner: &Inner) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(format!("node-{}", inner.cfg.node)),
        filter_subject: inner.subject("fq", &inner.cfg.node),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 8_192,
        ..Default::default()
    }
}

/// Wait (20 s at most) until JetStream can take this node's messages: every stream of
/// midge's and this node's queue consumer have a leader. A stream just made, or a consumer,
/// elects one a second or so after it exists; a node that said it was ready before would
/// refuse its first QoS 1/2 messages (0x97).
async fn jetstream_ready(inner: &Inner) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut waiting = None;
        for what in ["QUEUE", "MARKS", "RETAIN", "SESSIONS"] {
            let name = inner.stream_name(what);
            let led = match inner.js.get_stream(&name).await {
                Ok(mut stream) => match stream.info().await {
                    Ok(info) => info.cluster.as_ref().is_none_or(|c| c.leader.is_some()),
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if !led {
                waiting = Some(name);
                break;
            }
        }
        if waiting.is_none() {
            let config = queue_consumer(inner);
            let durable = config.durable_name.clone().unwrap_or_default();
            let led = match inner.js.get_stream(inner.stream_name("QUEUE")).await {
                Ok(stream) => match stream
                    .get_or_create_consumer::<consumer::pull::Config>(&durable, config)
                    .await
                {
                    Ok(mut c) => match c.info().await {
                        Ok(info) => info.cluster.as_ref().is_none_or(|c| c.leader.is_some()),
                        Err(_) => false,
                    },
                    Err(_) => false,
                },
                Err(_) => false,
            };
            if !led {
                waiting = Some(durable);
            }
        }
        let Some(what) = waiting else { return };
        if Instant::now() > deadline {
            warn!(
                "cluster: {what} has no JetStream leader after 20 s: QoS 1/2 messages may be refused until it has one"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The CONNECT claim: ask every other node for the client's session.
struct Claimer {
    inner: Arc<Inner>,
}

impl Claim for Claimer {
    fn claim<'a>(
        &'a self,
        client_id: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let inner = &self.inner;
            let expect = inner.live_peers();
            if inner.port.get().is_none() {
                return;
            }
            if expect == 0 {
                resume_and_replay(inner, client_id).await;
                return;
            }
            let inbox = inner.client.new_inbox();
            let Ok(mut replies) = inner.client.subscribe(inbox.clone()).await else {
                return;
            };
            let req = ClaimRequest {
                node: inner.cfg.node.clone(),
                client_id: client_id.into(),
            };
            let Ok(body) = serde_json::to_vec(&req) else {
                return;
            };
            if inner
                .client
                .publish_with_reply(inner.subject("claim", "all"), inbox, body.into())
                .await
                .is_err()
            {
                return;
            }
            let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
            let mut answered = 0;
            let mut imported = false;
            while answered < expect {
                let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await
                else {
                    debug!(
                        client_id,
                        answered, expect, "cluster: claim answered by fewer nodes than are up"
                    );
                    break;
                };
                answered += 1;
                if reply.payload.is_empty() {
                    continue;
                }
                match wire::decode_session(reply.payload) {
                    Ok(state) => {
                        let forget = state.client_id.to_string();
                        let later = self.inner.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(MOVED_GRACE + Duration::from_secs(5)).await;
                            later.to_router(ClusterIn::ForgetImported(forget)).await;
                        });
                        let (tx, rx) = oneshot::channel();
                        if inner
                            .to_router(ClusterIn::Import { state, reply: tx })
                            .await
                        {
                            let _ = rx.await;
                            imported = true;
                        }
                    }
                    Err(e) => warn!(client_id, "cluster: a session from another node: {e}"),
                }
            }
            if !imported {
                resume_and_replay(inner, client_id).await;
            }
        })
    }
}

/// [`resume_orphan`], then the replay of its old node's queue for it.
async fn resume_and_replay(inner: &Arc<Inner>, client_id: &str) {
    if let Some(node) = resume_orphan(inner, client_id, None).await {
        tokio::spawn(replay(inner.clone(), node, vec![client_id.to_owned()]));
    }
}

/// No node handed the client's session over (its node is gone, or did not answer in
/// time): if its record says it is persistent and not expired, resume it here from the
/// record (its subscriptions) and return the node it was on, whose queue the caller
/// replays for it. With `only_from`, only a session recorded on that run of that node.
async fn resume_orphan(
    inner: &Arc<Inner>,
    client_id: &str,
    only_from: Option<(&str, u64)>,
) -> Option<String> {
    let (record, _) = read_record(inner, client_id).await?;
    if record.node == inner.cfg.node && record.epoch == inner.epoch {
        return None; // this run of this node has it, or ended it
    }
    if only_from.is_some_and(|(node, epoch)| record.node != node || record.epoch != epoch) {
        return None; // it connected elsewhere meanwhile
    }
    let expired = !record.connected
        && record.expiry != u32::MAX
        && record.at_ms + i64::from(record.expiry) * 1000 < now_ms();
    if expired || record.expiry == 0 {
        return None;
    }
    info!(client_id, from = %record.node, "cluster: resuming a session from its record (its node is gone or did not answer)");
    let (tx, rx) = oneshot::channel();
    if inner
        .to_router(ClusterIn::Import {
            state: record.state(),
            reply: tx,
        })
        .await
    {
        let _ = rx.await;
    }
    // the caller's replay ends with `ForgetImported`: until then a message that reaches
    // it both from the replay and live (or from its old node, should that wake up) is
    // delivered once
    Some(record.node)
}

/// The latest record of a client's session and its stream sequence.
async fn read_record(inner: &Inner, client_id: &str) -> Option<(Record, u64)> {
    let stream = inner
        .js
        .get_stream_no_info(inner.stream_name("SESSIONS"))
        .await
        .ok()?;
    let m = stream
        .get_last_raw_message_by_subject(&inner.subject("s", &client_token(client_id)))
        .await
        .ok()?;
    if m.payload.is_empty() {
        return None;
    }
    let record = serde_json::from_slice::<Record>(&m.payload).ok()?;
    Some((record, m.sequence))
}

/// Node `node` (run `epoch`) is gone and this node is the one to act: publish, once, the
/// wills its clients left (at their will delay), unless the client connected again.
async fn orphan_wills(inner: Arc<Inner>, node: String, epoch: u64, died_ms: i64) {
    let records = match all_records(&inner).await {
        Ok(r) => r,
        Err(e) => {
            warn!(
                node,
                "cluster: the session records of a node that is gone: {e}"
            );
            return;
        }
    };
    // its persistent sessions are adopted here, offline, so that what comes for them is
    // queued until their clients connect again (anywhere: the claim moves them there)
    let mut adopted = Vec::new();
    for record in &records {
        if record.node == node
            && record.epoch == epoch
            && record.expiry != 0
            && resume_orphan(&inner, &record.client_id, Some((&node, epoch)))
                .await
                .is_some()
        {
            adopted.push(record.client_id.clone());
        }
    }
    if !adopted.is_empty() {
        info!(
            node,
            sessions = adopted.len(),
            "cluster: adopted the persistent sessions of a node that is gone"
        );
        tokio::spawn(replay(inner.clone(), node.clone(), adopted));
    }
    for record in records {
        if record.node != node || record.epoch != epoch || record.will.is_none() {
            continue;
        }
        // a will whose delay ran out while its node was alive went out from there
        let due_ms = if record.connected {
            died_ms + i64::from(record.will_delay) * 1000
        } else {
            record.at_ms + i64::from(record.will_delay) * 1000
        };
        if !record.connected && due_ms <= died_ms {
            continue;
        }
        let inner = inner.clone();
        tokio::spawn(async move {
            let wait = u64::try_from(due_ms - now_ms()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(wait)).await;
            publish_orphan_will(&inner, &record.client_id).await;
        });
    }
}

/// Publish a dead node's client's will if its record still says so, taking the will out
/// of the record first with a revision check, so that it goes out once whichever node
/// tries.
async fn publish_orphan_will(inner: &Inner, client_id: &str) {
    let Some((mut record, seq)) = read_record(inner, client_id).await else {
        return;
    };
    let Some(will) = record.will() else { return };
    let alive = inner
        .peers
        .lock()
        .map(|p| {
            p.get(&record.node)
                .is_some_and(|p| p.up && p.epoch == record.epoch)
        })
        .unwrap_or(false);
    if alive || (record.node == inner.cfg.node && record.epoch == inner.epoch) {
        return; // it connected again, or its node came back
    }
    record.will = None;
    record.connected = false;
    record.at_ms = now_ms();
    let Ok(body) = serde_json::to_vec(&record) else {
        return;
    };
    let publish = jetstream::message::PublishMessage::build()
        .payload(body.into())
        .expected_last_subject_sequence(seq);
    let taken = match inner
        .js
        .send_publish(inner.subject("s", &client_token(client_id)), publish)
        .await
    {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    if taken {
        info!(client_id, node = %record.node, "cluster: publishing the will of a client whose node is gone");
        inner
            .to_router(ClusterIn::Will {
                client_id: client_id.into(),
                will,
            })
            .await;
    }
}

/// Every session record (the last one per client).
async fn all_records(
    inner: &Inner,
) -> Result<Vec<Record>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = inner.js.get_stream(inner.stream_name("SESSIONS")).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: inner.subject("s", "*"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::new();
    // the records there are now; a quiet half second ends the read
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), messages.next()).await
    {
        let m = m?;
        if let Ok(r) = serde_json::from_slice::<Record>(&m.payload) {
            out.push(r);
        }
    }
    Ok(out)
}

async fn answer_claims(inner: Arc<Inner>, mut claims: async_nats::Subscriber) {
    while let Some(m) = claims.next().await {
        let Ok(req) = serde_json::from_slice::<ClaimRequest>(&m.payload) else {
            continue;
        };
        if req.node == inner.cfg.node {
            continue;
        }
        let Some(reply) = m.reply else { continue };
        let inner = inner.clone();
        tokio::spawn(async move {
            let (tx, rx) = oneshot::channel();
            let state = if inner
                .to_router(ClusterIn::Export {
                    client_id: req.client_id.clone(),
                    to: req.node.clone(),
                    reply: tx,
                })
                .await
            {
                rx.await.ok().flatten()
            } else {
                None
            };
            let body = state.as_ref().map_or_else(Bytes::new, wire::encode_session);
            if state.is_some() {
                info!(client_id = %req.client_id, to = %req.node, "cluster: session handed to another node");
            }
            let _ = inner.client.publish(reply, body).await;
            if state.is_some() {
                // by then every node forwards to where the session went
                tokio::time::sleep(MOVED_GRACE).await;
                inner.to_router(ClusterIn::ForgetMoved(req.client_id)).await;
            }
        });
    }
}

/// The router's forwards and interest changes, out to NATS.
async fn outbound(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<ClusterOut>) {
    // acknowledgements are reported in batch order by one task
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    tokio::spawn(report_held(inner.clone(), ack_rx));
    // session records written for the batch that follows: its CONNACK waits for them
    let mut written: Vec<AckFuture> = Vec::new();
    while let Some(out) = rx.recv().await {
        match out {
            ClusterOut::Interest(changes) => announce(&inner, changes).await,
            ClusterOut::Sessions(records) => {
                for (client_id, record) in records {
                    let body = record.map_or_else(Vec::new, |r| {
                        serde_json::to_vec(&Record::new(&inner, &client_id, &r)).unwrap_or_default()
                    });
                    let subject = inner.subject("s", &client_token(&client_id));
                    match inner.js.publish(subject, body.into()).await {
                        Ok(ack) => {
                            let f: AckFuture = Box::pin(async move {
                                // not held: the client connects all the same (its will may
                                // then not outlive this node)
                                if let Err(e) = ack.await {
                                    debug!("cluster: session record not written: {e}");
                                }
                                true
                            });
                            written.push(f);
                        }
                        Err(e) => debug!(client_id, "cluster: session record not written: {e}"),
                    }
                }
            }
            ClusterOut::Forwards { batch, forwards } => {
                let mut pending = std::mem::take(&mut written);
                let now = Instant::now();
                // one NATS message per node and kind for the whole router batch: NATS and
                // JetStream cost per message, not per byte
                let mut bundles: Vec<(String, bool, BytesMut)> = Vec::new();
                // a message forwarded to several nodes gets one identity (see
                // `Origin::cluster_id`): core routes one message at a time, so its forwards
                // are next to each other in the batch
                let mut last: (usize, u64) = (0, 0);
                for f in forwards {
                    let ptr = Arc::as_ptr(&f.msg) as usize;
                    if last.0 != ptr {
                        last = (ptr, inner.new_message_id());
                    }
                    let id = last.1;
                    let data = wire::encode_message(&inner.cfg.node, &f.msg, &f.target, now, id);
                    let (subject, reliable) = match f.target {
                        Target::Retained => {
                            let subject = inner.subject("r", &wire::topic_token(&f.msg.topic));
                            send(&inner, subject, true, data, &mut pending).await;
                            continue;
                        }
                        _ if f.reliable() => (inner.subject("fq", &f.node), true),
                        _ => (inner.subject("m", &f.node), false),
                    };
                    // QoS 1 also goes the fast way, over core NATS: the other node delivers
                    // whichever copy comes first and skips the other (by its identity), so
                    // its subscribers need not wait for JetStream's replication; the
                    // publisher's PUBACK still waits until JetStream holds it. Not QoS 2: a
                    // copy delivered before a refused PUBREC would be sent again as a new
                    // message.
                    let fast = (reliable && f.msg.qos == midge_codec::QoS::AtLeastOnce)
                        .then(|| (inner.subject("m", &f.node), false));
                    for (subject, reliable) in std::iter::once((subject, reliable)).chain(fast) {
                        let i = match bundles.iter().position(|b| b.0 == subject) {
                            Some(i) => i,
                            None => {
                                bundles.push((subject, reliable, BytesMut::new()));
                                bundles.len() - 1
                            }
                        };
                        if let Some(b) = bundles.get_mut(i) {
                            if !b.2.is_empty() && b.2.len() + data.len() + 4 > BUNDLE_BYTES {
                                let full = std::mem::take(&mut b.2).freeze();
                                send(&inner, b.0.clone(), b.1, full, &mut pending).await;
                            }
                            wire::bundle_push(&mut b.2, &data);
                        }
                    }
                }
                for (subject, reliable, data) in bundles {
                    send(&inner, subject, reliable, data.freeze(), &mut pending).await;
                }
                if batch != 0 {
                    let _ = ack_tx.send((batch, pending));
                }
            }
        }
    }
}

type AckFuture = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

async fn send(
    inner: &Inner,
    subject: String,
    reliable: bool,
    data: Bytes,
    pending: &mut Vec<AckFuture>,
) {
    if !reliable {
        if let Err(e) = inner.client.publish(subject, data).await {
            debug!("cluster: QoS 0 forward lost: {e}");
        }
        return;
    }
    match inner.js.publish(subject, data).await {
        Ok(ack) => pending.push(Box::pin(async move {
            match ack.await {
                Ok(_) => true,
                Err(e) => {
                    warn!("cluster: JetStream did not take a QoS 1/2 message: {e}");
                    false
                }
            }
        })),
        Err(e) => {
            warn!("cluster: JetStream publish failed: {e}");
            pending.push(Box::pin(async { false }));
        }
    }
}

async fn report_held(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<(u64, Vec<AckFuture>)>) {
    while let Some((batch, acks)) = rx.recv().await {
        let mut ok = true;
        for a in acks {
            ok &= a.await;
        }
        inner.to_router(ClusterIn::Held { upto: batch, ok }).await;
    }
}

async fn announce(inner: &Inner, changes: Vec<(ByteString, bool)>) {
    let seq = {
        let Ok(mut local) = inner.local.lock() else {
            return;
        };
        for (f, add) in &changes {
            if *add {
                local.filters.insert(f.clone());
            } else {
                local.filters.remove(f);
            }
        }
        local.seq += 1;
        local.seq
    };
    let delta = Delta {
        node: inner.cfg.node.clone(),
        epoch: inner.epoch,
        seq,
        changes: changes
            .into_iter()
            .map(|(f, a)| (f.to_string(), a))
            .collect(),
    };
    if let Ok(body) = serde_json::to_vec(&delta) {
        let _ = inner
            .client
            .publish(inner.subject("routes", &inner.cfg.node), body.into())
            .await;
        // the subscriber's SUBACK follows: the change must be on its way to NATS
        let _ = inner.client.flush().await;
    }
}

async fn heartbeats(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        if beats.is_multiple_of(SYS_EVERY) {
            publish_sys(&inner).await;
        }
        beats += 1;
        let (seq, filters) = inner
            .local
            .lock()
            .map_or((0, 0), |l| (l.seq, l.filters.len()));
        let hb = Heartbeat {
            node: inner.cfg.node.clone(),
            epoch: inner.epoch,
            seq,
            filters,
        };
        if let Ok(body) = serde_json::to_vec(&hb) {
            let _ = inner
                .client
                .publish(inner.subject("hb", "all"), body.into())
                .await;
        }
        // nodes gone silent
        let (gone, leader) = match inner.peers.lock() {
            Ok(mut peers) => {
                let gone: Vec<(String, u64)> = peers
                    .iter_mut()
                    .filter(|(_, p)| p.up && p.last_seen.elapsed() > DEAD_AFTER)
                    .map(|(name, p)| {
                        p.up = false;
                        p.filters = 0;
                        p.gone_at = Some(Instant::now());
                        (name.clone(), p.epoch)
                    })
                    .collect();
                // the node that acts for a node that is gone: the first live one by name
                // (the record's revision check keeps it once if two think they are)
                let leader = peers
                    .iter()
                    .filter(|(_, p)| p.up)
                    .all(|(name, _)| *name > inner.cfg.node);
                (gone, leader)
            }
            Err(_) => (Vec::new(), false),
        };
        for (name, epoch) in gone {
            warn!(node = %name, "cluster: node silent for {:?}: its sessions resume elsewhere; its subscriptions are forgotten in {:?}", DEAD_AFTER, DEAD_GRACE);
            inner
                .to_router(ClusterIn::LeaveGroups(name.as_str().into()))
                .await;
            // what matches its clients still goes to its queue a while: replayed from there
            // for each session resumed elsewhere
            let later = inner.clone();
            let node = name.clone();
            tokio::spawn(async move {
                tokio::time::sleep(DEAD_GRACE).await;
                let back = later
                    .peers
                    .lock()
                    .is_ok_and(|p| p.get(&node).is_some_and(|p| p.up));
                if !back {
                    later
                        .to_router(ClusterIn::Forget(node.as_str().into()))
                        .await;
                }
            });
            if leader {
                let died_ms = now_ms() - i64::try_from(DEAD_AFTER.as_millis()).unwrap_or(0);
                tokio::spawn(orphan_wills(inner.clone(), name, epoch, died_ms));
            }
        }
    }
}

/// `$SYS/broker/cluster/...` for this node's clients (retained, every `SYS_EVERY` beats):
/// the node's name, how many nodes are up, and every node known as JSON.
async fn publish_sys(inner: &Arc<Inner>) {
    let handle = ClusterHandle {
        inner: inner.clone(),
    };
    let nodes = handle.nodes();
    let up = nodes.iter().filter(|n| n.up).count();
    let list = serde_json::to_string(&nodes).unwrap_or_default();
    for (topic, value) in [
        ("$SYS/broker/cluster/node", inner.cfg.node.clone()),
        ("$SYS/broker/cluster/nodes/up", up.to_string()),
        ("$SYS/broker/cluster/nodes", list),
    ] {
        let Ok(topic) = midge_codec::TopicName::new(topic) else {
            continue;
        };
        let msg = Message::new(topic, value, midge_codec::QoS::AtMostOnce, true);
        inner.to_router(ClusterIn::Sys(msg)).await;
    }
}

async fn watch_heartbeats(inner: Arc<Inner>, mut hb: async_nats::Subscriber) {
    while let Some(m) = hb.next().await {
        let Ok(h) = serde_json::from_slice::<Heartbeat>(&m.payload) else {
            continue;
        };
        if h.node == inner.cfg.node {
            continue;
        }
        let resync = match inner.peers.lock() {
            Ok(mut peers) => {
                let p = peers.entry(h.node.clone()).or_insert(Peer {
                    epoch: 0,
                    last_seen: Instant::now(),
                    seq: 0,
                    filters: 0,
                    up: false,
                    gone_at: None,
                });
                p.last_seen = Instant::now();
                let fresh = !p.up || p.epoch != h.epoch || p.seq < h.seq;
                if !p.up {
                    info!(node = %h.node, "cluster: node up");
                }
                p.up = true;
                fresh
            }
            Err(_) => false,
        };
        if resync {
            spawn_sync(&inner, h.node);
        }
    }
}

/// Ask `node` for its whole filter list (once at a time).
fn spawn_sync(inner: &Arc<Inner>, node: String) {
    let first = inner
        .syncing
        .lock()
        .map(|mut s| s.insert(node.clone()))
        .unwrap_or(false);
    if !first {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        let reply = tokio::time::timeout(
            Duration::from_secs(2),
            inner
                .client
                .request(inner.subject("sync", &node), Bytes::new()),
        )
        .await;
        if let Ok(Ok(reply)) = reply
            && let Ok(snap) = serde_json::from_slice::<Snapshot>(&reply.payload)
        {
            let name: Arc<str> = node.as_str().into();
            inner.to_router(ClusterIn::Forget(name.clone())).await;
            for f in &snap.filters {
                inner
                    .to_router(ClusterIn::Interest {
                        node: name.clone(),
                        filter: f.as_str().into(),
                        add: true,
                    })
                    .await;
            }
            if let Ok(mut peers) = inner.peers.lock()
                && let Some(p) = peers.get_mut(&node)
            {
                p.epoch = snap.epoch;
                p.seq = snap.seq;
                p.filters = snap.filters.len();
            }
            debug!(node = %node, filters = snap.filters.len(), "cluster: node's filters");
        }
        if let Ok(mut s) = inner.syncing.lock() {
            s.remove(&node);
        }
    });
}

async fn answer_sync(inner: Arc<Inner>, mut sync: async_nats::Subscriber) {
    while let Some(m) = sync.next().await {
        let Some(reply) = m.reply else { continue };
        let snap = match inner.local.lock() {
            Ok(l) => Snapshot {
                epoch: inner.epoch,
                seq: l.seq,
                filters: l.filters.iter().map(ToString::to_string).collect(),
            },
            Err(_) => continue,
        };
        if let Ok(body) = serde_json::to_vec(&snap) {
            let _ = inner.client.publish(reply, body.into()).await;
        }
    }
}

async fn watch_routes(inner: Arc<Inner>, mut routes: async_nats::Subscriber) {
    while let Some(m) = routes.next().await {
        let Ok(d) = serde_json::from_slice::<Delta>(&m.payload) else {
            continue;
        };
        if d.node == inner.cfg.node {
            continue;
        }
        let apply = match inner.peers.lock() {
            Ok(mut peers) => match peers.get_mut(&d.node) {
                Some(p) if p.up && p.epoch == d.epoch && d.seq == p.seq + 1 => {
                    p.seq = d.seq;
                    for (_, add) in &d.changes {
                        if *add {
                            p.filters += 1;
                        } else {
                            p.filters = p.filters.saturating_sub(1);
                        }
                    }
                    Some(true)
                }
                Some(p) if p.epoch == d.epoch && d.seq <= p.seq => Some(false),
                _ => None,
            },
            Err(_) => Some(false),
        };
        match apply {
            Some(true) => {
                let name: Arc<str> = d.node.as_str().into();
                for (filter, add) in d.changes {
                    inner
                        .to_router(ClusterIn::Interest {
                            node: name.clone(),
                            filter: filter.into(),
                            add,
                        })
                        .await;
                }
            }
            Some(false) => {}
            None => {
                // a node not seen yet, restarted, or a change missed: take the whole list
                if let Ok(mut peers) = inner.peers.lock() {
                    let p = peers.entry(d.node.clone()).or_insert(Peer {
                        epoch: d.epoch,
                        last_seen: Instant::now(),
                        seq: 0,
                        filters: 0,
                        up: true,
                        gone_at: None,
                    });
                    p.up = true;
                    p.last_seen = Instant::now();
                }
                spawn_sync(&inner, d.node);
            }
        }
    }
}

/// QoS 0 messages from other nodes.
async fn inbound_direct(inner: Arc<Inner>, sub: async_nats::Subscriber) {
    let mut chunks = sub.ready_chunks(BUNDLES);
    while let Some(chunk) = chunks.next().await {
        let now = Instant::now();
        let msgs: Vec<(Message, Target, u64)> = chunk
            .into_iter()
            .flat_map(|m| wire::decode_bundle(m.payload, now))
            .filter_map(|r| match r {
                Ok(i) => Some((i.msg, i.target, 0)),
                Err(e) => {
                    warn!("cluster: {e}");
                    None
                }
            })
            .collect();
        if !msgs.is_empty()
            && !inner
                .to_router(ClusterIn::Remote { msgs, done: None })
                .await
        {
            return;
        }
    }
}

/// QoS 1/2 messages for this node, from JetStream: acknowledged there once the router has
/// them delivered or queued (durable, with persistence on).
async fn inbound_queue(inner: Arc<Inner>) {
    loop {
        if let Err(e) = consume_queue(&inner).await {
            warn!("cluster: JetStream consumer: {e}; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume_queue(inner: &Arc<Inner>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = inner.js.get_stream(inner.stream_name("QUEUE")).await?;
    let config = queue_consumer(inner);
    let durable = config.durable_name.clone().unwrap_or_default();
    let consumer = stream.get_or_create_consumer(&durable, config).await?;
    // short pulls and heartbeats: after JetStream lost and regained its quorum (its
    // consumer leader moved) a stale pull is seen in seconds and made again
    let messages = consumer
        .stream()
        .expires(Duration::from_secs(5))
        .heartbeat(Duration::from_secs(1))
        .messages()
        .await?;
    let mut chunks = messages.ready_chunks(BUNDLES);
    while let Some(chunk) = chunks.next().await {
        let now = Instant::now();
        let mut msgs = Vec::new();
        let mut acks = Vec::new();
        for m in chunk {
            let m = m?;
            let seq = m.info().map_or(0, |i| i.stream_sequence);
            for r in wire::decode_bundle(m.payload.clone(), now) {
                match r {
                    Ok(i) => msgs.push((i.msg, i.target, seq)),
                    Err(e) => warn!("cluster: {e}"),
                }
            }
            acks.push((m, seq));
        }
        if !msgs.is_empty() {
            let (tx, rx) = oneshot::channel();
            if !inner
                .to_router(ClusterIn::Remote {
                    msgs,
                    done: Some(tx),
                })
                .await
            {
                return Ok(());
            }
            if rx.await.is_err() {
                return Ok(());
            }
        }
        for (m, seq) in acks {
            if m.ack().await.is_ok() {
                inner
                    .queue_done
                    .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Mark {
    epoch: u64,
    /// Replay this node's queue from here.
    seq: u64,
}

/// Every [`MARK_EVERY`]: write where a replay of this node's queue would start (the
/// oldest position a session here still holds, or the first not yet taken), then purge the
/// queue below it.
async fn queue_marks(inner: Arc<Inner>) {
    let mut last = 0;
    let mut tick = tokio::time::interval(MARK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let done = inner.queue_done.load(std::sync::atomic::Ordering::Relaxed);
        if done == 0 {
            continue; // nothing taken this run: the last run's mark still holds
        }
        let (tx, rx) = oneshot::channel();
        if !inner.to_router(ClusterIn::Mark(tx)).await {
            return;
        }
        let Ok(held) = rx.await else { return };
        let seq = held.map_or(done + 1, |h| h.min(done + 1));
        if seq <= last {
            continue;
        }
        let Ok(body) = serde_json::to_vec(&Mark {
            epoch: inner.epoch,
            seq,
        }) else {
            continue;
        };
        let written = match inner
            .js
            .publish(inner.subject("mark", &inner.cfg.node), body.into())
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        if !written {
            continue;
        }
        last = seq;
        if let Ok(stream) = inner
            .js
            .get_stream_no_info(inner.stream_name("QUEUE"))
            .await
            && let Err(e) = stream
                .purge()
                .filter(inner.subject("fq", &inner.cfg.node))
                .sequence(seq)
                .await
        {
            debug!("cluster: queue not purged below its mark: {e}");
        }
    }
}

/// Where a replay of node `node`'s queue starts (1: it wrote no mark).
async fn read_mark(inner: &Inner, node: &str) -> u64 {
    let Ok(stream) = inner
        .js
        .get_stream_no_info(inner.stream_name("MARKS"))
        .await
    else {
        return 1;
    };
    match stream
        .get_last_raw_message_by_subject(&inner.subject("mark", node))
        .await
    {
        Ok(m) => serde_json::from_slice::<Mark>(&m.payload).map_or(1, |m| m.seq.max(1)),
        Err(_) => 1,
    }
}

/// The sessions of `clients` were resumed here from their records: node `node`, which had
/// them, is gone (or did not answer). Replay its queue from its mark for them: what other
/// nodes sent there for its clients, taken or not before it died, and what they still
/// send there until they forget it ([`DEAD_GRACE`]). At least once: what a client already
/// got before its node died comes again.
async fn replay(inner: Arc<Inner>, node: String, clients: Vec<String>) {
    replay_queue(&inner, &node, clients.clone()).await;
    for client_id in clients {
        inner.to_router(ClusterIn::ForgetImported(client_id)).await;
    }
}

async fn replay_queue(inner: &Arc<Inner>, node: &str, mut clients: Vec<String>) {
    let started = Instant::now();
    let from = read_mark(inner, node).await;
    info!(
        node,
        clients = clients.len(),
        from,
        "cluster: replaying the queue of a node that is gone for its resumed sessions"
    );
    let consumer = match inner.js.get_stream(inner.stream_name("QUEUE")).await {
        Ok(stream) => {
            stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: inner.subject("fq", node),
                    deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                        start_sequence: from,
                    },
                    ..Default::default()
                })
                .await
        }
        Err(e) => {
            warn!(
                node,
                "cluster: the queue of a node that is gone cannot be replayed: {e}"
            );
            return;
        }
    };
    let mut messages = match consumer {
        Ok(c) => match c.messages().await {
            Ok(m) => m.ready_chunks(BUNDLES),
            Err(e) => {
                warn!(
                    node,
                    "cluster: the queue of a node that is gone cannot be replayed: {e}"
                );
                return;
            }
        },
        Err(e) => {
            warn!(
                node,
                "cluster: the queue of a node that is gone cannot be replayed: {e}"
            );
            return;
        }
    };
    let mut replayed = 0usize;
    while !clients.is_empty() && started.elapsed() < REPLAY_MAX {
        let chunk = match tokio::time::timeout(Duration::from_secs(1), messages.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                // quiet: done once every node has stopped sending there
                let over = inner.peers.lock().map_or(true, |p| {
                    p.get(node).is_none_or(|p| {
                        !p.up
                            && p.gone_at
                                .is_some_and(|at| at.elapsed() > DEAD_GRACE + HEARTBEAT)
                    })
                });
                if over {
                    break;
                }
                continue;
            }
        };
        let now = Instant::now();
        let mut msgs = Vec::new();
        for m in chunk {
            let Ok(m) = m else { continue };
            for r in wire::decode_bundle(m.payload.clone(), now) {
                match r {
                    Ok(i) => msgs.push((i.msg, i.target)),
                    Err(e) => warn!("cluster: {e}"),
                }
            }
        }
        if msgs.is_empty() {
            continue;
        }
        replayed += msgs.len();
        let mut still = Vec::with_capacity(clients.len());
        for client_id in clients {
            let (tx, rx) = oneshot::channel();
            let sent = inner
                .to_router(ClusterIn::Replay {
                    client_id: client_id.clone(),
                    msgs: msgs.clone(),
                    done: tx,
                })
                .await;
            if sent && rx.await.unwrap_or(false) {
                still.push(client_id);
            }
        }
        clients = still;
    }
    info!(
        node,
        replayed, "cluster: replay of a gone node's queue ended"
    );
}

/// Retained messages: all of them at start, then every change, from every node.
async fn inbound_retained(inner: Arc<Inner>) {
    loop {
        if let Err(e) = consume_retained(&inner).await {
            warn!("cluster: retained messages: {e}; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn consume_retained(
    inner: &Arc<Inner>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = inner.js.get_stream(inner.stream_name("RETAIN")).await?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: inner.subject("r", "*"),
            deliver_policy: consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let messages = consumer.messages().await?;
    let mut chunks = messages.ready_chunks(BATCH);
    while let Some(chunk) = chunks.next().await {
        let now = Instant::now();
        let mut msgs = Vec::new();
        for m in chunk {
            let m = m?;
            match wire::decode_message(m.payload.clone(), now) {
                Ok(i) if i.node != inner.cfg.node => msgs.push((i.msg, Target::Retained, 0)),
                Ok(_) => {}
                Err(e) => warn!("cluster: {e}"),
            }
        }
        if !msgs.is_empty()
            && !inner
                .to_router(ClusterIn::Remote { msgs, done: None })
                .await
        {
            return Ok(());
        }
    }
    Ok(())
}
