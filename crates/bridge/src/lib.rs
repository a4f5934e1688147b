//! # midge-bridge
//!
//! MQTT bridges (mosquitto's `connection` sections): each bridge is a pair of MQTT clients.
//!
//! - The **local side** is an in-process client of the broker (a [`Connector`] from
//!   `midge_server::LocalConnector`), id `$midge/bridge/<name>`, MQTT 5 with a persistent
//!   session and manual acknowledgements, subscribed to the `out` topics with No Local (what
//!   the bridge itself publishes locally never goes back out).
//! - The **remote side** is a midge-client connection to the remote broker: the address
//!   list with failover, TLS, credentials, clean session or persistent, keep alive, MQTT
//!   3.1.1 with mosquitto's bridge flag (`try_private`) or MQTT 5 with No Local, subscribed
//!   to the `in` topics.
//!
//! A local message is acknowledged to the local broker only once the remote broker
//! acknowledged it (PUBACK for QoS 1, PUBCOMP for QoS 2): while the link is down, QoS 1/2
//! messages wait in the bridge's persistent session in midge's store, survive a restart or
//! a crash, and go out when the link returns. Remote messages likewise are acknowledged to
//! the remote only after the local broker took them.
//!
//! midge-client reports a finished outgoing publish by packet id; the broker acknowledges
//! QoS 1 (and completes QoS 2) flows in the order the publishes arrived (MQTT §4.6), and
//! midge-client sends them in the order they were queued (resending in that order after a
//! reconnect), so the message each acknowledgement is for is the oldest of its QoS still
//! waiting: a queue per QoS.
//!
//! The connection state is published retained on `$SYS/broker/connection/<client
//! id>/state` ("1" up, "0" down) locally and on the remote (with a will there), as
//! mosquitto does.

mod config;
mod remote;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use midge_client::codec::{
    Connect, LastWill, Publish, PublishProperties, QoS, ReasonCode, RetainHandling,
    SubscribeProperties, SubscriptionOptions, TopicFilter, TopicName,
};
use midge_client::{Client, ClientError, ClientOptions, Connector, Event, Protocol, Reconnect};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{
    AddressError, BridgeConfig, BridgeProtocol, BridgeTls, Direction, RestartTimeout, TopicConfig,
    TopicLineError, default_remote_clientid, parse_address, parse_direction, parse_topic_line,
};

/// How many messages the local broker sends the bridge before it acknowledges them (they
/// are acknowledged as the remote confirms them): the window of the outgoing direction.
const LOCAL_RECEIVE_MAXIMUM: u16 = 1024;
/// The same for the remote broker (MQTT 5 remotes; 3.1.1 brokers use their own limit).
const REMOTE_RECEIVE_MAXIMUM: u16 = 1024;
/// Requests queued to either client; above both receive maximums, so acknowledged
/// flows never wait behind QoS 0 traffic for long.
const REQUEST_CAPACITY: usize = 4096;
/// QoS 0 messages waiting for a slow side beyond that queue; more are dropped (QoS 1/2 are
/// bounded by the receive maximums and never dropped).
const QOS0_BACKLOG: usize = 65_536;

/// User properties midge adds to messages for its in-process clients; they are midge's
/// own business and are not forwarded.
const INTERNAL_PROPERTIES: [&str; 3] = midge_client::codec::origin::ALL;

/// Why bridges could not start.
#[derive(Debug)]
pub struct BridgeError(pub Vec<String>);

impl std::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

impl std::error::Error for BridgeError {}

/// Check bridges: every problem of every bridge, each prefixed with `bridge <name>`.
pub fn validate(bridges: &[BridgeConfig]) -> Result<(), Vec<String>> {
    let mut out = Vec::new();
    for (i, b) in bridges.iter().enumerate() {
        let label = if b.name.is_empty() {
            format!("bridge #{}", i + 1)
        } else {
            format!("bridge {:?}", b.name)
        };
        for p in b.problems() {
            out.push(format!("{label}: {p}"));
        }
        if bridges
            .iter()
            .take(i)
            .any(|o| o.name == b.name && !b.name.is_empty())
        {
            out.push(format!("{label}: the name is used twice"));
        }
    }
    if out.is_empty() { Ok(()) } else { Err(out) }
}

