//! The router task: the one owner of [`midge_core::Broker`]. It drains its inbound channel in
//! batches, feeds core, and carries out core's actions: packets go to each connection's
//! outbound channel without ever waiting on a client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use midge_codec::{Connect, Packet, Protocol, QoS};
use midge_core::{Action, Broker, CloseCause, ConnId, Message};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::cluster::{ClusterIn, ClusterLink, ClusterOut};
use crate::congestion::Congestion;
use crate::gate::Gate;
use crate::store_task::{Done, OpenedStore, StoreHandle};
use crate::sys::SysPublisher;
use crate::{Counters, ServerConfig};

/// Capacity of the router's inbound channel; a full channel slows publishers through TCP.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;
const BATCH: usize = 256;

/// What connection tasks tell the router.
#[derive(Debug)]
pub(crate) enum RouterMsg {
    /// A connection sent its CONNECT.
    Connect {
        id: ConnId,
        /// Index of the listener it came through (for per-listener ACLs).
        listener: u16,
        handle: ConnHandle,
        connect: Box<Connect>,
    },
    /// Packets read from a connection, in order.
    Packets(ConnId, Vec<Packet>),
    /// The connection ended.
    Closed(ConnId, CloseCause),
    /// The connection's outbound queue drained below its low-water mark.
    Drained(ConnId),
    /// Stop: tell clients, close connections, then answer.
    Shutdown(oneshot::Sender<()>),
    /// Replace core's authorizer (ACL files loaded or reloaded).
    SetAuthorizer(Box<dyn midge_core::Authorizer>),
    /// Answer with core's counters and the store's size.
    Stats(oneshot::Sender<(midge_core::Stats, Option<u64>)>),
    /// Cut the connected clients with these usernames or client ids (MQTT 5: DISCONNECT
    /// 0x98); answer how many.
    Disconnect {
        usernames: Vec<String>,
        client_ids: Vec<String>,
        reply: oneshot::Sender<usize>,
    },
    /// Check the subscriptions of these usernames' sessions again (a policy changed);
    /// answer how many were dropped.
    Recheck {
        usernames: Vec<String>,
        reply: oneshot::Sender<usize>,
    },
    /// Answer with every session.
    Clients(oneshot::Sender<Vec<(midge_core::ClientSummary, Option<ConnInfo>)>>),
    /// Answer with the retained messages matching a filter (at most `limit`).
    Retained {
        filter: midge_codec::TopicFilter,
        limit: usize,
        reply: oneshot::Sender<Vec<Arc<Message>>>,
    },
    /// Answer with the last values matching a filter (see `Broker::last_values`).
    LastValues {
        filter: midge_codec::TopicFilter,
        since: Option<i64>,
        limit: usize,
        reply: oneshot::Sender<crate::LastValues>,
    },
    /// Delete the retained messages matching a filter; answer how many.
    ClearRetained {
        filter: midge_codec::TopicFilter,
        reply: oneshot::Sender<usize>,
    },
    /// Discard a client's session (cutting its connection first); answer whether it had one.
    DiscardSession {
        client_id: String,
        reply: oneshot::Sender<bool>,
    },
    /// From the cluster (`crate::cluster`).
    Cluster(Box<crate::cluster::ClusterIn>),
}

/// What the router sends to a connection task.
#[allow(clippy::large_enum_variant)] // Packet is by far the most common variant
#[derive(Debug)]
pub(crate) enum Outgoing {
    Packet(Packet),
    Connected {
        keep_alive: u16,
        protocol: Protocol,
        client_id: bytestring::ByteString,
    },
    Close,
    /// Bytes ready for the wire: the connection task's own, in its batch between
    /// encoding and writing (a large payload sent from where it is); never queued.
    Wire(bytes::Bytes),
}

/// State shared between the router and one connection task (in the same allocation as the
/// connection's outbox).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Queued bytes and the congestion mark (the handshake with the writer lives there).
    pub(crate) congestion: Congestion,
    /// PUBLISH packets received from the client and sent to it (for the console).
    pub(crate) msgs_in: AtomicU64,
    pub(crate) msgs_out: AtomicU64,
    /// What the console shows of the connection (here rather than in a map of the
    /// router's own: one record less per idle client): its address, when its CONNECT
    /// reached the router (ms since the Unix epoch), its keep alive.
    pub(crate) peer: Option<std::net::SocketAddr>,
    pub(crate) since_ms: std::sync::atomic::AtomicI64,
    pub(crate) keep_alive: std::sync::atomic::AtomicU16,
}

