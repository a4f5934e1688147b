//! One node of a cluster (`crates/cluster`): the other nodes appear to core as *remote
//! sessions*, one per node, subscribed to the distinct filters that node's clients hold.
//!
//! Routing needs nothing new: the trie matches a remote session like any other, once per
//! message however many of its filters match (so overlapping subscriptions still give one
//! delivery per client on the other node), and a share group picks one member among the
//! local sessions and the remote nodes (so `$share` balances across nodes). A delivery to a
//! remote session becomes a [`Forward`] for the caller to send, instead of a PUBLISH. The
//! node that gets it hands it back with [`Broker::publish_remote`], which delivers it to
//! local sessions only: to its plain subscriptions, or to one local member of the share
//! group the sender picked. `$SYS` topics are never forwarded: each node has its own.
//!
//! Core also counts the distinct filters of its local sessions and reports each filter's
//! first subscription and last unsubscription ([`Broker::take_interest`]), for the caller
//! to announce to the other nodes; and a session can leave for another node
//! ([`Broker::export_session`]) and arrive from one ([`Broker::import_session`]).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Instant;

use ahash::AHashMap;
use bytestring::ByteString;
use midge_codec::{Publish, PublishProperties, QoS, SubscriptionOptions, TopicFilter, TopicName};

use crate::session::{Delivery, InFlight, OutState, Session, SubRecord};
use crate::trie::Subscriber;
use crate::{Action, Broker, Message, SessionId};

/// Client ids of remote sessions start with this; no network client can use it (MQTT
/// strings never hold U+0000 [MQTT-1.5.4-2]).
pub(crate) const REMOTE_PREFIX: &str = "\0node:";

/// Most messages held for sessions still on their way here.
const EARLY_MAX: usize = 65_536;
/// Most message identities kept per session that moved here lately.
const SEEN_MAX: usize = 262_144;
/// Most QoS 1 messages from other nodes remembered, to take each once though it comes two
/// ways (core NATS and the JetStream queue).
const TWICE_MAX: usize = 131_072;

/// Where a forwarded message goes on the node that gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every local subscription (not shared) that matches it.
    Plain,
    /// One local member of this share group: (filter, group name).
    Group(Arc<(Box<str>, Box<str>)>),
    /// Nowhere: it updates the retained message of its topic on every node.
    Retained,
    /// The session of this client only (it moved there from the sending node, which
    /// still got messages for it while the cluster learnt where it went).
    Session(ByteString),
}

/// A message for another node.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The node (for [`Target::Retained`]: `*`, every node).
    pub node: Arc<str>,
    /// The message as it was published.
    pub msg: Arc<Message>,
    /// Where it goes there.
    pub target: Target,
}

impl Forward {
    /// Whether the publisher's acknowledgement must wait until the cluster holds it (QoS
    /// 1/2: the other node's sessions must get it).
    pub fn reliable(&self) -> bool {
        self.msg.qos != QoS::AtMostOnce
    }
}

/// A session moving from one node to another: what its new node needs to resume it.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    /// Its client identifier.
    pub client_id: ByteString,
    /// Session Expiry Interval in seconds.
    pub expiry_interval: u32,
    /// Raw filters (with any `$share/g/` prefix), options and subscription identifier.
    pub subscriptions: Vec<(ByteString, SubscriptionOptions, Option<u32>)>,
    /// Messages queued for it, oldest first, as they would be sent (QoS, retain flag,
    /// subscription identifiers), without packet ids.
    pub messages: Vec<Publish>,
    /// Messages in flight to it, oldest first, with their packet ids, so that its new node
    /// goes on with their flows as its old node would have [MQTT-4.4.0-1]: `true` for a
    /// QoS 2 message its client already received (PUBREC), which only awaits PUBREL and
    /// PUBCOMP.
    pub inflight: Vec<(Publish, bool)>,
}