/// The running bridges.
#[derive(Debug, Default)]
pub struct Bridges {
    running: Vec<(String, oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Bridges {
    /// Start every bridge on `connector` (the local broker's in-process connections).
    pub async fn start(
        bridges: Vec<BridgeConfig>,
        connector: Connector,
    ) -> Result<Bridges, BridgeError> {
        validate(&bridges).map_err(BridgeError)?;
        let mut running = Vec::new();
        let mut errors = Vec::new();
        let mut dialers = Vec::new();
        for b in &bridges {
            let private = b.try_private && b.protocol != BridgeProtocol::V5;
            match remote::Dialer::new(b, private) {
                Ok(d) => dialers.push(Arc::new(d)),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            return Err(BridgeError(errors));
        }
        for (b, dialer) in bridges.into_iter().zip(dialers) {
            let (stop_tx, stop_rx) = oneshot::channel();
            let name = b.name.clone();
            info!(
                bridge = %name,
                remote = %b.addresses.iter().map(|(h, p)| format!("{h}:{p}")).collect::<Vec<_>>().join(" "),
                topics = b.topics.len(),
                "bridge starting"
            );
            let task = tokio::spawn(run(b, connector.clone(), dialer, stop_rx));
            running.push((name, stop_tx, task));
        }
        Ok(Bridges { running })
    }

    /// How many bridges run.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Stop every bridge: the connection-state topic is set to "0", both sessions are left
    /// with DISCONNECT. Messages not yet confirmed by the remote stay in the local session
    /// and go out after the next start.
    pub async fn stop(self) {
        let mut tasks = Vec::new();
        for (_, stop, task) in self.running {
            let _ = stop.send(());
            tasks.push(task);
        }
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// What the remote side's poller reports (an event is moved as it is, as the hub does with
/// `Result<Event, _>`: boxing every message would cost an allocation each).
#[allow(clippy::large_enum_variant)]
enum Remote {
    Event(Event),
    /// The link failed; the next attempt comes after `retry_in`.
    Down(ClientError, Duration),
}

/// A tiny xorshift generator for the restart jitter (no need for a random crate).
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        Jitter(seed)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration between `lo` and `hi` (inclusive-ish).
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.next() % span)
    }
}

/// The delay before the next attempt: mosquitto's "decorrelated jitter" (`sleep =
/// min(cap, random(base, sleep * 3))`) or a constant.
fn next_delay(timeout: RestartTimeout, previous: Option<Duration>, j: &mut Jitter) -> Duration {
    match timeout {
        RestartTimeout::Constant(d) => d,
        RestartTimeout::Backoff { base, cap } => {
            let prev = previous.unwrap_or(base);
            j.between(base, (prev * 3).max(base)).min(cap)
        }
    }
}

fn remote_options(cfg: &BridgeConfig, dialer: &Arc<remote::Dialer>) -> ClientOptions {
    let (host, port) = cfg.addresses.first().cloned().unwrap_or_default();
    let mut o = ClientOptions::new(host, port, &cfg.remote_clientid);
    o.transport = midge_client::Transport::Custom(remote::connector(dialer.clone()));
    let protocol = match cfg.protocol {
        BridgeProtocol::V31 => Protocol::V31,
        BridgeProtocol::V311 => Protocol::V311,
        BridgeProtocol::V5 => Protocol::V5,
    };
    let mut c = Connect::new(protocol, cfg.remote_clientid.as_str());
    c.keep_alive = cfg.keepalive;
    c.clean_start = cfg.clean_session;
    if protocol.is_v5() {
        if !cfg.clean_session {
            c.properties.session_expiry_interval = Some(u32::MAX);
        }
        c.properties.receive_maximum = Some(REMOTE_RECEIVE_MAXIMUM);
    }
    c.username = cfg.remote_username.clone().map(Into::into);
    c.password = cfg.remote_password.clone().map(Into::into);
    if cfg.notifications
        && !cfg.notifications_local_only
        && let Ok(topic) = TopicName::new(cfg.state_topic())
    {
        c.will = Some(LastWill {
            topic,
            payload: "0".into(),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Default::default(),
        });
    }
    o.connect = c;
    o.connect_timeout =
        remote::DIAL_TIMEOUT * (cfg.addresses.len().max(1) as u32) + Duration::from_secs(10);
    o.manual_acks = true;
    o.reconnect = None;
    o.request_capacity = REQUEST_CAPACITY;
    o
}

fn local_options(cfg: &BridgeConfig, connector: Connector) -> ClientOptions {
    let id = cfg.local_clientid();
    let mut o = ClientOptions::new("local", 0, &id);
    o.transport = midge_client::Transport::Custom(connector);
    let mut c = Connect::new(Protocol::V5, id.as_str());
    c.keep_alive = 0;
    c.clean_start = false;
    // long enough to survive any restart; the broker caps it at its max_session_expiry
    c.properties.session_expiry_interval = Some(u32::MAX);
    c.properties.receive_maximum = Some(LOCAL_RECEIVE_MAXIMUM);
    o.connect = c;
    o.manual_acks = true;
    o.reconnect = Some(Reconnect {
        min: Duration::from_millis(100),
        max: Duration::from_secs(5),
    });
    o.request_capacity = REQUEST_CAPACITY;
    o
}

/// Messages waiting for their acknowledgement on the other side, per QoS; `None` for the
/// bridge's own publishes (state notifications).
#[derive(Default)]
struct Waiting {
    qos1: VecDeque<Option<Publish>>,
    qos2: VecDeque<Option<Publish>>,
}

impl Waiting {
    fn push(&mut self, qos: QoS, p: Option<Publish>) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.qos1.push_back(p),
            QoS::ExactlyOnce => self.qos2.push_back(p),
        }
    }