/// The router's handle to one connection: its outbox, with the [`Shared`] state.
pub(crate) type ConnHandle = crate::outbox::OutboxTx<Outgoing, Shared>;

/// Bytes a packet is counted as while queued (cheap; the same on both sides).
pub(crate) fn weight(p: &Packet) -> usize {
    match p {
        Packet::Publish(p) => 16 + p.topic.as_str().len() + p.payload.len(),
        _ => 16,
    }
}

/// A map keyed by connection id. Ids are the broker's own counter, not chosen by clients, so
/// a multiply-rotate hash does (std's SipHash cost ~90 instructions per lookup, and the
/// router looks up the connection of every packet it sends).
type ConnMap<V> = HashMap<ConnId, V, std::hash::BuildHasherDefault<ConnIdHasher>>;

#[derive(Default, Clone, Copy)]
struct ConnIdHasher(u64);

impl std::hash::Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's step: the multiply spreads a sequential id over the high bits
        // hashbrown's control bytes use
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

struct Router {
    broker: Broker,
    conns: ConnMap<ConnHandle>,
    actions: Vec<Action>,
    high_water: usize,
    /// Durable state: `None` for a memory-only broker (then nothing below is used).
    store: Option<StoreHandle>,
    /// Actions waiting for the batch they depend on to be durable, in order, with its number.
    gate: Gate,
    /// Index of the listener of in-process connections (after the configured ones).
    local_listener: u16,
    /// What the operations console shows of each connection (address, since, keep alive).
    /// The other nodes, when this one is part of a cluster.
    cluster: Option<ClusterLink>,
    /// Messages for other nodes and filters to announce, sent once per drained batch.
    forwards: Vec<midge_core::Forward>,
    interest: Vec<(bytestring::ByteString, bool)>,
    /// Clients whose session changed, for the cluster's records.
    sessions: Vec<String>,
    /// A session changed in the call being dispatched: its actions (the CONNACK, SUBACK)
    /// wait until the cluster holds the record (a will is not lost with this node).
    session_pending: bool,
    /// How far the store and the cluster have got with the gate's batches.
    completion: Completion,
    /// Answers for the cluster's messages, due once the batch they were held in completes.
    remote_waiters: std::collections::VecDeque<(u64, oneshot::Sender<()>)>,
}

/// How far the gate's batches got: a batch completes when the store wrote it and the
/// cluster holds its QoS 1/2 forwards; it failed if either failed.
#[derive(Debug, Default)]
struct Completion {
    /// Batches up to this one are durable (or failed) in the store.
    store: u64,
    /// The last batch handed to the store.
    submitted: u64,
    /// Batches up to this one are held by the cluster (or failed there).
    cluster: u64,
    /// Whether a cluster is part of it (else its part counts as done).
    clustered: bool,
    /// Ranges of failed batches not yet released.
    failed: Vec<(u64, u64)>,
}

impl Completion {
    /// Every batch up to this one is complete.
    fn upto(&self) -> u64 {
        // with everything handed to the store written, batches without store ops are done
        let store = if self.store >= self.submitted {
            u64::MAX
        } else {
            self.store
        };
        let cluster = if self.clustered {
            self.cluster
        } else {
            u64::MAX
        };
        store.min(cluster)
    }

    fn failed(&self, batch: u64) -> bool {
        self.failed.iter().any(|&(a, b)| a <= batch && batch <= b)
    }
}

/// A connection as the operations console shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnInfo {
    pub(crate) peer: std::net::SocketAddr,
    /// When its CONNECT reached the router (ms since the Unix epoch).
    pub(crate) since_ms: i64,
    /// Negotiated keep alive in seconds.
    pub(crate) keep_alive: u16,
    /// PUBLISH packets received and sent on this connection (filled in when asked).
    pub(crate) msgs_in: u64,
    pub(crate) msgs_out: u64,
}

