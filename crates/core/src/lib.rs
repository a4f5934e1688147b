//! # midge-core
//!
//! The broker as a deterministic state machine: sessions, the subscription tree with shared
//! groups, QoS 0/1/2 flows, retained messages, wills, expiry, limits and authorization
//! decisions. No sockets, no async runtime, no clock reads: every call gets `now`, and every
//! effect comes back as an [`Action`] for the caller (the server's router task) to carry out.
//!
//! A connection is opened with [`Broker::open`], fed packets with [`Broker::handle`], and
//! ended with [`Broker::closed`]. In-process clients (rules, `$SYS`, bridges) are connections
//! like any other whose actions are delivered without a socket, or publish with
//! [`Broker::publish`].

mod auth;
mod cluster;
mod config;
mod deliver;
mod flow;
mod last;
mod persist;
mod retain;
mod session;
mod timers;
mod trie;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ahash::AHashMap;
use bytes::Bytes;
use bytestring::ByteString;
use midge_codec::{Packet, Protocol, PublishProperties, QoS, TopicName};

pub use auth::{AllowAll, Authorizer, ClientInfo};
pub use cluster::{Forward, SessionRecord, SessionState, Target};
pub use config::Config;
pub use flow::admin::ClientSummary;
pub use flow::refuse::{ConnectRefusal, refuse_bad_connect, refuse_bad_packet, refuse_login};
pub use last::{LAST_VALUE_MAX_PAYLOAD, LastValue};
pub use persist::{
    DeliveryState, MsgId, Restored, RestoredDelivery, RestoredSession, SessionHeader, StoreOp,
};

use retain::Retained;
use session::Session;
use trie::{Matches, Tree};

/// Identifies one connection (network or in-process) for its whole life; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Index of a session in the broker (internal, reused after the session ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub(crate) u32);

/// An application message as the broker accepted it; shared by every delivery of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: TopicName,
    /// Payload (shared, never copied per subscriber).
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Retain flag it was published with.
    pub retain: bool,
    /// Properties to forward (without topic alias or subscription identifiers).
    pub properties: PublishProperties,
    /// When it expires (from Message Expiry Interval).
    pub expires_at: Option<Instant>,
    /// Who published it (`None` for the broker's own messages and after a restart); shown
    /// only to in-process clients ([`Broker::set_internal`]).
    pub origin: Option<Origin>,
}

/// The client that published a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Its client identifier.
    pub client_id: ByteString,
    /// The user name it logged in with.
    pub username: Option<ByteString>,
    /// When the broker accepted it: wall-clock ms since the Unix epoch, from the anchor given
    /// with [`Broker::set_wall_clock`] (0 = unknown: no anchor, or a message stored by an
    /// older midge). Stored with the message, so a message redelivered after a restart keeps
    /// the time it was first accepted at.
    pub received_ms: i64,
    /// In a cluster, the message's identity, the same in every copy other nodes get
    /// (given by the node that forwards it first; 0 = none): a session that moved between
    /// nodes gets a message once, however many ways it reaches its new node.
    pub cluster_id: u64,
}

/// Client identifiers of the server's own in-process clients (the hub's rules, the HTTP
/// API). Only a connection marked with [`Broker::set_internal`] may use one: a network
/// client asking for `$midge/hub` would otherwise take over the hub's session and its
/// messages. Their sessions are sized for a consumer that commits in batches: the in-flight
/// window is the client's Receive Maximum alone (not capped by `max_inflight_messages`),
/// and QoS 1/2 messages queued for them are bounded by `max_queued_bytes` only, not by
/// `max_queued_messages` (QoS 0 ones, as the HTTP API's live streams take, keep both).
pub const INTERNAL_CLIENT_ID_PREFIX: &str = "$midge/";

/// User property naming the publisher's client id on messages to in-process clients.
pub const ORIGIN_CLIENT_ID: &str = midge_codec::origin::CLIENT_ID;
/// User property naming the publisher's user name on messages to in-process clients.
pub const ORIGIN_USERNAME: &str = midge_codec::origin::USERNAME;
/// User property giving, on messages to in-process clients, when the broker accepted the
/// message ([`Origin::received_ms`], decimal ms since the Unix epoch); left out when unknown.
pub const ORIGIN_TIME: &str = midge_codec::origin::TIME;