/// Core's side of the cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    pub(crate) on: bool,
    /// Remote sessions by node name, and back.
    nodes: AHashMap<Arc<str>, SessionId>,
    by_session: AHashMap<SessionId, Arc<str>>,
    /// Sessions that moved to another node: a stub with their subscriptions forwards what
    /// still matches here to that node, for that client (`Target::Session`), until
    /// [`Broker::forget_moved`].
    moved: AHashMap<SessionId, (Arc<str>, ByteString)>,
    /// Messages for a session that is on its way here (they can overtake the session
    /// itself), delivered when it arrives; bounded by `EARLY_MAX` messages in all.
    early: AHashMap<ByteString, Vec<Arc<Message>>>,
    early_count: usize,
    /// Sessions that arrived from another node lately: only they take what that node's
    /// stub sends on (a session made anew here, because the old node did not answer in
    /// time, gets its messages by its own subscriptions, not twice).
    imported: ahash::AHashSet<ByteString>,
    /// For each of those sessions, the cluster identities of the messages it got here
    /// (`Origin::cluster_id`): a message that reaches it both through its old node's stub
    /// and through its own subscriptions here is delivered once. Bounded by `SEEN_MAX`.
    seen: AHashMap<ByteString, ahash::AHashSet<u64>>,
    /// Messages taken from this node's cluster queue, oldest first, with their queue
    /// position, while a session here may still hold them ([`Broker::queue_mark`]).
    taken: VecDeque<(Weak<Message>, u64)>,
    /// QoS 1 messages from other nodes, which come twice (fast over core NATS, and from
    /// the JetStream queue), by identity, oldest first: the first copy is delivered, the
    /// second only takes its queue position. Bounded by `TWICE_MAX`.
    /// Keyed by (identity, target): one message can come for the plain subscribers and
    /// for a share group too.
    twice: AHashMap<(u64, u64), Weak<Message>>,
    twice_order: VecDeque<(u64, u64)>,
    /// Messages for other nodes, not yet taken by the caller.
    pub(crate) forwards: Vec<Forward>,
    /// Local subscriptions per distinct raw filter.
    interest: AHashMap<ByteString, u32>,
    /// (filter, added) for each filter that got its first or lost its last subscription.
    changes: Vec<(ByteString, bool)>,
}

impl ClusterState {
    /// Whether sessions moved here lately (their messages are checked for second copies).
    pub(crate) fn moved_in(&self) -> bool {
        !self.seen.is_empty()
    }
}

impl Broker {
    /// Make this broker a node of a cluster: from now on it reports the distinct filters of
    /// its sessions ([`Broker::take_interest`]; all of today's come out at once) and takes
    /// remote sessions.
    pub fn set_cluster(&mut self) {
        if self.cluster.on {
            return;
        }
        self.cluster.on = true;
        let mut filters = Vec::new();
        for s in self.sessions.iter().flatten() {
            for raw in s.subscriptions.get().into_iter().flat_map(|m| m.keys()) {
                filters.push(raw.clone());
            }
        }
        for raw in filters {
            self.interest_add(&raw);
        }
    }

    /// Whether session `sid` should get `msg`: false for a second copy of a message that
    /// reached a session that moved here lately a second way (see `ClusterState::seen`).
    pub(crate) fn first_copy(&mut self, sid: SessionId, msg: &Message) -> bool {
        let Some(id) = msg
            .origin
            .as_ref()
            .map(|o| o.cluster_id)
            .filter(|&id| id != 0)
        else {
            return true;
        };
        let Some(s) = self.sessions.get(sid.0 as usize).and_then(Option::as_ref) else {
            return true;
        };
        match self.cluster.seen.get_mut(&s.client_id) {
            Some(seen) if seen.len() < SEEN_MAX => seen.insert(id),
            Some(seen) => !seen.contains(&id),
            None => true,
        }
    }

    /// Whether `sid` is another node's remote session, or the stub of a session that moved
    /// to another node (and which node).
    pub(crate) fn remote_node(&self, sid: SessionId) -> Option<&Arc<str>> {
        if !self.cluster.on {
            return None;
        }
        self.cluster
            .by_session
            .get(&sid)
            .or_else(|| self.cluster.moved.get(&sid).map(|(n, _)| n))
    }

    /// Whether `sid` is another node's remote session (not a moved session's stub).
    pub(crate) fn is_remote_node(&self, sid: SessionId) -> bool {
        self.cluster.on && self.cluster.by_session.contains_key(&sid)
    }