impl Router {
    /// Carry out core's actions, or hold them until the store ops they depend on are
    /// durable (see [`Gate`]).
    fn dispatch(&mut self, now: Instant) {
        if self.store.is_some() || self.cluster.is_some() {
            let broker = &mut self.broker;
            let has_ops = self.store.is_some() && broker.has_store_ops();
            // a cluster's QoS 1/2 forwards and announced filters hold this call's actions
            // (the PUBACK, the SUBACK) until the cluster has them, as store ops do
            let mut for_cluster = false;
            if self.cluster.is_some() {
                for_cluster = broker.has_reliable_forwards();
                broker.take_forwards(&mut self.forwards);
                let before = self.interest.len();
                broker.take_interest(&mut self.interest);
                for_cluster |= self.interest.len() > before;
                for_cluster |= std::mem::take(&mut self.session_pending);
            }
            if self.gate.admit(
                has_ops || for_cluster,
                |p| broker.take_store_ops(p),
                &mut self.actions,
            ) {
                return;
            }
        }
        self.perform(now);
    }

    /// Hand the open batch's ops to the store thread and its forwards to the cluster (once
    /// per drained batch of messages).
    fn flush(&mut self) {
        let batch = self.gate.take_batch();
        let id = batch.as_ref().map_or(0, |b| b.id);
        if let Some(cluster) = &self.cluster {
            if !self.interest.is_empty() {
                let _ = cluster
                    .out
                    .send(ClusterOut::Interest(std::mem::take(&mut self.interest)));
            }
            if !self.sessions.is_empty() {
                let mut records: Vec<_> = std::mem::take(&mut self.sessions)
                    .into_iter()
                    .map(|id| {
                        let r = self.broker.session_record(&id);
                        (id, r)
                    })
                    .collect();
                records.dedup_by(|a, b| a.0 == b.0);
                let _ = cluster.out.send(ClusterOut::Sessions(records));
            }
            if id != 0 || !self.forwards.is_empty() {
                let _ = cluster.out.send(ClusterOut::Forwards {
                    batch: id,
                    forwards: std::mem::take(&mut self.forwards),
                });
            }
        }
        if let Some(batch) = batch {
            if let Some(store) = &self.store {
                if !batch.ops.is_empty() {
                    self.completion.submitted = batch.id;
                    store.submit(batch);
                }
            }
        }
    }

    /// The store reported: release what completed; see [`Router::release`].
    fn stored(&mut self, now: Instant, done: Done) {
        match done {
            Done::Durable(id) => self.completion.store = id,
            Done::Failed(from, to) => {
                self.completion.store = to;
                self.completion.failed.push((from, to));
            }
        }
        self.release(now);
    }

    /// Release what was held for complete batches; what was held for failed ones goes
    /// through core, which turns acknowledgements into refusals (0x97 for MQTT 5, a close
    /// for 3.x).
    fn release(&mut self, now: Instant) {
        let upto = self.completion.upto();
        let (broker, actions, completion) = (&mut self.broker, &mut self.actions, &self.completion);
        self.gate.release_upto(
            upto,
            |tag| completion.failed(tag),
            |action, failed| match action {
                Action::Send(conn, packet) if failed => broker.unstored(now, conn, packet, actions),
                a => actions.push(a),
            },
        );
        self.completion.failed.retain(|&(_, b)| b > upto);
        while self
            .remote_waiters
            .front()
            .is_some_and(|(tag, _)| *tag <= upto)
        {
            if let Some((_, tx)) = self.remote_waiters.pop_front() {
                let _ = tx.send(());
            }
        }
        self.perform(now);
    }

    /// In a cluster, note that the session of `conn`'s client changes (recorded once per
    /// drained batch, as it is then, in `flush`); the server's own clients are per node.
    fn session_changed(&mut self, conn: ConnId) {
        if self.cluster.is_none() {
            return;
        }
        if let Some((id, _)) = self.broker.client_of(conn) {
            if !id.starts_with(midge_core::INTERNAL_CLIENT_ID_PREFIX) {
                self.session_pending = true;
                if self.sessions.last().is_none_or(|l| l != id) {
                    self.sessions.push(id.to_owned());
                }
            }
        }
    }