impl Message {
    /// A message with no properties.
    pub fn new(topic: TopicName, payload: impl Into<Bytes>, qos: QoS, retain: bool) -> Message {
        Message {
            topic,
            payload: payload.into(),
            qos,
            retain,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        }
    }
}

/// Something the caller must do on the broker's behalf.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // Send is by far the most common variant
pub enum Action {
    /// Send a packet on a connection.
    Send(ConnId, Packet),
    /// Close a connection once what was sent before this action is written.
    Close(ConnId),
    /// The connection's CONNECT was accepted: from now on it is `client_id` speaking
    /// `protocol`, and the keep alive to enforce is `keep_alive` seconds (0 = none).
    Connected {
        /// The connection.
        conn: ConnId,
        /// The client identifier in force (assigned by the server if the client sent none).
        client_id: ByteString,
        /// Protocol level.
        protocol: Protocol,
        /// Keep alive to enforce, in seconds (the server keeps 1.5 times this).
        keep_alive: u16,
    },
}

/// Why a connection ended without a DISCONNECT from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The network connection closed or failed.
    Network,
    /// The client sent nothing for 1.5 times its keep alive.
    KeepAliveTimeout,
    /// The client broke the protocol (the server already told it why).
    ProtocolError,
    /// The server is shutting down.
    Shutdown,
    /// An operator cut it ([`Broker::disconnect_clients`]).
    Administrative,
}

/// Counters for `$SYS` and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: u64,
    /// Messages dropped (queue full, slow client, too large for the client).
    pub messages_dropped: u64,
    /// Connected clients.
    pub clients_connected: usize,
    /// Sessions, connected or not.
    pub sessions: usize,
    /// Subscriptions.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages waiting in session queues.
    pub queued: usize,
    /// Highest number of connected clients seen since the broker started.
    pub clients_maximum: usize,
    /// Of the connected clients, the server's own in-process ones (`$midge/...`).
    pub clients_internal: usize,
    /// Of the retained messages, those on `$` topics (`$SYS`: the broker's own).
    pub retained_sys: usize,
    /// Topics whose last message is kept ([`Broker::last_values`]).
    pub last_values: usize,
    /// Topics the last values forgot to make room for new ones.
    pub last_values_evicted: u64,
}

/// State of one connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) session: Option<SessionId>,
    /// The listener it arrived on (for the authorizer).
    pub(crate) listener: u16,
    pub(crate) protocol: Protocol,
    /// False while the server reports its outbound queue as full.
    pub(crate) writable: bool,
    /// Topic aliases, allocated on first use (most clients use none).
    pub(crate) aliases_in: Option<Box<AHashMap<u16, TopicName>>>,
    pub(crate) aliases_out: Option<Box<AHashMap<ByteString, u16>>>,
    pub(crate) topic_alias_max_out: u16,
    pub(crate) request_problem_info: bool,
    /// An in-process client (rules, HTTP API): MQTT 5 messages to it name their publisher.
    pub(crate) internal: bool,
    /// Its CONNECT carried mosquitto's bridge flag (protocol level | 0x80). Kept here, not
    /// on the session (whose record is size-bounded).
    pub(crate) bridge: bool,
    /// 1.5 times the keep alive in force, in ms (0 = none) [MQTT-3.1.2-22].
    pub(crate) keep_alive_ms: u32,
    /// When its last whole control packet arrived.
    pub(crate) last_packet: Option<Instant>,
}