    fn pop(&mut self, qos: QoS) -> Option<Publish> {
        match qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => self.qos1.pop_front().flatten(),
            QoS::ExactlyOnce => self.qos2.pop_front().flatten(),
        }
    }
}

/// The copy of a message for the other side: new topic, QoS, retain; the properties that
/// belong to the hop (packet id, topic alias, subscription identifiers) and midge's own
/// user properties dropped.
fn forward(p: &Publish, topic: TopicName, retain: bool) -> Publish {
    let mut properties = PublishProperties::from(midge_client::codec::PublishPropertyValues {
        payload_format_indicator: p.properties.payload_format_indicator,
        message_expiry_interval: p.properties.message_expiry_interval,
        response_topic: p.properties.response_topic.clone(),
        correlation_data: p.properties.correlation_data.clone(),
        content_type: p.properties.content_type.clone(),
        ..Default::default()
    });
    properties.user_properties = p
        .properties
        .user_properties
        .iter()
        .filter(|(k, _)| !INTERNAL_PROPERTIES.contains(&k.as_ref()))
        .cloned()
        .collect();
    let mut out = Publish::new(topic, p.payload.clone());
    out.qos = p.qos;
    out.retain = retain;
    out.properties = properties;
    out
}

struct Link {
    cfg: BridgeConfig,
    local: Client,
    remote: Client,
    /// Local messages sent to the remote, waiting for its acknowledgement.
    out_waiting: Waiting,
    /// Remote messages published locally, waiting for the local acknowledgement.
    in_waiting: Waiting,
    remote_up: bool,
    dropped_qos0: u64,
    /// Messages for the remote (with the local original to acknowledge), in order, not yet
    /// taken by its client's request queue. The main loop never waits on a client's queue
    /// (it must keep reading both clients' events, or their pollers would wait on it).
    to_remote: VecDeque<(Publish, Option<Publish>)>,
    /// The same towards the local broker.
    to_local: VecDeque<(Publish, Option<Publish>)>,
    dialer: Arc<remote::Dialer>,
}

impl Link {
    fn protocol_v5(&self) -> bool {
        self.cfg.protocol == BridgeProtocol::V5
    }

    /// Publish the state locally (retained, QoS 1).
    async fn notify_local(&mut self, up: bool) {
        if !self.cfg.notifications {
            return;
        }
        let Ok(topic) = TopicName::new(self.cfg.state_topic()) else {
            return;
        };
        let mut p = Publish::new(topic, if up { "1" } else { "0" });
        p.qos = QoS::AtLeastOnce;
        p.retain = true;
        self.to_local.push_back((p, None));
    }