    /// Where a delivery to remote session `sid` goes there.
    pub(crate) fn remote_target(&self, sid: SessionId) -> Target {
        match self.cluster.moved.get(&sid) {
            Some((_, client_id)) => Target::Session(client_id.clone()),
            None => Target::Plain,
        }
    }

    /// The stub of a session that moved to another node is no longer needed (that node's
    /// own subscriptions are known everywhere by now).
    pub fn forget_moved(&mut self, client_id: &str) {
        let stub = self
            .cluster
            .moved
            .iter()
            .find(|(_, (_, c))| c == client_id)
            .map(|(sid, _)| *sid);
        let Some(sid) = stub else { return };
        self.cluster.moved.remove(&sid);
        // its filters were announced for it (see `export_session`)
        for raw in self.drop_pseudo_session(sid) {
            self.interest_sub(&raw);
        }
    }

    /// Take a remote session or a moved session's stub out of the sessions and the trie;
    /// returns its filters.
    fn drop_pseudo_session(&mut self, sid: SessionId) -> Vec<ByteString> {
        let Some(s) = self.sessions.get_mut(sid.0 as usize).and_then(Option::take) else {
            return Vec::new();
        };
        let filters: Vec<ByteString> = s
            .subscriptions
            .get()
            .into_iter()
            .flat_map(|m| m.keys().cloned())
            .collect();
        for raw in &filters {
            if let Ok(f) = TopicFilter::new(raw.clone()) {
                self.tree.remove(f.filter(), f.share_group(), sid);
            }
        }
        self.by_client_id.remove(&s.client_id);
        self.free_sessions.push(sid.0);
        filters
    }

    /// A session imported lately no longer takes what its old node's stub sends on (the
    /// stub is gone by now).
    pub fn forget_imported(&mut self, client_id: &str) {
        self.cluster.imported.remove(client_id);
        self.cluster.seen.remove(client_id);
        if let Some(early) = self.cluster.early.remove(client_id) {
            self.cluster.early_count -= early.len();
        }
    }

    /// Deliver to one session only, by its own matching (non-shared) subscriptions.
    fn route_to_session(
        &mut self,
        now: Instant,
        msg: Arc<Message>,
        client_id: &str,
        out: &mut Vec<Action>,
    ) -> usize {
        let Some(&sid) = self.by_client_id.get(client_id) else {
            // it overtook the session it follows: kept until the session arrives
            if self.cluster.early_count < EARLY_MAX {
                self.cluster.early_count += 1;
                self.cluster
                    .early
                    .entry(ByteString::from(client_id))
                    .or_default()
                    .push(msg);
            } else {
                self.stats.messages_dropped += 1;
            }
            return 0;
        };
        if self.remote_node(sid).is_some() || !self.cluster.imported.contains(client_id) {
            return 0;
        }
        self.deliver_by_own_filters(now, sid, msg, out)
    }

    /// Deliver to session `sid` by its own matching (non-shared) subscriptions.
    fn deliver_by_own_filters(
        &mut self,
        now: Instant,
        sid: SessionId,
        msg: Arc<Message>,
        out: &mut Vec<Action>,
    ) -> usize {
        let subs: Vec<Subscriber> = self
            .session(sid)
            .and_then(|s| s.subscriptions.get())
            .into_iter()
            .flatten()
            .filter(|(raw, _)| !raw.starts_with("$share/"))
            .filter(|(raw, _)| midge_codec::matches_filter(raw, msg.topic.as_str()))
            .map(|(_, r)| Subscriber {
                session: sid,
                options: r.options,
                identifier: r.identifier,
            })
            .collect();
        if subs.is_empty() {
            return 0;
        }
        match self.plan_for(&msg, sid, &subs) {
            Some(d) => {
                self.deliver(now, sid, d, out);
                1
            }
            None => 0,
        }
    }