    /// What the cluster tells the router.
    fn clustered(&mut self, now: Instant, msg: ClusterIn) {
        match msg {
            ClusterIn::Interest { node, filter, add } => {
                if add {
                    self.broker.remote_subscribe(&node, &filter);
                } else {
                    self.broker.remote_unsubscribe(&node, &filter);
                }
            }
            ClusterIn::Forget(node) => self.broker.remote_forget(&node),
            ClusterIn::LeaveGroups(node) => self.broker.remote_leave_groups(&node),
            ClusterIn::Mark(reply) => {
                let _ = reply.send(self.broker.queue_mark());
            }
            ClusterIn::Replay {
                client_id,
                msgs,
                done,
            } => {
                let mut here = true;
                for (msg, target) in msgs {
                    here = self.broker.replay_to_session(
                        now,
                        msg,
                        &target,
                        &client_id,
                        &mut self.actions,
                    );
                    if !here {
                        break;
                    }
                }
                self.dispatch(now);
                let _ = done.send(here);
            }
            ClusterIn::Remote { msgs, done } => {
                for (msg, target, seq) in msgs {
                    self.broker
                        .publish_remote_at(now, msg, &target, seq, &mut self.actions);
                    self.dispatch(now);
                }
                if let Some(done) = done {
                    match self.gate.last_tag() {
                        0 => {
                            let _ = done.send(());
                        }
                        tag => self.remote_waiters.push_back((tag, done)),
                    }
                }
            }
            ClusterIn::Held { upto, ok } => {
                if !ok {
                    let from = self.completion.cluster + 1;
                    self.completion.failed.push((from, upto));
                }
                self.completion.cluster = self.completion.cluster.max(upto);
                self.release(now);
            }
            ClusterIn::Export {
                client_id,
                to,
                reply,
            } => {
                let state = self
                    .broker
                    .export_session(now, &client_id, &to, &mut self.actions);
                self.dispatch(now);
                let _ = reply.send(state);
            }
            ClusterIn::Will { client_id, will } => {
                self.broker
                    .publish_orphan_will(now, &client_id, will, &mut self.actions);
                self.dispatch(now);
            }
            ClusterIn::ForgetMoved(client_id) => self.broker.forget_moved(&client_id),
            ClusterIn::ForgetImported(client_id) => self.broker.forget_imported(&client_id),
            ClusterIn::Sys(msg) => {
                self.broker.publish(now, msg, &mut self.actions);
                self.dispatch(now);
            }
            ClusterIn::Import { state, reply } => {
                self.broker.import_session(now, state, &mut self.actions);
                self.dispatch(now);
                let _ = reply.send(());
            }
        }
    }