/// The broker state machine.
#[derive(Debug)]
pub struct Broker {
    pub(crate) config: Config,
    pub(crate) auth: Box<dyn Authorizer>,
    pub(crate) conns: AHashMap<ConnId, Conn>,
    next_conn: u64,
    pub(crate) sessions: Vec<Option<Session>>,
    free_sessions: Vec<u32>,
    pub(crate) by_client_id: AHashMap<ByteString, SessionId>,
    pub(crate) tree: Tree,
    pub(crate) retained: Retained,
    /// The last message of every topic ([`Broker::last_values`]).
    pub(crate) last: last::LastValues,
    pub(crate) stats: Stats,
    pub(crate) scratch: Matches,
    assigned_ids: u64,
    /// Sessions with a connection attached (for the highest count seen).
    pub(crate) connected: usize,
    /// Whether durable changes are described as [`StoreOp`]s.
    pub(crate) persist: bool,
    /// Durable changes not yet drained by the caller.
    pub(crate) ops: Vec<StoreOp>,
    /// Next delivery sequence number (0 = not stored).
    pub(crate) next_seq: u64,
    /// Next stored message body id.
    pub(crate) next_msg_id: u64,
    /// The body stored last, so a message routed to many sessions is stored once.
    pub(crate) last_msg: Option<(Arc<Message>, MsgId)>,
    /// A monotonic instant and the wall-clock time (ms since the Unix epoch) it stands for
    /// (see [`Broker::set_wall_clock`]).
    wall_clock: Option<(Instant, i64)>,
    /// Every deadline: keep alive, wills, session and retained expiry, housekeeping.
    pub(crate) timers: timers::Timers,
    /// Whether a [`timers::Timer::Housekeeping`] entry is in the heap.
    housekeeping_armed: bool,
    /// The other nodes of a cluster, and what goes to them (`cluster.rs`).
    pub(crate) cluster: cluster::ClusterState,
}

impl Broker {
    /// A broker with the given limits, allowing every client.
    pub fn new(config: Config) -> Broker {
        let last_values_topics = config.last_values_topics;
        Broker {
            config,
            auth: Box::new(AllowAll),
            conns: AHashMap::new(),
            next_conn: 1,
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_client_id: AHashMap::new(),
            tree: Tree::default(),
            retained: Retained::default(),
            last: last::LastValues::new(last_values_topics),
            stats: Stats::default(),
            scratch: Matches::default(),
            assigned_ids: 0,
            connected: 0,
            persist: false,
            ops: Vec::new(),
            next_seq: 1,
            next_msg_id: 1,
            last_msg: None,
            wall_clock: None,
            timers: timers::Timers::default(),
            housekeeping_armed: false,
            cluster: cluster::ClusterState::default(),
        }
    }

    /// Tell the broker which wall-clock time `anchor` stands for (`anchor_unix_ms`, ms since
    /// the Unix epoch), so that it can stamp each accepted message with
    /// [`Origin::received_ms`] from the `now` it is given (core reads no clock). The server
    /// calls this once when it builds the broker; calling it again re-anchors. Without it,
    /// messages carry 0 (unknown).
    pub fn set_wall_clock(&mut self, anchor: Instant, anchor_unix_ms: i64) {
        self.wall_clock = Some((anchor, anchor_unix_ms));
    }

    /// The wall-clock time `now` stands for, in ms since the Unix epoch (0 without an anchor).
    pub(crate) fn wall_ms(&self, now: Instant) -> i64 {
        let Some((anchor, anchor_ms)) = self.wall_clock else {
            return 0;
        };
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        match now.checked_duration_since(anchor) {
            Some(after) => anchor_ms.saturating_add(ms(after)),
            None => anchor_ms.saturating_sub(ms(anchor.saturating_duration_since(now))),
        }
    }