    /// Node `node`'s clients subscribed to `raw` (a filter, `$share/g/...` allowed). Returns
    /// false when the filter is not valid.
    pub fn remote_subscribe(&mut self, node: &str, raw: &str) -> bool {
        let Ok(filter) = TopicFilter::new(ByteString::from(raw)) else {
            return false;
        };
        let sid = match self.cluster.nodes.get(node) {
            Some(&sid) => sid,
            None => {
                let name: Arc<str> = node.into();
                let id = ByteString::from(format!("{REMOTE_PREFIX}{node}"));
                let sid = self.insert_session(Session::new(id, midge_codec::Protocol::V5));
                self.cluster.nodes.insert(name.clone(), sid);
                self.cluster.by_session.insert(sid, name);
                sid
            }
        };
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            ..Default::default()
        };
        self.tree.insert(
            filter.filter(),
            filter.share_group(),
            Subscriber {
                session: sid,
                options,
                identifier: None,
            },
        );
        if let Some(s) = self.session_mut(sid) {
            s.subscriptions.make_mut().insert(
                filter.as_byte_string().clone(),
                SubRecord {
                    options,
                    identifier: None,
                },
            );
        }
        true
    }

    /// Node `node`'s last client subscribed to `raw` is gone.
    pub fn remote_unsubscribe(&mut self, node: &str, raw: &str) {
        let Some(&sid) = self.cluster.nodes.get(node) else {
            return;
        };
        let Ok(filter) = TopicFilter::new(ByteString::from(raw)) else {
            return;
        };
        self.tree.remove(filter.filter(), filter.share_group(), sid);
        if let Some(m) = self
            .session_mut(sid)
            .and_then(|s| s.subscriptions.get_mut())
        {
            m.remove(filter.as_byte_string());
        }
    }

    /// Forget node `node` and all its filters (it left the cluster, or it restarted and
    /// announces them again).
    pub fn remote_forget(&mut self, node: &str) {
        let Some(sid) = self.cluster.nodes.remove(node) else {
            return;
        };
        self.cluster.by_session.remove(&sid);
        self.drop_pseudo_session(sid);
    }

    /// Node `node` is presumed dead: no share group picks it any longer (a message a group
    /// gives it would wait for its return), while its plain filters stay until
    /// [`Broker::remote_forget`], so that what it should get keeps going to its cluster
    /// queue, from where a node that resumes one of its sessions replays it.
    pub fn remote_leave_groups(&mut self, node: &str) {
        let Some(&sid) = self.cluster.nodes.get(node) else {
            return;
        };
        let shared: Vec<ByteString> = self
            .session(sid)
            .and_then(|s| s.subscriptions.get())
            .into_iter()
            .flat_map(|m| m.keys())
            .filter(|raw| raw.starts_with("$share/"))
            .cloned()
            .collect();
        for raw in shared {
            self.remote_unsubscribe(node, &raw);
        }
    }

    /// How many distinct filters node `node` announced.
    pub fn remote_filters(&self, node: &str) -> usize {
        self.cluster
            .nodes
            .get(node)
            .and_then(|&sid| self.session(sid))
            .and_then(|s| s.subscriptions.get())
            .map_or(0, |m| m.len())
    }

    /// The distinct filters of this node's sessions.
    pub fn local_filters(&self) -> Vec<ByteString> {
        let mut v: Vec<ByteString> = self.cluster.interest.keys().cloned().collect();
        v.sort_unstable();
        v
    }

    /// Filters that got their first local subscription (`true`) or lost their last one
    /// (`false`) since the last call, in order.
    pub fn take_interest(&mut self, into: &mut Vec<(ByteString, bool)>) {
        into.append(&mut self.cluster.changes);
    }

    /// Whether messages for other nodes wait to be taken.
    pub fn has_forwards(&self) -> bool {
        !self.cluster.forwards.is_empty()
    }

    /// Whether a waiting message for another node is QoS 1/2 (the caller holds this
    /// call's acknowledgements until the cluster has it, as for store ops).
    pub fn has_reliable_forwards(&self) -> bool {
        self.cluster.forwards.iter().any(Forward::reliable)
    }

    /// Take the messages for other nodes, in order.
    pub fn take_forwards(&mut self, into: &mut Vec<Forward>) {
        into.append(&mut self.cluster.forwards);
    }

    /// A message another node forwarded here: deliver it to this node's sessions as
    /// `target` says (never to other nodes again). [`Target::Retained`] stores or clears
    /// the retained message of its topic. Returns how many sessions it went to.
    pub fn publish_remote(
        &mut self,
        now: Instant,
        msg: Message,
        target: &Target,
        out: &mut Vec<Action>,
    ) -> usize {
        self.publish_remote_at(now, msg, target, 0, out)
    }

    /// [`Broker::publish_remote`] for a message taken from this node's cluster queue at
    /// position `seq` (0: not from the queue): [`Broker::queue_mark`] then keeps the
    /// position while a session here holds the message.
    pub fn publish_remote_at(
        &mut self,
        now: Instant,
        msg: Message,
        target: &Target,
        seq: u64,
        out: &mut Vec<Action>,
    ) -> usize {
        if !self.housekeeping_armed {
            self.arm_housekeeping(now);
        }
        if let Target::Retained = target {
            if self.config.retain_available {
                self.retain(msg);
            }
            return 0;
        }
        let id = match &msg.origin {
            Some(o) if msg.qos == QoS::AtLeastOnce && o.cluster_id != 0 => {
                Some((o.cluster_id, target_key(target)))
            }
            _ => None,
        };
        if let Some(id) = id
            && let Some(first) = self.cluster.twice.remove(&id)
        {
            // the second copy: what a session holds of the first now holds its position
            if seq != 0 {
                self.cluster.taken.push_back((first, seq));
            }
            return 0;
        }
        let msg = Arc::new(msg);
        if seq != 0 {
            self.cluster.taken.push_back((Arc::downgrade(&msg), seq));
        }
        if let Some(id) = id {
            self.cluster.twice.insert(id, Arc::downgrade(&msg));
            self.cluster.twice_order.push_back(id);
            while self.cluster.twice_order.len() > TWICE_MAX {
                if let Some(old) = self.cluster.twice_order.pop_front() {
                    self.cluster.twice.remove(&old);
                }
            }
        }
        match target {
            Target::Retained => 0,
            Target::Plain => self.route_local(now, msg, None, out),
            Target::Group(key) => self.route_local(now, msg, Some(key), out),
            Target::Session(client_id) => self.route_to_session(now, msg, client_id, out),
        }
    }

    /// The oldest position in this node's cluster queue that a session here still holds a
    /// message from (queued or in flight, not yet acknowledged by its client); `None` when
    /// none does. Should this node die, the node that resumes one of its sessions replays
    /// the queue from there (at least once: what came later and was delivered comes
    /// again). Costs one pass over the held messages while some are from the queue.
    pub fn queue_mark(&mut self) -> Option<u64> {
        if self.cluster.taken.is_empty() {
            return None;
        }
        let mut held: ahash::AHashSet<*const Message> = ahash::AHashSet::new();
        for s in self.sessions.iter_mut().flatten() {
            let Some(flow) = s.flow_mut_if_any() else {
                continue;
            };
            held.extend(flow.inflight.iter().map(|f| Arc::as_ptr(&f.delivery.msg)));
            held.extend(flow.queue.iter().map(|d| Arc::as_ptr(&d.msg)));
        }
        for early in self.cluster.early.values() {
            held.extend(early.iter().map(Arc::as_ptr));
        }
        // a Weak keeps its allocation, so no other message can be at that address
        while let Some((w, _)) = self.cluster.taken.front() {
            if w.strong_count() > 0 && held.contains(&w.as_ptr()) {
                break;
            }
            self.cluster.taken.pop_front();
        }
        self.cluster.taken.front().map(|(_, seq)| *seq)
    }

    /// A message from the cluster queue of node that died, replayed for `client_id`, whose
    /// session was resumed here from its record: delivered by the session's own matching
    /// (non-shared) subscriptions. Returns false once the client has no session here (it
    /// ended or moved on), which ends the replay.
    pub fn replay_to_session(
        &mut self,
        now: Instant,
        msg: Message,
        target: &Target,
        client_id: &str,
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(&sid) = self.by_client_id.get(client_id) else {
            return false;
        };
        if self.remote_node(sid).is_some() {
            return false;
        }
        let mine = match target {
            Target::Plain => true,
            Target::Session(c) => c == client_id,
            Target::Group(_) | Target::Retained => false,
        };
        if mine {
            self.deliver_by_own_filters(now, sid, Arc::new(msg), out);
        }
        true
    }

    /// A message for another node ([`Broker::take_forwards`]).
    pub(crate) fn forward(&mut self, node: Arc<str>, msg: &Arc<Message>, target: Target) {
        self.cluster.forwards.push(Forward {
            node,
            msg: msg.clone(),
            target,
        });
    }

    /// A client's retained message: every node stores it.
    pub(crate) fn forward_retained(&mut self, msg: &Message) {
        if self.cluster.on && !msg.topic.as_str().starts_with('$') {
            let msg = Arc::new(msg.clone());
            self.forward("*".into(), &msg, Target::Retained);
        }
    }

    /// A local subscription to `raw` was added (new for its session).
    pub(crate) fn interest_added(&mut self, sid: SessionId, raw: &ByteString) {
        if self.cluster.on && self.remote_node(sid).is_none() {
            self.interest_add(raw);
        }
    }

    fn interest_add(&mut self, raw: &ByteString) {
        let n = self.cluster.interest.entry(raw.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            self.cluster.changes.push((raw.clone(), true));
        }
    }

    /// A local subscription to `raw` was removed.
    pub(crate) fn interest_removed(&mut self, sid: SessionId, raw: &ByteString) {
        if !self.cluster.on || self.remote_node(sid).is_some() {
            return;
        }
        self.interest_sub(raw);
    }

    fn interest_sub(&mut self, raw: &ByteString) {
        if let Some(n) = self.cluster.interest.get_mut(raw) {
            *n -= 1;
            if *n == 0 {
                self.cluster.interest.remove(raw);
                self.cluster.changes.push((raw.clone(), false));
            }
        }
    }

    /// The session of `client_id` moves to another node: its connection (if any) is told
    /// 0x8E Session taken over (MQTT 5) and closed, as in a takeover on one node
    /// [MQTT-3.1.4-3]; its will goes out only if it has no delay (a new connection for the
    /// client exists, on the other node [MQTT-3.1.2-8]); its state is returned and the
    /// session ends here without a trace. `None` when this node has no such session.
    pub fn export_session(
        &mut self,
        now: Instant,
        client_id: &str,
        to: &str,
        out: &mut Vec<Action>,
    ) -> Option<SessionState> {
        let sid = *self.by_client_id.get(client_id)?;
        if self.remote_node(sid).is_some() {
            return None;
        }
        if let Some(old) = self.session(sid).and_then(|s| s.conn) {
            if self.conns.get(&old).is_some_and(|o| o.protocol.is_v5()) {
                out.push(Action::Send(
                    old,
                    midge_codec::Packet::Disconnect(midge_codec::Disconnect::new(
                        midge_codec::ReasonCode::SESSION_TAKEN_OVER,
                    )),
                ));
            }
            out.push(Action::Close(old));
            self.conns.remove(&old);
            if self
                .session(sid)
                .and_then(|s| s.will.as_ref())
                .is_some_and(|w| w.will.properties.will_delay_interval.unwrap_or(0) == 0)
            {
                self.publish_will(now, sid, out);
            }
            if let Some(s) = self.session_mut(sid) {
                s.conn = None;
                self.connected = self.connected.saturating_sub(1);
            }
        }
        let s = self.session_mut(sid)?;
        s.will = None;
        let mut state = SessionState {
            client_id: s.client_id.clone(),
            expiry_interval: s.expiry_interval,
            ..Default::default()
        };
        for (raw, r) in s.subscriptions.get().into_iter().flatten() {
            state
                .subscriptions
                .push((raw.clone(), r.options, r.identifier));
        }
        state.subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(flow) = s.flow_mut_if_any() {
            let inflight = std::mem::take(&mut flow.inflight);
            let queue = std::mem::take(&mut flow.queue);
            flow.queued_bytes = 0;
            flow.unsent = 0;
            // what is in flight keeps its packet id and its place in the flow
            state.inflight = inflight
                .into_iter()
                .map(|f| {
                    let mut p = as_publish(&f.delivery, now);
                    p.packet_id = f.packet_id;
                    p.dup = f.sent || f.state != OutState::AwaitPubAck;
                    (p, f.state == OutState::AwaitPubComp)
                })
                .collect();
            // an expired message is not sent [MQTT-3.3.2-5], here or there
            state.messages = queue
                .into_iter()
                .filter(|d| d.msg.expires_at.is_none_or(|at| at > now))
                .map(|d| as_publish(&d, now))
                .collect();
        }
        // what still comes here for it (other nodes forward by what they knew) follows it
        let stub = self.insert_session(Session::new(
            ByteString::from(format!("{REMOTE_PREFIX}moved:{client_id}")),
            midge_codec::Protocol::V5,
        ));
        self.cluster
            .moved
            .insert(stub, (to.into(), state.client_id.clone()));
        for (raw, options, _) in &state.subscriptions {
            let Ok(f) = TopicFilter::new(raw.clone()) else {
                continue;
            };
            if f.is_shared() {
                continue; // the group picks another member meanwhile
            }
            let options = SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                ..*options
            };
            self.tree.insert(
                f.filter(),
                None,
                Subscriber {
                    session: stub,
                    options,
                    identifier: None,
                },
            );
            if let Some(s) = self.session_mut(stub) {
                s.subscriptions.make_mut().insert(
                    raw.clone(),
                    SubRecord {
                        options,
                        identifier: None,
                    },
                );
            }
            // still announced: until the new node's subscriptions are known everywhere,
            // other nodes keep sending here, and the stub passes it on
            self.interest_add(raw);
        }
        self.end_session(now, sid, out);
        Some(state)
    }

    /// A session arrives from another node ([`Broker::export_session`]): it is created here
    /// without a connection, with its subscriptions and messages, so that the CONNECT that
    /// follows resumes it (session present). Ignored when the client already has a session
    /// here.
    pub fn import_session(&mut self, now: Instant, state: SessionState, out: &mut Vec<Action>) {
        if self.by_client_id.contains_key(&state.client_id)
            || state.client_id.starts_with(REMOTE_PREFIX)
        {
            return;
        }
        self.cluster.imported.insert(state.client_id.clone());
        self.cluster
            .seen
            .insert(state.client_id.clone(), ahash::AHashSet::new());
        let mut s = Session::new(state.client_id.clone(), midge_codec::Protocol::V5);
        s.expiry_interval = state.expiry_interval;
        s.disconnected_at = Some(now);
        let sid = self.insert_session(s);
        for (raw, options, identifier) in state.subscriptions {
            let Ok(filter) = TopicFilter::new(raw.clone()) else {
                continue;
            };
            let is_new = self.tree.insert(
                filter.filter(),
                filter.share_group(),
                Subscriber {
                    session: sid,
                    options,
                    identifier,
                },
            );
            if let Some(s) = self.session_mut(sid) {
                s.subscriptions.make_mut().insert(
                    raw.clone(),
                    SubRecord {
                        options,
                        identifier,
                    },
                );
            }
            if is_new {
                self.interest_added(sid, &raw);
            }
        }
        // in flight: the same packet ids and states, re-sent (DUP, or PUBREL) when the
        // client connects, as after a resume on one node
        if !state.inflight.is_empty()
            && let Some(s) = self.session_mut(sid)
        {
            let mut last = 0;
            let flow = s.flow_mut();
            for (p, released) in state.inflight {
                if p.packet_id == 0 || p.qos == QoS::AtMostOnce {
                    continue;
                }
                last = p.packet_id;
                let state = match (p.qos, released) {
                    (_, true) => OutState::AwaitPubComp,
                    (QoS::ExactlyOnce, false) => OutState::AwaitPubRec,
                    _ => OutState::AwaitPubAck,
                };
                flow.inflight.push_back(InFlight {
                    packet_id: p.packet_id,
                    state,
                    delivery: delivery_of(p, now),
                    sent: false,
                });
            }
            flow.recount();
            if last != 0 {
                s.next_packet_id = last.checked_add(1).unwrap_or(1);
            }
        }
        for p in state.messages {
            let d = delivery_of(p, now);
            self.deliver(now, sid, d, out);
        }
        // what the old node forwarded for it before it arrived
        if let Some(early) = self.cluster.early.remove(&state.client_id) {
            self.cluster.early_count -= early.len();
            for msg in early {
                self.route_to_session(now, msg, &state.client_id, out);
            }
        }
        self.arm_session(sid);
    }
}