    /// While the store is full, a QoS 1/2 PUBLISH is refused instead of acknowledged and
    /// lost. Returns true if it was.
    fn refuse_if_full(&mut self, now: Instant, id: ConnId, p: &Packet) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let Packet::Publish(publish) = p else {
            return false;
        };
        if publish.qos == QoS::AtMostOnce || !store.full.load(Ordering::Relaxed) {
            return false;
        }
        self.broker
            .refuse_store_full(now, id, publish, &mut self.actions);
        self.dispatch(now);
        true
    }

    fn perform(&mut self, now: Instant) {
        let mut congested = Vec::new();
        for action in self.actions.drain(..) {
            match action {
                Action::Send(conn, packet) => {
                    let Some(h) = self.conns.get(&conn) else {
                        continue;
                    };
                    let w = weight(&packet);
                    let shared = h.shared();
                    if matches!(packet, Packet::Publish(_)) {
                        shared.msgs_out.fetch_add(1, Ordering::Relaxed);
                    }
                    // Err: the connection task is gone (its Closed is on the way)
                    let sent = shared.congestion.queue(w, self.high_water, || {
                        h.send(Outgoing::Packet(packet)).map_err(drop)
                    });
                    if matches!(sent, Ok(true)) {
                        congested.push(conn);
                    }
                }
                Action::Close(conn) => {
                    if let Some(h) = self.conns.remove(&conn) {
                        let _ = h.send(Outgoing::Close);
                    }
                }
                Action::Connected {
                    conn,
                    client_id,
                    protocol,
                    keep_alive,
                } => {
                    if let Some(h) = self.conns.get(&conn) {
                        h.shared().keep_alive.store(keep_alive, Ordering::Relaxed);
                        let _ = h.send(Outgoing::Connected {
                            keep_alive,
                            protocol,
                            client_id,
                        });
                    }
                }
            }
        }
        for conn in congested {
            debug!(conn = conn.0, "outbound queue full: connection is slow");
            self.broker
                .set_writable(now, conn, false, &mut self.actions);
        }
    }

    fn handle(&mut self, now: Instant, msg: RouterMsg) -> Option<oneshot::Sender<()>> {
        match msg {
            RouterMsg::Connect {
                id,
                listener,
                handle,
                connect,
            } => {
                let shared = handle.shared();
                shared.since_ms.store(unix_ms_now(), Ordering::Relaxed);
                shared
                    .keep_alive
                    .store(connect.keep_alive, Ordering::Relaxed);
                self.conns.insert(id, handle);
                self.broker.open_on(id, listener);
                if listener == self.local_listener {
                    self.broker.set_internal(id);
                }
                self.broker
                    .handle(now, id, Packet::Connect(connect), &mut self.actions);
                self.session_changed(id);
                self.dispatch(now);
            }
            RouterMsg::Packets(id, packets) => {
                if let Some(h) = self.conns.get(&id) {
                    let n = packets
                        .iter()
                        .filter(|p| matches!(p, Packet::Publish(_)))
                        .count();
                    h.shared().msgs_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                for p in packets {
                    if self.refuse_if_full(now, id, &p) {
                        continue;
                    }
                    let changes_session = self.cluster.is_some()
                        && matches!(
                            p,
                            Packet::Subscribe(_) | Packet::Unsubscribe(_) | Packet::Disconnect(_)
                        );
                    if changes_session {
                        self.session_changed(id);
                    }
                    self.broker.handle(now, id, p, &mut self.actions);
                    self.dispatch(now);
                }
            }
            RouterMsg::Closed(id, cause) => {
                self.session_changed(id);
                self.conns.remove(&id);
                self.broker.closed(now, id, cause, &mut self.actions);
                self.dispatch(now);
            }
            RouterMsg::Drained(id) => {
                // a Drained that crossed a new mark is stale (that mark gets its own)
                if self
                    .conns
                    .get(&id)
                    .is_some_and(|h| !h.shared().congestion.drained())
                {
                    return None;
                }
                self.broker.set_writable(now, id, true, &mut self.actions);
                self.dispatch(now);
            }
            RouterMsg::SetAuthorizer(auth) => self.broker.set_authorizer(auth),
            RouterMsg::Stats(reply) => {
                let bytes = self.store.as_ref().map(|s| s.bytes.load(Ordering::Relaxed));
                let _ = reply.send((self.broker.stats(), bytes));
            }
            RouterMsg::Disconnect {
                usernames,
                client_ids,
                reply,
            } => {
                let n = self.broker.disconnect_by_operator(
                    now,
                    |c, u| {
                        client_ids.iter().any(|id| id == c)
                            || u.is_some_and(|u| usernames.iter().any(|n| n == u))
                    },
                    &mut self.actions,
                );
                self.dispatch(now);
                let _ = reply.send(n);
            }
            RouterMsg::Recheck { usernames, reply } => {
                let n = self.broker.recheck_subscriptions(|_, u| {
                    u.is_some_and(|u| usernames.iter().any(|n| n == u))
                });
                // unsubscriptions of persistent sessions are store ops: keep them in order
                self.dispatch(now);
                let _ = reply.send(n);
            }
            RouterMsg::Clients(reply) => {
                let list = self
                    .broker
                    .clients()
                    .into_iter()
                    .map(|c| {
                        let info = c.conn.and_then(|id| {
                            let s = self.conns.get(&id)?.shared();
                            Some(ConnInfo {
                                peer: s.peer?,
                                since_ms: s.since_ms.load(Ordering::Relaxed),
                                keep_alive: s.keep_alive.load(Ordering::Relaxed),
                                msgs_in: s.msgs_in.load(Ordering::Relaxed),
                                msgs_out: s.msgs_out.load(Ordering::Relaxed),
                            })
                        });
                        (c, info)
                    })
                    .collect();
                let _ = reply.send(list);
            }
            RouterMsg::Retained {
                filter,
                limit,
                reply,
            } => {
                let _ = reply.send(self.broker.retained_matching(&filter, now, limit));
            }
            RouterMsg::LastValues {
                filter,
                since,
                limit,
                reply,
            } => {
                let (values, matched) = self.broker.last_values(&filter, since, limit);
                let _ = reply.send(crate::LastValues {
                    values,
                    matched,
                    max_topics: self.broker.config().last_values_topics,
                });
            }
            RouterMsg::ClearRetained { filter, reply } => {
                let n = self.broker.clear_retained(&filter, now);
                // the deletions are store ops: the answer waits for nothing, but they are
                // batched with what follows
                self.dispatch(now);
                let _ = reply.send(n);
            }
            RouterMsg::DiscardSession { client_id, reply } => {
                let found = self
                    .broker
                    .discard_session(now, &client_id, &mut self.actions);
                self.dispatch(now);
                let _ = reply.send(found);
            }
            RouterMsg::Cluster(msg) => self.clustered(now, *msg),
            RouterMsg::Shutdown(reply) => {
                self.broker.shutdown(now, &mut self.actions);
                self.dispatch(now);
                return Some(reply);
            }
        }
        None
    }
}