    async fn local_connected(&mut self, session_present: bool) {
        let options = SubscriptionOptions {
            qos: QoS::AtMostOnce,
            // what the bridge publishes locally (from the remote) never goes back out
            no_local: true,
            retain_as_published: true,
            retain_handling: if session_present {
                RetainHandling::SendIfNew
            } else {
                RetainHandling::SendAtSubscribe
            },
        };
        let filters: Vec<(TopicFilter, SubscriptionOptions)> = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.out())
            .filter_map(|t| {
                let f = TopicFilter::new(t.local_filter()).ok()?;
                Some((
                    f,
                    SubscriptionOptions {
                        qos: t.qos,
                        ..options
                    },
                ))
            })
            .collect();
        if !filters.is_empty() {
            let _ = self
                .local
                .subscribe_many(filters, SubscribeProperties::default())
                .await;
        }
        if !self.remote_up {
            self.notify_local(false).await;
        }
    }

    async fn remote_connected(&mut self, session_present: bool) {
        self.remote_up = true;
        let address = self
            .dialer_address()
            .unwrap_or_else(|| "the remote".to_string());
        info!(bridge = %self.cfg.name, remote = %address, session_present, "bridge connected");
        let v5 = self.protocol_v5();
        let filters: Vec<(TopicFilter, SubscriptionOptions)> = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.incoming())
            .filter_map(|t| {
                let f = TopicFilter::new(t.remote_filter()).ok()?;
                Some((
                    f,
                    SubscriptionOptions {
                        qos: t.qos,
                        // MQTT 5 remotes: what we send is not sent back (loop prevention)
                        no_local: v5,
                        retain_as_published: v5,
                        retain_handling: RetainHandling::SendAtSubscribe,
                    },
                ))
            })
            .collect();
        if !filters.is_empty() {
            let _ = self
                .remote
                .subscribe_many(filters, SubscribeProperties::default())
                .await;
        }
        if self.cfg.notifications
            && !self.cfg.notifications_local_only
            && let Ok(topic) = TopicName::new(self.cfg.state_topic())
        {
            let mut p = Publish::new(topic, "1");
            p.qos = QoS::AtLeastOnce;
            p.retain = true;
            self.to_remote.push_back((p, None));
        }
        self.notify_local(true).await;
    }

    /// Hand what is waiting to the clients' request queues, in order, as far as they take
    /// it; each QoS 1/2 message then waits for its acknowledgement. Returns whether
    /// something is still waiting.
    fn flush(&mut self) -> bool {
        fn drain(
            client: &Client,
            queue: &mut VecDeque<(Publish, Option<Publish>)>,
            waiting: &mut Waiting,
        ) {
            while let Some((p, _)) = queue.front() {
                match client.try_publish_packet(p.clone()) {
                    Ok(()) => {
                        if let Some((p, original)) = queue.pop_front() {
                            waiting.push(p.qos, original);
                        }
                    }
                    Err(ClientError::QueueFull) => return,
                    // the client is gone (stopping): nothing more goes out
                    Err(_) => {
                        queue.clear();
                        return;
                    }
                }
            }
        }
        drain(&self.remote, &mut self.to_remote, &mut self.out_waiting);
        drain(&self.local, &mut self.to_local, &mut self.in_waiting);
        !self.to_remote.is_empty() || !self.to_local.is_empty()
    }

    fn dialer_address(&self) -> Option<String> {
        self.dialer.connected_to.lock().ok().map(|a| a.clone())
    }

    /// A local message on an `out` topic: to the remote; acknowledged locally when the
    /// remote acknowledges it.
    async fn local_message(&mut self, p: Publish) {
        let mapped = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.out())
            .find_map(|t| t.to_remote(p.topic.as_str()));
        let Some(topic) = mapped.and_then(|t| TopicName::new(t).ok()) else {
            // a subscription of an older configuration kept by the session
            let _ = self.local.ack(&p).await;
            return;
        };
        let out = forward(&p, topic, p.retain && self.cfg.outgoing_retain);
        if p.qos == QoS::AtMostOnce {
            if !self.remote_up || self.to_remote.len() >= QOS0_BACKLOG {
                self.dropped_qos0 += 1;
                if self.dropped_qos0.is_power_of_two() {
                    warn!(bridge = %self.cfg.name, dropped = self.dropped_qos0, "bridge: QoS 0 messages dropped while the link is down or behind");
                }
            } else {
                self.to_remote.push_back((out, None));
            }
            return;
        }
        // QoS 1/2 are never dropped: the local broker sends at most LOCAL_RECEIVE_MAXIMUM
        // before we acknowledge
        self.to_remote.push_back((out, Some(p)));
    }

    /// A remote message on an `in` topic: published locally; acknowledged to the remote
    /// when the local broker took it.
    async fn remote_message(&mut self, p: Publish) {
        let mapped = self
            .cfg
            .topics
            .iter()
            .filter(|t| t.direction.incoming())
            .find_map(|t| t.to_local(p.topic.as_str()));
        let Some(topic) = mapped.and_then(|t| TopicName::new(t).ok()) else {
            let _ = self.remote.ack(&p).await;
            return;
        };
        let local = forward(&p, topic, p.retain);
        if p.qos == QoS::AtMostOnce {
            if self.to_local.len() < QOS0_BACKLOG {
                self.to_local.push_back((local, None));
            }
            return;
        }
        self.to_local.push_back((local, Some(p)));
    }

    /// The remote acknowledged a message we sent: acknowledge its local original.
    async fn remote_published(&mut self, qos: QoS, reason: ReasonCode) {
        if reason.is_error() {
            warn!(bridge = %self.cfg.name, reason = %reason.0, "bridge: the remote refused a message; it is dropped");
        }
        if let Some(p) = self.out_waiting.pop(qos) {
            let _ = self.local.ack(&p).await;
        }
    }

    async fn local_published(&mut self, qos: QoS, reason: ReasonCode) {
        if reason.is_error() {
            warn!(bridge = %self.cfg.name, reason = %reason.0, "bridge: the local broker refused a message from the remote; it is dropped");
        }
        if let Some(p) = self.in_waiting.pop(qos) {
            let _ = self.remote.ack(&p).await;
        }
    }
}