/// Tells apart the copies of one message for different targets on one node.
fn target_key(target: &Target) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    match target {
        Target::Plain | Target::Retained => 0u8.hash(&mut h),
        Target::Group(key) => (1u8, &key.0, &key.1).hash(&mut h),
        Target::Session(client_id) => (2u8, client_id.as_ref() as &str).hash(&mut h),
    }
    h.finish()
}

/// A PUBLISH from [`SessionState`] as a delivery to the session it belongs to.
fn delivery_of(p: Publish, now: Instant) -> Delivery {
    let expires_at = p
        .properties
        .message_expiry_interval
        .map(|secs| now + std::time::Duration::from_secs(u64::from(secs)));
    let mut properties = p.properties;
    let sub_ids = std::mem::take(&mut properties.subscription_identifiers);
    Delivery {
        msg: Arc::new(Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            properties,
            expires_at,
            origin: None,
        }),
        qos: p.qos,
        retain: p.retain,
        sub_ids,
        share: None,
        seq: 0,
        msg_id: 0,
    }
}

/// A delivery as a PUBLISH without packet id (for [`SessionState::messages`]), its Message
/// Expiry Interval what is left of it, rounded up [MQTT-3.3.2-6].
fn as_publish(d: &Delivery, now: Instant) -> Publish {
    let mut properties: PublishProperties = d.msg.properties.clone();
    properties.subscription_identifiers = d.sub_ids.clone();
    if let Some(at) = d.msg.expires_at {
        let left = at.saturating_duration_since(now);
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        properties.message_expiry_interval = Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1));
    }
    Publish {
        dup: false,
        qos: d.qos,
        retain: d.retain,
        topic: TopicName::clone(&d.msg.topic),
        packet_id: 0,
        properties,
        payload: d.msg.payload.clone(),
    }
}