pub(crate) async fn run(
    config: ServerConfig,
    mut rx: mpsc::Receiver<RouterMsg>,
    counters: Arc<Counters>,
    store: Option<OpenedStore>,
    cluster: Option<ClusterLink>,
) {
    let mut broker = Broker::new(config.broker.clone());
    // core reads no clock: tell it which wall-clock time this instant is, so it stamps each
    // accepted message with its time (kept with the stored message, given to the hub)
    broker.set_wall_clock(Instant::now(), unix_ms_now());
    let mut done_rx = None;
    let mut handle = None;
    if let Some(s) = store {
        broker.enable_persistence();
        broker.restore(Instant::now(), s.restored);
        done_rx = Some(s.done);
        handle = Some(s.handle);
    }
    let mut router = Router {
        broker,
        conns: ConnMap::default(),
        actions: Vec::new(),
        high_water: config.outbound_high_water,
        store: handle,
        gate: Gate::default(),
        local_listener: u16::try_from(config.listeners.len()).unwrap_or(u16::MAX),
        completion: Completion {
            clustered: cluster.is_some(),
            ..Completion::default()
        },
        cluster,
        forwards: Vec::new(),
        interest: Vec::new(),
        sessions: Vec::new(),
        session_pending: false,
        remote_waiters: std::collections::VecDeque::new(),
    };
    if router.cluster.is_some() {
        // the filters restored sessions hold are announced with the first batch
        router.broker.set_cluster();
        router.dispatch(Instant::now());
        router.flush();
    }
    let started = Instant::now();
    let mut sys = SysPublisher::new(config.sys_interval, started);
    // no tick: the router sleeps until core's next deadline (keep alive, will, expiry) or
    // the next $SYS publication, whichever comes first
    let far = || Instant::now() + Duration::from_secs(3600);
    let mut wake_at = far();
    let wake = tokio::time::sleep_until(wake_at.into());
    tokio::pin!(wake);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let next = match (router.broker.poll_timeout(), sys.next_due()) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => far(),
        };
        if next != wake_at {
            wake_at = next;
            wake.as_mut().reset(next.into());
        }
        tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let mut replies = Vec::new();
                for msg in batch.drain(..) {
                    if let Some(reply) = router.handle(now, msg) {
                        replies.push(reply);
                    }
                }
                router.flush();
                if !replies.is_empty() {
                    // shutdown: wait until what was acknowledged is durable
                    if let Some(done) = done_rx.as_mut() {
                        while !router.gate.is_empty() {
                            match done.recv().await {
                                Some(d) => router.stored(Instant::now(), d),
                                None => break,
                            }
                        }
                    }
                    for reply in replies {
                        let _ = reply.send(());
                    }
                    // keep draining so connection tasks can report and finish
                }
            }
            Some(done) = async {
                match done_rx.as_mut() {
                    Some(d) => d.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                router.stored(Instant::now(), done);
            }
            () = &mut wake => {
                let now = Instant::now();
                // re-armed from the deadlines left at the top of the loop
                wake_at = far();
                router.broker.handle_timeout(now, &mut router.actions);
                let store_bytes = router.store.as_ref().map(|s| s.bytes.load(Ordering::Relaxed));
                sys.publish_if_due(now, &mut router.broker, &counters, store_bytes, &mut router.actions);
                router.dispatch(now);
                router.flush();
            }
        }
    }
    if let Some(mut store) = router.store.take() {
        store.close();
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