async fn run(
    cfg: BridgeConfig,
    connector: Connector,
    dialer: Arc<remote::Dialer>,
    mut stop: oneshot::Receiver<()>,
) {
    let (local, local_loop) = Client::new(local_options(&cfg, connector));
    let (remote, mut remote_loop) = Client::new(remote_options(&cfg, &dialer));
    let (mut local_events, local_poller) = local_loop.spawn(Some(1024), false);
    let (rtx, mut remote_events) = mpsc::channel::<Remote>(1024);
    let restart = cfg.restart_timeout;
    let name = cfg.name.clone();
    let private_dialer = dialer.clone();
    let remote_poller = tokio::spawn(async move {
        let mut jitter = Jitter::new();
        let mut delay: Option<Duration> = None;
        loop {
            match remote_loop.poll().await {
                Ok(Event::Closed) | Err(ClientError::Closed) => return,
                Ok(e) => {
                    if matches!(e, Event::Connected(_)) {
                        delay = None;
                    }
                    if rtx.send(Remote::Event(e)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // a remote that does not know the bridge flag refuses the protocol
                    // level: go on without it (as a plain client)
                    if let ClientError::Refused { reason, .. } = &e
                        && *reason == ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
                        && private_dialer.private.swap(false, Ordering::Relaxed)
                    {
                        warn!(bridge = %name, "bridge: the remote refused mosquitto's bridge flag (try_private); connecting as a plain client, so it may send our own messages back on `both` topics (use protocol 5 for No Local)");
                        continue;
                    }
                    let d = next_delay(restart, delay, &mut jitter);
                    delay = Some(d);
                    if rtx.send(Remote::Down(e, d)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(d).await;
                }
            }
        }
    });
    let mut link = Link {
        cfg,
        local,
        remote,
        out_waiting: Waiting::default(),
        in_waiting: Waiting::default(),
        remote_up: false,
        dropped_qos0: 0,
        to_remote: VecDeque::new(),
        to_local: VecDeque::new(),
        dialer,
    };
    let mut down_logged = false;
    // something waits for a full request queue: look again shortly
    let mut backlog = false;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(Duration::from_millis(1)), if backlog => {}
            e = local_events.recv() => match e {
                Some(Ok(Event::Connected(ack))) => link.local_connected(ack.session_present).await,
                Some(Ok(Event::Message(p))) => link.local_message(p).await,
                Some(Ok(Event::Published { qos, reason, .. })) => link.local_published(qos, reason).await,
                Some(Ok(Event::ConnectionLost(e))) => warn!(bridge = %link.cfg.name, error = %e, "bridge: connection to the local broker lost"),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    warn!(bridge = %link.cfg.name, error = %e, "bridge: connection to the local broker ended");
                    break;
                }
                None => break,
            },
            e = remote_events.recv() => match e {
                Some(Remote::Event(Event::Connected(ack))) => {
                    down_logged = false;
                    link.remote_connected(ack.session_present).await;
                }
                Some(Remote::Event(Event::Message(p))) => link.remote_message(p).await,
                Some(Remote::Event(Event::Published { qos, reason, .. })) => link.remote_published(qos, reason).await,
                Some(Remote::Event(Event::Disconnected(d))) => {
                    warn!(bridge = %link.cfg.name, reason = %d.reason.0, "bridge: the remote broker disconnected the bridge");
                }
                Some(Remote::Event(_)) => {}
                Some(Remote::Down(e, retry_in)) => {
                    let was_up = link.remote_up;
                    link.remote_up = false;
                    if was_up || !down_logged {
                        warn!(bridge = %link.cfg.name, error = %e, retry_in = ?retry_in, "bridge: link to the remote broker down");
                        down_logged = true;
                    }
                    if was_up {
                        link.notify_local(false).await;
                    }
                }
                None => break,
            },
        }
        backlog = link.flush();
    }
    // a poller waiting out the restart delay has nothing left to do
    let remote_abort = remote_poller.abort_handle();
    let local_abort = local_poller.abort_handle();
    if !link.remote_up {
        remote_abort.abort();
    }
    // leave: "0" on both sides, then DISCONNECT (the remote keeps its will for a crash)
    if link.remote_up
        && link.cfg.notifications
        && !link.cfg.notifications_local_only
        && let Ok(topic) = TopicName::new(link.cfg.state_topic())
    {
        let mut p = Publish::new(topic, "0");
        p.retain = true;
        link.to_remote.push_back((p, None));
    }
    link.remote_up = false;
    link.notify_local(false).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while link.flush() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    let _ = link.remote.disconnect().await;
    // the local "0" must reach the broker before the DISCONNECT
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Some(e) = local_events.recv().await {
            if matches!(e, Ok(Event::Published { .. }) | Err(_)) {
                break;
            }
        }
    })
    .await;
    let _ = link.local.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), remote_poller).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), local_poller).await;
    remote_abort.abort();
    local_abort.abort();
    info!(bridge = %link.cfg.name, "bridge stopped");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn decorrelated_jitter_stays_between_base_and_cap() {
        let mut j = Jitter::new();
        let t = RestartTimeout::default();
        let mut d = None;
        for _ in 0..100 {
            let n = next_delay(t, d, &mut j);
            assert!(n >= Duration::from_secs(5) && n <= Duration::from_secs(30));
            d = Some(n);
        }
        let c = RestartTimeout::Constant(Duration::from_secs(20));
        assert_eq!(next_delay(c, d, &mut j), Duration::from_secs(20));
    }

    #[test]
    fn waiting_queues_pair_acks_with_messages_per_qos() {
        let mut w = Waiting::default();
        let p = |t: &str| Publish::new(TopicName::new(t).unwrap(), "x");
        w.push(QoS::AtLeastOnce, Some(p("a")));
        w.push(QoS::ExactlyOnce, Some(p("b")));
        w.push(QoS::AtLeastOnce, None);
        w.push(QoS::AtLeastOnce, Some(p("c")));
        assert_eq!(w.pop(QoS::ExactlyOnce).unwrap().topic.as_str(), "b");
        assert_eq!(w.pop(QoS::AtLeastOnce).unwrap().topic.as_str(), "a");
        assert!(w.pop(QoS::AtLeastOnce).is_none());
        assert_eq!(w.pop(QoS::AtLeastOnce).unwrap().topic.as_str(), "c");
    }

    #[test]
    fn forwarded_messages_lose_midge_own_properties() {
        let mut p = Publish::new(TopicName::new("a").unwrap(), "x");
        p.qos = QoS::AtLeastOnce;
        p.packet_id = 7;
        p.properties.topic_alias = Some(3);
        p.properties.content_type = Some("text/plain".into());
        p.properties.user_properties.push(("k".into(), "v".into()));
        p.properties
            .user_properties
            .push(("midge-client-id".into(), "dev".into()));
        let f = forward(&p, TopicName::new("b").unwrap(), true);
        assert_eq!(f.topic.as_str(), "b");
        assert_eq!(f.packet_id, 0);
        assert_eq!(f.properties.topic_alias, None);
        assert_eq!(f.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(f.properties.user_properties.len(), 1);
        assert!(f.retain);
    }
}