/// What the cluster keeps of a client's session so that another node can carry on when
/// this one dies: the subscriptions (to resume it there) and the will (to publish it
/// once).
#[derive(Debug, Clone, Default)]
pub struct SessionRecord {
    /// Session Expiry Interval in seconds.
    pub expiry_interval: u32,
    /// Whether a connection is attached.
    pub connected: bool,
    /// Raw filters (with any `$share/g/` prefix), options and subscription identifier.
    pub subscriptions: Vec<(ByteString, SubscriptionOptions, Option<u32>)>,
    /// The will still to be published if the connection ends abnormally (or, after it
    /// ended, once its delay has passed).
    pub will: Option<midge_codec::LastWill>,
}

impl Broker {
    /// The session of `client_id` as the cluster keeps it (`None`: no session here).
    pub fn session_record(&self, client_id: &str) -> Option<SessionRecord> {
        let sid = *self.by_client_id.get(client_id)?;
        let s = self.session(sid)?;
        let mut subscriptions: Vec<_> = s
            .subscriptions
            .get()
            .into_iter()
            .flatten()
            .map(|(raw, r)| (raw.clone(), r.options, r.identifier))
            .collect();
        subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
        Some(SessionRecord {
            expiry_interval: s.expiry_interval,
            connected: s.conn.is_some(),
            subscriptions,
            will: s.will.as_ref().map(|w| w.will.clone()),
        })
    }

    /// The will of a client whose node died (the cluster picked this node to publish it,
    /// once): published as that client's own will would have been, to every node.
    pub fn publish_orphan_will(
        &mut self,
        now: Instant,
        client_id: &str,
        will: midge_codec::LastWill,
        out: &mut Vec<Action>,
    ) {
        let properties: PublishProperties = midge_codec::PublishPropertyValues {
            payload_format_indicator: will.properties.payload_format_indicator,
            response_topic: will.properties.response_topic.clone(),
            correlation_data: will.properties.correlation_data.clone(),
            user_properties: will.properties.user_properties.clone(),
            content_type: will.properties.content_type.clone(),
            ..Default::default()
        }
        .into();
        let msg = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at: will
                .properties
                .message_expiry_interval
                .map(|s| now + std::time::Duration::from_secs(u64::from(s))),
            origin: Some(crate::Origin {
                client_id: client_id.into(),
                username: None,
                received_ms: self.wall_ms(now),
                cluster_id: 0,
            }),
        };
        if msg.retain && self.config.retain_available {
            self.retain(msg.clone());
            self.forward_retained(&msg);
        }
        self.route(now, Arc::new(msg), None, out);
    }
}