    /// Replace the authorization hook.
    pub fn set_authorizer(&mut self, auth: Box<dyn Authorizer>) {
        self.auth = auth;
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Register a new connection under an id the caller chose (unique for the broker's
    /// life); its first packet must be CONNECT.
    pub fn open(&mut self, id: ConnId) {
        self.open_on(id, 0);
    }

    /// [`Broker::open`] for a connection that arrived on listener number `listener`, which
    /// the authorizer sees in [`ClientInfo::listener`].
    pub fn open_on(&mut self, id: ConnId, listener: u16) {
        self.next_conn = self.next_conn.max(id.0 + 1);
        self.conns.insert(
            id,
            Conn {
                session: None,
                listener,
                protocol: Protocol::V311,
                writable: true,
                aliases_in: None,
                aliases_out: None,
                topic_alias_max_out: 0,
                request_problem_info: true,
                internal: false,
                bridge: false,
                keep_alive_ms: 0,
                last_packet: None,
            },
        );
    }

    /// Mark `conn` as an in-process client of the server itself (rules, the HTTP API): the
    /// MQTT 5 messages it receives carry their publisher's client id and user name as the
    /// user properties [`ORIGIN_CLIENT_ID`] and [`ORIGIN_USERNAME`], and the time the broker
    /// accepted them as [`ORIGIN_TIME`].
    pub fn set_internal(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.internal = true;
        }
    }

    /// Handle one packet received on `conn`.
    pub fn handle(&mut self, now: Instant, conn: ConnId, packet: Packet, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        // only a whole control packet counts as activity [MQTT-3.1.2-22]
        c.last_packet = Some(now);
        let connected = c.session.is_some();
        if !self.housekeeping_armed {
            self.arm_housekeeping(now);
        }
        match packet {
            Packet::Connect(connect) => {
                if connected {
                    // [MQTT-3.1.0-2] a second CONNECT is a Protocol Error: close the
                    // connection, without the DISCONNECT 0x82 that §4.13.1 says SHOULD come
                    // first (the Paho reference broker and mosquitto send none either). The
                    // client is waiting for a CONNACK; Paho's test client reads it on two
                    // threads at once, and the bytes of a DISCONNECT split between them left
                    // both spinning on EOF forever.
                    out.push(Action::Close(conn));
                    self.closed(now, conn, CloseCause::ProtocolError, out);
                } else {
                    self.handle_connect(now, conn, *connect, out);
                }
            }
            _ if !connected => {
                // [MQTT-3.1.0-1] the first packet must be CONNECT
                self.fail(now, conn, midge_codec::ReasonCode::PROTOCOL_ERROR, out);
            }
            Packet::Publish(p) => self.handle_publish(now, conn, p, out),
            Packet::PubAck(a) => self.handle_puback(now, conn, a, out),
            Packet::PubRec(a) => self.handle_pubrec(now, conn, a, out),
            Packet::PubRel(a) => self.handle_pubrel(now, conn, a, out),
            Packet::PubComp(a) => self.handle_pubcomp(now, conn, a, out),
            Packet::Subscribe(s) => self.handle_subscribe(now, conn, s, out),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(now, conn, u, out),
            Packet::PingReq => out.push(Action::Send(conn, Packet::PingResp)),
            Packet::Disconnect(d) => self.handle_disconnect(now, conn, d, out),
            Packet::Auth(_) => {
                // no enhanced authentication method is offered, so AUTH is a protocol error
                // [MQTT-4.12.0-1]
                self.fail(now, conn, midge_codec::ReasonCode::PROTOCOL_ERROR, out);
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.fail(now, conn, midge_codec::ReasonCode::PROTOCOL_ERROR, out);
            }
        }
    }

    /// The connection ended without a client DISCONNECT (network error, keep alive timeout,
    /// protocol error already reported by the server, shutdown). The will is published or
    /// scheduled, and a session with expiry 0 ends.
    pub fn closed(&mut self, now: Instant, conn: ConnId, cause: CloseCause, out: &mut Vec<Action>) {
        let _ = cause;
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if let Some(sid) = c.session {
            self.detach(now, sid, conn, true, out);
        }
    }

    /// The server's outbound queue for `conn` filled up (`false`) or drained (`true`). While
    /// not writable, QoS 0 messages to it are dropped and QoS 1/2 wait in its session.
    pub fn set_writable(
        &mut self,
        now: Instant,
        conn: ConnId,
        writable: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.writable = writable;
        if writable {
            if let Some(sid) = c.session {
                self.pump(now, sid, out);
            }
        }
    }

    /// Publish a message from inside the broker (`$SYS`, rules, bridges). Returns how many
    /// sessions it was delivered or queued to.
    pub fn publish(&mut self, now: Instant, msg: Message, out: &mut Vec<Action>) -> usize {
        if !self.housekeeping_armed {
            self.arm_housekeeping(now);
        }
        if msg.retain {
            self.retain(msg.clone());
        }
        self.route(now, Arc::new(msg), None, out)
    }

    /// When [`Broker::handle_timeout`] must be called next: the earliest keep-alive
    /// deadline, delayed will, session or retained-message expiry, or housekeeping. `None`
    /// while no timer is armed. The caller sleeps until then (or until packets arrive).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Run every timer due at `now`: close connections silent for 1.5 times their keep
    /// alive (MQTT 5: DISCONNECT 0x8D first) and publish their wills, publish delayed
    /// wills, end expired sessions, drop expired retained messages, housekeeping.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        while let Some((_at, timer)) = self.timers.due(now) {
            match timer {
                timers::Timer::KeepAlive(conn) => self.keep_alive_due(now, conn, out),
                timers::Timer::Session { sid, since } => self.session_due(now, sid, since, out),
                timers::Timer::Retained => self.retained_due(now),
                timers::Timer::Housekeeping => {
                    self.housekeeping_armed = false;
                    self.last.settle();
                    if self.last.len() > 0 {
                        self.arm_housekeeping(now);
                    }
                }
            }
        }
    }

    /// Run timers due at `now` (the name the server used before [`Broker::handle_timeout`]).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.handle_timeout(now, out);
    }

    fn arm_housekeeping(&mut self, now: Instant) {
        self.housekeeping_armed = true;
        self.timers
            .arm(now + timers::HOUSEKEEPING, timers::Timer::Housekeeping);
    }

    /// Arm `conn`'s keep alive after its CONNECT was accepted.
    pub(crate) fn arm_keep_alive(&mut self, now: Instant, conn: ConnId, keep_alive: u16) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.keep_alive_ms = u32::from(keep_alive) * 1500;
        c.last_packet = Some(now);
        if keep_alive > 0 {
            let at = now + Duration::from_millis(u64::from(c.keep_alive_ms));
            self.timers.arm(at, timers::Timer::KeepAlive(conn));
        }
    }

    fn keep_alive_due(&mut self, now: Instant, conn: ConnId, out: &mut Vec<Action>) {
        let Some(c) = self.conns.get(&conn) else {
            return; // closed meanwhile
        };
        if c.keep_alive_ms == 0 {
            return;
        }
        let deadline =
            c.last_packet.unwrap_or(now) + Duration::from_millis(u64::from(c.keep_alive_ms));
        if deadline > now {
            // it spoke since this entry was armed
            self.timers.arm(deadline, timers::Timer::KeepAlive(conn));
            return;
        }
        // [MQTT-3.1.2-22] silent for 1.5 times its keep alive: close it as if the network
        // failed (so the will goes out); MQTT 5 clients are told why first
        if c.protocol.is_v5() && c.session.is_some() {
            out.push(Action::Send(
                conn,
                Packet::Disconnect(midge_codec::Disconnect::new(
                    midge_codec::ReasonCode::KEEP_ALIVE_TIMEOUT,
                )),
            ));
        }
        out.push(Action::Close(conn));
        self.closed(now, conn, CloseCause::KeepAliveTimeout, out);
    }

    /// Arm the delayed will or expiry of session `sid`, disconnected since `since`.
    pub(crate) fn arm_session(&mut self, sid: SessionId) {
        let Some(s) = self.session(sid) else {
            return;
        };
        let (Some(since), None) = (s.disconnected_at, s.conn) else {
            return;
        };
        let expiry = (s.expiry_interval != u32::MAX)
            .then(|| since + Duration::from_secs(u64::from(s.expiry_interval)));
        let at = match (s.will_at(), expiry) {
            (Some(w), Some(e)) => w.min(e),
            (Some(w), None) => w,
            (None, Some(e)) => e,
            (None, None) => return,
        };
        self.timers.arm(at, timers::Timer::Session { sid, since });
    }

    fn session_due(&mut self, now: Instant, sid: SessionId, since: Instant, out: &mut Vec<Action>) {
        let Some(s) = self.session(sid) else {
            return;
        };
        if s.conn.is_some() || s.disconnected_at != Some(since) {
            return; // reconnected, or the slot holds another session now
        }
        if s.will_at().is_some_and(|at| at <= now) {
            self.publish_will(now, sid, out);
        }
        let Some(s) = self.session(sid) else {
            return;
        };
        if s.expiry_interval != u32::MAX
            && since + Duration::from_secs(u64::from(s.expiry_interval)) <= now
        {
            self.end_session(now, sid, out);
        } else {
            self.arm_session(sid);
        }
    }

    /// Arm the retained-expiry timer for a message stored with an expiry.
    pub(crate) fn arm_retained(&mut self, at: Instant) {
        self.timers.arm(at, timers::Timer::Retained);
    }

    fn retained_due(&mut self, now: Instant) {
        self.retained.expire(now);
        // the next one (restore arms only the earliest; each later store arms its own)
        if let Some(at) = self.retained.earliest_expiry() {
            self.arm_retained(at.max(now));
        }
    }

    /// Tell every connected MQTT 5 client the server is shutting down (DISCONNECT 0x8B) and
    /// close every connection.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        // in connection order, whatever the hash map's: core's actions are deterministic
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort_unstable();
        for conn in conns {
            if let Some(c) = self.conns.get(&conn) {
                if c.protocol.is_v5() && c.session.is_some() {
                    out.push(Action::Send(
                        conn,
                        Packet::Disconnect(midge_codec::Disconnect::new(
                            midge_codec::ReasonCode::SERVER_SHUTTING_DOWN,
                        )),
                    ));
                }
            }
            out.push(Action::Close(conn));
            self.closed(now, conn, CloseCause::Shutdown, out);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.clients_connected = self.connected;
        s.sessions = self.by_client_id.len();
        s.subscriptions = self.tree.len();
        s.retained = self.retained.len();
        s.retained_sys = self.retained.dollar_len();
        s.last_values = self.last.len();
        s.last_values_evicted = self.last.evicted;
        s.clients_internal = self
            .sessions
            .iter()
            .flatten()
            .filter(|s| s.conn.is_some() && s.is_internal())
            .count();
        s.queued = self
            .sessions
            .iter()
            .flatten()
            .map(|s| s.flow().queue.len())
            .sum();
        s
    }

    /// The client identifier and protocol of a connected connection.
    pub fn client_of(&self, conn: ConnId) -> Option<(&str, Protocol)> {
        let c = self.conns.get(&conn)?;
        let s = self.session(c.session?)?;
        Some((&s.client_id, c.protocol))
    }

    pub(crate) fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions.get(sid.0 as usize)?.as_ref()
    }

    pub(crate) fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions.get_mut(sid.0 as usize)?.as_mut()
    }

    pub(crate) fn insert_session(&mut self, s: Session) -> SessionId {
        let key = s.client_id.clone();
        let sid = match self.free_sessions.pop() {
            Some(i) => {
                if let Some(slot) = self.sessions.get_mut(i as usize) {
                    *slot = Some(s);
                }
                SessionId(i)
            }
            None => {
                // grow by a quarter, not double: every idle client pays for the slack of
                // its slot (`Option<Session>` is 144 B)
                if self.sessions.len() == self.sessions.capacity() {
                    self.sessions
                        .reserve_exact((self.sessions.len() / 4).max(16));
                }
                self.sessions.push(Some(s));
                SessionId((self.sessions.len() - 1) as u32)
            }
        };
        self.by_client_id.insert(key, sid);
        sid
    }

    pub(crate) fn assign_client_id(&mut self) -> ByteString {
        loop {
            self.assigned_ids += 1;
            let id: ByteString = format!(
                "{}{:x}-{}",
                self.config.assigned_id_prefix, self.next_conn, self.assigned_ids
            )
            .into();
            if !self.by_client_id.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests;
